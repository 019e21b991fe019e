"""What the build history says across runs: trends, regressions, status changes, predictions, the tail.

Pure functions over the history's records (``policy/history.py``); ``orchestrate report``
reads the records and renders what :func:`analyse` finds (``history_text.py``, ``history_html.py``).

The rules, as the report states them:

- **Regression**: a package's most recent successful build in the shown runs took more than
  :data:`REGRESSION_RATIO` times the median wall time, or peak memory, of the successful builds
  before it (the last :data:`BASELINE_BUILDS`, at least :data:`MIN_BASELINE_BUILDS` of them, same
  interpreter), and at least :data:`MIN_WALL_INCREASE_S` seconds or :data:`MIN_PEAK_INCREASE` bytes
  more, so that noise on tiny builds is not flagged.
- **Status**: over the shown runs, a package's outcomes that say something (built or failed;
  stopped builds say nothing): *newly failing* when its last build failed and the one before
  built, *fixed* the other way round, *failing* when its last two failed, *flipping* when its
  outcome changed at least :data:`FLIPPING_CHANGES` times.
- **The tail** of a run: from the last moment as many builds ran at once as ever did in the run,
  to the end of its last build. The builds still running then are what the run waited for;
  a run that built one at a time has none.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from orchestrator.policy.history import SUCCESS, BuildRecord, RunRecord

__all__ = [
    "HistoryReport",
    "PredictionMiss",
    "Regression",
    "StatusChange",
    "Tail",
    "TailBuild",
    "Trend",
    "analyse",
]

REGRESSION_RATIO: Final = 1.25
BASELINE_BUILDS: Final = 5
MIN_BASELINE_BUILDS: Final = 3
MIN_WALL_INCREASE_S: Final = 1.0
MIN_PEAK_INCREASE: Final = 32 * 1024**2
FLIPPING_CHANGES: Final = 2
REGRESSION_RULE: Final = (
    f"a regression: the latest successful build took over {REGRESSION_RATIO}x the median wall time or peak memory"
    f" of the {MIN_BASELINE_BUILDS} to {BASELINE_BUILDS} successful builds before it (same interpreter),"
    f" and at least {MIN_WALL_INCREASE_S:g} s or {MIN_PEAK_INCREASE // 1024**2} MiB more"
)
TAIL_RULE: Final = (
    "the tail: from the last moment the run had as many builds running as it ever had, to its end"
)

Metric = Literal["wall", "peak"]
State = Literal["newly failing", "fixed", "failing", "ok"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Trend:
    """One package over the shown runs, oldest first: ``None`` where the run did not build it successfully."""

    name: str
    walls: tuple[float | None, ...]
    peaks: tuple[int | None, ...]
    outcomes: tuple[str | None, ...]
    """``built``, ``failed``, ``stopped``..., or ``None`` where the run did not build it."""

    @property
    def last_wall(self) -> float | None:
        return next((wall for wall in reversed(self.walls) if wall is not None), None)

    @property
    def last_peak(self) -> int | None:
        return next((peak for peak in reversed(self.peaks) if peak is not None), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Regression:
    name: str
    run_id: int | None
    metric: Metric
    value: float
    median: float
    """The median of the successful builds before it."""
    baseline: int
    """How many builds that median is of."""

    @property
    def ratio(self) -> float:
        return self.value / self.median


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    name: str
    state: State
    flips: int
    """Times the outcome changed over the shown runs."""
    outcomes: tuple[str | None, ...]
    """Per shown run, oldest first."""
    error: str | None
    """Why its last build failed, when it did."""

    @property
    def flipping(self) -> bool:
        return self.flips >= FLIPPING_CHANGES


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionMiss:
    """A build's admitted memory need against the peak it reached."""

    name: str
    predicted: int
    peak: int

    @property
    def error(self) -> float:
        """How far the peak was above (positive) or below (negative) the prediction, as a fraction of it."""
        return (self.peak - self.predicted) / self.predicted


