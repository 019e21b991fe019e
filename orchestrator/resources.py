"""Everything that asks the operating system about processes and memory (the only psutil user)."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

import psutil

from orchestrator.admission import Readings


def usable_cpu_count() -> int:
    """CPUs this process may run on (affinity and cgroup-aware where psutil can tell)."""
    try:
        return max(1, len(psutil.Process().cpu_affinity() or ()))
    except (AttributeError, psutil.Error):  # no cpu_affinity on macOS
        return psutil.cpu_count() or 1


class SystemProbe:
    """Reads the machine: memory and load. Satisfies the scheduler's ``Probe`` protocol."""

    def __init__(self) -> None:
        self._cpus = usable_cpu_count()

    def read(self) -> Readings:
        memory = psutil.virtual_memory()
        try:
            load: float | None = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = None
        return Readings(
            total_memory=memory.total, available_memory=memory.available, load_1m=load, cpu_count=self._cpus
        )


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """What a process and all its descendants use, summed."""

    rss: int
    """Resident memory, in bytes."""
    cpu_s: float
    """CPU seconds so far, counting descendants that have exited and been waited for."""


def tree_usage(pid: int) -> TreeUsage:
    """Memory and CPU time of a process and all its descendants (zeros once it is gone)."""
    rss, cpu = 0, 0.0
    for process in _tree(pid):
        with contextlib.suppress(psutil.Error), process.oneshot():
            times = process.cpu_times()
            cpu += times.user + times.system + times.children_user + times.children_system
            rss += process.memory_info().rss
    return TreeUsage(rss=rss, cpu_s=cpu)


def kill_tree(pid: int, *, grace: float = 3.0) -> None:
    """Stop a process and every descendant: SIGTERM, wait up to ``grace`` seconds, then SIGKILL.

    The worker leads its own process group, so the group is signalled too: that
    reaches descendants that were orphaned and re-parented away from the tree.
    """
    processes = _tree(pid)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace)


def pid_alive(pid: int) -> bool:
    return bool(psutil.pid_exists(pid))
