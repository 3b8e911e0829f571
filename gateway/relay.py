"""Raw-socket plumbing of the proxied path: a keep-alive pool to Jellyfin and zero-copy bodies.

Every byte of every Jellyfin client goes through here, so nothing here allocates per request what it
does not need: sockets are driven by the event loop's readiness callbacks, not by transports and
protocols, and a body of known length moves from one socket to the other with ``splice(2)`` through
a pipe (on Linux), never entering Python. This module knows sockets and HTTP/1.1 framing only; what
to send and what it means is the front's business (front.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: MSG_PEEK | MSG_DONTWAIT as a plain int (IntFlag arithmetic costs microseconds per call).
_PEEK = int(socket.MSG_PEEK) | int(socket.MSG_DONTWAIT)
#: splice(2) exists (Linux) and Python exposes it.
SPLICE = sys.platform == "linux" and hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: Kernel pipe capacity for one splice relay: 1 MiB is the unprivileged maximum (fs.pipe-max-size).
#: Pipe pages are kernel memory, not the gateway's; 16 streams hold 16 MiB there at most.
PIPE_SIZE = 1024 * 1024
#: Bodies (or chunks) shorter than this are copied: a pipe's two extra syscalls cost more than they save.
SPLICE_MIN = 64 * 1024
#: Read size of the copy path (chunk lines, TLS-free small bodies, request bodies without splice).
COPY_SIZE = 256 * 1024


class PeerGone(Exception):
    """The far end closed or reset its socket; ``side`` says which one ("client" or "upstream")."""

    def __init__(self, side: str, detail: str) -> None:
        super().__init__(f"{side}: {detail}")
        self.side = side
        self.detail = detail


class FramingError(Exception):
    """A body whose framing (chunk sizes) cannot be followed."""


# ------------------------------------------------------------------------------------------ waiting


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def wait_fd(
    loop: asyncio.AbstractEventLoop,
    *,
    read: int | None = None,
    write: int | None = None,
    silence: float | None = None,
) -> None:
    """Until ``read`` is readable or ``write`` is writable (either); TimeoutError after ``silence``."""
    future: asyncio.Future[None] = loop.create_future()
    if read is not None:
        loop.add_reader(read, _wake, future)
    if write is not None:
        loop.add_writer(write, _wake, future)
    timer = loop.call_later(silence, _expire, future) if silence else None
    try:
        await future
    finally:
        if read is not None:
            loop.remove_reader(read)
        if write is not None:
            loop.remove_writer(write)
        if timer is not None:
            timer.cancel()


class Conn:
    """A non-blocking socket, and its readability kept registered with the loop while it is useful.

    A reader registered and removed around every wait costs two epoll_ctl calls and the selector's
    bookkeeping; a socket waited on again and again (a keep-alive client, a pooled upstream) keeps
    its registration, and loses it only when it turns readable while nobody waits (a pipelined
    request, a close), so that the loop does not spin on it.
    """

    __slots__ = ("_deadline", "_loop", "_registered", "_stale", "_timer", "_waiter", "fd", "sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self._registered = False
        self._waiter: asyncio.Future[None] | None = None
        self._stale = False
        #: When the current wait times out; one timer per socket, re-armed only when it fires early.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def _ready(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self._stale = True
            if not waiter.done():
                waiter.set_result(None)
            return
        if self._stale:
            # The loop reported the socket once more before the woken task read it: the task has
            # read it since. If it is really readable again, the loop says so on its next turn.
            self._stale = False
            return
        # Nobody waits and something is there (a pipelined request, a close): look, and stop
        # watching until asked.
        try:
            self.sock.recv(1, _PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.unwatch()

    def _check_deadline(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        elif self._deadline != math.inf:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    async def readable(self, silence: float | None) -> None:
        """Until the socket is readable; TimeoutError after ``silence`` seconds (None: never)."""
        if not self._registered:
            self._loop.add_reader(self.fd, self._ready)
            self._registered = True
        waiter = self._loop.create_future()
        self._waiter = waiter
        if silence:
            self._deadline = deadline = self._loop.time() + silence
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = self._loop.call_at(deadline, self._check_deadline)
        else:
            self._deadline = math.inf  # a timer armed for an earlier wait finds nothing to expire
        try:
            await waiter
        finally:
            self._waiter = None

    async def writable(self) -> None:
        await wait_fd(self._loop, write=self.fd)

    def unwatch(self) -> None:
        """Stop watching (before the socket is closed or handed to someone else)."""
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self.fd)

    def close(self) -> None:
        self.unwatch()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sock.close()


async def recv(conn: Conn, size: int, silence: float | None, side: str, *, wait_first: bool = False) -> bytes:
    """Up to ``size`` bytes (b"" at end of stream); PeerGone when the socket breaks.

    ``wait_first``: nothing can be there yet (a request just sent, an answer just given), so wait
    for readiness before reading instead of failing a read first.
    """
    return await _read(conn, functools.partial(conn.sock.recv, size), silence, side, wait_first)


async def recv_into(
    conn: Conn, buffer: memoryview, silence: float | None, side: str, *, wait_first: bool = False
) -> int:
    """Bytes read into ``buffer`` (0 at end of stream); PeerGone when the socket breaks."""
    return await _read(conn, functools.partial(conn.sock.recv_into, buffer), silence, side, wait_first)


async def _read(conn: Conn, read: Callable[[], _T], silence: float | None, side: str, wait_first: bool) -> _T:
    if wait_first:
        await conn.readable(silence)
    while True:
        try:
            return read()
        except (BlockingIOError, InterruptedError):
            await conn.readable(silence)
        except OSError as exc:
            raise PeerGone(side, type(exc).__name__) from None


async def send_all(conn: Conn, data: bytes | bytearray | memoryview, side: str) -> None:
    """Write everything, waiting while the peer's window is full (no time limit: players pause)."""
    try:
        sent = conn.sock.send(data)  # nearly always all of it, at once
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError as exc:
        raise PeerGone(side, type(exc).__name__) from None
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        try:
            sent = conn.sock.send(view)
        except (BlockingIOError, InterruptedError):
            await conn.writable()
            continue
        except OSError as exc:
            raise PeerGone(side, type(exc).__name__) from None
        view = view[sent:]


