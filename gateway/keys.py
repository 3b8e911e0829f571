"""Typed application state: the keys under which the factory stores long-lived resources.

A module of its own so that the factory, the handlers and the pages share them without importing
each other.
"""

from __future__ import annotations

from aiohttp import web

from .apibay import ApibayClient
from .auth import ElevationCache
from .jellyfin import JellyfinClient
from .library_index import LibraryIndex
from .organizer import Organizer
from .proxy import Proxy
from .qbittorrent import QbittorrentClient
from .relay import UpstreamPool
from .releases import ReleaseReader
from .settings import Settings
from .torznab import TorznabClient
from .watcher import TorrentWatcher

ELEVATION = web.AppKey("elevation", ElevationCache)
SETTINGS = web.AppKey("settings", Settings)
JELLYFIN = web.AppKey("jellyfin", JellyfinClient)
QBITTORRENT = web.AppKey("qbittorrent", QbittorrentClient)
APIBAY = web.AppKey("apibay", ApibayClient)
WATCHER = web.AppKey("watcher", TorrentWatcher)
ORGANIZER = web.AppKey("organizer", Organizer)
LIBRARY_INDEX = web.AppKey("library_index", LibraryIndex)
TORZNAB = web.AppKey("torznab", tuple[TorznabClient, ...])
RELEASE_READER = web.AppKey("release_reader", ReleaseReader)
PROXY = web.AppKey("proxy", Proxy)
#: Keep-alive connections of the front's fast path to Jellyfin (absent when Jellyfin is HTTPS).
UPSTREAM_POOL = web.AppKey("upstream_pool", UpstreamPool)
