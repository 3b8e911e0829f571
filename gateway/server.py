"""Serving: one process, or several sharing the port through SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from dataclasses import replace
from typing import Any

from aiohttp import web

from . import logs
from .app import create_app
from .front import FrontConfig, GuardedSite
from .headguard import HeadLimits
from .keys import PROXY, UPSTREAM_POOL
from .proxy import STREAM_CHUNK
from .settings import Settings

logger = logging.getLogger(__name__)


def head_limits(settings: Settings) -> HeadLimits:
    """Kestrel's request-head limits, with the head timeout from the settings."""
    return HeadLimits(timeout=settings.header_timeout)


def runner_options(settings: Settings) -> dict[str, Any]:
    """The server-side knobs a transparent proxy needs; tests pass the same ones to their servers.

    aiohttp's own per-line limits sit just above the guard's (see headguard.py), which answers
    first and as Kestrel would.
    """
    limits = head_limits(settings)
    return dict(
        access_log_class=logs.AccessLogger,
        access_log=logging.getLogger("gateway.access") if settings.access_log else None,
        read_bufsize=STREAM_CHUNK,
        auto_decompress=False,  # an upload's Content-Encoding is Jellyfin's business, not ours
        max_line_size=limits.request_line,
        max_field_size=limits.header_bytes,
        max_headers=limits.header_count + 28,
        keepalive_timeout=settings.keepalive_timeout,
        shutdown_timeout=5.0,
    )


def front_config(settings: Settings, app: web.Application) -> FrontConfig:
    """What the front's fast path needs, from the settings and the app's proxy (one source each)."""
    return FrontConfig(
        limits=head_limits(settings),
        keepalive_timeout=settings.keepalive_timeout,
        read_timeout=settings.jellyfin_read_timeout,
        trusted_proxies=settings.trusted_proxies,
        origin=str(settings.jellyfin_origin),
        local_prefix=settings.torrent_prefix.lower().encode(),
        local_paths=frozenset(path.encode() for path in app[PROXY].web_index_paths),
        access_logger=logging.getLogger("gateway.access") if settings.access_log else None,
        ws_max_message=settings.ws_max_message,
    )


def guarded_site(runner: web.AppRunner, settings: Settings, *, reuse_port: bool = False) -> GuardedSite:
    """The listening socket, behind the front and the request-head guard; tests listen the same way.

    Call it after ``runner.setup()``: the fast path uses the app's upstream pool.
    """
    app = runner.app
    pool = app.get(UPSTREAM_POOL)
    return GuardedSite(
        runner,
        settings.host,
        settings.port,
        limits=head_limits(settings),
        front_config=front_config(settings, app) if pool is not None else None,
        pool=pool,
        reuse_port=reuse_port,
        backlog=1024,
    )


class StartupError(Exception):
    """Why the gateway could not start, as the one line it logs before exiting with status 1."""


def _reason(exc: OSError) -> str:
    """The system's words and the file they are about: ``No such file or directory: /x/templates``.

    From the errno where there is one: asyncio words a bind failure as a sentence naming the address.
    """
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
    return reason if exc.filename is None else f"{reason}: {exc.filename}"


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until SIGINT or SIGTERM; StartupError says what stopped it from starting.

    Only a failure to bind the socket is "cannot listen": a missing template folder is not a port problem.
    """
    try:
        runner = web.AppRunner(create_app(settings), **runner_options(settings))
        await runner.setup()
    except OSError as exc:
        raise StartupError(f"cannot start: {_reason(exc)}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await guarded_site(runner, settings, reuse_port=reuse_port).start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {_reason(exc)}") from exc
        logger.info(
            "listening on %s:%d, proxying to %s (torrent API at %s)",
            settings.host,
            settings.port,
            settings.jellyfin_url,
            settings.torrent_prefix,
        )
        await stop.wait()
        logger.info("shutting down")
    finally:
        await runner.cleanup()


def run(settings: Settings, *, reuse_port: bool = False) -> int:
    """One serving process: exit status 0, or 1 after one log line saying why it could not start."""
    try:
        asyncio.run(serve(settings, reuse_port=reuse_port))
    except StartupError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def _run_worker(settings: Settings) -> None:
    # A forked worker inherits the supervisor's handlers; it must answer signals as itself.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    logs.configure(settings.log_level)
    sys.exit(run(settings, reuse_port=True))


#: Seconds between the supervisor's looks at its workers when none has exited.
SUPERVISOR_POLL = 1.0


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` processes sharing the port through SO_REUSEPORT.

    The kernel spreads connections across them. If one dies the others are stopped and the exit code is
    non-zero, so that systemd/docker restarts the whole set instead of running silently degraded.
    """
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_run_worker, args=(replace(settings, worker_index=n),), name=f"worker-{n}")
        for n in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    for worker in workers:
        worker.start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("started %d workers: %s", len(workers), " ".join(str(w.pid) for w in workers))
    status = 0
    while True:
        # Look before waiting: a worker may have died before the first wait.
        for worker in workers:
            if worker.exitcode is not None and worker.exitcode != 0 and not stopping:
                logger.error("%s exited with %s; stopping the others", worker.name, worker.exitcode)
                status = 1
                stop(signal.SIGTERM, None)
        running = [w.sentinel for w in workers if w.exitcode is None]
        if not running:
            break
        # Woken by a worker's exit; the timeout looks again in any case (a sentinel that never
        # became readable left a dying worker's survivor running in CI, once in several runs).
        multiprocessing.connection.wait(running, timeout=SUPERVISOR_POLL)
    for worker in workers:
        worker.join()
    return status
