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
from functools import partial
from pathlib import Path

from orchestrator.atomic import atomic_write
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


def write_reports(report: RunReport, files: ReportFiles) -> tuple[Path | None, list[str]]:
    """Write the run folder's JSON and HTML, and every report asked for.

    Returns the run folder's HTML report (``None`` without one) and a line for each file the user
    named that could not be written. A run folder that cannot be written is a warning only. A file
    the run folder already holds is copied to where the user asked for it, not written again from
    the results.
    """
    kept: dict[str, Path] = {}
    if files.run_folder is not None:
        try:
            report.write(files.run_folder / "report.json")
            kept["--report-json"] = files.run_folder / "report.json"
            write_html(report, files.run_folder / "report.html")
            kept["--report-html"] = files.run_folder / "report.html"
        except OSError as exc:
            logger.warning("cannot keep the run's report in %s: %s", files.run_folder, exc.strerror or exc)
        else:
            prune_runs(files.run_folder.parent)
    problems = []
    asked = (("--report-json", files.json, report.write), ("--report-html", files.html, partial(write_html, report)),
             ("--trace", files.trace, partial(write_trace, report)))
    for option, path, write in asked:
        if path is None:
            continue
        try:
            if option in kept:
                _copy(kept[option], path)
            else:
                write(path)
        except OSError as exc:
            problems.append(f"{option} {path}: cannot write it ({exc.strerror or exc}); give a path in a writable"
                            " folder")
    return kept.get("--report-html"), problems


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as data, atomic_write(target) as out:
        shutil.copyfileobj(data, out)
