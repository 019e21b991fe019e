"""The build farm: builds run on the workers of a Dask distributed cluster (``--cluster ADDRESS``).

We do not write a farm protocol of our own: Dask connects, moves bytes, runs tasks and
notices lost workers. This module is the client's side (``cluster.py`` its connection and
the check of the workers); ``remote.py`` is what runs on each worker::

    Farm.connect(ADDRESS) ─► client.run(remote.probe) on every worker: our package, the same
        │                    Python, platform and version? one line per worker that is refused
        ▼                    then client.run(remote.start_run): the run's fork server on each
    scheduler ─► DaskWorker.stage(job): the sdist read
               ─► admit(need): the workers whose machine can hold ``need`` (none: the build fails,
                  saying so); of those, the one with the most free slots (DaskExecutor.place)
               ─► the sdist's bytes scattered to it, client.submit(remote.run_build) pinned to it
                        │ the host of each start, phases, RSS/CPU samples: worker.log_event
                        │ ─► client.subscribe_topic ─► PhaseStarted, sample()
                        ▼
               the task's result: outcome, wheel bytes, log ─► check_wheel ─► publish_wheel
               (the same check and the same atomic publishing as a local build) ─► Exited

Slots: a worker started with ``--nthreads N`` runs N tasks at once, so N builds; the
scheduler's count cap is the accepted workers' slots together. The client picks the worker
itself because Dask places a task beside its data and does not know that a build holds a
thread for minutes. Memory, CPU and load are admitted on each machine by the same policy
(``remote._admitted``): the client's machine says nothing about the farm's.

Memory pressure: each machine stops the youngest of the builds it runs, as the scheduler does
on one machine (``machine.py``); the task's result says so, and this handle tells the scheduler
(:class:`StoppedForMemory`), which requeues the build with its need raised.

Faults: a worker lost mid-build takes the scattered source with it, and Dask cancels the
task; the client sends both again to another worker (waiting up to :data:`WORKER_WAIT` for
one, if none is left), each start an attempt in the report, and fails the build after
:data:`RESUBMITS` resends. Stopping a build (Ctrl-C, --timeout) kills its process tree on
whichever worker runs it (``client.run(remote.kill_builds)``); one not started is cancelled.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import distributed

from orchestrator.errors import WheelError
from orchestrator.executors import (
    EventSink,
    Exited,
    OutcomeReported,
    PhaseStarted,
    StoppedForMemory,
    remote,
    signal_name,
)
from orchestrator.executors.cluster import Farm
from orchestrator.executors.local import WORK_PREFIX, sweep_stale_work_dirs
from orchestrator.executors.machine import MachineLimits
from orchestrator.jobs import BuildJob, Status, WorkerOutcome
from orchestrator.policy.admission import Limits
from orchestrator.resources import TreeUsage
from orchestrator.units import format_size
from orchestrator.wheels.wheelfile import check_wheel
from orchestrator.wheels.wheelhouse import publish_wheel

logger = logging.getLogger(__name__)

WORKER_WAIT = 60.0
"""Seconds a build waits for a worker that can hold it to come back, when all such were lost."""
RESUBMITS = 3
"""Times a build is sent again after its worker was lost (four attempts, as many as Dask's default
``allowed-failures`` gives a task whose workers die)."""


class DaskExecutor:
    """Spawns :class:`DaskWorker` handles for one run on ``farm``.

    ``machine_limits`` are the run's admission limits, applied by each machine to the
    builds it runs (its count cap being its worker's ``--nthreads``); ``keep_build_envs``
    keeps each machine's prepared build environments for later runs, pruned of what no run used for
    ``prune_unused_after`` days (``None``: never).
    """

    def __init__(self, farm: Farm, machine_limits: MachineLimits, *, keep_build_envs: bool = False,
                 prune_unused_after: int | None = None) -> None:
        self.farm = farm
        self.machine_limits = machine_limits
        self.keep_build_envs = keep_build_envs
        self.prune_unused_after = prune_unused_after
        self.run_id = uuid.uuid4().hex[:12]
        self.topic = f"orchestrate-{self.run_id}"
        self._sink: EventSink | None = None
        self._incoming: Path | None = None
        self._handles: dict[str, DaskWorker] = {}
        self._held: dict[str, int] = {}
        """Slots this run's builds hold, by worker."""
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, sink: EventSink) -> None:
        self._sink = sink
        # Named as local work folders are, so that a run killed before it could remove it is swept by the next.
        temp = Path(tempfile.gettempdir())
        sweep_stale_work_dirs(temp)
        self._incoming = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-incoming-", dir=temp))
        self.farm.client.subscribe_topic(self.topic, self._on_event)
        # Each worker's fork server for the run imports the build machinery while the run resolves;
        # a worker that joins later starts its own at its first build.
        with contextlib.suppress(Exception):
            self.farm.client.run(remote.start_run, self.run_id, workers=self.farm.alive(), on_error="ignore")

    def spawn(self) -> DaskWorker:
        assert self._sink is not None, "start() first"
        return DaskWorker(self, self._sink)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.farm.client.unsubscribe_topic(self.topic)
        with contextlib.suppress(Exception):
            self.farm.client.run(remote.end_run, self.run_id, workers=self.farm.alive(), on_error="ignore")
        if self._incoming is not None:
            shutil.rmtree(self._incoming, ignore_errors=True)
        self._sink = self._incoming = None

    def task_key(self, job: BuildJob) -> str:
        return f"orchestrate-{self.run_id}-{job.key}-{next(self._counter)}"

    def register(self, task: str, handle: DaskWorker) -> None:
        with self._lock:
            self._handles[task] = handle

    def forget(self, task: str) -> None:
        with self._lock:
            self._handles.pop(task, None)

    def place(self, workers: list[str]) -> str:
        """The one of ``workers`` to send a build to: the one with the most free slots (and hold one there).

        Dask places a task beside its data and does not know that a build holds a thread
        for minutes: a build could wait behind a busy worker while another has a slot free.
        The client knows every slot its builds hold, so it chooses.
        """
        slots = self.farm.slots_of(workers)
        with self._lock:
            chosen = max(workers, key=lambda address: slots[address] - self._held.get(address, 0))
            self._held[chosen] = self._held.get(chosen, 0) + 1
        return chosen

    def vacate(self, worker: str | None) -> None:
        """A build sent to ``worker`` has ended: its slot is free."""
        with self._lock:
            if worker in self._held:
                self._held[worker] -= 1

    def incoming(self) -> Path:
        assert self._incoming is not None, "start() first"
        return Path(tempfile.mkdtemp(dir=self._incoming))

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker's event (on the client's event loop): hand it to the build's handle."""
        message = event[1]
        with self._lock:
            handle = self._handles.get(message.get("key", ""))
        if handle is not None:
            handle.on_event(message)


