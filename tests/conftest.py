"""Shared fixtures: real sockets everywhere (aiohttp_server), the gateway built by its own factory."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiohttp.test_utils
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from gateway import events as gateway_events
from gateway.app import create_app
from gateway.server import guarded_site, runner_options
from gateway.settings import Settings
from tests.apibay_standin import ApibayState, create_apibay_standin
from tests.jellyfin_standin import StandinState, create_standin
from tests.parallel import (  # noqa: F401 - hooks for parallel runs (pytest-xdist): see there
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_protocol,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
)
from tests.probe import ProbeState, create_probe, pattern
from tests.qbittorrent_nox import QbtInstance, binaries, new_base_dir, require_binary, start_qbittorrent
from tests.qbittorrent_nox import free_port as free_port  # one rule for test ports: see there

ServerFactory = Callable[..., Awaitable[TestServer]]
GatewayFactory = Callable[..., Awaitable["RunningGateway"]]

ROOT = Path(__file__).resolve().parent.parent
#: Listen backlog of every stand-in (aiohttp_server); the gateway's own is 1024 (gateway/server.py).
STANDIN_BACKLOG = 4096


class _StandinSite(web.SockSite):
    def __init__(self, *args: Any, backlog: int = STANDIN_BACKLOG, **kwargs: Any) -> None:
        super().__init__(*args, backlog=backlog, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _standin_backlog() -> Iterator[None]:
    """Stand-ins accept bursts of connections as a real upstream does, not with aiohttp's test
    backlog of 128: beyond it the kernel drops connections and retries them 1, 3, 7, 15 s later,
    which a loaded machine turns into timeouts (2048 pooled connections, say)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aiohttp.test_utils, "SockSite", _StandinSite)
        yield


def server_url(server: TestServer | RunningGateway, path: str = "") -> URL:
    return URL(f"http://{server.host}:{server.port}{path}", encoded=True)


@pytest.fixture
def media_file(tmp_path: Path) -> Path:
    path = tmp_path / "media.mp4"
    path.write_bytes(pattern(3 * 1024 * 1024 + 123))
    return path


@pytest.fixture
def probe_state(media_file: Path) -> ProbeState:
    return ProbeState(media_file=media_file)


@pytest.fixture
async def probe(aiohttp_server: ServerFactory, probe_state: ProbeState) -> TestServer:
    return await aiohttp_server(create_probe(probe_state), auto_decompress=False)


@dataclass
class RunningGateway:
    """A gateway served exactly as in production: same factory, same AppRunner options."""

    host: str
    port: int
    app: web.Application
    settings: Settings
    runner: web.AppRunner

    async def stop(self) -> None:
        """Shut down as at SIGTERM: cleanup contexts run, sockets close."""
        await self.runner.cleanup()


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    """Start a gateway in front of ``upstream`` on a real socket.

    Not aiohttp_server: its TestServer forces ``handler_cancellation=True``, and the gateway must be
    tested the way it runs (aiohttp's default, no cancellation when a client disconnects).
    """
    runners: list[web.AppRunner] = []
    # Bound but not listening: connecting is refused, and no other test (in parallel) can take the port.
    closed_socket = socket.socket()
    closed_socket.bind(("127.0.0.1", 0))
    closed = URL(f"http://127.0.0.1:{closed_socket.getsockname()[1]}")

    async def make(upstream: URL | str, **overrides: Any) -> RunningGateway:
        # Upstreams a test does not set point at a closed loopback port: nothing may leave this machine.
        base = Settings(
            jellyfin_url=URL(str(upstream)),
            host="127.0.0.1",
            port=0,
            qbittorrent_url=closed,
            apibay_url=closed,
        )
        settings = replace(base, **overrides)
        app = create_app(settings)
        runner = web.AppRunner(app, **runner_options(settings))
        await runner.setup()
        runners.append(runner)
        await guarded_site(runner, settings).start()
        host, port = runner.addresses[0][:2]
        return RunningGateway(host, port, app, settings, runner)

    try:
        yield make
    finally:
        for runner in reversed(runners):
            if runner.server is not None:  # not stopped by the test already
                await runner.cleanup()
        closed_socket.close()


@pytest.fixture
async def gateway(probe: TestServer, gateway_factory: GatewayFactory) -> RunningGateway:
    """A gateway in front of the probe upstream."""
    return await gateway_factory(server_url(probe))


@pytest.fixture
def standin_state() -> StandinState:
    return StandinState()


@pytest.fixture
async def jellyfin(aiohttp_server: ServerFactory, standin_state: StandinState) -> TestServer:
    """The faithful Jellyfin stand-in on a real socket."""
    return await aiohttp_server(create_standin(state=standin_state))


