"""``orchestrate report`` on a terminal: the history analysis as compact rich tables with sparklines.

rich draws the tables; it has no sparkline, so :func:`sparkline` maps values to the eight
Unicode block heights itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.policy.history import RunRecord
from orchestrator.report.history import (
    REGRESSION_RULE,
    TAIL_RULE,
    HistoryReport,
    Regression,
)
from orchestrator.units import format_size

__all__ = ["OUTCOME_MARKS", "print_history", "sparkline"]

BLOCKS = "▁▂▃▄▅▆▇█"
OUTCOME_MARKS = {"built": ("✓", "green"), "failed": ("✗", "bold red"), "stopped": ("■", "yellow"),
                 "not started": ("■", "yellow")}
"""How each outcome shows in a package's strip of runs; a run without the package shows ``·``."""
MAX_PACKAGES = 30
"""Packages in the terminal's trend table (slowest first); ``--package``, ``--json`` and ``--html`` show all."""
MAX_CHANGES = 30
"""Status changes on the terminal, newly failing first, then failing, fixed, flipping; the others are counted."""
CHANGE_ORDER = ("newly failing", "failing", "fixed", "ok")


def sparkline(values: Sequence[float | None]) -> str:
    """One block per value, its height proportional to the value (from zero to the largest); gaps stay blank."""
    largest = max((value for value in values if value is not None), default=0.0)
    if largest <= 0:
        return "".join(" " if value is None else BLOCKS[0] for value in values)
    return "".join(" " if value is None else BLOCKS[max(round(value / largest * len(BLOCKS)) - 1, 0)]
                   for value in values)


def when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{rest:02d}s"


def run_end(run: RunRecord) -> str:
    """The makespan, or why there is none."""
    if run.makespan_s is None:
        return "unfinished"
    return seconds(run.makespan_s) + (f" ({run.interrupted})" if run.interrupted else "")


def describe(regression: Regression) -> str:
    shown = (seconds if regression.metric == "wall" else lambda value: format_size(int(value)))
    what = "wall" if regression.metric == "wall" else "peak memory"
    return (f"{what} {shown(regression.value)} against a median of {shown(regression.median)} over "
            f"{regression.baseline} builds ({regression.ratio:.2f}x), run {regression.run_id}")


def print_history(console: Console, report: HistoryReport, *, source: str) -> None:
    """Print the report: runs, regressions, status changes, trends, predictions, the tail."""
    console.print(Text(f"build history {source}: the last {len(report.runs)} runs", style="bold"))
    runs = Table(title_justify="left", box=None, pad_edge=False)
    for column in ("run", "started", "makespan", "built", "failed", "downloaded", "skipped", "stopped"):
        runs.add_column(column, justify="left" if column in ("started",) else "right")
    for run in reversed(report.runs):
        runs.add_row(str(run.id), when(run.started_at), run_end(run), str(run.built),
                     Text(str(run.failed), style="red" if run.failed else ""), str(run.downloaded), str(run.skipped),
                     str(run.stopped))
    console.print(runs)

    console.print(Text(f"\nregressions ({REGRESSION_RULE}):", style="bold"))
    for regression in report.regressions:
        console.print(Text.assemble(("  REGRESSION ", "bold red"), (regression.name, "bold"),
                                    f": {describe(regression)}"))
    if not report.regressions:
        console.print("  none")

    if report.changes:
        console.print(Text("\nstatus changes (oldest run first):", style="bold"))
        changes = sorted(report.changes, key=lambda change: CHANGE_ORDER.index(change.state))
        for change in changes[:MAX_CHANGES]:
            label, style = {"ok": ("FLIPPING", "yellow"), "fixed": ("FIXED", "green")}.get(
                change.state, (change.state.upper(), "bold red"))
            line = Text(f"  {label} ", style=style)
            line.append(change.name, style="bold")
            line.append("  ")
            line.append_text(outcome_strip(change.outcomes))
            if change.flipping:
                line.append(f"  flipping: changed {change.flips} times", style="yellow")
            if change.error:
                line.append(f"  {change.error}", style="dim")
            console.print(line)
        if len(changes) > MAX_CHANGES:
            left = changes[MAX_CHANGES:]
            counts = ", ".join(f"{sum(1 for change in left if change.state == state)} "
                               f"{'flipping' if state == 'ok' else state}"
                               for state in CHANGE_ORDER if any(change.state == state for change in left))
            console.print(f"  ... and {len(left)} more: {counts} (--package NAME, --html or --json)", markup=False)

    trends = Table(title="\npackages, slowest first (oldest run left; ✓ built, ✗ failed, ■ stopped, · not built)",
                   title_justify="left", title_style="bold",
                   box=None, pad_edge=False)
    for column in ("package", "runs", "wall", "wall trend", "peak", "peak trend"):
        trends.add_column(column, justify="right" if column in ("wall", "peak") else "left", overflow="fold")
    for trend in report.trends[:MAX_PACKAGES]:
        peak = trend.last_peak
        trends.add_row(trend.name, outcome_strip(trend.outcomes), seconds(trend.last_wall),
                       sparkline(trend.walls), format_size(peak) if peak is not None else "-",
                       sparkline([None if value is None else float(value) for value in trend.peaks]))
    console.print(trends)
    if len(report.trends) > MAX_PACKAGES:
        console.print(f"  ... and {len(report.trends) - MAX_PACKAGES} more (--package NAME, --html or --json)")

    if report.predictions:
        above = [miss for miss in report.predictions if miss.error > 0]
        console.print(Text(f"\npredicted memory against the peak, run {report.prediction_run}: "
                           f"{len(above)} of {len(report.predictions)} builds went above their prediction",
                           style="bold"))
        for miss in report.predictions[:10]:
            style = "red" if miss.error > 0 else ""
            console.print(Text(f"  {miss.name}: predicted {format_size(miss.predicted)}, peak "
                               f"{format_size(miss.peak)} ({miss.error:+.0%})", style=style))

    tail = report.tail
    if tail is not None:
        console.print(Text(f"\nthe tail of run {tail.run_id} ({TAIL_RULE}):", style="bold"))
        if not tail.builds:
            console.print("  none: the run built one package at a time")
        else:
            console.print(f"  {seconds(tail.length_s)} of {seconds(tail.span_s)} of builds ran with fewer than "
                          f"{tail.peak_concurrency} builds at once; still running then:", markup=False)
            for build in tail.builds[:10]:
                console.print(f"  {build.name}: {seconds(build.in_tail_s)} in the tail "
                              f"(built in {seconds(build.finished_at - build.started_at)})", markup=False)


def outcome_strip(outcomes: Sequence[str | None]) -> Text:
    strip = Text()
    for outcome in outcomes:
        mark, style = OUTCOME_MARKS.get(outcome or "", ("·", "dim"))
        strip.append(mark, style=style)
    return strip
