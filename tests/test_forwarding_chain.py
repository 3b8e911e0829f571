"""The forwarded-address chain of a trusted proxy survives a client that names it in Connection.

Hop-by-hop rules let a client ask for any header to be dropped; applied to X-Forwarded-For and the
like, that would let a client behind a trusted proxy erase the address Jellyfin uses to tell LAN
from remote. The forwarding headers are therefore computed from the request as received.
"""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import GatewayFactory, raw_exchange, server_url
from tests.jellyfin_standin import StandinState
from tests.probe import ProbeState

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def _seen(probe_state: ProbeState) -> dict[str, str]:
    return {name.lower(): value for name, value in probe_state.requests[-1]["headers"]}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("X-Forwarded-For", "203.0.113.7", "203.0.113.7, 127.0.0.1"),
        ("X-Forwarded-Proto", "https", "https"),
        ("X-Forwarded-Host", "jf.example.org", "jf.example.org"),
        ("Forwarded", "for=203.0.113.7;proto=https", "for=203.0.113.7;proto=https"),
        ("X-Real-IP", "203.0.113.7", "203.0.113.7"),
    ],
)
async def test_a_client_naming_a_forwarding_header_in_connection_cannot_erase_a_trusted_chain(
    probe: TestServer,
    gateway_factory: GatewayFactory,
    probe_state: ProbeState,
    name: str,
    value: str,
    expected: str,
) -> None:
    gateway = await gateway_factory(server_url(probe), trusted_proxies=LOOPBACK)
    request = (
        f"GET /echo HTTP/1.1\r\nHost: internal:8097\r\n{name}: {value}\r\nConnection: close, {name}\r\n\r\n"
    ).encode()
    assert (await raw_exchange(gateway, request)).status == 200
    assert _seen(probe_state)[name.lower()] == expected


async def test_other_headers_named_in_connection_are_still_dropped(
    probe: TestServer, gateway_factory: GatewayFactory, probe_state: ProbeState
) -> None:
    gateway = await gateway_factory(server_url(probe), trusted_proxies=LOOPBACK)
    request = (
        b"GET /echo HTTP/1.1\r\nHost: internal:8097\r\nX-Private: 1\r\nX-Forwarded-For: 203.0.113.7\r\n"
        b"Connection: close, X-Private, X-Forwarded-For\r\n\r\n"
    )
    await raw_exchange(gateway, request)
    seen = _seen(probe_state)
    assert "x-private" not in seen
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"


async def test_an_untrusted_clients_values_are_still_replaced_whatever_connection_says(
    probe: TestServer, gateway_factory: GatewayFactory, probe_state: ProbeState
) -> None:
    gateway = await gateway_factory(server_url(probe))
    request = (
        b"GET /echo HTTP/1.1\r\nHost: jf.example.org\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"X-Forwarded-Proto: https\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"
        b"Connection: close, X-Forwarded-For, X-Forwarded-Proto, X-Real-IP, Forwarded\r\n\r\n"
    )
    await raw_exchange(gateway, request)
    seen = _seen(probe_state)
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "jf.example.org"
    assert "x-real-ip" not in seen
    assert "forwarded" not in seen


async def test_the_gateways_own_calls_to_jellyfin_carry_the_same_chain(
    jellyfin: TestServer, gateway_factory: GatewayFactory, standin_state: StandinState
) -> None:
    gateway = await gateway_factory(server_url(jellyfin), trusted_proxies=LOOPBACK)
    token = standin_state.issue_token(standin_state.user_by_name("admin"))
    request = (
        f"GET /torrent/Test1 HTTP/1.1\r\nHost: internal:8097\r\n"
        f'Authorization: MediaBrowser Token="{token}"\r\nX-Forwarded-For: 203.0.113.7\r\n'
        f"Connection: close, X-Forwarded-For\r\n\r\n"
    ).encode()
    assert (await raw_exchange(gateway, request)).status == 200
    own_calls = [r for r in standin_state.requests if r.path_qs.startswith("/Users/Me")]
    assert own_calls
    assert own_calls[-1].headers.getall("X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
