"""A farm machine as one Dask worker process sees it: the builds it runs, their samples, the stop of the
youngest under memory pressure, the runs' fork servers and prepared build environments.

One :class:`Machine` per Dask worker process (:func:`this_machine`), used by ``remote.py``'s tasks::

    remote.run_build ─► Machine.builds[task] ─► admitted (decide) ─► forked (pid) ─► popped at its end
    the sampler thread, every 0.5 s while builds run (0.125 s near memory pressure):
        each build's process tree (RSS, CPU) ─► kept for admission, and worker.log_event for the client
        admission.pick_victim over this machine's readings and the run's builds here, in every worker
        process of the machine (``ledger.py``), with the run's limits ─► the youngest build's tree
        stopped by the process that runs it (the run's grace), its ``pressure`` kept: run_build
        returns it, and the client's scheduler requeues the build with its need raised

The policy is the scheduler's own (``policy/admission.py``); only the readings and the
builds are this machine's: the client's scheduler keeps no memory limit of its own for a farm
(``dask.scheduler_limits``), so a build is never stopped twice.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.build import envruns
from orchestrator.build.envruns import remove_dead_runs
from orchestrator.executors.forks import ForkedWorker, ForkServer
from orchestrator.executors.ledger import Entry, Ledger
from orchestrator.executors.local import sweep_stale_work_dirs
from orchestrator.policy.admission import (
    Limits,
    Readings,
    RunningBuild,
    pick_victim,
    pressure_reason,
    sample_interval,
)
from orchestrator.policy.history import default_state_dir
from orchestrator.pruning import prune_state
from orchestrator.resources import CpuRate, SystemProbe, kill_tree, tree_usages

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL = 0.5
"""Seconds between samples of the builds' process trees, and between admission checks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineLimits:
    """The run's admission limits as each farm machine applies them to the builds it runs."""

    memory_limit: int | None = None
    """The most the builds of one machine may reserve, in all its worker processes; ``None``: no cap (free
    memory still counts)."""
    min_free_memory: int | None = None
    """Memory each machine keeps free; ``None``: 10% of its memory or 1 GiB, the smaller."""
    max_load: float | None = None
    max_cpu: float | None = None
    grace: float = 3.0
    """Seconds between SIGTERM and SIGKILL when the machine stops a build under memory pressure (the
    scheduler's own default grace)."""

    def kept_free(self, total_memory: int) -> int:
        return self.min_free_memory if self.min_free_memory is not None else min(total_memory // 10, 1024**3)

    def for_machine(self, total_memory: int, slots: int) -> Limits:
        """As :func:`~orchestrator.policy.admission.decide` takes them, on a machine and worker of ``slots``."""
        return Limits(max_builds=slots, memory_limit=self.memory_limit, min_free_memory=self.kept_free(total_memory),
                      max_load=self.max_load, max_cpu=self.max_cpu)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pressure:
    """Why the machine stopped a build: what its tree used then, and what the machine saw."""

    rss: int
    reason: str


class MachineBuild:
    """A build this worker runs: its admission record, then its process."""

    def __init__(self, key: str, run_id: str, need: int, topic: str, limits: Limits, grace: float) -> None:
        self.key = key
        self.run_id = run_id
        self.need = need
        self.topic = topic
        self.limits = limits
        self.grace = grace
        self.admitted = False
        self.pid: int | None = None
        self.rss = 0
        self.cpu = CpuRate()
        self.started_at = time.monotonic()
        self.stopping = False
        """Its tree is being stopped (by the client, or under pressure here): its memory is about to be freed."""
        self.pressure: Pressure | None = None
        """Set when this machine stopped it under memory pressure."""

    def as_policy(self) -> RunningBuild:
        return RunningBuild(key=self.key, need=self.need, rss=self.rss, started_at=self.started_at,
                            cpu=self.cpu.rate(), stopping=self.stopping)

    def entry(self) -> Entry:
        """This build as the machine's other worker processes see it (``executors/ledger.py``)."""
        return Entry(key=self.key, owner=os.getpid(), need=self.need, rss=self.rss, started_at=self.started_at,
                     cpu=self.cpu.rate(), stopping=self.stopping)


def _from_entry(entry: Entry) -> RunningBuild:
    return RunningBuild(key=entry.key, need=entry.need, rss=entry.rss, started_at=entry.started_at, cpu=entry.cpu,
                        stopping=entry.stopping)


class Machine:
    """This worker process's builds, their samples and the runs' fork servers and environments."""

    def __init__(self) -> None:
        sweep_stale_work_dirs(Path(tempfile.gettempdir()))  # those of a worker killed mid-build
        self.probe = SystemProbe()
        self.ledger = Ledger(Path(tempfile.gettempdir()) / "orchestrate-farm" / "ledger")
        """The builds of the machine's other worker processes, and this one's for them."""
        self.lock = threading.Lock()
        self.admitting = threading.RLock()
        """Held by one admission decision at a time, and by each reading of the probe."""
        self.builds: dict[str, MachineBuild] = {}
        self.cancelled: set[str] = set()
        self.env_runs: dict[str, envruns.SharedRun] = {}
        """Each run's share of the machine's prepared build environments."""
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

    def end_run(self, run_id: str) -> None:
        """The run is over here: its fork server goes (with any build worker it still had), and this
        process's share of its build environments (the last process of the machine out removes them; if
        those that shared them were all killed, any process of the machine does)."""
        with self._forking:
            self.ended_runs.add(run_id)
            server = self.fork_servers.pop(run_id, None)
        if server is not None:
            server.close()
        with self.lock:
            shared = self.env_runs.pop(run_id, None)
            self.cancelled = {task for task in self.cancelled if run_id not in task}
        if shared is not None:
            shared.leave()
        self.ledger.end_run(run_id)
        for keep in (False, True):  # the run's folder too, if every process that shared it was killed
            remove_dead_runs(env_root(keep=keep) / "runs")

    def env_cache(self, run_id: str, *, keep: bool, prune_after: int | None = None) -> Path:
        """The run's prepared environments on this machine, shared by its worker processes (see
        ``build/envruns.py``), under :func:`env_root`. Kept ones are pruned as this process joins the run: what
        no run used for ``prune_after`` days goes (``pruning.py``, at most hourly per machine's state folder)."""
        with self.lock:
            if run_id in self.ended_runs:
                raise RuntimeError(f"run {run_id} is over")
            if run_id not in self.env_runs:
                root = env_root(keep=keep)
                if keep:
                    pruned = prune_state(root.parent, days=prune_after, downloads=None, history=None,
                                         now=time.time())
                    if pruned is not None and pruned.line():
                        logger.info("%s", pruned.line())
                self.env_runs[run_id] = envruns.join(root, run_id, keep=keep)
            return self.env_runs[run_id].path

    def read(self) -> Readings:
        with self.admitting:  # the probe keeps a window of CPU samples: one reader at a time
            return self.probe.read()

    def running(self, run_id: str) -> tuple[list[RunningBuild], int]:
        """The builds running on the machine: this process's, then the run's in its other processes
        (how many, the second figure)."""
        others = [_from_entry(entry) for entry in self.ledger.others(run_id)]
        with self.lock:
            own = [build.as_policy() for build in self.builds.values() if build.admitted]
        return own + others, len(others)

    def admit(self, build: MachineBuild) -> None:
        """``build`` runs from now: the machine's other processes count it."""
        build.started_at = time.monotonic()
        build.admitted = True
        self.ledger.publish(build.run_id, build.entry())

    def forget(self, task: str) -> None:
        """The build ``task`` is over here."""
        with self.lock:  # the sampler publishes under it: a build gone stays gone from the ledger
            build = self.builds.pop(task, None)
            if build is not None and build.admitted:
                self.ledger.withdraw(build.run_id, build.key)

    def start_sampler(self, worker: Any) -> None:
        with self.lock:
            if self._sampler is None:
                self._sampler = threading.Thread(target=self._sample, args=(worker,), daemon=True,
                                                 name="orchestrate-sampler")
                self._sampler.start()

    def stop(self, builds: list[MachineBuild], grace: float) -> int:
        """Stop these builds' whole trees, waiting for them; one not forked yet will not start. How many ran."""
        with self.lock:
            for build in builds:
                build.stopping = True
                self.cancelled.add(build.key)
            pids = [build.pid for build in builds if build.pid is not None]
        stoppers = [threading.Thread(target=kill_tree, args=(pid,), kwargs={"grace": grace}) for pid in pids]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        return len(stoppers)

    def _sample(self, worker: Any) -> None:
        """Every 0.5 s (four times as often near memory pressure), while builds run: each build's tree, kept and
        sent to the client; then the pressure."""
        interval = SAMPLE_INTERVAL
        while True:
            time.sleep(interval)
            with self.lock:
                builds = {build.pid: build for build in self.builds.values() if build.pid is not None}
                if not self.builds:
                    self._sampler = None
                    return
            now = time.monotonic()
            for pid, usage in tree_usages(list(builds)).items():
                build = builds[pid]
                build.rss = usage.rss
                build.cpu.add(now, usage.cpu_s)
                worker.log_event(build.topic, {"key": build.key, "rss": usage.rss, "cpu_s": usage.cpu_s})
                with self.lock:
                    if self.builds.get(build.key) is build:
                        self.ledger.publish(build.run_id, build.entry())
            interval = self._relieve()

    def _relieve(self) -> float:
        """Stop the youngest build of a run whose builds on this machine are under memory pressure, as the
        scheduler does (``admission.pick_victim``), over the builds of every worker process here: each stops
        only its own, and the owner of the youngest sees the same pressure. A build alone is never stopped.
        Returns the seconds until the next sample (``admission.sample_interval``)."""
        readings = self.read()
        with self.lock:
            run_ids = {build.run_id for build in self.builds.values()}
        others = {run_id: [_from_entry(entry) for entry in self.ledger.others(run_id)] for run_id in run_ids}
        with self.lock:
            runs: dict[str, list[MachineBuild]] = {}
            for build in self.builds.values():
                if build.admitted:
                    runs.setdefault(build.run_id, []).append(build)
            victims = []
            interval = SAMPLE_INTERVAL
            for run_id, builds in runs.items():
                running = [build.as_policy() for build in builds] + others.get(run_id, [])
                interval = min(interval, sample_interval(readings, running, builds[0].limits, SAMPLE_INTERVAL))
                key = pick_victim(readings, running, builds[0].limits)
                if key is not None and key in self.builds:  # another process's: its owner stops it
                    victim = self.builds[key]
                    victim.pressure = Pressure(rss=victim.rss,
                                               reason=pressure_reason(readings, running, victim.limits))
                    victim.stopping = True  # at once: the next sample must not pick another for the same pressure
                    victims.append(victim)
        for victim in victims:
            threading.Thread(target=self.stop, args=([victim], victim.grace), daemon=True,
                             name=f"relieve-{victim.key}").start()
        return interval


def env_root(*, keep: bool) -> Path:
    """Where this machine keeps the farm runs' prepared environments: with ``keep``, in its state folder
    (``$ORCHESTRATE_STATE_DIR`` or the default), where a local run keeps them; else in its temporary folder."""
    if keep:
        return Path(os.environ.get("ORCHESTRATE_STATE_DIR") or default_state_dir()).resolve() / "build-envs"
    return Path(tempfile.gettempdir()) / "orchestrate-farm" / "build-envs"


_MACHINE: Machine | None = None
_MACHINE_LOCK = threading.Lock()


def this_machine() -> Machine:
    """This worker process's :class:`Machine`, made at first use."""
    global _MACHINE
    with _MACHINE_LOCK:
        if _MACHINE is None:
            _MACHINE = Machine()
        return _MACHINE

