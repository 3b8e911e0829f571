"""Plain-text table and targets section."""

from __future__ import annotations

from collections.abc import Sequence

from scenarios import METRICS, TARGETS, Metric, Results

DASH = "–"
RATIO_VIA = "gateway"  # the ratio columns compare the 1-worker gateway ("per process")


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


def table(results: Results, columns: Sequence[tuple[str, str]]) -> str:
    """Rows = METRICS, columns = each path, then gateway/nginx and gateway/direct."""
    header = ["metric", *(label for _, label in columns), "gateway/nginx", "gateway/direct"]
    rows = [header]
    for metric in METRICS:
        rows.append(
            [
                metric.label,
                *(_cell(metric, results.get(key, {}).get(metric.key)) for key, _ in columns),
                _ratio(metric, results, "nginx"),
                _ratio(metric, results, "direct"),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets(results: Results) -> tuple[str, list[dict[str, object]]]:
    """The targets section (text) and the same as JSON-ready records."""
    records: list[dict[str, object]] = []
    lines = ["targets (reported, not asserted):"]
    width = max(len(t.label) for t in TARGETS)
    for target in TARGETS:
        value = target.value(results)
        want = f"{target.op} {target.fmt.format(target.limit)}"
        if value is None:
            verdict, shown = "not measured", DASH
        else:
            verdict, shown = ("met" if target.met(value) else "NOT MET"), target.fmt.format(value)
        lines.append(f"  {target.label.ljust(width)}  {shown:>10}  (target {want}): {verdict}")
        records.append(
            {
                "target": target.label.strip(),
                "value": value,
                "op": target.op,
                "limit": target.limit,
                "verdict": verdict,
            }
        )
    return "\n".join(lines), records
