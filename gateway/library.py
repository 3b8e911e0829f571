"""Jellyfin's library folders as qBittorrent sees them, and back: the one translation.

With no PATH_MAP both sides use the same paths. With a PATH_MAP, a folder it does not cover is one
qBittorrent cannot be told about (None): it is neither a place to download to nor a path to announce.
Handlers, pages and the watcher all ask these functions, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

from .jellyfin import Library
from .paths import PathError, clean_absolute, to_jellyfin, to_qbittorrent
from .settings import PathMap

#: Libraries (or (name, folders) pairs) with their folders as Jellyfin names them
Libraries = Iterable[Library | tuple[str, list[str]]]


def qbittorrent_folder(folder: str, path_map: PathMap) -> str | None:
    """A Jellyfin folder as qBittorrent names it; None when PATH_MAP does not cover it."""
    return to_qbittorrent(folder, path_map) if path_map else folder


def jellyfin_path(path: str, path_map: PathMap) -> str | None:
    """A qBittorrent path as Jellyfin names it; None when PATH_MAP does not cover it."""
    return to_jellyfin(path, path_map) if path_map else path


def library_folders(libraries: Libraries, path_map: PathMap) -> list[tuple[str, str]]:
    """(library name, folder as qBittorrent names it) for every folder qBittorrent can reach."""
    reachable = []
    for library in libraries:
        name, folders = library[0], library[1]
        for folder in folders:
            try:
                mapped = qbittorrent_folder(clean_absolute(folder), path_map)
            except PathError:
                continue
            if mapped is not None:
                reachable.append((name, mapped))
    return reachable
