"""The farm's side on a Dask worker: one build per task, in our normal build worker process.

Everything here runs inside a ``dask worker`` process, called by ``executors/dask.py``
through Dask (``client.submit`` for a build, ``client.run`` for the rest)::

    client.submit(run_build) ─► a task thread of the worker (--nthreads N: N at once)
        source bytes ─► work folder ─► machine admission (policy.admission.decide over this
        machine's readings and the builds this worker runs) ─► a build worker forked by the run's
        fork server here (build/forkserver.py; a session of its own, stdin/stdout protocol of
        build/worker.py, the same builder)
        │ stdout: phases ─► worker.log_event(topic) ─► the client's handle ─► the scheduler
        │ every 0.5 s (executors/machine.py): each build's process tree (RSS, CPU) ─► log_event, for
        │ the client's samples; under memory pressure the youngest build here is stopped
        ▼
    returns {outcome (none if the build worker died without one), exit status, wheel bytes, log text,
    host, the pressure it was stopped under}; the client checks the wheel and publishes it, or
    requeues a build stopped under pressure

    client.run(probe)        what this worker is: host, Python, platform, memory, CPUs
    client.run(kill_builds)  Ctrl-C, --timeout: the builds' process trees, by task key
    client.run(start_run)    a run starts: its fork server on this worker, ready for its builds
    client.run(end_run)      the run is over: its fork server goes, and its prepared build environments
                             once no worker process of the machine builds for it

Why a process of its own and not the build in the task thread: the builder is the same code
as on one machine, a build's whole tree can be signalled through its process group, and a
crash of a backend cannot take the Dask worker down. Each Dask worker process has one fork
server per run (``executors/forks.py``), started as the run starts and ended with it, so
that a build starts without a fresh interpreter's imports, as local builds do. If the Dask
worker dies (kill -9, machine lost), its fork server sees its socket close and kills the
group of every build worker it forked, and each build worker notices its parent is gone
and kills its own group (``build/worker._watch_parent``); the client sends the build again
elsewhere.

Machine admission and the stop under memory pressure count the builds of this worker process
against the machine's readings: run one ``dask worker`` per machine (``--nthreads`` builds), as
the README says, for the reservations of all the machine's builds to be counted together. The
job's sandbox and index options are the client's decisions, applied here as they are.

Prepared build environments (``build/envcache.py``) are shared by every worker process of the
machine for the run (``build/envruns.py``), so each is prepared once per machine; with
--keep-build-envs they stay in the machine's store for later runs.
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
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from distributed import get_worker

import orchestrator
from orchestrator.build.worker import ADMIT, decode_message
from orchestrator.executors.local import WORK_PREFIX
from orchestrator.executors.machine import SAMPLE_INTERVAL, Machine, MachineBuild, MachineLimits, this_machine
from orchestrator.jobs import BuildJob, Status, WorkerOutcome, nested_jobs_environ
from orchestrator.policy.admission import Candidate, Limits, decide, jobs_per_build
from orchestrator.resources import kill_tree


def probe() -> dict[str, Any]:
    """What this worker is, for the client's check at start and its routing by memory."""
    readings = this_machine().read()
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


