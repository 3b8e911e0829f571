"""What ``GET /torrent/find`` adds on top of its slowest source.

    python benchmarks/find.py            # print the figures
    python benchmarks/find.py --check    # and exit 1 when the added p50 is over 30 ms

Three sources answer each search with 100 results of their own after a fixed delay (apibay 150 ms,
two Torznab indexers, Prowlarr- and Jackett-flavoured, 250 and 400 ms), 30 releases listed by all
three; they are the project's test stand-ins, in a process of their own (this file with ``--serve``),
beside a Jellyfin stand-in whose library holds 200 movies. One gateway process (``python -m
gateway``) searches them. The figure is the p50 of /torrent/find minus the p50 of asking the three
sources directly at once (until the slowest has answered), interleaved in this run: merging 300
releases, parsing their names and marking them against the library. Every search has its own query
and release names, so neither apibay's cache nor the name parser's answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.apibay_standin import ApibayState, create_apibay_standin  # noqa: E402
from tests.apibay_standin import info_hash as apibay_hash  # noqa: E402
from tests.jellyfin_standin import StandinState, create_standin  # noqa: E402
from tests.torznab_standin import API_KEY, TorznabItem, TorznabState, create_torznab_standin  # noqa: E402

RESULTS = 100
SHARED = 30
#: Seconds each source takes to answer: apibay's API, and indexer managers that relay a search to
#: trackers on the internet (Prowlarr and Jackett answer in hundreds of ms to seconds).
DELAYS = {"apibay": 0.150, "prowlarr": 0.250, "jackett": 0.400}
REQUESTS = 40
WARMUP = 5
BUDGET_MS = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _apibay_rows(query: str) -> list[dict[str, str]]:
    rows = []
    for n in range(RESULTS):
        rows.append(
            {
                "id": str(1000 + n),
                "name": f"Film Number {n} ({1990 + n % 30}) 1080p BluRay x264-{query}",
                "info_hash": apibay_hash(f"release-{n}"),
                "leechers": str(n % 17),
                "seeders": str(1000 - 3 * n),  # the three sources' releases interleave by seeders
                "num_files": "1",
                "size": str(700_000_000 + n * 1_000_000),
                "username": "u",
                "added": str(1_700_000_000 + n * 3600),
                "status": "vip",
                "category": "207",
                "imdb": f"tt{1_000_000 + n:07d}",
            }
        )
    return rows


def _torznab_items(offset: int, query: str) -> list[TorznabItem]:
    """SHARED releases also on apibay (same hashes), the rest this indexer's own."""
    published = datetime(2024, 1, 1, tzinfo=UTC)
    items = []
    for n in range(RESULTS):
        seed = f"release-{n}" if n < SHARED else f"indexer-{offset}-{n}"
        items.append(
            TorznabItem(
                f"Film Number {n} {1990 + n % 30} 2160p WEB-DL HDR x265-{query}",
                apibay_hash(seed).lower(),
                size=4_000_000_000 + n,
                seeders=1000 - 3 * n - offset,
                leechers=n,
                published=published - timedelta(hours=n),
                imdb=1_000_000 + n,
            )
        )
    return items


async def _serve() -> None:
    """The stand-ins, on free ports; their addresses go to stdout as one JSON line."""
    library = Path(tempfile.mkdtemp(prefix="find-bench-"))
    for n in range(200):
        folder = library / "movies" / f"Film Number {n} ({1990 + n % 30})"
        folder.mkdir(parents=True)
        (folder / f"{folder.name}.mkv").write_bytes(b"x")
    jellyfin = StandinState()
    jellyfin.filesystem["/media"] = library
    jellyfin.scan("/media/movies")
    apibay = ApibayState(delay=DELAYS["apibay"])
    prowlarr = TorznabState(delay=DELAYS["prowlarr"])
    jackett = TorznabState(flavour="jackett", delay=DELAYS["jackett"])

    # Every search gets release names of its own (the query is their group), as real searches do:
    # the gateway's name parser cache never answers for them. Each stand-in makes only its own list.
    def per_query(fill: Callable[[str], None]) -> Any:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.query.get("t") != "caps":
                fill(request.query.get("q", ""))
            return await handler(request)

        return middleware

    def fill_apibay(query: str) -> None:
        apibay.rows = _apibay_rows(query)

    def fill_prowlarr(query: str) -> None:
        prowlarr.items = _torznab_items(1, query)

    def fill_jackett(query: str) -> None:
        jackett.items = _torznab_items(2, query)

    apps: dict[str, web.Application] = {
        "jellyfin": create_standin(state=jellyfin),
        "apibay": create_apibay_standin(apibay),
        "prowlarr": create_torznab_standin(prowlarr),
        "jackett": create_torznab_standin(jackett),
    }
    for name, fill in (("apibay", fill_apibay), ("prowlarr", fill_prowlarr), ("jackett", fill_jackett)):
        apps[name].middlewares.append(per_query(fill))
    ports = {}
    for name, app in apps.items():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ports[name] = _free_port()
        await web.TCPSite(runner, "127.0.0.1", ports[name]).start()
    print(json.dumps({"ports": ports, "api_key": jellyfin.api_key_for("gateway"), "token": _admin(jellyfin)}))
    sys.stdout.flush()
    await asyncio.Event().wait()


