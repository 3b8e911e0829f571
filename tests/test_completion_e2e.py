"""From search to screen, with real components: a real download between two qbittorrent-nox processes,
started through the gateway into a library, ends in exactly one Jellyfin notification.

Seeder and leecher are the same qBittorrent version (4.5 and 5.1 each). The Jellyfin stand-in sees
the file under /media (its view); qBittorrent saves under <tmp>/library (PATH_MAP).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.keys import WATCHER
from tests.conftest import (
    GatewayFactory,
    QbtFactory,
    ServerFactory,
    qbittorrent_settings,
    server_url,
    wait_until,
)
from tests.jellyfin_standin import StandinState, create_standin
from tests.qbittorrent_nox import QbtInstance
from tests.torrent_files import add_peer, seed, wait_complete, write_payload

pytestmark = pytest.mark.slow

#: How long Jellyfin may wait for its notification after qBittorrent reports the download complete:
#: one poll interval (1 s), qBittorrent's 1.5 s state refresh, and the calls themselves.
NOTIFY_WITHIN = 15.0


@dataclass
class World:
    seeder: QbtInstance
    leecher: QbtInstance
    jellyfin: TestServer
    standin: StandinState
    admin: dict[str, str]
    settings: dict[str, Any]


@pytest.fixture
async def world(qbt_factory: QbtFactory, jellyfin: TestServer, standin_state: StandinState) -> World:
    seeder, leecher = await asyncio.gather(qbt_factory(), qbt_factory())
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    settings = {**qbittorrent_settings(leecher), "jellyfin_api_key": standin_state.api_key_for("gateway")}
    admin = {"Authorization": f'MediaBrowser Token="{token}"'}
    return World(seeder, leecher, jellyfin, standin_state, admin, settings)


async def _start_download(http: aiohttp.ClientSession, world: World, gateway: URL, name: str) -> str:
    payload = write_payload(world.seeder.downloads / "seed", name, 256 * 1024)
    info_hash = await seed(world.seeder, payload)
    body = {"Info_hash": info_hash.upper(), "Name": name, "Library": "Movies"}
    async with http.post(gateway / "torrent" / "download", headers=world.admin, json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    assert answer["SavePath"] == str(world.leecher.downloads.parent / "library" / "movies")
    await add_peer(world.leecher, info_hash, world.seeder.torrent_port)
    return info_hash


def _updates(world: World) -> list[str]:
    return [update.path for update in world.standin.media_updates]


async def _read_events(response: aiohttp.ClientResponse, events: list[dict[str, Any]]) -> None:
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))


def _progress(events: list[dict[str, Any]], info_hash: str) -> float:
    best = 0.0
    for data in events:
        torrents = data["torrents"]
        items = torrents.values() if isinstance(torrents, dict) else torrents
        for torrent in items:
            if torrent.get("hash") == info_hash and isinstance(torrent.get("progress"), int | float):
                best = max(best, float(torrent["progress"]))
    return best


async def test_a_finished_download_reaches_jellyfin_exactly_once(
    http: aiohttp.ClientSession, world: World, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(world.jellyfin), **world.settings)
    # Two browsers watching live progress, fed by the one poller.
    streams = [await http.get(server_url(gateway, "/torrent/events"), headers=world.admin) for _ in range(2)]
    seen: list[list[dict[str, Any]]] = [[], []]
    readers = [asyncio.create_task(_read_events(s, e)) for s, e in zip(streams, seen, strict=True)]
    try:
        info_hash = await _start_download(http, world, server_url(gateway), "Big Buck Bunny (2008)")
        started = time.monotonic()  # the magnet is in qBittorrent and knows its peer
        told = asyncio.create_task(wait_until(lambda: len(_updates(world)) == 1, 60))
        await wait_complete(world.leecher, info_hash, timeout=60)
        completed = time.monotonic()
        assert await told, json.dumps(gateway.app[WATCHER].status())
        done = time.monotonic()
        print(
            f"[{world.leecher.version}] magnet to Jellyfin told: {done - started:.2f} s; "
            f"after qBittorrent's API showed it complete: {max(0.0, done - completed):.2f} s"
        )
        assert _updates(world) == ["/media/movies/Big Buck Bunny (2008)"]
        assert world.standin.library_refreshes == 0
        for events in seen:
            assert await wait_until(lambda events=events: _progress(events, info_hash) >= 1.0, 10)  # type: ignore[misc]
    finally:
        for reader in readers:
            reader.cancel()
        for stream in streams:
            stream.close()
    # The tag follows the announcement (a few ms later): it is what makes the announcement happen once.
    for _ in range(50):
        torrent = (await world.leecher.torrents(hashes=info_hash))[0]
        if "jellyfin-gateway-notified" in torrent["tags"]:
            break
        await asyncio.sleep(0.1)
    assert "jellyfin-gateway-notified" in torrent["tags"]
    downloaded = Path(torrent["content_path"])
    assert downloaded.read_bytes() == (world.seeder.downloads / "seed" / "Big Buck Bunny (2008)").read_bytes()

    # The announcement is recorded in qBittorrent: a restarted gateway does not repeat it.
    await asyncio.sleep(2.5)
    await gateway.stop()
    again = await gateway_factory(server_url(world.jellyfin), **world.settings)
    watcher = again.app[WATCHER]
    assert await wait_until(lambda: watcher.polls >= 3, 10)
    assert _updates(world) == ["/media/movies/Big Buck Bunny (2008)"]


async def test_jellyfin_down_at_completion_is_told_when_it_comes_back(
    http: aiohttp.ClientSession,
    world: World,
    gateway_factory: GatewayFactory,
    aiohttp_server: ServerFactory,
) -> None:
    gateway = await gateway_factory(server_url(world.jellyfin), **world.settings)
    info_hash = await _start_download(http, world, server_url(gateway), "Sintel (2010)")
    port = world.jellyfin.port
    await world.jellyfin.close()  # Jellyfin goes down before the download finishes
    await wait_complete(world.leecher, info_hash, timeout=60)
    watcher = gateway.app[WATCHER]
    assert await wait_until(lambda: watcher.last_error is not None, 10)
    assert watcher.pending() == [info_hash]
    await asyncio.sleep(2)
    back = await aiohttp_server(create_standin(state=world.standin), port=port)
    assert back.port == port
    assert await wait_until(lambda: len(_updates(world)) == 1, 90), watcher.status()
    assert _updates(world) == ["/media/movies/Sintel (2010)"]
    await asyncio.sleep(2)
    assert len(_updates(world)) == 1


async def test_several_gateway_processes_tell_jellyfin_once(
    http: aiohttp.ClientSession, world: World, gateway_process: Any
) -> None:
    settings = world.settings
    gw = await gateway_process(
        {
            "JELLYFIN_URL": str(server_url(world.jellyfin)),
            "GATEWAY_WORKERS": "2",
            "QBITTORRENT_URL": str(settings["qbittorrent_url"]),
            "QBITTORRENT_USERNAME": settings["qbittorrent_username"],
            "QBITTORRENT_PASSWORD": settings["qbittorrent_password"],
            "JELLYFIN_API_KEY": settings["jellyfin_api_key"],
            "PATH_MAP": f"/media={settings['path_map'][0][1]}",
            "TRACKERS": "",
            "APIBAY_URL": "http://127.0.0.1:9",
        }
    )
    info_hash = await _start_download(http, world, gw.url, "Tears of Steel (2012)")
    await wait_complete(world.leecher, info_hash, timeout=60)
    assert await wait_until(lambda: len(_updates(world)) == 1, NOTIFY_WITHIN)
    await asyncio.sleep(3)
    assert _updates(world) == ["/media/movies/Tears of Steel (2012)"]
    assert settings["qbittorrent_password"] not in gw.log_text()
    assert settings["jellyfin_api_key"] not in gw.log_text()
