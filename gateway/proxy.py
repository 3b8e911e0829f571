"""Transparent relaying of HTTP and WebSocket traffic to Jellyfin.

This module knows HTTP and WebSocket relaying, nothing about Jellyfin's API. Bodies are streamed in
both directions with backpressure (constant memory whatever the size), the request target is forwarded
byte for byte, and only hop-by-hop headers are touched, so that existing Jellyfin clients cannot tell the
gateway from Jellyfin itself. WebSocket messages are relayed whole, so they are bounded: a larger one,
fragmented or not, closes both sides with 1009 instead of growing the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import ClientSession, WebSocketError, WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from .forwarding import IPNetwork, apply_forwarding, forwarding_headers
from .logs import redact_target
from .upstream import connect_failure
from .web_inject import WebIndex, read_up_to

logger = logging.getLogger(__name__)

#: Large reads matter: 64 KiB buffers halve streaming throughput compared with 256 KiB.
STREAM_CHUNK = 256 * 1024

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers of the client's WebSocket handshake that the upstream handshake must generate itself.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
# Answers whose absolute Location Jellyfin may build from the Host it saw.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GET_OR_HEAD = frozenset({"GET", "HEAD"})
# Close codes that may not be sent in a close frame (RFC 6455 7.4.1).
_UNSENDABLE_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


def end_to_end_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """Copy headers without the hop-by-hop ones (RFC 9110 7.6.1), keeping repeats such as Set-Cookie."""
    named: set[str] = set()
    for value in headers.getall("Connection", ()):
        named.update(token.strip().lower() for token in value.split(","))
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _HOP_BY_HOP or lowered in named or lowered.startswith("proxy-"):
            continue
        out.add(name, value)
    return out


def upstream_url(origin: URL, raw_target: str) -> URL:
    """Join Jellyfin's origin and the client's request target without re-encoding a single byte."""
    if not raw_target.startswith("/"):
        # absolute-form (a client talking to us as to a forward proxy): keep its path and query only
        raw_target = URL(raw_target, encoded=True).raw_path_qs
    return URL(f"{origin}{raw_target}", encoded=True)


@dataclass(frozen=True)
class ProxyConfig:
    origin: URL
    trusted_proxies: tuple[IPNetwork, ...]
    #: Largest WebSocket message relayed either way (bytes); a larger one closes both sides with 1009.
    ws_max_message: int
    #: Jellyfin web's index.html, which gets the gateway's script tag; None: /web passes unchanged.
    web_index: WebIndex | None = None


class Proxy:
    """Relays one request at a time to Jellyfin over a shared, pooled session."""

    def __init__(self, session: ClientSession, config: ProxyConfig) -> None:
        self._session = session
        self._config = config
        self._web_index = config.web_index
        # The one check every request pays: a set lookup (empty when WEB_INJECT is off).
        self.web_index_paths = config.web_index.paths if config.web_index else frozenset()
        self._origin = str(config.origin)

    def _request_headers(self, request: web.Request, *, websocket: bool = False) -> CIMultiDict[str]:
        headers = end_to_end_headers(request.headers)
        # The gateway answers "Expect: 100-continue" itself; the body then follows as a normal stream.
        headers.popall("Expect", None)
        if websocket:
            for name in list(headers):
                if name.lower() in _WS_HANDSHAKE:
                    headers.popall(name, None)
        apply_forwarding(headers, request, self._config.trusted_proxies)
        return headers

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if _wants_websocket(request):
            return await self._relay_websocket(request)
        return await self._relay_http(request)

    async def _relay_http(self, request: web.Request) -> web.StreamResponse:
        url = upstream_url(self._config.origin, request.raw_path)
        headers = self._request_headers(request)
        body = _stream(request.content) if request.body_exists else None
        method = request.method
        web_index = self._web_index if request.path.lower() in self.web_index_paths else None
        if web_index is not None and method in _GET_OR_HEAD:
            web_index.upstream_headers(headers)
            method = "GET"  # a HEAD is answered from the document: its length is the injected one
        else:
            web_index = None
        try:
            upstream = await self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                auto_decompress=False,
            )
        except (aiohttp.ServerTimeoutError, aiohttp.ClientConnectorError) as exc:
            return _unreachable(request, exc)
        except (aiohttp.ClientError, OSError) as exc:
            if _client_gone(request):
                # The client vanished while its body was being sent on: nobody to answer, no error.
                logger.debug("client left during %s %s", request.method, redact_target(request.raw_path))
                return web.Response(status=499)
            return _gateway_error(request, 502, f"Jellyfin broke off the exchange ({type(exc).__name__})")

        try:
            if web_index is not None:
                return await self._send_web_index(request, upstream, web_index)
            return await self._send_response(request, upstream)
        finally:
            upstream.release()

    async def _send_web_index(
        self, request: web.Request, upstream: aiohttp.ClientResponse, web_index: WebIndex
    ) -> web.StreamResponse:
        """Jellyfin web's index.html with the gateway's script; anything else goes on unchanged."""
        if not web_index.can_inject(upstream):
            return await self._send_response(request, upstream)
        try:
            document, whole = await read_up_to(upstream.content)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return _gateway_error(request, 502, f"Jellyfin broke off index.html ({type(exc).__name__})")
        if not whole:
            return await self._send_response(request, upstream, already_read=document)
        return web_index.respond(request, upstream, end_to_end_headers(upstream.headers), document)

    async def _send_response(
        self, request: web.Request, upstream: aiohttp.ClientResponse, *, already_read: bytes = b""
    ) -> web.StreamResponse:
        headers = end_to_end_headers(upstream.headers)
        if upstream.status in _REDIRECTS and "Location" in headers:
            headers["Location"] = self._client_location(request, headers["Location"])
        content = upstream.content
        if content.is_eof() and "Content-Length" in headers and request.method != "HEAD":
            # The whole (small) body came with the headers: answer with one write instead of two.
            # On loopback each send costs about as much as the rest of the request, so this
            # matters for the many small JSON calls a Jellyfin client makes.
            return web.Response(
                status=upstream.status,
                reason=upstream.reason,
                headers=headers,
                body=already_read + content.read_nowait(),
            )
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        has_body = request.method != "HEAD" and upstream.status not in (204, 304)
        try:
            await response.prepare(request)
            if has_body and already_read:
                await response.write(already_read)
            while has_body:
                try:
                    chunk = await content.readany()
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    # Status and headers are already sent; a cut-off body is the only honest signal.
                    logger.warning(
                        "Jellyfin broke off %s %s mid-response: %s",
                        request.method,
                        redact_target(request.raw_path),
                        type(exc).__name__,
                    )
                    upstream.close()
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if not chunk:
                    break
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:  # includes aiohttp's ClientConnectionResetError
            # The client went away (closed the player, seeked): not an error; drop the upstream too.
            logger.debug("client left during %s %s", request.method, redact_target(request.raw_path))
            upstream.close()
        return response

    def _client_location(self, request: web.Request, location: str) -> str:
        seen = forwarding_headers(request, self._config.trusted_proxies)
        return client_location(self._origin, location, seen, request.scheme)

    async def _relay_websocket(self, request: web.Request) -> web.StreamResponse:
        url = upstream_url(self._config.origin, request.raw_path)
        protocols = [
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in value.split(",")
        ]
        # aiohttp refuses a message whose size reaches max_msg_size, fragmented or not: + 1 lets exactly
        # ws_max_message through.
        max_msg_size = self._config.ws_max_message + 1
        try:
            upstream = await self._session.ws_connect(
                url,
                method=request.method,
                headers=self._request_headers(request, websocket=True),
                protocols=[p for p in protocols if p],
                autoclose=False,
                autoping=False,
                max_msg_size=max_msg_size,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            # Jellyfin refused the upgrade (403 without a token, 302 outside BaseUrl): pass its answer on.
            if exc.status and exc.status != 101:
                headers = end_to_end_headers(exc.headers) if exc.headers else CIMultiDict()
                for name in ("Content-Length", "Content-Type", "Content-Encoding"):
                    headers.popall(name, None)
                return web.Response(
                    status=exc.status,
                    headers=headers,
                    text=f"Jellyfin refused the WebSocket upgrade ({exc.status})",
                )
            return _gateway_error(request, 502, "Jellyfin answered the WebSocket upgrade wrongly")
        except (aiohttp.ServerTimeoutError, aiohttp.ClientConnectorError) as exc:
            return _unreachable(request, exc)
        except (aiohttp.ClientError, OSError) as exc:
            return _gateway_error(
                request, 502, f"Jellyfin broke off the WebSocket upgrade ({type(exc).__name__})"
            )

        async with upstream:
            client = web.WebSocketResponse(
                protocols=(upstream.protocol,) if upstream.protocol else (),
                autoclose=False,
                autoping=False,
                max_msg_size=max_msg_size,
            )
            try:
                await client.prepare(request)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                return client
            await _relay_frames(client, upstream)
        return client


async def _relay_frames(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    to_upstream = asyncio.create_task(_pump(client, upstream, lost_code=1001))
    to_client = asyncio.create_task(_pump(upstream, client, lost_code=1011))
    try:
        _, pending = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        # The other direction ends on its own once the close handshake is done; give it a moment.
        if pending:
            await asyncio.wait(pending, timeout=10.0)
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        for ws in (client, upstream):
            if not ws.closed:
                await ws.close(code=1001)


_Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: _Socket, sink: _Socket, *, lost_code: int) -> None:
    """Copy frames one way; relay a close handshake with its code and reason."""
    try:
        while True:
            msg = await source.receive()
            if msg.type is WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type is WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type is WSMsgType.PONG:
                await sink.pong(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                code = _sendable_close_code(msg.data)
                reason = (msg.extra or "").encode()
                # Finish the handshake on the far side first, then answer the side that started it.
                await sink.close(code=code, message=reason)
                await source.close(code=code, message=reason)
                return
            elif msg.type is WSMsgType.CLOSING:
                # The other direction is closing this socket after a close frame; it finishes the job.
                return
            else:  # CLOSED, ERROR: the source is gone without a proper close, or broke the size limit
                if not sink.closed:
                    await sink.close(code=_failure_code(msg, lost_code))
                return
    except (ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError):
        if not sink.closed:
            await sink.close(code=lost_code)


def _failure_code(msg: aiohttp.WSMessage, lost_code: int) -> int:
    """1009 for a message over the limit (aiohttp has closed the source with it), else ``lost_code``.

    The far side hears the real reason, so that neither end mistakes a refused message for an outage.
    """
    if (
        msg.type is WSMsgType.ERROR
        and isinstance(msg.data, WebSocketError)
        and msg.data.code == WSCloseCode.MESSAGE_TOO_BIG
    ):
        return int(WSCloseCode.MESSAGE_TOO_BIG)
    return lost_code


def _sendable_close_code(code: object) -> int:
    if isinstance(code, int) and 1000 <= code <= 4999 and code not in _UNSENDABLE_CLOSE_CODES:
        return code
    return 1000


def client_location(origin: str, location: str, seen: MultiMapping[str], scheme: str) -> str:
    """An absolute Location on Jellyfin's own origin, moved to the origin the client used.

    Jellyfin builds absolute redirects (``<BaseUrl>/web`` → ``…/web/``) from the Host it sees; sent on
    as they are, they would lead the client past the gateway. ``seen`` holds the forwarding headers
    computed for the request (forwarding.py), ``scheme`` the one it came in with.
    """
    rest = location[len(origin) :]
    if location[: len(origin)].lower() != origin.lower() or rest[:1] not in ("", "/", "?", "#"):
        return location
    host = seen.get("X-Forwarded-Host", "").split(",")[0].strip()
    proto = seen.get("X-Forwarded-Proto", scheme).split(",")[0].strip().lower()
    if not host or proto not in ("http", "https"):
        return location
    return f"{proto}://{host}{rest}"


def _wants_websocket(request: web.Request) -> bool:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return False
    return any("upgrade" in value.lower() for value in request.headers.getall("Connection", ()))


async def _stream(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await content.readany():
        yield chunk


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _unreachable(
    request: web.Request, exc: aiohttp.ServerTimeoutError | aiohttp.ClientConnectorError
) -> web.Response:
    """Connect failures and connect timeouts are 502; a read timeout (Jellyfin silent) is 504."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _gateway_error(request, 502, "Jellyfin did not accept the connection in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The client learns the cause; only the log learns the address (exc names host and port).
        return _gateway_error(request, 502, f"Jellyfin is unreachable ({connect_failure(exc)})", detail=exc)
    return _gateway_error(request, 504, "Jellyfin did not answer in time")


def _gateway_error(
    request: web.Request, status: int, reason: str, *, detail: Exception | None = None
) -> web.Response:
    """A plain-text error for the client; ``detail`` (addresses and such) goes to the log only."""
    text = gateway_error(request.method, request.raw_path, status, reason, detail)
    return web.Response(status=status, text=text)


def gateway_error(method: str, target: str, status: int, reason: str, detail: object = None) -> str:
    """Log a proxied request's failure once and return the text its client gets (both paths use it)."""
    if detail is None:
        logger.warning("%s %s -> %d: %s", method, redact_target(target), status, reason)
    else:
        logger.warning("%s %s -> %d: %s [%s]", method, redact_target(target), status, reason, detail)
    return f"{status} {reason}\n"
