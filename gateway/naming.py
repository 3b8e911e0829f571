"""Jellyfin's naming rules, applied to a torrent's files: the one place they live.

A library download is added to qBittorrent with its save path set to the folder Jellyfin expects
(``Title (Year) [imdbid-tt…]`` for a movie, ``Series (Year)`` for a show) and without the release's
root folder; once qBittorrent knows the file list, ``plan_files`` says which files to rename (a new
path may contain ``/``: ``Season 01/Series S01E02.mkv``) and which never to download (samples,
executables, archives, release clutter). Everything here is pure: the same file list always gives the
same plan, and a plan applied to its own result renames nothing, so organizing again after an
interruption is harmless.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath

from .releases import Release, parse

VIDEO_EXTENSIONS = frozenset(
    "mkv mp4 m4v avi mov wmv mpg mpeg ts m2ts mts webm ogv flv 3gp divx xvid vob iso".split()  # noqa: SIM905
)
SUBTITLE_EXTENSIONS = frozenset("srt ass ssa sub idx vtt sup smi".split())  # noqa: SIM905
#: Never downloaded: programs and scripts that have no place in a media library.
EXECUTABLE_EXTENSIONS = frozenset(
    "exe scr bat cmd lnk msi js vbs ps1 com pif hta wsf jar dll".split()  # noqa: SIM905
)
_ARCHIVE = re.compile(r"^(zip|rar|7z|tar|gz|tgz|bz2|xz|cab|r\d\d|z\d\d|\d\d\d)$")
#: Folders that make a disc structure: Jellyfin plays them as they are, so nothing inside is renamed.
_DISC_FOLDERS = frozenset({"bdmv", "video_ts", "hvdvd_ts"})
_SAMPLE_FOLDERS = frozenset({"sample", "samples"})
_PART = re.compile(r"(?:^|[\s._\-\[(])(?:cd|dvd|part|pt|dis[ck])[\s._\-]?([1-9])(?:$|[\s._\-\])])", re.I)
_SEASON_FOLDER = re.compile(r"^(?:season|series|saison|staffel|temporada|s)[\s._\-]*(\d{1,3})$", re.I)
#: Every path component stays below ext4's 255-byte limit with room for suffixes and extensions.
MAX_TITLE_BYTES = 180


class Kind(Enum):
    MOVIE = "movie"
    SERIES = "series"


@dataclass(frozen=True)
class FolderPlan:
    """Where a release goes inside a library: ``folder`` is one path component."""

    kind: Kind
    title: str  # sanitised: the base of every file name
    year: int | None
    folder: str
    #: For movies, the base name of the main video (``Title (Year)``).
    base: str


@dataclass(frozen=True)
class TorrentFile:
    index: int
    name: str  # relative to the save path, "/"-separated
    size: int


@dataclass
class FilePlan:
    renames: list[tuple[str, str]] = field(default_factory=list)  # (old path, new path)
    skip: list[int] = field(default_factory=list)  # file indexes never to download


# --- names ------------------------------------------------------------------------------------------

_REPLACEMENTS = {"/": "-", "\\": "-", "*": "-", "|": "-", '"': "'", "<": "", ">": "", "?": ""}


def sanitize(text: str, *, max_bytes: int = MAX_TITLE_BYTES) -> str:
    """One safe path component: no characters that are illegal on common filesystems (or SMB
    shares), no control characters, no leading or trailing dots and spaces, at most ``max_bytes``.

    A colon becomes `` -`` before a space (``Mission: Impossible`` → ``Mission - Impossible``), else
    ``-``. The result may be empty; callers choose the fallback.
    """
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r":(?=\s)", " -", text).replace(":", "-")
    text = "".join(_REPLACEMENTS.get(ch, ch) for ch in text if ch.isprintable() or ch == " ")
    text = " ".join(text.split())
    raw = text.encode()
    if len(raw) > max_bytes:
        text = raw[:max_bytes].decode(errors="ignore")
    return text.strip(" .")


def _title_year(title: str, year: int | None) -> str:
    return f"{title} ({year})" if year else title


def plan_folder(
    release: Release, collection_type: str | None, *, imdb: str | None, fallback: str
) -> FolderPlan:
    """The library folder for a release, by the library's type (movies, tvshows, or anything else:
    a show when the name carries a season or episode, else a movie)."""
    if collection_type == "tvshows":
        kind = Kind.SERIES
    elif collection_type == "movies":
        kind = Kind.MOVIE
    else:
        kind = Kind.SERIES if release.seasons or release.episodes else Kind.MOVIE
    title = sanitize(release.title or "") or sanitize(fallback) or "Unknown"
    year = release.year
    base = _title_year(title, year)
    folder = base + (f" [imdbid-{imdb}]" if imdb and kind is Kind.MOVIE else "")
    return FolderPlan(kind, title, year, folder, base)


_FOLDER_TAIL = re.compile(r"(?:\s*\[[^\]]*\]|\s*\{[^}]*\})+$")
_FOLDER_YEAR = re.compile(r"\s*\((\d{4})\)$")


def folder_title(folder: str) -> tuple[str, int | None]:
    """Title and year of a folder named by ``plan_folder`` (``Alien (1979) [imdbid-tt0078748]``)."""
    name = _FOLDER_TAIL.sub("", PurePosixPath(folder).name)
    match = _FOLDER_YEAR.search(name)
    if match:
        return name[: match.start()].strip(), int(match.group(1))
    return name.strip(), None


# --- files ------------------------------------------------------------------------------------------


def _extension(name: str) -> str:
    suffix = PurePosixPath(name).suffix
    return suffix[1:].lower() if suffix else ""


def _stem(name: str) -> str:
    return PurePosixPath(name).stem


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^0-9a-z]+", text.lower()) if w]


def _is_junk(file: TorrentFile) -> bool:
    ext = _extension(file.name)
    return ext in EXECUTABLE_EXTENSIONS or bool(_ARCHIVE.match(ext))


def _looks_like_sample(file: TorrentFile) -> bool:
    folders = {part.lower() for part in PurePosixPath(file.name).parts[:-1]}
    return bool(folders & _SAMPLE_FOLDERS) or "sample" in _words(_stem(file.name))


def _has_disc_structure(files: Sequence[TorrentFile]) -> bool:
    return any(part.lower() in _DISC_FOLDERS for f in files for part in PurePosixPath(f.name).parts[:-1])


def plan_files(files: Sequence[TorrentFile], folder: FolderPlan) -> FilePlan:
    """Renames and skips for a torrent whose save path is ``folder``.

    Videos and subtitles are kept (samples are not: the largest video is never taken for one);
    everything else is never downloaded. A torrent without any video (music, books), or holding a
    disc structure (BDMV, VIDEO_TS), is left as it is, less executables and archives.
    """
    plan = FilePlan()
    videos = [f for f in files if _extension(f.name) in VIDEO_EXTENSIONS]
    if not videos or _has_disc_structure(files):
        plan.skip = [f.index for f in files if _is_junk(f)]
        return plan
    largest = max(videos, key=lambda f: (f.size, f.name))
    kept_videos = [f for f in videos if f is largest or not _looks_like_sample(f)]
    subtitles = [f for f in files if _extension(f.name) in SUBTITLE_EXTENSIONS]
    kept = {f.index for f in kept_videos}
    if folder.kind is Kind.MOVIE:
        video_names = _movie_videos(kept_videos, largest, folder)
        sub_targets = _movie_subtitles(subtitles, video_names[largest.index])
    else:
        video_names = _episode_videos(kept_videos, folder)
        sub_targets = _episode_subtitles(subtitles, kept_videos, video_names)
    kept |= set(sub_targets)
    targets = {**video_names, **sub_targets}
    for f in files:
        if f.index not in kept:
            plan.skip.append(f.index)
        elif targets.get(f.index, f.name) != f.name:
            plan.renames.append((f.name, targets[f.index]))
    return plan


def _unique(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted`` with `` - 2``, `` - 3``… before the extension when already taken."""
    path = PurePosixPath(wanted)
    candidate, n = wanted, 1
    while candidate.lower() in taken:
        n += 1
        candidate = str(path.with_name(f"{path.stem} - {n}{path.suffix}"))
    taken.add(candidate.lower())
    return candidate


