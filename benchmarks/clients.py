"""Load generators: wrk (small requests), parallel curl (streaming), aiohttp (WebSocket echo).

Each returns plain numbers; none of them judge the result.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from procs import HarnessError, clean_env

# ---------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    errors: int  # socket errors (connect + read + write + timeout)
    non_2xx: int


_WRK_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}
_WRK_PCT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_REQS = re.compile(r"^\s*(\d+) requests in ", re.M)
_WRK_SOCK = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output (wrk 4.x)."""
    pct = {m[1]: float(m[2]) * _WRK_UNITS_US[m[3]] for m in _WRK_PCT.finditer(text)}
    rps = _WRK_RPS.search(text)
    reqs = _WRK_REQS.search(text)
    if rps is None or reqs is None or "50" not in pct or "99" not in pct:
        raise HarnessError(f"cannot parse wrk output:\n{text}")
    sock = _WRK_SOCK.search(text)
    non2xx = _WRK_NON2XX.search(text)
    return WrkResult(
        rps=float(rps[1]),
        p50_us=pct["50"],
        p99_us=pct["99"],
        requests=int(reqs[1]),
        errors=sum(int(g) for g in sock.groups()) if sock else 0,
        non_2xx=int(non2xx[1]) if non2xx else 0,
    )


def run_wrk(
    url: str, *, threads: int, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> WrkResult:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, env=clean_env(), check=False
    )
    if proc.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
    return parse_wrk(proc.stdout)


# ---------------------------------------------------------------- streaming


@dataclass(frozen=True)
class StreamResult:
    streams: int
    bytes_total: int
    bytes_expected: int
    seconds: float
    failed: int  # streams that ended short, with a non-200 status, or timed out

    @property
    def mb_per_s(self) -> float:
        return self.bytes_total / self.seconds / 1e6


def stream_parallel(url: str, *, streams: int, size: int, timeout: float) -> StreamResult:
    """`streams` concurrent curl downloads of `url` to /dev/null; aggregate bytes / wall time.

    curl (C, one process per stream, spread over both cores by the kernel) keeps the client cheap
    compared with the proxies measured; the "direct" column shows the ceiling it allows.
    """
    argv = [
        "curl",
        "--silent",
        "--noproxy",
        "*",
        "--output",
        "/dev/null",
        "--max-time",
        str(round(timeout)),
        "--write-out",
        "%{size_download} %{http_code}",
        url,
    ]
    env = clean_env()
    procs: list[subprocess.Popen[str]] = []
    start = time.perf_counter()
    try:
        for _ in range(streams):
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            )
        outputs = [p.communicate(timeout=timeout + 15)[0] for p in procs]
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    total = failed = 0
    for out in outputs:
        got, _, code = out.strip().partition(" ")
        received = int(got) if got.isdigit() else 0
        total += received
        failed += received != size or code != "200"
    return StreamResult(streams, total, streams * size, elapsed, failed)


def require_tools(names: Sequence[str]) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise HarnessError(f"missing tools: {', '.join(missing)} (apt-get install -y nginx-light wrk curl)")


# ---------------------------------------------------------------- WebSocket


@dataclass(frozen=True)
class WsResult:
    round_trips: int
    p50_us: float
    p99_us: float


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def _ws_round_trips(url: str, count: int, warmup: int, size: int) -> list[float]:
    timings: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        for i in range(warmup + count):
            # A counter in front of the padding proves each reply is the echo of this message.
            payload = f"{i:08d}".ljust(size, "x")
            t0 = time.perf_counter_ns()
            await ws.send_str(payload)
            msg = await ws.receive(timeout=5)
            t1 = time.perf_counter_ns()
            if msg.type != aiohttp.WSMsgType.TEXT or msg.data != payload:
                raise HarnessError(f"WebSocket echo via {url} broke: {msg.type} {msg.data!r:.60}")
            if i >= warmup:
                timings.append((t1 - t0) / 1000)
    return timings


def ws_echo(url: str, *, count: int, warmup: int = 100, size: int = 100) -> WsResult:
    """Sequential text round trips on one connection; p50/p99 in microseconds."""
    timings = asyncio.run(asyncio.wait_for(_ws_round_trips(url, count, warmup, size), 120))
    return WsResult(len(timings), percentile(timings, 50), percentile(timings, 99))
