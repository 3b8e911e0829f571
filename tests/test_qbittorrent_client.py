"""Unit tests of the qBittorrent client's protocol handling (outbound calls mocked with aioresponses)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from gateway.qbittorrent import LOGIN_RETRY_AFTER, LoginRejected, QbittorrentClient
from gateway.upstream import Failure, UpstreamError
from tests.conftest import FakeClock, MockedHTTP

QB = "http://127.0.0.1:8099"
API = f"{QB}/api/v2"
HASH = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def _client(
    session: aiohttp.ClientSession, *, username: str = "admin", clock: FakeClock | None = None
) -> QbittorrentClient:
    return QbittorrentClient(session, URL(QB), username=username, password="pw", clock=clock or FakeClock())


def _calls(mocked: aioresponses, method: str, path: str) -> list[dict[str, object]]:
    return [
        c.kwargs
        for (m, url), calls in mocked.requests.items()
        if m == method and url.path == f"/api/v2/{path}"
        for c in calls
    ]


def _login_ok(mocked: aioresponses, cookie: str = "SID=abc123") -> None:
    mocked.post(f"{API}/auth/login", body="Ok.", headers={"Set-Cookie": f"{cookie}; HttpOnly; path=/"})


async def test_the_login_cookie_is_kept_even_for_an_ip_address_host(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked)
        mocked.get(f"{API}/app/webapiVersion", body="2.8.19")
        client = _client(session)
        assert await client.webapi_version() == (2, 8, 19)
        [call] = _calls(mocked, "GET", "app/webapiVersion")
        assert call["headers"] == {"Cookie": "SID=abc123"}
        [login] = _calls(mocked, "POST", "auth/login")
        assert login["headers"] == {}  # logged in with an empty jar, no Origin/Referer


async def test_a_52_cookie_name_is_echoed_as_set(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        mocked.post(f"{API}/auth/login", status=204, headers={"Set-Cookie": "QBT_SID_8099=xyz; path=/"})
        mocked.get(f"{API}/app/webapiVersion", body="2.15.1")
        assert await _client(session).webapi_version() == (2, 15, 1)
        assert _calls(mocked, "GET", "app/webapiVersion")[0]["headers"] == {"Cookie": "QBT_SID_8099=xyz"}


async def test_an_expired_session_logs_in_again_once(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked, "SID=first")
        mocked.get(f"{API}/torrents/info?filter=all", status=403, body="Forbidden")
        _login_ok(mocked, "SID=second")
        mocked.get(f"{API}/torrents/info?filter=all", body="[]")
        assert await _client(session).torrents() == []
        assert len(_calls(mocked, "POST", "auth/login")) == 2
        assert [c["headers"] for c in _calls(mocked, "GET", "torrents/info")] == [
            {"Cookie": "SID=first"},
            {"Cookie": "SID=second"},
        ]


async def test_a_second_403_after_a_fresh_login_is_an_error_not_a_loop(
    session: aiohttp.ClientSession,
) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked)
        mocked.get(f"{API}/torrents/info?filter=all", status=403, repeat=True)
        _login_ok(mocked)
        with pytest.raises(UpstreamError, match="even after a fresh login"):
            await _client(session).torrents()
        assert len(_calls(mocked, "POST", "auth/login")) == 2


@pytest.mark.parametrize(("status", "body"), [(200, "Fails."), (401, "")])
async def test_a_rejected_login_is_reported_and_not_retried(
    session: aiohttp.ClientSession, status: int, body: str
) -> None:
    clock = FakeClock()
    client = _client(session, clock=clock)
    with MockedHTTP() as mocked:
        mocked.post(f"{API}/auth/login", status=status, body=body, repeat=True)
        for _ in range(10):
            with pytest.raises(LoginRejected, match="rejected the configured"):
                await client.torrents()
        assert len(_calls(mocked, "POST", "auth/login")) == 1
        clock.now += LOGIN_RETRY_AFTER + 1
        with pytest.raises(LoginRejected):
            await client.torrents()
        assert len(_calls(mocked, "POST", "auth/login")) == 2


async def test_a_ban_is_explained(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        mocked.post(f"{API}/auth/login", status=403, body="Your IP address has been banned")
        with pytest.raises(LoginRejected, match="banned") as caught:
            await _client(session).torrents()
    assert (caught.value.upstream, caught.value.kind) == ("qBittorrent", Failure.REFUSED)


async def test_without_credentials_no_login_is_tried_and_a_403_says_what_to_set(
    session: aiohttp.ClientSession,
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(f"{API}/torrents/info?filter=all", status=403)
        with pytest.raises(UpstreamError, match="QBITTORRENT_USERNAME"):
            await _client(session, username="").torrents()
        assert _calls(mocked, "POST", "auth/login") == []


async def test_without_credentials_the_first_session_cookie_is_reused(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        mocked.get(f"{API}/torrents/info?filter=all", body="[]", headers={"Set-Cookie": "SID=bypass; path=/"})
        mocked.get(f"{API}/torrents/info?filter=all", body="[]")
        client = _client(session, username="")
        await client.torrents()
        await client.torrents()
        assert [c["headers"] for c in _calls(mocked, "GET", "torrents/info")] == [
            {},
            {"Cookie": "SID=bypass"},
        ]


@pytest.mark.parametrize(
    ("version", "pause", "resume"), [("2.8.19", "pause", "resume"), ("2.11.4", "stop", "start")]
)
async def test_pause_and_resume_use_the_verbs_of_the_version(
    session: aiohttp.ClientSession, version: str, pause: str, resume: str
) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked)
        mocked.get(f"{API}/app/webapiVersion", body=version)
        mocked.post(f"{API}/torrents/{pause}", body="")
        mocked.post(f"{API}/torrents/{resume}", body="")
        client = _client(session)
        await client.pause(HASH)
        await client.resume(HASH)
        assert _calls(mocked, "POST", f"torrents/{pause}")[0]["data"] == {"hashes": HASH}
        assert len(_calls(mocked, "GET", "app/webapiVersion")) == 1  # read once


@pytest.mark.parametrize("bad", ["all", f"{HASH}|{HASH}", "", HASH.upper(), HASH[:39]])
async def test_the_client_itself_refuses_anything_but_one_id(
    session: aiohttp.ClientSession, bad: str
) -> None:
    with MockedHTTP() as mocked:
        client = _client(session)
        for action in (client.pause, client.resume):
            with pytest.raises(ValueError, match="one torrent ID"):
                await action(bad)
        with pytest.raises(ValueError, match="one torrent ID"):
            await client.delete(bad, delete_files=False)
        assert mocked.requests == {}


async def test_adding_sends_both_paused_and_stopped_and_one_url(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked)
        mocked.post(f"{API}/torrents/add", body="Ok.")
        result = await _client(session).add_magnet(f"magnet:?xt=urn:btih:{HASH}", save_path="/downloads/x")
        assert result.accepted
        assert result.server_response == "Ok."
        form = _calls(mocked, "POST", "torrents/add")[0]["data"]
        assert form == {
            "urls": f"magnet:?xt=urn:btih:{HASH}",
            "paused": "false",
            "stopped": "false",
            "savepath": "/downloads/x",
            "autoTMM": "false",
        }


@pytest.mark.parametrize(
    ("status", "body", "accepted"),
    [
        (200, "Ok.", True),
        (200, "Fails.", False),
        (200, '{"success_count":1,"failure_count":0,"pending_count":0,"added_torrent_ids":["x"]}', True),
        (202, '{"success_count":0,"failure_count":0,"pending_count":1,"added_torrent_ids":[]}', True),
        (409, '{"success_count":0,"failure_count":1,"pending_count":0,"added_torrent_ids":[]}', False),
    ],
)
async def test_add_replies_of_every_version_are_understood(
    session: aiohttp.ClientSession, status: int, body: str, accepted: bool
) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked)
        mocked.post(f"{API}/torrents/add", status=status, body=body)
        result = await _client(session).add_magnet(f"magnet:?xt=urn:btih:{HASH}", save_path=None)
    assert result.accepted is accepted
    assert result.server_response == body


@pytest.mark.parametrize(
    "magnet", [f"magnet:?xt=urn:btih:{HASH}\nfile:///etc/passwd", "file:///etc/passwd", "http://x/t.torrent"]
)
async def test_only_one_magnet_line_can_be_added(session: aiohttp.ClientSession, magnet: str) -> None:
    with MockedHTTP() as mocked, pytest.raises(ValueError, match="exactly one magnet link"):
        await _client(session).add_magnet(magnet, save_path=None)
    assert mocked.requests == {}


async def test_unreachable_and_slow_qbittorrent_give_reasons_and_kinds(
    session: aiohttp.ClientSession,
) -> None:
    with MockedHTTP() as mocked:
        mocked.post(f"{API}/auth/login", exception=TimeoutError())
        with pytest.raises(UpstreamError, match="did not answer within 10 s") as caught:
            await _client(session).torrents()
    assert caught.value.kind is Failure.TIMEOUT
    client = QbittorrentClient(session, URL("http://127.0.0.1:9"), username="", password="")
    with pytest.raises(UpstreamError, match=re.escape("qBittorrent is unreachable")) as caught:
        await client.torrents()
    assert caught.value.kind is Failure.UNREACHABLE


async def test_a_connection_dropped_mid_answer_is_said_as_before(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked)
        mocked.get(f"{API}/torrents/info?filter=all", exception=aiohttp.ServerDisconnectedError())
        with pytest.raises(UpstreamError) as caught:
            await _client(session).torrents()
    assert caught.value.reason == "qBittorrent broke off the exchange (ServerDisconnectedError)"
    assert caught.value.kind is Failure.UNREACHABLE


async def test_a_non_list_torrent_reply_is_an_error(session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        _login_ok(mocked)
        mocked.get(f"{API}/torrents/info?filter=all", body='{"not": "a list"}')
        with pytest.raises(UpstreamError, match="not a list") as caught:
            await _client(session).torrents_text()
    assert caught.value.kind is Failure.BAD_REPLY
