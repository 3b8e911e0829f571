"""Folder paths as Jellyfin and qBittorrent see them, and where downloads may go.

Jellyfin and qBittorrent often run in different containers, so the same folder has two names
(``/media/movies`` for Jellyfin, ``/downloads/movies`` for qBittorrent). PATH_MAP pairs the prefixes;
these pure functions translate both ways and confine user-chosen save paths to known roots.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

from .settings import PathMap


class PathError(ValueError):
    """A path a client sent that the gateway will not hand to qBittorrent; the message says why."""


def clean_absolute(raw: str) -> str:
    """Normalize a client-supplied directory path, refusing anything ambiguous.

    Absolute, no ``..`` segment, no control characters (a newline would smuggle a second value
    into qBittorrent's form), no backslashes; trailing and doubled slashes removed.
    """
    if not raw or not raw.strip():
        raise PathError("SavePath is empty")
    if any(ord(c) < 0x20 or c == "\x7f" for c in raw):
        raise PathError("SavePath contains control characters")
    if "\\" in raw:
        raise PathError("SavePath must use '/' separators")
    if not raw.startswith("/"):
        raise PathError("SavePath must be an absolute path")
    if ".." in raw.split("/"):
        raise PathError("SavePath must not contain '..'")
    return posixpath.normpath(re.sub("/+", "/", raw))


def is_within(path: str, root: str) -> bool:
    """Whole segments only: ``/media2`` is not within ``/media``."""
    root = root.rstrip("/") or "/"
    return root == "/" or path == root or path.startswith(root + "/")


def _translate(path: str, pairs: Iterable[tuple[str, str]]) -> str | None:
    best: tuple[str, str] | None = None
    for source, target in pairs:
        if is_within(path, source) and (best is None or len(source) > len(best[0])):
            best = (source, target)
    if best is None:
        return None
    source, target = best
    rest = path[len(source.rstrip("/")) :] if source != "/" else path
    joined = target.rstrip("/") + rest if rest else target
    return joined or "/"


def to_qbittorrent(path: str, path_map: PathMap) -> str | None:
    """Jellyfin's name of a folder to qBittorrent's; longest matching prefix wins. None: unmapped."""
    return _translate(path, path_map)


def to_jellyfin(path: str, path_map: PathMap) -> str | None:
    """qBittorrent's name of a folder to Jellyfin's; longest matching prefix wins. None: unmapped."""
    return _translate(path, ((qb, jf) for jf, qb in path_map))
