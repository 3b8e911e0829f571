"""Release-name parsers measured on a hand-labelled corpus, and the check that guards our wrapper.

`release_names.json` holds what a person reads in each name (not what any parser says). Each
candidate library that is installed (guessit, parse-torrent-title as `PTN`, parsett as `PTT`) and
our wrapper `gateway.releases.parse` parse the corpus; the report gives accuracy per field and time.

    python benchmarks/release_names.py            # print the table
    python benchmarks/release_names.py --write    # and write release-names.md
    python benchmarks/release_names.py --misses wrapper   # the names a parser gets wrong
    python benchmarks/release_names.py --check    # wrapper: 100 names within 50 ms, accuracy floor

The libraries are compared on title, year, seasons and episodes; the wrapper also on resolution,
source, codec and HDR (its normalised spellings). `--check` exits 1 when the wrapper is too slow
or less accurate than THRESHOLD (a parser upgrade that regresses).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import re
import statistics
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "release_names.json"
REPORT = HERE / "release-names.md"
BUDGET_MS = 50.0  # 100 names, best of RUNS, on the machine that runs the check
RUNS = 9
# The wrapper's "all four right" share must stay at or above this (measured 99.6% with parsett
# 1.8.5, minus 2 points, rounded down); tests/test_releases.py holds the wrapper to it too.
THRESHOLD = 0.97
CORE = ("title", "year", "seasons", "episodes")
EXTRAS = ("resolution", "source", "codec", "hdr")


@dataclass(frozen=True)
class Guess:
    """One parser's answer, reduced to the fields the corpus labels."""

    title: str | None
    year: int | None
    seasons: tuple[int, ...]
    episodes: tuple[int, ...]
    extras: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    label: str
    dist: str  # distribution name, for its version
    parse: Callable[[str], Guess]
    has_extras: bool = False


@dataclass
class Score:
    label: str
    version: str
    right: dict[str, int]
    total: dict[str, int]
    per_name_us: float
    hundred_ms: float
    misses: list[str]

    def share(self, key: str) -> float:
        return self.right[key] / self.total[key] if self.total[key] else 0.0


def _ints(value: Any) -> tuple[int, ...]:
    """A library's int, list of ints or None as a sorted tuple."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    out: set[int] = set()
    for item in items:
        try:
            out.add(int(item))
        except (TypeError, ValueError):
            continue
    return tuple(sorted(out))


def _year(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _title(value: Any) -> str | None:
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return str(value) if value else None


def _guessit() -> Callable[[str], Guess]:
    guessit = importlib.import_module("guessit").guessit

    def parse(name: str) -> Guess:
        r = guessit(name)
        return Guess(
            _title(r.get("title")), _year(r.get("year")), _ints(r.get("season")), _ints(r.get("episode"))
        )

    return parse


def _ptn() -> Callable[[str], Guess]:
    ptn_parse = importlib.import_module("PTN").parse

    def parse(name: str) -> Guess:
        r = ptn_parse(name)
        return Guess(
            _title(r.get("title")), _year(r.get("year")), _ints(r.get("season")), _ints(r.get("episode"))
        )

    return parse


def _ptt() -> Callable[[str], Guess]:
    parse_title = importlib.import_module("PTT").parse_title

    def parse(name: str) -> Guess:
        r = parse_title(name)
        return Guess(
            _title(r.get("title")), _year(r.get("year")), _ints(r.get("seasons")), _ints(r.get("episodes"))
        )

    return parse


def _wrapper() -> Callable[[str], Guess]:
    releases = importlib.import_module("gateway.releases")

    def parse(name: str) -> Guess:
        r = releases.parse(name)
        extras = {key: getattr(r, key) for key in EXTRAS}
        return Guess(r.title, r.year, r.seasons, r.episodes, extras)

    return parse


FACTORIES: list[tuple[str, str, Callable[[], Callable[[str], Guess]], bool]] = [
    ("guessit", "guessit", _guessit, False),
    ("PTN", "parse-torrent-title", _ptn, False),
    ("PTT", "parsett", _ptt, False),
    ("wrapper", "parsett", _wrapper, True),
]


def candidates(only: Sequence[str] = ()) -> list[Candidate]:
    """The installed ones (an import that fails just leaves that parser out)."""
    found = []
    for label, dist, factory, extras in FACTORIES:
        if only and label not in only:
            continue
        try:
            found.append(Candidate(label, dist, factory(), extras))
        except ImportError:
            continue
    return found


def norm_title(title: str | None) -> str:
    """Case, accents' composition, apostrophes and other punctuation do not make a title wrong."""
    if not title:
        return ""
    text = unicodedata.normalize("NFKC", title).casefold()
    text = re.sub(r"['’`]", "", text)
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return rows