class DaskWorker:
    """A build on the farm, as a :class:`~orchestrator.executors.WorkerHandle`."""

    def __init__(self, executor: DaskExecutor, sink: EventSink) -> None:
        self._executor = executor
        self._client = executor.farm.client
        self._sink = sink
        self._job: BuildJob | None = None
        self._source: distributed.Future[Any] | None = None
        self._future: distributed.Future[Any] | None = None
        self._task = ""
        self._usage = TreeUsage(rss=0, cpu_s=0.0)
        self._hosts: list[str] = []
        """The host of each attempt, in order."""
        self._data: bytes | None = None
        """The sdist, read ahead."""
        self._worker: str | None = None
        """The worker the build was last sent to."""
        self._need = 0
        self._stopping = False
        self._resubmits = 0
        """Times the task was sent again because the worker holding its source was lost."""
        self._ended = threading.Event()
        self._end_lock = threading.Lock()

    def stage(self, job: BuildJob) -> None:
        self._job = job
        if job.kind == "sdist":
            with contextlib.suppress(OSError):  # unreadable: reported at admission, as a build failure
                self._data = job.source.read_bytes()

    def admit(self, need: int = 0) -> None:
        job = self._job
        assert job is not None, "stage() first"
        if job.kind != "sdist" or self._data is None:
            why = (f"{job.source}: a source tree is built on this machine only; make an sdist for the farm"
                   if job.kind != "sdist" else f"{job.source}: cannot be read")
            return self._fail(why)
        self._need = need
        self._submit()

    def _submit(self) -> None:
        """Send the source and the build to a worker whose machine can hold it (none: it fails, saying so)."""
        job, need, limits = self._job, self._need, self._executor.machine_limits
        assert job is not None and self._data is not None
        for line in self._executor.farm.check_workers():  # workers that joined since (a lost one's replacement)
            logger.warning("%s", line)
        workers = self._executor.farm.eligible(need, limits)
        if not workers and self._executor.farm.eligible(need, limits, alive_only=False):
            # The workers that could hold it are lost for now (a nanny restarts them): wait, off this thread.
            threading.Thread(target=self._submit_when_back, daemon=True, name=f"wait-{job.key}").start()
            return
        if not workers:
            largest = self._executor.farm.largest_machine()
            room = "no worker is left" if largest is None else (
                f"the largest, {largest.host}, has {format_size(largest.total_memory)} with "
                f"{format_size(limits.kept_free(largest.total_memory))} kept free")
            return self._fail(f"needs about {format_size(need)} and no farm machine can ever hold it ({room})")
        self._task = self._executor.task_key(job)
        self._executor.register(self._task, self)
        self._worker = self._executor.place(workers)
        request = {"job": job.to_json(), "task": self._task, "run": self._executor.run_id,
                   "topic": self._executor.topic, "need": need, "limits": asdict(limits),
                   "keep_envs": self._executor.keep_build_envs, "prune_after": self._executor.prune_unused_after}
        # The source goes to the chosen worker only: lost with it, the task is cancelled and sent again.
        self._source = self._client.scatter(self._data, workers=[self._worker], hash=False)
        future = self._client.submit(remote.run_build, request, self._source, key=self._task, pure=False,
                                     workers=[self._worker], allow_other_workers=False)
        self._future = future
        future.add_done_callback(self._done)

    def _submit_when_back(self) -> None:
        """Send the build once a worker that can hold it is back; fail after :data:`WORKER_WAIT` seconds."""
        deadline = time.monotonic() + WORKER_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if self._stopping:
                return self._end(None, -signal.SIGTERM)
            for line in self._executor.farm.check_workers():
                logger.warning("%s", line)
            if self._executor.farm.eligible(self._need, self._executor.machine_limits):
                return self._submit()
        self._fail(f"no farm worker that can hold it came back within {WORKER_WAIT:g} s")

    def alive(self) -> bool:
        return True  # nothing runs before admission: a farm worker cannot die while preparing

    def sample(self) -> TreeUsage:
        return self._usage

    def stop(self, grace: float) -> None:
        self._stopping = True
        threading.Thread(target=self._kill, args=(grace,), daemon=True, name=f"stop-{self._task}").start()

    def kill(self) -> None:
        self._stopping = True
        self._kill(0.0)

    def close(self) -> None:
        self._executor.forget(self._task)
        for future in (self._future, self._source):
            if future is not None and not self._ended.is_set():
                with contextlib.suppress(Exception):
                    future.cancel()
        self._future = self._source = None

    # -- from the cluster ---------------------------------------------------------
    def on_event(self, message: dict[str, Any]) -> None:
        key = self._job.key if self._job is not None else ""
        where = f" on {self._hosts[-1]}" if self._hosts else ""
        if "host" in message:
            self._hosts.append(message["host"])
            again = f", attempt {len(self._hosts)}" if len(self._hosts) > 1 else ""
            self._sink(PhaseStarted(key, f"sent to {message['host']}{again}"))
        elif "phase" in message:
            self._sink(PhaseStarted(key, f"{message['phase']}{where}"))
        elif "waiting" in message:
            self._sink(PhaseStarted(key, f"{message['waiting']}{where}"))
        elif "rss" in message:
            self._usage = TreeUsage(rss=int(message["rss"]), cpu_s=float(message["cpu_s"]))

    def _done(self, future: distributed.Future[Any]) -> None:
        """The task ended (on a thread of the client): the wheel checked and published, then the events."""
        if self._ended.is_set() or future is not self._future:
            return
        job = self._job
        assert job is not None
        self._executor.vacate(self._worker)
        returncode = 0
        outcome: WorkerOutcome | None
        if future.cancelled() and not self._stopping and self._resubmits < RESUBMITS:
            # Dask cancels a task whose scattered source was lost with its worker: send both again.
            self._resubmits += 1
            self._executor.forget(self._task)
            self._submit()
            return
        if future.cancelled() and not self._stopping:
            outcome = WorkerOutcome(status=Status.FAILED, error=(
                f"the workers holding it were lost {self._resubmits + 1} times; not tried again"))
        elif future.cancelled():  # stopped before it reached a worker: as a worker that was stopped
            outcome, returncode = None, -signal.SIGTERM
        else:
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - the task's own failures are outcomes; this is Dask's
                outcome = WorkerOutcome(status=Status.FAILED, error=f"the farm failed to run it: {exc!r}")
            else:
                outcome, returncode = self._arrived(job, result)
                if result.get("pressure") is not None:  # its machine stopped it: the scheduler requeues it
                    pressure = result["pressure"]
                    self._sink(StoppedForMemory(job.key, result["host"], int(pressure["rss"]), pressure["reason"]))
        self._end(outcome, returncode)

    def _end(self, outcome: WorkerOutcome | None, returncode: int) -> None:
        """Report how the build ended, once: its outcome (with where it ran, and its attempts), then its exit."""
        assert self._job is not None
        with self._end_lock:
            if self._ended.is_set():
                return
            self._ended.set()
        if outcome is not None:
            host = self._hosts[-1] if self._hosts else None
            self._sink(OutcomeReported(self._job.key, replace(outcome, host=host, attempts=max(len(self._hosts), 1))))
        self._sink(Exited(self._job.key, returncode, signal_name(returncode)))

    def _arrived(self, job: BuildJob, result: dict[str, Any]) -> tuple[WorkerOutcome | None, int]:
        """The task's result on this machine: its log appended to the job's, its wheel checked and published."""
        outcome = WorkerOutcome.from_json(result["outcome"]) if result["outcome"] is not None else None
        with contextlib.suppress(OSError):
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            with job.log_path.open("a", encoding="utf-8") as log:
                log.write(f"=== orchestrate: built on {result['host']} ({result['worker']}) ===\n")
                log.write(result.get("log", ""))
        wheel_bytes = result.get("wheel_bytes")
        if outcome is not None and outcome.status is Status.BUILT and outcome.wheel and wheel_bytes is not None:
            folder = self._executor.incoming()
            wheel = folder / outcome.wheel
            try:
                wheel.write_bytes(wheel_bytes)
                check_wheel(wheel, name=outcome.name or job.name, version=outcome.version)
                published, digest = publish_wheel(wheel, job.wheelhouse)
            except WheelError as exc:
                outcome = replace(outcome, status=Status.FAILED, wheel=None,
                                  error=f"the wheel from {result['host']} was refused on arrival: {exc.message}")
            except OSError as exc:
                outcome = replace(outcome, status=Status.FAILED, wheel=None,
                                  error=f"cannot keep the wheel from {result['host']}: {exc.strerror or exc}")
            else:
                outcome = replace(outcome, wheel=published.name, wheel_sha256=digest)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        return outcome, int(result.get("returncode", 0))

    def _kill(self, grace: float) -> None:
        """Kill the build's process tree wherever it runs; a task not started yet is cancelled."""
        with contextlib.suppress(Exception):
            self._client.run(remote.kill_builds, [self._task], grace, workers=self._executor.farm.alive(),
                             on_error="ignore")
        if not self._hosts and self._future is not None:  # not on a worker yet (Dask's queue, or admission)
            with contextlib.suppress(Exception):
                self._future.cancel()

    def _fail(self, error: str) -> None:
        self._end(WorkerOutcome(status=Status.FAILED, error=error), 0)


