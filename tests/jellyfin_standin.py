"""A faithful Jellyfin 10.11 stand-in for gateway tests.

The gateway must be tested against the upstream it will really meet, so this
module mimics Jellyfin 10.11 closely where the gateway can observe it:
token extraction and precedence, 401-versus-403 with empty bodies,
case-insensitive routing, PascalCase JSON without nulls, the BaseUrl
redirection middleware, the WebSocket handshake and Range handling on static
streams.  Behaviour follows the
Jellyfin source (tag ``v10.11.0``, and master for 12.0's legacy-authorization switch).

Everything observable lives on a :class:`StandinState` stored under
:data:`STATE`, and routes are rows of a table (:data:`ROUTES` on the app), so
new endpoints are one handler plus one :class:`Route` row.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import gzip
import hashlib
import json
import logging
import posixpath
import re
import secrets
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, MultiMapping

logger = logging.getLogger(__name__)

JELLYFIN_VERSION = "10.11.0"
PRODUCT_NAME = "Jellyfin Server"
DEFAULT_SERVER_NAME = "standin"
DEFAULT_AUTH_PROVIDER_ID = "Jellyfin.Server.Implementations.Users.DefaultAuthenticationProvider"
DEFAULT_PASSWORD_RESET_PROVIDER_ID = "Jellyfin.Server.Implementations.Users.DefaultPasswordResetProvider"
EMPTY_GUID = "0" * 32
# DateTime.MinValue as Jellyfin's JsonDateTimeConverter writes it.
MIN_DATE = "0001-01-01T00:00:00.0000000Z"
# ExceptionMiddleware's body outside a Development environment.
GENERIC_ERROR_BODY = "Error processing request."
# The body the brief asks for on a refused WebSocket handshake.
WEBSOCKET_REFUSAL_BODY = "Token is required"
KEEPALIVE_SECONDS = 60
MEBIBYTE = 1024 * 1024
# Kestrel's MaxRequestBodySize default.
MAX_REQUEST_BODY = 30_000_000

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
CAMEL_JSON_CONTENT_TYPE = 'application/json; profile="CamelCase"; charset=utf-8'
PROBLEM_CONTENT_TYPE = "application/problem+json; charset=utf-8"
TEXT_PLAIN = "text/plain"

VIDEO_CONTENT_TYPES: Mapping[str, str] = {
    "mp4": "video/mp4",
    "m4v": "video/x-m4v",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "ts": "video/mp2t",
    "m2ts": "video/mp2t",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "ogv": "video/ogg",
}


def new_guid() -> str:
    """Return a random Guid in .NET ``"N"`` format (32 lowercase hex), like Jellyfin ids."""
    return uuid.uuid4().hex


def dotnet_datetime(value: datetime) -> str:
    """Format a UTC datetime the way Jellyfin's JsonDateTimeConverter does (7 fraction digits)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0Z"


def deterministic_media(size: int) -> bytes:
    """Build a reproducible byte blob so Range tests can compare exact slices."""
    pattern = bytes(range(251))  # prime length: slices at any offset differ
    repeats, rest = divmod(size, len(pattern))
    return pattern * repeats + pattern[:rest]


# ---------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------


@dataclass
class User:
    """A Jellyfin user as far as authentication and UserDto care."""

    name: str
    password: str
    id: str
    is_administrator: bool = False
    is_disabled: bool = False
    is_hidden: bool = False
    last_login_date: datetime | None = None
    last_activity_date: datetime | None = None


@dataclass
class Device:
    """A login token row (Jellyfin's Devices table): who holds it and from where."""

    access_token: str
    user_id: str
    app_name: str
    app_version: str
    device_name: str
    device_id: str
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Library:
    """A virtual folder as ``GET /Library/VirtualFolders`` reports it."""

    name: str
    locations: list[str]
    collection_type: str | None = None
    item_id: str = field(default_factory=new_guid)
    primary_image_item_id: str | None = None
    refresh_status: str = "Idle"
    refresh_progress: float | None = None
    enable_realtime_monitor: bool = True


@dataclass(frozen=True)
class MediaUpdate:
    """One ``Updates[]`` entry accepted by ``POST /Library/Media/Updated``."""

    path: str
    update_type: str | None


@dataclass
class Item:
    """A library item made by a scan: BaseItem as far as ``BaseItemDto`` shows it.

    ``path`` is the video file of a Movie or Episode, the folder of a Series or
    Season (None for a virtual season); ``id`` is Jellyfin's deterministic one
    (:func:`jellyfin_item_id`), so a rescan finds the same item again.
    """

    type: str  # "Movie", "Series", "Season" or "Episode"
    name: str
    path: str | None
    id: str
    parent_id: str | None = None
    production_year: int | None = None
    provider_ids: dict[str, str] = field(default_factory=dict)
    index_number: int | None = None
    index_number_end: int | None = None
    parent_index_number: int | None = None
    series_id: str | None = None
    series_name: str | None = None
    season_id: str | None = None
    season_name: str | None = None
    #: Width and height of the video stream ffprobe would find; None: guessed from the file name.
    video_size: tuple[int, int] | None = None

    @property
    def is_folder(self) -> bool:
        """Series and seasons are folders; a movie is a video even as a BDMV/VIDEO_TS folder."""
        return self.type in ("Series", "Season")

    @property
    def sort_name(self) -> str:
        """``BaseItem.CreateSortName``: episodes and seasons by number, else the name without articles."""
        if self.type == "Episode":
            season = f"{self.parent_index_number:03d} - " if self.parent_index_number is not None else ""
            number = f"{self.index_number:04d} - " if self.index_number is not None else ""
            return season + number + self.name
        if self.type == "Season" and self.index_number is not None:
            return f"{self.index_number:04d}"
        sortable = self.name.strip().lower()
        for word in ("the", "a", "an"):  # SortRemoveWords: leading, inner and trailing
            sortable = sortable.removeprefix(word + " ").replace(f" {word} ", " ")
            sortable = sortable.removesuffix(" " + word)
        sortable = re.sub(r"[,&\-{}']", "", sortable)
        sortable = re.sub(r"[.+%]", " ", sortable)
        return re.sub(r"\d+", lambda m: m.group().zfill(10), sortable)  # ModifySortChunks


@dataclass
class RequestRecord:
    """What the stand-in saw of one request, for assertions about what the gateway forwarded."""

    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes | None = None


@dataclass
class WebSocketRecord:
    """One WebSocket handshake attempt and, if accepted, what went over it."""

    path: str
    query_string: str
    authorization: str | None
    accepted: bool = False
    user_id: str | None = None
    is_api_key: bool = False
    received: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None


