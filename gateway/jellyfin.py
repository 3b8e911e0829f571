"""A thin client of the Jellyfin API calls the gateway makes itself (not the proxied traffic).

It knows how Jellyfin wants to be asked. A caller's token goes back to Jellyfin in the form the
caller used (same header and scheme, or same query key), so Jellyfin, not the gateway, decides
whether that form counts: with EnableLegacyAuthorization off (the default from 12.0) it refuses
X-Emby-Token, ``?api_key=`` and the rest for the torrent API exactly as for its own endpoints. The
gateway's own API key travels as ``Authorization: MediaBrowser Token="..."``, the form every version
accepts. Replies come back typed (:class:`Me`, :class:`Library`, :class:`PublicInfo`), parsed here
only; every failure is an :class:`~gateway.upstream.UpstreamError` with a reason a person can act on
and that does not say where Jellyfin is. Nothing here knows about aiohttp.web.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from .upstream import MAX_REPLY_BYTES, Failure, Upstream, UpstreamError, read_capped

logger = logging.getLogger(__name__)

#: How long one API call may take in all; Jellyfin answers these from memory.
API_TIMEOUT = 10.0


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
class Me:
    """The caller's account as ``/Users/Me`` describes it: what the admin check needs to know."""

    is_administrator: bool
    is_disabled: bool


class Refusal(enum.Enum):
    """Jellyfin's "no" to a token, by the status it answered."""

    #: ``/Users/Me`` for a token without a user: an API key.
    NO_USER = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403


class Library(NamedTuple):
    """A library, its folders (``Locations``) as Jellyfin names them, and its ``CollectionType``
    (``movies``, ``tvshows``, …; None for a mixed library)."""

    name: str
    locations: list[str]
    collection_type: str | None = None


@dataclass(frozen=True)
class PublicInfo:
    """What ``/System/Info/Public`` tells anyone: is Jellyfin up, and which version."""

    version: str | None
    server_name: str | None
    server_id: str | None = None


@dataclass(frozen=True)
class Item:
    """A library item as ``/Items`` describes it (with ``Fields=Path,ProviderIds``)."""

    id: str
    name: str
    type: str
    production_year: int | None
    path: str | None
    provider_ids: dict[str, str]


def _items(body: Any) -> list[Item]:
    """Items with an id and a name; odd fields become None rather than failing the whole list."""
    raw = body.get("Items") if isinstance(body, dict) else None
    items = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("Id"), str):
            continue
        year = entry.get("ProductionYear")
        ids = entry.get("ProviderIds") if isinstance(entry.get("ProviderIds"), dict) else {}
        items.append(
            Item(
                id=entry["Id"],
                name=_text(entry.get("Name")) or "",
                type=_text(entry.get("Type")) or "",
                production_year=year if isinstance(year, int) and not isinstance(year, bool) else None,
                path=_text(entry.get("Path")),
                provider_ids={k: v for k, v in ids.items() if isinstance(v, str)}
                if isinstance(ids, dict)
                else {},
            )
        )
    return items


def _me(body: Any) -> Me:
    """Only a ``true`` counts: a missing or odd policy is a user without rights (fail closed)."""
    policy = body.get("Policy") if isinstance(body, dict) else None
    if not isinstance(policy, dict):
        policy = {}
    return Me(
        is_administrator=policy.get("IsAdministrator") is True, is_disabled=policy.get("IsDisabled") is True
    )


