"""A Torznab stand-in for integration tests: Prowlarr's or Jackett's ``/api`` as the gateway meets them.

What it writes follows their sources (Prowlarr ``NewznabResults.ToXml``, Jackett ``ResultPage.ToXml``):

* Prowlarr (``flavour="prowlarr"``): ``<rss version="1.0">``, ``imdb`` as bare digits (``D7``), no
  ``magneturl`` unless the item has one, ``link``/enclosure its own download URL carrying
  ``apikey=KEY``, a wrong key answered with a bare HTTP 401.
* Jackett (``flavour="jackett"``): ``version="2.0"``, ``imdb`` and ``imdbid`` (``tt0133093``), a
  ``magneturl``, links carrying ``jackett_apikey=KEY``, a wrong key answered with HTTP 200 and
  ``<error code="100" description="Invalid API Key"/>``.
* Both: ``peers`` counts seeders and leechers, ``pubDate`` is RFC 822 with an offset, categories
  both as ``<category>`` and as repeated ``torznab:attr``.

Behaviour is data on a :class:`TorznabState` stored under :data:`TORZNAB`: ``state.items`` (by
default :func:`default_items`), ``state.caps`` (the ``<searching>`` functions), ``state.mode`` for
searches and ``state.caps_mode`` for ``t=caps`` (None: like ``mode``), ``state.delay`` seconds before
any answer. Modes: ``results``, ``error500``, ``html`` (Cloudflare's page with 200), ``html503``,
``error`` (``state.error`` as an ``<error>`` element under 200), ``bomb`` (billion laughs),
``xxe_file`` (an external entity on ``file:///etc/passwd``) and ``xxe_http`` (an external DTD and
entity at ``state.external_url``, see :func:`create_entity_host`). Every request is recorded in
``state.requests`` (path and query).

Routes: ``/{id}/api`` (Prowlarr's) and ``/api/v2.0/indexers/{id}/results/torznab/api`` (Jackett's);
:func:`prowlarr_url` and :func:`jackett_url` build them for a running server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal, get_args
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict
from yarl import URL

Flavour = Literal["prowlarr", "jackett"]
Mode = Literal["results", "error500", "html", "html503", "error", "bomb", "xxe_file", "xxe_http"]
MODES: tuple[str, ...] = get_args(Mode)
HashForm = Literal["lower", "upper", "base32"]

API_KEY = "standin-secret-apikey-0123456789"
TORZNAB_NS = "http://torznab.com/schemas/2015/feed"
ATOM_NS = "http://www.w3.org/2005/Atom"

#: Prowlarr's and Jackett's usual caps: every function with its ids.
DEFAULT_CAPS: dict[str, str | None] = {
    "search": "q",
    "tv-search": "q,season,ep,imdbid",
    "movie-search": "q,imdbid",
}

CLOUDFLARE_PAGE = """<!DOCTYPE html>
<html lang="en-US">
<head><title>Just a moment...</title></head>
<body><div id="cf-wrapper"><h1>Checking your browser before accessing the indexer.</h1>
<p>Cloudflare Ray ID: <strong>8c0ffee000000000</strong></p></div></body>
</html>
"""


def _billion_laughs() -> str:
    """Ten levels of ten: a document under 1 KiB that expands to 10**9 "lol"s."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)
    ]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n  ' + "\n  ".join(entities) + "\n]>\n"
        f'<rss version="2.0" xmlns:torznab="{TORZNAB_NS}"><channel><item><title>&lol9;</title>'
        "</item></channel></rss>\n"
    )


BILLION_LAUGHS = _billion_laughs()


@dataclass
class TorznabItem:
    """One release as the stand-in serves it; ``info_hash`` is the canonical 40-hex lower-case."""

    title: str
    info_hash: str
    size: int
    seeders: int
    leechers: int
    published: datetime
    imdb: int | None = None
    categories: tuple[int, ...] = (2000,)
    #: How ``infohash`` is written; None leaves the attribute out.
    hash_form: HashForm | None = "lower"
    #: Whether a ``magneturl`` is given; None: as the flavour does (Jackett yes, Prowlarr no).
    magnet: bool | None = None
    #: The enclosure's ``length``; None: the size, as both write it when they know the size.
    enclosure_length: int | None = None


