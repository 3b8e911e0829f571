"""The one poller of qBittorrent: live progress for browsers, and Jellyfin rescans when downloads finish.

It follows ``sync/maindata`` incrementally (qBittorrent sends only what changed since the last rid),
keeps the merged torrent list, and
- fans changes out to Server-Sent-Events subscribers (a snapshot, then deltas), however many there are;
- tells Jellyfin about each finished torrent that the gateway added: ``/Library/Media/Updated`` with
  the file's path as Jellyfin sees it (PATH_MAP), or ``/Library/Refresh`` when that path is in no
  library or the targeted call fails. Success is recorded as a qBittorrent tag on the torrent, so a
  completion is announced once, across restarts, with no local database; a failure is retried with
  backoff, so Jellyfin or qBittorrent being down delays a notification but never loses it.

Announcements run in their own task beside the poller, never inside it: a Jellyfin that hangs (its
calls time out after 10 s each) delays announcements, not live progress. One task announces one
torrent at a time, and asks for the library folders once per round however many torrents finished.

It runs only while someone listens or notifications are on. With several gateway processes, every one
polls for its own listeners but only worker 0 notifies (so a completion is announced once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from .jellyfin import JellyfinClient
from .landing import LandingBook, State, landing_folder, lookup_delay, pick_item, search_terms, state_of
from .organizer import Organizer
from .paths import is_within
from .qbittorrent import QbittorrentClient
from .settings import PathMap
from .tags import (
    GATEWAY_TAG,
    LANDED_TAG_PREFIX,
    NOT_LANDED_TAG,
    NOTIFIED_TAG,
    ORGANIZE_TAG,
    tag_value,
    tags_of,
)
from .upstream import UpstreamError

logger = logging.getLogger(__name__)

#: States of a torrent whose data is complete and in place (4.x and 5.x spellings).
COMPLETE_STATES = frozenset({"uploading", "stalledUP", "pausedUP", "stoppedUP", "queuedUP", "forcedUP"})
#: Longest wait between retries of a failed poll or notification.
MAX_BACKOFF = 60.0
#: Events a slow subscriber may have waiting before it is dropped (its browser reconnects).
SUBSCRIBER_QUEUE = 256


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
        organizer: Organizer | None = None,
        landing_timeout: float = 600.0,
        web_base: str = "",
        on_landed: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` tells the time and ``sleep`` waits, both for backoffs: a test can drive them.

        ``organizer`` (worker 0): torrents seen waiting to be organized are handed to it.
        """
        self._qbittorrent = qbittorrent
        self._jellyfin = jellyfin
        self._api_key = api_key
        self._path_map = path_map
        self._interval = interval
        self.notify = notify and bool(api_key)
        self._organizer = organizer if notify else None
        self._landing_timeout = landing_timeout
        self._on_landed = on_landed
        self.landings = LandingBook(jellyfin, path_map=path_map, web_base=web_base)
        # hash -> (look-ups made, next look-up not before, give up after), in clock time
        self._lookups: dict[str, tuple[int, float, float]] = {}
        self._settled: set[str] = set()  # landing tag recorded, maybe not in qBittorrent's data yet
        self._states: dict[str, State] = {}  # landing state last published per gateway torrent
        self._described: set[str] = set()  # landed item ids already asked about (once per process)
        self._clock = clock
        self._sleep = sleep
        self.torrents: dict[str, dict[str, Any]] = {}
        self._rid = 0
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._due = asyncio.Event()  # set by a poll that found announcements to make
        self._retry: dict[str, tuple[int, float]] = {}  # hash -> (failures, not before)
        # Jellyfin told, tag not recorded yet: a retry only records the tag (Jellyfin is not told twice).
        self._told: dict[str, Notification] = {}
        # Tag recorded, but qBittorrent's data may not show it yet (a poll already under way).
        self._announced: set[str] = set()
        self.polls = 0
        self._poll_error: str | None = None
        self._notify_error: str | None = None
        self.last_notification: Notification | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="torrent-watcher")
        if self._announcer is None:
            self._announcer = asyncio.create_task(self._announce_forever(), name="jellyfin-announcer")

    async def stop(self) -> None:
        for task in (self._task, self._announcer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._announcer = None
        for queue in list(self._subscribers):
            self._close(queue)

    @property
    def last_error(self) -> str | None:
        """Why the last poll failed, else why the last announcement round had a failure."""
        return self._poll_error or self._notify_error

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
        return sse(
            "snapshot",
            {
                "torrents": [{**t, "hash": h} for h, t in self.torrents.items()],
                "landings": [self.landings.entry(h, t) for h, t in self._gateway_torrents()],
            },
        )

    def _gateway_torrents(self) -> list[tuple[str, dict[str, Any]]]:
        return [(h, t) for h, t in self.torrents.items() if GATEWAY_TAG in tags_of(t)]

    def _publish_landings(self) -> None:
        """A ``landing`` event for each gateway torrent whose landing state changed."""
        current = {h: state_of(t) for h, t in self._gateway_torrents()}
        for torrent_hash, state in current.items():
            if self._states.get(torrent_hash) not in (None, state):
                self._publish(sse("landing", self.landings.entry(torrent_hash, self.torrents[torrent_hash])))
        self._states = current

    # --- polling ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self.active:
                self._wake.clear()
                await self._wake.wait()
                self._rid = 0  # after a pause, start from a full update
            try:
                await self.poll_once()
                self._poll_error = None
                failures = 0
                await self._sleep(self._interval)
            except UpstreamError as exc:
                failures += 1
                self._poll_error = exc.reason
                delay = min(MAX_BACKOFF, self._interval * 2**failures)
                logger.warning("watching qBittorrent failed (%s); retrying in %.0f s", exc.reason, delay)
                await self._sleep(delay)
            except Exception:
                # Never let the watcher die: the API keeps working, and the next poll may succeed.
                failures += 1
                logger.exception("unexpected error in the torrent watcher")
                await self._sleep(min(MAX_BACKOFF, self._interval * 2**failures))

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
            delta = {h: {**f, "hash": h} for h, f in changed.items() if isinstance(f, dict)}
            self._publish(sse("delta", {"torrents": delta, "removed": removed}))
        rid = data.get("rid")
        self._rid = rid if isinstance(rid, int) else 0
        self._forget_settled()
        self._publish_landings()
        if self._organizer is not None:
            for torrent_hash, torrent in self.torrents.items():
                if ORGANIZE_TAG in tags_of(torrent):
                    self._organizer.organize_soon(torrent_hash)
        if self.notify and (self.due() or self.landing_due() or self._undescribed()):
            self._due.set()  # the announcer does it; this poll does not wait

    # --- notifications ----------------------------------------------------------------------------

    def pending(self) -> list[str]:
        """Gateway torrents that are complete and not yet announced to Jellyfin."""
        return [
            h
            for h, t in self.torrents.items()
            if GATEWAY_TAG in tags_of(t)
            and NOTIFIED_TAG not in tags_of(t)
            and ORGANIZE_TAG not in tags_of(t)
            and h not in self._announced
            and is_complete(t)
        ]

    def due(self) -> list[str]:
        """Pending torrents whose backoff, if any, is over."""
        now = self._clock()
        return [h for h in self.pending() if self._retry.get(h, (0, 0.0))[1] <= now]

    def _forget_settled(self) -> None:
        """Drop what qBittorrent now says itself: torrents it no longer has, tags it now shows."""
        self._announced = {
            h for h in self._announced if h in self.torrents and NOTIFIED_TAG not in tags_of(self.torrents[h])
        }
        self._settled = {
            h for h in self._settled if h in self.torrents and state_of(self.torrents[h]) is State.ANNOUNCED
        }
        for book in (self._retry, self._told, self._lookups):
            for torrent_hash in [h for h in book if h not in self.torrents]:
                del book[torrent_hash]

    async def _announce_forever(self) -> None:
        failures = 0
        while True:
            await self._due.wait()
            self._due.clear()  # a poll during this round sets it again
            try:
                await self.announce_due()
                await self.land_due()
                failures = 0
            except Exception:
                failures += 1
                logger.exception("unexpected error while telling Jellyfin about finished downloads")
                await self._sleep(min(MAX_BACKOFF, self._interval * 2**failures))

    async def announce_due(self) -> None:
        """One round: each due torrent in turn, with at most one /Library/VirtualFolders call.

        Once Jellyfin cannot be reached in a round, the rest of the round waits for the next try
        instead of waiting for the same timeout once per torrent.
        """
        folders: list[str] | None = None
        jellyfin_down: str | None = None
        failed = False
        for torrent_hash in self.due():
            torrent = self.torrents.get(torrent_hash)
            if torrent is None:
                continue
            if jellyfin_down is not None and torrent_hash not in self._told:
                self._retry_later(torrent_hash, jellyfin_down)
                continue
            try:
                if torrent_hash not in self._told:
                    path = self._jellyfin_path(torrent)
                    if path and folders is None:
                        folders = await self._library_folders()
                    self._told[torrent_hash] = await self._tell_jellyfin(
                        torrent_hash, torrent, path, folders or []
                    )
                # Recorded in qBittorrent, not here: it survives restarts and is shared by every gateway.
                await self._qbittorrent.add_tags(torrent_hash, [NOTIFIED_TAG])
            except UpstreamError as exc:
                failed = True
                if exc.upstream == "Jellyfin" and not exc.answered:
                    jellyfin_down = exc.reason
                self._retry_later(torrent_hash, exc.reason)
            else:
                self._announced.add(torrent_hash)
                self._retry.pop(torrent_hash, None)
                self.last_notification = notification = self._told.pop(torrent_hash)
                logger.info(
                    "told Jellyfin about %s (%s) with %s",
                    notification.name,
                    notification.path,
                    notification.call,
                )
        if not failed:
            self._notify_error = None

    def _retry_later(self, torrent_hash: str, reason: str) -> None:
        failures = self._retry.get(torrent_hash, (0, 0.0))[0] + 1
        delay = min(MAX_BACKOFF, 2.0**failures)
        self._retry[torrent_hash] = (failures, self._clock() + delay)
        self._notify_error = reason
        logger.warning(
            "telling Jellyfin about %s failed (%s); retrying in %.0f s", torrent_hash, reason, delay
        )

    def _jellyfin_path(self, torrent: dict[str, Any]) -> str | None:
        """The download as Jellyfin sees it (PATH_MAP); None when PATH_MAP does not cover it."""
        return landing_folder(torrent, self._path_map)

    # --- landing ----------------------------------------------------------------------------------

    def landing_due(self) -> list[str]:
        """Announced gateway torrents whose next look-up in Jellyfin is due (scheduled on first sight:
        the first look-up a few seconds after the announcement)."""
        now = self._clock()
        due = []
        for torrent_hash, torrent in self._gateway_torrents():
            if state_of(torrent) is not State.ANNOUNCED or torrent_hash in self._settled:
                continue
            if torrent_hash not in self._lookups:
                self._lookups[torrent_hash] = (0, now + lookup_delay(0), now + self._landing_timeout)
            if self._lookups[torrent_hash][1] <= now:
                due.append(torrent_hash)
        return due

    def _undescribed(self) -> list[str]:
        """Ids of landed items not described yet (after a restart): asked once, for the live events."""
        landed = {tag_value(t, LANDED_TAG_PREFIX) for _, t in self._gateway_torrents()}
        return [i for i in landed if i and i not in self.landings.items and i not in self._described]

    async def land_due(self) -> None:
        """One round of look-ups: each due torrent once; a Jellyfin that cannot be reached ends it."""
        missing = self._undescribed()
        if missing:
            self._described.update(missing)
            await self.landings.complete(missing, self._api_key)
            for torrent_hash, torrent in self._gateway_torrents():
                if tag_value(torrent, LANDED_TAG_PREFIX) in missing:
                    self._publish(sse("landing", self.landings.entry(torrent_hash, torrent)))
        for torrent_hash in self.landing_due():
            found = self.torrents.get(torrent_hash)
            if found is None:
                continue
            torrent = found
            try:
                if not await self._look_up(torrent_hash, torrent):
                    continue
            except UpstreamError as exc:
                self._next_lookup(torrent_hash)
                logger.warning("looking for %s in Jellyfin failed (%s)", torrent.get("name"), exc.reason)
                if not exc.answered:
                    return
                continue
            self._settled.add(torrent_hash)

    async def _look_up(self, torrent_hash: str, torrent: dict[str, Any]) -> bool:
        """One look-up; True when the torrent's landing is settled (found, or given up)."""
        attempts, _, deadline = self._lookups[torrent_hash]
        folder = landing_folder(torrent, self._path_map)
        item = None
        if folder is not None:
            terms = search_terms(torrent, folder)
            items = await self._jellyfin.items(self._api_key, search_term=terms[attempts % len(terms)])
            item = pick_item(items, folder)
        if item is not None:
            self.landings.remember(item)
            await self._qbittorrent.add_tags(torrent_hash, [LANDED_TAG_PREFIX + item.id])
            logger.info("%s is in Jellyfin as %s (%s)", torrent.get("name"), item.name, item.id)
            if self._on_landed is not None:
                self._on_landed()  # e.g. the library index is out of date now
        elif folder is None or self._clock() >= deadline:
            await self._qbittorrent.add_tags(torrent_hash, [NOT_LANDED_TAG])
            logger.warning(
                "Jellyfin has not picked up %s: no item in %s after %.0f s",
                torrent.get("name"),
                folder or "a folder PATH_MAP does not cover",
                self._landing_timeout,
            )
        else:
            self._next_lookup(torrent_hash)
            return False
        return True

    def _next_lookup(self, torrent_hash: str) -> None:
        attempts, _, deadline = self._lookups[torrent_hash]
        attempts += 1
        self._lookups[torrent_hash] = (
            attempts,
            min(deadline, self._clock() + lookup_delay(attempts)),
            deadline,
        )

    async def _library_folders(self) -> list[str]:
        """Every library folder; none when Jellyfin answers but will not say (the announcement then
        refreshes all). A Jellyfin that cannot be reached raises: the announcement waits for it."""
        try:
            libraries = await self._jellyfin.libraries(self._api_key)
        except UpstreamError as exc:
            if not exc.answered:
                raise
            logger.warning("%s; announcing with /Library/Refresh", exc.reason)
            return []
        return [folder for library in libraries for folder in library.locations]

    async def _tell_jellyfin(
        self, torrent_hash: str, torrent: dict[str, Any], path: str | None, folders: list[str]
    ) -> Notification:
        call = "/Library/Refresh"
        if path and any(is_within(path, folder) for folder in folders):
            try:
                await self._jellyfin.media_updated(self._api_key, path)
                call = "/Library/Media/Updated"
            except UpstreamError as exc:
                if not exc.answered:
                    raise
                logger.warning("%s; refreshing all", exc.reason)
        if call == "/Library/Refresh":
            await self._jellyfin.refresh_library(self._api_key)
        return Notification(torrent_hash, str(torrent.get("name", "")), path or "", call, time.time())

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
