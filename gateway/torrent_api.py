"""The /torrent API: the gateway's own endpoints, never forwarded to Jellyfin.

Its contract (paths, shapes, status codes) is shared/spec/torrent-api.md; existing clients depend on
it. Routes are registered as lowercase full paths (see routing.py); every route but the public ones
runs behind the admin check.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .auth import ElevationCache, admin_middleware, public
from .forwarding import forwarding_headers
from .settings import Settings

logger = logging.getLogger(__name__)

ELEVATION = web.AppKey("elevation", ElevationCache)
SETTINGS = web.AppKey("settings", Settings)


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
        response = json_error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.rel_url.path)
        return json_error(500, "Internal error in the gateway")


async def test1(request: web.Request) -> web.Response:
    """``GET /torrent/Test1``: proves the caller reached the API as an admin."""
    return web.json_response("test 1 success")


def openapi_document(prefix: str) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "jellyfin-torrent-gateway /torrent API",
            "version": "1",
            "description": "Admin-only: send a Jellyfin administrator's token or an API key.",
        },
        "servers": [{"url": prefix or "/"}],
        "components": {
            "securitySchemes": {
                "MediaBrowser": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": 'MediaBrowser Token="<Jellyfin access token or API key>"',
                },
                "ApiKey": {"type": "apiKey", "in": "query", "name": "ApiKey"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                }
            },
            "responses": {
                "Unauthorized": {
                    "description": "No, invalid or expired token; or a disabled account",
                    "content": {"application/json": {"schema": error}},
                },
                "Forbidden": {
                    "description": "The token's user is not a Jellyfin administrator",
                    "content": {"application/json": {"schema": error}},
                },
                "BadGateway": {
                    "description": "Jellyfin could not be asked who the caller is",
                    "content": {"application/json": {"schema": error}},
                },
            },
        },
        "security": [{"MediaBrowser": []}, {"ApiKey": []}],
        "paths": {
            "/Test1": {
                "get": {
                    "summary": "Check that the caller reaches the API as an administrator",
                    "responses": {
                        "200": {
                            "description": "The caller is an administrator",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "string", "example": "test 1 success"}
                                }
                            },
                        },
                        "401": {"$ref": "#/components/responses/Unauthorized"},
                        "403": {"$ref": "#/components/responses/Forbidden"},
                        "502": {"$ref": "#/components/responses/BadGateway"},
                        "504": {"$ref": "#/components/responses/BadGateway"},
                    },
                }
            }
        },
    }


def create_torrent_app(settings: Settings) -> web.Application:
    """The sub-app mounted at BASE/torrent; it reads shared resources through ``config_dict``."""
    prefix = settings.torrent_prefix.lower()
    trusted = settings.trusted_proxies
    require_admin = admin_middleware(
        cache_for=lambda request: request.config_dict[ELEVATION],
        forwarding_for=lambda request: forwarding_headers(request, trusted).items(),
        refuse=json_error,
    )
    app = web.Application(middlewares=[json_errors, require_admin])
    document = openapi_document(settings.torrent_prefix)

    @public
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get(f"{prefix}/test1", test1)
    app.router.add_get(f"{prefix}/openapi.json", openapi)
    return app
