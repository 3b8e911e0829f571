"""The proxied path's plumbing: socket readiness, splice, chunked framing, WebSocket frame gates."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct

import pytest

from gateway.relay import (
    SPLICE,
    Chunked,
    Conn,
    FramingError,
    PeerGone,
    copy_exactly,
    recv,
    splice_exactly,
)
from gateway.ws_relay import MESSAGE_TOO_BIG, PROTOCOL_ERROR, FrameGate, close_frame


def _pair(loop: asyncio.AbstractEventLoop) -> tuple[Conn, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return Conn(loop, ours), theirs


def _pipes() -> int:
    """Open pipes of this process (listdir's own descriptor may be gone by the time it is read)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    return count


def _registered(conn: Conn) -> bool:
    return bool(conn._registered)  # a function call: mypy does not narrow it across awaits


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


# --- readiness ------------------------------------------------------------------------------------


async def test_a_wait_without_a_time_limit_after_one_with_a_limit_never_times_out() -> None:
    loop = asyncio.get_running_loop()
    conn, peer = _pair(loop)
    try:
        peer.send(b"early")
        assert await recv(conn, 100, 0.1, "upstream", wait_first=True) == b"early"
        # The socket's one timer is still armed for that first deadline (0.1 s); when it fires it
        # must find nothing to expire: this wait has no limit (a WebSocket after its handshake).
        reader = asyncio.create_task(recv(conn, 100, None, "upstream", wait_first=True))
        await asyncio.sleep(0.3)
        assert not reader.done()
        peer.send(b"late")
        assert await asyncio.wait_for(reader, 2) == b"late"
    finally:
        conn.close()
        peer.close()


async def test_a_later_deadline_is_kept_when_the_timer_fires_early() -> None:
    loop = asyncio.get_running_loop()
    conn, peer = _pair(loop)
    try:
        with pytest.raises(TimeoutError):
            await conn.readable(0.05)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await conn.readable(0.3)
        assert loop.time() - started >= 0.29
    finally:
        conn.close()
        peer.close()


async def test_a_socket_readable_while_nobody_waits_stops_being_watched() -> None:
    loop = asyncio.get_running_loop()
    conn, peer = _pair(loop)
    try:
        peer.send(b"x")
        await conn.readable(1)  # registered, woken
        assert conn.sock.recv(10) == b"x"
        assert _registered(conn)  # kept for the next wait
        peer.send(b"pipelined")  # arrives while nobody waits
        await _turns(5)
        assert not _registered(conn)  # not watched: the loop does not spin on it
        await conn.readable(1)  # asked again: watched again, and ready at once
        assert conn.sock.recv(100) == b"pipelined"
    finally:
        conn.close()
        peer.close()


async def test_the_stale_report_after_a_wake_keeps_the_registration() -> None:
    loop = asyncio.get_running_loop()
    conn, peer = _pair(loop)
    try:
        for n in range(20):
            peer.send(b"%d" % n)
            assert await recv(conn, 100, 1, "client", wait_first=True) == b"%d" % n
            await _turns(3)
            assert _registered(conn)
    finally:
        conn.close()
        peer.close()


async def test_a_closed_peer_reads_as_the_end_and_a_reset_one_as_gone() -> None:
    loop = asyncio.get_running_loop()
    conn, peer = _pair(loop)
    peer.close()
    assert await recv(conn, 10, 1, "upstream") == b""
    conn.close()
    a, b = socket.socketpair()
    a.setblocking(False)
    conn = Conn(loop, a)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.close()
    try:
        assert await recv(conn, 10, 1, "upstream") == b""  # a Unix socketpair has no reset: it ends
    finally:
        conn.close()


# --- moving bodies ----------------------------------------------------------------------------------


async def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    for sock in (client, server):
        sock.setblocking(False)
    return client, server


@pytest.mark.parametrize("move", [splice_exactly, copy_exactly], ids=["splice", "copy"])
async def test_exactly_count_bytes_move_and_nothing_after_them(move: object) -> None:
    if move is splice_exactly:
        assert SPLICE, "splice(2) is expected on the Linux this runs on"
    loop = asyncio.get_running_loop()
    up_far, up_near = await _tcp_pair()
    down_near, down_far = await _tcp_pair()
    source, sink = Conn(loop, up_near), Conn(loop, down_near)
    body = os.urandom(3 * 1024 * 1024 + 17)
    before = _pipes()

    async def feed() -> None:
        await loop.sock_sendall(up_far, body + b"NEXT")

    async def drain() -> bytes:
        got = bytearray()
        while len(got) < len(body):
            got += await loop.sock_recv(down_far, 1 << 20)
        return bytes(got)

    try:
        feeder = asyncio.create_task(feed())
        draining = asyncio.create_task(drain())
        await move(  # type: ignore[operator]
            source, sink, len(body), silence=5, source_side="upstream", sink_side="client"
        )
        assert await asyncio.wait_for(draining, 10) == body
        await feeder
        assert await recv(source, 10, 1, "upstream") == b"NEXT"  # the rest is left where it was
        assert _pipes() == before  # the pipe is closed
    finally:
        for conn in (source, sink):
            conn.close()
        up_far.close()
        down_far.close()


async def test_a_source_that_ends_early_is_named() -> None:
    loop = asyncio.get_running_loop()
    up_far, up_near = await _tcp_pair()
    down_near, down_far = await _tcp_pair()
    source, sink = Conn(loop, up_near), Conn(loop, down_near)
    try:
        up_far.sendall(b"x" * 100_000)
        up_far.close()
        with pytest.raises(PeerGone) as gone:
            await splice_exactly(
                source, sink, 1_000_000, silence=5, source_side="upstream", sink_side="client"
            )
        assert gone.value.side == "upstream"
    finally:
        source.close()
        sink.close()
        down_far.close()


# --- chunked framing --------------------------------------------------------------------------------

CHUNKED = b"5\r\nhello\r\n1a;name=value\r\n" + b"z" * 26 + b"\r\n0\r\nTrailer: yes\r\n\r\n"


@pytest.mark.parametrize("split", range(1, len(CHUNKED)))
def test_a_chunked_body_ends_where_it_ends_however_it_is_cut(split: int) -> None:
    framer = Chunked()
    data = CHUNKED + b"GET /next"
    assert framer.feed(data[:split]) == split
    assert not framer.done
    assert split + framer.feed(data, split) == len(CHUNKED)
    assert framer.done


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nhello\r\n", b"5\r\nhelloX\r\n", b"-5\r\n", b"5" * 9000],
    ids=["hex", "long", "neg", "line"],
)
def test_chunked_framing_that_cannot_be_followed_is_refused(body: bytes) -> None:
    with pytest.raises(FramingError):
        Chunked().feed(body)


