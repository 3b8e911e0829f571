"""BASE/torrent belongs to the gateway, in any letter case; everything else goes to Jellyfin."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, server_url
from tests.jellyfin_standin import StandinState, create_standin

TORRENT_TARGETS = [
    "/torrent",
    "/torrent/",
    "/torrent/nope",
    "/TORRENT/NOPE",
    "/Torrent/x?q=1",
    "/torrent/a/b/c",
]


@pytest.mark.parametrize("target", TORRENT_TARGETS)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_torrent_paths_without_a_token_get_401_json_and_never_reach_jellyfin(
    http: aiohttp.ClientSession,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    target: str,
    method: str,
) -> None:
    async with http.request(method, server_url(jellyfin_gateway, target)) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()
    assert sum(standin_state.calls.values()) == 0


@pytest.mark.parametrize("target", TORRENT_TARGETS)
async def test_unknown_torrent_paths_give_an_admin_404_json_and_are_never_forwarded(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState, target: str
) -> None:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    headers = {"Authorization": f'MediaBrowser Token="{token}"'}
    async with http.post(server_url(jellyfin_gateway, target), headers=headers) as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
    # Only the admin check itself reached Jellyfin.
    assert set(standin_state.calls) == {"GET /users/me"}


async def test_test1_answers_in_any_letter_case(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    key = standin_state.api_key_for("gateway")
    for target in ("/torrent/Test1", "/TORRENT/TEST1", "/torrent/test1/"[:-1]):
        async with http.get(server_url(jellyfin_gateway, f"{target}?ApiKey={key}")) as resp:
            assert resp.status == 200
            assert await resp.json() == "test 1 success"


@pytest.mark.parametrize("target", ["/torrents", "/torrentx/y", "/web/torrent", "/Items?path=/torrent"])
async def test_paths_that_only_look_like_torrent_are_proxied(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState, target: str
) -> None:
    async with http.get(server_url(jellyfin_gateway, target), allow_redirects=False) as resp:
        await resp.read()
    assert sum(standin_state.calls.values()) == 1


async def test_with_a_base_url_only_base_torrent_is_the_gateways(
    http: aiohttp.ClientSession,
    aiohttp_server: ServerFactory,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
) -> None:
    jellyfin = await aiohttp_server(create_standin(base_url="/jellyfin", state=standin_state))
    gateway = await gateway_factory(server_url(jellyfin, "/jellyfin"))
    async with http.get(server_url(gateway, "/JellyFin/Torrent/Test1")) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
    assert sum(standin_state.calls.values()) == 0
    async with http.get(server_url(gateway, "/torrent/Test1"), allow_redirects=False) as resp:
        assert resp.status == 302  # outside the BaseUrl: Jellyfin's redirect, as without the gateway
    assert sum(standin_state.calls.values()) == 1


async def test_a_websocket_upgrade_under_torrent_is_not_relayed(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(server_url(jellyfin_gateway, "/torrent/socket"))
    assert refused.value.status == 401
    assert standin_state.websockets == []
