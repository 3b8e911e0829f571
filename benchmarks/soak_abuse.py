"""Abusive clients for the soak, in a process of their own (so they cannot starve the legitimate ones).

    python benchmarks/soak_abuse.py --port P --stats FILE [--half-open 200] [--flood 1 --flood-token T]

- half-open: N anonymous connections, each sends a request line and about 30 KiB of header fields
  without the blank line that ends the head, then stalls until the server closes it; then reconnects
  (after --reconnect-delay, so a server that refuses at once is not hammered in a tight loop).
- WebSocket flood: a logged-in client on /socket sending large binary messages, fragmented messages
  and, every few messages, one fragmented message larger than any sane cap, as fast as the server
  takes them (frames are masked with the all-zero key: valid, and free to compute). It reads and
  discards what comes back, answers a close with a close, and reconnects after --reconnect-delay.

Counters go to FILE as JSON every 2 s and at exit (SIGTERM/SIGINT, or --max-seconds). Nothing here
judges the gateway; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
KIB = 1024
MIB = 1024 * KIB
READ_CHUNK = 256 * KIB
KEEP_DURATIONS = 5000  # connection durations kept for the report (the counters count them all)
HANDSHAKE_TIMEOUT = 10.0
# WebSocket opcodes (RFC 6455).
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class HalfOpenStats:
    slots: int = 0
    header_bytes: int = 0
    header_fields: int = 0
    opened: int = 0
    connect_failed: int = 0
    closed_by_server: int = 0
    reset_by_server: int = 0
    open_now: int = 0
    max_open: int = 0
    closed_at_end: int = 0
    bytes_sent: int = 0
    # Status line the server sent before closing ("431", "408", ...) or "none".
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    lifetimes: list[float] = field(default_factory=list)  # seconds from connect to server close


@dataclass
class FloodStats:
    clients: int = 0
    connects: int = 0
    handshake_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    connect_failed: int = 0
    messages_sent: int = 0
    fragmented_sent: int = 0
    oversized_started: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    # Close code the server sent ("1009", ...), "no close frame" when the connection just ended,
    # "ours" when we closed it at the end of the run.
    endings: collections.Counter[str] = field(default_factory=collections.Counter)
    connection_seconds: list[float] = field(default_factory=list)


@dataclass
class Stats:
    half_open: HalfOpenStats = field(default_factory=HalfOpenStats)
    flood: FloodStats = field(default_factory=FloodStats)
    started: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        def plain(obj: Any) -> Any:
            return {k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in vars(obj).items()}

        return {
            "half_open": plain(self.half_open),
            "flood": plain(self.flood),
            "seconds": round(time.time() - self.started, 1),
        }


def write_stats(stats: Stats, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats.as_json()))
    tmp.replace(path)


def _keep(values: list[float], value: float) -> None:
    if len(values) < KEEP_DURATIONS:
        values.append(round(value, 3))


# ---------------------------------------------------------------- half-open request heads


def partial_head(port: int, total: int, fields: int) -> bytes:
    """A request line and `fields` header fields of about `total` bytes in all, without the end."""
    head = f"GET /System/Info/Public HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: soak-half-open\r\n"
    per_field = max(16, (total - len(head)) // max(1, fields))
    lines = []
    for i in range(fields):
        name = f"X-Soak-Pad-{i:03d}: "
        lines.append(name + "a" * max(1, per_field - len(name) - 2) + "\r\n")
    return (head + "".join(lines)).encode()


async def half_open_slot(port: int, head: bytes, stats: HalfOpenStats, delay: float) -> None:
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            stats.connect_failed += 1
            await asyncio.sleep(delay)
            continue
        opened = time.monotonic()
        stats.opened += 1
        stats.open_now += 1
        stats.max_open = max(stats.max_open, stats.open_now)
        try:
            writer.write(head)
            await writer.drain()
            stats.bytes_sent += len(head)
            first = await reader.read(4096)  # stalls here until the server answers or closes
            answer = "none"
            if first.startswith(b"HTTP/"):
                parts = first.split(b" ", 2)
                answer = parts[1].decode(errors="replace") if len(parts) > 1 else "?"
            while first:  # drain up to the close (bounded by what a refusal carries)
                first = await reader.read(65536)
            stats.answers[answer] += 1
            stats.closed_by_server += 1
            _keep(stats.lifetimes, time.monotonic() - opened)
        except (ConnectionResetError, BrokenPipeError):
            stats.reset_by_server += 1
            _keep(stats.lifetimes, time.monotonic() - opened)
        except asyncio.CancelledError:
            stats.closed_at_end += 1
            raise
        except OSError:
            stats.reset_by_server += 1
        finally:
            stats.open_now -= 1
            writer.close()
        await asyncio.sleep(delay)


# ---------------------------------------------------------------- WebSocket flood


def frame(opcode: int, payload: bytes | memoryview, *, fin: bool = True) -> bytes:
    """A client frame, masked with the zero key (payload bytes unchanged)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + b"\0\0\0\0" + bytes(payload)


