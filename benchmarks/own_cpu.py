"""The run's own CPU per build: N no-op sdists built by orchestrate, CPU of its own process only.

    python benchmarks/own_cpu.py [--count 300] [--rounds 3] [--max-builds 2]
        [--variant before=/path/to/other/checkout] [--json benchmarks/results/own_cpu.json]

``overhead.py`` gives the CPU of a run's whole tree; this gives the part spent by the ``orchestrate``
process itself (scheduling, admission, sampling, bookkeeping, display, reports, the cleaner's
removals), not by the fork server, the workers or the hooks. Each run is started through a small
wrapper (``-c``) that, as the process exits, writes its ``RUSAGE_SELF``, the CPU of each thread as
it ended (``RUSAGE_THREAD``, by thread name), and the process's CPU while ``BuildScheduler.run``
ran (the build loop, without the start and the end of the run). Variants run in turn within a round
(same sdists, fresh state, ``overhead.py``'s environment and options); the table gives the median
of the rounds and every round. On a shared machine compare variants within one run of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from overhead import clean_environ  # noqa: E402
from sdists import make_sdist  # noqa: E402

WRAPPER = """
import atexit, collections, json, os, resource, sys, threading, time
threads = collections.Counter()
lock = threading.Lock()
run = threading.Thread.run
def counted(self):
    try:
        run(self)
    finally:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        with lock:
            threads[self.name.replace("_", "-").split("-")[0]] += usage.ru_utime + usage.ru_stime
threading.Thread.run = counted
loop = []
def written():
    usage, main = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
    threads["main"] += main.ru_utime + main.ru_stime
    with open(os.environ["OWN_CPU_OUT"], "w") as out:
        json.dump({"cpu_s": usage.ru_utime + usage.ru_stime, "sys_s": usage.ru_stime, "loop_cpu_s": sum(loop),
                   "threads": dict(threads)}, out)
atexit.register(written)
from orchestrator import scheduler
scheduled = scheduler.BuildScheduler.run
def timed(self):
    start = time.process_time()
    try:
        return scheduled(self)
    finally:
        loop.append(time.process_time() - start)
scheduler.BuildScheduler.run = timed
sys.argv = ["orchestrate", *sys.argv[1:]]
from orchestrator.cli import main
main()
"""


def run_once(sdists: list[Path], src: Path, work: Path, label: str, k: int) -> dict[str, Any]:
    """One cold ``orchestrate build`` of every sdist from checkout ``src``; its own CPU figures."""
    folder = work / label
    folder.mkdir()
    (folder / "no-links").mkdir()
    out = folder / "own.json"
    cmd = [sys.executable, "-c", WRAPPER, "build", *map(str, sdists), "-w", str(folder / "wh"), "-j", str(k),
           "--state-dir", str(folder / "state"), "--keep-build-envs", "--no-index", "--find-links",
           str(folder / "no-links"), "--force"]
    env = clean_environ(PYTHONPATH=str(src), OWN_CPU_OUT=str(out), UV_CACHE_DIR=str(folder / "uv-cache"))
    with (folder / "log").open("w") as log:
        subprocess.run(cmd, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    result["built"] = len(list((folder / "wh").glob("*.whl")))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "own_cpu.json")
    args = parser.parse_args()
    variants = {"this": ROOT, **{spec.partition("=")[0]: Path(spec.partition("=")[2]).resolve()
                                 for spec in args.variant}}
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="orchestrate-own-cpu-") as tmp:
        work = Path(tmp)
        sdists = [make_sdist(work / "sdists", f"noop{i:05d}") for i in range(args.count)]
        for number in range(args.rounds):
            result = {name: run_once(sdists, src, work, f"{name}-{number}", args.max_builds)
                      for name, src in variants.items()}
            for name, values in result.items():
                print(f"round {number + 1}: {name:10} {values['cpu_s']:6.2f} CPU-s own, {values['loop_cpu_s']:6.2f} in"
                      f" the build loop, built {values['built']}; by thread: "
                      + ", ".join(f"{t} {s:.2f}" for t, s in sorted(values["threads"].items(), key=lambda i: -i[1])),
                      flush=True)
            rounds.append(result)
    n = args.count
    print(f"\n{n} no-op sdists, {args.max_builds} builds at once; the run's own process,"
          " median of rounds (every round)")
    print("| variant | own CPU s | own CPU per build ms | build loop per build ms |")
    print("|---|---|---|---|")
    for name in variants:
        own = [r[name]["cpu_s"] for r in rounds]
        loop = [r[name]["loop_cpu_s"] for r in rounds]
        print(f"| {name} | {statistics.median(own):.2f} ({', '.join(f'{v:.2f}' for v in own)}) | "
              f"{1000 * statistics.median(own) / n:.1f} | {1000 * statistics.median(loop) / n:.1f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": sys.argv, "count": n, "cpus": os.cpu_count(),
                                     "variants": {k: str(v) for k, v in variants.items()}, "rounds": rounds},
                                    indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
