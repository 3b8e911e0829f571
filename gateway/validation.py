"""Input rules of the /torrent API, in one place so every endpoint applies the same ones.

The original server was ASP.NET: query keys and JSON body keys match in any letter case, booleans are
``true``/``false`` in any case. Hashes are checked strictly here because qBittorrent is lenient in
dangerous ways (``all`` selects every torrent, ``|`` joins several, a newline adds another URL).

Text is refused here, where bodies and query values are read, unless it is UTF-8 without lone
surrogates: Python decodes ``"\\ud800"`` and ``%ED%A0%80`` without complaint, and they would only fail
later, deep inside a handler (encoding a magnet, a form for qBittorrent) as a 500. JSON nests at most
64 levels, as in ASP.NET (System.Text.Json's default MaxDepth).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_BASE32 = re.compile(r"[A-Za-z2-7]{32}")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Deepest nesting of arrays and objects in a request body (System.Text.Json's default MaxDepth).
MAX_JSON_DEPTH = 64


class BadRequest(ValueError):
    """Client input the API refuses with 400; the message is the reason given to the client."""


def _unquote(part: str) -> bytes:
    """The bytes a query component stands for (``+`` is a space). Raw bytes that were not UTF-8 reach
    here as surrogates (aiohttp's pure-Python parser escapes them); they stay invalid UTF-8."""
    return unquote_to_bytes(part.replace("+", " ").encode("utf-8", "surrogatepass"))


def query_value(raw_query: str, name: str) -> str | None:
    """A query parameter by name in any letter case (ASP.NET binding); the first one wins.

    Read from the raw query string: aiohttp's parsed query has already turned bytes that are not
    UTF-8 into U+FFFD, so a bad value could no longer be told from a real replacement character.
    """
    wanted = name.lower()
    for pair in raw_query.split("&"):
        key, _, value = pair.partition("=")
        if _unquote(key).decode("utf-8", "replace").lower() != wanted:
            continue
        try:
            return _unquote(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{name} must be UTF-8 text (no lone surrogates or stray bytes)") from None
    return None


def json_body(raw: bytes) -> Any:
    """The JSON value of a request body: UTF-8 (a byte order mark is allowed), nested at most
    MAX_JSON_DEPTH levels, no lone surrogates in any key or string."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The request body must be JSON encoded as UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadRequest(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise BadRequest("The request body must be JSON") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and surrogates of a parsed JSON value, iteratively (a deep tree must not recurse here)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key in item:
                _check_text(key)
            stack.extend((child, depth) for child in item.values())
        else:
            stack.extend((child, depth) for child in item)


def _check_text(text: str) -> None:
    found = _SURROGATE.search(text)
    if found:
        code = f"\\u{ord(found[0]):04x}"
        raise BadRequest(f"Text in the request body must be valid Unicode: a lone surrogate ({code}) is not")


def parse_bool(raw: str | None, name: str, *, default: bool) -> bool:
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise BadRequest(f"{name} must be true or false")


def body_fields(body: Any) -> dict[str, Any]:
    """A JSON object with its keys lowercased (``Info_hash``, ``info_hash``, ``INFO_HASH`` alike)."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return {str(key).lower(): value for key, value in body.items()}


def optional_text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name.lower())
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def optional_bool(fields: Mapping[str, Any], name: str) -> bool | None:
    value = fields.get(name.lower())
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


_IMDB_ID = re.compile(r"tt\d{7,10}", re.ASCII)


def imdb_id(raw: str | None) -> str | None:
    """An IMDb title id (``tt`` and 7 to 10 digits, as apibay's ``imdb`` field), or None for
    nothing (an empty string is nothing: apibay sends one for unknown titles)."""
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if not _IMDB_ID.fullmatch(value):
        raise BadRequest("Imdb must be an IMDb title id like tt0078748")
    return value


def info_hash_id(raw: str | None) -> str:
    """The lowercase 40-hex ID of a v1 info hash given as 40 hex or 32 base32 characters."""
    if raw is None or not raw.strip():
        raise BadRequest("Info_hash is required")
    value = raw.strip()
    if _HEX40.fullmatch(value):
        return value.lower()
    if _BASE32.fullmatch(value):
        return base64.b32decode(value.upper()).hex()
    raise BadRequest("Info_hash must be 40 hexadecimal or 32 base32 characters")


def torrent_hash(raw: str | None) -> str:
    """Exactly one torrent hash: 40 hex (v1 or qBittorrent's ID) or 64 hex (v2), lowercased."""
    if raw is None or not raw.strip():
        raise BadRequest("hash is required")
    value = raw.strip()
    if _HEX40.fullmatch(value) or _HEX64.fullmatch(value):
        return value.lower()
    raise BadRequest("hash must be one torrent hash: 40 or 64 hexadecimal characters")


def encode_uri_component(text: str) -> str:
    """JavaScript's encodeURIComponent: only ``A-Z a-z 0-9 - _ . ! ~ * ' ( )`` stay as they are."""
    return quote(text, safe="!~*'()")


def magnet_link(info_hash: str, name: str | None, trackers: Iterable[str]) -> str:
    """``magnet:?xt=urn:btih:{hash}&dn={name}&tr=...`` as apibay's own page builds it."""
    link = f"magnet:?xt=urn:btih:{info_hash}"
    if name:
        link += "&dn=" + encode_uri_component(name)
    for tracker in trackers:
        link += "&tr=" + encode_uri_component(tracker)
    return link
