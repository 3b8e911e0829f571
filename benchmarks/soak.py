"""Soak: one gateway process under mixed legitimate and abusive traffic for minutes, with its
upstreams restarted underneath it, on loopback; prints one report.

    .venv/bin/python benchmarks/soak.py [--duration 300] [--json PATH]

Started here, all on 127.0.0.1: the Jellyfin stand-in (tests/jellyfin_standin.py, its own process:
benchmarks/soak_standin.py), two real qbittorrent-nox (the gateway's, and a seeder its downloads
come from), the gateway (`python -m gateway`), and the abusive clients (benchmarks/soak_abuse.py, a
process of their own). The legitimate clients run in this process. qBittorrent is restarted at 1/3
of the run and the stand-in at 2/3; errors legitimate clients see are split into inside and outside
those restart windows. Every process started is stopped and the temp dirs removed on exit, error,
Ctrl-C or SIGTERM; the whole run is bounded in time. Exits non-zero only when something could not be
measured (or with --strict when a goal is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from clients import percentile
from procs import HarnessError, Managed, clean_env, free_port, process_tree, rss_bytes, wait_http_ok

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.jellyfin_standin import deterministic_media  # noqa: E402 - needs ROOT on sys.path
from tests.qbittorrent_nox import (  # noqa: E402
    QbtError,
    QbtInstance,
    new_base_dir,
    require_binary,
    start_qbittorrent,
)
from tests.torrent_files import add_peer, seed, write_payload  # noqa: E402

DEFAULT_JSON = HERE / "results-soak.json"  # git-ignored (benchmarks/results*.json)
KIB = 1024
MIB = 1024 * KIB
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETUP_BUDGET = 150.0  # seconds for everything before the load starts (qBittorrent, seeding, gateway)
SMALL_PATH = "/System/Info/Public"
LIBRARY = "Movies"
LIBRARY_JELLYFIN_PATH = "/media/movies"  # the stand-in's Movies folder (its default libraries)
REQUEST_TIMEOUT = 10.0  # a legitimate request slower than this is an error
STREAM_READ = 128 * KIB
RETRY_PAUSE = 1.0  # a legitimate client that failed waits this long before trying again

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=300.0, metavar="S", help="load seconds (default 300)")
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="raw results (default: %(default)s)"
    )
    p.add_argument("--no-json", action="store_true", help="write no JSON file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    p.add_argument(
        "--qbittorrent", default="qbittorrent-nox", help="qbittorrent-nox binary (or qbittorrent-nox-5)"
    )
    g = p.add_argument_group("legitimate traffic")
    g.add_argument("--streams", type=int, default=8, help="concurrent Range video streams")
    g.add_argument("--stream-mbps", type=float, default=2.0, help="read rate of each stream, MB/s")
    g.add_argument("--media-mib", type=int, default=8, help="size of the stand-in's video")
    g.add_argument("--websockets", type=int, default=32, help="/socket clients")
    g.add_argument("--ws-keepalive", type=float, default=10.0, help="seconds between KeepAlive messages")
    g.add_argument("--json-rps", type=float, default=50.0, help=f"{SMALL_PATH} requests per second")
    g.add_argument("--admin-rps", type=float, default=1.5, help="admin API calls per second")
    g.add_argument("--downloads", type=int, default=4, help="torrents downloaded through the gateway")
    g.add_argument("--download-kib", type=int, default=256, help="size of each download")
    a = p.add_argument_group("abuse")
    a.add_argument("--half-open", type=int, default=200, help="stalled anonymous connections")
    a.add_argument("--header-kib", type=int, default=30, help="header bytes each one sends")
    a.add_argument("--header-fields", type=int, default=60, help="header fields they are spread over")
    a.add_argument("--flood", type=int, default=1, help="WebSocket flood clients")
    a.add_argument("--flood-mbps", type=float, default=0.0, help="flood cap in MB/s (0: as fast as possible)")
    a.add_argument("--abuse-nice", type=int, default=5, help="niceness added to the abuse process")
    r = p.add_argument_group("restarts and accounting")
    r.add_argument("--down", type=float, default=2.0, help="seconds the stand-in stays down when restarted")
    r.add_argument(
        "--grace", type=float, default=3.0, help="seconds after a restart still counted inside its window"
    )
    r.add_argument(
        "--drain", type=float, default=60.0, help="max seconds to wait for pending notifications at the end"
    )
    r.add_argument("--no-restarts", action="store_true", help="restart nothing")
    r.add_argument(
        "--gateway-env", action="append", default=[], metavar="KEY=VALUE", help="extra gateway environment"
    )
    r.add_argument("--gateway-timeout", type=float, default=30.0, help="seconds to wait for the gateway")
    r.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy every process's log here")
    args = p.parse_args(argv)
    if args.duration < 10:
        p.error("--duration must be at least 10 seconds")
    return args


# ---------------------------------------------------------------- bookkeeping


@dataclass
class Failure:
    kind: str
    start: float  # seconds since the load started
    end: float
    what: str


@dataclass
class Window:
    name: str
    start: float
    end: float
    note: str = ""


@dataclass
class Download:
    name: str
    info_hash: str
    added_at: float | None = None  # seconds since the load started
    completed_at: float | None = None
    completed_wall: float | None = None  # time.time(), to compare with the stand-in's log


@dataclass
class Tally:
    """What the legitimate clients saw; times are seconds since the load started."""

    t0: float
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[Failure] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    extra: collections.Counter[str] = field(default_factory=collections.Counter)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def ok(self, kind: str, started: float | None = None) -> None:
        self.served[kind] += 1
        if started is not None:
            self.latencies[kind].append(self.now() - started)

    def fail(self, kind: str, started: float, what: str) -> None:
        self.failures.append(Failure(kind, round(started, 3), round(self.now(), 3), what[:200]))


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


CLIENT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ValueError)


# ---------------------------------------------------------------- processes


@dataclass
class Tokens:
    admin: str = field(default_factory=lambda: secrets.token_hex(16))
    user: str = field(default_factory=lambda: secrets.token_hex(16))
    api_key: str = field(default_factory=lambda: secrets.token_hex(16))
    server_id: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f'MediaBrowser Client="soak", Token="{self.admin}"'}


class StandIn:
    """The Jellyfin stand-in process; restartable on the same port."""

    def __init__(self, tmp: Path, tokens: Tokens, media_bytes: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.notifications = tmp / "notifications.jsonl"
        self.notifications.touch()
        self._tmp = tmp
        self._argv = [
            sys.executable,
            str(HERE / "soak_standin.py"),
            f"--port={self.port}",
            f"--admin-token={tokens.admin}",
            f"--user-token={tokens.user}",
            f"--api-key={tokens.api_key}",
            f"--server-id={tokens.server_id}",
            f"--media-bytes={media_bytes}",
            f"--notifications={self.notifications}",
        ]
        self.starts = 0
        self.proc: Managed | None = None
        self.pids: list[int] = []

    def start(self) -> None:
        self.starts += 1
        self.proc = Managed(f"standin-{self.starts}", self._argv, log_dir=self._tmp, cwd=ROOT)
        self.pids.append(self.proc.pid)
        wait_http_ok(self.url + SMALL_PATH, self.proc, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def read_notifications(self) -> list[dict[str, Any]]:
        lines = self.notifications.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------- /proc sampling


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def fd_count(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


class CpuMeter:
    """CPU seconds per role, summed over every process that ever had that role (restarts included)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[int, float]] = collections.defaultdict(dict)

    def sample(self, role: str, roots: list[int], *, tree: bool = True) -> None:
        for root in roots:
            for pid in process_tree(root) if tree else [root]:
                value = cpu_seconds(pid)
                if value is not None:
                    self._seen[role][pid] = max(value, self._seen[role].get(pid, 0.0))

    def totals(self) -> dict[str, float]:
        return {role: round(sum(pids.values()), 1) for role, pids in self._seen.items()}


