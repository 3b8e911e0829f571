"""Benchmark: the same upstream reached directly, through nginx (as Jellyfin documents it, and
with 256 KiB buffers) and through the gateway, measured side by side in one run on loopback, in
interleaved repetitions, printed as one table of medians.

    .venv/bin/python benchmarks/run.py [--quick] [--reps N] [--no-pin] [--json PATH]
        [--results-md PATH] [--no-gateway]

On 2+ CPUs the load generators and the upstream run on one CPU and the proxy under test on
another. Everything listens on 127.0.0.1 only; every process started here is stopped on exit,
error or Ctrl-C, and the temp dir (nginx configs, the stream files, logs) is removed. Exits
non-zero only when something could not be measured, never because a target is missed.
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
import textwrap
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from types import FrameType

import aiohttp
import report
from clients import require_tools
from nginx_conf import (
    BIG_FILE,
    BIG_QUARTER_FILE,
    JSON_ROUTES,
    SMALL_PATH,
    json_file_name,
    proxy_conf,
    upstream_conf,
)
from procs import (
    HarnessError,
    Managed,
    Pinning,
    clean_env,
    cpu_list,
    free_port,
    pin_self,
    plan_pinning,
    wait_http_ok,
)
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
        "--quick",
        action="store_true",
        help="smoke run (under a minute): 1 repetition unless --reps, 2 s loads, 16 x 32 MiB streams",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        metavar="N",
        help="interleaved repetitions; the table shows medians (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin load generators + upstream and the proxy under test to separate CPUs",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"write raw results here (default: {DEFAULT_JSON.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--results-md",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the machine, the medians table and the targets as markdown (benchmarks/RESULTS.md)",
    )
    parser.add_argument("--no-gateway", action="store_true", help="measure only direct, nginx and nginx-256k")
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
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


# ---------------------------------------------------------------- upstream


def write_upstream_files(www: Path, cfg: Config) -> None:
    www.mkdir()
    for path, body in JSON_ROUTES.items():
        (www / json_file_name(path)).write_bytes(body)
    # The big file: one random MiB repeated (nothing in the path compresses, so repetition is
    # as good as fresh randomness and much faster to write). Stays in the page cache.
    block = os.urandom(MIB)
    for name, size in ((BIG_FILE, cfg.stream_size), (BIG_QUARTER_FILE, cfg.quarter_stream_size)):
        with open(www / name, "wb") as fh:
            for _ in range(size // MIB):
                fh.write(block)
            fh.write(block[: size % MIB])


def start_nginx(name: str, conf: str, tmp: Path, cpus: Collection[int] | None = None) -> Managed:
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
    return Managed(f"nginx-{name}", argv, log_dir=tmp, cpus=cpus)


@contextlib.contextmanager
def managed(proc: Managed) -> Iterator[Managed]:
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def upstream(tmp: Path, cfg: Config, cpus: Collection[int] | None) -> Iterator[str]:
    """Static nginx + WebSocket echo behind one port; yields its base URL."""
    log(f"writing upstream files ({cfg.stream_size // MIB} + {cfg.quarter_stream_size // MIB} MiB streams)")
    write_upstream_files(tmp / "www", cfg)
    echo_port, port = free_port(), free_port()
    echo_argv = [sys.executable, str(HERE / "echo_server.py"), "--port", str(echo_port)]
    nginx_conf_text = upstream_conf(tmp, port, tmp / "www", echo_port)
    with (
        managed(Managed("ws-echo", echo_argv, log_dir=tmp, cpus=cpus)) as echo,
        managed(start_nginx("upstream", nginx_conf_text, tmp, cpus)) as nginx,
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
def nginx_proxy(
    tmp: Path, upstream_url: str, *, buffers_256k: bool, cpus: Collection[int] | None
) -> Iterator[Via]:
    """The Jellyfin-docs nginx proxy (`nginx`), or the same with 256 KiB buffers (`nginx-256k`).

    Pinned to one CPU it gets `worker_processes 1` (auto would start a worker per CPU online).
    """
    port = free_port()
    upstream_port = int(upstream_url.rsplit(":", 1)[1])
    processes = len(cpus) if cpus is not None else os.cpu_count() or 1
    worker_processes = "1" if processes == 1 else "auto"
    key, label, name = ("nginx256", "nginx-256k", "proxy256") if buffers_256k else ("nginx", "nginx", "proxy")
    conf = proxy_conf(
        tmp, port, upstream_port, name=name, buffers_256k=buffers_256k, worker_processes=worker_processes
    )
    with managed(start_nginx(name, conf, tmp, cpus)) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + SMALL_PATH, proc, timeout=20)
        yield Via(key, label, base, rss_root=proc.pid, processes=processes)


@contextlib.contextmanager
def gateway(
    tmp: Path,
    upstream_url: str,
    workers: int,
    extra_env: dict[str, str],
    timeout: float,
    cpus: Collection[int] | None,
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
    proc_name = f"gateway-{workers}w"
    with managed(Managed(proc_name, argv, log_dir=tmp, cwd=ROOT, env=env, cpus=cpus)) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + SMALL_PATH, proc, timeout=timeout)
        key, label = gateway_key(workers)
        yield Via(key, label, base, rss_root=proc.pid, processes=workers)


def gateway_key(workers: int) -> tuple[str, str]:
    return ("gateway", "gateway") if workers == 1 else (f"gateway{workers}", f"gateway ×{workers}")


# ---------------------------------------------------------------- running


def measure(
    starter: ViaStarter, key: str, cfg: Config, results: Results, errors: list[str], rep: str
) -> None:
    """Start one path, run every scenario against it, stop it. Failures are recorded, not raised,
    so the other paths are still measured and the table still printed. `rep` prefixes messages."""
    values = results.setdefault(key, {})
    try:
        with starter() as via:
            values["processes"] = via.processes
            for scenario in SCENARIOS:
                name = scenario.__name__
                log(f"{rep}[{via.label}] {name}")
                try:
                    values.update(scenario(via, cfg))
                except (
                    HarnessError,
                    OSError,
                    aiohttp.ClientError,
                    TimeoutError,
                    subprocess.SubprocessError,
                ) as exc:
                    errors.append(f"{rep}{via.label}: {name} failed: {exc}")
                    log(f"{rep}[{via.label}] {name} FAILED: {exc}")
                    if name == "check_responses":
                        break  # nothing else is meaningful on a path that answers wrongly
    except HarnessError as exc:
        errors.append(f"{rep}{key}: could not start: {exc}")
        log(f"{rep}[{key}] could not start: {exc}")


def warnings_for(results: Results, rep: str) -> list[str]:
    """Measurements that ran but are suspect (errors under load, short streams)."""
    notes = []
    for key, values in results.items():
        for prefix, what in (("json", "small-JSON load"), ("idle", "unloaded run")):
            bad = values.get(f"{prefix}_errors", 0) + values.get(f"{prefix}_non2xx", 0)
            if bad:
                notes.append(f"{rep}{key}: {what} had {bad:.0f} socket errors / non-2xx responses")
        if values.get("stream_failed"):
            notes.append(
                f"{rep}{key}: {values['stream_failed']:.0f} streams ended short or failed "
                f"({values['stream_bytes']:.0f} of {values['stream_bytes_expected']:.0f} bytes)"
            )
        if values.get("stream_q_failed"):
            notes.append(f"{rep}{key}: {values['stream_q_failed']:.0f} quarter-size streams ended short")
    return notes


def _first_line(argv: list[str], *, any_status: bool = False) -> str:
    """First line of a command's output ("?" if it fails; `any_status`: `wrk -v` exits 1)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False, env=clean_env())
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (proc.stdout or proc.stderr).strip()  # nginx -v prints on stderr
    return text.splitlines()[0] if (proc.returncode == 0 or any_status) and text else "?"


