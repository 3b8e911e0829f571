"""The qBittorrent tags that hold the gateway's state about its downloads (there is no database).

Tags survive gateway restarts, are shared by every gateway process, and show in qBittorrent's own
UI, so an admin can see (and fix) what the gateway thinks of a torrent.
"""

from __future__ import annotations

from typing import Any

#: Every torrent the gateway adds carries this tag, so its own torrents can be told from others.
GATEWAY_TAG = "jellyfin-gateway"
#: The library a download was meant for.
LIBRARY_TAG_PREFIX = "jellyfin-gateway-library:"
#: The IMDb id the caller gave (``tt…``).
IMDB_TAG_PREFIX = "jellyfin-gateway-imdb:"
#: The save path is the Jellyfin folder of a movie or a series (``…:movie``, ``…:series``).
FOLDER_TAG_PREFIX = "jellyfin-gateway-folder:"
#: Files not renamed yet: the torrent waits, stopped, once its file list is known.
ORGANIZE_TAG = "jellyfin-gateway-organize"
#: Added once Jellyfin has been told about the finished download.
NOTIFIED_TAG = "jellyfin-gateway-notified"
#: Jellyfin shows the download as this item (``…:<item id>``).
LANDED_TAG_PREFIX = "jellyfin-gateway-landed:"
#: Jellyfin did not show the download within LANDING_TIMEOUT.
NOT_LANDED_TAG = "jellyfin-gateway-not-landed"


def clean_tag_value(value: str) -> str:
    """Commas separate tags, so none inside; whitespace collapsed."""
    return " ".join(value.replace(",", " ").split())


def library_tag(library: str) -> str:
    """Tag naming the library a download was meant for."""
    return LIBRARY_TAG_PREFIX + clean_tag_value(library)


def tags_of(torrent: dict[str, Any]) -> set[str]:
    raw = torrent.get("tags")
    return {tag.strip() for tag in raw.split(",") if tag.strip()} if isinstance(raw, str) else set()


def tag_value(torrent: dict[str, Any], prefix: str) -> str | None:
    """The value of the first ``prefix…`` tag, or None."""
    for tag in sorted(tags_of(torrent)):
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return tag[len(prefix) :]
    return None
