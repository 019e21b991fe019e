"""What the scheduler knows of each build: queued, then running, then the result it ends as;
the workers it started ahead of their builds' admission; and what it shows of the run (:class:`RunState`).

Plain bookkeeping with no I/O and no clock of its own: the scheduler passes the
times in (readings of its monotonic clock) and decides when each step happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from orchestrator.executors import Executor, Exited, WorkerHandle
from orchestrator.jobs import BuildJob, BuildResult, JobSpec, Status, WorkerOutcome
from orchestrator.policy.admission import QueuedBuild, Readings, RunningBuild
from orchestrator.resources import CPU_WINDOW, CpuRate
from orchestrator.units import format_size

MEMORY_REQUEUE_LIMIT = 3
"""Memory requeues of one build before it waits to run alone."""

MAX_PREPARED = 2
"""Workers preparing queued builds ahead of their admission, at most: the next two builds' (or one's and
that of a build another went ahead of, which keeps its worker and its preparation for when its turn comes)."""

StopReason = Literal["timeout", "memory", "run"]
"""Why the scheduler stopped a running build: its deadline, memory pressure, or the whole run stopping."""


@dataclass(slots=True)
class Queued:
    """A build waiting for admission (again, after a requeue or a retry).

    Thousands wait at once: it holds what planning and admission read, and its job in compact form
    (:class:`~orchestrator.jobs.JobSpec`), made into a :class:`BuildJob` when a worker takes it.
    """

    job: JobSpec
    need: int
    expected_duration: float | None
    size: int
    timeout: float | None
    compiles: bool = False
    attempts: int = 0
    memory_requeues: int = 0
    waits: dict[str, float] | None = None
    """Seconds queued so far, by what held it back (see ``BuildResult.waits``); ``None`` until the first."""
    wait_reason: str | None = None
    """The policy's last reason for holding it back."""
    held_by: str = "queue"
    """What holds it back now: the rule the policy named, or ``queue`` (other builds are ahead)."""
    held_since: float = 0.0
    """When ``held_by`` was last accounted for (clock)."""
    queued_at: float | None = None
    """When it was first queued (epoch seconds)."""

    @property
    def key(self) -> str:
        return self.job.key

    def make_job(self) -> BuildJob:
        """Its job, as a worker gets it now."""
        return self.job.build_job(self.need)

    def account_wait(self, now: float) -> None:
        """Add the time since the last call to what held it back then."""
        waits = self.waits = self.waits or {}
        waits[self.held_by] = waits.get(self.held_by, 0.0) + max(0.0, now - self.held_since)
        self.held_since = now

    def as_policy(self) -> QueuedBuild:
        """As the planner and the policy see it."""
        return QueuedBuild(key=self.key, need=self.need, expected_duration=self.expected_duration, size=self.size,
                           compiles=self.compiles)

    def requeue_for_memory(self, peak_rss: int, memory_limit: int | None) -> str:
        """Raise its need after it was stopped under memory pressure at ``peak_rss`` (the job made for it then has
        its memory ceiling raised with it); say how, in words."""
        self.memory_requeues += 1
        self.need = max(self.need, int(peak_rss * 1.2))
        alone = ""
        if self.memory_requeues >= MEMORY_REQUEUE_LIMIT and memory_limit:
            self.need = max(self.need, memory_limit)  # from now on it runs alone
            alone = ", and runs alone"
        self.attempts -= 1  # memory requeues are not failures
        return (f"memory requeue {self.memory_requeues}, reached {format_size(peak_rss)};"
                f" now needs about {format_size(self.need)}{alone}")


@dataclass(slots=True)
class Running:
    """An admitted build, and what sampling its worker has seen."""

    item: Queued
    handle: WorkerHandle
    started_at: float
    """Clock reading at admission."""
    deadline: float | None
    phase: str = "starting"
    rss: int = 0
    peak_rss: int = 0
    cpu: CpuRate = field(default_factory=CpuRate)
    """CPUs its process tree keeps busy; until it has run ``CPU_WINDOW``, it counts as one."""
    cpu_wait_s: float | None = None
    """Seconds its processes waited for a CPU since its first sample; ``None``: not measured."""
    _wait_seen: float | None = field(default=None, init=False, repr=False)
    """Its tree's wait at the last sample: what its live processes had waited then."""
    outcome: WorkerOutcome | None = None
    stop_reason: StopReason | None = None

    def add_wait(self, total: float | None) -> None:
        """Count what the tree waited since the last sample, from ``total``, its live processes' wait now.

        The first sample is the base (its worker waited before admission too). A process that exits takes
        its wait out of the total: only increases count, so its last moments are lost, never counted twice.
        """
        if total is None:
            return
        if self._wait_seen is not None:
            self.cpu_wait_s = (self.cpu_wait_s or 0.0) + max(0.0, total - self._wait_seen)
        self._wait_seen = total

    def as_policy(self) -> RunningBuild:
        """As the policy sees it, marked if it is being stopped."""
        expected = self.item.expected_duration
        rate = self.cpu.rate()
        return RunningBuild(key=self.item.key, need=self.item.need, rss=self.rss, started_at=self.started_at,
                            expected_end=self.started_at + expected if expected is not None else None,
                            stopping=self.stop_reason is not None, cpu=rate,
                            cpu_seen=self.cpu.seen() / CPU_WINDOW if rate is None else 0.0)

    def death_reason(self, exited: Exited, *, memory_short: bool) -> str:
        """Why its worker ended without a result of its own, in words."""
        if self.stop_reason == "timeout":
            return f"timed out after {self.item.timeout:g} s"
        if self.stop_reason == "memory":
            return "stopped under memory pressure"
        if self.outcome is not None and self.outcome.killed_by is not None:
            message, name = self.outcome.error or "killed", self.outcome.killed_by
        elif exited.killed_by is not None:
            name = exited.killed_by
            message = f"the worker was killed by {name}"
        else:
            return f"the worker exited with status {exited.returncode} without a result; see the log"
        if name == "SIGKILL" and memory_short:
            message += " (likely out of memory)"
        return message


