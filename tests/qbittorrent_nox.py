"""Start and stop real, throw-away qbittorrent-nox processes for tests.

Two versions are tested because the WebAPI changed incompatibly in 5.0 (pause/resume became
stop/start): Debian 12's 4.5.2 (``qbittorrent-nox``) and 5.1.x from a Debian trixie chroot
(``qbittorrent-nox-5``); ``tests/setup_qbittorrent.sh`` installs both. Every instance listens on
127.0.0.1 only, with DHT/LSD/PeX/UPnP off, so nothing leaves the host, and keeps the production
security checks (login, CSRF, Host header) on so tests meet what the gateway will meet.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import collections
import configparser
import contextlib
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

__all__ = [
    "QbtError",
    "QbtInstance",
    "QbtNotInstalledError",
    "QbtStartError",
    "binaries",
    "free_port",
    "new_base_dir",
    "password_pbkdf2",
    "require_binary",
    "start_qbittorrent",
    "supports_confirm_legal_notice",
]

BINARIES: dict[str, str] = {"4.5": "qbittorrent-nox", "5.1": "qbittorrent-nox-5"}
SETUP_HINT = "run `sudo tests/setup_qbittorrent.sh` (installs qbittorrent-nox 4.5 and the 5.1 chroot)"
# The chroot of qbittorrent-nox-5 sees the host's /tmp at the same path, and nothing else.
PROFILE_PARENT = Path("/tmp")
READY_TIMEOUT = 30.0
READY_INTERVAL = 0.05
LOGIN_TRY_TIMEOUT = 2.0
STOP_TIMEOUT = 10.0
DEFAULT_USERNAME = "gwadmin"
DEFAULT_PASSWORD = "gw-test-password"  # a throw-away instance on loopback, not a secret
LOG_NAME = "qbt.log"
PID_NAME = "qbt.pid"

#: free_port() hands out ports from here up to the start of the kernel's ephemeral range (32768).
PORT_FLOOR = 16384

_help_cache: dict[str, str] = {}
_random = random.SystemRandom()
_recent_ports: collections.deque[int] = collections.deque(maxlen=512)
# Processes not stopped yet; killed at interpreter exit if a test run is interrupted before teardown.
_live_processes: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    """No qbittorrent-nox may outlive the test run (it would hold ports and /tmp files)."""
    for proc in list(_live_processes):
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    _live_processes.clear()


class QbtError(RuntimeError):
    """Something about a test qBittorrent went wrong (message says what, with its log)."""


class QbtNotInstalledError(QbtError):
    """A qBittorrent binary is missing: a failure, never a skip, so CI cannot pass without it."""


class QbtStartError(QbtError):
    """The process died or never accepted the configured login."""


def binaries() -> dict[str, str]:
    """The qBittorrent versions under test, keyed by short version, to their command names."""
    return dict(BINARIES)


def require_binary(binary: str) -> str:
    """Return the absolute path of ``binary`` or raise: a missing qBittorrent must fail loudly."""
    path = shutil.which(binary)
    if path is None:
        raise QbtNotInstalledError(f"{binary} is not installed or not on PATH; {SETUP_HINT}")
    return path


def _port_pool() -> range:
    """The ports :func:`free_port` draws from: from PORT_FLOOR up to the kernel's ephemeral range,
    shared out among the pytest-xdist workers of a run (empty when there is no room below it)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker) % count if worker.isdigit() else 0
    size = max(0, ephemeral - PORT_FLOOR) // count
    if size < 100:
        return range(0)
    return range(PORT_FLOOR + index * size, PORT_FLOOR + (index + 1) * size)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a server to bind later or to stay closed.

    Not from the kernel's ephemeral range: there a socket bound to port 0 (a test server, any
    client connection, in this or another process) could take the port before its user binds it.
    Each pytest-xdist worker draws from its own part of the rest, and never hands out a port again
    soon after.
    """
    pool = _port_pool()
    for _ in range(200 if pool else 0):
        port = _random.choice(pool)
        if port in _recent_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _recent_ports.append(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def new_base_dir(prefix: str = "qbt-test-") -> Path:
    """A fresh directory under /tmp (not $TMPDIR): the only path the 5.1 chroot shares."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=PROFILE_PARENT))


