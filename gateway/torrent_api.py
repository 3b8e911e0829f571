"""The /torrent API: the gateway's own endpoints, never forwarded to Jellyfin."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

logger = logging.getLogger(__name__)


def json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error under /torrent as JSON: clients of this API parse JSON, never HTML."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.empty_body or exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.rel_url.path)
        return json_error(500, "Internal error in the gateway")


def create_torrent_app(prefix: str) -> web.Application:
    """Routes are registered as lowercase full paths under ``prefix`` (see routing.py)."""
    app = web.Application(middlewares=[json_errors])
    return app
