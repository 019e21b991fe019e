"""Scheduler logic with fake workers and a fake probe: nothing is spawned or signalled.

A :class:`FakeWorker` stands in for the worker process behind the ``spawn`` seam;
the scheduler's module-level ``tree_usages`` and ``kill_tree`` are replaced by the
:class:`FakeMachine`, which also serves as the probe. Builds end when the test says.
"""

from __future__ import annotations

import io
import itertools
import json
import signal
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest

from orchestrator import scheduler
from orchestrator.build.worker import MESSAGE_PREFIX
from orchestrator.jobs import BuildJob, Status, WorkerOutcome
from orchestrator.policy.admission import Limits, Readings
from orchestrator.resources import TreeUsage
from orchestrator.scheduler import (
    MEMORY_REQUEUE_LIMIT,
    BuildScheduler,
    RunState,
    SchedulerSettings,
)
from orchestrator.settings import IndexSettings

G = 1024**3
M = 1024**2

# Above the kernel's largest possible pid (2**22): a signal that slips past the fakes reaches nothing.
FAKE_PIDS = itertools.count(2**30)


class _Stdin(io.StringIO):
    """Keeps what the scheduler writes: a job, then ``go``; closed without ``go``, the worker goes away."""

    def __init__(self, worker: FakeWorker) -> None:
        super().__init__()
        self._worker = worker

    def close(self) -> None:
        if not self.closed:
            lines = self.getvalue().splitlines()
            if lines[1:] == ["go"]:
                self._worker.key = json.loads(lines[0])["job"]["key"]
            else:
                self._worker.finish(0)
        super().close()


class FakeWorker:
    """A worker process as the scheduler sees it: stdin, stdout lines, ``poll`` and ``wait``."""

    def __init__(self) -> None:
        self.pid = next(FAKE_PIDS)
        self.key: str | None = None
        self.returncode: int | None = None
        self.built = False
        self._done = threading.Event()
        self.stdin = _Stdin(self)
        self.stdout = self._lines()

    def _lines(self) -> Iterator[str]:
        self._done.wait()
        if self.built:
            outcome = WorkerOutcome(status=Status.BUILT, wheel=f"{self.key}-py3-none-any.whl")
            yield MESSAGE_PREFIX + json.dumps({"outcome": outcome.to_json()}) + "\n"

    def finish(self, returncode: int, *, built: bool = False) -> None:
        self.built = built
        self.returncode = returncode
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._done.wait()
        assert self.returncode is not None
        return self.returncode


class FakeMachine:
    """Spawns fake workers, reports their memory, stops them, and reads the machine."""

    def __init__(self, rss: dict[str, int], available: dict[str, int]) -> None:
        self.rss = rss
        """What each build's process tree holds while it runs, by key."""
        self.available = available
        """Available memory while the build of that key runs (a worker outside its tree may hold the rest)."""
        self.workers: list[FakeWorker] = []

    def spawn(self) -> FakeWorker:
        worker = FakeWorker()
        self.workers.append(worker)
        return worker

    def busy(self) -> list[FakeWorker]:
        return [worker for worker in self.workers if worker.key and worker.returncode is None]

    def worker(self, key: str) -> FakeWorker:
        (worker,) = [worker for worker in self.busy() if worker.key == key]
        return worker

    def tree_usages(self, pids: Collection[int]) -> dict[int, TreeUsage]:
        return {pid: TreeUsage(rss=sum(self.rss[worker.key] for worker in self.busy() if worker.pid == pid and worker.key),
                               cpu_s=0.0)
                for pid in pids}

    def kill_tree(self, pid: int, *, grace: float = 3.0) -> None:
        for worker in self.workers:
            if worker.pid == pid and worker.returncode is None:
                worker.finish(-signal.SIGTERM)

    def read(self) -> Readings:
        available = min([8 * G, *(self.available.get(worker.key or "", 8 * G) for worker in self.busy())])
        return Readings(total_memory=16 * G, available_memory=available, load_1m=None, cpu_count=4)


