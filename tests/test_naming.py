"""Jellyfin's naming rules applied to release names and torrent file lists (gateway/naming.py)."""

from __future__ import annotations

import pytest

from gateway.naming import (
    FolderPlan,
    Kind,
    TorrentFile,
    folder_title,
    plan_files,
    plan_folder,
    sanitize,
    subtitle_suffix,
)
from gateway.releases import parse


def _files(*names_and_sizes: tuple[str, int]) -> list[TorrentFile]:
    return [TorrentFile(i, name, size) for i, (name, size) in enumerate(names_and_sizes)]


def _apply(
    files: list[TorrentFile], folder: FolderPlan
) -> tuple[dict[str, str], list[str], list[TorrentFile]]:
    """(renames old -> new, skipped names, the file list after the renames)."""
    plan = plan_files(files, folder)
    renames = dict(plan.renames)
    skipped = [f.name for f in files if f.index in plan.skip]
    after = [TorrentFile(f.index, renames.get(f.name, f.name), f.size) for f in files]
    return renames, skipped, after


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Mission: Impossible", "Mission - Impossible"),
        ("10:30 Train", "10-30 Train"),
        ("AC/DC Live", "AC-DC Live"),
        ("Who\\What", "Who-What"),
        ('The "Best" <Film>', "The 'Best' Film"),
        ("What If...?", "What If"),
        ("M*A*S*H", "M-A-S-H"),
        ("Pipe|Dream", "Pipe-Dream"),
        ("Ends with dots...", "Ends with dots"),
        ("  trailing spaces  ", "trailing spaces"),
        ("...hidden", "hidden"),
        ("tab\tand\nnewline\x00and\x7fdel", "tabandnewlineanddel"),
        ("Amélie", "Amélie"),
        ("??", ""),
    ],
)
def test_names_lose_the_characters_filesystems_refuse(given: str, expected: str) -> None:
    assert sanitize(given) == expected


def test_very_long_titles_are_cut_to_whole_characters_below_the_component_limit() -> None:
    long = "Ünïcödé " * 60
    cut = sanitize(long)
    assert len(cut.encode()) <= 180
    assert cut == cut.strip(" .")
    assert long.startswith(cut)
    folder = plan_folder(parse(long), "movies", imdb="tt0078748", fallback=long)
    assert len(f"{folder.base}.en.sdh.forced.12.srt".encode()) < 255
    assert len(folder.folder.encode()) < 255


@pytest.mark.parametrize(
    ("release", "library", "imdb", "kind", "folder", "base"),
    [
        (
            "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP",
            "movies",
            "tt0078748",
            Kind.MOVIE,
            "Alien (1979) [imdbid-tt0078748]",
            "Alien (1979)",
        ),
        (
            "Blade.Runner.2049.2017.2160p.UHD.BluRay.REMUX.HDR.HEVC",
            "movies",
            None,
            Kind.MOVIE,
            "Blade Runner 2049 (2017)",
            "Blade Runner 2049 (2017)",
        ),
        (
            "Mission.Impossible.Fallout.2018.1080p.WEB-DL",
            "movies",
            None,
            Kind.MOVIE,
            "Mission Impossible Fallout (2018)",
            "Mission Impossible Fallout (2018)",
        ),
        ("Some.Home.Video.1080p", "movies", None, Kind.MOVIE, "Some Home Video", "Some Home Video"),
        (
            "Breaking.Bad.S01.1080p.BluRay.x264",
            "tvshows",
            "tt0903747",
            Kind.SERIES,
            "Breaking Bad",
            "Breaking Bad",
        ),
        (
            "Doctor.Who.2005.S01E01.720p",
            "tvshows",
            None,
            Kind.SERIES,
            "Doctor Who (2005)",
            "Doctor Who (2005)",
        ),
        ("The.Office.US.S02E03.720p.WEB-DL", None, None, Kind.SERIES, "The Office US", "The Office US"),
        (
            "Alien.1979.1080p.BluRay",
            None,
            "tt0078748",
            Kind.MOVIE,
            "Alien (1979) [imdbid-tt0078748]",
            "Alien (1979)",
        ),
        ("Planet.Earth.S01.Special.1080p", "homevideos", None, Kind.SERIES, "Planet Earth", "Planet Earth"),
    ],
)
def test_the_folder_follows_the_library_type_and_the_release(
    release: str, library: str | None, imdb: str | None, kind: Kind, folder: str, base: str
) -> None:
    plan = plan_folder(parse(release), library, imdb=imdb, fallback=release)
    assert (plan.kind, plan.folder, plan.base) == (kind, folder, base)


def test_a_release_without_a_title_falls_back_to_its_sanitized_name_then_unknown() -> None:
    assert plan_folder(parse(""), "movies", imdb=None, fallback="a:b").folder == "a-b"
    assert plan_folder(parse(""), "movies", imdb=None, fallback="???").folder == "Unknown"