@dataclass
class RecordedRequest:
    path: str
    query: MultiDict[str]


@dataclass
class TorznabState:
    flavour: Flavour = "prowlarr"
    api_key: str = API_KEY
    items: list[TorznabItem] = field(default_factory=lambda: default_items())
    #: caps ``<searching>`` element → its supportedParams (None: available="no"); missing: not listed.
    caps: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    max_limit: int = 100
    mode: Mode = "results"
    caps_mode: Mode | None = None
    delay: float = 0.0
    #: ``mode="error"``: the code and description of the ``<error>`` answered with HTTP 200.
    error: tuple[int, str] = (900, "Something went wrong")
    #: ``mode="xxe_http"``: the base URL of an entity host (:func:`create_entity_host`).
    external_url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)

    def functions(self) -> list[str | None]:
        """The ``t`` of every request so far, in order."""
        return [request.query.get("t") for request in self.requests]

    def searches(self) -> list[MultiDict[str]]:
        """The queries of every request other than caps."""
        return [request.query for request in self.requests if request.query.get("t") != "caps"]


TORZNAB: web.AppKey[TorznabState] = web.AppKey("torznab", TorznabState)


def info_hash(seed: str) -> str:
    """A deterministic 40-hex lower-case hash."""
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()


def default_items() -> list[TorznabItem]:
    """Four releases: each hash form, one with a .torrent-sized enclosure, one without an IMDb id."""
    published = datetime(2015, 3, 14, 21, 10, 42, tzinfo=UTC)
    return [
        TorznabItem(
            "The Matrix 1999 1080p BluRay x264",
            info_hash("matrix"),
            size=8_589_934_592,
            seeders=120,
            leechers=30,
            published=published,
            imdb=133093,
        ),
        TorznabItem(
            "The Matrix 1999 720p WEB-DL",
            info_hash("matrix-720"),
            size=4_294_967_296,
            seeders=40,
            leechers=0,
            published=published - timedelta(days=400),
            imdb=133093,
            hash_form="upper",
            enclosure_length=31_337,
        ),
        TorznabItem(
            "Night of the Living Dead 1968",
            info_hash("notld"),
            size=700_000_000,
            seeders=5,
            leechers=2,
            published=published - timedelta(days=4000),
            imdb=1,
            hash_form="base32",
        ),
        TorznabItem(
            "Ubuntu 24.04 Desktop amd64",
            info_hash("ubuntu"),
            size=6_000_000_000,
            seeders=900,
            leechers=50,
            published=published + timedelta(hours=5),
            categories=(4000, 4050),
        ),
    ]


def written_hash(item: TorznabItem, form: HashForm) -> str:
    if form == "upper":
        return item.info_hash.upper()
    if form == "base32":
        return base64.b32encode(bytes.fromhex(item.info_hash)).decode()
    return item.info_hash


def _attr(name: str, value: object) -> str:
    return f"<torznab:attr name={quoteattr(name)} value={quoteattr(str(value))} />"


def _pub_date(when: datetime, flavour: Flavour) -> str:
    """RFC 822 in each flavour's own local offset (-0400 and +0100), to show only the instant counts."""
    offset = timezone(timedelta(hours=-4) if flavour == "prowlarr" else timedelta(hours=1))
    local = when.astimezone(offset)
    return local.strftime("%a, %d %b %Y %H:%M:%S ") + local.strftime("%z")


