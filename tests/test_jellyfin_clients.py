"""Real Jellyfin clients talk to the stand-in through the gateway and notice nothing; the gateway's
own client hands its callers typed answers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer
from jellyfin_apiclient_python import JellyfinClient
from jellyfin_apiclient_python.connection_manager import CONNECTION_STATE
from yarl import URL

from gateway.jellyfin import Credentials, Library, Me, PublicInfo, Refusal
from gateway.jellyfin import JellyfinClient as GatewayJellyfin
from gateway.upstream import Failure, UpstreamError
from tests.conftest import GatewayFactory, MockedHTTP, RunningGateway, ServerFactory, server_url, wait_until
from tests.jellyfin_standin import StandinState, create_standin


def _login_with_apiclient(url: str) -> dict[str, Any]:
    """What a Python Jellyfin app does: discover, log in, read the user, open the socket."""
    client = JellyfinClient()
    client.config.app("gateway-tests", "0.1.0", "pytest", "pytest-device-1")
    client.config.data["auth.ssl"] = False
    try:
        connected = client.auth.connect_to_address(url)
        login = client.auth.login(url, "admin", "adminpw")
        servers = client.auth.credentials.get_credentials()["Servers"]
        client.authenticate({"Servers": servers}, discover=False)
        client.start(websocket=True)
        user = client.jellyfin.get_user()
        info = client.jellyfin._get("System/Info")
        # The socket is up once the client has Jellyfin's ForceKeepAlive and runs its keep-alive
        # thread (stopping the client before that thread starts crashes the library).
        deadline = time.monotonic() + 5
        while not (client.wsc.keepalive is not None and client.wsc.keepalive.is_alive()):
            if time.monotonic() > deadline:
                raise AssertionError("no ForceKeepAlive reached the client through the gateway")
            time.sleep(0.02)
        return {"connected": connected["State"], "login": login, "user": user, "info": info}
    finally:
        client.stop()


async def test_jellyfin_apiclient_python_logs_in_through_the_gateway(
    jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    result = await asyncio.to_thread(_login_with_apiclient, str(server_url(jellyfin_gateway)))
    assert result["connected"] == CONNECTION_STATE["ServerSignIn"]
    assert result["login"]["User"]["Name"] == "admin"
    assert result["login"]["AccessToken"] in standin_state.tokens
    assert result["user"]["Name"] == "admin"
    assert result["info"]["Version"] == "10.11.0"
    accepted = [ws for ws in standin_state.websockets if ws.accepted]
    assert accepted, "the client's WebSocket never reached Jellyfin"
    assert accepted[0].path == "/socket"
    assert f'Token="{result["login"]["AccessToken"]}"' in (accepted[0].authorization or "")


def _comparable(headers: Any) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers.items() if k.lower() not in {"date", "connection"})


@pytest.mark.parametrize(
    ("method", "target", "body", "auth"),
    [
        ("GET", "/Users/Me", None, "admin"),
        ("GET", "/users/me", None, None),
        ("GET", "/Users/Me", None, "bogus"),
        ("GET", "/Auth/Providers", None, "alice"),
        ("GET", "/Users/Me", None, "api_key"),
        ("POST", "/Users/AuthenticateByName", {"Username": "admin", "Pw": "wrong"}, "device"),
        ("POST", "/Users/AuthenticateByName", {"Username": "mallory", "Pw": "mallorypw"}, "device"),
        ("GET", "/Videos/abc/stream?static=true", None, None),
        ("GET", "/System/Ping", None, None),
        ("GET", "/QuickConnect/Enabled", None, None),
        ("GET", "/Nope/Nothing", None, None),
    ],
)
async def test_jellyfin_answers_the_same_direct_and_through_the_gateway(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    method: str,
    target: str,
    body: dict[str, str] | None,
    auth: str | None,
) -> None:
    headers = {}
    if auth == "api_key":
        headers["Authorization"] = f'MediaBrowser Token="{standin_state.api_key_for("gateway")}"'
    elif auth == "device":
        headers["Authorization"] = 'MediaBrowser Client="c", Device="d", DeviceId="i", Version="1"'
    elif auth == "bogus":
        headers["Authorization"] = 'MediaBrowser Token="0123456789abcdef0123456789abcdef"'
    elif auth:
        token = standin_state.issue_token(standin_state.user_by_name(auth))
        headers["Authorization"] = f'MediaBrowser Token="{token}"'
    results = []
    for server in (jellyfin, jellyfin_gateway):
        async with http.request(
            method, server_url(server, target), headers=headers, json=body, allow_redirects=False
        ) as resp:
            # ProblemDetails carry a per-request traceId, the one part that may differ.
            body_bytes = re.sub(rb'"traceId":"[^"]*"', b'"traceId":""', await resp.read())
            results.append((resp.status, _comparable(resp.headers), body_bytes))
    assert results[1] == results[0]


@pytest.mark.parametrize("range_header", ["bytes=0-1023", "bytes=524288-", "bytes=-100", "bytes=5000000-"])
async def test_video_ranges_are_identical_through_the_gateway(
    http: aiohttp.ClientSession, jellyfin: TestServer, jellyfin_gateway: RunningGateway, range_header: str
) -> None:
    results = []
    for server in (jellyfin, jellyfin_gateway):
        async with http.get(
            server_url(server, "/Videos/0123/stream.mkv?Static=true"), headers={"Range": range_header}
        ) as resp:
            results.append((resp.status, _comparable(resp.headers), await resp.read()))
    assert results[0][0] in (206, 416)
    assert results[1] == results[0]


async def test_the_socket_keep_alive_dialogue_passes_through(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    token = standin_state.issue_token(standin_state.user_by_name("alice"))
    async with http.ws_connect(server_url(jellyfin_gateway, f"/socket?ApiKey={token}&deviceId=abc")) as ws:
        first = json.loads(await ws.receive_str(timeout=5))
        assert first["MessageType"] == "ForceKeepAlive"
        assert first["Data"] == 60
        await ws.send_str(json.dumps({"MessageType": "KeepAlive"}))
        reply = json.loads(await ws.receive_str(timeout=5))
        assert reply["MessageType"] == "KeepAlive"
    assert standin_state.websockets[-1].query_string == f"ApiKey={token}&deviceId=abc"


async def test_a_socket_without_a_token_gets_jellyfins_403_not_a_502(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(server_url(jellyfin_gateway, "/socket"))
    assert refused.value.status == 403


async def test_a_binary_frame_and_close_reach_the_standin(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    key = standin_state.api_key_for("gateway")
    async with http.ws_connect(server_url(jellyfin_gateway, f"/socket?ApiKey={key}")) as ws:
        await ws.receive_str(timeout=5)
        await ws.send_bytes(b"\x00\x01binary")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.BINARY
        assert msg.data == b"\x00\x01binary"
        await ws.close(code=4100)
    await wait_until(lambda: standin_state.websockets[-1].close_code is not None)
    assert standin_state.websockets[-1].close_code == 4100


@pytest.fixture
async def based_jellyfin(aiohttp_server: ServerFactory, standin_state: StandinState) -> TestServer:
    return await aiohttp_server(create_standin(base_url="/jellyfin", state=standin_state))


async def test_a_base_url_is_forwarded_unchanged_and_redirects_pass_through(
    http: aiohttp.ClientSession, based_jellyfin: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(based_jellyfin, "/jellyfin"))
    for target in ("/", "/jellyfin", "/web/index.html", "/torrent/Test1"):
        direct = await http.get(server_url(based_jellyfin, target), allow_redirects=False)
        proxied = await http.get(server_url(gateway, target), allow_redirects=False)
        assert (proxied.status, proxied.headers.get("Location")) == (
            direct.status,
            direct.headers.get("Location"),
        )
        assert proxied.status == 302
    async with http.get(server_url(gateway, "/jellyfin/system/info/public")) as resp:
        assert resp.status == 200
        assert (await resp.json())["ProductName"] == "Jellyfin Server"


# --- the gateway's own client: typed answers, parsed in one place ---------------------------------

JF = "http://jf.test:8096/jellyfin"


@pytest.fixture
async def api_client() -> AsyncIterator[GatewayJellyfin]:
    async with aiohttp.ClientSession() as session:
        yield GatewayJellyfin(session, URL(JF), connect_timeout=1)


async def test_libraries_come_back_typed_with_only_their_text_folders(api_client: GatewayJellyfin) -> None:
    folders = [
        {"Name": "Movies", "Locations": ["/media/movies", 7, None], "CollectionType": "movies"},
        {"Name": "Empty"},
        {"Locations": ["/media/nameless"]},
        "not a library",
    ]
    with MockedHTTP() as mocked:
        mocked.get(f"{JF}/Library/VirtualFolders", payload=folders)
        libraries = await api_client.libraries("api-key")
    assert libraries == [Library("Movies", ["/media/movies"], "movies"), Library("Empty", [])]
    assert libraries[0].name == "Movies"


@pytest.mark.parametrize(
    ("status", "payload", "kind", "reason"),
    [
        (200, {"Items": []}, Failure.BAD_REPLY, "with something that is not a list"),
        (401, None, Failure.REFUSED, "with HTTP 401"),
        (403, None, Failure.REFUSED, "with HTTP 403"),
        (500, None, Failure.BAD_REPLY, "with HTTP 500"),
    ],
)
async def test_libraries_jellyfin_will_not_list_are_an_upstream_error(
    api_client: GatewayJellyfin, status: int, payload: Any, kind: Failure, reason: str
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(f"{JF}/Library/VirtualFolders", status=status, payload=payload)
        with pytest.raises(UpstreamError) as caught:
            await api_client.libraries("api-key")
    assert (caught.value.upstream, caught.value.kind) == ("Jellyfin", kind)
    assert caught.value.reason == f"Jellyfin answered /Library/VirtualFolders {reason}"


async def test_public_info_comes_back_typed(api_client: GatewayJellyfin) -> None:
    with MockedHTTP() as mocked:
        mocked.get(f"{JF}/System/Info/Public", payload={"Version": "10.11.0", "ServerName": 42})
        mocked.get(f"{JF}/System/Info/Public", status=503)
        assert await api_client.public_info() == PublicInfo(version="10.11.0", server_name=None)
        with pytest.raises(UpstreamError, match=r"^Jellyfin answered /System/Info/Public with HTTP 503$"):
            await api_client.public_info()


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (200, {"Policy": {"IsAdministrator": True, "IsDisabled": False}}, Me(True, False)),
        (200, {"Policy": {"IsAdministrator": "true", "IsDisabled": 1}}, Me(False, False)),
        (200, ["not", "a", "user"], Me(False, False)),
        (400, None, Refusal.NO_USER),
        (401, None, Refusal.UNAUTHORIZED),
        (403, None, Refusal.FORBIDDEN),
    ],
)
async def test_the_current_user_comes_back_typed_or_as_jellyfins_refusal(
    api_client: GatewayJellyfin, status: int, payload: Any, expected: Me | Refusal
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(f"{JF}/Users/Me", status=status, payload=payload)
        assert await api_client.me(Credentials("token")) == expected
