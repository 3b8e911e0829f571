"""How long the library index takes to build, how much memory it holds, and how fast it matches.

    python benchmarks/library_index.py            # print the figures
    python benchmarks/library_index.py --check    # and exit 1 over a budget (build, memory, match)

A fake Jellyfin in a process of its own (this file with ``--serve``, so its memory and CPU are not
the index's) pages ``GET /Items`` as Jellyfin 10.9+ does: 12,000 movies, 500 series and 7,500
episodes by default, with ProviderIds, years and MediaSources (a video, two audio and a subtitle
stream each), about 1 KB of JSON per item. The gateway's own JellyfinClient and LibraryIndex build
from it over loopback. Items are functions of their number, so both processes know them without
sharing a list.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.jellyfin import JellyfinClient  # noqa: E402 - needs ROOT on sys.path first
from gateway.library_index import LibraryIndex  # noqa: E402

BUILD_BUDGET_S = 5.0
MEMORY_BUDGET_MIB = 50.0
MATCH_BUDGET_US = 50.0
BUILDS = 3
MATCH_CALLS = 10_000
MATCH_RUNS = 5
EPISODES_PER_SERIES = 15  # 3 seasons of 5
API_KEY = "0123456789abcdef0123456789abcdef"
MIB = 1024 * 1024


def _words(text: str) -> list[str]:
    return text.split()


_ADJECTIVES = _words(
    "Silent Broken Golden Hidden Last Crimson Frozen Wild Lost Dark Bright Iron Hollow Burning Quiet "
    "Endless Forgotten Savage Velvet Distant Electric Northern Secret Final Fallen Sacred Bitter Pale "
    "Rising Midnight Scarlet Wicked Lonely Restless Shattered Ancient Eternal Stolen Twisted Crystal"
)
_NOUNS = _words(
    "River Empire Garden Machine Horizon Kingdom Shadow Winter Signal Harbor Mirror Desert Circus "
    "Island Station Forest Thunder Engine Lantern Voyage Canyon Orchard Tower Ocean Frontier Citadel "
    "Meadow Comet Fortress Valley Tempest Beacon Labyrinth Glacier Summit Cathedral Prairie Archive "
    "Sanctuary Monsoon Pyramid Harvest Avalanche Carnival Reef Tundra Volcano Galaxy Bridge Paradox"
)
_PLACES = _words("Paris Tokyo Berlin Cairo Lima Oslo Quito Delhi Rome Perth")
_SIZES = ((3840, 2160), (1920, 1080), (1920, 800), (1280, 720), (720, 576))


@dataclass(frozen=True)
class Shape:
    movies: int
    series: int

    @property
    def episodes(self) -> int:
        return self.series * EPISODES_PER_SERIES

    @property
    def total(self) -> int:
        return self.movies + self.series + self.episodes


def title(n: int) -> str:
    """A distinct title per n below 20,000, with an article or an apostrophe now and then."""
    words = f"{_ADJECTIVES[n % 40]} {_NOUNS[(n // 40) % 50]} of {_PLACES[(n // 2000) % 10]}"
    if n % 3 == 0:
        return "The " + words
    if n % 7 == 0:
        return f"{_PLACES[n % 10]}'s {words}"
    return words


def movie_year(n: int) -> int:
    return 1950 + n % 75


def movie_imdb(n: int) -> str:
    return f"tt{1_000_000 + n:07d}"


def series_imdb(s: int) -> str:
    return f"tt{9_000_000 + s:07d}"


def item_id(kind: str, n: int) -> str:
    return f"{'mse'.index(kind[0].lower()):x}{n:031x}"


def media_sources(n: int, path: str) -> list[dict[str, Any]]:
    width, height = _SIZES[n % len(_SIZES)]
    streams = [
        {"Codec": "hevc", "Type": "Video", "Width": width, "Height": height, "Index": 0, "IsDefault": True},
        {"Codec": "eac3", "Language": "eng", "Type": "Audio", "Channels": 6, "Index": 1, "IsDefault": True},
        {"Codec": "aac", "Language": "fre", "Type": "Audio", "Channels": 2, "Index": 2},
        {"Codec": "subrip", "Language": "eng", "Type": "Subtitle", "Index": 3, "IsExternal": False},
    ]
    return [
        {
            "Protocol": "File",
            "Id": item_id("source", n),
            "Path": path,
            "Type": "Default",
            "Container": "mkv",
            "Size": 4_000_000_000 + n,
            "Name": path.rsplit("/", 1)[-1],
            "RunTimeTicks": 72_000_000_000,
            "MediaStreams": streams,
        }
    ]


def item(shape: Shape, number: int) -> dict[str, Any]:
    """Item ``number`` of the library: movies first, then series, then their episodes."""
    base = {"ServerId": "f" * 32, "IsFolder": False, "LocationType": "FileSystem", "MediaType": "Video"}
    if number < shape.movies:
        name, year = title(number), movie_year(number)
        path = f"/media/movies/{name} ({year})/{name} ({year}).mkv"
        return base | {
            "Name": name,
            "Id": item_id("movie", number),
            "Type": "Movie",
            "Path": path,
            "ProductionYear": year,
            "ProviderIds": {"Imdb": movie_imdb(number), "Tmdb": str(number)},
            "MediaSources": media_sources(number, path),
        }
    number -= shape.movies
    if number < shape.series:
        name = title(number + 7)
        return base | {
            "Name": name,
            "Id": item_id("series", number),
            "Type": "Series",
            "Path": f"/media/tv/{name}",
            "ProductionYear": 2000 + number % 25,
            "ProviderIds": {"Imdb": series_imdb(number), "Tvdb": str(number)},
            "IsFolder": True,
            "MediaType": "Unknown",
        }
    number -= shape.series
    s, e = divmod(number, EPISODES_PER_SERIES)
    season, episode = e // 5 + 1, e % 5 + 1
    series_name = title(s + 7)
    path = f"/media/tv/{series_name}/Season {season:02d}/{series_name} S{season:02d}E{episode:02d}.mkv"
    return base | {
        "Name": f"Episode {episode}",
        "Id": item_id("episode", number),
        "Type": "Episode",
        "Path": path,
        "ProductionYear": 2000 + s % 25 + season - 1,
        "IndexNumber": episode,
        "ParentIndexNumber": season,
        "SeriesName": series_name,
        "SeriesId": item_id("series", s),
        "ProviderIds": {},
        "MediaSources": media_sources(number, path),
    }


# ---------------------------------------------------------------------------
# The fake Jellyfin (its own process)
# ---------------------------------------------------------------------------


def serve(shape: Shape) -> None:
    """``GET /Items`` with StartIndex/Limit over the generated library; prints its port, then serves."""
    items = [item(shape, n) for n in range(shape.total)]

    async def get_items(request: web.Request) -> web.Response:
        start = int(request.query.get("StartIndex", "0"))
        limit = int(request.query.get("Limit", "0")) or len(items)
        page = items[start : start + limit]
        body = {"Items": page, "TotalRecordCount": len(items), "StartIndex": start}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/Items", get_items)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


def start_server(shape: Shape) -> tuple[subprocess.Popen[str], URL]:
    command = [
        sys.executable,
        __file__,
        "--serve",
        "--movies",
        str(shape.movies),
        "--series",
        str(shape.series),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    if not port.isdigit():
        process.kill()
        raise SystemExit("the fake Jellyfin did not start")
    return process, URL(f"http://127.0.0.1:{port}")


# ---------------------------------------------------------------------------
# Measurements (this process: the gateway's side)
# ---------------------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def build(client: JellyfinClient) -> tuple[LibraryIndex, float]:
    index = LibraryIndex(client)
    started = time.perf_counter()
    if not await index.ready(API_KEY, wait=120):
        raise SystemExit("the index was not built")
    return index, time.perf_counter() - started


def query(
    imdb: str | None, name: str, year: int | None, season: int | None, episode: int | None, kind: str
) -> dict[str, Any]:
    return {"imdb": imdb, "title": name, "year": year, "season": season, "episode": episode, "kind": kind}


def queries(shape: Shape) -> Iterator[dict[str, Any]]:
    """A mix like a search page's: IMDb hits, release-style titles, episodes there and not, misses."""
    for q in range(MATCH_CALLS):
        n, kind = (q * 7919) % shape.movies, q % 5
        s = n % shape.series
        if kind == 0:
            yield query(movie_imdb(n), title(n), movie_year(n), None, None, "movie")
        elif kind == 1:  # "The.Silent.River.of.Paris.1999.1080p" as a parser reads it, a year off
            dotted = title(n).replace("'", "").replace(" ", ".")
            yield query(None, dotted, movie_year(n) + q % 2, None, None, "movie")
        elif kind == 2:  # seasons 1-4 and episodes 1-6 of shows with 3 seasons of 5
            yield query(None, title(s + 7), None, 1 + q % 4, 1 + q % 6, "series")
        elif kind == 3:
            yield query(series_imdb(s), title(s + 7), None, 1 + q % 3, None, "series")
        else:
            yield query("tt0000001", f"Nothing Like {title(n)}", 1900, None, None, "movie")