def password_pbkdf2(password: str, salt: bytes | None = None) -> str:
    """``WebUI\\Password_PBKDF2`` as qBittorrent stores it (PBKDF2-HMAC-SHA512, 100000 rounds).

    Known credentials are required: since 4.6.1 there is no default password.
    """
    salt = os.urandom(16) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100_000, dklen=64)
    return f"@ByteArray({base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()})"


@functools.cache
def _password_hash_for(password: str) -> str:
    """One salted hash per password and test process: 100000 rounds cost ~0.1 s of CPU per start."""
    return password_pbkdf2(password)


async def supports_confirm_legal_notice(binary: str) -> bool:
    """Whether ``--confirm-legal-notice`` exists (5.0+); 4.5 exits with rc 1 when given it."""
    if binary not in _help_cache:
        proc = await asyncio.create_subprocess_exec(
            require_binary(binary),
            "--help",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise QbtError(f"{binary} --help did not exit within 30 s") from None
        _help_cache[binary] = out.decode(errors="replace")
    return "--confirm-legal-notice" in _help_cache[binary]


def _form_value(value: object) -> str:
    """qBittorrent parses booleans strictly as true/false; ``str(True)`` would be ignored."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _login_ok(status: int, body: str) -> bool:
    """Success is ``200 Ok.`` up to 5.1 and ``204`` with an empty body from 5.2 on."""
    return 200 <= status < 300 and body.strip() in ("", "Ok.")


@dataclass
class QbtInstance:
    """One qbittorrent-nox process with its own profile, WebUI port and credentials."""

    binary: str
    profile: Path
    port: int
    username: str
    password: str
    downloads: Path
    process: subprocess.Popen[bytes] | None = None
    version: str = ""
    webapi_version: str = ""
    torrent_port: int = 0
    ready_seconds: float = 0.0
    _start_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)
    _password_hash: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """Base URL of the WebUI (an IP host: cookie jars must be ``unsafe=True``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        """Where ``--profile`` makes qBittorrent read its settings."""
        return self.profile / "qBittorrent" / "config" / "qBittorrent.conf"

    @property
    def log_path(self) -> Path:
        """stdout/stderr of every start of this instance, appended."""
        return self.profile / LOG_NAME

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(
        self,
        *,
        local_host_auth: bool = True,
        session_timeout: int = 3600,
        max_auth_fail: int = 5,
        ban_duration: int = 3600,
        extra_prefs: Mapping[str, str] | None = None,
    ) -> None:
        """Write the config, spawn the process and wait until the configured login succeeds.

        ``extra_prefs`` maps ``"Section/Key"`` to raw ini values and overrides the defaults, in
        QSettings notation: ``"Preferences/WebUI/ServerDomains"`` is ``WebUI\\ServerDomains`` in
        ``[Preferences]`` (a backslash instead of the second ``/`` works too).
        """
        if self.running:
            raise QbtError(f"{self.binary} on port {self.port} is already running")
        self._refuse_live_pid_file()
        binary_path = require_binary(self.binary)
        self._start_kwargs = {
            "local_host_auth": local_host_auth,
            "session_timeout": session_timeout,
            "max_auth_fail": max_auth_fail,
            "ban_duration": ban_duration,
            "extra_prefs": dict(extra_prefs or {}),
        }
        self._write_config(**self._start_kwargs)
        args = [binary_path, f"--profile={self.profile}", f"--webui-port={self.port}"]
        if await supports_confirm_legal_notice(self.binary):
            args.append("--confirm-legal-notice")
        self._log = self.log_path.open("ab")
        self._log.write(f"==== {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
        self._log.flush()
        started = time.monotonic()
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        _live_processes.add(self.process)
        (self.profile / PID_NAME).write_text(f"{self.process.pid}\n")
        try:
            await self._wait_ready(started)
            self.version = await self._get_text("app/version")
            self.webapi_version = await self._get_text("app/webapiVersion")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM and wait (qBittorrent saves its resume data), SIGKILL after ``STOP_TIMEOUT``."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + STOP_TIMEOUT
                while proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await asyncio.to_thread(proc.wait)
            _live_processes.discard(proc)
            with contextlib.suppress(OSError):
                (self.profile / PID_NAME).unlink()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def restart(self) -> None:
        """Stop and start again with the same profile, ports and settings (torrents persist)."""
        kwargs = dict(self._start_kwargs)
        await self.stop()
        await self.start(**kwargs)

    def remove_profile(self) -> None:
        """Delete the profile (and so the downloads in it); the process must be stopped first."""
        if self.running:
            raise QbtError("stop() the instance before removing its profile")
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- WebAPI helpers for assertions -------------------------------------------------------------

    async def api(self, method: str, path: str, **form_or_params: object) -> tuple[int, str]:
        """Call ``/api/v2/<path>`` logged in; form fields for POST, query for other methods.

        A 403 outside ``auth/`` means the cookie expired (idle timeout, restart): log in again and
        retry once, as the gateway must.
        """
        status, body = await self._request(method, path, form_or_params)
        if status == 403 and not path.lstrip("/").removeprefix("api/v2/").startswith("auth/"):
            await self._login()
            status, body = await self._request(method, path, form_or_params)
        return status, body

    async def torrents(self, **params: object) -> list[dict[str, Any]]:
        """``torrents/info`` (``filter=all`` unless given) as parsed JSON."""
        status, body = await self.api("GET", "torrents/info", **{"filter": "all", **params})
        if status != 200:
            raise QbtError(f"torrents/info -> {status} {body[:200]!r}")
        result: list[dict[str, Any]] = json.loads(body)
        return result

    # -- internals ---------------------------------------------------------------------------------

    def _api_url(self, path: str) -> str:
        path = path if path.startswith("/") else f"/api/v2/{path}"
        return f"{self.url}{path}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # unsafe=True: the default jar silently drops cookies set by an IP-address host.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10)
            )
        return self._session

    async def _request(self, method: str, path: str, fields: Mapping[str, object]) -> tuple[int, str]:
        values = {key: _form_value(value) for key, value in fields.items()}
        session = self._get_session()
        if method.upper() == "GET":
            response = await session.request(method, self._api_url(path), params=values)
        else:
            response = await session.request(method, self._api_url(path), data=values)
        async with response:
            return response.status, await response.text()

    async def _login(self, timeout: float = 10.0) -> tuple[int, str]:
        """Log in with an empty jar: a request carrying a valid cookie gets ``Ok.`` unchecked."""
        session = self._get_session()
        session.cookie_jar.clear()
        async with session.post(
            self._api_url("auth/login"),
            data={"username": self.username, "password": self.password},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            status, body = response.status, await response.text()
        if not _login_ok(status, body):
            raise QbtError(f"login to {self.url} failed: {status} {body[:200]!r}")
        return status, body

    async def _wait_ready(self, started: float) -> None:
        """Poll the login until it succeeds; connection errors only mean "not listening yet".

        A wrong answer (``Fails.``, 403 ban, 401 CSRF) is raised at once: every failed login counts
        towards the IP ban, so it must never be retried in a loop.
        """
        deadline = started + READY_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise QbtStartError(
                    f"{self.binary} exited with rc {self.process.returncode} before its WebUI was "
                    f"ready; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                await self._login(timeout=LOGIN_TRY_TIMEOUT)
            except (aiohttp.ClientConnectionError, TimeoutError):
                pass
            except QbtError as exc:
                raise QbtStartError(f"{exc}; log {self.log_path}:\n{self.log_tail()}") from exc
            else:
                self.ready_seconds = time.monotonic() - started
                return
            if time.monotonic() >= deadline:
                raise QbtStartError(
                    f"{self.binary} WebUI on {self.url} not ready after {READY_TIMEOUT:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            await asyncio.sleep(READY_INTERVAL)

    async def _get_text(self, path: str) -> str:
        status, body = await self.api("GET", path)
        if status != 200:
            raise QbtError(f"{path} -> {status} {body[:200]!r}")
        return body.strip()

    def _refuse_live_pid_file(self) -> None:
        """Two processes on one profile corrupt each other's resume data."""
        try:
            pid = int((self.profile / PID_NAME).read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"qbittorrent" in cmdline:
            raise QbtError(f"profile {self.profile} is in use by running process {pid}")

    def _write_config(
        self,
        *,
        local_host_auth: bool,
        session_timeout: int,
        max_auth_fail: int,
        ban_duration: int,
        extra_prefs: Mapping[str, str],
    ) -> None:
        """Write our keys into qBittorrent.conf, keeping any others qBittorrent saved (restart).

        Why: libtorrent bound to ``lo`` with DHT/LSD/PeX/UPnP/NAT-PMP off keeps all traffic on the
        host (a trackerless magnet stays ``metaDL``); no GeoIP download; English messages; no legal
        notice prompt; known credentials (no default password since 4.6.1); CSRF and Host-header
        validation at their production defaults. The same keys work on 4.5 and 5.1.
        """
        if not self._password_hash:
            self._password_hash = _password_hash_for(self.password)
        settings: dict[str, dict[str, str]] = {
            "LegalNotice": {"Accepted": "true"},
            "BitTorrent": {
                "Session\\DHTEnabled": "false",
                "Session\\LSDEnabled": "false",
                "Session\\PeXEnabled": "false",
                "Session\\Interface": "lo",
                "Session\\InterfaceName": "lo",
                "Session\\InterfaceAddress": "127.0.0.1",
                "Session\\Port": str(self.torrent_port),
                "Session\\DefaultSavePath": str(self.downloads),
            },
            "Network": {"PortForwardingEnabled": "false"},
            "Preferences": {
                "Connection\\ResolvePeerCountries": "false",
                "General\\Locale": "en",
                "WebUI\\Enabled": "true",
                "WebUI\\Address": "127.0.0.1",
                "WebUI\\Port": str(self.port),
                "WebUI\\UseUPnP": "false",
                "WebUI\\Username": self.username,
                "WebUI\\Password_PBKDF2": f'"{self._password_hash}"',
                "WebUI\\LocalHostAuth": _form_value(local_host_auth),
                "WebUI\\SessionTimeout": str(session_timeout),
                "WebUI\\MaxAuthenticationFailCount": str(max_auth_fail),
                "WebUI\\BanDuration": str(ban_duration),
                "WebUI\\CSRFProtection": "true",
                "WebUI\\HostHeaderValidation": "true",
                "WebUI\\ServerDomains": "*",
            },
        }
        for full_key, value in extra_prefs.items():
            section, sep, key = full_key.partition("/")
            if not sep or not key:
                raise ValueError(f"extra_prefs key {full_key!r} is not 'Section/Key'")
            settings.setdefault(section, {})[key.replace("/", "\\")] = value

        # QSettings ini: keys are case-sensitive and contain backslashes, values are raw.
        parser = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=(";",), strict=False)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        if self.config_path.exists():
            parser.read(self.config_path, encoding="utf-8")
        for section, values in settings.items():
            if not parser.has_section(section):
                parser.add_section(section)
            for key, value in values.items():
                parser.set(section, key, value)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        with self.config_path.open("w", encoding="utf-8") as out:
            parser.write(out, space_around_delimiters=False)


async def start_qbittorrent(
    binary: str,
    base_dir: Path,
    *,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    **start_kwargs: Any,
) -> QbtInstance:
    """Create a profile under ``base_dir`` (which must be under /tmp), pick free ports, start.

    On failure the process is already stopped; the caller owns ``stop()`` and ``remove_profile()``
    otherwise.
    """
    require_binary(binary)
    base_dir = base_dir.resolve()
    if not base_dir.is_relative_to(PROFILE_PARENT):
        raise ValueError(f"{base_dir} is not under {PROFILE_PARENT}: qbittorrent-nox-5 runs in a chroot")
    port = free_port()
    torrent_port = free_port()
    while torrent_port == port:
        torrent_port = free_port()
    profile = base_dir / f"{binary}-{port}"
    profile.mkdir(parents=True)
    downloads = profile / "downloads"
    downloads.mkdir()
    instance = QbtInstance(
        binary=binary,
        profile=profile,
        port=port,
        username=username,
        password=password,
        downloads=downloads,
        torrent_port=torrent_port,
    )
    await instance.start(**start_kwargs)
    return instance
