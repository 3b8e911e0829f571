"""Relaying bodies byte for byte, and leaving every connection clean for the next request.

Black-box, over real sockets. The upstreams are raw asyncio servers written here, so that they send
exactly the bytes a test needs (chunks of odd sizes, a 304 with a Content-Length, a body cut short, a
close right after an answer); the clients are raw connections that read each reply by its framing, so
that a single byte too many or too few shows up as a broken next reply on the same connection. What is
proven here holds whatever the relay is made of (aiohttp's streams, splice(2), a pool of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import os
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, server_url, wait_until

KIB = 1024
MIB = 1024 * 1024

#: Seconds any single read of a test may take before the gateway counts as hung.
READ_TIMEOUT = 10.0


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` random bytes, the same for the same size and seed (no pattern a relay could fake)."""
    return random.Random(f"{size}/{seed}").randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- reading HTTP/1.1 by its framing, on both sides ------------------------------------------------


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """First line and header fields of a head that ends with CRLF CRLF."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    fields = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])]
    return lines[0], fields


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, list[int]]:
    """A chunked body, strictly: hex size line, exactly that many bytes, CRLF; then 0, trailers, CRLF.

    Raises IncompleteReadError if the connection ends before the terminating 0-chunk.
    """
    body = bytearray()
    sizes: list[int] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line[:-2].split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields
            return bytes(body), sizes
        body += await reader.readexactly(size)
        end = await reader.readexactly(2)
        assert end == b"\r\n", f"chunk of {size} bytes followed by {end!r}, not CRLF"
        sizes.append(size)


def _one(fields: Sequence[tuple[str, str]], name: str) -> str | None:
    values = [value for key, value in fields if key.lower() == name]
    assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
    return values[0] if values else None


@dataclass
class Reply:
    """One response as a client read it off the wire."""

    status_line: str
    headers: list[tuple[str, str]]
    body: bytes
    #: Chunk sizes as framed on the wire; None unless the body came chunked.
    chunks: list[int] | None

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    status_line, fields = parse_head(head)
    assert status_line.startswith("HTTP/1.1 "), f"not a status line: {head[:200]!r}"
    return status_line, fields


async def read_body(
    reader: asyncio.StreamReader, method: str, status: int, fields: Sequence[tuple[str, str]]
) -> tuple[bytes, list[int] | None]:
    """The body that follows a head, read exactly as its framing (RFC 9112 6.3) says; chunk sizes
    if chunked. IncompleteReadError if the connection ends first."""
    async with asyncio.timeout(READ_TIMEOUT):
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return b"", None
        coding = _one(fields, "transfer-encoding")
        if coding is not None:
            assert coding.lower() == "chunked", coding
            assert _one(fields, "content-length") is None, "both Transfer-Encoding and Content-Length"
            return await read_chunked(reader)
        length = _one(fields, "content-length")
        if length is not None:
            return await reader.readexactly(int(length)), None
        return await reader.read(), None  # until the server closes


async def read_reply(reader: asyncio.StreamReader, method: str = "GET") -> Reply:
    """Read exactly one response: its head, then its body."""
    status_line, fields = await read_head(reader)
    body, chunks = await read_body(reader, method, int(status_line.split()[1]), fields)
    return Reply(status_line, fields, body, chunks)


def request_bytes(
    method: str,
    target: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    close: bool = False,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", *(f"{k}: {v}" for k, v in headers)]
    framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers)
    if body and not framed:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One raw client connection to the gateway, for as many requests as a test sends on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def exchange(
        self,
        method: str,
        target: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        close: bool = False,
    ) -> Reply:
        await self.send(request_bytes(method, target, headers=headers, body=body, close=close))
        return await read_reply(self.reader, method)

    async def rest(self) -> bytes:
        """Whatever the gateway still sends until it closes the connection (b"" for a clean close)."""
        async with asyncio.timeout(READ_TIMEOUT):
            return await self.reader.read()


@contextlib.asynccontextmanager
async def connected(gateway: RunningGateway) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    try:
        yield Connection(reader, writer)
    finally:
        writer.transport.abort()


# --- raw upstreams ---------------------------------------------------------------------------------


@dataclass
class Seen:
    """A request as the upstream received it, body read by its framing."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    #: Which connection (1, 2, …, in the order the upstream accepted them) it came on.
    connection: int

    @property
    def path(self) -> str:
        return URL(self.target).path

    def query(self, name: str, default: str = "") -> str:
        return URL(self.target).query.get(name, default)


