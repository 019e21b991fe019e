"""``orchestrate report --html``: the history analysis as one self-contained HTML page.

Inline CSS and inline SVG drawn from the figures here (sparklines, run bars, the tail's
bars): no script, font or style from elsewhere, so the file reads offline and stays small.
A charting library would bring a script of its own for a handful of polylines. Every text
from the history (package names, errors, command lines) goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from orchestrator.policy.history import RunRecord
from orchestrator.report.history import REGRESSION_RULE, TAIL_RULE, HistoryReport, Tail
from orchestrator.report.history_text import describe, run_end, seconds, when
from orchestrator.units import format_size

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px 32px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde1e8;padding-bottom:4px}
p.meta,p.rule{color:#5a6270;margin:2px 0}p.rule{font-size:12.5px}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 12px 3px 0;text-align:left;vertical-align:middle}
th{font-weight:600;color:#5a6270;font-size:12.5px;border-bottom:1px solid #dde1e8}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.regression td{background:#fff1f0}.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:11.5px;
font-weight:600;color:#fff;background:#c62828;margin-left:6px}.badge.flip{background:#b26a00}
.outcomes{font-size:15px;letter-spacing:1px;white-space:nowrap}.outcomes b{font-weight:normal;color:#d5d9e0}
.outcomes .built{color:#2e7d32}.outcomes .failed{color:#c62828}.outcomes .stopped,.outcomes .not-started{color:#f9a825}
.bad{color:#c62828;font-weight:600}.good{color:#2e7d32}
.err{color:#5a6270;font-size:12.5px;max-width:520px;overflow-wrap:anywhere}svg{vertical-align:middle}
.none{color:#5a6270}svg.spark{width:126px;height:26px;fill:none;stroke-width:1.6}svg.spark circle{stroke:none}
svg.wall{stroke:#1565c0;fill:#1565c0}svg.peak{stroke:#6a1b9a;fill:#6a1b9a}svg.spark polyline{fill:none}
svg.spark circle.flagged{fill:#c62828}
"""
_SPARK_W, _SPARK_H = 120, 26
_MAX_PREDICTIONS = 50
_MAX_TAIL = 50
"""Rows of the tables of predictions (the furthest off first) and of the tail (the last to end first);
``--json`` has them all."""


