"""Time what entering each sandbox adds to one PEP 517 hook: none, bubblewrap, unshare (+ ``sandbox_init.py``).

Each tool runs the same trivial hook (``python -c pass``, as wrapped by ``build/sandbox.wrap`` with a
build folder, the home and ``/tmp`` hidden), ``--hooks`` times per round; the tools are taken in
turn, in a new shuffled order each round, so drift in the machine's load does not always hit the
same one. The table gives, per tool, the median over rounds of the mean seconds per hook, and what
it adds to ``none``, in wall time and in CPU time (the ``rusage`` of every process the hook
started: this process is their subreaper, so bubblewrap's PID-namespace init is counted too). A
build calls two or three hooks (``get_requires_for_build_wheel``, ``build_wheel``, sometimes
``prepare_metadata``), so the added cost per build is two or three times the per-hook figure.
``unshare`` is found through a PATH without ``bwrap`` (links in a temporary folder), as on a
machine without bubblewrap.

    python benchmarks/sandbox_entry.py [--hooks 20] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.build.sandbox import Sandbox, probe, wrap


def _without_bwrap(folder: Path) -> str:
    """PATH with each folder holding ``bwrap`` replaced by links to everything else in it."""
    entries = []
    for index, entry in enumerate(os.environ.get("PATH", os.defpath).split(os.pathsep)):
        if not (Path(entry) / "bwrap").exists():
            entries.append(entry)
            continue
        copy = folder / f"bin{index}"
        copy.mkdir()
        for path in Path(entry).iterdir():
            if path.name != "bwrap":
                (copy / path.name).symlink_to(path)
        entries.append(str(copy))
    return os.pathsep.join(entries)


def _sandboxes(links: Path) -> dict[str, Sandbox]:
    found = {"none": Sandbox()}
    bwrap = probe().sandbox
    if bwrap.tool == "bwrap":
        found["bwrap"] = bwrap
    saved = os.environ["PATH"]
    os.environ["PATH"] = _without_bwrap(links)
    try:
        unshare = probe().sandbox
    finally:
        os.environ["PATH"] = saved
    if unshare.tool == "unshare":
        found["unshare"] = unshare
    return found


def _time_hooks(sandbox: Sandbox, build: Path, hooks: int) -> tuple[float, float]:
    """Mean wall and CPU seconds per hook over ``hooks`` runs."""
    cmd, env = wrap([sys.executable, "-c", "pass"], sandbox=sandbox, build_dir=build, tmp_dir=build / "tmp",
                    out_dir=build / "dist", env=dict(os.environ), cwd=str(build))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for _ in range(hooks):
        subprocess.run(cmd, env=env, cwd=build, check=True, stdin=subprocess.DEVNULL)
        _reap_orphans()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall / hooks, (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / hooks


def _reap_orphans() -> None:
    """Wait for the hook's processes this one adopted (bubblewrap leaves its namespace's init to its reaper)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hooks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "sandbox_entry.json")
    args = parser.parse_args()
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: count the orphans' CPU
    links = Path(tempfile.mkdtemp(prefix="orchestrate-bench-", dir="/var/tmp"))
    build = Path(tempfile.mkdtemp(prefix="orchestrate-bench-build-"))
    try:
        sandboxes = _sandboxes(links)
        times: dict[str, list[float]] = {name: [] for name in sandboxes}
        cpu: dict[str, list[float]] = {name: [] for name in sandboxes}
        for name, sandbox in sandboxes.items():  # once unmeasured: page cache
            _time_hooks(sandbox, build, 1)
        for _ in range(args.rounds):
            order = list(sandboxes)
            random.shuffle(order)
            for name in order:
                wall, used = _time_hooks(sandboxes[name], build, args.hooks)
                times[name].append(wall)
                cpu[name].append(used)
    finally:
        shutil.rmtree(links)
        shutil.rmtree(build)
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"| sandbox | s per hook (median of {args.rounds}) | added to none, ms | CPU s per hook | added, CPU ms |")
    print("|---|---|---|---|---|")
    for name, median in medians.items():
        used = cpu_medians[name]
        print(f"| {name} | {median:.4f} | {1000 * (median - medians['none']):+.1f} | {used:.4f} "
              f"| {1000 * (used - cpu_medians['none']):+.1f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "hooks": args.hooks, "rounds": args.rounds, "machine": platform.platform(), "cpus": os.cpu_count(),
        "protections": {name: sandbox.describe() for name, sandbox in sandboxes.items()},
        "seconds_per_hook": times, "median": medians, "cpu_seconds_per_hook": cpu, "median_cpu": cpu_medians,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