def _libraries(body: list[Any]) -> list[Library]:
    """Libraries with a name; of their locations, the ones that are text."""
    libraries = []
    for folder in body:
        if not isinstance(folder, dict) or not isinstance(folder.get("Name"), str):
            continue
        locations = folder.get("Locations")
        paths = [p for p in locations if isinstance(p, str)] if isinstance(locations, list) else []
        kind = folder.get("CollectionType")
        libraries.append(Library(folder["Name"], paths, kind.lower() if isinstance(kind, str) else None))
    return libraries


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


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
        self._upstream = Upstream("Jellyfin", str(base_url.with_user(None)).rstrip("/"))
        self._max_reply_bytes = max_reply_bytes

    async def _request(
        self,
        method: str,
        path: str,
        auth: str | Credentials | None,
        *,
        extra_headers: ExtraHeaders = None,
        payload: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One call: the status and, for a 200, the decoded JSON body (None when empty).

        ``auth`` is the gateway's own API key (a string) or a caller's credentials. Failing to reach
        Jellyfin, or a 200 that is not JSON, raises UpstreamError.
        """
        headers = {**(extra_headers or {}), "Accept": "application/json"}
        if payload is not None:
            # Explicit: the shared proxy session adds no headers of its own (Jellyfin answers 415 without).
            headers["Content-Type"] = "application/json"
        raw_queries = [urlencode(query, quote_via=quote)] if query else []
        if auth is not None:
            token_headers, raw_query = _presented(Credentials(auth) if isinstance(auth, str) else auth)
            headers.update(token_headers)
            if raw_query:
                raw_queries.append(raw_query)
        url = URL(self._base + path)
        if raw_queries:
            url = URL(f"{url}?{'&'.join(raw_queries)}", encoded=True)
        async with (
            self._upstream.call(path),
            self._session.request(
                method,
                url,
                headers=headers,
                json=payload,
                allow_redirects=False,
                auto_decompress=True,
                timeout=self._timeout,
            ) as response,
        ):
            status, raw = response.status, await read_capped(response, self._max_reply_bytes)
        if status != 200 or not raw.strip():
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise self._upstream.error(
                Failure.BAD_REPLY, f"Jellyfin answered {path} with something that is not JSON"
            ) from None

    def _status_error(self, path: str, status: int, *, wording: str = "HTTP") -> UpstreamError:
        """A status the call does not expect: a refusal for 401 and 403, else a bad reply."""
        kind = Failure.REFUSED if status in (401, 403) else Failure.BAD_REPLY
        return self._upstream.error(kind, f"Jellyfin answered {path} with {wording} {status}")

    async def media_updated(self, api_key: str, path: str) -> None:
        """``POST /Library/Media/Updated``: Jellyfin scans just this path (204)."""
        updates = {"Updates": [{"Path": path, "UpdateType": "Created"}]}
        status, _ = await self._request("POST", "/Library/Media/Updated", api_key, payload=updates)
        if status not in (200, 204):
            raise self._status_error("/Library/Media/Updated", status)

    async def refresh_library(self, api_key: str) -> None:
        """``POST /Library/Refresh``: a full scan, queued at once (204)."""
        status, _ = await self._request("POST", "/Library/Refresh", api_key)
        if status not in (200, 204):
            raise self._status_error("/Library/Refresh", status)

    async def public_info(self) -> PublicInfo:
        """``GET /System/Info/Public`` (anonymous): is Jellyfin up, and which version."""
        path = "/System/Info/Public"
        status, body = await self._request("GET", path, None)
        if status != 200:
            raise self._status_error(path, status)
        if not isinstance(body, dict):
            raise self._upstream.error(
                Failure.BAD_REPLY, f"Jellyfin answered {path} with something that is not an object"
            )
        return PublicInfo(_text(body.get("Version")), _text(body.get("ServerName")), _text(body.get("Id")))

    async def me(self, credentials: Credentials, *, extra_headers: ExtraHeaders = None) -> Me | Refusal:
        """``GET /Users/Me``: the user, or Jellyfin's refusal (400 for an API key: it has no user)."""
        path = "/Users/Me"
        status, body = await self._request("GET", path, credentials, extra_headers=extra_headers)
        if status == 200:
            return _me(body)
        if status in (400, 401, 403):
            return Refusal(status)
        raise self._status_error(path, status, wording="an unexpected status")

    async def elevation(
        self, credentials: Credentials, *, extra_headers: ExtraHeaders = None
    ) -> Refusal | None:
        """Whether the token may use elevated endpoints: None if so, else Jellyfin's refusal.

        Asks ``GET /Auth/Providers``, elevated-only and harmless (``/Auth/Keys`` would tell the same
        but hands over every API key).
        """
        path = "/Auth/Providers"
        status, _ = await self._request("GET", path, credentials, extra_headers=extra_headers)
        if status == 200:
            return None
        if status in (401, 403):
            return Refusal(status)
        raise self._status_error(path, status, wording="an unexpected status")

    async def libraries(
        self, auth: str | Credentials, *, extra_headers: ExtraHeaders = None
    ) -> list[Library]:
        """``GET /Library/VirtualFolders``: the libraries with the folders of each.

        Asked with the gateway's API key (a string) or with a caller's credentials in their form.
        """
        path = "/Library/VirtualFolders"
        status, body = await self._request("GET", path, auth, extra_headers=extra_headers)
        if status != 200:
            raise self._status_error(path, status)
        if not isinstance(body, list):
            raise self._upstream.error(
                Failure.BAD_REPLY, f"Jellyfin answered {path} with something that is not a list"
            )
        return _libraries(body)

    async def items(
        self,
        auth: str | Credentials,
        *,
        search_term: str | None = None,
        ids: list[str] | None = None,
        types: tuple[str, ...] = ("Movie", "Series", "Episode"),
        limit: int = 200,
    ) -> list[Item]:
        """``GET /Items`` across every library, with each item's Path and ProviderIds."""
        query = {
            "Recursive": "true",
            "IncludeItemTypes": ",".join(types),
            "Fields": "Path,ProviderIds,ProductionYear",
            "Limit": str(limit),
        }
        if search_term:
            query["searchTerm"] = search_term
        if ids:
            query["Ids"] = ",".join(ids)
        path = "/Items"
        status, body = await self._request("GET", path, auth, query=query)
        if status != 200:
            raise self._status_error(path, status)
        return _items(body)

    async def items_page(
        self,
        auth: str | Credentials,
        *,
        start: int,
        limit: int,
        types: tuple[str, ...] = ("Movie", "Series", "Episode"),
        fields: str = "ProviderIds,ProductionYear,MediaSources,Path",
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of ``GET /Items`` across every library, raw, and TotalRecordCount.

        Raw item objects because the library index reads more than :class:`Item` holds (MediaSources,
        episode numbers) and keeps only a little of each. Jellyfin 10.9+ needs no userId with an API key.
        """
        query = {
            "Recursive": "true",
            "IncludeItemTypes": ",".join(types),
            "Fields": fields,
            "StartIndex": str(start),
            "Limit": str(limit),
        }
        path = "/Items"
        status, body = await self._request("GET", path, auth, query=query)
        if status != 200:
            raise self._status_error(path, status)
        if not isinstance(body, dict):
            raise self._upstream.error(
                Failure.BAD_REPLY, f"Jellyfin answered {path} with something that is not an object"
            )
        raw = body.get("Items")
        page = [entry for entry in raw if isinstance(entry, dict)] if isinstance(raw, list) else []
        total = body.get("TotalRecordCount")
        if not isinstance(total, int) or isinstance(total, bool):
            total = start + len(page)  # no count: this page is taken as the last
        return page, total