def _proc_field(path: str, name: str) -> str | None:
    """The value of the first `name: value` (or `name<TAB>: value`) line of a /proc file."""
    try:
        with open(path) as fh:
            for line in fh:
                field, sep, value = line.partition(":")
                if sep and field.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _commit() -> str:
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if commit == "?":
        return commit
    # Read-only: --no-optional-locks keeps `status` from refreshing (writing) the index.
    status = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=clean_env(),
    )
    return commit + (" with uncommitted changes" if status.returncode == 0 and status.stdout.strip() else "")


def machine_info() -> dict[str, str]:
    """What the numbers were measured on (printed, in the JSON and in RESULTS.md)."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "?"
    flags = (_proc_field("/proc/cpuinfo", "flags") or "").split()
    if "hypervisor" in flags:
        cpu += " (virtual machine: hypervisor flag set)"
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem_kib = (_proc_field("/proc/meminfo", "MemTotal") or "0 kB").split()[0]
    os_name = "?"
    with contextlib.suppress(OSError):
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", "?")
    curl = _first_line(["curl", "--version"]).split()
    return {
        "cpu": cpu,
        "cpus": f"{os.cpu_count()}" + ("" if allowed == os.cpu_count() else f" ({allowed} usable here)"),
        "ram": f"{int(mem_kib) / 1024 / 1024:.1f} GiB",
        "os": os_name,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "nginx": _first_line(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": _first_line(["wrk", "-v"], any_status=True).split(" [")[0],
        "curl": " ".join(curl[:2]) if curl else "?",
        "commit": _commit(),
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


def pinning_text(pin: Pinning) -> str:
    if pin.pinned:
        return f"{pin.describe()}. nginx and nginx-256k, pinned to one CPU, run worker_processes 1."
    return (
        f"{pin.describe()}: every process may run on every CPU; the nginx proxies run worker_processes auto."
    )


def legend(pin: Pinning, reps: int) -> str:
    where = textwrap.fill(
        pinning_text(pin), width=104, initial_indent="  pinning     ", subsequent_indent=" " * 14
    )
    how_many = f"{reps} interleaved repetitions" if reps > 1 else "1 repetition"
    return f"""\
