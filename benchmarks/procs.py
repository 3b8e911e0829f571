"""Process plumbing for the benchmark: ports, child processes, readiness and RSS.

Every process the harness starts goes through `Managed`, which puts it in its own session so the
process *and everything it forks* (nginx workers, gateway workers) can be stopped together by
process-group id, and never by name. `Managed(..., cpus={1})` also pins it (and, by inheritance,
everything it forks) to those CPUs; `plan_pinning` decides which CPUs each role gets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Proxy variables would send the harness's own HTTP checks (and curl, and the gateway's client)
# somewhere other than 127.0.0.1; strip them from every child's environment.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


class HarnessError(RuntimeError):
    """The harness could not measure (a process did not start, a response was wrong)."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env.update(extra or {})
    return env


def free_port() -> int:
    """A port the kernel just considered free on 127.0.0.1 (tiny race, fine on a quiet machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Managed:
    """A child process in its own session; `stop()` ends the whole process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        cpus: Collection[int] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.cpus = frozenset(cpus) if cpus is not None else None
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # In the child before exec, so its workers (forked later) inherit the affinity too.
                preexec_fn=_affinity_setter(self.cpus) if self.cpus is not None else None,
            )
        except BaseException:
            self._log.close()
            raise
        self.pgid = self.proc.pid  # session leader: pgid == pid

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, wait (bounded), then SIGKILL whatever is left of it."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=5)
        # Workers may outlive their parent for a moment; give them 2 s, then kill the rest.
        deadline = time.monotonic() + 2.0
        while self._group_exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._group_exists():
            self._signal_group(signal.SIGKILL)
        self._log.close()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _group_exists(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True


def _affinity_setter(cpus: frozenset[int]) -> Callable[[], None]:
    def set_affinity() -> None:
        os.sched_setaffinity(0, cpus)

    return set_affinity


# ---------------------------------------------------------------- CPU pinning


def cpu_list(cpus: Collection[int]) -> str:
    """{0, 1, 3} -> "0,1,3"."""
    return ",".join(str(c) for c in sorted(cpus))


@dataclass(frozen=True)
class Pinning:
    """Which CPUs each role runs on; all None when nothing is pinned.

    load: this harness (the WebSocket client runs in it), wrk, curl, and the upstream (nginx + echo);
    proxy: the proxy under test when it is one process (nginx with worker_processes 1, gateway ×1);
    spread: a gateway with several workers ("N workers on N cores").
    """

    load: frozenset[int] | None = None
    proxy: frozenset[int] | None = None
    spread: frozenset[int] | None = None
    reason: str = ""  # why nothing is pinned

    @property
    def pinned(self) -> bool:
        return self.proxy is not None

    def short(self) -> str:
        if self.load is None or self.proxy is None or self.spread is None:
            return f"not pinned ({self.reason})"
        return (
            f"load + upstream on CPU {cpu_list(self.load)}, proxy on CPU {cpu_list(self.proxy)}, "
            f"gateway ×N on CPUs {cpu_list(self.spread)}"
        )

    def describe(self) -> str:
        if self.load is None or self.proxy is None or self.spread is None:
            return f"not pinned ({self.reason})"
        return (
            f"load generators (wrk, curl, the WebSocket client in the harness) and the upstream "
            f"(nginx + echo) on CPU {cpu_list(self.load)}; the proxy under test (nginx, nginx-256k, "
            f"gateway with 1 worker) on CPU {cpu_list(self.proxy)}; gateway with N>1 workers on "
            f"CPUs {cpu_list(self.spread)}"
        )


def plan_pinning(enabled: bool) -> Pinning:
    """Load + upstream on the first allowed CPU, the proxy on the second, spread = every allowed CPU."""
    if not enabled:
        return Pinning(reason="--no-pin")
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return Pinning(reason="no sched_setaffinity on this platform")
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except OSError as exc:
        return Pinning(reason=f"sched_getaffinity failed: {exc}")
    if (os.cpu_count() or 1) < 2 or len(allowed) < 2:
        return Pinning(reason=f"{len(allowed)} CPU allowed; pinning needs 2")
    return Pinning(load=frozenset(allowed[:1]), proxy=frozenset(allowed[1:2]), spread=frozenset(allowed))


def pin_self(cpus: Collection[int]) -> None:
    """Pin this process (before it starts any thread: threads and children inherit it)."""
    os.sched_setaffinity(0, set(cpus))


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET without any proxy from the environment; returns (status, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_http_ok(url: str, proc: Managed, timeout: float) -> None:
    """Poll `url` until it answers 200; fail fast if `proc` dies. Bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise HarnessError(
                f"{proc.name} exited with {proc.proc.returncode} before it answered {url}\n"
                f"--- {proc.log_path} ---\n{proc.log_tail()}"
            )
        try:
            status, _ = http_get(url, timeout=1.0)
            if status == 200:
                return
            last_error = f"HTTP {status}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise HarnessError(
        f"{proc.name} did not answer 200 on {url} within {timeout:.0f} s ({last_error})\n"
        f"--- {proc.log_path} ---\n{proc.log_tail()}"
    )


# ---------------------------------------------------------------- RSS


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (via /proc/<pid>/task/<tid>/children), bounded in size."""
    seen: list[int] = []
    todo = [root]
    while todo and len(seen) < 256:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
    return seen


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of VmRSS of `pids`; processes that vanished meanwhile count as 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def tree_rss(root: int) -> int:
    return rss_bytes(process_tree(root))


class RssSampler:
    """Samples a process tree's RSS every `interval` s in a thread and keeps the peak."""

    def __init__(self, measure: Callable[[], int], interval: float = 0.05) -> None:
        self._measure = measure
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._measure())
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
