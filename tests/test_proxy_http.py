"""HTTP relaying, differential: the same request direct to the upstream and through the gateway."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.conftest import GatewayFactory, RunningGateway, free_port, raw_exchange, server_url, wait_until
from tests.probe import CHUNK, ProbeState, pattern

# Headers that legitimately differ between two servers or two connections.
_VOLATILE = {"date", "server", "connection", "keep-alive"}


def _comparable(headers: Any) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers.items() if k.lower() not in _VOLATILE)


async def _both(
    http: aiohttp.ClientSession,
    probe: TestServer,
    gateway: RunningGateway,
    method: str,
    target: str,
    **kw: Any,
) -> tuple[tuple[int, list[tuple[str, str]], bytes], tuple[int, list[tuple[str, str]], bytes]]:
    results = []
    for server in (probe, gateway):
        async with http.request(method, server_url(server, target), allow_redirects=False, **kw) as resp:
            results.append((resp.status, _comparable(resp.headers), await resp.read()))
    return results[0], results[1]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
async def test_every_method_reaches_jellyfin_unchanged(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState, method: str
) -> None:
    async with http.request(method, server_url(gateway, "/echo/x"), data=b"payload") as resp:
        assert resp.status == 200
        seen = await resp.json()
    assert seen["method"] == method
    assert seen["body_size"] == len(b"payload")


@pytest.mark.parametrize(
    "target",
    [
        "/echo/a%2Fb/c?x=1&x=2&empty=&flag",
        "/echo/Items?searchTerm=a+b%20c&fields=Path%2CGenres",
        "/echo/%7Euser/%E2%9C%93?q=%E2%9C%93&q=%25",
        "/echo//double//slashes/?trailing=",
        "/echo/Videos/abc/stream.mkv?Static=true&api_key=k&MediaSourceId=1&DeviceId=d%3D%3D",
        "/echo?=novalue&&&",
    ],
)
async def test_path_and_query_are_forwarded_byte_for_byte(
    http: aiohttp.ClientSession, gateway: RunningGateway, target: str
) -> None:
    async with http.get(server_url(gateway, target)) as resp:
        seen = await resp.json()
    assert seen["raw_path"] == target


async def test_request_headers_pass_with_host_kept_and_nothing_added(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    request = (
        b"GET /echo HTTP/1.1\r\n"
        b"Host: media.example.org:8920\r\n"
        b'Authorization: MediaBrowser Client="c", Token="t"\r\n'
        b"X-Custom: one\r\n"
        b"X-Custom: two\r\n"
        b"Cookie: a=1\r\n"
        b"Connection: close\r\n\r\n"
    )
    response = await raw_exchange(gateway, request)
    assert response.status == 200
    seen = dict((k.lower(), v) for k, v in probe_state.requests[-1]["headers"])
    names = [k.lower() for k, _ in probe_state.requests[-1]["headers"]]
    assert seen["host"] == "media.example.org:8920"
    assert seen["authorization"] == 'MediaBrowser Client="c", Token="t"'
    assert seen["cookie"] == "a=1"
    assert names.count("x-custom") == 2
    # aiohttp's client adds these on its own; a transparent proxy must not.
    for added in ("user-agent", "accept", "accept-encoding", "content-type"):
        assert added not in seen


async def test_hop_by_hop_request_headers_are_removed(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    request = (
        b"GET /echo HTTP/1.1\r\n"
        b"Host: gw\r\n"
        b"Connection: close, X-Hop-Named\r\n"
        b"X-Hop-Named: secret\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"X-End-To-End: kept\r\n\r\n"
    )
    response = await raw_exchange(gateway, request)
    assert response.status == 200
    names = {k.lower() for k, _ in probe_state.requests[-1]["headers"]}
    assert "x-end-to-end" in names
    for hop in (
        "x-hop-named",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ):
        assert hop not in names


async def _raw_upstream(response: bytes) -> tuple[asyncio.Server, int]:
    """An upstream that answers every request with fixed bytes, to send headers aiohttp would not."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(answer, "127.0.0.1", port)
    return server, port