legend:
  direct      the upstream itself: nginx serving static files (sendfile) + an aiohttp WebSocket echo
              behind /socket, one port; stands in for Jellyfin. Its streaming figure is the ceiling
              of the client (16 curl processes) on this machine.
  nginx       nginx-light as Jellyfin's docs configure it: proxy_buffering off, documented headers,
              no upstream keep-alive (the docs have none: one HTTP/1.0 connection per request),
              default proxy buffers (4k/8k), access_log off, plain HTTP on loopback.
  nginx-256k  the same with proxy_buffer_size 256k; proxy_buffers 4 256k;
              proxy_busy_buffers_size 256k (still proxy_buffering off).
  gateway     python -m gateway, GATEWAY_WORKERS=1 (ratios and targets use this column), access log
              off. gateway ×2: GATEWAY_WORKERS=2.
{where}
  reps        {how_many}: each runs every column in turn, each proxy started fresh (the
              upstream is started once); every figure is the median over the reps (results.json
              keeps each rep's values). "added µs" = p50 - direct's p50 of the same rep.
  RSS         sum of VmRSS of the proxy's process tree (nginx master + workers; gateway parent +
              workers): idle = just before streaming, after the other scenarios warmed it up;
              peak = sampled every 50 ms while streaming; growth = peak - idle. "1/4 size files":
              the same 16 streams of files a quarter the size, run just before the full-size ones
              and measured from the same idle RSS."""


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

    # Before any thread or child: everything started from here on inherits the load CPU unless
    # it is started with cpus= (the upstream explicitly, the proxies on theirs).
    machine = machine_info()
    pin = plan_pinning(not args.no_pin)
    if pin.load is not None:
        pin_self(pin.load)
    log(f"pinning: {pin.short()}")

    gateway_present = (ROOT / "gateway" / "__main__.py").is_file()
    run_gateway = gateway_present and not args.no_gateway
    notes: list[str] = []
    if not run_gateway:
        notes.append(
            "gateway not measured: "
            + ("--no-gateway given" if args.no_gateway else "gateway/__main__.py does not exist yet")
        )

    reps: list[Results] = []
    errors: list[str] = []
    check_example_nginx_conf(errors, notes)
    columns: list[tuple[str, str]] = [("direct", "direct"), ("nginx", "nginx"), ("nginx256", "nginx-256k")]
    with tempfile.TemporaryDirectory(prefix="jtg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx workers run as 'nobody' when started as root: must read www/
        try:
            with upstream(tmp, cfg, pin.load) as up:
                plan: list[tuple[str, ViaStarter]] = [
                    ("direct", lambda: direct(up)),
                    ("nginx", lambda: nginx_proxy(tmp, up, buffers_256k=False, cpus=pin.proxy)),
                    ("nginx256", lambda: nginx_proxy(tmp, up, buffers_256k=True, cpus=pin.proxy)),
                ]
                if run_gateway:
                    for n in worker_counts:
                        key, label = gateway_key(n)
                        columns.append((key, label))
                        cpus = pin.proxy if n == 1 else pin.spread
                        plan.append(
                            (
                                key,
                                functools.partial(gateway, tmp, up, n, extra_env, args.gateway_timeout, cpus),
                            )
                        )
                # Interleaved: every path once per repetition, in the same order, started fresh.
                for n in range(1, args.reps + 1):
                    rep_label = f"rep {n}/{args.reps} " if args.reps > 1 else ""
                    log(f"repetition {n} of {args.reps}")
                    rep_results: Results = {}
                    for key, starter in plan:
                        measure(starter, key, cfg, rep_results, errors, rep_label)
                    add_derived(rep_results)
                    notes += warnings_for(rep_results, rep_label)
                    reps.append(rep_results)
        except HarnessError as exc:
            print(f"bench: harness failure: {exc}", file=sys.stderr)
            return 1

    median_results = report.medians(reps)
    evaluated = report.evaluate_targets(median_results, reps)
    mode = "quick smoke run" if cfg.quick else "full run"
    reps_text = f"median of {args.reps} interleaved repetitions" if args.reps > 1 else "1 repetition"
    summary = (
        f"{mode}, {reps_text}, loopback, {os.cpu_count()} CPUs; "
        f"{cfg.streams} x {cfg.stream_size // MIB} MiB streams "
        f"(and {cfg.streams} x {cfg.quarter_stream_size // MIB} MiB for RSS); gateway = 1 worker"
    )
    legend_text = legend(pin, args.reps)
    print()
    print(f"jellyfin-torrent-gateway benchmark ({summary})")
    print(f"machine: {machine['cpu']}; CPUs {machine['cpus']}; RAM {machine['ram']}; {machine['kernel']}")
    print(f"pinning: {pin.short()}")
    print(report.table(median_results, columns))
    print()
    print(legend_text)
    print()
    print(report.targets_text(evaluated))
    for line in notes + errors:
        print(f"note: {line}")

    seconds = round(time.monotonic() - _T0, 1)
    payload = {
        "mode": mode,
        "repetitions": args.reps,
        "config": {k: v for k, v in vars(cfg).items()},
        "versions": machine,
        "pinning": {
            "load": cpu_list(pin.load) if pin.load is not None else None,
            "proxy": cpu_list(pin.proxy) if pin.proxy is not None else None,
            "spread": cpu_list(pin.spread) if pin.spread is not None else None,
            "description": pin.describe(),
        },
        "results": median_results,  # medians over the repetitions
        "reps": reps,  # every repetition's raw values
        "targets": [t.record() for t in evaluated],
        "notes": notes,
        "errors": errors,
        "seconds": seconds,
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"raw results: {args.json} ({seconds} s)")
    if args.results_md is not None:
        args.results_md.write_text(
            report.results_markdown(
                date=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                summary=f"{summary}; took {seconds:.0f} s",
                machine=machine,
                pinning=pinning_text(pin),
                median_results=median_results,
                columns=columns,
                evaluated=evaluated,
                legend=legend_text,
                notes=notes + errors,
            )
        )
        print(f"markdown: {args.results_md}")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; processes stopped, temp dir removed", file=sys.stderr)
        sys.exit(130)
