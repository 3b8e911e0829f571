"""WebSocket relay at frame level: bytes pass as they come, only frame headers are read.

After the handshake (which the front relays, client key and all, so that Jellyfin's
Sec-WebSocket-Accept is the client's own answer) both sockets carry frames. The client's frames are
masked and go to Jellyfin as they are (a client must mask, and so must the gateway as Jellyfin's
client); Jellyfin's are unmasked and go to the client as they are. No message is ever assembled, so
a message costs the gateway one read buffer whatever its size. Messages are still bounded: a data
frame that would take its message past the limit is not relayed, and both sides get close 1009,
which is what a message-level relay answered. Pings, pongs and close frames (code and reason) pass
through untouched; a side that vanishes without a close frame costs the other side a close with
1001 (the client left) or 1011 (Jellyfin did).

No extension is negotiated (the front drops Sec-WebSocket-Extensions), so payload lengths are the
message sizes and every reserved bit must be clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct

from .relay import Conn, PeerGone, recv_into, send_all

logger = logging.getLogger(__name__)

GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
INTERNAL_ERROR = 1011
MESSAGE_TOO_BIG = 1009
#: How long a closing handshake may take once a close frame has gone either way.
CLOSE_GRACE = 10.0
_READ = 256 * 1024
_CLOSE = 0x8


class _Violation(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FrameGate:
    """Follows one direction's frames; says how much of the bytes fed may be relayed."""

    __slots__ = (
        "_header",
        "_limit",
        "_masked",
        "_message",
        "_opcode",
        "_payload_left",
        "closed",
        "violation",
    )

    def __init__(self, limit: int, *, masked: bool) -> None:
        self._limit = limit
        self._masked = masked
        self._header = bytearray()
        self._payload_left = 0
        self._opcode = 0
        self._message = 0
        #: This direction's close frame has been relayed in full: nothing after it is.
        self.closed = False
        #: The close code a refused frame calls for (1009 too big, 1002 broken); nothing after it is relayed.
        self.violation = 0

    @property
    def open(self) -> bool:
        return not self.closed

    @property
    def at_boundary(self) -> bool:
        """No frame is half relayed: a frame of the gateway's own may be written to this sink."""
        return not self._payload_left

    def feed(self, data: bytes | memoryview) -> tuple[bytes, int]:
        """(header bytes kept from earlier feeds, to relay first; how many bytes of ``data`` follow them).

        A header split across reads is kept until it is whole, so that a refused frame is refused
        before any of it is relayed; everything before it is relayed.
        """
        carried = b""
        position = 0
        end = len(data)
        while position < end and not self.closed:
            if self._payload_left:
                taken = min(self._payload_left, end - position)
                self._payload_left -= taken
                position += taken
                if not self._payload_left and self._opcode == _CLOSE:
                    self.closed = True
                continue
            kept = bytes(self._header)
            try:
                header_end = self._read_header(data, position)
            except _Violation as violation:
                self.violation = violation.code
                self._header.clear()
                return carried, position
            if header_end < 0:
                self._header += data[position:]
                return carried, position
            if kept:
                carried = kept  # only the first header of a feed can have started in an earlier one
            position = header_end
        return carried, position

    def _read_header(self, data: bytes | memoryview, position: int) -> int:
        """Parse the frame header made of the kept bytes and ``data[position:]``.

        Returns where the payload starts in ``data`` (the kept bytes were returned by :meth:`feed`
        as ``carried``), or -1 when the header is still incomplete.
        """
        kept = len(self._header)
        need = 2
        if kept:
            chunk: bytes | memoryview = bytes(self._header) + bytes(data[position : position + 14])
        else:
            chunk = data[position : position + 14]
        if len(chunk) < need:
            return -1
        first, second = chunk[0], chunk[1]
        size = second & 0x7F
        need += {126: 2, 127: 8}.get(size, 0) + (4 if second & 0x80 else 0)
        if len(chunk) < need:
            return -1
        if size == 126:
            size = struct.unpack_from("!H", chunk, 2)[0]
        elif size == 127:
            size = struct.unpack_from("!Q", chunk, 2)[0]
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        if first & 0x70 or bool(second & 0x80) != self._masked:
            raise _Violation(PROTOCOL_ERROR)
        if opcode >= 0x8:
            if opcode not in (0x8, 0x9, 0xA) or size > 125 or not fin:
                raise _Violation(PROTOCOL_ERROR)
        elif opcode in (0x1, 0x2):
            if self._message:
                raise _Violation(PROTOCOL_ERROR)  # a new message inside a fragmented one
            self._message = 1 if not fin else 0
            if size > self._limit:
                raise _Violation(MESSAGE_TOO_BIG)
            self._message_size(size, fin)
        elif opcode == 0x0:
            if not self._message:
                raise _Violation(PROTOCOL_ERROR)
            self._message_size(size, fin)
        else:
            raise _Violation(PROTOCOL_ERROR)
        self._opcode = opcode
        self._payload_left = size
        self._header.clear()
        if not size and opcode == _CLOSE:
            self.closed = True
        return position + need - kept

    def _message_size(self, size: int, fin: bool) -> None:
        total = (self._message - 1 if self._message else 0) + size
        if total > self._limit:
            raise _Violation(MESSAGE_TOO_BIG)
        # _message holds the message's size so far + 1 while a fragmented message is open.
        self._message = 0 if fin else total + 1


