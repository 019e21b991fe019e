from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import pinned_to

from orchestrator import resources
from orchestrator.resources import (
    CPU_WINDOW,
    CpuRate,
    ProcReader,
    SystemProbe,
    TreeUsage,
    busy_cpu_seconds,
    cgroup_cpu_quota,
    kill_tree,
    tree_usages,
    usable_cpu_count,
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def own(tmp_path: Path, text: str) -> Path:
    write(tmp_path / "proc-self-cgroup", text)
    return tmp_path / "proc-self-cgroup"


def test_cgroup_v2_takes_the_tightest_level(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory\n")
    write(root / "cpu.max", "max 100000\n")
    write(root / "ci.slice" / "cpu.max", "150000 100000\n")  # a parent allows 1.5 CPUs
    write(root / "ci.slice" / "job" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(root, own(tmp_path, "0::/ci.slice/job\n")) == 1.5
    write(root / "ci.slice" / "job" / "cpu.max", "50000 100000\n")
    assert cgroup_cpu_quota(root, own(tmp_path, "0::/ci.slice/job\n")) == 0.5


def test_cgroup_v2_seen_from_inside_a_container(tmp_path: Path) -> None:
    # The process's path names the host's hierarchy; the container sees its own cgroup as the root.
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu\n")
    write(root / "cpu.max", "300000 100000\n")
    assert cgroup_cpu_quota(root, own(tmp_path, "0::/docker/0123abcd\n")) == 3.0


def test_cgroup_v1_and_hybrid(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu" / "batch" / "cpu.cfs_quota_us", "250000\n")
    write(root / "cpu" / "batch" / "cpu.cfs_period_us", "100000\n")
    write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    write(root / "unified" / "cgroup.procs", "")  # v2 mounted beside v1, without CPU control
    cgroups = own(tmp_path, "5:memory:/batch\n2:cpu,cpuacct:/batch\n0::/batch\n")
    assert cgroup_cpu_quota(root, cgroups) == 2.5


def test_cgroup_v1_mounted_under_both_controllers_names(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "150000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, own(tmp_path, "3:cpu,cpuacct:/\n")) == 1.5


@pytest.mark.parametrize(
    "text",
    ["max 100000\n", "garbage\n", "100000 0\n", None],  # no quota, unreadable, a zero period, no file
)
def test_no_usable_cgroup_quota(tmp_path: Path, text: str | None) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu\n")
    if text is not None:
        write(root / "cpu.max", text)
    assert cgroup_cpu_quota(root, own(tmp_path, "0::/\n")) is None
    assert cgroup_cpu_quota(root, own(tmp_path, "not a cgroup line\n")) is None
    assert cgroup_cpu_quota(root, tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("cpus", "quota", "usable"),
    [
        (1, None, 1),
        (2, None, 2),  # the CPUs the affinity allows
        (2, 0.5, 1),  # half a CPU still runs one build
        (2, 1.5, 2),  # a part of a CPU counts as one
        (2, 6.0, 2),  # a quota above the CPUs there are adds none
        (4, 2.0, 2),
    ],
)
def test_usable_cpu_count_applies_affinity_and_quota(
    monkeypatch: pytest.MonkeyPatch, cpus: int, quota: float | None, usable: int
) -> None:
    monkeypatch.setattr("orchestrator.resources.cgroup_cpu_quota", lambda: quota)
    with pinned_to(cpus):
        assert usable_cpu_count() == usable


def test_cpu_rate_spans_the_window_however_often_it_is_sampled() -> None:
    rate = CpuRate()
    rate.add(100.0, 5.0)
    assert rate.rate() is None  # one sample spans nothing
    for step in range(1, 41):  # busy on one CPU, sampled every 0.2 s
        rate.add(100.0 + step * 0.2, 5.0 + step * 0.2)
    assert rate.rate() == pytest.approx(1.0)
    now, cpu = 108.0, 13.0
    for step in range(1, 41):  # then idle, sampled every 10 ms: a burst of events
        rate.add(now + step * 0.01, cpu)
        busy = rate.rate()
        assert busy is not None and 0.0 <= busy < 1.0
    assert len(rate) <= CPU_WINDOW / 0.01 + 2  # old samples go
    for step in range(1, 60):
        rate.add(now + 0.4 + step * 0.01, cpu)
    assert rate.rate() == 0.0


def test_cpu_rate_says_what_it_saw_before_it_spans_the_window() -> None:
    rate = CpuRate()
    assert rate.seen() == 0.0
    rate.add(100.0, 5.0)
    rate.add(100.2, 5.15)
    assert rate.rate() is None and rate.seen() == pytest.approx(0.15)


def test_probe_sees_a_busy_cpu() -> None:
    if cgroup_cpu_quota() is not None:
        pytest.skip("under a cgroup CPU quota the probe leaves the machine's CPUs unmeasured")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        probe = SystemProbe()
        assert probe.read().cpu_busy is None  # one sample spans nothing
        time.sleep(CPU_WINDOW + 0.3)
        busy = probe.read().cpu_busy
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None
    assert 0.9 <= busy <= probe.read().cpu_count + 0.1  # the spinning process, whatever else runs
    assert busy_cpu_seconds() >= busy_cpu_seconds([0])


MEMINFO = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    9000000 kB\nBuffers: 1 kB\n"
# user nice system idle iowait irq softirq steal guest guest_nice, in ticks (USER_HZ)
STAT = ("cpu  900 900 900 900 900 900 900 900 900 900\n"
        "cpu0 100 20 30 5000 40 5 6 7 50 0\n"
        "cpu1 200 0 100 4000 0 0 0 0 0 0\n"
        "cpu3 1000 0 0 0 0 0 0 0 0 0\n"
        "intr 12345 1 2 3\nctxt 99\n")


def fake_proc(tmp_path: Path, meminfo: str = MEMINFO, stat: str = STAT) -> Path:
    write(tmp_path / "proc" / "meminfo", meminfo)
    write(tmp_path / "proc" / "stat", stat)
    return tmp_path / "proc"


@pytest.mark.parametrize(
    ("cpus", "ticks"),
    [
        (None, 168 + 300 + 1000),  # every CPU line, never the summed "cpu" line
        ([0], 100 + 20 + 30 + 5 + 6 + 7),  # idle, iowait and guest (counted in user) are not busy
        ([1, 3], 300 + 1000),  # by the CPU's number, not its line's place (cpu2 is offline)
    ],
)
def test_proc_reader_reads_busy_ticks_and_memory(tmp_path: Path, cpus: list[int] | None, ticks: int) -> None:
    reader = ProcReader.open(cpus, fake_proc(tmp_path))
    assert reader is not None
    assert reader.memory() == (16000000 * 1024, 9000000 * 1024)
    assert reader.busy_cpu_seconds() == pytest.approx(ticks / os.sysconf("SC_CLK_TCK"))


@pytest.mark.parametrize(
    ("meminfo", "stat", "cpus"),
    [
        ("MemTotal: 16000000 kB\nMemFree: 1000000 kB\n", STAT, None),  # a kernel before MemAvailable (3.14)
        (MEMINFO, STAT, [2]),  # a measured CPU /proc/stat does not list
        (MEMINFO, "intr 1 2\n", None),  # no CPU line at all
        (None, STAT, None),  # no /proc/meminfo (not Linux)
    ],
)
def test_proc_reader_declines_what_it_cannot_read(tmp_path: Path, meminfo: str | None, stat: str,
                                                 cpus: list[int] | None) -> None:
    proc = fake_proc(tmp_path, meminfo or "", stat)
    if meminfo is None:
        (proc / "meminfo").unlink()
    assert ProcReader.open(cpus, proc) is None


def test_proc_reader_never_parses_a_line_its_read_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # room for 3 lines of 256 bytes: cpu1's is cut
    stat = "cpu  1 1 1 1\ncpu0 100 0 0 0\n" + "cpu1 " + " ".join(["1"] * 400) + "\n"
    assert ProcReader.open([0, 1], fake_proc(tmp_path, stat=stat)) is None
    reader = ProcReader.open([0], fake_proc(tmp_path, stat=stat))
    assert reader is not None and reader.busy_cpu_seconds() == pytest.approx(100 / os.sysconf("SC_CLK_TCK"))


def test_proc_reader_reads_this_machine_as_psutil_does() -> None:
    reader = ProcReader.open(None)
    if reader is None:
        pytest.skip("no /proc to read")
    total, available = reader.memory()
    memory = psutil.virtual_memory()
    assert total == memory.total
    assert abs(available - memory.available) < 256 * 2**20  # other sessions allocate in between
    before = busy_cpu_seconds()
    ours = reader.busy_cpu_seconds()
    assert ours is not None and before - 0.05 <= ours <= busy_cpu_seconds() + 0.05


def test_probe_reads_the_machine_once_per_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = SystemProbe()
    reads: list[float] = []
    reader = getattr(probe, "_proc") or pytest.skip("no /proc to read")

    def memory() -> tuple[int, int]:
        reads.append(now[0])
        return 8 * 2**30, len(reads) * 2**20

    monkeypatch.setattr(reader, "memory", memory)
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    first = probe.read()
    now[0] += resources.READING_REUSE / 2
    assert probe.read() is first  # the same loop turn: the same readings
    now[0] += resources.READING_REUSE
    assert probe.read().available_memory == 2 * 2**20  # read again
    assert len(reads) == 2


HOLDER = """
import subprocess, sys, time
size = int(sys.argv[1])
if size:  # a child holds the memory: it counts for the tree it belongs to
    hold = "import sys, time; x = b'1' * int(sys.argv[1]); print(flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", hold, str(size)], stdout=subprocess.PIPE)
    child.stdout.readline()
print(flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("listed", [True, False], ids=["proc-children", "process-table"])
def test_tree_usages_sums_each_tree(monkeypatch: pytest.MonkeyPatch, listed: bool) -> None:
    if listed and not resources._proc_children_listed():
        pytest.skip("this kernel does not list children in /proc")
    monkeypatch.setattr(resources, "_proc_children_listed", lambda: listed)
    size = 200 * 2**20
    big, small = (
        subprocess.Popen([sys.executable, "-c", HOLDER, str(n)], stdout=subprocess.PIPE, start_new_session=True)
        for n in (size, 0)
    )
    try:
        for process in (big, small):
            assert process.stdout is not None
            process.stdout.readline()
        gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True).stdout)
        scans = []
        real_iter = psutil.process_iter

        def counted_iter(*args: Any, **kwargs: Any) -> Any:
            scans.append(args)
            return real_iter(*args, **kwargs)

        monkeypatch.setattr(psutil, "process_iter", counted_iter)
        usages = tree_usages([big.pid, small.pid, gone])
        scanned = len(scans)
    finally:
        for process in (big, small):
            kill_tree(process.pid, grace=0)
            process.communicate()
    assert scanned == (0 if listed else 1)  # never one scan of every process per tree
    assert usages[big.pid].rss >= size > usages[small.pid].rss > 0
    assert usages[big.pid].cpu_s > 0
    assert usages[gone] == TreeUsage(rss=0, cpu_s=0.0)


# A process whose name (what /proc/PID/stat gives in parentheses) holds spaces and parentheses, with a child
# started by a thread that goes on (the kernel lists the child under that thread), both idle once ready, so that
# two readings a moment apart agree.
ODDLY_NAMED = r"""
import ctypes, subprocess, sys, threading, time
ctypes.CDLL(None).prctl(15, b"x) 1 2 (y", 0, 0, 0)  # PR_SET_NAME
sum(range(3 * 10**6))  # some CPU time to count
held = b"1" * (30 * 2**20)
def start():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(child.pid, flush=True)
    time.sleep(60)
threading.Thread(target=start).start()
"""


def test_tree_usages_reads_each_process_as_psutil_does() -> None:
    if not resources._proc_children_listed():
        pytest.skip("this kernel does not list children in /proc")
    parent = subprocess.Popen([sys.executable, "-c", ODDLY_NAMED], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(0.2)  # the child's interpreter settles
        ours = tree_usages([parent.pid])[parent.pid]
        processes = [psutil.Process(parent.pid), psutil.Process(child)]
        assert processes[0].name() == "x) 1 2 (y"
        rss = sum(process.memory_info().rss for process in processes)
        cpu = sum(sum(process.cpu_times()[:4]) for process in processes)
    finally:
        kill_tree(parent.pid, grace=0)
        parent.communicate()
    assert ours.rss == rss
    assert ours.cpu_s == pytest.approx(cpu)
    assert ours.cpu_s > 0.01


# Plays the fork server and init at once: the parent of a build worker (in a session of its own, with a
# backend below it) that never reaps it, and the subreaper of the backend once orphaned, never reaping it
# either, as an init that reaps late (every 2 s or so on some machines) or never (a container's pid 1 that
# is no init).
NEVER_REAPS = r"""
import ctypes, subprocess, sys, time
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("cannot be a subreaper here")
worker = subprocess.Popen(
    [sys.executable, "-c", "import subprocess, time; backend = subprocess.Popen(['sleep', '600']);"
     " print(backend.pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True, start_new_session=True)
print(worker.pid, worker.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a subreaper is Linux's")
def test_a_stopped_tree_is_gone_once_its_processes_exit_reaped_or_not() -> None:
    """An exited process holds no memory and runs nothing: stopping a tree waits for its processes to exit,
    not for whoever inherits them to reap them (which never comes here: it waited twice the grace)."""
    parent = subprocess.Popen([sys.executable, "-c", NEVER_REAPS], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        worker, backend = (int(pid) for pid in parent.stdout.readline().split())
        stopper = threading.Thread(target=kill_tree, args=(worker,), kwargs={"grace": 60}, daemon=True)
        stopper.start()
        stopper.join(timeout=30)  # a bound only a wait for the reaping reaches: it returns once both exited
        assert not stopper.is_alive()
        # Stopped, and still unreaped, as the test means: neither was waited for.
        assert [psutil.Process(pid).status() for pid in (worker, backend)] == [psutil.STATUS_ZOMBIE] * 2
    finally:
        parent.kill()
        parent.communicate()
