"""The one single-flight TTL cache (admin decisions, apibay searches), driven by a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gateway.cache import SingleFlightCache
from tests.conftest import FakeClock


class Loader:
    """Counts loads; each returns the next value, or raises while ``failing`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False
        self.release: asyncio.Event | None = None

    def __call__(self, value: str) -> Callable[[], Coroutine[Any, Any, str]]:
        async def load() -> str:
            self.calls += 1
            if self.release is not None:
                await self.release.wait()
            if self.failing:
                raise RuntimeError("upstream down")
            return f"{value}#{self.calls}"

        return load


def _cache(clock: FakeClock, *, ttl: float = 10.0, max_entries: int = 100) -> SingleFlightCache[str, str]:
    return SingleFlightCache(ttl=lambda _: ttl, max_entries=max_entries, clock=clock)


async def test_a_value_is_kept_until_its_ttl_has_passed() -> None:
    clock, load = FakeClock(), Loader()
    cache = _cache(clock)
    assert await cache.get("k", load("a")) == "a#1"
    clock.now += 9.9
    assert await cache.get("k", load("a")) == "a#1"
    clock.now += 0.1
    assert await cache.get("k", load("a")) == "a#2"
    assert load.calls == 2


async def test_the_value_itself_chooses_how_long_it_is_kept() -> None:
    clock, load = FakeClock(), Loader()
    cache: SingleFlightCache[str, str] = SingleFlightCache(
        ttl=lambda value: 60.0 if value.startswith("long") else 2.0, max_entries=10, clock=clock
    )
    await cache.get("long", load("long"))
    await cache.get("short", load("short"))
    clock.now += 3
    assert await cache.get("long", load("long")) == "long#1"
    assert await cache.get("short", load("short")) == "short#3"


@pytest.mark.parametrize(("ttl", "max_entries"), [(0.0, 10), (-1.0, 10), (10.0, 0)])
async def test_a_ttl_or_size_of_zero_keeps_nothing(ttl: float, max_entries: int) -> None:
    load = Loader()
    cache = _cache(FakeClock(), ttl=ttl, max_entries=max_entries)
    await cache.get("k", load("a"))
    await cache.get("k", load("a"))
    assert load.calls == 2
    assert len(cache) == 0


async def test_the_least_recently_used_key_is_forgotten_first() -> None:
    load = Loader()
    cache = _cache(FakeClock(), max_entries=2)
    await cache.get("a", load("a"))
    await cache.get("b", load("b"))
    await cache.get("a", load("a"))  # now the most recent
    await cache.get("c", load("c"))  # evicts b
    assert cache.keys() == ["a", "c"]
    await cache.get("b", load("b"))
    assert load.calls == 4


async def test_concurrent_misses_share_one_load() -> None:
    load = Loader()
    load.release = asyncio.Event()
    cache = _cache(FakeClock())
    waiting = [asyncio.create_task(cache.get("k", load("a"))) for _ in range(5)]
    await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*waiting) == ["a#1"] * 5
    assert load.calls == 1


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    load = Loader()
    load.failing = True
    load.release = asyncio.Event()
    cache = _cache(FakeClock())
    waiting = [asyncio.create_task(cache.get("k", load("a"))) for _ in range(3)]
    await asyncio.sleep(0)
    load.release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert len(cache) == 0
    load.failing = False
    assert await cache.get("k", load("a")) == "a#2"


async def test_a_caller_that_goes_away_does_not_cancel_the_load_for_the_others() -> None:
    load = Loader()
    load.release = asyncio.Event()
    cache = _cache(FakeClock())
    leaving = asyncio.create_task(cache.get("k", load("a")))
    staying = asyncio.create_task(cache.get("k", load("a")))
    await asyncio.sleep(0)
    leaving.cancel()
    load.release.set()
    assert await staying == "a#1"
    assert leaving.cancelled()
    assert await cache.get("k", load("a")) == "a#1"  # and the answer was kept


async def test_a_failure_nobody_waits_for_any_more_is_not_kept_either() -> None:
    load = Loader()
    load.failing = True
    load.release = asyncio.Event()
    cache = _cache(FakeClock())
    gone = asyncio.create_task(cache.get("k", load("a")))
    await asyncio.sleep(0)
    gone.cancel()
    load.release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(cache) == 0
    load.failing = False
    assert await cache.get("k", load("a")) == "a#2"
