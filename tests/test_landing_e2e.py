"""From download to playable, with real components: a scene release downloaded through the gateway
between two qbittorrent-nox processes lands under Jellyfin's names, without its clutter, and the
gateway confirms the item in Jellyfin (the stand-in scans the announced folder as Jellyfin would).

Seeder and leecher are the same qBittorrent version (4.5 and 5.1 each). Jellyfin sees the library
under /media; qBittorrent writes it under <profile>/library (PATH_MAP); the stand-in reads the same
disk through its ``filesystem`` map.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningGateway, Stack, StackFactory, server_url, wait_until
from tests.jellyfin_standin import Library
from tests.sse import SseEvent, read_events
from tests.torrent_files import add_peer, seed, wait_complete, write_payload

pytestmark = pytest.mark.slow

IMDB = "tt0078748"
SEEDING = {"uploading", "stalledUP"}


@pytest.fixture
async def world(stack_factory: StackFactory) -> Stack:
    """Seeder and leecher, a gateway API key (so the gateway announces and looks up), no apibay."""
    world = await stack_factory(seeder=True, api_key=True, apibay=False, gateway=False)
    world.jellyfin.filesystem["/media"] = Path(world.settings["path_map"][0][1])
    return world


def _library(world: Stack) -> Path:
    return Path(world.settings["path_map"][0][1])


def _scene_movie(root: Path) -> Path:
    release = root / "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP"
    write_payload(release, f"{release.name}.mkv", 640 * 1024)
    write_payload(release / "Sample", "alien.1979.sample.mkv", 96 * 1024)
    write_payload(release, f"{release.name}.nfo", 3_000)
    write_payload(release, "Setup.exe", 64 * 1024)
    write_payload(release / "Subs", "English.srt", 4_000)
    return release


def _season_pack(root: Path) -> Path:
    release = root / "Show.Name.S01.1080p.WEB-DL.x264-GRP"
    for episode in (1, 2, 3):
        write_payload(release, f"Show.Name.S01E0{episode}.1080p.WEB-DL.x264-GRP.mkv", 200 * 1024)
    write_payload(release / "Sample", "show.name.s01e01.sample.mkv", 40 * 1024)
    return release


def _visible_files(folder: Path) -> list[str]:
    """Files as Jellyfin lists them: libtorrent's hidden ``.<hash>.parts`` (pieces shared with
    skipped files) is not media and not shown."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