@pytest.fixture
async def jellyfin_gateway(jellyfin: TestServer, gateway_factory: GatewayFactory) -> RunningGateway:
    """A gateway in front of the Jellyfin stand-in."""
    return await gateway_factory(server_url(jellyfin))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client that changes nothing: no decompression, no cookie jar, no redirects by default."""
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session


@dataclass
class RawResponse:
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


async def raw_exchange(
    server: TestServer | RunningGateway, request: bytes, *, timeout: float = 10.0
) -> RawResponse:
    """Send bytes as they are and read the reply until the server closes (send Connection: close)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [
        (name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])
    ]
    return RawResponse(lines[0], headers, body)


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> URL:
        return URL(f"http://127.0.0.1:{self.port}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[..., Awaitable[GatewayProcess]]]:
    """Run ``python -m gateway`` as a separate process, the way ``make run`` does."""
    started: list[GatewayProcess] = []

    async def start(env: dict[str, str], *, wait: bool = True) -> GatewayProcess:
        port = free_port()
        log = tmp_path / f"gateway-{port}.log"
        full_env = {
            **os.environ,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway"],
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        gp = GatewayProcess(process, port, log)
        started.append(gp)
        if wait:
            await wait_for_port(port, process)
        return gp

    yield start
    for gp in started:
        if gp.process.poll() is None:
            gp.process.terminate()
            try:
                gp.process.wait(10)
            except subprocess.TimeoutExpired:
                gp.process.kill()
                gp.process.wait()


async def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.01
) -> bool:
    """Poll ``condition`` (state another task or process changes) until true or ``timeout`` passes.

    ``condition`` may be a coroutine function (asking qBittorrent, say): give such a one a longer
    ``interval`` than the default 10 ms.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)


class FakeClock:
    """A monotonic clock that tests move by hand (``clock.now += 61``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer``; a mocked response has none."""

    def __init__(self, *args: Any, stream_writer: Any = None, **kwargs: Any) -> None:
        writer: Any = stream_writer or SimpleNamespace(output_size=0)
        super().__init__(*args, stream_writer=writer, **kwargs)


class MockedHTTP(aioresponses):
    """aioresponses for unit tests of outbound calls, working on the aiohttp this project runs."""

    def add(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _CompatResponse)
        super().add(*args, **kwargs)


# --- real qBittorrent (4.5 from Debian 12, 5.1 from a trixie chroot: tests/setup_qbittorrent.sh) ---

QbtFactory = Callable[..., Awaitable[QbtInstance]]


@pytest.fixture(params=sorted(binaries()), ids=lambda version: f"qbt{version}")
def qbt_binary(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(short version, command); fails loudly when the command is not installed."""
    version: str = request.param
    binary = binaries()[version]
    require_binary(binary)
    return version, binary


@pytest.fixture
async def qbt_factory(qbt_binary: tuple[str, str]) -> AsyncIterator[QbtFactory]:
    """Start instances of the parametrized version; all are stopped and deleted afterwards."""
    base_dir = new_base_dir()
    instances: list[QbtInstance] = []

    async def start(**kwargs: Any) -> QbtInstance:
        instance = await start_qbittorrent(qbt_binary[1], base_dir, **kwargs)
        instances.append(instance)
        return instance

    try:
        yield start
    finally:
        await asyncio.gather(*(instance.stop() for instance in instances))
        shutil.rmtree(base_dir, ignore_errors=True)


def qbittorrent_settings(qbt: QbtInstance) -> dict[str, Any]:
    """Gateway settings for a real qBittorrent: its URL and login, Jellyfin's /media as its
    <profile>/library (PATH_MAP), and no trackers (nothing may leave this machine)."""
    return {
        "qbittorrent_url": URL(qbt.url),
        "qbittorrent_username": qbt.username,
        "qbittorrent_password": qbt.password,
        "path_map": (("/media", str(qbt.downloads.parent / "library")),),
        "trackers": (),
    }


def rss_kib(pid: int) -> int:
    """Resident set size of one process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# --- the whole world: gateway + Jellyfin and apibay stand-ins + real qBittorrent --------------------


@dataclass
class Stack:
    """A gateway wired as in production to the Jellyfin stand-in, the apibay stand-in and a real
    qbittorrent-nox (of the version the test is parametrized with)."""

    #: The qBittorrent the gateway drives (the leecher when there is a seeder).
    qbt: QbtInstance
    #: The Jellyfin stand-in's state (users, tokens, libraries, the calls it received).
    jellyfin: StandinState
    #: The Jellyfin stand-in itself (to close it, or to reach it without the gateway).
    jellyfin_server: TestServer
    #: The apibay stand-in's state (a closed port in the gateway's settings with ``apibay=False``).
    apibay: ApibayState
    #: An admin's Authorization header, as Jellyfin web sends it.
    headers: dict[str, str]
    #: The gateway settings (over the defaults) of every gateway this stack starts.
    settings: dict[str, Any]
    _start: GatewayFactory = field(repr=False)
    _seeder: QbtInstance | None = field(default=None, repr=False)
    _gateway: RunningGateway | None = field(default=None, repr=False)

    @property
    def gateway(self) -> RunningGateway:
        """The first gateway started (by the factory unless it was asked for ``gateway=False``)."""
        if self._gateway is None:
            raise AssertionError("no gateway started: stack_factory(gateway=False) and no start_gateway()")
        return self._gateway

    @property
    def seeder(self) -> QbtInstance:
        """A second qbittorrent-nox of the same version, to download from (``seeder=True``)."""
        if self._seeder is None:
            raise AssertionError("no seeder: ask stack_factory(seeder=True)")
        return self._seeder

    @property
    def jellyfin_url(self) -> URL:
        return server_url(self.jellyfin_server)

    def url(self, path: str = "") -> URL:
        """``path`` on the (first) gateway."""
        return server_url(self.gateway, path)

    async def start_gateway(self, **overrides: Any) -> RunningGateway:
        """Another gateway in front of the same world (a restart, a second instance); ``overrides`` go
        over this stack's settings. Stopped at teardown unless the test stops it."""
        gateway = await self._start(self.jellyfin_url, **{**self.settings, **overrides})
        if self._gateway is None:
            self._gateway = gateway
        return gateway


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack_factory(
    qbt_factory: QbtFactory,
    jellyfin: TestServer,
    standin_state: StandinState,
    aiohttp_server: ServerFactory,
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> StackFactory:
    """Build a :class:`Stack` for the parametrized qBittorrent version (``qbt_binary``).

    Keyword options, for what tests need differently:

    - ``apibay=False``: no apibay stand-in; the gateway's APIBAY_URL is a closed port.
    - ``seeder=True``: a second qbittorrent-nox (``stack.seeder``), started alongside.
    - ``api_key=True``: the gateway has a Jellyfin API key (JELLYFIN_API_KEY), so it announces.
    - ``gateway=False``: nothing started yet; ``stack.start_gateway()`` does it (or a process does).
    - ``sse_keepalive``: seconds between /torrent/events keep-alive comments; 0.2 here, 15 in
      production (``None`` keeps that). The gateway notices a listener who went away only when it
      writes to it, and stopping a gateway waits up to 5 s (shutdown_timeout) for such a stream.
    - ``qbt_options``: passed to ``qbt_factory`` (``max_auth_fail=5``, ``extra_prefs={...}``).
    - any other keyword is a gateway setting (``watch_interval=0.1``, ``qbittorrent_password=...``).

    Jellyfin is the ``jellyfin`` fixture (one per test, its state ``standin_state``), so a test can
    arrange or inspect it through either.
    """

    async def make(
        *,
        apibay: bool = True,
        seeder: bool = False,
        api_key: bool = False,
        gateway: bool = True,
        sse_keepalive: float | None = 0.2,
        qbt_options: dict[str, Any] | None = None,
        **gateway_settings: Any,
    ) -> Stack:
        if sse_keepalive is not None:
            monkeypatch.setattr(gateway_events, "SSE_KEEPALIVE", sse_keepalive)
        options = qbt_options or {}
        if seeder:
            qbt, seeding = await asyncio.gather(qbt_factory(**options), qbt_factory())
        else:
            qbt, seeding = await qbt_factory(**options), None
        apibay_state = ApibayState()
        settings: dict[str, Any] = qbittorrent_settings(qbt)
        if apibay:
            settings["apibay_url"] = server_url(await aiohttp_server(create_apibay_standin(apibay_state)))
        if api_key:
            settings["jellyfin_api_key"] = standin_state.api_key_for("gateway")
        settings.update(gateway_settings)
        token = standin_state.issue_token(standin_state.user_by_name("admin"))
        stack = Stack(
            qbt=qbt,
            jellyfin=standin_state,
            jellyfin_server=jellyfin,
            apibay=apibay_state,
            headers={"Authorization": f'MediaBrowser Token="{token}"'},
            settings=settings,
            _start=gateway_factory,
            _seeder=seeding,
        )
        if gateway:
            await stack.start_gateway()
        return stack

    return make


@pytest.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    """The default :class:`Stack`: gateway, both stand-ins, one real qBittorrent."""
    return await stack_factory()
