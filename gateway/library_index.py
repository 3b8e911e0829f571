"""A small in-memory index of the Jellyfin libraries, so search results can say "already in your library".

Built from ``GET /Items`` one page at a time and refreshed in the background: a search never waits for
more than its own ``wait`` (and then only for the very first build), and a failing Jellyfin leaves the
last good index in place. Only what matching needs is kept (ids, names, years, resolutions, episode
numbers), as slotted objects and tuples, never the JSON. Knows nothing of aiohttp.web.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .jellyfin import Credentials, JellyfinClient
from .upstream import UpstreamError

__all__ = ["MIN_REFRESH_GAP", "InLibrary", "LibraryIndex", "normalise_title", "resolution_of"]

logger = logging.getLogger(__name__)

#: However often a download lands, Jellyfin is listed again at most this often (seconds).
MIN_REFRESH_GAP = 30.0
#: An index that answers for more pages than this is not a library but a loop (1000 × 1000 items).
MAX_PAGES = 1000

_RESOLUTIONS = ("480p", "720p", "1080p", "2160p")  # worst to best: the index is the rank
_RANK = {name: rank for rank, name in enumerate(_RESOLUTIONS)}
_APOSTROPHES = re.compile("['’‘`´ʼ]")
_WORD = re.compile(r"[^\W_]+")  # letters and digits
_ARTICLES = frozenset({"the", "a", "an"})


@dataclass(frozen=True, slots=True)
class InLibrary:
    """The library item a search result is already in Jellyfin as (the caller builds its Url)."""

    item_id: str
    name: str
    year: int | None
    resolution: str | None  # "2160p", "1080p", "720p", "480p"; None when Jellyfin saw no video stream


def normalise_title(title: str) -> str:
    """The form both a release title and a Jellyfin name reduce to, so that "Schindler's List",
    "Schindlers List" and "schindlers.list" are one key: casefolded, accents stripped (NFKD),
    ``&`` read as "and", apostrophes dropped, other punctuation as spaces, a leading article dropped."""
    text = title.casefold()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    words = _WORD.findall(_APOSTROPHES.sub("", text).replace("&", " and "))
    if len(words) > 1 and words[0] in _ARTICLES:
        del words[0]
    return " ".join(words)


def _resolution(width: int, height: int) -> str:
    """By height, or by width for letterboxed pictures (a 3840×1600 scope film is still 2160p)."""
    if height >= 1600 or width >= 3200:
        return "2160p"
    if height >= 900 or width >= 1800:
        return "1080p"
    if height >= 650 or width >= 1200:
        return "720p"
    return "480p"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _best(resolutions: Iterable[str | None]) -> str | None:
    return max((r for r in resolutions if r is not None), key=_RANK.__getitem__, default=None)


def resolution_of(item: dict[str, Any]) -> str | None:
    """The best video stream of an item's ``MediaSources`` as "2160p"…"480p"; None without one."""
    sources = item.get("MediaSources")
    found: list[str | None] = []
    for source in sources if isinstance(sources, list) else ():
        streams = source.get("MediaStreams") if isinstance(source, dict) else None
        for stream in streams if isinstance(streams, list) else ():
            if isinstance(stream, dict) and stream.get("Type") == "Video":
                width, height = _int(stream.get("Width")) or 0, _int(stream.get("Height")) or 0
                if width or height:
                    found.append(_resolution(width, height))
    return _best(found)


def _years_agree(wanted: int | None, have: int | None) -> bool:
    """Release years and metadata years differ by one often enough (festival vs. release date)."""
    return wanted is None or have is None or abs(wanted - have) <= 1


def _closest(candidates: Iterable[InLibrary], year: int | None) -> InLibrary | None:
    """The candidate of the nearest year and, among equals, the best picture."""
    fitting = [c for c in candidates if _years_agree(year, c.year)]
    if not fitting:
        return None
    return min(
        fitting,
        key=lambda c: (
            abs(year - c.year) if year is not None and c.year is not None else 2,
            -_RANK.get(c.resolution or "", -1),
        ),
    )


class _Index:
    """One built index: lookups only, never changed once built."""

    __slots__ = ("by_imdb", "episodes", "movies", "seasons", "series", "series_ids", "size")

    def __init__(self) -> None:
        self.by_imdb: dict[str, tuple[InLibrary, ...]] = {}
        self.movies: dict[str, tuple[InLibrary, ...]] = {}
        self.series: dict[str, tuple[InLibrary, ...]] = {}
        self.series_ids: frozenset[str] = frozenset()
        #: series id → (season, episode) → the episode
        self.episodes: dict[str, dict[tuple[int, int], InLibrary]] = {}
        #: series id → season → the best resolution of its episodes
        self.seasons: dict[str, dict[int, str | None]] = {}
        self.size = 0


