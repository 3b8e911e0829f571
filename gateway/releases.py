"""Torrent release names and file names read as title, year, seasons, episodes and quality.

The one wrapper around parsett (module `PTT`), chosen by measurement: `benchmarks/release-names.md`
(`benchmarks/release_names.py` compares it with guessit and parse-torrent-title on a hand-labelled
corpus and checks this module's speed and accuracy). Pure and cached; knows nothing of aiohttp.
Searches read their many names in a process of their own (:class:`ReleaseReader`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import multiprocessing
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import PTT.parse as ptt_parse  # type: ignore[import-untyped]
from PTT import Parser, add_defaults

__all__ = ["Release", "ReleaseReader", "clear_cache", "parse", "parse_many"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """What a release name says; None or () where it says nothing."""

    title: str | None
    year: int | None
    seasons: tuple[int, ...]
    episodes: tuple[int, ...]
    resolution: str | None  # "2160p", "1080p", "720p", ...
    source: str | None  # "BluRay", "REMUX", "WEB-DL", "WEBRip", "HDTV", "DVDRip", ...
    codec: str | None  # "x264", "x265", "AV1", "XviD", ...
    hdr: str | None  # "DV", "HDR10+", "HDR"


# PTT runs all its ~430 handlers on every name, most for fields we never read (languages alone is
# 127, adult scans 1000 keywords): half the time goes there, and the 100-name budget needs it back
# (see the benchmark). Kept: the handlers of the fields we read and those that end a title where a
# tag starts (audio "5.1" is no S05E01); _LANGUAGE_TAIL stands in for the language ones.
_KEPT = (
    "title year seasons episodes complete resolution quality codec hdr"
    " group site trash channels audio bit_depth dubbed"
)
_SOURCES = {"BluRay REMUX": "REMUX", "WEB": "WEB-DL", "TeleSync": "TS", "TeleCine": "TC"}
_CODECS = {"avc": "x264", "hevc": "x265", "xvid": "XviD", "av1": "AV1", "mpeg": "MPEG-2"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_EXTENSION = re.compile(r"\.(?:mkv|mp4|m4v|avi|wmv|mov|webm|mpe?g|m2ts|iso|torrent)$", re.I)
_SAMPLE = re.compile(r"^sample[-. _]+|[-. _]+sample$", re.I)
# Jellyfin's own provider ids: "Alien (1979) [imdbid-tt0078748]", "{tvdb-81189}".
_PROVIDER_ID = re.compile(r"[\[{](?:imdb|tmdb|tvdb|anidb)(?:id)?[-=][^\]}]*[\]}]", re.I)
# Scene language tags are upper case ("Intouchables.FRENCH.1080p"); a title never ends with one.
_LANGUAGE_TAIL = re.compile(
    r"\s+(?:TRUEFRENCH|FRENCH|VOSTFR|VFF|VFQ|MULTI|MULTi|GERMAN|SPANISH|ITALIAN|RUSSIAN|JAPANESE"
    r"|KOREAN|CHINESE|HINDI|DUBBED|SUBBED)\b.*$"
)
_SEASON_ONLY = re.compile(r"^\s*season[ ._-]*(\d{1,3})\s*$", re.I)
MAX_LENGTH = 512  # longer input is not a release name; cut it to bound the regex work


def _parser() -> Any:
    # PTT asks inspect.signature() of a handler's transformer on every match, about a seventh of its
    # time; transformers are fixed functions, so their signatures are cached (100 names: 53 -> 46 ms).
    if getattr(ptt_parse, "inspect", None) is inspect:
        ptt_parse.inspect = SimpleNamespace(signature=functools.cache(inspect.signature))
    parser = Parser()
    add_defaults(parser)
    kept = set(_KEPT.split())
    parser.handlers = [h for h in parser.handlers if getattr(h, "handler_name", "") in kept]
    return parser


_PARSER = _parser()


def _clean(name: str) -> str:
    """The name without what PTT misreads or we never want in a title."""
    name = _CONTROL.sub(" ", name).strip()
    name = _EXTENSION.sub("", name)
    name = _SAMPLE.sub("", name)
    return _PROVIDER_ID.sub("", name).strip()


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(sorted({v for v in value if isinstance(v, int) and not isinstance(v, bool)}))


def _hdr(value: Any) -> str | None:
    tags = value if isinstance(value, list) else []
    return next((tag for tag in ("DV", "HDR10+", "HDR") if tag in tags), None)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_NOTHING = Release(None, None, (), (), None, None, None, None)


#: Names already read, newest last: the one cache of this module (parse and ReleaseReader fill it).
_CACHE: OrderedDict[str, Release] = OrderedDict()
CACHE_SIZE = 4096


def parse(name: str) -> Release:
    """Never raises: anything that is not a release name gives mostly None."""
    key = name[:MAX_LENGTH]  # the cache keys stay small whatever comes in
    known = _CACHE.get(key)
    if known is not None:
        _CACHE.move_to_end(key)
        return known
    release = _parse_safely(key)
    _remember(key, release)
    return release


def clear_cache() -> None:
    """For benchmarks that time cold parses."""
    _CACHE.clear()


def _remember(key: str, release: Release) -> None:
    _CACHE[key] = release
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)


def _parse_safely(name: str) -> Release:
    try:
        return _parse(name)
    except Exception:  # a library bug on odd input must not reach a request
        return _NOTHING


def parse_many(names: list[str]) -> list[Release]:
    """Many names at once: what a :class:`ReleaseReader` process runs."""
    return [_parse_safely(name[:MAX_LENGTH]) for name in names]


class ReleaseReader:
    """Reads batches of release names in a process of its own, beside the event loop.

    A search shows up to 100 releases at about 0.5 ms of parsing each: on the event loop, that is
    tens of milliseconds in which the gateway relays nothing and the search's slowest source waits
    to be read. In a second process the work runs on another core, and the results land in this
    module's cache, where :func:`parse` finds them. The process starts at the first batch (that one
    is parsed here while it starts); if it ever fails, names are parsed here as before.
    """

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._ready: asyncio.Future[list[Release]] | None = None
        self._broken = False
        #: Names sent to the process and not back yet: asked again, they are waited for, not re-sent.
        self._pending: dict[str, asyncio.Future[list[Release]]] = {}

    async def read(self, names: Sequence[str]) -> None:
        """Make sure these names are in the cache (parsed in the reader process when it runs)."""
        keys = [key for key in dict.fromkeys(n[:MAX_LENGTH] for n in names) if key not in _CACHE]
        unknown = [key for key in keys if key not in self._pending]
        waits = {self._pending[key] for key in keys if key in self._pending}
        if unknown and (self._broken or not self._started()):
            for key in unknown:
                parse(key)
            unknown = []
        if unknown:
            releases = await self._in_process(unknown)
            for key, release in zip(unknown, releases, strict=True):
                _remember(key, release)
        for wait in waits:
            with contextlib.suppress(Exception):  # its own caller handles its failure
                await wait

    async def _in_process(self, keys: list[str]) -> list[Release]:
        """The names read by the reader process; here, if it has failed (and from then on)."""
        assert self._pool is not None
        batch: asyncio.Future[list[Release]] | None = None
        try:
            batch = asyncio.get_running_loop().run_in_executor(self._pool, parse_many, keys)
            for key in keys:
                self._pending[key] = batch
            return await batch
        except (concurrent.futures.process.BrokenProcessPool, RuntimeError, OSError) as exc:
            logger.warning("the release-name reader process failed (%s); reading names here", exc)
            self._broken = True
            return [_parse_safely(key) for key in keys]
        finally:
            for key in keys:
                if batch is not None and self._pending.get(key) is batch:
                    del self._pending[key]

    def _started(self) -> bool:
        """Whether the reader process is up; starts it (in the background) the first time."""
        if self._ready is None:
            context = multiprocessing.get_context("spawn")  # no copy of this process's loop or threads
            try:
                self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=context)
                self._ready = asyncio.get_running_loop().run_in_executor(self._pool, parse_many, [])
            except (OSError, RuntimeError) as exc:
                logger.warning("cannot start the release-name reader process (%s)", exc)
                self._broken = True
            return False
        if not self._ready.done():
            return False
        if self._ready.exception() is not None:
            logger.warning("the release-name reader process did not start (%s)", self._ready.exception())
            self._broken = True
            return False
        return True

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, lambda: pool.shutdown(cancel_futures=True))


def _parse(name: str) -> Release:
    cleaned = _clean(name)
    season_only = _SEASON_ONLY.match(cleaned)
    if season_only:  # our own season folder: PTT would call "Season 01" a title
        return Release(None, None, (int(season_only[1]),), (), None, None, None, None)
    r: dict[str, Any] = _PARSER.parse(cleaned) if cleaned else {}
    title = _str(r.get("title"))
    year = r.get("year")
    source = _str(r.get("quality"))
    codec = _str(r.get("codec"))
    return Release(
        title=_str(_LANGUAGE_TAIL.sub("", title)) if title else None,
        year=year if isinstance(year, int) and not isinstance(year, bool) else None,
        seasons=_ints(r.get("seasons")),
        episodes=_ints(r.get("episodes")),
        resolution=_str(r.get("resolution")),
        source=_SOURCES.get(source, source) if source else None,
        codec=_CODECS.get(codec, codec) if codec else None,
        hdr=_hdr(r.get("hdr")),
    )