def build_result(item: Queued, run: Running | None, *, status: Status, error: str | None,
                 outcome: WorkerOutcome | None, started_at: float | None, finished_at: float | None) -> BuildResult:
    """The report's record of ``item``; ``run`` is its last attempt, ``None`` if it never started."""
    job = item.make_job()
    return BuildResult(
        name=(outcome.name if outcome and outcome.name else job.name),
        version=(outcome.version if outcome and outcome.version else job.version),
        source=str(job.source),
        status=status,
        wheel=outcome.wheel if outcome else None,
        wheel_sha256=outcome.wheel_sha256 if outcome else None,
        started_at=started_at,
        finished_at=finished_at,
        phases=outcome.phases if outcome else {},
        peak_rss_bytes=max(run.peak_rss if run else 0, outcome.max_rss_bytes if outcome else 0),
        cpu_s=outcome.cpu_s if outcome else 0.0,
        cpu_wait_s=round(run.cpu_wait_s, 3) if run and run.cpu_wait_s is not None else None,
        log=str(job.log_path) if run else None,
        error=error,
        predicted_rss_bytes=item.need,
        expected_s=item.expected_duration,
        # A farm runs a build again when its worker is lost: each run is an attempt too.
        attempts=max(item.attempts, 1) + (outcome.attempts - 1 if outcome else 0),
        memory_requeues=item.memory_requeues,
        waits={held_by: seconds for held_by, seconds in (item.waits or {}).items() if seconds > 0},
        wait_reason=item.wait_reason,
        sandbox=containment(job, outcome) if run else None,
        queued_at=item.queued_at,
        spans=outcome.spans if outcome else (),
        compiler_calls=outcome.compiler_calls if outcome else None,
        compiler_hits=outcome.compiler_hits if outcome else None,
        compiler_misses=outcome.compiler_misses if outcome else None,
        host=outcome.host if outcome else None,
    )


def containment(job: BuildJob, outcome: WorkerOutcome | None) -> str:
    """The report's line of what contained the build: its sandbox, and the memory ceiling it ran under."""
    described = job.sandbox.describe()
    if outcome is None or outcome.memory_ceiling is None:
        return described
    return f"{described}{',' if job.sandbox.protections else ':'} memory ceiling {format_size(outcome.memory_ceiling)}"


class WorkersAhead:
    """Workers started before their build's admission: each preparing a queued build, or one idle.

    While the running builds go on, a worker started ahead starts up, extracts its
    sdist and prepares the build environment, then waits for that build's admission,
    even if the queue order changes meanwhile.
    """

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._prepared: dict[str, WorkerHandle] = {}
        """By the key of the build each prepares."""
        self._idle: WorkerHandle | None = None
        """Started with no build yet, for one still to come."""

    @property
    def preparing(self) -> int:
        """Workers preparing (or holding prepared) a queued build."""
        return len(self._prepared)

    def take(self, item: Queued) -> WorkerHandle:
        """A worker holding ``item``'s job: the one that prepared it, if it lives, else the idle one or a new one."""
        prepared = self._prepared.pop(item.key, None)
        if prepared is not None and prepared.alive():
            return prepared
        if prepared is not None:  # it died while preparing: its build starts over
            prepared.close()
        handle = self._take_idle() or self._executor.spawn()
        handle.stage(item.make_job())
        return handle

    def prepare(self, item: Queued) -> None:
        """Have a worker prepare ``item``'s job, unless one does, or :data:`MAX_PREPARED` already prepare others."""
        if item.key not in self._prepared and len(self._prepared) < MAX_PREPARED:
            handle = self._take_idle() or self._executor.spawn()
            handle.stage(item.make_job())
            self._prepared[item.key] = handle

    def start_idle(self) -> None:
        """Start a worker for a build still to come, unless one waits already."""
        if self._idle is None:
            self._idle = self._executor.spawn()

    def drop(self, key: str) -> None:
        """Release the worker preparing build ``key``, which will not run."""
        prepared = self._prepared.pop(key, None)
        if prepared is not None:
            prepared.close()

    def close(self) -> None:
        """Release every worker started ahead: no build will use them."""
        spares = [*self._prepared.values(), *([self._idle] if self._idle is not None else [])]
        self._prepared.clear()
        self._idle = None
        for handle in spares:
            handle.close()

    def _take_idle(self) -> WorkerHandle | None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.alive():
            idle.close()
            return None
        return idle


class Observer(Protocol):
    """Receives what the run does; the CLI's display implements it."""

    def event(self, message: str) -> None: ...

    def update(self, state: RunState) -> None: ...


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
