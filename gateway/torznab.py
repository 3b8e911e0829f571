"""A thin client of one Torznab indexer (Prowlarr or Jackett), searched beside apibay.

Both speak the same RSS dialect with small differences this module evens out: Prowlarr writes
``<rss version="1.0">`` and ``imdb`` as bare digits, Jackett ``version="2.0"`` with ``imdbid`` in the
``tt`` form and a ``magneturl``; info hashes come upper case, lower case or in base32, or only inside a
magnet. Every result becomes a :class:`TorznabResult` with a 40-hex lower-case hash; one without a
hash is dropped, because the gateway adds torrents by magnet and never fetches a URL an indexer hands
out (those links carry the indexer's API key, and a .torrent fetch would be a request to anywhere).

The reply is untrusted XML: it is read with a size cap and parsed by defusedxml with document type
declarations, entities and external references refused, so neither a billion-laughs bomb nor an
external entity (``file:///etc/passwd``, an internal URL) gets expanded or fetched.

The indexer's URL carries its API key in the query, so no reason, log line or repr here ever contains
the URL with its query: reasons name the indexer as configured (``Torznab prowlarr``), and the
address logged on transport failures is the URL without its query. ``t=caps`` is read once an hour
(single flight) to choose ``t=movie``/``t=tvsearch`` and their parameters; an indexer failing three
times in a row is skipped for 30 s (a circuit breaker), so a dead one does not slow every search.
Nothing here knows about aiohttp.web.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, cast
from urllib.parse import parse_qs
from xml.etree.ElementTree import Element, ParseError, XMLParser

import aiohttp
import defusedxml
import defusedxml.ElementTree as safe_xml

from . import __version__
from .cache import SingleFlightCache
from .settings import TorznabIndexer
from .upstream import Failure, Upstream, UpstreamError, UpstreamName, read_capped

logger = logging.getLogger(__name__)

#: A page of 100 results is ~150 KiB; 8 MiB is far beyond any real answer and still cheap to hold.
MAX_REPLY_BYTES = 8 * 1024 * 1024
#: Consecutive failures that open the circuit breaker, and how long it then stays open.
FAILURES_TO_OPEN = 3
OPEN_SECONDS = 30.0
#: How long a caps answer is trusted, and how soon caps is asked again after it could not be read.
CAPS_TTL = 3600.0
CAPS_RETRY = 60.0
#: Newznab's standard top-level categories, which Prowlarr and Jackett map onto every indexer's own.
MOVIE_CATEGORY = "2000"
TV_CATEGORY = "5000"
USER_AGENT = f"jellyfin-torrent-gateway/{__version__}"

TORZNAB_NS = "http://torznab.com/schemas/2015/feed"
#: Some Torznab servers write their attributes in the newznab namespace; they mean the same.
NEWZNAB_NS = "http://www.newznab.com/DTD/2010/feeds/attributes/"
_ATTR_TAGS = (f"{{{TORZNAB_NS}}}attr", f"{{{NEWZNAB_NS}}}attr")

SearchKind = Literal["movie", "tv", "any"]

_HEX_HASH = re.compile(r"[0-9a-fA-F]{40}")
_BASE32_HASH = re.compile(r"[A-Za-z2-7]{32}")
_IMDB = re.compile(r"(?:tt)?0*([0-9]{1,10})", re.IGNORECASE)
_HTML_START = (b"<!doctype html", b"<html")
#: Most characters of an indexer's own error description put into a reason.
_MAX_DESCRIPTION = 200


@dataclass(frozen=True)
class TorznabResult:
    """One usable result: ``added`` is timezone-aware; counts and size are None when not given."""

    name: str
    info_hash: str
    size: int | None
    seeders: int | None
    leechers: int | None
    added: datetime | None
    imdb: str | None


@dataclass(frozen=True)
class _Caps:
    """The search functions an indexer offers (``t`` → its supported parameters)."""

    functions: Mapping[str, frozenset[str]]
    max_limit: int | None = None
    #: False for the stand-in used while caps could not be read: kept only briefly.
    known: bool = True


#: What every Torznab server supports, assumed while its caps cannot be read.
_FALLBACK_CAPS = _Caps({"search": frozenset({"q"})}, known=False)
#: caps names its functions differently from the ``t`` values that call them.
#: Only a document that has this can declare entities or refer to external ones (defusedxml refuses it).
_DOCTYPE = b"<!DOCTYPE"


def _plain_utf8(body: bytes) -> bool:
    """UTF-8 without a document type declaration. A byte scan for the declaration holds only for
    UTF-8: in UTF-16 or UTF-32 (which have NUL bytes, never valid in XML) the markup would hide."""
    if _DOCTYPE in body or b"\x00" in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_CAPS_FUNCTIONS = {"search": "search", "tv-search": "tvsearch", "movie-search": "movie"}


def normalize_info_hash(value: str) -> str | None:
    """A v1 info hash as 40 lower-case hex digits (from hex in any case, or base32), else None."""
    text = value.strip()
    if _HEX_HASH.fullmatch(text):
        return text.lower()
    if _BASE32_HASH.fullmatch(text):
        try:
            return base64.b32decode(text.upper()).hex()
        except binascii.Error:  # pragma: no cover - the pattern admits only valid base32
            return None
    return None


def magnet_info_hash(magnet: str) -> str | None:
    """The info hash of a magnet's ``xt=urn:btih:`` (the string is read, never fetched), else None."""
    scheme, _, rest = magnet.strip().partition(":")
    if scheme.lower() != "magnet":
        return None
    for xt in parse_qs(rest.lstrip("?")).get("xt", []):
        if xt[:9].lower() == "urn:btih:":
            info_hash = normalize_info_hash(xt[9:])
            if info_hash is not None:
                return info_hash
    return None


