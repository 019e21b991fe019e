"""The real command's own memory at each moment of a run: where RSS grows with N, and in which allocator.

    python benchmarks/own_memory_moments.py [--count 300 --count 3000] [--variant before=/path/to/checkout]
        [--extra=--no-history] [--json benchmarks/results/own_memory_moments.json]

``own_memory.py`` gives the command's peak; ``own_memory_phases.py`` runs in-process on fake workers.
This runs the real ``orchestrate build FOLDER`` (N no-op sdists, ``--no-sandbox -j 2``, every report asked
for, a fresh wheelhouse and state folder) with a prelude that wraps a few functions to read, as each is
entered and left: ``VmRSS`` and ``VmHWM`` (KB), glibc's heap and its bytes in use (``mallinfo2``: what C
code and Python's blocks over 512 bytes hold), its mmapped bytes, and ``sys.getallocatedblocks()`` (Python's
small objects). Variants (``PYTHONPATH``) are taken in turn at each N; ``this`` (the checkout this script
sits in) last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from sdists import make_sdist  # noqa: E402 - tests/, put on the path above

PRELUDE = r'''
import ctypes, json, sys
out = sys.argv.pop(1)
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
moments = []
def mark(name):
    status = open("/proc/self/status").read()
    info = libc.mallinfo2()
    moments.append({"moment": name, **{key: int(status.split(key + ":")[1].split()[0]) for key in ("VmRSS", "VmHWM")},
                    "heap": info.arena // 1024, "heap_used": info.uordblks // 1024, "mmapped": info.hblkhd // 1024,
                    "blocks": sys.getallocatedblocks()})
def wrap(owner, name, label):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
        mark(label + " starts")
        try:
            return original(*args, **kwargs)
        finally:
            mark(label + " ends")
    setattr(owner, name, wrapped)
import orchestrator.cli
from orchestrator import pipeline, scheduler
from orchestrator.build import sources
mark("imports")
wrap(sources, "collect_sources", "listing")
wrap(pipeline.BuildRun, "__init__", "BuildRun made")
wrap(pipeline.BuildRun, "run", "run")
wrap(scheduler.BuildScheduler, "run", "scheduler")
wrap(pipeline.BuildRun, "_check_set", "set check")
import atexit
atexit.register(lambda: (mark("exit"), open(out, "w").write(json.dumps(moments))))
from orchestrator.cli import main
main()
'''


def run(src: Path, sdists: Path, work: Path, extra: list[str]) -> list[dict[str, Any]]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "moments.json"
    cmd = [sys.executable, "-c", PRELUDE, str(out), "build", str(sdists), "-w", str(work / "wh"), "-j", "2",
           "--no-sandbox", "--state-dir", str(work / "state"), "--no-index", "--find-links", str(work), "--force",
           "--report-json", str(work / "report.json"), "--trace", str(work / "trace.json"),
           "--junit", str(work / "junit.xml"), *extra]
    env = {**os.environ, "PYTHONPATH": str(src), "PIP_CONFIG_FILE": os.devnull}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moments: list[dict[str, Any]] = json.loads(out.read_text())
    return moments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, action="append", help="no-op sdists per run (default 300, 3000)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--extra", action="append", default=[], help="an option for the command (--extra=--no-history)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "own_memory_moments.json")
    args = parser.parse_args()
    variants = [(name, Path(folder).resolve()) for name, folder in (v.split("=", 1) for v in args.variant)]
    variants.append(("this", ROOT))
    results: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="own-memory-moments-") as tmp:
        for count in args.count or [300, 3000]:
            sdists = Path(tmp) / f"sdists-{count}"
            for index in range(count):
                make_sdist(sdists, f"noop{index:05d}")
            for name, src in variants:
                moments = run(src, sdists, Path(tmp) / "work", args.extra)
                results[name][count] = moments
                print(f"{name} N={count}")
                print("| moment | VmRSS KB | VmHWM KB | glibc heap KB | in use KB | mmapped KB | Python blocks |")
                print("|---|---|---|---|---|---|---|")
                for moment in moments:
                    print(f"| {moment['moment']} | {moment['VmRSS']} | {moment['VmHWM']} | {moment['heap']} | "
                          f"{moment['heap_used']} | {moment['mmapped']} | {moment['blocks']} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"extra": args.extra, "results": results}, indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