@pytest.mark.parametrize(
    ("folder", "title", "year"),
    [
        ("Alien (1979) [imdbid-tt0078748]", "Alien", 1979),
        ("/media/movies/Alien (1979) [imdbid-tt0078748] [tmdbid-348]", "Alien", 1979),
        ("Breaking Bad", "Breaking Bad", None),
        ("2001 - A Space Odyssey (1968)", "2001 - A Space Odyssey", 1968),
        ("Show {tvdb-123}", "Show", None),
    ],
)
def test_the_title_and_year_are_read_back_from_a_folder_name(
    folder: str, title: str, year: int | None
) -> None:
    assert folder_title(folder) == (title, year)


def test_a_scene_movie_keeps_only_its_video_and_subtitles_under_jellyfin_names() -> None:
    folder = plan_folder(parse("Alien.1979.REMASTERED.1080p"), "movies", imdb="tt0078748", fallback="")
    files = _files(
        ("Alien.1979.REMASTERED.1080p.BluRay.x264-GRP.mkv", 8_000_000),
        ("Sample/alien.1979.sample.mkv", 50_000),
        ("Alien.1979.REMASTERED.1080p.BluRay.x264-GRP.nfo", 2_000),
        ("Setup.exe", 40_000),
        ("Alien.1979.REMASTERED.1080p.BluRay.x264-GRP.srt", 3_000),
        ("Subs/2_English.srt", 3_100),
        ("Subs/3_French_forced.srt", 900),
        ("RARBG.txt", 30),
        ("cover.jpg", 10_000),
    )
    renames, skipped, after = _apply(files, folder)
    assert renames == {
        "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP.mkv": "Alien (1979).mkv",
        "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP.srt": "Alien (1979).srt",
        "Subs/2_English.srt": "Alien (1979).en.srt",
        "Subs/3_French_forced.srt": "Alien (1979).fr.forced.srt",
    }
    assert skipped == [
        "Sample/alien.1979.sample.mkv",
        "Alien.1979.REMASTERED.1080p.BluRay.x264-GRP.nfo",
        "Setup.exe",
        "RARBG.txt",
        "cover.jpg",
    ]
    again = plan_files(after, folder)  # organizing twice (after a restart) renames nothing
    assert again.renames == []
    assert sorted(again.skip) == sorted(plan_files(files, folder).skip)


def test_the_largest_video_is_never_taken_for_a_sample() -> None:
    folder = plan_folder(parse("The Sample 2020"), "movies", imdb=None, fallback="")
    renames, skipped, _ = _apply(
        _files(("The.Sample.2020.mkv", 9_000), ("The.Sample.2020.sample.mkv", 10)), folder
    )
    assert renames == {"The.Sample.2020.mkv": "The Sample (2020).mkv"}
    assert skipped == ["The.Sample.2020.sample.mkv"]


def test_two_subtitles_of_one_language_and_an_idx_sub_pair_keep_distinct_names() -> None:
    folder = plan_folder(parse("Heat 1995"), "movies", imdb=None, fallback="")
    renames, skipped, _ = _apply(
        _files(
            ("Heat.1995.mkv", 9_000),
            ("Subs/English.srt", 10),
            ("Subs/English.SDH.srt", 10),
            ("Subs/eng.srt", 10),
            ("Heat.1995.idx", 10),
            ("Heat.1995.sub", 10),
        ),
        folder,
    )
    assert skipped == []
    assert renames == {
        "Heat.1995.mkv": "Heat (1995).mkv",
        "Subs/English.srt": "Heat (1995).en.srt",
        "Subs/English.SDH.srt": "Heat (1995).en.sdh.srt",
        "Subs/eng.srt": "Heat (1995).en.2.srt",
        "Heat.1995.idx": "Heat (1995).idx",
        "Heat.1995.sub": "Heat (1995).sub",
    }


def test_a_multi_part_movie_keeps_its_parts_and_other_videos_become_extras() -> None:
    folder = plan_folder(parse("Kill Bill 2003"), "movies", imdb=None, fallback="")
    renames, skipped, _ = _apply(
        _files(
            ("Kill.Bill.2003.CD1.avi", 700),
            ("Kill.Bill.2003.CD2.avi", 690),
            ("Making.Of.avi", 100),
        ),
        folder,
    )
    assert renames == {
        "Kill.Bill.2003.CD1.avi": "Kill Bill (2003) - part1.avi",
        "Kill.Bill.2003.CD2.avi": "Kill Bill (2003) - part2.avi",
        "Making.Of.avi": "extras/Making.Of.avi",
    }
    assert skipped == []


