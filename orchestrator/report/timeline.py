"""The run as bars on lanes: what the HTML report draws and the trace lists.

Pure functions over the run's results. Each build that ran is one bar, from its worker's
first phase (a worker prepares a build before its admission) to its end, split into
segments by what it was doing: ``preparing`` (extract, environment, build requirements,
``get_requires_for_build_wheel``), ``waiting`` (prepared, waiting for admission),
``building`` (``build_wheel``), ``publishing`` (checking and placing the wheel). Downloads and
installs are bars of their own, on lanes of their own. :func:`assign_lanes` puts bars on
lanes so that no two overlap on one lane, with as few lanes as the busiest moment needs;
:func:`lay_out` does it in a pass over the results and draws the bars in a second.
"""

from __future__ import annotations

import dataclasses
import heapq
from array import array
from collections.abc import Iterable, Iterator, Sequence
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


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the bars of a run go: made in one pass over its results, drawn in a second (:meth:`bars`), so
    that a run of thousands of builds never holds its bars, or its results, all at once."""

    records: dict[Group, Iterable[Any]]
    """The results of each group, read again by :meth:`bars`."""
    origin: float
    lanes: dict[Group, array[int]]
    """The lane of each result of each group, in the order read; -1: no bar."""
    counts: dict[Group, int]
    """Lanes each group uses."""
    end: float
    """Where the last bar ends (seconds from ``origin``; 0 without bars)."""

    def bars(self) -> Iterator[Bar]:
        """Every bar, on its lane: the builds', then the downloads', then the installs', each in their order."""
        for group in GROUPS:
            lanes = self.lanes[group]
            for index, record in enumerate(self.records[group]):
                if index < len(lanes) and lanes[index] >= 0:
                    draft = _draft(group, record, self.origin)
                    assert draft is not None
                    yield dataclasses.replace(draft, lane=lanes[index])


def lay_out(builds: Iterable[BuildResult], downloads: Iterable[Any], installs: Iterable[Any],
            origin: float) -> Layout:
    """Put every bar of the run on a lane of its group (each iterable is read here, and again by the bars)."""
    records: dict[Group, Iterable[Any]] = {"build": builds, "download": downloads, "install": installs}
    lanes: dict[Group, array[int]] = {}
    end = 0.0
    for group in GROUPS:
        intervals: list[tuple[float, float]] = []
        drawn = array("q")
        count = 0
        for index, record in enumerate(records[group]):
            count += 1
            draft = _draft(group, record, origin)
            if draft is not None:
                intervals.append((draft.start, draft.end))
                drawn.append(index)
                end = max(end, draft.end)
        lanes[group] = array("i", [-1]) * count
        for index, lane in zip(drawn, assign_lanes(intervals), strict=True):
            lanes[group][index] = lane
    counts = {group: max(lanes[group], default=-1) + 1 for group in GROUPS}
    return Layout(records=records, origin=origin, lanes=lanes, counts=counts, end=end)


def bars(builds: Iterable[BuildResult], downloads: Iterable[Any], installs: Iterable[Any],
         origin: float) -> list[Bar]:
    """Every bar of the run, each on a lane of its group; times in seconds from ``origin``."""
    return list(lay_out(builds, downloads, installs, origin).bars())


def _draft(group: Group, record: Any, origin: float) -> Bar | None:
    """A result's bar, not yet on a lane (``None``: it has none): from the first segment (or the admission)
    to the last (or the end), the wider."""
    if group == "build":
        segments = build_segments(record, origin) if _ran(record) else ()
        version = record.version
    elif record.started_at is not None and record.finished_at is not None:
        category: Category = "download" if group == "download" else "install"
        segments = (Segment(category=category, phase=category, start=record.started_at - origin,
                            end=max(record.finished_at, record.started_at) - origin),)
        version = record.version or None
    else:
        segments = ()
    if not segments:
        return None
    start = min(segments[0].start, *([record.started_at - origin] if record.started_at is not None else []))
    end = max(segments[-1].end, *([record.finished_at - origin] if record.finished_at is not None else []))
    return Bar(group=group, lane=0, name=record.name, version=version, status=record.status.value, start=start,
               end=max(end, start), segments=segments, record=record)
