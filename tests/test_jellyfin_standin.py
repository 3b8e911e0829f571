"""The Jellyfin stand-in checked directly against Jellyfin's documented behaviour."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from yarl import URL

from tests.jellyfin_standin import (
    STATE,
    StandinState,
    User,
    create_standin,
    dotnet_camel_case,
    dotnet_relative_uri,
    extract_credentials,
    extract_token,
    parse_authorization_parts,
)

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

HEX32 = re.compile(r"^[0-9a-f]{32}$")
CLIENT_FIELDS = 'Client="pytest", Device="box", DeviceId="dev-1", Version="1.0"'


def mb(token: str | None = None, fields: str = CLIENT_FIELDS) -> str:
    """An ``Authorization: MediaBrowser`` value, optionally with a token."""
    return f'MediaBrowser {fields}, Token="{token}"' if token is not None else f"MediaBrowser {fields}"


def token_of(headers: dict[str, str] | None = None, query: str = "", *, legacy: bool = True) -> str | None:
    """Run the stand-in's extraction on plain headers and a query string."""
    pairs = [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p]
    return extract_token(CIMultiDict(headers or {}), [(k, v) for k, v in pairs], legacy_authorization=legacy)


@pytest.fixture
async def standin(aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(create_standin())


def state_of(client: Client) -> StandinState:
    app = client.app
    assert app is not None
    return app[STATE]


def user(client: Client, name: str) -> User:
    return state_of(client).user_by_name(name)


def key(client: Client) -> str:
    return state_of(client).api_key_for("gateway")


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": mb(token)}


async def assert_empty(resp: aiohttp.ClientResponse, status: int) -> None:
    assert resp.status == status
    assert await resp.read() == b""
    assert "WWW-Authenticate" not in resp.headers


# ---------------------------------------------------------------------------
# Header parsing (section 1)
# ---------------------------------------------------------------------------


def test_authorization_header_pairs_are_parsed_with_optional_quotes() -> None:
    parts = parse_authorization_parts('Client="Jellyfin Web", Device=Firefox, DeviceId="a,b", Token=abc')
    assert parts == {"Client": "Jellyfin Web", "Device": "Firefox", "DeviceId": "a,b", "Token": "abc"}


def test_header_values_are_url_decoded_with_plus_as_space() -> None:
    parts = parse_authorization_parts('Client="Jellyfin%20Web", Device="My+Phone", Version="10.11%2B"')
    assert parts == {"Client": "Jellyfin Web", "Device": "My Phone", "Version": "10.11+"}


def test_a_repeated_key_keeps_the_last_value() -> None:
    assert parse_authorization_parts('Token="first", Token="second"') == {"Token": "second"}


def test_header_keys_are_case_sensitive_so_lowercase_token_is_ignored() -> None:
    assert token_of({"Authorization": 'MediaBrowser token="abc"'}) is None


def test_mediabrowser_scheme_is_case_insensitive() -> None:
    assert token_of({"Authorization": 'mEdIaBrOwSeR Token="abc"'}) == "abc"


def test_emby_scheme_is_accepted_only_with_legacy_authorization() -> None:
    assert token_of({"Authorization": 'Emby Token="abc"'}, legacy=True) == "abc"
    assert token_of({"Authorization": 'Emby Token="abc"'}, legacy=False) is None


def test_bearer_scheme_yields_no_header_token() -> None:
    assert token_of({"Authorization": "Bearer abc"}) is None


def test_empty_quoted_token_means_no_token_and_lookup_continues() -> None:
    assert token_of({"Authorization": mb("")}) is None
    assert token_of({"Authorization": mb("")}, "ApiKey=fromquery") == "fromquery"


def test_whitespace_token_stops_the_lookup_but_counts_as_no_token() -> None:
    credentials = extract_credentials(
        CIMultiDict({"Authorization": mb(" ")}), [("ApiKey", "q")], legacy_authorization=True
    )
    assert credentials.token == " "
    assert not credentials.has_token


def test_x_emby_authorization_is_ignored_when_authorization_is_present() -> None:
    headers = {"Authorization": mb("from-authorization"), "X-Emby-Authorization": mb("from-x-emby")}
    assert token_of(headers) == "from-authorization"
    headers = {"Authorization": mb(), "X-Emby-Authorization": mb("from-x-emby")}
    assert token_of(headers) is None


def test_x_emby_authorization_is_used_when_authorization_is_absent_or_empty_with_legacy() -> None:
    assert token_of({"X-Emby-Authorization": mb("x")}) == "x"
    assert token_of({"Authorization": "", "X-Emby-Authorization": mb("x")}) == "x"


def test_x_emby_authorization_is_ignored_without_legacy_authorization() -> None:
    assert token_of({"X-Emby-Authorization": mb("x")}, legacy=False) is None


def test_authorization_with_another_scheme_blocks_x_emby_authorization_but_not_x_emby_token() -> None:
    headers = {"Authorization": "Basic dXNlcjpwdw==", "X-Emby-Authorization": mb("x")}
    assert token_of(headers) is None
    assert token_of({**headers, "X-Emby-Token": "t"}) == "t"


@pytest.mark.parametrize(
    ("headers", "query", "legacy_on", "legacy_off"),
    [
        ({"X-Emby-Token": "t"}, "", "t", None),
        ({"X-MediaBrowser-Token": "t"}, "", "t", None),
        ({}, "ApiKey=t", "t", "t"),
        ({}, "apikey=t", "t", "t"),
        ({}, "APIKEY=t", "t", "t"),
        ({}, "api_key=t", "t", None),
        ({}, "API_KEY=t", "t", None),
    ],
)
def test_each_token_source_is_gated_by_legacy_authorization(
    headers: dict[str, str], query: str, legacy_on: str | None, legacy_off: str | None
) -> None:
    assert token_of(headers, query, legacy=True) == legacy_on
    assert token_of(headers, query, legacy=False) == legacy_off


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        (
            {"Authorization": mb("a"), "X-Emby-Token": "b", "X-MediaBrowser-Token": "c"},
            "ApiKey=d&api_key=e",
            "a",
        ),
        ({"X-Emby-Token": "b", "X-MediaBrowser-Token": "c"}, "ApiKey=d&api_key=e", "b"),
        ({"X-MediaBrowser-Token": "c"}, "ApiKey=d&api_key=e", "c"),
        ({}, "api_key=e&ApiKey=d", "d"),
        ({}, "api_key=e", "e"),
    ],
)
def test_token_sources_follow_the_documented_precedence(
    headers: dict[str, str], query: str, expected: str
) -> None:
    assert token_of(headers, query) == expected