class StandinState:
    """All mutable state of one stand-in: users, tokens, keys, media and request history.

    Tests reach it through ``app[STATE]`` to arrange fixtures (users, tokens)
    and to assert what the gateway sent upstream (``calls``, ``requests``,
    ``websockets``, ``media_updates``).

    Library items come from disk: ``filesystem`` maps a Jellyfin path prefix to
    a local directory, and a path announced by ``/Library/Media/Updated`` (or
    every location, on ``/Library/Refresh``) is scanned ``scan_delay`` seconds
    later into ``items``, unless ``scanning`` is False (a broken library
    monitor).  :meth:`scan` does the same at once.  ``search_cleans_punctuation``
    switches ``searchTerm`` from 10.11's matching to 12.0's (punctuation as spaces).
    """

    def __init__(
        self,
        *,
        server_id: str | None = None,
        server_name: str = DEFAULT_SERVER_NAME,
        legacy_authorization: bool = True,
        media_size: int = MEBIBYTE,
        with_defaults: bool = True,
    ) -> None:
        self.server_id: str = server_id or new_guid()
        self.server_name: str = server_name
        self.version: str = JELLYFIN_VERSION
        self.legacy_authorization: bool = legacy_authorization
        self.startup_wizard_completed: bool = True
        self.quick_connect_enabled: bool = False
        self.users: dict[str, User] = {}
        self.tokens: dict[str, str] = {}
        self.devices: dict[str, Device] = {}
        self.api_keys: dict[str, str] = {}
        self.api_key_created: dict[str, datetime] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.requests: list[RequestRecord] = []
        self.websockets: list[WebSocketRecord] = []
        self.live_sockets: set[web.WebSocketResponse] = set()
        self.libraries: list[Library] = []
        self.media_updates: list[MediaUpdate] = []
        self.library_refreshes: int = 0
        self.filesystem: dict[str, Path] = {}
        self.items: dict[str, Item] = {}
        self.scan_delay: float = 0.5
        self.scanning: bool = True
        self.search_cleans_punctuation: bool = False
        self.pending_scans: dict[str | None, asyncio.Task[None]] = {}
        self.media: bytes = deterministic_media(media_size)
        self.media_last_modified: datetime = datetime(2024, 1, 1, tzinfo=UTC)
        #: Jellyfin web's index.html (None: a small stub) and other files under /web/ by name.
        self.web_index_html: str | None = None
        self.web_files: dict[str, bytes] = {}
        self.web_last_modified: datetime = datetime(2024, 1, 1, tzinfo=UTC)
        if with_defaults:
            self.populate_defaults()

    def populate_defaults(self) -> None:
        """Add the users, API key and libraries every test may rely on."""
        self.add_user("admin", "adminpw", admin=True)
        self.add_user("alice", "alicepw")
        self.add_user("mallory", "mallorypw", disabled=True)
        self.add_api_key("gateway")
        self.libraries.extend(
            [
                Library("Movies", ["/media/movies"], "movies"),
                Library("Shows", ["/media/tv"], "tvshows"),
            ]
        )

    # -- users, tokens and keys ------------------------------------------

    def add_user(self, name: str, password: str, *, admin: bool = False, disabled: bool = False) -> User:
        """Create a user with a fresh 32-hex id."""
        user = User(
            name=name,
            password=password,
            id=new_guid(),
            is_administrator=admin,
            is_disabled=disabled,
        )
        self.users[user.id] = user
        return user

    def user_by_name(self, name: str) -> User:
        """Find a user the way Jellyfin does at login: name compared case-insensitively."""
        found = self.find_user_by_name(name)
        if found is None:
            raise KeyError(name)
        return found

    def find_user_by_name(self, name: str) -> User | None:
        """Like :meth:`user_by_name` but ``None`` when absent."""
        wanted = name.casefold()
        return next((u for u in self.users.values() if u.name.casefold() == wanted), None)

    def issue_token(
        self,
        user: User,
        *,
        device_id: str | None = None,
        client: str = "standin-tests",
        device_name: str = "pytest",
        version: str = "0.0.1",
    ) -> str:
        """Create a new access token for ``user`` as if it had logged in from a device."""
        token = new_guid()
        self.tokens[token] = user.id
        self.devices[token] = Device(
            access_token=token,
            user_id=user.id,
            app_name=client,
            app_version=version,
            device_name=device_name,
            device_id=device_id or new_guid(),
        )
        return token

    def revoke_token(self, token: str) -> None:
        """Delete a login token (logout)."""
        self.tokens.pop(token, None)
        self.devices.pop(token, None)

    def add_api_key(self, app_name: str) -> str:
        """Create an API key (elevated, no user) and return it."""
        key = new_guid()
        self.api_keys[key] = app_name
        self.api_key_created[key] = datetime.now(UTC)
        return key

    def api_key_for(self, app_name: str) -> str:
        """Return the first API key created for ``app_name``."""
        return next(k for k, name in self.api_keys.items() if name == app_name)

    # -- media -------------------------------------------------------------

    def set_media(self, data: bytes) -> None:
        """Replace the blob served by ``/Videos/{id}/stream``."""
        self.media = data

    @property
    def media_etag(self) -> str:
        """Strong ETag of the current media blob."""
        return '"' + hashlib.sha256(self.media).hexdigest()[:32] + '"'

    # -- library items -------------------------------------------------------

    def scan(self, path: str) -> list[Item]:
        """Scan what holds ``path`` now and return the items found there (created or updated).

        Like the library monitor, a path in no library location is ignored; the
        whole top-level entry (movie or series folder) holding it is rescanned,
        or every entry when ``path`` is a location, and items of that entry no
        longer on disk are removed.  Nothing happens for a path ``filesystem``
        does not map.
        """
        path = posixpath.normpath(path)
        spots = [(lib, posixpath.normpath(loc)) for lib in self.libraries for loc in lib.locations]
        inside = [(lib, loc) for lib, loc in spots if _under(path, loc)]
        if not inside:
            return []
        library, location = max(inside, key=lambda spot: len(spot[1]))
        rest = path[len(location) :].strip("/")
        root = posixpath.join(location, rest.split("/")[0]) if rest else location
        local = self._local_path(root)
        if local is None:
            return []
        scan = _LibraryScan(library)
        if root == location:
            for child in _children(local):
                scan.entry(posixpath.join(root, child.name), child)
        elif local.exists():
            scan.entry(root, local)
        found = scan.items
        everything = [*self.items.values(), *found.values()]
        series_here = {i.id for i in everything if i.type == "Series" and i.path and _under(i.path, root)}
        for item in list(self.items.values()):
            here = (item.path is not None and _under(item.path, root)) or item.series_id in series_here
            if here and item.id not in found:
                del self.items[item.id]
        self.items.update(found)
        return list(found.values())

    def scan_libraries(self) -> list[Item]:
        """Scan every location of every library (``/Library/Refresh``)."""
        return [item for lib in self.libraries for location in lib.locations for item in self.scan(location)]

    def schedule_scan(self, path: str | None) -> None:
        """Scan ``path`` (every library when None) ``scan_delay`` s from now; a repeat restarts the wait."""
        pending = self.pending_scans.pop(path, None)
        if pending is not None:
            pending.cancel()
        self.pending_scans[path] = asyncio.get_running_loop().create_task(self._scan_later(path))

    async def _scan_later(self, path: str | None) -> None:
        await asyncio.sleep(self.scan_delay)
        self.pending_scans.pop(path, None)
        if not self.scanning:
            return
        try:
            if path is None:
                self.scan_libraries()
            else:
                self.scan(path)
        except Exception:
            logger.exception("stand-in scan of %s failed", path)

    def _local_path(self, path: str) -> Path | None:
        """The local file or directory behind a Jellyfin path (longest ``filesystem`` prefix)."""
        prefixes = [p for p in self.filesystem if _under(path, posixpath.normpath(p))]
        if not prefixes:
            return None
        prefix = max(prefixes, key=len)
        return Path(self.filesystem[prefix], path[len(posixpath.normpath(prefix)) :].lstrip("/"))

    def matches_search(self, name: str, term: str) -> bool:
        """``searchTerm`` against CleanName as 10.11's BaseItemRepository does it.

        CleanName is the name without diacritics, lowercased; the term is only
        lowercased, and one holding ``% _ [ ] ^`` becomes a LIKE pattern (``_``
        any character).  With ``search_cleans_punctuation`` (12.0's
        GetCleanValue) both sides also turn punctuation and symbols into single spaces.
        """
        if self.search_cleans_punctuation:
            return clean_value(term, punctuation=True) in clean_value(name, punctuation=True)
        clean, term = clean_value(name), term.lower()
        if not any(c in term for c in "%_[]^"):
            return term in clean
        like = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in term.strip("%"))
        return re.fullmatch(f".*{like}.*", clean, re.DOTALL) is not None

    # -- WebSocket -----------------------------------------------------------

    @property
    def websocket_connections(self) -> int:
        """Number of accepted WebSocket handshakes so far."""
        return sum(1 for record in self.websockets if record.accepted)

    async def broadcast(self, message_type: str, data: Any = None) -> int:
        """Send a Jellyfin-style outbound message to every open socket; return how many got it."""
        sent = 0
        for ws in list(self.live_sockets):
            if ws.closed:
                continue
            await ws.send_str(outbound_message(message_type, data))
            sent += 1
        return sent


STATE: web.AppKey[StandinState] = web.AppKey("jellyfin_standin_state", StandinState)


def outbound_message(message_type: str, data: Any = None) -> str:
    """Serialise an outbound WebSocket message: MessageType, MessageId (32 hex), Data unless null."""
    message: dict[str, Any] = {"MessageType": message_type, "MessageId": new_guid()}
    if data is not None:
        message["Data"] = data
    return json.dumps(message, separators=(",", ":"))


# ---------------------------------------------------------------------------
# Library scans (Emby.Naming and the item resolvers, as far as paths decide)
# ---------------------------------------------------------------------------

_VIDEO_EXTENSION_NAMES = "mkv mp4 m4v avi mov wmv mpg mpeg ts m2ts webm ogv flv iso vob"
VIDEO_EXTENSIONS = frozenset(_VIDEO_EXTENSION_NAMES.split())
# NamingOptions.VideoExtraRules: folders holding extras, and extra suffixes of a file name.
_EXTRA_FOLDER_NAMES = (
    "extras,trailers,featurettes,samples,sample,shorts,clips,other,scenes,interviews,backdrops"
)
EXTRA_FOLDERS = frozenset([*_EXTRA_FOLDER_NAMES.split(","), "behind the scenes", "deleted scenes"])
_EXTRA_FILE = re.compile(
    r"^(trailer|sample)$|[-._ ](trailer|sample)$"
    r"|-(scene|clip|behindthescenes|deleted|deletedscene|featurette|interview|other|short|extra)$",
    re.IGNORECASE,
)
_IGNORED = re.compile(r"^\.|^(@eaDir|#recycle|lost\+found)$", re.IGNORECASE)
_SEASON_FOLDER = re.compile(r"^(?:season|series|saison|staffel|s)[ ._-]*(\d{1,4})(?!\d)|^(specials)$", re.I)
# S01E02, S01E02-E03, S01E02E03, 1x02.
_EPISODE = re.compile(
    r"s(\d{1,4})[ ._-]*e(\d{1,4})(?:[ ._-]*e(\d{1,4}))?|(?<!\d)(\d{1,2})x(\d{1,3})(?!\d)", re.I
)
# NamingOptions.CleanDateTimes and (the first) CleanStrings.
_CLEAN_DATES = tuple(
    re.compile(
        r"(.+[^_\,\.\(\)\[\]\-])" + sep + r"(19[0-9]{2}|20[0-9]{2})(?![0-9]+|\W[0-9]{2}\W[0-9]{2})"
        r"([ _\,\.\(\)\[\]\-][^0-9]|).*(19[0-9]{2}|20[0-9]{2})*",
        re.IGNORECASE,
    )
    for sep in (r"[_\.\(\)\[\]\-]", r"[ _\.\(\)\[\]\-]+")
)
_CLEAN_STRINGS = (
    re.compile(
        r"^\s*(?P<cleaned>.+?)[ _\,\.\(\)\[\]\-](3d|sbs|tab|hsbs|htab|mvc|HDR|HDC|UHD|UltraHD|4k|ac3|dts"
        r"|custom|dc|divx|divx5|dsr|dsrip|dutch|dvd|dvdrip|dvdscr|dvdscreener|extended|hdtv|hdrip|hdtvrip|internal"
        r"|limited|multisubs|ntsc|ogg|ogm|pal|pdtv|proper|repack|rerip|retail|r3|r5|bd5|bd|se|svcd|swedish"
        r"|german|read.nfo|nfofix|unrated|ws|telesync|ts|telecine|tc|brrip|bdrip|480p|480i|576p|576i|720p"
        r"|720i|1080p|1080i|2160p|hrhd|hrhdtv|hddvd|bluray|blu-ray|x264|x265|h264|h265|xvid|xvidvd|xxx"
        r"|www.www|AAC|DTS|\[.*\])([ _\,\.\(\)\[\]\-]|$)",
        re.IGNORECASE,
    ),
    re.compile(r"^(?P<cleaned>.+?)(\[.*\])", re.IGNORECASE),
    re.compile(r"^\s*\[[^\]]+\](?!\.\w+$)\s*(?P<cleaned>.+)", re.IGNORECASE),
)
_IMDB_ID = re.compile(r"tt\d{7,8}(?!\d)")


def jellyfin_item_id(item_type: str, key: str) -> str:
    """``LibraryManager.GetNewItemId``: the Guid of md5(UTF-16 of the type's FullName + path)."""
    full_name = f"MediaBrowser.Controller.Entities.{'Movies' if item_type == 'Movie' else 'TV'}.{item_type}"
    digest = hashlib.md5((full_name + key).encode("utf-16-le"), usedforsecurity=False)
    return uuid.UUID(bytes_le=digest.digest()).hex


def clean_value(value: str, *, punctuation: bool = False) -> str:
    """``GetCleanValue``: diacritics removed, lowercased; 12.0 also makes punctuation single spaces."""
    text = "".join(c for c in unicodedata.normalize("NFD", value) if unicodedata.category(c) != "Mn")
    if punctuation:
        text = " ".join("".join(c if c.isalnum() or c.isspace() else " " for c in text).split())
    return unicodedata.normalize("NFC", text).lower()


def clean_name(name: str) -> tuple[str, int | None]:
    """``VideoResolver.CleanDateTime`` then ``CleanString``: the title and the year of a name."""
    year = None
    for regex in _CLEAN_DATES:
        if (match := regex.search(name)) and match.group(2):
            name, year = match.group(1).rstrip(), int(match.group(2))
            break
    for regex in _CLEAN_STRINGS:
        if match := regex.search(name):
            name = match.group("cleaned")
            break
    return name.strip(), year


def attribute_value(text: str, attribute: str) -> str | None:
    """``GetAttributeValue``: ``[imdbid-x]``, ``(tmdbid=x)``, ``{tvdbid-x}``; imdbid also any ``tt…``."""
    a = re.escape(attribute)
    match = re.search(rf"\[{a}[=-]([^\]]+)\]|\({a}[=-]([^)]+)\)|\{{{a}[=-]([^}}]+)\}}", text, re.I)
    if match:
        return next(g for g in match.groups() if g is not None).strip()
    if attribute == "imdbid" and (imdb := _IMDB_ID.search(text)):
        return imdb.group()
    return None


