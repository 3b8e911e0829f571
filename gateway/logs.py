"""Logging set-up and redaction: tokens must never reach a log line.

Jellyfin clients put access tokens in the query (``api_key=``, ``ApiKey=``) and in Authorization /
X-Emby-* headers, so every place that logs a request target or headers goes through these helpers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

REDACTED = "REDACTED"

# Query keys Jellyfin (and its clients) use for tokens; matched case-insensitively, as Jellyfin does.
_TOKEN_QUERY = re.compile(
    r"(?i)(?P<key>(?:^|[?&;])(?:api_?key|access_?token|token|x-emby-token|x-mediabrowser-token)=)[^&;#]*"
)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def redact_target(target: str) -> str:
    """Mask token values in a request target or URL, leaving everything else byte for byte."""
    return _TOKEN_QUERY.sub(lambda m: m.group("key") + REDACTED, target)


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in _SECRET_HEADERS or lowered.startswith("x-emby-") or lowered.startswith("x-mediabrowser-")
    )


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, REDACTED if is_secret_header(name) else value) for name, value in items]


class AccessLogger(AbstractAccessLogger):
    """Combined-style access log with token values masked in the target and the Referer."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        referer = request.headers.get("Referer")
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.1fms "%s" "%s"',
            request.remote or "-",
            request.method,
            redact_target(request.raw_path),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time * 1000,
            redact_target(referer) if referer else "-",
            request.headers.get("User-Agent", "-"),
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def configure(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