def normalize_imdb(value: str | None) -> str | None:
    """``tt`` and at least 7 digits (``0000001`` → ``tt0000001``); None for empty, ``0`` or junk."""
    if value is None:
        return None
    match = _IMDB.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        return None
    return f"tt{int(match.group(1)):07d}"


def _count(value: str | None) -> int | None:
    """A non-negative whole number from an attribute (``"12"``, ``"12.0"``), else None."""
    if value is None:
        return None
    text = value.strip()
    try:
        return int(text) if int(text) >= 0 else None
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number >= 0 else None


def _published(value: str | None) -> datetime | None:
    """An RFC 822 date as an aware datetime (``-0000``, "zone unknown", is taken as UTC)."""
    if not value or not value.strip():
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _attributes(item: Element) -> dict[str, str]:
    """An item's ``torznab:attr`` name → value (the first of repeated names, such as category)."""
    attributes: dict[str, str] = {}
    for tag in _ATTR_TAGS:
        for attr in item.iter(tag):
            name = attr.get("name", "").strip().lower()
            if name and name not in attributes:
                attributes[name] = attr.get("value", "")
    return attributes


def parse_item(item: Element) -> TorznabResult | None:
    """One ``<item>`` as a result, or None when it has no title or no info hash."""
    name = (item.findtext("title") or "").strip()
    if not name:
        return None
    attributes = _attributes(item)
    info_hash = normalize_info_hash(attributes.get("infohash", ""))
    if info_hash is None:
        # Jackett puts the magnet into <link> and the enclosure when the indexer has no .torrent.
        enclosure = item.find("enclosure")
        for magnet in (
            attributes.get("magneturl", ""),
            item.findtext("link") or "",
            enclosure.get("url", "") if enclosure is not None else "",
        ):
            info_hash = magnet_info_hash(magnet)
            if info_hash is not None:
                break
    if info_hash is None:
        return None
    # <size> is the content's; the enclosure's length may be that of the .torrent file.
    size = _count(item.findtext("size"))
    if size is None:
        size = _count(attributes.get("size"))
    seeders = _count(attributes.get("seeders"))
    peers = _count(attributes.get("peers"))  # seeders and leechers together
    leechers = max(peers - seeders, 0) if peers is not None and seeders is not None else None
    imdb = normalize_imdb(attributes.get("imdbid")) or normalize_imdb(attributes.get("imdb"))
    return TorznabResult(
        name=name,
        info_hash=info_hash,
        size=size,
        seeders=seeders,
        leechers=leechers,
        added=_published(item.findtext("pubDate")),
        imdb=imdb,
    )


