"""WebSocket messages are bounded: an oversized or never-ending message closes the relay with 1009.

Jellyfin's /socket is open to every signed-in user, so one client must not be able to make the
gateway buffer without limit, and neither may a broken upstream. The upstreams here accept messages
of any size themselves (the probe and the stand-in stop at aiohttp's 4 MiB default, which would
hide a gateway that relays everything). Never-ending fragmented messages are written frame by frame
over raw sockets, because aiohttp's writer always sets FIN.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, rss_kib, server_url

MiB = 1024 * 1024
DEFAULT_LIMIT = 4 * MiB
#: How much of a never-ending fragmented message is offered, and how much the gateway may grow.
FLOOD_BYTES = 200 * MiB
ALLOWED_GROWTH_KIB = 32 * 1024
FRAGMENT = 64 * 1024
TOO_BIG = 1009
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --- frames by hand ---------------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes, *, fin: bool, masked: bool) -> bytes:
    """One frame; a client's is masked with the all-zero key, which leaves the payload as it is."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    return header + (b"\0\0\0\0" if masked else b"") + payload


class RawConnection:
    """A socket written by one task and read by another, each on its own.

    Not a StreamReader/StreamWriter pair: when the peer closes with our flood unread, its kernel
    answers with a reset, the next write fails, and asyncio's transport then drops whatever the peer
    sent before, its close frame too (more often the busier the machine). The kernel keeps those
    bytes for ``recv``; here a failed write leaves them to the reader.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._buffer = bytearray()

    async def _fill(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not data:
            raise asyncio.IncompleteReadError(bytes(self._buffer), None)
        self._buffer += data

    async def readexactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def readuntil(self, separator: bytes) -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            await self._fill()
        return await self.readexactly(end + len(separator))

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def close(self) -> None:
        self.sock.close()


async def read_frame(reader: RawConnection) -> tuple[int, bytes]:
    """(opcode, unmasked payload) of the next frame."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(size)))
    return first & 0x0F, payload


async def read_close_code(reader: RawConnection) -> int | None:
    """Skip data frames until a close frame; its code, or None if the connection ends first."""
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else None
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


@dataclass
class Flood:
    """What happened while one side wrote a never-ending fragmented message."""

    close_code: int | None
    sent: int
    peak_growth_kib: int


async def flood(connection: RawConnection, *, masked: bool, timeout: float = 10.0) -> Flood:
    """Write FIN=0 fragments until the peer closes or FLOOD_BYTES are out; track this process's RSS.

    The gateway runs in this process, so the RSS of the test process bounds the gateway's.
    """
    baseline = rss_kib(os.getpid())
    peak = baseline
    closed = asyncio.create_task(read_close_code(connection))
    first = ws_frame(0x2, b"x" * FRAGMENT, fin=False, masked=masked)
    more = ws_frame(0x0, b"x" * FRAGMENT, fin=False, masked=masked)
    sent = 0
    try:
        while sent < FLOOD_BYTES and not closed.done():
            await connection.send(more if sent else first)
            sent += FRAGMENT
            if sent % (4 * MiB) == 0:
                peak = max(peak, rss_kib(os.getpid()))
    except ConnectionError:
        pass
    try:
        code = await asyncio.wait_for(closed, timeout)
    except TimeoutError:
        code = None
    peak = max(peak, rss_kib(os.getpid()))
    connection.close()
    return Flood(code, sent, peak - baseline)


async def raw_ws_connect(gateway: RunningGateway, path: str = "/ws") -> RawConnection:
    """A client handshake by hand, so that frames can be written without FIN."""
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (gateway.host, gateway.port))
    connection = RawConnection(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    await connection.send(
        f"GET {path} HTTP/1.1\r\nHost: {gateway.host}:{gateway.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(connection.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return connection


# --- upstreams that accept anything ----------------------------------------------------------


@dataclass
class UpstreamState:
    received: list[int] = field(default_factory=list)
    close_code: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


UPSTREAM = web.AppKey("upstream", UpstreamState)


async def unbounded_echo(request: web.Request) -> web.WebSocketResponse:
    """Echo without any size limit; ``send:<n>`` answers n bytes; records the close code it gets.

    A large answer is sent by a task of its own, so that, like Kestrel, the upstream keeps reading
    (and sees the gateway's close frame) while it writes.
    """
    state = request.app[UPSTREAM]
    ws = web.WebSocketResponse(max_msg_size=0, autoclose=False, autoping=False)
    await ws.prepare(request)
    sending: set[asyncio.Task[None]] = set()
    try:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT and msg.data.startswith("send:"):
                task = asyncio.create_task(ws.send_bytes(b"y" * int(msg.data[5:])))
                sending.add(task)
                task.add_done_callback(sending.discard)
            elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                state.received.append(len(msg.data))
                await (ws.send_str(msg.data) if msg.type is WSMsgType.TEXT else ws.send_bytes(msg.data))
            elif msg.type is WSMsgType.CLOSE:
                state.close_code = msg.data
                await ws.close(code=msg.data)
                break
            else:
                break
    finally:
        await asyncio.gather(*sending, return_exceptions=True)
        state.done.set()
    return ws


@pytest.fixture
def upstream_state() -> UpstreamState:
    return UpstreamState()


@pytest.fixture
async def unbounded(aiohttp_server: ServerFactory, upstream_state: UpstreamState) -> TestServer:
    app = web.Application()
    app[UPSTREAM] = upstream_state
    app.router.add_get("/ws", unbounded_echo)
    return await aiohttp_server(app)


@pytest.fixture
async def limited_gateway(unbounded: TestServer, gateway_factory: GatewayFactory) -> RunningGateway:
    return await gateway_factory(server_url(unbounded))


@dataclass
class RawUpstream:
    """A WebSocket server by hand that answers every handshake with a never-ending message."""

    url: URL
    flood: asyncio.Future[Flood]


@pytest.fixture
async def flooding_upstream() -> AsyncIterator[RawUpstream]:
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Flood] = loop.create_future()

    async def serve(connection: RawConnection) -> None:
        head = (await connection.readuntil(b"\r\n\r\n")).decode("latin-1")
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key.encode() + _WS_GUID, usedforsecurity=False).digest()
        ).decode()
        await connection.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        outcome = await flood(connection, masked=False)
        if not result.done():
            result.set_result(outcome)

    async def serve_then_close(connection: RawConnection) -> None:
        try:
            await serve(connection)
        finally:
            connection.close()

    async def accept_all(listener: socket.socket) -> None:
        while True:
            sock, _ = await loop.sock_accept(listener)
            serving.add(task := asyncio.create_task(serve_then_close(RawConnection(sock))))
            task.add_done_callback(serving.discard)

    serving: set[asyncio.Task[None]] = set()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        accepting = asyncio.create_task(accept_all(listener))
        try:
            yield RawUpstream(URL(f"http://127.0.0.1:{listener.getsockname()[1]}"), result)
        finally:
            for task in (accepting, *serving):
                task.cancel()
            await asyncio.gather(accepting, *serving, return_exceptions=True)


