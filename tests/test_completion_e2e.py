"""From search to screen, with real components: a real download between two qbittorrent-nox processes,
started through the gateway into a library, ends in exactly one Jellyfin notification.

Seeder and leecher are the same qBittorrent version (4.5 and 5.1 each). The Jellyfin stand-in sees
the file under /media (its view); qBittorrent saves under <tmp>/library (PATH_MAP).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.keys import WATCHER
from gateway.tags import NOTIFIED_TAG, tags_of
from tests.conftest import ServerFactory, Stack, StackFactory, server_url, wait_until
from tests.jellyfin_standin import create_standin
from tests.torrent_files import add_peer, seed, wait_complete, write_payload

pytestmark = pytest.mark.slow

#: How long Jellyfin may wait for its notification after qBittorrent reports the download complete:
#: one poll interval (1 s), qBittorrent's 1.5 s state refresh, and the calls themselves.
NOTIFY_WITHIN = 15.0


@pytest.fixture
async def world(stack_factory: StackFactory) -> Stack:
    """Seeder and leecher (``world.qbt``, the gateway's), a gateway API key, no apibay; each test
    starts its gateway(s) itself."""
    return await stack_factory(seeder=True, api_key=True, apibay=False, gateway=False)


async def _start_download(http: aiohttp.ClientSession, world: Stack, gateway: URL, name: str) -> str:
    payload = write_payload(world.seeder.downloads / "seed", name, 256 * 1024)
    info_hash = await seed(world.seeder, payload)
    # Saved as it is named (Organize false): tests/test_landing_e2e.py covers organized downloads.
    body = {"Info_hash": info_hash.upper(), "Name": name, "Library": "Movies", "Organize": False}
    async with http.post(gateway / "torrent" / "download", headers=world.headers, json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    assert answer["SavePath"] == str(world.qbt.downloads.parent / "library" / "movies")
    await add_peer(world.qbt, info_hash, world.seeder.torrent_port)
    return info_hash


def _updates(world: Stack) -> list[str]:
    return [update.path for update in world.jellyfin.media_updates]


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
    http: aiohttp.ClientSession, world: Stack
) -> None:
    gateway = await world.start_gateway()
    # Two browsers watching live progress, fed by the one poller.
    streams = [
        await http.get(server_url(gateway, "/torrent/events"), headers=world.headers) for _ in range(2)
    ]
    seen: list[list[dict[str, Any]]] = [[], []]
    readers = [asyncio.create_task(_read_events(s, e)) for s, e in zip(streams, seen, strict=True)]
    try:
        info_hash = await _start_download(http, world, server_url(gateway), "Big Buck Bunny (2008)")
        started = time.monotonic()  # the magnet is in qBittorrent and knows its peer
        told = asyncio.create_task(wait_until(lambda: len(_updates(world)) == 1, 60))
        await wait_complete(world.qbt, info_hash, timeout=60)
        completed = time.monotonic()
        assert await told, json.dumps(gateway.app[WATCHER].status())
        done = time.monotonic()
        print(
            f"[{world.qbt.version}] magnet to Jellyfin told: {done - started:.2f} s; "
            f"after qBittorrent's API showed it complete: {max(0.0, done - completed):.2f} s"
        )
        assert _updates(world) == ["/media/movies/Big Buck Bunny (2008)"]
        assert world.jellyfin.library_refreshes == 0
        for events in seen:
            assert await wait_until(lambda events=events: _progress(events, info_hash) >= 1.0, 10)  # type: ignore[misc]
    finally:
        for reader in readers:
            reader.cancel()
        for stream in streams:
            stream.close()
    # The tag follows the announcement (a few ms later): it is what makes the announcement happen once.
    torrent: dict[str, Any] = {}

    async def tagged() -> bool:
        nonlocal torrent
        torrent = (await world.qbt.torrents(hashes=info_hash))[0]
        return "jellyfin-gateway-notified" in torrent["tags"]

    assert await wait_until(tagged, 5, interval=0.1), torrent
    downloaded = Path(torrent["content_path"])
    assert downloaded.read_bytes() == (world.seeder.downloads / "seed" / "Big Buck Bunny (2008)").read_bytes()

    # The announcement is recorded in qBittorrent: a restarted gateway does not repeat it. The first
    # gateway has seen the tag in its own poll too: it is done with this torrent.
    first = gateway.app[WATCHER]
    assert await wait_until(lambda: NOTIFIED_TAG in tags_of(first.torrents.get(info_hash, {})), 10)
    await gateway.stop()
    again = await world.start_gateway()
    watcher = again.app[WATCHER]
    assert await wait_until(lambda: watcher.polls >= 3, 10)
    assert _updates(world) == ["/media/movies/Big Buck Bunny (2008)"]


async def test_jellyfin_down_at_completion_is_told_when_it_comes_back(
    http: aiohttp.ClientSession,
    world: Stack,
    aiohttp_server: ServerFactory,
) -> None:
    gateway = await world.start_gateway()
    info_hash = await _start_download(http, world, server_url(gateway), "Sintel (2010)")
    port = world.jellyfin_server.port
    await world.jellyfin_server.close()  # Jellyfin goes down before the download finishes
    await wait_complete(world.qbt, info_hash, timeout=60)
    watcher = gateway.app[WATCHER]
    assert await wait_until(lambda: watcher.last_error is not None, 10)
    assert watcher.pending() == [info_hash]
    await asyncio.sleep(2)
    back = await aiohttp_server(create_standin(state=world.jellyfin), port=port)
    assert back.port == port
    assert await wait_until(lambda: len(_updates(world)) == 1, 90), watcher.status()
    assert _updates(world) == ["/media/movies/Sintel (2010)"]
    polls = watcher.polls  # two more polls see it done, and tell Jellyfin nothing more
    assert await wait_until(lambda: watcher.polls >= polls + 2, 10)
    assert len(_updates(world)) == 1


async def test_several_gateway_processes_tell_jellyfin_once(
    http: aiohttp.ClientSession, world: Stack, gateway_process: Any
) -> None:
    settings = world.settings
    gw = await gateway_process(
        {
            "JELLYFIN_URL": str(world.jellyfin_url),
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
    await wait_complete(world.qbt, info_hash, timeout=60)
    assert await wait_until(lambda: len(_updates(world)) == 1, NOTIFY_WITHIN)
    await asyncio.sleep(3)
    assert _updates(world) == ["/media/movies/Tears of Steel (2012)"]
    assert settings["qbittorrent_password"] not in gw.log_text()
    assert settings["jellyfin_api_key"] not in gw.log_text()
