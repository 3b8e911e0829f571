"""The OpenAPI 3 description of the /torrent API (served publicly at /torrent/openapi.json).

It documents the /torrent API (README, "The /torrent API") as the gateway implements it, so client
authors can generate code and tools such as schemathesis can exercise the API. It contains no data,
only shapes.
"""

from __future__ import annotations

from typing import Any

from .apibay import SEARCH_FIELDS
from .find import KINDS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *errors: tuple[str, str]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for status, description in errors:
        responses[status] = _json(_ERROR, description)
    responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
    responses["403"] = {"$ref": "#/components/responses/Forbidden"}
    responses["502"] = {"$ref": "#/components/responses/AdminCheckFailed"}
    return responses


def _string_fields(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names),
    }


_HASH = {
    "name": "hash",
    "in": "query",
    "required": True,
    "description": "One torrent hash: 40 hex characters (v1) or 64 (v2). 'all' and '|' lists are refused.",
    "schema": {"type": "string", "pattern": "^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$"},
}
_ACTION_RESULT = {
    "type": "object",
    "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}},
    "required": ["success", "message"],
}


def _action(summary: str, extra_parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    responses = _responses(
        _json(_ACTION_RESULT, "Done"),
        ("400", "hash missing or not exactly one hash"),
        ("500", "qBittorrent failed (the reason says which way)"),
    )
    responses["404"] = _json(_ACTION_RESULT, "qBittorrent has no torrent with that hash")
    return {
        "post": {"summary": summary, "parameters": [_HASH, *(extra_parameters or [])], "responses": responses}
    }


def openapi_document(prefix: str) -> dict[str, Any]:
    libraries = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "Name": {"type": "string"},
                "Paths": {"type": "array", "items": {"type": "string"}},
            },
        },
    }
    library_paths = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "LibraryName": {"type": "string"},
                "FolderPaths": {"type": "array", "items": {"type": "string"}},
            },
        },
    }
    search_row = _string_fields(*SEARCH_FIELDS)
    download_request = {
        "type": "object",
        "description": "Keys match in any letter case.",
        "properties": {
            "Name": {"type": "string"},
            "Info_hash": {"type": "string", "description": "40 hex or 32 base32 characters"},
            "Library": {
                "type": "string",
                "description": "A Jellyfin library name: save into its first folder as qBittorrent sees it",
            },
            "SavePath": {
                "type": "string",
                "description": "Absolute; inside qBittorrent's download folder, a library folder "
                "(as qBittorrent sees it, through PATH_MAP) or SAVE_ROOTS",
            },
            "Imdb": {
                "type": "string",
                "pattern": "^tt[0-9]{7,10}$",
                "description": "The IMDb id of the title: a movie folder is tagged [imdbid-tt…]",
            },
            "Organize": {
                "type": "boolean",
                "description": "With Library: name the folder and files as Jellyfin expects and skip "
                "samples and clutter (default true unless SavePath is given; needs Name)",
            },
        },
        "required": ["Info_hash"],
    }
    download_answer = _string_fields("Message", "Id", "SavePath", "ServerResponse")
    download_answer["properties"]["Folder"] = {
        "type": "string",
        "nullable": True,
        "description": "Only with Library: the folder as Jellyfin sees it",
    }
    landing_item = {
        "type": "object",
        "nullable": True,
        "properties": {
            "Id": {"type": "string"},
            "Name": {"type": "string", "nullable": True},
            "ProductionYear": {"type": "integer", "nullable": True},
            "Type": {"type": "string", "nullable": True},
            "ProviderIds": {"type": "object", "additionalProperties": {"type": "string"}},
            "Url": {"type": "string", "description": "The item's page in Jellyfin web, via the gateway"},
        },
    }
    nullable_int = {"type": "integer", "nullable": True}
    nullable_text = {"type": "string", "nullable": True}
    find_result = {
        "type": "object",
        "description": "Every key is always present (null when unknown)",
        "properties": {
            "Name": {"type": "string"},
            "InfoHash": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
            "Size": {**nullable_int, "description": "Bytes"},
            "Seeders": nullable_int,
            "Leechers": nullable_int,
            "Added": {**nullable_text, "format": "date-time"},
            "Sources": {"type": "array", "items": {"type": "string"}},
            "Imdb": nullable_text,
            "Title": nullable_text,
            "Year": nullable_int,
            "Season": nullable_int,
            "Episode": nullable_int,
            "Resolution": nullable_text,
            "Source": nullable_text,
            "Codec": nullable_text,
            "Hdr": nullable_text,
            "InLibrary": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "ItemId": {"type": "string"},
                    "Name": {"type": "string"},
                    "Year": nullable_int,
                    "Resolution": nullable_text,
                    "Url": {"type": "string"},
                },
            },
        },
    }
    find_source = {
        "type": "object",
        "properties": {
            "Name": {"type": "string"},
            "Ok": {"type": "boolean"},
            "Count": {"type": "integer"},
            "Ms": nullable_int,
            "Error": nullable_text,
        },
    }
    landing = {
        "type": "object",
        "properties": {
            "Hash": {"type": "string"},
            "Name": {"type": "string"},
            "Library": {"type": "string", "nullable": True},
            "Folder": {"type": "string", "nullable": True, "description": "As Jellyfin sees it"},
            "State": {
                "type": "string",
                "enum": ["downloading", "announced", "in_jellyfin", "not_in_jellyfin"],
            },
            "Item": landing_item,
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "jellyfin-torrent-gateway /torrent API",
            "version": "1",
            "description": "Admin-only: send a Jellyfin administrator's token or a Jellyfin API key. "
            'Errors are {"error": reason}. The full contract, with examples, is docs/api.md in the '
            "project repository.",
        },
        "servers": [{"url": prefix or "/"}],
        "components": {
            "securitySchemes": {
                "MediaBrowser": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": 'MediaBrowser Token="<Jellyfin access token or API key>"',
                },
                "ApiKey": {"type": "apiKey", "in": "query", "name": "ApiKey"},
            },
            "schemas": {"Error": _string_fields("error")},
            "responses": {
                "Unauthorized": _json(_ERROR, "No, invalid or expired token, or a disabled account"),
                "Forbidden": _json(_ERROR, "The token's user is not a Jellyfin administrator"),
                "AdminCheckFailed": _json(
                    _ERROR, "Jellyfin could not be asked who the caller is (504: too slow)"
                ),
            },
        },
        "security": [{"MediaBrowser": []}, {"ApiKey": []}],
        "paths": {
            "/Test1": {
                "get": {
                    "summary": "Check admin access",
                    "responses": _responses(
                        _json(
                            {"type": "string", "example": "test 1 success"}, "The caller is an administrator"
                        )
                    ),
                }
            },
            "/libraries": {
                "get": {
                    "summary": "Jellyfin libraries and their folders",
                    "responses": _responses(_json(libraries, "Libraries"), ("500", "Jellyfin failed")),
                }
            },
            "/libraries/paths": {
                "get": {
                    "summary": "Jellyfin libraries and their folders",
                    "responses": _responses(_json(library_paths, "Libraries"), ("500", "Jellyfin failed")),
                }
            },
            "/libraries/mapped": {
                "get": {
                    "summary": "Library folders as Jellyfin and as qBittorrent (PATH_MAP) see them",
                    "responses": _responses(
                        _json({"type": "array", "items": {"type": "object"}}, "Libraries")
                    ),
                }
            },
            "/search": {
                "get": {
                    "summary": "Search apibay (first 20 results)",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {
                            "name": "cat",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "default": "0",
                                "pattern": "^[0-9]{1,3}(,[0-9]{1,3})*$",
                            },
                        },
                    ],
                    "responses": _responses(
                        _json({"type": "array", "maxItems": 20, "items": search_row}, "Results"),
                        ("400", "q empty or cat malformed"),
                        ("500", "apibay failed (the reason says which way)"),
                    ),
                }
            },
            "/download": {
                "post": {
                    "summary": "Add a magnet built from Info_hash (and Name) to qBittorrent",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": download_request}},
                    },
                    "responses": _responses(
                        _json(download_answer, "Added, or already there"),
                        ("400", "Info_hash missing or malformed, SavePath not allowed, body not JSON"),
                        ("500", "qBittorrent failed or refused the torrent"),
                    ),
                }
            },
            "/progress": {
                "get": {
                    "summary": "qBittorrent's torrents/info?filter=all, unmodified",
                    "responses": _responses(
                        _json({"type": "array", "items": {"type": "object"}}, "Torrents"),
                        ("500", "qBittorrent failed"),
                    ),
                }
            },
            "/find": {
                "get": {
                    "summary": "Search apibay and the Torznab indexers at once, merged by info hash",
                    "description": "Results sorted by seeders, parsed, and marked InLibrary when Jellyfin "
                    "already has the title; a failing or slow source is reported in Sources, never fails "
                    "the search",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "Required unless imdb is given",
                        },
                        {
                            "name": "type",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(KINDS), "default": "any"},
                        },
                        {
                            "name": "imdb",
                            "in": "query",
                            "schema": {"type": "string", "pattern": "^tt[0-9]{7,10}$"},
                        },
                        {"name": "season", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                        {"name": "episode", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                        },
                    ],
                    "responses": _responses(
                        _json(
                            {
                                "type": "object",
                                "properties": {
                                    "Results": {"type": "array", "items": find_result},
                                    "Sources": {"type": "array", "items": find_source},
                                },
                            },
                            "Results and how each source did",
                        ),
                        ("400", "q and imdb both missing, or a malformed parameter"),
                    ),
                }
            },
            "/landings": {
                "get": {
                    "summary": "Each gateway download and whether it is in Jellyfin yet",
                    "responses": _responses(
                        _json({"type": "array", "items": landing}, "Landings"),
                        ("500", "qBittorrent failed"),
                    ),
                }
            },
            "/events": {
                "get": {
                    "summary": "Live torrent changes (Server-Sent Events)",
                    "description": "'snapshot' {torrents: [...], landings: [...]}, then 'delta' "
                    "{torrents: {hash: changed fields}, removed: [hash]} and 'landing' (one entry of "
                    "/landings whose state changed); the caller is checked again "
                    "at least every ELEVATION_CACHE_TTL seconds, and an 'error' {error, status} event "
                    "ends the stream once the caller is no longer an administrator",
                    "responses": _responses(
                        {"description": "An event stream", "content": {"text/event-stream": {}}},
                        ("503", "Too many listeners on this gateway process (EVENTS_MAX_LISTENERS)"),
                    ),
                }
            },
            "/health": {
                "get": {
                    "summary": "Jellyfin, qBittorrent and apibay reachability; the watcher's state",
                    "responses": _responses(_json({"type": "object"}, "Health")),
                }
            },
            "/pause": _action("Pause (stop) one torrent"),
            "/resume": _action("Resume (start) one torrent"),
            "/delete": _action(
                "Delete one torrent",
                [
                    {
                        "name": "deleteFiles",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
                        "description": "true or false, any letter case",
                    }
                ],
            ),
        },
    }
