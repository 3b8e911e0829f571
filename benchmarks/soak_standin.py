"""The Jellyfin stand-in (tests/jellyfin_standin.py) as a process of its own, for the soak.

    python benchmarks/soak_standin.py --port P --admin-token T --user-token U --api-key K \
        --media-bytes N --notifications FILE

Fixed tokens and API key (given on the command line) make a restarted stand-in accept the same
clients and the same gateway. Every library notification it receives (``POST /Library/Media/Updated``
paths, ``POST /Library/Refresh``) is appended to FILE as one JSON line, so the soak can count them
across restarts. The stand-in's per-request and per-WebSocket-message history (meant for test
assertions) is not kept: a soak would otherwise grow it without bound. Listens on 127.0.0.1 only;
SIGTERM/SIGINT shut it down like Jellyfin going away (open WebSockets get 1001).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.jellyfin_standin import (  # noqa: E402 - needs ROOT on sys.path first
    Device,
    RequestRecord,
    StandinState,
    WebSocketRecord,
    create_standin,
    deterministic_media,
)


class _Discarded(list[str | bytes]):
    """A WebSocket record's message list that keeps nothing."""

    def append(self, item: str | bytes) -> None:
        pass


class _WebSocketRecords(list[WebSocketRecord]):
    """Keeps no handshake records, and makes each record forget the messages it sees."""

    def append(self, record: WebSocketRecord) -> None:
        record.received = _Discarded()


class _RequestRecords(list[RequestRecord]):
    """Keeps no request records."""

    def append(self, record: RequestRecord) -> None:
        pass


def build_state(args: argparse.Namespace) -> StandinState:
    state = StandinState(server_id=args.server_id, media_size=1)
    state.set_media(deterministic_media(args.media_bytes))
    admin = state.user_by_name("admin")
    alice = state.user_by_name("alice")
    for token, user in ((args.admin_token, admin), (args.user_token, alice)):
        state.tokens[token] = user.id
        state.devices[token] = Device(
            access_token=token,
            user_id=user.id,
            app_name="soak",
            app_version="1.0",
            device_name="soak",
            device_id=f"soak-{user.name}",
        )
    state.api_keys[args.api_key] = "soak-gateway"
    state.api_key_created[args.api_key] = datetime.now(UTC)
    state.requests = _RequestRecords()
    state.websockets = _WebSocketRecords()
    return state


def notification_recorder(state: StandinState, out: IO[str]) -> Middleware:
    """After each request, append the notifications it added to the state to ``out``."""
    refreshes_seen = 0

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal refreshes_seen
        try:
            return await handler(request)
        finally:
            lines = [
                {"t": time.time(), "call": "/Library/Media/Updated", "path": update.path}
                for update in state.media_updates
            ]
            state.media_updates.clear()
            lines += [{"t": time.time(), "call": "/Library/Refresh", "path": None}] * (
                state.library_refreshes - refreshes_seen
            )
            refreshes_seen = state.library_refreshes
            if lines:
                out.write("".join(json.dumps(line) + "\n" for line in lines))
                out.flush()

    return record


async def serve(args: argparse.Namespace, notifications: IO[str]) -> None:
    state = build_state(args)
    app = create_standin(state=state)
    app.middlewares.append(notification_recorder(state, notifications))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
        print(f"stand-in listening on 127.0.0.1:{args.port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--user-token", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--server-id", default=None, help="32 hex; the same across restarts, like Jellyfin's")
    parser.add_argument("--media-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--notifications", type=Path, required=True)
    args = parser.parse_args(argv)
    with open(args.notifications, "a", encoding="utf-8") as notifications:
        asyncio.run(serve(args, notifications))
    return 0


if __name__ == "__main__":
    sys.exit(main())
