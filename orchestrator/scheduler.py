"""The event loop that runs the pipeline: downloads, builds and installs, each under its own cap.

Data flow::

    requirements ──► download pool (max_downloads threads) ──┐
                                                              ▼ sdist on disk
    sources ─────────────────────────────────────────► pending builds (planned order)
                                                              │ admission.decide(): count, memory, CPU, load
                                                              ▼
                                        worker processes (one per build, own session)
                                          │ stdout: phase / outcome messages (reader thread)
                                          ▼
                               events queue ◄── download and install completions
                                          │
                              BuildResult ─► install pool (max_installs threads) ─► target env

Only this thread changes the scheduler's state; pools and reader threads talk to
it through the events queue. Between events it samples each running build's
process tree (RSS) to enforce memory limits and timeouts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.build.worker import MESSAGE_PREFIX
from orchestrator.jobs import BuildJob, BuildResult, Status, WorkerOutcome
from orchestrator.policy import admission, planning
from orchestrator.policy.admission import (
    Candidate,
    Decision,
    Limits,
    Probe,
    QueuedBuild,
    Readings,
    RunningBuild,
)
from orchestrator.resources import CpuRate, kill_tree, pid_alive, tree_usages
from orchestrator.units import format_size

logger = logging.getLogger(__name__)

MEMORY_REQUEUE_LIMIT = 3
"""Memory requeues of one build before it waits to run alone."""

NESTED_JOBS_VARIABLES = ("MAKEFLAGS", "CMAKE_BUILD_PARALLEL_LEVEL", "MAX_JOBS", "NPY_NUM_BUILD_JOBS")


class Observer(Protocol):
    """Receives what the run does; the CLI's display implements it."""

    def event(self, message: str) -> None: ...

    def update(self, state: RunState) -> None: ...


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


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningView:
    key: str
    phase: str
    elapsed: float
    rss: int
    need: int
    peak_rss: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """A snapshot for the live display."""

    running: tuple[RunningView, ...]
    pending: int
    built: int
    failed: int
    waiting_reason: str | None
    readings: Readings | None


@dataclass(slots=True)
class _Queued:
    job: BuildJob
    need: int
    expected_duration: float | None
    size: int
    timeout: float | None
    compiles: bool = False
    attempts: int = 0
    memory_requeues: int = 0
    waits: dict[str, float] = field(default_factory=dict)
    """Seconds queued so far, by what held it back (see ``BuildResult.waits``)."""
    wait_reason: str | None = None
    """The policy's last reason for holding it back."""
    held_by: str = "queue"
    """What holds it back now: the rule the policy named, or ``queue`` (other builds are ahead)."""
    held_since: float = 0.0
    """When ``held_by`` was last accounted for."""

    def account_wait(self, now: float) -> None:
        """Add the time since the last call to what held it back then."""
        self.waits[self.held_by] = self.waits.get(self.held_by, 0.0) + max(0.0, now - self.held_since)
        self.held_since = now