def test_a_season_pack_becomes_season_folders_with_episode_names() -> None:
    folder = plan_folder(parse("Breaking.Bad.S01.1080p.BluRay.x264"), "tvshows", imdb=None, fallback="")
    files = _files(
        ("Breaking.Bad.S01E01.1080p.BluRay.x264.mkv", 1_000),
        ("Breaking.Bad.S01E02.1080p.BluRay.x264.mkv", 1_000),
        ("Breaking.Bad.S01E03E04.1080p.BluRay.x264.mkv", 2_000),
        ("Breaking.Bad.S00E01.Pilot.Special.mkv", 900),
        ("Subs/Breaking.Bad.S01E01.English.srt", 10),
        ("Subs/Breaking.Bad.S01E02.eng.forced.srt", 10),
        ("Subs/Something.Else.srt", 10),
        ("Sample/breaking.bad.s01e01.sample.mkv", 50),
        ("Torrent downloaded from site.txt", 5),
    )
    renames, skipped, after = _apply(files, folder)
    assert renames == {
        "Breaking.Bad.S01E01.1080p.BluRay.x264.mkv": "Season 01/Breaking Bad S01E01.mkv",
        "Breaking.Bad.S01E02.1080p.BluRay.x264.mkv": "Season 01/Breaking Bad S01E02.mkv",
        "Breaking.Bad.S01E03E04.1080p.BluRay.x264.mkv": "Season 01/Breaking Bad S01E03-E04.mkv",
        "Breaking.Bad.S00E01.Pilot.Special.mkv": "Season 00/Breaking Bad S00E01.mkv",
        "Subs/Breaking.Bad.S01E01.English.srt": "Season 01/Breaking Bad S01E01.en.srt",
        "Subs/Breaking.Bad.S01E02.eng.forced.srt": "Season 01/Breaking Bad S01E02.en.forced.srt",
    }
    assert skipped == [
        "Subs/Something.Else.srt",
        "Sample/breaking.bad.s01e01.sample.mkv",
        "Torrent downloaded from site.txt",
    ]
    assert plan_files(after, folder).renames == []


def test_episodes_numbered_only_by_their_folder_or_absolutely_still_get_a_season() -> None:
    folder = FolderPlan(Kind.SERIES, "Show", None, "Show", "Show")
    renames, _, _ = _apply(
        _files(
            ("Season 2/Show.E05.mkv", 100),
            ("[SubsPlease] Show - 25 (1080p) [ABCD1234].mkv", 100),
        ),
        folder,
    )
    assert renames == {
        "Season 2/Show.E05.mkv": "Season 02/Show S02E05.mkv",
        "[SubsPlease] Show - 25 (1080p) [ABCD1234].mkv": "Season 01/Show S01E25.mkv",
    }


def test_a_disc_structure_and_a_torrent_without_video_are_left_as_they_are_less_programs() -> None:
    movie = plan_folder(parse("Heat 1995"), "movies", imdb=None, fallback="")
    disc = _files(("BDMV/STREAM/00001.m2ts", 9_000), ("BDMV/index.bdmv", 1), ("autorun.exe", 1))
    renames, skipped, _ = _apply(disc, movie)
    assert (renames, skipped) == ({}, ["autorun.exe"])
    music = _files(("01 - Track.flac", 100), ("cover.jpg", 10), ("album.rar", 5), ("tool.exe", 1))
    renames, skipped, _ = _apply(music, movie)
    assert (renames, skipped) == ({}, ["album.rar", "tool.exe"])


def test_every_listed_program_and_archive_extension_is_skipped() -> None:
    movie = plan_folder(parse("Heat 1995"), "movies", imdb=None, fallback="")
    junk = [f"x.{ext}" for ext in "exe scr bat cmd lnk msi js vbs ps1 zip rar r00 7z".split()]  # noqa: SIM905
    files = _files(("Heat.1995.mkv", 9_000), *((name, 1) for name in junk))
    _, skipped, _ = _apply(files, movie)
    assert skipped == junk


@pytest.mark.parametrize(
    ("path", "suffix"),
    [
        ("Movie.srt", ""),
        ("English.srt", ".en"),
        ("Subs/2_English.srt", ".en"),
        ("Movie.eng.forced.srt", ".en.forced"),
        ("Movie.en.sdh.srt", ".en.sdh"),
        ("Subs/French/1.srt", ".fr"),
        ("Movie.Deutsch.HI.srt", ".de.sdh"),
        ("Movie.pt-BR.srt", ".pt"),
        ("Movie.chinese.ass", ".zh"),
        ("It.2017.1080p.srt", ""),
        ("Subs/English/It.2017.srt", ".en"),
    ],
)
def test_subtitle_suffixes_follow_jellyfins_language_and_flag_rules(path: str, suffix: str) -> None:
    assert subtitle_suffix(path) == suffix