# ------------------------------------------------------------------------------------------ bodies


class Pipe:
    """One kernel pipe for a splice relay; closed after the body (never pooled: no fd outlives it)."""

    __slots__ = ("read_fd", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe only means more syscalls
            fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, PIPE_SIZE)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


async def splice_exactly(
    source: Conn,
    sink: Conn,
    count: int,
    *,
    silence: float | None,
    source_side: str,
    sink_side: str,
) -> None:
    """Move exactly ``count`` bytes from ``source`` to ``sink`` through a pipe, never into Python.

    ``silence`` bounds each wait for the source (a silent upstream), never a wait for the sink (a
    paused player). PeerGone names the side that broke; the pipe is closed in every case.
    """
    source_fd, sink_fd = source.fd, sink.fd
    pipe = Pipe()
    in_pipe = 0
    try:
        while count or in_pipe:
            progressed = False
            if count and in_pipe < PIPE_SIZE:
                try:
                    moved = os.splice(
                        source_fd, pipe.write_fd, min(count, PIPE_SIZE - in_pipe), flags=_SPLICE_FLAGS
                    )
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as exc:
                    raise PeerGone(source_side, type(exc).__name__) from None
                else:
                    if not moved:
                        raise PeerGone(source_side, "closed before the end of the body")
                    count -= moved
                    in_pipe += moved
                    progressed = True
            if in_pipe:
                try:
                    moved = os.splice(pipe.read_fd, sink_fd, in_pipe, flags=_SPLICE_FLAGS)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as exc:
                    raise PeerGone(sink_side, type(exc).__name__) from None
                else:
                    in_pipe -= moved
                    progressed = True
            if progressed:
                continue
            if in_pipe:
                await sink.writable()
            else:
                await source.readable(silence)
    finally:
        pipe.close()


