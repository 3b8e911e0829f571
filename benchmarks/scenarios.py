"""What is measured: scenarios (functions returning numbers), metrics (table rows) and targets.

To add a row: write a scenario `def my_scenario(via: Via, cfg: Config) -> Measurements`, append
it to SCENARIOS (return {} for paths where it does not apply, e.g. an endpoint only the gateway
serves), and add a Metric for each key it returns to METRICS (and a Target if the issue sets one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from clients import run_wrk, stream_parallel, ws_echo
from nginx_conf import ADMIN_TOKEN, BIG_PATH, BIG_QUARTER_PATH, JSON_ROUTES, SMALL_PATH, WS_PATH
from procs import HarnessError, RssSampler, http_get, tree_rss

MIB = 1024 * 1024

Measurements = dict[str, float]
Results = dict[str, Measurements]  # via key -> metric key -> value (one repetition, or medians)


@dataclass(frozen=True)
class Config:
    """Sizes and durations; `quick()` is the < 60 s smoke run."""

    quick: bool = False
    load_threads: int = 2
    load_connections: int = 64
    load_seconds: float = 10.0
    warmup_seconds: float = 1.0
    unloaded_seconds: float = 5.0
    streams: int = 16
    stream_size: int = 256 * MIB
    stream_timeout: float = 180.0
    ws_round_trips: int = 2000
    ws_message_bytes: int = 100
    rss_settle_seconds: float = 1.0

    @property
    def quarter_stream_size(self) -> int:
        """The second, shorter streaming round (is RSS growth flat in file size?)."""
        return self.stream_size // 4

    @classmethod
    def for_mode(cls, quick: bool) -> Config:
        if not quick:
            return cls()
        return cls(
            quick=True,
            load_seconds=2.0,
            unloaded_seconds=1.0,
            stream_size=32 * MIB,
            stream_timeout=60.0,
            ws_round_trips=300,
            rss_settle_seconds=0.3,
        )


@dataclass(frozen=True)
class Via:
    """One way of reaching the upstream: direct, through nginx, through the gateway."""

    key: str  # results key: "direct", "nginx", "nginx256", "gateway", "gateway2"
    label: str  # column header
    base_url: str  # http://127.0.0.1:<port>
    rss_root: int | None = None  # pid whose process tree is the proxy (None: nothing in between)
    processes: int = 1  # proxy processes serving (for "per process" comparisons)

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http") + WS_PATH


Scenario = Callable[[Via, Config], Measurements]


# ---------------------------------------------------------------- scenarios


def check_responses(via: Via, cfg: Config) -> Measurements:
    """Before timing anything: the small document must come back intact through this path."""
    status, body = http_get(via.base_url + SMALL_PATH, timeout=5)
    if status != 200 or body != JSON_ROUTES[SMALL_PATH]:
        raise HarnessError(f"{via.label}: GET {SMALL_PATH} -> {status} {body[:80]!r}")
    return {}


def small_json(via: Via, cfg: Config) -> Measurements:
    """Throughput and latency of a ~200-byte JSON GET at 64 keep-alive connections."""
    url = via.base_url + SMALL_PATH
    # Warm-up: connection pools, caches, lazy imports in the proxy.
    run_wrk(url, threads=cfg.load_threads, connections=cfg.load_connections, seconds=cfg.warmup_seconds)
    res = run_wrk(url, threads=cfg.load_threads, connections=cfg.load_connections, seconds=cfg.load_seconds)
    return {
        "json_rps": res.rps,
        "json_p50_us": res.p50_us,
        "json_p99_us": res.p99_us,
        "json_requests": res.requests,
        "json_errors": res.errors,
        "json_non2xx": res.non_2xx,
    }


TORRENT_TEST1 = "/torrent/Test1"


def torrent_test1(via: Via, cfg: Config) -> Measurements:
    """The gateway's own admin-only endpoint, with the elevation cache on (the default 10 s TTL).

    Only the gateway serves it; its comparison is a proxied small request (json_rps) in the same run.
    """
    if not via.key.startswith("gateway"):
        return {}
    url = via.base_url + TORRENT_TEST1
    headers = {"Authorization": f'MediaBrowser Client="bench", Token="{ADMIN_TOKEN}"'}
    status, body = http_get(url, timeout=5, headers=headers)
    if status != 200 or body != b'"test 1 success"':
        raise HarnessError(f"{via.label}: GET {TORRENT_TEST1} -> {status} {body[:80]!r}")
    run_wrk(
        url,
        threads=cfg.load_threads,
        connections=cfg.load_connections,
        seconds=cfg.warmup_seconds,
        headers=headers,
    )
    res = run_wrk(
        url,
        threads=cfg.load_threads,
        connections=cfg.load_connections,
        seconds=cfg.load_seconds,
        headers=headers,
    )
    return {
        "test1_rps": res.rps,
        "test1_p50_us": res.p50_us,
        "test1_p99_us": res.p99_us,
        "test1_non2xx": res.non_2xx,
    }


def unloaded_latency(via: Via, cfg: Config) -> Measurements:
    """One connection, one request at a time: what a single client waits for."""
    res = run_wrk(via.base_url + SMALL_PATH, threads=1, connections=1, seconds=cfg.unloaded_seconds)
    return {
        "idle_p50_us": res.p50_us,
        "idle_p99_us": res.p99_us,
        "idle_errors": res.errors,
        "idle_non2xx": res.non_2xx,
    }


def websocket_echo(via: Via, cfg: Config) -> Measurements:
    res = ws_echo(via.ws_url, count=cfg.ws_round_trips, size=cfg.ws_message_bytes)
    return {"ws_p50_us": res.p50_us, "ws_p99_us": res.p99_us}


def streaming(via: Via, cfg: Config) -> Measurements:
    """16 parallel downloads of the big file, with the proxy's RSS sampled every 50 ms.

    Idle RSS is taken right before the streams start (after the other scenarios warmed the
    proxy up), so growth is what streaming itself costs. Through a proxy, a first round of 16
    quarter-size files comes before the full-size one, both measured from the same idle RSS: if
    memory grows with the file size, the full round grows more than the quarter round.
    """
    out: Measurements = {}
    root = via.rss_root
    if root is not None:
        time.sleep(cfg.rss_settle_seconds)
        out["rss_idle_mib"] = tree_rss(root) / MIB
        with RssSampler(lambda: tree_rss(root)) as quarter_sampler:
            quarter = stream_parallel(
                via.base_url + BIG_QUARTER_PATH,
                streams=cfg.streams,
                size=cfg.quarter_stream_size,
                timeout=cfg.stream_timeout,
            )
        out.update(
            {
                "stream_q_mb_s": quarter.mb_per_s,
                "stream_q_failed": quarter.failed,
                "rss_q_peak_mib": quarter_sampler.peak / MIB,
                "rss_q_growth_mib": max(0.0, quarter_sampler.peak / MIB - out["rss_idle_mib"]),
            }
        )
    sampler = RssSampler(lambda: tree_rss(root) if root is not None else 0)
    with sampler:
        res = stream_parallel(
            via.base_url + BIG_PATH, streams=cfg.streams, size=cfg.stream_size, timeout=cfg.stream_timeout
        )
    out.update(
        {
            "stream_mb_s": res.mb_per_s,
            "stream_seconds": res.seconds,
            "stream_bytes": res.bytes_total,
            "stream_bytes_expected": res.bytes_expected,
            "stream_failed": res.failed,
        }
    )
    if root is not None:
        out["rss_peak_mib"] = sampler.peak / MIB
        out["rss_growth_mib"] = max(0.0, out["rss_peak_mib"] - out["rss_idle_mib"])
        out["rss_samples"] = sampler.samples
        out["rss_growth_excess_mib"] = out["rss_growth_mib"] - out["rss_q_growth_mib"]
    return out


# Run in this order for each path. Streaming last: it is the heaviest and measures RSS after
# the others have warmed the proxy up.
SCENARIOS: list[Scenario] = [
    check_responses,
    small_json,
    torrent_test1,
    unloaded_latency,
    websocket_echo,
    streaming,
]


# ---------------------------------------------------------------- derived values


def add_derived(results: Results) -> None:
    """Values that need another path's results: latency added over direct."""
    direct = results.get("direct", {}).get("idle_p50_us")
    if direct is None:
        return
    for values in results.values():
        if "idle_p50_us" in values:
            values["added_p50_us"] = values["idle_p50_us"] - direct


