"""The library index: what Jellyfin already has, read from a real stand-in over a real socket."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.jellyfin import JellyfinClient
from gateway.library_index import InLibrary, LibraryIndex, normalise_title
from gateway.upstream import Failure, UpstreamError
from tests.conftest import server_url, wait_until
from tests.jellyfin_standin import (
    ROUTES,
    Handler,
    Item,
    RequestContext,
    Route,
    StandinState,
    error_response,
    jellyfin_item_id,
)

ALIEN = "/media/movies/Alien (1979) [imdbid-tt0078748]/Alien.1979.2160p.mkv"
BREAKING_BAD = "/media/tv/Breaking Bad (2008) [imdbid-tt0903747]"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """The local directory behind Jellyfin's ``/media``."""
    return tmp_path / "media"


@pytest.fixture
def standin_state(disk: Path) -> StandinState:
    state = StandinState()
    state.filesystem = {"/media": disk}
    return state


@pytest.fixture
async def client(jellyfin: TestServer) -> AsyncIterator[JellyfinClient]:
    async with aiohttp.ClientSession() as session:
        yield JellyfinClient(session, server_url(jellyfin), connect_timeout=1)


@pytest.fixture
def api_key(standin_state: StandinState) -> str:
    return standin_state.api_key_for("gateway")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def index(client: JellyfinClient, clock: Clock) -> AsyncIterator[LibraryIndex]:
    library = LibraryIndex(client, clock=clock)
    yield library
    await library.close()


def put(state: StandinState, disk: Path, *jellyfin_paths: str) -> None:
    """Create (empty) files at these ``/media/…`` paths and let the stand-in scan them."""
    for path in jellyfin_paths:
        local = disk / path.removeprefix("/media/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.touch()
    state.scan_libraries()


def movie(title: str, year: int | None, *, size: tuple[int, int] | None = None, imdb: str = "") -> Item:
    path = f"/media/movies/{title} ({year})/{title}.mkv"
    ids = {"Imdb": imdb} if imdb else {}
    return Item("Movie", title, path, jellyfin_item_id("Movie", path), None, year, ids, video_size=size)


def insert(state: StandinState, *items: Item) -> None:
    state.items.update({item.id: item for item in items})


def items_calls(state: StandinState) -> int:
    return state.calls["GET /items"]


def serve_items_with(jellyfin: TestServer, wrap: Callable[[Handler], Handler]) -> None:
    """Replace the stand-in's ``GET /Items`` handler by ``wrap(handler)``."""
    routes = jellyfin.app[ROUTES]
    for number, row in enumerate(routes):
        if row.template == "/Items":
            routes[number] = Route(row.methods, row.template, row.policy, wrap(row.handler))


def failing(_: Handler) -> Handler:
    async def answer_500(ctx: RequestContext) -> web.StreamResponse:
        return error_response(500)

    return answer_500


def slowed(seconds: float) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def slow(ctx: RequestContext) -> web.StreamResponse:
            await asyncio.sleep(seconds)
            return await handler(ctx)

        return slow

    return wrap


def find(
    index: LibraryIndex,
    title: str | None = None,
    year: int | None = None,
    *,
    imdb: str | None = None,
    season: int | None = None,
    episode: int | None = None,
    kind: str = "movie",
) -> InLibrary | None:
    return index.match(imdb=imdb, title=title, year=year, season=season, episode=episode, kind=kind)


# ---------------------------------------------------------------------------
# Titles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "key"),
    [
        ("Schindler's List", "schindlers list"),
        ("Schindlers List", "schindlers list"),
        ("schindlers.list", "schindlers list"),
        ("Schindler’s List", "schindlers list"),
        ("Amélie", "amelie"),
        ("The Lord of the Rings: The Fellowship", "lord of the rings the fellowship"),
        ("A Quiet Place", "quiet place"),
        ("An American Werewolf in London", "american werewolf in london"),
        ("Law & Order", "law and order"),
        ("Spider-Man:  No Way Home", "spider man no way home"),
        ("The", "the"),
        ("ＡＢＣ", "abc"),
    ],
)
def test_titles_normalise_to_one_key_whatever_their_punctuation_accents_and_articles(
    title: str, key: str
) -> None:
    assert normalise_title(title) == key


# ---------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------


async def test_a_movie_is_found_by_its_imdb_id_whatever_the_title_says(
    index: LibraryIndex, standin_state: StandinState, disk: Path, api_key: str
) -> None:
    put(standin_state, disk, ALIEN)
    assert await index.ready(api_key, wait=5)
    found = find(index, "Completely Different", 2001, imdb="TT0078748")
    [alien] = standin_state.items.values()
    assert found == InLibrary(alien.id, "Alien", 1979, "2160p")
    assert find(index, "Completely Different", 2001, imdb="tt9999999") is None


