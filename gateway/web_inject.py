"""The gateway's script in Jellyfin web: one ``<script>`` tag added to Jellyfin's index.html.

A response transform apart from the relay loop: the proxy hands over only GET/HEAD of
``<BaseUrl>/web/`` and ``<BaseUrl>/web/index.html``, asked of Jellyfin whole and uncompressed. Every
other answer (other files, errors, 304s, non-HTML, documents over :data:`MAX_DOCUMENT`) is streamed on
unchanged by the proxy. The tag's ``src`` is relative to the page, so any BaseUrl works, and carries
the script's version, so browsers fetch a new script as soon as the gateway ships one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from . import __version__
from .pages import STATIC
from .settings import Settings

#: The script Jellyfin web loads from the gateway (served by pages.py under /torrent/ui/static).
SCRIPT = STATIC / "jellyfin-web.js"
#: Larger documents are not Jellyfin's index.html (about 30 KB): streamed on unchanged.
MAX_DOCUMENT = 2 * 1024 * 1024
#: The attribute that marks the tag, so that a document is never injected twice (two gateways).
MARKER = b"data-jellyfin-gateway"

#: Headers that would make Jellyfin answer with less than the whole identity document.
_PARTIAL_OR_CONDITIONAL = (
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "Range",
    "If-Range",
)
#: Headers of Jellyfin's answer that describe its document, not the injected one.
_REPLACED = ("ETag", "Content-Length", "Accept-Ranges", "Content-Range", "Content-Encoding", "Cache-Control")
#: What a 304 repeats of the 200 it stands for (RFC 9110 15.4.5).
_NOT_MODIFIED_KEEPS = frozenset({"cache-control", "vary", "last-modified", "expires", "content-location"})
_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)
_MARKED = re.compile(re.escape(MARKER), re.IGNORECASE)


def script_version(script: Path | None = None) -> str:
    """A short hash of the script's bytes; of the gateway's version while the script is missing."""
    path = SCRIPT if script is None else script
    try:
        content = path.read_bytes()
    except OSError:
        content = __version__.encode()
    return hashlib.sha256(content).hexdigest()[:12]


@dataclass(frozen=True)
class WebIndex:
    """Which paths are Jellyfin web's index.html, and the tag that goes into it."""

    #: ``<base>/web/`` and ``<base>/web/index.html``, lowercase (Jellyfin ignores case).
    paths: frozenset[str]
    version: str
    tag: bytes

    @classmethod
    def for_base(cls, base_path: str, version: str) -> WebIndex:
        base = base_path.lower()
        # Both pages live in <base>/web/, so the torrent UI at <base>/torrent is one level up.
        tag = (
            f'<script src="../torrent/ui/static/{SCRIPT.name}?v={version}" defer data-jellyfin-gateway>'
            "</script>"
        )
        return cls(frozenset({f"{base}/web/", f"{base}/web/index.html"}), version, tag.encode())

    def upstream_headers(self, headers: CIMultiDict[str]) -> None:
        """Ask Jellyfin for the whole document, uncompressed: the client's validators are ours."""
        for name in _PARTIAL_OR_CONDITIONAL:
            headers.popall(name, None)
        headers["Accept-Encoding"] = "identity"

    def can_inject(self, upstream: aiohttp.ClientResponse) -> bool:
        """A 200 HTML identity document of at most MAX_DOCUMENT (if its length is announced)."""
        if upstream.status != 200 or upstream.content_type != "text/html":
            return False
        if upstream.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            return False
        length = upstream.content_length
        return length is None or length <= MAX_DOCUMENT

    def respond(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        headers: CIMultiDict[str],
        document: bytes,
    ) -> web.Response:
        """The injected document (or a 304 for it); ``headers`` are Jellyfin's end-to-end ones.

        An already injected document goes out as Jellyfin sent it.
        """
        if _MARKED.search(document):
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=document
            )
        etag = self.etag(upstream.headers, document)
        for name in _REPLACED:
            headers.popall(name, None)
        headers["ETag"] = etag
        headers["Cache-Control"] = "no-cache"
        if _matches(request.headers.getall("If-None-Match", []), etag):
            kept = CIMultiDict(
                (name, value) for name, value in headers.items() if name.lower() in _NOT_MODIFIED_KEEPS
            )
            kept["ETag"] = etag
            return web.Response(status=304, headers=kept)
        return web.Response(
            status=200, reason=upstream.reason, headers=headers, body=inject(document, self.tag)
        )

    def etag(self, headers: MultiMapping[str], document: bytes) -> str:
        """Strong, and new whenever Jellyfin's document or the gateway's script changes."""
        basis = headers.get("ETag")
        if basis is None and "Last-Modified" in headers:
            basis = f"{headers['Last-Modified']}; {len(document)}"
        if basis is None:
            basis = hashlib.sha256(document).hexdigest()
        return '"' + hashlib.sha256(f"{basis}\n{self.version}".encode()).hexdigest()[:24] + '"'


def inject(document: bytes, tag: bytes) -> bytes:
    """Insert ``tag`` before the first ``</head>``, else before ``</body>``, else at the end."""
    end = _HEAD_END.search(document) or _BODY_END.search(document)
    if end is None:
        return document + tag
    return document[: end.start()] + tag + document[end.start() :]


async def read_up_to(content: aiohttp.StreamReader, cap: int = MAX_DOCUMENT) -> tuple[bytes, bool]:
    """The body and True, or (once it passes ``cap``) the bytes read so far and False."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks), False
    return b"".join(chunks), True


def web_index_for(settings: Settings) -> WebIndex | None:
    """At start: None when WEB_INJECT is off, so the proxy does not even look."""
    if not settings.web_inject:
        return None
    return WebIndex.for_base(settings.base_path, script_version())


def _matches(if_none_match: list[str], etag: str) -> bool:
    """Weak comparison, as If-None-Match asks (RFC 9110 13.1.2)."""
    tags = {tag.strip().removeprefix("W/") for value in if_none_match for tag in value.split(",")}
    return "*" in tags or etag in tags