# ---------------------------------------------------------------- table rows


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    fmt: str = "{:,.0f}"
    ratio: bool = True  # print the gateway/nginx, gateway/nginx-256k and gateway/direct ratios


METRICS: list[Metric] = [
    Metric("json_rps", "small JSON req/s (64 conn)"),
    Metric("json_p50_us", "small JSON p50 µs (64 conn)"),
    Metric("json_p99_us", "small JSON p99 µs (64 conn)"),
    Metric("test1_rps", "/torrent/Test1 req/s (admin, cached)", ratio=False),
    Metric("test1_p50_us", "/torrent/Test1 p50 µs", ratio=False),
    Metric("idle_p50_us", "unloaded p50 µs (1 conn)"),
    Metric("added_p50_us", "unloaded p50 added µs", "{:+,.0f}", ratio=False),
    Metric("stream_mb_s", "16 streams aggregate MB/s"),
    Metric("rss_idle_mib", "proxy RSS idle MiB", "{:,.1f}"),
    Metric("rss_peak_mib", "proxy RSS peak streaming MiB", "{:,.1f}"),
    Metric("rss_growth_mib", "proxy RSS growth MiB", "{:,.1f}", ratio=False),
    Metric("rss_q_growth_mib", "proxy RSS growth MiB (1/4 size files)", "{:,.1f}", ratio=False),
    Metric("ws_p50_us", "WebSocket echo RT p50 µs"),
    Metric("ws_p99_us", "WebSocket echo RT p99 µs"),
]


