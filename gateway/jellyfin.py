"""A thin client of the Jellyfin API calls the gateway makes itself (not the proxied traffic).

It knows how Jellyfin wants to be asked: the token always travels as
``Authorization: MediaBrowser Token="..."``, the one form every Jellyfin version accepts (12.0 drops
the legacy headers and ``api_key``), with the caller's Client/Device/DeviceId/Version so Jellyfin's
session bookkeeping sees the real device. Failures to reach Jellyfin become one error type with a
reason a person can act on; nothing here knows about aiohttp.web.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

logger = logging.getLogger(__name__)

#: How long one API call may take in all; Jellyfin answers these from memory.
API_TIMEOUT = 10.0


class JellyfinUnavailable(Exception):
    """Jellyfin could not be asked: ``status`` is the gateway status to answer with (502 or 504)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


ExtraHeaders = Mapping[str, str] | None


@dataclass(frozen=True)
class ClientIdentity:
    """What a Jellyfin client says about itself in its Authorization header."""

    client: str | None = None
    device: str | None = None
    device_id: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any = None


def authorization_header(token: str, identity: ClientIdentity | None = None) -> str:
    """``MediaBrowser Client="..", Device="..", DeviceId="..", Version="..", Token=".."``.

    Values are percent-encoded, which Jellyfin undoes (it URL-decodes every value), so quotes and
    commas in a device name cannot break the header.
    """
    fields: list[tuple[str, str | None]] = []
    if identity is not None:
        fields = [
            ("Client", identity.client),
            ("Device", identity.device),
            ("DeviceId", identity.device_id),
            ("Version", identity.version),
        ]
    fields.append(("Token", token))
    return "MediaBrowser " + ", ".join(f'{key}="{quote(value, safe="")}"' for key, value in fields if value)


class JellyfinClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: URL,
        *,
        connect_timeout: float,
        read_timeout: float = API_TIMEOUT,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=min(API_TIMEOUT, read_timeout), sock_connect=connect_timeout
        )
        # BaseUrl included: API calls go to http://host:8096/jellyfin/Users/Me.
        self._base = str(base_url).rstrip("/")

    async def _request(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        identity: ClientIdentity | None = None,
        extra_headers: ExtraHeaders = None,
        payload: Any = None,
    ) -> Answer:
        """One call; a 200 JSON body is parsed. Failing to reach Jellyfin raises JellyfinUnavailable."""
        headers = {**(extra_headers or {}), "Accept": "application/json"}
        if payload is not None:
            # Explicit: the shared proxy session adds no headers of its own (Jellyfin answers 415 without).
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = authorization_header(token, identity)
        try:
            async with self._session.request(
                method,
                URL(self._base + path),
                headers=headers,
                json=payload,
                allow_redirects=False,
                auto_decompress=True,
                timeout=self._timeout,
            ) as response:
                body: Any = None
                if response.status == 200:
                    try:
                        body = await response.json(content_type=None)
                    except ValueError:
                        raise JellyfinUnavailable(
                            502, f"Jellyfin answered {path} with something that is not JSON"
                        ) from None
                else:
                    await response.read()
                return Answer(response.status, body)
        except aiohttp.ConnectionTimeoutError:
            raise JellyfinUnavailable(502, "Jellyfin did not accept the connection in time") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise JellyfinUnavailable(504, f"Jellyfin did not answer {path} in time") from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.strerror or type(exc.os_error).__name__
            raise JellyfinUnavailable(502, f"Jellyfin is unreachable ({reason})") from None
        except aiohttp.ClientError as exc:
            raise JellyfinUnavailable(502, f"Jellyfin broke off {path} ({type(exc).__name__})") from None

    async def _get(
        self, path: str, token: str, *, identity: ClientIdentity | None, extra_headers: ExtraHeaders
    ) -> Answer:
        return await self._request("GET", path, token, identity=identity, extra_headers=extra_headers)

    async def media_updated(self, api_key: str, path: str) -> int:
        """``POST /Library/Media/Updated``: Jellyfin scans just this path (204)."""
        updates = {"Updates": [{"Path": path, "UpdateType": "Created"}]}
        return (await self._request("POST", "/Library/Media/Updated", api_key, payload=updates)).status

    async def refresh_library(self, api_key: str) -> int:
        """``POST /Library/Refresh``: a full scan, queued at once (204)."""
        return (await self._request("POST", "/Library/Refresh", api_key)).status

    async def public_info(self) -> Answer:
        """``GET /System/Info/Public`` (anonymous): is Jellyfin up, and which version."""
        return await self._request("GET", "/System/Info/Public", None)

    async def current_user(
        self,
        token: str,
        *,
        identity: ClientIdentity | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """``GET /Users/Me``: 200 with the UserDto, 400 for an API key (no user), 401 for a bad token."""
        return await self._get("/Users/Me", token, identity=identity, extra_headers=extra_headers)

    async def auth_providers(
        self,
        token: str,
        *,
        identity: ClientIdentity | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """``GET /Auth/Providers``: elevated-only and harmless, so its status says "admin or not".

        (``/Auth/Keys`` would tell the same but hands over every API key.)
        """
        return await self._get("/Auth/Providers", token, identity=identity, extra_headers=extra_headers)

    async def virtual_folders(
        self, token: str, *, identity: ClientIdentity | None = None, extra_headers: ExtraHeaders = None
    ) -> Answer:
        """``GET /Library/VirtualFolders``: the libraries with the folders (``Locations``) of each."""
        return await self._get(
            "/Library/VirtualFolders", token, identity=identity, extra_headers=extra_headers
        )
