"""What one reading of the machine and one sample of a build's tree cost the run's process, both ways.

    python benchmarks/probe_cost.py [--rounds 5] [--reads 2000]

The scheduler reads the machine (memory, busy CPUs, load) several times a build and samples each
running build's process tree every 0.2 s. ``resources.py`` reads both from ``/proc`` itself on Linux
and through psutil elsewhere; this times the two ways in turn, in the same rounds, on this machine:
a reading of the machine (``SystemProbe.read``, its sharing of readings within 1 ms left out), and a
sample of a tree like a build's (a process with four threads and two children, one of them with a
child of its own). Thread CPU time (``time.thread_time``), median of rounds; every round is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import resources  # noqa: E402
from orchestrator.resources import SystemProbe, _psutil_memory, _psutil_usage, _trees, tree_usages  # noqa: E402

TREE = r"""
import subprocess, sys, threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
leaf = "import time; time.sleep(600)"
middle = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {leaf!r}]); time.sleep(600)"
children = [subprocess.Popen([sys.executable, "-c", leaf]), subprocess.Popen([sys.executable, "-c", middle])]
print(flush=True)
time.sleep(600)
"""


def psutil_read(probe: SystemProbe) -> Callable[[], object]:
    """The reading as it was made before: psutil's parsers for memory and per-CPU times."""
    measured = probe._measured  # noqa: SLF001 - the same CPUs as the probe measures

    def read() -> object:
        total, available = _psutil_memory()
        return total, available, os.getloadavg()[0], resources.busy_cpu_seconds(measured)

    return read


def proc_read(probe: SystemProbe) -> Callable[[], object]:
    def read() -> object:
        probe._last = None  # noqa: SLF001 - time the reading, not the sharing of one
        return probe.read()

    return read


def per_call(function: Callable[[], object], calls: int) -> float:
    """Microseconds of this thread's CPU per call."""
    start = time.thread_time()
    for _ in range(calls):
        function()
    return (time.thread_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    if not resources._proc_children_listed():  # noqa: SLF001
        sys.exit("this machine has no /proc children lists: resources.py reads through psutil alone here")
    probe = SystemProbe()
    tree = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert tree.stdout is not None
        tree.stdout.readline()
        time.sleep(1.0)  # the grandchild starts
        pid = tree.pid
        ways = {
            "machine reading, psutil": psutil_read(probe),
            "machine reading, /proc": proc_read(probe),
            "tree sample, psutil": lambda: _psutil_usage(_trees([pid])[pid]),
            "tree sample, /proc": lambda: tree_usages([pid]),
        }
        processes = len(_trees([pid])[pid])
        rounds: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                rounds[name].append(per_call(way, args.reads if "machine" in name else args.reads // 10))
    finally:
        resources.kill_tree(tree.pid, grace=0)
        tree.wait()
    print(f"CPU us per call, median of {args.rounds} rounds (every round); the tree: {processes} processes")
    print("| what | us per call | rounds |")
    print("|---|---|---|")
    for name, values in rounds.items():
        print(f"| {name} | {statistics.median(values):.0f} | {', '.join(f'{value:.0f}' for value in values)} |")


if __name__ == "__main__":
    main()