def test_without_legacy_only_authorization_and_apikey_remain() -> None:
    headers = {"X-Emby-Token": "b", "X-MediaBrowser-Token": "c"}
    assert token_of(headers, "api_key=e&ApiKey=d", legacy=False) == "d"
    assert token_of({"Authorization": mb("a"), **headers}, "ApiKey=d", legacy=False) == "a"


def test_a_fully_encoded_query_string_is_decoded_like_jellyfin() -> None:
    credentials = extract_credentials(CIMultiDict(), [("ApiKey=abc&x=1", "")], legacy_authorization=False)
    assert credentials.token == "abc"


async def test_a_fully_encoded_api_key_query_authenticates(standin: Client) -> None:
    resp = await standin.get(f"/Users/Me?ApiKey%3D{state_of(standin).issue_token(user(standin, 'alice'))}")
    assert resp.status == 200


# ---------------------------------------------------------------------------
# Status codes and token forms over HTTP (sections 1, 2)
# ---------------------------------------------------------------------------


async def test_users_me_without_token_is_401_with_empty_body(standin: Client) -> None:
    await assert_empty(await standin.get("/Users/Me"), 401)


async def test_users_me_with_an_unknown_token_is_401(standin: Client) -> None:
    await assert_empty(await standin.get("/Users/Me", headers=auth_header("0" * 32)), 401)


async def test_users_me_with_a_disabled_users_token_is_401(standin: Client) -> None:
    token = state_of(standin).issue_token(user(standin, "mallory"))
    await assert_empty(await standin.get("/Users/Me", headers=auth_header(token)), 401)


