"""The public OpenAPI document describes every /torrent route the gateway serves, and nothing else."""

from __future__ import annotations

import aiohttp

from gateway.routing import _CaseInsensitiveSubApp
from tests.conftest import RunningGateway, server_url


async def test_every_torrent_route_is_documented_with_its_method(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway
) -> None:
    async with http.get(server_url(jellyfin_gateway, "/Torrent/OpenAPI.json")) as resp:
        assert resp.status == 200
        document = await resp.json()
    documented = {
        (path.lower(), method.upper()) for path, item in document["paths"].items() for method in item
    }
    [mount] = [r for r in jellyfin_gateway.app.router.resources() if isinstance(r, _CaseInsensitiveSubApp)]
    served = {
        (route.resource.canonical.removeprefix("/torrent"), route.method)
        for route in mount
        if route.method != "HEAD" and route.resource is not None and "/ui" not in route.resource.canonical
    }
    served.discard(("/openapi.json", "GET"))
    assert documented == served
    assert len(served) == 14  # the spec's 9, /events, /health, /libraries/mapped, /landings and /find
    for item in document["paths"].values():
        for operation in item.values():
            assert "200" in operation["responses"]
            assert "401" in operation["responses"]
