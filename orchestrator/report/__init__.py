"""Where a run's time went: the JSON report and the per-stage accounting behind the summary.

The run's renderings live beside it: ``timeline`` (the run as bars on lanes), ``html`` and ``svg``
(one self-contained HTML page), ``trace`` (Chrome trace events), ``junit`` (JUnit XML), ``runs``
(the run folders), ``records`` (the results, kept on disk as they arrive), ``logtail`` (the end of
a failed build's log, for the summary, page and JUnit); and the history's report: ``history``,
``history_text``, ``history_html``, ``show``.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from orchestrator import __version__
from orchestrator.atomic import atomic_write_json
from orchestrator.download.results import DownloadResult
from orchestrator.install.results import InstallResult
from orchestrator.jobs import BuildResult
from orchestrator.report.records import BUILDS, DOWNLOADS, INSTALLS, JsonArray, Records
from orchestrator.resources import usable_cpu_count
from orchestrator.samples import Samples
from orchestrator.stages import StageError


@dataclass(frozen=True, slots=True, kw_only=True)
class StageTime:
    """How one stage spent the run."""

    count: int
    span_s: float
    """From the stage's first start to its last finish."""
    busy_s: float
    """Time at least one item of the stage was running."""
    total_s: float
    """The items' own times added up (exceeds ``busy_s`` when they overlap)."""

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "span_s": round(self.span_s, 3), "busy_s": round(self.busy_s, 3),
                "total_s": round(self.total_s, 3)}


def run_context(argv: Sequence[str]) -> dict[str, str]:
    """The tool, the command line, the interpreter and the platform of this run."""
    return {
        "tool_version": __version__,
        "command_line": shlex.join(["orchestrate", *argv[1:]]),
        "interpreter": f"{sys.executable} ({platform.python_implementation()} {platform.python_version()})",
        "platform": platform.platform(),
    }


def machine() -> dict[str, int]:
    """The machine this run ran on: its CPUs, those this run may use, its memory."""
    return {"cpus": os.cpu_count() or 1, "usable_cpus": usable_cpu_count(),
            "total_memory": psutil.virtual_memory().total}


def stage_time(intervals: Iterable[tuple[float, float]]) -> StageTime:
    """How a stage spent the run, from the ``(start, end)`` of each of its items."""
    ordered = sorted(intervals)
    if not ordered:
        return StageTime(count=0, span_s=0.0, busy_s=0.0, total_s=0.0)
    busy = 0.0
    current_start, current_end = ordered[0]
    for start, end in ordered[1:]:
        if start > current_end:
            busy += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    busy += current_end - current_start
    return StageTime(
        count=len(ordered),
        span_s=max(end for _, end in ordered) - ordered[0][0],
        busy_s=busy,
        total_s=sum(end - start for start, end in ordered),
    )


@dataclass(slots=True, kw_only=True)
class RunReport:
    """Everything a run did; written as JSON with ``--report-json``. Its results are kept on disk as they arrive
    (``records``)."""

    started_at: float
    finished_at: float | None = None
    builds: Records[BuildResult] = field(default_factory=lambda: Records(BUILDS))
    downloads: Records[DownloadResult] = field(default_factory=lambda: Records(DOWNLOADS))
    installs: Records[InstallResult] = field(default_factory=lambda: Records(INSTALLS))
    errors: list[StageError] = field(default_factory=list)
    """Exceptions raised in a stage (not results that failed): each fails the run."""
    interrupted: str | None = None
    """``SIGINT``/``SIGTERM`` when the run was stopped before its end."""
    settings: dict[str, Any] = field(default_factory=dict)
    context: dict[str, str] = field(default_factory=lambda: run_context(sys.argv))
    """What ran: tool version, command line, interpreter, platform."""
    machine: dict[str, int] = field(default_factory=machine)
    """Where it ran: CPUs, usable CPUs, total memory."""
    samples: Samples = field(default_factory=Samples)
    """The run's time series, as the build scheduler sampled it."""
    resolution: dict[str, Any] | None = None
    """How the requirements were resolved (``pip``, distributions, seconds); ``None`` without resolution."""
    unmet: list[str] = field(default_factory=list)
    """Requirements of the run's wheels that no wheel of the set meets, one line each."""
    unmet_fails: bool = False
    """The set was asked complete (``-r`` without ``--no-deps``): ``unmet`` fails the run."""
    target_unmet: list[str] = field(default_factory=list)
    """Requirements of what the install target holds, met by nothing it holds (as ``pip check``): each fails the run."""

    def spool_in(self, folder: Path) -> None:
        """Keep the results in ``folder`` (the run's logs folder) rather than the temporary folder."""
        self.builds.folder = self.downloads.folder = self.installs.folder = folder

    @property
    def failed(self) -> Iterator[BuildResult]:
        """The failed builds, in the order they ended."""
        return self.builds.failed()

    @property
    def ok(self) -> bool:
        """Nothing failed: no build, download or install, no stage raised, no requirement of the set unmet."""
        unmet = (bool(self.unmet) and self.unmet_fails) or bool(self.target_unmet)
        failures = self.builds.counts["failed"] + self.downloads.counts["failed"] + self.installs.counts["failed"]
        return not self.errors and not unmet and not failures

    def stages(self) -> dict[str, StageTime]:
        return {
            "download": stage_time(self.downloads.intervals()),
            "build": stage_time(self.builds.intervals()),
            "install": stage_time(self.installs.intervals()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_s": round((self.finished_at or self.started_at) - self.started_at, 3),
            "interrupted": self.interrupted,
            **self.context,
            "machine": self.machine,
            "settings": self.settings,
            "resolution": self.resolution,
            "stages": {name: stage.to_json() for name, stage in self.stages().items()},
            "builds": JsonArray.of(self.builds),
            "downloads": JsonArray.of(self.downloads),
            "installs": JsonArray.of(self.installs),
            "errors": [error.to_json() for error in self.errors],
            "unmet": self.unmet,
            "target_unmet": self.target_unmet,
            "samples": [sample.to_json() for sample in self.samples.points],
        }

    def write(self, path: Path) -> None:
        """Write the JSON report atomically, each result read back from disk as it is written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_json(), indent=2)
