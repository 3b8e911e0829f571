"""The torrent watcher: notifications (unit, mocked upstreams) and live events (real qBittorrent)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from gateway.jellyfin import JellyfinClient
from gateway.keys import WATCHER
from gateway.qbittorrent import QbittorrentClient
from gateway.tags import GATEWAY_TAG, NOTIFIED_TAG, library_tag, tags_of
from gateway.watcher import TorrentWatcher
from tests.conftest import (
    FakeClock,
    GatewayFactory,
    MockedHTTP,
    RunningGateway,
    ServerFactory,
    StackFactory,
    server_url,
    wait_until,
)
from tests.jellyfin_standin import ROUTES, Handler, Library, RequestContext, Route, StandinState
from tests.qbittorrent_nox import QbtInstance
from tests.qbittorrent_stub import StubQbittorrent, complete_torrents, create_stub_qbittorrent
from tests.qbittorrent_stub import finished_torrent as _torrent
from tests.sse import SseEvent, read_events

QB = "http://127.0.0.1:8099/api/v2"
JF = "http://127.0.0.1:8096"
KEY = "fedcba9876543210fedcba9876543210"
HASH = "0123456789abcdef0123456789abcdef01234567"
PATH_MAP = (("/media", "/downloads"),)
_KEY = aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 8096, False, True, None, None, None)
LIBRARIES = [{"Name": "Movies", "Locations": ["/media/movies"]}]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def _watcher(session: aiohttp.ClientSession, clock: FakeClock | None = None) -> TorrentWatcher:
    qbittorrent = QbittorrentClient(session, URL(QB.removesuffix("/api/v2")), username="", password="")
    jellyfin = JellyfinClient(session, URL(JF), connect_timeout=1)
    return TorrentWatcher(
        qbittorrent,
        jellyfin,
        api_key=KEY,
        path_map=PATH_MAP,
        interval=1,
        notify=True,
        clock=clock or FakeClock(),
    )


def _maindata(
    mocked: aioresponses, rid: int, torrents: dict[str, Any], *, full: bool = False, **extra: Any
) -> None:
    body = {"rid": rid + 1, "torrents": torrents, **extra}
    if full:
        body["full_update"] = True
    mocked.get(f"{QB}/sync/maindata?rid={rid}", payload=body)


async def _poll_and_announce(watcher: TorrentWatcher) -> None:
    """One poll, then the announcement round the poller hands to its announcer task."""
    await watcher.poll_once()
    await watcher.announce_due()


def _posts(mocked: aioresponses, url: str) -> list[Any]:
    return [
        call.kwargs.get("json") or call.kwargs.get("data")
        for call in mocked.requests.get(("POST", URL(url)), [])
    ]


async def test_a_finished_gateway_torrent_is_announced_once_with_jellyfins_path(
    session: aiohttp.ClientSession,
) -> None:
    watcher = _watcher(session)
    with MockedHTTP() as mocked:
        _maindata(mocked, 0, {HASH: _torrent()}, full=True)
        mocked.get(f"{JF}/Library/VirtualFolders", payload=LIBRARIES)
        mocked.post(f"{JF}/Library/Media/Updated", status=204)
        mocked.post(f"{QB}/torrents/addTags", body="")
        _maindata(mocked, 1, {HASH: {"tags": f"{GATEWAY_TAG}, {NOTIFIED_TAG}"}})
        await _poll_and_announce(watcher)
        await _poll_and_announce(watcher)
        assert _posts(mocked, f"{JF}/Library/Media/Updated") == [
            {"Updates": [{"Path": "/media/movies/Movie", "UpdateType": "Created"}]}
        ]
        assert _posts(mocked, f"{QB}/torrents/addTags") == [{"hashes": HASH, "tags": NOTIFIED_TAG}]
        headers = mocked.requests[("POST", URL(f"{JF}/Library/Media/Updated"))][0].kwargs["headers"]
        assert headers["Authorization"] == f'MediaBrowser Token="{KEY}"'
    assert watcher.last_notification is not None
    assert watcher.last_notification.call == "/Library/Media/Updated"


@pytest.mark.parametrize(
    "torrent",
    [
        _torrent(tags=""),  # not the gateway's
        _torrent(tags=f"{GATEWAY_TAG}, {NOTIFIED_TAG}"),  # already announced (before a restart, say)
        _torrent(progress=0.5, state="downloading"),
        _torrent(progress=1, state="checkingUP"),
        _torrent(progress=1, state="moving"),
    ],
)
async def test_other_torrents_are_left_alone(session: aiohttp.ClientSession, torrent: dict[str, Any]) -> None:
    watcher = _watcher(session)
    with MockedHTTP() as mocked:
        _maindata(mocked, 0, {HASH: torrent}, full=True)
        await _poll_and_announce(watcher)
        assert [key for key in mocked.requests if key[0] == "POST"] == []


@pytest.mark.parametrize(
    ("torrent", "updated_status"),
    [
        (_torrent(content_path="/elsewhere/Movie"), None),  # outside PATH_MAP: in no library
        (_torrent(content_path="/downloads/other/Movie"), None),  # mapped, but in no library
        (_torrent(), 500),  # Jellyfin refused the targeted call
    ],
)
async def test_otherwise_the_whole_library_is_refreshed(
    session: aiohttp.ClientSession, torrent: dict[str, Any], updated_status: int | None
) -> None:
    watcher = _watcher(session)
    with MockedHTTP() as mocked:
        _maindata(mocked, 0, {HASH: torrent}, full=True)
        mocked.get(f"{JF}/Library/VirtualFolders", payload=LIBRARIES)
        if updated_status is not None:
            mocked.post(f"{JF}/Library/Media/Updated", status=updated_status)
        mocked.post(f"{JF}/Library/Refresh", status=204)
        mocked.post(f"{QB}/torrents/addTags", body="")
        await _poll_and_announce(watcher)
        assert len(_posts(mocked, f"{JF}/Library/Refresh")) == 1
        assert len(_posts(mocked, f"{QB}/torrents/addTags")) == 1


async def test_jellyfin_down_delays_the_notification_with_backoff_and_never_loses_it(
    session: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    watcher = _watcher(session, clock)
    with MockedHTTP() as mocked:
        _maindata(mocked, 0, {HASH: _torrent()}, full=True)
        refused = OSError(111, "Connection refused")
        mocked.get(f"{JF}/Library/VirtualFolders", exception=aiohttp.ClientConnectorError(_KEY, refused))
        await _poll_and_announce(watcher)
        assert watcher.pending() == [HASH]
        assert "unreachable" in str(watcher.last_error)
        # Within the backoff nothing is tried; after it, Jellyfin is back and the torrent is announced.
        _maindata(mocked, 1, {})
        clock.now += 1
        await _poll_and_announce(watcher)
        assert ("POST", URL(f"{JF}/Library/Media/Updated")) not in mocked.requests
        _maindata(mocked, 2, {})
        mocked.get(f"{JF}/Library/VirtualFolders", payload=LIBRARIES)
        mocked.post(f"{JF}/Library/Media/Updated", status=204)
        mocked.post(f"{QB}/torrents/addTags", body="")
        clock.now += 5
        await _poll_and_announce(watcher)
        assert len(_posts(mocked, f"{JF}/Library/Media/Updated")) == 1
    assert watcher.pending() == []


async def test_deltas_and_removals_reach_subscribers(session: aiohttp.ClientSession) -> None:
    watcher = _watcher(session)
    watcher.notify = False
    queue = watcher.subscribe()
    with MockedHTTP() as mocked:
        _maindata(mocked, 0, {HASH: _torrent(progress=0.1, state="downloading")}, full=True)
        _maindata(mocked, 1, {HASH: {"progress": 0.5}})
        _maindata(mocked, 2, {}, torrents_removed=[HASH])
        for _ in range(3):
            await watcher.poll_once()
    events = [str(queue.get_nowait()) for _ in range(3)]
    assert events[0].startswith("event: snapshot\n")
    assert json.loads(events[0].split("data: ", 1)[1])["torrents"][0]["hash"] == HASH
    assert json.loads(events[1].split("data: ", 1)[1]) == {
        "torrents": {HASH: {"progress": 0.5, "hash": HASH}},
        "removed": [],
    }
    assert json.loads(events[2].split("data: ", 1)[1]) == {"torrents": {}, "removed": [HASH]}
    # A late subscriber starts from the current state.
    late = watcher.subscribe()
    assert json.loads(str(late.get_nowait()).split("data: ", 1)[1]) == {"torrents": [], "landings": []}


def test_library_tags_carry_no_commas() -> None:
    assert library_tag("Movies, Kids") == "jellyfin-gateway-library:Movies Kids"
    assert tags_of({"tags": "a, b,c"}) == {"a", "b", "c"}


async def test_libraries_jellyfin_will_not_list_mean_a_full_refresh_not_a_retry(
    session: aiohttp.ClientSession,
) -> None:
    watcher = _watcher(session)
    with MockedHTTP() as mocked:
        _maindata(mocked, 0, {HASH: _torrent()}, full=True)
        mocked.get(f"{JF}/Library/VirtualFolders", status=500)
        mocked.post(f"{JF}/Library/Refresh", status=204)
        mocked.post(f"{QB}/torrents/addTags", body="")
        await _poll_and_announce(watcher)
        assert len(_posts(mocked, f"{JF}/Library/Refresh")) == 1
        assert ("POST", URL(f"{JF}/Library/Media/Updated")) not in mocked.requests
    assert watcher.last_notification is not None
    assert watcher.last_notification.call == "/Library/Refresh"
    assert watcher.last_error is None


async def test_a_refused_full_refresh_is_retried_with_jellyfins_reason(
    session: aiohttp.ClientSession,
) -> None:
    watcher = _watcher(session)
    with MockedHTTP() as mocked:
        _maindata(mocked, 0, {HASH: _torrent(content_path="/elsewhere/Movie")}, full=True)
        mocked.post(f"{JF}/Library/Refresh", status=401)
        await _poll_and_announce(watcher)
        assert ("POST", URL(f"{QB}/torrents/addTags")) not in mocked.requests
    assert watcher.pending() == [HASH]
    assert watcher.last_error == "Jellyfin answered /Library/Refresh with HTTP 401"


class FakeSleep:
    """Waits no real time: each sleep is recorded and moves the fake clock on by as much.

    The ``park_after``-th sleep never ends (until the watcher is stopped), so a test reads a fixed
    sequence of waits.
    """

    def __init__(self, clock: FakeClock, *, park_after: int) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self.park_after = park_after
        self.parked = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.now += delay
        if len(self.delays) >= self.park_after:
            self.parked.set()
            await asyncio.Event().wait()
        await asyncio.sleep(0)


async def test_a_failing_poll_backs_off_on_the_watchers_own_clock_without_real_waiting(
    session: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock, park_after=9)
    watcher = TorrentWatcher(
        QbittorrentClient(session, URL(QB.removesuffix("/api/v2")), username="", password=""),
        JellyfinClient(session, URL(JF), connect_timeout=1),
        api_key=KEY,
        path_map=PATH_MAP,
        interval=1,
        notify=True,
        clock=clock,
        sleep=sleep,
    )
    refused = aiohttp.ClientConnectorError(_KEY, OSError(111, "Connection refused"))
    loop = asyncio.get_running_loop()
    with MockedHTTP() as mocked:
        for _ in range(7):
            mocked.get(f"{QB}/sync/maindata?rid=0", exception=refused)
        _maindata(mocked, 0, {}, full=True)
        _maindata(mocked, 1, {})
        started = loop.time()
        watcher.start()
        try:
            await asyncio.wait_for(sleep.parked.wait(), 5)
        finally:
            await watcher.stop()
    # Doubling from twice the interval up to MAX_BACKOFF; back to the interval once qBittorrent answers.
    assert sleep.delays == [2, 4, 8, 16, 32, 60, 60, 1, 1]
    assert clock.now == 1000 + sum(sleep.delays)
    assert loop.time() - started < 2  # 183 s of backoff, no real waiting
    assert watcher.polls == 2
    assert watcher.last_error is None


# --- with a real qBittorrent ------------------------------------------------------------------------

Live = tuple[RunningGateway, QbtInstance, dict[str, str]]


@pytest.fixture
async def live(stack_factory: StackFactory) -> Live:
    """Polling every 0.1 s; no apibay (its health is an unreachable port). A listener who went away
    is noticed at the next keep-alive comment: 0.2 s in a stack, not the 15 s of production."""
    stack = await stack_factory(apibay=False, watch_interval=0.1)
    return stack.gateway, stack.qbt, stack.headers


def _hashes(kind: str, data: Any) -> set[str]:
    torrents = data["torrents"]
    return set(torrents) if kind == "delta" else {t["hash"] for t in torrents}


async def _read_events(response: aiohttp.ClientResponse, events: list[tuple[str, Any]]) -> None:
    event = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:])))


async def test_two_listeners_share_one_poller_that_runs_only_while_someone_listens(
    http: aiohttp.ClientSession, live: Live
) -> None:
    gateway, _, headers = live

    watcher = gateway.app[WATCHER]
    await asyncio.sleep(0.3)
    assert watcher.polls == 0  # no listener, no API key: no polling
    streams = [await http.get(server_url(gateway, "/torrent/events"), headers=headers) for _ in range(2)]
    seen: list[list[tuple[str, Any]]] = [[], []]
    readers = [asyncio.create_task(_read_events(s, e)) for s, e in zip(streams, seen, strict=True)]
    try:
        assert all(s.status == 200 and s.content_type == "text/event-stream" for s in streams)
        assert await wait_until(lambda: watcher.subscribers == 2)
        async with http.post(
            server_url(gateway, "/torrent/download"),
            headers=headers,
            json={"Info_hash": "A" * 40, "Library": "Movies"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        for events in seen:
            assert await wait_until(
                lambda events=events: any(  # type: ignore[misc]
                    "a" * 40
                    in (data["torrents"] if kind == "delta" else {t["hash"]: t for t in data["torrents"]})
                    for kind, data in events
                )
            )
            assert events[0][0] == "snapshot"
        before = watcher.polls
        await asyncio.sleep(1.0)
        assert watcher.polls - before <= 12  # one poller at 0.1 s, not one per listener
    finally:
        for reader in readers:
            reader.cancel()
        for stream in streams:
            stream.close()
    assert await wait_until(lambda: watcher.subscribers == 0, 20)
    await asyncio.sleep(0.3)
    idle = watcher.polls
    await asyncio.sleep(0.5)
    assert watcher.polls == idle


async def test_a_download_into_a_library_lands_in_its_folder_with_the_gateway_tags(
    http: aiohttp.ClientSession, live: Live
) -> None:
    gateway, qbt, headers = live
    async with http.post(
        server_url(gateway, "/torrent/download"),
        headers=headers,
        json={"Info_hash": "B" * 40, "library": "shows"},
    ) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    expected = str(qbt.downloads.parent / "library" / "tv")
    assert answer["SavePath"] == expected
    for _ in range(100):
        found = await qbt.torrents(hashes="b" * 40)
        if found:
            break
        await asyncio.sleep(0.05)
    assert found[0]["save_path"].rstrip("/") == expected
    assert tags_of(found[0]) == {GATEWAY_TAG, library_tag("Shows")}


@pytest.mark.parametrize(("library", "reason"), [("Nope", "no library named"), ("", "no library named")])
async def test_an_unknown_library_is_a_400_and_adds_nothing(
    http: aiohttp.ClientSession, live: Live, library: str, reason: str
) -> None:
    gateway, qbt, headers = live
    async with http.post(
        server_url(gateway, "/torrent/download"),
        headers=headers,
        json={"Info_hash": "C" * 40, "Library": library},
    ) as resp:
        assert resp.status == 400
        assert reason in (await resp.json())["error"]
    assert await qbt.torrents() == []


async def test_a_library_outside_path_map_is_a_400(
    http: aiohttp.ClientSession, live: Live, standin_state: StandinState
) -> None:
    standin_state.libraries.append(Library("Music", ["/srv/music"], "music"))
    gateway, qbt, headers = live
    async with http.post(
        server_url(gateway, "/torrent/download"),
        headers=headers,
        json={"Info_hash": "C" * 40, "Library": "Music"},
    ) as resp:
        assert resp.status == 400
        assert "PATH_MAP" in (await resp.json())["error"]
    assert await qbt.torrents() == []


async def test_health_reports_every_upstream_and_the_watcher(http: aiohttp.ClientSession, live: Live) -> None:
    gateway, qbt, headers = live
    async with http.get(server_url(gateway, "/torrent/health"), headers=headers) as resp:
        assert resp.status == 200
        health = await resp.json()
    assert health["jellyfin"]["ok"] is True
    assert health["jellyfin"]["version"] == "10.11.0"
    assert health["qbittorrent"] == {
        "ok": True,
        "version": qbt.version,
        "webapi_version": qbt.webapi_version,
        "latency_ms": health["qbittorrent"]["latency_ms"],
    }
    assert health["apibay"]["ok"] is False  # a closed port in these tests
    assert "unreachable" in health["apibay"]["error"]
    assert health["watcher"]["notifications"] is False  # no JELLYFIN_API_KEY


# --- with a stub qBittorrent: the watcher against a Jellyfin that hangs ------------------------------


def hold_library_calls(jellyfin: TestServer, release: asyncio.Event) -> None:
    """Make the stand-in hang on every /Library/* call until ``release`` is set."""

    def held(handler: Handler) -> Handler:
        async def wait_then_answer(ctx: RequestContext) -> web.StreamResponse:
            await release.wait()
            return await handler(ctx)

        return wait_then_answer

    routes = jellyfin.app[ROUTES]
    for index, row in enumerate(routes):
        if row.template.lower().startswith("/library/"):
            routes[index] = Route(row.methods, row.template, row.policy, held(row.handler))


@pytest.fixture
def qbt_stub() -> StubQbittorrent:
    return StubQbittorrent()


@pytest.fixture
async def qbt_stub_server(aiohttp_server: ServerFactory, qbt_stub: StubQbittorrent) -> TestServer:
    return await aiohttp_server(create_stub_qbittorrent(qbt_stub))


@pytest.fixture
async def announcing_gateway(
    jellyfin: TestServer,
    standin_state: StandinState,
    qbt_stub_server: TestServer,
    gateway_factory: GatewayFactory,
) -> RunningGateway:
    """A gateway that polls the stub every 0.1 s and tells the stand-in about finished downloads."""
    return await gateway_factory(
        server_url(jellyfin),
        qbittorrent_url=server_url(qbt_stub_server),
        jellyfin_api_key=standin_state.api_key_for("gateway"),
        path_map=PATH_MAP,
        watch_interval=0.1,
    )


async def test_live_progress_keeps_flowing_while_jellyfin_hangs_and_each_torrent_is_announced_once(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    standin_state: StandinState,
    qbt_stub: StubQbittorrent,
    gateway_factory: GatewayFactory,
    qbt_stub_server: TestServer,
) -> None:
    release = asyncio.Event()
    hold_library_calls(jellyfin, release)
    qbt_stub.torrents = complete_torrents("Alpha", "Beta")
    gateway = await gateway_factory(
        server_url(jellyfin),
        qbittorrent_url=server_url(qbt_stub_server),
        jellyfin_api_key=standin_state.api_key_for("gateway"),
        path_map=PATH_MAP,
        watch_interval=0.1,
    )
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    stream = await http.get(
        server_url(gateway, "/torrent/events"), headers={"Authorization": f'MediaBrowser Token="{token}"'}
    )
    events: list[SseEvent] = []
    reader = asyncio.create_task(read_events(stream, events))
    try:
        assert stream.status == 200
        # The announcement is under way and Jellyfin holds it.
        assert await wait_until(lambda: standin_state.calls["GET /library/virtualfolders"] >= 1)
        hung_at = time.monotonic()

        def deltas() -> list[float]:
            return [at for at, kind, _ in events if kind == "delta" and at >= hung_at]

        assert await wait_until(lambda: len(deltas()) >= 20, 5), f"{len(deltas())} deltas while Jellyfin hung"
        times = [hung_at, *deltas()]
        assert max(b - a for a, b in itertools.pairwise(times)) < 1.0
        assert standin_state.media_updates == []
        # Jellyfin answers again: each torrent is announced once, and stays announced.
        release.set()
        assert await wait_until(lambda: all(qbt_stub.tagged(h) for h in qbt_stub.torrents), 15)
        polls = gateway.app[WATCHER].polls
        assert await wait_until(lambda: gateway.app[WATCHER].polls >= polls + 5)
    finally:
        release.set()
        reader.cancel()
        stream.close()
    assert sorted(u.path for u in standin_state.media_updates) == [
        "/media/movies/Alpha",
        "/media/movies/Beta",
    ]
    assert sum("addTags" in r for r in qbt_stub.requests) == 2


async def test_several_finished_torrents_share_one_virtualfolders_call(
    announcing_gateway: RunningGateway, standin_state: StandinState, qbt_stub: StubQbittorrent
) -> None:
    qbt_stub.torrents = complete_torrents("One", "Two", "Three")
    assert await wait_until(lambda: len(standin_state.media_updates) == 3, 10)
    assert await wait_until(lambda: all(qbt_stub.tagged(h) for h in qbt_stub.torrents))
    assert standin_state.calls["GET /library/virtualfolders"] == 1
    assert standin_state.library_refreshes == 0


async def test_jellyfin_is_told_once_even_when_recording_it_in_qbittorrent_must_be_retried(
    announcing_gateway: RunningGateway, standin_state: StandinState, qbt_stub: StubQbittorrent
) -> None:
    qbt_stub.add_tags_failures = 1
    qbt_stub.torrents = complete_torrents("Gamma")
    (torrent_hash,) = qbt_stub.torrents
    assert await wait_until(lambda: qbt_stub.tagged(torrent_hash), 10), announcing_gateway.app[
        WATCHER
    ].status()
    assert [u.path for u in standin_state.media_updates] == ["/media/movies/Gamma"]
    assert sum("addTags" in r for r in qbt_stub.requests) == 2
