"""The README's dashboard picture: template.yaml's dashboard body, its widgets drawn (as SVG) from
the metric documents the checker's own code emits over a scripted week of deaths.

    python -m bench.dashboard_picture docs/dashboard.svg

The week is replayed through evaluate() (the scripted week of tests/unit/test_history.py: real
detection, real run events, real metric documents from oomcheck.report.metrics); each widget
draws what its metric rows (or SEARCH expressions) select from those documents, summed per its
period, laid out on the dashboard's 24-column grid. No CloudWatch is involved: this shows the
layout and the data the dashboard would draw, not CloudWatch's own rendering.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from dataclasses import replace
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COL_W, ROW_H = 46, 34
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_SEARCH = re.compile(r"SEARCH\('\{[^,]*,([^}]*)\} MetricName=\"(\w+)\"")
Doc = tuple[float, str, dict[str, str], float]  # (time, metric, dimensions, value)


def _week_documents() -> tuple[list[Doc], str, float, float]:
    """Metric points of every run of the scripted week, and the last run's open incidents."""
    sys.path.insert(0, str(ROOT))
    from tests.unit import scenario
    from tests.unit.test_history import _scripted_week

    from oomcheck.model import Mode
    from oomcheck.report.document import Report
    from oomcheck.report.events import run_events
    from oomcheck.report.metrics import open_incidents_text, target_points

    recorded: list[tuple[Any, Any, Any, float]] = []
    real = scenario.evaluate

    def recording(state: Any, obs: Any, policy: Any, now: float) -> Any:
        after, findings = real(state, obs, policy, now)
        recorded.append((state, after, findings, now))
        return after, findings

    scenario.evaluate = recording
    try:
        _scripted_week()
    finally:
        scenario.evaluate = real
    docs: list[Doc] = []
    last = ""
    for before, after, findings, now in recorded:
        report = Report(
            mode=Mode.CHECK,
            checked_at=now,
            duration_ms=0,
            workers=(),
            findings=tuple(findings),
            sources={},
            stats={},
            incidents=tuple(after.incidents.values()),
            events=run_events(before, after),
        )
        docs += [(now, p.name, dict(p.dimensions), p.value) for p in target_points(report, "shop")]
        last = open_incidents_text(replace(report, checked_at=now))
    start = min(t for t, *_ in docs)
    return docs, last, start, max(t for t, *_ in docs)


def _body() -> dict[str, Any]:
    from tests.template import cfn

    text = cfn.load()["Resources"]["CheckerDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    subs = {
        "MetricsNamespace": "oomcheck",
        "Target": "shop",
        "AWS::StackName": "oomcheck",
        "AWS::Region": "us-east-1",
        "CheckerLogGroup": "/aws/lambda/oomcheck-checker",
    }
    for name, value in subs.items():
        text = text.replace("${" + name + "}", value)
    return dict(json.loads(text))