def parse_caps(root: Element) -> _Caps:
    """The search functions and their parameters that a ``<caps>`` document declares."""
    searching = root.find("searching")
    if searching is None:
        return _Caps(_FALLBACK_CAPS.functions)
    functions: dict[str, frozenset[str]] = {}
    for element in searching:
        function = _CAPS_FUNCTIONS.get(element.tag)
        if function is None or element.get("available", "").strip().lower() != "yes":
            continue
        params = element.get("supportedParams", "q")
        functions[function] = frozenset(p.strip().lower() for p in params.split(",") if p.strip())
    functions.setdefault("search", frozenset({"q"}))
    limits = root.find("limits")
    max_limit = _count(limits.get("max")) if limits is not None else None
    return _Caps(functions, max_limit=max_limit or None)


class _Breaker:
    """Fails calls at once after :data:`FAILURES_TO_OPEN` failures in a row, for a while.

    When that while is over, one call goes through (half-open): its success closes the breaker, its
    failure opens it again. Calls meanwhile are still failed at once.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.failures = 0
        self._open_until = 0.0
        self._probing = False

    def admit(self) -> float | None:
        """None when a call may go ahead (it must then report), else the seconds left to wait."""
        if self.failures < FAILURES_TO_OPEN:
            return None
        left = self._open_until - self._clock()
        if left > 0:
            return left
        if self._probing:
            return OPEN_SECONDS  # another call is finding out; this one waits no less than a period
        self._probing = True
        return None

    def succeeded(self) -> None:
        self.failures = 0
        self._probing = False

    def failed(self) -> None:
        self.failures += 1
        self._probing = False
        if self.failures >= FAILURES_TO_OPEN:
            self._open_until = self._clock() + OPEN_SECONDS

    def abandoned(self) -> None:
        """A call admitted but neither succeeded nor failed (cancelled): let the next one try."""
        self._probing = False


class TorznabClient:
    """Searches one Torznab indexer; reads its caps once, skips it for a while when it keeps failing."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        indexer: TorznabIndexer,
        *,
        timeout: float,
        max_reply: int = MAX_REPLY_BYTES,
        clock: Callable[[], float] = time.monotonic,
        caps_ttl: float = CAPS_TTL,
        caps_retry: float = CAPS_RETRY,
    ) -> None:
        self._session = session
        self._name = indexer.name
        self._url = indexer.url
        self._api_key = indexer.url.query.get("apikey", "")
        self._max_reply = max_reply
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # UpstreamName lists the fixed upstreams; indexers are named by configuration.
        label = cast(UpstreamName, f"Torznab {indexer.name}")
        self._label = label
        # The address goes to the log on transport failures: never with its query (the API key).
        address = str(indexer.url.with_query(None).with_user(None).with_fragment(None))
        self._upstream = Upstream(label, address, within=timeout)
        self._caps: SingleFlightCache[str, _Caps] = SingleFlightCache(
            ttl=lambda caps: caps_ttl if caps.known else caps_retry, max_entries=1, clock=clock
        )
        self._breaker = _Breaker(clock)

    @property
    def name(self) -> str:
        """The indexer's name as configured (``TORZNAB_INDEXERS``)."""
        return self._name

    async def search(
        self,
        query: str,
        *,
        kind: SearchKind = "any",
        imdb: str | None = None,
        season: int | None = None,
        episode: int | None = None,
        limit: int = 100,
    ) -> list[TorznabResult]:
        """Up to ``limit`` results with an info hash, in the indexer's order, each hash once.

        ``kind`` picks ``t=movie`` or ``t=tvsearch`` when the indexer offers them (with ``imdbid``,
        ``season`` and ``ep`` where it supports them; otherwise season and episode go into the query as
        ``S01E02``). ``query`` may be blank when ``imdb`` is given: the id alone is searched (as text
        where the indexer has no id search). Raises ``ValueError`` for bad arguments (the caller's 400)
        and :class:`~gateway.upstream.UpstreamError` when the indexer fails or is being skipped.
        """
        query = query.strip()
        imdb_id = normalize_imdb(imdb) if imdb is not None else None
        if imdb is not None and imdb_id is None:
            raise ValueError(f"not an IMDb id: {imdb!r}")
        if not query and imdb_id is None:
            raise ValueError("the search needs a query or an IMDb id")
        if kind not in ("movie", "tv", "any"):
            raise ValueError(f"kind must be movie, tv or any, not {kind!r}")
        for label, number in (("season", season), ("episode", episode)):
            if number is not None and number < 0:
                raise ValueError(f"{label} must not be negative")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        wait = self._breaker.admit()
        if wait is not None:
            raise self._upstream.error(
                Failure.UNREACHABLE,
                f"{self._label} skipped for {math.ceil(wait)} s after {self._breaker.failures} "
                "failures in a row",
            )
        try:
            results = await self._search(query, kind, imdb_id, season, episode, limit)
        except UpstreamError:
            self._breaker.failed()
            raise
        except BaseException:
            self._breaker.abandoned()
            raise
        self._breaker.succeeded()
        return results

    async def _search(
        self,
        query: str,
        kind: SearchKind,
        imdb: str | None,
        season: int | None,
        episode: int | None,
        limit: int,
    ) -> list[TorznabResult]:
        caps = await self._caps.get("caps", self._load_caps)
        params = _search_params(caps, query, kind, imdb, season, episode, limit)
        started = time.monotonic()
        root = await self._get(params, "the search")
        if root.tag != "rss":
            raise self._upstream.error(Failure.BAD_REPLY, f"{self._label} answered XML that is not a feed")
        channel = root.find("channel")
        items = channel.findall("item") if channel is not None else []
        results: list[TorznabResult] = []
        seen: set[str] = set()
        for item in items:
            result = parse_item(item)
            if result is None or result.info_hash in seen:
                continue
            seen.add(result.info_hash)
            results.append(result)
            if len(results) == limit:
                break
        logger.debug(
            "Torznab %s: %s %s → %d items, kept %d in %.3f s",
            self._name,
            params["t"],
            {key: value for key, value in params.items() if key != "t"},
            len(items),
            len(results),
            time.monotonic() - started,
        )
        return results

    async def functions(self) -> list[str]:
        """The search functions the indexer offers (its caps, read at most once an hour): what
        ``/torrent/health`` shows. Raises :class:`UpstreamError` as a search would."""
        caps = await self._caps.get("caps", self._load_caps)
        if not caps.known:
            raise self._upstream.error(Failure.BAD_REPLY, f"{self._label} answered no usable caps")
        return sorted(caps.functions)

    async def _load_caps(self) -> _Caps:
        """The indexer's caps; when they cannot be read but the indexer answered, plain search."""
        try:
            root = await self._get({"t": "caps"}, "its caps")
            if root.tag != "caps":
                raise self._upstream.error(Failure.BAD_REPLY, f"{self._label} answered caps of another shape")
        except UpstreamError as exc:
            if exc.kind is not Failure.BAD_REPLY:
                raise  # not answering, or refusing the key: a search would fail the same way
            logger.debug("Torznab %s: no usable caps (%s); plain search for now", self._name, exc.reason)
            return _FALLBACK_CAPS
        caps = parse_caps(root)
        logger.debug("Torznab %s caps: %s", self._name, {t: sorted(p) for t, p in caps.functions.items()})
        return caps

    async def _get(self, params: Mapping[str, str], call: str) -> Element:
        """The parsed XML of a 200 answer to ``params``, or :class:`UpstreamError` saying why not."""
        url = self._url.update_query(params)
        headers = {
            "Accept": "application/rss+xml, application/xml, text/xml",
            "User-Agent": USER_AGENT,
            # Explicit, with auto_decompress below: the gateway's shared session turns both off.
            "Accept-Encoding": "gzip, deflate",
        }
        async with (
            self._upstream.call(call),
            self._session.get(url, headers=headers, timeout=self._timeout, auto_decompress=True) as response,
        ):
            body = await read_capped(response, self._max_reply)
            status = response.status
        looks_html = body.lstrip()[:14].lower().startswith(_HTML_START)
        if status in (401, 403):
            raise self._upstream.error(
                Failure.REFUSED, f"{self._label} answered HTTP {status} (wrong API key?)"
            )
        if status != 200:
            page = " (an HTML page)" if looks_html else ""
            raise self._upstream.error(Failure.BAD_REPLY, f"{self._label} answered HTTP {status}{page}")
        if looks_html:
            raise self._upstream.error(Failure.BAD_REPLY, f"{self._label} answered an HTML page")
        root = self._parse(body)
        if root.tag == "error":
            raise self._indexer_error(root)
        return root

    def _parse(self, body: bytes) -> Element:
        if _plain_utf8(body):
            # Without a document type declaration a document can declare no entity and refer to no
            # external resource, so expat's C tree builder may read it: 2-4x faster than defusedxml's
            # Python callbacks, which were half of a search's CPU. Anything else goes to defusedxml.
            fast = XMLParser(encoding="utf-8")  # noqa: S314 - no DTD: nothing to expand or fetch
            try:
                fast.feed(body)
                return fast.close()
            except ParseError:
                raise self._upstream.error(
                    Failure.BAD_REPLY, f"{self._label} answered something that is not XML"
                ) from None
        try:
            return safe_xml.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except defusedxml.DTDForbidden:
            reason = f"{self._label} refused: its answer has a document type declaration"
        except defusedxml.EntitiesForbidden:
            reason = f"{self._label} refused: its answer declares entities"
        except defusedxml.ExternalReferenceForbidden:
            reason = f"{self._label} refused: its answer refers to an external resource"
        except ParseError:
            reason = f"{self._label} answered something that is not XML"
        raise self._upstream.error(Failure.BAD_REPLY, reason)

    def _indexer_error(self, root: Element) -> UpstreamError:
        """``<error code="100" description="Invalid API Key"/>``: 1xx and 910 (API disabled) refuse."""
        code = root.get("code", "").strip()
        description = " ".join(root.get("description", "").split())[:_MAX_DESCRIPTION]
        if self._api_key:
            description = description.replace(self._api_key, "…")
        number = _count(code)
        refused = number is not None and (100 <= number < 200 or number == 910)
        kind = Failure.REFUSED if refused else Failure.BAD_REPLY
        what = f"error {number}" if number is not None else "an error"
        reason = f"{self._label} answered {what}" + (f": {description}" if description else "")
        return self._upstream.error(kind, reason)