def provider_ids(name: str, imdb_source: str) -> dict[str, str]:
    """Provider ids of a movie/series name; a movie's IMDb id is looked for in its whole path."""
    found = {"Imdb": attribute_value(imdb_source, "imdbid")}
    found |= {key: attribute_value(name, f"{key.lower()}id") for key in ("Tmdb", "Tvdb")}
    return {key: value for key, value in found.items() if value}


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


def _children(folder: Path) -> list[Path]:
    """Entries Jellyfin looks at: sorted, hidden and NAS clutter left out."""
    if not folder.is_dir():
        return []
    return sorted((c for c in folder.iterdir() if not _IGNORED.search(c.name)), key=lambda c: c.name)


def _is_video(path: Path) -> bool:
    """A video Jellyfin resolves as an item, not an extra (sample, trailer …)."""
    return (
        path.is_file() and path.suffix[1:].lower() in VIDEO_EXTENSIONS and not _EXTRA_FILE.search(path.stem)
    )


def _is_version(stem: str, folder: str) -> bool:
    """``IsEligibleForMultiVersion``: the folder name, then nothing or ``-``, ``_``, ``.``, ``[``."""
    for prefix in (folder, re.sub(r"\s*[\[{][^\]}]*[\]}]", "", folder).strip()):
        if prefix and stem.lower().startswith(prefix.lower()):
            rest = stem[len(prefix) :].strip()
            if not rest or rest[0] in "-_.[":
                return True
    return False


def _looks_like_series(folder: Path) -> bool:
    """In a mixed library: season folders or SxxEyy videos make a series."""
    return any(
        (c.is_dir() and _SEASON_FOLDER.match(c.name)) or (_is_video(c) and _EPISODE.search(c.stem))
        for c in _children(folder)
    )


class _LibraryScan:
    """One scan of one library: resolves entries into :class:`Item` objects (``items``, by id)."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self.items: dict[str, Item] = {}

    def add(self, item: Item) -> Item:
        self.items[item.id] = item
        return item

    def entry(self, path: str, local: Path) -> None:
        """A top-level entry of a location, by the library's collection type."""
        kind = self.library.collection_type
        if kind == "tvshows" or (kind in (None, "mixed") and local.is_dir() and _looks_like_series(local)):
            if local.is_dir():
                self.series(path, local)
        elif kind in (None, "mixed", "movies"):
            if local.is_dir():
                self.movie_folder(path, local)
            elif _is_video(local):  # a file in the library root is its own movie
                self.movie(path, local.stem)

    def movie(self, path: str, name_source: str) -> None:
        name, year = clean_name(name_source)
        ids = provider_ids(name_source, imdb_source=path)
        item_id = jellyfin_item_id("Movie", path)
        self.add(Item("Movie", name, path, item_id, self.library.item_id, year, ids))

    def movie_folder(self, path: str, local: Path) -> None:
        """MovieResolver: a DVD/BluRay folder, a movie with versions, several movies, or a plain folder."""
        children = _children(local)
        if any(c.is_dir() and c.name.upper() in ("BDMV", "VIDEO_TS") for c in children):
            self.movie(path, local.name)
            return
        videos = [c for c in children if _is_video(c)]
        if not videos:
            for child in children:
                if child.is_dir() and child.name.lower() not in EXTRA_FOLDERS:
                    self.movie_folder(posixpath.join(path, child.name), child)
        elif len(videos) == 1 or all(_is_version(v.stem, local.name) for v in videos):
            primary = next((v for v in videos if v.stem.lower() == local.name.lower()), videos[0])
            self.movie(posixpath.join(path, primary.name), local.name)
        else:  # a mixed folder: every video is a movie named from its file
            for video in videos:
                self.movie(posixpath.join(path, video.name), video.stem)

    def series(self, path: str, local: Path) -> None:
        name, year = clean_name(local.name)
        ids = provider_ids(local.name, imdb_source=local.name)
        item_id = jellyfin_item_id("Series", path)
        series = self.add(Item("Series", name, path, item_id, self.library.item_id, year, ids))
        self.episodes(series, path, local, None)

    def season(self, series: Item, number: int, path: str | None) -> Item:
        """A season folder's Season, or the virtual one Jellyfin adds for loose episodes."""
        name = "Specials" if number == 0 else f"Season {number}"
        key = path or f"{uuid.UUID(series.id)}{number}{name}"
        item_id = jellyfin_item_id("Season", key)
        if item_id in self.items:
            return self.items[item_id]
        season = Item("Season", name, path, item_id, series.id, index_number=number)
        season.series_id, season.series_name = series.id, series.name
        return self.add(season)

    def episodes(self, series: Item, path: str, local: Path, season: Item | None) -> None:
        for child in _children(local):
            child_path = posixpath.join(path, child.name)
            if child.is_dir() and child.name.lower() not in EXTRA_FOLDERS:
                match = _SEASON_FOLDER.match(child.name)
                number = (0 if match.group(2) else int(match.group(1))) if match else None
                folder = self.season(series, number, child_path) if number is not None else season
                self.episodes(series, child_path, child, folder)
            elif _is_video(child):
                self.episode(series, child_path, child.stem, season)

    def episode(self, series: Item, path: str, stem: str, folder: Item | None) -> None:
        """EpisodeResolver: numbers from the file name, the season from it or from the folder."""
        match = _EPISODE.search(stem)
        groups = [int(g) if g else None for g in match.groups()] if match else [None] * 5
        season_number, number, end = groups[:3] if groups[0] is not None else (groups[3], groups[4], None)
        if season_number is None and folder is not None:
            season_number = folder.index_number
        season = folder
        if season_number is not None and (folder is None or folder.index_number != season_number):
            season = self.season(series, season_number, None)
        episode = Item("Episode", stem, path, jellyfin_item_id("Episode", path), (season or series).id)
        episode.index_number, episode.parent_index_number = number, season_number
        episode.index_number_end = end if end != number else None
        episode.series_id, episode.series_name = series.id, series.name
        if season is not None:
            episode.season_id, episode.season_name = season.id, season.name
        self.add(episode)


# ---------------------------------------------------------------------------
# Token extraction (Jellyfin 10.11 AuthorizationContext)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What a request presents: the chosen token, where it came from, and the header pairs."""

    token: str | None
    source: str | None
    parts: Mapping[str, str]

    @property
    def has_token(self) -> bool:
        """``AuthorizationInfo.HasToken``: whitespace-only counts as no token."""
        return self.token is not None and self.token.strip() != ""

    @property
    def client(self) -> str | None:
        """``Client`` from the Authorization header."""
        return self.parts.get("Client")

    @property
    def device(self) -> str | None:
        """``Device`` from the Authorization header."""
        return self.parts.get("Device")

    @property
    def device_id(self) -> str | None:
        """``DeviceId`` from the Authorization header."""
        return self.parts.get("DeviceId")

    @property
    def version(self) -> str | None:
        """``Version`` from the Authorization header."""
        return self.parts.get("Version")


def parse_authorization_parts(value: str) -> dict[str, str]:
    """Port of ``AuthorizationContext.GetParts``: comma-separated pairs, quotes optional.

    A quote toggles "escaped" so a quoted comma stays in the value; keys are
    trimmed and case-sensitive; values are ``"``-trimmed, then URL-decoded
    (``+`` is a space); a repeated key overwrites the earlier one.
    """
    result: dict[str, str] = {}
    escaped = False
    start = 0
    key = ""
    i = 0
    for i, char in enumerate(value):
        if char in ('"', ","):
            # XOR as in the C#: a quote toggles, a comma keeps the state.
            escaped = (not escaped) == (char == '"')
            if char == "," and not escaped:
                if start < i:
                    result[key] = unquote_plus(value[start:i].strip('"'))
                    key = ""
                start = i + 1
        elif not escaped and char == "=":
            key = value[start:i].strip()
            start = i + 1
    end = len(value)
    if start < end:
        result[key] = unquote_plus(value[start:end].strip('"'))
    return result


def parse_authorization_header(value: str, *, legacy_authorization: bool) -> dict[str, str] | None:
    """Port of ``GetAuthorization``: scheme ``MediaBrowser`` (or legacy ``Emby``), else ``None``."""
    space = value.find(" ")
    if space == -1:
        return None
    scheme = value[:space].lower()
    if scheme != "mediabrowser" and not (legacy_authorization and scheme == "emby"):
        return None
    return parse_authorization_parts(value[space + 1 :])


def _joined(values: Sequence[str]) -> str | None:
    """``StringValues`` converted to string: ``None`` if absent, else comma-joined."""
    return ",".join(values) if values else None


