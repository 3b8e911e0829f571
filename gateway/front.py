"""The front door: every connection starts here, and plain proxied requests never leave it.

Most of what a Jellyfin client sends is a well-formed HTTP/1.1 request for Jellyfin: API calls,
images, video. For those, aiohttp's request objects, routing, middlewares and client session are
pure overhead, so the front reads the head itself, rewrites it (hop-by-hop headers out, forwarding
headers in: the same rules as proxy.py, from the same functions) and relays the exchange over a
pooled keep-alive connection (relay.py), bodies spliced socket to socket.

Anything else is handed to aiohttp, with the bytes read so far, for the rest of the connection's
life: the gateway's own ``/torrent`` routes and Jellyfin web's index.html (which it rewrites),
WebSocket upgrades, ``Expect: 100-continue``, HTTP/1.0, any head the front does not recognise as
plainly valid (aiohttp judges it, and refuses what it must) and any head over or near the request-head
limits, which the head guard answers as before. So the fast path only ever handles the easy case,
and every rule for the hard ones stays where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .forwarding import IPNetwork, is_trusted, set_forwarding_headers
from .headguard import HeadGuard, HeadLimits
from .logs import log_access, redact_target
from .proxy import _HOP_BY_HOP, _REDIRECTS, client_location, gateway_error
from .relay import (
    Conn,
    ConnectTimeout,
    FramingError,
    PeerGone,
    UpstreamPool,
    move_exactly,
    recv,
    relay_chunked,
    relay_until_close,
    send_all,
)
from .upstream import os_failure
from .ws_relay import WebSocketRelay

logger = logging.getLogger(__name__)

#: A head still incomplete past this many bytes goes to the guard, which applies the exact limits.
FAST_HEAD_MAX = 8 * 1024
#: Bytes read at a time while waiting for a head: asyncio's transports read as much, so that a head
#: handed to the guard arrives with what the client sent behind it.
_READ = 256 * 1024
#: Longest response head accepted from Jellyfin.
_UPSTREAM_HEAD_MAX = 64 * 1024

_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"})
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
#: A control character, or a CR or LF that is not part of a CRLF: aiohttp's parser judges those heads.
_SUSPECT = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOP = frozenset(name.encode() for name in _HOP_BY_HOP)
_FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
#: Request headers that send a request to aiohttp: it implements them (interim answers).
_SLOW_HEADERS = frozenset({b"expect"})
#: Not sent to Jellyfin with a WebSocket handshake: no extension is negotiated (ws_relay.py).
_WS_DROPPED = frozenset({b"sec-websocket-extensions"})
_REDIRECT_CODES = frozenset(str(code).encode() for code in _REDIRECTS)
_NO_BODY_CODES = frozenset({b"204", b"304"})
#: Response headers the one pass over Jellyfin's head looks at (the rest pass as they are).
_ANSWER_SPECIAL = _HOP | {b"content-length", b"location", b"date"}
#: Connection tokens that name no header of their own.
_ORDINARY_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade", b""})
#: Replaced on a refused WebSocket upgrade, whose body is the gateway's own text.
_REFUSAL_DROPPED = frozenset({b"content-length", b"content-type", b"content-encoding"})
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


@dataclass(frozen=True)
class FrontConfig:
    """What the fast path needs to know; built once per worker from the settings (server.py)."""

    limits: HeadLimits
    keepalive_timeout: float
    #: Jellyfin silent for this long mid-exchange: 504 before the head, a cut body after.
    read_timeout: float | None
    trusted_proxies: tuple[IPNetwork, ...]
    #: ``http://host:port`` of Jellyfin, for redirects (proxy.client_location).
    origin: str
    #: Lowercase paths served by the gateway itself: the torrent prefix, and index.html's paths.
    local_prefix: bytes
    local_paths: frozenset[bytes]
    access_logger: logging.Logger | None
    #: Largest WebSocket message relayed either way (ws_relay.py).
    ws_max_message: int = 4 * 1024 * 1024


class HandOff(Exception):
    """This connection goes to aiohttp from here on, starting with the bytes the front has read."""

    def __init__(self, deadline: float | None = None) -> None:
        super().__init__()
        #: When the head in progress must be complete (the guard answers 408 then), if one is.
        self.deadline = deadline


class _Fields:
    """A request's header section as the fast path needs it, rewritten for Jellyfin once."""

    __slots__ = ("block", "body", "keep_alive", "length", "referer", "seen", "user_agent", "websocket")

    def __init__(self) -> None:
        #: The header lines for Jellyfin, forwarding headers included, with the final empty line.
        self.block = b""
        #: None: no body; "length": Content-Length ``length``; "chunked".
        self.body: str | None = None
        self.length = 0
        self.keep_alive = True
        self.websocket = False
        #: The forwarding headers computed for this client (redirects are rewritten with them).
        self.seen: CIMultiDict[str] = CIMultiDict()
        self.referer: str | None = None
        self.user_agent: str | None = None


