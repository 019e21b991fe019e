"""Fakes for the scheduler's seams: an executor whose workers build nothing, a machine, a clock, an observer.

A :class:`FakeWorker` records what the scheduler asks of it and ends its build only
when the test says (:meth:`FakeWorker.finish`), or when it is stopped. The
:class:`FakeMachine` spawns them and, as the probe, reads the memory the test gives
each running build. Nothing is spawned, signalled or written.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from orchestrator.buildstate import RunState
from orchestrator.executors import EventSink, Exited, OutcomeReported, WorkerEvent
from orchestrator.jobs import BuildJob, Status, WorkerOutcome
from orchestrator.policy.admission import Readings
from orchestrator.resources import TreeUsage
from orchestrator.settings import IndexSettings

G = 1024**3
M = 1024**2


class FakeWorker:
    """A worker as the scheduler sees it."""

    def __init__(self, machine: FakeMachine) -> None:
        self._machine = machine
        self.job: BuildJob | None = None
        self.admitted = False
        self.exited = False
        self.died = False
        """It died before admission (a crash while preparing)."""
        self.closed = False
        self.stops: list[float] = []
        """The grace period of each stop asked."""
        self.killed = False

    @property
    def key(self) -> str | None:
        return self.job.key if self.job is not None else None

    def stage(self, job: BuildJob) -> None:
        assert self.job is None and not self.closed, "staged twice, or after close"
        self.job = job
        self._machine.staged.append(job.key)

    def admit(self, need: int = 0) -> None:
        assert self.job is not None and not self.admitted and not self.closed
        self.admitted = True

    def alive(self) -> bool:
        return not (self.died or self.exited)

    def sample(self) -> TreeUsage:
        running = self.admitted and not self.exited and self.key is not None
        return TreeUsage(rss=self._machine.rss.get(self.key, 0) if running and self.key else 0, cpu_s=0.0)

    def stop(self, grace: float) -> None:
        self.stops.append(grace)
        if self._machine.obey_stop:
            self.finish(-signal.SIGTERM)

    def kill(self) -> None:
        self.killed = True
        self.finish(-signal.SIGKILL)

    def close(self) -> None:
        self.closed = True

    def finish(self, returncode: int, *, built: bool = False, outcome: WorkerOutcome | None = None) -> None:
        """End the build: an outcome (built, or the one given), then the exit."""
        assert self.admitted and self.key is not None
        if self.exited:
            return
        self.exited = True
        if built:
            outcome = WorkerOutcome(status=Status.BUILT, wheel=f"{self.key}-py3-none-any.whl")
        if outcome is not None:
            self._machine.sink(OutcomeReported(self.key, outcome))
        killed_by = signal.Signals(-returncode).name if returncode < 0 else None
        self._machine.sink(Exited(self.key, returncode, killed_by))


class FakeMachine:
    """The executor and the probe: spawns fake workers, and reads the memory the test sets."""

    def __init__(self, rss: dict[str, int] | None = None, available: dict[str, int] | None = None) -> None:
        self.rss = rss or {}
        """What each build's process tree holds while it runs, by key."""
        self.available = available or {}
        """Available memory while the build of that key runs (a worker outside its tree may hold the rest)."""
        self.workers: list[FakeWorker] = []
        self.staged: list[str] = []
        """The key of every build staged on a worker, in order."""
        self.obey_stop = True
        """Whether a stopped worker exits at once (else only when killed)."""
        self.started = self.closed = False
        self._sink: EventSink | None = None

    def sink(self, event: WorkerEvent) -> None:
        assert self._sink is not None
        self._sink(event)

    def start(self, sink: EventSink) -> None:
        self._sink, self.started = sink, True

    def spawn(self) -> FakeWorker:
        worker = FakeWorker(self)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        self.closed = True

    def busy(self) -> list[FakeWorker]:
        return [worker for worker in self.workers if worker.admitted and not worker.exited]

    def worker(self, key: str) -> FakeWorker:
        (worker,) = [worker for worker in self.busy() if worker.key == key]
        return worker

    def read(self) -> Readings:
        available = min([8 * G, *(self.available.get(worker.key or "", 8 * G) for worker in self.busy())])
        return Readings(total_memory=16 * G, available_memory=available, load_1m=None, cpu_count=4)


class FakeClock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Script:
    """The observer: records events, and on an event starting with a prefix in ``on_event``, acts.

    ``on_update`` actions run at each loop turn's display update, with the turn's state.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.on_event: dict[str, Callable[[], None]] = {}
        self.on_update: list[Callable[[RunState], None]] = []

    def event(self, message: str) -> None:
        self.events.append(message)
        if ": started" in message:
            assert len([event for event in self.events if ": started" in event]) <= 10, "builds keep restarting"
        for prefix, action in list(self.on_event.items()):
            if message.startswith(prefix):
                action()

    def index(self, prefix: str) -> list[int]:
        """Where events starting with ``prefix`` are, in order."""
        return [index for index, event in enumerate(self.events) if event.startswith(prefix)]

    def update(self, state: RunState) -> None:
        for action in list(self.on_update):
            action(state)


def job(key: str) -> BuildJob:
    """A job for the fakes: no file of it is ever opened."""
    root = Path("/nonexistent")
    return BuildJob(key=key, source=root / f"{key}.tar.gz", kind="sdist", name=key.split("-")[0],
                    version="1.0", sha256=None, wheelhouse=root / "wh", log_path=root / f"{key}.log",
                    index=IndexSettings(), installer="pip", env_cache=root / "envs")
