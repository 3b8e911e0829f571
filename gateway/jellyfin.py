"""A thin client of the Jellyfin API calls the gateway makes itself (not the proxied traffic).

It knows how Jellyfin wants to be asked. A caller's token goes back to Jellyfin in the form the
caller used (same header and scheme, or same query key), so Jellyfin, not the gateway, decides
whether that form counts: with EnableLegacyAuthorization off (the default from 12.0) it refuses
X-Emby-Token, ``?api_key=`` and the rest for the torrent API exactly as for its own endpoints. The
gateway's own API key travels as ``Authorization: MediaBrowser Token="..."``, the form every version
accepts. Failures to reach Jellyfin become one error type with a reason a person can act on and that
does not say where Jellyfin is; nothing here knows about aiohttp.web.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .upstream import MAX_REPLY_BYTES, ReplyTooLarge, connect_failure, read_capped

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
class TokenForm:
    """Where a caller put its token: a header (with the scheme, for Authorization and
    X-Emby-Authorization) or a query key. Names are in their canonical spelling; Jellyfin ignores
    case in all of them, so two spellings of one form get the same answer."""

    name: str
    scheme: str | None = None
    in_query: bool = False


#: The form every Jellyfin version accepts; the gateway's own API key always uses it.
MEDIABROWSER = TokenForm("Authorization", "MediaBrowser")


@dataclass(frozen=True)
class Credentials:
    """A caller's token and how it was sent, so Jellyfin can be asked in that same form."""

    token: str = field(repr=False)
    form: TokenForm = MEDIABROWSER
    identity: ClientIdentity = field(default_factory=ClientIdentity)
    #: The caller's Authorization / X-Emby-Authorization value as sent, when ``form`` is one of
    #: those: re-sent verbatim, it is judged exactly as the caller's own request would be.
    header_value: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any = None


def _quoted_fields(token: str | None, identity: ClientIdentity | None) -> list[str]:
    fields: list[tuple[str, str | None]] = []
    if identity is not None:
        fields = [
            ("Client", identity.client),
            ("Device", identity.device),
            ("DeviceId", identity.device_id),
            ("Version", identity.version),
        ]
    fields.append(("Token", token))
    return [f'{key}="{quote(value, safe="")}"' for key, value in fields if value]


def authorization_header(
    token: str, identity: ClientIdentity | None = None, *, scheme: str = "MediaBrowser"
) -> str:
    """``MediaBrowser Client="..", Device="..", DeviceId="..", Version="..", Token=".."``.

    Values are percent-encoded, which Jellyfin undoes (it URL-decodes every value), so quotes and
    commas in a device name cannot break the header.
    """
    return f"{scheme} " + ", ".join(_quoted_fields(token, identity))


def _identity_header(identity: ClientIdentity) -> str | None:
    """The identity alone, for a token that travels elsewhere (no Token: its own form must decide)."""
    fields = _quoted_fields(None, identity)
    return "MediaBrowser " + ", ".join(fields) if fields else None


def _presented(credentials: Credentials) -> tuple[dict[str, str], str]:
    """Headers and raw query that carry the token in the caller's form, with the caller's identity."""
    form = credentials.form
    if form.scheme is not None:
        value = credentials.header_value or authorization_header(
            credentials.token, credentials.identity, scheme=form.scheme
        )
        return {form.name: value}, ""
    headers: dict[str, str] = {}
    identity = _identity_header(credentials.identity)
    if identity is not None:
        headers["Authorization"] = identity
    if form.in_query:
        return headers, f"{quote(form.name, safe='')}={quote(credentials.token, safe='')}"
    headers[form.name] = credentials.token
    return headers, ""


class JellyfinClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: URL,
        *,
        connect_timeout: float,
        read_timeout: float = API_TIMEOUT,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=min(API_TIMEOUT, read_timeout), sock_connect=connect_timeout
        )
        # BaseUrl included: API calls go to http://host:8096/jellyfin/Users/Me.
        self._base = str(base_url).rstrip("/")
        self._max_reply_bytes = max_reply_bytes

    async def _request(
        self,
        method: str,
        path: str,
        auth: str | Credentials | None,
        *,
        extra_headers: ExtraHeaders = None,
        payload: Any = None,
    ) -> Answer:
        """One call; a 200 JSON body is parsed. Failing to reach Jellyfin raises JellyfinUnavailable.

        ``auth`` is the gateway's own API key (a string) or a caller's credentials.
        """
        headers = {**(extra_headers or {}), "Accept": "application/json"}
        if payload is not None:
            # Explicit: the shared proxy session adds no headers of its own (Jellyfin answers 415 without).
            headers["Content-Type"] = "application/json"
        url = URL(self._base + path)
        if auth is not None:
            token_headers, raw_query = _presented(Credentials(auth) if isinstance(auth, str) else auth)
            headers.update(token_headers)
            if raw_query:
                url = URL(f"{url}?{raw_query}", encoded=True)
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                json=payload,
                allow_redirects=False,
                auto_decompress=True,
                timeout=self._timeout,
            ) as response:
                raw = await read_capped(response, self._max_reply_bytes)
                body: Any = None
                if response.status == 200 and raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise JellyfinUnavailable(
                            502, f"Jellyfin answered {path} with something that is not JSON"
                        ) from None
                return Answer(response.status, body)
        except ReplyTooLarge as exc:
            raise JellyfinUnavailable(502, f"Jellyfin answered {path} with {exc}") from None
        except aiohttp.ConnectionTimeoutError:
            raise JellyfinUnavailable(502, "Jellyfin did not accept the connection in time") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise JellyfinUnavailable(504, f"Jellyfin did not answer {path} in time") from None
        except aiohttp.ClientConnectorError as exc:
            # The reason goes to anonymous clients; where Jellyfin is goes to the log only.
            logger.warning("cannot reach Jellyfin at %s for %s: %s", self._base, path, exc)
            raise JellyfinUnavailable(502, f"Jellyfin is unreachable ({connect_failure(exc)})") from None
        except aiohttp.ClientError as exc:
            raise JellyfinUnavailable(502, f"Jellyfin broke off {path} ({type(exc).__name__})") from None

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

    async def current_user(self, credentials: Credentials, *, extra_headers: ExtraHeaders = None) -> Answer:
        """``GET /Users/Me``: 200 with the UserDto, 400 for an API key (no user), 401 for a bad token."""
        return await self._request("GET", "/Users/Me", credentials, extra_headers=extra_headers)

    async def auth_providers(self, credentials: Credentials, *, extra_headers: ExtraHeaders = None) -> Answer:
        """``GET /Auth/Providers``: elevated-only and harmless, so its status says "admin or not".

        (``/Auth/Keys`` would tell the same but hands over every API key.)
        """
        return await self._request("GET", "/Auth/Providers", credentials, extra_headers=extra_headers)

    async def virtual_folders(self, auth: str | Credentials, *, extra_headers: ExtraHeaders = None) -> Answer:
        """``GET /Library/VirtualFolders``: the libraries with the folders (``Locations``) of each.

        Asked with the gateway's API key (a string) or with a caller's credentials in their form.
        """
        return await self._request("GET", "/Library/VirtualFolders", auth, extra_headers=extra_headers)
