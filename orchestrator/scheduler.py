"""The build scheduler: a state machine that admits queued builds into workers under the admission policy.

Data flow::

    add() / mark_compiling() / release()        workers (executor): PhaseStarted,
      (any thread: downloads, estimates)         OutcomeReported, Exited
                      │                                   │
                      ▼                                   ▼
                 events queue ── read, and the state changed, by the run() thread only
                      │
                      ▼
      pending builds ─ planning.plan_order ─► head ─ admission.decide() ─► admit() ─► running builds
         ▲                  (backfill: admission.may_backfill)                          │
         │   after each start, the next head is staged on a worker that prepares it    │ sample(): RSS, CPU,
         │   while it waits (kept for that build until it is admitted)                  │ deadline, memory victim
         └──── memory requeue, retry ◄── Endings.finish ◄── Exited ◄───────────────────┘
                                               │ (endings.py)
                                               ▼
                                      BuildResult ─► on_result (the pipeline: history, installs)

Two seams are injected: the :class:`~orchestrator.executors.Executor` whose workers
run the builds (processes, signals and folders live there) and a monotonic
``clock`` for deadlines, waits and durations; tests drive the scheduler with a fake
of each and spawn nothing.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.buildstate import (
    MAX_PREPARED,
    Observer,
    Queued,
    Running,
    RunningView,
    RunState,
    StopReason,
    WorkersAhead,
)
from orchestrator.endings import Endings
from orchestrator.executors import (
    Executor,
    Exited,
    OutcomeReported,
    PhaseStarted,
    StoppedForMemory,
    WorkerEvent,
)
from orchestrator.executors.local import LocalExecutor
from orchestrator.jobs import BuildResult, JobSpec, Status
from orchestrator.policy import admission, planning
from orchestrator.policy.admission import (
    Candidate,
    Decision,
    Limits,
    Probe,
    Readings,
    RunningBuild,
)
from orchestrator.samples import Sample, Samples
from orchestrator.units import format_size

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds from any fixed point, never going back: ``time.monotonic``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerSettings:
    limits: Limits
    timeout: float | None = None
    """Seconds a build may run before its process tree is stopped."""
    retries: int = 0
    """Extra attempts for a build whose worker was killed from outside."""
    fail_fast: bool = False
    sample_interval: float = 0.2
    grace: float = 3.0
    """Seconds between SIGTERM and SIGKILL when stopping a build."""


@dataclass(frozen=True, slots=True)
class _Added:
    item: Queued


@dataclass(frozen=True, slots=True)
class _Compiles:
    key: str


@dataclass(frozen=True, slots=True)
class _Released:
    """A producer is done: the loop may be able to end."""


@dataclass(frozen=True, slots=True)
class _Cancelled:
    reason: str


_Event = WorkerEvent | _Added | _Compiles | _Released | _Cancelled


class BuildScheduler:
    """Runs builds in workers under the admission policy; one instance per run.

    ``executor`` runs the builds (default: worker processes on this machine);
    ``clock`` is read for deadlines, waits and durations (default: ``time.monotonic``).
    """

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        probe: Probe,
        observer: Observer,
        on_result: Callable[[BuildResult], None] | None = None,
        executor: Executor | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._settings = settings
        self._probe = probe
        self._observer = observer
        self._executor: Executor = executor if executor is not None else LocalExecutor()
        self._clock = clock
        self._epoch = time.time() - clock()
        """Added to a clock reading, the epoch time the report's timestamps are in."""
        self._events: queue.Queue[_Event] = queue.Queue()
        self._pending: list[Queued] = []
        self._running: dict[str, Running] = {}
        self._ahead = WorkersAhead(self._executor)
        self._readings: Readings | None = None
        self._sampled_at = -math.inf
        self._waiting_reason: str | None = None
        self._announced_waits: dict[str, set[str | None]] = {}
        """The rules of every wait said so far, by build; forgotten as the build starts (else one a build)."""
        self._stopping = False
        """No more admissions: --fail-fast, or the run is being stopped."""
        self._stopped: str | None = None
        """Why the run is being stopped (:meth:`stop_all`), once it is."""
        self._plan_stale = False
        """The queue or the running builds changed since the queue was last ordered."""
        self._plan_follows_ends = False
        """The last plan depends on when running builds end (``planning.ends_matter``): plan again as each ends."""
        self._held: Queued | None = None
        """The build a rule of the policy held back at the last turn; the others wait for the ``queue``."""
        self._capped_at: int | None = None
        """How many builds ran when the count cap held :attr:`_held` back at the last turn; ``None``: another rule."""
        self._producers = 0
        self._lock = threading.Lock()
        self._ends = Endings(limits=settings.limits, retries=settings.retries, observer=observer,
                             on_result=on_result, on_failure=self._failed, clock=clock, epoch=self._epoch)
        self.samples = Samples()
        """The run's time series, for the report: a point per sample, thinned (``samples.py``)."""

    # -- feeding -------------------------------------------------------------------
    def add(
        self,
        job: JobSpec,
        *,
        need: int,
        expected_duration: float | None = None,
        size: int = 0,
        timeout: float | None = None,
    ) -> None:
        """Queue a build; safe to call from any thread (downloads finish in pool threads).

        ``expected_duration`` (from history) and ``size`` (of the sdist) order the
        queue (see ``planning.plan_order``). ``timeout`` overrides the run's. ``job`` is
        made into the worker's :class:`~orchestrator.jobs.BuildJob` only as it is staged.
        """
        item = Queued(job=job, need=need, expected_duration=expected_duration, size=size,
                       timeout=timeout or self._settings.timeout)
        self._events.put(_Added(item))

    def mark_compiling(self, key: str) -> None:
        """Note that queued build ``key`` compiles code, which moves it ahead of builds with no history that do not."""
        self._events.put(_Compiles(key))

    def hold(self) -> None:
        """Keep the loop alive until :meth:`release`: more builds may still arrive."""
        with self._lock:
            self._producers += 1

    def release(self) -> None:
        with self._lock:
            self._producers -= 1
        self._events.put(_Released())

    def cancel(self, reason: str) -> None:
        """Stop the run from any thread, as :meth:`stop_all` does: ``reason`` ends "the run was ..."."""
        self._events.put(_Cancelled(reason))

    # -- the loop --------------------------------------------------------------------
    def run(self) -> list[BuildResult]:
        """Run until every queued build has a result; stop everything on an exception. Returns the results,
        unless ``on_result`` took each as it came."""
        self._executor.start(self._events.put)
        try:
            while self._active():
                self._admit()
                self._observer.update(self._state())
                interval = admission.sample_interval(self._readings, self._running_builds(), self._settings.limits,
                                                     self._settings.sample_interval)
                # Events (a build's phases, its end) do not bring the next sample forward: sampling every
                # running tree at each one cost a no-op build a tenth of the run's own CPU.
                timed_out = self._drain(max(0.0, self._sampled_at + interval - self._clock()))
                if timed_out or self._clock() >= self._sampled_at + interval:
                    self._sample()
        except BaseException:
            self.stop_all("interrupted")
            raise
        finally:
            self._ahead.close()
            self._executor.close()
        return self._ends.results

    def _producing(self) -> bool:
        with self._lock:
            return self._producers > 0

    def _active(self) -> bool:
        return bool(self._pending or self._running or self._producing() or not self._events.empty())

    def _drain(self, timeout: float) -> bool:
        """Handle the next event (waiting up to ``timeout`` seconds for one), then every one already queued;
        whether none came in time."""
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return True
        while True:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return False

    def _handle(self, event: _Event) -> None:
        match event:
            case _Added(item):
                self._enqueue(item)
            case _Cancelled(reason):
                self.stop_all(reason)
            case _Compiles(key):
                for item in self._pending:
                    if item.key == key:
                        item.compiles = True
                        self._plan_stale = True
            case PhaseStarted(key, phase) if key in self._running:
                self._running[key].phase = phase
            case StoppedForMemory(key, host, rss, pressure) if key in self._running:
                run = self._running[key]
                run.peak_rss = max(run.peak_rss, rss)
                if run.stop_reason is None:  # requeued as one stopped here would be
                    run.stop_reason = "memory"
                    self._stopped_for_memory(run, rss, pressure, host)
            case OutcomeReported(key, outcome) if key in self._running:
                self._running[key].outcome = outcome
            case Exited(key) if key in self._running:
                self._finish(self._running.pop(key), event)
                # The builds left running may end sooner or later than planned.
                self._plan_stale = self._plan_stale or self._plan_follows_ends

    def _enqueue(self, item: Queued) -> None:
        item.held_by, item.held_since = "queue", self._clock()
        if item.queued_at is None:
            item.queued_at = self._epoch + item.held_since
        if self._stopping:
            self._ends.record(item, None, status=Status.NOT_STARTED, error="the run was stopped")
            return
        self._pending.append(item)
        self._plan_stale = True

    def _sort_pending(self) -> None:
        """Order the queue by the plan that, by history, ends soonest (see ``planning.plan_order``).

        Once per loop turn at most, however many builds were queued or ended in it.
        """
        self._plan_stale = False
        limits = self._settings.limits
        if not planning.simulates((item.expected_duration for item in self._pending), limits):
            # The plan is the longest-first order: the queue is ordered as it is, with no view of it made for the
            # planner (a QueuedBuild, a rank and a key tuple each: about 350 bytes a build of a queue of thousands).
            self._pending = admission.order_queue(self._pending)
            self._plan_follows_ends = False
        else:
            queued, running = [item.as_policy() for item in self._pending], self._running_builds()
            order = planning.plan_order(queued, running, limits, now=self._clock())
            self._plan_follows_ends = planning.ends_matter(queued, running, limits)
            rank = {build.key: index for index, build in enumerate(order)}
            self._pending.sort(key=lambda queued: rank[queued.key])
        if logger.isEnabledFor(logging.DEBUG):  # not a string of every key, unasked
            logger.debug("queue order: %s", " ".join(queued.key for queued in self._pending))

    # -- admission ---------------------------------------------------------------------
    def _admit(self) -> None:
        if self._stopping or not self._pending:
            self._waiting_reason = None
            return
        if self._plan_stale:
            self._sort_pending()
        elif self._held is self._pending[0] and self._capped_at == len(self._running):
            # The count cap holds the same head as at the last turn (a running build's phase came): the decision
            # is the same whatever the readings, and its wait goes on accruing to the cap.
            return
        now = self._clock()
        self._capped_at = None
        if self._held is not None:  # its wait so far goes to the rule; from now on, to the queue unless held again
            self._held.account_wait(now)
            self._held.held_by, self._held = "queue", None
        while self._pending:
            if self._readings is None or len(self._running) < self._settings.limits.max_builds:
                self._readings = self._probe.read()  # at the count cap the readings decide nothing
            decision = self._decide(self._pending[0])
            if not decision.admit and decision.blocked_by == "memory_limit":
                ahead = self._backfill()
                if ahead is not None:
                    item = self._pending.pop(ahead)
                    self._observer.event(
                        f"{item.key}: starting ahead of {self._pending[0].key},"
                        " expected to leave it room by the time it can start"
                    )
                    self._start(item)
                    continue
            if not decision.admit:
                # The figures in the reason change with every sample: say it once per build and rule,
                # however often other waits come in between (another rule, another build at the head).
                key = self._pending[0].key
                announced = self._announced_waits.setdefault(key, set())
                if decision.blocked_by not in announced:
                    announced.add(decision.blocked_by)
                    self._observer.event(f"{key}: {decision.reason}")
                self._waiting_reason = decision.reason
                head = self._pending[0]
                head.account_wait(now)  # its wait until now went to the queue
                head.held_by, head.wait_reason = decision.blocked_by or "queue", decision.reason
                self._held = head
                self._capped_at = len(self._running) if decision.blocked_by == "builds" else None
                return
            self._waiting_reason = None
            if decision.warning:
                self._observer.event(f"{self._pending[0].key}: {decision.warning}")
            self._start(self._pending.pop(0))

    def _decide(self, item: Queued) -> Decision:
        assert self._readings is not None
        candidate = Candidate(key=item.key, need=item.need)
        return admission.decide(candidate, self._readings, self._running_builds(), self._settings.limits)

    def _backfill(self) -> int | None:
        """The index of a queued build that may start before the memory-bound head without delaying it."""
        head = Candidate(key=self._pending[0].key, need=self._pending[0].need)
        running = self._running_builds()
        now = self._clock()
        for index, item in enumerate(self._pending[1:], start=1):
            if admission.may_backfill(item.as_policy(), head, running, self._settings.limits, now=now) and (
                self._decide(item).admit
            ):
                return index
        return None

    def _running_builds(self) -> list[RunningBuild]:
        return [run.as_policy() for run in self._running.values()]

    def _start(self, item: Queued) -> None:
        now = self._clock()
        item.account_wait(now)
        if item is self._held:
            self._held = None
        item.attempts += 1
        key = item.key
        self._announced_waits.pop(key, None)
        handle = self._ahead.take(item)
        handle.admit(item.need)
        deadline = now + item.timeout if item.timeout else None
        self._running[key] = Running(item=item, handle=handle, started_at=now, deadline=deadline)
        self._observer.event(f"{key}: started (needs about {format_size(item.need)})")
        # The next builds' workers start now, ahead of the next admissions, while the running builds go on: two, so
        # that a short build's slot never waits for the one preparation in progress to end.
        if self._pending and not self._stopping:
            for queued in self._pending[:MAX_PREPARED]:
                self._ahead.prepare(queued)
        elif self._producing() and not self._stopping:
            self._ahead.start_idle()

    # -- sampling: memory pressure and timeouts ----------------------------------------
    def _sample(self) -> None:
        self._sampled_at = self._clock()
        if self._running:
            self._sample_running()
        if self._readings is not None:
            readings = self._readings
            self.samples.add(Sample(
                at=self._epoch + self._clock(), running=len(self._running), waiting=len(self._pending),
                preparing=self._ahead.preparing, rss=sum(run.rss for run in self._running.values()),
                reserved=sum(max(run.item.need, run.rss) for run in self._running.values()),
                available_memory=readings.available_memory, cpu_busy=readings.cpu_busy, cpu_count=readings.cpu_count))

    def _sample_running(self) -> None:
        """Measure each running build; stop those past their deadline, and one under memory pressure."""
        usages = [(run, run.handle.sample()) for run in self._running.values()]
        now = self._clock()
        for run, usage in usages:
            run.rss = usage.rss
            run.peak_rss = max(run.peak_rss, run.rss)
            run.cpu.add(now, usage.cpu_s)
            run.add_wait(usage.cpu_wait_s)
            if run.deadline is not None and now > run.deadline and run.stop_reason is None:
                self._stop(run, "timeout")
        readings = self._probe.read()
        self._readings = readings
        running = self._running_builds()
        limits = self._settings.limits
        victim = admission.pick_victim(readings, running, limits)
        if victim is not None:
            run = self._running[victim]
            self._stopped_for_memory(run, run.rss, admission.pressure_reason(readings, running, limits))
            self._stop(run, "memory")

    def _stopped_for_memory(self, run: Running, rss: int, pressure: str, host: str | None = None) -> None:
        """Say a build is stopped under memory pressure (here, or by its farm machine): it will run again."""
        where = f" on {host}" if host else ""
        self._observer.event(f"{run.item.key}: stopped under memory pressure{where} at {format_size(rss)}"
                             f" ({pressure}); it will run again")

    def _stop(self, run: Running, reason: StopReason) -> None:
        run.stop_reason = reason
        run.handle.stop(self._settings.grace)

    def stop_all(self, reason: str) -> None:
        """Stop admitting and stop every running build, waiting for their workers to exit.

        Each gets the grace period to stop; a second interrupt while waiting kills
        what is left at once.
        """
        self._stopping = True
        self._stopped = reason
        for run in self._running.values():
            run.stop_reason = run.stop_reason or "run"
            run.handle.stop(self._settings.grace)
        try:
            self._await_exits()
        except BaseException:  # noqa: BLE001 - a second interrupt: kill at once rather than wait
            for run in self._running.values():
                run.handle.kill()
            self._await_exits()
        self._drop_pending(f"the run was {reason}")

    def _await_exits(self) -> None:
        while self._running:
            self._drain(self._settings.sample_interval)

    # -- results -------------------------------------------------------------------------
    def _finish(self, run: Running, exited: Exited) -> None:
        if self._ends.finish(run, exited, stopped=self._stopped, stopping=self._stopping, readings=self._readings):
            self._enqueue(run.item)

    def _failed(self) -> None:
        if self._settings.fail_fast and not self._stopping:
            self._observer.event("--fail-fast: stopping after the first failure")
            self._stopping = True
            self._drop_pending("--fail-fast after a failure")

    def _drop_pending(self, error: str) -> None:
        """Record every queued build as never started, and release the workers preparing them."""
        dropped, self._pending = self._pending, []
        for item in dropped:
            self._ahead.drop(item.key)
            self._ends.record(item, None, status=Status.NOT_STARTED, error=error)

    def _state(self) -> RunState:
        now = self._clock()
        running = tuple(
            RunningView(key=key, phase=run.phase, elapsed=now - run.started_at, rss=run.rss,
                        need=run.item.need, peak_rss=run.peak_rss)
            for key, run in self._running.items()
        )
        return RunState(
            running=running,
            pending=len(self._pending),
            built=self._ends.counts[Status.BUILT],
            failed=self._ends.counts[Status.FAILED],
            waiting_reason=self._waiting_reason,
            readings=self._readings,
        )
