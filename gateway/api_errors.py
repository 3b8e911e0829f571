"""How the /torrent API answers failures: always JSON ``{"error": reason}``, never a traceback.

One middleware maps every exception a handler lets through to its status, so handlers raise and
never build error responses themselves. Any upstream's failure (an
:class:`~gateway.upstream.UpstreamError`) is a 500 with its reason, as the API's spec says.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from .upstream import UpstreamError
from .validation import BadRequest

logger = logging.getLogger(__name__)


def json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error under /torrent as JSON: clients of this API parse JSON, never HTML."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_error(400, str(exc))
    except UpstreamError as exc:
        logger.warning("%s %s -> 500: %s", request.method, request.rel_url.path, exc.reason)
        return json_error(500, exc.reason)
    except web.HTTPException as exc:
        if exc.empty_body or exc.status < 400:
            raise
        response = json_error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.rel_url.path)
        return json_error(500, "Internal error in the gateway")
