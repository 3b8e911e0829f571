"""Who may use /torrent: Jellyfin administrators, decided exactly as Jellyfin would.

Jellyfin itself answers the question. The gateway finds the caller's token the way Jellyfin 10.11
does, notes the form it came in (header and scheme, or query key), asks ``/Users/Me`` with the token
in that same form, and applies ``Policies.RequiresElevation``: an administrator who is not disabled,
or an API key (API keys are elevated in Jellyfin; ``/Users/Me`` answers them with 400, so
``/Auth/Providers`` confirms). Whether a legacy form counts at all is Jellyfin's call
(EnableLegacyAuthorization). Decisions are cached per (token hash, form, forwarded client address)
for a few seconds, shared by concurrent requests, and bounded in number, so the check is cheap but a
demoted admin still loses access within the TTL. Any doubt fails closed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, MultiMapping

from .cache import SingleFlightCache
from .jellyfin import ClientIdentity, Credentials, JellyfinClient, Me, Refusal, TokenForm
from .query import query_items
from .upstream import Failure, UpstreamError

logger = logging.getLogger(__name__)

#: Longest a "bad token" answer is remembered; it only spares Jellyfin floods of the same bad token.
UNAUTHORIZED_TTL = 2.0
#: Most tokens remembered at once; the oldest are forgotten first.
MAX_CACHED_TOKENS = 4096

_PUBLIC = "__gateway_public__"


# --- token extraction ---------------------------------------------------------------------------


def parse_authorization_parts(value: str) -> dict[str, str]:
    """The ``key="value", ...`` list of a MediaBrowser header, as Jellyfin's GetParts reads it.

    Quotes are optional and protect commas; keys are trimmed and case-sensitive; values lose their
    quotes and are URL-decoded (``+`` is a space); a repeated key keeps the last value.
    """
    parts: dict[str, str] = {}
    in_quotes = False
    start = 0
    key = ""
    for index, char in enumerate(value):
        if char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            if start < index:
                parts[key] = unquote_plus(value[start:index].strip('"'))
                key = ""
            start = index + 1
        elif char == "=" and not in_quotes:
            key = value[start:index].strip()
            start = index + 1
    if start < len(value):
        parts[key] = unquote_plus(value[start:].strip('"'))
    return parts


def _mediabrowser_parts(value: str) -> tuple[str, dict[str, str]] | None:
    """(scheme, parts) of a ``MediaBrowser`` (or legacy ``Emby``) header; None for any other scheme."""
    scheme, space, rest = value.partition(" ")
    if not space or scheme.lower() not in _SCHEMES:
        return None
    return _SCHEMES[scheme.lower()], parse_authorization_parts(rest)


_SCHEMES = {"mediabrowser": "MediaBrowser", "emby": "Emby"}
_TOKEN_HEADERS = (TokenForm("X-Emby-Token"), TokenForm("X-MediaBrowser-Token"))
_TOKEN_QUERY_KEYS = (TokenForm("ApiKey", in_query=True), TokenForm("api_key", in_query=True))


def _is_text(value: str) -> bool:
    """False for bytes that were not UTF-8 (aiohttp hands them over as lone surrogates): re-sent to
    Jellyfin they would lose those bytes on the way, and be judged as another token."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def extract_credentials(headers: MultiMapping[str], raw_query: str) -> Credentials | None:
    """The token Jellyfin 10.11 would use for this request, in its precedence order, and its form.

    1. ``Authorization: MediaBrowser ... Token="..."`` (first header value only);
    2. ``X-Emby-Authorization``, only when Authorization is absent or empty (another scheme, such as
       a proxy's Basic auth, blocks it);
    3. ``X-Emby-Token``; 4. ``X-MediaBrowser-Token``; 5. ``?ApiKey=``; 6. ``?api_key=``
    (query keys in any case and encoding, decoded as Jellyfin does). ``Token=""``, blank values and
    bytes that are not UTF-8 count as no token (None). The legacy forms are found here whatever
    Jellyfin's settings: Jellyfin is asked in the same form, and refuses it if it must.
    """
    header_name = "Authorization"
    values = headers.getall("Authorization", [])
    if not ",".join(values):
        header_name = "X-Emby-Authorization"
        values = headers.getall("X-Emby-Authorization", [])
    found = _mediabrowser_parts(values[0]) if values else None
    scheme, parts = found if found is not None else (None, {})
    identity = ClientIdentity(
        client=parts.get("Client"),
        device=parts.get("Device"),
        device_id=parts.get("DeviceId"),
        version=parts.get("Version"),
    )
    token = parts.get("Token") or None
    form = TokenForm(header_name, scheme) if token is not None else None
    if token is None:
        query = CIMultiDict(query_items(raw_query))
        candidates = [(form, headers.getall(form.name, [])) for form in _TOKEN_HEADERS]
        candidates += [(form, query.getall(form.name, [])) for form in _TOKEN_QUERY_KEYS]
        for candidate_form, found_values in candidates:
            token = ",".join(found_values) or None
            if token is not None:
                form = candidate_form
                break
    if token is None or form is None or not token.strip() or not _is_text(token):
        return None
    return Credentials(token, form, identity, header_value=values[0] if form.scheme else None)


