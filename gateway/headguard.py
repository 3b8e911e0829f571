"""Request heads within Kestrel's limits, before aiohttp buffers them.

Anyone on the internet can open a connection and send a request head, long before a token is
checked. aiohttp bounds each header line but not the head as a whole, and never times out a head
that is half sent, so a few hundred stalled connections could hold hundreds of MiB. The guard sits
between the socket and aiohttp's protocol and applies the limits of Jellyfin's own server (Kestrel's
defaults: request line 8 KiB → 414, headers 32 KiB in all or more than 100 fields → 431, a head
complete within ``HEADER_TIMEOUT``), so nothing a real Jellyfin client sends is refused.

It follows HTTP/1.1 framing only as far as it must to find where the next head starts: it skips
``Content-Length`` bodies and chunked bodies, and stops looking after an upgrade (WebSocket frames
are bounded by the relay). Where its reading and aiohttp's could differ (a malformed length),
aiohttp refuses the request and closes the connection anyway.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

logger = logging.getLogger(__name__)

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
#: Longest chunk-size line (hex size plus extensions) the guard follows before leaving it to aiohttp.
_MAX_CHUNK_LINE = 1024


@dataclass(frozen=True)
class HeadLimits:
    """Kestrel's defaults (MaxRequestLineSize, MaxRequestHeadersTotalSize, MaxRequestHeaderCount)."""

    request_line: int = 8 * 1024
    header_bytes: int = 32 * 1024
    header_count: int = 100
    timeout: float = 30.0


_REASONS = {
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
}

# Where the bytes after the current position belong.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _OPAQUE, _REFUSED = range(8)