def _search_params(
    caps: _Caps,
    query: str,
    kind: SearchKind,
    imdb: str | None,
    season: int | None,
    episode: int | None,
    limit: int,
) -> dict[str, str]:
    """The query parameters of a search (without the API key), by what the indexer supports."""
    function = {"movie": "movie", "tv": "tvsearch", "any": "search"}[kind]
    supported = caps.functions.get(function)
    if supported is None:
        function, supported = "search", caps.functions["search"]
    params: dict[str, str] = {"t": function}
    by_id = imdb is not None and function in ("movie", "tvsearch") and "imdbid" in supported
    if by_id and imdb is not None:
        params["imdbid"] = imdb  # Prowlarr and Jackett both take the tt form (and bare digits)
    elif not query and imdb is not None:
        query = imdb  # no id search: many indexers find the id as text, as apibay does
    if function == "tvsearch" and season is not None and "season" in supported:
        params["season"] = str(season)
        if episode is not None and "ep" in supported:
            params["ep"] = str(episode)
    elif kind == "tv" and season is not None and query:
        # No structured season: the way release names write it, which plain text search finds.
        query += f" S{season:02d}" + (f"E{episode:02d}" if episode is not None else "")
    if query:
        params["q"] = query
    if kind == "movie":
        params["cat"] = MOVIE_CATEGORY
    elif kind == "tv":
        params["cat"] = TV_CATEGORY
    if caps.max_limit is not None:
        limit = min(limit, caps.max_limit)
    params["limit"] = str(limit)
    return params
