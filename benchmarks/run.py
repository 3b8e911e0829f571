"""Benchmark: the same upstream reached directly, through nginx (as Jellyfin documents it) and
through the gateway, measured in one run on loopback, printed as one table.

    .venv/bin/python benchmarks/run.py [--quick] [--json PATH] [--no-gateway]

Everything listens on 127.0.0.1 only; every process started here is stopped on exit, error or
Ctrl-C, and the temp dir (nginx configs, the 256 MiB file, logs) is removed. Exits non-zero only
when something could not be measured, never because a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType

import aiohttp
import report
from clients import require_tools
from nginx_conf import JSON_ROUTES, SMALL_PATH, json_file_name, proxy_conf, upstream_conf
from procs import HarnessError, Managed, clean_env, free_port, wait_http_ok
from scenarios import MIB, SCENARIOS, Config, Results, Via, add_derived

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_JSON = HERE / "results.json"  # git-ignored (benchmarks/results*.json)

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (< 60 s): 2 s loads, 16 x 32 MiB streams"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"write raw results here (default: {DEFAULT_JSON.relative_to(ROOT)})",
    )
    parser.add_argument("--no-gateway", action="store_true", help="measure only direct and nginx")
    parser.add_argument(
        "--workers",
        default="1,2",
        metavar="N[,N]",
        help="gateway worker counts to measure (default 1,2; 1 is the "
        "'gateway' column used for ratios and targets)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (repeatable)",
    )
    parser.add_argument(
        "--gateway-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the gateway to answer (default 30)",
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------- upstream


def write_upstream_files(www: Path, cfg: Config) -> None:
    www.mkdir()
    for path, body in JSON_ROUTES.items():
        (www / json_file_name(path)).write_bytes(body)
    # The big file: one random MiB repeated (nothing in the path compresses, so repetition is
    # as good as fresh randomness and much faster to write). Stays in the page cache.
    block = os.urandom(MIB)
    with open(www / "big.bin", "wb") as fh:
        for _ in range(cfg.stream_size // MIB):
            fh.write(block)


def start_nginx(name: str, conf: str, tmp: Path) -> Managed:
    conf_path = tmp / f"{name}.conf"
    conf_path.write_text(conf)
    argv = [
        "nginx",
        "-p",
        f"{tmp}/",
        "-e",
        str(tmp / f"{name}.startup.log"),
        "-c",
        str(conf_path),
        "-g",
        "daemon off;",
    ]
    return Managed(f"nginx-{name}", argv, log_dir=tmp)


@contextlib.contextmanager
def managed(proc: Managed) -> Iterator[Managed]:
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def upstream(tmp: Path, cfg: Config) -> Iterator[str]:
    """Static nginx + WebSocket echo behind one port; yields its base URL."""
    log(f"writing upstream files ({cfg.stream_size // MIB} MiB stream file)")
    write_upstream_files(tmp / "www", cfg)
    echo_port, port = free_port(), free_port()
    echo_argv = [sys.executable, str(HERE / "echo_server.py"), "--port", str(echo_port)]
    nginx_conf_text = upstream_conf(tmp, port, tmp / "www", echo_port)
    with (
        managed(Managed("ws-echo", echo_argv, log_dir=tmp)) as echo,
        managed(start_nginx("upstream", nginx_conf_text, tmp)) as nginx,
    ):
        wait_http_ok(f"http://127.0.0.1:{echo_port}/", echo, timeout=20)
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + SMALL_PATH, nginx, timeout=20)
        log(f"upstream ready at {base} (ws echo on :{echo_port})")
        yield base


# ---------------------------------------------------------------- the paths measured

ViaStarter = Callable[[], AbstractContextManager[Via]]


@contextlib.contextmanager
def direct(upstream_url: str) -> Iterator[Via]:
    yield Via("direct", "direct", upstream_url)


@contextlib.contextmanager
def nginx_proxy(tmp: Path, upstream_url: str) -> Iterator[Via]:
    port = free_port()
    upstream_port = int(upstream_url.rsplit(":", 1)[1])
    with managed(start_nginx("proxy", proxy_conf(tmp, port, upstream_port), tmp)) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + SMALL_PATH, proc, timeout=20)
        yield Via("nginx", "nginx", base, rss_root=proc.pid, processes=os.cpu_count() or 1)


@contextlib.contextmanager
def gateway(
    tmp: Path, upstream_url: str, workers: int, extra_env: dict[str, str], timeout: float
) -> Iterator[Via]:
    port, dead_port = free_port(), free_port()
    env = clean_env(
        {
            "JELLYFIN_URL": upstream_url,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_WORKERS": str(workers),
            "LOG_LEVEL": "WARNING",
            "ACCESS_LOG": "false",
            # Keep every other upstream the gateway knows on loopback too: a port nothing listens on
            # (the defaults name hosts off this machine; nothing here should ever leave 127.0.0.1).
            "QBITTORRENT_URL": f"http://127.0.0.1:{dead_port}",
            "APIBAY_URL": f"http://127.0.0.1:{dead_port}",
            **extra_env,
        }
    )
    argv = [sys.executable, "-m", "gateway"]
    with managed(Managed(f"gateway-{workers}w", argv, log_dir=tmp, cwd=ROOT, env=env)) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + SMALL_PATH, proc, timeout=timeout)
        key, label = gateway_key(workers)
        yield Via(key, label, base, rss_root=proc.pid, processes=workers)


def gateway_key(workers: int) -> tuple[str, str]:
    return ("gateway", "gateway") if workers == 1 else (f"gateway{workers}", f"gateway ×{workers}")


# ---------------------------------------------------------------- running


def measure(starter: ViaStarter, key: str, cfg: Config, results: Results, errors: list[str]) -> None:
    """Start one path, run every scenario against it, stop it. Failures are recorded, not raised,
    so the other paths are still measured and the table still printed."""
    values = results.setdefault(key, {})
    try:
        with starter() as via:
            values["processes"] = via.processes
            for scenario in SCENARIOS:
                name = scenario.__name__
                log(f"[{via.label}] {name}")
                try:
                    values.update(scenario(via, cfg))
                except (
                    HarnessError,
                    OSError,
                    aiohttp.ClientError,
                    TimeoutError,
                    subprocess.SubprocessError,
                ) as exc:
                    errors.append(f"{via.label}: {name} failed: {exc}")
                    log(f"[{via.label}] {name} FAILED: {exc}")
                    if name == "check_responses":
                        break  # nothing else is meaningful on a path that answers wrongly
    except HarnessError as exc:
        errors.append(f"{key}: could not start: {exc}")
        log(f"[{key}] could not start: {exc}")


def warnings_for(results: Results) -> list[str]:
    """Measurements that ran but are suspect (errors under load, short streams)."""
    notes = []
    for key, values in results.items():
        for prefix, what in (("json", "small-JSON load"), ("idle", "unloaded run")):
            bad = values.get(f"{prefix}_errors", 0) + values.get(f"{prefix}_non2xx", 0)
            if bad:
                notes.append(f"{key}: {what} had {bad:.0f} socket errors / non-2xx responses")
        if values.get("stream_failed"):
            notes.append(
                f"{key}: {values['stream_failed']:.0f} streams ended short or failed "
                f"({values['stream_bytes']:.0f} of {values['stream_bytes_expected']:.0f} bytes)"
            )
    return notes


def tool_versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return "?"
        text = (proc.stdout or proc.stderr).strip()  # nginx -v prints on stderr
        return text.splitlines()[0] if proc.returncode == 0 and text else "?"

    return {
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "curl": first_line(["curl", "--version"]),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "commit": first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


def check_example_nginx_conf(errors: list[str], notes: list[str]) -> None:
    """`nginx -t` on the top-level example nginx.conf (benchmarks/check_nginx_conf.sh)."""
    script = HERE / "check_nginx_conf.sh"
    try:
        proc = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=60, check=False, env=clean_env()
        )
    except (OSError, subprocess.SubprocessError) as exc:
        errors.append(f"example nginx.conf: could not run {script.name}: {exc}")
        return
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0:
        notes.append("example nginx.conf: nginx -t accepts it")
    elif proc.returncode == 2:
        notes.append(f"example nginx.conf not checked: {output}")
    else:
        errors.append(f"example nginx.conf: {output}")


LEGEND = """\
legend:
  direct   the upstream itself: nginx serving static files (sendfile) + an aiohttp WebSocket echo
           behind /socket, one port; stands in for Jellyfin. Its streaming figure is the ceiling
           of the client (16 curl processes) on this machine.
  nginx    nginx-light as Jellyfin's docs configure it: proxy_buffering off, documented headers,
           no upstream keep-alive (the docs have none: one HTTP/1.0 connection per request),
           worker_processes auto, access_log off, plain HTTP on loopback.
  gateway  python -m gateway, GATEWAY_WORKERS=1 (ratios and targets use this column), access log off.
  RSS      sum of VmRSS of the proxy's process tree (nginx master + workers; gateway parent +
           workers): idle = just before streaming, after the other scenarios warmed it up;
           peak = sampled every 50 ms during streaming; growth = peak - idle."""


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP: unwind like Ctrl-C so every `finally` stops its processes.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.for_mode(args.quick)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    try:
        require_tools(["nginx", "wrk", "curl"])
        worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
        extra_env = dict(kv.split("=", 1) for kv in args.gateway_env)
    except (HarnessError, ValueError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    gateway_present = (ROOT / "gateway" / "__main__.py").is_file()
    run_gateway = gateway_present and not args.no_gateway
    notes: list[str] = []
    if not run_gateway:
        notes.append(
            "gateway not measured: "
            + ("--no-gateway given" if args.no_gateway else "gateway/__main__.py does not exist yet")
        )

    results: Results = {}
    errors: list[str] = []
    check_example_nginx_conf(errors, notes)
    columns: list[tuple[str, str]] = [("direct", "direct"), ("nginx", "nginx")]
    with tempfile.TemporaryDirectory(prefix="jtg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx workers run as 'nobody' when started as root: must read www/
        try:
            with upstream(tmp, cfg) as up:
                plan: list[tuple[str, ViaStarter]] = [
                    ("direct", lambda: direct(up)),
                    ("nginx", lambda: nginx_proxy(tmp, up)),
                ]
                if run_gateway:
                    for n in worker_counts:
                        key, label = gateway_key(n)
                        columns.append((key, label))
                        plan.append(
                            (key, functools.partial(gateway, tmp, up, n, extra_env, args.gateway_timeout))
                        )
                for key, starter in plan:
                    measure(starter, key, cfg, results, errors)
        except HarnessError as exc:
            print(f"bench: harness failure: {exc}", file=sys.stderr)
            return 1

    add_derived(results)
    notes += warnings_for(results)
    mode = "quick smoke run" if cfg.quick else "full run"
    print()
    print(
        f"jellyfin-torrent-gateway benchmark ({mode}, loopback, {os.cpu_count()} CPUs; "
        f"{cfg.streams} x {cfg.stream_size // MIB} MiB streams; "
        f"gateway = 1 worker, nginx = worker_processes auto)"
    )
    print(report.table(results, columns))
    print()
    print(LEGEND)
    print()
    targets_text, target_records = report.targets(results)
    print(targets_text)
    for line in notes + errors:
        print(f"note: {line}")

    payload = {
        "mode": mode,
        "config": {k: v for k, v in vars(cfg).items()},
        "versions": tool_versions(),
        "results": results,
        "targets": target_records,
        "notes": notes,
        "errors": errors,
        "seconds": round(time.monotonic() - _T0, 1),
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"raw results: {args.json} ({payload['seconds']} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; processes stopped, temp dir removed", file=sys.stderr)
        sys.exit(130)
