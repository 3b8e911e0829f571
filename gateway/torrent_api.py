"""The /torrent API: the gateway's own endpoints, never forwarded to Jellyfin.

Its contract (paths, shapes, status codes) is binding: existing clients depend on it (README, "The
/torrent API", and openapi.py). Routes are registered as lowercase full paths (see routing.py);
every route but the public ones runs behind the admin check.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .api_errors import json_error, json_errors
from .apibay import validate_category
from .auth import CREDENTIALS, admin_middleware, public
from .events import events
from .find import find
from .forwarding import forwarding_headers
from .health import health
from .jellyfin import Library
from .keys import APIBAY, ELEVATION, JELLYFIN, ORGANIZER, QBITTORRENT, SETTINGS, WATCHER
from .library import jellyfin_path, library_folders, qbittorrent_folder
from .naming import plan_folder
from .openapi import openapi_document
from .pages import add_pages
from .paths import PathError, clean_absolute, is_within
from .qbittorrent import QbittorrentClient
from .releases import parse
from .settings import Settings
from .tags import (
    FOLDER_TAG_PREFIX,
    GATEWAY_TAG,
    IMDB_TAG_PREFIX,
    LANDED_TAG_PREFIX,
    ORGANIZE_TAG,
    library_tag,
    tag_value,
)
from .upstream import Failure, UpstreamError
from .validation import (
    BadRequest,
    body_fields,
    imdb_id,
    info_hash_id,
    json_body,
    magnet_link,
    optional_bool,
    optional_text,
    parse_bool,
    query_value,
    torrent_hash,
)

logger = logging.getLogger(__name__)


async def test1(request: web.Request) -> web.Response:
    """``GET /torrent/Test1``: proves the caller reached the API as an admin."""
    return web.json_response("test 1 success")


async def _libraries(request: web.Request) -> list[Library]:
    """(name, folders) of every Jellyfin library, asked with the caller's own token."""
    settings = request.config_dict[SETTINGS]
    return await request.config_dict[JELLYFIN].libraries(
        request[CREDENTIALS],  # the token in the form the caller used; the admin check ran
        extra_headers=forwarding_headers(request, settings.trusted_proxies),
    )


async def libraries(request: web.Request) -> web.Response:
    """``GET /torrent/libraries``: ``[{Name, Paths}]``."""
    return web.json_response(
        [{"Name": lib.name, "Paths": lib.locations} for lib in await _libraries(request)]
    )


async def libraries_paths(request: web.Request) -> web.Response:
    """``GET /torrent/libraries/paths``: ``[{LibraryName, FolderPaths}]``."""
    return web.json_response(
        [{"LibraryName": lib.name, "FolderPaths": lib.locations} for lib in await _libraries(request)]
    )


async def libraries_mapped(request: web.Request) -> web.Response:
    """``GET /torrent/libraries/mapped``: each library folder as Jellyfin and as qBittorrent sees it.

    Not in the original spec; the admin pages show it so a wrong PATH_MAP is visible before a
    download lands where Jellyfin cannot see it. ``QBittorrent`` is null for an unmapped folder.
    """
    path_map = request.config_dict[SETTINGS].path_map
    return web.json_response(
        [
            {
                "Name": lib.name,
                "Folders": [
                    {
                        "Jellyfin": folder,
                        "QBittorrent": qbittorrent_folder(folder, path_map),
                    }
                    for folder in lib.locations
                ],
            }
            for lib in await _libraries(request)
        ]
    )


def _query(request: web.Request, name: str) -> str | None:
    """One query value, decoded strictly from the raw query string (see validation.query_value)."""
    return query_value(request.rel_url.raw_query_string, name)


async def search(request: web.Request) -> web.Response:
    """``GET /torrent/search?q=&cat=``: the first 20 apibay results, every field a string."""
    query = _query(request, "q")
    if query is None or not query.strip():
        raise BadRequest("q is required")
    try:
        category = validate_category(_query(request, "cat") or "0")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return web.json_response(await request.config_dict[APIBAY].search(query, category))


async def _read_json(request: web.Request) -> Any:
    """The one place request bodies are decoded: UTF-8 JSON, 64 levels deep at most, no lone surrogates."""
    return json_body(await request.read())


async def _allowed_save_roots(request: web.Request, qbittorrent: QbittorrentClient) -> list[str]:
    """Where a client may send a download: qBittorrent's default folder, every library folder that
    qBittorrent can reach (PATH_MAP), and SAVE_ROOTS."""
    settings = request.config_dict[SETTINGS]
    roots = [clean_absolute(await qbittorrent.default_save_path())]
    roots += [folder for _, folder in library_folders(await _libraries(request), settings.path_map)]
    return roots + list(settings.save_roots)


