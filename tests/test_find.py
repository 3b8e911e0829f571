"""``GET /torrent/find`` end to end: the gateway in front of the Jellyfin stand-in, the apibay stand-in
and Torznab stand-ins answering like Prowlarr and Jackett, plus a slow one, a failing one, an XML bomb
and an external-entity document. Real sockets throughout."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.settings import TorznabIndexer
from tests.apibay_standin import ApibayState, Reply, create_apibay_standin
from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, server_url
from tests.jellyfin_standin import StandinState
from tests.torznab_standin import (
    API_KEY,
    EntityHostState,
    TorznabState,
    create_entity_host,
    create_torznab_standin,
    info_hash,
    jackett_url,
    prowlarr_url,
)

MATRIX = info_hash("matrix")
KEYS = {
    "Name", "InfoHash", "Size", "Seeders", "Leechers", "Added", "Sources", "Imdb", "Title", "Year",
    "Season", "Episode", "Resolution", "Source", "Codec", "Hdr", "InLibrary",
}  # fmt: skip


def _apibay_row(
    name: str, torrent_hash: str, seeders: int, imdb: str = "", category: str = "207"
) -> dict[str, str]:
    return {
        "id": "1",
        "name": name,
        "info_hash": torrent_hash.upper(),
        "leechers": "7",
        "seeders": str(seeders),
        "num_files": "1",
        "size": "8589934592",
        "username": "u",
        "added": "1700000000",
        "status": "vip",
        "category": category,
        "imdb": imdb,
    }


@dataclass
class World:
    jellyfin: StandinState
    apibay: ApibayState
    indexers: dict[str, TorznabState]
    entity_host: EntityHostState
    headers: dict[str, str]
    start: Callable[..., Awaitable[RunningGateway]]

    async def gateway(self, names: tuple[str, ...], **settings: Any) -> RunningGateway:
        return await self.start(names, **settings)


@pytest.fixture
async def world(
    aiohttp_server: ServerFactory,
    jellyfin: TestServer,
    standin_state: StandinState,
    gateway_factory: GatewayFactory,
    tmp_path: Path,
) -> World:
    apibay = ApibayState()
    apibay_server = await aiohttp_server(create_apibay_standin(apibay))
    entity_state = EntityHostState()
    entity_host = await aiohttp_server(create_entity_host(entity_state))
    indexers = {
        "prowlarr": TorznabState(flavour="prowlarr"),
        "jackett": TorznabState(flavour="jackett", api_key="jackett-secret-key-0987654321"),
        "slow": TorznabState(delay=3.0),
        "broken": TorznabState(mode="error500"),
        "bomb": TorznabState(mode="bomb"),
        "xxe": TorznabState(mode="xxe_http", external_url=str(server_url(entity_host))),
    }
    urls: dict[str, URL] = {}
    for name, state in indexers.items():
        server = await aiohttp_server(create_torznab_standin(state))
        urls[name] = (
            jackett_url(server, state.api_key)
            if state.flavour == "jackett"
            else prowlarr_url(server, state.api_key)
        )
    # Jellyfin knows The Matrix by its IMDb id, and Amélie by its folder name only.
    library = tmp_path / "library"
    (library / "movies" / "The Matrix (1999) [imdbid-tt0133093]").mkdir(parents=True)
    (library / "movies" / "The Matrix (1999) [imdbid-tt0133093]" / "The Matrix (1999).mkv").write_bytes(b"x")
    (library / "movies" / "Amelie (2001)").mkdir(parents=True)
    (library / "movies" / "Amelie (2001)" / "Amelie (2001).mkv").write_bytes(b"x")
    standin_state.filesystem["/media"] = library
    standin_state.scan("/media/movies")
    token = standin_state.issue_token(standin_state.user_by_name("admin"))

    async def start(names: tuple[str, ...], **settings: Any) -> RunningGateway:
        return await gateway_factory(
            server_url(jellyfin),
            apibay_url=server_url(apibay_server),
            torznab_indexers=tuple(TorznabIndexer(name, urls[name]) for name in names),
            torznab_timeout=1.0,
            **settings,
        )

    return World(
        standin_state,
        apibay,
        indexers,
        entity_state,
        {"Authorization": f'MediaBrowser Token="{token}"'},
        start,
    )


async def _find(
    http: aiohttp.ClientSession, world: World, gateway: RunningGateway, query: str
) -> tuple[int, Any]:
    async with http.get(server_url(gateway, f"/torrent/find?{query}"), headers=world.headers) as resp:
        return resp.status, await resp.json()


async def test_results_merge_by_hash_across_apibay_and_two_indexers(
    http: aiohttp.ClientSession, world: World
) -> None:
    world.apibay.responses["matrix"] = Reply(
        rows=[
            _apibay_row("The.Matrix.1999.1080p.BluRay.x264-GRP", MATRIX, 300, "tt0133093"),
            _apibay_row("The.Matrix.1999.2160p.UHD.BluRay.REMUX.HDR.HEVC", info_hash("matrix-uhd"), 50),
        ]
    )
    gateway = await world.gateway(("prowlarr", "jackett"))
    status, body = await _find(http, world, gateway, "q=matrix&type=movie")
    assert status == 200, body
    sources = {s["Name"]: s for s in body["Sources"]}
    assert set(sources) == {"apibay", "prowlarr", "jackett"}
    assert all(s["Ok"] and s["Error"] is None and isinstance(s["Ms"], int) for s in sources.values()), sources
    assert sources["apibay"]["Count"] == 2
    assert sources["prowlarr"]["Count"] == sources["jackett"]["Count"] == 4
    results = body["Results"]
    assert all(set(r) == KEYS for r in results)
    hashes = [r["InfoHash"] for r in results]
    assert len(hashes) == len(set(hashes)) == 5  # apibay 2, each indexer the same 4: The Matrix shared by all
    seeders = [r["Seeders"] for r in results]
    assert seeders == sorted(seeders, reverse=True)
    matrix = next(r for r in results if r["InfoHash"] == MATRIX)
    assert matrix["Sources"] == ["apibay", "prowlarr", "jackett"]
    assert matrix["Seeders"] == 300  # the most any source saw
    assert matrix["Leechers"] == 30
    assert matrix["Imdb"] == "tt0133093"
    assert (matrix["Title"], matrix["Year"], matrix["Resolution"], matrix["Source"], matrix["Codec"]) == (
        "The Matrix",
        1999,
        "1080p",
        "BluRay",
        "x264",
    )
    assert datetime.fromisoformat(matrix["Added"]) == datetime.fromtimestamp(1_700_000_000, UTC)
    uhd = next(r for r in results if r["InfoHash"] == info_hash("matrix-uhd"))
    assert (uhd["Resolution"], uhd["Source"], uhd["Hdr"], uhd["Codec"]) == ("2160p", "REMUX", "HDR", "x265")
    # A base32 hash from the indexer was turned into hex, and an upper-case one lowered.
    assert info_hash("notld") in hashes
    assert info_hash("matrix-720") in hashes


async def test_in_library_marks_come_by_imdb_id_and_by_title_and_year(
    http: aiohttp.ClientSession, world: World
) -> None:
    world.apibay.responses["movies"] = Reply(
        rows=[
            _apibay_row("The.Matrix.1999.1080p.BluRay.x264-GRP", MATRIX, 300, "tt0133093"),
            _apibay_row("Am\u00e9lie (2001) 720p BluRay", info_hash("amelie"), 200),
            _apibay_row("Alien.Warfare.2019.1080p.WEB-DL", info_hash("warfare"), 100),
        ]
    )
    gateway = await world.gateway(())
    status, body = await _find(http, world, gateway, "q=movies")
    assert status == 200, body
    marks = {r["InfoHash"]: r["InLibrary"] for r in body["Results"]}
    matrix_item = next(i for i in world.jellyfin.items.values() if i.name == "The Matrix")
    amelie_item = next(i for i in world.jellyfin.items.values() if i.name == "Amelie")
    assert marks[MATRIX] is not None
    assert marks[MATRIX]["ItemId"] == matrix_item.id
    assert marks[MATRIX]["Year"] == 1999
    assert marks[MATRIX]["Url"] == f"/web/#/details?id={matrix_item.id}&serverId={world.jellyfin.server_id}"
    assert marks[info_hash("amelie")] is not None
    assert marks[info_hash("amelie")]["ItemId"] == amelie_item.id
    assert marks[info_hash("warfare")] is None


async def test_slow_failing_and_hostile_indexers_are_reported_and_never_fail_the_search(
    http: aiohttp.ClientSession, world: World
) -> None:
    world.apibay.responses["matrix"] = Reply(rows=[_apibay_row("The Matrix 1999", MATRIX, 1)])
    gateway = await world.gateway(("prowlarr", "slow", "broken", "bomb", "xxe"))
    started = time.monotonic()
    status, body = await _find(http, world, gateway, "q=matrix")
    took = time.monotonic() - started
    assert status == 200, body
    assert took < 1.0 + 1.5  # TORZNAB_TIMEOUT + 1 s at worst (and some scheduling slack)
    sources = {s["Name"]: s for s in body["Sources"]}
    assert sources["apibay"]["Ok"]
    assert sources["prowlarr"]["Ok"]
    assert sources["prowlarr"]["Count"] == 4
    for name in ("slow", "broken", "bomb", "xxe"):
        assert not sources[name]["Ok"], sources[name]
        assert sources[name]["Count"] == 0
        assert sources[name]["Error"], sources[name]
    assert "1 s" in sources["slow"]["Error"] or "time" in sources["slow"]["Error"].lower()
    assert world.entity_host.fetched == []  # the external entity was never fetched
    assert {r["InfoHash"] for r in body["Results"]} >= {MATRIX, info_hash("ubuntu")}


async def test_indexer_keys_never_reach_logs_responses_or_health(
    http: aiohttp.ClientSession, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.indexers["jackett"].api_key = "a-different-key"  # the configured key is now wrong: an error
    gateway = await world.gateway(("prowlarr", "jackett", "broken"), log_level="DEBUG")
    texts = []
    for query in ("q=matrix", "q=matrix&type=tv&season=1&episode=2", "imdb=tt0133093&type=movie"):
        async with http.get(server_url(gateway, f"/torrent/find?{query}"), headers=world.headers) as resp:
            texts.append(await resp.text())
            assert resp.status == 200
    async with http.get(server_url(gateway, "/torrent/health"), headers=world.headers) as resp:
        texts.append(await resp.text())
        health = await resp.json()
    assert health["torznab"]["prowlarr"]["ok"]
    assert health["torznab"]["prowlarr"]["functions"] == ["movie", "search", "tvsearch"]
    assert not health["torznab"]["jackett"]["ok"]
    assert "Invalid API Key" in health["torznab"]["jackett"]["error"]
    jackett = next(
        s for s in (await _find(http, world, gateway, "q=x"))[1]["Sources"] if s["Name"] == "jackett"
    )
    assert not jackett["Ok"]
    # Everything logged in this process but the stand-ins' own access logs (aiohttp.access: they log
    # the URLs they were asked; the gateway's access log is gateway.access).
    logged = "\n".join(logging.Formatter().format(r) for r in caplog.records if r.name != "aiohttp.access")
    for secret in (API_KEY, "jackett-secret-key-0987654321"):
        assert all(secret not in text for text in texts)
        assert secret not in logged
    assert "apikey" not in logged.lower()
    assert any("find" in r.getMessage() for r in caplog.records)  # DEBUG logging was on


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "q (or imdb) is required"),
        ("q=%20%20", "q (or imdb) is required"),
        ("q=x&type=music", "type must be movie, tv or any"),
        ("q=x&imdb=nm0000001", "Imdb must be an IMDb"),
        ("q=x&limit=500", "limit must be a whole number"),
        ("q=x&season=-1", "season must be a whole number"),
        ("q=x&episode=two", "episode must be a whole number"),
    ],
)
async def test_bad_find_queries_are_400_and_reach_no_source(
    http: aiohttp.ClientSession, world: World, query: str, reason: str
) -> None:
    gateway = await world.gateway(("prowlarr",))
    status, body = await _find(http, world, gateway, query)
    assert status == 400
    assert reason in body["error"]
    assert world.apibay.total_calls == 0
    assert world.indexers["prowlarr"].searches() == []


async def test_the_limit_caps_the_merged_results(http: aiohttp.ClientSession, world: World) -> None:
    gateway = await world.gateway(("prowlarr",))
    status, body = await _find(http, world, gateway, "q=matrix&limit=3")
    assert status == 200
    assert len(body["Results"]) == 3
