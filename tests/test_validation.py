"""Input rules of the /torrent API and the pure path helpers."""

from __future__ import annotations

import json

import pytest

from gateway.library import jellyfin_path, library_folders, qbittorrent_folder
from gateway.paths import PathError, clean_absolute, is_within, to_jellyfin, to_qbittorrent
from gateway.validation import (
    BadRequest,
    body_fields,
    encode_uri_component,
    info_hash_id,
    json_body,
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
    assert query_value("Hash=x&hash=y", "hash") == "x"
    assert query_value("DELETEFILES=true", "deleteFiles") == "true"
    assert body_fields({"INFO_HASH": 1, "Name": 2}) == {"info_hash": 1, "name": 2}
    with pytest.raises(BadRequest):
        body_fields(["not", "an", "object"])


@pytest.mark.parametrize(
    ("raw_query", "value"),
    [
        ("q=a+b%2B%26c&cat=1", "a b+&c"),
        ("x=1&Q=Am%C3%A9lie&q=second", "Amélie"),
        ("q=%F0%9F%8E%AC", "\U0001f3ac"),
        ("q=&x=1", ""),
        ("q", ""),
        ("q=100%", "100%"),
        ("other=%ED%A0%80&q=fine", "fine"),  # only the values read are judged
        ("x=1", None),
    ],
)
def test_query_values_are_decoded_as_utf_8(raw_query: str, value: str | None) -> None:
    assert query_value(raw_query, "q") == value


@pytest.mark.parametrize(
    "raw_query",
    ["q=%ED%A0%80", "q=%ED%BF%BF", "q=%FF", "q=ok%C3", "q=%C0%AF", "q=\udced\udca0\udc80", "Q=\udcff"],
)
def test_query_values_that_are_not_utf_8_are_refused(raw_query: str) -> None:
    with pytest.raises(BadRequest, match="q must be UTF-8 text"):
        query_value(raw_query, "q")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_bodies_nest_at_most_64_levels() -> None:
    assert json_body(_nested(64).encode()) == json.loads(_nested(64))
    assert json_body(f'{{"a": {_nested(63)}}}'.encode())["a"]
    for body in (
        _nested(65),
        f'{{"a": {_nested(64)}}}',
        f'[{{"a": {{"b": {_nested(62)}}}}}]',
        _nested(10**6),
    ):
        with pytest.raises(BadRequest, match="nested deeper than 64 levels"):
            json_body(body.encode())


@pytest.mark.parametrize(
    "body",
    [b'"\\ud800"', b'{"\\udfff": 1}', b'[1, {"a": ["x\\udbff"]}]', b'{"a": "\\udc00\\ud800"}'],
)
def test_json_bodies_with_lone_surrogates_are_refused(body: bytes) -> None:
    with pytest.raises(BadRequest, match="lone surrogate"):
        json_body(body)


@pytest.mark.parametrize(
    "body", [b'{"a": "\xe9"}', '{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-32"), b'"\xed\xa0\x80"']
)
def test_json_bodies_that_are_not_utf_8_are_refused(body: bytes) -> None:
    with pytest.raises(BadRequest, match="UTF-8"):
        json_body(body)


def test_valid_json_bodies_are_parsed_as_they_are() -> None:
    assert json_body(b'{"Name": "\\ud83c\\udfac Am\xc3\xa9lie"}') == {"Name": "\U0001f3ac Amélie"}
    assert json_body(b"\xef\xbb\xbf[1]") == [1]  # a UTF-8 byte order mark is allowed
    with pytest.raises(BadRequest, match="must be JSON"):
        json_body(b"Info_hash=abc")


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


def test_a_folder_path_map_does_not_cover_is_unreachable_both_ways() -> None:
    path_map = (("/media", "/downloads"),)
    assert to_qbittorrent("/srv/x", path_map) is None
    assert qbittorrent_folder("/srv/x", path_map) is None
    assert jellyfin_path("/srv/x", path_map) is None


def test_without_path_map_both_sides_name_folders_the_same() -> None:
    assert qbittorrent_folder("/srv/x", ()) == "/srv/x"
    assert jellyfin_path("/srv/x", ()) == "/srv/x"


def test_library_folders_are_those_qbittorrent_can_reach_in_order() -> None:
    libraries = [("Movies", ["/media/movies", "/srv/old", "relative"]), ("Music", ["/srv/music"])]
    assert library_folders(libraries, (("/media", "/downloads"),)) == [("Movies", "/downloads/movies")]
    assert library_folders(libraries, ()) == [
        ("Movies", "/media/movies"),
        ("Movies", "/srv/old"),
        ("Music", "/srv/music"),
    ]