@dataclass(slots=True)
class _Running:
    item: _Queued
    process: subprocess.Popen[str]
    started_at: float
    deadline: float | None
    work_dir: Path
    phase: str = "starting"
    rss: int = 0
    peak_rss: int = 0
    cpu: CpuRate = field(default_factory=CpuRate)
    """CPUs its process tree keeps busy; until it has run ``CPU_WINDOW``, it counts as one."""
    outcome: WorkerOutcome | None = None
    stop_reason: str | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def nested_jobs_environ(jobs: int, environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    """Caps for the build tools' own parallelism, except those the user set."""
    values = {
        "MAKEFLAGS": f"-j{jobs}",
        "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs),
        "MAX_JOBS": str(jobs),
        "NPY_NUM_BUILD_JOBS": str(jobs),
    }
    return {name: value for name, value in values.items() if name not in environ}


WORK_PREFIX = "orchestrate-run-"


def sweep_stale_work_dirs(parent: Path) -> None:
    """Remove the work folders of runs that were killed before they could clean up."""
    for folder in parent.glob(f"{WORK_PREFIX}*"):
        pid = folder.name[len(WORK_PREFIX):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def spawn_worker() -> subprocess.Popen[str]:
    """Start a worker process, in a session of its own, that waits for its job on stdin.

    Workers are started one build ahead, handed the build at the head of the
    queue: while the running builds go on, it imports the build machinery,
    extracts the sdist and prepares the build environment, then waits for
    admission before it calls the backend.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.build.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stage(process: subprocess.Popen[str], job: BuildJob, work_dir: Path) -> None:
    """Hand ``job`` to a waiting worker, to prepare in ``work_dir`` (its ``TMPDIR`` inside it) until :func:`admit`.

    What the build's tools leave in temporary folders goes when the work folder
    goes, even after a kill.
    """
    (work_dir / "tmp").mkdir()
    _tell(process, json.dumps({"job": job.to_json(), "work_dir": str(work_dir)}) + "\n")


def admit(process: subprocess.Popen[str]) -> None:
    """Let a staged worker call the backend."""
    _tell(process, "go\n", last=True)


def _tell(process: subprocess.Popen[str], line: str, *, last: bool = False) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(line)
        process.stdin.flush()
        if last:
            process.stdin.close()
    except BrokenPipeError:
        pass  # the worker died while waiting: its exit status tells the rest


@dataclass(slots=True)
class _Spare:
    """A worker started ahead, maybe already preparing the build at the head of the queue."""

    process: subprocess.Popen[str]
    key: str | None = None
    work_dir: Path | None = None


class BuildScheduler:
    """Runs builds in worker processes under the admission policy; one instance per run."""

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        probe: Probe,
        observer: Observer,
        spawn: Callable[[], subprocess.Popen[str]] = spawn_worker,
        on_result: Callable[[BuildResult], None] | None = None,
    ) -> None:
        self._settings = settings
        self._probe = probe
        self._observer = observer
        self._spawn = spawn
        self._on_result = on_result
        self._events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self._pending: list[_Queued] = []
        self._running: dict[str, _Running] = {}
        self._results: list[BuildResult] = []
        self._readings: Readings | None = None
        self._waiting_reason: str | None = None
        self._announced_wait: tuple[str, str | None] | None = None
        self._stopping = False
        self._plan_stale = False
        """The queue or the running builds changed since the queue was last ordered."""
        self._producers = 0
        self._spare: _Spare | None = None
        self._cleaner = ThreadPoolExecutor(1, thread_name_prefix="cleanup")
        self._lock = threading.Lock()
        self._work_root = Path(tempfile.gettempdir())

    # -- feeding -------------------------------------------------------------------
    def add(
        self,
        job: BuildJob,
        *,
        need: int,
        expected_duration: float | None = None,
        size: int = 0,
        timeout: float | None = None,
    ) -> None:
        """Queue a build; safe to call from any thread (downloads finish in pool threads).

        ``expected_duration`` (from history) and ``size`` (of the sdist) order the
        queue (see ``planning.plan_order``). ``timeout`` overrides the run's.
        """
        item = _Queued(job=job, need=need, expected_duration=expected_duration, size=size,
                       timeout=timeout or self._settings.timeout)
        self._events.put(("add", job.key, item))

    def mark_compiling(self, key: str) -> None:
        """Note that queued build ``key`` compiles code, which moves it ahead of builds with no history that do not."""
        self._events.put(("compiles", key, None))

    def hold(self) -> None:
        """Keep the loop alive until :meth:`release`: more builds may still arrive."""
        with self._lock:
            self._producers += 1

    def release(self) -> None:
        with self._lock:
            self._producers -= 1
        self._events.put(("wake", "", None))

    # -- the loop --------------------------------------------------------------------
    def run(self) -> list[BuildResult]:
        """Run until every queued build has a result; stop everything on an exception.

        Each attempt works in a folder of its own under one temporary folder per run,
        removed as the attempt ends and at the end of the run, however it ends.
        """
        temp = Path(tempfile.gettempdir())
        sweep_stale_work_dirs(temp)
        self._work_root = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=temp))
        try:
            while self._active():
                self._admit()
                self._observer.update(self._state())
                self._drain(self._settings.sample_interval)
                self._sample()
        except BaseException:
            self.stop_all("interrupted")
            raise
        finally:
            self._drop_spare()
            self._cleaner.shutdown(wait=True)
            shutil.rmtree(self._work_root, ignore_errors=True)
        return self._results

    def _active(self) -> bool:
        with self._lock:
            producers = self._producers
        return bool(self._pending or self._running or producers or not self._events.empty())

    def _drain(self, timeout: float) -> None:
        try:
            kind, key, payload = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(kind, key, payload)
            try:
                kind, key, payload = self._events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind: str, key: str, payload: Any) -> None:
        if kind == "add":
            self._enqueue(payload)
        elif kind == "compiles":
            for item in self._pending:
                if item.job.key == key:
                    item.compiles = True
                    self._plan_stale = True
        elif kind == "phase" and key in self._running:
            self._running[key].phase = payload
        elif kind == "outcome" and key in self._running:
            self._running[key].outcome = payload
        elif kind == "exit" and key in self._running:
            self._finish(self._running.pop(key), payload)
            self._plan_stale = True  # the builds left running may end sooner or later than planned

    def _enqueue(self, item: _Queued) -> None:
        item.held_by, item.held_since = "queue", time.time()
        if self._stopping:
            self._record(item, None, status=Status.NOT_STARTED, error="the run was stopped")
            return
        self._pending.append(item)
        self._plan_stale = True

    def _sort_pending(self) -> None:
        """Order the queue by the plan that, by history, ends soonest (see ``planning.plan_order``).

        Once per loop turn at most, however many builds were queued or ended in it.
        """
        self._plan_stale = False
        order = planning.plan_order(
            [QueuedBuild(key=queued.job.key, need=queued.need, expected_duration=queued.expected_duration,
                         size=queued.size, compiles=queued.compiles)
             for queued in self._pending],
            self._running_builds(),
            self._settings.limits,
            now=time.time(),
        )
        rank = {build.key: index for index, build in enumerate(order)}
        self._pending.sort(key=lambda queued: rank[queued.job.key])
        logger.debug("queue order: %s", " ".join(queued.job.key for queued in self._pending))

    # -- admission ---------------------------------------------------------------------
    def _admit(self) -> None:
        if self._stopping or not self._pending:
            self._waiting_reason = None
            return
        if self._plan_stale:
            self._sort_pending()
        now = time.time()
        for item in self._pending:
            item.account_wait(now)
            item.held_by = "queue"
        while self._pending:
            self._readings = self._probe.read()
            decision = self._decide(self._pending[0])
            if not decision.admit and decision.blocked_by == "memory_limit":
                ahead = self._backfill()
                if ahead is not None:
                    item = self._pending.pop(ahead)
                    self._observer.event(
                        f"{item.job.key}: starting ahead of {self._pending[0].job.key},"
                        " expected to leave it room by the time it can start"
                    )
                    self._start(item)
                    continue
            if not decision.admit:
                # The figures in the reason change with every sample: say it once per build and rule.
                wait = (self._pending[0].job.key, decision.blocked_by)
                if wait != self._announced_wait:
                    self._observer.event(f"{wait[0]}: {decision.reason}")
                self._announced_wait = wait
                self._waiting_reason = decision.reason
                head = self._pending[0]
                head.held_by, head.wait_reason = decision.blocked_by or "queue", decision.reason
                return
            self._waiting_reason = None
            self._announced_wait = None
            if decision.warning:
                self._observer.event(f"{self._pending[0].job.key}: {decision.warning}")
            self._start(self._pending.pop(0))

    def _decide(self, item: _Queued) -> Decision:
        assert self._readings is not None
        candidate = Candidate(key=item.job.key, need=item.need)
        return admission.decide(candidate, self._readings, self._running_builds(), self._settings.limits)

    def _backfill(self) -> int | None:
        """The index of a queued build that may start before the memory-bound head without delaying it."""
        head = Candidate(key=self._pending[0].job.key, need=self._pending[0].need)
        running = self._running_builds()
        now = time.time()
        for index, item in enumerate(self._pending[1:], start=1):
            queued = QueuedBuild(key=item.job.key, need=item.need, expected_duration=item.expected_duration,
                                 size=item.size)
            if admission.may_backfill(queued, head, running, self._settings.limits, now=now) and (
                self._decide(item).admit
            ):
                return index
        return None

    def _running_builds(self) -> list[RunningBuild]:
        """The running builds as the policy sees them, those being stopped marked so."""
        return [
            RunningBuild(
                key=key,
                need=run.item.need,
                rss=run.rss,
                started_at=run.started_at,
                expected_end=(run.started_at + run.item.expected_duration
                              if run.item.expected_duration is not None else None),
                stopping=run.stop_reason is not None,
                cpu=run.cpu.rate(),
            )
            for key, run in self._running.items()
        ]

    def _start(self, item: _Queued) -> None:
        item.account_wait(time.time())
        item.attempts += 1
        job = item.job
        process, work_dir = self._worker(item)
        admit(process)
        now = time.time()
        deadline = now + item.timeout if item.timeout else None
        run = _Running(item=item, process=process, started_at=now, deadline=deadline, work_dir=work_dir)
        run.reader = threading.Thread(target=self._read, args=(job.key, process), daemon=True)
        self._running[job.key] = run
        run.reader.start()
        self._observer.event(f"{job.key}: started (needs about {format_size(item.need)})")
        if self._pending and not self._stopping:
            head = self._pending[0]
            work_dir = self._new_work_dir(head)
            self._spare = _Spare(self._spawn(), head.job.key, work_dir)
            stage(self._spare.process, head.job, work_dir)
        elif self._producers:
            self._spare = _Spare(self._spawn())

    def _new_work_dir(self, item: _Queued) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{item.job.key}-", dir=self._work_root))

    def _worker(self, item: _Queued) -> tuple[subprocess.Popen[str], Path]:
        """A worker holding ``item`` and its work folder: the spare if it prepared ``item`` (or nothing yet), else a new one."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.process.poll() is None and spare.key in (item.job.key, None):
            if spare.key is not None and spare.work_dir is not None:
                return spare.process, spare.work_dir
            process = spare.process
        else:
            if spare is not None:  # it died, or it prepared another build, which was not the next after all
                self._cleaner.submit(self._retire, spare)
            process = self._spawn()
        work_dir = self._new_work_dir(item)
        stage(process, item.job, work_dir)
        return process, work_dir

    def _retire(self, spare: _Spare, grace: float | None = None) -> None:
        """End a spare worker (unadmitted, it exits when its stdin closes) and remove its work folder."""
        with contextlib.suppress(OSError):
            assert spare.process.stdin is not None
            spare.process.stdin.close()
        try:
            spare.process.wait(timeout=self._settings.grace if grace is None else grace)
        except subprocess.TimeoutExpired:
            kill_tree(spare.process.pid, grace=0)
            spare.process.wait()
        with contextlib.suppress(OSError):
            assert spare.process.stdout is not None
            spare.process.stdout.close()
        if spare.work_dir is not None:
            shutil.rmtree(spare.work_dir, ignore_errors=True)

    def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            self._retire(spare, grace=0.5)  # a worker with nothing to do exits at once; one preparing is killed

    def _read(self, key: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not line.startswith(MESSAGE_PREFIX):
                continue
            try:
                message = json.loads(line[len(MESSAGE_PREFIX) :])
            except json.JSONDecodeError:
                continue
            if "phase" in message:
                self._events.put(("phase", key, message["phase"]))
            elif "outcome" in message:
                self._events.put(("outcome", key, WorkerOutcome.from_json(message["outcome"])))
        self._events.put(("exit", key, process.wait()))

    # -- sampling: memory pressure and timeouts ----------------------------------------
    def _sample(self) -> None:
        if not self._running:
            return
        now = time.time()
        usages = tree_usages([run.process.pid for run in self._running.values()])
        measured_at = time.monotonic()
        for run in self._running.values():
            usage = usages[run.process.pid]
            run.rss = usage.rss
            run.peak_rss = max(run.peak_rss, run.rss)
            run.cpu.add(measured_at, usage.cpu_s)
            if run.deadline is not None and now > run.deadline and run.stop_reason is None:
                self._stop(run, "timeout")
        readings = self._probe.read()
        self._readings = readings
        running = self._running_builds()
        limits = self._settings.limits
        victim = admission.pick_victim(readings, running, limits)
        if victim is not None:
            run = self._running[victim]
            used = sum(build.rss for build in running if not build.stopping)
            if limits.memory_limit is not None and used > limits.memory_limit:
                pressure = f"builds use {format_size(used)} of the {format_size(limits.memory_limit)} limit"
            else:
                pressure = f"{format_size(readings.available_memory)} free, {format_size(limits.min_free_memory)} to keep"
            self._observer.event(
                f"{victim}: stopped under memory pressure at {format_size(run.rss)} ({pressure});"
                " it will run again"
            )
            self._stop(run, "memory")

    def _stop(self, run: _Running, reason: str) -> None:
        run.stop_reason = reason
        # Stopping waits up to the grace period; do it off the loop so other builds go on.
        threading.Thread(target=kill_tree, args=(run.process.pid,), kwargs={"grace": self._settings.grace}, daemon=True).start()

    def stop_all(self, reason: str) -> None:
        """Stop admitting and stop every running build's process tree, waiting for them.

        Each tree gets SIGTERM, then SIGKILL after the grace period; a second
        interrupt while waiting kills what is left at once.
        """
        self._stopping = True
        stoppers = []
        for run in self._running.values():
            run.stop_reason = run.stop_reason or reason
            stopper = threading.Thread(target=kill_tree, args=(run.process.pid,), kwargs={"grace": self._settings.grace})
            stopper.start()
            stoppers.append(stopper)
        try:
            for stopper in stoppers:
                stopper.join()
        except BaseException:  # noqa: BLE001 - a second interrupt: kill at once rather than wait
            for run in self._running.values():
                kill_tree(run.process.pid, grace=0)
        for key, run in list(self._running.items()):
            run.process.wait()
            self._finish(self._running.pop(key), run.process.returncode)
        for item in self._pending:
            self._record(item, None, status=Status.NOT_STARTED, error=f"the run was {reason}")
        self._pending.clear()

    # -- results -------------------------------------------------------------------------
    def _finish(self, run: _Running, returncode: int) -> None:
        if run.reader is not None and run.reader is not threading.current_thread():
            run.reader.join(timeout=1)
        # The worker leads its process group: whatever it left behind goes with it.
        with contextlib.suppress(OSError):
            os.killpg(run.process.pid, signal.SIGKILL)
        # A build folder can take a while to remove: not in the way of the next admission.
        self._cleaner.submit(shutil.rmtree, run.work_dir, ignore_errors=True)
        item = run.item
        built_anyway = run.outcome is not None and run.outcome.status is Status.BUILT
        if run.stop_reason == "memory" and not self._stopping and not built_anyway:
            item.memory_requeues += 1
            item.need = max(item.need, int(run.peak_rss * 1.2))
            alone = ""
            if item.memory_requeues >= MEMORY_REQUEUE_LIMIT and self._settings.limits.memory_limit:
                item.need = max(item.need, self._settings.limits.memory_limit)  # from now on it runs alone
                alone = ", and runs alone"
            item.attempts -= 1  # memory requeues are not failures
            self._observer.event(
                f"{item.job.key}: memory requeue {item.memory_requeues}, reached {format_size(run.peak_rss)};"
                f" now needs about {format_size(item.need)}{alone}"
            )
            self._enqueue(item)
            return
        outcome = run.outcome
        killed = outcome is None or outcome.killed_by is not None
        if outcome is not None and (run.stop_reason is not None or not killed):
            self._record(item, run, status=outcome.status, error=outcome.error, outcome=outcome)
            return
        error = self._death_reason(run, returncode)
        if run.stop_reason is None and item.attempts <= self._settings.retries and not self._stopping:
            self._observer.event(f"{item.job.key}: {error}; retrying ({item.attempts}/{self._settings.retries})")
            self._enqueue(item)
            return
        self._record(item, run, status=Status.FAILED, error=error, outcome=outcome)

    def _death_reason(self, run: _Running, returncode: int) -> str:
        if run.stop_reason == "timeout":
            return f"timed out after {run.item.timeout:g} s"
        if run.stop_reason == "memory":
            return "stopped under memory pressure"
        if run.stop_reason is not None:
            return f"stopped: the run was {run.stop_reason}"
        if run.outcome is not None and run.outcome.killed_by is not None:
            message, name = run.outcome.error or "killed", run.outcome.killed_by
        elif returncode < 0:
            name = signal.Signals(-returncode).name
            message = f"the worker was killed by {name}"
        else:
            return f"the worker exited with status {returncode} without a result; see the log"
        if name == "SIGKILL" and self._memory_short():
            message += " (likely out of memory)"
        return message

    def _memory_short(self) -> bool:
        readings = self._readings
        limits = self._settings.limits
        return readings is not None and readings.available_memory < 2 * max(limits.min_free_memory, 1)

    def _record(
        self,
        item: _Queued,
        run: _Running | None,
        *,
        status: Status,
        error: str | None,
        outcome: WorkerOutcome | None = None,
    ) -> None:
        job = item.job
        if run is None:  # never started: it waited until now
            item.account_wait(time.time())
        result = BuildResult(
            name=(outcome.name if outcome and outcome.name else job.name),
            version=(outcome.version if outcome and outcome.version else job.version),
            source=str(job.source),
            status=status,
            wheel=outcome.wheel if outcome else None,
            started_at=run.started_at if run else None,
            finished_at=time.time() if run else None,
            phases=outcome.phases if outcome else {},
            peak_rss_bytes=max(run.peak_rss if run else 0, outcome.max_rss_bytes if outcome else 0),
            cpu_s=outcome.cpu_s if outcome else 0.0,
            log=str(job.log_path) if run else None,
            error=error,
            predicted_rss_bytes=item.need,
            attempts=max(item.attempts, 1),
            memory_requeues=item.memory_requeues,
            waits={held_by: seconds for held_by, seconds in item.waits.items() if seconds > 0},
            wait_reason=item.wait_reason,
        )
        self._results.append(result)
        verb = {Status.BUILT: "built", Status.FAILED: "FAILED", Status.SKIPPED: "skipped",
                Status.NOT_STARTED: "not started"}[status]
        detail = f" {result.wheel}" if result.wheel else f": {error}" if error else ""
        took = f" in {result.wall_s:.1f} s" if run is not None else ""
        self._observer.event(f"{job.key}: {verb}{detail}{took}")
        if status is Status.FAILED and self._settings.fail_fast and not self._stopping:
            self._observer.event("--fail-fast: stopping after the first failure")
            self._stopping = True
            for queued in self._pending:
                self._record(queued, None, status=Status.NOT_STARTED, error="--fail-fast after a failure")
            self._pending.clear()
        if self._on_result is not None:
            self._on_result(result)

    def _state(self) -> RunState:
        now = time.time()
        running = tuple(
            RunningView(key=key, phase=run.phase, elapsed=now - run.started_at, rss=run.rss,
                        need=run.item.need, peak_rss=run.peak_rss)
            for key, run in self._running.items()
        )
        return RunState(
            running=running,
            pending=len(self._pending),
            built=sum(result.status is Status.BUILT for result in self._results),
            failed=sum(result.status is Status.FAILED for result in self._results),
            waiting_reason=self._waiting_reason,
            readings=self._readings,
        )