# --- tests ----------------------------------------------------------------------------------------


async def test_a_client_message_over_the_limit_closes_both_sides_with_1009(
    http: aiohttp.ClientSession, limited_gateway: RunningGateway, upstream_state: UpstreamState
) -> None:
    async with http.ws_connect(server_url(limited_gateway, "/ws"), max_msg_size=0) as ws:
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(b"z" * (5 * MiB))
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, TOO_BIG)
    await asyncio.wait_for(upstream_state.done.wait(), 10)
    assert upstream_state.close_code == TOO_BIG
    assert upstream_state.received == []


async def test_an_upstream_message_over_the_limit_closes_both_sides_with_1009(
    http: aiohttp.ClientSession, limited_gateway: RunningGateway, upstream_state: UpstreamState
) -> None:
    async with http.ws_connect(server_url(limited_gateway, "/ws"), max_msg_size=0) as ws:
        await ws.send_str(f"send:{5 * MiB}")
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, TOO_BIG)
    await asyncio.wait_for(upstream_state.done.wait(), 10)
    assert upstream_state.close_code == TOO_BIG


async def test_a_message_of_exactly_the_limit_is_relayed_and_one_byte_more_is_not(
    http: aiohttp.ClientSession,
    unbounded: TestServer,
    gateway_factory: GatewayFactory,
    upstream_state: UpstreamState,
) -> None:
    gateway = await gateway_factory(server_url(unbounded), ws_max_message=256 * 1024)
    async with http.ws_connect(server_url(gateway, "/ws"), max_msg_size=0) as ws:
        exact = os.urandom(256 * 1024)
        await ws.send_bytes(exact)
        assert await ws.receive_bytes(timeout=10) == exact
        await ws.send_bytes(exact + b"!")
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, TOO_BIG)
    await asyncio.wait_for(upstream_state.done.wait(), 10)
    assert upstream_state.received == [256 * 1024]
    assert upstream_state.close_code == TOO_BIG


async def test_a_1_mib_message_still_goes_both_ways(
    http: aiohttp.ClientSession, limited_gateway: RunningGateway, upstream_state: UpstreamState
) -> None:
    payload = os.urandom(MiB)
    async with http.ws_connect(server_url(limited_gateway, "/ws"), max_msg_size=0) as ws:
        await ws.send_bytes(payload)
        assert await ws.receive_bytes(timeout=10) == payload
        await ws.send_str("x" * MiB)
        assert await ws.receive_str(timeout=10) == "x" * MiB
    assert upstream_state.received == [MiB, MiB]


async def test_a_never_ending_fragmented_client_message_closes_with_1009_and_memory_stays_flat(
    limited_gateway: RunningGateway, upstream_state: UpstreamState
) -> None:
    connection = await raw_ws_connect(limited_gateway)
    outcome = await flood(connection, masked=True)
    assert outcome.close_code == TOO_BIG
    assert outcome.sent < FLOOD_BYTES
    assert outcome.peak_growth_kib < ALLOWED_GROWTH_KIB
    await asyncio.wait_for(upstream_state.done.wait(), 10)
    assert upstream_state.close_code == TOO_BIG


async def test_a_never_ending_fragmented_upstream_message_closes_with_1009_and_memory_stays_flat(
    http: aiohttp.ClientSession, flooding_upstream: RawUpstream, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(flooding_upstream.url)
    async with http.ws_connect(server_url(gateway, "/socket"), max_msg_size=0) as ws:
        msg = await ws.receive(timeout=60)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, TOO_BIG)
    outcome = await asyncio.wait_for(flooding_upstream.flood, 30)
    assert outcome.close_code == TOO_BIG
    assert outcome.sent < FLOOD_BYTES
    assert outcome.peak_growth_kib < ALLOWED_GROWTH_KIB
    assert outcome.sent > DEFAULT_LIMIT