async def test_a_movie_is_found_by_title_and_year_despite_punctuation_articles_accents_and_one_year_off(
    index: LibraryIndex, standin_state: StandinState, api_key: str
) -> None:
    schindler, amelie = movie("Schindler's List", 1993), movie("Amélie", 2001)
    lotr = movie("The Lord of the Rings: The Fellowship of the Ring", 2001)
    insert(standin_state, schindler, amelie, lotr, movie("Fast and Furious", 2009))
    assert await index.ready(api_key, wait=5)
    for title, year in [("Schindlers List", 1993), ("schindlers.list", 1994), ("SCHINDLER’S LIST", 1992)]:
        assert (found := find(index, title, year)) is not None
        assert found.item_id == schindler.id
    assert (found := find(index, "Amelie", 2001)) is not None
    assert found.item_id == amelie.id
    assert (found := find(index, "Lord of the Rings The Fellowship of the Ring", 2002)) is not None
    assert found.item_id == lotr.id
    assert find(index, "Fast & Furious", 2009) is not None
    assert find(index, "Schindlers List", 1991) is None  # two years off: another film


async def test_a_title_that_only_starts_another_one_is_no_match(
    index: LibraryIndex, standin_state: StandinState, api_key: str
) -> None:
    insert(standin_state, movie("Alien Warfare", 2019))
    assert await index.ready(api_key, wait=5)
    assert find(index, "Alien", 1979) is None
    assert find(index, "Alien", None) is None


async def test_without_a_year_only_an_unambiguous_title_matches(
    index: LibraryIndex, standin_state: StandinState, api_key: str
) -> None:
    insert(standin_state, movie("Dune", 1984), movie("Dune", 2021), movie("Heat", 1995))
    assert await index.ready(api_key, wait=5)
    assert find(index, "Dune", None) is None  # 1984 or 2021: no guess
    assert (dune := find(index, "Dune", 2021)) is not None
    assert dune.year == 2021
    assert (heat := find(index, "Heat", None)) is not None
    assert heat.year == 1995


async def test_an_episode_matches_only_when_that_episode_is_in_the_library(
    index: LibraryIndex, standin_state: StandinState, disk: Path, api_key: str
) -> None:
    put(
        standin_state,
        disk,
        f"{BREAKING_BAD}/Season 01/Breaking Bad S01E01 1080p.mkv",
        f"{BREAKING_BAD}/Season 01/Breaking Bad S01E02 720p.mkv",
        f"{BREAKING_BAD}/Season 02/Breaking Bad S02E01 2160p.mkv",
    )
    assert await index.ready(api_key, wait=5)
    episodes = {(i.parent_index_number, i.index_number): i for i in standin_state.items.values()}
    series = next(i for i in standin_state.items.values() if i.type == "Series")

    assert (found := find(index, "Breaking Bad", season=1, episode=2, kind="series")) is not None
    assert (found.item_id, found.resolution) == (episodes[1, 2].id, "720p")
    assert find(index, "breaking.bad", season=1, episode=3, kind="series") is None
    assert find(index, "Breaking Bad", season=3, episode=1, kind="series") is None

    # A whole season: there if any of its episodes is; the series, at that season's best picture.
    assert find(index, "Breaking Bad", season=1, kind="series") == InLibrary(
        series.id, "Breaking Bad", 2008, "1080p"
    )
    assert find(index, "Breaking Bad", season=3, kind="series") is None
    # The series itself: its best episode's picture.
    assert find(index, "Breaking Bad", 2008, kind="series") == InLibrary(
        series.id, "Breaking Bad", 2008, "2160p"
    )
    # By the show's IMDb id: still only if the episode is there, and no fall back to the title.
    assert (found := find(index, "Whatever", imdb="tt0903747", season=2, episode=1)) is not None
    assert found.item_id == episodes[2, 1].id
    assert find(index, "Breaking Bad", imdb="tt0903747", season=2, episode=2, kind="series") is None
    # A series of the same name from another decade is not this one.
    assert find(index, "Breaking Bad", 1990, season=1, episode=1, kind="series") is None


async def test_resolution_comes_from_the_best_video_stream_by_height_or_width(
    index: LibraryIndex, standin_state: StandinState, api_key: str
) -> None:
    sizes = {
        "Scope Uhd": ((3840, 1600), "2160p"),
        "Scope Hd": ((1920, 800), "1080p"),
        "Full Hd": ((1920, 1080), "1080p"),
        "Scope 720": ((1280, 536), "720p"),
        "Dvd": ((720, 576), "480p"),
    }
    insert(standin_state, *(movie(title, 2000, size=size) for title, (size, _) in sizes.items()))
    assert await index.ready(api_key, wait=5)
    for title, (_, resolution) in sizes.items():
        assert (found := find(index, title, 2000)) is not None
        assert found.resolution == resolution, title