def scheduler_limits(max_builds: int) -> Limits:
    """The scheduler's limits on a farm: the count cap only; no memory limit and nothing kept free, so that
    its own ``pick_victim`` never stops a farm build (each machine stops its own, ``machine.py``)."""
    return Limits(max_builds=max_builds, memory_limit=None, min_free_memory=0, max_load=None, max_cpu=None)


def for_run(address: str, *, max_builds: int | None, memory_limit: int | None, min_free_memory: int | None,
            max_load: float | None, max_cpu: float | None,
            keep_build_envs: bool = False, prune_unused_after: int | None = None) -> tuple[Farm, Limits, DaskExecutor]:
    """Connect to the farm at ``address``: the farm, the scheduler's limits there, and the executor.

    The scheduler keeps only the count cap (``max_builds``, else every slot of the accepted
    workers, :func:`scheduler_limits`); memory, load and CPU are each machine's to admit, and
    memory pressure each machine's to relieve (:class:`MachineLimits`).
    """
    farm = Farm.connect(address)
    limits = scheduler_limits(max_builds or farm.slots)
    machine = MachineLimits(memory_limit=memory_limit, min_free_memory=min_free_memory, max_load=max_load,
                            max_cpu=max_cpu)
    return farm, limits, DaskExecutor(farm, machine, keep_build_envs=keep_build_envs,
                                      prune_unused_after=prune_unused_after)