@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    cpu: float


# ---------------------------------------------------------------- the soak itself


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.tokens = Tokens()
        self.media = deterministic_media(args.media_mib * MIB)
        self.standin = StandIn(tmp, self.tokens, len(self.media))
        self.gateway: Managed | None = None
        self.abuse: Managed | None = None
        self.qbt_base: Path | None = None
        self.seeder: QbtInstance | None = None
        self.leecher: QbtInstance | None = None
        self.leecher_generation = 0
        self.downloads: list[Download] = []
        self.tally = Tally(t0=time.monotonic())
        self.windows: list[Window] = []
        self.samples: list[Sample] = []
        self.cpu = CpuMeter()
        self.running = True
        self.fatal: str | None = None
        self.gateway_url = ""
        self.results: dict[str, Any] = {}

    # -- setup -----------------------------------------------------------------------------------

    async def setup(self) -> None:
        args = self.args
        require_binary(args.qbittorrent)
        log("starting the Jellyfin stand-in")
        await asyncio.to_thread(self.standin.start)
        log(f"stand-in ready at {self.standin.url}; starting two {args.qbittorrent} (gateway's + seeder)")
        self.qbt_base = new_base_dir("jtg-soak-qbt-")
        started = await asyncio.gather(
            start_qbittorrent(args.qbittorrent, self.qbt_base),
            start_qbittorrent(args.qbittorrent, self.qbt_base),
            return_exceptions=True,
        )
        ok = [q for q in started if isinstance(q, QbtInstance)]
        self.leecher, self.seeder = [*ok, None, None][:2]
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        assert self.leecher is not None
        assert self.seeder is not None
        await self.leecher.api("POST", "app/setPreferences", json=json.dumps({"queueing_enabled": False}))
        log(f"qBittorrent {self.leecher.version} ready; seeding {args.downloads} payloads")
        names = [f"Soak Test {i + 1} ({2000 + i})" for i in range(args.downloads)]
        seed_dir = self.seeder.downloads / "seed"
        hashes = await asyncio.gather(
            *(seed(self.seeder, write_payload(seed_dir, n, args.download_kib * KIB)) for n in names)
        )
        self.downloads = [Download(n, h) for n, h in zip(names, hashes, strict=True)]
        await asyncio.to_thread(self.start_gateway)
        log(f"gateway ready at {self.gateway_url}")
        await self.check_ready()

    def start_gateway(self) -> None:
        assert self.leecher is not None
        args, leecher = self.args, self.leecher
        port, dead_port = free_port(), free_port()
        env = clean_env(
            {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(port),
                "GATEWAY_WORKERS": "1",
                "JELLYFIN_URL": self.standin.url,
                "JELLYFIN_API_KEY": self.tokens.api_key,
                "QBITTORRENT_URL": leecher.url,
                "QBITTORRENT_USERNAME": leecher.username,
                "QBITTORRENT_PASSWORD": leecher.password,
                "PATH_MAP": f"/media={leecher.downloads.parent / 'library'}",
                "TRACKERS": "",
                # Nothing may leave 127.0.0.1: apibay is a port nothing listens on.
                "APIBAY_URL": f"http://127.0.0.1:{dead_port}",
                "LOG_LEVEL": "WARNING",
                "ACCESS_LOG": "false",
                "PYTHONUNBUFFERED": "1",
                **dict(kv.split("=", 1) for kv in args.gateway_env),
            }
        )
        self.gateway = Managed(
            "gateway", [sys.executable, "-m", "gateway"], log_dir=self.tmp, cwd=ROOT, env=env
        )
        self.gateway_url = f"http://127.0.0.1:{port}"
        wait_http_ok(self.gateway_url + SMALL_PATH, self.gateway, timeout=args.gateway_timeout)

    async def check_ready(self) -> None:
        """Every kind of legitimate request works once before the clock starts."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for path in ("/torrent/Test1", "/torrent/progress", "/torrent/libraries"):
                async with http.get(self.gateway_url + path, headers=self.tokens.admin_headers) as resp:
                    if resp.status != 200:
                        raise HarnessError(
                            f"{path} through the gateway -> {resp.status}: {await resp.text()}"
                        )
            url = f"{self.gateway_url}/Videos/soak/stream?static=true&api_key={self.tokens.user}"
            async with http.get(url, headers={"Range": "bytes=0-99"}) as resp:
                if resp.status != 206 or await resp.read() != self.media[:100]:
                    raise HarnessError(f"Range request through the gateway -> {resp.status}")

    # -- legitimate clients ----------------------------------------------------------------------

    async def json_load(self) -> None:
        """`--json-rps` small JSON requests per second, on a schedule (not closed-loop)."""
        kind = f"small JSON {SMALL_PATH}"
        interval = 1.0 / self.args.json_rps
        connector = aiohttp.TCPConnector(limit=64)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        in_flight: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def one() -> None:
                started = self.tally.now()
                try:
                    async with http.get(self.gateway_url + SMALL_PATH) as resp:
                        body = await resp.read()
                    if resp.status != 200 or b'"Version"' not in body:
                        self.tally.fail(kind, started, f"HTTP {resp.status}: {body[:80]!r}")
                    else:
                        self.tally.ok(kind, started)
                except CLIENT_ERRORS as exc:
                    self.tally.fail(kind, started, describe(exc))

            loop = asyncio.get_running_loop()
            next_at = loop.time()
            try:
                while True:
                    next_at += interval
                    delay = next_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -1.0:  # this process fell behind; do not burst to catch up
                        self.tally.extra["json skipped (client behind)"] += round(-delay / interval)
                        next_at = loop.time()
                    if len(in_flight) >= 256:
                        self.tally.extra["json skipped (256 in flight)"] += 1
                        continue
                    task = asyncio.create_task(one())
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            finally:
                for task in list(in_flight):
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def stream_client(self, n: int) -> None:
        """A player: `Range: bytes=N-` requests read at `--stream-mbps`, each either to the end of the
        file or abandoned part-way (a seek), every byte compared with the stand-in's media."""
        kind = "video stream (Range)"
        rng = random.Random(n)
        size = len(self.media)
        media = self.media  # slicing bytes and comparing is ~40x faster than comparing a memoryview
        rate = self.args.stream_mbps * 1e6
        url = f"{self.gateway_url}/Videos/soak{n}/stream?static=true&api_key={self.tokens.user}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT, sock_read=REQUEST_TIMEOUT)
        pos = rng.randrange(0, size, 4096)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
            while True:
                started = self.tally.now()
                want = (
                    size - pos if rng.random() < 0.5 else min(size - pos, rng.randrange(256 * KIB, 4 * MIB))
                )
                got = 0
                try:
                    async with http.get(url, headers={"Range": f"bytes={pos}-"}) as resp:
                        expected_range = f"bytes {pos}-{size - 1}/{size}"
                        if resp.status != 206 or resp.headers.get("Content-Range") != expected_range:
                            body = await resp.content.read(80)
                            raise ValueError(
                                f"HTTP {resp.status} {resp.headers.get('Content-Range')}: {body!r}"
                            )
                        t_start = time.monotonic()
                        while got < want:
                            chunk = await resp.content.read(min(STREAM_READ, want - got))
                            if not chunk:
                                raise ValueError(f"body ended after {got} of {size - pos} bytes")
                            if media[pos + got : pos + got + len(chunk)] != chunk:  # bytes == bytes: memcmp
                                raise ValueError(f"wrong bytes at offset {pos + got}")
                            got += len(chunk)
                            self.tally.extra["stream bytes verified"] += len(chunk)
                            ahead = got / rate - (time.monotonic() - t_start)
                            if ahead > 0:
                                await asyncio.sleep(ahead)
                        if got < size - pos:
                            resp.close()  # a seek: the player drops the connection mid-body
                            self.tally.extra["stream seeks (abandoned mid-body)"] += 1
                    self.tally.ok(kind)
                except CLIENT_ERRORS as exc:
                    self.tally.fail(kind, started, describe(exc))
                    await asyncio.sleep(RETRY_PAUSE)
                end = pos + got
                pos = end if 0 < end < size and rng.random() < 0.5 else rng.randrange(0, size, 4096)

    async def websocket_client(self, n: int) -> None:
        """A Jellyfin client's /socket: KeepAlive every `--ws-keepalive` s, answered by KeepAlive."""
        kind = "WebSocket /socket KeepAlive"
        interval = self.args.ws_keepalive
        url = f"{self.gateway_url}/socket?api_key={self.tokens.user}&deviceId=soak-ws-{n}"
        await asyncio.sleep(n * 0.05)
        async with aiohttp.ClientSession() as http:
            while True:
                started = self.tally.now()
                try:
                    await self._websocket_session(http, url, interval, kind)
                except CLIENT_ERRORS as exc:
                    self.tally.fail(kind, started, describe(exc))
                await asyncio.sleep(RETRY_PAUSE)

    async def _websocket_session(
        self, http: aiohttp.ClientSession, url: str, interval: float, kind: str
    ) -> None:
        ws = await http.ws_connect(
            url, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0), max_msg_size=0
        )
        self.tally.extra["websocket connects"] += 1
        pending: float | None = None  # when the unanswered KeepAlive was sent
        try:
            hello = await ws.receive(timeout=REQUEST_TIMEOUT)
            if hello.type is not aiohttp.WSMsgType.TEXT or "ForceKeepAlive" not in hello.data:
                raise ValueError(f"first message {hello.type.name} {str(hello.data)[:60]}")

            async def keepalives() -> None:
                nonlocal pending
                await asyncio.sleep(random.uniform(0, interval))
                while True:
                    if pending is not None and self.tally.now() - pending > max(interval, REQUEST_TIMEOUT):
                        await ws.close(code=1000)
                        raise TimeoutError("KeepAlive not answered")
                    await ws.send_str('{"MessageType":"KeepAlive"}')
                    if pending is None:
                        pending = self.tally.now()
                    await asyncio.sleep(interval)

            sender = asyncio.create_task(keepalives())
            try:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT and '"KeepAlive"' in msg.data:
                        if pending is not None:
                            self.tally.ok(kind, pending)
                            pending = None
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        raise ValueError(f"WebSocket error: {ws.exception()}")
                if sender.done() and sender.exception() is not None:
                    raise sender.exception()  # type: ignore[misc]
                raise ValueError(f"closed by the gateway with {ws.close_code}")
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, *CLIENT_ERRORS):
                    await sender
        finally:
            if not ws.closed:
                await ws.close(code=1000)

    async def admin_client(self) -> None:
        """The admin pages' calls, round robin: Test1, progress, libraries."""
        paths = ["/torrent/Test1", "/torrent/progress", "/torrent/libraries"]
        interval = 1.0 / self.args.admin_rps
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for i in range(1 << 62):
                path = paths[i % len(paths)]
                kind = f"admin GET {path}"
                started = self.tally.now()
                try:
                    async with http.get(self.gateway_url + path, headers=self.tokens.admin_headers) as resp:
                        body = await resp.read()
                    if resp.status != 200:
                        self.tally.fail(kind, started, f"HTTP {resp.status}: {body[:100]!r}")
                    else:
                        json.loads(body)
                        self.tally.ok(kind, started)
                except CLIENT_ERRORS as exc:
                    self.tally.fail(kind, started, describe(exc))
                await asyncio.sleep(interval)

    async def sse_client(self) -> None:
        """One admin page open on the downloads: /torrent/events, reconnecting like a browser."""
        kind = "SSE /torrent/events"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT, sock_read=45)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                started = self.tally.now()
                try:
                    url = self.gateway_url + "/torrent/events"
                    async with http.get(url, headers=self.tokens.admin_headers) as resp:
                        if resp.status != 200:
                            raise ValueError(f"HTTP {resp.status}: {(await resp.read())[:100]!r}")
                        self.tally.extra["sse connects"] += 1
                        async for line in resp.content:
                            if line.startswith(b"event:"):
                                self.tally.ok(kind)  # one event received
                                self.tally.extra[f"sse {line[6:].strip().decode()} events"] += 1
                            elif line.startswith(b":"):
                                self.tally.extra["sse keep-alives"] += 1
                    raise ValueError("event stream ended")
                except CLIENT_ERRORS as exc:
                    self.tally.fail(kind, started, describe(exc))
                await asyncio.sleep(2.0)  # the stream's `retry: 2000`

    # -- downloads ---------------------------------------------------------------------------------

    async def downloads_client(self) -> None:
        """Add each download through the gateway at its time (spread over the first 3/4 of the run)."""
        kind = "admin POST /torrent/download"
        count = len(self.downloads)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for i, download in enumerate(self.downloads):
                await self.sleep_until(self.args.duration * 0.75 * (i + 0.5) / count)
                body = {"Info_hash": download.info_hash.upper(), "Name": download.name, "Library": LIBRARY}
                while download.added_at is None:
                    started = self.tally.now()
                    try:
                        url = self.gateway_url + "/torrent/download"
                        async with http.post(url, headers=self.tokens.admin_headers, json=body) as resp:
                            answer = await resp.read()
                        if resp.status != 200:
                            raise ValueError(f"HTTP {resp.status}: {answer[:120]!r}")
                        self.tally.ok(kind, started)
                        download.added_at = self.tally.now()
                    except CLIENT_ERRORS as exc:
                        self.tally.fail(kind, started, describe(exc))
                        await asyncio.sleep(2.0)
                await self.introduce_peer(download)

    async def introduce_peer(self, download: Download) -> None:
        """Point the gateway's qBittorrent at the seeder (no tracker, no DHT on loopback)."""
        assert self.leecher is not None
        assert self.seeder is not None
        for _ in range(30):
            try:
                await add_peer(self.leecher, download.info_hash, self.seeder.torrent_port)
                return
            except (QbtError, *CLIENT_ERRORS) as exc:
                self.tally.extra["harness: addPeers retried"] += 1
                log(f"addPeers for {download.name} failed ({describe(exc)}); retrying")
                await asyncio.sleep(1.0)

    async def completion_monitor(self) -> None:
        """Note when each download is complete in qBittorrent (asked directly, not through the gateway)."""
        assert self.leecher is not None
        generation = self.leecher_generation
        while True:
            await asyncio.sleep(0.5)
            try:
                torrents = {t["hash"]: t for t in await self.leecher.torrents()}
            except (QbtError, *CLIENT_ERRORS):
                continue  # restarting
            restarted, generation = generation != self.leecher_generation, self.leecher_generation
            for download in self.downloads:
                torrent = torrents.get(download.info_hash)
                if torrent is None or download.completed_at is not None:
                    continue
                if torrent.get("progress") == 1:
                    download.completed_at = self.tally.now()
                    download.completed_wall = time.time()
                    log(f"download complete: {download.name}")
                elif restarted:  # a restarted qBittorrent forgot the peer it was given
                    asyncio.create_task(self.introduce_peer(download))  # noqa: RUF006 - short, bounded

    # -- restarts ----------------------------------------------------------------------------------

    async def restarts(self) -> None:
        if self.args.no_restarts:
            return
        assert self.leecher is not None
        await self.sleep_until(self.args.duration / 3)
        log("restarting qBittorrent (the gateway's)")
        start = self.tally.now()
        await self.leecher.restart()
        self.leecher_generation += 1
        await self.leecher.api("POST", "app/setPreferences", json=json.dumps({"queueing_enabled": False}))
        self.windows.append(Window("qBittorrent restart", round(start, 2), round(self.tally.now(), 2)))
        log(f"qBittorrent back after {self.tally.now() - start:.1f} s")

        await self.sleep_until(self.args.duration * 2 / 3)
        log("restarting the Jellyfin stand-in")
        start = self.tally.now()
        await asyncio.to_thread(self.standin.stop)
        await asyncio.sleep(self.args.down)
        await asyncio.to_thread(self.standin.start)
        note = f"down {self.args.down:g} s on purpose"
        self.windows.append(
            Window("Jellyfin stand-in restart", round(start, 2), round(self.tally.now(), 2), note)
        )
        log(f"stand-in back after {self.tally.now() - start:.1f} s")

    # -- sampling ----------------------------------------------------------------------------------

    def sample(self) -> Sample:
        assert self.gateway is not None
        pids = process_tree(self.gateway.pid)
        cpu = sum(c for c in map(cpu_seconds, pids) if c is not None)
        sample = Sample(round(self.tally.now(), 2), rss_bytes(pids), fd_count(pids), round(cpu, 2))
        self.cpu.sample("gateway", [self.gateway.pid])
        self.cpu.sample("Jellyfin stand-in", [p for p in self.standin.pids if p])
        qbts = [q.process.pid for q in (self.leecher, self.seeder) if q is not None and q.process is not None]
        self.cpu.sample("qBittorrent x2", qbts)
        if self.abuse is not None:
            self.cpu.sample("abusive clients", [self.abuse.pid])
        self.cpu.sample("legitimate clients (this process)", [os.getpid()], tree=False)
        return sample

    async def sampler(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.gateway is not None and not self.gateway.alive():
                self.fatal = f"the gateway exited with {self.gateway.proc.returncode} during the soak"
                log(self.fatal)
                return
            await asyncio.sleep(1.0)

    # -- run ---------------------------------------------------------------------------------------

    async def sleep_until(self, t: float) -> None:
        delay = t - self.tally.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def start_abuse(self) -> None:
        args = self.args
        port = self.gateway_url.rsplit(":", 1)[1]
        argv = [
            sys.executable,
            str(HERE / "soak_abuse.py"),
            f"--port={port}",
            f"--stats={self.tmp / 'abuse.json'}",
            f"--max-seconds={args.duration + 30}",
            f"--nice={args.abuse_nice}",
            f"--half-open={args.half_open}",
            f"--header-bytes={args.header_kib * KIB}",
            f"--header-fields={args.header_fields}",
            f"--flood={args.flood}",
            f"--flood-token={self.tokens.user}",
            f"--flood-mbps={args.flood_mbps}",
        ]
        self.abuse = Managed("abuse", argv, log_dir=self.tmp, cwd=ROOT)

    async def run(self) -> None:
        args = self.args
        await self.setup()
        await asyncio.sleep(1.0)
        rss_start = self.sample()
        log(f"gateway RSS at start {rss_start.rss / MIB:.1f} MiB; load for {args.duration:g} s")
        self.tally = Tally(t0=time.monotonic())
        self.start_abuse()
        load: list[asyncio.Task[None]] = [
            asyncio.create_task(self.json_load()),
            asyncio.create_task(self.admin_client()),
            asyncio.create_task(self.sse_client()),
            *(asyncio.create_task(self.stream_client(n)) for n in range(args.streams)),
            *(asyncio.create_task(self.websocket_client(n)) for n in range(args.websockets)),
        ]
        adding = asyncio.create_task(self.downloads_client())
        monitor = asyncio.create_task(self.completion_monitor())
        restarts = asyncio.create_task(self.restarts())
        sampler = asyncio.create_task(self.sampler())
        progress = asyncio.create_task(self.progress_log())
        try:
            await asyncio.wait(
                {sampler, restarts}, timeout=args.duration, return_when=asyncio.FIRST_EXCEPTION
            )
            await asyncio.wait({sampler}, timeout=max(0.0, args.duration - self.tally.now()))
            if restarts.done() and restarts.exception() is not None:
                raise HarnessError(f"restart failed: {describe(restarts.exception())}")  # type: ignore[arg-type]
            if not restarts.done():
                log("waiting for the restart in progress to finish")
                await asyncio.wait_for(restarts, 60)
            load_end = self.tally.now()
            rss_loaded = self.sample()
            log("load done; stopping the clients")
            for task in [*load, adding, progress]:
                task.cancel()
            await asyncio.gather(*load, adding, progress, return_exceptions=True)
            if self.abuse is not None:
                await asyncio.to_thread(self.abuse.stop)
            drained = await self.drain_notifications() if self.fatal is None else 0.0
            await asyncio.sleep(2.0)
            rss_end = self.sample()
        finally:
            for task in (monitor, sampler, restarts, adding, progress, *load):
                task.cancel()
            await asyncio.gather(monitor, sampler, restarts, adding, progress, *load, return_exceptions=True)
        self.results = self.collect(rss_start, rss_loaded, rss_end, load_end, drained)

    async def progress_log(self) -> None:
        while True:
            await asyncio.sleep(max(10.0, self.args.duration / 10))
            failures = len(self.tally.failures)
            served = sum(self.tally.served.values())
            rss = self.samples[-1].rss / MIB if self.samples else 0
            log(f"t={self.tally.now():.0f} s: {served} served, {failures} errors, gateway RSS {rss:.1f} MiB")

    def expected_path(self, download: Download) -> str:
        return f"{LIBRARY_JELLYFIN_PATH}/{download.name}"

    async def drain_notifications(self) -> float:
        """Wait (bounded) until every completed download was announced, then a little more for
        duplicates; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + self.args.drain
        while time.monotonic() < deadline:
            paths = {n.get("path") for n in self.standin.read_notifications()}
            added = [d for d in self.downloads if d.added_at is not None]
            done = [d for d in added if d.completed_at is not None]
            if len(done) == len(added) and all(self.expected_path(d) in paths for d in done):
                break
            await asyncio.sleep(0.5)
        waited = time.monotonic() - started
        log(f"notifications settled after {waited:.1f} s; watching 3 s more for duplicates")
        await asyncio.sleep(3.0)
        return round(time.monotonic() - started, 1)

    # -- results -----------------------------------------------------------------------------------

    def inside(self, failure: Failure) -> bool:
        """A failure is the restart's fault if it was seen, or its request started, in a window
        (or up to --grace seconds after one)."""
        grace = self.args.grace
        return any(
            w.start <= failure.end <= w.end + grace or w.start <= failure.start <= w.end + grace
            for w in self.windows
        )

    def collect(
        self, start: Sample, loaded: Sample, end: Sample, load_end: float, drained: float
    ) -> dict[str, Any]:
        kinds: dict[str, dict[str, Any]] = {}
        names = list(self.tally.served) + [f.kind for f in self.tally.failures]
        for kind in dict.fromkeys(sorted(names)):
            failures = [f for f in self.tally.failures if f.kind == kind]
            inside = [f for f in failures if self.inside(f)]
            outside = [f for f in failures if not self.inside(f)]
            lat = self.tally.latencies.get(kind, [])
            kinds[kind] = {
                "served": self.tally.served[kind],
                "errors_inside_windows": len(inside),
                "errors_outside_windows": len(outside),
                "p50_ms": round(percentile(lat, 50) * 1000, 1) if lat else None,
                "p99_ms": round(percentile(lat, 99) * 1000, 1) if lat else None,
                "outside_samples": [asdict(f) for f in outside[:10]],
                "inside_samples": [asdict(f) for f in inside[:3]],
            }
        notifications = self.standin.read_notifications()
        per_path = collections.Counter(n.get("path") for n in notifications)
        downloads = []
        for d in self.downloads:
            path = self.expected_path(d)
            told = [n["t"] for n in notifications if n.get("path") == path]
            latency = min(told) - d.completed_wall if told and d.completed_wall else None
            downloads.append(
                {
                    **asdict(d),
                    "jellyfin_path": path,
                    "notifications": per_path[path],
                    "notify_after_complete_s": round(latency, 2) if latency is not None else None,
                }
            )
        completed = [d for d in downloads if d["completed_at"] is not None]
        abuse = (
            json.loads((self.tmp / "abuse.json").read_text()) if (self.tmp / "abuse.json").exists() else {}
        )
        peak = max(self.samples, key=lambda s: s.rss) if self.samples else end
        return {
            "duration": self.args.duration,
            "load_seconds": round(load_end, 1),
            "drain_seconds": drained,
            "fatal": self.fatal,
            "windows": [asdict(w) for w in self.windows],
            "grace": self.args.grace,
            "kinds": kinds,
            "extra": dict(self.tally.extra),
            "downloads": downloads,
            "notifications": {
                "total": len(notifications),
                "media_updated": sum(1 for n in notifications if n.get("call") == "/Library/Media/Updated"),
                "refresh": sum(1 for n in notifications if n.get("call") == "/Library/Refresh"),
                "added": sum(1 for d in downloads if d["added_at"] is not None),
                "completed": len(completed),
                "announced_once": sum(1 for d in completed if d["notifications"] == 1),
                "duplicates": sum(max(0, d["notifications"] - 1) for d in downloads),
                "missing": sum(1 for d in completed if d["notifications"] == 0),
                "unexpected": sum(
                    c for p, c in per_path.items() if p not in {d["jellyfin_path"] for d in downloads}
                ),
            },
            "gateway": {
                "rss_start": start.rss,
                "rss_peak": peak.rss,
                "rss_peak_at": peak.t,
                "rss_end_loaded": loaded.rss,
                "rss_end": end.rss,
                "fds_start": start.fds,
                "fds_peak": max((s.fds for s in self.samples), default=end.fds),
                "fds_end": end.fds,
                "cpu_seconds_during_load": round(loaded.cpu - start.cpu, 1),
            },
            "cpu_seconds": self.cpu.totals(),
            "abuse": abuse,
            "samples": [asdict(s) for s in self.samples],
        }


# ---------------------------------------------------------------- report


def mib(value: float) -> str:
    return f"{value / MIB:.1f} MiB"


def goals(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    outside = sum(k["errors_outside_windows"] for k in results["kinds"].values())
    n = results["notifications"]
    once = n["completed"] > 0 and n["announced_once"] == n["completed"] == n["added"] and not n["duplicates"]
    return [
        ("legitimate errors outside restart windows: 0", outside == 0, f"{outside}"),
        (
            "one Jellyfin notification per completed download",
            once and n["unexpected"] == 0,
            f"{n['total']} notifications for {n['completed']} completed of {n['added']} added",
        ),
        ("the gateway stayed up", results["fatal"] is None, results["fatal"] or "yes"),
    ]


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "none"


def report(results: dict[str, Any], header: str) -> str:
    grace = results["grace"]
    out = [header, "", f"restart windows (an error counts as inside up to {grace:g} s after one):"]
    for w in results["windows"] or [{"name": "none", "start": 0, "end": 0, "note": ""}]:
        span = f"{w['start']:7.1f} s → {w['end']:7.1f} s  ({w['end'] - w['start']:.1f} s)"
        out.append(f"  {w['name']:<28}{span}  {w['note']}".rstrip())
    out.append("")
    head = f"  {'legitimate traffic':<36}{'served':>9}{'err in win':>12}{'err outside':>13}   p50 / p99"
    out += [head, "  " + "-" * (len(head) - 2)]
    total = [0, 0, 0]
    for kind, k in results["kinds"].items():
        lat = f"{k['p50_ms']:.1f} / {k['p99_ms']:.1f} ms" if k["p50_ms"] is not None else ""
        row = k["served"], k["errors_inside_windows"], k["errors_outside_windows"]
        total = [a + b for a, b in zip(total, row, strict=True)]
        out.append(f"  {kind:<36}{row[0]:>9}{row[1]:>12}{row[2]:>13}   {lat}")
    out.append(f"  {'total':<36}{total[0]:>9}{total[1]:>12}{total[2]:>13}")
    for key, value in sorted(results["extra"].items()):
        out.append(f"    {key}: " + (f"{value / MIB:.0f} MiB" if "bytes" in key else f"{value}"))
    for kind, k in results["kinds"].items():
        for f in k["outside_samples"][:3]:
            out.append(f"  outside a window: {kind} at {f['start']:.1f}-{f['end']:.1f} s: {f['what']}")
    out.append("")

    n = results["notifications"]
    out.append(
        f"downloads: {n['added']} added through the gateway, {n['completed']} completed in qBittorrent"
    )
    out.append(
        f"  Jellyfin told {n['total']} times ({n['media_updated']} /Library/Media/Updated, "
        f"{n['refresh']} /Library/Refresh): exactly once {n['announced_once']}, "
        f"duplicates {n['duplicates']}, missing {n['missing']}, unexpected {n['unexpected']}"
    )
    delays = [d["notify_after_complete_s"] for d in results["downloads"]]
    delays = [d for d in delays if d is not None]
    if delays:
        out.append(
            f"  told after qBittorrent showed it complete: median {statistics.median(delays):.1f} s, "
            f"max {max(delays):.1f} s"
        )
    g = results["gateway"]
    cpu, load = g["cpu_seconds_during_load"], max(1.0, results["load_seconds"])
    out.append(
        f"gateway RSS (process tree): start {mib(g['rss_start'])}, peak {mib(g['rss_peak'])} "
        f"(at {g['rss_peak_at']:.0f} s), end of load {mib(g['rss_end_loaded'])}, "
        f"after {mib(g['rss_end'])}"
    )
    out.append(
        f"  open fds start {g['fds_start']}, peak {g['fds_peak']}, after {g['fds_end']}; "
        f"CPU {cpu:.0f} s during the load ({100 * cpu / load:.0f} % of one core)"
    )
    out.append("CPU seconds: " + ", ".join(f"{k} {v:g}" for k, v in results["cpu_seconds"].items()))
    abuse = results["abuse"]
    if abuse:
        h, f = abuse["half_open"], abuse["flood"]
        life = h["lifetimes"]
        out.append(
            f"abuse, half-open heads: {h['slots']} slots, {h['header_bytes'] // KIB} KiB in "
            f"{h['header_fields']} fields each, never finished"
        )
        out.append(
            f"  opened {h['opened']}, closed by the gateway {h['closed_by_server']} "
            f"(its answer first: {_counts(h['answers'])}), reset {h['reset_by_server']}, "
            f"still open at the end {h['closed_at_end']}, connect failures {h['connect_failed']}"
        )
        if life:
            out.append(
                f"  held open before the gateway closed them: median {statistics.median(life):.1f} s, max "
                f"{max(life):.1f} s"
            )
        out.append(
            f"abuse, WebSocket flood: {f['clients']} client(s), {f['connects']} connections, "
            f"{f['messages_sent']} messages ({f['fragmented_sent']} fragmented, "
            f"{f['oversized_started']} oversized started)"
        )
        out.append(
            f"  {f['bytes_sent'] / 1e6:.0f} MB sent, {f['bytes_received'] / 1e6:.0f} MB came back; "
            f"ended by: {_counts(f['endings'])}; upgrades refused: {_counts(f['handshake_refused'])}"
        )
    out += ["", "goals:"]
    for name, met, detail in goals(results):
        out.append(f"  {'met    ' if met else 'NOT MET'}  {name} ({detail})")
    return "\n".join(out)


# ---------------------------------------------------------------- main


def versions(qbt: str) -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "qbittorrent": qbt,
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jtg-soak-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def main_async(soak: Soak) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    budget = SETUP_BUDGET + soak.args.duration + soak.args.drain + 120
    try:
        async with asyncio.timeout(budget):
            await soak.run()
    except TimeoutError:
        raise HarnessError(f"the soak did not finish within {budget:.0f} s") from None
    finally:
        await stop_qbittorrent(soak)


async def stop_qbittorrent(soak: Soak) -> None:
    for qbt in (soak.leecher, soak.seeder):
        if qbt is not None:
            with contextlib.suppress(Exception):
                await qbt.stop()


def cleanup(soak: Soak) -> None:
    """Stop every process started (each by its own process group), bounded; nothing by name."""
    for proc in (soak.abuse, soak.gateway, soak.standin.proc):
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stop(grace=10)
    if soak.qbt_base is not None:
        shutil.rmtree(soak.qbt_base, ignore_errors=True)


def keep_logs(soak: Soak, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in [*soak.tmp.glob("*.log"), soak.standin.notifications, soak.tmp / "abuse.json"]:
        if path.exists():
            shutil.copy2(path, dest / path.name)
    for qbt in (soak.leecher, soak.seeder):
        if qbt is not None and qbt.log_path.exists():
            shutil.copy2(qbt.log_path, dest / f"qbittorrent-{qbt.port}.log")


_LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+)\[\d+\]: (?P<message>.*)$")
_TARGET = re.compile(r"\b(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) /\S*")
_NUMBER = re.compile(r"(?<![\w.])(?:[0-9a-f]{32,}|\d{4,})(?![\w.])")


def gateway_log_summary(soak: Soak) -> str:
    if soak.gateway is None:
        return ""
    try:
        lines = soak.gateway.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    levels = collections.Counter(
        level for line in lines for level in ("WARNING", "ERROR", "CRITICAL") if f" {level} " in line
    )
    tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
    text = ", ".join(f"{k} {v}" for k, v in levels.items()) or "no warnings"
    # The most frequent messages, with request targets and numbers folded together.
    shapes: collections.Counter[str] = collections.Counter()
    for line in lines:
        match = _LOG_LINE.match(line)
        if match:
            message = _TARGET.sub(r"\1 …", match["message"])
            shapes[f"{match['level']} {match['logger']}: {_NUMBER.sub('N', message)[:100]}"] += 1
    top = "".join(f"\n  {count:>6} x {shape}" for shape, count in shapes.most_common(6))
    return f"gateway log: {len(lines)} lines ({text}; tracebacks {tracebacks}){top}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with temp_dir() as tmp:
        soak = Soak(args, tmp)
        error: str | None = None
        try:
            asyncio.run(main_async(soak))
        except (HarnessError, QbtError, OSError, aiohttp.ClientError) as exc:
            error = describe(exc) + ("\n" + str(exc) if "\n" in str(exc) else "")
        except (KeyboardInterrupt, asyncio.CancelledError):
            error = "interrupted"
        finally:
            summary = gateway_log_summary(soak)
            if args.keep_logs is not None:
                keep_logs(soak, args.keep_logs)
            cleanup(soak)
        if error is not None or not soak.results:
            print(f"soak: {error or 'no results'}; every process started was stopped", file=sys.stderr)
            if soak.gateway is not None and error != "interrupted":
                print(f"--- gateway log tail ---\n{soak.gateway.log_tail()}", file=sys.stderr)
            return 130 if error == "interrupted" else 1
    results = soak.results
    qbt = soak.leecher.version if soak.leecher is not None else "?"
    header = (
        f"jellyfin-torrent-gateway soak: {args.duration:g} s of load on loopback, {os.cpu_count()} CPUs; "
        f"one gateway process (python -m gateway),\nthe Jellyfin stand-in and qBittorrent {qbt}. "
        f"Legitimate: {args.streams} Range streams at {args.stream_mbps:g} MB/s, "
        f"{args.websockets} WebSockets,\n{args.json_rps:g} small JSON req/s, "
        f"{args.admin_rps:g} admin calls/s, 1 SSE listener, {args.downloads} downloads. "
        f"Abusive: {args.half_open} half-open heads, "
        f"{args.flood} WebSocket flood client(s)."
    )
    print()
    print(report(results, header))
    if summary:
        print(summary)
    results["goals"] = [{"goal": g, "met": m, "detail": d} for g, m, d in goals(results)]
    results["versions"] = versions(qbt)
    results["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results["gateway_log"] = summary
    results["seconds"] = round(time.monotonic() - started, 1)
    if not args.no_json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"raw results: {args.json} ({results['seconds']} s in all)")
    if args.strict and not all(m for _, m, _ in goals(results)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
