"""Input rules of the /torrent API and the pure path helpers."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from gateway.paths import PathError, clean_absolute, is_within, qbittorrent_view, to_jellyfin, to_qbittorrent
from gateway.validation import (
    BadRequest,
    body_fields,
    encode_uri_component,
    info_hash_id,
    magnet_link,
    parse_bool,
    query_value,
    torrent_hash,
)

HEX = "0123456789ABCDEF0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (HEX, HEX.lower()),
        (f"  {HEX} ", HEX.lower()),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "00443214c74254b635cf84653a56d7c675be77df"),
        ("abcdefghijklmnopqrstuvwxyz234567", "00443214c74254b635cf84653a56d7c675be77df"),
    ],
)
def test_info_hashes_in_hex_or_base32_give_the_lowercase_hex_id(raw: str, expected: str) -> None:
    assert info_hash_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        HEX[:-1],
        HEX + "0",
        "g" * 40,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ234561",
        HEX + "\n" + HEX,
        "all",
    ],
)
def test_anything_else_is_not_an_info_hash(raw: str | None) -> None:
    with pytest.raises(BadRequest):
        info_hash_id(raw)


@pytest.mark.parametrize("raw", [HEX, HEX.upper(), "a" * 64])
def test_one_40_or_64_hex_hash_is_accepted(raw: str) -> None:
    assert torrent_hash(raw) == raw.lower()


@pytest.mark.parametrize(
    "raw",
    [None, "", "all", "ALL", f"{HEX}|{HEX}", f"all|{HEX}", "|", HEX[:39], "a" * 63, f"{HEX},{HEX}", "a" * 65],
)
def test_all_pipes_and_malformed_hashes_are_refused(raw: str | None) -> None:
    with pytest.raises(BadRequest):
        torrent_hash(raw)


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("TRUE", True), ("False", False), (None, False)]
)
def test_booleans_are_true_or_false_in_any_case(raw: str | None, expected: bool) -> None:
    assert parse_bool(raw, "deleteFiles", default=False) is expected


@pytest.mark.parametrize("raw", ["1", "0", "yes", "", "truee"])
def test_other_booleans_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest, match="deleteFiles must be true or false"):
        parse_bool(raw, "deleteFiles", default=False)


def test_query_keys_and_body_keys_match_in_any_case() -> None:
    assert query_value(MultiDict([("Hash", "x"), ("hash", "y")]), "hash") == "x"
    assert query_value(MultiDict([("DELETEFILES", "true")]), "deleteFiles") == "true"
    assert body_fields({"INFO_HASH": 1, "Name": 2}) == {"info_hash": 1, "name": 2}
    with pytest.raises(BadRequest):
        body_fields(["not", "an", "object"])


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("Ubuntu Linux & Linux Scripting", "Ubuntu%20Linux%20%26%20Linux%20Scripting"),
        ("a/b:c+d=e?f#g", "a%2Fb%3Ac%2Bd%3De%3Ff%23g"),
        ("keep-_.!~*'()", "keep-_.!~*'()"),
        ("Amélie (2001) ✓", "Am%C3%A9lie%20(2001)%20%E2%9C%93"),
        ("line\nbreak", "line%0Abreak"),
        ("udp://tracker.opentrackr.org:1337", "udp%3A%2F%2Ftracker.opentrackr.org%3A1337"),
    ],
)
def test_names_are_encoded_as_javascripts_encodeuricomponent(text: str, encoded: str) -> None:
    assert encode_uri_component(text) == encoded


def test_the_magnet_has_the_hash_the_encoded_name_and_the_trackers() -> None:
    link = magnet_link(HEX, "A & B", ["udp://t.example:1337/announce"])
    assert link == f"magnet:?xt=urn:btih:{HEX}&dn=A%20%26%20B&tr=udp%3A%2F%2Ft.example%3A1337%2Fannounce"
    assert magnet_link(HEX, None, []) == f"magnet:?xt=urn:btih:{HEX}"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("/downloads/movies/", "/downloads/movies"), ("//a//b/./c", "/a/b/c"), ("/", "/")],
)
def test_save_paths_are_normalized(raw: str, clean: str) -> None:
    assert clean_absolute(raw) == clean


@pytest.mark.parametrize(
    "raw", ["", "relative/path", "/a/../b", "/a/..", "/a\nb", "/a\x00b", "C:\\downloads", "  "]
)
def test_dangerous_save_paths_are_refused(raw: str) -> None:
    with pytest.raises(PathError):
        clean_absolute(raw)


def test_within_means_whole_segments() -> None:
    assert is_within("/media/movies", "/media")
    assert is_within("/media", "/media")
    assert not is_within("/media2/x", "/media")
    assert is_within("/anything", "/")


PATH_MAP = (("/media", "/downloads"), ("/media/tv", "/tv"), ("/", "/root-of-qb"))


@pytest.mark.parametrize(
    ("jellyfin", "qbittorrent"),
    [
        ("/media/movies", "/downloads/movies"),
        ("/media/tv/Show", "/tv/Show"),
        ("/media", "/downloads"),
        ("/media2", "/root-of-qb/media2"),
    ],
)
def test_the_longest_prefix_wins_both_ways(jellyfin: str, qbittorrent: str) -> None:
    assert to_qbittorrent(jellyfin, PATH_MAP) == qbittorrent
    assert to_jellyfin(qbittorrent, PATH_MAP) == jellyfin


def test_an_unmapped_folder_is_named_the_same_on_both_sides() -> None:
    assert to_qbittorrent("/srv/x", (("/media", "/downloads"),)) is None
    assert qbittorrent_view("/srv/x", (("/media", "/downloads"),)) == "/srv/x"