async def _library_save_path(request: web.Request, wanted: str) -> tuple[Library, str]:
    """A library named in any letter case, and its first folder as qBittorrent sees it."""
    libraries = [lib for lib in await _libraries(request) if lib.name.casefold() == wanted.strip().casefold()]
    if not libraries:
        raise BadRequest(f"Jellyfin has no library named {wanted!r}")
    reachable = library_folders(libraries, request.config_dict[SETTINGS].path_map)
    if not reachable:
        raise BadRequest(
            f"Library {libraries[0].name!r} has no folder that PATH_MAP translates for qBittorrent"
        )
    return libraries[0], reachable[0][1]


def _organized_folder(
    library: Library, library_path: str, name: str, imdb: str | None
) -> tuple[str, list[str]]:
    """The Jellyfin-named folder for a release inside a library folder (qBittorrent's view), and
    the tags that tell the organizer what to do with it."""
    plan = plan_folder(parse(name), library.collection_type, imdb=imdb, fallback=name)
    folder = posixpath.join(library_path, plan.folder)
    if not is_within(folder, library_path) or folder == library_path:
        raise BadRequest(f"{name!r} gives no folder inside library {library.name!r}")
    return folder, [FOLDER_TAG_PREFIX + plan.kind.value, ORGANIZE_TAG]


async def download(request: web.Request) -> web.Response:
    """``POST /torrent/download``: add one magnet built from Info_hash (and Name) to qBittorrent."""
    fields = body_fields(await _read_json(request))
    raw_hash = optional_text(fields, "Info_hash")
    torrent_id = info_hash_id(raw_hash)
    assert raw_hash is not None
    given_hash = raw_hash.strip()
    name = optional_text(fields, "Name")
    name = name.strip() if name and name.strip() else None
    raw_save_path = optional_text(fields, "SavePath")
    qbittorrent = request.config_dict[QBITTORRENT]
    settings = request.config_dict[SETTINGS]

    library = optional_text(fields, "Library")
    imdb = imdb_id(optional_text(fields, "Imdb"))
    organize = optional_bool(fields, "Organize")
    if organize and library is None:
        raise BadRequest("Organize needs a Library")
    if organize and raw_save_path is not None:
        raise BadRequest("Organize chooses the folder itself: send SavePath or Organize, not both")
    if organize and name is None:
        raise BadRequest("Name is required to organize a download (the folder is named after it)")
    tags = [GATEWAY_TAG] + ([IMDB_TAG_PREFIX + imdb] if imdb else [])
    save_path: str | None = None
    if raw_save_path is not None:
        try:
            save_path = clean_absolute(raw_save_path)
        except PathError as exc:
            raise BadRequest(str(exc)) from None
        roots = await _allowed_save_roots(request, qbittorrent)
        if not any(is_within(save_path, root) for root in roots):
            raise BadRequest(
                "SavePath must be inside qBittorrent's download folder or a library folder: "
                + ", ".join(roots)
            )
    if library is not None:
        found, library_path = await _library_save_path(request, library)
        tags.append(library_tag(found.name))
        # By default a library download is organized, unless the caller chose the folder.
        if name is not None and (organize or (organize is None and raw_save_path is None)):
            save_path, organize_tags = _organized_folder(found, library_path, name, imdb)
            tags += organize_tags
        else:
            save_path = save_path or library_path
    organizing = ORGANIZE_TAG in tags

    existing = await qbittorrent.torrents([torrent_id])
    result = await qbittorrent.add_magnet(
        magnet_link(given_hash, name, settings.trackers),
        save_path=save_path,
        tags=",".join(tags),
        organize=organizing,
    )

    def answer(message: str, saved_in: str) -> web.Response:
        body: dict[str, str | None] = {"Message": message, "Id": given_hash, "SavePath": saved_in}
        if library is not None:  # the folder Jellyfin will scan; null when PATH_MAP does not cover it
            body["Folder"] = jellyfin_path(saved_in, settings.path_map) if saved_in else None
        return web.json_response({**body, "ServerResponse": result.server_response})

    if result.accepted:
        if organizing:
            request.config_dict[ORGANIZER].organize_soon(torrent_id)
        return answer(
            f"Started downloading: {name or given_hash}",
            save_path if save_path is not None else await qbittorrent.default_save_path(),
        )
    if existing:
        # qBittorrent refuses a torrent it already has; say so instead of pretending it started.
        torrent = existing[0]
        return answer(
            f"Already in qBittorrent: {torrent.get('name') or name or given_hash}",
            str(torrent.get("save_path") or ""),
        )
    raise UpstreamError(
        "qBittorrent",
        Failure.REFUSED,
        f"qBittorrent did not add the torrent (it answered {result.server_response!r})",
    )


