"""The organizer's calls to qBittorrent and its patience (outbound calls mocked with aioresponses).

The real thing, on qBittorrent 4.5 and 5.1 with real downloads, is tests/test_landing_e2e.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from gateway.organizer import Organizer
from gateway.qbittorrent import QbittorrentClient
from tests.conftest import MockedHTTP, wait_until

QB = "http://127.0.0.1:8099"
API = f"{QB}/api/v2"
HASH = "0123456789abcdef0123456789abcdef01234567"
INFO = re.compile(rf"^{re.escape(API)}/torrents/info\?.*")
FILES = re.compile(rf"^{re.escape(API)}/torrents/files\?.*")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def _organizer(session: aiohttp.ClientSession) -> Organizer:
    async def no_wait(_: float) -> None:
        return None

    client = QbittorrentClient(session, URL(QB), username="", password="")
    return Organizer(client, sleep=no_wait)


def _torrent(state: str = "pausedDL", tags: str = "") -> list[dict[str, Any]]:
    tags = tags or "jellyfin-gateway, jellyfin-gateway-folder:movie, jellyfin-gateway-organize"
    return [
        {"hash": HASH, "name": "Alien.1979", "state": state, "tags": tags, "save_path": "/m/Alien (1979)"}
    ]


FILE_LIST = [
    {"index": 0, "name": "Alien.1979.1080p.mkv", "size": 9000},
    {"index": 1, "name": "Sample/alien-sample.mkv", "size": 90},
    {"index": 2, "name": "Setup.exe", "size": 10},
    {"index": 3, "name": "Subs/English.srt", "size": 10},
]


def _posted(mocked: aioresponses, path: str) -> list[dict[str, str]]:
    return [
        dict(call.kwargs["data"])
        for (method, url), calls in mocked.requests.items()
        if method == "POST" and url.path == f"/api/v2/{path}"
        for call in calls
    ]


def _mock_actions(mocked: aioresponses, *, rename_status: int = 200) -> None:
    mocked.post(f"{API}/torrents/filePrio", body="", repeat=True)
    mocked.post(f"{API}/torrents/renameFile", status=rename_status, body="", repeat=True)
    mocked.post(f"{API}/torrents/resume", body="", repeat=True)
    mocked.post(f"{API}/torrents/removeTags", body="", repeat=True)
    mocked.get(f"{API}/app/webapiVersion", body="2.8.19")


async def test_an_organized_torrent_skips_clutter_renames_starts_and_drops_the_tag_last(
    session: aiohttp.ClientSession,
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(INFO, payload=_torrent())
        mocked.get(FILES, payload=FILE_LIST)
        _mock_actions(mocked)
        assert await _organizer(session).organize(HASH) is True
        assert _posted(mocked, "torrents/filePrio") == [{"hash": HASH, "id": "1|2", "priority": "0"}]
        assert _posted(mocked, "torrents/renameFile") == [
            {"hash": HASH, "oldPath": "Alien.1979.1080p.mkv", "newPath": "Alien (1979).mkv"},
            {"hash": HASH, "oldPath": "Subs/English.srt", "newPath": "Alien (1979).en.srt"},
        ]
        assert _posted(mocked, "torrents/resume") == [{"hashes": HASH}]
        assert _posted(mocked, "torrents/removeTags") == [
            {"hashes": HASH, "tags": "jellyfin-gateway-organize"}
        ]
        order = [url.path.rsplit("/", 1)[-1] for (method, url) in mocked.requests if method == "POST"]
        assert order[-1] == "removeTags"


async def test_a_taken_name_is_reported_and_the_rest_still_done(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(INFO, payload=_torrent(state="downloading"))
        mocked.get(FILES, payload=FILE_LIST)
        _mock_actions(mocked, rename_status=409)
        assert await _organizer(session).organize(HASH) is True
        assert len(_posted(mocked, "torrents/renameFile")) == 2
        assert _posted(mocked, "torrents/resume") == []  # it was not waiting stopped: nothing to start
        assert "that name is taken" in caplog.text


@pytest.mark.parametrize("state", ["metaDL", "checkingResumeData"])
async def test_a_torrent_still_fetching_or_checking_is_left_for_later(
    session: aiohttp.ClientSession, state: str
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(INFO, payload=_torrent(state=state))
        assert await _organizer(session).organize(HASH) is False
        assert not any(url.path.endswith("/files") for (_, url) in mocked.requests)


async def test_a_torrent_without_a_folder_plan_only_loses_its_tag(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        mocked.get(INFO, payload=_torrent(tags="jellyfin-gateway, jellyfin-gateway-organize"))
        _mock_actions(mocked)
        assert await _organizer(session).organize(HASH) is True
        assert _posted(mocked, "torrents/renameFile") == []
        assert len(_posted(mocked, "torrents/removeTags")) == 1


async def test_a_gone_torrent_is_done_and_a_failing_qbittorrent_is_tried_again(
    session: aiohttp.ClientSession,
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(INFO, payload=[])
        assert await _organizer(session).organize(HASH) is True
    organizer = _organizer(session)
    with MockedHTTP() as mocked:
        mocked.get(INFO, status=500, body="boom")  # once down, then up with an empty file list, then done
        mocked.get(INFO, payload=_torrent())
        mocked.get(FILES, payload=[])
        mocked.get(INFO, payload=_torrent())
        mocked.get(FILES, payload=FILE_LIST)
        _mock_actions(mocked)
        organizer.organize_soon(HASH)
        organizer.organize_soon(HASH)  # a second call while it runs does nothing
        assert await wait_until(lambda: organizer.organized == 1, 5)
        assert len(_posted(mocked, "torrents/removeTags")) == 1
    await organizer.stop()
