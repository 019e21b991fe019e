"""The farm's side on a Dask worker: one build per task, in our normal build worker process.

Everything here runs inside a ``dask worker`` process, called by ``executors/dask.py``
through Dask (``client.submit`` for a build, ``client.run`` for the rest)::

    client.submit(run_build) ─► a task thread of the worker (--nthreads N: N at once)
        source bytes ─► work folder ─► machine admission (policy.admission.decide over this
        machine's readings and the builds this worker runs) ─► a build worker forked by the run's
        fork server here (build/forkserver.py; a session of its own, stdin/stdout protocol of
        build/worker.py, the same builder)
        │ stdout: phases ─► worker.log_event(topic) ─► the client's handle ─► the scheduler
        │ every 0.5 s: each build's process tree (RSS, CPU) ─► log_event, for the client's samples
        ▼
    returns {outcome (none if the build worker died without one), exit status, wheel bytes, log text,
    host}; the client checks the wheel and publishes it

    client.run(probe)        what this worker is: host, Python, platform, memory, CPUs
    client.run(kill_builds)  Ctrl-C, --timeout: the builds' process trees, by task key
    client.run(start_run)    a run starts: its fork server on this worker, ready for its builds
    client.run(end_run)      the run is over: its fork server and prepared build environments go

Why a process of its own and not the build in the task thread: the builder is the same code
as on one machine, a build's whole tree can be signalled through its process group, and a
crash of a backend cannot take the Dask worker down. Each Dask worker process has one fork
server per run (``executors/forks.py``), started as the run starts and ended with it, so
that a build starts without a fresh interpreter's imports, as local builds do. If the Dask
worker dies (kill -9, machine lost), its fork server sees its socket close and kills the
group of every build worker it forked, and each build worker notices its parent is gone
and kills its own group (``build/worker._watch_parent``); the client sends the build again
elsewhere.

Machine admission counts the builds of this worker process against the machine's readings:
run one ``dask worker`` per machine (``--nthreads`` builds), as the README says, for the
reservations of all the machine's builds to be counted together. The job's sandbox and
index options are the client's decisions, applied here as they are.

Prepared build environments (``build/envcache.py``) live per run in each worker
process's temporary folder, shared by the builds that worker runs, so each is prepared
once per worker; :func:`end_run` removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distributed import get_worker

import orchestrator
from orchestrator.build.envcache import run_env_cache
from orchestrator.build.worker import ADMIT, decode_message
from orchestrator.executors.forks import ForkedWorker, ForkServer
from orchestrator.executors.local import WORK_PREFIX, sweep_stale_work_dirs
from orchestrator.jobs import BuildJob, Status, WorkerOutcome, nested_jobs_environ
from orchestrator.policy.admission import (
    Candidate,
    Limits,
    Readings,
    RunningBuild,
    decide,
    jobs_per_build,
)
from orchestrator.resources import CpuRate, SystemProbe, kill_tree, tree_usages

SAMPLE_INTERVAL = 0.5
"""Seconds between samples of the builds' process trees, and between admission checks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineLimits:
    """The run's admission limits as each farm machine applies them to the builds it runs."""

    memory_limit: int | None = None
    """The most the builds of one worker may reserve; ``None``: no cap (free memory still counts)."""
    min_free_memory: int | None = None
    """Memory each machine keeps free; ``None``: 10% of its memory or 1 GiB, the smaller."""
    max_load: float | None = None
    max_cpu: float | None = None

    def kept_free(self, total_memory: int) -> int:
        return self.min_free_memory if self.min_free_memory is not None else min(total_memory // 10, 1024**3)

    def for_machine(self, total_memory: int, slots: int) -> Limits:
        """As :func:`~orchestrator.policy.admission.decide` takes them, on a machine and worker of ``slots``."""
        return Limits(max_builds=slots, memory_limit=self.memory_limit, min_free_memory=self.kept_free(total_memory),
                      max_load=self.max_load, max_cpu=self.max_cpu)


def probe() -> dict[str, Any]:
    """What this worker is, for the client's check at start and its routing by memory."""
    readings = _machine().read()
    return {
        "host": socket.gethostname(),
        "python": "%d.%d" % sys.version_info[:2],
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
        "machine": platform.machine(),
        "orchestrator": orchestrator.__version__,
        "total_memory": readings.total_memory,
        "available_memory": readings.available_memory,
        "cpu_count": readings.cpu_count,
    }


class _Build:
    """A build this worker runs: its admission record, then its process."""

    def __init__(self, key: str, need: int, topic: str) -> None:
        self.key = key
        self.need = need
        self.topic = topic
        self.admitted = False
        self.pid: int | None = None
        self.rss = 0
        self.cpu = CpuRate()
        self.started_at = time.monotonic()


class _Machine:
    """This worker process's builds, their samples and the runs' environments; one per process."""

    def __init__(self) -> None:
        sweep_stale_work_dirs(Path(tempfile.gettempdir()))  # those of a worker killed mid-build
        self.probe = SystemProbe()
        self.lock = threading.Lock()
        self.admitting = threading.RLock()
        """Held by one admission decision at a time, and by each reading of the probe."""
        self.builds: dict[str, _Build] = {}
        self.cancelled: set[str] = set()
        self.env_caches: dict[str, tuple[contextlib.ExitStack, Path]] = {}
        self._sampler: threading.Thread | None = None
        self.fork_servers: dict[str, ForkServer] = {}
        """Each run's fork server on this worker."""
        self.ended_runs: set[str] = set()
        self._forking = threading.Lock()
        """A fork server takes one caller at a time: the task threads take turns."""

    def start_forks(self, run_id: str) -> None:
        """Start the run's fork server here, unless it runs; it imports the build machinery meanwhile."""
        with self._forking:
            if run_id in self.ended_runs:
                raise RuntimeError(f"run {run_id} is over")
            self.fork_servers.setdefault(run_id, ForkServer()).start()

    def fork(self, run_id: str) -> ForkedWorker:
        """A build worker for the run, forked ready (its fork server started first, or again if it died)."""
        with self._forking:
            if run_id in self.ended_runs:  # a task that started late: nothing may outlive end_run
                raise RuntimeError(f"run {run_id} is over")
            return self.fork_servers.setdefault(run_id, ForkServer()).fork()

    def end_forks(self, run_id: str) -> None:
        """The run is over: its fork server goes (with any build worker it still had)."""
        with self._forking:
            self.ended_runs.add(run_id)
            server = self.fork_servers.pop(run_id, None)
        if server is not None:
            server.close()

    def env_cache(self, run_id: str) -> Path:
        """The run's prepared environments on this worker, made by its first build."""
        with self.lock:
            if run_id not in self.env_caches:
                stack = contextlib.ExitStack()
                root = Path(tempfile.gettempdir()) / "orchestrate-farm" / "build-envs"
                self.env_caches[run_id] = (stack, stack.enter_context(run_env_cache(root, keep=False)))
            return self.env_caches[run_id][1]

    def read(self) -> Readings:
        with self.admitting:  # the probe keeps a window of CPU samples: one reader at a time
            return self.probe.read()

    def running(self) -> list[RunningBuild]:
        with self.lock:
            return [RunningBuild(key=build.key, need=build.need, rss=build.rss, started_at=build.started_at,
                                 cpu=build.cpu.rate())
                    for build in self.builds.values() if build.admitted]

    def start_sampler(self, worker: Any) -> None:
        with self.lock:
            if self._sampler is None:
                self._sampler = threading.Thread(target=self._sample, args=(worker,), daemon=True,
                                                 name="orchestrate-sampler")
                self._sampler.start()

    def _sample(self, worker: Any) -> None:
        """Every 0.5 s, while builds run: each build's tree, kept for admission and sent to the client."""
        while True:
            time.sleep(SAMPLE_INTERVAL)
            with self.lock:
                builds = {build.pid: build for build in self.builds.values() if build.pid is not None}
                if not self.builds:
                    self._sampler = None
                    return
            now = time.monotonic()
            for pid, usage in tree_usages(list(builds)).items():
                builds[pid].rss = usage.rss
                builds[pid].cpu.add(now, usage.cpu_s)
                worker.log_event(builds[pid].topic, {"key": builds[pid].key, "rss": usage.rss, "cpu_s": usage.cpu_s})


_MACHINE: _Machine | None = None
_MACHINE_LOCK = threading.Lock()


def _machine() -> _Machine:
    global _MACHINE
    with _MACHINE_LOCK:
        if _MACHINE is None:
            _MACHINE = _Machine()
        return _MACHINE


def run_build(request: dict[str, Any], source: bytes) -> dict[str, Any]:
    """Build one source on this worker; never raises (a failure is an outcome, or a build worker's exit status).

    ``request``: ``job`` (the client's :class:`BuildJob` as JSON), ``task`` (this task's
    key), ``run`` (the run's id), ``topic`` (for events), ``need`` (bytes), ``limits``
    (:class:`MachineLimits` as keyword arguments).
    """
    worker = get_worker()
    machine = _machine()
    task, topic = request["task"], request["topic"]
    job = BuildJob.from_json(request["job"])
    host = socket.gethostname()
    worker.log_event(topic, {"key": task, "host": host, "worker": worker.address})
    build = _Build(task, int(request["need"]), topic)
    with machine.lock:
        machine.builds[task] = build
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-{job.key}-"))
    try:
        limits = MachineLimits(**request["limits"]).for_machine(machine.read().total_memory,
                                                                 worker.state.nthreads)
        if not _admitted(machine, build, limits, worker, topic):
            return _ended(None, host, worker, -signal.SIGTERM)  # stopped while it waited: as if killed
        remote_job = _place(job, work, source, machine.env_cache(request["run"]), worker.state.nthreads)
        outcome, returncode = _run_worker(remote_job, work, build, machine, request["run"], worker, topic)
        result = _ended(outcome, host, worker, returncode)
        if outcome is not None and outcome.status is Status.BUILT and outcome.wheel:
            result["wheel_bytes"] = wheel_bytes(remote_job.wheelhouse / outcome.wheel)
        with contextlib.suppress(OSError):
            result["log"] = remote_job.log_path.read_text(encoding="utf-8", errors="replace")
        return result
    except Exception as exc:  # the last line of defence: report, never raise
        return _ended(WorkerOutcome(status=Status.FAILED, error=f"farm worker {worker.address}: {exc!r}"),
                      host, worker)
    finally:
        with machine.lock:
            machine.builds.pop(task, None)
        shutil.rmtree(work, ignore_errors=True)


def wheel_bytes(path: Path) -> bytes:
    """The built wheel, as it is sent back (the client checks it again on arrival)."""
    return path.read_bytes()


def _ended(outcome: WorkerOutcome | None, host: str, worker: Any, returncode: int = 0) -> dict[str, Any]:
    return {"outcome": outcome.to_json() if outcome else None, "returncode": returncode, "host": host,
            "worker": worker.address}


def _admitted(machine: _Machine, build: _Build, limits: Limits, worker: Any, topic: str) -> bool:
    """Wait until this machine can take the build (the admission policy over its readings and
    the builds this worker runs); ``False`` if the build was stopped meanwhile."""
    said: set[str | None] = set()
    while True:
        with machine.lock:
            if build.key in machine.cancelled:
                return False
        with machine.admitting:  # one decision at a time: two builds admitted at once would not see each other
            decision = decide(Candidate(key=build.key, need=build.need), machine.read(), machine.running(),
                              limits)
            if decision.admit:
                build.started_at = time.monotonic()
                build.admitted = True
                return True
        if decision.blocked_by not in said:  # once per rule, as the scheduler says its own waits
            said.add(decision.blocked_by)
            worker.log_event(topic, {"key": build.key, "waiting": decision.reason})
        time.sleep(SAMPLE_INTERVAL)


def _place(job: BuildJob, work: Path, source: bytes, env_cache: Path, slots: int) -> BuildJob:
    """The job as this machine runs it: its source, wheel, log and environments in local folders."""
    sdist = work / "sdist" / job.source.name
    sdist.parent.mkdir()
    sdist.write_bytes(source)
    (work / "out").mkdir()
    (work / "build" / "tmp").mkdir(parents=True)
    # This machine's CPUs shared by its slots, not the client's (unless the user set them there).
    environ = {**job.environ, **{name: value for name, value in
                                 nested_jobs_environ(jobs_per_build(_machine().read().cpu_count, slots)).items()
                                 if name in job.environ}}
    return replace(job, source=sdist, kind="sdist", wheelhouse=work / "out", log_path=work / "build.log",
                   env_cache=env_cache, environ=environ)


def _run_worker(job: BuildJob, work: Path, build: _Build, machine: _Machine, run_id: str, worker: Any,
                topic: str) -> tuple[WorkerOutcome | None, int]:
    """Run a build worker forked by the run's fork server here on the job, admitted at once; forward its phases.

    A worker that died without an outcome is its exit status alone, as with local workers: the
    scheduler knows why (a timeout, a stop) and says so."""
    process = machine.fork(run_id)
    pid = process.pid
    if pid is None:  # the fork server died before it answered: as a worker killed at once
        return None, process.wait()
    with machine.lock:
        build.pid = pid
        cancelled = build.key in machine.cancelled
    if cancelled:  # stopped between admission and now
        kill_tree(pid, grace=0)
    machine.start_sampler(worker)
    assert process.stdin is not None and process.stdout is not None
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(json.dumps({"job": job.to_json(), "work_dir": str(work / "build")}) + "\n" + ADMIT + "\n")
        process.stdin.close()
    outcome: WorkerOutcome | None = None
    for line in process.stdout:
        message = decode_message(line)
        if message is None:
            continue
        if "phase" in message:
            worker.log_event(topic, {"key": build.key, "phase": message["phase"]})
        elif "outcome" in message:
            outcome = WorkerOutcome.from_json(message["outcome"])
    returncode = process.wait()
    with contextlib.suppress(OSError):  # whatever the build left behind goes with it
        os.killpg(pid, signal.SIGKILL)
    process.stdout.close()
    return outcome, returncode


def kill_builds(tasks: list[str], grace: float) -> int:
    """Stop the builds of these tasks on this worker (their whole process trees); how many were running.

    A build still waiting for admission, or not started yet, will not start.
    """
    machine = _machine()
    with machine.lock:
        machine.cancelled.update(tasks)  # also those not started yet: they will not
        pids = [machine.builds[task].pid for task in tasks if task in machine.builds]
    stoppers = [threading.Thread(target=kill_tree, args=(pid,), kwargs={"grace": grace})
                for pid in pids if pid is not None]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()
    return len(stoppers)


def build_pids() -> list[int]:
    """The build worker processes running on this worker now (for tests and diagnostics)."""
    machine = _machine()
    with machine.lock:
        return [build.pid for build in machine.builds.values() if build.pid is not None]


def start_run(run_id: str) -> None:
    """A run starts: its fork server here starts importing the build machinery before its first build."""
    _machine().start_forks(run_id)


def end_run(run_id: str) -> None:
    """The run is over: its fork server and the build environments it prepared on this worker go."""
    machine = _machine()
    machine.end_forks(run_id)
    with machine.lock:
        entry = machine.env_caches.pop(run_id, None)
    with machine.lock:
        machine.cancelled = {task for task in machine.cancelled if run_id not in task}
    if entry is not None:
        entry[0].close()
