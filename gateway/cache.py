"""One single-flight TTL cache, for everything the gateway asks an upstream and may answer again.

The admin check (per token) and apibay searches (per query) both need the same rules: an answer is
kept for a while chosen by the answer itself, at most so many answers are kept (the least recently
used go first), identical questions asked while the first is still under way share its one upstream
call, and failures are never kept, so the next caller asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    expires: float


class SingleFlightCache(Generic[K, V]):
    """``key → value``, loaded at most once at a time per key and kept for ``ttl(value)`` seconds.

    A ``ttl`` of 0 or less keeps that value not at all (it is still shared by the callers already
    waiting for it); so does ``max_entries`` of 0 or less, for every value.
    """

    def __init__(
        self,
        *,
        ttl: Callable[[V], float],
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._in_flight: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[K]:
        """The keys held now, least recently used first (expired ones included until asked for)."""
        return list(self._entries)

    async def get(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The fresh cached value, else the result of the load under way, else of ``load()``.

        A failed load raises in every caller that waited for it and is not kept.
        """
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > self._clock():
                self._entries.move_to_end(key)
                return entry.value
            del self._entries[key]
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(load())
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        # Shielded: a caller that goes away must not cancel the answer others wait for.
        return await asyncio.shield(task)

    def _settle(self, key: K, task: asyncio.Task[V]) -> None:
        self._in_flight.pop(key, None)
        # exception() also marks a failure nobody awaited (all callers gone) as retrieved.
        if task.cancelled() or task.exception() is not None:
            return
        value = task.result()
        ttl = self._ttl(value)
        if ttl <= 0 or self._max_entries <= 0:
            return
        self._entries[key] = _Entry(value, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
