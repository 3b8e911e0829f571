"""An upstream that reports what it received, for testing proxy semantics differentially.

The Jellyfin stand-in (jellyfin_standin.py) is faithful to Jellyfin's API; this one exists to exercise
HTTP corners that Jellyfin uses but that are tedious to reach through its API: every method, odd
targets, bodies of any size, Range, 204/304, chunked, gzip, cookies, redirects, stalls and WebSocket
close codes and pings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

CHUNK = b"0123456789abcdef" * 65536  # 1 MiB of a known pattern


def pattern(size: int) -> bytes:
    """The first ``size`` bytes of the repeating pattern the probe streams."""
    repeats, rest = divmod(size, len(CHUNK))
    return CHUNK * repeats + CHUNK[:rest]


@dataclass
class ProbeState:
    media_file: Path
    requests: list[dict[str, Any]] = field(default_factory=list)
    stream_ends: list[str] = field(default_factory=list)
    ws_events: list[tuple[str, object]] = field(default_factory=list)
    ws_closed: asyncio.Event = field(default_factory=asyncio.Event)


PROBE = web.AppKey("probe", ProbeState)


async def echo(request: web.Request) -> web.Response:
    """Report the request as received: raw target, headers in order, body digest."""
    digest = hashlib.sha256()
    size = 0
    while chunk := await request.content.readany():
        digest.update(chunk)
        size += len(chunk)
    record: dict[str, object] = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_size": size,
        "body_sha256": digest.hexdigest(),
        "peer": request.remote,
        "peer_port": (request.transport.get_extra_info("peername") or ("", 0))[1] if request.transport else 0,
    }
    request.app[PROBE].requests.append(record)
    return web.json_response(record, headers={"X-Probe": "echo"})


async def stream_bytes(request: web.Request) -> web.StreamResponse:
    """``size`` bytes of the pattern, chunked unless ``length=1``, fast (one 1 MiB object reused)."""
    size = int(request.match_info["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("length") == "1":
        response.content_length = size
    await response.prepare(request)
    try:
        sent = 0
        while sent < size:
            piece = CHUNK if size - sent >= len(CHUNK) else CHUNK[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        request.app[PROBE].stream_ends.append("complete")
    except (ConnectionResetError, asyncio.CancelledError):
        request.app[PROBE].stream_ends.append("client left")
        raise
    return response


async def endless(request: web.Request) -> web.StreamResponse:
    """Streams until the reader goes away, then records how it ended."""
    response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
    await response.prepare(request)
    try:
        for _ in range(100_000):
            await response.write(CHUNK)
        request.app[PROBE].stream_ends.append("complete")
    except ConnectionResetError:
        request.app[PROBE].stream_ends.append("client left")
    except asyncio.CancelledError:
        request.app[PROBE].stream_ends.append("client left")
        raise
    return response


async def media(request: web.Request) -> web.FileResponse:
    """aiohttp's FileResponse: Range/206, If-Range, ETag, Last-Modified, 304 and 416 done properly."""
    return web.FileResponse(request.app[PROBE].media_file, headers={"Content-Type": "video/mp4"})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    headers = {"X-Probe-Status": str(code), "ETag": '"probe"'}
    if code in (204, 304):
        return web.Response(status=code, headers=headers)
    return web.Response(status=code, text=f"status {code}", headers=headers)


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/echo?redirected=1"})


async def cookies(request: web.Request) -> web.Response:
    response = web.json_response({"cookie_header": request.headers.get("Cookie")})
    response.headers.add("Set-Cookie", "a=1; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "b=2; Path=/")
    response.headers.add("Set-Cookie", "c=3; Path=/web")
    return response


async def gzipped(request: web.Request) -> web.Response:
    raw = json.dumps({"compressed": True, "padding": "x" * 4000}).encode()
    compressor = zlib.compressobj(wbits=31)
    body = compressor.compress(raw) + compressor.flush()
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json", "Vary": "Accept"}
    )


async def slow_headers(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "2")))
    return web.Response(text="late")


async def stall_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 2 * len(CHUNK)
    await response.prepare(request)
    await response.write(CHUNK)
    await asyncio.sleep(float(request.query.get("delay", "2")))
    await response.write(CHUNK)
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Echo, plus commands ``close:<code>:<reason>``, ``ping:<data>`` and ``drop``; records what it saw."""
    state = request.app[PROBE]
    ws = web.WebSocketResponse(autoping=False, autoclose=False, protocols=("probe.v1",))
    await ws.prepare(request)
    state.ws_events.append(("open", request.raw_path))
    state.ws_events.append(("authorization", request.headers.get("Authorization")))
    while True:
        msg = await ws.receive()
        if msg.type is WSMsgType.TEXT:
            if msg.data == "drop":  # vanish without a close frame, as a crashing server does
                assert request.transport is not None
                request.transport.abort()
                break
            if msg.data.startswith("close:"):
                _, code, reason = msg.data.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
                state.ws_events.append(("server closed", ws.close_code))
                break
            if msg.data.startswith("ping:"):
                await ws.ping(msg.data[5:].encode())
                continue
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.PING:
            state.ws_events.append(("ping", msg.data))
            await ws.pong(msg.data)
        elif msg.type is WSMsgType.PONG:
            state.ws_events.append(("pong", msg.data))
        elif msg.type is WSMsgType.CLOSE:
            state.ws_events.append(("client closed", (msg.data, msg.extra)))
            await ws.close(code=msg.data, message=(msg.extra or "").encode())
            break
        else:
            break
    state.ws_closed.set()
    return ws


def create_probe(state: ProbeState) -> web.Application:
    app = web.Application()
    app[PROBE] = state
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_get("/bytes/{size:\\d+}", stream_bytes)
    app.router.add_get("/endless", endless)
    app.router.add_get("/media", media)
    app.router.add_route("*", "/status/{code:\\d+}", status)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/slow-headers", slow_headers)
    app.router.add_get("/stall-body", stall_body)
    app.router.add_get("/ws", websocket)
    return app