class _Request:
    """A parsed fast-path request: what the exchange needs, nothing more."""

    __slots__ = ("fields", "head", "method", "target")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.head = b""
        self.fields = _Fields()

    @property
    def body(self) -> str | None:
        return self.fields.body

    @property
    def length(self) -> int:
        return self.fields.length

    @property
    def keep_alive(self) -> bool:
        return self.fields.keep_alive

    @property
    def websocket(self) -> bool:
        return self.fields.websocket

    @property
    def seen(self) -> CIMultiDict[str]:
        return self.fields.seen

    @property
    def referer(self) -> str | None:
        return self.fields.referer

    @property
    def user_agent(self) -> str | None:
        return self.fields.user_agent


class Front:
    """Accepts on a listening socket and runs each connection until it is done or handed off."""

    def __init__(
        self,
        config: FrontConfig | None,
        pool: UpstreamPool | None,
        aiohttp_protocol: Callable[[], asyncio.Protocol],
        limits: HeadLimits,
    ) -> None:
        self._config = config
        self._limits = limits
        self._pool = pool
        self._aiohttp_protocol = aiohttp_protocol
        self._listeners: list[socket.socket] = []
        self._closed = False
        self._tasks: dict[asyncio.Task[None], _Connection] = {}
        self._loop = asyncio.get_running_loop()
        self._paused: asyncio.TimerHandle | None = None

    def serve(self, listeners: list[socket.socket]) -> None:
        self._listeners = listeners
        for listener in listeners:
            listener.setblocking(False)
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(128):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of file descriptors or the like: stop accepting for a second, as asyncio does.
                logger.error("cannot accept connections: %s; pausing for 1 s", exc)
                for each in self._listeners:
                    self._loop.remove_reader(each.fileno())
                self._paused = self._loop.call_later(1.0, self._resume)
                return
            sock.setblocking(False)
            peer = address[0] if isinstance(address, tuple) else None
            connection = _Connection(self, sock, peer)
            task = self._loop.create_task(connection.run())
            self._tasks[task] = connection
            task.add_done_callback(self._tasks.pop)

    def _resume(self) -> None:
        self._paused = None
        for listener in self._listeners:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; close idle connections now, give busy ones ``grace`` seconds, then cut them."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        else:
            for listener in self._listeners:
                self._loop.remove_reader(listener.fileno())
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        for task, connection in list(self._tasks.items()):
            if connection.idle:
                task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._listeners)


