"""Request heads are held to Kestrel's limits before any of them reaches Jellyfin or fills memory."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import (
    GatewayFactory,
    GatewayProcess,
    RunningGateway,
    raw_exchange,
    rss_kib,
    server_url,
)
from tests.probe import ProbeState

StartGateway = Callable[..., Awaitable[GatewayProcess]]


def _head(
    target: str = "/echo", headers: list[tuple[str, str]] | None = None, *, close: bool = True
) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: gateway.test"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(-1), timeout)


async def test_a_request_line_over_8_kib_is_answered_414_without_asking_jellyfin(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    reply = await raw_exchange(gateway, _head("/echo?q=" + "a" * 8200))
    assert reply.status == 414
    assert probe_state.requests == []


async def test_headers_over_32_kib_in_all_are_answered_431_without_asking_jellyfin(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    headers = [(f"X-Filler-{n}", "b" * 4000) for n in range(9)]
    reply = await raw_exchange(gateway, _head(headers=headers))
    assert reply.status == 431
    assert probe_state.requests == []


async def test_more_than_100_header_fields_are_answered_431(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    reply = await raw_exchange(gateway, _head(headers=[(f"X-F{n}", "v") for n in range(100)]))
    assert reply.status == 431
    assert probe_state.requests == []


async def test_one_header_of_64_kb_is_refused_at_once_not_buffered(gateway: RunningGateway) -> None:
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: gateway.test\r\nX-Big: " + b"c" * 65536)
    reply = await _read_until_closed(reader, 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 431 ")


async def test_what_real_clients_send_still_passes(gateway: RunningGateway, probe_state: ProbeState) -> None:
    """A 6 KiB query string, a 2 KiB Authorization header, 99 more fields, 31 KiB of headers."""
    authorization = 'MediaBrowser Client="x", Token="' + "t" * 2000 + '"'
    fields = [("Authorization", authorization)] + [(f"X-F{n}", "v" * 280) for n in range(96)]
    reply = await raw_exchange(gateway, _head("/echo?q=" + "a" * 6 * 1024, fields))
    assert reply.status == 200
    assert len(probe_state.requests) == 1
    received = dict(probe_state.requests[0]["headers"])
    assert received["Authorization"] == authorization


async def test_bodies_and_pipelined_requests_are_framed_so_the_next_head_is_checked(
    gateway: RunningGateway, probe_state: ProbeState
) -> None:
    body = b"x" * 100_000
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (b"a" * 5000, b"b" * 70_000)) + b"0\r\n\r\n"
    )
    stream = (
        b"POST /echo HTTP/1.1\r\nHost: g\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        + b"POST /echo HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
        + b"GET /echo HTTP/1.1\r\nHost: g\r\n\r\n"
        + b"GET /echo HTTP/1.1\r\nHost: g\r\nX-Big: "
        + b"d" * 40_000
        + b"\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(stream)
    replies = await _read_until_closed(reader, 10)
    writer.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", replies)
    assert statuses == [b"200", b"200", b"200", b"431"]
    assert [r["body_size"] for r in probe_state.requests] == [100_000, 75_000, 0]


async def test_a_head_that_stalls_is_closed_after_header_timeout(
    probe: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(probe), header_timeout=0.5)
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    started = time.monotonic()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: g\r\nX-Slow: ")
    reply = await _read_until_closed(reader, 5)
    writer.close()
    assert 0.4 < time.monotonic() - started < 2.5
    assert reply.startswith(b"HTTP/1.1 408 ")


async def test_sending_a_line_now_and_then_does_not_extend_the_header_timeout(
    probe: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(probe), header_timeout=0.6)
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    started = time.monotonic()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: g\r\n")

    async def trickle() -> None:
        while True:
            await asyncio.sleep(0.1)
            writer.write(b"X-A: b\r\n")

    task = asyncio.create_task(trickle())
    try:
        # The 408 may be lost to a reset: the client is still sending when the gateway closes.
        with contextlib.suppress(ConnectionResetError):
            await _read_until_closed(reader, 5)
    finally:
        task.cancel()
        writer.close()
    assert time.monotonic() - started < 2.5


async def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(
    probe: TestServer, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(server_url(probe), keepalive_timeout=0.5)
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(_head(close=False))
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    await _read_until_closed(reader, 5)
    writer.close()
    assert time.monotonic() - started < 2.5


async def test_a_refused_websocket_upgrade_closes_the_connection(
    jellyfin: TestServer, gateway_factory: GatewayFactory
) -> None:
    """The guard stops framing after an upgrade request, so the connection must not be reused."""
    gateway = await gateway_factory(server_url(jellyfin))
    request = (
        b"GET /socket HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(request)
    reply = await _read_until_closed(reader, 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 403 ")


@pytest.mark.slow
async def test_150_stalled_heads_cost_little_memory_are_closed_and_do_not_block_others(
    gateway_process: StartGateway, jellyfin: TestServer
) -> None:
    timeout = 4.0
    gw = await gateway_process({"JELLYFIN_URL": str(server_url(jellyfin)), "HEADER_TIMEOUT": str(timeout)})
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url / "System/Info/Public") as resp:  # warm up
            assert resp.status == 200
        before = rss_kib(gw.process.pid)
        head = b"GET /System/Info/Public HTTP/1.1\r\nHost: g\r\n" + b"".join(
            b"X-Pad-%d: %s\r\n" % (n, b"p" * 1000) for n in range(30)
        )
        connections = []
        started = time.monotonic()
        for _ in range(150):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(head)
            connections.append((reader, writer))
        await asyncio.gather(*(writer.drain() for _, writer in connections))

        answered = time.monotonic()
        async with http.get(gw.url / "System/Info/Public") as resp:
            assert resp.status == 200
        assert time.monotonic() - answered < 2.0
        peak = rss_kib(gw.process.pid)

        async def closed(reader: asyncio.StreamReader) -> float:
            while await reader.read(65536):
                pass
            return time.monotonic() - started

        closed_after = await asyncio.wait_for(
            asyncio.gather(*(closed(reader) for reader, _ in connections)), timeout + 10
        )
        for _, writer in connections:
            writer.close()
    assert (peak - before) / 1024 <= 48, f"RSS grew {(peak - before) / 1024:.1f} MiB"
    assert max(closed_after) <= timeout + 5