@dataclass(frozen=True)
class FloodPlan:
    large: int
    fragmented: int
    fragment: int
    oversized: int
    oversized_every: int
    rate: float  # bytes/s, 0 = as fast as possible


class _Closed(Exception):
    def __init__(self, ending: str) -> None:
        super().__init__(ending)
        self.ending = ending


async def _ws_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, token: str
) -> str:
    """Send the upgrade; return "101" on success, else the status (or the failure) seen."""
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /socket?api_key={token}&deviceId=soak-flood HTTP/1.1\r\n"
            f"Host: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANDSHAKE_TIMEOUT)
    parts = head.split(b" ", 2)
    return parts[1].decode(errors="replace") if len(parts) > 1 else "?"


async def _ws_reader(reader: asyncio.StreamReader, stats: FloodStats) -> str:
    """Read and discard server frames; return the close code (as text) or "no close frame"."""
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await reader.readexactly(8))
            if b1 & 0x80:
                await reader.readexactly(4)  # a server must not mask, but skip the key if it does
            opcode = b0 & 0x0F
            if opcode == OP_CLOSE:
                payload = await reader.readexactly(n)
                stats.bytes_received += 2 + n
                return str(struct.unpack("!H", payload[:2])[0]) if n >= 2 else "1005"
            left = n
            while left:
                chunk = await reader.read(min(left, READ_CHUNK))
                if not chunk:
                    return "no close frame"
                left -= len(chunk)
            stats.bytes_received += 2 + n
    except (asyncio.IncompleteReadError, OSError):
        return "no close frame"


