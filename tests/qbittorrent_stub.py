"""A stub of qBittorrent's WebUI API for tests that need control a real qbittorrent-nox does not give:
torrents that are finished at once, failures on demand, and a record of every request received.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.tags import GATEWAY_TAG, NOTIFIED_TAG, tags_of


def finished_torrent(**fields: Any) -> dict[str, Any]:
    """A gateway download that qBittorrent reports complete (fields override the defaults)."""
    return {
        "name": "Movie",
        "progress": 1,
        "state": "stalledUP",
        "tags": GATEWAY_TAG,
        "content_path": "/downloads/movies/Movie",
        "save_path": "/downloads/movies",
        **fields,
    }


@dataclass
class StubQbittorrent:
    """Just enough of qBittorrent's WebUI API for the watcher: ``sync/maindata`` and ``addTags``.

    Each poll changes every torrent a little (its active time), as a running qBittorrent does, so each
    poll gives a delta; every request is recorded, so a test can say "qBittorrent received nothing".
    """

    torrents: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    add_tags_failures: int = 0  # answer this many addTags calls with HTTP 500
    rid: int = 0

    def tagged(self, torrent_hash: str) -> bool:
        return NOTIFIED_TAG in tags_of(self.torrents[torrent_hash])


def create_stub_qbittorrent(stub: StubQbittorrent) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        stub.requests.append(f"{request.method} {request.path_qs}")
        if request.path == "/api/v2/sync/maindata":
            stub.rid += 1
            for torrent in stub.torrents.values():
                torrent["time_active"] = stub.rid
            body: dict[str, Any] = {"rid": stub.rid, "torrents": copy.deepcopy(stub.torrents)}
            if request.query.get("rid", "0") == "0":
                body["full_update"] = True
            return web.json_response(body)
        if request.path == "/api/v2/torrents/addTags":
            form = await request.post()
            if stub.add_tags_failures:
                stub.add_tags_failures -= 1
                return web.Response(status=500, text="stub failure")
            for torrent_hash in str(form["hashes"]).split("|"):
                torrent = stub.torrents[torrent_hash]
                torrent["tags"] = ", ".join(sorted(tags_of(torrent) | set(str(form["tags"]).split(","))))
            return web.Response(text="")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def complete_torrents(*names: str) -> dict[str, dict[str, Any]]:
    """Finished gateway downloads in qBittorrent's /downloads/movies (Jellyfin's /media/movies)."""
    return {
        f"{index:040x}": finished_torrent(name=name, content_path=f"/downloads/movies/{name}")
        for index, name in enumerate(names, start=1)
    }