def _movie_videos(videos: list[TorrentFile], main: TorrentFile, folder: FolderPlan) -> dict[int, str]:
    """The main video is ``Title (Year).ext``; other parts of a multi-part movie ``Title (Year) -
    partN.ext``; any other video is an extra (``extras/…``)."""
    parts = {f.index: m.group(1) for f in videos if (m := _PART.search(_stem(f.name)))}
    multi_part = main.index in parts and len(parts) > 1
    names: dict[int, str] = {}
    taken: set[str] = set()
    for f in sorted(videos, key=lambda f: (f is not main, f.name)):
        ext = _extension(f.name)
        if multi_part and f.index in parts:
            wanted = f"{folder.base} - part{parts[f.index]}.{ext}"
        elif f is main:
            wanted = f"{folder.base}.{ext}"
        else:
            wanted = f"extras/{sanitize(_stem(f.name)) or 'extra'}.{ext}"
        names[f.index] = _unique(wanted, taken)
    return names


def _episode_numbers(file: TorrentFile) -> tuple[int | None, tuple[int, ...]]:
    """(season, episodes) from the file name, else its folders (``Season 2/05.mkv``)."""
    release = parse(PurePosixPath(file.name).name)
    season = release.seasons[0] if release.seasons else None
    episodes = release.episodes
    for part in reversed(PurePosixPath(file.name).parts[:-1]):
        if season is not None:
            break
        if match := _SEASON_FOLDER.match(part.strip()):
            season = int(match.group(1))
        elif (outer := parse(part)).seasons and len(outer.seasons) == 1:
            season = outer.seasons[0]
    return season, episodes