def _item_xml(item: TorznabItem, state: TorznabState, base: str, number: int) -> str:
    jackett = state.flavour == "jackett"
    if jackett:
        link = f"{base}/dl/standin/?jackett_apikey={state.api_key}&path=item{number}&file={number}.torrent"
    else:
        link = f"{base}/1/download?apikey={state.api_key}&link=item{number}&file={number}.torrent"
    magnet_wanted = item.magnet if item.magnet is not None else jackett
    magnet = f"magnet:?xt=urn:btih:{item.info_hash.upper()}&dn={item.title.replace(' ', '+')}"
    length = item.size if item.enclosure_length is None else item.enclosure_length
    parts = [
        f"<title>{escape(item.title)}</title>",
        f"<guid>{escape(f'{base}/details/{number}')}</guid>",
        (
            '<jackettindexer id="standin">Stand-in</jackettindexer><type>public</type>'
            if jackett
            else '<description /><prowlarrindexer id="1" type="public">Stand-in</prowlarrindexer>'
        ),
        f"<comments>{escape(f'{base}/details/{number}')}</comments>",
        f"<pubDate>{_pub_date(item.published, state.flavour)}</pubDate>",
        f"<size>{item.size}</size>",
        f"<link>{escape(link)}</link>",
        *(f"<category>{category}</category>" for category in item.categories),
        f'<enclosure url={quoteattr(link)} length="{length}" type="application/x-bittorrent" />',
        *(_attr("category", category) for category in item.categories),
    ]
    if item.imdb is not None:
        parts.append(_attr("imdb", f"{item.imdb:07d}"))
        if jackett:
            parts.append(_attr("imdbid", f"tt{item.imdb:07d}"))
    parts += [
        _attr("seeders", item.seeders),
        _attr("files", 1),
        _attr("grabs", 17),
        _attr("peers", item.seeders + item.leechers),
    ]
    if item.hash_form is not None:
        parts.append(_attr("infohash", written_hash(item, item.hash_form)))
    if magnet_wanted:
        parts.append(_attr("magneturl", magnet))
    parts += [_attr("downloadvolumefactor", 0), _attr("uploadvolumefactor", 1)]
    return "<item>" + "".join(parts) + "</item>"


def results_xml(state: TorznabState, base: str, query: MultiDict[str]) -> str:
    """The RSS answer to a search: every item (the stand-in does not filter), ``offset``/``limit`` kept."""
    offset = int(query.get("offset", "0") or 0)
    limit = int(query.get("limit", "100") or 100)
    items = state.items[offset : offset + limit]
    version = "2.0" if state.flavour == "jackett" else "1.0"
    body = "".join(_item_xml(item, state, base, offset + index) for index, item in enumerate(items))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<rss version="{version}" xmlns:atom="{ATOM_NS}" xmlns:torznab="{TORZNAB_NS}">'
        f'<channel><atom:link rel="self" type="application/rss+xml" /><title>Stand-in</title>'
        f"{body}</channel></rss>"
    )


def caps_xml(state: TorznabState) -> str:
    searching = "".join(
        f'<{name} available="no" supportedParams="q" />'
        if params is None
        else f'<{name} available="yes" supportedParams="{params}" />'
        for name, params in state.caps.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<caps>'
        '<server title="Stand-in" />'
        f'<limits default="100" max="{state.max_limit}" />'
        f"<searching>{searching}</searching>"
        '<categories><category id="2000" name="Movies" /><category id="5000" name="TV" />'
        '<category id="4000" name="PC" /></categories></caps>'
    )


def error_xml(code: int, description: str) -> str:
    attributes = f'code="{code}" description={quoteattr(description)}'
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<error {attributes} />'


def xxe_file_xml() -> str:
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f'<rss version="2.0" xmlns:torznab="{TORZNAB_NS}"><channel><item><title>&xxe;</title>'
        f"{_attr('infohash', info_hash('xxe'))}</item></channel></rss>\n"
    )