async def test_users_me_returns_the_pascal_case_user_dto(standin: Client) -> None:
    alice = user(standin, "alice")
    token = state_of(standin).issue_token(alice)
    resp = await standin.get("/Users/Me", headers=auth_header(token))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await resp.json()
    assert body["Id"] == alice.id
    assert HEX32.match(body["Id"])
    assert body["Name"] == "alice"
    assert body["ServerId"] == state_of(standin).server_id
    assert body["HasPassword"] is True
    assert body["Configuration"]
    assert body["Policy"]["IsAdministrator"] is False
    assert body["Policy"]["IsDisabled"] is False
    assert body["Policy"]["EnabledFolders"] == []
    assert "PrimaryImageTag" not in body  # null omitted


async def test_users_me_with_an_api_key_is_400_problem_details(standin: Client) -> None:
    resp = await standin.get("/Users/Me", headers=auth_header(key(standin)))
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/problem+json; charset=utf-8"
    body = await resp.json(content_type=None)
    assert body["status"] == 400
    assert body["title"] == "Bad Request"


@pytest.mark.parametrize(
    ("method", "path", "ok"),
    [
        ("GET", "/Auth/Providers", 200),
        ("GET", "/Auth/Keys", 200),
        ("POST", "/Library/Refresh", 204),
        ("GET", "/Library/VirtualFolders", 200),
    ],
)
async def test_elevated_endpoints_answer_admin_api_key_user_and_anonymous_differently(
    standin: Client, method: str, path: str, ok: int
) -> None:
    state = state_of(standin)
    admin = state.issue_token(user(standin, "admin"))
    alice = state.issue_token(user(standin, "alice"))
    assert (await standin.request(method, path, headers=auth_header(admin))).status == ok
    assert (await standin.request(method, path, params={"ApiKey": key(standin)})).status == ok
    await assert_empty(await standin.request(method, path, headers=auth_header(alice)), 403)
    await assert_empty(await standin.request(method, path), 401)
    await assert_empty(await standin.request(method, path, headers=auth_header("f" * 32)), 401)


async def test_auth_providers_and_keys_have_the_documented_shape(standin: Client) -> None:
    headers = auth_header(key(standin))
    providers = await (await standin.get("/Auth/Providers", headers=headers)).json()
    assert providers == [
        {"Name": "Default", "Id": "Jellyfin.Server.Implementations.Users.DefaultAuthenticationProvider"}
    ]
    keys = await (await standin.get("/Auth/Keys", headers=headers)).json()
    assert keys["TotalRecordCount"] == 1
    assert keys["StartIndex"] == 0
    assert keys["Items"][0]["AccessToken"] == key(standin)
    assert keys["Items"][0]["AppName"] == "gateway"
    assert "DateCreated" in keys["Items"][0]


async def test_virtual_folders_are_open_to_anyone_until_the_startup_wizard_completes(
    standin: Client,
) -> None:
    state_of(standin).startup_wizard_completed = False
    resp = await standin.get("/Library/VirtualFolders")
    assert resp.status == 200
    folders = await resp.json()
    assert [f["Name"] for f in folders] == ["Movies", "Shows"]
    movies = folders[0]
    assert movies["Locations"] == ["/media/movies"]
    assert movies["CollectionType"] == "movies"
    assert movies["LibraryOptions"]["PathInfos"] == [{"Path": "/media/movies"}]
    assert HEX32.match(movies["ItemId"])
    assert movies["RefreshStatus"] == "Idle"
    assert "RefreshProgress" not in movies
    assert "PrimaryImageItemId" not in movies


async def test_anonymous_endpoints_ignore_an_invalid_token(standin: Client) -> None:
    resp = await standin.get("/System/Info/Public", headers=auth_header("bad"))
    assert resp.status == 200