def _episode_code(season: int, episodes: tuple[int, ...]) -> str:
    width = 3 if max(episodes) >= 100 else 2
    code = f"S{season:02d}E{episodes[0]:0{width}d}"
    if len(episodes) > 1 and episodes[-1] != episodes[0]:
        code += f"-E{episodes[-1]:0{width}d}"
    return code


def _episode_videos(videos: list[TorrentFile], folder: FolderPlan) -> dict[int, str]:
    """``Season NN/Series SNNEMM.ext`` (``S01E01-E02`` for a multi-episode file, ``Season 00`` for
    specials). A video without an episode number keeps its name, in its season's folder if known."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for f in sorted(videos, key=lambda f: f.name):
        season, episodes = _episode_numbers(f)
        ext = _extension(f.name)
        if episodes:
            season = 1 if season is None else season
            wanted = f"Season {season:02d}/{folder.title} {_episode_code(season, episodes)}.{ext}"
        elif season is not None:
            wanted = f"Season {season:02d}/{sanitize(_stem(f.name)) or 'episode'}.{ext}"
        else:
            wanted = f.name
        names[f.index] = _unique(wanted, taken)
    return names


# --- subtitles --------------------------------------------------------------------------------------

#: Jellyfin's language code, then the words a release uses for that language.
_LANGUAGE_TABLE = """
en eng english
fr fre fra french francais vf vff vostfr
de ger deu german deutsch
es spa spanish espanol castellano
it ita italian italiano
pt por portuguese
pt-BR pob ptbr brazilian
nl dut nld dutch
ru rus russian
ja jpn japanese
zh chi zho chinese
ko kor korean
sv swe swedish
no nor nob norwegian
da dan danish
fi fin finnish
pl pol polish
tr tur turkish
ar ara arabic
he heb hebrew
cs cze ces czech
hu hun hungarian
el gre ell greek
ro rum ron romanian
uk ukr ukrainian
hi hin hindi
th tha thai
vi vie vietnamese
id ind indonesian
bg bul bulgarian
hr hrv croatian
sr srp serbian
sk slo slk slovak
sl slv slovenian
"""
_LANGUAGES = {
    word: line.split()[0]
    for line in _LANGUAGE_TABLE.strip().splitlines()
    for word in [line.split()[0].lower(), *line.split()[1:]]
}
_FORCED = frozenset({"forced", "foreign"})
_SDH = frozenset({"sdh", "hi", "cc"})


#: Words that may sit among the language and flags at the end of a subtitle's name.
_SUBTITLE_NOISE = frozenset({"br", "default", "full", "sub", "subs", "subtitle", "subtitles"})


def _trailing_tags(text: str) -> list[str]:
    """The language and flag words at the end of a name (``Movie.eng.forced`` → eng, forced): a title
    word like "It" at the start is not a language."""
    tags: list[str] = []
    for word in reversed(_words(text)):
        if word not in _LANGUAGES and word not in _FORCED | _SDH | _SUBTITLE_NOISE:
            break
        tags.insert(0, word)
    return tags


def subtitle_suffix(path: str) -> str:
    """Jellyfin's suffix for an external subtitle: ``.en``, ``.en.forced``, ``.en.sdh`` (from the
    end of the file's own name, else of its folders: ``Subs/English/2.srt``)."""
    parts = PurePosixPath(path).parts
    language = None
    words: list[str] = []
    for text in (_stem(parts[-1]), *reversed(parts[:-1])):
        tags = _trailing_tags(text)
        words += tags
        found = [_LANGUAGES[w] for w in tags if w in _LANGUAGES and w != "hi"]
        if found:
            language = found[0]
            break
    flags = ""
    if _SDH & set(words):
        flags += ".sdh"
    if _FORCED & set(words):
        flags += ".forced"
    return (f".{language}" if language else "") + flags


