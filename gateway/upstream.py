"""Shared rules for talking to upstreams: one error type, how failures are worded, how much is read.

Every call to Jellyfin, qBittorrent or apibay runs inside :meth:`Upstream.call`, the one place that
turns what aiohttp, the OS or a timeout raise into an :class:`UpstreamError`. Handlers, the admin
check, the health check and the watcher catch that one type and decide by its ``kind``. Reasons go
to anonymous clients, so they name the cause ("connection refused") but never an address or port;
the address goes to the log. Replies the gateway parses itself are read with a cap, so a broken or
hostile upstream cannot make the gateway buffer without limit.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import aiohttp

logger = logging.getLogger(__name__)

#: Most bytes of an upstream reply the gateway reads into memory to parse (qBittorrent's torrent
#: list with thousands of torrents is a few MiB).
MAX_REPLY_BYTES = 64 * 1024 * 1024

UpstreamName = Literal["Jellyfin", "qBittorrent", "apibay"]


class Failure(enum.Enum):
    """What kind of failure it was: callers decide by this (504 or 502, retry or fall back)."""

    #: No connection, or it broke: the request may never have been seen.
    UNREACHABLE = "unreachable"
    #: Connected, but no answer in time.
    TIMEOUT = "timeout"
    #: It answered, and said no (credentials, permissions, a torrent it would not add).
    REFUSED = "refused"
    #: It answered with something unusable (an unexpected status, not JSON, the wrong shape, too big).
    BAD_REPLY = "bad reply"


class UpstreamError(Exception):
    """An upstream could not do what was asked; ``reason`` says which and why, for a person."""

    def __init__(self, upstream: UpstreamName, kind: Failure, reason: str) -> None:
        super().__init__(reason)
        self.upstream: UpstreamName = upstream
        self.kind = kind
        self.reason = reason

    @property
    def answered(self) -> bool:
        """The upstream was reached and replied, so asking it the same way again will not help."""
        return self.kind in (Failure.REFUSED, Failure.BAD_REPLY)


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
    return os_failure(exc.os_error)


def os_failure(os_error: OSError) -> str:
    """Why a socket call failed, in the system's words and without an address."""
    if isinstance(os_error, socket.gaierror):
        return "its host name does not resolve"
    if os_error.errno:
        return os.strerror(os_error.errno).lower()
    return type(os_error).__name__


@dataclass(frozen=True)
class Upstream:
    """One upstream as its failures name it. ``address`` goes to the log only, never into a reason."""

    name: UpstreamName
    address: str
    #: A timeout reason says "within N s" when set; otherwise "did not answer <call> in time".
    within: float | None = None
    #: What a reply broken off midway is called; None: the call itself.
    exchange: str | None = None

    def error(self, kind: Failure, reason: str) -> UpstreamError:
        return UpstreamError(self.name, kind, reason)

    @asynccontextmanager
    async def call(self, call: str | None = None) -> AsyncIterator[None]:
        """Run one exchange (``call`` names it in reasons); its transport failures become UpstreamError.

        The single mapping from aiohttp, OS and timeout exceptions to the gateway's vocabulary. Each
        failure is logged once at WARNING with the address, which the reason never contains.
        """
        try:
            yield
        except ReplyTooLarge as exc:
            reason = f"{self.name} answered {_then(call)}with {exc}"
            raise self._failed(exc, call, Failure.BAD_REPLY, reason) from None
        except aiohttp.ConnectionTimeoutError as exc:  # before TimeoutError: it is one too
            reason = f"{self.name} did not accept the connection in time"
            raise self._failed(exc, call, Failure.UNREACHABLE, reason) from None
        except TimeoutError as exc:  # also aiohttp's ServerTimeoutError and SocketTimeoutError
            if self.within is not None:
                reason = f"{self.name} did not answer within {self.within:g} s"
            else:
                reason = f"{self.name} did not answer {_then(call)}in time"
            raise self._failed(exc, call, Failure.TIMEOUT, reason) from None
        except aiohttp.ClientConnectorError as exc:
            reason = f"{self.name} is unreachable ({connect_failure(exc)})"
            raise self._failed(exc, call, Failure.UNREACHABLE, reason) from None
        except aiohttp.TooManyRedirects as exc:
            reason = f"{self.name} redirected too many times"
            raise self._failed(exc, call, Failure.BAD_REPLY, reason) from None
        except (aiohttp.ClientError, OSError) as exc:
            # A dropped connection may never have reached the upstream; a garbled reply did.
            gone = isinstance(exc, aiohttp.ClientConnectionError | OSError)
            kind = Failure.UNREACHABLE if gone else Failure.BAD_REPLY
            what = self.exchange or call or "its answer"
            reason = f"{self.name} broke off {what} ({type(exc).__name__})"
            raise self._failed(exc, call, kind, reason) from None

    def _failed(self, exc: BaseException, call: str | None, kind: Failure, reason: str) -> UpstreamError:
        # Only a connect error's own text is logged: it names host and port but never the path or
        # query (which may carry a caller's token); the others' texts may contain the full URL.
        detail = type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorError):
            detail += f": {exc}"
        where = f"{self.address} {call}" if call else self.address
        logger.warning("%s [%s: %s]", reason, where, detail)
        return self.error(kind, reason)


def _then(call: str | None) -> str:
    return f"{call} " if call else ""


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
