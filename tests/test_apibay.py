"""The apibay client: defensive parsing, clear errors, brief cache, single flight.

Edge cases run against aioresponses (MockedHTTP); the rest against the apibay stand-in on a real
socket, the way the gateway will meet apibay.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from gateway.apibay import (
    MAX_RESULTS,
    SEARCH_FIELDS,
    USER_AGENT,
    ApibayClient,
    validate_category,
)
from gateway.upstream import Failure, UpstreamError
from tests.apibay_standin import (
    SENTINEL_ROW,
    ApibayState,
    Reply,
    create_apibay_standin,
    default_rows,
    info_hash,
)
from tests.conftest import FakeClock, MockedHTTP, ServerFactory, free_port, server_url

BASE = URL("https://apibay.test")
ANY_SEARCH = re.compile(r"^https://apibay\.test/q\.php\?.*$")
HASH = "3B2F2C1D8E6A4F0B9C7D5E3F1A2B4C6D8E0F1A2B"


def row(**fields: Any) -> dict[str, Any]:
    """A complete apibay row, all strings, with ``fields`` replaced."""
    base: dict[str, Any] = {
        "id": "61234567",
        "name": "Example Movie (2025) [1080p]",
        "info_hash": HASH,
        "leechers": "10",
        "seeders": "100",
        "num_files": "1",
        "size": "2147483648",
        "username": "uploader123",
        "added": "1678886400",
        "status": "vip",
        "category": "207",
        "imdb": "tt1234567",
    }
    base.update(fields)
    return base


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(session: aiohttp.ClientSession, clock: FakeClock) -> ApibayClient:
    return ApibayClient(session, BASE, clock=clock)


def request_count(mocked: aioresponses) -> int:
    return sum(len(calls) for calls in mocked.requests.values())


def requested_urls(mocked: aioresponses) -> list[URL]:
    return [url for (_, url), calls in mocked.requests.items() for _ in calls]


# --- rows: every field a string ---------------------------------------------------------------


async def test_a_complete_row_comes_back_with_exactly_the_spec_fields(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[{**row(), "total_found": "1", "descr": "x"}])
        results = await client.search("example")
    assert results == [row()]
    assert tuple(results[0]) == SEARCH_FIELDS


async def test_numbers_become_decimal_strings_without_a_fraction(client: ApibayClient) -> None:
    raw = row(id=61234567, seeders=100, leechers=0, size=2147483648.0, added=1678886400, category=207)
    raw["num_files"] = 3.5
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[raw])
        [result] = await client.search("example")
    assert result["id"] == "61234567"
    assert result["seeders"] == "100"
    assert result["leechers"] == "0"
    assert result["size"] == "2147483648"
    assert result["added"] == "1678886400"
    assert result["category"] == "207"
    assert result["num_files"] == "3.5"
    assert all(isinstance(value, str) for value in result.values())


async def test_missing_optional_fields_become_empty_strings(client: ApibayClient) -> None:
    raw = {"id": "1", "name": "Bare", "info_hash": HASH}
    no_num_files = {key: value for key, value in row(id="2").items() if key != "num_files"}
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[raw, no_num_files])
        bare, no_files = await client.search("example")
    assert bare == {field: "" for field in SEARCH_FIELDS} | raw
    assert no_files["num_files"] == ""


async def test_nulls_booleans_and_nested_values_become_empty_strings(client: ApibayClient) -> None:
    raw = row(imdb=None, username=None, status=True, size=[1], category={"id": 207})
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[raw])
        [result] = await client.search("example")
    assert (result["imdb"], result["username"], result["status"], result["size"], result["category"]) == (
        "",
        "",
        "",
        "",
        "",
    )


async def test_html_entities_are_unescaped_in_name_and_username_only(client: ApibayClient) -> None:
    raw = row(
        name="Ubuntu Linux &amp; Linux Scripting &lt;img src=x onerror=alert(1)&gt; &#039;x&#39;",
        username="tom&amp;jerry",
        status="vip&amp;",
    )
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[raw])
        [result] = await client.search("ubuntu")
    assert result["name"] == "Ubuntu Linux & Linux Scripting <img src=x onerror=alert(1)> 'x'"
    assert result["username"] == "tom&jerry"
    assert result["status"] == "vip&amp;"


async def test_entities_are_unescaped_once_not_repeatedly(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row(name="AT&amp;amp;T")])
        [result] = await client.search("att")
    assert result["name"] == "AT&amp;T"


async def test_the_info_hash_is_passed_on_exactly_as_apibay_sent_it(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row(info_hash=HASH), row(id="2", info_hash=HASH.lower())])
        results = await client.search("example")
    assert [result["info_hash"] for result in results] == [HASH, HASH.lower()]


@pytest.mark.parametrize(
    "sentinel",
    [
        pytest.param(SENTINEL_ROW, id="the-real-sentinel"),
        pytest.param(row(id="0"), id="id-zero"),
        pytest.param(row(id=0), id="numeric-id-zero"),
        pytest.param(row(info_hash="0" * 40), id="all-zero-hash"),
    ],
)
async def test_the_no_results_sentinel_gives_an_empty_list(
    client: ApibayClient, sentinel: dict[str, Any]
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[sentinel])
        assert await client.search("nothing") == []


async def test_a_sentinel_among_real_rows_is_dropped(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row(id="1"), SENTINEL_ROW, row(id="2")])
        results = await client.search("example")
    assert [result["id"] for result in results] == ["1", "2"]


async def test_rows_that_are_not_objects_or_lack_id_name_or_hash_are_skipped(client: ApibayClient) -> None:
    payload: list[Any] = [
        "a string",
        17,
        None,
        ["id", "1"],
        {"name": "no id", "info_hash": HASH},
        row(id="2", name=None),
        row(id="3", info_hash=""),
        row(id="4", name=""),
        row(id="5"),
    ]
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=payload)
        results = await client.search("example")
    assert [result["id"] for result in results] == ["5"]


async def test_thirty_five_rows_are_cut_to_the_first_twenty(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row(id=str(n)) for n in range(1, 36)])
        results = await client.search("example")
    assert len(results) == MAX_RESULTS == 20
    assert [result["id"] for result in results] == [str(n) for n in range(1, 21)]


async def test_skipped_rows_do_not_count_towards_the_twenty(client: ApibayClient) -> None:
    payload: list[Any] = [None, SENTINEL_ROW] + [row(id=str(n)) for n in range(1, 36)]
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=payload)
        results = await client.search("example")
    assert [result["id"] for result in results] == [str(n) for n in range(1, 21)]


async def test_an_empty_array_is_an_empty_result(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[])
        assert await client.search("example") == []


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "kind"),
    [({"error": "x"}, "an object"), (42, "a number"), ("text", "a string"), (None, "null")],
)
async def test_json_that_is_not_a_list_is_an_apibay_error(
    client: ApibayClient, payload: Any, kind: str
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, body=json.dumps(payload), content_type="application/json")
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert (
        caught.value.reason == f"apibay answered with unexpected JSON ({kind} instead of a list of results)"
    )
    assert caught.value.kind is not Failure.TIMEOUT


async def test_an_html_page_with_status_200_is_an_apibay_error(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(
            ANY_SEARCH, body="<!DOCTYPE html><html><body>blocked</body></html>", content_type="text/html"
        )
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert caught.value.reason == "apibay answered with an HTML page instead of JSON"


async def test_json_labelled_as_html_is_still_read(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, body=json.dumps([row()]), content_type="text/html")
        assert await client.search("example") == [row()]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "apibay answered with an empty body instead of JSON"),
        ("1,2,3 oops", "apibay answered with something that is not JSON"),
        ("[{", "apibay answered with something that is not JSON"),
    ],
)
async def test_a_body_that_is_not_json_is_an_apibay_error(
    client: ApibayClient, body: str, reason: str
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, body=body, content_type="text/plain")
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert caught.value.reason == reason


async def test_a_cloudflare_522_page_is_an_apibay_error_naming_the_status(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(
            ANY_SEARCH,
            status=522,
            body="<html><title>522: Connection timed out</title></html>",
            content_type="text/html",
            headers={"Server": "cloudflare"},
        )
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert caught.value.reason == "apibay answered HTTP 522 (a Cloudflare error page)"


@pytest.mark.parametrize(
    ("status", "body", "content_type", "reason"),
    [
        (502, "<html>Bad gateway</html>", "text/html", "apibay answered HTTP 502 (an HTML error page)"),
        (403, "<html>nginx</html>", "text/plain", "apibay answered HTTP 403 (an HTML error page)"),
        (500, json.dumps([row()]), "application/json", "apibay answered HTTP 500"),
        (404, "", "text/plain", "apibay answered HTTP 404"),
    ],
)
async def test_any_status_but_200_is_an_apibay_error(
    client: ApibayClient, status: int, body: str, content_type: str, reason: str
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, status=status, body=body, content_type=content_type)
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert caught.value.reason == reason


async def test_a_timeout_is_an_apibay_error_saying_how_long_it_waited(session: aiohttp.ClientSession) -> None:
    client = ApibayClient(session, BASE, timeout=7.5)
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, exception=TimeoutError())
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert caught.value.reason == "apibay did not answer within 7.5 s"
    assert caught.value.kind is Failure.TIMEOUT


async def test_a_refused_connection_is_an_apibay_error_saying_unreachable(client: ApibayClient) -> None:
    key = ConnectionKey("apibay.test", 443, True, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, exception=refused)
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert caught.value.reason == "apibay is unreachable (connection refused)"
    assert caught.value.kind is not Failure.TIMEOUT


async def test_a_connection_dropped_mid_answer_is_an_apibay_error(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, exception=aiohttp.ServerDisconnectedError())
        with pytest.raises(UpstreamError) as caught:
            await client.search("example")
    assert caught.value.reason == "apibay broke off its answer (ServerDisconnectedError)"


@pytest.mark.parametrize("query", ["", "   "])
async def test_a_blank_query_is_refused_before_asking_apibay(client: ApibayClient, query: str) -> None:
    with MockedHTTP() as mocked, pytest.raises(ValueError, match="empty"):
        await client.search(query)
    assert request_count(mocked) == 0


async def test_a_bad_category_is_refused_before_asking_apibay(client: ApibayClient) -> None:
    with MockedHTTP() as mocked, pytest.raises(ValueError, match="cat must be"):
        await client.search("example", "201;drop")
    assert request_count(mocked) == 0


async def test_a_query_that_cannot_be_utf8_encoded_is_refused(client: ApibayClient) -> None:
    with MockedHTTP() as mocked, pytest.raises(ValueError, match="not valid text"):
        await client.search("bad \udcff")
    assert request_count(mocked) == 0


# --- the request ------------------------------------------------------------------------------


async def test_the_request_goes_to_q_php_with_q_and_the_normalised_category(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[])
        await client.search("example", " 201, 207 ")
    [url] = requested_urls(mocked)
    assert url.path == "/q.php"
    assert dict(url.query) == {"q": "example", "cat": "201,207"}


async def test_a_mirror_under_a_path_is_asked_under_that_path(session: aiohttp.ClientSession) -> None:
    client = ApibayClient(session, URL("https://mirror.test/tpb/?ignored=1#frag"))
    with MockedHTTP() as mocked:
        mocked.get(re.compile(r"^https://mirror\.test/tpb/q\.php\?.*$"), payload=[])
        await client.search("example")
    [url] = requested_urls(mocked)
    assert url.path == "/tpb/q.php"
    assert set(url.query) == {"q", "cat"}


# --- cache and single flight ------------------------------------------------------------------


async def test_a_repeated_search_within_the_ttl_is_answered_from_the_cache(
    client: ApibayClient, clock: FakeClock
) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row()], repeat=True)
        first = await client.search("example")
        clock.now += 59.9
        second = await client.search("example")
    assert first == second == [row()]
    assert request_count(mocked) == 1


async def test_a_search_after_the_ttl_asks_apibay_again(client: ApibayClient, clock: FakeClock) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row(id="1")])
        mocked.get(ANY_SEARCH, payload=[row(id="2")])
        assert (await client.search("example"))[0]["id"] == "1"
        clock.now += 60.0
        assert (await client.search("example"))[0]["id"] == "2"
    assert request_count(mocked) == 2


async def test_errors_are_not_cached(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, status=522, body="<html></html>", content_type="text/html")
        mocked.get(ANY_SEARCH, payload=[row()])
        with pytest.raises(UpstreamError):
            await client.search("example")
        assert await client.search("example") == [row()]
    assert request_count(mocked) == 2


async def test_the_cache_is_per_query_and_category(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row()], repeat=True)
        await client.search("example")
        await client.search("example", "0")
        await client.search("example", "")
        await client.search("example", "201,207")
        await client.search("example", "201, 207")
        await client.search("other")
    assert request_count(mocked) == 3


async def test_the_cache_forgets_the_least_recently_used_search_first(
    session: aiohttp.ClientSession,
) -> None:
    client = ApibayClient(session, BASE, max_cached=2)
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row()], repeat=True)
        await client.search("a")
        await client.search("b")
        await client.search("a")  # cached, and now the most recent
        await client.search("c")  # evicts b
        assert request_count(mocked) == 3
        await client.search("a")
        assert request_count(mocked) == 3
        await client.search("b")
        assert request_count(mocked) == 4


async def test_a_zero_ttl_disables_the_cache(session: aiohttp.ClientSession) -> None:
    client = ApibayClient(session, BASE, cache_ttl=0)
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row()], repeat=True)
        await client.search("example")
        await client.search("example")
    assert request_count(mocked) == 2


async def test_changing_returned_rows_does_not_change_the_cache(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row()], repeat=True)
        first = await client.search("example")
        first[0]["name"] = "changed"
        first.clear()
        assert await client.search("example") == [row()]


async def test_two_concurrent_identical_searches_make_one_request(client: ApibayClient) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(url: URL, **kwargs: Any) -> None:
        started.set()
        await release.wait()

    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row()], callback=slow)
        first = asyncio.create_task(client.search("example"))
        second = asyncio.create_task(client.search("example"))
        await started.wait()
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(first, second)
    assert list(results) == [[row()], [row()]]
    assert results[0] is not results[1]
    assert request_count(mocked) == 1


async def test_a_shared_failure_reaches_every_waiter_and_is_not_cached(client: ApibayClient) -> None:
    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, exception=TimeoutError())
        mocked.get(ANY_SEARCH, payload=[row()])
        outcomes = await asyncio.gather(
            client.search("example"), client.search("example"), return_exceptions=True
        )
        assert all(isinstance(outcome, UpstreamError) for outcome in outcomes)
        assert await client.search("example") == [row()]
    assert request_count(mocked) == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_search_for_others(client: ApibayClient) -> None:
    release = asyncio.Event()

    async def slow(url: URL, **kwargs: Any) -> None:
        await release.wait()

    with MockedHTTP() as mocked:
        mocked.get(ANY_SEARCH, payload=[row()], callback=slow)
        leaving = asyncio.create_task(client.search("example"))
        staying = asyncio.create_task(client.search("example"))
        await asyncio.sleep(0.01)
        leaving.cancel()
        release.set()
        assert await staying == [row()]
        assert leaving.cancelled()
    assert request_count(mocked) == 1


# --- validate_category ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0", "0"),
        ("201", "201"),
        ("201,207", "201,207"),
        ("100,200,300", "100,200,300"),
        ("", "0"),
        ("   ", "0"),
        (" 201 ", "201"),
        ("201, 207", "201,207"),
        ("201 ,207", "201,207"),
    ],
)
def test_validate_category_accepts_codes_and_comma_lists(given: str, expected: str) -> None:
    assert validate_category(given) == expected


@pytest.mark.parametrize(
    "given",
    ["abc", "201;drop", "1 2", "-1", "+1", "201,,207", "201,", ",201", "2010", "201.0", "٢٠١", "0x1"],
)
def test_validate_category_refuses_anything_else(given: str) -> None:
    with pytest.raises(ValueError, match="cat must be a category code or a comma-separated list"):
        validate_category(given)


def test_validate_category_refuses_absurdly_long_lists() -> None:
    with pytest.raises(ValueError, match="at most 100"):
        validate_category(",".join(["201"] * 101))


# --- against the stand-in on a real socket ----------------------------------------------------


@pytest.fixture
def apibay_state() -> ApibayState:
    return ApibayState()


@pytest.fixture
async def apibay(aiohttp_server: ServerFactory, apibay_state: ApibayState) -> TestServer:
    return await aiohttp_server(create_apibay_standin(apibay_state))


@pytest.fixture
def make_client(session: aiohttp.ClientSession, apibay: TestServer) -> Callable[..., ApibayClient]:
    def make(**options: Any) -> ApibayClient:
        return ApibayClient(session, server_url(apibay), **options)

    return make


async def test_the_standin_s_35_results_become_20_rows_of_strings(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    results = await make_client().search("ubuntu")
    assert len(apibay_state.rows) == 35
    assert len(results) == 20
    for result in results:
        assert tuple(result) == SEARCH_FIELDS
        assert all(isinstance(value, str) for value in result.values())
    assert [result["id"] for result in results] == [raw["id"] for raw in default_rows()[:20]]
    assert results[0]["info_hash"] == info_hash("standin-row-0")
    assert results[0]["info_hash"].isupper()


async def test_the_standin_sentinel_gives_an_empty_list(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    apibay_state.mode = "sentinel"
    assert await make_client().search("nothing at all") == []


async def test_a_category_without_matches_gives_the_sentinel_and_so_an_empty_list(
    make_client: Callable[..., ApibayClient],
) -> None:
    assert await make_client().search("ubuntu", "699") == []


async def test_the_standin_honours_categories_like_apibay(make_client: Callable[..., ApibayClient]) -> None:
    client = make_client()
    movies = await client.search("movie", "201")
    assert movies
    assert {result["category"] for result in movies} == {"201"}
    video = await client.search("movie", "200")
    assert {result["category"][0] for result in video} == {"2"}


async def test_entities_from_the_standin_are_unescaped(make_client: Callable[..., ApibayClient]) -> None:
    results = await make_client().search("ubuntu")
    names = [result["name"] for result in results]
    assert "Ubuntu Linux & Linux Scripting" in names
    assert "<img src=x onerror=alert(1)>" in names
    assert "Schindler's List (1993) [1080p]" in names
    assert results[0]["username"] == "linux&friends"


async def test_rows_without_num_files_get_an_empty_string(make_client: Callable[..., ApibayClient]) -> None:
    results = await make_client().search("ubuntu")
    assert "num_files" not in default_rows()[2]
    assert results[2]["num_files"] == ""
    assert results[0]["num_files"] == "1"


async def test_the_standin_522_page_is_an_apibay_error_mentioning_522(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    apibay_state.responses["down"] = "cloudflare"
    with pytest.raises(UpstreamError, match="522") as caught:
        await make_client().search("down")
    assert caught.value.reason == "apibay answered HTTP 522 (a Cloudflare error page)"


async def test_the_standin_html_page_is_an_apibay_error(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    apibay_state.responses["blocked"] = "html"
    with pytest.raises(UpstreamError, match="HTML page instead of JSON"):
        await make_client().search("blocked")


async def test_the_standin_non_list_json_is_an_apibay_error(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    apibay_state.responses["odd"] = "not_list"
    apibay_state.responses["count"] = Reply("json", payload=17)
    client = make_client()
    with pytest.raises(UpstreamError, match="an object instead of a list"):
        await client.search("odd")
    with pytest.raises(UpstreamError, match="a number instead of a list"):
        await client.search("count")


async def test_slowness_beyond_the_timeout_is_an_apibay_error_about_time(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    apibay_state.responses["slow"] = Reply(delay=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamError) as caught:
        await make_client(timeout=0.3).search("slow")
    assert caught.value.reason == "apibay did not answer within 0.3 s"
    assert caught.value.kind is Failure.TIMEOUT
    assert loop.time() - started < 2


async def test_an_oversized_answer_is_an_apibay_error_even_when_compressed(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    apibay_state.responses["huge"] = Reply("json", payload=["x" * (5 * 1024 * 1024)])
    with pytest.raises(UpstreamError) as caught:
        await make_client().search("huge")
    assert caught.value.reason == "apibay answered with more than 4 MiB"
    [request] = apibay_state.requests
    assert "gzip" in request.headers["Accept-Encoding"]


async def test_a_closed_port_is_an_apibay_error_saying_unreachable(session: aiohttp.ClientSession) -> None:
    client = ApibayClient(session, URL(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(UpstreamError, match=r"^apibay is unreachable \(.+\)$"):
        await client.search("example")


@pytest.mark.parametrize(
    "query",
    [
        "two words",
        "tom & jerry",
        "c++ primer",
        "a+b=c",
        "Amélie 東京 ü",
        "50% off #1 /path?x=y",
        "q=x&cat=600",
    ],
)
async def test_the_query_reaches_apibay_exactly_as_typed(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState, query: str
) -> None:
    await make_client().search(query, "201,207")
    [request] = apibay_state.requests
    assert request.q == query
    assert request.cat == "201,207"
    raw = request.query_string
    assert raw.startswith("q=")
    assert raw.endswith("&cat=201,207")
    if "+" in query:
        assert "%2B" in raw  # a literal plus must not turn into a space
    if "&" in query:
        assert "%26" in raw


async def test_the_request_says_who_is_asking_and_wants_json(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    await make_client().search("example")
    [request] = apibay_state.requests
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("jellyfin-torrent-gateway/")
    assert "Cookie" not in request.headers


async def test_it_works_over_a_session_like_the_gateways_own(
    apibay: TestServer, apibay_state: ApibayState
) -> None:
    """The gateway's upstream session skips auto headers and decompression; the client must not care."""
    async with aiohttp.ClientSession(
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=0.001),
    ) as session:
        results = await ApibayClient(session, server_url(apibay)).search("ubuntu")
    assert len(results) == 20
    [request] = apibay_state.requests
    assert request.headers["User-Agent"] == USER_AGENT
    assert "gzip" in request.headers["Accept-Encoding"]


async def test_the_standin_really_compresses_when_asked(apibay: TestServer) -> None:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(server_url(apibay, "/q.php?q=x&cat=0"), headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.headers["Content-Encoding"] == "gzip"
        rows = json.loads(gzip.decompress(await response.read()))
    assert len(rows) == 35


async def test_concurrent_identical_searches_reach_the_standin_once(
    make_client: Callable[..., ApibayClient], apibay_state: ApibayState
) -> None:
    apibay_state.delay = 0.1
    client = make_client()
    results = await asyncio.gather(*(client.search("ubuntu") for _ in range(5)))
    assert all(len(result) == 20 for result in results)
    assert apibay_state.calls["ubuntu"] == 1
    await client.search("ubuntu")
    assert apibay_state.total_calls == 1
