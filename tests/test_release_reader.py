"""The release-name reader process (gateway.releases.ReleaseReader): searches read their names beside
the event loop, into the same cache ``parse`` answers from, and fall back to reading them here."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest

from gateway import releases
from gateway.releases import Release, ReleaseReader, clear_cache, parse, parse_many
from tests.conftest import wait_until

NAMES = [f"Film.Number.{n}.{1990 + n}.1080p.BluRay.x264-GRP{n}" for n in range(40)]


@pytest.fixture
async def reader() -> AsyncIterator[ReleaseReader]:
    clear_cache()
    reader = ReleaseReader()
    yield reader
    await reader.close()
    clear_cache()


async def _started(reader: ReleaseReader) -> None:
    await reader.read(["Warm.Up.2001.720p"])  # the first batch is read here while the process starts
    assert await wait_until(lambda: reader._ready is not None and reader._ready.done(), 30)


async def test_names_are_read_in_another_process_into_the_cache_parse_answers_from(
    reader: ReleaseReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _started(reader)
    expected = parse_many(NAMES)

    def not_here(name: str) -> Release:
        raise AssertionError(f"{name} was parsed in the gateway's own process")

    monkeypatch.setattr(releases, "_parse_safely", not_here)  # the reader process has its own module
    await reader.read(NAMES)
    assert [parse(name) for name in NAMES] == expected  # all from the cache now


async def test_names_asked_for_twice_at_once_are_read_once(reader: ReleaseReader) -> None:
    await _started(reader)
    sent: list[list[str]] = []
    original = reader._pool.submit  # type: ignore[union-attr]

    def counting(fn: object, *args: object) -> object:
        if args and isinstance(args[0], list):
            sent.append(args[0])
        return original(fn, *args)  # type: ignore[arg-type]

    reader._pool.submit = counting  # type: ignore[union-attr,method-assign]
    await asyncio.gather(reader.read(NAMES), reader.read(NAMES[:20]), reader.read(NAMES[10:]))
    assert sorted(name for batch in sent for name in batch) == sorted(NAMES)


async def test_a_dead_reader_process_means_names_are_read_here(reader: ReleaseReader) -> None:
    await _started(reader)
    assert reader._pool is not None
    for pid in list(reader._pool._processes):  # the pool's one worker
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    await reader.read(NAMES)
    assert [parse(name) for name in NAMES] == parse_many(NAMES)
    await reader.read(["Another.Film.2003.720p"])  # and later batches too
    assert parse("Another.Film.2003.720p").year == 2003
