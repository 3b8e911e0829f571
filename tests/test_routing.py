"""The case-insensitive mount on its own: a small parent with a catch-all, a small sub-app under it."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from pytest_aiohttp import AiohttpClient

from gateway.routing import mount_case_insensitive
from tests.conftest import ROOT

PREFIX = "/base/torrent"
SUB_KEY = web.AppKey("sub_key", str)
PARENT_KEY = web.AppKey("parent_key", str)
SUB_APP = web.AppKey("sub_app", web.Application)
Client = TestClient[web.Request, web.Application]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stands for the torrent sub-app's own middlewares (JSON errors, the admin check)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
    response.headers["X-Sub-Middleware"] = "ran"
    return response


async def item(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "path": request.path,
            "query": request.query_string,
            "match": dict(request.match_info),
            "app_is_sub": request.app is request.config_dict[SUB_APP],
            "sub_key": request.config_dict[SUB_KEY],
            "parent_key": request.config_dict[PARENT_KEY],
        }
    )


def create_subapp(events: list[str] | None = None) -> web.Application:
    subapp = web.Application(middlewares=[json_errors])
    subapp[SUB_KEY] = "sub"
    subapp[SUB_APP] = subapp
    subapp.router.add_get(f"{PREFIX}/items/{{name}}", item)
    subapp.router.add_get(PREFIX, item)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if events is not None:
            events.append("startup")
        yield
        if events is not None:
            events.append("cleanup")

    subapp.cleanup_ctx.append(lifecycle)
    return subapp


def create_parent(
    subapp: web.Application,
    caught: list[str] | None = None,
    *,
    middlewares: bool = True,
    catch_all_first: bool = False,
) -> web.Application:
    """The gateway's layout: the mount, then the proxy's catch-all (which records what it gets)."""

    async def catch_all(request: web.Request) -> web.Response:
        if caught is not None:
            caught.append(request.path)
        return web.Response(text="proxied")

    @web.middleware
    async def passthrough(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    app = web.Application(middlewares=[passthrough] if middlewares else [])
    app[PARENT_KEY] = "parent"
    if catch_all_first:
        app.router.add_route("*", "/{path:.*}", catch_all)
    mount_case_insensitive(app, PREFIX, subapp)
    if not catch_all_first:
        app.router.add_route("*", "/{path:.*}", catch_all)
    return app


@pytest.fixture
def caught() -> list[str]:
    return []


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, caught: list[str]) -> Client:
    return await aiohttp_client(create_parent(create_subapp(), caught))


@pytest.mark.parametrize(
    "target",
    [
        "/base/torrent/items/foo",
        "/BASE/TORRENT/ITEMS/FOO",
        "/Base/Torrent/Items/Foo",
        "/base/%54orrent/items/foo",
    ],
)
async def test_the_prefix_in_any_letter_case_is_served_by_the_sub_app_and_its_middlewares(
    client: Client, caught: list[str], target: str
) -> None:
    async with client.get(f"{target}?Q=Ab") as resp:
        assert resp.status == 200
        assert resp.headers["X-Sub-Middleware"] == "ran"
        answer = await resp.json()
    assert answer["match"] == {"name": "foo"}  # resolved against the lowercased path
    assert answer["query"] == "Q=Ab"  # the handler still sees the request as sent
    assert answer["path"].lower() == "/base/torrent/items/foo"
    assert answer["app_is_sub"] is True
    assert (answer["sub_key"], answer["parent_key"]) == ("sub", "parent")
    assert caught == []


@pytest.mark.parametrize("target", ["/base/torrent", "/BASE/TORRENT"])
async def test_the_prefix_itself_is_the_sub_apps(client: Client, target: str) -> None:
    async with client.get(target) as resp:
        assert resp.status == 200
        assert resp.headers["X-Sub-Middleware"] == "ran"


@pytest.mark.parametrize(
    "target",
    ["/base/torrentx", "/BASE/TORRENTS/items/foo", "/torrent/items/foo", "/base", "/", "/x/base/torrent"],
)
async def test_paths_that_only_look_like_the_prefix_reach_the_catch_all(
    client: Client, caught: list[str], target: str
) -> None:
    async with client.get(target) as resp:
        assert resp.status == 200
        assert await resp.text() == "proxied"
        assert "X-Sub-Middleware" not in resp.headers
    assert caught == [target]


@pytest.mark.parametrize("target", ["/base/torrent/nope", "/BASE/Torrent/a/b/c", "/base/torrent/"])
async def test_unknown_paths_under_the_prefix_get_the_sub_apps_404_never_the_catch_all(
    client: Client, caught: list[str], target: str
) -> None:
    async with client.post(target) as resp:
        assert resp.status == 404
        assert resp.headers["X-Sub-Middleware"] == "ran"
        assert await resp.json() == {"error": "Not Found"}
    assert caught == []


@pytest.mark.parametrize("target", ["/base/torrent/items/foo", "/BASE/TORRENT/Items/Foo"])
async def test_a_wrong_method_under_the_prefix_gets_the_sub_apps_405_with_allow(
    client: Client, target: str
) -> None:
    async with client.delete(target) as resp:
        assert resp.status == 405
        assert resp.headers["X-Sub-Middleware"] == "ran"
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert (await resp.json())["error"] == "Method Not Allowed"


async def test_the_sub_apps_middlewares_run_even_when_the_parent_has_none(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(create_parent(create_subapp(), middlewares=False))
    async with client.get("/BASE/TORRENT/items/foo") as resp:
        assert resp.status == 200
        assert resp.headers["X-Sub-Middleware"] == "ran"


async def test_the_sub_apps_startup_and_cleanup_run_with_the_parents(aiohttp_client: AiohttpClient) -> None:
    events: list[str] = []
    client = await aiohttp_client(create_parent(create_subapp(events)))
    assert events == ["startup"]
    await client.close()
    assert events == ["startup", "cleanup"]


async def test_a_prefixed_request_routed_elsewhere_is_refused_and_never_reaches_the_catch_all(
    aiohttp_client: AiohttpClient,
) -> None:
    caught: list[str] = []
    client = await aiohttp_client(create_parent(create_subapp(), caught, catch_all_first=True))
    for target in ("/base/torrent/items/foo", "/BASE/Torrent"):
        async with client.get(target) as resp:
            assert resp.status == 500
    assert caught == []


def test_a_sub_app_is_mounted_once() -> None:
    subapp = create_subapp()
    create_parent(subapp)
    with pytest.raises(RuntimeError, match="already mounted"):
        create_parent(subapp)


def test_routing_uses_no_private_aiohttp_name() -> None:
    """aiohttp may change its private names in any release; the mount must break loudly or not at all."""
    tree = ast.parse((ROOT / "gateway" / "routing.py").read_text(encoding="utf-8"))
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (module := node.module or "").startswith("aiohttp"):
            private += [module] if any(part.startswith("_") for part in module.split(".")) else []
            private += [alias.name for alias in node.names if alias.name.startswith("_")]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.endswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            private.append(ast.unparse(node))
    assert private == []