def sparkline_svg(values: Sequence[float | None], *, title: str, kind: str = "wall", flagged: bool = False) -> str:
    """A polyline of ``values`` (oldest left, from zero to the largest), broken where a value is missing.

    ``kind`` (``wall``, ``peak``) picks the colour. Whole pixels, and the style in the page's
    CSS: a page of a thousand packages stays small.
    """
    known = [value for value in values if value is not None]
    if not known:
        return '<span class="none">-</span>'
    largest = max(known) or 1.0
    step = _SPARK_W / max(len(values) - 1, 1)

    def point(index: int, value: float) -> tuple[int, int]:
        x = round(index * step) if len(values) > 1 else _SPARK_W // 2
        return x + 3, round(_SPARK_H - 3 - value / largest * (_SPARK_H - 6))

    lines: list[list[tuple[int, int]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            lines.append([])
        else:
            lines[-1].append(point(index, value))
    shapes = [f'<polyline points="{" ".join(f"{x},{y}" for x, y in line)}"/>' if len(line) > 1
              else f'<circle cx="{line[0][0]}" cy="{line[0][1]}" r="1.6"/>' for line in lines if line]
    last = max(index for index, value in enumerate(values) if value is not None)
    x, y = point(last, values[last] or 0.0)
    mark = ' class="flagged"' if flagged else ""
    shapes.append(f'<circle cx="{x}" cy="{y}" r="2.6"{mark}/>')
    return f'<svg class="spark {kind}"><title>{html.escape(title)}</title>{"".join(shapes)}</svg>'


def _outcomes(outcomes: Sequence[str | None], runs: Sequence[RunRecord]) -> str:
    """A square per run, the oldest first, coloured by outcome; equal neighbours share one element."""
    groups: list[tuple[str, int]] = []
    for outcome in outcomes:
        kind = (outcome or "absent").replace(" ", "-")
        if groups and groups[-1][0] == kind:
            groups[-1] = (kind, groups[-1][1] + 1)
        else:
            groups.append((kind, 1))
    failed = [str(run.id) for outcome, run in zip(outcomes, runs) if outcome == "failed"]
    title = f"runs {runs[0].id} to {runs[-1].id}" + (f"; failed in run {', '.join(failed)}" if failed else "")
    squares = "".join(f'<b class="{html.escape(kind)}">{"■" * count}</b>' for kind, count in groups)
    return f'<span class="outcomes" title="{html.escape(title)}">{squares}</span>'


def _runs(report: HistoryReport) -> str:
    longest = max((run.makespan_s or 0.0 for run in report.runs), default=0.0) or 1.0
    rows = []
    for run in reversed(report.runs):
        width = round((run.makespan_s or 0.0) / longest * 160)
        bar = f'<svg width="164" height="12"><rect width="{max(width, 1)}" height="10" y="1" fill="#90a4c8"/></svg>'
        rows.append(
            f'<tr class="run" data-run="{run.id}"><td class="num">{run.id}</td><td>{when(run.started_at)}</td>'
            f'<td class="num">{html.escape(run_end(run))}</td><td>{bar}</td><td class="num">{run.built}</td>'
            f'<td class="num{" bad" if run.failed else ""}">{run.failed}</td><td class="num">{run.downloaded}</td>'
            f'<td class="num">{run.skipped}</td><td class="num">{run.stopped}</td>'
            f'<td class="err">{html.escape(run.command_line)}</td></tr>')
    head = "".join(f'<th class="num">{name}</th>' if name not in ("started", "", "command") else f"<th>{name}</th>"
                   for name in ("run", "started", "makespan", "", "built", "failed", "downloaded", "skipped",
                                "stopped", "command"))
    return f'<table id="runs"><tr>{head}</tr>{"".join(rows)}</table>'


def _regressions(report: HistoryReport) -> str:
    if not report.regressions:
        return '<p class="none" id="regressions">No regression.</p>'
    rows = "".join(
        f'<tr class="regression" data-package="{html.escape(found.name)}" data-metric="{found.metric}">'
        f'<td><b>{html.escape(found.name)}</b></td><td>{html.escape(describe(found))}</td></tr>'
        for found in report.regressions)
    return f'<table id="regressions"><tr><th>package</th><th>what</th></tr>{rows}</table>'


def _changes(report: HistoryReport) -> str:
    if not report.changes:
        return '<p class="none" id="changes">No package changed status.</p>'
    rows = []
    for change in report.changes:
        badge = f'<span class="badge flip">flipping ×{change.flips}</span>' if change.flipping else ""
        style = "bad" if "failing" in change.state else "good"
        rows.append(f'<tr class="change" data-package="{html.escape(change.name)}" data-state="{change.state}">'
                    f'<td><b>{html.escape(change.name)}</b></td><td class="{style}">{change.state}{badge}</td>'
                    f'<td>{_outcomes(change.outcomes, report.runs)}</td>'
                    f'<td class="err">{html.escape(change.error or "")}</td></tr>')
    return (f'<table id="changes"><tr><th>package</th><th>status</th><th>runs</th><th>last error</th></tr>'
            f'{"".join(rows)}</table>')


def _trends(report: HistoryReport) -> str:
    flagged = {(found.name, found.metric) for found in report.regressions}
    rows = []
    for trend in report.trends:
        badges = "".join(f'<span class="badge">{metric} regression</span>' for metric in ("wall", "peak")
                         if (trend.name, metric) in flagged)
        regressed = " regression" if badges else ""
        peak = trend.last_peak
        peaks = [None if value is None else float(value) for value in trend.peaks]
        rows.append(
            f'<tr class="package{regressed}" data-package="{html.escape(trend.name)}">'
            f'<td><b>{html.escape(trend.name)}</b>{badges}</td><td>{_outcomes(trend.outcomes, report.runs)}</td>'
            f'<td class="num">{seconds(trend.last_wall)}</td>'
            f'<td>{sparkline_svg(trend.walls, title=f"{trend.name}: wall time per run", flagged=bool(badges))}</td>'
            f'<td class="num">{format_size(peak) if peak is not None else "-"}</td>'
            f'<td>{sparkline_svg(peaks, title=f"{trend.name}: peak memory per run", kind="peak")}</td></tr>')
    return ('<table id="packages"><tr><th>package</th><th>runs</th><th class="num">last wall</th><th>wall</th>'
            f'<th class="num">last peak</th><th>peak memory</th></tr>{"".join(rows)}</table>')


def _predictions(report: HistoryReport) -> str:
    if not report.predictions:
        return '<p class="none" id="predictions">No build of the last run had both a prediction and a peak.</p>'
    above = sum(1 for miss in report.predictions if miss.error > 0)
    rows = "".join(
        f'<tr class="prediction" data-package="{html.escape(miss.name)}"><td>{html.escape(miss.name)}</td>'
        f'<td class="num">{format_size(miss.predicted)}</td><td class="num">{format_size(miss.peak)}</td>'
        f'<td class="num{" bad" if miss.error > 0 else ""}">{miss.error:+.0%}</td></tr>'
        for miss in report.predictions[:_MAX_PREDICTIONS])
    more = len(report.predictions) - _MAX_PREDICTIONS
    return (f'<p class="meta">Run {report.prediction_run}: {above} of {len(report.predictions)} builds went above '
            f'the memory they were admitted with{f"; the {_MAX_PREDICTIONS} furthest off" if more > 0 else ""}.</p>'
            f'<table id="predictions"><tr><th>package</th>'
            f'<th class="num">predicted</th><th class="num">peak</th><th class="num">peak vs predicted</th></tr>'
            f'{rows}</table>')


def _tail(tail: Tail | None) -> str:
    if tail is None:
        return '<p class="none" id="tail">The last run built nothing.</p>'
    if not tail.builds:
        return '<p class="none" id="tail">None: the last run built one package at a time.</p>'
    width, span = 420, tail.span_s or 1.0
    left = round((tail.starts_at - tail.first_start) / span * width, 1)
    rows = []
    for build in tail.builds[:_MAX_TAIL]:
        x = round((build.started_at - tail.first_start) / span * width, 1)
        bar_width = max(round((build.finished_at - build.started_at) / span * width, 1), 1)
        svg = (f'<svg width="{width}" height="14"><rect x="{left}" width="{width - left}" height="14" '
               f'fill="#fdecea"/><rect class="bar" x="{x}" y="2" width="{bar_width}" height="10" fill="#1565c0"/>'
               '</svg>')
        rows.append(f'<tr class="tail" data-package="{html.escape(build.name)}"><td>{html.escape(build.name)}</td>'
                    f'<td class="num">{seconds(build.in_tail_s)}</td>'
                    f'<td class="num">{seconds(build.finished_at - build.started_at)}</td><td>{svg}</td></tr>')
    return (f'<p class="meta">Run {tail.run_id}: for {seconds(tail.length_s)} of {seconds(tail.span_s)} of builds, '
            f'fewer than {tail.peak_concurrency} builds ran at once (shaded). Still running then'
            f'{f", the {_MAX_TAIL} that ended last" if len(tail.builds) > _MAX_TAIL else ""}:</p>'
            f'<table id="tail"><tr><th>package</th><th class="num">in the tail</th><th class="num">wall</th>'
            f'<th>from the first build start to the last end</th></tr>{"".join(rows)}</table>')


def render_html(report: HistoryReport, *, source: str) -> str:
    """The whole page."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>orchestrate: build history</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>
<h1>Build history</h1>
<p class="meta">{html.escape(source)}: the last {len(report.runs)} runs, generated {when(time.time())}.</p>
<h2>Runs</h2>{_runs(report)}
<h2>Regressions</h2><p class="rule">Rule: {html.escape(REGRESSION_RULE)}.</p>{_regressions(report)}
<h2>Status changes</h2>{_changes(report)}
<h2>Packages</h2><p class="rule">Slowest first; each chart runs from the oldest run shown (left) to the last,
from zero to its largest value; a gap is a run without a successful build of the package.</p>{_trends(report)}
<h2>Predicted memory against the peak</h2>{_predictions(report)}
<h2>The tail of the last run</h2><p class="rule">Rule: {html.escape(TAIL_RULE)}.</p>{_tail(report.tail)}
</body></html>
"""
