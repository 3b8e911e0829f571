"""``GET /torrent/find``: apibay and every Torznab indexer at once, merged by info hash, each release
read by the release-name parser, and marked when Jellyfin already has the title.

A source that fails or is slow marks its ``Sources`` entry and never fails the search: the answer
comes when the slowest healthy source has answered (plus the library marks, at most 100 ms more), or
after TORZNAB_TIMEOUT + 1 s at worst, whatever is still running then being cut off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .apibay import ApibayClient
from .auth import CREDENTIALS
from .keys import APIBAY, LIBRARY_INDEX, RELEASE_READER, SETTINGS, TORZNAB, WATCHER
from .library_index import InLibrary, LibraryIndex
from .releases import Release, ReleaseReader, parse
from .torznab import TorznabClient, TorznabResult
from .upstream import UpstreamError
from .validation import BadRequest, imdb_id, query_value

logger = logging.getLogger(__name__)

KINDS = ("movie", "tv", "any")
#: apibay categories per kind: movies (201 202 207 209 211), TV (205 208 212), anything (0).
APIBAY_CATEGORIES = {"movie": "201,202,207,209,211", "tv": "205,208,212", "any": "0"}
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
#: How long the library marks may add once the sources have answered.
MARKS_WAIT = 0.1
_HEX = frozenset("0123456789abcdef")


@dataclass
class Found:
    """One release, merged from every source that listed it (apibay's rows are read into the same
    record as an indexer's results)."""

    release: TorznabResult
    sources: list[str]


@dataclass(frozen=True)
class Search:
    query: str
    kind: str
    imdb: str | None
    season: int | None
    episode: int | None
    limit: int


def _int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def from_apibay(row: dict[str, str]) -> TorznabResult | None:
    """An apibay row (every field a string) as a release; None without a usable hash."""
    info_hash = row.get("info_hash", "").strip().lower()
    if len(info_hash) != 40 or not set(info_hash) <= _HEX:
        return None
    added = _int(row.get("added", ""))
    try:
        imdb = imdb_id(row.get("imdb", ""))
    except BadRequest:
        imdb = None
    return TorznabResult(
        name=row.get("name", ""),
        info_hash=info_hash,
        size=_int(row.get("size", "")),
        seeders=_int(row.get("seeders", "")),
        leechers=_int(row.get("leechers", "")),
        added=datetime.fromtimestamp(added, UTC) if added else None,
        imdb=imdb,
    )


def merge(lists: list[tuple[str, list[TorznabResult]]]) -> list[Found]:
    """One entry per info hash: the most seeders and leechers any source saw, every source that
    listed it, and the other fields from the first source that had them (apibay first)."""
    merged: dict[str, Found] = {}
    for source, releases in lists:
        for release in releases:
            found = merged.get(release.info_hash)
            if found is None:
                merged[release.info_hash] = Found(release, [source])
                continue
            if source not in found.sources:
                found.sources.append(source)
            known = found.release
            found.release = replace(
                known,
                seeders=_max(known.seeders, release.seeders),
                leechers=_max(known.leechers, release.leechers),
                size=known.size if known.size is not None else release.size,
                added=known.added or release.added,
                imdb=known.imdb or release.imdb,
            )
    return sorted(merged.values(), key=_by_seeders)


def _by_seeders(found: Found) -> tuple[bool, int, int, str]:
    release = found.release
    return (release.seeders is None, -(release.seeders or 0), -(release.leechers or 0), release.name)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _search_of(request: web.Request) -> Search:
    raw = request.rel_url.raw_query_string

    def number(name: str, top: int) -> int | None:
        text = query_value(raw, name)
        if text is None or not text.strip():
            return None
        value = _int(text.strip())
        if value is None or value > top:
            raise BadRequest(f"{name} must be a whole number from 0 to {top}")
        return value

    query = (query_value(raw, "q") or "").strip()
    imdb = imdb_id(query_value(raw, "imdb"))
    if not query and imdb is None:
        raise BadRequest("q (or imdb) is required")
    kind = (query_value(raw, "type") or "any").strip().lower()
    if kind not in KINDS:
        raise BadRequest("type must be movie, tv or any")
    limit = number("limit", MAX_LIMIT)
    return Search(
        query=query,
        kind=kind,
        imdb=imdb,
        season=number("season", 1000),
        episode=number("episode", 10000),
        limit=DEFAULT_LIMIT if limit is None else max(1, limit),
    )


async def _apibay(client: ApibayClient, search: Search) -> list[TorznabResult]:
    # apibay finds a title by its IMDb id too, when there is no text to search for.
    rows = await client.search_all(search.query or search.imdb or "", APIBAY_CATEGORIES[search.kind])
    return [release for row in rows if (release := from_apibay(row)) is not None]


async def _torznab(client: TorznabClient, search: Search) -> list[TorznabResult]:
    return await client.search(
        search.query or search.imdb or "",
        kind=search.kind,  # type: ignore[arg-type]
        imdb=search.imdb,
        season=search.season,
        episode=search.episode,
        limit=MAX_LIMIT,
    )


class _Waiting:
    """How many sources have not answered yet. While some have not, the names of the best-seeded
    releases so far are read (by the reader process, into the parser's cache), so that little is
    left to read when the last source answers: only its own releases that make the first ``limit``."""

    def __init__(self, sources: int, limit: int, reader: ReleaseReader) -> None:
        self.sources = sources
        self.limit = limit
        self._reader = reader
        self._seen: list[TorznabResult] = []

    async def read_names(self, found: list[TorznabResult]) -> None:
        self._seen += found
        if self.sources:
            # The merged first `limit` (by the most seeders any source saw) are among these.
            best = sorted(self._seen, key=lambda r: -(r.seeders or 0))[: self.limit]
            await self._reader.read([r.name for r in best])


async def _timed(
    name: str, call: Awaitable[list[TorznabResult]], waiting: _Waiting
) -> tuple[str, list[TorznabResult] | None, str | None, float]:
    started = time.monotonic()
    try:
        found: list[TorznabResult] | None = await call
        error = None
    except UpstreamError as exc:
        found, error = None, exc.reason
    except ValueError as exc:  # a search this source cannot make (validated before: not expected)
        found, error = None, str(exc)
    took = (time.monotonic() - started) * 1000
    waiting.sources -= 1
    if found:
        await waiting.read_names(found)
    return name, found, error, took


def _release_json(found: Found, parsed: Release, mark: dict[str, Any] | None) -> dict[str, Any]:
    release = found.release
    return {
        "Name": release.name,
        "InfoHash": release.info_hash,
        "Size": release.size,
        "Seeders": release.seeders,
        "Leechers": release.leechers,
        "Added": release.added.astimezone(UTC).isoformat() if release.added else None,
        "Sources": found.sources,
        "Imdb": release.imdb,
        "Title": parsed.title,
        "Year": parsed.year,
        "Season": parsed.seasons[0] if parsed.seasons else None,
        "Episode": parsed.episodes[0] if parsed.episodes else None,
        "Resolution": parsed.resolution,
        "Source": parsed.source,
        "Codec": parsed.codec,
        "Hdr": parsed.hdr,
        "InLibrary": mark,
    }


def _mark(
    index: LibraryIndex, imdb: str | None, parsed: Release, kind: str, url: Callable[[str], str]
) -> dict[str, Any] | None:
    season = parsed.seasons[0] if parsed.seasons else None
    episode = parsed.episodes[0] if parsed.episodes else None
    if kind == "any":
        kind = "tv" if season is not None or episode is not None else "movie"
    found: InLibrary | None = index.match(
        imdb=imdb, title=parsed.title, year=parsed.year, season=season, episode=episode, kind=kind
    )
    if found is None:
        return None
    return {
        "ItemId": found.item_id,
        "Name": found.name,
        "Year": found.year,
        "Resolution": found.resolution,
        "Url": url(found.item_id),
    }


async def find(request: web.Request) -> web.Response:
    """``GET /torrent/find?q=&type=&imdb=&season=&episode=&limit=``."""
    search = _search_of(request)
    config = request.config_dict
    settings = config[SETTINGS]
    index = config[LIBRARY_INDEX]
    auth = settings.jellyfin_api_key or request[CREDENTIALS]
    book = config[WATCHER].landings
    # The library index builds (at first use) while the sources answer.
    marks_ready = asyncio.create_task(index.ready(auth, wait=settings.torznab_timeout))
    server_id = asyncio.create_task(book.ensure_server_id())
    reader = config[RELEASE_READER]
    waiting = _Waiting(1 + len(config[TORZNAB]), search.limit, reader)
    calls = [_timed("apibay", _apibay(config[APIBAY], search), waiting)]
    calls += [_timed(client.name, _torznab(client, search), waiting) for client in config[TORZNAB]]
    tasks = [asyncio.create_task(call) for call in calls]
    names = ["apibay", *(client.name for client in config[TORZNAB])]
    done, pending = await asyncio.wait(tasks, timeout=settings.torznab_timeout + 0.9)
    for task in pending:
        task.cancel()
    sources: list[dict[str, Any]] = []
    lists: list[tuple[str, list[TorznabResult]]] = []
    for name, task in zip(names, tasks, strict=True):
        if task in done:
            _, found, error, ms = task.result()
        else:
            found, error, ms = (
                None,
                f"{name} did not answer within {settings.torznab_timeout + 1:.0f} s",
                None,
            )
        if found is not None:
            lists.append((name, found))
        sources.append(
            {
                "Name": name,
                "Ok": found is not None,
                "Count": len(found) if found is not None else 0,
                "Ms": round(ms) if ms is not None else None,
                "Error": error,
            }
        )
    merged = merge(lists)[: search.limit]
    await reader.read([entry.release.name for entry in merged])
    ready = False
    try:
        ready = await asyncio.wait_for(asyncio.shield(marks_ready), MARKS_WAIT)
        await asyncio.wait_for(asyncio.shield(server_id), MARKS_WAIT)
    except TimeoutError:
        pass
    results = []
    for entry in merged:
        parsed = parse(entry.release.name)  # from the cache the reader filled
        mark = _mark(index, entry.release.imdb, parsed, search.kind, book.url) if ready else None
        results.append(_release_json(entry, parsed, mark))
    logger.debug(
        "find %r (%s): %d results from %s",
        search.query or search.imdb,
        search.kind,
        len(results),
        ", ".join(f"{s['Name']}={'ok' if s['Ok'] else 'failed'}" for s in sources),
    )
    return web.json_response({"Results": results, "Sources": sources})
