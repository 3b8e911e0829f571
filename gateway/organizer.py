"""Renames a library download's files to Jellyfin's names, through qBittorrent's API only.

The torrent was added without its root folder, into the Jellyfin folder chosen by ``naming``, and
told to stop once its file list is known. The organizer waits for that list, skips the files that
have no place in a library (priority 0: never downloaded), renames the rest, starts the torrent and
removes the ``organize`` tag. All of it is repeatable: the plan of an organized file list renames
nothing, so a gateway that stops half-way finishes the job after its restart (the tag says which
torrents still wait). No shared filesystem is needed, and the torrent keeps seeding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any

from .naming import FolderPlan, Kind, TorrentFile, folder_title, plan_files
from .qbittorrent import QbittorrentClient
from .tags import FOLDER_TAG_PREFIX, ORGANIZE_TAG, tag_value, tags_of
from .upstream import UpstreamError

logger = logging.getLogger(__name__)

#: qBittorrent is still fetching the metadata, or checking: the file list may not be final yet.
WAITING_STATES = frozenset(
    {"metaDL", "forcedMetaDL", "checkingResumeData", "checkingDL", "moving", "allocating"}
)
#: Stopped by the stop condition (4.x and 5.x spellings): started again once organized.
STOPPED_STATES = frozenset({"pausedDL", "stoppedDL"})
FIRST_WAIT = 0.5
LONGEST_WAIT = 30.0


def folder_plan_of(torrent: dict[str, Any]) -> FolderPlan | None:
    """The plan a torrent was added with, read back from its save path and its folder tag."""
    kind = tag_value(torrent, FOLDER_TAG_PREFIX)
    save_path = torrent.get("save_path")
    if kind not in (Kind.MOVIE.value, Kind.SERIES.value) or not isinstance(save_path, str):
        return None
    folder = PurePosixPath(save_path.rstrip("/")).name
    title, year = folder_title(folder)
    base = f"{title} ({year})" if year else title
    return FolderPlan(Kind(kind), title, year, folder, base)


def torrent_files(listing: list[dict[str, Any]]) -> list[TorrentFile]:
    """qBittorrent's file list (``index`` since WebAPI 2.8.2; the position before)."""
    files = []
    for position, entry in enumerate(listing):
        index, name, size = entry.get("index", position), entry.get("name"), entry.get("size")
        if isinstance(index, int) and isinstance(name, str) and isinstance(size, int):
            files.append(TorrentFile(index, name, size))
    return files


class Organizer:
    def __init__(
        self,
        qbittorrent: QbittorrentClient,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._qbittorrent = qbittorrent
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.organized = 0

    def organize_soon(self, torrent_hash: str) -> None:
        """Organize this torrent in the background, once (a second call while it runs does nothing)."""
        if torrent_hash not in self._tasks:
            task = asyncio.create_task(
                self._organize_until_done(torrent_hash), name=f"organize-{torrent_hash}"
            )
            self._tasks[torrent_hash] = task
            task.add_done_callback(lambda _: self._tasks.pop(torrent_hash, None))

    async def resume_pending(self) -> None:
        """After a start: every torrent that still carries the organize tag."""
        wait = FIRST_WAIT
        while True:
            try:
                waiting = await self._qbittorrent.torrents(tag=ORGANIZE_TAG)
                break
            except UpstreamError as exc:
                logger.warning("cannot list torrents waiting to be organized (%s)", exc.reason)
                await self._sleep(wait)
                wait = min(LONGEST_WAIT, wait * 2)
        for torrent in waiting:
            if isinstance(torrent.get("hash"), str):
                self.organize_soon(torrent["hash"].lower())

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _organize_until_done(self, torrent_hash: str) -> None:
        wait = FIRST_WAIT
        while True:
            try:
                if await self.organize(torrent_hash):
                    return
            except UpstreamError as exc:
                logger.warning("organizing %s failed (%s); trying again", torrent_hash, exc.reason)
            except Exception:
                logger.exception("unexpected error while organizing %s", torrent_hash)
            await self._sleep(wait)
            wait = min(LONGEST_WAIT, wait * 1.5)

    async def organize(self, torrent_hash: str) -> bool:
        """One attempt: True when the torrent is organized (or gone, or not to be organized)."""
        found = await self._qbittorrent.torrents([torrent_hash])
        if not found or ORGANIZE_TAG not in tags_of(found[0]):
            return True
        torrent = found[0]
        folder = folder_plan_of(torrent)
        if folder is None:
            logger.warning("%s carries no folder plan; leaving its files as they are", torrent_hash)
            await self._qbittorrent.remove_tags(torrent_hash, [ORGANIZE_TAG])
            return True
        if torrent.get("state") in WAITING_STATES:
            return False
        files = torrent_files(await self._qbittorrent.files(torrent_hash))
        if not files:
            return False
        plan = plan_files(files, folder)
        await self._qbittorrent.set_file_priority(torrent_hash, plan.skip, 0)
        for old, new in plan.renames:
            if not await self._qbittorrent.rename_file(torrent_hash, old, new):
                logger.warning("%s: cannot rename %r to %r: that name is taken", torrent_hash, old, new)
        if torrent.get("state") in STOPPED_STATES:
            await self._qbittorrent.resume(torrent_hash)
        # Last: until this tag is gone, a restarted gateway organizes the torrent again (harmlessly).
        await self._qbittorrent.remove_tags(torrent_hash, [ORGANIZE_TAG])
        self.organized += 1
        logger.info(
            "organized %s into %s: %d renamed, %d never downloaded",
            torrent.get("name"),
            folder.folder,
            len(plan.renames),
            len(plan.skip),
        )
        return True
