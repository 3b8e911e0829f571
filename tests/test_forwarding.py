"""Pure helpers of the proxy: hop-by-hop filtering and X-Forwarded-* rules."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict

from gateway.forwarding import is_trusted, set_forwarding_headers
from gateway.proxy import end_to_end_headers

LAN = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def test_hop_by_hop_headers_and_those_connection_names_are_dropped() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Private"),
            ("Connection", "Upgrade"),
            ("X-Private", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Anything", "y"),
            ("TE", "trailers"),
            ("Trailer", "X-Sum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Content-Length", "3"),
        ]
    )
    kept = end_to_end_headers(headers)
    assert list(kept.items()) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Length", "3")]


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("10.1.2.3", True),
        ("::1", True),
        ("::ffff:10.0.0.7", True),
        ("192.168.1.1", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_only_peers_inside_trusted_networks_are_trusted(peer: str | None, trusted: bool) -> None:
    assert is_trusted(peer, LAN) is trusted


def test_an_untrusted_peer_cannot_forge_forwarding_headers() -> None:
    headers = CIMultiDict(
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Real-IP", "1.2.3.4"),
            ("Forwarded", "for=x"),
        ]
    )
    set_forwarding_headers(headers, peer="192.0.2.10", scheme="http", host="jf.example:8097", trusted=False)
    assert dict(headers) == {
        "X-Forwarded-For": "192.0.2.10",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "jf.example:8097",
    }


def test_a_trusted_proxy_chain_is_extended() -> None:
    headers = CIMultiDict(
        [
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "media.example.org"),
        ]
    )
    set_forwarding_headers(headers, peer="10.0.0.3", scheme="http", host="gateway:8097", trusted=True)
    assert headers["X-Forwarded-For"] == "198.51.100.1, 10.0.0.2, 10.0.0.3"
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Host"] == "media.example.org"
