"""Medians over the repetitions, the table (plain text or markdown), the targets, RESULTS.md."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scenarios import METRICS, TARGETS, Metric, Results, Target

DASH = "–"
RATIO_VIA = "gateway"  # the ratio columns compare the 1-worker gateway ("per process")
#: (denominator key, column header) of the ratio columns, after the paths' columns.
RATIO_COLUMNS: list[tuple[str, str]] = [
    ("nginx", "gateway/nginx"),
    ("nginx256", "gateway/nginx-256k"),
    ("direct", "gateway/direct"),
]


def medians(reps: Sequence[Results]) -> Results:
    """Per path and metric, the median over the repetitions that measured it."""
    values: dict[str, dict[str, list[float]]] = {}
    for rep in reps:
        for key, measurements in rep.items():
            for metric, value in measurements.items():
                values.setdefault(key, {}).setdefault(metric, []).append(value)
    return {
        key: {metric: statistics.median(vs) for metric, vs in by_metric.items()}
        for key, by_metric in values.items()
    }


# ---------------------------------------------------------------- the table


def _cell(metric: Metric, value: float | None) -> str:
    return DASH if value is None else metric.fmt.format(value)


def _ratio(metric: Metric, results: Results, den: str) -> str:
    if not metric.ratio:
        return DASH
    num_v = results.get(RATIO_VIA, {}).get(metric.key)
    den_v = results.get(den, {}).get(metric.key)
    if num_v is None or not den_v:
        return DASH
    return f"{num_v / den_v:.2f}×"


def _rows(results: Results, columns: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Header + one row per METRIC: each path's value, then the ratio columns."""
    rows = [["metric", *(label for _, label in columns), *(label for _, label in RATIO_COLUMNS)]]
    for metric in METRICS:
        rows.append(
            [
                metric.label,
                *(_cell(metric, results.get(key, {}).get(metric.key)) for key, _ in columns),
                *(_ratio(metric, results, den) for den, _ in RATIO_COLUMNS),
            ]
        )
    return rows


def table(results: Results, columns: Sequence[tuple[str, str]]) -> str:
    """Rows = METRICS, columns = each path, then gateway/nginx, gateway/nginx-256k, gateway/direct."""
    rows = _rows(results, columns)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(rows: Sequence[Sequence[str]], text_columns: Sequence[int] = (0,)) -> str:
    """A markdown table: numbers right-aligned, `text_columns` left-aligned."""
    align = ["---" if i in text_columns else "---:" for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def markdown_table(results: Results, columns: Sequence[tuple[str, str]]) -> str:
    return _markdown(_rows(results, columns))


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetResult:
    target: Target
    value: float | None  # from the medians table
    per_rep: list[float | None]  # the same, evaluated on each repetition alone

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        return "met" if self.target.met(self.value) else "NOT MET"

    @property
    def want(self) -> str:
        return f"{'≥' if self.target.op == '>=' else '≤'} {self.target.fmt.format(self.target.limit)}"

    def shown(self, value: float | None) -> str:
        return DASH if value is None else self.target.fmt.format(value)

    def record(self) -> dict[str, object]:
        return {
            "target": self.target.label.strip(),
            "value": self.value,
            "per_rep": self.per_rep,
            "op": self.target.op,
            "limit": self.target.limit,
            "verdict": self.verdict,
        }


def evaluate_targets(median_results: Results, reps: Sequence[Results]) -> list[TargetResult]:
    return [
        TargetResult(target, target.value(median_results), [target.value(rep) for rep in reps])
        for target in TARGETS
    ]


def targets_text(evaluated: Sequence[TargetResult]) -> str:
    """The targets section: value from the medians, the target, the verdict, each rep's value."""
    lines = ["targets (from the medians; reported, not asserted):"]
    width = max(len(t.target.label) for t in evaluated)
    for t in evaluated:
        line = f"  {t.target.label.ljust(width)}  {t.shown(t.value):>9}  (target {t.want}): {t.verdict}"
        if len(t.per_rep) > 1:
            line += "   reps: " + ", ".join(t.shown(v) for v in t.per_rep)
        lines.append(line)
    return "\n".join(lines)


def targets_markdown(evaluated: Sequence[TargetResult]) -> str:
    reps = max((len(t.per_rep) for t in evaluated), default=0)
    rows = [["target", "median", *(f"rep {n + 1}" for n in range(reps)), "wanted", "verdict"]]
    for t in evaluated:
        per_rep = [t.shown(v) for v in t.per_rep] + [DASH] * (reps - len(t.per_rep))
        rows.append([t.target.label.strip(), t.shown(t.value), *per_rep, t.want, t.verdict])
    return _markdown(rows, text_columns=(0, len(rows[0]) - 1))


# ---------------------------------------------------------------- RESULTS.md


def results_markdown(
    *,
    date: str,
    summary: str,
    machine: Mapping[str, str],
    pinning: str,
    median_results: Results,
    columns: Sequence[tuple[str, str]],
    evaluated: Sequence[TargetResult],
    legend: str,
    notes: Sequence[str],
) -> str:
    """The whole RESULTS.md: what ran where, the medians table, targets with each rep's values."""
    parts = [
        "# Benchmark results: direct, nginx, nginx-256k and the gateway",
        "",
        f"Written by `benchmarks/run.py --results-md` on {date}: {summary}.",
        "",
        "## Machine",
        "",
        *(f"- {name}: {value}" for name, value in machine.items()),
        "",
        "## Pinning",
        "",
        pinning,
        "",
        "## Medians",
        "",
        markdown_table(median_results, columns),
        "",
        "```",
        legend,
        "```",
        "",
        "## Targets",
        "",
        "Evaluated on the medians table (a ratio is the ratio of two medians); each repetition's own "
        "value beside it. Reported, not asserted.",
        "",
        targets_markdown(evaluated),
        "",
    ]
    if notes:
        parts += ["## Notes", "", "```", *notes, "```", ""]
    parts += ["Profiles of the small-JSON path: benchmarks/profiles.md", ""]
    return "\n".join(parts)
