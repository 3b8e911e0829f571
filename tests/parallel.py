"""How the suite runs in parallel (pytest-xdist, ``-n 4 --dist loadgroup`` in setup.cfg).

The hooks here are imported into tests/conftest.py. Everything is harmless in a serial run (``-n 0``).

- ``slow`` tests start first: loadgroup hands each worker the next test when it is nearly idle, so
  the longest ones run beside the many short ones instead of ending the run alone on one worker.
- ``xdist_group(name)`` tests run on one worker, one after the other. The tests of a module with
  module-scoped fixtures (a built wheel, say) get such a group of their own, so that one worker
  builds those fixtures once instead of every worker building them again.
- ``exclusive`` tests run at the end, each alone: the other workers finish the test they are running
  and wait until it is done. For tests whose timing cannot stand the load of other tests (thousands
  of connections through one event loop, say). Other processes on the machine still run, of course.

pytest-xdist 3.8 learns a test's group from a suffix it appends to the node ID, which pytest 9.2's
structured node IDs ignore (pytest-xdist issue #1386): its loadgroup then silently groups nothing.
So here the workers write each test's group into the run's directory, and the controller's
loadgroup scheduler reads it from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

#: The run's directory (made by the xdist controller, inherited by its workers): locks and groups.
RUN_DIR_ENV = "GATEWAY_TESTS_RUN_DIR"

#: Tests marked ``exclusive`` from here because they live in files other changes are under way in;
#: ``@pytest.mark.exclusive`` on the test itself says the same.
EXCLUSIVE_BY_NAME = frozenset(
    {
        # 2 x 2056 connections through the one event loop of the test process, then an answer
        # within 8 s: other tests' load only eats into that margin.
        "test_an_admin_check_answers_quickly_while_every_proxied_connection_is_busy",
        # Two gateway processes start, one is killed, the survivor must shut down gracefully within
        # 15 s: beside three busy workers on 2 cores it missed that in 2 of 4 runs (now 30 s, and the
        # failure message shows where the survivor waited).
        "test_a_dying_worker_stops_the_whole_set_with_an_error",
    }
)


def _is_controller(config: pytest.Config) -> bool:
    """The process that hands out tests to xdist workers (not a worker, not a serial run)."""
    return not hasattr(config, "workerinput") and bool(config.getoption("numprocesses", None))


def _run_dir(config: pytest.Config) -> Path | None:
    """The run's directory, in an xdist worker (None in a serial run)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    return Path(run_dir) if run_dir and hasattr(config, "workerinput") else None


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config):
        os.environ[RUN_DIR_ENV] = tempfile.mkdtemp(prefix="pytest-run-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _is_controller(config) and (run_dir := os.environ.pop(RUN_DIR_ENV, None)):
        shutil.rmtree(run_dir, ignore_errors=True)


def _exclusive(item: pytest.Item) -> bool:
    return item.get_closest_marker("exclusive") is not None


def _group(item: pytest.Item) -> str | None:
    """The item's xdist_group names, joined as pytest-xdist joins them."""
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return "_".join(sorted(names)) or None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and item.originalname in EXCLUSIVE_BY_NAME:
            item.add_marker(pytest.mark.exclusive)
        if isinstance(item, pytest.Function) and any(
            definitions[-1].scope in ("module", "package") and definitions[-1].baseid
            for definitions in item._fixtureinfo.name2fixturedefs.values()
        ):
            item.add_marker(pytest.mark.xdist_group(f"module-fixtures:{item.module.__name__}"))
    # Stable: the order within each kind of test is kept.
    items.sort(key=lambda item: (_exclusive(item), item.get_closest_marker("slow") is None))
    run_dir = _run_dir(config)
    if run_dir is not None:
        groups = {item.nodeid: group for item in items if (group := _group(item))}
        worker = config.workerinput["workerid"]  # type: ignore[attr-defined]
        written = run_dir / f"groups-{worker}.json.part"
        written.write_text(json.dumps(groups))
        written.rename(run_dir / f"groups-{worker}.json")


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before pytest-xdist's own
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's loadgroup scheduler, told each test's group by the workers (see above)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if config.getvalue("dist") != "loadgroup" or run_dir is None:
        return None
    scheduler: Any = importlib.import_module("xdist.scheduler").LoadGroupScheduling(config, log)
    by_suffix = scheduler._split_scope
    groups: dict[str, str] = {}

    def split_scope(nodeid: str) -> str:
        # First called once every worker has collected, so after they wrote their files.
        if not groups:
            for written in Path(run_dir).glob("groups-*.json"):
                groups.update(json.loads(written.read_text()))
        return groups.get(nodeid) or str(by_suffix(nodeid))

    scheduler._split_scope = split_scope
    return scheduler


@contextlib.contextmanager
def _flock(path: Path, operation: int) -> Iterator[IO[bytes]]:
    with path.open("ab") as file:
        fcntl.flock(file, operation)
        yield file  # closing the file releases the lock


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Setup, call and teardown under the run's lock: shared for a test, exclusive for ``exclusive``.

    A writer-preferring lock from two flock(2) files: ``gate`` is held exclusively by a waiting
    ``exclusive`` test, so that no test starts while it waits for the running ones to end.
    """
    run_dir = _run_dir(item.config)
    if run_dir is None:
        return (yield)
    gate, running = run_dir / "gate", run_dir / "running"
    if _exclusive(item):
        with _flock(gate, fcntl.LOCK_EX), _flock(running, fcntl.LOCK_EX):
            return (yield)
    with _flock(gate, fcntl.LOCK_SH) as gate_file, _flock(running, fcntl.LOCK_SH):
        fcntl.flock(gate_file, fcntl.LOCK_UN)
        return (yield)
