"""A thin client of apibay's search (``GET /q.php``), the provider behind ``/torrent/search``.

apibay publishes no contract, so everything it sends is parsed
defensively: the reply must be a JSON array whatever its Content-Type says, each row is reduced to
the 12 fields the spec promises, every value becomes a string (fields come and go, e.g.
``num_files`` since December 2025), HTML entities in names are undone, and the "No results returned"
sentinel row is dropped. Every failure to get such an array becomes an
:class:`~gateway.upstream.UpstreamError` with a reason a person can act on. Results are cached
briefly per ``(q, cat)`` and identical concurrent searches share one upstream call (the gateway's one
:class:`~gateway.cache.SingleFlightCache`), because apibay sits behind Cloudflare and rate-limits.
Nothing here knows about aiohttp.web.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from . import __version__
from .cache import SingleFlightCache
from .upstream import Failure, Upstream, UpstreamError, read_capped

logger = logging.getLogger(__name__)

#: The fields of a ``TorrentSearchResult`` (the search endpoint's contract), in its order.
SEARCH_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "info_hash",
    "leechers",
    "seeders",
    "num_files",
    "size",
    "username",
    "added",
    "status",
    "category",
    "imdb",
)
#: The spec returns "the first 20" results.
MAX_RESULTS = 20
#: apibay's q.php sends at most 100 rows; /torrent/find keeps them all.
MAX_ROWS = 100
#: Without these a row cannot be shown or downloaded, so it is skipped.
REQUIRED_FIELDS: tuple[str, ...] = ("id", "name", "info_hash")
#: Fields that are free text from uploaders and arrive HTML-escaped.
ESCAPED_FIELDS: frozenset[str] = frozenset({"name", "username"})
#: A search answer is ~350 bytes a row and at most 100 rows; anything far larger is not apibay.
MAX_BODY = 4 * 1024 * 1024
#: More category codes than apibay has (about 60) is not a real request.
MAX_CATEGORIES = 100
USER_AGENT = f"jellyfin-torrent-gateway/{__version__}"

_CATEGORY_CODE = re.compile(r"[0-9]{1,3}")
_JSON_KINDS: dict[type, str] = {
    dict: "an object",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _bad_reply(reason: str) -> UpstreamError:
    return UpstreamError("apibay", Failure.BAD_REPLY, reason)


def validate_category(cat: str) -> str:
    """Check and normalise a ``cat`` value: ``"0"`` or a comma list of 1–3 digit codes.

    Surrounding whitespace and spaces around commas are dropped (``" 201, 207 "`` → ``"201,207"``);
    an empty value means all categories and becomes ``"0"``. Anything else (signs, other separators,
    empty list items, non-ASCII digits) raises ``ValueError``: the value goes into apibay's URL and
    into the cache key, so only what apibay understands gets through.
    """
    text = cat.strip()
    if not text:
        return "0"
    codes = [code.strip() for code in text.split(",")]
    if len(codes) > MAX_CATEGORIES:
        raise ValueError(f"cat has {len(codes)} codes; at most {MAX_CATEGORIES} are accepted")
    for code in codes:
        if not _CATEGORY_CODE.fullmatch(code):
            raise ValueError(
                f"cat must be a category code or a comma-separated list of codes"
                f" (e.g. 0, 201 or 201,207), not {cat!r}"
            )
    return ",".join(codes)


def _as_text(value: Any) -> str:
    """One field as the spec's string: numbers without ``.0``, missing or odd values as ``""``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: True is an int, but no apibay field is a boolean
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() else str(value)
    return ""  # None, lists, objects


def _is_sentinel(row: dict[str, str]) -> bool:
    """apibay's "No results returned" row: id ``0`` or an all-zero hash (reference §2)."""
    info_hash = row["info_hash"]
    return row["id"] == "0" or (bool(info_hash) and info_hash.strip("0") == "")


def normalize_row(raw: Any) -> dict[str, str] | None:
    """A row reduced to the spec's fields as strings, or ``None`` to skip it (or the sentinel)."""
    if not isinstance(raw, dict):
        return None
    row: dict[str, str] = {}
    for name in SEARCH_FIELDS:
        text = _as_text(raw.get(name))
        row[name] = html.unescape(text) if name in ESCAPED_FIELDS else text
    if any(not row[name] for name in REQUIRED_FIELDS) or _is_sentinel(row):
        return None
    return row