class _Connection:
    __slots__ = (
        "_answered",
        "_buffer",
        "_conn",
        "_fields",
        "_fields_block",
        "_front",
        "_loop",
        "_peer",
        "_sock",
        "_trusted",
        "idle",
    )

    def __init__(self, front: Front, sock: socket.socket, peer: str | None) -> None:
        self._front = front
        self._sock = sock
        self._conn = Conn(front._loop, sock)
        self._peer = peer
        self._loop = front._loop
        self._buffer = bytearray()
        config = front._config
        self._trusted = bool(config and config.trusted_proxies) and is_trusted(
            peer, config.trusted_proxies if config else ()
        )
        #: Waiting for a request head with nothing of it read: safe to close at shutdown.
        self.idle = True
        #: The last header section read on this connection, and what it was read as.
        self._fields_block = b"\0"
        self._fields: _Fields | None = None
        #: A request was relayed on this connection: the next one is waited for before reading.
        self._answered = False

    async def run(self) -> None:
        sock = self._sock
        handed_off = False
        try:
            if self._front._config is None:
                raise HandOff()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while await self._exchange():
                pass
        except HandOff as hand_off:
            handed_off = await self._hand_off(hand_off.deadline)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: log it, drop the connection, keep serving the others
            logger.exception("unexpected error on a proxied connection")
        finally:
            if not handed_off:
                self._conn.close()

    async def _hand_off(self, deadline: float | None) -> bool:
        front = self._front
        initial = bytes(self._buffer)
        self._buffer = bytearray()
        self._conn.unwatch()
        limits = front._limits

        def guard() -> HeadGuard:
            return HeadGuard(front._aiohttp_protocol(), limits, initial=initial, deadline=deadline)

        try:
            await self._loop.connect_accepted_socket(guard, self._sock)
        except OSError:
            return False
        return True

    # --- one request ----------------------------------------------------------------------------

    async def _read_head(self) -> int:
        """The end of the next complete head in the buffer; -1 when the connection is over."""
        config = self._front._config
        assert config is not None
        buffer = self._buffer
        deadline: float | None = None
        while True:
            if buffer:
                while buffer[0] in (13, 10):  # empty lines before a request line are allowed
                    del buffer[0]
                    if not buffer:
                        break
            if buffer:
                end = buffer.find(b"\r\n\r\n")
                if end >= 0:
                    return end
                if len(buffer) > FAST_HEAD_MAX or b"\n\n" in buffer:
                    raise HandOff(deadline)
                if deadline is None:
                    deadline = self._loop.time() + config.limits.timeout
                silence: float | None = deadline - self._loop.time()
                if silence is not None and silence <= 0:
                    raise HandOff(deadline)
            else:
                silence = config.keepalive_timeout
            self.idle = not buffer
            try:
                data = await recv(
                    self._conn, _READ, silence, "client", wait_first=not buffer and self._answered
                )
            except TimeoutError:
                if buffer:
                    raise HandOff(deadline) from None  # the guard answers 408
                return -1
            except PeerGone:
                return -1
            finally:
                self.idle = False
            if not data:
                return -1
            buffer += data

    async def _exchange(self) -> bool:
        """Relay one request and its answer; False when the connection is to be closed."""
        end = await self._read_head()
        if end < 0:
            return False
        config = self._front._config
        assert config is not None
        request = self._parse(bytes(self._buffer[:end]), config)
        if request is None:
            raise HandOff()
        del self._buffer[: end + 4]
        self._answered = True
        started = self._loop.time() if config.access_logger is not None else 0.0
        if request.websocket:
            status, length, keep_alive = await self._websocket(request, config)
        else:
            status, length, keep_alive = await self._relay(request, config)
        if config.access_logger is not None and status:
            log_access(
                config.access_logger,
                remote=self._peer,
                method=request.method.decode(),
                target=request.target.decode(),
                version=(1, 1),
                status=status,
                length=length,
                seconds=self._loop.time() - started,
                referer=request.referer,
                user_agent=request.user_agent,
            )
        return keep_alive

    def _parse(self, head: bytes, config: FrontConfig) -> _Request | None:
        """The request if the fast path may relay it; None hands it (and the connection) to aiohttp."""
        if len(head) > FAST_HEAD_MAX:
            return None
        line_end = head.find(b"\r\n")
        if line_end < 0:
            line_end = len(head)
        request_line = head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) != 3 or _SUSPECT.search(request_line):
            return None
        method, target, version = parts
        if version != b"HTTP/1.1" or method not in _METHODS or target[:1] != b"/" or not target.isascii():
            return None
        path = target.split(b"?", 1)[0]
        if b"%" in path or b"/." in path or b"//" in path or b"\\" in path or b"#" in target:
            return None  # aiohttp would decode or normalise it: let it decide where it goes
        lowered = path.lower()
        prefix = config.local_prefix
        if lowered.startswith(prefix) and (len(lowered) == len(prefix) or lowered[len(prefix)] == 47):
            return None  # "/": the gateway's own routes
        if lowered in config.local_paths:
            return None
        block = head[line_end + 2 :]
        # A client sends the same header fields request after request on a connection: read once.
        fields = self._fields if block == self._fields_block else self._parse_fields(block, config)
        if fields is None or (fields.websocket and method != b"GET"):
            return None
        self._fields_block, self._fields = block, fields
        request = _Request()
        request.method = method
        request.target = target
        request.fields = fields
        request.head = b"".join((method, b" ", target, b" HTTP/1.1\r\n", fields.block))
        return request

    def _parse_fields(self, block: bytes, config: FrontConfig) -> _Fields | None:
        """The header section read and rewritten for Jellyfin; None: aiohttp must judge it."""
        if _SUSPECT.search(block):
            return None
        lines = block.split(b"\r\n") if block else []
        if len(lines) > config.limits.header_count:
            return None
        fields = _Fields()
        kept: list[tuple[bytes, bytes]] = []
        named: set[bytes] = set()
        forwarding: list[tuple[str, str]] = []
        host: str | None = None
        lengths: list[bytes] = []
        chunked: bytes | None = None
        upgrade: bytes | None = None
        token = _TOKEN.fullmatch
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or token(name) is None:
                return None
            lname = name.lower()
            value = value.strip(b" \t")
            if lname == b"connection":
                named.update(t.strip().lower() for t in value.split(b","))
                continue
            if lname in _SLOW_HEADERS:
                return None
            if lname == b"upgrade":
                if upgrade is not None:
                    return None
                upgrade = value.lower()
                continue
            if lname == b"content-length":
                lengths.append(value)
            elif lname == b"transfer-encoding":
                if chunked is not None:
                    return None
                chunked = value.lower()
                continue
            elif lname == b"host":
                if host is not None:
                    return None
                host = value.decode("latin-1")
            elif lname in _FORWARDING:
                if self._trusted:
                    forwarding.append((name.decode("latin-1"), value.decode("latin-1")))
                continue
            elif lname == b"referer":
                fields.referer = value.decode("latin-1")
            elif lname == b"user-agent":
                fields.user_agent = value.decode("latin-1")
            kept.append((lname, line))
        if host is None:
            return None
        if chunked is not None:
            if chunked != b"chunked" or lengths:
                return None
            fields.body = "chunked"
        elif lengths:
            if len(lengths) != 1 or not lengths[0].isdigit():
                return None
            fields.length = int(lengths[0])
            fields.body = "length" if fields.length else None
        fields.keep_alive = b"close" not in named
        if upgrade is not None:
            # A WebSocket handshake is relayed here; any other protocol switch is aiohttp's to refuse.
            if upgrade != b"websocket" or b"upgrade" not in named or fields.body:
                return None
            fields.websocket = True
        seen: CIMultiDict[str] = CIMultiDict(forwarding)
        set_forwarding_headers(seen, peer=self._peer, scheme="http", host=host, trusted=self._trusted)
        fields.seen = seen
        out: list[bytes] = []
        for lname, line in kept:
            if lname in _HOP or lname in named or lname.startswith(b"proxy-"):
                continue
            if fields.websocket and lname in _WS_DROPPED:
                continue
            out += (line, b"\r\n")
        if fields.websocket:
            out.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
        if fields.body == "chunked":
            out.append(b"Transfer-Encoding: chunked\r\n")
        for field, text in seen.items():
            out += (field.encode("latin-1"), b": ", text.encode("latin-1"), b"\r\n")
        out.append(b"\r\n")
        fields.block = b"".join(out)
        return fields

    async def _relay(self, request: _Request, config: FrontConfig) -> tuple[int, int, bool]:
        """(status sent, body bytes sent, keep the client connection)."""
        front = self._front
        pool = front._pool
        assert pool is not None
        if not pool.try_slot():
            await pool.wait_slot()
        upstream: Conn | None = None
        reusable = False
        try:
            first = request.head
            streamed = False
            if request.body == "length":
                take = min(request.length, len(self._buffer))
                first += self._buffer[:take]
                del self._buffer[:take]
                streamed = take < request.length
            elif request.body == "chunked":
                streamed = True
            retry = not streamed and request.method in _IDEMPOTENT
            while True:
                upstream = pool.take_idle(retryable=retry)
                reused = upstream is not None
                if upstream is None:
                    try:
                        upstream = await pool.connect()
                    except ConnectTimeout:
                        return self._error(request, 502, "Jellyfin did not accept the connection in time")
                    except OSError as exc:
                        reason = f"Jellyfin is unreachable ({os_failure(exc)})"
                        return self._error(request, 502, reason, detail=f"{pool.address}: {exc}")
                try:
                    try:
                        await send_all(upstream, first, "upstream")
                    except PeerGone as gone:
                        raise PeerGone("upstream", _NO_ANSWER) from gone
                    if request.body == "length" and streamed:
                        await move_exactly(
                            self._conn,
                            upstream,
                            request.length - (len(first) - len(request.head)),
                            silence=None,
                            source_side="client",
                            sink_side="upstream",
                        )
                    elif request.body == "chunked":
                        self._buffer = bytearray(
                            await relay_chunked(
                                self._conn,
                                upstream,
                                bytes(self._buffer),
                                silence=None,
                                source_side="client",
                                sink_side="upstream",
                            )
                        )
                    answer = await self._read_answer(upstream, request, config)
                except PeerGone as gone:
                    if gone.side == "client":
                        logger.debug("client left during %s %s", request.method.decode(), _target(request))
                        return 0, 0, False
                    if reused and retry and gone.detail == _NO_ANSWER:
                        # A pooled connection Jellyfin had closed: ask again on a new one.
                        upstream.close()
                        upstream = None
                        retry = False
                        continue
                    return self._error(
                        request, 502, f"Jellyfin broke off the exchange ({gone.detail})", close=streamed
                    )
                except FramingError as exc:
                    return self._error(request, 502, f"Jellyfin broke off the exchange ({exc})", close=True)
                except TimeoutError:
                    return self._error(request, 504, "Jellyfin did not answer in time", close=streamed)
                break
            status, length, reusable, keep_alive = await self._send_answer(upstream, request, answer, config)
            return status, length, keep_alive
        finally:
            if upstream is not None:
                if reusable:
                    pool.give_back(upstream)
                else:
                    upstream.close()
            pool.release_slot()

    async def _websocket(self, request: _Request, config: FrontConfig) -> tuple[int, int, bool]:
        """Relay the handshake (the client's key and all), then frames both ways (ws_relay.py)."""
        pool = self._front._pool
        assert pool is not None
        if not pool.try_slot():
            await pool.wait_slot()
        upstream: Conn | None = None
        try:
            try:
                upstream = await pool.connect()  # never pooled: after the switch it is this socket's
            except ConnectTimeout:
                return self._error(request, 502, "Jellyfin did not accept the connection in time", close=True)
            except OSError as exc:
                reason = f"Jellyfin is unreachable ({os_failure(exc)})"
                return self._error(request, 502, reason, detail=f"{pool.address}: {exc}", close=True)
            try:
                await send_all(upstream, request.head, "upstream")
                answer = await self._read_answer(upstream, request, config)
            except PeerGone as gone:
                reason = f"Jellyfin broke off the WebSocket upgrade ({gone.detail})"
                return self._error(request, 502, reason, close=True)
            except FramingError:
                return self._error(
                    request, 502, "Jellyfin answered the WebSocket upgrade wrongly", close=True
                )
            except TimeoutError:
                return self._error(request, 504, "Jellyfin did not answer in time", close=True)
            if answer.code != b"101":
                return self._refused_upgrade(answer)
            head = [b"HTTP/1.1 101 Switching Protocols\r\n"]
            for lname, line in answer.end_to_end():
                if lname not in _WS_DROPPED:
                    head += (line, b"\r\n")
            head.append(b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            try:
                await send_all(self._conn, b"".join(head), "client")
            except PeerGone:
                return 0, 0, False
            early, self._buffer = bytes(self._buffer), bytearray()
            await WebSocketRelay(self._conn, upstream, config.ws_max_message).run(early, bytes(answer.rest))
            return 101, 0, False
        finally:
            if upstream is not None:
                upstream.close()
            pool.release_slot()

    def _refused_upgrade(self, answer: _Answer) -> tuple[int, int, bool]:
        """Jellyfin said no (403 without a token…): its status and headers, and a plain reason."""
        body = f"Jellyfin refused the WebSocket upgrade ({int(answer.code)})".encode()
        head = [b"HTTP/1.1 ", answer.code, b" ", answer.reason, b"\r\n"]
        for lname, line in answer.end_to_end():
            if lname not in _REFUSAL_DROPPED:
                head += (line, b"\r\n")
        head.append(b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body))
        head.append(b"Connection: close\r\n\r\n")
        try:
            self._sock.send(b"".join(head) + body)
        except OSError:
            return 0, 0, False
        return int(answer.code), len(body), False

    async def _read_answer(self, upstream: Conn, request: _Request, config: FrontConfig) -> _Answer:
        """Jellyfin's response head (interim 1xx answers skipped) and the body bytes read with it."""
        buffer = b""  # usually the whole head (and a small body) arrives in one read
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _UPSTREAM_HEAD_MAX:
                    raise FramingError("response head too large")
                try:
                    data = await recv(upstream, _READ, config.read_timeout, "upstream", wait_first=not buffer)
                except PeerGone as gone:
                    raise PeerGone("upstream", gone.detail if buffer else _NO_ANSWER) from None
                if not data:
                    raise PeerGone("upstream", _NO_ANSWER if not buffer else "closed mid-head")
                buffer = buffer + data if buffer else data
                continue
            answer = _Answer.parse(buffer[:end])
            buffer = buffer[end + 4 :]
            if answer.interim:
                continue
            if answer.code == b"101" and not request.websocket:
                raise FramingError("switched protocols unasked")
            answer.rest = buffer
            return answer

    async def _send_answer(
        self, upstream: Conn, request: _Request, answer: _Answer, config: FrontConfig
    ) -> tuple[int, int, bool, bool]:
        """(status, body bytes, upstream reusable, client keep-alive) once the answer is relayed."""
        kept = answer.kept
        if answer.location >= 0 and answer.code in _REDIRECT_CODES:
            line = kept[answer.location]
            location = line.partition(b":")[2].strip(b" \t").decode("latin-1")
            moved = client_location(config.origin, location, request.seen, "http")
            kept[answer.location] = b"Location: " + moved.encode("latin-1")
        head: list[bytes | bytearray] = [b"HTTP/1.1 ", answer.code, b" ", answer.reason, b"\r\n"]
        if kept:
            head += (b"\r\n".join(kept), b"\r\n")
        if not answer.dated:
            head.append(_date_line())
        keep_alive = request.keep_alive
        framing = answer.framing
        if request.method == b"HEAD" or answer.code in _NO_BODY_CODES:
            framing = None
        if framing == "chunked":
            head.append(b"Transfer-Encoding: chunked\r\n")
        elif framing == "close":
            keep_alive = False
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        status = int(answer.code)
        rest = answer.rest
        reusable = answer.reusable
        sent = 0
        try:
            if framing is None:
                reusable = reusable and not rest
                await send_all(self._conn, b"".join(head), "client")
            elif framing == "length":
                length = answer.length
                if len(rest) >= length:
                    reusable = reusable and len(rest) == length
                    head.append(rest[:length] if len(rest) > length else rest)
                    await send_all(self._conn, b"".join(head), "client")
                else:
                    head.append(rest)
                    await send_all(self._conn, b"".join(head), "client")
                    await move_exactly(
                        upstream,
                        self._conn,
                        length - len(rest),
                        silence=config.read_timeout,
                        source_side="upstream",
                        sink_side="client",
                    )
                sent = length
            elif framing == "chunked":
                await send_all(self._conn, b"".join(head), "client")
                extra = await relay_chunked(
                    upstream,
                    self._conn,
                    rest,
                    silence=config.read_timeout,
                    source_side="upstream",
                    sink_side="client",
                )
                reusable = reusable and not extra
            else:
                head.append(rest)
                await send_all(self._conn, b"".join(head), "client")
                await relay_until_close(
                    upstream,
                    self._conn,
                    silence=config.read_timeout,
                    source_side="upstream",
                    sink_side="client",
                )
                reusable = False
        except PeerGone as gone:
            if gone.side == "client":
                logger.debug("client left during %s %s", request.method.decode(), _target(request))
            else:
                _broke_off(request, gone.detail)
            return status, sent, False, False
        except (TimeoutError, FramingError) as exc:
            _broke_off(request, type(exc).__name__)
            return status, sent, False, False
        return status, sent, reusable, keep_alive

    def _error(
        self, request: _Request, status: int, reason: str, *, detail: object = None, close: bool = False
    ) -> tuple[int, int, bool]:
        """Answer a failure before any of Jellyfin's answer was sent; close if the body was not read."""
        text = gateway_error(request.method.decode(), request.target.decode(), status, reason, detail)
        body = text.encode()
        keep_alive = request.keep_alive and not close
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n" + ("" if keep_alive else "Connection: close\r\n") + "\r\n"
        ).encode()
        try:
            self._sock.send(head + body)  # small, on an idle socket: one send, or the client is gone
        except OSError:
            return status, 0, False
        return status, len(body), keep_alive