def run_build(request: dict[str, Any], source: bytes) -> dict[str, Any]:
    """Build one source on this worker; never raises (a failure is an outcome, or a build worker's exit status).

    ``request``: ``job`` (the client's :class:`BuildJob` as JSON), ``task`` (this task's
    key), ``run`` (the run's id), ``topic`` (for events), ``need`` (bytes), ``limits``
    (:class:`MachineLimits` as keyword arguments), ``keep_envs`` (--keep-build-envs), ``prune_after``
    (--prune-unused-after: days, ``None`` for never).
    """
    worker = get_worker()
    machine = this_machine()
    task, topic = request["task"], request["topic"]
    job = BuildJob.from_json(request["job"])
    host = socket.gethostname()
    worker.log_event(topic, {"key": task, "host": host, "worker": worker.address})
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-{job.key}-"))
    try:
        machine_limits = MachineLimits(**request["limits"])
        limits = machine_limits.for_machine(machine.read().total_memory, worker.state.nthreads)
        build = MachineBuild(task, request["run"], int(request["need"]), topic, limits, machine_limits.grace)
        with machine.lock:
            machine.builds[task] = build
        if not _admitted(machine, build, limits, worker, topic):
            return _ended(None, host, worker, -signal.SIGTERM)  # stopped while it waited: as if killed
        env_cache = machine.env_cache(request["run"], keep=bool(request.get("keep_envs")),
                                      prune_after=request.get("prune_after"))
        remote_job = _place(job, work, source, env_cache, worker.state.nthreads)
        outcome, returncode = _run_worker(remote_job, work, build, machine, request["run"], worker, topic)
        result = _ended(outcome, host, worker, returncode)
        if build.pressure is not None:  # stopped here: the client requeues it, as its scheduler would
            result["pressure"] = {"rss": build.pressure.rss, "reason": build.pressure.reason}
        if outcome is not None and outcome.status is Status.BUILT and outcome.wheel:
            result["wheel_bytes"] = wheel_bytes(remote_job.wheelhouse / outcome.wheel)
        with contextlib.suppress(OSError):
            result["log"] = remote_job.log_path.read_text(encoding="utf-8", errors="replace")
        return result
    except Exception as exc:  # the last line of defence: report, never raise
        return _ended(WorkerOutcome(status=Status.FAILED, error=f"farm worker {worker.address}: {exc!r}"),
                      host, worker)
    finally:
        machine.forget(task)
        shutil.rmtree(work, ignore_errors=True)


def wheel_bytes(path: Path) -> bytes:
    """The built wheel, as it is sent back (the client checks it again on arrival)."""
    return path.read_bytes()


def _ended(outcome: WorkerOutcome | None, host: str, worker: Any, returncode: int = 0) -> dict[str, Any]:
    return {"outcome": outcome.to_json() if outcome else None, "returncode": returncode, "host": host,
            "worker": worker.address}


def _admitted(machine: Machine, build: MachineBuild, limits: Limits, worker: Any, topic: str) -> bool:
    """Wait until this machine can take the build (the admission policy over its readings and
    the builds this worker runs); ``False`` if the build was stopped meanwhile."""
    said: set[str | None] = set()
    while True:
        with machine.lock:
            if build.key in machine.cancelled:
                return False
        # One decision at a time on the machine: two builds admitted at once would not see each other.
        with machine.admitting, machine.ledger.admitting():
            running, others = machine.running(build.run_id)
            # Memory is the machine's; the slots are this worker's: the count cap counts its own builds.
            here = replace(limits, max_builds=limits.max_builds + others)
            decision = decide(Candidate(key=build.key, need=build.need), machine.read(), running, here)
            if decision.admit:
                machine.admit(build)
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
                                 nested_jobs_environ(jobs_per_build(this_machine().read().cpu_count, slots)).items()
                                 if name in job.environ}}
    return replace(job, source=sdist, kind="sdist", wheelhouse=work / "out", log_path=work / "build.log",
                   env_cache=env_cache, environ=environ)


def _run_worker(job: BuildJob, work: Path, build: MachineBuild, machine: Machine, run_id: str, worker: Any,
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
    machine = this_machine()
    with machine.lock:
        machine.cancelled.update(tasks)  # also those not started yet: they will not
        builds = [machine.builds[task] for task in tasks if task in machine.builds]
    return machine.stop(builds, grace)


def build_pids() -> list[int]:
    """The build worker processes running on this worker now (for tests and diagnostics)."""
    machine = this_machine()
    with machine.lock:
        return [build.pid for build in machine.builds.values() if build.pid is not None]


def start_run(run_id: str) -> None:
    """A run starts: its fork server here starts importing the build machinery before its first build."""
    this_machine().start_forks(run_id)


def end_run(run_id: str) -> None:
    """The run is over: its fork server here goes, and its build environments when no process of this
    machine builds for it any more."""
    this_machine().end_run(run_id)
