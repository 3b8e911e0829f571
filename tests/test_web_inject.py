"""The gateway's script tag in Jellyfin web's index.html, and /web otherwise untouched (real sockets)."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import web_inject
from gateway.web_inject import MAX_DOCUMENT, WebIndex, inject, script_version
from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, server_url
from tests.jellyfin_standin import (
    ROUTES,
    WEB_INDEX_STUB,
    Policy,
    RequestContext,
    StandinState,
    create_standin,
    route,
)

# Built jellyfin-web: one minified line, its deferred bundle in <head>.
INDEX = (
    '<!doctype html><html class="preload" dir="ltr"><head><meta charset="utf-8"><title>Jellyfin</title>'
    '<script defer="defer" src="main.jellyfin.bundle.js?abc"></script><link href="main.jellyfin.css" '
    'rel="stylesheet"></HEAD><body dir="ltr"><div class="splashLogo"></div></body></html>'
)
_VOLATILE = {"date", "server", "connection", "keep-alive"}


def _tag(version: str) -> str:
    src = f"../torrent/ui/static/jellyfin-web.js?v={version}"
    return f'<script src="{src}" defer data-jellyfin-gateway></script>'


def _comparable(headers: aiohttp.typedefs.LooseHeaders) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in dict(headers).items() if k.lower() not in _VOLATILE)


@pytest.fixture
def version() -> str:
    return script_version()


@pytest.fixture
def standin_state() -> StandinState:
    state = StandinState()
    state.web_index_html = INDEX
    return state


async def _get(
    http: aiohttp.ClientSession, server: TestServer | RunningGateway, target: str, **kw: object
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.get(server_url(server, target), allow_redirects=False, **kw) as resp:  # type: ignore[arg-type]
        return resp, await resp.read()


def _injected(version: str, document: str = INDEX) -> bytes:
    return document.replace("</HEAD>", _tag(version) + "</HEAD>").encode()


@pytest.mark.parametrize("accept_encoding", ["gzip, deflate, br", "identity", None])
@pytest.mark.parametrize("target", ["/web/", "/web/index.html", "/WEB/Index.HTML?x=1"])
async def test_index_html_gets_the_script_once_as_an_identity_document(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    jellyfin_gateway: RunningGateway,
    version: str,
    target: str,
    accept_encoding: str | None,
) -> None:
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding else {}
    direct, _ = await _get(http, jellyfin, "/web/", headers=headers)
    if accept_encoding and "gzip" in accept_encoding:
        assert direct.headers["Content-Encoding"] == "gzip"  # the stand-in compresses as Jellyfin does
    resp, body = await _get(http, jellyfin_gateway, target, headers=headers)
    assert resp.status == 200
    assert body == _injected(version)
    assert body.count(b"data-jellyfin-gateway") == 1
    assert "Content-Encoding" not in resp.headers
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.headers["Content-Type"] == "text/html"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["Last-Modified"] == direct.headers["Last-Modified"]
    assert "Accept-Ranges" not in resp.headers
    etag = resp.headers["ETag"]
    assert etag.startswith('"')
    assert etag != direct.headers["ETag"]


async def test_jellyfin_is_asked_for_the_whole_uncompressed_document(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, standin_state: StandinState
) -> None:
    headers = {
        "Accept-Encoding": "gzip",
        "If-None-Match": '"x"',
        "If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT",
        "Range": "bytes=0-9",
        "If-Range": '"x"',
    }
    resp, _ = await _get(http, jellyfin_gateway, "/web/", headers=headers)
    assert resp.status == 200
    asked = standin_state.requests[-1].headers
    assert asked["Accept-Encoding"] == "identity"
    assert not {"If-None-Match", "If-Modified-Since", "Range", "If-Range"} & set(asked)


async def test_head_has_the_injected_documents_headers_and_no_body(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, version: str
) -> None:
    got, _ = await _get(http, jellyfin_gateway, "/web/")
    async with http.head(server_url(jellyfin_gateway, "/web/index.html")) as resp:
        assert resp.status == 200
        assert await resp.read() == b""
        assert resp.headers["Content-Length"] == str(len(_injected(version)))
        assert resp.headers["ETag"] == got.headers["ETag"]


async def test_the_new_etag_answers_if_none_match_with_304(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway
) -> None:
    first, _ = await _get(http, jellyfin_gateway, "/web/")
    etag = first.headers["ETag"]
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        resp, body = await _get(http, jellyfin_gateway, "/web/", headers={"If-None-Match": sent})
        assert (resp.status, body) == (304, b"")
        assert resp.headers["ETag"] == etag
        assert resp.headers["Cache-Control"] == "no-cache"
    stale, body = await _get(http, jellyfin_gateway, "/web/", headers={"If-None-Match": '"old"'})
    assert stale.status == 200
    assert body


async def test_the_etag_changes_with_jellyfins_document_and_with_the_script(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = await gateway_factory(server_url(jellyfin))
    before, _ = await _get(http, gateway, "/web/")
    standin_state.web_index_html = INDEX.replace("Jellyfin", "Jellyfin!")
    changed, _ = await _get(http, gateway, "/web/")
    assert changed.headers["ETag"] != before.headers["ETag"]

    script = tmp_path / "jellyfin-web.js"
    script.write_text("console.log('v2');\n")
    monkeypatch.setattr(web_inject, "SCRIPT", script)
    newer = await gateway_factory(server_url(jellyfin))
    resp, body = await _get(http, newer, "/web/")
    assert resp.headers["ETag"] not in (changed.headers["ETag"], before.headers["ETag"])
    assert f"jellyfin-web.js?v={script_version(script)}".encode() in body
    old, _ = await _get(http, newer, "/web/", headers={"If-None-Match": changed.headers["ETag"]})
    assert old.status == 200


def test_the_version_is_the_scripts_hash_or_the_gateways(tmp_path: Path) -> None:
    script = tmp_path / "jellyfin-web.js"
    assert script_version(script) == script_version(tmp_path / "missing.js")  # the gateway's version
    script.write_bytes(b"one")
    first = script_version(script)
    script.write_bytes(b"two")
    assert script_version(script) != first
    assert len(first) == 12


@pytest.mark.parametrize("target", ["/jellyfin/web/", "/JELLYFIN/web/", "/jellyfin/Web/index.html"])
async def test_a_base_url_gets_the_same_relative_tag(
    http: aiohttp.ClientSession,
    aiohttp_server: ServerFactory,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
    version: str,
    target: str,
) -> None:
    based = await aiohttp_server(create_standin(base_url="/jellyfin", state=standin_state))
    gateway = await gateway_factory(server_url(based, "/jellyfin"))
    resp, body = await _get(http, gateway, target)
    assert resp.status == 200
    assert body == _injected(version)
    outside, body = await _get(http, gateway, "/web/")  # outside the BaseUrl: Jellyfin's redirect
    assert (outside.status, body) == (302, b"")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("<html><body><p>x</p></BODY></html>", "<html><body><p>x</p>{tag}</BODY></html>"),
        ("<p>no structure at all</p>", "<p>no structure at all</p>{tag}"),
        ("<head></head><body></body></head>", "<head>{tag}</head><body></body></head>"),
    ],
)
async def test_the_tag_goes_before_head_else_body_else_at_the_end(
    http: aiohttp.ClientSession,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    version: str,
    document: str,
    expected: str,
) -> None:
    standin_state.web_index_html = document
    _, body = await _get(http, jellyfin_gateway, "/web/")
    assert body.decode() == expected.format(tag=_tag(version))


async def test_an_injected_document_is_passed_unchanged(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
) -> None:
    standin_state.web_index_html = _injected("elsewhere").decode()
    identity = {"Accept-Encoding": "identity"}
    direct, expected = await _get(http, jellyfin, "/web/", headers=identity)
    resp, body = await _get(http, jellyfin_gateway, "/web/", headers=identity)
    assert body == expected
    assert _comparable(resp.headers) == _comparable(direct.headers)


@pytest.mark.parametrize("status", [304, 404, 500])
async def test_other_answers_from_jellyfin_pass_unchanged(
    http: aiohttp.ClientSession, jellyfin: TestServer, jellyfin_gateway: RunningGateway, status: int
) -> None:
    async def answer(ctx: RequestContext) -> web.StreamResponse:
        body = b"" if status == 304 else b"<html><head></head>nope</html>"
        return web.Response(status=status, body=body, headers={"Content-Type": "text/html", "ETag": '"j"'})

    jellyfin.app[ROUTES].insert(0, route("GET", "/web/index.html", Policy.ANONYMOUS, answer))
    direct, expected = await _get(http, jellyfin, "/web/index.html")
    resp, body = await _get(http, jellyfin_gateway, "/web/index.html")
    assert (resp.status, body) == (status, expected)
    assert _comparable(resp.headers) == _comparable(direct.headers)


async def test_non_html_and_oversized_documents_pass_unchanged(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
) -> None:
    standin_state.web_index_html = "<head></head>" + "x" * (MAX_DOCUMENT + 1)
    identity = {"Accept-Encoding": "identity"}  # what the gateway asks for
    direct, expected = await _get(http, jellyfin, "/web/", headers=identity)
    resp, body = await _get(http, jellyfin_gateway, "/web/", headers=identity)
    assert body == expected
    assert b"data-jellyfin-gateway" not in body
    assert _comparable(resp.headers) == _comparable(direct.headers)

    async def plain(ctx: RequestContext) -> web.StreamResponse:
        return web.Response(text="<head></head>", content_type="text/plain")

    jellyfin.app[ROUTES].insert(0, route("GET", "/web/index.html", Policy.ANONYMOUS, plain))
    resp, body = await _get(http, jellyfin_gateway, "/web/index.html")
    assert body == b"<head></head>"


async def test_an_oversized_document_of_unknown_length_goes_on_whole_and_unchanged(
    http: aiohttp.ClientSession, jellyfin: TestServer, jellyfin_gateway: RunningGateway
) -> None:
    """Found too large only while reading: what was read goes first, the rest is streamed after it."""
    chunk = b"<head></head>" + b"x" * 65536

    async def chunked(ctx: RequestContext) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(ctx.request)
        for _ in range(MAX_DOCUMENT // len(chunk) + 8):
            await response.write(chunk)
        await response.write_eof()
        return response

    jellyfin.app[ROUTES].insert(0, route("GET,HEAD", "/web/index.html", Policy.ANONYMOUS, chunked))
    resp, body = await _get(http, jellyfin_gateway, "/web/index.html")
    assert resp.status == 200
    assert body == chunk * (MAX_DOCUMENT // len(chunk) + 8)
    async with http.head(server_url(jellyfin_gateway, "/web/index.html")) as head:
        assert (head.status, await head.read()) == (200, b"")


@pytest.mark.parametrize("target", ["/web/", "/web/index.html", "/web/main.js", "/web"])
@pytest.mark.parametrize("headers", [{}, {"Accept-Encoding": "gzip"}, {"Range": "bytes=1-5"}])
async def test_web_inject_off_relays_web_byte_for_byte(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    gateway_factory: GatewayFactory,
    standin_state: StandinState,
    target: str,
    headers: dict[str, str],
) -> None:
    standin_state.web_files["main.js"] = b"console.log(1);\n" * 100
    gateway = await gateway_factory(server_url(jellyfin), web_inject=False)
    direct, expected = await _get(http, jellyfin, target, headers=headers)
    resp, body = await _get(http, gateway, target, headers=headers)
    assert (resp.status, body) == (direct.status, expected)
    if target == "/web":  # absolute, on the Host Jellyfin saw: the client's, which the gateway forwards
        assert direct.headers["Location"] == str(server_url(jellyfin, "/web/"))
        assert resp.headers["Location"] == str(server_url(gateway, "/web/"))
    assert _comparable(resp.headers) == _comparable(direct.headers) or target == "/web"


async def test_other_web_files_pass_unchanged_compressed_or_ranged(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
) -> None:
    standin_state.web_files["main.js"] = b"console.log('</head>');\n" * 1000
    for headers in ({}, {"Accept-Encoding": "gzip"}, {"Range": "bytes=0-99"}):
        direct, expected = await _get(http, jellyfin, "/web/main.js", headers=headers)
        resp, body = await _get(http, jellyfin_gateway, "/web/main.js", headers=headers)
        assert (resp.status, body) == (direct.status, expected)
        assert _comparable(resp.headers) == _comparable(direct.headers)
    _, compressed = await _get(http, jellyfin_gateway, "/web/main.js", headers={"Accept-Encoding": "gzip"})
    assert gzip.decompress(compressed) == standin_state.web_files["main.js"]


async def test_a_large_web_file_is_streamed_not_buffered(
    http: aiohttp.ClientSession, jellyfin: TestServer, jellyfin_gateway: RunningGateway
) -> None:
    """Jellyfin holds back the rest of a 10 MB main.js until the client has its first bytes."""
    size, first = 10 * 1024 * 1024, 256 * 1024
    client_has_first_bytes = asyncio.Event()

    async def main_js(ctx: RequestContext) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/javascript", "Content-Length": str(size)}
        )
        await response.prepare(ctx.request)
        await response.write(b"/" * first)
        await asyncio.wait_for(client_has_first_bytes.wait(), 10)
        for _ in range((size - first) // first):
            await response.write(b"/" * first)
        await response.write_eof()
        return response

    jellyfin.app[ROUTES].insert(0, route("GET", "/web/main.js", Policy.ANONYMOUS, main_js))
    async with http.get(server_url(jellyfin_gateway, "/web/main.js")) as resp:
        received = len(await resp.content.readexactly(first))
        client_has_first_bytes.set()
        while chunk := await resp.content.read(1 << 20):
            received += len(chunk)
    assert received == size


async def test_the_web_redirect_names_the_gateway_not_jellyfin(
    http: aiohttp.ClientSession, aiohttp_server: ServerFactory, gateway_factory: GatewayFactory
) -> None:
    based = await aiohttp_server(create_standin(base_url="/jellyfin"))
    gateway = await gateway_factory(server_url(based, "/jellyfin"))
    resp, _ = await _get(http, gateway, "/jellyfin/web?x=1")
    assert resp.status == 301
    assert resp.headers["Location"] == str(server_url(gateway, "/jellyfin/web/?x=1"))


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [(False, "http://gw.example:8097/web/?a=1"), (True, "https://media.example/web/?a=1")],
)
async def test_a_redirect_to_jellyfins_own_address_is_moved_to_the_clients(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    gateway_factory: GatewayFactory,
    trusted: bool,
    expected: str,
) -> None:
    """Jellyfin builds absolute redirects from the Host it sees, e.g. its own behind some proxies."""
    origin = str(server_url(jellyfin))

    async def own_address(ctx: RequestContext) -> web.StreamResponse:
        return web.Response(status=int(ctx.params["status"]), headers={"Location": f"{origin}/web/?a=1"})

    jellyfin.app[ROUTES].insert(0, route("GET", "/redirect/{status}", Policy.ANONYMOUS, own_address))
    overrides = {"trusted_proxies": (ipaddress.ip_network("127.0.0.1/32"),)} if trusted else {}
    gateway = await gateway_factory(server_url(jellyfin), **overrides)
    headers = {"Host": "gw.example:8097", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "media.example"}
    for status in (301, 302, 303, 307, 308):
        resp, _ = await _get(http, gateway, f"/redirect/{status}", headers=headers)
        assert (resp.status, resp.headers["Location"]) == (status, expected)


async def test_redirects_elsewhere_are_left_alone(
    http: aiohttp.ClientSession, jellyfin: TestServer, jellyfin_gateway: RunningGateway
) -> None:
    for location in ("web/", "/jellyfin/web/", "http://other:8096/web/", f"{server_url(jellyfin)}0/web/"):

        async def away(ctx: RequestContext, location: str = location) -> web.StreamResponse:
            return web.Response(status=302, headers={"Location": location})

        jellyfin.app[ROUTES].insert(0, route("GET", "/away", Policy.ANONYMOUS, away))
        resp, _ = await _get(http, jellyfin_gateway, "/away")
        assert resp.headers["Location"] == location


async def test_a_range_on_index_html_gets_the_whole_injected_document(
    http: aiohttp.ClientSession, jellyfin_gateway: RunningGateway, version: str
) -> None:
    resp, body = await _get(http, jellyfin_gateway, "/web/index.html", headers={"Range": "bytes=0-9"})
    assert resp.status == 200
    assert "Content-Range" not in resp.headers
    assert body == _injected(version)


async def test_other_methods_on_index_html_are_relayed_as_they_are(
    http: aiohttp.ClientSession, jellyfin: TestServer, jellyfin_gateway: RunningGateway
) -> None:
    async with http.post(server_url(jellyfin_gateway, "/web/index.html"), data=b"x") as resp:
        direct = await http.post(server_url(jellyfin, "/web/index.html"), data=b"x")
        assert resp.status == direct.status == 405


def test_inject_and_paths_without_a_server() -> None:
    index = WebIndex.for_base("/JellyFin", "v1")
    assert index.paths == {"/jellyfin/web/", "/jellyfin/web/index.html"}
    assert inject(WEB_INDEX_STUB.encode(), b"<t>").count(b"<t></head>") == 1
    assert WebIndex.for_base("", "v1").paths == {"/web/", "/web/index.html"}