TOKEN_FORMS: list[tuple[str, Callable[[str], dict[str, Any]], bool]] = [
    ("authorization", lambda t: {"headers": {"Authorization": mb(t)}}, False),
    (
        "authorization-no-client-fields",
        lambda t: {"headers": {"Authorization": f'MediaBrowser Token="{t}"'}},
        False,
    ),
    ("emby-scheme", lambda t: {"headers": {"Authorization": f'Emby Token="{t}"'}}, True),
    ("x-emby-authorization", lambda t: {"headers": {"X-Emby-Authorization": mb(t)}}, True),
    ("x-emby-token", lambda t: {"headers": {"X-Emby-Token": t}}, True),
    ("x-mediabrowser-token", lambda t: {"headers": {"X-MediaBrowser-Token": t}}, True),
    ("ApiKey", lambda t: {"params": {"ApiKey": t}}, False),
    ("apikey-lowercase", lambda t: {"params": {"apikey": t}}, False),
    ("api_key", lambda t: {"params": {"api_key": t}}, True),
]


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-on", "legacy-off"])
@pytest.mark.parametrize(("form", "build", "legacy_only"), TOKEN_FORMS, ids=[f[0] for f in TOKEN_FORMS])
async def test_every_token_form_authenticates_users_me_only_when_its_source_is_enabled(
    aiohttp_client: ClientFactory,
    legacy: bool,
    form: str,
    build: Callable[[str], dict[str, Any]],
    legacy_only: bool,
) -> None:
    client = await aiohttp_client(create_standin(legacy_authorization=legacy))
    token = state_of(client).issue_token(user(client, "alice"))
    resp = await client.get("/Users/Me", **build(token))
    expected = 200 if legacy or not legacy_only else 401
    assert resp.status == expected, form


# ---------------------------------------------------------------------------
# JSON and routing (section 4)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/system/info/public", "/SYSTEM/INFO/PUBLIC", "/System/Info/Public/", "/emby/System/Info/Public"]
)
async def test_routes_are_case_insensitive_and_tolerate_a_trailing_slash(standin: Client, path: str) -> None:
    resp = await standin.get(path)
    assert resp.status == 200
    assert (await resp.json())["ProductName"] == "Jellyfin Server"


async def test_public_system_info_has_the_discovery_fields(standin: Client) -> None:
    resp = await standin.get("/System/Info/Public")
    body = await resp.json()
    assert body == {
        "LocalAddress": f"http://{standin.host}:{standin.port}",
        "ServerName": "standin",
        "Version": "10.11.0",
        "ProductName": "Jellyfin Server",
        "OperatingSystem": "",
        "Id": state_of(standin).server_id,
        "StartupWizardCompleted": True,
    }
    assert HEX32.match(body["Id"])


async def test_system_info_needs_a_token_and_contains_the_public_fields(standin: Client) -> None:
    await assert_empty(await standin.get("/System/Info"), 401)
    token = state_of(standin).issue_token(user(standin, "alice"))
    resp = await standin.get("/System/Info", headers=auth_header(token))
    body = await resp.json()
    assert body["Id"] == state_of(standin).server_id
    assert body["Version"] == "10.11.0"
    assert "CachePath" in body


async def test_camel_case_profile_in_accept_gives_camel_case_keys(standin: Client) -> None:
    token = state_of(standin).issue_token(user(standin, "admin"))
    headers = {**auth_header(token), "Accept": 'application/json; profile="CamelCase"'}
    resp = await standin.get("/Users/Me", headers=headers)
    body = await resp.json()
    assert body["name"] == "admin"
    assert body["policy"]["isAdministrator"] is True
    assert "Name" not in body
    plain = await (await standin.get("/System/Info/Public", headers={"Accept": "application/json"})).json()
    assert "ServerName" in plain


def test_camel_case_follows_dotnet_naming_policy() -> None:
    assert dotnet_camel_case("EnableLUFSScan") == "enableLUFSScan"
    assert dotnet_camel_case("Id") == "id"
    assert dotnet_camel_case("IPAddress") == "ipAddress"


async def test_ping_is_a_json_string_for_get_and_post(standin: Client) -> None:
    for method in ("GET", "POST"):
        resp = await standin.request(method, "/System/Ping")
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await resp.text() == '"Jellyfin Server"'


async def test_login_page_endpoints_are_anonymous(standin: Client) -> None:
    assert await (await standin.get("/QuickConnect/Enabled")).text() == "false"
    branding = await (await standin.get("/Branding/Configuration")).json()
    assert branding == {"LoginDisclaimer": "", "CustomCss": "", "SplashscreenEnabled": False}
    users = await (await standin.get("/users/public")).json()
    assert sorted(u["Name"] for u in users) == ["admin", "alice"]  # mallory is disabled


