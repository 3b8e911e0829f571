"""X-Forwarded-* on the way to Jellyfin: believed only from trusted proxies, never forgeable.

Jellyfin decides LAN versus remote access (and so who may connect, and at what bitrate) from these
headers once the gateway is listed in its Known proxies, so a client must not be able to set them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web
from multidict import CIMultiDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDING = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-IP")


def is_trusted(peer: str | None, trusted: Iterable[IPNetwork]) -> bool:
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def set_forwarding_headers(
    headers: CIMultiDict[str],
    *,
    peer: str | None,
    scheme: str,
    host: str | None,
    trusted: bool,
) -> None:
    """Append the peer to X-Forwarded-For and set -Proto/-Host, believing the client's only if trusted."""
    prior = ", ".join(headers.getall("X-Forwarded-For", ())) if trusted else ""
    proto = headers.get("X-Forwarded-Proto") if trusted else None
    forwarded_host = headers.get("X-Forwarded-Host") if trusted else None
    if not trusted:
        for name in _FORWARDING:
            headers.popall(name, None)
    if peer:
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = proto or scheme
    if forwarded_host or host:
        headers["X-Forwarded-Host"] = forwarded_host or host or ""


def forwarding_headers(request: web.BaseRequest, trusted: tuple[IPNetwork, ...]) -> CIMultiDict[str]:
    """The forwarding headers to send Jellyfin for ``request``, computed from its headers as received.

    The one source for proxied requests and for the gateway's own calls. It never reads a copy
    already filtered by the client's ``Connection`` header: naming X-Forwarded-For there would
    otherwise erase the chain a trusted proxy sent.
    """
    headers: CIMultiDict[str] = CIMultiDict(
        (name, value) for name, value in request.headers.items() if name.lower() in _FORWARDING_LOWER
    )
    peer = request.remote
    set_forwarding_headers(
        headers,
        peer=peer,
        scheme=request.scheme,
        host=request.headers.get("Host"),
        trusted=bool(trusted) and is_trusted(peer, trusted),
    )
    return headers


def apply_forwarding(
    headers: CIMultiDict[str], request: web.BaseRequest, trusted: tuple[IPNetwork, ...]
) -> None:
    """Give ``headers`` (the outgoing copy of the request's) exactly :func:`forwarding_headers`."""
    for name in _FORWARDING:
        headers.popall(name, None)
    headers.extend(forwarding_headers(request, trusted))


_FORWARDING_LOWER = frozenset(name.lower() for name in _FORWARDING)