class _Builder:
    """Collects the pages of one build; episodes may come before their series, so links come last."""

    def __init__(self) -> None:
        self.movies: list[tuple[InLibrary, str | None]] = []
        self.series: dict[str, tuple[str, int | None, str | None]] = {}  # id → name, year, imdb
        self.episodes: list[tuple[str, str, int, int, int | None, InLibrary]] = []
        self.size = 0

    def add(self, item: dict[str, Any]) -> None:
        item_id, kind = item.get("Id"), item.get("Type")
        if not isinstance(item_id, str):
            return
        year = _int(item.get("ProductionYear"))
        if kind == "Movie":
            entry = InLibrary(item_id, _text(item.get("Name")), year, resolution_of(item))
            self.movies.append((entry, _imdb(item)))
        elif kind == "Series":
            self.series[item_id] = (_text(item.get("Name")), year, _imdb(item))
        elif kind == "Episode":
            season, first = _int(item.get("ParentIndexNumber")), _int(item.get("IndexNumber"))
            series_id = item.get("SeriesId")
            if season is None or first is None or not isinstance(series_id, str):
                return  # not findable by S01E02 anyway
            last = _int(item.get("IndexNumberEnd"))
            entry = InLibrary(item_id, _text(item.get("Name")), year, resolution_of(item))
            self.episodes.append((series_id, _text(item.get("SeriesName")), season, first, last, entry))
        else:
            return
        self.size += 1

    def finish(self) -> _Index:
        index = _Index()
        by_imdb: dict[str, list[InLibrary]] = {}
        by_title: dict[str, list[InLibrary]] = {}
        for entry, imdb in self.movies:
            by_title.setdefault(normalise_title(entry.name), []).append(entry)
            if imdb:
                by_imdb.setdefault(imdb, []).append(entry)
        index.movies = {title: tuple(entries) for title, entries in by_title.items()}

        episodes: dict[str, dict[tuple[int, int], InLibrary]] = {}
        seasons: dict[str, dict[int, str | None]] = {}
        for series_id, series_name, season, first, last, entry in self.episodes:
            if series_id not in self.series:  # its series is not listed (another library's view)
                self.series[series_id] = (series_name, None, None)
            numbers = range(first, last + 1) if last is not None and first <= last <= first + 50 else (first,)
            of_series = episodes.setdefault(series_id, {})
            for number in numbers:
                of_series[(season, number)] = entry
            of_seasons = seasons.setdefault(series_id, {})
            of_seasons[season] = _best((of_seasons.get(season), entry.resolution))
        index.episodes, index.seasons = episodes, seasons

        by_title = {}
        for series_id, (name, year, imdb) in self.series.items():
            entry = InLibrary(series_id, name, year, _best(seasons.get(series_id, {}).values()))
            by_title.setdefault(normalise_title(name), []).append(entry)
            if imdb:
                by_imdb.setdefault(imdb, []).append(entry)
        index.series = {title: tuple(entries) for title, entries in by_title.items()}
        index.series_ids = frozenset(self.series)
        index.by_imdb = {imdb: tuple(entries) for imdb, entries in by_imdb.items()}
        index.size = self.size
        return index


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _imdb(item: dict[str, Any]) -> str | None:
    ids = item.get("ProviderIds")
    if not isinstance(ids, dict):
        return None
    value = next((v for k, v in ids.items() if isinstance(k, str) and k.lower() == "imdb"), None)
    return _imdb_key(value) if isinstance(value, str) else None


def _imdb_key(value: str) -> str | None:
    """``tt0078748`` in lower case; a bare number gets its ``tt`` back; anything else is no id."""
    value = value.strip().lower()
    if value.isdigit():
        value = "tt" + value
    return value if value.startswith("tt") and value[2:].isdigit() else None


