"""An apibay stand-in for integration tests: ``GET /q.php`` as the gateway will meet it.

What it sends follows what apibay's live API was seen to send: rows whose every value is a string,
UPPERCASE 40-hex hashes, ``num_files`` missing on some rows (apibay dropped it in December 2025),
HTML-escaped names (``Ubuntu Linux &amp; Linux Scripting``, an escaped ``<img onerror>``), the
one-row "No results returned" sentinel, and Cloudflare's HTML error pages.

Behaviour is data on an :class:`ApibayState` stored under :data:`APIBAY`:

* ``state.mode`` / ``state.delay`` apply to every search; ``state.responses[q]`` overrides them for
  one query, either as a mode name (``state.responses["x"] = "sentinel"``) or as a :class:`Reply`.
* Modes: ``results`` (``state.rows``, by default :func:`default_rows`, 35 rows), ``sentinel``,
  ``cloudflare`` (HTTP 522 HTML page), ``html`` (HTTP 200 HTML page), ``not_list`` (a JSON object),
  ``json`` (``Reply.payload`` sent as is).
* ``results`` honours ``cat`` like apibay: ``0`` or empty is everything, ``200`` a whole top-level
  group, ``201`` one sub-category, lists combine; nothing left gives the sentinel. The default rows
  are all in 2xx video categories except five, so ``cat=0`` and ``cat=200`` answer 35 and 30 rows.
* Every search is recorded in ``state.requests`` (q, cat, raw query string, headers) and counted
  in ``state.calls`` (by q).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import html
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiohttp import web
from multidict import CIMultiDict

Mode = Literal["results", "sentinel", "cloudflare", "html", "not_list", "json"]
MODES: tuple[str, ...] = get_args(Mode)

#: pirate-get ``tests/data/no_hits.json``, byte for byte in content.
SENTINEL_ROW: dict[str, str] = {
    "id": "0",
    "name": "No results returned",
    "info_hash": "0000000000000000000000000000000000000000",
    "leechers": "0",
    "seeders": "0",
    "num_files": "0",
    "size": "0",
    "username": "",
    "added": "0",
    "status": "member",
    "category": "0",
    "imdb": "",
    "total_found": "1",
}

CLOUDFLARE_522_PAGE = """<!DOCTYPE html>
<html lang="en-US">
<head><title>apibay.org | 522: Connection timed out</title></head>
<body>
<div id="cf-wrapper"><h1><span class="cf-error-type">Error</span>
<span class="cf-error-code">522</span></h1>
<h2 class="cf-subheadline">Connection timed out</h2>
<p>Cloudflare Ray ID: <strong>8c0ffee000000000</strong></p></div>
</body>
</html>
"""

HTML_200_PAGE = """<!DOCTYPE html>
<html><head><title>The Pirate Bay</title></head>
<body><h1>Access denied</h1><p>This mirror is blocked.</p></body></html>
"""

NOT_LIST_PAYLOAD: dict[str, str] = {"error": "bad request"}

#: Rows with names worth testing, then generated ones up to :data:`DEFAULT_ROW_COUNT`.
_NOTABLE: tuple[tuple[str, str, str, str], ...] = (
    # (escaped name as apibay sends it, category, imdb, username)
    ("Ubuntu Linux &amp; Linux Scripting", "601", "", "linux&amp;friends"),
    ("&lt;img src=x onerror=alert(1)&gt;", "207", "", "xss"),
    ("Schindler&#039;s List (1993) [1080p]", "207", "tt0108052", "YTS"),
    ("Am\u00e9lie (2001) 720p BluRay &quot;Le Fabuleux Destin&quot;", "201", "tt0211915", "Ramp"),
    ("Tom &amp; Jerry: The Movie (1992)", "201", "tt0105622", "eztv"),
)
DEFAULT_ROW_COUNT = 35
_STATUSES = ("member", "vip", "trusted", "helper", "moderator", "supermod", "admin")
_VIDEO_CATEGORIES = ("201", "202", "205", "207", "208", "209", "211")
_OTHER_CATEGORIES = ("101", "301", "401", "601")


def info_hash(seed: str) -> str:
    """A deterministic UPPERCASE 40-hex hash, as apibay writes them."""
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest().upper()


def default_rows(count: int = DEFAULT_ROW_COUNT) -> list[dict[str, str]]:
    """``count`` realistic rows, the same every time; every third row lacks ``num_files``."""
    rows: list[dict[str, str]] = []
    for index in range(count):
        if index < len(_NOTABLE):
            name, category, imdb, username = _NOTABLE[index]
        else:
            name = f"Example Movie {index} (20{index:02d}) [1080p] [x265]"
            # Five rows outside video in all: the notable Ubuntu row and four generated ones.
            other = index % 8 == 0
            category = (
                _OTHER_CATEGORIES[index // 8 % 4]
                if other
                else _VIDEO_CATEGORIES[index % len(_VIDEO_CATEGORIES)]
            )
            imdb = "" if other else f"tt{1000000 + index * 7919:07d}"
            username = f"uploader{index % 6}"
        row = {
            "id": str(40000000 + index * 131),
            "name": name,
            "info_hash": info_hash(f"standin-row-{index}"),
            "leechers": str(index * 3 % 17),
            "seeders": str(1000 - index * 23),
            "num_files": str(1 + index % 5),
            "size": str(700_000_000 + index * 104_857_600),
            "username": username,
            "added": str(1_700_000_000 + index * 86_400),
            "status": _STATUSES[index % len(_STATUSES)],
            "category": category,
            "imdb": imdb,
        }
        if index % 3 == 2:
            del row["num_files"]
        rows.append(row)
    return rows


def category_matches(wanted: str, category: str) -> bool:
    """apibay's ``cat`` semantics: ``0``/empty = all, ``N00`` = its group, else an exact code."""
    codes = [code.strip() for code in wanted.split(",") if code.strip()]
    if not codes or "0" in codes:
        return True
    return any(code == category or (code.endswith("00") and category[:1] == code[:1]) for code in codes)


