"""Jellyfin decides which token forms count: the gateway asks it with the token where the caller put it.

Jellyfin 12.0 (EnableLegacyAuthorization=false) refuses X-Emby-Token, X-MediaBrowser-Token,
X-Emby-Authorization, the ``Emby`` scheme and ``?api_key=``. A gateway that re-sent every token as
``Authorization: MediaBrowser Token=`` would let those forms into /torrent although Jellyfin refuses
them for its own endpoints.
"""

from __future__ import annotations

import ipaddress

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import GatewayFactory, RunningGateway, raw_exchange, server_url
from tests.jellyfin_standin import RequestRecord, StandinState

IDENTITY = 'Client="tests", Device="pytest", DeviceId="d1", Version="1"'

#: name -> (headers, query) with "{t}" for the token; the legacy ones only count with legacy on.
FORMS: dict[str, tuple[dict[str, str], str]] = {
    "Authorization MediaBrowser": ({"Authorization": f'MediaBrowser {IDENTITY}, Token="{{t}}"'}, ""),
    "Authorization Emby": ({"Authorization": f'Emby {IDENTITY}, Token="{{t}}"'}, ""),
    "X-Emby-Authorization": ({"X-Emby-Authorization": f'MediaBrowser {IDENTITY}, Token="{{t}}"'}, ""),
    "X-Emby-Token": ({"X-Emby-Token": "{t}"}, ""),
    "X-MediaBrowser-Token": ({"X-MediaBrowser-Token": "{t}"}, ""),
    "ApiKey": ({}, "?ApiKey={t}"),
    "api_key": ({}, "?api_key={t}"),
    "api%5Fkey": ({}, "?api%5Fkey={t}"),
    "ApiKey, fully encoded": ({}, "?ApiKey%3D{t}"),
}
LEGACY = {
    "Authorization Emby",
    "X-Emby-Authorization",
    "X-Emby-Token",
    "X-MediaBrowser-Token",
    "api_key",
    "api%5Fkey",
}


def _filled(form: str, token: str) -> tuple[dict[str, str], str]:
    headers, query = FORMS[form]
    return {name: value.format(t=token) for name, value in headers.items()}, query.format(t=token)


def _token(standin_state: StandinState, who: str) -> str:
    if who == "api key":
        return standin_state.api_key_for("gateway")
    return standin_state.issue_token(standin_state.user_by_name(who))


async def _status(
    http: aiohttp.ClientSession,
    server: TestServer | RunningGateway,
    path: str,
    headers: dict[str, str] | None = None,
) -> int:
    async with http.get(server_url(server, path), headers=headers) as resp:
        await resp.read()
        return resp.status


def _seen(standin_state: StandinState, path: str) -> list[RequestRecord]:
    return [r for r in standin_state.requests if r.path_qs.lower().split("?")[0] == path.lower()]


@pytest.mark.parametrize("legacy", [False, True], ids=["legacy off", "legacy on"])
@pytest.mark.parametrize("who", ["admin", "api key"])
@pytest.mark.parametrize("form", list(FORMS))
async def test_the_torrent_api_accepts_a_token_form_exactly_when_jellyfin_does(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    form: str,
    who: str,
    legacy: bool,
) -> None:
    standin_state.legacy_authorization = legacy
    headers, query = _filled(form, _token(standin_state, who))
    expected = 401 if form in LEGACY and not legacy else 200
    # Jellyfin's own answer for an elevated endpoint, asked directly in this form ...
    assert await _status(http, jellyfin, "/Auth/Providers" + query, headers=headers) == expected
    # ... is the gateway's answer.
    assert await _status(http, jellyfin_gateway, "/torrent/Test1" + query, headers=headers) == expected


@pytest.mark.parametrize("encoded", ["%2541piKey%3D{t}", "%2561pi_key%3D{t}"])
async def test_a_query_encoded_twice_is_no_token_for_jellyfin_nor_for_the_gateway(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    encoded: str,
) -> None:
    query = "?" + encoded.format(t=standin_state.api_key_for("gateway"))
    assert await _status(http, jellyfin, "/Auth/Providers" + query) == 401
    assert await _status(http, jellyfin_gateway, "/torrent/Test1" + query) == 401