async def copy_exactly(
    source: Conn,
    sink: Conn,
    count: int,
    *,
    silence: float | None,
    source_side: str,
    sink_side: str,
) -> None:
    """The same as :func:`splice_exactly` through a Python buffer (no splice, or a short body)."""
    buffer = bytearray(min(count, COPY_SIZE))
    view = memoryview(buffer)
    while count:
        got = await recv_into(source, view[: min(count, len(buffer))], silence, source_side)
        if not got:
            raise PeerGone(source_side, "closed before the end of the body")
        await send_all(sink, view[:got], sink_side)
        count -= got


async def move_exactly(
    source: Conn,
    sink: Conn,
    count: int,
    *,
    silence: float | None,
    source_side: str,
    sink_side: str,
) -> None:
    """``count`` bytes from ``source`` to ``sink``: spliced when long enough and possible, else copied."""
    move = splice_exactly if SPLICE and count >= SPLICE_MIN else copy_exactly
    await move(source, sink, count, silence=silence, source_side=source_side, sink_side=sink_side)


class Chunked:
    """Follows a chunked body (RFC 9112 7.1) without changing it: where it ends, what may pass blind.

    The bytes are relayed as they are; only chunk-size lines and the trailer section are looked at.
    """

    _SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)
    #: Longest chunk-size line (with extensions) or trailer line followed.
    MAX_LINE = 8192

    __slots__ = ("_line", "_state", "remaining")

    def __init__(self) -> None:
        self._state = self._SIZE
        self._line = bytearray()
        #: Chunk-data bytes that follow before the next line to look at.
        self.remaining = 0

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    @property
    def in_data(self) -> bool:
        return self._state == self._DATA

    def data_passed(self, count: int) -> None:
        """``count`` bytes of chunk data went by without being fed (spliced)."""
        self.remaining -= count
        if not self.remaining:
            self._state = self._DATA_END

    def feed(self, data: bytes | bytearray | memoryview, start: int = 0) -> int:
        """Follow ``data[start:]``; return how many bytes of it belong to the body (all until done)."""
        position = start
        end = len(data)
        while position < end and self._state != self._DONE:
            state = self._state
            if state == self._DATA:
                taken = min(self.remaining, end - position)
                position += taken
                self.data_passed(taken)
                continue
            newline = bytes(data[position : min(end, position + self.MAX_LINE + 2)]).find(b"\n")
            if newline < 0:
                self._line += data[position:end]
                if len(self._line) > self.MAX_LINE:
                    raise FramingError("chunk line too long")
                return end - start
            line = bytes(self._line + data[position : position + newline]).rstrip(b"\r")
            self._line.clear()
            position += newline + 1
            if state == self._DATA_END:
                if line:
                    raise FramingError("chunk data longer than its size")
                self._state = self._SIZE
            elif state == self._TRAILER:
                if not line:
                    self._state = self._DONE
            else:
                size = line.split(b";", 1)[0].strip()
                try:
                    self.remaining = int(size, 16)
                except ValueError:
                    raise FramingError("bad chunk size") from None
                if self.remaining < 0:
                    raise FramingError("bad chunk size")
                self._state = self._DATA if self.remaining else self._TRAILER
        return position - start


async def relay_chunked(
    source: Conn,
    sink: Conn,
    already: bytes | bytearray,
    *,
    silence: float | None,
    source_side: str,
    sink_side: str,
) -> bytes:
    """Relay a chunked body verbatim (``already``: its first bytes); return the bytes read past its end."""
    framer = Chunked()
    buffer = bytearray(COPY_SIZE)
    view = memoryview(buffer)
    pending: bytes | bytearray | memoryview = already
    while True:
        used = framer.feed(pending)
        if used:
            await send_all(sink, pending[:used], sink_side)
        if framer.done:
            return bytes(pending[used:])
        if framer.in_data and framer.remaining >= SPLICE_MIN:
            count = framer.remaining
            await move_exactly(
                source, sink, count, silence=silence, source_side=source_side, sink_side=sink_side
            )
            framer.data_passed(count)
        got = await recv_into(source, view, silence, source_side)
        if not got:
            raise PeerGone(source_side, "closed before the end of the body")
        pending = view[:got]