def _series(widget: dict[str, Any], docs: list[Doc]) -> list[tuple[str, dict[float, float]]]:
    """(label, time bucket -> value) of each line a widget draws; a SEARCH gives one line per
    dimension value found."""
    period = float(widget["properties"].get("period", 300))
    stat = str(widget["properties"].get("stat", "Sum"))
    out: list[tuple[str, dict[float, float]]] = []
    for row in widget["properties"].get("metrics", []):
        if isinstance(row[0], dict):
            match = _SEARCH.search(row[0]["expression"])
            if not match:
                continue
            dims, name = match.group(1).split(","), match.group(2)
            found: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
            for t, metric, d, v in docs:
                if metric == name and d.get("target") == "shop":
                    key = "/".join(d[k] for k in dims if k != "target")
                    found[f"{row[0].get('label', '')}{key}"][t // period * period].append(v)
            out += [(label, _stat(b, stat)) for label, b in sorted(found.items())]
        else:
            plain = [r for r in row if not isinstance(r, dict)]
            opts = next((r for r in row if isinstance(r, dict)), {})
            wanted = dict(zip(plain[2::2], plain[3::2], strict=True))
            buckets: dict[float, list[float]] = defaultdict(list)
            for t, metric, d, v in docs:
                if metric == plain[1] and d == wanted:
                    buckets[t // period * period].append(v)
            out.append((opts.get("label", plain[1]), _stat(buckets, opts.get("stat", stat))))
    return out


def _stat(buckets: dict[float, list[float]], stat: str) -> dict[float, float]:
    """The widget's statistic per period: Sum, or Maximum (gauges such as open incidents)."""
    pick = max if stat == "Maximum" else sum
    return {t: float(pick(values)) for t, values in buckets.items()}


def _chart(widget: dict[str, Any], docs: list[Doc], start: float, end: float) -> list[str]:
    x0, y0 = widget["x"] * COL_W, widget["y"] * ROW_H
    w, h = widget["width"] * COL_W, widget["height"] * ROW_H
    title = escape(widget["properties"].get("title", ""))
    parts = [
        f'<rect x="{x0 + 4}" y="{y0 + 4}" width="{w - 8}" height="{h - 8}" fill="#fff" '
        'stroke="#d5dbdb"/>',
        f'<text x="{x0 + 14}" y="{y0 + 24}" font-size="14" font-weight="bold">{title}</text>',
    ]
    series = _series(widget, docs)
    px, py, pw, ph = x0 + 40, y0 + 40, w - 60, h - 80
    top = max([1.0, *(v for _, b in series for v in b.values())])
    span = max(end - start, 1.0)
    for i, (label, buckets) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        for t, v in sorted(buckets.items()):
            bx = px + (t - start) / span * pw + i * 3
            bh = v / top * ph
            parts.append(
                f'<rect x="{bx:.1f}" y="{py + ph - bh:.1f}" width="4" height="{bh:.1f}" '
                f'fill="{color}"/>'
            )
        parts.append(
            f'<text x="{px + pw - 240}" y="{py + 12 + 14 * i}" font-size="11" fill="{color}">'
            f"■ {escape(label or '(none)')} "
            f"({f'{sum(buckets.values()):g}' if buckets else 'no data in this replay'})</text>"
        )
    parts.append(
        f'<line x1="{px}" y1="{py + ph}" x2="{px + pw}" y2="{py + ph}" stroke="#879596"/>'
        f'<text x="{px - 30}" y="{py + 10}" font-size="10">{top:g}</text>'
    )
    return parts


def _table(widget: dict[str, Any], last: str) -> list[str]:
    x0, y0 = widget["x"] * COL_W, widget["y"] * ROW_H
    w, h = widget["width"] * COL_W, widget["height"] * ROW_H
    rows = last.split("; ")
    parts = [
        f'<rect x="{x0 + 4}" y="{y0 + 4}" width="{w - 8}" height="{h - 8}" fill="#fff" '
        'stroke="#d5dbdb"/>',
        f'<text x="{x0 + 14}" y="{y0 + 24}" font-size="14" font-weight="bold">'
        f"{escape(widget['properties']['title'])}</text>",
        f'<text x="{x0 + 14}" y="{y0 + 48}" font-size="12" fill="#545b64">open_incidents</text>',
    ]
    parts += [
        f'<text x="{x0 + 14}" y="{y0 + 68 + 18 * i}" font-size="12">{escape(r)}</text>'
        for i, r in enumerate(rows[:8])
    ]
    return parts


def render(out: Path) -> None:
    docs, last, start, end = _week_documents()
    body = _body()
    height = max(w["y"] + w["height"] for w in body["widgets"]) * ROW_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{24 * COL_W}" height="{height}" '
        'font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{24 * COL_W}" height="{height}" fill="#f2f3f3"/>',
    ]
    for widget in body["widgets"]:
        if widget["type"] == "metric":
            parts += _chart(widget, docs, start, end)
        elif widget["type"] == "log":
            parts += _table(widget, last)
        else:
            text = re.sub(r"\*\*", "", widget["properties"]["markdown"])
            parts.append(
                f'<text x="{widget["x"] * COL_W + 8}" y="{widget["y"] * ROW_H + 24}" '
                f'font-size="16">{escape(text)}</text>'
            )
    parts.append("</svg>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    render(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.svg"))
