"""Everything that asks the operating system about processes and memory (the only psutil user)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from orchestrator.admission import Readings

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
OWN_CGROUPS: Final = Path("/proc/self/cgroup")


def usable_cpu_count() -> int:
    """CPUs this process may use: those its affinity allows, capped by its cgroup's CPU quota."""
    try:
        count = len(psutil.Process().cpu_affinity() or ())
    except (AttributeError, psutil.Error):  # no cpu_affinity on macOS
        count = psutil.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, own: Path = OWN_CGROUPS) -> float | None:
    """CPUs' worth of time the tightest CPU quota on this process's cgroup path allows
    (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), or ``None`` without one.

    Each level from the process's own cgroup up to the mount is read; a level this
    process cannot see (a container shows its own cgroup as the root) is skipped.
    """
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        if line.count(":") < 2:
            continue
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            base, read = root if (root / "cgroup.controllers").exists() else root / "unified", _cpu_max
        elif "cpu" in controllers.split(","):
            base, read = root / "cpu", _cfs_quota
        else:
            continue
        folder = base / path.lstrip("/")
        for level in (folder, *folder.parents):
            quotas.append(read(level))
            if level == base:
                break
    return min((quota for quota in quotas if quota is not None), default=None)


def _cpu_max(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
        return None if quota == "max" or int(period) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cfs_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


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