# ---------------------------------------------------------------- targets (reported, never asserted)


@dataclass(frozen=True)
class Target:
    label: str
    value: Callable[[Results], float | None]
    op: str  # ">=" or "<="
    limit: float
    fmt: str

    def met(self, value: float) -> bool:
        return value >= self.limit if self.op == ">=" else value <= self.limit


def _get(results: Results, via: str, key: str) -> float | None:
    return results.get(via, {}).get(key)


def _ratio(results: Results, num: str, den: str, key: str) -> float | None:
    a, b = _get(results, num, key), _get(results, den, key)
    return None if a is None or not b else a / b


def _ratio_within(results: Results, via: str, num: str, den: str) -> float | None:
    a, b = _get(results, via, num), _get(results, via, den)
    return None if a is None or not b else a / b


# The targets, each a ratio (or a figure) from one run with every path measured side by
# side; evaluated on the medians table, and on each repetition for the per-rep values.
TARGETS: list[Target] = [
    Target(
        "16 streams aggregate, gateway/nginx-256k",
        lambda r: _ratio(r, "gateway", "nginx256", "stream_mb_s"),
        ">=",
        1.0,
        "{:.2f}×",
    ),
    Target(
        "small-JSON req/s (64 conn), gateway/nginx",
        lambda r: _ratio(r, "gateway", "nginx", "json_rps"),
        ">=",
        0.30,
        "{:.2f}×",
    ),
    Target(
        "unloaded p50 added over direct (gateway)",
        lambda r: _get(r, "gateway", "added_p50_us"),
        "<=",
        150.0,
        "{:+.0f} µs",
    ),
    Target(
        "WebSocket echo RTT p50, gateway/nginx",
        lambda r: _ratio(r, "gateway", "nginx", "ws_p50_us"),
        "<=",
        1.2,
        "{:.2f}×",
    ),
    Target(
        "gateway RSS growth while streaming",
        lambda r: _get(r, "gateway", "rss_growth_mib"),
        "<=",
        15.0,
        "{:.1f} MiB",
    ),
    Target(
        "  flat in file size: growth(full) - growth(1/4 size)",
        lambda r: _get(r, "gateway", "rss_growth_excess_mib"),
        "<=",
        5.0,
        "{:+.1f} MiB",
    ),
    Target(
        "small-JSON req/s, gateway ×2 / gateway (2 workers scale)",
        lambda r: _ratio(r, "gateway2", "gateway", "json_rps"),
        ">=",
        1.7,
        "{:.2f}×",
    ),
    Target(
        "/torrent/Test1 req/s / proxied small-JSON req/s (gateway)",
        lambda r: _ratio_within(r, "gateway", "test1_rps", "json_rps"),
        ">=",
        0.9,
        "{:.2f}×",
    ),
]
