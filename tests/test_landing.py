"""Landing states and what counts as "Jellyfin shows this download" (gateway/landing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.jellyfin import Item
from gateway.landing import State, landing_folder, lookup_delay, pick_item, search_terms, state_of

PATH_MAP = (("/media", "/downloads"),)


def _torrent(tags: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP",
        "tags": tags,
        "save_path": "/downloads/movies/Alien (1979) [imdbid-tt0078748]",
        "content_path": "/downloads/movies/Alien (1979) [imdbid-tt0078748]",
        **fields,
    }


def _item(item_id: str, name: str, path: str | None, kind: str = "Movie") -> Item:
    return Item(item_id, name, kind, 1979, path, {})


@pytest.mark.parametrize(
    ("tags", "state"),
    [
        ("jellyfin-gateway", State.DOWNLOADING),
        ("jellyfin-gateway, jellyfin-gateway-organize", State.DOWNLOADING),
        ("jellyfin-gateway, jellyfin-gateway-notified", State.ANNOUNCED),
        ("jellyfin-gateway, jellyfin-gateway-notified, jellyfin-gateway-landed:abc", State.IN_JELLYFIN),
        ("jellyfin-gateway, jellyfin-gateway-notified, jellyfin-gateway-not-landed", State.NOT_IN_JELLYFIN),
        ("jellyfin-gateway, jellyfin-gateway-landed:", State.DOWNLOADING),  # a tag without an id is none
    ],
)
def test_the_landing_state_is_read_from_the_tags(tags: str, state: State) -> None:
    assert state_of(_torrent(tags)) is state


def test_an_organized_download_lands_in_its_folder_and_any_other_where_qbittorrent_wrote_it() -> None:
    organized = _torrent(
        "jellyfin-gateway, jellyfin-gateway-folder:movie", content_path="/downloads/movies/x/y.mkv"
    )
    assert landing_folder(organized, PATH_MAP) == "/media/movies/Alien (1979) [imdbid-tt0078748]"
    plain = _torrent("jellyfin-gateway", content_path="/downloads/movies/Alien.1979.mkv")
    assert landing_folder(plain, PATH_MAP) == "/media/movies/Alien.1979.mkv"
    assert landing_folder(_torrent("jellyfin-gateway", content_path="/elsewhere/x.mkv"), PATH_MAP) is None
    assert (
        landing_folder(_torrent("jellyfin-gateway", content_path="/elsewhere/x.mkv"), ())
        == "/elsewhere/x.mkv"
    )


def test_the_match_is_the_item_inside_the_folder_not_the_first_hit_of_the_same_name() -> None:
    folder = "/media/movies/Alien (1979) [imdbid-tt0078748]"
    items = [
        _item("a", "Alien", "/media/old-movies/Alien (1979)/Alien (1979).mkv"),
        _item("b", "Alien Warfare", "/media/movies/Alien Warfare (2019)/Alien Warfare.mkv"),
        _item("c", "Alien", f"{folder}/Alien (1979).mkv"),
        _item("d", "Alien", None),
    ]
    match = pick_item(items, folder)
    assert match is not None
    assert match.id == "c"
    assert pick_item(items[:2], folder) is None
    assert pick_item([_item("x", "Alien", folder + " 2/Alien.mkv")], folder) is None  # a sibling, not inside


def test_a_series_is_preferred_to_one_of_its_episodes() -> None:
    folder = "/media/tv/Breaking Bad"
    episode = _item("e", "Pilot", f"{folder}/Season 01/Breaking Bad S01E01.mkv", "Episode")
    series = _item("s", "Breaking Bad", folder, "Series")
    match = pick_item([episode, series], folder)
    assert match is not None
    assert match.id == "s"


def test_search_terms_are_the_title_then_its_longest_word() -> None:
    organized = _torrent("jellyfin-gateway-folder:movie")
    assert search_terms(organized, "/media/movies/Alien (1979) [imdbid-tt0078748]") == ["Alien"]
    assert search_terms(organized, "/media/movies/Blade Runner 2049 (2017)") == [
        "Blade Runner 2049",
        "Runner",
    ]
    plain = _torrent("jellyfin-gateway", name="The.Office.US.S02E03.720p.WEB-DL.x264")
    assert search_terms(plain, "/media/tv/The.Office.US.S02E03.720p.WEB-DL.x264.mkv")[0] == "The Office US"


def test_look_ups_start_seconds_apart_and_back_off_to_a_minute() -> None:
    delays = [lookup_delay(n) for n in range(12)]
    assert delays[0] <= 3
    assert delays == sorted(delays)
    assert delays[-1] == 60