async def test_every_response_has_a_date_and_kestrel_server_header(standin: Client) -> None:
    responses = [
        await standin.get("/System/Info/Public"),
        await standin.get("/Users/Me"),
        await standin.get("/nope"),
        await standin.get("/", allow_redirects=False),
        await standin.delete("/System/Info/Public"),
        await standin.get("/Videos/x/stream", headers={"Range": "bytes=99999999-"}),
    ]
    for resp in responses:
        assert resp.headers.get("Date"), resp.status
        assert resp.headers["Server"] == "Kestrel"


async def test_unknown_routes_are_404_with_an_empty_body(standin: Client) -> None:
    await assert_empty(await standin.get("/Definitely/Not/A/Route"), 404)


async def test_a_known_route_with_the_wrong_method_is_405(standin: Client) -> None:
    resp = await standin.put("/System/Info/Public")
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET"


async def test_calls_and_requests_record_what_arrived(standin: Client) -> None:
    await standin.get("/Users/ME?x=1", headers={"X-Test": "yes"})
    state = state_of(standin)
    assert state.calls["GET /users/me"] == 1
    assert state.requests[-1].path_qs == "/Users/ME?x=1"
    assert state.requests[-1].headers["X-Test"] == "yes"


# ---------------------------------------------------------------------------
# Login (section 8)
# ---------------------------------------------------------------------------


async def login(
    client: Client, body: Any, *, authorization: str | None = None, path: str = "/Users/AuthenticateByName"
) -> aiohttp.ClientResponse:
    return await client.post(path, json=body, headers={"Authorization": authorization or mb()})


async def test_login_returns_a_token_that_works_on_users_me(standin: Client) -> None:
    resp = await login(standin, {"Username": "alice", "Pw": "alicepw"})
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"User", "SessionInfo", "AccessToken", "ServerId"}
    assert HEX32.match(body["AccessToken"])
    assert body["User"]["Name"] == "alice"
    assert body["ServerId"] == state_of(standin).server_id
    assert body["SessionInfo"]["DeviceId"] == "dev-1"
    me = await standin.get("/Users/Me", headers=auth_header(body["AccessToken"]))
    assert (await me.json())["Id"] == body["User"]["Id"]


async def test_login_accepts_lowercase_keys_and_a_lowercase_route(standin: Client) -> None:
    resp = await login(standin, {"username": "ALICE", "pw": "alicepw"}, path="/users/authenticatebyname")
    assert resp.status == 200


async def test_login_without_client_fields_is_400_text_plain(standin: Client) -> None:
    resp = await login(
        standin, {"Username": "alice", "Pw": "alicepw"}, authorization='MediaBrowser Client="x"'
    )
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "text/plain"


async def test_login_with_a_bad_password_is_401_text_plain(standin: Client) -> None:
    resp = await login(standin, {"Username": "alice", "Pw": "wrong"})
    assert resp.status == 401
    assert resp.headers["Content-Type"] == "text/plain"
    assert (await login(standin, {"Username": "nobody", "Pw": "x"})).status == 401


async def test_login_of_a_disabled_user_is_403_text_plain(standin: Client) -> None:
    resp = await login(standin, {"Username": "mallory", "Pw": "mallorypw"})
    assert resp.status == 403
    assert resp.headers["Content-Type"] == "text/plain"


async def test_login_revokes_older_tokens_of_the_same_user_and_device(standin: Client) -> None:
    first = (await (await login(standin, {"Username": "alice", "Pw": "alicepw"})).json())["AccessToken"]
    other_device = mb(fields='Client="c", Device="d", DeviceId="dev-2", Version="1"')
    kept = (
        await (
            await login(standin, {"Username": "alice", "Pw": "alicepw"}, authorization=other_device)
        ).json()
    )["AccessToken"]
    second = (await (await login(standin, {"Username": "alice", "Pw": "alicepw"})).json())["AccessToken"]
    assert first != second
    assert (await standin.get("/Users/Me", headers=auth_header(first))).status == 401
    assert (await standin.get("/Users/Me", headers=auth_header(second))).status == 200
    assert (await standin.get("/Users/Me", headers=auth_header(kept))).status == 200


