"""Everything that asks the operating system about processes and memory (the only psutil user)."""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from orchestrator.policy.admission import Readings

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
OWN_CGROUPS: Final = Path("/proc/self/cgroup")
PROC: Final = Path("/proc")
CPU_WINDOW: Final = 0.5
"""Seconds over which CPU use is measured."""


def usable_cpu_count() -> int:
    """CPUs this process may use: those its affinity allows, capped by its cgroup's CPU quota."""
    return _usable_cpus(cgroup_cpu_quota(), _affinity())


def _usable_cpus(quota: float | None, affinity: list[int] | None) -> int:
    count = len(affinity or ()) or psutil.cpu_count() or 1
    return max(1, count if quota is None else min(count, math.ceil(quota)))


def _affinity() -> list[int] | None:
    """The CPUs this process may run on; ``None`` where the platform cannot tell (macOS)."""
    try:
        return list(psutil.Process().cpu_affinity() or ()) or None
    except (AttributeError, psutil.Error):
        return None


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
        elif "cpu" in controllers.split(","):  # mounted as cpu/, or as cpu,cpuacct/ without that link
            base = root / "cpu" if (root / "cpu").is_dir() else root / controllers
            read = _cfs_quota
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


class CpuRate:
    """CPUs a growing count of CPU seconds kept busy over the last :data:`CPU_WINDOW`, from samples
    taken as often as the caller likes: the oldest sample kept is the newest one that old."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, when: float, cpu_s: float) -> None:
        """Record ``cpu_s``, the count at monotonic time ``when``."""
        self._samples.append((when, cpu_s))
        while len(self._samples) > 1 and when - self._samples[1][0] >= CPU_WINDOW:
            self._samples.popleft()

    def rate(self) -> float | None:
        """CPUs busy since the oldest sample, once the samples span :data:`CPU_WINDOW`; else ``None``."""
        if not self._samples:
            return None
        (then, cpu_then), (now, cpu_now) = self._samples[0], self._samples[-1]
        if now - then < CPU_WINDOW:
            return None
        return max(0.0, cpu_now - cpu_then) / (now - then)

    def seen(self) -> float:
        """CPU seconds counted from the oldest sample kept to the newest."""
        if not self._samples:
            return 0.0
        return max(0.0, self._samples[-1][1] - self._samples[0][1])

    def __len__(self) -> int:
        return len(self._samples)


class SystemProbe:
    """Reads the machine: memory, load and busy CPUs. Satisfies the scheduler's ``Probe`` protocol.

    Busy CPUs are measured on the CPUs this process may run on, whoever keeps them busy.
    Under a cgroup CPU quota the machine's CPUs say little about the share left to this
    process, so they are not measured and the policy counts the builds' own use instead.

    The scheduler reads the machine several times a build; on Linux :class:`ProcReader` reads the
    two fields of ``/proc/meminfo`` and the CPU lines of ``/proc/stat`` it needs, on files kept open,
    where psutil's general parsers opened and parsed every field of each (a fifth of the reading's
    cost). Reads within :data:`READING_REUSE` seconds of the last share its readings.
    """

    def __init__(self) -> None:
        quota = cgroup_cpu_quota()
        self._measured = _affinity()
        self._cpus = _usable_cpus(quota, self._measured)
        self._busy = CpuRate() if quota is None else None
        self._proc = ProcReader.open(self._measured)
        self._last: tuple[float, Readings] | None = None

    def read(self) -> Readings:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < READING_REUSE:
            return self._last[1]
        total, available = self._proc.memory() if self._proc is not None else _psutil_memory()
        try:
            load: float | None = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = None
        busy = None
        if self._busy is not None:
            seconds = self._proc.busy_cpu_seconds() if self._proc is not None else None
            self._busy.add(now, busy_cpu_seconds(self._measured) if seconds is None else seconds)
            busy = self._busy.rate()
        readings = Readings(
            total_memory=total,
            available_memory=available,
            load_1m=load,
            cpu_count=self._cpus,
            cpu_busy=busy,
        )
        self._last = (now, readings)
        return readings


READING_REUSE: Final = 0.001
"""Seconds within which :meth:`SystemProbe.read` answers with its last readings: decisions taken in the same
loop turn see the same machine, read once."""


def _psutil_memory() -> tuple[int, int]:
    memory = psutil.virtual_memory()
    return memory.total, memory.available


class ProcReader:
    """Linux's ``/proc/meminfo`` and ``/proc/stat``, kept open and read whole with ``pread`` at each reading.

    A ``/proc`` file read again from offset 0 is generated again, so one descriptor serves the whole run.
    Parsed by hand for the few fields wanted, as psutil reads them: ``MemTotal`` and ``MemAvailable``
    (kB) are its ``total`` and ``available``; a CPU line's ticks are its ``cpu_times`` (see :data:`BUSY_FIELDS`).
    """

    def __init__(self, meminfo: int, stat: int, cpus: list[int] | None) -> None:
        self._meminfo = meminfo
        self._stat = stat
        self._cpus = None if cpus is None else frozenset(cpus)
        # A CPU line is at most ~220 bytes; the lines come first in /proc/stat, before the long ``intr`` line.
        self._stat_size = 256 * ((os.cpu_count() or 1) + 2)
        weakref.finalize(self, _close, meminfo, stat)

    @classmethod
    def open(cls, cpus: list[int] | None, proc: Path = PROC) -> ProcReader | None:
        """A reader of ``proc`` (for ``cpus``, all if ``None``), or ``None`` where the files do not read as
        expected (not Linux, an old kernel without ``MemAvailable``): psutil then reads the machine."""
        try:
            meminfo = os.open(proc / "meminfo", os.O_RDONLY)
        except OSError:
            return None
        try:
            stat = os.open(proc / "stat", os.O_RDONLY)
        except OSError:
            os.close(meminfo)
            return None
        reader = cls(meminfo, stat, cpus)
        try:
            reader.memory()
            if reader.busy_cpu_seconds() is None:
                return None
        except (OSError, ValueError):
            return None
        return reader

    def memory(self) -> tuple[int, int]:
        """The machine's total and available memory, in bytes."""
        total = available = None
        for line in os.pread(self._meminfo, 4096, 0).splitlines():
            if line.startswith(b"MemTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith(b"MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
        if total is None or available is None:
            raise ValueError("/proc/meminfo has no MemTotal or MemAvailable")
        return total, available

    def busy_cpu_seconds(self) -> float | None:
        """Seconds the measured CPUs have spent on anything but idling since boot; ``None`` if one is not listed."""
        ticks, seen = 0, 0
        data = os.pread(self._stat, self._stat_size, 0)
        for line in data[:data.rfind(b"\n")].split(b"\n"):  # never a line the read cut short
            if not line.startswith(b"cpu"):
                break
            name, *fields = line.split()
            if name == b"cpu" or (self._cpus is not None and int(name[3:]) not in self._cpus):
                continue
            # user nice system idle iowait irq softirq steal guest guest_nice: guest is in user already
            ticks += sum(int(fields[i]) for i in _BUSY_COLUMNS if i < len(fields))
            seen += 1
        if seen == 0 or (self._cpus is not None and seen < len(self._cpus)):
            return None
        return ticks / CLOCK_TICKS


_BUSY_COLUMNS: Final = (0, 1, 2, 5, 6, 7)
"""The columns of a ``/proc/stat`` CPU line that are :data:`BUSY_FIELDS`: user, nice, system, irq, softirq, steal."""


def _close(*descriptors: int) -> None:
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            os.close(descriptor)


BUSY_FIELDS: Final = ("user", "nice", "system", "irq", "softirq", "interrupt", "dpc", "steal")
"""``psutil.cpu_times`` fields of time not idle, on any platform; ``steal`` is time a hypervisor
gave to another machine. ``guest`` is left out: it is counted in ``user`` already."""


def busy_cpu_seconds(cpus: list[int] | None = None) -> float:
    """Seconds the given CPUs (all if ``None``) have spent on anything but idling, since boot."""
    per_cpu = psutil.cpu_times(percpu=True)
    chosen = per_cpu if cpus is None else [per_cpu[i] for i in cpus if i < len(per_cpu)]
    return sum(getattr(times, field, 0.0) for times in chosen for field in BUSY_FIELDS)


def _trees(roots: Collection[int]) -> dict[int, list[psutil.Process]]:
    """Each of ``roots`` (if still running) with all its descendants.

    Where the kernel lists each thread's children (Linux's ``/proc/PID/task/TID/children``),
    the trees are walked down from their roots, at a cost that does not grow with the
    machine's other processes; elsewhere, every process's parent is read once for all trees.
    """
    if _proc_children_listed():
        children: Callable[[int], list[int]] = _proc_children
    else:
        table: collections.defaultdict[int, list[int]] = collections.defaultdict(list)
        for process in psutil.process_iter(["ppid"]):
            table[process.info["ppid"]].append(process.pid)
        children = table.__getitem__
    trees = {}
    for root in roots:
        tree, seen, waiting = [], set(), [root]
        while waiting:
            pid = waiting.pop()
            if pid in seen:
                continue
            seen.add(pid)
            with contextlib.suppress(psutil.Error):
                tree.append(psutil.Process(pid))
                waiting.extend(children(pid))
        trees[root] = tree
    return trees


@functools.cache
def _proc_children_listed() -> bool:
    return (PROC / "self" / "task" / str(threading.get_native_id()) / "children").is_file()


def _proc_children(pid: int, *, threads: int | None = None) -> list[int]:
    """The children of ``pid``, from each of its threads' ``children`` (only its own, if it has ``threads=1``)."""
    if threads == 1:
        tasks = [str(pid)]
    else:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []  # gone
    children: list[int] = []
    for task in tasks:
        listed = _read_proc(f"/proc/{pid}/task/{task}/children", 65536)  # None: the thread ended
        if listed:
            children.extend(int(child) for child in listed.split())
    return children


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """What a process and all its descendants use, summed."""

    rss: int
    """Resident memory, in bytes."""
    cpu_s: float
    """CPU seconds so far, counting descendants that have exited and been waited for."""
    cpu_wait_s: float | None = None
    """Seconds its live processes have spent runnable, waiting for a CPU (Linux's ``schedstat``; an exited
    process's wait goes with it); ``None`` where not measured."""


def tree_usages(pids: Collection[int]) -> dict[int, TreeUsage]:
    """Memory, CPU time and CPU wait of each of ``pids`` with all its descendants (zeros, no wait, once gone).

    Where the kernel lists children, each process's files are read as psutil reads them, without a ``Process``
    made for it (which reads ``/proc/PID/stat`` once more) nor psutil's general parsing, and a single-threaded
    process's children without listing its threads: a third of the system calls.
    """
    if not _proc_children_listed():
        return {root: _psutil_usage(tree) for root, tree in _trees(pids).items()}
    usages = {}
    for root in pids:
        rss, cpu, wait, seen, waiting = 0, 0.0, None, set(), [root]
        while waiting:
            pid = waiting.pop()
            if pid in seen:
                continue
            seen.add(pid)
            usage = _stat_usage(pid)
            if usage is None:
                continue  # gone
            rss += usage[0]
            cpu += usage[1]
            if (waited := _cpu_wait(pid)) is not None:
                wait = (wait or 0.0) + waited
            waiting.extend(_proc_children(pid, threads=usage[2]))
        usages[root] = TreeUsage(rss=rss, cpu_s=cpu, cpu_wait_s=wait)
    return usages


def _psutil_usage(tree: list[psutil.Process]) -> TreeUsage:
    rss, cpu, wait = 0, 0.0, None
    for process in tree:
        with contextlib.suppress(psutil.Error), process.oneshot():
            times = process.cpu_times()
            cpu += times.user + times.system + times.children_user + times.children_system
            rss += process.memory_info().rss
        if (waited := _cpu_wait(process.pid)) is not None:
            wait = (wait or 0.0) + waited
    return TreeUsage(rss=rss, cpu_s=cpu, cpu_wait_s=wait)


PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _stat_usage(pid: int) -> tuple[int, float, int] | None:
    """Resident bytes and CPU seconds (its own and its waited-for children's) of process ``pid``, read as psutil's
    ``memory_info().rss`` and ``cpu_times()`` read them (``/proc/PID/statm`` and ``/proc/PID/stat``), and its
    threads; ``None`` once gone. The resident pages are statm's: stat's own figure is the kernel's
    approximation, a few pages off."""
    stat, statm = _read_proc(f"/proc/{pid}/stat"), _read_proc(f"/proc/{pid}/statm")
    if stat is None or statm is None:
        return None
    # pid (comm) state ppid ...: the name may hold spaces and parentheses, so fields count from the last ")"
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        utime, stime, cutime, cstime = (int(field) for field in fields[11:15])
        cpu = (utime + stime + cutime + cstime) / CLOCK_TICKS
        return int(statm.split()[1]) * PAGE_SIZE, cpu, int(fields[17])
    except (ValueError, IndexError):
        return None


def _read_proc(path: str, size: int = 1024) -> bytes | None:
    """The start of a small ``/proc`` file, on one descriptor and no buffered file; ``None`` if it is gone."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(descriptor, size)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def _cpu_wait(pid: int) -> float | None:
    """Seconds process ``pid`` has waited on a run queue (psutil does not read ``/proc/PID/schedstat``)."""
    data = _read_proc(f"/proc/{pid}/schedstat")  # None: gone, or a kernel without scheduler statistics
    try:
        return None if data is None else int(data.split()[1]) / 1e9
    except (ValueError, IndexError):
        return None


def kill_tree(pid: int, *, grace: float = 3.0) -> None:
    """Stop a process and every descendant: SIGTERM, wait up to ``grace`` seconds, then SIGKILL.

    The worker leads its own process group, so the group is signalled too: that
    reaches descendants that were orphaned and re-parented away from the tree.
    Nobody is reaped here: the tree is gone once each process has exited (see :func:`_wait_exited`).
    """
    processes = _trees([pid])[pid]
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    alive = _wait_exited(processes, grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    _wait_exited(alive, grace)


def _wait_exited(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after up to ``timeout`` seconds.

    A process that has exited and not been reaped yet (a zombie) holds no memory and runs nothing: it
    counts as exited. ``psutil.wait_procs`` waits for the reaping, which for an orphaned backend is
    init's: every 2 s or so on some machines, never under a container's pid 1 that is no init.
    """
    deadline = time.monotonic() + timeout
    interval = 0.005
    while True:
        running = [process for process in processes if _running(process)]
        left = deadline - time.monotonic()
        if not running or left <= 0:
            return running
        time.sleep(min(interval, left))
        interval = min(interval * 2, 0.05)


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a killed process its parent has not reaped yet (a zombie) does not."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


NICE_LEVEL: Final = 10
"""The niceness of every process of a build under ``--nice``."""


def lower_priority() -> None:
    """Lower this process's priority for ``--nice``: niceness :data:`NICE_LEVEL` (never less nice than it
    was) and the idle I/O class where the system has one; every process it starts afterwards inherits both."""
    process = psutil.Process()
    with contextlib.suppress(psutil.Error, OSError):
        process.nice(max(process.nice(), NICE_LEVEL))
    idle = getattr(psutil, "IOPRIO_CLASS_IDLE", None)
    if idle is not None:
        with contextlib.suppress(psutil.Error, OSError):
            process.ionice(idle)