def close_frame(code: int, *, masked: bool) -> bytes:
    """A close frame of the gateway's own; masked when Jellyfin receives it (the gateway is its client)."""
    payload = struct.pack("!H", code)
    if not masked:
        return bytes((0x88, len(payload))) + payload
    mask = os.urandom(4)
    return bytes((0x88, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Side:
    """One socket, and what has been written to it."""

    __slots__ = ("close_sent", "conn", "gate", "masked_out", "name", "sending")

    def __init__(self, conn: Conn, name: str, gate: FrameGate, *, masked_out: bool) -> None:
        self.conn = conn
        self.name = name
        #: Frames arriving from this side.
        self.gate = gate
        #: Frames the gateway writes to this side must be masked (it is Jellyfin).
        self.masked_out = masked_out
        self.close_sent = False
        self.sending = False


class WebSocketRelay:
    """Relays frames both ways between an upgraded client socket and Jellyfin's socket."""

    def __init__(self, client: Conn, upstream: Conn, limit: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = _Side(client, "client", FrameGate(limit, masked=True), masked_out=False)
        self._upstream = _Side(upstream, "upstream", FrameGate(limit, masked=False), masked_out=True)
        self._closing = asyncio.Event()
        #: Close frames the gateway owes a side but could not write yet (a frame was half relayed).
        self._owed: dict[str, int] = {}

    async def run(self, from_client: bytes, from_upstream: bytes) -> None:
        """Relay until both sides are done; ``from_*``: frames read with the handshake."""
        pumps = [
            self._loop.create_task(self._pump(self._client, self._upstream, from_client, GOING_AWAY)),
            self._loop.create_task(self._pump(self._upstream, self._client, from_upstream, INTERNAL_ERROR)),
        ]
        try:
            _done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                closing = self._loop.create_task(self._closing.wait())
                try:
                    await asyncio.wait([*pending, closing], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                if any(not task.done() for task in pending):
                    await asyncio.wait(pending, timeout=CLOSE_GRACE)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, source: _Side, sink: _Side, early: bytes, lost_code: int) -> None:
        buffer = bytearray(_READ)
        view = memoryview(buffer)
        data: bytes | memoryview = early
        while True:
            if data and source.gate.open:
                carried, relay = source.gate.feed(data)
                try:
                    if carried and not sink.close_sent:
                        await self._send(sink, carried)
                    if relay and not sink.close_sent:
                        await self._send(sink, data[:relay])
                except PeerGone:
                    sink.close_sent = True  # nothing more can reach it; its own pump ends the rest
                    self._closing.set()
                if source.gate.violation:
                    await self._violated(source, sink, source.gate.violation, lost_code)
                    return
                if source.gate.closed:
                    sink.close_sent = True  # the source's own close frame went through
                    self._closing.set()
                if self._owed:
                    await self._pay_debt(sink)
            try:
                got = await self._recv(source, view)
            except PeerGone:
                got = 0
            if not got:
                # Gone: tell the other side, unless a close frame already went its way.
                if not sink.close_sent:
                    await self._write_close(sink, lost_code)
                return
            data = view[:got]

    async def _violated(self, source: _Side, sink: _Side, code: int, lost_code: int) -> None:
        """A frame over the limit (1009: both sides hear it) or broken (1002 to its sender)."""
        logger.debug("WebSocket frame from %s refused with %d", source.name, code)
        await self._write_close(sink, code if code == MESSAGE_TOO_BIG else lost_code)
        await self._write_close(source, code)
        self._closing.set()
        if source is self._upstream:
            # Jellyfin reads our close frame whatever it is writing; its socket is closed once the
            # client's side is done (unread bytes and all), as a message-level relay did.
            return
        # Read on (and drop) until the client closes too, so that the kernel does not reset the
        # connection over unread bytes and lose the close frame on its way.
        buffer = bytearray(_READ)
        view = memoryview(buffer)
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                while await self._recv(source, view):
                    await self._pay_debt(sink)
        except (TimeoutError, PeerGone):
            pass

    async def _write_close(self, side: _Side, code: int) -> None:
        if side.close_sent:
            return
        # The other pump writes to this side; a frame of ours may only go between whole frames.
        other = self._client if side is self._upstream else self._upstream
        if side.sending or not other.gate.at_boundary:
            self._owed[side.name] = code
            return
        side.close_sent = True
        self._closing.set()
        with contextlib.suppress(PeerGone):
            await self._send(side, close_frame(code, masked=side.masked_out))

    async def _pay_debt(self, side: _Side) -> None:
        code = self._owed.pop(side.name, None)
        if code is not None:
            await self._write_close(side, code)

    async def _send(self, side: _Side, data: bytes | memoryview) -> None:
        side.sending = True
        try:
            await send_all(side.conn, data, side.name)
        finally:
            side.sending = False

    async def _recv(self, side: _Side, view: memoryview) -> int:
        # After a relay the next frame is rarely there yet: wait, then read.
        return await recv_into(side.conn, view, None, side.name, wait_first=True)