async def test_hop_by_hop_response_headers_are_removed_and_end_to_end_ones_kept(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory
) -> None:
    upstream, port = await _raw_upstream(
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: keep-alive, X-Hop-Named\r\n"
        b"X-Hop-Named: 1\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"Proxy-Authenticate: Basic\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"Set-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\n"
        b"X-Kept: yes\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    async with upstream:
        gateway = await gateway_factory(f"http://127.0.0.1:{port}")
        async with http.get(server_url(gateway, "/x")) as resp:
            body = await resp.read()
            names = {k.lower() for k in resp.headers}
            cookies = resp.headers.getall("Set-Cookie")
            connection = resp.headers.get("Connection", "")
    assert body == b"hello"
    assert resp.headers["X-Kept"] == "yes"
    assert cookies == ["a=1", "b=2"]
    for hop in ("x-hop-named", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert hop not in names
    assert "x-hop-named" not in connection.lower()


async def test_upstream_chunked_response_is_relayed_chunked(gateway: RunningGateway) -> None:
    response = await raw_exchange(
        gateway, b"GET /bytes/300000 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert response.status == 200
    assert response.get_all("Transfer-Encoding") == ["chunked"]
    assert response.get_all("Content-Length") == []


async def test_upstream_content_length_is_kept(
    http: aiohttp.ClientSession, probe: TestServer, gateway: RunningGateway
) -> None:
    direct, proxied = await _both(http, probe, gateway, "GET", "/bytes/300000?length=1")
    assert proxied == direct
    assert ("content-length", "300000") in proxied[1]
    assert proxied[2] == pattern(300000)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Range": "bytes=0-99"}, 206),
        ({"Range": "bytes=1000-"}, 206),
        ({"Range": "bytes=-500"}, 206),
        ({"Range": "bytes=99999999-"}, 416),
        ({}, 200),
    ],
)
async def test_range_requests_give_the_same_status_headers_and_bytes(
    http: aiohttp.ClientSession,
    probe: TestServer,
    gateway: RunningGateway,
    headers: dict[str, str],
    status: int,
) -> None:
    direct, proxied = await _both(http, probe, gateway, "GET", "/media", headers=headers)
    assert direct[0] == status
    assert proxied == direct


async def test_head_gives_the_same_headers_and_no_body(
    http: aiohttp.ClientSession, probe: TestServer, gateway: RunningGateway
) -> None:
    direct, proxied = await _both(http, probe, gateway, "HEAD", "/media")
    assert proxied == direct
    assert proxied[2] == b""
    assert dict(proxied[1])["content-length"] == str(3 * 1024 * 1024 + 123)


async def test_conditional_request_gives_304(
    http: aiohttp.ClientSession, probe: TestServer, gateway: RunningGateway
) -> None:
    async with http.get(server_url(probe, "/media")) as resp:
        etag = resp.headers["ETag"]
    direct, proxied = await _both(http, probe, gateway, "GET", "/media", headers={"If-None-Match": etag})
    assert direct[0] == 304
    assert proxied == direct


@pytest.mark.parametrize("code", [204, 304, 400, 401, 403, 404, 500, 503])
async def test_status_codes_pass_unchanged(
    http: aiohttp.ClientSession, probe: TestServer, gateway: RunningGateway, code: int
) -> None:
    direct, proxied = await _both(http, probe, gateway, "POST", f"/status/{code}")
    assert direct[0] == code
    assert proxied == direct


async def test_redirects_are_passed_on_not_followed(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    async with http.get(server_url(gateway, "/redirect"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/echo?redirected=1"
    assert probe_state.requests == []


async def test_content_encoding_passes_untouched(
    http: aiohttp.ClientSession, probe: TestServer, gateway: RunningGateway
) -> None:
    direct, proxied = await _both(http, probe, gateway, "GET", "/gzip", headers={"Accept-Encoding": "gzip"})
    assert proxied == direct
    assert ("content-encoding", "gzip") in proxied[1]
    assert proxied[2][:2] == b"\x1f\x8b"


async def test_gzip_request_body_is_not_decompressed(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    body = b"\x1f\x8b\x08\x00not-really-gzip"
    async with http.post(
        server_url(gateway, "/echo"), data=body, headers={"Content-Encoding": "gzip"}
    ) as resp:
        seen = await resp.json()
    assert seen["body_size"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_every_set_cookie_is_kept(
    http: aiohttp.ClientSession, probe: TestServer, gateway: RunningGateway
) -> None:
    direct, proxied = await _both(http, probe, gateway, "GET", "/cookies")
    assert proxied == direct
    assert [v for k, v in proxied[1] if k == "set-cookie"] == [
        "a=1; Path=/; HttpOnly",
        "b=2; Path=/",
        "c=3; Path=/web",
    ]


async def test_one_users_cookies_never_reach_another_user(
    http: aiohttp.ClientSession, gateway: RunningGateway
) -> None:
    async with http.get(server_url(gateway, "/cookies")) as resp:
        assert len(resp.headers.getall("Set-Cookie")) == 3
    async with aiohttp.ClientSession() as other_user, other_user.get(server_url(gateway, "/cookies")) as resp:
        seen = await resp.json()
    assert seen["cookie_header"] is None


async def _upload(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(piece)
        yield piece


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
async def test_large_uploads_stream_through_without_a_size_cap(
    http: aiohttp.ClientSession, gateway: RunningGateway, with_length: bool
) -> None:
    size = 48 * 1024 * 1024 + 7  # far above aiohttp's 1 MiB client_max_size and ASP.NET's 30 MB
    headers = {"Content-Length": str(size)} if with_length else {}
    async with http.post(server_url(gateway, "/echo/upload"), data=_upload(size), headers=headers) as resp:
        assert resp.status == 200
        seen = await resp.json()
    assert seen["body_size"] == size
    assert seen["body_sha256"] == hashlib.sha256(pattern(size)).hexdigest()
    names = {k.lower(): v for k, v in seen["headers"]}
    if with_length:
        assert names["content-length"] == str(size)
    else:
        assert names["transfer-encoding"] == "chunked"


async def test_expect_100_continue_upload_works(http: aiohttp.ClientSession, gateway: RunningGateway) -> None:
    async with http.post(server_url(gateway, "/echo"), data=b"x" * 1000, expect100=True) as resp:
        assert resp.status == 200
        assert (await resp.json())["body_size"] == 1000


async def test_forwarded_headers_are_set_for_an_untrusted_client(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    request = (
        b"GET /echo HTTP/1.1\r\nHost: jf.example.org\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"
        b"X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n"
    )
    await raw_exchange(gateway, request)
    seen = {k.lower(): v for k, v in probe_state.requests[-1]["headers"]}
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "jf.example.org"
    assert "x-real-ip" not in seen
    assert "forwarded" not in seen


async def test_forwarded_headers_from_a_trusted_proxy_are_extended(
    probe: TestServer, gateway_factory: GatewayFactory, probe_state: ProbeState
) -> None:
    import ipaddress

    gateway = await gateway_factory(server_url(probe), trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    request = (
        b"GET /echo HTTP/1.1\r\nHost: internal:8097\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 10.0.0.2\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: jf.example.org\r\nConnection: close\r\n\r\n"
    )
    await raw_exchange(gateway, request)
    seen = {k.lower(): v for k, v in probe_state.requests[-1]["headers"]}
    assert seen["x-forwarded-for"] == "203.0.113.9, 10.0.0.2, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "jf.example.org"


async def test_unreachable_jellyfin_gives_502_with_a_plain_reason(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(f"http://127.0.0.1:{free_port()}", jellyfin_connect_timeout=2.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get(server_url(gateway, "/System/Info/Public")) as resp:
        text = await resp.text()
    assert resp.status == 502
    assert resp.content_type == "text/plain"
    assert "Jellyfin is unreachable" in text
    assert loop.time() - started < 2.0


async def test_silent_jellyfin_gives_504(
    http: aiohttp.ClientSession, probe: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(probe), jellyfin_read_timeout=0.3)
    async with http.get(server_url(gateway, "/slow-headers?delay=3")) as resp:
        text = await resp.text()
    assert resp.status == 504
    assert "did not answer in time" in text


async def test_jellyfin_stalling_mid_body_truncates_the_response(
    http: aiohttp.ClientSession, probe: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(probe), jellyfin_read_timeout=0.3)
    async with http.get(server_url(gateway, "/stall-body?delay=3")) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_a_client_leaving_mid_stream_is_not_an_error_and_releases_jellyfin(
    gateway: RunningGateway, probe_state: ProbeState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(b"GET /endless HTTP/1.1\r\nHost: gw\r\n\r\n")
    await writer.drain()
    received = 0
    while received < 8 * len(CHUNK):
        received += len(await reader.read(1 << 20))
    writer.transport.abort()
    await wait_until(lambda: bool(probe_state.stream_ends))
    assert probe_state.stream_ends == ["client left"]
    gateway_records = [
        r for r in caplog.records if r.name.startswith(("gateway", "aiohttp.server", "aiohttp.web"))
    ]
    assert not [r for r in gateway_records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in gateway_records
    ]
    assert all(r.exc_info is None for r in gateway_records)


async def test_the_gateway_keeps_one_pooled_connection_to_jellyfin(
    http: aiohttp.ClientSession, gateway: RunningGateway, probe_state: ProbeState
) -> None:
    for _ in range(20):
        async with http.get(server_url(gateway, "/echo")) as resp:
            await resp.read()
    # 20 requests one after another travel over a single kept-alive upstream connection.
    assert len(probe_state.requests) == 20
    assert len({r["peer_port"] for r in probe_state.requests}) == 1


async def test_absolute_form_targets_are_forwarded_as_origin_form(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    await raw_exchange(
        gateway,
        b"GET http://jf.example.org/echo/abs?x=%2F HTTP/1.1\r\n"
        b"Host: jf.example.org\r\nConnection: close\r\n\r\n",
    )
    assert probe_state.requests[-1]["raw_path"] == "/echo/abs?x=%2F"


def test_upstream_url_keeps_the_target_encoded() -> None:
    from gateway.proxy import upstream_url

    url = upstream_url(URL("http://jf:8096"), "/a%2Fb?c=d+e&c=&x")
    assert url.raw_path_qs == "/a%2Fb?c=d+e&c=&x"
