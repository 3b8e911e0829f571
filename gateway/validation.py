"""Input rules of the /torrent API, in one place so every endpoint applies the same ones.

The original server was ASP.NET: query keys and JSON body keys match in any letter case, booleans are
``true``/``false`` in any case. Hashes are checked strictly here because qBittorrent is lenient in
dangerous ways (``all`` selects every torrent, ``|`` joins several, a newline adds another URL).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from multidict import MultiMapping

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_BASE32 = re.compile(r"[A-Za-z2-7]{32}")


class BadRequest(ValueError):
    """Client input the API refuses with 400; the message is the reason given to the client."""


def query_value(query: MultiMapping[str], name: str) -> str | None:
    """A query parameter by name in any letter case (ASP.NET binding); the first one wins."""
    wanted = name.lower()
    for key, value in query.items():
        if key.lower() == wanted:
            return value
    return None


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
