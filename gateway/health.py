"""``GET /torrent/health``: can the gateway reach Jellyfin, qBittorrent and apibay; the watcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from .keys import APIBAY, JELLYFIN, LIBRARY_INDEX, QBITTORRENT, TORZNAB, WATCHER
from .torznab import TorznabClient
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

    async def torznab(client: TorznabClient) -> dict[str, Any]:
        return {"functions": await client.functions()}  # never its URL: that carries the API key

    indexers = config[TORZNAB]
    checks = await asyncio.gather(
        _timed(jellyfin()),
        _timed(qbittorrent()),
        _timed(apibay()),
        *(_timed(torznab(client)) for client in indexers),
    )
    return web.json_response(
        {
            "jellyfin": checks[0],
            "qbittorrent": checks[1],
            "apibay": checks[2],
            "torznab": {client.name: check for client, check in zip(indexers, checks[3:], strict=True)},
            "library_index": config[LIBRARY_INDEX].stats(),
            "watcher": config[WATCHER].status(),
        }
    )
