"""The query string as Jellyfin (ASP.NET Core) reads it: one decoder for finding and for hiding tokens.

Token extraction and log redaction must agree on what a key is; if redaction matched raw bytes while
extraction decoded them, ``?api%5Fkey=<token>`` would be accepted and logged in full. Pure functions,
no aiohttp.web.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

#: Query keys that carry tokens, upper-cased: the ones Jellyfin reads (ApiKey, legacy api_key) and
#: those other clients and proxies use; only redaction looks beyond the first two.
TOKEN_KEYS = frozenset(
    {"APIKEY", "API_KEY", "ACCESS_TOKEN", "ACCESSTOKEN", "TOKEN", "X-EMBY-TOKEN", "X-MEDIABROWSER-TOKEN"}
)


def decode(component: str) -> str:
    """A key or value as ASP.NET's QueryHelpers decodes it: ``+`` is a space, then %-escapes (UTF-8)."""
    return unquote_plus(component)


def _raw_pairs(raw_query: str) -> list[str]:
    """The ``&``-separated items of a raw query, empty ones dropped, as ASP.NET splits them."""
    return [pair for pair in raw_query.split("&") if pair]


def _decoded_pair(raw_pair: str) -> tuple[str, str]:
    key, _, value = raw_pair.partition("=")
    return decode(key), decode(value)


def reparsed(raw_query: str) -> list[tuple[str, str]] | None:
    """Jellyfin's UrlDecodeQueryFeature: a query that is one item with an ``=`` in its decoded key and
    no value was URL-encoded whole, so that key is split again, once, without decoding its parts.

    None for every other query.
    """
    pairs = _raw_pairs(raw_query)
    if len(pairs) != 1:
        return None
    key, value = _decoded_pair(pairs[0])
    if value or "=" not in key:
        return None
    return [(name, val) for name, _, val in (pair.partition("=") for pair in key.split("&") if pair)]


def query_items(raw_query: str) -> list[tuple[str, str]]:
    """Every (key, value) Jellyfin sees in this raw query, in order."""
    again = reparsed(raw_query)
    if again is not None:
        return again
    return [_decoded_pair(pair) for pair in _raw_pairs(raw_query)]


def is_token_key(key: str) -> bool:
    """Whether a decoded key names a token, ignoring case as .NET's OrdinalIgnoreCase does (which
    upper-cases, so a dotless ``ı`` matches ``I``)."""
    return key.upper() in TOKEN_KEYS