def case_insensitive_query(query: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """ASP.NET's query collection: case-insensitive keys, plus ``UrlDecodeQueryFeature``.

    Jellyfin re-parses a query string that arrived fully URL-encoded (one key,
    no value, containing ``=``), e.g. ``?ApiKey%3Dabc``.
    """
    items = list(query)
    if len(items) == 1 and not items[0][1] and "=" in items[0][0]:
        pairs: CIMultiDict[str] = CIMultiDict()
        for pair in items[0][0].split("&"):
            name, sep, val = pair.partition("=")
            if not sep:
                if name not in pairs:
                    pairs[name] = ""
                continue
            pairs.add(name, val)
        return pairs
    return CIMultiDict(items)


def extract_credentials(
    headers: MultiMapping[str],
    query: MultiMapping[str] | Iterable[tuple[str, str]],
    *,
    legacy_authorization: bool,
) -> Credentials:
    """Pick the request's token exactly as Jellyfin 10.11 does (reference section 1).

    Order, first non-empty wins: ``Authorization`` (``MediaBrowser``, or
    ``Emby`` when legacy); ``X-Emby-Authorization`` only when legacy and
    ``Authorization`` is absent or empty; ``X-Emby-Token``*;
    ``X-MediaBrowser-Token``*; ``?ApiKey=``; ``?api_key=``*
    (* = only with ``legacy_authorization``).  ``headers`` must be
    case-insensitive (aiohttp's are); query keys are matched case-insensitively.
    """
    query_items = query.items() if isinstance(query, MultiMapping) else query
    ci_query = case_insensitive_query(query_items)

    header_name = "Authorization"
    auth_values = headers.getall("Authorization", [])
    if legacy_authorization and not _joined(auth_values):
        header_name = "X-Emby-Authorization"
        auth_values = headers.getall("X-Emby-Authorization", [])
    parts: dict[str, str] = {}
    if auth_values:
        parts = parse_authorization_header(auth_values[0], legacy_authorization=legacy_authorization) or {}

    token: str | None = parts.get("Token")
    source: str | None = header_name if token else None
    lookups: list[tuple[str, Callable[[], str | None]]] = []
    if legacy_authorization:
        lookups.append(("X-Emby-Token", lambda: _joined(headers.getall("X-Emby-Token", []))))
        lookups.append(("X-MediaBrowser-Token", lambda: _joined(headers.getall("X-MediaBrowser-Token", []))))
    lookups.append(("ApiKey", lambda: _joined(ci_query.getall("ApiKey", []))))
    if legacy_authorization:
        lookups.append(("api_key", lambda: _joined(ci_query.getall("api_key", []))))
    for name, lookup in lookups:
        if token:
            break
        token = lookup()
        source = name if token else None
    return Credentials(token=token or None, source=source, parts=parts)


def extract_token(
    headers: MultiMapping[str],
    query: MultiMapping[str] | Iterable[tuple[str, str]],
    *,
    legacy_authorization: bool,
) -> str | None:
    """The token Jellyfin would use, or ``None`` when the request carries none."""
    credentials = extract_credentials(headers, query, legacy_authorization=legacy_authorization)
    return credentials.token if credentials.has_token else None


# ---------------------------------------------------------------------------
# Resolution and policies
# ---------------------------------------------------------------------------


class AuthOutcome(enum.Enum):
    """Result of the CustomAuthenticationHandler."""

    ANONYMOUS = "anonymous"  # NoResult: no token
    AUTHENTICATED = "authenticated"  # Success
    FAILED = "failed"  # Fail: unknown token or disabled user


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: a user token or an API key."""

    token: str
    user: User | None
    is_api_key: bool
    client: str | None
    device: str | None
    device_id: str | None
    version: str | None

    @property
    def is_administrator(self) -> bool:
        """Role claim ``Administrator``: API keys and admin users."""
        return self.is_api_key or (self.user is not None and self.user.is_administrator)


@dataclass(frozen=True)
class AuthResult:
    """Authentication outcome plus, on success, the identity."""

    outcome: AuthOutcome
    identity: Identity | None = None
    failure: str | None = None


def authenticate(state: StandinState, credentials: Credentials) -> AuthResult:
    """Resolve a token like AuthService: login tokens first, then API keys; disabled fails."""
    if not credentials.has_token or credentials.token is None:
        return AuthResult(AuthOutcome.ANONYMOUS)
    token = credentials.token
    if token in state.tokens:
        user = state.users.get(state.tokens[token])
        device = state.devices.get(token)
        identity = Identity(
            token=token,
            user=user,
            is_api_key=False,
            client=credentials.client or (device.app_name if device else None),
            device=credentials.device or (device.device_name if device else None),
            device_id=credentials.device_id or (device.device_id if device else None),
            version=credentials.version or (device.app_version if device else None),
        )
        if user is not None and user.is_disabled:
            return AuthResult(AuthOutcome.FAILED, failure="User account has been disabled.")
        return AuthResult(AuthOutcome.AUTHENTICATED, identity)
    if token in state.api_keys:
        identity = Identity(
            token=token,
            user=None,
            is_api_key=True,
            client=state.api_keys[token],
            device=credentials.device or state.server_name,
            device_id=credentials.device_id or state.server_id,
            version=credentials.version or state.version,
        )
        return AuthResult(AuthOutcome.AUTHENTICATED, identity)
    return AuthResult(AuthOutcome.FAILED, failure="Invalid token.")


class Policy(enum.Enum):
    """Authorization policies the routes use (``MediaBrowser.Common/Api/Policies.cs``)."""

    ANONYMOUS = "anonymous"
    AUTHENTICATED = "authenticated"  # [Authorize] (DefaultAuthorization)
    ELEVATED = "elevated"  # RequiresElevation
    FIRST_TIME_SETUP_OR_ELEVATED = "first_time_setup_or_elevated"
    FIRST_TIME_SETUP_OR_IGNORE_PARENTAL_CONTROL = "first_time_setup_or_ignore_parental_control"


def authorize(policy: Policy, auth: AuthResult, state: StandinState) -> int | None:
    """Return 401 (challenge) or 403 (forbid) when the policy fails, else ``None``.

    ASP.NET's PolicyEvaluator forbids an authenticated caller and challenges
    everyone else; the first-time-setup policies let anyone in until the
    startup wizard is completed.
    """
    if policy is Policy.ANONYMOUS:
        return None
    first_time = policy in (
        Policy.FIRST_TIME_SETUP_OR_ELEVATED,
        Policy.FIRST_TIME_SETUP_OR_IGNORE_PARENTAL_CONTROL,
    )
    if first_time and not state.startup_wizard_completed:
        return None
    if auth.outcome is not AuthOutcome.AUTHENTICATED or auth.identity is None:
        return 401
    needs_admin = policy in (Policy.ELEVATED, Policy.FIRST_TIME_SETUP_OR_ELEVATED)
    if needs_admin and not auth.identity.is_administrator:
        return 403
    return None


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


def dotnet_camel_case(name: str) -> str:
    """Port of ``JsonNamingPolicy.CamelCase``: lowercases the leading capital run."""
    if not name or not name[0].isupper():
        return name
    chars = list(name)
    for i in range(len(chars)):
        if i == 1 and not chars[i].isupper():
            break
        has_next = i + 1 < len(chars)
        if i > 0 and has_next and not chars[i + 1].isupper():
            if chars[i + 1] == " ":
                chars[i] = chars[i].lower()
            break
        chars[i] = chars[i].lower()
    return "".join(chars)


def _prepare_json(value: Any, camel: bool) -> Any:
    """Drop null properties (``WhenWritingNull``) and apply the naming policy, recursively."""
    if isinstance(value, dict):
        return {
            (dotnet_camel_case(k) if camel else k): _prepare_json(v, camel)
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, (list, tuple)):
        return [_prepare_json(v, camel) for v in value]
    return value


def _media_type_params(item: str) -> tuple[str, dict[str, str]]:
    """Split one Accept entry into a lowercased media type and lowercased-name params."""
    media_type, *raw_params = (p.strip() for p in item.split(";"))
    params: dict[str, str] = {}
    for raw in raw_params:
        name, _, val = raw.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return media_type.lower(), params


def wants_camel_case(accept: str | None) -> bool:
    """Pick the output formatter as MVC would: CamelCase only when the best match asks for it."""
    if not accept:
        return False
    entries: list[tuple[float, int, str, dict[str, str]]] = []
    for item in accept.split(","):
        if not item.strip():
            continue
        media_type, params = _media_type_params(item)
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 1.0
        specificity = 0 if media_type == "*/*" else 1 if media_type.endswith("/*") else 2
        entries.append((quality, specificity, media_type, params))
    entries.sort(key=lambda e: (-e[0], -e[1]))  # stable: ties keep header order
    for quality, _, media_type, params in entries:
        if quality <= 0:
            continue
        profile = params.get("profile", "").lower()
        if media_type == "application/json" and profile == "camelcase":
            return True
        if media_type in ("application/json", "application/*", "*/*") and profile in ("", "pascalcase"):
            return False
    return False


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    """A bodiless response (policy 401/403, 404, 204 …): ``Content-Length: 0``, no type."""
    return web.Response(status=status, headers=dict(headers or {}))


def text_response(text: str, status: int = 200, content_type: str = TEXT_PLAIN) -> web.Response:
    """Plain text exactly as ASP.NET writes it: ``text/plain`` without a charset."""
    return web.Response(status=status, body=text.encode("utf-8"), headers={"Content-Type": content_type})


def error_response(status: int) -> web.Response:
    """ExceptionMiddleware's answer to ArgumentException/Authentication/SecurityException."""
    return text_response(GENERIC_ERROR_BODY, status)


def json_response(payload: Any, *, camel: bool = False, status: int = 200) -> web.Response:
    """Serialise like Jellyfin: compact JSON, nulls omitted, PascalCase unless camel profile."""
    body = json.dumps(_prepare_json(payload, camel), separators=(",", ":"))
    return web.Response(
        status=status,
        body=body.encode("utf-8"),
        headers={"Content-Type": CAMEL_JSON_CONTENT_TYPE if camel else JSON_CONTENT_TYPE},
    )


def _trace_id() -> str:
    """A W3C trace id like the ``traceId`` ASP.NET adds to ProblemDetails."""
    return f"00-{new_guid()}-{secrets.token_hex(8)}-00"


def problem_response(
    status: int, title: str, type_: str, errors: Mapping[str, list[str]] | None = None
) -> web.Response:
    """RFC 9110 ProblemDetails as ``[ApiController]`` produces for BadRequest() and model errors."""
    problem: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if errors is not None:
        problem["errors"] = dict(errors)
    problem["traceId"] = _trace_id()
    return web.Response(
        status=status,
        body=json.dumps(problem, separators=(",", ":")).encode("utf-8"),
        headers={"Content-Type": PROBLEM_CONTENT_TYPE},
    )


def bad_request_problem() -> web.Response:
    """``return BadRequest();`` from a controller."""
    return problem_response(400, "Bad Request", "https://tools.ietf.org/html/rfc9110#section-15.5.1")


def validation_problem(errors: Mapping[str, list[str]]) -> web.Response:
    """Automatic 400 for an invalid or missing ``[FromBody]`` model."""
    return problem_response(
        400,
        "One or more validation errors occurred.",
        "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        errors,
    )


def unsupported_media_type_problem() -> web.Response:
    """415 for a ``[FromBody]`` request whose Content-Type no JSON input formatter reads."""
    return problem_response(
        415, "Unsupported Media Type", "https://tools.ietf.org/html/rfc9110#section-15.5.16"
    )


def redirect_response(location: str, status: int = 302) -> web.Response:
    """``Response.Redirect``: status, Location, empty body."""
    return web.Response(status=status, headers={"Location": location})


def dotnet_relative_uri(from_path: str, to_path: str) -> str:
    """Port of ``Uri.MakeRelativeUri`` path difference (same scheme, host and port).

    BaseUrlRedirectionMiddleware builds its Location this way, so the header
    is relative (``web/``, ``jf/web/``, ``../jf/web/``), not an absolute path.
    """
    i = 0
    si = -1
    while i < len(from_path) and i < len(to_path):
        if from_path[i] != to_path[i]:
            break
        if from_path[i] == "/":
            si = i
        i += 1
    if i == 0:
        return to_path
    if i == len(from_path) and i == len(to_path):
        return ""
    rel = "../" * from_path[i:].count("/")
    if not rel and len(to_path) - 1 == si:
        return "./"
    return rel + to_path[si + 1 :]


# ---------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------


@dataclass
class RequestContext:
    """Everything a route handler needs about the current request."""

    request: web.Request
    state: StandinState
    base_url: str
    path: str
    params: dict[str, str]
    credentials: Credentials
    auth: AuthResult
    camel: bool
    record: RequestRecord

    async def read_body(self) -> bytes:
        """Read the body once and keep it on the request record."""
        if self.record.body is None:
            self.record.body = await self.request.read()
        return self.record.body

    def json(self, payload: Any, status: int = 200) -> web.Response:
        """JSON in the profile the client asked for."""
        return json_response(payload, camel=self.camel, status=status)


Handler = Callable[[RequestContext], Awaitable[web.StreamResponse]]


def _compile_template(template: str) -> re.Pattern[str]:
    """Turn ``/Videos/{itemId}/stream.{container}`` into a case-insensitive regex.

    ASP.NET route matching ignores case and tolerates one trailing slash.
    """
    pattern = ""
    for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
        pattern += re.escape(literal)
        if name:
            pattern += f"(?P<{name}>[^/]+?)"
    return re.compile(f"^{pattern}/?$", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    """One endpoint: methods (``*`` = any), path template, policy and handler."""

    methods: frozenset[str]
    template: str
    policy: Policy
    handler: Handler
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", _compile_template(self.template))

    def allows(self, method: str) -> bool:
        """Whether this route answers ``method``."""
        return "*" in self.methods or method in self.methods


def route(methods: str, template: str, policy: Policy, handler: Handler) -> Route:
    """Shorthand for a table row: ``route("GET,HEAD", "/x", Policy.ANONYMOUS, handler)``."""
    return Route(frozenset(m.strip().upper() for m in methods.split(",")), template, policy, handler)


ROUTES: web.AppKey[list[Route]] = web.AppKey("jellyfin_standin_routes", list)
BASE_URL: web.AppKey[str] = web.AppKey("jellyfin_standin_base_url", str)


# ---------------------------------------------------------------------------
# DTOs
# ---------------------------------------------------------------------------


def public_system_info(ctx: RequestContext) -> dict[str, Any]:
    """``PublicSystemInfo``; LocalAddress from the request (EnablePublishedServerUriByRequest)."""
    request = ctx.request
    return {
        "LocalAddress": f"{request.scheme}://{request.host}{ctx.base_url}",
        "ServerName": ctx.state.server_name,
        "Version": ctx.state.version,
        "ProductName": PRODUCT_NAME,
        "OperatingSystem": "",
        "Id": ctx.state.server_id,
        "StartupWizardCompleted": ctx.state.startup_wizard_completed,
    }


def system_info(ctx: RequestContext) -> dict[str, Any]:
    """``SystemInfo``: the public fields plus paths and capabilities."""
    info = public_system_info(ctx)
    info.update(
        {
            "OperatingSystemDisplayName": "",
            "HasPendingRestart": False,
            "IsShuttingDown": False,
            "SupportsLibraryMonitor": True,
            "WebSocketPortNumber": 8096,
            "CompletedInstallations": [],
            "CanSelfRestart": True,
            "CanLaunchWebBrowser": False,
            "ProgramDataPath": "/config",
            "WebPath": "/jellyfin/jellyfin-web",
            "ItemsByNamePath": "/config/metadata",
            "CachePath": "/cache",
            "LogPath": "/config/log",
            "InternalMetadataPath": "/config/metadata",
            "TranscodingTempPath": "/cache/transcodes",
            "CastReceiverApplications": [
                {"Id": "F007D354", "Name": "Stable"},
                {"Id": "6F511C87", "Name": "Unstable"},
            ],
            "HasUpdateAvailable": False,
            "EncoderLocation": "System",
            "SystemArchitecture": "X64",
        }
    )
    return info


def user_dto(state: StandinState, user: User) -> dict[str, Any]:
    """``UserManager.GetUserDto`` with default configuration and policy values."""
    has_password = bool(user.password)
    admin = user.is_administrator
    return {
        "Name": user.name,
        "ServerId": state.server_id,
        "Id": user.id,
        "HasPassword": has_password,
        "HasConfiguredPassword": has_password,
        "HasConfiguredEasyPassword": False,
        "EnableAutoLogin": False,
        "LastLoginDate": dotnet_datetime(user.last_login_date) if user.last_login_date else None,
        "LastActivityDate": (dotnet_datetime(user.last_activity_date) if user.last_activity_date else None),
        "Configuration": {
            "PlayDefaultAudioTrack": True,
            "SubtitleLanguagePreference": "",
            "DisplayMissingEpisodes": False,
            "GroupedFolders": [],
            "SubtitleMode": "Default",
            "DisplayCollectionsView": False,
            "EnableLocalPassword": False,
            "OrderedViews": [],
            "LatestItemsExcludes": [],
            "MyMediaExcludes": [],
            "HidePlayedInLatest": True,
            "RememberAudioSelections": True,
            "RememberSubtitleSelections": True,
            "EnableNextEpisodeAutoPlay": True,
            "CastReceiverId": "F007D354",
        },
        "Policy": {
            "IsAdministrator": admin,
            "IsHidden": user.is_hidden,
            "EnableCollectionManagement": admin,
            "EnableSubtitleManagement": admin,
            "EnableLyricManagement": admin,
            "IsDisabled": user.is_disabled,
            "BlockedTags": [],
            "AllowedTags": [],
            "EnableUserPreferenceAccess": True,
            "AccessSchedules": [],
            "BlockUnratedItems": [],
            "EnableRemoteControlOfOtherUsers": admin,
            "EnableSharedDeviceControl": True,
            "EnableRemoteAccess": True,
            "EnableLiveTvManagement": admin,
            "EnableLiveTvAccess": True,
            "EnableMediaPlayback": True,
            "EnableAudioPlaybackTranscoding": True,
            "EnableVideoPlaybackTranscoding": True,
            "EnablePlaybackRemuxing": True,
            "ForceRemoteSourceTranscoding": False,
            "EnableContentDeletion": admin,
            "EnableContentDeletionFromFolders": [],
            "EnableContentDownloading": True,
            "EnableSyncTranscoding": True,
            "EnableMediaConversion": True,
            "EnabledDevices": [],
            "EnableAllDevices": True,
            "EnabledChannels": [],
            "EnableAllChannels": True,
            "EnabledFolders": [],
            "EnableAllFolders": True,
            "InvalidLoginAttemptCount": 0,
            "LoginAttemptsBeforeLockout": -1,
            "MaxActiveSessions": 0,
            "EnablePublicSharing": True,
            "BlockedMediaFolders": [],
            "BlockedChannels": [],
            "RemoteClientBitrateLimit": 0,
            "AuthenticationProviderId": DEFAULT_AUTH_PROVIDER_ID,
            "PasswordResetProviderId": DEFAULT_PASSWORD_RESET_PROVIDER_ID,
            "SyncPlayAccess": "CreateAndJoinGroups",
        },
    }


def session_info_dto(ctx: RequestContext, user: User, device: Device) -> dict[str, Any]:
    """``SessionInfoDto`` for a fresh session; Id is md5(App+DeviceId) like SessionManager."""
    key = (device.app_name + device.device_id).encode("utf-16-le")
    now = dotnet_datetime(datetime.now(UTC))
    return {
        "PlayState": {
            "CanSeek": False,
            "IsPaused": False,
            "IsMuted": False,
            "RepeatMode": "RepeatNone",
            "PlaybackOrder": "Default",
        },
        "AdditionalUsers": [],
        "Capabilities": {
            "PlayableMediaTypes": [],
            "SupportedCommands": [],
            "SupportsMediaControl": False,
            "SupportsPersistentIdentifier": True,
        },
        "RemoteEndPoint": ctx.request.remote,
        "PlayableMediaTypes": [],
        "Id": hashlib.md5(key, usedforsecurity=False).hexdigest(),
        "UserId": user.id,
        "UserName": user.name,
        "Client": device.app_name,
        "LastActivityDate": now,
        "LastPlaybackCheckIn": MIN_DATE,
        "DeviceName": device.device_name,
        "DeviceId": device.device_id,
        "ApplicationVersion": device.app_version,
        "IsActive": True,
        "SupportsMediaControl": False,
        "SupportsRemoteControl": False,
        "NowPlayingQueue": [],
        "NowPlayingQueueFullItems": [],
        "HasCustomDeviceName": False,
        "ServerId": ctx.state.server_id,
        "SupportedCommands": [],
    }


def virtual_folder_dto(library: Library) -> dict[str, Any]:
    """``VirtualFolderInfo`` with ``LibraryOptions`` defaults of 10.11."""
    return {
        "Name": library.name,
        "Locations": list(library.locations),
        "CollectionType": library.collection_type,
        "LibraryOptions": {
            "Enabled": True,
            "EnablePhotos": True,
            "EnableRealtimeMonitor": library.enable_realtime_monitor,
            "EnableLUFSScan": True,
            "EnableChapterImageExtraction": False,
            "ExtractChapterImagesDuringLibraryScan": False,
            "EnableTrickplayImageExtraction": False,
            "ExtractTrickplayImagesDuringLibraryScan": False,
            "PathInfos": [{"Path": path} for path in library.locations],
            "SaveLocalMetadata": False,
            "EnableInternetProviders": False,
            "EnableAutomaticSeriesGrouping": True,
            "EnableEmbeddedTitles": False,
            "EnableEmbeddedExtrasTitles": False,
            "EnableEmbeddedEpisodeInfos": False,
            "AutomaticRefreshIntervalDays": 0,
            "SeasonZeroDisplayName": "Specials",
            "DisabledLocalMetadataReaders": [],
            "DisabledSubtitleFetchers": [],
            "SubtitleFetcherOrder": [],
            "DisabledMediaSegmentProviders": [],
            "MediaSegmentProviderOrder": [],
            "SkipSubtitlesIfEmbeddedSubtitlesPresent": False,
            "SkipSubtitlesIfAudioTrackMatches": True,
            "RequirePerfectSubtitleMatch": True,
            "SaveSubtitlesWithMedia": True,
            "SaveLyricsWithMedia": False,
            "SaveTrickplayWithMedia": False,
            "DisabledLyricFetchers": [],
            "LyricFetcherOrder": [],
            "PreferNonstandardArtistsTag": False,
            "UseCustomTagDelimiters": False,
            "CustomTagDelimiters": ["/", "|", ";", "\\"],
            "DelimiterWhitelist": [],
            "AutomaticallyAddToCollection": False,
            "AllowEmbeddedSubtitles": "AllowAll",
            "TypeOptions": [],
        },
        "ItemId": library.item_id,
        "PrimaryImageItemId": library.primary_image_item_id,
        "RefreshProgress": library.refresh_progress,
        "RefreshStatus": library.refresh_status,
    }


def item_dto(state: StandinState, item: Item, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """``BaseItemDto``: Path and ProviderIds only when ``fields`` (lowercased) asks; None = all fields."""

    def wanted(name: str) -> bool:
        return fields is None or name in fields

    return {
        "Name": item.name,
        "ServerId": state.server_id,
        "Id": item.id,
        "Path": item.path if wanted("path") else None,
        "ProductionYear": item.production_year,
        "IndexNumber": item.index_number,
        "IndexNumberEnd": item.index_number_end,
        "ParentIndexNumber": item.parent_index_number,
        "ProviderIds": dict(item.provider_ids) if wanted("providerids") else None,
        "IsFolder": item.is_folder,
        "ParentId": item.parent_id if wanted("parentid") else None,
        "Type": item.type,
        "SeriesName": item.series_name,
        "SeriesId": item.series_id,
        "SeasonId": item.season_id,
        "SeasonName": item.season_name,
        "LocationType": "FileSystem" if item.path else "Virtual",
        "MediaType": "Unknown" if item.is_folder else "Video",
        # Only when asked by name: the every-field DTO of GET /Items/{id} stays as it was.
        "MediaSources": media_sources(item) if fields is not None and "mediasources" in fields else None,
    }


# What a release name says about the picture: what ffprobe would find in a typical such file.
_NAMED_SIZES = (
    (re.compile(r"(?<![0-9a-z])(?:2160[pi]|4k|uhd)(?![0-9a-z])", re.I), (3840, 2160)),
    (re.compile(r"(?<![0-9a-z])1080[pi](?![0-9a-z])", re.I), (1920, 1080)),
    (re.compile(r"(?<![0-9a-z])720p(?![0-9a-z])", re.I), (1280, 720)),
    (re.compile(r"(?<![0-9a-z])576[pi](?![0-9a-z])", re.I), (720, 576)),
    (re.compile(r"(?<![0-9a-z])480[pi](?![0-9a-z])", re.I), (720, 480)),
)


def video_size(item: Item) -> tuple[int, int]:
    """``item.video_size``, else the size the file name announces, else 1920×1080."""
    if item.video_size is not None:
        return item.video_size
    name = posixpath.basename(item.path or "")
    return next((size for regex, size in _NAMED_SIZES if regex.search(name)), (1920, 1080))


def media_sources(item: Item) -> list[dict[str, Any]] | None:
    """``MediaSourceInfo`` of a movie or episode file: one source whose first stream is the video."""
    if item.is_folder or item.path is None:
        return None
    width, height = video_size(item)
    stream = {"Type": "Video", "Width": width, "Height": height, "Index": 0, "IsDefault": True}
    return [
        {
            "Protocol": "File",
            "Id": item.id,
            "Path": item.path,
            "Type": "Default",
            "Container": posixpath.splitext(item.path)[1].lstrip(".").lower() or None,
            "Name": posixpath.splitext(posixpath.basename(item.path))[0],
            "MediaStreams": [stream],
        }
    ]


# ---------------------------------------------------------------------------
# Body binding ([FromBody, Required])
# ---------------------------------------------------------------------------


def _is_json_content_type(content_type: str | None) -> bool:
    """What SystemTextJsonInputFormatter reads: application/json, text/json, application/*+json."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("application/json", "text/json") or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _ci_get(obj: Mapping[str, Any], name: str) -> Any:
    """Case-insensitive property lookup; last duplicate wins like System.Text.Json."""
    found: Any = None
    for key, value in obj.items():
        if key.lower() == name.lower():
            found = value
    return found


async def read_json_body(ctx: RequestContext, parameter: str) -> Any | web.Response:
    """Bind a required JSON body, or return the response MVC would send instead."""
    if not _is_json_content_type(ctx.request.headers.get("Content-Type")):
        return unsupported_media_type_problem()
    raw = await ctx.read_body()
    if not raw.strip():
        return validation_problem(
            {
                "": ["A non-empty request body is required."],
                parameter: [f"The {parameter} field is required."],
            }
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return validation_problem({"$": [f"The JSON value could not be converted: {exc}"]})


# ---------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------


async def get_public_system_info(ctx: RequestContext) -> web.StreamResponse:
    """``GET /System/Info/Public``: anonymous discovery."""
    return ctx.json(public_system_info(ctx))


async def get_system_info(ctx: RequestContext) -> web.StreamResponse:
    """``GET /System/Info``: clients use it to validate a saved token."""
    return ctx.json(system_info(ctx))


async def ping_system(ctx: RequestContext) -> web.StreamResponse:
    """``GET|POST /System/Ping``: the application name as a JSON string."""
    return ctx.json(PRODUCT_NAME)


async def authenticate_by_name(ctx: RequestContext) -> web.StreamResponse:
    """``POST /Users/AuthenticateByName``: SessionManager.AuthenticateNewSession."""
    body = await read_json_body(ctx, "request")
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return validation_problem({"$": ["The JSON value could not be converted."]})
    username = _ci_get(body, "Username")
    password = _ci_get(body, "Pw")
    if not isinstance(username, (str, type(None))) or not isinstance(password, (str, type(None))):
        return validation_problem({"$": ["The JSON value could not be converted to System.String."]})

    # Client fields come from the Authorization header, or from the token's device.
    client, device_name, device_id, version = (
        ctx.credentials.client,
        ctx.credentials.device,
        ctx.credentials.device_id,
        ctx.credentials.version,
    )
    identity = ctx.auth.identity
    if identity is not None:
        client = client or identity.client
        device_name = device_name or identity.device
        device_id = device_id or identity.device_id
        version = version or identity.version
    if not client or not device_id or not device_name or not version:
        logger.info("login refused: missing client fields")
        return error_response(400)
    if username is None or not username.strip():
        return error_response(400)

    state = ctx.state
    user = state.find_user_by_name(username)
    if user is None:
        return error_response(401)
    if user.is_disabled:  # checked before the password, as UserManager does
        return error_response(403)
    if (password or "") != user.password:
        return error_response(401)

    for token, device in list(state.devices.items()):
        if device.user_id == user.id and device.device_id == device_id:
            state.revoke_token(token)
    token = new_guid()
    device = Device(
        access_token=token,
        user_id=user.id,
        app_name=client,
        app_version=version,
        device_name=device_name,
        device_id=device_id,
    )
    state.tokens[token] = user.id
    state.devices[token] = device
    user.last_login_date = user.last_activity_date = datetime.now(UTC)
    logger.info("login of %s from device %s", user.name, device_id)
    return ctx.json(
        {
            "User": user_dto(state, user),
            "SessionInfo": session_info_dto(ctx, user, device),
            "AccessToken": token,
            "ServerId": state.server_id,
        }
    )


async def get_current_user(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Users/Me``: 400 ProblemDetails for API keys (no user id)."""
    identity = ctx.auth.identity
    if identity is None or identity.user is None:
        return bad_request_problem()
    return ctx.json(user_dto(ctx.state, identity.user))


async def get_user_by_id(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Users/{userId}`` (UserController.GetUserById): 404 for an unknown id."""
    user = ctx.state.users.get(ctx.params["userId"].replace("-", "").lower())
    if user is None:
        return text_response("User not found", status=404)
    return ctx.json(user_dto(ctx.state, user))


async def get_public_users(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Users/Public``: users neither hidden nor disabled."""
    users = [
        user_dto(ctx.state, u) for u in ctx.state.users.values() if not u.is_hidden and not u.is_disabled
    ]
    return ctx.json(users)


async def logout(ctx: RequestContext) -> web.StreamResponse:
    """``POST /Sessions/Logout``: revoke the presented token."""
    if ctx.auth.identity is not None:
        ctx.state.revoke_token(ctx.auth.identity.token)
    return empty_response(204)


async def quick_connect_enabled(ctx: RequestContext) -> web.StreamResponse:
    """``GET /QuickConnect/Enabled``: a bare JSON boolean."""
    return ctx.json(ctx.state.quick_connect_enabled)


async def branding_configuration(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Branding/Configuration``: anonymous, read by the login page."""
    return ctx.json({"LoginDisclaimer": "", "CustomCss": "", "SplashscreenEnabled": False})


async def auth_providers(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Auth/Providers``: the preferred elevation probe."""
    return ctx.json([{"Name": "Default", "Id": DEFAULT_AUTH_PROVIDER_ID}])


async def auth_keys(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Auth/Keys``: every API key (AuthenticationManager.GetApiKeys)."""
    items = [
        {
            "Id": 0,
            "AccessToken": key,
            "DeviceId": "",
            "AppName": name,
            "AppVersion": "",
            "DeviceName": "",
            "UserId": EMPTY_GUID,
            "IsActive": False,
            "DateCreated": dotnet_datetime(ctx.state.api_key_created.get(key, datetime.now(UTC))),
            "DateLastActivity": MIN_DATE,
        }
        for key, name in ctx.state.api_keys.items()
    ]
    return ctx.json({"Items": items, "TotalRecordCount": len(items), "StartIndex": 0})


async def refresh_library(ctx: RequestContext) -> web.StreamResponse:
    """``POST /Library/Refresh``: queues a scan of every library and answers 204 at once."""
    ctx.state.library_refreshes += 1
    ctx.state.schedule_scan(None)
    return empty_response(204)


async def virtual_folders(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Library/VirtualFolders``."""
    return ctx.json([virtual_folder_dto(lib) for lib in ctx.state.libraries])


async def media_updated(ctx: RequestContext) -> web.StreamResponse:
    """``POST /Library/Media/Updated``: each path goes to the library monitor, in order.

    Paths before a null/empty one are still reported, then ArgumentException
    gives 400 text/plain, as in LibraryController.PostUpdatedMedia.
    """
    body = await read_json_body(ctx, "dto")
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return validation_problem({"$": ["The JSON value could not be converted."]})
    updates = _ci_get(body, "Updates") if any(k.lower() == "updates" for k in body) else []
    if updates is None:
        return error_response(500)  # NullReferenceException in the foreach
    if not isinstance(updates, list):
        return validation_problem({"$.Updates": ["The JSON value could not be converted."]})
    parsed: list[tuple[Any, Any]] = []
    for entry in updates:
        if entry is None:
            parsed.append((None, None))
            continue
        if not isinstance(entry, dict):
            return validation_problem({"$.Updates": ["The JSON value could not be converted."]})
        path, update_type = _ci_get(entry, "Path"), _ci_get(entry, "UpdateType")
        if not isinstance(path, (str, type(None))) or not isinstance(update_type, (str, type(None))):
            return validation_problem({"$.Updates": ["The JSON value could not be converted."]})
        parsed.append((path, update_type))
    for i, (path, update_type) in enumerate(parsed):
        if updates[i] is None:
            return error_response(500)
        if not path:
            return error_response(400)
        ctx.state.media_updates.append(MediaUpdate(path, update_type))
        ctx.state.schedule_scan(path)
    return empty_response(204)


# -- items ---------------------------------------------------------------------

# BaseItemKind: IncludeItemTypes/ExcludeItemTypes names (case-insensitive); others are dropped.
_BASE_ITEM_KIND_NAMES = (
    "AggregateFolder Audio AudioBook BasePluginFolder Book BoxSet Channel ChannelFolderItem CollectionFolder "
    "Episode Folder Genre ManualPlaylistsFolder Movie LiveTvChannel LiveTvProgram MusicAlbum MusicArtist "
    "MusicGenre MusicVideo Person Photo PhotoAlbum Playlist PlaylistsFolder Program Recording Season Series "
    "Studio Trailer TvChannel TvProgram UserRootFolder UserView Video Year"
)
BASE_ITEM_KINDS = {name.lower(): name for name in _BASE_ITEM_KIND_NAMES.split()}


def parse_guid(value: str) -> str | None:
    """A .NET Guid in any of its formats, as 32 lowercase hex; None when it is not one."""
    try:
        return uuid.UUID(value.strip()).hex
    except ValueError:
        return None


def _query_list(query: MultiMapping[str], name: str) -> list[str]:
    """CommaDelimitedArrayModelBinder: comma-separated and/or repeated, blanks dropped."""
    return [part.strip() for value in query.getall(name, []) for part in value.split(",") if part.strip()]


def _bind(query: MultiMapping[str], name: str, kind: str) -> Any:
    """An ``int?``, ``bool?`` or ``Guid?`` parameter; a malformed one raises ValueError(name, value)."""
    raw = (_joined(query.getall(name, [])) or "").strip()
    if not raw:
        return None
    if kind == "bool" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if kind == "int" and re.fullmatch(r"[-+]?\d+", raw):
        return int(raw)
    if kind == "guid" and (guid := parse_guid(raw)):
        return guid
    raise ValueError(name, raw)


def _invalid(error: ValueError) -> web.Response:
    name, value = error.args
    return validation_problem({name: [f"The value '{value}' is not valid."]})


def _user_scope(ctx: RequestContext, user_id: str | None) -> web.Response | None:
    """RequestHelpers.GetUserId: someone else's userId is 403 for a non-admin, an unknown one 404."""
    identity = ctx.auth.identity
    if user_id is None or identity is None or identity.is_api_key:
        return None
    if identity.user is not None and user_id != identity.user.id and not identity.is_administrator:
        return error_response(403)
    return None if user_id in ctx.state.users else error_response(404)


async def get_items(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Items`` (ItemsController.GetItems) with the parameters a gateway uses.

    Recursive, Ids (invalid ones dropped), IncludeItemTypes (unknown names
    dropped), searchTerm, Fields, StartIndex, Limit (0 = none) and userId;
    sorted by SortName then Name.  A query neither recursive nor by Ids lists
    the user's views: none here.
    """
    state = ctx.state
    query = case_insensitive_query(ctx.request.query.items())
    try:
        recursive, user_id = _bind(query, "recursive", "bool"), _bind(query, "userId", "guid")
        start, limit = _bind(query, "startIndex", "int"), _bind(query, "limit", "int")
    except ValueError as error:
        return _invalid(error)
    denied = _user_scope(ctx, user_id)
    if denied is not None:
        return denied
    ids = {guid for raw in _query_list(query, "ids") if (guid := parse_guid(raw))}
    types = _query_list(query, "includeItemTypes")
    kinds = {BASE_ITEM_KINDS[k.lower()] for k in types if k.lower() in BASE_ITEM_KINDS}
    fields = frozenset(f.lower() for f in _query_list(query, "fields"))
    term = _joined(query.getall("searchTerm", []))

    items = [i for i in state.items.values() if i.id in ids] if ids else []
    if recursive and not ids:
        items = list(state.items.values())
    if kinds:
        items = [i for i in items if i.type in kinds]
    if term:
        items = [i for i in items if state.matches_search(i.name, term)]
    items.sort(key=lambda i: (i.sort_name, i.name))
    total = len(items)
    items = items[max(start or 0, 0) :]
    if limit is not None and limit > 0:
        items = items[:limit]
    return ctx.json(
        {
            "Items": [item_dto(state, item, fields) for item in items],
            "TotalRecordCount": total,
            "StartIndex": start or 0,
        }
    )


async def get_item(ctx: RequestContext) -> web.StreamResponse:
    """``GET /Items/{itemId}`` and ``GET /Users/{userId}/Items/{itemId}``: every field, 404 if unknown."""
    values = CIMultiDict(case_insensitive_query(ctx.request.query.items()))
    values.update(ctx.params)  # the route's userId wins over the query's
    try:
        item_id, user_id = _bind(values, "itemId", "guid"), _bind(values, "userId", "guid")
    except ValueError as error:
        return _invalid(error)
    denied = _user_scope(ctx, user_id)
    if denied is not None:
        return denied
    item = ctx.state.items.get(item_id)
    if item is None:
        return problem_response(404, "Not Found", "https://tools.ietf.org/html/rfc9110#section-15.5.5")
    return ctx.json(item_dto(ctx.state, item))


async def health(ctx: RequestContext) -> web.StreamResponse:
    """``/health`` (MapHealthChecks): plain ``Healthy`` with no-cache headers."""
    response = text_response("Healthy")
    response.headers["Cache-Control"] = "no-store, no-cache"
    response.headers["Pragma"] = "no-cache"
    response.headers["Expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    return response


async def web_root(ctx: RequestContext) -> web.StreamResponse:
    """``/web`` → 301 to ``/web/`` (DefaultFiles); ``/web/`` serves index.html.

    DefaultFiles builds an absolute Location from the Host Jellyfin sees (scheme://Host PathBase
    Path/ QueryString), so behind a proxy it names whatever address reached Jellyfin.
    """
    if not ctx.path.endswith("/"):
        request = ctx.request
        query = request.query_string
        location = f"{request.scheme}://{request.host}" + quote(f"{request.path}/", safe="/%")
        return redirect_response(location + (f"?{query}" if query else ""), status=301)
    return await web_index(ctx)


#: The stub served when a test gives no index.html of its own.
WEB_INDEX_STUB = "<!DOCTYPE html><html><head><title>Jellyfin</title></head><body></body></html>"
# FileExtensionContentTypeProvider (.NET 8) for the files jellyfin-web ships.
_WEB_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
}
# ResponseCompressionDefaults.MimeTypes: what Jellyfin compresses (Brotli or gzip) on plain HTTP.
_COMPRESSIBLE = frozenset(
    {
        "text/plain",
        "text/css",
        "application/javascript",
        "text/javascript",
        "text/html",
        "application/xml",
        "text/xml",
        "application/json",
        "text/json",
        "application/wasm",
    }
)


async def web_index(ctx: RequestContext) -> web.StreamResponse:
    """``/web/`` and ``/web/index.html``: the static file, with ``Cache-Control: no-cache`` (10.11)."""
    html = ctx.state.web_index_html
    data = (WEB_INDEX_STUB if html is None else html).encode("utf-8")
    return web_static_file(ctx, data, "text/html", {"Cache-Control": "no-cache"})


async def web_file(ctx: RequestContext) -> web.StreamResponse:
    """Any other file of jellyfin-web, from ``StandinState.web_files``."""
    name = ctx.params["file"]
    data = ctx.state.web_files.get(name)
    if data is None:
        return empty_response(404)
    content_type = _WEB_TYPES.get(posixpath.splitext(name)[1].lower(), "application/octet-stream")
    return web_static_file(ctx, data, content_type)


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            quality = params.strip().lower().removeprefix("q=")
            try:
                return not params or float(quality) > 0
            except ValueError:
                return False
    return False


def web_static_file(
    ctx: RequestContext, data: bytes, content_type: str, extra: Mapping[str, str] | None = None
) -> web.Response:
    """StaticFileMiddleware plus ResponseCompression, as Jellyfin serves jellyfin-web.

    ETag from file time and length (``"hex(ToFileTime ^ length)"``), Last-Modified, Accept-Ranges;
    412/304 from the validators; one byte range on GET (206/416); HEAD without a body. A compressible
    type gets ``Vary: Accept-Encoding`` when the request names encodings, and is gzipped when gzip is
    accepted, but never a 206 (a Content-Range stops compression). The ETag stays the same either way.
    """
    request = ctx.request
    last_modified = ctx.state.web_last_modified.replace(microsecond=0)
    file_time = int((last_modified - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds()) * 10_000_000
    etag = f'"{file_time ^ len(data):x}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": format_datetime(last_modified, usegmt=True),
        **(extra or {}),
    }
    answered = _preconditions(request, etag, last_modified, headers)
    if answered is not None:
        return answered

    headers["Content-Type"] = content_type
    range_header = request.headers.get("Range") if request.method == "GET" else None
    if range_header is not None and (if_range := request.headers.get("If-Range")):
        if if_range.strip().startswith(('"', "W/")):
            honour = if_range.strip() == etag
        else:
            date = _http_date(if_range)
            honour = date is not None and last_modified <= date
        if not honour:
            range_header = None
    if range_header is not None:
        byte_range = parse_byte_range(range_header, len(data))
        if byte_range is None:
            headers["Content-Range"] = f"bytes */{len(data)}"
            del headers["Content-Type"]
            return empty_response(416, headers)
        if byte_range is not False:
            assert isinstance(byte_range, tuple)
            start, end = byte_range
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return web.Response(status=206, body=data[start : end + 1], headers=headers)
    accept_encoding = request.headers.get("Accept-Encoding")
    if accept_encoding and content_type in _COMPRESSIBLE:
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(accept_encoding):
            headers["Content-Encoding"] = "gzip"
            data = gzip.compress(data, mtime=0)
    return web.Response(status=200, body=data, headers=headers)


# -- static streaming --------------------------------------------------------


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def _http_date(value: str | None) -> datetime | None:
    """Parse an HTTP date header, ``None`` if absent or malformed."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _etag_list(value: str) -> list[str]:
    """Split an If-Match/If-None-Match list into entity tags."""
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _weak_equal(a: str, b: str) -> bool:
    """Weak comparison: ignore a ``W/`` prefix."""
    return a.removeprefix("W/") == b.removeprefix("W/")


def _preconditions(
    request: web.Request, etag: str, last_modified: datetime, headers: Mapping[str, str]
) -> web.Response | None:
    """ASP.NET's static-file preconditions: 412 for If-Match/If-Unmodified-Since, 304 for
    If-None-Match (weak comparison, ``*``) or, without it, If-Modified-Since; else None."""
    if_match = request.headers.get("If-Match")
    if if_match and "*" not in if_match and etag not in _etag_list(if_match):
        return empty_response(412, headers)
    unmodified_since = _http_date(request.headers.get("If-Unmodified-Since"))
    if unmodified_since and last_modified > unmodified_since:
        return empty_response(412, headers)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match:
        tags = _etag_list(if_none_match)
        if "*" in tags or any(_weak_equal(tag, etag) for tag in tags):
            return empty_response(304, headers)
    else:
        modified_since = _http_date(request.headers.get("If-Modified-Since"))
        if modified_since and last_modified <= modified_since:
            return empty_response(304, headers)
    return None


def parse_byte_range(header: str, length: int) -> tuple[int, int] | bool | None:
    """ASP.NET RangeHelper for one range.

    Returns ``(start, end)`` inclusive, ``None`` when unsatisfiable (416), or
    ``False`` when the header must be ignored (syntax error, several ranges).
    """
    if "," in header:
        return False
    match = _RANGE_RE.match(header)
    if not match or (not match.group(1) and not match.group(2)):
        return False
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = int(last) if last else length - 1
        if last and end < start:
            return False
        if start >= length:
            return None
        return start, min(end, length - 1)
    suffix = int(last)
    if suffix == 0 or length == 0:
        return None
    return max(length - suffix, 0), length - 1


async def video_stream(ctx: RequestContext) -> web.StreamResponse:
    """``GET|HEAD /Videos/{itemId}/stream[.{container}]``: a static file with ranges.

    Mirrors ``PhysicalFileResult { EnableRangeProcessing = true }``: conditional
    headers first (412/304), then a single byte range (206/416); multiple or
    malformed ranges are ignored (200 full body).
    """
    request, state = ctx.request, ctx.state
    data = state.media
    length = len(data)
    etag = state.media_etag
    last_modified = state.media_last_modified.replace(microsecond=0)
    container = ctx.params.get("container", "mp4").lower()
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": format_datetime(last_modified, usegmt=True),
    }

    answered = _preconditions(request, etag, last_modified, headers)
    if answered is not None:
        return answered

    headers["Content-Type"] = VIDEO_CONTENT_TYPES.get(container, "video/mp4")
    range_header = request.headers.get("Range")
    if range_header is not None:
        if_range = request.headers.get("If-Range")
        if if_range:
            if if_range.strip().startswith(('"', "W/")):
                honour = if_range.strip() == etag
            else:
                date = _http_date(if_range)
                honour = date is not None and last_modified <= date
            if not honour:
                range_header = None
    if range_header is not None:
        byte_range = parse_byte_range(range_header, length)
        if byte_range is None:
            headers["Content-Range"] = f"bytes */{length}"
            del headers["Content-Type"]
            return empty_response(416, headers)
        if byte_range is not False:
            assert isinstance(byte_range, tuple)
            start, end = byte_range
            headers["Content-Range"] = f"bytes {start}-{end}/{length}"
            return web.Response(status=206, body=data[start : end + 1], headers=headers)
    return web.Response(status=200, body=data, headers=headers)


# -- WebSocket ---------------------------------------------------------------


def _close_code_to_echo(code: Any) -> int:
    """The code to answer a client's Close with: its own, if it may be sent on the wire."""
    if (
        isinstance(code, int)
        and (1000 <= code <= 1014 or 3000 <= code <= 4999)
        and code
        not in (
            1004,
            1005,
            1006,
        )
    ):
        return code
    return int(WSCloseCode.OK)


async def websocket_session(ctx: RequestContext) -> web.StreamResponse:
    """WebSocketManager.WebSocketRequestHandler: authenticate, accept, keep alive, echo.

    Refusal is a 403 text/plain response, never a 101.  After the upgrade the
    server sends ForceKeepAlive (Data 60), answers KeepAlive with KeepAlive,
    echoes other text as ``Echo`` and binary frames verbatim (test convenience),
    and answers a client Close with the same code.
    """
    request, state = ctx.request, ctx.state
    record = WebSocketRecord(
        path=ctx.path,
        query_string=request.query_string,
        authorization=request.headers.get("Authorization"),
    )
    state.websockets.append(record)
    identity = ctx.auth.identity
    if ctx.auth.outcome is not AuthOutcome.AUTHENTICATED or identity is None:
        logger.info("websocket refused (%s)", ctx.auth.failure or "no token")
        return text_response(WEBSOCKET_REFUSAL_BODY, 403)

    ws = web.WebSocketResponse(autoclose=False, autoping=True)
    await ws.prepare(request)
    record.accepted = True
    record.user_id = identity.user.id if identity.user else None
    record.is_api_key = identity.is_api_key
    state.live_sockets.add(ws)
    try:
        await ws.send_str(outbound_message("ForceKeepAlive", KEEPALIVE_SECONDS))
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                text: str = msg.data
                record.received.append(text)
                await ws.send_str(_answer_text(text))
            elif msg.type is WSMsgType.BINARY:
                record.received.append(msg.data)
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                record.close_code = msg.data
                await ws.close(code=_close_code_to_echo(msg.data))
                break
            else:  # CLOSING, CLOSED, ERROR
                break
    finally:
        state.live_sockets.discard(ws)
    return ws


def _answer_text(text: str) -> str:
    """KeepAlive → KeepAlive; anything else → Echo carrying the original text."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        message = None
    if isinstance(message, dict) and str(_ci_get(message, "MessageType")) == "KeepAlive":
        return outbound_message("KeepAlive")
    return outbound_message("Echo", text)


def _is_websocket_request(request: web.Request) -> bool:
    """``HttpContext.WebSockets.IsWebSocketRequest``: a valid GET upgrade handshake."""
    if request.method != "GET":
        return False
    if "websocket" not in request.headers.get("Upgrade", "").lower():
        return False
    return bool(web.WebSocketResponse().can_prepare(request).ok)


# ---------------------------------------------------------------------------
# The route table
# ---------------------------------------------------------------------------

DEFAULT_ROUTES: tuple[Route, ...] = (
    route("GET", "/System/Info/Public", Policy.ANONYMOUS, get_public_system_info),
    route("GET", "/System/Info", Policy.FIRST_TIME_SETUP_OR_IGNORE_PARENTAL_CONTROL, get_system_info),
    route("GET,POST", "/System/Ping", Policy.ANONYMOUS, ping_system),
    route("POST", "/Users/AuthenticateByName", Policy.ANONYMOUS, authenticate_by_name),
    route("GET", "/Users/Me", Policy.AUTHENTICATED, get_current_user),
    route("GET", "/Users/Public", Policy.ANONYMOUS, get_public_users),
    route("GET", "/Users/{userId}", Policy.AUTHENTICATED, get_user_by_id),
    route("POST", "/Sessions/Logout", Policy.AUTHENTICATED, logout),
    route("GET", "/QuickConnect/Enabled", Policy.ANONYMOUS, quick_connect_enabled),
    route("GET", "/Branding/Configuration", Policy.ANONYMOUS, branding_configuration),
    route("GET", "/Auth/Providers", Policy.ELEVATED, auth_providers),
    route("GET", "/Auth/Keys", Policy.ELEVATED, auth_keys),
    route("POST", "/Library/Refresh", Policy.ELEVATED, refresh_library),
    route("GET", "/Library/VirtualFolders", Policy.FIRST_TIME_SETUP_OR_ELEVATED, virtual_folders),
    route("POST", "/Library/Media/Updated", Policy.AUTHENTICATED, media_updated),
    route("GET", "/Items", Policy.AUTHENTICATED, get_items),
    route("GET", "/Items/{itemId}", Policy.AUTHENTICATED, get_item),
    route("GET", "/Users/{userId}/Items/{itemId}", Policy.AUTHENTICATED, get_item),
    route("GET,HEAD", "/Videos/{itemId}/stream", Policy.ANONYMOUS, video_stream),
    route("GET,HEAD", "/Videos/{itemId}/stream.{container}", Policy.ANONYMOUS, video_stream),
    route("*", "/health", Policy.ANONYMOUS, health),
    route("GET,HEAD", "/web", Policy.ANONYMOUS, web_root),
    route("GET,HEAD", "/web/index.html", Policy.ANONYMOUS, web_index),
    route("GET,HEAD", "/web/{file}", Policy.ANONYMOUS, web_file),
)


# ---------------------------------------------------------------------------
# Dispatcher (the middleware pipeline of Jellyfin.Server/Startup.cs)
# ---------------------------------------------------------------------------


def _base_url_redirect(path: str, base_url: str) -> web.Response | None:
    """BaseUrlRedirectionMiddleware: send everything outside BaseUrl to ``{BaseUrl}/web/``."""
    lowered, base = path.lower(), base_url.lower()
    if not (not path or lowered == base or lowered == base + "/" or not lowered.startswith(base)):
        return None
    if lowered in ("/health", "/health/"):
        return redirect_response(base_url + "/health")
    return redirect_response(quote(dotnet_relative_uri(path, base_url + "/web/"), safe="/.%"))


def _strip_legacy_prefix(path: str) -> str:
    """LegacyEmbyRouteRewriteMiddleware: drop a leading ``/emby`` or ``/mediabrowser``."""
    lowered = path.lower()
    for prefix in ("/emby", "/mediabrowser"):
        if lowered.startswith(prefix):
            return path[len(prefix) :]
    return path


async def _dispatch(request: web.Request) -> web.StreamResponse:
    """Run one request through the stand-in's pipeline."""
    app = request.app
    state, base_url = app[STATE], app[BASE_URL]
    path = request.path
    record = RequestRecord(request.method, request.raw_path, CIMultiDict(request.headers))
    state.requests.append(record)

    redirect = _base_url_redirect(path, base_url)
    if redirect is not None:
        state.calls[f"{request.method} {path.lower()}"] += 1
        return redirect
    local = path[len(base_url) :] or "/"
    state.calls[f"{request.method} {local.lower()}"] += 1
    if not local.startswith("/"):  # e.g. "/jfx" under BaseUrl "/jf": Map() does not match
        return empty_response(404)
    local = _strip_legacy_prefix(local)

    credentials = extract_credentials(
        request.headers, request.query, legacy_authorization=state.legacy_authorization
    )
    auth = authenticate(state, credentials)
    matches = [(r, m) for r in app[ROUTES] if (m := r.regex.match(local))]
    allowed = [(r, m) for r, m in matches if r.allows(request.method)]
    chosen = allowed[0] if allowed else None
    ctx = RequestContext(
        request=request,
        state=state,
        base_url=base_url,
        path=local,
        params=chosen[1].groupdict() if chosen else {},
        credentials=credentials,
        auth=auth,
        camel=wants_camel_case(request.headers.get("Accept")),
        record=record,
    )
    try:
        if chosen is not None:
            denied = authorize(chosen[0].policy, auth, state)
            if denied is not None:
                return empty_response(denied)
        if _is_websocket_request(request):
            return await websocket_session(ctx)
        if chosen is not None:
            return await chosen[0].handler(ctx)
        if matches:
            allow = sorted({m for r, _ in matches for m in r.methods if m != "*"})
            return empty_response(405, {"Allow": ", ".join(allow)})
        return empty_response(404)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("stand-in handler failed for %s %s", request.method, path)
        return error_response(500)


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every Kestrel response names its server; aiohttp already adds ``Date``."""
    response.headers["Server"] = "Kestrel"


async def _close_sockets(app: web.Application) -> None:
    """Close open WebSockets and drop pending scans on shutdown, so test teardown does not wait."""
    for ws in list(app[STATE].live_sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
    for task in app[STATE].pending_scans.values():
        task.cancel()
    app[STATE].pending_scans.clear()


def normalize_base_url(base_url: str) -> str:
    """NetworkConfiguration.BaseUrl: leading ``/``, no trailing ``/``; ``""`` when unset."""
    base_url = base_url.strip().strip("/")
    return f"/{base_url}" if base_url else ""


def create_standin(
    *,
    base_url: str = "",
    legacy_authorization: bool = True,
    state: StandinState | None = None,
) -> web.Application:
    """Build the stand-in application.

    Without ``state`` a fresh one is made with the default users (admin,
    alice, disabled mallory), the ``gateway`` API key and two libraries, and
    ``legacy_authorization`` sets ``EnableLegacyAuthorization``.  A given
    ``state`` is used as it is (its own ``legacy_authorization`` applies), so
    two apps can share it, e.g. to simulate a restart.
    """
    if state is None:
        state = StandinState(legacy_authorization=legacy_authorization)
    app = web.Application(client_max_size=MAX_REQUEST_BODY)
    app[STATE] = state
    app[BASE_URL] = normalize_base_url(base_url)
    app[ROUTES] = list(DEFAULT_ROUTES)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    app.on_response_prepare.append(_on_response_prepare)
    app.on_shutdown.append(_close_sockets)
    return app


__all__ = [
    "BASE_URL",
    "DEFAULT_ROUTES",
    "ROUTES",
    "STATE",
    "AuthOutcome",
    "AuthResult",
    "Credentials",
    "Device",
    "Identity",
    "Item",
    "Library",
    "MediaUpdate",
    "Policy",
    "RequestContext",
    "RequestRecord",
    "Route",
    "StandinState",
    "User",
    "WebSocketRecord",
    "authenticate",
    "authorize",
    "create_standin",
    "extract_credentials",
    "extract_token",
    "parse_authorization_header",
    "parse_authorization_parts",
    "route",
]