async def test_login_body_must_be_json(standin: Client) -> None:
    resp = await standin.post("/Users/AuthenticateByName", data=b"", headers={"Authorization": mb()})
    assert resp.status == 415
    resp = await standin.post(
        "/Users/AuthenticateByName",
        data=b"",
        headers={"Authorization": mb(), "Content-Type": "application/json"},
    )
    assert resp.status == 400


# ---------------------------------------------------------------------------
# Library notifications (section 3)
# ---------------------------------------------------------------------------


async def test_media_updated_records_the_paths_for_any_authenticated_caller(standin: Client) -> None:
    token = state_of(standin).issue_token(user(standin, "alice"))
    body = {"Updates": [{"Path": "/media/movies/X (2020)/X.mkv", "UpdateType": "Created"}]}
    resp = await standin.post("/Library/Media/Updated", json=body, headers=auth_header(token))
    await assert_empty(resp, 204)
    resp = await standin.post(
        "/library/media/updated", json={"updates": [{"path": "/a"}]}, params={"ApiKey": key(standin)}
    )
    await assert_empty(resp, 204)
    assert [(u.path, u.update_type) for u in state_of(standin).media_updates] == [
        ("/media/movies/X (2020)/X.mkv", "Created"),
        ("/a", None),
    ]


async def test_media_updated_rejects_missing_body_and_empty_path(standin: Client) -> None:
    headers = auth_header(key(standin))
    resp = await standin.post(
        "/Library/Media/Updated", data=b"", headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status == 400
    resp = await standin.post("/Library/Media/Updated", json={"Updates": [{"Path": ""}]}, headers=headers)
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "text/plain"
    assert state_of(standin).media_updates == []
    await assert_empty(await standin.post("/Library/Media/Updated", json={"Updates": []}), 401)


async def test_library_refresh_is_counted(standin: Client) -> None:
    await standin.post("/Library/Refresh", headers=auth_header(key(standin)))
    assert state_of(standin).library_refreshes == 1


# ---------------------------------------------------------------------------
# BaseUrl (section 6)
# ---------------------------------------------------------------------------


@pytest.fixture
async def based(aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(create_standin(base_url="/jellyfin"))


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/", "jellyfin/web/"),
        ("/jellyfin", "jellyfin/web/"),
        ("/jellyfin/", "web/"),
        ("/System/Info/Public", "../../jellyfin/web/"),
        ("/other", "jellyfin/web/"),
    ],
)
async def test_paths_outside_the_base_url_redirect_relatively_to_its_web_client(
    based: Client, path: str, location: str
) -> None:
    resp = await based.get(path, allow_redirects=False)
    await assert_empty(resp, 302)
    assert resp.headers["Location"] == location
    assert str(resp.url.join(URL(location)).path) == "/jellyfin/web/"


async def test_the_app_is_served_under_the_base_url_case_insensitively(based: Client) -> None:
    for path in ("/jellyfin/System/Info/Public", "/JellyFin/system/info/public"):
        resp = await based.get(path)
        assert resp.status == 200
        assert (await resp.json())["LocalAddress"].endswith("/jellyfin")
    assert state_of(based).calls["GET /system/info/public"] == 2


async def test_a_longer_first_segment_is_not_the_base_url(based: Client) -> None:
    await assert_empty(await based.get("/jellyfinx/System/Info/Public", allow_redirects=False), 404)