async def _download(
    http: aiohttp.ClientSession, world: Stack, gateway: RunningGateway, body: dict[str, Any]
) -> Any:
    async with http.post(server_url(gateway, "/torrent/download"), headers=world.headers, json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return answer


async def _landing(http: aiohttp.ClientSession, world: Stack, gateway: RunningGateway, info_hash: str) -> Any:
    async with http.get(server_url(gateway, "/torrent/landings"), headers=world.headers) as resp:
        assert resp.status == 200, await resp.text()
        entries = [e for e in await resp.json() if e["Hash"] == info_hash]
    assert len(entries) == 1
    return entries[0]


async def _landing_becomes(
    http: aiohttp.ClientSession,
    world: Stack,
    gateway: RunningGateway,
    info_hash: str,
    state: str,
    timeout: float,
) -> Any:
    entry: Any = None

    async def reached() -> bool:
        nonlocal entry
        entry = await _landing(http, world, gateway, info_hash)
        return bool(entry["State"] == state)

    assert await wait_until(reached, timeout, interval=0.2), entry
    return entry


async def test_a_scene_release_lands_under_jellyfins_names_and_is_confirmed_in_jellyfin(
    http: aiohttp.ClientSession, world: Stack
) -> None:
    # Another library already holds an "Alien (1979)": the first search hit, but not this download.
    old = _library(world) / "old" / "Alien (1979)"
    write_payload(old, "Alien (1979).mkv", 1024)
    world.jellyfin.libraries.append(Library("Old movies", ["/media/old"], "movies"))
    [distractor] = world.jellyfin.scan("/media/old/Alien (1979)")
    gateway = await world.start_gateway()
    events: list[SseEvent] = []
    stream = await http.get(server_url(gateway, "/torrent/events"), headers=world.headers)
    reader = asyncio.create_task(read_events(stream, events))
    try:
        payload = _scene_movie(world.seeder.downloads / "seed")
        info_hash = await seed(world.seeder, payload)
        body = {"Info_hash": info_hash, "Name": payload.name, "Library": "Movies", "Imdb": IMDB}
        answer = await _download(http, world, gateway, body)
        assert answer["Folder"] == f"/media/movies/Alien (1979) [imdbid-{IMDB}]"
        await add_peer(world.qbt, info_hash, world.seeder.torrent_port)
        torrent = await wait_complete(world.qbt, info_hash, timeout=60)

        entry = await _landing_becomes(http, world, gateway, info_hash, "in_jellyfin", 60)
        item = entry.pop("Item")
        assert entry == {
            "Hash": info_hash,
            "Name": payload.name,
            "Library": "Movies",
            "Folder": answer["Folder"],
            "State": "in_jellyfin",
        }
        assert item["Id"] != distractor.id
        assert item["Name"] == "Alien"
        assert item["ProductionYear"] == 1979
        assert item["Type"] == "Movie"
        assert item["ProviderIds"]["Imdb"] == IMDB
        assert item["Url"] == f"/web/#/details?id={item['Id']}&serverId={world.jellyfin.server_id}"
        assert await wait_until(
            lambda: any(kind == "landing" and data["State"] == "in_jellyfin" for _, kind, data in events), 10
        ), events
        assert events[0][1] == "snapshot"
    finally:
        reader.cancel()
        stream.close()

    folder = _library(world) / "movies" / f"Alien (1979) [imdbid-{IMDB}]"
    assert _visible_files(folder) == ["Alien (1979).en.srt", "Alien (1979).mkv"]
    assert (folder / "Alien (1979).mkv").read_bytes() == (payload / f"{payload.name}.mkv").read_bytes()
    assert (folder / "Alien (1979).en.srt").read_bytes() == (payload / "Subs" / "English.srt").read_bytes()
    assert not list(folder.rglob("*sample*"))  # never written
    assert not list(folder.rglob("*.exe"))
    # Complete and seeding; told once.
    torrent = (await world.qbt.torrents(hashes=info_hash))[0]
    assert torrent["progress"] == 1
    assert torrent["state"] in SEEDING, torrent["state"]
    assert [u.path for u in world.jellyfin.media_updates] == [answer["Folder"]]
    assert "jellyfin-gateway-organize" not in torrent["tags"]
    assert f"jellyfin-gateway-landed:{item['Id']}" in torrent["tags"]
    # The state lives in qBittorrent: a restarted gateway knows it and describes the item again.
    await gateway.stop()
    again = await world.start_gateway()
    events.clear()
    stream = await http.get(server_url(again, "/torrent/events"), headers=world.headers)
    reader = asyncio.create_task(read_events(stream, events))
    try:

        def described() -> bool:
            entries = [data for _, kind, data in events if kind == "landing"]
            entries += [e for _, kind, data in events if kind == "snapshot" for e in data["landings"]]
            return any(e["Hash"] == info_hash and (e["Item"] or {}).get("Name") == "Alien" for e in entries)

        assert await wait_until(described, 10), events
    finally:
        reader.cancel()
        stream.close()
    assert (await _landing(http, world, again, info_hash))["Item"] == item
    assert [u.path for u in world.jellyfin.media_updates] == [answer["Folder"]]


async def test_a_season_pack_lands_as_season_folders_of_its_series(
    http: aiohttp.ClientSession, world: Stack
) -> None:
    gateway = await world.start_gateway()
    payload = _season_pack(world.seeder.downloads / "seed")
    info_hash = await seed(world.seeder, payload)
    answer = await _download(
        http, world, gateway, {"Info_hash": info_hash, "Name": payload.name, "Library": "Shows"}
    )
    assert answer["Folder"] == "/media/tv/Show Name"
    await add_peer(world.qbt, info_hash, world.seeder.torrent_port)
    await wait_complete(world.qbt, info_hash, timeout=60)
    entry = await _landing_becomes(http, world, gateway, info_hash, "in_jellyfin", 60)
    assert entry["Item"]["Type"] == "Series"
    assert entry["Item"]["Name"] == "Show Name"
    assert _visible_files(_library(world) / "tv" / "Show Name") == [
        f"Season 01/Show Name S01E0{n}.mkv" for n in (1, 2, 3)
    ]


async def test_a_download_jellyfin_never_shows_ends_not_in_jellyfin(
    http: aiohttp.ClientSession, world: Stack
) -> None:
    world.jellyfin.scanning = False  # Jellyfin is told, but its library monitor never adds the item
    gateway = await world.start_gateway(landing_timeout=4.0)
    payload = write_payload(
        world.seeder.downloads / "seed", "Heat.1995.1080p.BluRay.x264-GRP.mkv", 128 * 1024
    )
    info_hash = await seed(world.seeder, payload)
    answer = await _download(
        http, world, gateway, {"Info_hash": info_hash, "Name": payload.name, "Library": "Movies"}
    )
    await add_peer(world.qbt, info_hash, world.seeder.torrent_port)
    await wait_complete(world.qbt, info_hash, timeout=60)
    entry = await _landing_becomes(http, world, gateway, info_hash, "announced", 30)
    entry = await _landing_becomes(http, world, gateway, info_hash, "not_in_jellyfin", 30)
    assert entry["Item"] is None
    assert entry["Folder"] == answer["Folder"] == "/media/movies/Heat (1995)"
    assert _visible_files(_library(world) / "movies" / "Heat (1995)") == ["Heat (1995).mkv"]
    assert "jellyfin-gateway-not-landed" in (await world.qbt.torrents(hashes=info_hash))[0]["tags"]


async def test_a_download_whose_metadata_came_while_the_gateway_was_down_is_organized_at_its_start(
    http: aiohttp.ClientSession, world: Stack
) -> None:
    gateway = await world.start_gateway()
    payload = _scene_movie(world.seeder.downloads / "seed")
    info_hash = await seed(world.seeder, payload)
    await _download(http, world, gateway, {"Info_hash": info_hash, "Name": payload.name, "Library": "Movies"})
    await gateway.stop()
    await add_peer(world.qbt, info_hash, world.seeder.torrent_port)

    async def waiting_stopped() -> bool:
        torrent = (await world.qbt.torrents(hashes=info_hash))[0]
        return torrent["state"] in {"pausedDL", "stoppedDL"}

    assert await wait_until(waiting_stopped, 30, interval=0.2)  # stopped once its file list is known
    await world.start_gateway()
    await wait_complete(world.qbt, info_hash, timeout=60)
    assert _visible_files(_library(world) / "movies" / "Alien (1979)") == [
        "Alien (1979).en.srt",
        "Alien (1979).mkv",
    ]