def right_fields(row: dict[str, Any], guess: Guess) -> dict[str, bool]:
    """Which labelled fields the guess got right ("all" = the four core fields at once)."""
    got = {
        "title": norm_title(guess.title) == norm_title(row["title"]),
        "year": guess.year == row["year"],
        "seasons": list(guess.seasons) == row["seasons"],
        "episodes": list(guess.episodes) == row["episodes"],
    }
    got["all"] = all(got[key] for key in CORE)
    for key in EXTRAS:
        if key in row and key in guess.extras:
            got[key] = guess.extras[key] == row[key]
    return got


def sample_100(rows: Sequence[dict[str, Any]]) -> list[str]:
    """100 names spread evenly over the corpus (every category, not just its first section)."""
    n = len(rows)
    return [rows[i * n // 100]["name"] for i in range(min(100, n))]


def time_names(
    parse: Callable[[str], Any],
    names: Sequence[str],
    runs: int = RUNS,
    clear: Callable[[], None] | None = None,
) -> list[float]:
    """Seconds per pass over names, each pass cold (clear empties the wrapper's cache first)."""
    times = []
    for _ in range(runs):
        if clear is not None:
            clear()
        gc.disable()
        start = time.perf_counter()
        for name in names:
            parse(name)
        times.append(time.perf_counter() - start)
        gc.enable()
    return times


@contextlib.contextmanager
def _as_shipped(label: str) -> Iterator[None]:
    """The wrapper caches PTT's inspect.signature calls through a module global of PTT: time the
    libraries themselves without that."""
    module = sys.modules.get("PTT.parse")
    if label == "wrapper" or module is None:
        yield
        return
    patched = getattr(module, "inspect", inspect)
    setattr(module, "inspect", inspect)  # noqa: B010
    try:
        yield
    finally:
        setattr(module, "inspect", patched)  # noqa: B010


def score(cand: Candidate, rows: Sequence[dict[str, Any]], runs: int = RUNS) -> Score:
    with _as_shipped(cand.label):
        return _score(cand, rows, runs)


def _score(cand: Candidate, rows: Sequence[dict[str, Any]], runs: int) -> Score:
    keys = ("title", "year", "seasons", "episodes", "all", *EXTRAS)
    right = dict.fromkeys(keys, 0)
    total = dict.fromkeys(keys, 0)
    misses = []
    for row in rows:
        guess = cand.parse(row["name"])
        for key, ok in right_fields(row, guess).items():
            total[key] += 1
            right[key] += ok
        if not right_fields(row, guess)["all"]:
            misses.append(f"{row['name']!r}: got {guess!r}")
    names = [row["name"] for row in rows]
    raw, clear = _raw_parse(cand)
    per_name = statistics.median(time_names(raw, names, runs, clear)) / len(names)
    hundred = min(time_names(raw, sample_100(rows), runs, clear))
    return Score(cand.label, version(cand.dist), right, total, per_name * 1e6, hundred * 1e3, misses)


def _raw_parse(cand: Candidate) -> tuple[Callable[[str], Any], Callable[[], None] | None]:
    """What is timed: the library call itself, or the wrapper's parse (and how to empty its cache)."""
    if cand.label == "wrapper":
        releases = importlib.import_module("gateway.releases")
        return releases.parse, releases.clear_cache
    return cand.parse, None


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def table(scores: Sequence[Score]) -> str:
    head = "| parser | version | title | year | seasons | episodes | all four | µs/name | ms/100 names |"
    lines = [head, "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for s in scores:
        cells = [f"{100 * s.share(k):.1f}%" for k in ("title", "year", "seasons", "episodes", "all")]
        budget = "" if s.hundred_ms <= BUDGET_MS else " (over)"
        lines.append(
            f"| {s.label} | {s.version} | {' | '.join(cells)} | {s.per_name_us:.0f} "
            f"| {s.hundred_ms:.1f}{budget} |"
        )
    extras = [s for s in scores if any(s.total[k] for k in EXTRAS)]
    for s in extras:
        parts = [f"{k} {100 * s.share(k):.1f}% of {s.total[k]}" for k in EXTRAS]
        lines.append(f"\n{s.label}, normalised fields: {', '.join(parts)}.")
    return "\n".join(lines)


def report(scores: Sequence[Score], n: int) -> str:
    return (
        "# Release-name parsers\n\n"
        f"Written by `benchmarks/release_names.py --write` on {datetime.date.today().isoformat()}, "
        f"{machine()}.\n\n"
        f"{n} names from `release_names.json` (movies, episodes, multi-episode, season packs, "
        "specials, anime, digit titles, non-English, file names, samples, our own Jellyfin names). "
        "A title is right when it equals the label ignoring case, apostrophes and other punctuation. "
        "*all four* = title, year, seasons and episodes all right. *µs/name*: median of "
        f"{RUNS} passes over the corpus; *ms/100 names*: best of {RUNS} over 100 names spread over "
        f"the corpus, cold (no cache); the budget is {BUDGET_MS:.0f} ms. *wrapper* is "
        "`gateway.releases.parse`.\n\n"
        f"{table(scores)}\n\n"
        "The wrapper runs parsett with only the handlers of the fields it reads and those that end a "
        "title (`_KEPT` in `gateway/releases.py`), about half of them, caches the signatures PTT inspects "
        "on every match, and corrects what the corpus "
        "showed (file extensions, `sample`, Jellyfin's `[imdbid-…]`, language tags, `Season 01`). "
        "Times on a shared virtual machine vary up to 2× between runs minutes apart: compare rows "
        "of one run.\n"
    )


def check(rows: Sequence[dict[str, Any]], budget_ms: float = BUDGET_MS) -> int:
    """Exit status for `--check`: 1 if the wrapper is over budget or under THRESHOLD."""
    found = candidates(["wrapper"])
    if not found:
        print("cannot import gateway.releases", file=sys.stderr)
        return 1
    s = score(found[0], rows)
    ok_time = s.hundred_ms <= budget_ms
    ok_acc = s.share("all") >= THRESHOLD
    print(
        f"release names: 100 in {s.hundred_ms:.1f} ms (budget {budget_ms:.0f}) "
        f"{'ok' if ok_time else 'TOO SLOW'}; all four right {100 * s.share('all'):.1f}% "
        f"(floor {100 * THRESHOLD:.0f}%) {'ok' if ok_acc else 'TOO LOW'}"
    )
    return 0 if ok_time and ok_acc else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--write", action="store_true", help=f"also write {REPORT.name}")
    ap.add_argument("--check", action="store_true", help="only check the wrapper (speed, accuracy)")
    ap.add_argument("--misses", metavar="PARSER", help="list the names PARSER gets wrong")
    ap.add_argument("--budget-ms", type=float, default=BUDGET_MS, help="--check: ms for 100 names")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    args = ap.parse_args(argv)
    rows = load_corpus(args.corpus)
    if args.check:
        return check(rows, args.budget_ms)
    found = candidates([args.misses] if args.misses else ())
    if not found:
        print("no parser installed", file=sys.stderr)
        return 1
    scores = [score(cand, rows) for cand in found]
    if args.misses:
        print("\n".join(scores[0].misses))
        return 0
    text = report(scores, len(rows))
    print(text)
    if args.write:
        REPORT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
