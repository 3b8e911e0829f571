"""The admin check: token extraction as Jellyfin 10.11, decisions, cache, failure modes, no leaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from multidict import CIMultiDict
from yarl import URL

from gateway.auth import ElevationCache, decide, extract_credentials, parse_authorization_parts
from gateway.jellyfin import (
    ClientIdentity,
    Credentials,
    JellyfinClient,
    TokenForm,
    authorization_header,
)
from gateway.upstream import Failure, UpstreamError
from tests.conftest import (
    FakeClock,
    GatewayFactory,
    MockedHTTP,
    RunningGateway,
    ServerFactory,
    free_port,
    server_url,
)
from tests.jellyfin_standin import StandinState

TOKEN = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


def _extract(headers: dict[str, str] | list[tuple[str, str]], query: str = "") -> str | None:
    items = headers.items() if isinstance(headers, dict) else headers
    credentials = extract_credentials(CIMultiDict(items), query)
    return credentials.token if credentials is not None else None


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"Authorization": f'MediaBrowser Token="{TOKEN}"'}, "", TOKEN),
        ({"Authorization": f'mediabrowser Token="{TOKEN}"'}, "", TOKEN),
        ({"Authorization": f"MediaBrowser Token={TOKEN}"}, "", TOKEN),
        ({"Authorization": f'Emby Token="{TOKEN}"'}, "", TOKEN),
        ({"Authorization": f'MediaBrowser Client="web", Device="Fire%20fox", Token="{TOKEN}"'}, "", TOKEN),
        ({"Authorization": 'MediaBrowser Token="a%2Bb+c"'}, "", "a+b c"),
        ({"Authorization": 'MediaBrowser Token="first", Token="last"'}, "", "last"),
        ({"Authorization": f'MediaBrowser token="{TOKEN}"'}, "", None),  # keys are case-sensitive
        ({"Authorization": 'MediaBrowser Token=""'}, "", None),  # the SDK before login
        ({"Authorization": 'MediaBrowser Token="   "'}, "", None),
        ({"Authorization": f"Bearer {TOKEN}"}, "", None),
        ({"Authorization": 'MediaBrowser Token=""', "X-Emby-Token": OTHER}, "", OTHER),
        ({"X-Emby-Authorization": f'MediaBrowser Token="{TOKEN}"'}, "", TOKEN),
        (
            {
                "Authorization": f'MediaBrowser Token="{TOKEN}"',
                "X-Emby-Authorization": f'MediaBrowser Token="{OTHER}"',
            },
            "",
            TOKEN,
        ),
        (
            {"Authorization": "Basic dXNlcjpwdw==", "X-Emby-Authorization": f'MediaBrowser Token="{OTHER}"'},
            "",
            None,
        ),
        ({"Authorization": "Basic dXNlcjpwdw==", "X-Emby-Token": OTHER}, "", OTHER),
        ({"Authorization": "", "X-Emby-Authorization": f'MediaBrowser Token="{OTHER}"'}, "", OTHER),
        ({"X-Emby-Token": TOKEN, "X-MediaBrowser-Token": OTHER}, f"ApiKey={OTHER}", TOKEN),
        ({"X-MediaBrowser-Token": TOKEN}, f"ApiKey={OTHER}", TOKEN),
        ({}, f"ApiKey={TOKEN}&api_key={OTHER}", TOKEN),
        ({}, f"apikey={TOKEN}", TOKEN),
        ({}, f"APIKEY={TOKEN}", TOKEN),
        ({}, f"api_key={TOKEN}", TOKEN),
        ({}, f"API_KEY={TOKEN}", TOKEN),
        ({}, f"ApiKey=&api_key={TOKEN}", TOKEN),
        ({}, f"ApiKey%3D{TOKEN}", TOKEN),  # ASP.NET re-parses a fully encoded query
        ({}, f"x%3D1%26api_key%3D{TOKEN}", TOKEN),
        ({}, f"%2541piKey%3D{TOKEN}", None),  # ... once, without decoding its parts again
        ({}, f"api%5Fkey={TOKEN}", TOKEN),
        ({}, "x=1", None),
        ({"X-Emby-Token": "ab\udcffcd"}, "", None),  # the byte 0xFF, as aiohttp hands it over
        ({"Authorization": 'MediaBrowser Token="ab\udcffcd"'}, f"ApiKey={OTHER}", None),
        ({"Authorization": f'MediaBrowser Token="{TOKEN}"'}, f"ApiKey={OTHER}", TOKEN),
    ],
)
def test_the_token_is_found_as_jellyfin_10_11_finds_it(
    headers: dict[str, str], query: str, expected: str | None
) -> None:
    assert _extract(headers, query) == expected


def test_only_the_first_authorization_header_counts() -> None:
    headers = [("Authorization", "Basic x"), ("Authorization", f'MediaBrowser Token="{TOKEN}"')]
    assert _extract(headers) is None


def test_a_quoted_comma_stays_in_the_value() -> None:
    parts = parse_authorization_parts('Client="Jellyfin, Web", Device=Fire, Token="t"')
    assert parts == {"Client": "Jellyfin, Web", "Device": "Fire", "Token": "t"}


def test_the_client_identity_comes_with_the_token() -> None:
    credentials = extract_credentials(
        CIMultiDict(
            Authorization='MediaBrowser Client="Jellyfin Web", Device="Firefox", DeviceId="abc%3D%3D", '
            f'Version="10.11.0", Token="{TOKEN}"'
        ),
        "",
    )
    assert credentials is not None
    assert credentials.identity == ClientIdentity("Jellyfin Web", "Firefox", "abc==", "10.11.0")


@pytest.mark.parametrize(
    ("headers", "query", "form"),
    [
        ({"Authorization": f'MediaBrowser Token="{TOKEN}"'}, "", TokenForm("Authorization", "MediaBrowser")),
        ({"Authorization": f'mediaBROWSER Token="{TOKEN}"'}, "", TokenForm("Authorization", "MediaBrowser")),
        ({"Authorization": f'EMBY Token="{TOKEN}"'}, "", TokenForm("Authorization", "Emby")),
        (
            {"x-emby-authorization": f'Emby Token="{TOKEN}"'},
            "",
            TokenForm("X-Emby-Authorization", "Emby"),
        ),
        ({"Authorization": 'MediaBrowser Client="c"', "x-emby-token": TOKEN}, "", TokenForm("X-Emby-Token")),
        ({"X-MEDIABROWSER-TOKEN": TOKEN}, "", TokenForm("X-MediaBrowser-Token")),
        ({}, f"apikey={TOKEN}", TokenForm("ApiKey", in_query=True)),
        ({}, f"ApiKey%3D{TOKEN}", TokenForm("ApiKey", in_query=True)),
        ({}, f"API%5FKEY={TOKEN}", TokenForm("api_key", in_query=True)),
    ],
)
def test_the_form_the_caller_used_is_recorded(headers: dict[str, str], query: str, form: TokenForm) -> None:
    credentials = extract_credentials(CIMultiDict(headers), query)
    assert credentials is not None
    assert (credentials.token, credentials.form) == (TOKEN, form)
    assert TOKEN not in repr(credentials)
    sent = credentials.header_value
    assert sent == (
        headers.get("Authorization") or headers.get("x-emby-authorization") if form.scheme else None
    )


def test_the_token_is_sent_to_jellyfin_in_the_form_every_version_accepts() -> None:
    header = authorization_header(TOKEN, ClientIdentity("Jellyfin Web", 'Fire"fox, 1', None, "10.11.0"))
    assert header == (
        'MediaBrowser Client="Jellyfin%20Web", Device="Fire%22fox%2C%201", Version="10.11.0", '
        f'Token="{TOKEN}"'
    )
    assert parse_authorization_parts(header.removeprefix("MediaBrowser "))["Device"] == 'Fire"fox, 1'


# --- decisions against the Jellyfin stand-in, through the gateway ---------------------------------


def _auth(token: str) -> dict[str, str]:
    identity = 'Client="tests", Device="pytest", DeviceId="d1", Version="1"'
    return {"Authorization": f'MediaBrowser {identity}, Token="{token}"'}


async def _test1(http: aiohttp.ClientSession, gateway: RunningGateway, **kwargs: Any) -> tuple[int, Any]:
    async with http.get(server_url(gateway, "/torrent/Test1"), **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_an_admin_gets_test1(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    assert await _test1(http, jellyfin_gateway, headers=_auth(token)) == (200, "test 1 success")


async def test_an_api_key_counts_as_an_admin(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    key = standin_state.api_key_for("gateway")
    assert await _test1(http, jellyfin_gateway, headers=_auth(key)) == (200, "test 1 success")
    assert standin_state.calls["GET /users/me"] == 1
    assert standin_state.calls["GET /auth/providers"] == 1


@pytest.mark.parametrize(
    ("who", "status"),
    [("alice", 403), ("mallory", 401), ("unknown", 401), ("none", 401)],
)
async def test_everyone_else_is_refused_with_jellyfins_status(
    http: aiohttp.ClientSession,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    who: str,
    status: int,
) -> None:
    if who == "none":
        headers: dict[str, str] = {}
    elif who == "unknown":
        headers = _auth(OTHER)
    else:
        user = standin_state.user_by_name(who)
        # A disabled user cannot log in, but a token issued before the account was disabled lingers.
        disabled, user.is_disabled = user.is_disabled, False
        token = standin_state.issue_token(user)
        user.is_disabled = disabled
        headers = _auth(token)
    got_status, body = await _test1(http, jellyfin_gateway, headers=headers)
    assert got_status == status
    assert body["error"]
    if who == "none":
        assert sum(standin_state.calls.values()) == 0


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"X-Emby-Authorization": 'MediaBrowser Token="{t}"'}, ""),
        ({"X-Emby-Token": "{t}"}, ""),
        ({"X-MediaBrowser-Token": "{t}"}, ""),
        ({}, "?ApiKey={t}"),
        ({}, "?api_key={t}"),
        ({}, "?APIKEY={t}"),
        ({"Authorization": "Bearer nonsense", "X-Emby-Token": "{t}"}, ""),
    ],
)
async def test_every_token_form_reaches_the_check(
    http: aiohttp.ClientSession,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    headers: dict[str, str],
    query: str,
) -> None:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    filled = {k: v.format(t=token) for k, v in headers.items()}
    async with http.get(
        server_url(jellyfin_gateway, "/torrent/Test1" + query.format(t=token)), headers=filled
    ) as r:
        assert r.status == 200


async def test_jellyfin_is_asked_with_the_callers_device_and_address(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    await _test1(http, jellyfin_gateway, headers={**_auth(token), "X-Forwarded-For": "6.6.6.6"})
    seen = next(r for r in standin_state.requests if r.path_qs.lower().endswith("/users/me"))
    assert seen.headers["Authorization"] == (
        f'MediaBrowser Client="tests", Device="pytest", DeviceId="d1", Version="1", Token="{token}"'
    )
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"  # the client's own claim is not trusted


async def test_fifty_concurrent_requests_with_one_token_make_one_call(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    results = await asyncio.gather(*(_test1(http, jellyfin_gateway, headers=_auth(token)) for _ in range(50)))
    assert all(result == (200, "test 1 success") for result in results)
    assert standin_state.calls["GET /users/me"] == 1


async def test_a_demoted_admin_loses_access_within_the_ttl(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
) -> None:
    gateway = await gateway_factory(server_url(jellyfin), elevation_cache_ttl=0.5)
    admin = standin_state.user_by_name("admin")
    token = standin_state.issue_token(admin)
    assert (await _test1(http, gateway, headers=_auth(token)))[0] == 200
    admin.is_administrator = False
    assert (await _test1(http, gateway, headers=_auth(token)))[0] == 200  # still cached
    await asyncio.sleep(0.6)
    assert (await _test1(http, gateway, headers=_auth(token)))[0] == 403


async def test_a_zero_ttl_asks_jellyfin_every_time(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
) -> None:
    gateway = await gateway_factory(server_url(jellyfin), elevation_cache_ttl=0)
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    for _ in range(3):
        assert (await _test1(http, gateway, headers=_auth(token)))[0] == 200
    assert standin_state.calls["GET /users/me"] == 3


async def test_jellyfin_down_fails_closed_with_502(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(f"http://127.0.0.1:{free_port()}")
    status, body = await _test1(http, gateway, headers=_auth(TOKEN))
    assert status == 502
    assert "unreachable" in body["error"]


@pytest.fixture
async def silent_jellyfin(aiohttp_server: ServerFactory) -> TestServer:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hang)
    return await aiohttp_server(app)


async def test_a_silent_jellyfin_fails_closed_with_504(
    http: aiohttp.ClientSession, silent_jellyfin: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(silent_jellyfin), jellyfin_read_timeout=0.3)
    status, body = await _test1(http, gateway, headers=_auth(TOKEN))
    assert status == 504
    assert "in time" in body["error"]


async def test_an_unreachable_jellyfin_is_named_without_its_address(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    gateway = await gateway_factory(f"http://127.0.0.1:{port}")
    caplog.set_level(logging.WARNING)
    status, body = await _test1(http, gateway, headers=_auth(TOKEN))
    assert status == 502
    assert body["error"] == "Jellyfin is unreachable (connection refused)"
    # The operator still learns where the gateway tried to go: from the log, not from the client.
    assert any(f"127.0.0.1:{port}" in r.getMessage() for r in caplog.records if r.name == "gateway.upstream")
    assert all(str(port) not in r.getMessage() for r in caplog.records if r.name == "gateway.auth")


@pytest.mark.parametrize("chunked", [False, True], ids=["Content-Length", "chunked"])
async def test_a_reply_over_the_cap_is_a_502_not_a_buffer(
    aiohttp_server: ServerFactory, api_session: aiohttp.ClientSession, chunked: bool
) -> None:
    cap = 1024 * 1024

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = 4 * cap
        await response.prepare(request)
        try:
            await response.write(b"[" + b" " * (cap - 1))
            for _ in range(3):
                await response.write(b" " * cap)
        except ConnectionError:
            pass
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", huge)
    server = await aiohttp_server(app)
    client = JellyfinClient(api_session, server_url(server), connect_timeout=1, max_reply_bytes=cap)
    with pytest.raises(UpstreamError) as caught:
        await client.me(Credentials(TOKEN))
    assert (caught.value.upstream, caught.value.kind, caught.value.reason) == (
        "Jellyfin",
        Failure.BAD_REPLY,
        "Jellyfin answered /Users/Me with more than 1 MiB",
    )
    decision = await decide(client, Credentials(TOKEN))
    assert (decision.status, decision.reason) == (502, "Jellyfin answered /Users/Me with more than 1 MiB")


async def test_the_openapi_document_is_public_and_names_no_secret(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    async with http.get(server_url(jellyfin_gateway, "/torrent/openapi.json")) as resp:
        assert resp.status == 200
        document = await resp.json()
    assert document["openapi"].startswith("3.")
    assert "/Test1" in document["paths"]
    assert sum(standin_state.calls.values()) == 0


async def test_no_token_value_is_ever_logged(
    http: aiohttp.ClientSession,
    jellyfin_gateway: RunningGateway,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = standin_state.issue_token(standin_state.user_by_name("admin"))
    alice = standin_state.issue_token(standin_state.user_by_name("alice"))
    down = await gateway_factory(f"http://127.0.0.1:{free_port()}")
    for gateway in (jellyfin_gateway, down):
        for token in (admin, alice, OTHER):
            await _test1(http, gateway, headers=_auth(token))
            async with http.get(server_url(gateway, f"/torrent/Test1?api_key={token}")) as resp:
                await resp.read()
    ours = [r for r in caplog.records if r.name.startswith("gateway")]
    assert any(r.name == "gateway.auth" for r in ours)  # the failures were logged ...
    for token in (admin, alice, OTHER):
        assert all(token not in r.getMessage() for r in ours)  # ... without a token


# --- the cache itself -------------------------------------------------------------------------------


@pytest.fixture
async def api_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


JF = "http://jf.test:8096/jellyfin"


def _client(session: aiohttp.ClientSession) -> JellyfinClient:
    return JellyfinClient(session, URL(JF), connect_timeout=1)


def _me(mocked: aioresponses, status: int, body: Any = None, *, repeat: bool = False) -> None:
    mocked.get(f"{JF}/Users/Me", status=status, payload=body, repeat=repeat)


@pytest.mark.parametrize(
    ("me_status", "me_body", "providers_status", "expected"),
    [
        (200, {"Policy": {"IsAdministrator": True, "IsDisabled": False}}, None, 200),
        (200, {"Policy": {"IsAdministrator": False, "IsDisabled": False}}, None, 403),
        (200, {"Policy": {"IsAdministrator": True, "IsDisabled": True}}, None, 401),
        (200, {"Name": "no policy at all"}, None, 403),
        (200, ["not", "a", "user"], None, 403),
        (401, None, None, 401),
        (403, None, None, 403),
        (400, None, 200, 200),
        (400, None, 403, 403),
        (400, None, 401, 401),
        (400, None, 500, 502),
        (500, None, None, 502),
        (503, None, None, 502),
        (302, None, None, 502),
    ],
)
async def test_jellyfins_answers_map_to_decisions(
    api_session: aiohttp.ClientSession,
    me_status: int,
    me_body: Any,
    providers_status: int | None,
    expected: int,
) -> None:
    with MockedHTTP() as mocked:
        _me(mocked, me_status, me_body)
        if providers_status is not None:
            mocked.get(f"{JF}/Auth/Providers", status=providers_status, payload=[])
        decision = await decide(_client(api_session), Credentials(TOKEN))
    assert decision.status == expected


async def test_a_non_json_user_is_a_502(api_session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        mocked.get(f"{JF}/Users/Me", status=200, body="<html>login</html>", content_type="text/html")
        decision = await decide(_client(api_session), Credentials(TOKEN))
    assert decision.status == 502


async def test_a_timeout_is_a_504(api_session: aiohttp.ClientSession) -> None:
    with MockedHTTP() as mocked:
        mocked.get(f"{JF}/Users/Me", exception=TimeoutError())
        decision = await decide(_client(api_session), Credentials(TOKEN))
    assert decision.status == 504


async def test_decisions_are_cached_by_token_hash_and_expire(api_session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    cache = ElevationCache(_client(api_session), ttl=10, clock=clock)
    admin = {"Policy": {"IsAdministrator": True}}
    with MockedHTTP() as mocked:
        _me(mocked, 200, admin, repeat=True)
        assert (await cache.check(Credentials(TOKEN))).allowed
        assert (await cache.check(Credentials(TOKEN))).allowed
        assert len(mocked.requests[("GET", URL(f"{JF}/Users/Me"))]) == 1
        ((digest, form, address),) = cache.keys()
        assert (len(digest), form, address) == (32, TokenForm("Authorization", "MediaBrowser"), None)
        assert TOKEN not in repr(cache.keys())
        clock.now += 10.5
        assert (await cache.check(Credentials(TOKEN))).allowed
        assert len(mocked.requests[("GET", URL(f"{JF}/Users/Me"))]) == 2


async def test_bad_tokens_are_remembered_only_briefly(api_session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    cache = ElevationCache(_client(api_session), ttl=60, clock=clock)
    with MockedHTTP() as mocked:
        _me(mocked, 401, repeat=True)
        assert (await cache.check(Credentials(TOKEN))).status == 401
        clock.now += 1
        assert (await cache.check(Credentials(TOKEN))).status == 401
        assert len(mocked.requests[("GET", URL(f"{JF}/Users/Me"))]) == 1
        clock.now += 2
        assert (await cache.check(Credentials(TOKEN))).status == 401
        assert len(mocked.requests[("GET", URL(f"{JF}/Users/Me"))]) == 2


async def test_jellyfin_trouble_is_never_cached(api_session: aiohttp.ClientSession) -> None:
    cache = ElevationCache(_client(api_session), ttl=60)
    with MockedHTTP() as mocked:
        _me(mocked, 503)
        _me(mocked, 200, {"Policy": {"IsAdministrator": True}})
        assert (await cache.check(Credentials(TOKEN))).status == 502
        assert (await cache.check(Credentials(TOKEN))).allowed


async def test_a_flood_of_random_tokens_cannot_grow_the_cache(api_session: aiohttp.ClientSession) -> None:
    cache = ElevationCache(_client(api_session), ttl=60, max_entries=50)
    with MockedHTTP() as mocked:
        _me(mocked, 401, repeat=True)
        for n in range(500):
            await cache.check(Credentials(f"random-token-{n}"))
    assert len(cache) == 50
