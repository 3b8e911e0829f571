"""Shared rules for talking to upstreams: how a failure is described, and how much is read.

Reasons built here go to anonymous clients, so they name the cause ("connection refused") but never
an address or port; callers log the details. Replies the gateway parses itself are read with a cap,
so a broken or hostile upstream cannot make the gateway buffer without limit.
"""

from __future__ import annotations

import os
import socket

import aiohttp

#: Most bytes of an upstream reply the gateway reads into memory to parse (qBittorrent's torrent
#: list with thousands of torrents is a few MiB).
MAX_REPLY_BYTES = 64 * 1024 * 1024


class ReplyTooLarge(ValueError):
    """An upstream reply was larger than the gateway is willing to hold."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {_size(limit)}")
        self.limit = limit


def _size(count: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, in words that do not reveal where the upstream is."""
    os_error = exc.os_error
    if isinstance(os_error, socket.gaierror):
        return "its host name does not resolve"
    if os_error.errno:
        return os.strerror(os_error.errno).lower()
    return type(os_error).__name__


async def read_capped(response: aiohttp.ClientResponse, limit: int = MAX_REPLY_BYTES) -> bytes:
    """The whole body, or ReplyTooLarge as soon as it is known to exceed ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        raise ReplyTooLarge(limit)
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise ReplyTooLarge(limit)
    return bytes(body)