class LibraryIndex:
    """Which movies, series and episodes Jellyfin already has, rebuilt now and then in the background.

    ``ready()`` starts the first build and later refreshes (one at a time, however many callers);
    ``match()`` answers from the last index built, without I/O.
    """

    def __init__(
        self,
        jellyfin: JellyfinClient,
        *,
        page_size: int = 1000,
        min_interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jellyfin = jellyfin
        self._page_size = page_size
        self._min_interval = min_interval
        self._clock = clock
        self._index: _Index | None = None
        self._task: asyncio.Task[None] | None = None
        self._stale = False
        self._built = 0.0  # clock() when the current index's build started
        self._attempted = 0.0  # clock() when the last build started
        self._built_at: float | None = None  # wall time, for people
        self._build_seconds: float | None = None

    async def ready(self, auth: str | Credentials, *, wait: float) -> bool:
        """Whether an index is there to match against, building or refreshing it when due.

        Waits at most ``wait`` seconds, and only when there is no index yet; an old one answers
        while its refresh runs.
        """
        task = self._start_if_due(auth)
        if self._index is None and task is not None and wait > 0:
            await asyncio.wait({task}, timeout=wait)
        return self._index is not None

    def invalidate(self) -> None:
        """A download landed in Jellyfin: list it again at the next ``ready()`` (30 s apart at most)."""
        self._stale = True

    def match(
        self,
        *,
        imdb: str | None,
        title: str | None,
        year: int | None,
        season: int | None,
        episode: int | None,
        kind: str,
    ) -> InLibrary | None:
        """The library item a search result already is, or None (also while nothing is built)."""
        index = self._index
        if index is None:
            return None
        if imdb and (key := _imdb_key(imdb)) and (found := index.by_imdb.get(key)):
            # The id settles which movie or series it is; for a series the episode must be there too.
            movie = next((e for e in found if e.item_id not in index.series_ids), None)
            series = [e for e in found if e.item_id in index.series_ids]
            if series and (season is not None or episode is not None or movie is None):
                return self._in_series(index, series, season, episode)
            return movie
        if not title:
            return None
        key = normalise_title(title)
        if season is None and episode is None:
            movies = index.movies.get(key, ())
            shows = index.series.get(key, ())
            pools = (movies, shows) if kind == "movie" else (shows, movies)
            return next((m for pool in pools if (m := self._by_year(pool, year)) is not None), None)
        if kind == "movie":
            return self._by_year(index.movies.get(key, ()), year)
        named = [s for s in index.series.get(key, ()) if _years_agree(year, s.year)]
        return self._in_series(index, named, season, episode)

    @staticmethod
    def _by_year(candidates: tuple[InLibrary, ...], year: int | None) -> InLibrary | None:
        """With no year to go by, only an unambiguous title counts (no guessing between remakes)."""
        if year is None and len({c.year for c in candidates}) > 1:
            return None
        return _closest(candidates, year)

    @staticmethod
    def _in_series(
        index: _Index, shows: Iterable[InLibrary], season: int | None, episode: int | None
    ) -> InLibrary | None:
        """The episode (or, for a whole season, the series at that season's best picture) if present."""
        for show in shows:
            if season is None and episode is None:
                return show
            if season is not None and episode is not None:
                found = index.episodes.get(show.item_id, {}).get((season, episode))
                if found is not None:
                    return found
            elif season is not None:
                of_seasons = index.seasons.get(show.item_id, {})
                if season in of_seasons:
                    return InLibrary(show.item_id, show.name, show.year, of_seasons[season])
            # an episode number without a season says too little to claim it is there
        return None

    def stats(self) -> dict[str, Any]:
        """How big and how fresh the index is, for the admin pages and the log."""
        return {
            "items": self._index.size if self._index is not None else 0,
            "built_at": self._built_at,
            "build_seconds": self._build_seconds,
        }

    async def close(self) -> None:
        """Stop a build in progress (at shutdown), so no task outlives the event loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_if_due(self, auth: str | Credentials) -> asyncio.Task[None] | None:
        """The build running now, or one started because it is due (None: nothing to do)."""
        if self._task is not None:
            return self._task
        now = self._clock()
        if self._index is not None:
            if now - self._attempted < MIN_REFRESH_GAP:
                return None
            if not self._stale and now - self._built < self._min_interval:
                return None
        self._stale = False  # an invalidate() from here on asks for the build after this one
        self._attempted = now
        self._task = asyncio.get_running_loop().create_task(self._build(auth, now))
        return self._task

    async def _build(self, auth: str | Credentials, started: float) -> None:
        began = time.perf_counter()
        try:
            index = await self._fetch(auth)
        except UpstreamError as error:
            self._failed(error.reason)
        except Exception as error:  # a bug must not end the refreshes; its text could hold a URL
            self._failed(f"unexpected {type(error).__name__}")
        else:
            self._index, self._built = index, started
            self._built_at, self._build_seconds = time.time(), time.perf_counter() - began
            logger.info("library index: %d items from Jellyfin in %.2f s", index.size, self._build_seconds)
        finally:
            self._task = None

    async def _fetch(self, auth: str | Credentials) -> _Index:
        builder = _Builder()
        start = 0
        for _ in range(MAX_PAGES):
            page, total = await self._jellyfin.items_page(auth, start=start, limit=self._page_size)
            for item in page:
                builder.add(item)
            start += len(page)
            if not page or start >= total:
                break
            await asyncio.sleep(0)  # reading a page is CPU work: let requests through between pages
        return builder.finish()

    def _failed(self, reason: str) -> None:
        self._stale = True  # still wanted: asked again MIN_REFRESH_GAP after this attempt
        kept = "keeping the previous one" if self._index is not None else "no index yet"
        logger.warning("library index: build failed, %s (%s)", kept, reason)
