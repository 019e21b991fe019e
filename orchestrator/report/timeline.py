"""The run as bars on lanes: what the HTML report draws and the trace lists.

Pure functions over the run's results. Each build that ran is one bar, from its worker's
first phase (a worker prepares a build before its admission) to its end, split into
segments by what it was doing: ``preparing`` (extract, environment, build requirements,
``get_requires_for_build_wheel``), ``waiting`` (prepared, waiting for admission),
``building`` (``build_wheel``), ``publishing`` (checking and placing the wheel). Downloads and
installs are bars of their own, on lanes of their own. :func:`assign_lanes` puts bars on
lanes so that no two overlap on one lane, with as few lanes as the busiest moment needs.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.jobs import BuildResult, PhaseSpan, Status

Category = Literal["preparing", "waiting", "building", "publishing", "download", "install"]
CATEGORIES: tuple[Category, ...] = ("preparing", "waiting", "building", "publishing", "download", "install")

Group = Literal["build", "download", "install"]
GROUPS: tuple[Group, ...] = ("build", "download", "install")

PHASE_CATEGORY: dict[str, Category] = {
    "extract": "preparing",
    "create_env": "preparing",
    "install_requires": "preparing",
    "get_requires": "preparing",
    "admission": "waiting",
    "backend": "building",
    "publish": "publishing",
}
"""The report's category of each worker phase (``jobs.PHASES``, and the wait for admission)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    category: Category
    phase: str
    """The worker's phase (``backend``...), or the category itself for a bar of one segment."""
    start: float
    """Seconds from the run's start."""
    end: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One build, download or install on its lane."""

    group: Group
    lane: int
    """From 0, within its group."""
    name: str
    version: str | None
    status: str
    start: float
    """Seconds from the run's start."""
    end: float
    segments: tuple[Segment, ...]
    """In order, not overlapping, within ``start`` and ``end``."""
    record: Any
    """The ``BuildResult``, ``DownloadResult`` or ``InstallResult`` it draws."""

    @property
    def failed(self) -> bool:
        return self.status == Status.FAILED.value

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


def assign_lanes(intervals: Sequence[tuple[float, float]]) -> list[int]:
    """The lane of each ``(start, end)``: no two that overlap share a lane, and no more lanes are used
    than intervals overlap at the busiest moment (the greedy colouring of an interval graph, by start).

    An interval that starts exactly where another ends may take its lane; each takes the lowest lane free.
    """
    order = sorted(range(len(intervals)), key=lambda index: (intervals[index][0], intervals[index][1]))
    lanes = [0] * len(intervals)
    busy: list[tuple[float, int]] = []  # (end, lane) of the intervals on a lane now
    free: list[int] = []
    used = 0
    for index in order:
        start, end = intervals[index]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, used = used, used + 1
        lanes[index] = lane
        heapq.heappush(busy, (max(end, start), lane))
    return lanes


def build_segments(result: BuildResult, origin: float) -> tuple[Segment, ...]:
    """The segments of one build, relative to ``origin``: its worker's spans, or, without them
    (a worker that died without an outcome), one ``building`` segment from admission to the end."""
    spans: Sequence[PhaseSpan] = result.spans
    if not spans:
        if result.started_at is None or result.finished_at is None:
            return ()
        return (Segment(category="building", phase="building", start=result.started_at - origin,
                        end=max(result.finished_at, result.started_at) - origin),)
    segments: list[Segment] = []
    cursor = float("-inf")
    for span in sorted(spans, key=lambda span: span.start):
        start = max(span.start - origin, cursor)  # clocks round: never let two segments overlap
        end = max(span.end - origin, start)
        segments.append(Segment(category=PHASE_CATEGORY.get(span.phase, "preparing"), phase=span.phase,
                                start=start, end=end))
        cursor = end
    return tuple(segments)


def _ran(result: BuildResult) -> bool:
    """Whether a worker ran it (skipped, placed and never started builds have no bar)."""
    return bool(result.spans) or (result.log is not None and result.started_at is not None
                                  and result.status is not Status.NOT_STARTED)


def bars(builds: Iterable[BuildResult], downloads: Iterable[Any], installs: Iterable[Any],
         origin: float) -> list[Bar]:
    """Every bar of the run, each on a lane of its group; times in seconds from ``origin``."""
    drafts: list[Bar] = []
    for result in builds:
        segments = build_segments(result, origin) if _ran(result) else ()
        if segments:
            drafts.append(_draft("build", result, result.version, segments, origin))
    others: tuple[tuple[Group, Category, Iterable[Any]], ...] = (
        ("download", "download", downloads), ("install", "install", installs))
    for group, category, records in others:
        for record in records:
            if record.started_at is not None and record.finished_at is not None:
                segment = Segment(category=category, phase=category, start=record.started_at - origin,
                                  end=max(record.finished_at, record.started_at) - origin)
                drafts.append(_draft(group, record, record.version or None, (segment,), origin))
    placed: list[Bar] = []
    for group in GROUPS:
        mine = [bar for bar in drafts if bar.group == group]
        lanes = assign_lanes([(bar.start, bar.end) for bar in mine])
        placed += [dataclasses.replace(bar, lane=lane) for bar, lane in zip(mine, lanes, strict=True)]
    return placed


def _draft(group: Group, record: Any, version: str | None, segments: tuple[Segment, ...], origin: float) -> Bar:
    """A bar not yet on a lane: from the first segment (or the admission) to the last (or the end), the wider."""
    start = min(segments[0].start, *([record.started_at - origin] if record.started_at is not None else []))
    end = max(segments[-1].end, *([record.finished_at - origin] if record.finished_at is not None else []))
    return Bar(group=group, lane=0, name=record.name, version=version, status=record.status.value, start=start,
               end=max(end, start), segments=segments, record=record)
