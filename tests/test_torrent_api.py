"""The /torrent API end to end: gateway + Jellyfin stand-in + apibay stand-in + real qBittorrent 4.5 and 5.1.

Every effect is checked inside qBittorrent itself (hash, name, save path, state), not only in the
gateway's answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.conftest import GatewayFactory, Stack, StackFactory, free_port, server_url, wait_until
from tests.jellyfin_standin import Library
from tests.qbittorrent_nox import QbtInstance

HASH = "0123456789abcdef0123456789abcdef01234567"
HASH2 = "89abcdef0123456789abcdef0123456789abcdef"
STOPPED = {"pausedDL", "pausedUP", "stoppedDL", "stoppedUP"}


async def _json(
    http: aiohttp.ClientSession, stack: Stack, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, stack.url(path), headers=stack.headers, **kwargs) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


async def _listed(qbt: QbtInstance, torrent_hash: str, timeout: float = 5.0) -> dict[str, Any]:
    """qBittorrent answers ``Ok.`` a few ms before the torrent is listed: poll."""
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        found[:] = await qbt.torrents(hashes=torrent_hash)
        return bool(found)

    assert await wait_until(listed, timeout, interval=0.05), f"{torrent_hash} never appeared in qBittorrent"
    return found[0]


async def _state_becomes(qbt: QbtInstance, torrent_hash: str, wanted: set[str], negate: bool = False) -> str:
    """``state`` refreshes every 1.5 s in qBittorrent."""
    state = ""

    async def reached() -> bool:
        nonlocal state
        state = str((await _listed(qbt, torrent_hash))["state"])
        return (state in wanted) != negate

    assert await wait_until(reached, 10, interval=0.1), f"state stayed {state}"
    return state


# --- libraries ----------------------------------------------------------------------------------


async def test_libraries_come_from_jellyfin_in_both_shapes(http: aiohttp.ClientSession, stack: Stack) -> None:
    assert await _json(http, stack, "GET", "/torrent/libraries") == (
        200,
        [{"Name": "Movies", "Paths": ["/media/movies"]}, {"Name": "Shows", "Paths": ["/media/tv"]}],
    )
    assert await _json(http, stack, "GET", "/torrent/Libraries/Paths") == (
        200,
        [
            {"LibraryName": "Movies", "FolderPaths": ["/media/movies"]},
            {"LibraryName": "Shows", "FolderPaths": ["/media/tv"]},
        ],
    )


# --- search -------------------------------------------------------------------------------------


async def test_search_returns_20_rows_of_strings(http: aiohttp.ClientSession, stack: Stack) -> None:
    status, rows = await _json(http, stack, "GET", "/torrent/search?q=ubuntu")
    assert status == 200
    assert len(rows) == 20
    fields = {"id", "name", "info_hash", "leechers", "seeders", "num_files", "size", "username", "added",
              "status", "category", "imdb"}  # fmt: skip
    assert all(set(row) == fields and all(isinstance(v, str) for v in row.values()) for row in rows)
    assert any(row["name"] == "Ubuntu Linux & Linux Scripting" for row in rows)
    assert any(row["num_files"] == "" for row in rows)
    assert stack.apibay.requests[-1].cat == "0"


async def test_search_with_no_hits_is_an_empty_list(http: aiohttp.ClientSession, stack: Stack) -> None:
    stack.apibay.responses["nothing at all"] = "sentinel"
    assert await _json(http, stack, "GET", "/torrent/search?Q=nothing%20at%20all&CAT=201,207") == (200, [])
    assert stack.apibay.requests[-1].cat == "201,207"


@pytest.mark.parametrize(
    ("target", "reason"),
    [("/torrent/search", "q is required"), ("/torrent/search?q=%20", "q is required"),
     ("/torrent/search?q=x&cat=201;drop", "cat")],
)  # fmt: skip
async def test_bad_searches_are_400_and_never_reach_apibay(
    http: aiohttp.ClientSession, stack: Stack, target: str, reason: str
) -> None:
    status, body = await _json(http, stack, "GET", target)
    assert status == 400
    assert reason in body["error"]
    assert stack.apibay.total_calls == 0


async def test_an_apibay_outage_is_a_500_with_the_reason(http: aiohttp.ClientSession, stack: Stack) -> None:
    stack.apibay.mode = "cloudflare"
    status, body = await _json(http, stack, "GET", "/torrent/search?q=x")
    assert status == 500
    assert "apibay" in body["error"]
    assert "522" in body["error"]


# --- download -----------------------------------------------------------------------------------


async def test_a_download_starts_in_qbittorrent(http: aiohttp.ClientSession, stack: Stack) -> None:
    status, body = await _json(
        http,
        stack,
        "POST",
        "/torrent/download",
        json={"Name": "Big Buck Bunny & Friends", "Info_hash": HASH.upper()},
    )
    assert status == 200
    assert body == {
        "Message": "Started downloading: Big Buck Bunny & Friends",
        "Id": HASH.upper(),
        "SavePath": str(stack.qbt.downloads),
        "ServerResponse": "Ok.",
    }
    torrent = await _listed(stack.qbt, HASH)
    assert torrent["hash"] == HASH
    assert torrent["name"] == "Big Buck Bunny & Friends"
    assert torrent["save_path"].rstrip("/") == str(stack.qbt.downloads)
    assert torrent["state"] not in STOPPED


async def test_a_base32_hash_and_any_key_case_are_accepted(http: aiohttp.ClientSession, stack: Stack) -> None:
    status, body = await _json(
        http, stack, "POST", "/torrent/download", json={"INFO_HASH": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"}
    )
    assert status == 200
    assert body["Message"] == "Started downloading: ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    await _listed(stack.qbt, "00443214c74254b635cf84653a56d7c675be77df")


async def test_a_download_into_a_library_folder_uses_qbittorrents_view(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    target = str(stack.qbt.downloads.parent / "library" / "movies" / "New")
    status, body = await _json(
        http, stack, "POST", "/torrent/download", json={"info_hash": HASH, "SavePath": target + "/"}
    )
    assert status == 200
    assert body["SavePath"] == target
    assert (await _listed(stack.qbt, HASH))["save_path"].rstrip("/") == target


async def test_a_library_folder_that_path_map_does_not_cover_is_no_save_path(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    """The folder qBittorrent cannot be shown is refused alike as SavePath and as Library."""
    stack.jellyfin.libraries.append(Library("Music", ["/srv/music"]))
    for body in ({"Info_hash": HASH, "SavePath": "/srv/music/New"}, {"Info_hash": HASH, "Library": "Music"}):
        status, answer = await _json(http, stack, "POST", "/torrent/download", json=body)
        assert status == 400, answer
    assert await stack.qbt.torrents() == []


async def test_a_library_download_goes_into_a_folder_named_for_jellyfin(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    release = "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP"
    body = {"Info_hash": HASH, "Name": release, "Library": "movies", "Imdb": "TT0078748"}
    status, answer = await _json(http, stack, "POST", "/torrent/download", json=body)
    assert status == 200, answer
    library = stack.qbt.downloads.parent / "library"
    assert answer["SavePath"] == str(library / "movies" / "Alien (1979) [imdbid-tt0078748]")
    assert answer["Folder"] == "/media/movies/Alien (1979) [imdbid-tt0078748]"
    torrent = await _listed(stack.qbt, HASH)
    assert torrent["save_path"].rstrip("/") == answer["SavePath"]
    assert set(torrent["tags"].split(", ")) == {
        "jellyfin-gateway",
        "jellyfin-gateway-library:Movies",
        "jellyfin-gateway-imdb:tt0078748",
        "jellyfin-gateway-folder:movie",
        "jellyfin-gateway-organize",  # stays until the file list is known: this magnet has no peers
    }


async def test_a_season_pack_into_a_shows_library_goes_into_the_series_folder(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    body = {"Info_hash": HASH, "Name": "Breaking.Bad.S01.1080p.BluRay.x264-GRP", "Library": "Shows"}
    status, answer = await _json(http, stack, "POST", "/torrent/download", json=body)
    assert status == 200, answer
    assert answer["Folder"] == "/media/tv/Breaking Bad"
    assert "jellyfin-gateway-folder:series" in (await _listed(stack.qbt, HASH))["tags"]


@pytest.mark.parametrize(
    "body",
    [
        {"Name": "Alien 1979", "Library": "Movies", "Organize": False},
        {"Library": "Movies"},  # no name: nothing to name the folder after
    ],
)
async def test_a_library_download_without_organizing_goes_into_the_library_folder(
    http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]
) -> None:
    status, answer = await _json(http, stack, "POST", "/torrent/download", json={"Info_hash": HASH, **body})
    assert status == 200, answer
    assert answer["Folder"] == "/media/movies"
    torrent = await _listed(stack.qbt, HASH)
    assert "organize" not in torrent["tags"]
    assert torrent["save_path"].rstrip("/") == str(stack.qbt.downloads.parent / "library" / "movies")


async def test_without_a_library_the_answer_is_the_seed_contract(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    status, answer = await _json(
        http, stack, "POST", "/torrent/download", json={"Info_hash": HASH, "Imdb": ""}
    )
    assert status == 200
    assert set(answer) == {"Message", "Id", "SavePath", "ServerResponse"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "Info_hash is required"),
        ({"Info_hash": ""}, "Info_hash is required"),
        ({"Info_hash": HASH[:-1]}, "Info_hash must be"),
        ({"Info_hash": f"{HASH}&tr=http://evil"}, "Info_hash must be"),
        ({"Info_hash": f"{HASH}\nmagnet:?xt=urn:btih:{HASH2}"}, "Info_hash must be"),
        ({"Info_hash": HASH, "SavePath": "/etc"}, "SavePath must be inside"),
        ({"Info_hash": HASH, "SavePath": "relative/dir"}, "absolute"),
        ({"Info_hash": HASH, "SavePath": "/media/../etc"}, ".."),
        ({"Info_hash": HASH, "Name": 5}, "Name must be a string"),
        ({"Info_hash": HASH, "Library": "Movies", "Name": "A", "Imdb": "nm0000001"}, "Imdb must be an IMDb"),
        ({"Info_hash": HASH, "Library": "Movies", "Name": "A", "Imdb": "tt12"}, "Imdb must be an IMDb"),
        (
            {"Info_hash": HASH, "Library": "Movies", "Name": "A", "Organize": "yes"},
            "Organize must be true or",
        ),
        ({"Info_hash": HASH, "Name": "A", "Organize": True}, "Organize needs a Library"),
        ({"Info_hash": HASH, "Library": "Movies", "Organize": True}, "Name is required to organize"),
        (
            {
                "Info_hash": HASH,
                "Library": "Movies",
                "Name": "A",
                "Organize": True,
                "SavePath": "/media/movies",
            },
            "not both",
        ),
        (["not", "an", "object"], "JSON object"),
    ],
)
async def test_bad_downloads_are_400_and_add_nothing(
    http: aiohttp.ClientSession, stack: Stack, body: Any, reason: str
) -> None:
    status, answer = await _json(http, stack, "POST", "/torrent/download", json=body)
    assert status == 400
    assert reason in answer["error"]
    assert await stack.qbt.torrents() == []


async def test_a_name_with_a_newline_stays_one_torrent(http: aiohttp.ClientSession, stack: Stack) -> None:
    name = f"evil\nmagnet:?xt=urn:btih:{HASH2}\nfile:///etc/passwd"
    status, _ = await _json(http, stack, "POST", "/torrent/download", json={"Info_hash": HASH, "Name": name})
    assert status == 200
    await _listed(stack.qbt, HASH)
    await asyncio.sleep(0.3)
    assert [t["hash"] for t in await stack.qbt.torrents()] == [HASH]


async def test_a_torrent_qbittorrent_already_has_is_reported_honestly(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    assert (await _json(http, stack, "POST", "/torrent/download", json={"Info_hash": HASH, "Name": "First"}))[
        0
    ] == 200
    await _listed(stack.qbt, HASH)
    status, body = await _json(
        http, stack, "POST", "/torrent/download", json={"Info_hash": HASH, "Name": "Again"}
    )
    assert status == 200
    assert body["Message"] == "Already in qBittorrent: First"
    assert body["ServerResponse"] == "Fails."
    assert len(await stack.qbt.torrents()) == 1


async def test_a_body_that_is_not_json_is_a_400(http: aiohttp.ClientSession, stack: Stack) -> None:
    status, body = await _json(http, stack, "POST", "/torrent/download", data=b"Info_hash=abc")
    assert status == 400
    assert "JSON" in body["error"]


# --- progress, pause, resume, delete -------------------------------------------------------------


async def _empty(qbt: QbtInstance) -> bool:
    return not await qbt.torrents()


async def _add(http: aiohttp.ClientSession, stack: Stack, torrent_hash: str, name: str) -> None:
    status, _ = await _json(
        http, stack, "POST", "/torrent/download", json={"Info_hash": torrent_hash, "Name": name}
    )
    assert status == 200
    await _listed(stack.qbt, torrent_hash)


async def test_progress_is_qbittorrents_own_list(http: aiohttp.ClientSession, stack: Stack) -> None:
    await _add(http, stack, HASH, "one")
    await _add(http, stack, HASH2, "two")
    status, torrents = await _json(http, stack, "GET", "/torrent/progress")
    assert status == 200
    assert {t["hash"] for t in torrents} == {HASH, HASH2}
    own = {t["hash"]: set(t) for t in await stack.qbt.torrents()}
    assert all(set(t) == own[t["hash"]] for t in torrents)  # every field, unmodified


async def test_pause_resume_and_delete_act_on_that_torrent_only(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    await _add(http, stack, HASH, "one")
    await _add(http, stack, HASH2, "two")
    assert await _json(http, stack, "POST", f"/torrent/pause?hash={HASH.upper()}") == (
        200,
        {"success": True, "message": "Torrent paused successfully"},
    )
    await _state_becomes(stack.qbt, HASH, STOPPED)
    assert (await _listed(stack.qbt, HASH2))["state"] not in STOPPED
    assert await _json(http, stack, "POST", f"/torrent/Resume?Hash={HASH}") == (
        200,
        {"success": True, "message": "Torrent resumed successfully"},
    )
    await _state_becomes(stack.qbt, HASH, STOPPED, negate=True)
    assert await _json(http, stack, "POST", f"/torrent/delete?hash={HASH}&deleteFiles=TRUE") == (
        200,
        {"success": True, "message": "Torrent deleted successfully with files"},
    )
    assert await _json(http, stack, "POST", f"/torrent/delete?hash={HASH2}") == (
        200,
        {"success": True, "message": "Torrent deleted successfully"},
    )
    assert await wait_until(lambda: _empty(stack.qbt), interval=0.05)
    assert await stack.qbt.torrents() == []


@pytest.mark.parametrize("action", ["pause", "resume", "delete"])
@pytest.mark.parametrize("bad", ["all", "ALL", f"{HASH}|{HASH2}", "", "|", HASH[:-1], f"{HASH},{HASH2}"])
async def test_hash_all_pipes_and_junk_are_400_and_change_nothing(
    http: aiohttp.ClientSession, stack: Stack, action: str, bad: str
) -> None:
    await _add(http, stack, HASH, "one")
    before = await _listed(stack.qbt, HASH)
    status, body = await _json(http, stack, "POST", f"/torrent/{action}", params={"hash": bad})
    assert status == 400
    assert "hash" in body["error"]
    await asyncio.sleep(0.2)
    after = await _listed(stack.qbt, HASH)
    assert after["state"] not in STOPPED
    assert (after["hash"], after["save_path"]) == (before["hash"], before["save_path"])


@pytest.mark.parametrize("action", ["pause", "resume", "delete"])
async def test_an_unknown_hash_is_a_404(http: aiohttp.ClientSession, stack: Stack, action: str) -> None:
    status, body = await _json(http, stack, "POST", f"/torrent/{action}?hash={HASH2}")
    assert status == 404
    assert body["success"] is False
    assert HASH2 in body["message"]


async def test_delete_files_must_be_a_boolean(http: aiohttp.ClientSession, stack: Stack) -> None:
    await _add(http, stack, HASH, "one")
    status, body = await _json(http, stack, "POST", f"/torrent/delete?hash={HASH}&deleteFiles=1")
    assert status == 400
    assert "deleteFiles" in body["error"]
    assert await stack.qbt.torrents(hashes=HASH)


async def test_wrong_methods_are_405(http: aiohttp.ClientSession, stack: Stack) -> None:
    assert (await _json(http, stack, "GET", f"/torrent/pause?hash={HASH}"))[0] == 405
    assert (await _json(http, stack, "POST", "/torrent/progress"))[0] == 405


# --- qBittorrent trouble ---------------------------------------------------------------------------


async def test_a_restarted_qbittorrent_is_used_again_at_once(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    await _add(http, stack, HASH, "one")
    await stack.qbt.restart()
    await _listed(stack.qbt, HASH)
    status, torrents = await _json(http, stack, "GET", "/torrent/progress")
    assert status == 200
    assert [t["hash"] for t in torrents] == [HASH]


async def test_qbittorrent_down_is_a_500_with_the_reason(http: aiohttp.ClientSession, stack: Stack) -> None:
    await stack.qbt.stop()
    status, body = await _json(http, stack, "GET", "/torrent/progress")
    assert status == 500
    assert "qBittorrent is unreachable" in body["error"]


async def test_a_wrong_password_is_a_clear_500_and_never_gets_the_gateway_banned(
    http: aiohttp.ClientSession, stack_factory: StackFactory
) -> None:
    stack = await stack_factory(
        apibay=False, qbt_options={"max_auth_fail": 5}, qbittorrent_password="not-the-password"
    )
    qbt = stack.qbt
    for _ in range(10):
        async with http.get(stack.url("/torrent/progress"), headers=stack.headers) as resp:
            assert resp.status == 500
            body = await resp.json()
            assert "rejected the configured" in body["error"]
            assert "not-the-password" not in body["error"]
    # Not banned: the right password still logs in from the same address.
    status, text = await qbt.api("POST", "auth/login", username=qbt.username, password=qbt.password)
    assert (status, text) == (200, "Ok.")


async def test_a_non_admin_reaches_neither_qbittorrent_nor_apibay(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    token = stack.jellyfin.issue_token(stack.jellyfin.user_by_name("alice"))
    headers = {"Authorization": f'MediaBrowser Token="{token}"'}
    for method, path in [("GET", "/torrent/search?q=x"), ("POST", f"/torrent/pause?hash={HASH}"),
                         ("POST", "/torrent/download"), ("GET", "/torrent/progress")]:  # fmt: skip
        async with http.request(method, stack.url(path), headers=headers, json={"Info_hash": HASH}) as resp:
            assert resp.status == 403
    assert stack.apibay.total_calls == 0
    assert await stack.qbt.torrents() == []


async def test_the_gateway_needs_nothing_but_a_port_for_an_unreachable_apibay(
    http: aiohttp.ClientSession, stack: Stack, gateway_factory: GatewayFactory, jellyfin: TestServer
) -> None:
    gateway = await gateway_factory(server_url(jellyfin), apibay_url=URL(f"http://127.0.0.1:{free_port()}"))
    async with http.get(server_url(gateway, "/torrent/search?q=x"), headers=stack.headers) as resp:
        assert resp.status == 500
        assert "apibay is unreachable" in (await resp.json())["error"]
