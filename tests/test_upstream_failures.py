"""Upstream trouble under abuse: error bodies reveal nothing internal, pools cannot be starved, and
replies the gateway parses itself are read with a cap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.apibay import ApibayClient
from gateway.app import PROXY_CONNECTIONS
from gateway.qbittorrent import QbittorrentClient
from gateway.upstream import Failure, ReplyTooLarge, Upstream, UpstreamError
from tests.conftest import GatewayFactory, RunningGateway, ServerFactory, free_port, server_url
from tests.jellyfin_standin import ROUTES, Policy, RequestContext, StandinState, create_standin, route

MiB = 1024 * 1024


def _admin(standin_state: StandinState) -> dict[str, str]:
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    return {"Authorization": f'MediaBrowser Token="{token}"'}


def _port_of(url: URL) -> int:
    assert url.port is not None
    return url.port


def _warned_about(caplog: pytest.LogCaptureFixture, port: int) -> bool:
    """The gateway log names the address the client was not told about."""
    return any(
        record.levelno == logging.WARNING and f"127.0.0.1:{port}" in record.getMessage()
        for record in caplog.records
    )


# --- error bodies ---------------------------------------------------------------------------------


async def test_a_proxied_request_to_a_closed_port_says_unreachable_but_not_where(
    http: aiohttp.ClientSession, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    gateway = await gateway_factory(f"http://127.0.0.1:{port}")
    async with http.get(server_url(gateway, "/System/Info/Public")) as resp:
        text = await resp.text()
    assert resp.status == 502
    assert text == "502 Jellyfin is unreachable (connection refused)\n"
    assert "127.0.0.1" not in text
    assert str(port) not in text
    assert _warned_about(caplog, port)


async def test_a_websocket_upgrade_to_a_closed_port_says_unreachable_but_not_where(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    gateway = await gateway_factory(f"http://127.0.0.1:{port}")
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(
        b"GET /socket HTTP/1.1\r\nHost: jf\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    body = (await reader.readexactly(length)).decode()
    writer.close()
    assert head.startswith("HTTP/1.1 502")
    assert "unreachable (connection refused)" in body
    assert "127.0.0.1" not in body
    assert str(port) not in body
    assert _warned_about(caplog, port)


@pytest.mark.parametrize(
    ("setting", "path", "reason"),
    [
        ("qbittorrent_url", "/torrent/progress", "qBittorrent is unreachable (connection refused)"),
        ("apibay_url", "/torrent/search?q=x", "apibay is unreachable (connection refused)"),
    ],
    ids=["qbittorrent", "apibay"],
)
async def test_torrent_calls_to_a_closed_upstream_say_unreachable_but_not_where(
    http: aiohttp.ClientSession,
    jellyfin_gateway: RunningGateway,
    standin_state: StandinState,
    caplog: pytest.LogCaptureFixture,
    setting: str,
    path: str,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING)
    port = _port_of(getattr(jellyfin_gateway.settings, setting))  # a closed port (gateway_factory)
    async with http.get(server_url(jellyfin_gateway, path), headers=_admin(standin_state)) as resp:
        body = await resp.json()
    assert resp.status == 500
    assert body == {"error": reason}
    assert _warned_about(caplog, port)


# --- the one mapping of transport failures -------------------------------------------------------

_CONNECTION = ConnectionKey("10.9.8.7", 4321, False, True, None, None, None)


@pytest.mark.parametrize(
    ("upstream", "raised", "kind", "reason"),
    [
        (
            Upstream("Jellyfin", "http://10.9.8.7:4321"),
            aiohttp.ClientConnectorError(_CONNECTION, ConnectionRefusedError(111, "Connection refused")),
            Failure.UNREACHABLE,
            "Jellyfin is unreachable (connection refused)",
        ),
        (
            Upstream("Jellyfin", "http://10.9.8.7:4321"),
            aiohttp.ConnectionTimeoutError(
                "Connection timeout to host http://10.9.8.7:4321/Users/Me?api_key=s3cret"
            ),
            Failure.UNREACHABLE,
            "Jellyfin did not accept the connection in time",
        ),
        (
            Upstream("Jellyfin", "http://10.9.8.7:4321"),
            aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
            Failure.TIMEOUT,
            "Jellyfin did not answer /Users/Me in time",
        ),
        (
            Upstream("qBittorrent", "http://10.9.8.7:4321", within=10, exchange="the exchange"),
            TimeoutError(),
            Failure.TIMEOUT,
            "qBittorrent did not answer within 10 s",
        ),
        (
            Upstream("qBittorrent", "http://10.9.8.7:4321", within=10, exchange="the exchange"),
            ReplyTooLarge(MiB),
            Failure.BAD_REPLY,
            "qBittorrent answered /Users/Me with more than 1 MiB",
        ),
        (
            Upstream("Jellyfin", "http://10.9.8.7:4321"),
            aiohttp.ServerDisconnectedError(),
            Failure.UNREACHABLE,
            "Jellyfin broke off /Users/Me (ServerDisconnectedError)",
        ),
        (
            Upstream("Jellyfin", "http://10.9.8.7:4321"),
            aiohttp.ClientPayloadError("Response payload is not completed"),
            Failure.BAD_REPLY,
            "Jellyfin broke off /Users/Me (ClientPayloadError)",
        ),
        (
            Upstream("Jellyfin", "http://10.9.8.7:4321"),
            ConnectionResetError(104, "Connection reset by peer"),
            Failure.UNREACHABLE,
            "Jellyfin broke off /Users/Me (ConnectionResetError)",
        ),
    ],
    ids=[
        "refused",
        "connect-timeout",
        "read-timeout",
        "total-timeout",
        "too-large",
        "dropped",
        "garbled",
        "reset",
    ],
)
async def test_every_transport_failure_becomes_one_error_with_a_kind_and_an_address_free_reason(
    caplog: pytest.LogCaptureFixture, upstream: Upstream, raised: Exception, kind: Failure, reason: str
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(UpstreamError) as caught:
        async with upstream.call("/Users/Me"):
            raise raised
    assert (caught.value.upstream, caught.value.kind, caught.value.reason) == (upstream.name, kind, reason)
    assert "10.9.8.7" not in caught.value.reason
    assert "4321" not in caught.value.reason
    [record] = [r for r in caplog.records if r.name == "gateway.upstream"]
    assert record.levelno == logging.WARNING
    assert "http://10.9.8.7:4321 /Users/Me" in record.getMessage()
    assert "s3cret" not in record.getMessage()  # an exception's own text may carry the full URL


async def test_an_error_raised_inside_the_exchange_passes_through_unchanged() -> None:
    upstream = Upstream("apibay", "https://apibay.test/q.php", within=10)
    own = upstream.error(Failure.BAD_REPLY, "apibay answered HTTP 522")
    with pytest.raises(UpstreamError) as caught:
        async with upstream.call():
            raise own
    assert caught.value is own


# --- pools ----------------------------------------------------------------------------------------


@dataclass
class HeldStandin:
    server: TestServer
    state: StandinState
    arrived: asyncio.Semaphore
    release: asyncio.Event


@pytest.fixture
async def held_standin(aiohttp_server: ServerFactory) -> HeldStandin:
    """The stand-in plus ``GET /Hold``, which answers only once ``release`` is set."""
    state = StandinState()
    arrived = asyncio.Semaphore(0)
    release = asyncio.Event()

    async def hold(ctx: RequestContext) -> web.StreamResponse:
        arrived.release()
        await release.wait()
        return web.Response(text="released")

    app = create_standin(state=state)
    app[ROUTES].append(route("GET", "/Hold", Policy.ANONYMOUS, hold))
    return HeldStandin(await aiohttp_server(app), state, arrived, release)


@pytest.mark.slow
async def test_an_admin_check_answers_quickly_while_every_proxied_connection_is_busy(
    http: aiohttp.ClientSession, held_standin: HeldStandin, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(held_standin.server))
    writers: list[asyncio.StreamWriter] = []

    async def hold_one() -> None:
        _, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writers.append(writer)
        writer.write(b"GET /Hold HTTP/1.1\r\nHost: jf\r\n\r\n")
        await writer.drain()

    held = PROXY_CONNECTIONS + 8  # the last few wait for a free connection, as a flood's would
    try:
        for start in range(0, held, 256):
            await asyncio.gather(*(hold_one() for _ in range(start, min(start + 256, held))))
        for _ in range(PROXY_CONNECTIONS):
            await asyncio.wait_for(held_standin.arrived.acquire(), 30)
        async with http.get(
            server_url(gateway, "/torrent/Test1"),
            headers=_admin(held_standin.state),
            # Below JellyfinClient's own 10 s: a starved pool times out here; a loaded machine does not.
            timeout=aiohttp.ClientTimeout(total=8),
        ) as resp:
            assert (resp.status, await resp.json()) == (200, "test 1 success")
    finally:
        held_standin.release.set()
        for writer in writers:
            writer.close()


# --- capped replies -------------------------------------------------------------------------------


@dataclass
class Oversized:
    """qBittorrent's API and apibay's q.php answering with a JSON array of ``size`` bytes, chunked."""

    url: URL
    size: int = 2 * MiB


@pytest.fixture
async def oversized(aiohttp_server: ServerFactory) -> Oversized:
    chunk = b'"' + b"x" * (MiB - 3) + b'",'

    async def huge_list(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b"[")
        for _ in range(upstream.size // MiB):
            await response.write(chunk)
        await response.write(b"0]")
        return response

    async def version(request: web.Request) -> web.Response:
        return web.Response(text="2.8.19")

    app = web.Application()
    app.router.add_get("/api/v2/app/webapiVersion", version)
    app.router.add_get("/api/v2/torrents/info", huge_list)
    app.router.add_get("/api/v2/sync/maindata", huge_list)
    app.router.add_get("/q.php", huge_list)
    server = await aiohttp_server(app)
    upstream = Oversized(server_url(server))
    return upstream


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def test_a_qbittorrent_reply_over_the_cap_is_a_clear_error(
    session: aiohttp.ClientSession, oversized: Oversized
) -> None:
    client = QbittorrentClient(session, oversized.url, username="", password="", max_reply=MiB)
    with pytest.raises(UpstreamError) as caught:
        await client.torrents()
    assert caught.value.reason == "qBittorrent answered torrents/info with more than 1 MiB"
    assert caught.value.kind is Failure.BAD_REPLY
    with pytest.raises(UpstreamError) as caught:
        await client.maindata(0)
    assert caught.value.reason == "qBittorrent answered sync/maindata with more than 1 MiB"


async def test_a_qbittorrent_reply_under_the_cap_is_read_whole(
    session: aiohttp.ClientSession, oversized: Oversized
) -> None:
    client = QbittorrentClient(session, oversized.url, username="", password="", max_reply=3 * MiB)
    assert await client.torrents() == []  # two strings and a number, no torrent objects
    assert await client.webapi_version() == (2, 8, 19)


async def test_an_apibay_reply_over_the_cap_is_a_clear_error(
    session: aiohttp.ClientSession, oversized: Oversized
) -> None:
    client = ApibayClient(session, oversized.url, max_reply=MiB)
    with pytest.raises(UpstreamError) as caught:
        await client.search("anything")
    assert caught.value.reason == "apibay answered with more than 1 MiB"


async def test_the_api_answers_a_qbittorrent_reply_over_64_mib_with_500_and_the_reason(
    http: aiohttp.ClientSession,
    jellyfin: TestServer,
    standin_state: StandinState,
    oversized: Oversized,
    gateway_factory: GatewayFactory,
) -> None:
    oversized.size = 65 * MiB
    gateway = await gateway_factory(server_url(jellyfin), qbittorrent_url=oversized.url)
    async with http.get(server_url(gateway, "/torrent/progress"), headers=_admin(standin_state)) as resp:
        body = await resp.json()
    assert resp.status == 500
    assert body == {"error": "qBittorrent answered torrents/info with more than 64 MiB"}
