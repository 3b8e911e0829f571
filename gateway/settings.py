"""Settings: the only place that knows variable names, flags and defaults.

Every setting comes from an environment variable and can be overridden by a CLI flag named after it
(``JELLYFIN_URL`` -> ``--jellyfin-url``). Values are validated once, at start, so that a typo stops the
gateway with one clear line instead of failing on the first request.
"""

from __future__ import annotations

import argparse
import ipaddress
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, NoReturn, TypeVar

from yarl import URL

from . import __version__

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PathMap = tuple[tuple[str, str], ...]
T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: The trackers apibay's own page appends to its magnets (print_trackers() in its main.js).
DEFAULT_TRACKERS: tuple[str, ...] = (
    "udp://tracker.opentrackr.org:1337",
    "udp://open.stealth.si:80/announce",
    "udp://tracker.torrent.eu.org:451/announce",
    "udp://tracker.bittor.pw:1337/announce",
    "udp://public.popcorn-tracker.org:6969/announce",
    "udp://tracker.dler.org:6969/announce",
    "udp://exodus.desync.com:6969",
    "udp://open.demonii.com:1337/announce",
)


class SettingsError(ValueError):
    """A setting has a value the gateway cannot work with; the message names the variable."""


# --- value parsers: each raises ValueError with a message that completes "must be ..." -----------


def _http_url(raw: str) -> URL:
    try:
        url = URL(raw.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"a valid http(s) URL ({exc}), got {raw!r}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"an http(s) URL with a host, got {raw!r}")
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError(f"a URL without query, fragment or credentials, got {raw!r}")
    try:
        url.port  # noqa: B018 - yarl validates the port lazily
    except ValueError as exc:
        raise ValueError(f"a URL with a valid port, got {raw!r}") from exc
    return url


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"a TCP port number (1-65535), got {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ValueError(f"a TCP port number (1-65535), got {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"a whole number of at least 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"a whole number of at least 1, got {raw!r}")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"a number of seconds (0 or more), got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"a number of seconds (0 or more), got {raw!r}")
    return value


def _positive_seconds(raw: str) -> float:
    value = _seconds(raw)
    if value == 0:
        raise ValueError(f"a number of seconds above 0, got {raw!r}")
    return value


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"true or false, got {raw!r}")


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    networks = []
    for item in raw.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"IP addresses or CIDR networks separated by commas, got {item!r}") from None
    return tuple(networks)


def _absolute_dir(raw: str, what: str) -> str:
    path = raw.strip()
    if not path.startswith("/"):
        raise ValueError(f"{what} paths that are absolute, got {raw!r}")
    if ".." in path.split("/"):
        raise ValueError(f"{what} paths without '..', got {raw!r}")
    normalized = posixpath.normpath(path)
    return "/" if normalized in ("/", "//") else normalized


def _path_map(raw: str) -> PathMap:
    pairs: list[tuple[str, str]] = []
    for entry in raw.split(";"):
        if not entry.strip():
            continue
        jellyfin, sep, qbittorrent = entry.partition("=")
        if not sep or not jellyfin.strip() or not qbittorrent.strip():
            raise ValueError(f"JELLYFIN_PREFIX=QBITTORRENT_PREFIX pairs separated by ';', got {entry!r}")
        pair = (_absolute_dir(jellyfin, "JELLYFIN_PREFIX"), _absolute_dir(qbittorrent, "QBITTORRENT_PREFIX"))
        if any(pair[0] == known for known, _ in pairs):
            raise ValueError(f"each JELLYFIN_PREFIX only once, got {pair[0]!r} twice")
        pairs.append(pair)
    return tuple(pairs)


def _text(raw: str) -> str:
    return raw


def _trackers(raw: str) -> tuple[str, ...]:
    if raw.strip().lower() == "default":
        return DEFAULT_TRACKERS
    trackers = []
    for item in raw.replace("\n", ",").split(","):
        url = item.strip()
        if not url:
            continue
        scheme = url.partition("://")[0].lower()
        if scheme not in ("udp", "http", "https", "wss") or any(ch.isspace() for ch in url) or "&" in url:
            raise ValueError(f"comma-separated udp://, http(s):// or wss:// tracker URLs, got {url!r}")
        trackers.append(url)
    return tuple(trackers)


@dataclass(frozen=True)
class TorznabIndexer:
    """One Torznab endpoint. Its URL carries the indexer's API key: never logged or shown (repr hides it)."""

    name: str
    url: URL = field(repr=False)