def _subtitle_name(sub: TorrentFile, video_target: str, taken: set[str]) -> str:
    video = PurePosixPath(video_target)
    wanted = str(video.with_name(f"{video.stem}{subtitle_suffix(sub.name)}.{_extension(sub.name)}"))
    if wanted.lower() not in taken:
        taken.add(wanted.lower())
        return wanted
    n = 2
    while True:
        candidate = str(
            video.with_name(f"{video.stem}{subtitle_suffix(sub.name)}.{n}.{_extension(sub.name)}")
        )
        if candidate.lower() not in taken:
            taken.add(candidate.lower())
            return candidate
        n += 1


def _paired(subtitles: Iterable[TorrentFile]) -> list[TorrentFile]:
    """``.idx`` before ``.sub`` of the same stem, so the pair gets the same number when numbered."""
    return sorted(subtitles, key=lambda f: (str(PurePosixPath(f.name).with_suffix("")), f.name))


def _movie_subtitles(subtitles: list[TorrentFile], main_target: str) -> dict[int, str]:
    names: dict[int, str] = {}
    taken: set[str] = set()
    stems: dict[str, str] = {}  # an idx/sub pair shares one stem
    for sub in _paired(subtitles):
        key = str(PurePosixPath(sub.name).with_suffix("")).lower()
        if key in stems:
            names[sub.index] = f"{stems[key]}.{_extension(sub.name)}"
            continue
        name = _subtitle_name(sub, main_target, taken)
        stems[key] = str(PurePosixPath(name).with_suffix(""))
        names[sub.index] = name
    return names


def _episode_subtitles(
    subtitles: list[TorrentFile], videos: list[TorrentFile], video_names: dict[int, str]
) -> dict[int, str]:
    """A subtitle goes with the video of the same episode numbers, or the same stem, or the only
    video; one that matches none is not downloaded."""
    by_episode: dict[tuple[int, tuple[int, ...]], TorrentFile] = {}
    for video in videos:
        season, episodes = _episode_numbers(video)
        if episodes:
            by_episode[(1 if season is None else season, episodes)] = video
    by_stem = {_stem(v.name).lower(): v for v in videos}
    names: dict[int, str] = {}
    taken: set[str] = set()
    stems: dict[str, str] = {}
    for sub in _paired(subtitles):
        key = str(PurePosixPath(sub.name).with_suffix("")).lower()
        if key in stems:
            names[sub.index] = f"{stems[key]}.{_extension(sub.name)}"
            continue
        season, episodes = _episode_numbers(sub)
        match = by_episode.get((1 if season is None else season, episodes)) if episodes else None
        if match is None:
            stem = _stem(sub.name).lower()
            match = next((v for s, v in by_stem.items() if stem == s or stem.startswith(s + ".")), None)
        if match is None and len(videos) == 1:
            match = videos[0]
        if match is None:
            continue
        name = _subtitle_name(sub, video_names[match.index], taken)
        stems[key] = str(PurePosixPath(name).with_suffix(""))
        names[sub.index] = name
    return names