async def test_every_page_is_read(
    client: JellyfinClient, clock: Clock, standin_state: StandinState, api_key: str
) -> None:
    insert(standin_state, *(movie(f"Movie {n}", 2000 + n) for n in range(5)))
    index = LibraryIndex(client, page_size=2, clock=clock)
    assert await index.ready(api_key, wait=5)
    assert index.stats()["items"] == 5
    assert items_calls(standin_state) == 3
    assert all(find(index, f"Movie {n}", 2000 + n) is not None for n in range(5))
    requested = [r.path_qs for r in standin_state.requests if r.path_qs.startswith("/Items")]
    assert all(f"StartIndex={start}" in path for start, path in zip((0, 2, 4), requested, strict=True))
    assert all("Limit=2" in path and "MediaSources" in path for path in requested)


async def test_items_page_refuses_an_answer_that_is_not_an_object(
    client: JellyfinClient, jellyfin: TestServer, api_key: str
) -> None:
    def a_list(_: Handler) -> Handler:
        async def answer(ctx: RequestContext) -> web.StreamResponse:
            return ctx.json([])

        return answer

    serve_items_with(jellyfin, a_list)
    with pytest.raises(UpstreamError) as raised:
        await client.items_page(api_key, start=0, limit=10)
    assert raised.value.kind is Failure.BAD_REPLY


# ---------------------------------------------------------------------------
# Building and refreshing
# ---------------------------------------------------------------------------


async def test_concurrent_callers_share_one_build(
    index: LibraryIndex, standin_state: StandinState, jellyfin: TestServer, api_key: str
) -> None:
    insert(standin_state, movie("Heat", 1995))
    serve_items_with(jellyfin, slowed(0.1))
    answers = await asyncio.gather(*(index.ready(api_key, wait=5) for _ in range(10)))
    assert answers == [True] * 10
    assert items_calls(standin_state) == 1


async def test_a_first_build_is_waited_for_only_as_long_as_the_caller_allows(
    index: LibraryIndex, standin_state: StandinState, jellyfin: TestServer, api_key: str
) -> None:
    insert(standin_state, movie("Heat", 1995))
    serve_items_with(jellyfin, slowed(0.5))
    assert not await index.ready(api_key, wait=0.05)
    assert find(index, "Heat", 1995) is None
    assert await index.ready(api_key, wait=5)  # the same build, still running
    assert items_calls(standin_state) == 1
    assert find(index, "Heat", 1995) is not None


async def test_an_invalidated_index_is_refreshed_but_not_within_30_seconds_of_the_last_build(
    index: LibraryIndex, standin_state: StandinState, clock: Clock, api_key: str
) -> None:
    assert await index.ready(api_key, wait=5)
    insert(standin_state, movie("Heat", 1995))
    index.invalidate()
    clock.now += 10
    assert await index.ready(api_key, wait=5)
    assert items_calls(standin_state) == 1
    assert find(index, "Heat", 1995) is None

    clock.now += 20
    assert await index.ready(api_key, wait=5)  # the old index answers while the refresh runs
    assert await wait_until(lambda: find(index, "Heat", 1995) is not None, 3)
    assert items_calls(standin_state) == 2


async def test_an_index_older_than_min_interval_is_refreshed_without_being_invalidated(
    index: LibraryIndex, standin_state: StandinState, clock: Clock, api_key: str
) -> None:
    assert await index.ready(api_key, wait=5)
    insert(standin_state, movie("Heat", 1995))
    clock.now += 299
    await index.ready(api_key, wait=5)
    assert items_calls(standin_state) == 1
    clock.now += 1
    await index.ready(api_key, wait=5)
    assert await wait_until(lambda: find(index, "Heat", 1995) is not None, 3)
    assert items_calls(standin_state) == 2


async def test_a_failing_jellyfin_keeps_the_old_index_and_is_asked_again_later(
    index: LibraryIndex,
    standin_state: StandinState,
    jellyfin: TestServer,
    clock: Clock,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    insert(standin_state, movie("Heat", 1995))
    assert await index.ready(api_key, wait=5)
    built = index.stats()
    serve_items_with(jellyfin, failing)
    index.invalidate()
    clock.now += 30
    with caplog.at_level(logging.WARNING, logger="gateway.library_index"):
        assert await index.ready(api_key, wait=5)
        assert await wait_until(lambda: "build failed" in caplog.text, 3)
    assert "keeping the previous one" in caplog.text
    assert api_key not in caplog.text
    assert find(index, "Heat", 1995) is not None
    assert index.stats() == built

    clock.now += 30
    await index.ready(api_key, wait=5)
    assert await wait_until(lambda: items_calls(standin_state) == 3, 3)


async def test_a_failed_first_build_is_retried_by_the_next_call(
    index: LibraryIndex, standin_state: StandinState, jellyfin: TestServer, api_key: str
) -> None:
    insert(standin_state, movie("Heat", 1995))
    routes = jellyfin.app[ROUTES]
    working = list(routes)
    serve_items_with(jellyfin, failing)
    assert not await index.ready(api_key, wait=5)
    routes[:] = working
    assert await index.ready(api_key, wait=5)
    assert items_calls(standin_state) == 2
    stats = index.stats()
    assert stats["items"] == 1
    assert isinstance(stats["built_at"], float)
    assert isinstance(stats["build_seconds"], float)