def normalize_results(payload: Any, limit: int = MAX_RESULTS) -> list[dict[str, str]]:
    """apibay's decoded reply as the spec's result list (the first ``limit`` usable rows)."""
    if not isinstance(payload, list):
        kind = _JSON_KINDS.get(type(payload), type(payload).__name__)
        raise _bad_reply(f"apibay answered with unexpected JSON ({kind} instead of a list of results)")
    results: list[dict[str, str]] = []
    for raw in payload:
        row = normalize_row(raw)
        if row is not None:
            results.append(row)
            if len(results) == limit:
                break
    return results


_Results = list[dict[str, str]]


class ApibayClient:
    """Searches apibay; brief LRU cache per ``(q, cat)``, single flight, errors never cached."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: URL,
        *,
        timeout: float = 10.0,
        cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = 256,
        max_reply: int = MAX_BODY,
    ) -> None:
        self._session = session
        self._max_reply = max_reply
        # A mirror may live under a path (https://host/apibay/); its own query and fragment are noise.
        self._endpoint = base_url.with_path(base_url.path.rstrip("/") + "/q.php")
        self._upstream = Upstream("apibay", str(self._endpoint.with_user(None)), within=timeout)
        # Given per request, so it replaces whatever timeouts the shared session has.
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._results: SingleFlightCache[tuple[str, str], _Results] = SingleFlightCache(
            ttl=lambda _: cache_ttl, max_entries=max_cached, clock=clock
        )

    async def search(self, query: str, category: str = "0") -> list[dict[str, str]]:
        """Up to 20 results for ``query`` in ``category`` (see :func:`validate_category`).

        Raises ``ValueError`` for a blank query or a bad category (the caller's 400) and
        :class:`~gateway.upstream.UpstreamError` when apibay fails. The returned rows are the
        caller's to change.
        """
        return (await self.search_all(query, category))[:MAX_RESULTS]

    async def search_all(self, query: str, category: str = "0") -> list[dict[str, str]]:
        """Every usable row apibay gives (it sends at most 100), as :meth:`search` does its first 20;
        both share one cache entry."""
        if not query.strip():
            raise ValueError("the search query is empty")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the search query is not valid text") from None
        category = validate_category(category)
        return _copy(await self._results.get((query, category), lambda: self._fetch(query, category)))

    async def _fetch(self, query: str, category: str) -> list[dict[str, str]]:
        url = self._endpoint.with_query([("q", query), ("cat", category)])
        logger.debug("apibay search q=%r cat=%s", query, category)
        started = time.monotonic()
        try:
            payload = await self._get_json(url)
        except UpstreamError as exc:
            logger.debug("apibay search q=%r cat=%s failed: %s", query, category, exc.reason)
            raise
        results = normalize_results(payload, limit=MAX_ROWS)
        logger.debug(
            "apibay search q=%r cat=%s: %d rows, kept %d in %.3f s",
            query,
            category,
            len(payload),
            len(results),
            time.monotonic() - started,
        )
        return results

    async def _get_json(self, url: URL) -> Any:
        """The decoded JSON body of a 200, or :class:`UpstreamError` saying what went wrong."""
        headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            # Explicit, with auto_decompress below: the gateway's shared session turns both off.
            "Accept-Encoding": "gzip, deflate",
        }
        async with (
            self._upstream.call(),
            self._session.get(url, headers=headers, timeout=self._timeout, auto_decompress=True) as response,
        ):
            body = await read_capped(response, self._max_reply)
            status = response.status
            content_type = response.headers.get("Content-Type", "").lower()
            server = response.headers.get("Server", "").lower()
        looks_html = "html" in content_type or body.lstrip()[:1] == b"<"
        if status != 200:
            if server == "cloudflare":
                raise _bad_reply(f"apibay answered HTTP {status} (a Cloudflare error page)")
            if looks_html:
                raise _bad_reply(f"apibay answered HTTP {status} (an HTML error page)")
            raise _bad_reply(f"apibay answered HTTP {status}")
        if not body.strip():
            raise _bad_reply("apibay answered with an empty body instead of JSON")
        try:
            # Content-Type is not trusted either way: PHP may label JSON as text/html.
            return json.loads(body)
        except ValueError:
            if looks_html:
                raise _bad_reply("apibay answered with an HTML page instead of JSON") from None
            raise _bad_reply("apibay answered with something that is not JSON") from None


def _copy(results: list[dict[str, str]]) -> list[dict[str, str]]:
    """A copy per caller, so that one caller's changes never reach the cache or another caller."""
    return [dict(row) for row in results]