def match_us(index: LibraryIndex, shape: Shape) -> tuple[float, float]:
    """Microseconds per match() call (median of MATCH_RUNS runs), and the share that matched."""
    asked = list(queries(shape))
    hits = sum(index.match(**query) is not None for query in asked)
    runs = []
    for _ in range(MATCH_RUNS):
        started = time.perf_counter()
        for query in asked:
            index.match(**query)
        runs.append((time.perf_counter() - started) / len(asked) * 1e6)
    return statistics.median(runs), hits / len(asked)


async def measure(shape: Shape, base: URL) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        client = JellyfinClient(session, base, connect_timeout=5)
        gc.collect()
        rss_before = rss()
        times, index = [], None
        for _ in range(BUILDS):
            index = None  # the previous one goes before the next is built, as in the gateway
            index, seconds = await build(client)
            times.append(seconds)
        assert index is not None
        gc.collect()
        rss_growth = rss() - rss_before
        items = index.stats()["items"]
        per_call, hit_share = match_us(index, shape)
        await index.close()

        index = None
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        index, _ = await build(client)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        await index.close()
    return {
        "items": items,
        "build_s": statistics.median(times),
        "build_runs_s": times,
        "index_mib": traced / MIB,
        "rss_growth_mib": rss_growth / MIB,
        "match_us": per_call,
        "match_hits": hit_share,
    }