#: PeerGone detail for an upstream that closed before a single byte of its answer.
_NO_ANSWER = "closed without answering"


class _Answer:
    """Jellyfin's response head, read in one pass: what to send on, and how its body is framed."""

    __slots__ = (
        "code",
        "dated",
        "framing",
        "interim",
        "kept",
        "length",
        "location",
        "reason",
        "rest",
        "reusable",
    )

    def __init__(self) -> None:
        self.code = b""
        self.reason = b""
        #: The end-to-end header lines, as received (hop-by-hop ones and those Connection names dropped).
        self.kept: list[bytes] = []
        #: Jellyfin sent a Date (it always does; a proxy adds one when it is missing, RFC 9110 6.6.1).
        self.dated = False
        #: Where the Location line is in ``kept`` (a redirect's is moved to the client's origin), or -1.
        self.location = -1
        #: None (no body), "length", "chunked" or "close" (until Jellyfin closes).
        self.framing: str | None = None
        self.length = 0
        self.interim = False
        self.reusable = True
        #: Body bytes that came with the head.
        self.rest = b""

    def end_to_end(self) -> Iterator[tuple[bytes, bytes]]:
        """(lowercase name, line) of each header sent on (RFC 9110 7.6.1: no hop-by-hop ones)."""
        for line in self.kept:
            yield line[: line.find(b":")].lower(), line

    @classmethod
    def parse(cls, head: bytes) -> _Answer:
        answer = cls()
        lines = head.split(b"\r\n")
        version, _, status = lines[0].partition(b" ")
        code, _, reason = status.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise FramingError("not an HTTP/1.1 response")
        answer.code = code
        answer.reason = reason
        if code[:1] == b"1" and code != b"101":
            answer.interim = True
            return answer
        kept = answer.kept
        lengths: set[bytes] = set()
        coding: bytes | None = None
        named: set[bytes] = set()
        for line in lines[1:]:
            colon = line.find(b":")
            if colon <= 0:
                raise FramingError("malformed response header")
            lname = line[:colon].lower()
            if lname in _ANSWER_SPECIAL or lname[:6] == b"proxy-":
                if lname == b"content-length":
                    lengths.add(line[colon + 1 :].strip())
                elif lname == b"transfer-encoding":
                    coding = line[colon + 1 :].strip().lower().rsplit(b",", 1)[-1].strip()
                    continue
                elif lname == b"location":
                    answer.location = len(kept)
                elif lname == b"date":
                    answer.dated = True
                elif lname == b"connection":
                    named.update(t.strip().lower() for t in line[colon + 1 :].split(b","))
                    continue
                else:
                    continue  # hop-by-hop
            kept.append(line)
        if named - _ORDINARY_TOKENS:
            # Connection names more hop-by-hop headers: drop those too (rare; the Location may move).
            location = kept[answer.location] if answer.location >= 0 else None
            answer.kept = kept = [line for line in kept if line[: line.find(b":")].lower() not in named]
            answer.location = kept.index(location) if location in kept else -1
        answer.reusable = version == b"HTTP/1.1" and b"close" not in named
        if coding is not None:
            answer.framing = "chunked" if coding == b"chunked" else "close"
            if lengths:  # both: the length is meaningless (RFC 9112 6.3)
                answer.kept = [line for line in kept if line[:15].lower() != b"content-length:"]
                answer.location = -1 if answer.location < 0 else answer.kept.index(kept[answer.location])
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise FramingError("bad Content-Length")
            answer.framing = "length"
            answer.length = int(next(iter(lengths)))
        else:
            answer.framing = "close"
        if answer.framing == "close":
            answer.reusable = False
        return answer


