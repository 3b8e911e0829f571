"""Tiny WebSocket echo server: the WebSocket half of the benchmark's upstream.

Run as `python benchmarks/echo_server.py --port N`; it listens on 127.0.0.1 only and echoes every
text and binary frame back unchanged on any path (the upstream nginx routes `/socket` here).
"""

from __future__ import annotations

import argparse

from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(autoping=True)
    if not ws.can_prepare(request).ok:
        # A plain GET answers 200 so readiness can be polled like every other server here.
        return web.Response(text="websocket echo\n")
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