async def _ws_writer(writer: asyncio.StreamWriter, plan: FloodPlan, stats: FloodStats) -> None:
    large = frame(OP_BINARY, bytes(plan.large))
    piece = bytes(plan.fragment)
    first, middle, last = (
        frame(OP_BINARY, piece, fin=False),
        frame(OP_CONT, piece, fin=False),
        frame(OP_CONT, piece),
    )
    started = time.monotonic()
    sent = 0
    i = 0
    while True:
        i += 1
        if plan.oversized_every and i % plan.oversized_every == 0:
            total, stats.oversized_started = plan.oversized, stats.oversized_started + 1
        elif i % 2:
            total = 0  # one large single-frame message
        else:
            total = plan.fragmented
        if total == 0:
            writer.write(large)
            sent += len(large)
            stats.frames_sent += 1
            stats.bytes_sent += len(large)
            await writer.drain()
        else:
            count = max(2, -(-total // plan.fragment))  # at least a first and a last fragment
            for n in range(count):
                data = last if n == count - 1 else first if n == 0 else middle
                writer.write(data)
                sent += len(data)
                stats.frames_sent += 1
                stats.bytes_sent += len(data)
                await writer.drain()
                if plan.rate:
                    await asyncio.sleep(max(0.0, sent / plan.rate - (time.monotonic() - started)))
            stats.fragmented_sent += 1
        stats.messages_sent += 1
        if plan.rate:
            await asyncio.sleep(max(0.0, sent / plan.rate - (time.monotonic() - started)))
        else:
            await asyncio.sleep(0)  # let the reader run


async def _flood_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    port: int,
    token: str,
    plan: FloodPlan,
    stats: FloodStats,
) -> str | None:
    """One flooding connection, from the upgrade to its end; returns how it ended (None: no upgrade)."""
    try:
        status = await _ws_handshake(reader, writer, port, token)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        stats.handshake_refused[type(exc).__name__] += 1
        return None
    if status != "101":
        stats.handshake_refused[status] += 1
        return None
    stats.connects += 1
    read_task = asyncio.create_task(_ws_reader(reader, stats))
    write_task = asyncio.create_task(_ws_writer(writer, plan, stats))
    try:
        await asyncio.wait({read_task, write_task}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        stats.endings["ours"] += 1
        raise
    finally:
        write_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await write_task
        if not read_task.done():
            read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await read_task
    # The writer failing first (reset, broken pipe) means the server dropped us without a close.
    ending = "no close frame" if read_task.cancelled() else read_task.result()
    if ending.isdigit():  # answer the server's close, as a client must
        with contextlib.suppress(OSError):
            writer.write(frame(OP_CLOSE, struct.pack("!H", int(ending))))
            await writer.drain()
    return ending


async def flood_client(port: int, token: str, plan: FloodPlan, stats: FloodStats, delay: float) -> None:
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, port, limit=READ_CHUNK)
        except OSError:
            stats.connect_failed += 1
            await asyncio.sleep(delay)
            continue
        opened = time.monotonic()
        try:
            ending = await _flood_connection(reader, writer, port, token, plan, stats)
        finally:
            writer.close()
        if ending is not None:
            stats.endings[ending] += 1
            _keep(stats.connection_seconds, time.monotonic() - opened)
        await asyncio.sleep(delay)


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace, stats: Stats) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)

    tasks: list[asyncio.Task[None]] = []
    ho = stats.half_open
    ho.slots, ho.header_bytes, ho.header_fields = args.half_open, args.header_bytes, args.header_fields
    head = partial_head(args.port, args.header_bytes, args.header_fields)
    for i in range(args.half_open):
        tasks.append(asyncio.create_task(half_open_slot(args.port, head, ho, args.reconnect_delay)))
        if i % 20 == 19:
            await asyncio.sleep(0.05)  # open them over a fraction of a second, not in one burst
    plan = FloodPlan(
        large=args.flood_large_kib * KIB,
        fragmented=args.flood_fragmented_kib * KIB,
        fragment=args.flood_fragment_kib * KIB,
        oversized=args.flood_oversized_mib * MIB,
        oversized_every=args.flood_oversized_every,
        rate=args.flood_mbps * 1e6,
    )
    stats.flood.clients = args.flood
    for _ in range(args.flood):
        tasks.append(
            asyncio.create_task(
                flood_client(args.port, args.flood_token, plan, stats.flood, args.flood_reconnect_delay)
            )
        )

    async def report() -> None:
        while True:
            write_stats(stats, args.stats)
            await asyncio.sleep(2)

    reporter = asyncio.create_task(report())
    try:
        await stop.wait()
    finally:
        reporter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the gateway's port on 127.0.0.1")
    parser.add_argument("--stats", type=Path, required=True, help="JSON counters are written here")
    parser.add_argument("--max-seconds", type=float, default=600, help="exit by itself after this long")
    parser.add_argument("--nice", type=int, default=0, help="add this to the process's niceness")
    parser.add_argument("--half-open", type=int, default=200, help="stalled connections kept open")
    parser.add_argument("--header-bytes", type=int, default=30 * KIB, help="size of each partial head")
    parser.add_argument("--header-fields", type=int, default=60, help="header fields in it")
    parser.add_argument(
        "--reconnect-delay", type=float, default=1.0, help="seconds before a half-open slot reconnects"
    )
    parser.add_argument("--flood", type=int, default=1, help="WebSocket flood clients")
    parser.add_argument("--flood-token", default="", help="a Jellyfin user's token (api_key=)")
    parser.add_argument(
        "--flood-reconnect-delay", type=float, default=0.2, help="seconds before a flood client reconnects"
    )
    parser.add_argument("--flood-large-kib", type=int, default=1024, help="single-frame message size")
    parser.add_argument("--flood-fragmented-kib", type=int, default=2048, help="fragmented message size")
    parser.add_argument("--flood-fragment-kib", type=int, default=64, help="fragment size")
    parser.add_argument("--flood-oversized-mib", type=int, default=16, help="oversized message size")
    parser.add_argument(
        "--flood-oversized-every", type=int, default=8, help="every Nth message is oversized (0: never)"
    )
    parser.add_argument("--flood-mbps", type=float, default=0.0, help="cap in MB/s (0: as fast as possible)")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    stats = Stats()
    try:
        asyncio.run(run(args, stats))
    finally:
        write_stats(stats, args.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
