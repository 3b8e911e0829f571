"""The one poller of qBittorrent: live progress for browsers, and Jellyfin rescans when downloads finish.

It follows ``sync/maindata`` incrementally (qBittorrent sends only what changed since the last rid),
keeps the merged torrent list, and
- fans changes out to Server-Sent-Events subscribers (a snapshot, then deltas), however many there are;
- tells Jellyfin about each finished torrent that the gateway added: ``/Library/Media/Updated`` with
  the file's path as Jellyfin sees it (PATH_MAP), or ``/Library/Refresh`` when that path is in no
  library or the targeted call fails. Success is recorded as a qBittorrent tag on the torrent, so a
  completion is announced once, across restarts, with no local database; a failure is retried with
  backoff, so Jellyfin or qBittorrent being down delays a notification but never loses it.

It runs only while someone listens or notifications are on. With several gateway processes, every one
polls for its own listeners but only worker 0 notifies (so a completion is announced once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .jellyfin import JellyfinClient, JellyfinUnavailable
from .paths import is_within, to_jellyfin
from .qbittorrent import QbittorrentClient, QbittorrentError
from .settings import PathMap

logger = logging.getLogger(__name__)

#: Every torrent the gateway adds carries this tag, so its own torrents can be told from others.
GATEWAY_TAG = "jellyfin-gateway"
#: Added once Jellyfin has been told about the finished download.
NOTIFIED_TAG = "jellyfin-gateway-notified"
LIBRARY_TAG_PREFIX = "jellyfin-gateway-library:"
#: States of a torrent whose data is complete and in place (4.x and 5.x spellings).
COMPLETE_STATES = frozenset({"uploading", "stalledUP", "pausedUP", "stoppedUP", "queuedUP", "forcedUP"})
#: Longest wait between retries of a failed poll or notification.
MAX_BACKOFF = 60.0
#: Events a slow subscriber may have waiting before it is dropped (its browser reconnects).
SUBSCRIBER_QUEUE = 256


def library_tag(library: str) -> str:
    """Tag naming the library a download was meant for (commas separate tags, so none inside)."""
    return LIBRARY_TAG_PREFIX + " ".join(library.replace(",", " ").split())


def tags_of(torrent: dict[str, Any]) -> set[str]:
    raw = torrent.get("tags")
    return {tag.strip() for tag in raw.split(",") if tag.strip()} if isinstance(raw, str) else set()


def is_complete(torrent: dict[str, Any]) -> bool:
    progress = torrent.get("progress")
    return isinstance(progress, int | float) and progress >= 1 and torrent.get("state") in COMPLETE_STATES


@dataclass(frozen=True)
class Notification:
    hash: str
    name: str
    path: str  # as Jellyfin sees it
    call: str  # "/Library/Media/Updated" or "/Library/Refresh"
    at: float  # unix time


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class TorrentWatcher:
    def __init__(
        self,
        qbittorrent: QbittorrentClient,
        jellyfin: JellyfinClient,
        *,
        api_key: str,
        path_map: PathMap,
        interval: float,
        notify: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._qbittorrent = qbittorrent
        self._jellyfin = jellyfin
        self._api_key = api_key
        self._path_map = path_map
        self._interval = interval
        self.notify = notify and bool(api_key)
        self._clock = clock
        self.torrents: dict[str, dict[str, Any]] = {}
        self._rid = 0
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry: dict[str, tuple[int, float]] = {}  # hash -> (failures, not before)
        self.polls = 0
        self.last_error: str | None = None
        self.last_notification: Notification | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="torrent-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for queue in list(self._subscribers):
            self._close(queue)

    @property
    def active(self) -> bool:
        return self.notify or bool(self._subscribers)

    # --- subscribers ------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[str | None]:
        """A queue of SSE-encoded events: a snapshot first (now, or after the first poll), then deltas."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        if self._rid:
            queue.put_nowait(self._snapshot())
        self._subscribers.add(queue)
        self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _close(self, queue: asyncio.Queue[str | None]) -> None:
        self._subscribers.discard(queue)
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)

    def _publish(self, event: str) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A reader this far behind gets a fresh snapshot when its browser reconnects.
                queue.get_nowait()
                self._close(queue)

    def _snapshot(self) -> str:
        return sse("snapshot", {"torrents": [{**t, "hash": h} for h, t in self.torrents.items()]})

    # --- polling ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self.active:
                self._wake.clear()
                await self._wake.wait()
                self._rid = 0  # after a pause, start from a full update
            try:
                self.last_error = None  # this cycle's poll or notifications may set it again
                await self.poll_once()
                failures = 0
                await asyncio.sleep(self._interval)
            except QbittorrentError as exc:
                failures += 1
                self.last_error = exc.reason
                delay = min(MAX_BACKOFF, self._interval * 2**failures)
                logger.warning("watching qBittorrent failed (%s); retrying in %.0f s", exc.reason, delay)
                await asyncio.sleep(delay)
            except Exception:
                # Never let the watcher die: the API keeps working, and the next poll may succeed.
                failures += 1
                logger.exception("unexpected error in the torrent watcher")
                await asyncio.sleep(min(MAX_BACKOFF, self._interval * 2**failures))

    async def poll_once(self) -> None:
        data = await self._qbittorrent.maindata(self._rid)
        self.polls += 1
        torrents = data.get("torrents")
        changed: dict[str, Any] = torrents if isinstance(torrents, dict) else {}
        removed = [h for h in data.get("torrents_removed", []) if isinstance(h, str)]
        if data.get("full_update") or not self._rid:
            self.torrents = {h: dict(t) for h, t in changed.items() if isinstance(t, dict)}
            self._publish(self._snapshot())
        elif changed or removed:
            for torrent_hash, fields in changed.items():
                if isinstance(fields, dict):
                    self.torrents.setdefault(torrent_hash, {}).update(fields)
            for torrent_hash in removed:
                self.torrents.pop(torrent_hash, None)
                self._retry.pop(torrent_hash, None)
            delta = {h: {**f, "hash": h} for h, f in changed.items() if isinstance(f, dict)}
            self._publish(sse("delta", {"torrents": delta, "removed": removed}))
        rid = data.get("rid")
        self._rid = rid if isinstance(rid, int) else 0
        if self.notify:
            await self._notify_completed()

    # --- notifications ----------------------------------------------------------------------------

    def pending(self) -> list[str]:
        """Gateway torrents that are complete and not yet announced to Jellyfin."""
        return [
            h
            for h, t in self.torrents.items()
            if GATEWAY_TAG in tags_of(t) and NOTIFIED_TAG not in tags_of(t) and is_complete(t)
        ]

    async def _notify_completed(self) -> None:
        now = self._clock()
        for torrent_hash in self.pending():
            failures, not_before = self._retry.get(torrent_hash, (0, 0.0))
            if now < not_before:
                continue
            try:
                await self._announce(torrent_hash, self.torrents[torrent_hash])
            except (JellyfinUnavailable, QbittorrentError, _NotAccepted) as exc:
                failures += 1
                delay = min(MAX_BACKOFF, 2.0**failures)
                self._retry[torrent_hash] = (failures, now + delay)
                reason = exc.reason if isinstance(exc, JellyfinUnavailable | QbittorrentError) else str(exc)
                self.last_error = reason
                logger.warning(
                    "telling Jellyfin about %s failed (%s); retrying in %.0f s", torrent_hash, reason, delay
                )
            else:
                self._retry.pop(torrent_hash, None)

    async def _announce(self, torrent_hash: str, torrent: dict[str, Any]) -> None:
        content = torrent.get("content_path") or torrent.get("save_path") or ""
        mapped = to_jellyfin(str(content), self._path_map)
        jellyfin_path = mapped if mapped is not None else (None if self._path_map else str(content))
        call = "/Library/Refresh"
        if jellyfin_path and await self._in_a_library(jellyfin_path):
            status = await self._jellyfin.media_updated(self._api_key, jellyfin_path)
            if status in (200, 204):
                call = "/Library/Media/Updated"
            else:
                logger.warning("Jellyfin answered /Library/Media/Updated with %d; refreshing all", status)
        if call == "/Library/Refresh":
            status = await self._jellyfin.refresh_library(self._api_key)
            if status not in (200, 204):
                raise _NotAccepted(f"Jellyfin answered /Library/Refresh with HTTP {status}")
        # Recorded in qBittorrent, not here: it survives restarts and is shared by every gateway.
        await self._qbittorrent.add_tags(torrent_hash, [NOTIFIED_TAG])
        torrent["tags"] = ", ".join(sorted(tags_of(torrent) | {NOTIFIED_TAG}))
        self.last_notification = Notification(
            torrent_hash, str(torrent.get("name", "")), jellyfin_path or "", call, time.time()
        )
        logger.info("told Jellyfin about %s (%s) with %s", torrent.get("name"), jellyfin_path, call)

    async def _in_a_library(self, path: str) -> bool:
        answer = await self._jellyfin.virtual_folders(self._api_key)
        if answer.status != 200 or not isinstance(answer.body, list):
            return False
        for folder in answer.body:
            locations = folder.get("Locations") if isinstance(folder, dict) else None
            if isinstance(locations, list) and any(
                isinstance(p, str) and is_within(path, p) for p in locations
            ):
                return True
        return False

    def status(self) -> dict[str, Any]:
        return {
            "notifications": self.notify,
            "running": self.active,
            "subscribers": len(self._subscribers),
            "polls": self.polls,
            "pending": len(self.pending()),
            "last_error": self.last_error,
            "last_notification": asdict(self.last_notification) if self.last_notification else None,
        }


class _NotAccepted(Exception):
    """Jellyfin answered, but not with success; retried like an outage."""