class Script:
    """The observer: records events, and on an event starting with a prefix in ``on_event``, acts."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.on_event: dict[str, Callable[[], None]] = {}

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
        pass


def job(key: str, tmp_path: Path) -> BuildJob:
    return BuildJob(key=key, source=tmp_path / f"{key}.tar.gz", kind="sdist", name=key.split("-")[0],
                    version="1.0", sha256=None, wheelhouse=tmp_path / "wh", log_path=tmp_path / f"{key}.log",
                    index=IndexSettings(), installer="pip")


def test_build_requeued_to_the_limit_then_runs_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "b" keeps its memory in a server outside its process tree (a compiler cache, a
    # build daemon): its RSS stays small, so a requeue never raises its need, while
    # free memory falls under the floor each time it runs beside "a".
    machine = FakeMachine(rss={"a-1.0": G, "b-1.0": 100 * M}, available={"b-1.0": G // 2})
    monkeypatch.setattr(scheduler, "tree_usages", machine.tree_usages)
    monkeypatch.setattr(scheduler, "kill_tree", machine.kill_tree)

    def finish(key: str) -> None:
        machine.worker(key).finish(0, built=True)

    def finish_b() -> None:
        if any(worker.key == "b-1.0" for worker in machine.busy()):
            finish("b-1.0")  # wrongly started beside "a": end it now, the assertions tell
        else:
            script.on_event["b-1.0: started"] = lambda: finish("b-1.0")

    # "a" ends once "b" has been requeued to the limit; "b" ends once it has started after that.
    script = Script()
    script.on_event[f"b-1.0: memory requeue {MEMORY_REQUEUE_LIMIT}"] = lambda: finish("a-1.0")
    script.on_event["a-1.0: built"] = finish_b
    limits = Limits(max_builds=2, memory_limit=4 * G, min_free_memory=G, max_load=None)
    builds = BuildScheduler(SchedulerSettings(limits=limits, sample_interval=0.01, grace=0),
                            probe=machine, observer=script, spawn=machine.spawn)  # type: ignore[arg-type]
    builds.add(job("a-1.0", tmp_path), need=G, expected_duration=600.0)  # longest first: "a" is older
    builds.add(job("b-1.0", tmp_path), need=200 * M)

    results = {result.name: result for result in builds.run()}

    assert results["a"].status is Status.BUILT
    assert results["b"].status is Status.BUILT
    assert results["b"].memory_requeues == MEMORY_REQUEUE_LIMIT
    assert results["b"].attempts == 1  # memory requeues are not failures
    assert results["b"].predicted_rss_bytes == limits.memory_limit  # its need is now the whole limit
    starts = script.index("b-1.0: started")
    assert len(starts) == MEMORY_REQUEUE_LIMIT + 1
    assert len(script.index("b-1.0: stopped under memory pressure")) == MEMORY_REQUEUE_LIMIT
    (alone,) = script.index(f"b-1.0: memory requeue {MEMORY_REQUEUE_LIMIT}, reached 100.0 MiB;"
                            " now needs about 4.0 GiB, and runs alone")
    # The last attempt waited for "a" to end, then ran alone to the end, though free memory
    # stayed under the floor: the last running build is never stopped.
    (a_built,) = script.index("a-1.0: built")
    assert alone < a_built < starts[-1]


def test_results_say_how_long_and_why_each_build_waited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine(rss={"a-1.0": G, "b-1.0": G, "c-1.0": G}, available={})
    monkeypatch.setattr(scheduler, "tree_usages", machine.tree_usages)
    monkeypatch.setattr(scheduler, "kill_tree", machine.kill_tree)
    script = Script()
    # "b" waits for memory behind "a"; "c", behind "b" in the queue, cannot go ahead (3G + 2G > 4G).
    script.on_event["b-1.0: waiting"] = lambda: threading.Timer(0.3, machine.worker("a-1.0").finish, (0,),
                                                                {"built": True}).start()
    script.on_event["b-1.0: started"] = lambda: machine.worker("b-1.0").finish(0, built=True)
    script.on_event["c-1.0: started"] = lambda: machine.worker("c-1.0").finish(0, built=True)
    limits = Limits(max_builds=3, memory_limit=4 * G, min_free_memory=0, max_load=None)
    builds = BuildScheduler(SchedulerSettings(limits=limits, sample_interval=0.01, grace=0),
                            probe=machine, observer=script, spawn=machine.spawn)  # type: ignore[arg-type]
    builds.add(job("a-1.0", tmp_path), need=3 * G, expected_duration=600.0)
    builds.add(job("b-1.0", tmp_path), need=2 * G, expected_duration=300.0)
    builds.add(job("c-1.0", tmp_path), need=2 * G, expected_duration=100.0)

    results = {result.name: result for result in builds.run()}

    assert all(result.status is Status.BUILT for result in results.values())
    assert results["a"].waited_s < 0.2
    assert results["a"].wait_reason is None
    b, c = results["b"], results["c"]
    assert set(b.waits) <= {"queue", "memory_limit"}
    assert b.waits["memory_limit"] >= 0.25
    assert b.wait_reason == "waiting: 3.0 GiB of the 4.0 GiB memory limit reserved, needs 2.0 GiB"
    assert set(c.waits) == {"queue"}  # next in line only once "b" had started
    assert c.waits["queue"] >= 0.25
    assert c.wait_reason is None
    record = b.to_json()
    assert record["waited_s"] == round(b.waited_s, 3)
    assert record["waits"]["memory_limit"] == round(b.waits["memory_limit"], 3)


def test_memory_requeues_leave_the_retries_to_real_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine(rss={"a-1.0": G, "b-1.0": 3 * G + G // 2}, available={})
    monkeypatch.setattr(scheduler, "tree_usages", machine.tree_usages)
    monkeypatch.setattr(scheduler, "kill_tree", machine.kill_tree)
    starts = itertools.count(1)

    def b_started() -> None:
        start = next(starts)
        if start == 2:  # after its memory requeue: killed from outside, which --retries covers
            machine.worker("b-1.0").finish(-signal.SIGKILL)
        elif start == 3:
            machine.worker("b-1.0").finish(0, built=True)

    script = Script()
    script.on_event["b-1.0: started"] = b_started
    script.on_event["b-1.0: memory requeue 1"] = lambda: machine.worker("a-1.0").finish(0, built=True)
    limits = Limits(max_builds=2, memory_limit=4 * G, min_free_memory=0, max_load=None)
    builds = BuildScheduler(SchedulerSettings(limits=limits, retries=1, sample_interval=0.01, grace=0),
                            probe=machine, observer=script, spawn=machine.spawn)  # type: ignore[arg-type]
    builds.add(job("a-1.0", tmp_path), need=G, expected_duration=600.0)
    builds.add(job("b-1.0", tmp_path), need=200 * M)

    results = {result.name: result for result in builds.run()}

    b = results["b"]
    assert b.status is Status.BUILT
    assert b.memory_requeues == 1
    assert b.attempts == 2  # the kill and the success; the memory stop took none of the one retry
    assert script.index("b-1.0: the worker was killed by SIGKILL; retrying (1/1)")
