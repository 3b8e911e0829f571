"""``GET /torrent/events``: live torrent changes as Server-Sent Events, for admins only, while they are.

Every listener shares the watcher's one poller. The caller's admin rights are asked again while the
stream is open, so a demoted, disabled or signed-out admin stops receiving torrent names and paths.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .api_errors import json_error
from .auth import ADMIN_CHECK, Decision
from .keys import SETTINGS, WATCHER
from .watcher import sse

logger = logging.getLogger(__name__)

#: Seconds between SSE comments that keep idle proxies and browsers from closing the stream.
SSE_KEEPALIVE = 15.0
#: Longest a /torrent/events listener goes without its admin rights being checked again (the cached
#: check answers from memory within ELEVATION_CACHE_TTL, so asking often costs Jellyfin nothing more).
EVENTS_RECHECK = 1.0


async def _until_refused(request: web.Request) -> Decision:
    """Re-check the caller's elevation until it is refused; that refusal is the result.

    Checked at least every ELEVATION_CACHE_TTL (and every EVENTS_RECHECK), so a demoted, disabled or
    logged-out admin stops receiving torrent names within the TTL plus that interval. Any doubt fails
    closed, as at the middleware: a Jellyfin that cannot be asked ends the stream too.
    """
    ttl = request.config_dict[SETTINGS].elevation_cache_ttl
    interval = min(ttl, EVENTS_RECHECK) if ttl > 0 else EVENTS_RECHECK
    while True:
        await asyncio.sleep(interval)
        decision = await request[ADMIN_CHECK].ask()
        if not decision.allowed:
            return decision


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /torrent/events``: Server-Sent Events, a ``snapshot`` of all torrents, then ``delta``s.

    Every listener shares the watcher's one poller; a listener that falls far behind is dropped and
    its browser reconnects to a fresh snapshot. At most EVENTS_MAX_LISTENERS per process (503 beyond):
    each costs a socket and a queue of up to 256 events. A caller who stops being an admin gets an
    ``error`` event (``{"error", "status"}``, as the API would answer) and the stream ends.
    """
    watcher = request.config_dict[WATCHER]
    limit = request.config_dict[SETTINGS].events_max_listeners
    if watcher.subscribers >= limit:
        logger.warning("refused a /torrent/events listener: %d already listening", watcher.subscribers)
        return json_error(503, f"Too many live-event listeners (at most {limit}); try again later")
    queue = watcher.subscribe()  # no await before this: the limit holds under concurrent requests
    refused = asyncio.create_task(_until_refused(request))
    next_event: asyncio.Future[str | None] | None = None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        while True:
            next_event = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                (next_event, refused), timeout=SSE_KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if refused in done:
                await response.write(_refusal_event(refused))
                break
            if next_event not in done:
                next_event.cancel()
                await response.write(b": keep-alive\n\n")
                continue
            event = next_event.result()
            if event is None:
                break
            await response.write(event.encode())
    except ConnectionError:
        pass  # the browser went away
    finally:
        if next_event is not None:
            next_event.cancel()
        refused.cancel()
        watcher.unsubscribe(queue)
    return response


def _refusal_event(refused: asyncio.Task[Decision]) -> bytes:
    """The ``error`` event that ends a stream, with the status and reason the API would answer."""
    error = refused.exception()
    if error is None:
        decision = refused.result()
        logger.info("ended a /torrent/events stream: %s", decision.reason)
    else:
        logger.error("re-checking a /torrent/events listener failed", exc_info=error)
        decision = Decision(500, "Internal error in the gateway")
    return sse("error", {"error": decision.reason, "status": decision.status}).encode()
