"""Logging set-up and redaction: tokens must never reach a log line.

Jellyfin clients put access tokens in the query (``api_key=``, ``ApiKey=``), so every place that logs
a request target goes through redact_target. It reads keys with the same decoder as token extraction
(query.py): whatever encoding makes a key a token key for the gateway and Jellyfin hides its value.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from . import query

REDACTED = "REDACTED"


def redact_target(target: str) -> str:
    """Mask token values in a request target or URL, leaving every other byte as it is.

    Each raw ``&`` item whose decoded key is a token key keeps its raw key and loses its value; a
    query that is one URL-encoded item (which Jellyfin re-parses) is replaced whole when it hides a
    token key. A fragment is left alone unless it is a client-side route with a query of its own.
    """
    parts: list[str] = []
    rest = target
    while True:  # a loop, not recursion: a hostile Referer may nest "?…#" thousands of times
        path, question, after = rest.partition("?")
        if not question:
            parts.append(rest)
            break
        raw_query, hash_sign, rest = after.partition("#")
        parts += [path, "?", _redact_query(raw_query)]
        if not hash_sign:
            break
        parts.append("#")
    return "".join(parts)


def _redact_query(raw_query: str) -> str:
    again = query.reparsed(raw_query)
    if again is not None:
        return REDACTED if any(query.is_token_key(key) for key, _ in again) else raw_query
    pairs = raw_query.split("&")
    for index, pair in enumerate(pairs):
        raw_key, equals, _ = pair.partition("=")
        if equals and query.is_token_key(query.decode(raw_key)):
            pairs[index] = raw_key + "=" + REDACTED
    return "&".join(pairs)


class AccessLogger(AbstractAccessLogger):
    """Combined-style access log with token values masked in the target and the Referer."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        log_access(
            self.logger,
            remote=request.remote,
            method=request.method,
            target=request.raw_path,
            version=(request.version.major, request.version.minor),
            status=response.status,
            length=response.body_length,
            seconds=time,
            referer=request.headers.get("Referer"),
            user_agent=request.headers.get("User-Agent"),
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def log_access(
    logger: logging.Logger,
    *,
    remote: str | None,
    method: str,
    target: str,
    version: tuple[int, int],
    status: int,
    length: int,
    seconds: float,
    referer: str | None,
    user_agent: str | None,
) -> None:
    """One access line, the same for aiohttp's requests and the front's fast path."""
    logger.info(
        '%s "%s %s HTTP/%d.%d" %d %d %.1fms "%s" "%s"',
        remote or "-",
        method,
        redact_target(target),
        version[0],
        version[1],
        status,
        length,
        seconds * 1000,
        redact_target(referer) if referer else "-",
        user_agent or "-",
    )


#: The one log format; it names no source file, line, thread or multiprocessing name.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # With an access line per proxied request, what logging gathers for every record matters: the
    # caller's file and line (a walk up the stack), the thread and the multiprocessing name are not
    # in LOG_FORMAT, so they are not gathered (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
