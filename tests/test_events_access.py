"""GET /torrent/events under abuse: access ends with the caller's elevation, listeners are capped.

The stream outlives the admin check at its start, so it asks again through the same cached check;
the stub qBittorrent (tests/test_watcher.py) keeps torrent names flowing the whole time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.keys import WATCHER
from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, server_url, wait_until
from tests.jellyfin_standin import StandinState
from tests.qbittorrent_stub import StubQbittorrent, complete_torrents, create_stub_qbittorrent
from tests.sse import SseEvent, read_events

#: ELEVATION_CACHE_TTL of these gateways, short so that the tests are.
TTL = 0.5

Event = SseEvent


@pytest.fixture
async def qbt_stub_server(aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(
        create_stub_qbittorrent(StubQbittorrent(torrents=complete_torrents("Secret")))
    )


@pytest.fixture
async def gateway(
    jellyfin: TestServer, qbt_stub_server: TestServer, gateway_factory: GatewayFactory
) -> RunningGateway:
    return await gateway_factory(
        server_url(jellyfin),
        qbittorrent_url=server_url(qbt_stub_server),
        elevation_cache_ttl=TTL,
        watch_interval=0.1,
    )


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f'MediaBrowser Token="{token}"'}


def _demote(state: StandinState, token: str) -> None:
    state.user_by_name("admin").is_administrator = False


def _disable(state: StandinState, token: str) -> None:
    state.user_by_name("admin").is_disabled = True


def _revoke(state: StandinState, token: str) -> None:
    state.revoke_token(token)


@pytest.mark.parametrize(
    ("lose_access", "status"),
    [(_demote, 403), (_disable, 401), (_revoke, 401)],
    ids=["demoted", "disabled", "revoked"],
)
async def test_a_caller_who_loses_admin_rights_gets_an_error_event_and_the_stream_ends_within_the_ttl(
    http: aiohttp.ClientSession,
    gateway: RunningGateway,
    standin_state: StandinState,
    lose_access: Callable[[StandinState, str], None],
    status: int,
) -> None:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    events: list[Event] = []
    async with http.get(server_url(gateway, "/torrent/events"), headers=_headers(token)) as stream:
        assert stream.status == 200
        reader = asyncio.create_task(read_events(stream, events))
        try:
            assert await wait_until(lambda: any(kind == "snapshot" for _, kind, _ in events))
            assert events[0][2]["torrents"][0]["name"] == "Secret"
            # Still an admin: the stream is re-checked (Jellyfin asked again after the TTL) and goes on.
            asked = standin_state.calls["GET /users/me"]
            assert await wait_until(lambda: standin_state.calls["GET /users/me"] >= asked + 2, 5 * TTL + 2)
            assert not reader.done()
            lose_access(standin_state, token)
            lost_at = time.monotonic()
            await asyncio.wait_for(reader, TTL + 5)  # the gateway ends the stream
        finally:
            reader.cancel()
    at, kind, data = events[-1]
    assert kind == "error"
    assert data["status"] == status
    assert data["error"]
    assert at - lost_at <= TTL + 1.5
    assert standin_state.calls["GET /users/me"] > asked


async def test_a_33rd_listener_gets_a_503_and_a_freed_place_is_taken_again(
    http: aiohttp.ClientSession, gateway: RunningGateway, standin_state: StandinState
) -> None:
    assert gateway.settings.events_max_listeners == 32
    headers = _headers(standin_state.issue_token(standin_state.user_by_name("admin")))
    url = server_url(gateway, "/torrent/events")
    streams = [await http.get(url, headers=headers) for _ in range(32)]
    try:
        assert [s.status for s in streams] == [200] * 32
        watcher = gateway.app[WATCHER]
        assert await wait_until(lambda: watcher.subscribers == 32)
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 503
            assert resp.content_type == "application/json"
            assert "listeners" in (await resp.json())["error"]
        streams.pop().close()
        assert await wait_until(lambda: watcher.subscribers == 31)
        streams.append(await http.get(url, headers=headers))
        assert streams[-1].status == 200
    finally:
        for stream in streams:
            stream.close()
