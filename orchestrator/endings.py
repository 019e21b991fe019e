"""How each build ends: what its worker's exit means, and the result it is recorded as.

When a build's worker exits, :meth:`Endings.finish` decides what that means for the build: it
runs again (a memory requeue, its need raised; or a retry, when its worker was killed from outside
and ``--retries`` allows), or it ends with a result whose status and error come from what its
worker reported, why the scheduler stopped it, or how its worker died. :meth:`Endings.record`
turns a build into its :class:`~orchestrator.jobs.BuildResult`: kept for the run, said in one
line, counted for the display and handed to the pipeline.

Bookkeeping only, like ``buildstate.py``: no I/O, and time from the scheduler's clock. The
scheduler keeps its queue; it puts back what :meth:`Endings.finish` says runs again.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from orchestrator.buildstate import Observer, Queued, Running, build_result
from orchestrator.executors import Exited
from orchestrator.jobs import BuildResult, Status, WorkerOutcome
from orchestrator.policy.admission import Limits, Readings


class Endings:
    """The results of one run's builds, as each ends."""

    def __init__(
        self,
        *,
        limits: Limits,
        retries: int,
        observer: Observer,
        on_result: Callable[[BuildResult], None] | None,
        on_failure: Callable[[], None],
        clock: Callable[[], float],
        epoch: float,
    ) -> None:
        """``on_failure`` is called on each failure, before the pipeline hears of it (``--fail-fast``);
        ``epoch`` added to a ``clock`` reading gives the report's epoch time."""
        self._limits = limits
        self._retries = retries
        self._observer = observer
        self._on_result = on_result
        self._on_failure = on_failure
        self._clock = clock
        self._epoch = epoch
        self.results: list[BuildResult] = []
        """Every result, in the order they ended, when no ``on_result`` takes them (a run's pipeline does: it
        keeps them on disk, not here)."""
        self.counts: collections.Counter[Status] = collections.Counter()
        """Results so far, by status."""

    def finish(self, run: Running, exited: Exited, *, stopped: str | None, stopping: bool,
               readings: Readings | None) -> bool:
        """Record how ``run`` ended, or say (True) that its build is to be queued again.

        ``stopped`` is why the run is being stopped, if it is; ``stopping``, that no build starts any more.
        """
        run.handle.close()
        item = run.item
        built_anyway = run.outcome is not None and run.outcome.status is Status.BUILT
        if run.stop_reason == "memory" and not stopping and not built_anyway:
            change = item.requeue_for_memory(run.peak_rss, self._limits.memory_limit)
            self._observer.event(f"{item.key}: {change}")
            return True
        if stopped is not None and not built_anyway and run.stop_reason != "timeout":
            # Its end is the run's, not its own: no failure, whatever the worker said as it went.
            self.record(item, run, status=Status.STOPPED, error=f"the run was {stopped}", outcome=run.outcome)
            return False
        outcome = run.outcome
        killed = outcome is None or outcome.killed_by is not None
        if outcome is not None and (run.stop_reason is not None or not killed):
            self.record(item, run, status=outcome.status, error=outcome.error, outcome=outcome)
            return False
        error = run.death_reason(exited, memory_short=self._memory_short(readings))
        if run.stop_reason is None and item.attempts <= self._retries and not stopping:
            self._observer.event(f"{item.job.key}: {error}; retrying ({item.attempts}/{self._retries})")
            return True
        self.record(item, run, status=Status.FAILED, error=error, outcome=outcome)
        return False

    def _memory_short(self, readings: Readings | None) -> bool:
        return readings is not None and readings.available_memory < 2 * max(self._limits.min_free_memory, 1)

    def record(
        self,
        item: Queued,
        run: Running | None,
        *,
        status: Status,
        error: str | None,
        outcome: WorkerOutcome | None = None,
    ) -> None:
        """The result of ``item``; ``run`` is its last attempt, ``None`` if it never started."""
        job = item.job
        now = self._clock()
        if run is None:  # never started: it waited until now
            item.account_wait(now)
        result = build_result(item, run, status=status, error=error, outcome=outcome,
                              started_at=self._epoch + run.started_at if run else None,
                              finished_at=self._epoch + now if run else None)
        if self._on_result is None:
            self.results.append(result)
        self.counts[status] += 1
        verb = "FAILED" if status is Status.FAILED else status.value
        detail = f" {result.wheel}" if result.wheel else f": {error}" if error else ""
        took = f" in {result.wall_s:.1f} s" if run is not None else ""
        took += f" on {result.host}" if result.host else ""
        self._observer.event(f"{job.key}: {verb}{detail}{took}")
        if status is Status.FAILED:
            self._on_failure()
        if self._on_result is not None:
            self._on_result(result)