async def test_health_redirects_into_the_base_url(based: Client) -> None:
    resp = await based.get("/health", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/jellyfin/health"
    healthy = await based.get("/jellyfin/health")
    assert await healthy.text() == "Healthy"


async def test_health_without_base_url_is_healthy_text(standin: Client) -> None:
    resp = await standin.get("/health", allow_redirects=False)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain"
    assert await resp.text() == "Healthy"


async def test_root_without_base_url_redirects_to_web(standin: Client) -> None:
    resp = await standin.get("/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "web/"
    followed = await standin.get("/")
    assert followed.status == 200
    assert followed.headers["Content-Type"].startswith("text/html")


def test_relative_uri_matches_dotnet() -> None:
    assert dotnet_relative_uri("/a/b/c", "/jf/web/") == "../../jf/web/"
    assert dotnet_relative_uri("/jf/web/", "/jf/web/") == ""


# ---------------------------------------------------------------------------
# Static streaming (section 7)
# ---------------------------------------------------------------------------


async def test_full_stream_advertises_ranges_and_validators(standin: Client) -> None:
    resp = await standin.get("/Videos/abc/stream?static=true")
    body = await resp.read()
    assert resp.status == 200
    assert body == state_of(standin).media
    assert len(body) == 1024 * 1024
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Type"] == "video/mp4"
    assert resp.headers["ETag"].startswith('"')
    assert resp.headers["Last-Modified"].endswith("GMT")


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, 1024 * 1024 - 1),
        ("bytes=-500", 1024 * 1024 - 500, 1024 * 1024 - 1),
        ("bytes=1048000-99999999", 1048000, 1024 * 1024 - 1),
    ],
)
async def test_a_single_range_gives_206_with_content_range(
    standin: Client, range_header: str, start: int, end: int
) -> None:
    resp = await standin.get("/Videos/abc/stream.mp4", headers={"Range": range_header})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{1024 * 1024}"
    assert await resp.read() == state_of(standin).media[start : end + 1]


async def test_an_unsatisfiable_range_is_416_with_the_size(standin: Client) -> None:
    resp = await standin.get("/Videos/abc/stream", headers={"Range": "bytes=2000000-"})
    await assert_empty(resp, 416)
    assert resp.headers["Content-Range"] == f"bytes */{1024 * 1024}"


async def test_multiple_or_malformed_ranges_are_ignored(standin: Client) -> None:
    for header in ("bytes=0-1,5-6", "bytes=x-y", "items=0-1"):
        resp = await standin.get("/Videos/abc/stream", headers={"Range": header})
        assert resp.status == 200, header


