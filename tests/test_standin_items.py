"""The stand-in's library: items made from announced paths, and ``/Items`` look-ups like Jellyfin's."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import wait_until
from tests.jellyfin_standin import Item, Library, StandinState, create_standin, jellyfin_item_id

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

HEX32 = re.compile(r"^[0-9a-f]{32}$")
ALIEN = "/media/movies/Alien (1979) [imdbid-tt0078748]"
SHOW = "/media/tv/Show (2008) [tvdbid-81189]"
FIELDS = "Path,ProviderIds"


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """The local directory behind Jellyfin's ``/media``."""
    return tmp_path / "media"


@pytest.fixture
def state(disk: Path) -> StandinState:
    state = StandinState()
    state.filesystem = {"/media": disk}
    state.scan_delay = 0.05
    return state


@pytest.fixture
async def jellyfin(aiohttp_client: ClientFactory, state: StandinState) -> Client:
    return await aiohttp_client(create_standin(state=state))


def put(disk: Path, *jellyfin_paths: str) -> None:
    """Create (empty) files at these ``/media/…`` paths."""
    for path in jellyfin_paths:
        local = disk / path.removeprefix("/media/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.touch()


def auth(state: StandinState) -> dict[str, str]:
    return {"Authorization": f'MediaBrowser Token="{state.api_key_for("gateway")}"'}


async def items(jellyfin: Client, state: StandinState, **params: str) -> dict[str, Any]:
    query = {"Recursive": "true", **params}
    resp = await jellyfin.get("/Items", params=query, headers=auth(state))
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def names(jellyfin: Client, state: StandinState, **params: str) -> list[str]:
    return [item["Name"] for item in (await items(jellyfin, state, **params))["Items"]]


async def announce(jellyfin: Client, state: StandinState, *paths: str) -> None:
    body = {"Updates": [{"Path": path, "UpdateType": "Created"} for path in paths]}
    resp = await jellyfin.post("/Library/Media/Updated", json=body, headers=auth(state))
    assert resp.status == 204


async def landed(state: StandinState, count: int) -> bool:
    return await wait_until(lambda: len(state.items) >= count, 3)


# ---------------------------------------------------------------------------
# Scans
# ---------------------------------------------------------------------------


async def test_a_movie_folder_with_an_imdb_tag_becomes_a_movie_named_from_its_folder(
    jellyfin: Client, state: StandinState, disk: Path
) -> None:
    put(disk, f"{ALIEN}/Alien (1979).mkv")
    await announce(jellyfin, state, f"{ALIEN}/Alien (1979).mkv")
    assert await landed(state, 1)
    body = await items(jellyfin, state, IncludeItemTypes="Movie,Series,Episode", Fields=FIELDS)
    assert body["TotalRecordCount"] == 1
    assert body["StartIndex"] == 0
    [movie] = body["Items"]
    assert HEX32.match(movie.pop("Id"))
    assert movie == {
        "Name": "Alien",
        "ServerId": state.server_id,
        "Path": f"{ALIEN}/Alien (1979).mkv",
        "ProductionYear": 1979,
        "ProviderIds": {"Imdb": "tt0078748"},
        "IsFolder": False,
        "Type": "Movie",
        "LocationType": "FileSystem",
        "MediaType": "Video",
    }


def test_item_ids_are_jellyfins_deterministic_ones_so_a_rescan_keeps_them(
    state: StandinState, disk: Path
) -> None:
    put(disk, f"{ALIEN}/Alien (1979).mkv")
    [movie] = state.scan(ALIEN)
    assert movie.id == jellyfin_item_id("Movie", f"{ALIEN}/Alien (1979).mkv")
    assert [item.id for item in state.scan(ALIEN)] == [movie.id]


def test_provider_ids_come_from_tags_in_brackets_braces_or_any_imdb_id(
    state: StandinState, disk: Path
) -> None:
    put(
        disk,
        "/media/movies/Heat (1995) [tmdbid-949]/Heat (1995).mkv",
        "/media/movies/Ran (1985) {imdb-tt0089881}/Ran (1985).mp4",
        "/media/movies/Up (2009) {tmdb-14160}/Up (2009).mp4",
    )
    found = {item.name: item.provider_ids for item in state.scan("/media/movies")}
    # Jellyfin reads "tmdbid" attributes only; any tt1234567 in the path is an IMDb id.
    assert found == {"Heat": {"Tmdb": "949"}, "Ran": {"Imdb": "tt0089881"}, "Up": {}}


def test_versions_samples_and_extras_of_a_movie_make_a_single_movie(state: StandinState, disk: Path) -> None:
    folder = "/media/movies/Heat (1995)"
    put(
        disk,
        f"{folder}/Heat (1995) - 1080p.mkv",
        f"{folder}/Heat (1995) - 720p.mkv",
        f"{folder}/Heat (1995)-sample.mkv",
        f"{folder}/Heat (1995).nfo",
        f"{folder}/extras/Making of.mkv",
        f"{folder}/Trailers/Teaser.mp4",
    )
    [movie] = state.scan(folder)
    assert (movie.type, movie.name, movie.production_year) == ("Movie", "Heat", 1995)
    assert movie.path == f"{folder}/Heat (1995) - 1080p.mkv"


def test_videos_in_the_library_root_and_in_a_shared_folder_are_movies_named_from_their_files(
    state: StandinState, disk: Path
) -> None:
    put(
        disk,
        "/media/movies/The.Matrix.1999.1080p.BluRay.x264-GRP.mkv",
        "/media/movies/Classics/Nosferatu (1922).avi",
        "/media/movies/Classics/Metropolis (1927).avi",
        "/media/movies/Disc (2001)/VIDEO_TS/VTS_01_1.VOB",
        "/media/movies/notes.txt",
    )
    found = sorted((item.name, item.production_year, item.path) for item in state.scan("/media/movies"))
    assert found == [
        ("Disc", 2001, "/media/movies/Disc (2001)"),
        ("Metropolis", 1927, "/media/movies/Classics/Metropolis (1927).avi"),
        ("Nosferatu", 1922, "/media/movies/Classics/Nosferatu (1922).avi"),
        ("The.Matrix", 1999, "/media/movies/The.Matrix.1999.1080p.BluRay.x264-GRP.mkv"),
    ]


async def test_a_season_pack_becomes_one_series_with_seasons_and_numbered_episodes(
    jellyfin: Client, state: StandinState, disk: Path
) -> None:
    put(
        disk,
        f"{SHOW}/Season 01/Show S01E01.mkv",
        f"{SHOW}/Season 01/Show S01E02-E03.mkv",
        f"{SHOW}/Season 01/Show S01E04-sample.mkv",
        f"{SHOW}/Season 00/Show S00E01.mkv",
    )
    await announce(jellyfin, state, f"{SHOW}/Season 01")
    assert await landed(state, 6)
    body = await items(jellyfin, state, IncludeItemTypes="Series,Episode", Fields=FIELDS)
    *episodes, series = body["Items"]  # episodes sort by season and number, before names
    assert {k: series[k] for k in ("Name", "Type", "Path", "ProductionYear", "ProviderIds", "IsFolder")} == {
        "Name": "Show",
        "Type": "Series",
        "Path": SHOW,
        "ProductionYear": 2008,
        "ProviderIds": {"Tvdb": "81189"},
        "IsFolder": True,
    }
    assert [(e["ParentIndexNumber"], e["IndexNumber"], e.get("IndexNumberEnd")) for e in episodes] == [
        (0, 1, None),
        (1, 1, None),
        (1, 2, 3),
    ]
    special = episodes[0]
    assert special["Path"] == f"{SHOW}/Season 00/Show S00E01.mkv"
    assert (special["Type"], special["SeriesName"], special["SeriesId"]) == ("Episode", "Show", series["Id"])
    assert special["SeasonName"] == "Specials"
    seasons = (await items(jellyfin, state, IncludeItemTypes="Season"))["Items"]
    assert [(s["Name"], s["IndexNumber"], s["SeriesId"]) for s in seasons] == [
        ("Specials", 0, series["Id"]),
        ("Season 1", 1, series["Id"]),
    ]


def test_loose_episodes_get_a_virtual_season_from_their_file_names(state: StandinState, disk: Path) -> None:
    put(disk, "/media/tv/Other/Other.S02E05.720p.mkv", "/media/tv/Other/Other 2x06.mkv")
    found = state.scan("/media/tv/Other")
    season = next(item for item in found if item.type == "Season")
    assert (season.name, season.index_number, season.path) == ("Season 2", 2, None)
    episodes = sorted((i.index_number, i.season_id) for i in found if i.type == "Episode")
    assert episodes == [(5, season.id), (6, season.id)]


def test_a_mixed_library_tells_series_from_movies_by_their_folders(state: StandinState, disk: Path) -> None:
    state.libraries.append(Library("Mixed", ["/media/mixed"]))
    put(disk, "/media/mixed/Show/Season 1/Show S01E01.mkv", "/media/mixed/Film (2010)/Film (2010).mkv")
    assert sorted((i.type, i.name) for i in state.scan("/media/mixed")) == [
        ("Episode", "Show S01E01"),
        ("Movie", "Film"),
        ("Season", "Season 1"),
        ("Series", "Show"),
    ]


async def test_an_announced_item_appears_only_after_the_scan_delay(
    jellyfin: Client, state: StandinState, disk: Path
) -> None:
    state.scan_delay = 0.4
    put(disk, f"{ALIEN}/Alien (1979).mkv")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await announce(jellyfin, state, ALIEN)
    assert await names(jellyfin, state) == []
    assert await landed(state, 1)
    assert loop.time() - started >= 0.4
    assert await names(jellyfin, state) == ["Alien"]


async def test_a_broken_library_monitor_never_picks_anything_up(
    jellyfin: Client, state: StandinState, disk: Path
) -> None:
    state.scanning = False
    put(disk, f"{ALIEN}/Alien (1979).mkv")
    await announce(jellyfin, state, ALIEN)
    assert (await jellyfin.post("/Library/Refresh", headers=auth(state))).status == 204
    await asyncio.sleep(0.3)
    assert state.items == {}
    assert [u.path for u in state.media_updates] == [ALIEN]


async def test_library_refresh_scans_every_location_and_is_counted(
    jellyfin: Client, state: StandinState, disk: Path
) -> None:
    put(disk, f"{ALIEN}/Alien (1979).mkv", f"{SHOW}/Season 01/Show S01E01.mkv")
    resp = await jellyfin.post("/Library/Refresh", headers=auth(state))
    assert resp.status == 204
    assert state.library_refreshes == 1
    assert await landed(state, 4)
    assert await names(jellyfin, state, IncludeItemTypes="Movie,Series") == ["Alien", "Show"]


def test_a_path_outside_every_library_creates_nothing(state: StandinState, disk: Path) -> None:
    put(disk, "/media/downloads/Alien (1979)/Alien (1979).mkv")
    assert state.scan("/media/downloads/Alien (1979)") == []
    assert state.scan("/elsewhere/Alien (1979)") == []
    assert state.items == {}


def test_nothing_is_scanned_where_the_filesystem_maps_nothing(state: StandinState, disk: Path) -> None:
    put(disk, f"{ALIEN}/Alien (1979).mkv")
    state.filesystem = {}
    assert state.scan(ALIEN) == []


async def test_the_same_path_announced_twice_creates_no_duplicates(
    jellyfin: Client, state: StandinState, disk: Path
) -> None:
    put(disk, f"{SHOW}/Season 01/Show S01E01.mkv")
    await announce(jellyfin, state, f"{SHOW}/Season 01/Show S01E01.mkv")
    assert await landed(state, 3)
    await announce(jellyfin, state, f"{SHOW}/Season 01/Show S01E01.mkv", SHOW)
    await asyncio.sleep(0.2)
    state.scan(f"{SHOW}/Season 01")
    assert sorted(item.type for item in state.items.values()) == ["Episode", "Season", "Series"]


def test_a_rescan_drops_items_whose_files_are_gone(state: StandinState, disk: Path) -> None:
    put(disk, f"{SHOW}/Season 01/Show S01E01.mkv", f"{SHOW}/Season 01/Show S01E02.mkv")
    state.scan(SHOW)
    (disk / SHOW.removeprefix("/media/") / "Season 01" / "Show S01E02.mkv").unlink()
    state.scan(f"{SHOW}/Season 01/Show S01E02.mkv")
    assert sorted(i.name for i in state.items.values()) == ["Season 1", "Show", "Show S01E01"]


# ---------------------------------------------------------------------------
# GET /Items
# ---------------------------------------------------------------------------


def add_movie(state: StandinState, name: str, year: int | None = None) -> Item:
    path = f"/media/movies/{name}/{name}.mkv"
    item = Item("Movie", name, path, jellyfin_item_id("Movie", path), production_year=year)
    state.items[item.id] = item
    return item


async def test_search_term_ignores_case_and_diacritics_but_not_punctuation_as_in_10_11(
    jellyfin: Client, state: StandinState
) -> None:
    for name in ("Spider-Man", "Amélie", "Alien", "Aliens"):
        add_movie(state, name)
    assert await names(jellyfin, state, searchTerm="ALIEN") == ["Alien", "Aliens"]
    assert await names(jellyfin, state, SEARCHTERM="amelie") == ["Amélie"]
    assert await names(jellyfin, state, searchTerm="spider-MAN") == ["Spider-Man"]
    assert await names(jellyfin, state, searchTerm="spider man") == []
    assert await names(jellyfin, state, searchTerm="spider_man") == ["Spider-Man"]  # LIKE's "_"


async def test_search_term_can_treat_punctuation_as_spaces_like_jellyfin_12(
    jellyfin: Client, state: StandinState
) -> None:
    state.search_cleans_punctuation = True
    add_movie(state, "Spider-Man: Homecoming")
    for term in ("spider man homecoming", "SPIDER-MAN: HOMECOMING", "Spider Man  - Homecoming"):
        assert await names(jellyfin, state, searchTerm=term) == ["Spider-Man: Homecoming"]
    assert await names(jellyfin, state, searchTerm="spiderman") == []


async def test_fields_decide_whether_path_and_provider_ids_are_sent(
    jellyfin: Client, state: StandinState
) -> None:
    add_movie(state, "Heat", 1995)
    [bare] = (await items(jellyfin, state))["Items"]
    assert "Path" not in bare
    assert "ProviderIds" not in bare
    [with_path] = (await items(jellyfin, state, fields="path"))["Items"]
    assert with_path["Path"] == "/media/movies/Heat/Heat.mkv"
    assert "ProviderIds" not in with_path
    [with_ids] = (await items(jellyfin, state, Fields="ProviderIds,Bogus"))["Items"]
    assert with_ids["ProviderIds"] == {}
    assert "Path" not in with_ids


async def test_camel_case_is_sent_when_the_accept_header_asks(jellyfin: Client, state: StandinState) -> None:
    add_movie(state, "Heat", 1995)
    headers = {**auth(state), "Accept": 'application/json; profile="CamelCase"'}
    resp = await jellyfin.get("/Items", params={"recursive": "true", "fields": "Path"}, headers=headers)
    body = await resp.json()
    assert body["totalRecordCount"] == 1
    assert body["items"][0]["productionYear"] == 1995
    assert body["items"][0]["path"] == "/media/movies/Heat/Heat.mkv"


async def test_start_index_and_limit_page_through_items_sorted_by_sort_name(
    jellyfin: Client, state: StandinState
) -> None:
    for name in ("Zodiac", "The Birds", "alien", "Cars 10", "Cars 9"):
        add_movie(state, name)
    assert await names(jellyfin, state) == ["alien", "The Birds", "Cars 9", "Cars 10", "Zodiac"]
    body = await items(jellyfin, state, StartIndex="1", Limit="2")
    assert [i["Name"] for i in body["Items"]] == ["The Birds", "Cars 9"]
    assert (body["TotalRecordCount"], body["StartIndex"]) == (5, 1)
    assert await names(jellyfin, state, startIndex="4", limit="0") == ["Zodiac"]
    resp = await jellyfin.get("/Items", params={"Limit": "many"}, headers=auth(state))
    assert resp.status == 400


async def test_ids_select_items_even_without_recursive(jellyfin: Client, state: StandinState) -> None:
    heat, _, ran = add_movie(state, "Heat"), add_movie(state, "Alien"), add_movie(state, "Ran")
    dashed = str(uuid.UUID(ran.id))
    params = {"Ids": f"{heat.id},{dashed},not-a-guid"}
    resp = await jellyfin.get("/Items", params=params, headers=auth(state))
    assert [i["Name"] for i in (await resp.json())["Items"]] == ["Heat", "Ran"]


async def test_a_non_recursive_query_lists_no_items(jellyfin: Client, state: StandinState) -> None:
    add_movie(state, "Heat")
    resp = await jellyfin.get("/Items", headers=auth(state))
    assert await resp.json() == {"Items": [], "TotalRecordCount": 0, "StartIndex": 0}


async def test_unknown_item_types_are_ignored_and_known_ones_filter(
    jellyfin: Client, state: StandinState
) -> None:
    add_movie(state, "Heat")
    assert await names(jellyfin, state, IncludeItemTypes="Bogus") == ["Heat"]
    assert await names(jellyfin, state, IncludeItemTypes="movie,Bogus") == ["Heat"]
    assert await names(jellyfin, state, IncludeItemTypes="Series") == []
    assert await names(jellyfin, state, IncludeItemTypes="BoxSet") == []


async def test_items_need_a_token_and_users_see_them_too(jellyfin: Client, state: StandinState) -> None:
    heat = add_movie(state, "Heat")
    for path in ("/Items", f"/Items/{heat.id}"):
        resp = await jellyfin.get(path, params={"Recursive": "true"})
        assert resp.status == 401
        assert await resp.read() == b""
    alice = state.user_by_name("alice")
    token = state.issue_token(alice)
    headers = {"Authorization": f'MediaBrowser Token="{token}"'}
    resp = await jellyfin.get("/Items", params={"Recursive": "true", "userId": alice.id}, headers=headers)
    assert [i["Name"] for i in (await resp.json())["Items"]] == ["Heat"]
    admin = state.user_by_name("admin")
    resp = await jellyfin.get("/Items", params={"Recursive": "true", "userId": admin.id}, headers=headers)
    assert resp.status == 403


# ---------------------------------------------------------------------------
# GET /Items/{itemId}
# ---------------------------------------------------------------------------


async def test_an_item_by_id_has_every_field(jellyfin: Client, state: StandinState, disk: Path) -> None:
    put(disk, f"{SHOW}/Season 01/Show S01E02-E03.mkv")
    episode = next(i for i in state.scan(SHOW) if i.type == "Episode")
    admin = state.user_by_name("admin")
    for path in (f"/Items/{episode.id}", f"/Users/{admin.id}/Items/{episode.id}", f"/items/{episode.id}"):
        resp = await jellyfin.get(path, headers=auth(state))
        assert resp.status == 200
        body = await resp.json()
        assert body == {
            "Name": "Show S01E02-E03",
            "ServerId": state.server_id,
            "Id": episode.id,
            "Path": f"{SHOW}/Season 01/Show S01E02-E03.mkv",
            "IndexNumber": 2,
            "IndexNumberEnd": 3,
            "ParentIndexNumber": 1,
            "ProviderIds": {},
            "IsFolder": False,
            "ParentId": episode.season_id,
            "Type": "Episode",
            "SeriesName": "Show",
            "SeriesId": episode.series_id,
            "SeasonId": episode.season_id,
            "SeasonName": "Season 1",
            "LocationType": "FileSystem",
            "MediaType": "Video",
        }


async def test_an_unknown_item_id_is_404_and_a_malformed_one_400(
    jellyfin: Client, state: StandinState
) -> None:
    resp = await jellyfin.get(f"/Items/{'0' * 31}1", headers=auth(state))
    assert resp.status == 404
    assert resp.headers["Content-Type"] == "application/problem+json; charset=utf-8"
    assert (await resp.json(content_type=None))["title"] == "Not Found"
    resp = await jellyfin.get("/Items/nope", headers=auth(state))
    assert resp.status == 400
