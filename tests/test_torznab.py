"""The Torznab client against Prowlarr- and Jackett-flavoured stand-ins on real sockets.

Both flavours must come out as the same results; hostile XML must be refused before it expands or
reaches out; the API key in the indexer's URL must never reach a reason or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import resource
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.settings import TorznabIndexer
from gateway.torznab import (
    OPEN_SECONDS,
    TorznabClient,
    TorznabResult,
    magnet_info_hash,
    normalize_imdb,
    normalize_info_hash,
)
from gateway.upstream import Failure, UpstreamError
from tests.conftest import FakeClock, ServerFactory, server_url
from tests.torznab_standin import (
    API_KEY,
    EntityHostState,
    TorznabItem,
    TorznabState,
    create_entity_host,
    create_torznab_standin,
    default_items,
    info_hash,
    jackett_url,
    prowlarr_url,
)

MiB = 1024 * 1024


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def standin(aiohttp_server: ServerFactory, state: TorznabState) -> TestServer:
    return await aiohttp_server(create_torznab_standin(state))


def client_for(
    session: aiohttp.ClientSession,
    server: TestServer,
    state: TorznabState,
    *,
    api_key: str = API_KEY,
    timeout: float = 5.0,
    clock: FakeClock | None = None,
    max_reply: int = 8 * MiB,
) -> TorznabClient:
    url = jackett_url(server, api_key) if state.flavour == "jackett" else prowlarr_url(server, api_key)
    return TorznabClient(
        session,
        TorznabIndexer(state.flavour, url),
        timeout=timeout,
        max_reply=max_reply,
        clock=clock or FakeClock(),
    )


def expected(item: TorznabItem) -> TorznabResult:
    return TorznabResult(
        name=item.title,
        info_hash=item.info_hash,
        size=item.size,
        seeders=item.seeders,
        leechers=item.leechers,
        added=item.published,
        imdb=f"tt{item.imdb:07d}" if item.imdb else None,
    )


async def test_prowlarr_and_jackett_answers_come_out_as_the_same_normalised_results(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    results: dict[str, list[TorznabResult]] = {}
    for flavour in ("prowlarr", "jackett"):
        state = TorznabState(flavour=flavour)
        server = await standin(aiohttp_server, state)
        results[flavour] = await client_for(session, server, state).search("matrix")

    assert results["prowlarr"] == results["jackett"] == [expected(item) for item in default_items()]
    first = results["prowlarr"][0]
    assert first.added is not None
    assert first.added.tzinfo is not None
    assert first.added == datetime(2015, 3, 14, 17, 10, 42, tzinfo=timezone(timedelta(hours=-4)))


async def test_upper_case_and_base32_hashes_become_lower_case_hex_and_size_is_not_the_enclosures(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    items = default_items()
    assert (items[1].hash_form, items[1].enclosure_length, items[2].hash_form) == ("upper", 31_337, "base32")
    state = TorznabState(items=items[1:3])
    server = await standin(aiohttp_server, state)

    upper, base32 = await client_for(session, server, state).search("x")

    assert (upper.info_hash, upper.size) == (items[1].info_hash, items[1].size)
    assert base32.info_hash == items[2].info_hash
    assert base32.imdb == "tt0000001"  # Prowlarr's "0000001"


async def test_an_item_with_only_a_magnet_gets_its_hash_from_the_magnet(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    item = TorznabItem("Magnet only", info_hash("m"), 1, 1, 0, datetime.now(UTC), hash_form=None, magnet=True)
    state = TorznabState(flavour="jackett", items=[item])
    server = await standin(aiohttp_server, state)

    [result] = await client_for(session, server, state).search("magnet")

    assert result.info_hash == item.info_hash


async def test_items_with_neither_an_infohash_nor_a_magnet_are_dropped(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    hashless = TorznabItem("No hash", info_hash("h"), 1, 1, 0, datetime.now(UTC), hash_form=None)
    state = TorznabState(items=[hashless, *default_items()[:1], hashless])
    server = await standin(aiohttp_server, state)

    results = await client_for(session, server, state).search("x")

    assert [result.name for result in results] == [default_items()[0].title]


async def test_caps_are_read_once_for_many_searches_even_concurrent_ones(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState()
    server = await standin(aiohttp_server, state)
    client = client_for(session, server, state)

    await asyncio.gather(*(client.search(f"q{n}") for n in range(5)))
    await client.search("again", kind="movie")

    assert state.functions().count("caps") == 1
    assert len(state.searches()) == 6


@pytest.mark.parametrize(
    ("kind", "arguments", "want"),
    [
        ("any", {}, {"t": "search", "q": "matrix", "limit": "100"}),
        (
            "movie",
            {"imdb": "133093"},
            {"t": "movie", "q": "matrix", "imdbid": "tt0133093", "cat": "2000", "limit": "100"},
        ),
        (
            "tv",
            {"season": 1, "episode": 2, "imdb": "tt0944947"},
            {
                "t": "tvsearch",
                "q": "matrix",
                "season": "1",
                "ep": "2",
                "imdbid": "tt0944947",
                "cat": "5000",
                "limit": "100",
            },
        ),
    ],
)
async def test_each_kind_of_search_uses_its_function_and_parameters(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    kind: str,
    arguments: dict[str, object],
    want: dict[str, str],
) -> None:
    state = TorznabState()
    server = await standin(aiohttp_server, state)

    await client_for(session, server, state).search("matrix", kind=kind, **arguments)  # type: ignore[arg-type]

    [asked] = state.searches()
    assert {key: value for key, value in asked.items() if key != "apikey"} == want


async def test_without_tv_search_in_caps_the_season_and_episode_go_into_a_plain_search(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState(caps={"search": "q", "tv-search": None, "movie-search": "q"})
    server = await standin(aiohttp_server, state)

    await client_for(session, server, state).search("Show", kind="tv", season=3, episode=7, imdb="tt1")

    [asked] = state.searches()
    assert (asked["t"], asked["q"], asked["cat"]) == ("search", "Show S03E07", "5000")
    assert not {"season", "ep", "imdbid"} & asked.keys()


async def test_an_imdb_id_is_sent_only_where_caps_support_it(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState(caps={"search": "q", "movie-search": "q"})
    server = await standin(aiohttp_server, state)

    await client_for(session, server, state).search("matrix", kind="movie", imdb="tt0133093")

    [asked] = state.searches()
    assert asked["t"] == "movie"
    assert "imdbid" not in asked


@pytest.mark.parametrize(
    ("caps", "want"),
    [
        (None, {"t": "movie", "imdbid": "tt0133093", "cat": "2000", "limit": "100"}),
        (
            {"search": "q", "movie-search": "q"},
            {"t": "movie", "q": "tt0133093", "cat": "2000", "limit": "100"},
        ),
    ],
)
async def test_an_imdb_id_alone_is_searched_by_id_or_else_as_text(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    caps: dict[str, str | None] | None,
    want: dict[str, str],
) -> None:
    state = TorznabState() if caps is None else TorznabState(caps=caps)
    server = await standin(aiohttp_server, state)

    await client_for(session, server, state).search("", kind="movie", imdb="133093")

    [asked] = state.searches()
    assert {key: value for key, value in asked.items() if key != "apikey"} == want


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"query": " "}, "needs a query or an IMDb id"),
        ({"query": "x", "imdb": "nm0000001"}, "not an IMDb id"),
        ({"query": "x", "kind": "music"}, "kind must be movie, tv or any"),
        ({"query": "x", "season": -1}, "season must not be negative"),
        ({"query": "x", "limit": 0}, "limit must be at least 1"),
    ],
)
async def test_bad_arguments_are_refused_without_asking_the_indexer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, arguments: dict[str, Any], message: str
) -> None:
    state = TorznabState()
    server = await standin(aiohttp_server, state)

    with pytest.raises(ValueError, match=message):
        await client_for(session, server, state).search(**arguments)

    assert state.requests == []


async def test_the_limit_is_kept_within_the_indexers_maximum_and_the_results_within_the_limit(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState(max_limit=50)
    server = await standin(aiohttp_server, state)
    client = client_for(session, server, state)

    assert len(await client.search("x", limit=2)) == 2
    await client.search("x", limit=500)

    assert [asked["limit"] for asked in state.searches()] == ["2", "50"]


async def test_unreadable_caps_fall_back_to_plain_search_and_are_asked_again_later(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    state = TorznabState(caps_mode="error500")
    server = await standin(aiohttp_server, state)
    client = client_for(session, server, state, clock=clock)

    assert len(await client.search("x", kind="movie", imdb="tt0133093")) == 4
    await client.search("x", kind="movie")
    state.caps_mode = None
    clock.now += 61
    await client.search("x", kind="movie", imdb="tt0133093")

    assert state.functions() == ["caps", "search", "search", "caps", "movie"]


@pytest.mark.parametrize(
    ("flavour", "mode", "wrong_key", "kind", "reason"),
    [
        ("prowlarr", "results", True, Failure.REFUSED, "Torznab prowlarr answered HTTP 401 (wrong API key?)"),
        ("jackett", "results", True, Failure.REFUSED, "Torznab jackett answered error 100: Invalid API Key"),
        (
            "jackett",
            "error",
            False,
            Failure.BAD_REPLY,
            "Torznab jackett answered error 900: Something went wrong",
        ),
        ("prowlarr", "html", False, Failure.BAD_REPLY, "Torznab prowlarr answered an HTML page"),
        (
            "prowlarr",
            "html503",
            False,
            Failure.BAD_REPLY,
            "Torznab prowlarr answered HTTP 503 (an HTML page)",
        ),
        ("jackett", "error500", False, Failure.BAD_REPLY, "Torznab jackett answered HTTP 500"),
    ],
)
async def test_failures_become_upstream_errors_that_never_show_the_key(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    flavour: str,
    mode: str,
    wrong_key: bool,
    kind: Failure,
    reason: str,
) -> None:
    state = TorznabState(flavour=flavour, mode=mode)  # type: ignore[arg-type]
    server = await standin(aiohttp_server, state)
    key = "wrong-secret-key-42" if wrong_key else API_KEY
    client = client_for(session, server, state, api_key=key)

    with pytest.raises(UpstreamError) as caught:
        await client.search("matrix")

    assert (caught.value.kind, caught.value.reason) == (kind, reason)
    assert key not in str(caught.value)
    assert "apikey" not in str(caught.value)


async def test_a_slow_indexer_times_out_with_a_reason_that_names_only_the_indexer(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState(delay=5)
    server = await standin(aiohttp_server, state)
    client = client_for(session, server, state, timeout=0.3)

    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await client.search("matrix")

    assert time.monotonic() - started < 2
    assert caught.value.kind is Failure.TIMEOUT
    assert caught.value.reason == "Torznab prowlarr did not answer within 0.3 s"


async def test_an_answer_larger_than_the_cap_is_refused(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState(items=default_items() * 50)
    server = await standin(aiohttp_server, state)

    with pytest.raises(UpstreamError) as caught:
        await client_for(session, server, state, max_reply=64 * 1024).search("x")

    assert caught.value.kind is Failure.BAD_REPLY
    assert caught.value.reason == "Torznab prowlarr answered the search with more than 64 KiB"


async def refused_within_bounds(client: TorznabClient) -> UpstreamError:
    """The search's error, asserting it came fast and without growing memory by more than 4 MiB."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await client.search("x")
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    assert elapsed < 1
    assert peak < 4 * MiB, f"traced peak {peak} bytes"
    assert rss_growth < 16 * MiB, f"max RSS grew {rss_growth} bytes"
    return caught.value