@dataclass(frozen=True, slots=True, kw_only=True)
class TailBuild:
    name: str
    started_at: float
    finished_at: float
    in_tail_s: float
    """Seconds of the build within the tail."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tail:
    run_id: int
    peak_concurrency: int
    starts_at: float
    """When the tail starts (seconds since the epoch)."""
    first_start: float
    """The run's first build start, and its last build end."""
    last_end: float
    builds: tuple[TailBuild, ...]
    """The builds running in the tail, the last to end first; none when the run had no tail."""

    @property
    def length_s(self) -> float:
        return self.last_end - self.starts_at

    @property
    def span_s(self) -> float:
        return self.last_end - self.first_start


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryReport:
    runs: tuple[RunRecord, ...]
    """The shown runs, oldest first."""
    trends: tuple[Trend, ...]
    """Slowest (last wall time) first."""
    regressions: tuple[Regression, ...]
    changes: tuple[StatusChange, ...]
    """Packages newly failing, fixed, failing or flipping."""
    predictions: tuple[PredictionMiss, ...]
    """Builds of the last run that had both figures, the largest miss first."""
    prediction_run: int | None
    tail: Tail | None
    """The tail of the last run that built anything."""

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [{**dataclasses.asdict(run), "makespan_s": run.makespan_s} for run in self.runs],
            "trends": [{"name": t.name, "walls": t.walls, "peaks": t.peaks, "outcomes": t.outcomes}
                       for t in self.trends],
            "regressions": [{"name": r.name, "run_id": r.run_id, "metric": r.metric, "value": r.value,
                             "median": r.median, "baseline": r.baseline, "ratio": round(r.ratio, 3)}
                            for r in self.regressions],
            "regression_rule": REGRESSION_RULE,
            "changes": [{"name": c.name, "state": c.state, "flips": c.flips, "flipping": c.flipping,
                         "outcomes": c.outcomes, "error": c.error} for c in self.changes],
            "predictions": {"run_id": self.prediction_run,
                            "builds": [{"name": p.name, "predicted": p.predicted, "peak": p.peak,
                                        "error": round(p.error, 4)} for p in self.predictions]},
            "tail": None if self.tail is None else {
                "run_id": self.tail.run_id, "peak_concurrency": self.tail.peak_concurrency,
                "length_s": round(self.tail.length_s, 3), "span_s": round(self.tail.span_s, 3),
                "builds": [{"name": b.name, "in_tail_s": round(b.in_tail_s, 3), "wall_s": round(
                    b.finished_at - b.started_at, 3)} for b in self.tail.builds]},
            "tail_rule": TAIL_RULE,
        }


def analyse(runs: Sequence[RunRecord], builds: Iterable[BuildRecord], *, package: str | None = None) -> HistoryReport:
    """What ``builds`` (every recorded build of the packages concerned, any run) say about ``runs`` (any order).

    ``package`` (canonical) keeps that package only.
    """
    shown = tuple(sorted(runs, key=lambda run: run.id))
    order = {run.id: index for index, run in enumerate(shown)}
    history = sorted(builds, key=lambda build: build.finished_at)
    if package is not None:
        history = [build for build in history if build.name == package]
    per_package: dict[str, list[BuildRecord]] = defaultdict(list)
    for build in history:
        per_package[build.name].append(build)
    in_runs: dict[str, list[BuildRecord | None]] = {}
    for name, own in per_package.items():
        slots: list[BuildRecord | None] = [None] * len(shown)
        for build in own:  # the last of a run wins
            if build.run_id in order:
                slots[order[build.run_id]] = build
        if any(slots):
            in_runs[name] = slots
    trends = sorted((_trend(name, slots) for name, slots in in_runs.items()),
                    key=lambda trend: (-(trend.last_wall or 0.0), trend.name))
    regressions = [found for name in sorted(in_runs) for found in _regressions(per_package[name], set(order))]
    changes = [change for name in sorted(in_runs) if (change := _change(name, in_runs[name])) is not None]
    last = _last_run_with_builds(shown, history)
    last_builds = [build for build in history if last is not None and build.run_id == last]
    predictions = sorted(
        (PredictionMiss(name=build.name, predicted=build.predicted_rss_bytes, peak=build.peak_rss_bytes)
         for build in last_builds if build.predicted_rss_bytes and build.peak_rss_bytes is not None),
        key=lambda miss: -abs(miss.error))
    return HistoryReport(runs=shown, trends=tuple(trends), regressions=tuple(regressions), changes=tuple(changes),
                         predictions=tuple(predictions), prediction_run=last,
                         tail=tail(last, last_builds) if last is not None else None)