@dataclass
class Reply:
    """How to answer one search; ``status``/``content_type`` override the mode's own."""

    mode: Mode = "results"
    delay: float = 0.0
    rows: list[Any] | None = None  # for "results": rows to filter and send; None = state.rows
    payload: Any = None  # for "json": sent as is
    status: int | None = None
    content_type: str | None = None


@dataclass
class ApibayRequest:
    q: str | None
    cat: str | None
    query_string: str  # raw, as it arrived
    headers: CIMultiDict[str]


@dataclass
class ApibayState:
    """Everything a test arranges (``mode``, ``delay``, ``rows``, ``responses``) or inspects."""

    mode: Mode = "results"
    delay: float = 0.0
    rows: list[Any] = field(default_factory=default_rows)
    responses: dict[str, Reply | Mode] = field(default_factory=dict)
    requests: list[ApibayRequest] = field(default_factory=list)
    calls: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def reply_for(self, q: str) -> Reply:
        override = self.responses.get(q)
        if isinstance(override, Reply):
            return override
        if override is not None:
            return Reply(mode=override)
        return Reply(mode=self.mode, delay=self.delay)


APIBAY: web.AppKey[ApibayState] = web.AppKey("apibay_standin_state", ApibayState)


def _json(payload: Any, reply: Reply, request: web.Request) -> web.Response:
    response = web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=reply.status or 200,
        content_type=reply.content_type or "application/json",
    )
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()  # Cloudflare compresses when asked
    return response


def _page(text: str, reply: Reply, status: int, *, cloudflare: bool) -> web.Response:
    response = web.Response(
        text=text,
        status=reply.status or status,
        reason="Origin Connection Time-out" if (reply.status or status) == 522 else None,
        content_type=reply.content_type or "text/html",
        charset="UTF-8",
    )
    if cloudflare:
        response.headers["Server"] = "cloudflare"
        response.headers["CF-RAY"] = "8c0ffee000000000-AMS"
    return response


async def search(request: web.Request) -> web.Response:
    """``GET /q.php?q=…&cat=…``."""
    state = request.app[APIBAY]
    q = request.query.get("q")
    cat = request.query.get("cat")
    state.requests.append(ApibayRequest(q, cat, request.query_string, CIMultiDict(request.headers)))
    state.calls[q or ""] += 1
    reply = state.reply_for(q or "")
    if reply.delay > 0:
        await asyncio.sleep(reply.delay)
    if reply.mode == "results":
        rows = state.rows if reply.rows is None else reply.rows
        found = [
            row
            for row in rows
            if not isinstance(row, dict) or category_matches(cat or "", str(row.get("category", "")))
        ]
        return _json(found or [SENTINEL_ROW], reply, request)
    if reply.mode == "sentinel":
        return _json([SENTINEL_ROW], reply, request)
    if reply.mode == "cloudflare":
        return _page(CLOUDFLARE_522_PAGE, reply, 522, cloudflare=True)
    if reply.mode == "html":
        return _page(HTML_200_PAGE, reply, 200, cloudflare=False)
    if reply.mode == "not_list":
        return _json(NOT_LIST_PAYLOAD, reply, request)
    return _json(reply.payload, reply, request)


def create_apibay_standin(state: ApibayState | None = None) -> web.Application:
    """The stand-in app; pass ``state`` to arrange it before the server starts."""
    app = web.Application()
    app[APIBAY] = state if state is not None else ApibayState()
    app.router.add_get("/q.php", search)
    return app


def unescaped(name: str) -> str:
    """What a client should show for a name the stand-in sent."""
    return html.unescape(name)


__all__ = [
    "APIBAY",
    "CLOUDFLARE_522_PAGE",
    "DEFAULT_ROW_COUNT",
    "HTML_200_PAGE",
    "MODES",
    "NOT_LIST_PAYLOAD",
    "SENTINEL_ROW",
    "ApibayRequest",
    "ApibayState",
    "Mode",
    "Reply",
    "category_matches",
    "create_apibay_standin",
    "default_rows",
    "info_hash",
    "unescaped",
]