# --- WebSocket frames --------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, (0x80 if masked else 0) | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, size)
    else:
        header = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, size)
    return header + (b"\0\0\0\0" if masked else b"") + payload


def test_a_message_of_exactly_the_limit_passes_and_one_byte_more_is_refused_unrelayed() -> None:
    gate = FrameGate(1000, masked=True)
    ok = frame(0x2, b"a" * 1000)
    assert gate.feed(ok) == (b"", len(ok))
    big = frame(0x2, b"b" * 1001)
    assert gate.feed(ok + big) == (b"", len(ok))
    assert gate.violation == MESSAGE_TOO_BIG


def test_fragments_count_towards_one_message() -> None:
    gate = FrameGate(1000, masked=False)
    first = frame(0x1, b"a" * 600, fin=False, masked=False)
    ping = frame(0x9, b"p", masked=False)  # control frames may come between fragments
    second = frame(0x0, b"b" * 401, masked=False)
    assert gate.feed(first + ping) == (b"", len(first + ping))
    assert gate.feed(second) == (b"", 0)
    assert gate.violation == MESSAGE_TOO_BIG


def test_a_header_split_across_reads_is_relayed_whole_with_its_frame() -> None:
    gate = FrameGate(1 << 20, masked=True)
    data = frame(0x2, b"x" * 70_000)  # 8-byte length + mask: a 14-byte header
    assert gate.feed(data[:5]) == (b"", 0)
    carried, count = gate.feed(data[5:])
    assert carried + data[5 : 5 + count] == data


@pytest.mark.parametrize(
    "data",
    [
        frame(0x2, b"x", masked=False),  # a client frame without a mask
        frame(0x9, b"x" * 126),  # a control frame over 125 bytes
        frame(0x8, b"\x03\xe8", fin=False),  # a fragmented control frame
        frame(0x3, b"x"),  # a reserved opcode
        bytes([0xC2, 0x81, 0, 0, 0, 0, 0x78]),  # RSV1 without an extension
        frame(0x0, b"x"),  # a continuation with no message
    ],
    ids=["unmasked", "big-control", "fragmented-close", "opcode", "rsv1", "continuation"],
)
def test_broken_frames_are_refused_with_1002(data: bytes) -> None:
    gate = FrameGate(1 << 20, masked=True)
    assert gate.feed(data) == (b"", 0)
    assert gate.violation == PROTOCOL_ERROR


def test_a_close_frame_ends_what_is_relayed_from_that_side() -> None:
    gate = FrameGate(1000, masked=True)
    close = frame(0x8, b"\x0f\xa1bye")
    assert gate.feed(close + frame(0x1, b"after")) == (b"", len(close))
    assert gate.closed


def test_the_gateways_own_close_frames_are_masked_only_towards_jellyfin() -> None:
    assert close_frame(1009, masked=False) == b"\x88\x02\x03\xf1"
    masked = close_frame(1009, masked=True)
    assert masked[:2] == b"\x88\x82"
    mask = masked[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(masked[6:])) == b"\x03\xf1"
