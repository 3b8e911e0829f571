"""How /torrent/find reads apibay rows and merges releases across sources (gateway/find.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.find import from_apibay, merge
from gateway.torznab import TorznabResult

HASH_A = "a" * 40
HASH_B = "b" * 40


def _row(**fields: str) -> dict[str, str]:
    row = {
        "id": "1",
        "name": "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP",
        "info_hash": HASH_A.upper(),
        "leechers": "3",
        "seeders": "40",
        "num_files": "2",
        "size": "8000000000",
        "username": "u",
        "added": "1700000000",
        "status": "vip",
        "category": "207",
        "imdb": "tt0078748",
    }
    return {**row, **fields}


def test_an_apibay_row_becomes_a_typed_release() -> None:
    found = from_apibay(_row())
    assert found == TorznabResult(
        name="Alien.1979.REMASTERED.1080p.BluRay.x264-GRP",
        info_hash=HASH_A,
        size=8_000_000_000,
        seeders=40,
        leechers=3,
        added=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        imdb="tt0078748",
    )


def test_odd_apibay_fields_become_unknown_and_a_row_without_a_hash_is_dropped() -> None:
    found = from_apibay(_row(seeders="-1", size="", added="0", imdb="nm12"))
    assert found is not None
    assert (found.seeders, found.size, found.added, found.imdb) == (None, None, None, None)
    assert from_apibay(_row(info_hash="")) is None
    assert from_apibay(_row(info_hash="z" * 40)) is None


def _found(info_hash: str, seeders: int | None, leechers: int | None = 1, **fields: object) -> TorznabResult:
    base: dict[str, object] = {
        "name": f"release-{info_hash[0]}",
        "info_hash": info_hash,
        "size": None,
        "seeders": seeders,
        "leechers": leechers,
        "added": None,
        "imdb": None,
    }
    return TorznabResult(**{**base, **fields})  # type: ignore[arg-type]


def test_releases_merge_by_hash_with_the_most_seeders_and_every_source() -> None:
    added = datetime(2024, 1, 1, tzinfo=UTC)
    merged = merge(
        [
            ("apibay", [_found(HASH_A, 10, 5, size=100), _found(HASH_B, 50)]),
            ("prowlarr", [_found(HASH_A, 30, 2, imdb="tt0078748", added=added)]),
            ("jackett", [_found(HASH_A, 20, 9, size=999)]),
        ]
    )
    assert [r.release.info_hash for r in merged] == [HASH_B, HASH_A]  # sorted by seeders
    alien = merged[1]
    assert (alien.release.seeders, alien.release.leechers) == (30, 9)
    assert alien.sources == ["apibay", "prowlarr", "jackett"]
    assert alien.release.size == 100  # the first source that knew it
    assert alien.release.imdb == "tt0078748"
    assert alien.release.added == added


def test_merging_never_changes_the_sources_own_lists() -> None:
    original = _found(HASH_A, 10)
    merge([("apibay", [original]), ("prowlarr", [_found(HASH_A, 30)])])
    assert original.seeders == 10
    assert original == _found(HASH_A, 10)


def test_unknown_seeders_sort_last() -> None:
    merged = merge([("apibay", [_found(HASH_A, None), _found(HASH_B, 0)])])
    assert [r.release.info_hash for r in merged] == [HASH_B, HASH_A]