# --- the decision ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    status: int  # 200 allowed; otherwise the status to answer with
    reason: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOWED = Decision(200, "allowed")
NOT_ADMIN = Decision(403, "Only Jellyfin administrators may use the torrent API")
BAD_TOKEN = Decision(401, "The Jellyfin token is missing, invalid or expired")


async def decide(
    jellyfin: JellyfinClient, credentials: Credentials, *, extra_headers: Mapping[str, str] | None = None
) -> Decision:
    """Ask Jellyfin, uncached. Failing to ask becomes a 504 (too slow) or 502 decision: fail closed."""
    try:
        me = await jellyfin.me(credentials, extra_headers=extra_headers)
        if isinstance(me, Me):
            if me.is_disabled:
                return Decision(401, "This Jellyfin account is disabled")
            return ALLOWED if me.is_administrator else NOT_ADMIN
        refusal: Refusal | None = me
        if me is Refusal.NO_USER:
            # API keys have no user: /Users/Me says 400. An elevated-only endpoint tells the rest.
            refusal = await jellyfin.elevation(credentials, extra_headers=extra_headers)
            if refusal is None:
                return ALLOWED
        return BAD_TOKEN if refusal is Refusal.UNAUTHORIZED else NOT_ADMIN
    except UpstreamError as exc:
        return Decision(504 if exc.kind is Failure.TIMEOUT else 502, exc.reason)


#: What a decision depends on besides Jellyfin's state: the token (hashed: the cache never holds a
#: token), the form it came in (EnableLegacyAuthorization), and the client address Jellyfin is told
#: (its remote-access rules).
CacheKey = tuple[bytes, TokenForm, str | None]


def cache_key(credentials: Credentials, extra_headers: Mapping[str, str] | None) -> CacheKey:
    digest = hashlib.sha256(credentials.token.encode("utf-8", "surrogateescape")).digest()
    forwarded = CIMultiDict(extra_headers or {}).get("X-Forwarded-For")
    return digest, credentials.form, forwarded


class ElevationCache:
    """Decisions cached per (token hash, form, forwarded address): single-flight, bounded, TTL'd."""

    def __init__(
        self,
        jellyfin: JellyfinClient,
        *,
        ttl: float,
        max_entries: int = MAX_CACHED_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jellyfin = jellyfin
        self._ttl = ttl
        self._decisions: SingleFlightCache[CacheKey, Decision] = SingleFlightCache(
            ttl=self._ttl_for, max_entries=max_entries, clock=clock
        )

    def __len__(self) -> int:
        return len(self._decisions)

    def keys(self) -> list[CacheKey]:
        """What the cache holds decisions for (hashes, never tokens), least recently used first."""
        return self._decisions.keys()

    async def check(
        self, credentials: Credentials, *, extra_headers: Mapping[str, str] | None = None
    ) -> Decision:
        return await self._decisions.get(
            cache_key(credentials, extra_headers),
            lambda: decide(self._jellyfin, credentials, extra_headers=extra_headers),
        )

    def _ttl_for(self, decision: Decision) -> float:
        if decision.status in (200, 403):
            return self._ttl
        if decision.status == 401:
            return min(self._ttl, UNAUTHORIZED_TTL)
        return 0.0  # Jellyfin trouble: ask again next time


# --- the middleware -------------------------------------------------------------------------------

#: The caller's credentials, for handlers that act on Jellyfin with the caller's own token.
CREDENTIALS = web.RequestKey("credentials", Credentials)


@dataclass(frozen=True)
class AdminCheck:
    """The admin question as the middleware asked it, so a long-running request can ask it again."""

    cache: ElevationCache
    credentials: Credentials
    extra_headers: Mapping[str, str]

    async def ask(self) -> Decision:
        return await self.cache.check(self.credentials, extra_headers=self.extra_headers)


#: Set for every admin request; live streams call ``ask()`` again to notice a revoked admin.
ADMIN_CHECK = web.RequestKey("admin_check", AdminCheck)


def public(handler: Handler) -> Handler:
    """Mark a /torrent handler as open to anyone (it must expose no data)."""
    setattr(handler, _PUBLIC, True)
    return handler


def is_public(handler: object) -> bool:
    return getattr(handler, _PUBLIC, False) is True


def admin_middleware(
    cache_for: Callable[[web.Request], ElevationCache],
    forwarding_for: Callable[[web.Request], Iterable[tuple[str, str]]],
    refuse: Callable[[int, str], web.StreamResponse],
) -> Middleware:
    """The guard of the whole /torrent sub-app: nothing past it runs for a non-admin."""

    @web.middleware
    async def require_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request.match_info.handler):
            return await handler(request)
        credentials = extract_credentials(request.headers, request.rel_url.raw_query_string)
        if credentials is None:
            return refuse(401, 'Send a Jellyfin token (Authorization: MediaBrowser Token="...")')
        check = AdminCheck(cache_for(request), credentials, dict(forwarding_for(request)))
        decision = await check.ask()
        if not decision.allowed:
            if decision.status >= 500:
                logger.warning("admin check failed: %s", decision.reason)
            return refuse(decision.status, decision.reason)
        request[CREDENTIALS] = credentials
        request[ADMIN_CHECK] = check
        return await handler(request)

    return require_admin