async def relay_until_close(
    source: Conn,
    sink: Conn,
    *,
    silence: float | None,
    source_side: str,
    sink_side: str,
) -> None:
    """A body delimited by the source closing (HTTP/1.0 style): everything until end of stream."""
    buffer = bytearray(COPY_SIZE)
    view = memoryview(buffer)
    while got := await recv_into(source, view, silence, source_side):
        await send_all(sink, view[:got], sink_side)


# ------------------------------------------------------------------------------------------ the pool


class ConnectTimeout(Exception):
    """Jellyfin did not accept the connection within the connect silence."""


class UpstreamPool:
    """Keep-alive connections to one plain-HTTP origin, newest first; at most ``limit`` open."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        limit: int,
        idle_timeout: float = 60.0,
        max_idle: int = 256,
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_idle = max_idle
        self._idle: list[tuple[Conn, float]] = []
        self._limit = limit
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._addresses: list[tuple[int, tuple[str, int]]] = []
        self._resolved_at = -1e9
        self._closed = False

    @property
    def address(self) -> str:
        """For the log only: failures told to clients never name it."""
        return f"{self._host}:{self._port}"

    def take_idle(self, *, retryable: bool = False) -> Conn | None:
        """A pooled connection that is still open (a peek tells; a closed one is dropped), or None.

        ``retryable``: the caller asks again on a new connection if this one turns out closed, so one
        used within the last second is taken without the peek (a syscall per request).
        """
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if retryable and now - since < 1.0:
                return conn
            if now - since < self._idle_timeout:
                try:
                    conn.sock.recv(1, _PEEK)
                except (BlockingIOError, InterruptedError):
                    return conn  # nothing to read, not closed: alive
                except OSError:
                    pass
            conn.close()  # closed, or something unsolicited arrived: unusable either way
        return None

    def give_back(self, conn: Conn) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
            return
        now = time.monotonic()
        if self._idle and now - self._idle[0][1] >= self._idle_timeout:
            # Old ones sit at the bottom: close those past their time while we are here.
            keep = [(s, t) for s, t in self._idle if now - t < self._idle_timeout]
            for s, t in self._idle:
                if now - t >= self._idle_timeout:
                    s.close()
            self._idle = keep
        self._idle.append((conn, now))

    def try_slot(self) -> bool:
        """Take a connection slot if one is free (the usual case, no waiting)."""
        if self._open < self._limit:
            self._open += 1
            return True
        return False

    async def wait_slot(self) -> None:
        """Wait for a slot: a released one is handed over directly, first come first served."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release_slot()  # handed over just as we were cancelled: pass it on
            raise

    def release_slot(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self._open -= 1

    async def connect(self) -> Conn:
        """A new connection; OSError (refused, unreachable…) or ConnectTimeout."""
        loop = asyncio.get_running_loop()
        addresses = await self._resolve(loop)
        last: OSError | None = None
        deadline = loop.time() + self._connect_timeout
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                async with asyncio.timeout_at(deadline):
                    await loop.sock_connect(sock, address)
                return Conn(loop, sock)
            except TimeoutError:
                sock.close()
                raise ConnectTimeout() from None
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        assert last is not None
        raise last

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> list[tuple[int, tuple[str, int]]]:
        if time.monotonic() - self._resolved_at < 60.0 and self._addresses:
            return self._addresses
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        self._addresses = [(family, (str(addr[0]), int(addr[1]))) for family, _, _, _, addr in infos]
        self._resolved_at = time.monotonic()
        return self._addresses

    def close(self) -> None:
        self._closed = True
        for conn, _ in self._idle:
            conn.close()
        self._idle.clear()
