"""The application factory: wires settings, upstream sessions and routes; no logic of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from . import __version__
from .apibay import ApibayClient
from .auth import ElevationCache
from .headguard import track_requests
from .jellyfin import JellyfinClient
from .keys import (
    APIBAY,
    ELEVATION,
    JELLYFIN,
    LIBRARY_INDEX,
    ORGANIZER,
    PROXY,
    QBITTORRENT,
    RELEASE_READER,
    SETTINGS,
    TORZNAB,
    UPSTREAM_POOL,
    WATCHER,
)
from .library_index import LibraryIndex
from .organizer import Organizer
from .proxy import STREAM_CHUNK, Proxy, ProxyConfig
from .qbittorrent import QbittorrentClient
from .relay import UpstreamPool
from .releases import ReleaseReader
from .routing import mount_case_insensitive
from .settings import Settings
from .torrent_api import create_torrent_app
from .torznab import TorznabClient
from .watcher import TorrentWatcher
from .web_inject import web_index_for

#: Connections to Jellyfin for proxied traffic. Streams hold one for their whole length; this caps
#: sockets, not users.
PROXY_CONNECTIONS = 2048
#: Connections for the gateway's own calls to Jellyfin, apart so that streams cannot starve them.
JELLYFIN_API_CONNECTIONS = 16

#: Headers aiohttp's client would otherwise add on its own; the proxy must send only the client's.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def jellyfin_session(settings: Settings) -> aiohttp.ClientSession:
    """One pooled keep-alive session for all proxied traffic, without a cookie jar.

    A shared jar would hand one user's Jellyfin cookies to the next user's requests.
    """
    connector = aiohttp.TCPConnector(
        limit=PROXY_CONNECTIONS,
        limit_per_host=0,
        keepalive_timeout=60,
        enable_cleanup_closed=False,
        ttl_dns_cache=60,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=None,  # waiting for a pooled connection is not Jellyfin's fault
            sock_connect=settings.jellyfin_connect_timeout,
            sock_read=settings.jellyfin_read_timeout,
        ),
        auto_decompress=False,
        skip_auto_headers=_NO_AUTO_HEADERS,
        read_bufsize=STREAM_CHUNK,
        max_line_size=65536,
        max_field_size=65536,
        raise_for_status=False,
        trust_env=False,
        headers={},
    )


def jellyfin_api_session() -> aiohttp.ClientSession:
    """The gateway's own calls to Jellyfin (admin checks, libraries, watcher): a pool of their own.

    Proxied streams hold their connections for as long as they play; sharing their pool would let
    enough of them (or a client opening that many) starve every admin check. No cookie jar (calls
    carry each caller's token) and no headers of aiohttp's own, as on the proxy session;
    JellyfinClient sets what Jellyfin needs and its timeouts per call.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=JELLYFIN_API_CONNECTIONS, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=60
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_NO_AUTO_HEADERS,
        headers={},
        raise_for_status=False,
        trust_env=False,
    )


def api_session(*, limit: int) -> aiohttp.ClientSession:
    """A small session for the gateway's own API calls to qBittorrent or apibay.

    No cookie jar: the qBittorrent client keeps its one session cookie itself (aiohttp's jar would
    drop it for IP-address hosts), and apibay needs none. Timeouts are set per call by the clients.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, keepalive_timeout=30, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": f"jellyfin-torrent-gateway/{__version__}"},
        trust_env=False,
    )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[track_requests])
    app[SETTINGS] = settings

    async def upstream_sessions(app: web.Application) -> AsyncIterator[None]:
        async with (
            jellyfin_session(settings) as session,
            jellyfin_api_session() as jellyfin_api,
            api_session(limit=8) as qbittorrent_session,
            api_session(limit=8) as apibay_session,
            api_session(limit=16) as torznab_session,
        ):
            if settings.jellyfin_origin.scheme == "http":
                # The front's fast path (front.py); an HTTPS Jellyfin is reached through aiohttp only.
                app[UPSTREAM_POOL] = UpstreamPool(
                    settings.jellyfin_origin.host or "localhost",
                    settings.jellyfin_origin.port or 80,
                    connect_timeout=settings.jellyfin_connect_timeout,
                    limit=PROXY_CONNECTIONS,
                )
            app[PROXY] = Proxy(
                session,
                ProxyConfig(
                    settings.jellyfin_origin,
                    settings.trusted_proxies,
                    ws_max_message=settings.ws_max_message,
                    web_index=web_index_for(settings),
                ),
            )
            jellyfin = JellyfinClient(
                jellyfin_api,
                settings.jellyfin_url,
                connect_timeout=settings.jellyfin_connect_timeout,
                read_timeout=settings.jellyfin_read_timeout,
            )
            app[JELLYFIN] = jellyfin
            app[ELEVATION] = ElevationCache(jellyfin, ttl=settings.elevation_cache_ttl)
            app[QBITTORRENT] = QbittorrentClient(
                qbittorrent_session,
                settings.qbittorrent_url,
                username=settings.qbittorrent_username,
                password=settings.qbittorrent_password,
                timeout=settings.qbittorrent_timeout,
            )
            app[APIBAY] = ApibayClient(apibay_session, settings.apibay_url, timeout=settings.apibay_timeout)
            app[TORZNAB] = tuple(
                TorznabClient(torznab_session, indexer, timeout=settings.torznab_timeout)
                for indexer in settings.torznab_indexers
            )
            app[LIBRARY_INDEX] = library_index = LibraryIndex(jellyfin)
            app[RELEASE_READER] = release_reader = ReleaseReader()
            app[ORGANIZER] = organizer = Organizer(app[QBITTORRENT])
            first_worker = settings.worker_index == 0
            watcher = TorrentWatcher(
                app[QBITTORRENT],
                jellyfin,
                api_key=settings.jellyfin_api_key,
                path_map=settings.path_map,
                interval=settings.watch_interval,
                notify=first_worker,
                organizer=organizer,
                landing_timeout=settings.landing_timeout,
                web_base=settings.base_path,
                on_landed=library_index.invalidate,
            )
            app[WATCHER] = watcher
            watcher.start()
            # Downloads still waiting to be organized (the gateway stopped before their metadata came).
            resuming = asyncio.create_task(organizer.resume_pending()) if first_worker else None
            try:
                yield
            finally:
                if resuming is not None:
                    resuming.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await resuming
                await organizer.stop()
                await watcher.stop()
                await library_index.close()
                await release_reader.close()
                if UPSTREAM_POOL in app:
                    app[UPSTREAM_POOL].close()

    app.cleanup_ctx.append(upstream_sessions)

    async def proxy(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY].handle(request)

    mount_case_insensitive(app, settings.torrent_prefix, create_torrent_app(settings))
    app.router.add_route("*", "/{path:.*}", proxy)
    return app
