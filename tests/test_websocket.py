"""WebSocket relay: frames, pings, close codes and refusals pass both ways."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from tests.conftest import GatewayFactory, RunningGateway, free_port, server_url, wait_until
from tests.probe import ProbeState


async def test_text_and_binary_frames_are_relayed(
    http: aiohttp.ClientSession, gateway: RunningGateway
) -> None:
    async with http.ws_connect(server_url(gateway, "/ws")) as ws:
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "hello"
        payload = bytes(range(256)) * 1000
        await ws.send_bytes(payload)
        assert await ws.receive_bytes(timeout=5) == payload


async def test_handshake_headers_query_and_subprotocol_are_forwarded(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    target = "/ws?api_key=abc123&deviceId=TW96aWxsYQ%3D%3D"
    async with http.ws_connect(
        server_url(gateway, target),
        headers={"Authorization": 'MediaBrowser Client="web", Token="abc123"'},
        protocols=("probe.v1",),
    ) as ws:
        assert ws.protocol == "probe.v1"
        await ws.send_str("x")
        await ws.receive_str(timeout=5)
    assert ("open", target) in probe_state.ws_events
    assert ("authorization", 'MediaBrowser Client="web", Token="abc123"') in probe_state.ws_events


async def test_a_client_close_code_and_reason_reach_jellyfin_and_come_back(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    ws = await http.ws_connect(server_url(gateway, "/ws"))
    await ws.send_str("warm-up")
    await ws.receive_str(timeout=5)
    await ws.close(code=4001, message=b"bye")
    assert ws.close_code == 4001
    await asyncio.wait_for(probe_state.ws_closed.wait(), 5)
    assert ("client closed", (4001, "bye")) in probe_state.ws_events


async def test_a_jellyfin_close_code_and_reason_reach_the_client(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    async with http.ws_connect(server_url(gateway, "/ws"), autoclose=False) as ws:
        await ws.send_str("close:4002:server done")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4002, "server done")
        await ws.close(code=msg.data)
    await wait_until(lambda: ("server closed", 4002) in probe_state.ws_events)
    assert ("server closed", 4002) in probe_state.ws_events


async def test_client_pings_reach_jellyfin_and_its_pongs_come_back(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    async with http.ws_connect(server_url(gateway, "/ws"), autoping=False) as ws:
        await ws.ping(b"are-you-there")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.PONG
        assert msg.data == b"are-you-there"
    assert ("ping", b"are-you-there") in probe_state.ws_events


async def test_jellyfin_pings_reach_the_client_and_its_pongs_go_back(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    async with http.ws_connect(server_url(gateway, "/ws"), autoping=False) as ws:
        await ws.send_str("ping:hello")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.PING
        assert msg.data == b"hello"
        await ws.pong(msg.data)
        await wait_until(lambda: ("pong", b"hello") in probe_state.ws_events)
    assert ("pong", b"hello") in probe_state.ws_events


async def test_an_idle_socket_outlives_the_upstream_read_timeout(
    http: aiohttp.ClientSession, probe: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(probe), jellyfin_read_timeout=0.3)
    async with http.ws_connect(server_url(gateway, "/ws"), heartbeat=None) as ws:
        await asyncio.sleep(1.5)
        await ws.send_str("still here")
        assert await ws.receive_str(timeout=5) == "still here"


@pytest.mark.slow
async def test_an_idle_socket_survives_well_past_jellyfins_60_second_keep_alive(
    http: aiohttp.ClientSession, gateway: RunningGateway
) -> None:
    async with http.ws_connect(server_url(gateway, "/ws"), heartbeat=None) as ws:
        await asyncio.sleep(75)
        await ws.send_str("after 75 s")
        assert await ws.receive_str(timeout=5) == "after 75 s"


async def test_a_refused_upgrade_passes_its_status_to_the_client(
    http: aiohttp.ClientSession, gateway: RunningGateway
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(server_url(gateway, "/status/403"))
    assert refused.value.status == 403


async def test_an_upgrade_to_an_unreachable_jellyfin_gives_502(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(server_url(gateway, "/socket"))
    assert refused.value.status == 502


async def test_jellyfin_vanishing_closes_the_client_socket_with_1011(
    http: aiohttp.ClientSession, gateway: RunningGateway
) -> None:
    async with http.ws_connect(server_url(gateway, "/ws")) as ws:
        await ws.send_str("drop")
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1011
