"""The schedule arithmetic of ``memory_pressure.py``: bounds, the CP-SAT ideal, and the peers' settings.

Pure functions over the builds' solo durations and peaks: the packing lower bound, the best schedule of
the same model (OR-Tools' CP-SAT, imported only when asked for: ``ortools`` is a benchmark's tool, never a
dependency of the package), the count cap a uv user must choose so the builds can never exceed the limit,
and the ``--memfree`` that makes GNU parallel start a build only while one more fits under the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


def packing_bound(durations: list[float], peaks: list[int], limit: int, max_builds: int) -> dict[str, float]:
    """The parts of the packing lower bound on the makespan; the bound is the largest."""
    return {
        "longest": max(durations),
        "memory": sum(peak * duration for peak, duration in zip(peaks, durations)) / limit,
        "count": sum(durations) / max_builds,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Optimum:
    """The best schedule CP-SAT found for the model of :func:`optimal_schedule`."""

    makespan_s: float
    """When the last build ends."""
    proven_at_least_s: float
    """The lower bound CP-SAT proved; equal to ``makespan_s`` when the schedule is proven optimal."""
    starts_s: tuple[float, ...]
    """When each build starts, in the order the builds were given."""

    @property
    def proven(self) -> bool:
        return self.proven_at_least_s >= self.makespan_s


def optimal_schedule(durations: list[float], peaks: list[int], limit: int, max_builds: int,
                     seconds: float) -> Optimum | None:
    """The best schedule of the bound's model that CP-SAT finds in ``seconds``; ``None`` without ``ortools``.

    Each build holds its peak (rounded up to a MiB) for its duration (rounded to a centisecond); at most
    ``max_builds`` run at once and their peaks stay under ``limit``. A build whose peak is above the limit
    runs alone, as the admission controller starts it (its demand is the whole limit).
    """
    try:
        from ortools.sat.python import cp_model
    except ImportError:
        return None
    model = cp_model.CpModel()
    ticks = [round(duration * 100) for duration in durations]
    capacity = limit // MIB
    horizon = sum(ticks)
    intervals, starts, ends = [], [], []
    for tick in ticks:
        start, end = model.new_int_var(0, horizon, ""), model.new_int_var(0, horizon, "")
        intervals.append(model.new_interval_var(start, tick, end, ""))
        starts.append(start)
        ends.append(end)
    model.add_cumulative(intervals, [min(-(-peak // MIB), capacity) for peak in peaks], capacity)
    model.add_cumulative(intervals, [1] * len(ticks), max_builds)
    makespan = model.new_int_var(0, horizon, "makespan")
    model.add_max_equality(makespan, ends)
    model.minimize(makespan)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return Optimum(makespan_s=solver.objective_value / 100, proven_at_least_s=solver.best_objective_bound / 100,
                   starts_s=tuple(solver.value(start) / 100 for start in starts))


def safe_cap(limit: int, peaks: list[int]) -> int:
    """The most builds at once that can never exceed ``limit``, whichever run together: the limit over the
    largest peak, at least 1 (a count cap cannot do better without knowing which builds are which)."""
    return max(1, limit // max(peaks))


def memfree_setting(free: int, limit: int, largest: int) -> int:
    """GNU parallel's ``--memfree`` for a run whose builds may use ``limit`` of the ``free`` memory there is
    when it starts: parallel starts a job only while free memory is at least this, that is, only while the
    builds use at most ``limit - largest``, so that one more build of the largest peak still fits.

    A build above the limit leaves no room at all: the setting is then ``free`` itself (start only when
    nothing runs, as far as free memory tells)."""
    return free - max(limit - largest, 0)
