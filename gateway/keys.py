"""Typed application state: the keys under which the factory stores long-lived resources.

A module of its own so that the factory, the handlers and the pages share them without importing
each other.
"""

from __future__ import annotations

from aiohttp import web

from .apibay import ApibayClient
from .auth import ElevationCache
from .jellyfin import JellyfinClient
from .organizer import Organizer
from .proxy import Proxy
from .qbittorrent import QbittorrentClient
from .settings import Settings
from .watcher import TorrentWatcher

ELEVATION = web.AppKey("elevation", ElevationCache)
SETTINGS = web.AppKey("settings", Settings)
JELLYFIN = web.AppKey("jellyfin", JellyfinClient)
QBITTORRENT = web.AppKey("qbittorrent", QbittorrentClient)
APIBAY = web.AppKey("apibay", ApibayClient)
WATCHER = web.AppKey("watcher", TorrentWatcher)
ORGANIZER = web.AppKey("organizer", Organizer)
PROXY = web.AppKey("proxy", Proxy)
