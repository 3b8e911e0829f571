"""A thin client of qBittorrent's WebUI API v2 (4.1 to 5.2), owning its version and session quirks.

- Session: logs in with the configured credentials (or not at all, for a qBittorrent that bypasses
  authentication for the gateway's address), keeps whatever cookie login sets (``SID``, or
  ``QBT_SID_<port>`` on 5.2) and sends it itself, because aiohttp's cookie jar drops cookies of
  IP-address hosts. A 403 means the session expired (or qBittorrent restarted): log in again, once.
- A rejected login is reported and remembered, never retried in a loop: qBittorrent bans the IP
  after 5 failures, which would lock out every client on the gateway's host for an hour.
- Versions: ``webapiVersion`` is read once; 2.11+ (qBittorrent 5) says stop/start where older ones
  say pause/resume; both add-fields are sent; both state spellings are accepted by callers.
- Never sends Origin, Referer or X-Forwarded-* (qBittorrent's CSRF check answers 401 to foreign ones).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from .upstream import MAX_REPLY_BYTES, Failure, Upstream, UpstreamError, read_capped

logger = logging.getLogger(__name__)

#: How long one API call may take in all.
DEFAULT_TIMEOUT = 10.0
#: After a rejected login, how long before the gateway tries again: at most 4 tries an hour,
#: below qBittorrent's default of 5 failures that ban the address.
LOGIN_RETRY_AFTER = 15 * 60.0


class LoginRejected(UpstreamError):
    """The configured credentials were refused (or the address is banned): remembered, not retried."""

    def __init__(self, reason: str) -> None:
        super().__init__("qBittorrent", Failure.REFUSED, reason)


@dataclass(frozen=True)
class AddResult:
    accepted: bool
    server_response: str  # what qBittorrent answered, as text ("Ok.", "Fails.", or 5.2's JSON)


_HEX40 = frozenset("0123456789abcdef")


def _one_id(torrent_hash: str) -> str:
    """Exactly one lowercase 40-hex ID: ``all`` or ``a|b`` would act on other torrents too."""
    if len(torrent_hash) != 40 or not set(torrent_hash) <= _HEX40:
        raise ValueError("one torrent ID: 40 lowercase hex digits")
    return torrent_hash


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.strip().lstrip("v").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


class QbittorrentClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: URL,
        *,
        username: str,
        password: str,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        max_reply: int = MAX_REPLY_BYTES,
    ) -> None:
        self._session = session
        self._api = str(base_url).rstrip("/") + "/api/v2/"
        self._max_reply = max_reply
        self._username = username
        self._password = password
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._upstream = Upstream(
            "qBittorrent", str(base_url.with_user(None)).rstrip("/"), within=timeout, exchange="the exchange"
        )
        self._clock = clock
        self._cookie: str | None = None
        self._login_lock = asyncio.Lock()
        self._rejected: tuple[float, LoginRejected] | None = None
        self._webapi: tuple[int, ...] | None = None

    # --- transport ------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        cookie: str | None = None,
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        headers = {"Cookie": cookie} if cookie else {}
        async with (
            self._upstream.call(path),
            self._session.request(
                method,
                self._api + path,
                params=params,
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response,
        ):
            body = await read_capped(response, self._max_reply)
            # qBittorrent's WebUI answers in UTF-8.
            return response.status, body.decode("utf-8", errors="replace"), response

    def _error(self, kind: Failure, reason: str) -> UpstreamError:
        return self._upstream.error(kind, reason)

    async def _login(self, stale_cookie: str | None) -> None:
        async with self._login_lock:
            if self._cookie is not None and self._cookie != stale_cookie:
                return  # another request logged in meanwhile
            if self._rejected is not None:
                since, error = self._rejected
                if self._clock() - since < LOGIN_RETRY_AFTER:
                    raise error
                self._rejected = None
            # An empty cookie: a request that carries a valid one is answered "Ok." without any check.
            status, text, response = await self._send(
                "POST", "auth/login", data={"username": self._username, "password": self._password}
            )
            if 200 <= status < 300 and text.strip() in ("", "Ok."):
                cookies = [f"{name}={morsel.value}" for name, morsel in response.cookies.items()]
                self._cookie = "; ".join(cookies) or None
                logger.info("logged in to qBittorrent")
                return
            if status == 403:
                error = LoginRejected(
                    "qBittorrent has banned the gateway's address after too many failed logins; "
                    "fix QBITTORRENT_USERNAME/QBITTORRENT_PASSWORD and wait for the ban to end"
                )
            elif status in (200, 401):
                error = LoginRejected(
                    "qBittorrent rejected the configured QBITTORRENT_USERNAME/QBITTORRENT_PASSWORD"
                )
            else:
                raise self._error(Failure.BAD_REPLY, f"qBittorrent answered the login with HTTP {status}")
            self._rejected = (self._clock(), error)
            logger.error("%s (not retried for %d minutes)", error.reason, LOGIN_RETRY_AFTER // 60)
            raise error

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, str]:
        if self._username and self._cookie is None:
            await self._login(None)
        for attempt in (1, 2):
            cookie = self._cookie
            status, text, response = await self._send(method, path, params=params, data=data, cookie=cookie)
            if self._cookie is None and response.cookies:
                # Without a login (auth bypassed for our address) qBittorrent still opens a session
                # per cookieless call; reusing its cookie keeps that to one.
                self._cookie = "; ".join(f"{name}={m.value}" for name, m in response.cookies.items())
            if status == 403 and attempt == 1:
                if not self._username:
                    raise self._error(
                        Failure.REFUSED,
                        "qBittorrent asks for a login: set QBITTORRENT_USERNAME and QBITTORRENT_PASSWORD, "
                        "or let qBittorrent bypass authentication for the gateway's address",
                    )
                # The session expired or qBittorrent restarted: one new login, one retry.
                self._cookie = None
                await self._login(cookie)
                continue
            if status == 403:
                raise self._error(
                    Failure.REFUSED, f"qBittorrent refused {path} even after a fresh login (HTTP 403)"
                )
            if status not in ok:
                detail = text.strip()[:120]
                raise self._error(
                    Failure.BAD_REPLY,
                    f"qBittorrent answered {path} with HTTP {status}" + (f": {detail}" if detail else ""),
                )
            return status, text
        raise AssertionError("unreachable")

    async def _json(self, path: str, params: Mapping[str, str] | None = None) -> tuple[Any, str]:
        """The parsed reply and its text (some replies are passed on exactly as qBittorrent wrote them)."""
        _, text = await self._call("GET", path, params=params)
        try:
            return (json.loads(text) if text.strip() else None), text
        except ValueError:
            raise self._error(
                Failure.BAD_REPLY, f"qBittorrent answered {path} with something that is not JSON"
            ) from None

    # --- versions -------------------------------------------------------------------------------

    async def webapi_version(self) -> tuple[int, ...]:
        if self._webapi is None:
            _, text = await self._call("GET", "app/webapiVersion")
            self._webapi = _version_tuple(text)
        return self._webapi

    async def app_version(self) -> str:
        """The application version, e.g. ``v4.5.2``."""
        _, text = await self._call("GET", "app/version")
        return text.strip()

    async def _uses_stop_start(self) -> bool:
        return await self.webapi_version() >= (2, 11)

    # --- calls ----------------------------------------------------------------------------------

    async def default_save_path(self) -> str:
        prefs, _ = await self._json("app/preferences")
        path = prefs.get("save_path") if isinstance(prefs, dict) else None
        if not isinstance(path, str) or not path:
            raise self._error(Failure.BAD_REPLY, "qBittorrent's preferences carry no default save path")
        return path

    async def _torrent_list(self, params: Mapping[str, str]) -> tuple[list[Any], str]:
        data, text = await self._json("torrents/info", params)
        if not isinstance(data, list):
            raise self._error(
                Failure.BAD_REPLY, "qBittorrent answered torrents/info with something that is not a list"
            )
        return data, text

    async def torrents_text(self) -> str:
        """``torrents/info?filter=all`` exactly as qBittorrent wrote it (checked to be a JSON array)."""
        _, text = await self._torrent_list({"filter": "all"})
        return text

    async def torrents(
        self, hashes: list[str] | None = None, *, tag: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"filter": "all"}
        if hashes:
            params["hashes"] = "|".join(_one_id(h) for h in hashes)
        if tag is not None:
            params["tag"] = tag
        data, _ = await self._torrent_list(params)
        return [t for t in data if isinstance(t, dict)]

    async def add_magnet(
        self, magnet: str, *, save_path: str | None, tags: str | None = None, organize: bool = False
    ) -> AddResult:
        """Add one magnet, running. The caller has validated it: one line, one btih, nothing else.

        ``organize``: without the release's root folder, and stopped as soon as the file list is
        known (4.5+), so files can be renamed and skipped before a byte of them is written.
        """
        if "\n" in magnet or "\r" in magnet or not magnet.startswith("magnet:?"):
            raise ValueError("exactly one magnet link, on one line")
        form = {"urls": magnet, "paused": "false", "stopped": "false"}
        if organize:
            form["contentLayout"] = "NoSubfolder"
            form["stopCondition"] = "MetadataReceived"
        if save_path is not None:
            form["savepath"] = save_path
            form["autoTMM"] = "false"
        if tags:
            form["tags"] = tags
        status, text = await self._call("POST", "torrents/add", data=form, ok=(200, 202, 409, 415))
        body = text.strip()
        if status in (200, 202) and body.startswith("{"):  # 5.2: counts as JSON
            try:
                counts = json.loads(body)
            except ValueError:
                counts = {}
            accepted = bool(counts.get("success_count") or counts.get("pending_count"))
            return AddResult(accepted, body)
        if status == 200:
            return AddResult(body == "Ok.", body)
        return AddResult(False, body or f"HTTP {status}")

    async def pause(self, torrent_hash: str) -> None:
        torrent_id = _one_id(torrent_hash)
        verb = "stop" if await self._uses_stop_start() else "pause"
        await self._call("POST", f"torrents/{verb}", data={"hashes": torrent_id})

    async def resume(self, torrent_hash: str) -> None:
        torrent_id = _one_id(torrent_hash)
        verb = "start" if await self._uses_stop_start() else "resume"
        await self._call("POST", f"torrents/{verb}", data={"hashes": torrent_id})

    async def delete(self, torrent_hash: str, *, delete_files: bool) -> None:
        await self._call(
            "POST",
            "torrents/delete",
            data={"hashes": _one_id(torrent_hash), "deleteFiles": "true" if delete_files else "false"},
        )

    async def maindata(self, rid: int) -> dict[str, Any]:
        """``sync/maindata?rid=``: everything at rid 0 (or an unknown rid), then only what changed."""
        data, _ = await self._json("sync/maindata", {"rid": str(rid)})
        if not isinstance(data, dict):
            raise self._error(
                Failure.BAD_REPLY, "qBittorrent answered sync/maindata with something that is not an object"
            )
        return data

    async def add_tags(self, torrent_hash: str, tags: list[str]) -> None:
        """Tags are created on first use; a tag may not contain a comma (it separates the list)."""
        if any("," in tag or not tag.strip() for tag in tags):
            raise ValueError("tags must be non-empty and free of commas")
        await self._call(
            "POST", "torrents/addTags", data={"hashes": _one_id(torrent_hash), "tags": ",".join(tags)}
        )

    async def remove_tags(self, torrent_hash: str, tags: list[str]) -> None:
        if any("," in tag or not tag.strip() for tag in tags):
            raise ValueError("tags must be non-empty and free of commas")
        await self._call(
            "POST", "torrents/removeTags", data={"hashes": _one_id(torrent_hash), "tags": ",".join(tags)}
        )

    async def files(self, torrent_hash: str) -> list[dict[str, Any]]:
        """``torrents/files``: empty until the metadata is known (a magnet's first seconds)."""
        data, _ = await self._json("torrents/files", {"hash": _one_id(torrent_hash)})
        if not isinstance(data, list):
            raise self._error(
                Failure.BAD_REPLY, "qBittorrent answered torrents/files with something that is not a list"
            )
        return [f for f in data if isinstance(f, dict)]

    async def set_file_priority(self, torrent_hash: str, indexes: list[int], priority: int) -> None:
        """``torrents/filePrio``; priority 0 = never downloaded."""
        if not indexes:
            return
        await self._call(
            "POST",
            "torrents/filePrio",
            data={
                "hash": _one_id(torrent_hash),
                "id": "|".join(str(int(i)) for i in indexes),
                "priority": str(int(priority)),
            },
        )

    async def rename_file(self, torrent_hash: str, old_path: str, new_path: str) -> bool:
        """``torrents/renameFile``: on disk too, and the torrent keeps seeding; ``new_path`` may hold
        ``/`` (a subfolder of the save path). False when the name is taken (409)."""
        status, _ = await self._call(
            "POST",
            "torrents/renameFile",
            data={"hash": _one_id(torrent_hash), "oldPath": old_path, "newPath": new_path},
            ok=(200, 409),
        )
        return status == 200
