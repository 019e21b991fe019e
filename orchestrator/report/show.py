"""``orchestrate report``: read the build history, analyse it, show it on the terminal, as JSON or as HTML."""

from __future__ import annotations

import json
from pathlib import Path

from packaging.utils import canonicalize_name
from rich.console import Console

from orchestrator.atomic import atomic_write
from orchestrator.errors import HistoryError
from orchestrator.policy.history import History
from orchestrator.report.history import BASELINE_BUILDS, HistoryReport, analyse
from orchestrator.report.history_html import render_html
from orchestrator.report.history_text import print_history

__all__ = ["load", "show"]


def load(path: Path, *, last: int, package: str | None = None) -> HistoryReport:
    """The analysis of the ``last`` runs in the history file ``path``; :class:`HistoryError` when there is nothing."""
    if not path.is_file():
        raise HistoryError(f"no build history at {path}: run `orchestrate build` first, or name the --state-dir "
                           "it used")
    wanted = canonicalize_name(package) if package else None
    with History(path) as history:
        if not history.persistent:
            raise HistoryError(f"cannot read the build history {path}: see the warning above")
        runs = history.runs(last)
        if not runs:
            raise HistoryError(f"the build history {path} holds no run yet: runs are recorded by `orchestrate build` "
                               "from this version on")
        names = [wanted] if wanted else history.names(run.id for run in runs)
        oldest = min(run.started_at for run in runs)
        report = analyse(runs, history.builds(names, since=oldest, earlier_successes=BASELINE_BUILDS),
                         package=wanted)
    if wanted and not report.trends:
        raise HistoryError(f"no build of {package} in the last {len(runs)} runs of {path}: check the name, or "
                           "widen --last")
    return report


def show(path: Path, console: Console, *, last: int, package: str | None, html: Path | None, as_json: bool) -> None:
    """Print the report (tables, or JSON with ``as_json``) and write the HTML page to ``html``."""
    report = load(path, last=last, package=package)
    if html is not None:
        try:
            html.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(html) as out:
                out.write(render_html(report, source=str(path)).encode())
        except OSError as exc:
            reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
            raise HistoryError(f"cannot write the HTML report {html} ({reason}); choose another --html file") from None
    if as_json:
        # Written as it is: rich's JSON printer highlights and wraps every token, 15 s for a farm's 3 MB.
        console.file.write(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        print_history(console, report, source=str(path))
    if html is not None and not as_json:
        console.print(f"\nHTML report: {html}", markup=False, highlight=False)
