"""Did a download become playable? Its landing state, and the Jellyfin item it became.

A gateway download goes ``downloading`` → ``announced`` (Jellyfin was told: the ``notified`` tag) →
``in_jellyfin`` (an item whose Path lies inside the download's folder appeared: the ``landed:<id>``
tag) or ``not_in_jellyfin`` (none within LANDING_TIMEOUT: the ``not-landed`` tag). The state is read
from qBittorrent's tags, so it survives restarts and every gateway process agrees. The look-ups
themselves are the watcher's (it runs them after its announcements); this module says what to look
for, what counts as a match, and how an entry of ``GET /torrent/landings`` looks.
"""

from __future__ import annotations

import enum
import logging
import re
from typing import Any

from .jellyfin import Credentials, Item, JellyfinClient
from .library import jellyfin_path
from .naming import folder_title
from .paths import is_within
from .releases import parse
from .settings import PathMap
from .tags import (
    FOLDER_TAG_PREFIX,
    LANDED_TAG_PREFIX,
    LIBRARY_TAG_PREFIX,
    NOT_LANDED_TAG,
    NOTIFIED_TAG,
    tag_value,
    tags_of,
)
from .upstream import UpstreamError

logger = logging.getLogger(__name__)

#: Seconds between look-ups: a few seconds apart at first (Jellyfin's scan of one folder is quick),
#: then backing off; the last value repeats until LANDING_TIMEOUT.
LOOKUP_DELAYS = (2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 60.0)
#: Item types that stand for a whole download, preferred over an episode inside it.
_WHOLE = ("Movie", "Series")


class State(enum.StrEnum):
    DOWNLOADING = "downloading"
    ANNOUNCED = "announced"
    IN_JELLYFIN = "in_jellyfin"
    NOT_IN_JELLYFIN = "not_in_jellyfin"


def state_of(torrent: dict[str, Any]) -> State:
    tags = tags_of(torrent)
    if tag_value(torrent, LANDED_TAG_PREFIX):
        return State.IN_JELLYFIN
    if NOT_LANDED_TAG in tags:
        return State.NOT_IN_JELLYFIN
    if NOTIFIED_TAG in tags:
        return State.ANNOUNCED
    return State.DOWNLOADING


def landing_folder(torrent: dict[str, Any], path_map: PathMap) -> str | None:
    """The download as Jellyfin sees it: the folder the gateway named (organized downloads), else
    what qBittorrent wrote (the release's folder or file). None when PATH_MAP does not cover it."""
    organized = tag_value(torrent, FOLDER_TAG_PREFIX) is not None
    key = "save_path" if organized else "content_path"
    path = torrent.get(key) or torrent.get("save_path")
    return jellyfin_path(str(path).rstrip("/") or "/", path_map) if isinstance(path, str) and path else None


def search_terms(torrent: dict[str, Any], folder: str) -> list[str]:
    """What to ask Jellyfin's search for: the title, then its longest word (Jellyfin's name may
    differ from ours: the match is by path, so a broader term is safe)."""
    if tag_value(torrent, FOLDER_TAG_PREFIX) is not None:
        title = folder_title(folder)[0]
    else:
        name = str(torrent.get("name") or "")
        title = parse(name).title or name
    words = sorted(re.findall(r"\w{3,}", title), key=len, reverse=True)
    terms = [title] + ([words[0]] if words and words[0].casefold() != title.casefold() else [])
    return [term for term in terms if term.strip()] or [folder.rsplit("/", 1)[-1]]


def pick_item(items: list[Item], folder: str) -> Item | None:
    """The item inside the download's folder, not merely the first search hit: another library may
    hold an item of the same name."""
    inside = [item for item in items if item.path and is_within(item.path, folder)]
    inside.sort(key=lambda item: (item.type not in _WHOLE, len(item.path or "")))
    return inside[0] if inside else None


def lookup_delay(attempts: int) -> float:
    return LOOKUP_DELAYS[min(attempts, len(LOOKUP_DELAYS) - 1)]


class LandingBook:
    """The Jellyfin items downloads became, remembered by id, and the entries built from them."""

    def __init__(self, jellyfin: JellyfinClient, *, path_map: PathMap, web_base: str) -> None:
        self._jellyfin = jellyfin
        self._path_map = path_map
        self._web_base = web_base  # Jellyfin's BaseUrl, as the browser reaches it through the gateway
        self.items: dict[str, Item] = {}
        self.server_id: str | None = None

    def remember(self, item: Item) -> None:
        self.items[item.id] = item

    async def ensure_server_id(self) -> None:
        """Jellyfin's server id, for item links (asked once; links work without it too)."""
        if self.server_id is None:
            try:
                self.server_id = (await self._jellyfin.public_info()).server_id
            except UpstreamError as exc:
                logger.warning("cannot ask Jellyfin for its server id (%s)", exc.reason)

    async def complete(self, ids: list[str], auth: str | Credentials) -> None:
        """Fetch the items (and the server id for their links) not known yet, in one call each.
        Best effort: an entry without them still has its state and the item id."""
        await self.ensure_server_id()
        try:
            missing = sorted({i for i in ids if i not in self.items})
            if missing:
                for item in await self._jellyfin.items(auth, ids=missing):
                    self.remember(item)
        except UpstreamError as exc:
            logger.warning("cannot describe landed items (%s)", exc.reason)

    def url(self, item_id: str) -> str:
        """Jellyfin web's page of the item, through the gateway (same origin as the admin pages)."""
        server = f"&serverId={self.server_id}" if self.server_id else ""
        return f"{self._web_base}/web/#/details?id={item_id}{server}"

    def item_json(self, item_id: str) -> dict[str, Any]:
        item = self.items.get(item_id)
        return {
            "Id": item_id,
            "Name": item.name if item else None,
            "ProductionYear": item.production_year if item else None,
            "Type": item.type if item else None,
            "ProviderIds": dict(item.provider_ids) if item else {},
            "Url": self.url(item_id),
        }

    def entry(self, torrent_hash: str, torrent: dict[str, Any]) -> dict[str, Any]:
        """One entry of ``GET /torrent/landings`` (and of the ``landing`` live event)."""
        item_id = tag_value(torrent, LANDED_TAG_PREFIX)
        return {
            "Hash": torrent_hash,
            "Name": torrent.get("name"),
            "Library": tag_value(torrent, LIBRARY_TAG_PREFIX),
            "Folder": landing_folder(torrent, self._path_map),
            "State": state_of(torrent).value,
            "Item": self.item_json(item_id) if item_id else None,
        }
