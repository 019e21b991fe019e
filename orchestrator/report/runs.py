"""The run folders under ``--state-dir``: each run keeps its logs and its reports there.

``STATE_DIR/runs/<UTC start, %Y%m%dT%H%M%SZ>-<pid>/`` holds ``logs/``, ``report.json`` and
``report.html``; only the newest :data:`RUNS_KEPT` run folders are kept.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.report import RunReport
from orchestrator.report.html import write_html
from orchestrator.report.trace import write_trace

logger = logging.getLogger(__name__)

RUNS_KEPT = 50
"""Run folders kept under ``STATE_DIR/runs``; older ones are removed as a run ends."""
_RUN_NAME = re.compile(r"^\d{8}T\d{6}Z-\d+$")


def run_folder(state_dir: Path, started_at: float, pid: int | None = None) -> Path:
    """The run folder of the run that started at ``started_at`` (epoch) in process ``pid`` (default: this one)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at))
    return state_dir / "runs" / f"{stamp}-{os.getpid() if pid is None else pid}"


def prune_runs(runs: Path, keep: int = RUNS_KEPT) -> list[Path]:
    """Remove all but the newest ``keep`` run folders in ``runs`` (by the start in their name); return those removed.

    Folders not named as run folders are left alone.
    """
    try:
        folders = [path for path in runs.iterdir() if path.is_dir() and _RUN_NAME.match(path.name)]
    except OSError:
        return []
    # The name sorts by start time; the pid breaks ties between runs started in the same second.
    folders.sort(key=lambda path: (path.name.split("-")[0], int(path.name.split("-")[1])))
    removed = folders[:-keep] if keep else folders
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportFiles:
    """Where a run's reports go: the files the user named, and the run folder."""

    json: Path | None = None
    html: Path | None = None
    trace: Path | None = None
    run_folder: Path | None = None


def write_reports(report: RunReport, files: ReportFiles) -> Path | None:
    """Write every report asked for, and the run folder's JSON and HTML; return the run folder's HTML report.

    A run folder that cannot be written is a warning, never a failure: the run's outcome stands.
    """
    if files.json is not None:
        report.write(files.json)
    if files.html is not None:
        write_html(report, files.html)
    if files.trace is not None:
        write_trace(report, files.trace)
    if files.run_folder is None:
        return None
    try:
        report.write(files.run_folder / "report.json")
        write_html(report, files.run_folder / "report.html")
    except OSError as exc:
        logger.warning("cannot keep the run's report in %s: %s", files.run_folder, exc.strerror or exc)
        return None
    prune_runs(files.run_folder.parent)
    return files.run_folder / "report.html"