def _admin(state: StandinState) -> str:
    return state.issue_token(state.user_by_name("admin"))


async def _wait_port(port: int, process: subprocess.Popen[Any]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise SystemExit("the gateway exited at start")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit("the gateway did not listen")


async def _timed_get(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[float, Any]:
    started = time.perf_counter()
    async with http.get(url, headers=headers) as resp:
        body = await resp.json(content_type=None) if "find" in url else await resp.read()
        assert resp.status == 200, (resp.status, url)
    return (time.perf_counter() - started) * 1000, body


async def _measure(ports: dict[str, int], token: str, gateway_port: int) -> dict[str, Any]:
    headers = {"Authorization": f'MediaBrowser Token="{token}"'}
    sources = (
        f"http://127.0.0.1:{ports['apibay']}/q.php?cat=0&q=",
        f"http://127.0.0.1:{ports['prowlarr']}/1/api?apikey={API_KEY}&t=search&limit=100&q=",
        f"http://127.0.0.1:{ports['jackett']}/api/v2.0/indexers/all/results/torznab/api?apikey={API_KEY}"
        "&t=search&limit=100&q=",
    )
    gateway = f"http://127.0.0.1:{gateway_port}/torrent/find"
    direct: list[float] = []
    found: list[float] = []
    counts: list[int] = []
    marked: list[int] = []
    async with aiohttp.ClientSession() as http:
        for n in range(WARMUP + REQUESTS):
            # Interleaved, so both see the same machine load.
            # The three sources asked at once, as the gateway asks them: the slowest one's answer.
            started = time.perf_counter()
            await asyncio.gather(*(_timed_get(http, f"{source}direct{n}", {}) for source in sources))
            ms = (time.perf_counter() - started) * 1000
            took, body = await _timed_get(http, f"{gateway}?q=film{n}", headers)  # limit 50, the default
            if n >= WARMUP:
                direct.append(ms)
                found.append(took)
                counts.append(len(body["Results"]))
                marked.append(sum(1 for r in body["Results"] if r["InLibrary"]))
                assert all(s["Ok"] for s in body["Sources"]), body["Sources"]
    return {
        "direct": direct,
        "find": found,
        "results": statistics.median(counts),
        "marked": statistics.median(marked),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 when the added p50 is over {BUDGET_MS:.0f} ms"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    standins = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        assert standins.stdout is not None
        started = json.loads(standins.stdout.readline())
        ports = started["ports"]
        gateway_port = _free_port()
        env = {
            **os.environ,
            "JELLYFIN_URL": f"http://127.0.0.1:{ports['jellyfin']}",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "APIBAY_URL": f"http://127.0.0.1:{ports['apibay']}",
            "QBITTORRENT_URL": "http://127.0.0.1:9",
            "JELLYFIN_API_KEY": started["api_key"],
            "TORZNAB_INDEXERS": (
                f"prowlarr=http://127.0.0.1:{ports['prowlarr']}/1/api?apikey={API_KEY};"
                f"jackett=http://127.0.0.1:{ports['jackett']}/api/v2.0/indexers/all/results/torznab/api"
                f"?apikey={API_KEY}"
            ),
            "ACCESS_LOG": "false",
            "LOG_LEVEL": "WARNING",
        }
        gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT)
        asyncio.run(_wait_port(gateway_port, gateway))
        cpu_before = _cpu_seconds(gateway.pid)
        result = asyncio.run(_measure(ports, started["token"], gateway_port))
        result["cpu_ms"] = (_cpu_seconds(gateway.pid) - cpu_before) / (WARMUP + REQUESTS) * 1000
    finally:
        for process in (gateway, standins):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    direct, found = result["direct"], result["find"]
    added = statistics.median(found) - statistics.median(direct)
    print(
        f"/torrent/find, 3 sources x {RESULTS} results ({SHARED} shared), {REQUESTS} searches: "
        f"{result['results']:.0f} merged results, {result['marked']:.0f} marked in library"
    )
    print(
        f"  3 sources, directly     p50 {statistics.median(direct):6.1f} ms  p90 {_pct(direct, 90):6.1f} ms"
    )
    print(f"  /torrent/find           p50 {statistics.median(found):6.1f} ms  p90 {_pct(found, 90):6.1f} ms")
    print(f"  added over the slowest  p50 {added:6.1f} ms  (budget {BUDGET_MS:.0f} ms)")
    print(f"  gateway CPU per search      {result['cpu_ms']:6.1f} ms")
    if args.check and added > BUDGET_MS:
        print("check: NOT MET")
        sys.exit(1)


if __name__ == "__main__":
    main()