_date_cache: list[tuple[int, bytes]] = [(0, b"")]


def _date_line() -> bytes:
    """``Date: <now>`` for an answer that came without one; made once a second."""
    now = int(time.time())
    second, line = _date_cache[0]
    if second != now:
        line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        _date_cache[0] = (now, line)
    return line


def _target(request: _Request) -> str:
    return redact_target(request.target.decode())


def _broke_off(request: _Request, detail: str) -> None:
    # Status and headers are already sent; a cut-off body is the only honest signal.
    method = request.method.decode()
    logger.warning("Jellyfin broke off %s %s mid-response: %s", method, _target(request), detail)


class FrontServer(asyncio.AbstractServer):
    """What aiohttp's site keeps as its server: the listening socket, and a way to stop."""

    def __init__(self, front: Front) -> None:
        self._front = front
        self._closing: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self._front.sockets

    def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._front.close())

    async def wait_closed(self) -> None:
        self.close()
        assert self._closing is not None
        await self._closing

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def is_serving(self) -> bool:
        return bool(self._front.sockets)

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        raise NotImplementedError


async def listen(host: str, port: int, *, reuse_port: bool, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host`` (each address it resolves to), as asyncio's create_server does."""
    sockets: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: set[Any] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class GuardedSite(web.BaseSite):
    """A TCP site whose connections meet the front first (fast path, or HeadGuard + aiohttp)."""

    __slots__ = ("_front", "_front_config", "_host", "_limits", "_pool", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limits: HeadLimits,
        front_config: FrontConfig | None = None,
        pool: UpstreamPool | None = None,
        reuse_port: bool = False,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._front_config = front_config
        self._pool = pool
        self._reuse_port = reuse_port
        self._front: Front | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        limits = self._limits
        listeners = await listen(self._host, self._port, reuse_port=self._reuse_port, backlog=self._backlog)
        fast = self._front_config is not None and self._pool is not None
        front = Front(self._front_config if fast else None, self._pool, server, limits)
        front.serve(listeners)
        self._front = front
        self._server = FrontServer(front)

    async def stop(self) -> None:
        if self._front is not None:
            await self._front.close()
        await super().stop()