def _torznab_indexers(raw: str) -> tuple[TorznabIndexer, ...]:
    indexers: list[TorznabIndexer] = []
    for entry in raw.split(";"):
        if not entry.strip():
            continue
        name, sep, address = entry.partition("=")
        name = name.strip()
        if not sep or not name or not address.strip():
            raise ValueError("name=URL pairs separated by ';' (the URL with its apikey query)")
        if not all(ch.isalnum() or ch in " ._-" for ch in name) or len(name) > 40:
            raise ValueError(f"indexer names of letters, digits, spaces, '.', '_' or '-', got {name!r}")
        try:
            url = URL(address.strip())
        except (ValueError, TypeError):
            raise ValueError(f"a valid http(s) URL for indexer {name!r}") from None
        # The message never repeats the URL: its query holds the indexer's API key.
        if url.scheme not in ("http", "https") or not url.host or url.fragment or url.user:
            raise ValueError(
                f"an http(s) URL with a host and no credentials or fragment for indexer {name!r}"
            )
        if any(known.name.casefold() == name.casefold() for known in indexers) or name.casefold() == "apibay":
            raise ValueError(f"each indexer name once (and not 'apibay'), got {name!r} twice")
        indexers.append(TorznabIndexer(name, url))
    return tuple(indexers)


def _directories(raw: str) -> tuple[str, ...]:
    return tuple(_absolute_dir(item, "SAVE_ROOTS") for item in raw.split(";") if item.strip())


@dataclass(frozen=True)
class _Option:
    """One setting as the environment, the CLI and --help see it; declared on its Settings field."""

    env: str
    #: As written in the environment (and in README's table); the field's default is this, parsed.
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    #: The Settings field; filled in from the dataclass (see OPTIONS).
    attr: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")


_OPTION = "gateway.setting"


def _setting(env: str, default: str, parse: Callable[[str], T], help: str, *, secret: bool = False) -> T:
    """Declare a Settings field once: its variable, default, parser and help; flag and value follow.

    The field's default is ``parse(default)``, so the dataclass, ``load_settings({})`` and README's
    table cannot disagree; typing ties the parser's result to the field's annotation.
    """
    option = _Option(env, default, parse, help, secret)
    return field(default=parse(default), repr=not secret, metadata={_OPTION: option})