async def test_the_token_reaches_jellyfin_where_the_caller_put_it(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    token = _token(standin_state, "admin")
    cases: list[tuple[dict[str, str], str, dict[str, str], str]] = [
        # (headers sent, query sent, headers Jellyfin must see, query Jellyfin must see)
        (
            {"Authorization": f'emby {IDENTITY}, Token="{token}"'},
            "",
            {"Authorization": f'emby {IDENTITY}, Token="{token}"'},
            "",
        ),
        (
            {"X-Emby-Authorization": f'MediaBrowser {IDENTITY}, Token="{token}"'},
            "",
            {"X-Emby-Authorization": f'MediaBrowser {IDENTITY}, Token="{token}"'},
            "",
        ),
        (
            {"Authorization": f"MediaBrowser {IDENTITY}", "X-MediaBrowser-Token": token},
            "",
            {"Authorization": f"MediaBrowser {IDENTITY}", "X-MediaBrowser-Token": token},
            "",
        ),
        ({"X-Emby-Token": token}, "", {"X-Emby-Token": token}, ""),
        ({}, f"?APIKEY={token}&x=1", {}, f"?ApiKey={token}"),
        ({}, f"?API%5FKEY={token}", {}, f"?api_key={token}"),
    ]
    for sent_headers, sent_query, want_headers, want_query in cases:
        standin_state.requests.clear()
        async with http.get(
            server_url(jellyfin_gateway, "/torrent/libraries" + sent_query), headers=sent_headers
        ) as resp:
            assert resp.status == 200, (sent_headers, sent_query)
        for path in ("/Users/Me", "/Library/VirtualFolders"):
            (seen,) = _seen(standin_state, path)
            assert seen.path_qs == path + want_query
            token_headers = {"Authorization", "X-Emby-Authorization", "X-Emby-Token", "X-MediaBrowser-Token"}
            assert {n: seen.headers[n] for n in token_headers if n in seen.headers} == want_headers


async def test_one_token_in_two_forms_is_checked_twice(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    token = _token(standin_state, "admin")
    for form in ("Authorization MediaBrowser", "X-Emby-Token", "Authorization MediaBrowser", "X-Emby-Token"):
        headers, query = _filled(form, token)
        assert await _status(http, jellyfin_gateway, "/torrent/Test1" + query, headers=headers) == 200
    assert standin_state.calls["GET /users/me"] == 2


async def test_one_token_from_two_client_addresses_is_checked_twice(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
) -> None:
    gateway = await gateway_factory(
        server_url(jellyfin), trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    headers, _ = _filled("Authorization MediaBrowser", _token(standin_state, "admin"))
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"):
        forwarded = {**headers, "X-Forwarded-For": address}
        assert await _status(http, gateway, "/torrent/Test1", headers=forwarded) == 200
    assert standin_state.calls["GET /users/me"] == 2
    assert [r.headers["X-Forwarded-For"] for r in _seen(standin_state, "/Users/Me")] == [
        "10.0.0.1, 127.0.0.1",
        "10.0.0.2, 127.0.0.1",
    ]


@pytest.mark.parametrize(
    "header", [b"X-Emby-Token: {a}\xff{b}", b'Authorization: MediaBrowser Token="{a}\xff{b}"']
)
async def test_a_token_with_a_byte_that_is_not_utf8_is_no_token(
    jellyfin_gateway: RunningGateway, standin_state: StandinState, header: bytes
) -> None:
    token = _token(standin_state, "admin").encode()
    # Re-sent, the stray byte would be dropped on the way and Jellyfin would see the admin's token.
    line = header.replace(b"{a}", token[:8]).replace(b"{b}", token[8:])
    reply = await raw_exchange(
        jellyfin_gateway,
        b"GET /torrent/Test1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n" + line + b"\r\n\r\n",
    )
    assert reply.status == 401
    assert standin_state.calls["GET /users/me"] == 0
