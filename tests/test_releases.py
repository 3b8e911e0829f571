"""gateway.releases: what release names and our own file names say, and garbage that must not raise."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gateway.releases import Release, parse

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "release_names.py"

# name, title, year, seasons, episodes
CORE_CASES: list[tuple[str, str | None, int | None, tuple[int, ...], tuple[int, ...]]] = [
    # movies
    ("Alien.1979.REMASTERED.1080p.BluRay.x264-GRP", "Alien", 1979, (), ()),
    ("The Godfather (1972) 1080p BrRip x264 - YIFY", "The Godfather", 1972, (), ()),
    ("Dune.Part.Two.2024.2160p.WEB-DL.DDP5.1.Atmos.DV.HDR.H.265-FLUX", "Dune Part Two", 2024, (), ()),
    ("Interstellar (2014) [2160p] [4K] [BluRay] [5.1] [YTS.MX]", "Interstellar", 2014, (), ()),
    (
        "Star.Wars.Episode.IV.A.New.Hope.1977.1080p.BluRay.x264",
        "Star Wars Episode IV A New Hope",
        1977,
        (),
        (),
    ),
    ("It.2017.1080p.BluRay.x264-SPARKS", "It", 2017, (), ()),
    # digits and years inside titles
    ("2001 A Space Odyssey 1968 2160p UHD BluRay REMUX HDR HEVC", "2001 A Space Odyssey", 1968, (), ()),
    ("1917.2019.1080p.BluRay.x264-SPARKS", "1917", 2019, (), ()),
    ("Blade.Runner.2049.2017.1080p.BluRay.x264-SPARKS", "Blade Runner 2049", 2017, (), ()),
    ("2012.2009.1080p.BluRay.x264-METiS", "2012", 2009, (), ()),
    ("The.355.2022.1080p.WEB-DL.DD5.1.H.264-EVO", "The 355", 2022, (), ()),
    ("9 (2009) 1080p BluRay x264", "9", 2009, (), ()),
    ("Ocean's Eleven (2001) 1080p BluRay x264", "Ocean's Eleven", 2001, (), ()),
    ("1984.1984.1080p.BluRay.x264-GHOULS", "1984", 1984, (), ()),
    ("Wonder.Woman.1984.2020.1080p.WEB-DL.DDP5.1.Atmos.H264-EVO", "Wonder Woman 1984", 2020, (), ()),
    ("Toy.Story.3.2010.1080p.BluRay.x264-REFiNED", "Toy Story 3", 2010, (), ()),
    ("1883.S01E01.1080p.WEB.h264-GOSSIP", "1883", None, (1,), (1,)),
    ("The.100.S03E04.720p.HDTV.x264-KILLERS", "The 100", None, (3,), (4,)),
    # episodes
    ("The.Office.US.S02E03.720p.WEB-DL.x264", "The Office US", None, (2,), (3,)),
    ("Breaking.Bad.S05E14.Ozymandias.1080p.WEB-DL.DD5.1.H.264-BS", "Breaking Bad", None, (5,), (14,)),
    ("Doctor.Who.2005.S01E01.720p.BluRay.x264-SHORTBREHD", "Doctor Who", 2005, (1,), (1,)),
    ("Westworld.1x01.720p.HDTV.x264", "Westworld", None, (1,), (1,)),
    ("The_Wire_S01E01_720p_BluRay_x264", "The Wire", None, (1,), (1,)),
    ("Fargo.Season.2.Episode.5.720p.HDTV", "Fargo", None, (2,), (5,)),
    # multi-episode
    ("Friends.S01E01E02.720p.BluRay.x264", "Friends", None, (1,), (1, 2)),
    ("Friends.S01E01-E02.720p.BluRay.x264", "Friends", None, (1,), (1, 2)),
    ("Stargate.SG-1.S01E01-E03.DVDRip.XviD", "Stargate SG-1", None, (1,), (1, 2, 3)),
    # season packs
    ("Breaking Bad S01 Complete 1080p", "Breaking Bad", None, (1,), ()),
    ("Breaking.Bad.Season.1.Complete.720p.BluRay.x264", "Breaking Bad", None, (1,), ()),
    ("The.Wire.S01-S05.COMPLETE.720p.BluRay.x264", "The Wire", None, (1, 2, 3, 4, 5), ()),
    ("The Crown Season 3 (2019) 1080p NF WEB-DL", "The Crown", 2019, (3,), ()),
    # specials
    ("Doctor.Who.S00E01.The.Christmas.Invasion.720p.BluRay.x264", "Doctor Who", None, (0,), (1,)),
    # anime
    ("[SubsPlease] Jujutsu Kaisen - 25 (1080p) [ABCD1234].mkv", "Jujutsu Kaisen", None, (), (25,)),
    ("[Erai-raws] One Piece - 1071 [1080p][Multiple Subtitle].mkv", "One Piece", None, (), (1071,)),
    (
        "[Judas] Shingeki no Kyojin - S04E28 [1080p][HEVC x265 10bit][Multi-Subs].mkv",
        "Shingeki no Kyojin",
        None,
        (4,),
        (28,),
    ),
    ("[SubsPlease] 86 - Eighty Six - 01 (1080p) [A1B2C3D4].mkv", "86 - Eighty Six", None, (), (1,)),
    ("[HorribleSubs] Mob Psycho 100 S2 - 05 [1080p].mkv", "Mob Psycho 100", None, (2,), (5,)),
    ("[Anime Time] Attack on Titan - 01-25 [1080p][HEVC]", "Attack on Titan", None, (), tuple(range(1, 26))),
    # non-English
    (
        "Le.Fabuleux.Destin.d'Amélie.Poulain.2001.FRENCH.720p.BluRay.x264",
        "Le Fabuleux Destin d'Amélie Poulain",
        2001,
        (),
        (),
    ),
    ("Intouchables.2011.MULTi.1080p.BluRay.x264-LOST", "Intouchables", 2011, (), ()),
    ("[ Torrent911.me ] Intouchables.2011.FRENCH.1080p.BluRay.x264", "Intouchables", 2011, (), ()),
    ("Der.Untergang.2004.GERMAN.DL.1080p.BluRay.x264-DETAiLS", "Der Untergang", 2004, (), ()),
    ("La.Casa.de.Papel.S01E01.SPANISH.1080p.NF.WEB-DL.x264", "La Casa de Papel", None, (1,), (1,)),
    ("Москва слезам не верит (1979) BDRip 720p", "Москва слезам не верит", 1979, (), ()),
    ("千と千尋の神隠し (2001) [1080p]", "千と千尋の神隠し", 2001, (), ()),
    ("Lupin.S01E01.MULTi.1080p.WEB.x264-FRATERNiTY", "Lupin", None, (1,), (1,)),
    # file names, samples, indexer junk
    ("inception.2010.720p.bluray.x264.mkv", "inception", 2010, (), ()),
    ("Fight_Club_1999_1080p.mkv", "Fight Club", 1999, (), ()),
    ("alien-sample.mkv", "alien", None, (), ()),
    ("sample-the.office.s02e03.720p.mkv", "the office", None, (2,), (3,)),
    ("www.UIndex.org    -    The Bear S03E01 1080p WEB H264-SuccessfulCrab", "The Bear", None, (3,), (1,)),
    # our own names
    ("Alien (1979) [imdbid-tt0078748]", "Alien", 1979, (), ()),
    ("Alien (1979).mkv", "Alien", 1979, (), ()),
    ("Alien (1979) [imdbid-tt0078748].mkv", "Alien", 1979, (), ()),
    ("Breaking Bad (2008) [tvdbid-81189]", "Breaking Bad", 2008, (), ()),
    ("Show Name S01E02.mkv", "Show Name", None, (1,), (2,)),
    ("Show Name S01E01-E02.mkv", "Show Name", None, (1,), (1, 2)),
    ("Season 01", None, None, (1,), ()),
    ("Season 00", None, None, (0,), ()),
]


@pytest.mark.parametrize(("name", "title", "year", "seasons", "episodes"), CORE_CASES)
def test_release_names_give_title_year_seasons_and_episodes(
    name: str, title: str | None, year: int | None, seasons: tuple[int, ...], episodes: tuple[int, ...]
) -> None:
    got = parse(name)
    assert (got.title, got.year, got.seasons, got.episodes) == (title, year, seasons, episodes)


# name, resolution, source, codec, hdr
QUALITY_CASES: list[tuple[str, str | None, str | None, str | None, str | None]] = [
    ("Alien.1979.REMASTERED.1080p.BluRay.x264-GRP", "1080p", "BluRay", "x264", None),
    ("2001 A Space Odyssey 1968 2160p UHD BluRay REMUX HDR HEVC", "2160p", "REMUX", "x265", "HDR"),
    ("Dune.2021.2160p.UHD.BluRay.REMUX.DV.HDR.HEVC.TrueHD.Atmos-FGT", "2160p", "REMUX", "x265", "DV"),
    ("The.Batman.2022.2160p.WEB-DL.DDP5.1.Atmos.HDR10+.HEVC-CMRG", "2160p", "WEB-DL", "x265", "HDR10+"),
    (
        "Top.Gun.Maverick.2022.2160p.AMZN.WEB-DL.DDP5.1.Atmos.HDR10Plus.H.265-CMRG",
        "2160p",
        "WEB-DL",
        "x265",
        "HDR10+",
    ),
    ("John.Wick.Chapter.4.2023.2160p.WEB-DL.DoVi.HDR.x265-SHB", "2160p", "WEB-DL", "x265", "DV"),
    ("Mad Max Fury Road 2015 4K UHD BluRay x265 HDR", "2160p", "BluRay", "x265", "HDR"),
    ("Parasite.2019.KOREAN.1080p.WEB-DL.DD5.1.H.264-NTG", "1080p", "WEB-DL", "x264", None),
    ("Stranger.Things.S04E01.1080p.NF.WEBRip.x265-RARBG", "1080p", "WEBRip", "x265", None),
    ("game.of.thrones.s01e01.720p.hdtv.x264-ctu", "720p", "HDTV", "x264", None),
    ("The.Departed.2006.DVDRip.XviD-DiAMOND", None, "DVDRip", "XviD", None),
    ("Deadpool.2016.HDRip.XviD.AC3-EVO", None, "HDRip", "XviD", None),
    ("Nosferatu.2024.2160p.WEB-DL.DV.HDR.AV1-GRP", "2160p", "WEB-DL", "AV1", "DV"),
    ("[Coalgirls]_Clannad_After_Story_(1920x1080_Blu-Ray_FLAC)", "1080p", "BluRay", None, None),
]


@pytest.mark.parametrize(("name", "resolution", "source", "codec", "hdr"), QUALITY_CASES)
def test_quality_tags_come_out_in_one_spelling_each(
    name: str, resolution: str | None, source: str | None, codec: str | None, hdr: str | None
) -> None:
    got = parse(name)
    assert (got.resolution, got.source, got.codec, got.hdr) == (resolution, source, codec, hdr)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "...",
        "-",
        "[]",
        "()",
        ".mkv",
        "sample",
        "\x00\x01\x02\x1b[31m\x7f",
        "Alien\x00.1979\r\n.1080p\t.mkv",
        "S99E99999999999999999999",
        "\ud800 lone surrogate",
        "x" * 10_240,
        "Alien.1979.1080p. " * 600,
        "[" * 5000 + "(" * 5000,
    ],
)
def test_garbage_never_raises_and_gives_a_release(garbage: str) -> None:
    got = parse(garbage)
    assert isinstance(got, Release)
    assert got.title is None or isinstance(got.title, str)
    assert all(isinstance(n, int) for n in (*got.seasons, *got.episodes))


def test_nothing_gives_nothing() -> None:
    assert parse("") == Release(None, None, (), (), None, None, None, None)


def test_control_characters_do_not_reach_the_title() -> None:
    got = parse("Alien\x00.1979\r\n.1080p\t.mkv")
    assert got.title == "Alien"
    assert got.year == 1979


def test_the_same_name_gives_the_same_release() -> None:
    assert parse("Friends.S01E01-E02.720p.BluRay.x264") == parse("Friends.S01E01-E02.720p.BluRay.x264")


def _bench() -> ModuleType:
    """benchmarks/ is no package: the script is loaded by path, as it runs."""
    spec = importlib.util.spec_from_file_location("release_names_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_whole_corpus_parses_at_or_above_the_benchmark_threshold() -> None:
    """A parsett upgrade (or a wrapper change) that reads fewer names right fails here."""
    bench = _bench()
    rows = bench.load_corpus()
    assert len(rows) >= 170
    wrapper = bench.candidates(["wrapper"])[0]
    right = [bench.right_fields(row, wrapper.parse(row["name"]))["all"] for row in rows]
    misses = [row["name"] for row, ok in zip(rows, right, strict=True) if not ok]
    assert sum(right) / len(rows) >= bench.THRESHOLD, misses
