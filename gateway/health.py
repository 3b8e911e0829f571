"""``GET /torrent/health``: can the gateway reach Jellyfin, qBittorrent and apibay; the watcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from .keys import APIBAY, JELLYFIN, QBITTORRENT, WATCHER
from .upstream import UpstreamError


async def _timed(check: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result = {"ok": True, **await check}
    except UpstreamError as exc:
        result = {"ok": False, "error": exc.reason}
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


async def health(request: web.Request) -> web.Response:
    """``GET /torrent/health``: can the gateway reach Jellyfin, qBittorrent and apibay; the watcher."""
    config = request.config_dict

    async def jellyfin() -> dict[str, Any]:
        info = await config[JELLYFIN].public_info()
        return {"version": info.version, "server_name": info.server_name}

    async def qbittorrent() -> dict[str, Any]:
        client = config[QBITTORRENT]
        return {
            "version": await client.app_version(),
            "webapi_version": ".".join(map(str, await client.webapi_version())),
        }

    async def apibay() -> dict[str, Any]:
        await config[APIBAY].search("jellyfin", "0")
        return {}

    checks = await asyncio.gather(_timed(jellyfin()), _timed(qbittorrent()), _timed(apibay()))
    return web.json_response(
        {
            "jellyfin": checks[0],
            "qbittorrent": checks[1],
            "apibay": checks[2],
            "watcher": config[WATCHER].status(),
        }
    )