async def progress(request: web.Request) -> web.Response:
    """``GET /torrent/progress``: qBittorrent's ``torrents/info?filter=all`` objects, unmodified."""
    text = await request.config_dict[QBITTORRENT].torrents_text()
    return web.Response(text=text, content_type="application/json")


async def _known_id(qbittorrent: QbittorrentClient, given: str) -> str | None:
    """qBittorrent's ID for a 40-hex hash or a v2 (64-hex) info hash; None if it has no such torrent."""
    if len(given) == 40:
        return given if await qbittorrent.torrents([given]) else None
    for torrent in await qbittorrent.torrents():
        if str(torrent.get("infohash_v2", "")).lower() == given and isinstance(torrent.get("hash"), str):
            return str(torrent["hash"]).lower()
    return None


async def _on_one_torrent(
    request: web.Request, act: Callable[[QbittorrentClient, str], Awaitable[None]], message: str
) -> web.Response:
    """Validate ``hash``, make sure qBittorrent has that torrent (its actions say 200 for unknown
    hashes), then act on exactly that one."""
    given = torrent_hash(_query(request, "hash"))
    qbittorrent = request.config_dict[QBITTORRENT]
    torrent_id = await _known_id(qbittorrent, given)
    if torrent_id is None:
        return web.json_response(
            {"success": False, "message": f"No torrent with hash {given} in qBittorrent"}, status=404
        )
    await act(qbittorrent, torrent_id)
    return web.json_response({"success": True, "message": message})


async def pause(request: web.Request) -> web.Response:
    """``POST /torrent/pause?hash=``."""
    return await _on_one_torrent(request, QbittorrentClient.pause, "Torrent paused successfully")


async def resume(request: web.Request) -> web.Response:
    """``POST /torrent/resume?hash=``."""
    return await _on_one_torrent(request, QbittorrentClient.resume, "Torrent resumed successfully")


async def delete(request: web.Request) -> web.Response:
    """``POST /torrent/delete?hash=&deleteFiles=``."""
    delete_files = parse_bool(_query(request, "deleteFiles"), "deleteFiles", default=False)

    async def act(qbittorrent: QbittorrentClient, torrent_id: str) -> None:
        await qbittorrent.delete(torrent_id, delete_files=delete_files)

    message = "Torrent deleted successfully with files" if delete_files else "Torrent deleted successfully"
    return await _on_one_torrent(request, act, message)


async def landings(request: web.Request) -> web.Response:
    """``GET /torrent/landings``: each gateway download, and whether Jellyfin shows it yet.

    Read from qBittorrent's tags at each call (the state lives there); the items are described with
    the gateway's API key, else the caller's token.
    """
    config = request.config_dict
    torrents = await config[QBITTORRENT].torrents(tag=GATEWAY_TAG)
    book = config[WATCHER].landings
    ids = [i for t in torrents if (i := tag_value(t, LANDED_TAG_PREFIX))]
    if ids:
        await book.complete(ids, config[SETTINGS].jellyfin_api_key or request[CREDENTIALS])
    return web.json_response(
        [book.entry(str(t["hash"]).lower(), t) for t in torrents if isinstance(t.get("hash"), str)]
    )


def create_torrent_app(settings: Settings) -> web.Application:
    """The sub-app mounted at BASE/torrent; it reads shared resources through ``config_dict``."""
    prefix = settings.torrent_prefix.lower()
    trusted = settings.trusted_proxies
    require_admin = admin_middleware(
        cache_for=lambda request: request.config_dict[ELEVATION],
        forwarding_for=lambda request: forwarding_headers(request, trusted).items(),
        refuse=json_error,
    )
    app = web.Application(middlewares=[json_errors, require_admin])
    document = openapi_document(settings.torrent_prefix)

    @public
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get(f"{prefix}/test1", test1)
    app.router.add_get(f"{prefix}/libraries", libraries)
    app.router.add_get(f"{prefix}/libraries/paths", libraries_paths)
    app.router.add_get(f"{prefix}/libraries/mapped", libraries_mapped)
    app.router.add_get(f"{prefix}/search", search)
    app.router.add_post(f"{prefix}/download", download)
    app.router.add_get(f"{prefix}/progress", progress)
    app.router.add_post(f"{prefix}/pause", pause)
    app.router.add_post(f"{prefix}/resume", resume)
    app.router.add_post(f"{prefix}/delete", delete)
    app.router.add_get(f"{prefix}/landings", landings)
    app.router.add_get(f"{prefix}/find", find)
    app.router.add_get(f"{prefix}/events", events)
    app.router.add_get(f"{prefix}/health", health)
    app.router.add_get(f"{prefix}/openapi.json", openapi)
    add_pages(app, settings)
    return app