#: Writes the answer to one request; returns whether the connection stays open for the next one.
Route = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]


def response_head(status: str, *fields: tuple[str, str], version: str = "HTTP/1.1") -> bytes:
    lines = [f"{version} {status}", *(f"{name}: {value}" for name, value in fields)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _not_found(request: Seen, writer: asyncio.StreamWriter) -> bool:
    writer.write(response_head("404 Not Found", ("Content-Length", "0")))
    await writer.drain()
    return True


class RawUpstream:
    """An HTTP/1.1 server on 127.0.0.1 whose routes write the exact bytes of each answer.

    ``idle_timeout``: seconds a kept-alive connection may wait for its next request before the
    upstream closes it (as every server does, sooner or later); None waits for ever.
    """

    def __init__(self, routes: Mapping[str, Route], *, idle_timeout: float | None = None) -> None:
        self.routes = dict(routes)
        self.idle_timeout = idle_timeout
        self.seen: list[Seen] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> URL:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return URL(f"http://127.0.0.1:{port}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        number = self.connections
        try:
            first = True
            while True:
                try:
                    timeout = None if first else self.idle_timeout
                    async with asyncio.timeout(timeout):
                        head = await reader.readuntil(b"\r\n\r\n")
                    request = await self._read_request(reader, head, number)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                first = False
                self.seen.append(request)
                route = self.routes.get(request.path, _not_found)
                try:
                    if not await route(request, writer):
                        break
                except ConnectionError:
                    break
        finally:
            self._writers.discard(writer)
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader, head: bytes, number: int) -> Seen:
        request_line, fields = parse_head(head)
        method, target, _ = request_line.split(" ", 2)
        coding = _one(fields, "transfer-encoding")
        length = _one(fields, "content-length")
        if coding is not None and coding.lower() == "chunked":
            body, _ = await read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(int(length))
        else:
            body = b""
        return Seen(method, target, fields, body, number)

    def unsent(self) -> int:
        """Open connections with answer bytes the upstream has not been able to send yet."""
        return sum(writer.transport.get_write_buffer_size() > 0 for writer in self._writers)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


UpstreamFactory = Callable[..., Awaitable[RawUpstream]]


@pytest.fixture
async def upstreams() -> AsyncIterator[UpstreamFactory]:
    """Start a :class:`RawUpstream` (``routes``, ``idle_timeout=``); all are stopped afterwards."""
    started: list[RawUpstream] = []

    async def start(routes: Mapping[str, Route], *, idle_timeout: float | None = None) -> RawUpstream:
        upstream = RawUpstream(routes, idle_timeout=idle_timeout)
        await upstream.start()
        started.append(upstream)
        return upstream

    try:
        yield start
    finally:
        for upstream in reversed(started):
            await upstream.close()


async def fixed(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """``?size=N&seed=S``: payload(N, S) with a Content-Length."""
    size = int(request.query("size", "0"))
    head = response_head(
        "200 OK", ("Content-Type", "application/octet-stream"), ("Content-Length", str(size))
    )
    writer.write(head)
    if request.method != "HEAD":
        writer.write(payload(size, int(request.query("seed", "0"))))
    await writer.drain()
    return True


# --- 1. Content-Length bodies -------------------------------------------------------------------

SIZES = [0, 1, 200, 64 * KIB - 1, 64 * KIB + 1, MIB + 3, 32 * MIB + 7]


@pytest.mark.parametrize("size", SIZES, ids=[f"{size}B" for size in SIZES])
async def test_a_content_length_body_arrives_byte_exact_and_the_connection_stays_clean(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory, size: int
) -> None:
    upstream = await upstreams({"/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    async with connected(gateway) as client:
        first = await client.exchange("GET", f"/fixed?size={size}")
        # Parsed right only if the first body ended exactly where its Content-Length said.
        second = await client.exchange("GET", "/fixed?size=200&seed=1", close=True)
        rest = await client.rest()
    assert first.status == 200
    assert first.get_all("Content-Length") == [str(size)]
    assert first.get_all("Transfer-Encoding") == []
    assert (len(first.body), digest(first.body)) == (size, digest(payload(size)))
    assert second.status == 200
    assert second.body == payload(200, 1)
    assert rest == b""


@pytest.mark.parametrize("size", [MIB + 3, 32 * MIB + 7], ids=["1MiB+3", "32MiB+7"])
async def test_a_large_body_reaches_an_aiohttp_client_intact_over_one_kept_alive_connection(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory, size: int
) -> None:
    upstream = await upstreams({"/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    opened: list[object] = []
    reused: list[object] = []

    async def on_open(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
        opened.append(params)

    async def on_reuse(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
        reused.append(params)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_open)
    trace.on_connection_reuseconn.append(on_reuse)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1),
        auto_decompress=False,
        trace_configs=[trace],
        timeout=aiohttp.ClientTimeout(total=60),
    ) as http:
        received = hashlib.sha256()
        async with http.get(server_url(gateway, f"/fixed?size={size}")) as resp:
            assert resp.status == 200
            assert resp.headers.getall("Content-Length") == [str(size)]
            length = 0
            async for piece in resp.content.iter_chunked(MIB):
                received.update(piece)
                length += len(piece)
        async with http.get(server_url(gateway, "/fixed?size=5000&seed=2")) as resp:
            second = await resp.read()
    assert (length, received.hexdigest()) == (size, digest(payload(size)))
    assert second == payload(5000, 2)
    assert (len(opened), len(reused)) == (1, 1)


# --- 2. chunked bodies ---------------------------------------------------------------------------

CHUNK_SIZES = [1, 300 * KIB, 1, 7, 64 * KIB, 64 * KIB + 1, 2, 4093, 300 * KIB + 1, 1]


def chunked_route(sizes: Sequence[int]) -> Route:
    async def chunked(request: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            response_head(
                "200 OK", ("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")
            )
        )
        for number, size in enumerate(sizes):
            writer.write(b"%x\r\n" % size + payload(size, number) + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.002)  # apart, so that the gateway reads them apart
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return chunked


async def test_a_chunked_body_arrives_chunked_with_identical_bytes_and_the_connection_stays_clean(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory
) -> None:
    upstream = await upstreams({"/chunked": chunked_route(CHUNK_SIZES), "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    async with connected(gateway) as client:
        first = await client.exchange("GET", "/chunked")
        second = await client.exchange("GET", "/fixed?size=300&seed=3", close=True)
        rest = await client.rest()
    expected = b"".join(payload(size, number) for number, size in enumerate(CHUNK_SIZES))
    assert first.status == 200
    assert first.get_all("Transfer-Encoding") == ["chunked"]
    assert first.get_all("Content-Length") == []
    assert first.chunks is not None
    assert (len(first.body), digest(first.body)) == (len(expected), digest(expected))
    assert second.body == payload(300, 3)
    assert rest == b""


async def test_an_empty_chunked_body_arrives_empty_and_the_connection_stays_clean(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory
) -> None:
    upstream = await upstreams({"/chunked": chunked_route([]), "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    async with connected(gateway) as client:
        first = await client.exchange("GET", "/chunked")
        second = await client.exchange("GET", "/fixed?size=300&seed=3", close=True)
        rest = await client.rest()
    assert first.status == 200
    assert first.body == b""
    assert second.body == payload(300, 3)
    assert rest == b""


# --- 3. Range -----------------------------------------------------------------------------------

FILE_SIZE = 5 * MIB + 13


@pytest.fixture
async def file_upstream(tmp_path: Path, aiohttp_server: ServerFactory) -> tuple[URL, bytes]:
    """aiohttp's FileResponse (Range, 206, 416 done properly) on ~5 MiB of random bytes."""
    data = payload(FILE_SIZE, 4)
    path = tmp_path / "movie.mkv"
    path.write_bytes(data)

    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers={"Content-Type": "video/x-matroska"})

    app = web.Application()
    app.router.add_get("/movie.mkv", serve)
    return server_url(await aiohttp_server(app)), data


@pytest.mark.parametrize(
    ("byte_range", "first", "last"),
    [
        ("bytes=1000-2100999", 1000, 2100999),
        ("bytes=0-0", 0, 0),
        ("bytes=4000000-", 4000000, FILE_SIZE - 1),
        ("bytes=-500", FILE_SIZE - 500, FILE_SIZE - 1),
    ],
)
async def test_a_range_request_gets_206_with_exactly_the_requested_bytes(
    gateway_factory: GatewayFactory,
    file_upstream: tuple[URL, bytes],
    byte_range: str,
    first: int,
    last: int,
) -> None:
    origin, data = file_upstream
    gateway = await gateway_factory(origin)
    async with connected(gateway) as client:
        reply = await client.exchange("GET", "/movie.mkv", headers=[("Range", byte_range)])
        after = await client.exchange("GET", "/movie.mkv", headers=[("Range", "bytes=10-19")], close=True)
        rest = await client.rest()
    expected = data[first : last + 1]
    assert reply.status == 206
    assert reply.get_all("Content-Range") == [f"bytes {first}-{last}/{FILE_SIZE}"]
    assert reply.get_all("Content-Length") == [str(len(expected))]
    assert (len(reply.body), digest(reply.body)) == (len(expected), digest(expected))
    assert (after.status, after.body) == (206, data[10:20])
    assert rest == b""


async def test_an_unsatisfiable_range_gets_the_upstreams_416(
    gateway_factory: GatewayFactory, file_upstream: tuple[URL, bytes]
) -> None:
    origin, data = file_upstream
    gateway = await gateway_factory(origin)
    async with connected(gateway) as client:
        reply = await client.exchange("GET", "/movie.mkv", headers=[("Range", f"bytes={FILE_SIZE}-")])
        after = await client.exchange("GET", "/movie.mkv", headers=[("Range", "bytes=-3")], close=True)
        rest = await client.rest()
    assert reply.status == 416
    assert reply.get_all("Content-Range") == [f"bytes */{FILE_SIZE}"]
    assert (after.status, after.body) == (206, data[-3:])
    assert rest == b""


async def test_a_whole_file_arrives_byte_exact(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory, file_upstream: tuple[URL, bytes]
) -> None:
    origin, data = file_upstream
    gateway = await gateway_factory(origin)
    async with http.get(server_url(gateway, "/movie.mkv")) as resp:
        body = await resp.read()
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(FILE_SIZE)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert digest(body) == digest(data)


# --- 4. descriptors after clients leave ---------------------------------------------------------

BIG = 4 * MIB
#: How wide the bursts of clients are.
WIDTH = 20
#: Descriptors the process may hold beyond its count before the burst (the pool may keep a few more).
FD_SLACK = 10


def open_descriptors() -> dict[int, str]:
    """This process's descriptors (the gateway runs in it) and what each one is."""
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the directory listing's own descriptor
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def pipes(descriptors: Mapping[int, str]) -> int:
    return sum(target.startswith("pipe:") for target in descriptors.values())


def kinds(descriptors: Mapping[int, str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for target in descriptors.values():
        kind = target.split(":")[0] if ":" in target else "file"
        counted[kind] = counted.get(kind, 0) + 1
    return counted


async def in_parallel(count: int, job: Callable[[int], Awaitable[None]], width: int = WIDTH) -> None:
    """Run ``job(0)`` … ``job(count - 1)``, ``width`` at a time."""
    numbers = iter(range(count))

    async def worker() -> None:
        for number in numbers:
            async with asyncio.timeout(READ_TIMEOUT):
                await job(number)

    await asyncio.gather(*(worker() for _ in range(width)))


BIG_BODY = payload(BIG, 5)


async def big(request: Seen, writer: asyncio.StreamWriter) -> bool:
    writer.write(response_head("200 OK", ("Content-Type", "video/mp4"), ("Content-Length", str(BIG))))
    writer.write(BIG_BODY)
    await writer.drain()
    return True


async def slow_small(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """A short answer after 50 ms: ``WIDTH`` of them at once need ``WIDTH`` upstream connections."""
    await asyncio.sleep(0.05)
    return await fixed(request, writer)


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    #: Bytes that arrived and that the process has not read (yet).
    unread: int


def tcp_sockets(descriptors: Mapping[int, str]) -> list[TcpSocket]:
    """The connected TCP sockets among ``descriptors``, as the kernel lists them (/proc/net/tcp)."""
    table: dict[str, TcpSocket] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(path).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, queues, inode = fields[1], fields[2], fields[3], fields[4], fields[9]
                if state != "0A":  # not a listener
                    table[inode] = TcpSocket(
                        int(local.rsplit(":", 1)[1], 16),
                        int(remote.rsplit(":", 1)[1], 16),
                        int(queues.split(":")[1], 16),
                    )
    inodes = (target.removeprefix("socket:[").removesuffix("]") for target in descriptors.values())
    return [table[inode] for inode in inodes if inode in table]


@dataclass(frozen=True)
class Leftovers:
    """What of the burst is still there: nothing but idle upstream connections may be."""

    descriptors: dict[int, str] = field(repr=False)
    #: Sockets of client connections (either end) still open.
    client_sockets: int
    #: Upstream connections the gateway holds with a response it has not read to the end.
    unread_upstream: int
    #: Upstream connections with a response the upstream could not send yet (nobody reads it).
    unsent_upstream: int

    def clean(self, before: Mapping[int, str]) -> bool:
        return (
            self.client_sockets == self.unread_upstream == self.unsent_upstream == 0
            and pipes(self.descriptors) == pipes(before)
            and len(self.descriptors) <= len(before) + FD_SLACK
        )

    def describe(self, before: Mapping[int, str]) -> str:
        return (
            f"{len(before)} descriptors before, {len(self.descriptors)} after "
            f"({kinds(before)} -> {kinds(self.descriptors)}); {self.client_sockets} client sockets open; "
            f"upstream connections held mid-response: {self.unread_upstream} unread by the gateway, "
            f"{self.unsent_upstream} unsent by the upstream"
        )


def leftovers(gateway: RunningGateway, upstream: RawUpstream) -> Leftovers:
    descriptors = open_descriptors()
    sockets = tcp_sockets(descriptors)
    upstream_port = upstream.url.port
    return Leftovers(
        descriptors,
        client_sockets=sum(gateway.port in (s.local_port, s.remote_port) for s in sockets),
        unread_upstream=sum(s.remote_port == upstream_port and s.unread > 0 for s in sockets),
        unsent_upstream=upstream.unsent(),
    )


async def settle(gateway: RunningGateway, upstream: RawUpstream, before: Mapping[int, str]) -> Leftovers:
    """What is left once the process is clean again, or after 10 s if it never is."""
    await wait_until(lambda: leftovers(gateway, upstream).clean(before), timeout=10.0, interval=0.1)
    return leftovers(gateway, upstream)


async def warm_up(gateway: RunningGateway) -> None:
    """``WIDTH`` requests at once, so that the gateway's upstream pool is as large as the burst needs."""

    async def one(number: int) -> None:
        async with connected(gateway) as client:
            reply = await client.exchange("GET", "/slow?size=10", close=True)
        assert reply.body == payload(10)

    await in_parallel(WIDTH, one)


LEAVING = ("close", "reset", "half-close")


async def leave_mid_body(gateway: RunningGateway, how: str) -> None:
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    try:
        writer.write(request_bytes("GET", "/big"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        received = 0
        while received < 64 * KIB:
            piece = await reader.read(64 * KIB)
            assert piece, f"the gateway ended the body after {received} bytes"
            received += len(piece)
        if how == "reset":  # RST, no FIN
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        elif how == "half-close":  # FIN first, a little more reading, then gone
            writer.write_eof()
            await reader.read(64 * KIB)
    finally:
        if how == "close":
            writer.close()  # unread data in its buffer: the kernel resets the connection
        else:
            writer.transport.abort()


@pytest.mark.slow
async def test_a_thousand_clients_leaving_mid_body_leave_no_descriptor_or_pipe_behind(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory
) -> None:
    upstream = await upstreams({"/big": big, "/slow": slow_small, "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    await warm_up(gateway)
    before = open_descriptors()

    await in_parallel(1000, lambda number: leave_mid_body(gateway, LEAVING[number % len(LEAVING)]))

    after = await settle(gateway, upstream, before)
    assert after.clean(before), after.describe(before)
    async with connected(gateway) as client:
        reply = await client.exchange("GET", "/fixed?size=70000&seed=6", close=True)
    assert reply.body == payload(70000, 6)


@pytest.mark.slow
async def test_a_thousand_complete_requests_leave_no_descriptor_or_pipe_behind(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory
) -> None:
    upstream = await upstreams({"/slow": slow_small, "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    await warm_up(gateway)
    before = open_descriptors()

    async def complete(number: int) -> None:
        async with connected(gateway) as client:
            # Half of the connections the gateway closes (Connection: close), half the client does.
            reply = await client.exchange("GET", f"/fixed?size=3000&seed={number}", close=number % 2 == 0)
            assert reply.body == payload(3000, number)
            if number % 2 == 0:
                assert await client.rest() == b""

    await in_parallel(1000, complete)

    after = await settle(gateway, upstream, before)
    assert after.clean(before), after.describe(before)


# --- 5. an upstream that breaks off --------------------------------------------------------------


async def cut_length(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """Announces 1,000,000 bytes, sends 1,000, hangs up."""
    writer.write(response_head("200 OK", ("Content-Length", "1000000")) + payload(1000000, 7)[:1000])
    await writer.drain()
    return False


async def cut_chunked(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """Two whole chunks and no terminating 0-chunk, then hangs up."""
    writer.write(response_head("200 OK", ("Transfer-Encoding", "chunked")))
    writer.write(b"3e8\r\n" + payload(1000, 8) + b"\r\n" + b"1388\r\n" + payload(5000, 9) + b"\r\n")
    await writer.drain()
    return False


async def cut_mid_chunk(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """A chunk of 5000 announced, 100 bytes of it sent, then hangs up."""
    writer.write(response_head("200 OK", ("Transfer-Encoding", "chunked")))
    writer.write(b"1388\r\n" + payload(100, 10))
    await writer.drain()
    return False


async def hang_up(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """Reads the request and closes without a byte of answer."""
    return False


async def half_head(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """Closes in the middle of the status line's headers."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
    await writer.drain()
    return False


BROKEN = {"/cut-length": cut_length, "/cut-chunked": cut_chunked, "/cut-mid-chunk": cut_mid_chunk}


@pytest.mark.parametrize("path", list(BROKEN))
async def test_a_body_the_upstream_breaks_off_reaches_the_client_visibly_cut(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory, upstreams: UpstreamFactory, path: str
) -> None:
    upstream = await upstreams({**BROKEN, "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    async with http.get(server_url(gateway, path), timeout=aiohttp.ClientTimeout(total=READ_TIMEOUT)) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    async with http.get(server_url(gateway, "/fixed?size=1000&seed=11")) as resp:
        assert await resp.read() == payload(1000, 11)


@pytest.mark.parametrize("path", list(BROKEN))
async def test_a_body_the_upstream_breaks_off_ends_the_raw_connection_before_its_framing_does(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory, path: str
) -> None:
    upstream = await upstreams({**BROKEN, "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    async with connected(gateway) as client:
        await client.send(request_bytes("GET", path))
        status_line, fields = await read_head(client.reader)
        assert status_line.startswith("HTTP/1.1 200 ")
        assert _one(fields, "content-length") in (None, "1000000"), fields
        # The gateway closes the connection (EOF, not a hang) before the body's framing is complete.
        with pytest.raises(asyncio.IncompleteReadError):
            await read_body(client.reader, "GET", 200, fields)
    async with connected(gateway) as client:
        reply = await client.exchange("GET", "/fixed?size=1000&seed=12", close=True)
    assert reply.body == payload(1000, 12)


@pytest.mark.parametrize("path", ["/hang-up", "/half-head"])
async def test_an_upstream_hanging_up_before_its_head_gives_502_with_a_plain_reason(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory, upstreams: UpstreamFactory, path: str
) -> None:
    upstream = await upstreams({"/hang-up": hang_up, "/half-head": half_head, "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    async with http.get(server_url(gateway, path)) as resp:
        text = await resp.text()
    assert resp.status == 502
    assert resp.content_type == "text/plain"
    assert text.startswith("502 ")
    assert "Jellyfin" in text
    async with http.get(server_url(gateway, "/fixed?size=1000&seed=13")) as resp:
        assert await resp.read() == payload(1000, 13)


# --- 6. answers without a body ------------------------------------------------------------------

DOC = payload(5000, 14)


async def doc(request: Seen, writer: asyncio.StreamWriter) -> bool:
    writer.write(response_head("200 OK", ("Content-Type", "text/html"), ("Content-Length", str(len(DOC)))))
    if request.method != "HEAD":
        writer.write(DOC)
    await writer.drain()
    return True


async def no_content(request: Seen, writer: asyncio.StreamWriter) -> bool:
    writer.write(response_head("204 No Content", ("X-Probe", "204")))
    await writer.drain()
    return True


async def not_modified(request: Seen, writer: asyncio.StreamWriter) -> bool:
    """A 304 with the Content-Length of the 200 it stands for, as some servers send (RFC 9110 8.6)."""
    writer.write(response_head("304 Not Modified", ("ETag", '"v14"'), ("Content-Length", str(len(DOC)))))
    await writer.drain()
    return True


BODYLESS = {"/doc": doc, "/204": no_content, "/304": not_modified}


def assert_bodyless_answers(head: Reply, empty: Reply, unchanged: Reply, document: Reply) -> None:
    assert head.status == 200
    assert head.get_all("Content-Length") == [str(len(DOC))]
    assert empty.status == 204
    assert empty.get_all("X-Probe") == ["204"]
    assert empty.get_all("Transfer-Encoding") == []
    assert unchanged.status == 304
    assert unchanged.get_all("ETag") == ['"v14"']
    assert unchanged.get_all("Transfer-Encoding") == []
    assert set(unchanged.get_all("Content-Length")) <= {str(len(DOC))}
    assert document.status == 200
    assert document.body == DOC


async def test_head_204_and_304_send_no_body_and_the_next_request_is_read_right(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory
) -> None:
    upstream = await upstreams(BODYLESS)
    gateway = await gateway_factory(upstream.url)
    async with connected(gateway) as client:
        head = await client.exchange("HEAD", "/doc")
        empty = await client.exchange("GET", "/204")
        unchanged = await client.exchange("GET", "/304", headers=[("If-None-Match", '"v14"')])
        document = await client.exchange("GET", "/doc", close=True)
        rest = await client.rest()
    assert_bodyless_answers(head, empty, unchanged, document)
    assert rest == b""
    assert [request.method for request in upstream.seen] == ["HEAD", "GET", "GET", "GET"]


async def test_pipelined_requests_are_answered_in_order_with_exact_framing(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory
) -> None:
    upstream = await upstreams({**BODYLESS, "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    async with connected(gateway) as client:
        await client.send(
            request_bytes("HEAD", "/doc")
            + request_bytes("GET", "/204")
            + request_bytes("GET", "/304")
            + request_bytes("GET", "/fixed?size=70001&seed=15")
            + request_bytes("GET", "/doc", close=True)
        )
        head = await read_reply(client.reader, "HEAD")
        empty = await read_reply(client.reader)
        unchanged = await read_reply(client.reader)
        fixed_reply = await read_reply(client.reader)
        document = await read_reply(client.reader)
        rest = await client.rest()
    assert_bodyless_answers(head, empty, unchanged, document)
    assert fixed_reply.body == payload(70001, 15)
    assert rest == b""


async def test_request_bodies_are_relayed_exactly_and_the_next_request_is_read_right(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory
) -> None:
    async def received(request: Seen, writer: asyncio.StreamWriter) -> bool:
        answer = f"{len(request.body)} {digest(request.body)}".encode()
        writer.write(response_head("200 OK", ("Content-Length", str(len(answer)))) + answer)
        await writer.drain()
        return True

    upstream = await upstreams({"/upload": received, "/fixed": fixed})
    gateway = await gateway_factory(upstream.url)
    sized = payload(300 * KIB + 1, 16)
    pieces = [payload(size, 17 + n) for n, size in enumerate([1, 70000, 3])]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    async with connected(gateway) as client:
        first = await client.exchange("POST", "/upload", body=sized)
        second = await client.exchange(
            "PUT", "/upload", headers=[("Transfer-Encoding", "chunked")], body=chunked
        )
        third = await client.exchange("GET", "/fixed?size=10&seed=20", close=True)
        rest = await client.rest()
    whole = b"".join(pieces)
    assert first.body == f"{len(sized)} {digest(sized)}".encode()
    assert second.body == f"{len(whole)} {digest(whole)}".encode()
    assert third.body == payload(10, 20)
    assert rest == b""


# --- 7. an upstream that closes kept-alive connections ------------------------------------------


def closing_route(how: str) -> Route:
    async def answer(request: Seen, writer: asyncio.StreamWriter) -> bool:
        size = int(request.query("size", "0"))
        seed = int(request.query("seed", "0"))
        fields = [("Content-Length", str(size))]
        version = "HTTP/1.1"
        if how == "connection-close":
            fields.append(("Connection", "close"))
        elif how == "http/1.0":
            version = "HTTP/1.0"
        writer.write(response_head("200 OK", *fields, version=version) + payload(size, seed))
        await writer.drain()
        if how in ("connection-close", "http/1.0"):
            # It said it would close, and does, but a little later, reading nothing meanwhile (a
            # lingering close): a request sent on this connection all the same is never answered.
            await asyncio.sleep(0.05)
        return how == "idle-timeout"  # the others hang up after the answer

    return answer


@pytest.mark.parametrize("how", ["connection-close", "http/1.0", "silent-close", "idle-timeout"])
async def test_consecutive_requests_all_succeed_when_the_upstream_closes_its_connections(
    gateway_factory: GatewayFactory, upstreams: UpstreamFactory, how: str
) -> None:
    # idle-timeout: the upstream closes a kept-alive connection 20 ms after its last answer, and the
    # requests come 17 to 23 ms apart, so that many of them (a fifth, without retries) race the close.
    upstream = await upstreams(
        {"/fixed": closing_route(how)}, idle_timeout=0.02 if how == "idle-timeout" else None
    )
    gateway = await gateway_factory(upstream.url)
    # A connection the upstream announced it will close is never reused, so even a POST (which must
    # not be sent twice) succeeds; after a silent close only an idempotent request can be retried.
    announced = how in ("connection-close", "http/1.0")
    spacing = random.Random(how)
    count = 80
    async with connected(gateway) as client:
        for number in range(count):
            method = "POST" if announced and number % 2 else "GET"
            body = payload(100, number) if method == "POST" else b""
            reply = await client.exchange(method, f"/fixed?size=2000&seed={number}", body=body)
            assert (number, reply.status, reply.body) == (number, 200, payload(2000, number))
            if how == "idle-timeout":
                await asyncio.sleep(spacing.uniform(0.017, 0.023))
    assert len(upstream.seen) >= count
    if how != "idle-timeout":
        assert upstream.connections >= count


# --- what the gateway adds ------------------------------------------------------------------------


async def test_an_answer_without_a_date_gets_one_and_one_with_a_date_keeps_it(
    upstreams: UpstreamFactory, gateway_factory: GatewayFactory
) -> None:
    async def dated(request: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            response_head("200 OK", ("Date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("Content-Length", "0"))
        )
        await writer.drain()
        return True

    upstream = await upstreams({"/fixed": fixed, "/dated": dated})
    gateway = await gateway_factory(upstream.url)
    async with connected(gateway) as client:
        undated = await client.exchange("GET", "/fixed?size=10")
        given = await client.exchange("GET", "/dated")
    dates = [value for name, value in undated.headers if name.lower() == "date"]
    assert len(dates) == 1
    sent = email.utils.parsedate_to_datetime(dates[0])
    assert abs(sent.timestamp() - time.time()) < 5
    assert [value for name, value in given.headers if name.lower() == "date"] == [
        "Tue, 01 Jan 2030 00:00:00 GMT"
    ]