async def test_if_none_match_gives_304_and_a_stale_if_range_the_full_body(standin: Client) -> None:
    etag = (await standin.get("/Videos/abc/stream")).headers["ETag"]
    await assert_empty(await standin.get("/Videos/abc/stream", headers={"If-None-Match": etag}), 304)
    resp = await standin.get("/Videos/abc/stream", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert resp.status == 200
    resp = await standin.get("/Videos/abc/stream", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.status == 206


async def test_head_on_a_stream_sends_headers_only(standin: Client) -> None:
    resp = await standin.head("/Videos/abc/stream.mkv")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(1024 * 1024)
    assert resp.headers["Content-Type"] == "video/x-matroska"
    assert await resp.read() == b""


async def test_media_size_is_configurable(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_standin(state=StandinState(media_size=10)))
    assert len(await (await client.get("/Videos/x/stream")).read()) == 10


# ---------------------------------------------------------------------------
# WebSocket (section 5)
# ---------------------------------------------------------------------------

UPGRADE_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def test_websocket_without_a_token_is_refused_with_403_text_not_101(standin: Client) -> None:
    resp = await standin.get("/socket", headers=UPGRADE_HEADERS)
    assert resp.status == 403
    assert resp.headers["Content-Type"] == "text/plain"
    assert await resp.text() == "Token is required"
    assert resp.headers.get("Date")
    record = state_of(standin).websockets[-1]
    assert not record.accepted
    assert state_of(standin).websocket_connections == 0


async def test_websocket_with_an_invalid_token_is_refused(standin: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await standin.ws_connect("/socket", params={"ApiKey": "bad"})
    assert info.value.status == 403


async def test_websocket_api_key_query_works_only_with_legacy_authorization(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(create_standin(legacy_authorization=False))
    token = state_of(client).issue_token(user(client, "alice"))
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/socket", params={"api_key": token, "deviceId": "d"})
    async with client.ws_connect("/socket", params={"ApiKey": token}) as ws:
        first = await ws.receive_json()
        assert first["MessageType"] == "ForceKeepAlive"


async def test_websocket_sends_force_keep_alive_and_answers_keep_alive(standin: Client) -> None:
    token = state_of(standin).issue_token(user(standin, "alice"))
    async with standin.ws_connect("/socket?deviceId=x", headers={"Authorization": mb(token)}) as ws:
        first = await ws.receive_json()
        assert first["MessageType"] == "ForceKeepAlive"
        assert first["Data"] == 60
        assert HEX32.match(first["MessageId"])
        await ws.send_json({"MessageType": "KeepAlive"})
        reply = await ws.receive_json()
        assert reply["MessageType"] == "KeepAlive"
        assert HEX32.match(reply["MessageId"])
        assert "Data" not in reply
    record = state_of(standin).websockets[-1]
    assert record.accepted
    assert record.query_string == "deviceId=x"
    assert record.authorization == mb(token)
    assert record.user_id == user(standin, "alice").id


async def test_websocket_echoes_other_text_and_binary(standin: Client) -> None:
    async with standin.ws_connect("/any/path/works", params={"ApiKey": key(standin)}) as ws:
        await ws.receive_json()
        await ws.send_str('{"MessageType":"SessionsStart","Data":"0,1500"}')
        echo = await ws.receive_json()
        assert echo["MessageType"] == "Echo"
        assert echo["Data"] == '{"MessageType":"SessionsStart","Data":"0,1500"}'
        await ws.send_bytes(b"\x00\x01binary")
        msg = await ws.receive()
        assert msg.type is WSMsgType.BINARY
        assert msg.data == b"\x00\x01binary"
    assert state_of(standin).websockets[-1].is_api_key


async def test_websocket_close_code_from_the_client_is_echoed(standin: Client) -> None:
    ws = await standin.ws_connect("/socket", params={"ApiKey": key(standin)})
    await ws.receive_json()
    await ws.close(code=4001)
    assert ws.close_code == 4001
    assert state_of(standin).websockets[-1].close_code == 4001


async def test_broadcast_reaches_open_sockets(standin: Client) -> None:
    async with standin.ws_connect("/socket", params={"ApiKey": key(standin)}) as ws:
        await ws.receive_json()
        assert await state_of(standin).broadcast("LibraryChanged", {"ItemsAdded": ["a"]}) == 1
        message = await ws.receive_json()
        assert message["MessageType"] == "LibraryChanged"
        assert message["Data"] == {"ItemsAdded": ["a"]}


async def test_websocket_outside_the_base_url_is_redirected(based: Client) -> None:
    resp = await based.get("/socket", headers=UPGRADE_HEADERS, allow_redirects=False)
    assert resp.status == 302
    token = state_of(based).issue_token(user(based, "admin"))
    async with based.ws_connect("/jellyfin/socket", params={"ApiKey": token}) as ws:
        assert (await ws.receive_json())["MessageType"] == "ForceKeepAlive"


# ---------------------------------------------------------------------------
# Fixtures on the state
# ---------------------------------------------------------------------------


def test_create_standin_prepopulates_users_and_an_api_key() -> None:
    state = create_standin()[STATE]
    assert HEX32.match(state.server_id)
    assert state.legacy_authorization is True
    by_name = {u.name: u for u in state.users.values()}
    assert by_name["admin"].is_administrator
    assert by_name["admin"].password == "adminpw"
    assert not by_name["alice"].is_administrator
    assert by_name["alice"].password == "alicepw"
    assert by_name["mallory"].is_disabled
    assert by_name["mallory"].password == "mallorypw"
    assert all(HEX32.match(u.id) for u in state.users.values())
    assert list(state.api_keys.values()) == ["gateway"]
    assert all(HEX32.match(k) for k in state.api_keys)
    token = state.issue_token(by_name["alice"])
    assert HEX32.match(token)
    assert state.tokens[token] == by_name["alice"].id
    assert create_standin(legacy_authorization=False)[STATE].legacy_authorization is False


def test_a_given_state_is_used_as_it_is() -> None:
    state = StandinState(with_defaults=False)
    assert create_standin(state=state)[STATE] is state
    assert state.users == {}


async def test_tokens_added_directly_to_the_state_are_honoured(standin: Client) -> None:
    state = state_of(standin)
    state.tokens["a" * 32] = user(standin, "admin").id
    assert (await standin.get("/Auth/Providers", headers={"X-Emby-Token": "a" * 32})).status == 200


async def test_request_bodies_are_kept_on_the_record_once_read(standin: Client) -> None:
    await login(standin, {"Username": "alice", "Pw": "alicepw"})
    assert json.loads(state_of(standin).requests[-1].body or b"") == {"Username": "alice", "Pw": "alicepw"}
    await standin.get("/System/Info/Public")
    assert state_of(standin).requests[-1].body is None