def report(shape: Shape, page_size: int, result: dict[str, Any]) -> list[str]:
    """The figures, and the budgets exceeded (empty: all met)."""
    runs = ", ".join(f"{s:.2f}" for s in result["build_runs_s"])
    print(
        f"library index: {result['items']:,} items ({shape.movies:,} movies, {shape.series:,} series, "
        f"{shape.episodes:,} episodes), pages of {page_size}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"  build        {result['build_s']:.2f} s median of {BUILDS} ({runs})   budget {BUILD_BUDGET_S:g} s"
    )
    print(
        f"  memory       {result['index_mib']:.1f} MiB held by the index (tracemalloc), "
        f"RSS growth {result['rss_growth_mib']:.1f} MiB   budget {MEMORY_BUDGET_MIB:g} MiB"
    )
    print(
        f"  match()      {result['match_us']:.1f} µs per call ({MATCH_CALLS:,} calls, "
        f"median of {MATCH_RUNS}; {result['match_hits']:.0%} found)   budget {MATCH_BUDGET_US:g} µs"
    )
    over = []
    if result["items"] != shape.total:
        over.append(f"indexed {result['items']} items of {shape.total}")
    if result["build_s"] > BUILD_BUDGET_S:
        over.append("build")
    if result["index_mib"] > MEMORY_BUDGET_MIB:
        over.append("memory")
    if result["match_us"] > MATCH_BUDGET_US:
        over.append("match")
    return over


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure is over its budget")
    parser.add_argument("--movies", type=int, default=12_000)
    parser.add_argument("--series", type=int, default=500, help=f"each with {EPISODES_PER_SERIES} episodes")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = Shape(args.movies, args.series)
    if args.serve:
        serve(shape)
        return
    process, base = start_server(shape)
    try:
        result = asyncio.run(measure(shape, base))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    over = report(shape, 1000, result)
    if args.check:
        print("check: " + ("NOT MET: " + ", ".join(over) if over else "all budgets met"))
        if over:
            sys.exit(1)


if __name__ == "__main__":
    main()