class HeadGuard(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol; every byte still reaches it, in order."""

    def __init__(
        self,
        inner: asyncio.Protocol,
        limits: HeadLimits,
        *,
        initial: bytes = b"",
        deadline: float | None = None,
    ) -> None:
        """``initial``: bytes the front read before handing the connection over; ``deadline``: when
        the head among them, if incomplete, must be complete (loop time)."""
        self._inner = inner
        self._initial = initial
        self._deadline = deadline
        self._limits = limits
        self._transport: asyncio.Transport | None = None
        self._state = _HEAD
        self._head = bytearray()
        self._remaining = 0  # body or chunk bytes still to skip
        self._timer: asyncio.TimerHandle | None = None
        self._refusal = 0
        # Requests whose head is complete, and those the application has finished answering: the
        # guard may only write an answer of its own when no other answer is pending.
        self.heads = 0
        self.finished = 0

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(transport)
        if self._initial:
            initial, self._initial = self._initial, b""
            self.data_received(initial)
        self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def data_received(self, data: bytes) -> None:
        if self._state == _OPAQUE:
            self._inner.data_received(data)
            return
        if self._state == _REFUSED:
            return
        position = 0
        while position < len(data) and self._state not in (_OPAQUE, _REFUSED):
            position = self._advance(data, position)
        if self._state == _REFUSED:
            if position:
                self._inner.data_received(data[:position])
            return
        self._inner.data_received(data)

    # --- framing -----------------------------------------------------------------------------------

    def _advance(self, data: bytes, position: int) -> int:
        """Consume bytes from ``position`` in the current state; return where the next state starts."""
        state = self._state
        if state == _HEAD:
            return self._read_head(data, position)
        if state in (_BODY, _CHUNK_DATA):
            taken = min(self._remaining, len(data) - position)
            self._remaining -= taken
            if not self._remaining:
                self._state = _HEAD if state == _BODY else _CHUNK_END
            return position + taken
        if state in (_CHUNK_SIZE, _CHUNK_END, _TRAILERS):
            return self._read_chunk_line(data, position)
        raise AssertionError(state)

    def _read_head(self, data: bytes, position: int) -> int:
        if not self._head:
            # Empty lines before a request line are allowed (RFC 9112, 2.2).
            while position < len(data) and data[position] in b"\r\n":
                position += 1
            if position == len(data):
                return position
            self._start_timer()
        start = len(self._head)
        self._head += data[position:]
        match = _END_OF_HEAD.search(self._head, max(0, start - 3))
        head = self._head if match is None else self._head[: match.start()]
        status = self._over_limit(head, complete=match is not None)
        if status:
            self._refuse(status)
            return position
        if match is None:
            return len(data)
        consumed = match.end() - start
        self._head_complete(bytes(head))
        return position + consumed

    def _over_limit(self, head: bytearray, *, complete: bool) -> int:
        limits = self._limits
        line_end = _LINE_END.search(head)
        request_line = len(head) if line_end is None else line_end.start()
        if request_line > limits.request_line:
            return 414
        if line_end is None:
            return 0
        fields = head[line_end.end() :]
        if len(fields) > limits.header_bytes:
            return 431
        count = fields.count(b"\n") + (1 if complete and fields else 0)
        return 431 if count > limits.header_count else 0

    def _head_complete(self, head: bytes) -> None:
        self._cancel_timer()
        self._head = bytearray()
        self.heads += 1
        lines = _LINE_END.split(head)
        method = lines[0].split(b" ", 1)[0].upper()
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        connection = b",".join(headers.get(b"connection", [])).lower()
        if method == b"CONNECT" or (b"upgrade" in headers and b"upgrade" in connection):
            # After a switch of protocols the bytes are frames; the WebSocket relay bounds those.
            self._state = _OPAQUE
            return
        if b"transfer-encoding" in headers:
            codings = b",".join(headers[b"transfer-encoding"]).lower().split(b",")
            self._state = _CHUNK_SIZE if codings[-1].strip() == b"chunked" else _OPAQUE
            return
        lengths = headers.get(b"content-length")
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                self._state = _OPAQUE  # aiohttp refuses the request and closes
                return
            self._remaining = int(lengths[0])
            self._state = _BODY if self._remaining else _HEAD

    def _read_chunk_line(self, data: bytes, position: int) -> int:
        """A chunk-size line, the line end after a chunk, or the trailer section."""
        newline = data.find(b"\n", position) - position
        if newline < 0:
            self._head += data[position:]
            if len(self._head) > (self._limits.header_bytes if self._state == _TRAILERS else _MAX_CHUNK_LINE):
                self._state = _OPAQUE  # not framing the guard can follow: aiohttp judges it
            return len(data)
        line = bytes(self._head + data[position : position + newline]).rstrip(b"\r")
        self._head = bytearray()
        following = position + newline + 1
        if self._state == _CHUNK_END:
            self._state = _CHUNK_SIZE if not line else _OPAQUE
        elif self._state == _TRAILERS:
            if not line:
                self._state = _HEAD
        else:
            size = line.split(b";", 1)[0].strip()
            try:
                self._remaining = int(size, 16)
            except ValueError:
                self._state = _OPAQUE
                return following
            self._state = _CHUNK_DATA if self._remaining else _TRAILERS
        return following

    # --- refusing ----------------------------------------------------------------------------------

    def _refuse(self, status: int) -> None:
        """Answer as Kestrel does, after the answers still owed on this connection, then close.

        Bytes after the refused head are dropped, so waiting for those answers costs no memory.
        """
        self._state = _REFUSED
        self._refusal = status
        self._cancel_timer()
        self._head = bytearray()
        transport = self._transport
        if transport is not None:
            peer = transport.get_extra_info("peername")
            logger.debug("refusing a request head from %s: %d %s", peer, status, _REASONS[status])
        if self.heads == self.finished:
            self._answer_refusal()

    def _answer_refusal(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        status = self._refusal
        transport.write(
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        transport.close()

    def _start_timer(self) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        if self._deadline is not None:
            self._timer = loop.call_at(self._deadline, self._timed_out)
        else:
            self._timer = loop.call_later(self._limits.timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._state == _HEAD and self._head:
            self._refuse(408)

    # --- bookkeeping from the application ----------------------------------------------------------

    def request_finished(self, _task: Any = None) -> None:
        self.finished += 1
        if self._state == _REFUSED and self.heads == self.finished:
            self._answer_refusal()


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard when a request's answer has been written in full.

    The task running this request ends only after aiohttp has written the response, so its end is
    the moment the guard may answer on this connection again. A request to be upgraded that is not
    switched (refused WebSocket) closes the connection, because the guard stopped framing it.
    """
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    if isinstance(guard, HeadGuard):
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(guard.request_finished)
    response = await handler(request)
    if response.status != 101 and "Upgrade" in request.headers:
        response.force_close()
    return response