def xxe_http_xml(external_url: str) -> str:
    """An external DTD and an external entity, both on the entity host: a parser that fetches shows."""
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss SYSTEM "{external_url}/evil.dtd" '
        f'[<!ENTITY xxe SYSTEM "{external_url}/entity">]>\n'
        f'<rss version="2.0" xmlns:torznab="{TORZNAB_NS}"><channel><item><title>&xxe;</title>'
        f"{_attr('infohash', info_hash('xxe'))}</item></channel></rss>\n"
    )


def _misbehave(mode: Mode, state: TorznabState) -> web.Response | None:
    """The answer of a misbehaving mode, or None for ``results``."""
    xml = "application/xml"
    if mode == "error500":
        return web.Response(status=500, text="Internal Server Error")
    if mode == "html":
        return web.Response(text=CLOUDFLARE_PAGE, content_type="text/html")
    if mode == "html503":
        return web.Response(status=503, text=CLOUDFLARE_PAGE, content_type="text/html")
    if mode == "error":
        return web.Response(text=error_xml(*state.error), content_type=xml)
    if mode == "bomb":
        return web.Response(text=BILLION_LAUGHS, content_type=xml)
    if mode == "xxe_file":
        return web.Response(text=xxe_file_xml(), content_type=xml)
    if mode == "xxe_http":
        return web.Response(text=xxe_http_xml(state.external_url), content_type=xml)
    return None


async def _api(request: web.Request) -> web.Response:
    state = request.app[TORZNAB]
    state.requests.append(RecordedRequest(request.path, MultiDict(request.query)))
    if state.delay:
        await asyncio.sleep(state.delay)
    function = request.query.get("t", "")
    if request.query.get("apikey") != state.api_key:
        if state.flavour == "jackett":
            return web.Response(text=error_xml(100, "Invalid API Key"), content_type="application/xml")
        return web.Response(status=401)
    mode = state.caps_mode if function == "caps" and state.caps_mode is not None else state.mode
    failure = _misbehave(mode, state)
    if failure is not None:
        return failure
    if function == "caps":
        return web.Response(text=caps_xml(state), content_type="application/xml")
    if function not in ("search", "tvsearch", "movie"):
        return web.Response(
            text=error_xml(202, f"No such function ({function})"), content_type="application/xml"
        )
    base = f"{request.scheme}://{request.host}"
    return web.Response(
        text=results_xml(state, base, MultiDict(request.query)), content_type="application/rss+xml"
    )


def create_torznab_standin(state: TorznabState | None = None) -> web.Application:
    app = web.Application()
    app[TORZNAB] = state or TorznabState()
    app.router.add_get("/{indexer}/api", _api)
    app.router.add_get("/api/v2.0/indexers/{indexer}/results/torznab/api", _api)
    return app


def prowlarr_url(server: TestServer, api_key: str = API_KEY, indexer: int = 1) -> URL:
    return URL.build(
        scheme="http", host=server.host, port=server.port, path=f"/{indexer}/api", query={"apikey": api_key}
    )


def jackett_url(server: TestServer, api_key: str = API_KEY, indexer: str = "all") -> URL:
    return URL.build(
        scheme="http",
        host=server.host,
        port=server.port,
        path=f"/api/v2.0/indexers/{indexer}/results/torznab/api",
        query={"apikey": api_key},
    )


@dataclass
class EntityHostState:
    """Every path asked of the entity host: empty as long as no parser followed an external reference."""

    fetched: list[str] = field(default_factory=list)


ENTITY_HOST: web.AppKey[EntityHostState] = web.AppKey("entity_host", EntityHostState)


async def _entity(request: web.Request) -> web.Response:
    request.app[ENTITY_HOST].fetched.append(request.path)
    if request.path.endswith(".dtd"):
        return web.Response(text='<!ENTITY leak "fetched">', content_type="application/xml-dtd")
    return web.Response(text="fetched")


def create_entity_host(state: EntityHostState | None = None) -> web.Application:
    """A second server an external entity points at, recording whether anything fetched it."""
    app = web.Application()
    app[ENTITY_HOST] = state or EntityHostState()
    app.router.add_get("/{name:.*}", _entity)
    return app