async def test_a_billion_laughs_bomb_is_refused_before_it_expands(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState(caps_mode="results", mode="bomb")
    server = await standin(aiohttp_server, state)

    error = await refused_within_bounds(client_for(session, server, state))

    assert error.kind is Failure.BAD_REPLY
    assert error.reason == "Torznab prowlarr refused: its answer has a document type declaration"


async def test_an_external_entity_on_a_local_file_is_refused(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    state = TorznabState(caps_mode="results", mode="xxe_file")
    server = await standin(aiohttp_server, state)

    error = await refused_within_bounds(client_for(session, server, state))

    assert error.reason == "Torznab prowlarr refused: its answer has a document type declaration"
    assert "root:" not in error.reason


async def test_an_external_entity_on_another_server_is_never_fetched(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    entity_host = EntityHostState()
    target = await aiohttp_server(create_entity_host(entity_host))
    state = TorznabState(caps_mode="xxe_http", mode="xxe_http", external_url=str(server_url(target)))
    server = await standin(aiohttp_server, state)

    error = await refused_within_bounds(client_for(session, server, state))
    await asyncio.sleep(0.1)  # a fetch, had one started, would have reached the host by now

    assert error.reason == "Torznab prowlarr refused: its answer has a document type declaration"
    assert entity_host.fetched == []
    assert state.functions() == ["caps", "search"]  # refused caps fall back to search, refused too


async def test_after_three_failures_in_a_row_the_indexer_is_skipped_then_tried_once_again(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    state = TorznabState(mode="error500")
    server = await standin(aiohttp_server, state)
    client = client_for(session, server, state, clock=clock)

    for _ in range(3):
        with pytest.raises(UpstreamError, match="answered HTTP 500"):
            await client.search("x")
    asked = len(state.searches())
    clock.now += OPEN_SECONDS - 1
    with pytest.raises(UpstreamError) as skipped:
        await client.search("x")
    assert skipped.value.reason == "Torznab prowlarr skipped for 1 s after 3 failures in a row"
    assert len(state.searches()) == asked

    clock.now += 1  # half-open: one try, which fails and opens the breaker again at once
    with pytest.raises(UpstreamError, match="answered HTTP 500"):
        await client.search("x")
    with pytest.raises(UpstreamError, match="skipped for 30 s"):
        await client.search("x")
    assert len(state.searches()) == asked + 1

    clock.now += OPEN_SECONDS
    state.mode = "results"
    assert await client.search("x")  # the try succeeds and closes the breaker
    state.mode = "error500"
    for _ in range(2):
        with pytest.raises(UpstreamError, match="answered HTTP 500"):
            await client.search("x")
    assert len(state.searches()) == asked + 4


async def test_debug_logging_tells_what_was_searched_but_never_the_key(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    state = TorznabState(flavour="jackett")
    server = await standin(aiohttp_server, state)
    client = client_for(session, server, state, timeout=0.3)

    await client.search("matrix", kind="movie", imdb="tt0133093")
    state.mode = "xxe_http"
    with pytest.raises(UpstreamError):
        await client.search("matrix")
    state.delay = 1
    with pytest.raises(UpstreamError):
        await client.search("matrix")  # a timeout: its warning names the address, without the query

    messages = [record.getMessage() for record in caplog.records if record.name.startswith("gateway")]
    assert any("movie" in message and "'matrix'" in message and "kept 4" in message for message in messages)
    assert any("did not answer" in message for message in messages)
    assert not [message for message in messages if API_KEY in message or "apikey" in message]


def test_an_indexers_repr_does_not_show_its_key() -> None:
    indexer = TorznabIndexer("prowlarr", URL(f"http://prowlarr:9696/1/api?apikey={API_KEY}"))

    assert API_KEY not in repr(indexer)


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("3B2F2C1D8E6A4F0B9C7D5E3F1A2B4C6D8E0F1A2B", "3b2f2c1d8e6a4f0b9c7d5e3f1a2b4c6d8e0f1a2b"),
        (" 3b2f2c1d8e6a4f0b9c7d5e3f1a2b4c6d8e0f1a2b ", "3b2f2c1d8e6a4f0b9c7d5e3f1a2b4c6d8e0f1a2b"),
        ("3b2f2c1d8e6a4f0b9c7d5e3f1a2b4c6d8e0f1a2", None),
        ("0123456789ABCDEFGHIJKLMNOPQRSTU1", None),  # 32 characters, but 1 is not base32
        ("", None),
    ],
)
def test_info_hashes_are_normalised_to_lower_case_hex(written: str, normal: str | None) -> None:
    assert normalize_info_hash(written) == normal


def test_a_base32_hash_is_the_same_hash_as_its_hex() -> None:
    hex_hash = info_hash("b32")
    assert normalize_info_hash(base64.b32encode(bytes.fromhex(hex_hash)).decode()) == hex_hash
    assert normalize_info_hash(base64.b32encode(bytes.fromhex(hex_hash)).decode().lower()) == hex_hash


@pytest.mark.parametrize(
    ("magnet", "normal"),
    [
        (f"magnet:?xt=urn:btih:{info_hash('a').upper()}&dn=x", info_hash("a")),
        (f"magnet:?dn=x&xt=urn%3Abtih%3A{info_hash('a')}", info_hash("a")),
        ("magnet:?xt=urn:btmh:1220abcd&dn=v2-only", None),
        (f"http://indexer/download?xt=urn:btih:{info_hash('a')}", None),
    ],
)
def test_the_hash_is_read_from_a_magnet_and_nothing_else(magnet: str, normal: str | None) -> None:
    assert magnet_info_hash(magnet) == normal


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("0000001", "tt0000001"),
        ("tt0133093", "tt0133093"),
        ("133093", "tt0133093"),
        ("tt12345678", "tt12345678"),
        ("0", None),
        ("", None),
        ("tt", None),
        ("nm0000001", None),
    ],
)
def test_imdb_ids_become_tt_and_at_least_seven_digits(written: str, normal: str | None) -> None:
    assert normalize_imdb(written) == normal


@pytest.mark.parametrize(
    "body",
    [
        # An entity used without a declaration: nothing to expand it with.
        b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>&xxe;</title></item></channel></rss>',
        # A declaration in another encoding, hiding its markup from a byte scan: defusedxml decides.
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE rss [<!ENTITY a "b">]><rss>&a;</rss>'.encode(
            "utf-16"
        ),
        '<?xml version="1.0" encoding="cp037"?><!DOCTYPE rss [<!ENTITY a "b">]><rss>&a;</rss>'.encode(
            "cp037"
        ),
        # Not the keyword XML knows: a syntax error, never a declaration.
        b'<?xml version="1.0"?><!doctype rss [<!ENTITY a "b">]><rss>&a;</rss>',
    ],
)
async def test_documents_that_would_need_a_declaration_to_mean_anything_are_refused(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, body: bytes
) -> None:
    async def answer(request: web.Request) -> web.Response:
        if request.query.get("t") == "caps":
            return web.Response(text="<caps><searching><search available='yes'/></searching></caps>")
        return web.Response(body=body, content_type="application/xml")

    app = web.Application()
    app.router.add_get("/1/api", answer)
    server = await aiohttp_server(app)
    client = TorznabClient(session, TorznabIndexer("raw", prowlarr_url(server)), timeout=5, clock=FakeClock())
    error = await refused_within_bounds(client)
    assert error.kind is Failure.BAD_REPLY
    assert "refused" in error.reason or "not XML" in error.reason