def _trend(name: str, slots: Sequence[BuildRecord | None]) -> Trend:
    ok = [build if build is not None and build.status == SUCCESS else None for build in slots]
    return Trend(name=name, walls=tuple(None if build is None else build.wall_s for build in ok),
                 peaks=tuple(None if build is None else build.peak_rss_bytes for build in ok),
                 outcomes=tuple(None if build is None else build.outcome for build in slots))


def _regressions(own: Sequence[BuildRecord], shown: set[int]) -> list[Regression]:
    """The regressions of the package's most recent successful build in the shown runs (``own``: oldest first)."""
    successes = [build for build in own if build.status == SUCCESS]
    judged = next((index for index in range(len(successes) - 1, -1, -1) if successes[index].run_id in shown), None)
    if judged is None:
        return []
    latest = successes[judged]
    before = [build for build in successes[:judged] if build.python == latest.python][-BASELINE_BUILDS:]
    found = []
    checks: tuple[tuple[Metric, float], ...] = (("wall", MIN_WALL_INCREASE_S), ("peak", MIN_PEAK_INCREASE))
    for metric, floor in checks:
        value = _value(latest, metric)
        baseline = [known for build in before if (known := _value(build, metric)) is not None]
        if value is None or len(baseline) < MIN_BASELINE_BUILDS:
            continue
        median = float(statistics.median(baseline))
        if value > median * REGRESSION_RATIO and value - median >= floor:
            found.append(Regression(name=latest.name, run_id=latest.run_id, metric=metric, value=value,
                                    median=median, baseline=len(baseline)))
    return found


def _value(build: BuildRecord, metric: str) -> float | None:
    if metric == "wall":
        return build.wall_s
    return None if build.peak_rss_bytes is None else float(build.peak_rss_bytes)


def _change(name: str, slots: Sequence[BuildRecord | None]) -> StatusChange | None:
    said = [build for build in slots if build is not None and build.outcome in ("built", "failed")]
    if not said:
        return None
    failed = [build.outcome == "failed" for build in said]
    flips = sum(1 for previous, current in zip(failed, failed[1:]) if previous != current)
    state: State = "ok"
    if failed[-1]:
        state = "failing" if len(failed) < 2 or failed[-2] else "newly failing"
    elif len(failed) >= 2 and failed[-2]:
        state = "fixed"
    if state == "ok" and flips < FLIPPING_CHANGES:
        return None
    return StatusChange(name=name, state=state, flips=flips,
                        outcomes=tuple(None if build is None else build.outcome for build in slots),
                        error=said[-1].status if failed[-1] else None)


def _last_run_with_builds(shown: Sequence[RunRecord], history: Sequence[BuildRecord]) -> int | None:
    with_builds = {build.run_id for build in history}
    return next((run.id for run in reversed(shown) if run.id in with_builds), None)


def tail(run_id: int, builds: Sequence[BuildRecord]) -> Tail | None:
    """The tail of one run (see the module docstring); ``None`` without builds."""
    if not builds:
        return None
    # At equal times an end comes before a start: builds that touch never ran at once.
    points = sorted([(build.started_at, 1) for build in builds] + [(build.finished_at, -1) for build in builds])
    running = peak = 0
    starts_at = points[0][0]
    for moment, delta in points:
        if delta == -1 and running == peak:
            starts_at = moment  # the last drop below the peak, so far
        running += delta
        if running > peak:
            peak = running
    first_start, last_end = points[0][0], points[-1][0]
    in_tail = [] if peak < 2 else [
        TailBuild(name=build.name, started_at=build.started_at, finished_at=build.finished_at,
                  in_tail_s=build.finished_at - max(build.started_at, starts_at))
        for build in builds if build.finished_at > starts_at
    ]
    return Tail(run_id=run_id, peak_concurrency=peak, starts_at=starts_at if peak >= 2 else last_end,
                first_start=first_start, last_end=last_end,
                builds=tuple(sorted(in_tail, key=lambda build: -build.finished_at)))