@dataclass(frozen=True)
class Settings:
    """Everything the gateway is told at start; each field but ``worker_index`` is one setting.

    ``_setting`` returns a dataclass ``field()`` (RUF009 cannot see that, hence its noqa below).
    """

    host: str = _setting("GATEWAY_HOST", "0.0.0.0", _text, "address to listen on")
    port: int = _setting("GATEWAY_PORT", "8097", _port, "TCP port to listen on")
    jellyfin_url: URL = _setting(  # noqa: RUF009
        "JELLYFIN_URL",
        "http://localhost:8096",
        _http_url,
        "Jellyfin to proxy to; may carry Jellyfin's BaseUrl, e.g. http://jf:8096/jellyfin",
    )
    qbittorrent_url: URL = _setting(  # noqa: RUF009
        "QBITTORRENT_URL", "http://qbittorrent:8099", _http_url, "qBittorrent WebUI URL"
    )
    qbittorrent_username: str = _setting(
        "QBITTORRENT_USERNAME", "", _text, "qBittorrent WebUI user (empty: no login)"
    )
    qbittorrent_password: str = _setting(
        "QBITTORRENT_PASSWORD",
        "",
        _text,
        "qBittorrent WebUI password (prefer the variable: flags show up in ps)",
        secret=True,
    )
    apibay_url: URL = _setting(  # noqa: RUF009
        "APIBAY_URL", "https://apibay.org", _http_url, "apibay search API"
    )
    jellyfin_api_key: str = _setting(
        "JELLYFIN_API_KEY",
        "",
        _text,
        "Jellyfin API key for library rescans after downloads (empty: off)",
        secret=True,
    )
    path_map: PathMap = _setting(  # noqa: RUF009
        "PATH_MAP",
        "",
        _path_map,
        "JELLYFIN_PREFIX=QBITTORRENT_PREFIX pairs separated by ';' (how each side sees the same folder)",
    )
    elevation_cache_ttl: float = _setting(
        "ELEVATION_CACHE_TTL", "10", _seconds, "seconds an admin check is cached per token (0: no cache)"
    )
    workers: int = _setting("GATEWAY_WORKERS", "1", _positive_int, "gateway processes sharing the port")
    log_level: str = _setting("LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL")
    trusted_proxies: tuple[IPNetwork, ...] = _setting(
        "TRUSTED_PROXIES",
        "",
        _networks,
        "comma-separated IPs/CIDRs whose X-Forwarded-* headers are believed (empty: none)",
    )
    access_log: bool = _setting(
        "ACCESS_LOG", "true", _bool, "write an access log line per request (tokens redacted)"
    )
    jellyfin_connect_timeout: float = _setting(
        "JELLYFIN_CONNECT_TIMEOUT",
        "5",
        _positive_seconds,
        "seconds to connect to Jellyfin before answering 502",
    )
    jellyfin_read_timeout: float = _setting(
        "JELLYFIN_READ_TIMEOUT",
        "300",
        _positive_seconds,
        "seconds Jellyfin may stay silent mid-request before answering 504 (not applied to WebSockets)",
    )
    apibay_timeout: float = _setting(
        "APIBAY_TIMEOUT", "10", _positive_seconds, "seconds an apibay search may take"
    )
    qbittorrent_timeout: float = _setting(
        "QBITTORRENT_TIMEOUT", "10", _positive_seconds, "seconds one qBittorrent API call may take"
    )
    trackers: tuple[str, ...] = _setting(
        "TRACKERS",
        "default",
        _trackers,
        "comma-separated tracker URLs added to magnets ('default': apibay's 8; empty: none)",
    )
    save_roots: tuple[str, ...] = _setting(
        "SAVE_ROOTS",
        "",
        _directories,
        "extra folders (qBittorrent's view, ';'-separated) a download's SavePath may be inside",
    )
    watch_interval: float = _setting(
        "WATCH_INTERVAL",
        "1",
        _positive_seconds,
        "seconds between polls of qBittorrent for live progress and finished downloads",
    )
    torznab_indexers: tuple[TorznabIndexer, ...] = _setting(
        "TORZNAB_INDEXERS",
        "",
        _torznab_indexers,
        "Torznab indexers searched beside apibay: name=URL pairs separated by ';' (each URL with its apikey)",
        secret=True,
    )
    torznab_timeout: float = _setting(
        "TORZNAB_TIMEOUT", "10", _positive_seconds, "seconds a Torznab indexer may take to answer a search"
    )
    landing_timeout: float = _setting(
        "LANDING_TIMEOUT",
        "600",
        _positive_seconds,
        "seconds after telling Jellyfin about a download to wait for its item before giving up",
    )
    header_timeout: float = _setting(
        "HEADER_TIMEOUT",
        "30",
        _positive_seconds,
        "seconds a client may take to send a request's headers before the connection is closed",
    )
    keepalive_timeout: float = _setting(
        "KEEPALIVE_TIMEOUT", "75", _positive_seconds, "seconds an idle keep-alive connection stays open"
    )
    ws_max_message: int = _setting(
        "WS_MAX_MESSAGE",
        "4194304",
        _positive_int,
        "largest WebSocket message (bytes) relayed either way; larger ones close the socket with 1009",
    )
    events_max_listeners: int = _setting(
        "EVENTS_MAX_LISTENERS",
        "32",
        _positive_int,
        "most /torrent/events listeners per process (more get 503)",
    )
    web_inject: bool = _setting(
        "WEB_INJECT",
        "true",
        _bool,
        "add the gateway's script tag to Jellyfin web's index.html (false: /web passes unchanged)",
    )
    #: Set by the supervisor, not by a variable: which of GATEWAY_WORKERS this process is (0 notifies).
    worker_index: int = 0

    @property
    def base_path(self) -> str:
        """Jellyfin's BaseUrl as seen in request paths: '' or '/jellyfin' (no trailing slash)."""
        return self.jellyfin_url.path.rstrip("/")

    @property
    def jellyfin_origin(self) -> URL:
        """Where proxied requests go; the client's path (BaseUrl included) is appended unchanged."""
        return self.jellyfin_url.origin()

    @property
    def torrent_prefix(self) -> str:
        return f"{self.base_path}/torrent"


#: Every setting, in field order: derived from Settings, never listed by hand.
OPTIONS: tuple[_Option, ...] = tuple(
    replace(f.metadata[_OPTION], attr=f.name) for f in fields(Settings) if _OPTION in f.metadata
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit 2: the same shape as a bad environment variable."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jellyfin-gateway",
        description=(
            "Reverse proxy in front of Jellyfin that serves an admin-only /torrent API. "
            "Every setting is an environment variable; the flag of the same name overrides it."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for option in OPTIONS:
        default = "(empty)" if option.default == "" else option.default
        parser.add_argument(
            option.flag,
            dest=option.attr,
            metavar=option.env,
            default=None,
            help=f"{option.help} [env {option.env}, default {default}]",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from flags over environment over defaults; raise SettingsError naming the variable."""
    environ = {} if environ is None else environ
    args = build_parser().parse_args([] if argv is None else list(argv))
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = getattr(args, option.attr)
        if raw is None:
            raw = environ.get(option.env, option.default)
        try:
            values[option.attr] = option.parse(raw)
        except ValueError as exc:
            shown = option.flag if getattr(args, option.attr) is not None else option.env
            raise SettingsError(f"{shown} must be {exc}") from None
    return Settings(**values)
