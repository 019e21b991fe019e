"""Memory admission under pressure: makespan and peak memory of fake builds with mixed needs.

Writes BUILDS fake-backend sdists, each holding between --min-gb and --max-gb of
memory for --min-s to --max-s seconds (seeded, so every run builds the same set),
and builds them with the real ``orchestrate build`` under --memory-limit, twice:
with an empty history (cold: every build is assumed to need --memory-per-build,
so the big ones are stopped and requeued) and again with the history the first
run left (warm: ``--force``, the same ``--state-dir``). While each run goes, this
script sums the RSS of the whole ``orchestrate`` process tree every --interval
seconds with psutil::

    python benchmarks/memory_pressure.py [--builds 12] [--memory-limit 8G] [--max-builds 6]
        [--json benchmarks/results/memory_pressure.json]

The ideal makespan is an offline packing lower bound over the builds as they
actually ran (the wall time and peak RSS of each build's last attempt, taken from
the run's report): ``max(sum(peak_i * t_i) / limit, sum(t_i) / max_builds,
max(t_i))``. It treats every build as holding its peak for its whole run, as the
admission controller's reservations do. Targets: peak within the limit + 5%,
makespan within 1.25x of the bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sdists import make_sdist, max_concurrency, read_events  # noqa: E402

from orchestrator.units import format_size, parse_size  # noqa: E402

PEAK_TARGET = 1.05
MAKESPAN_TARGET = 1.25


class TreeSampler:
    """Sums the RSS of a process and all its descendants every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int, interval: float) -> None:
        self.peak = 0
        self._pid = pid
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            total = 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._done.wait(self._interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def packing_bound(builds: list[dict[str, Any]], limit: int, max_builds: int, *, memory: str) -> dict[str, float]:
    durations = [build["wall_s"] for build in builds]
    area = sum(build[memory] * build["wall_s"] for build in builds) / limit
    return {"memory": area, "count": sum(durations) / max_builds, "longest": max(durations)}


def completed_concurrency(events: list[dict[str, Any]]) -> int:
    """Most builds at once, counting only attempts that ended (a stopped attempt writes no end event)."""
    ended = {event["pid"] for event in events if event["event"] == "end"}
    return max_concurrency([event for event in events if event["pid"] in ended])


def run_once(label: str, args: argparse.Namespace, scratch: Path, events: Path, limit: int) -> dict[str, Any]:
    report = scratch / f"report-{label}.json"
    command = [
        sys.executable, "-m", "orchestrator", "build", str(scratch / "sdists"), "-w", str(scratch / "wh"),
        "--memory-limit", args.memory_limit, "--memory-per-build", args.memory_per_build,
        "--max-builds", str(args.max_builds), "--state-dir", str(scratch / "state"), "--force",
        "--report-json", str(report),
    ]
    already = len(read_events(events))
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid, args.interval)
    stdout, stderr = process.communicate()
    sampler.stop()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"{label}: orchestrate exited with {process.returncode}")
    data = json.loads(report.read_text())
    builds = data["builds"]
    bound = packing_bound(builds, limit, args.max_builds, memory="peak_rss_bytes")
    ideal = max(bound.values())
    # The same bound over what the builds reserved (the +20% headroom of a learned need included).
    reserved_ideal = max(packing_bound(builds, limit, args.max_builds, memory="predicted_rss_bytes").values())
    makespan = data["wall_s"]
    lines = stderr.splitlines()
    return {
        "run": label,
        "command": command,
        "makespan_s": round(makespan, 2),
        "process_wall_s": round(wall, 2),
        "bound_s": {name: round(value, 2) for name, value in bound.items()},
        "ideal_s": round(ideal, 2),
        "makespan_ratio": round(makespan / ideal, 3),
        "ideal_over_reservations_s": round(reserved_ideal, 2),
        "makespan_ratio_over_reservations": round(makespan / reserved_ideal, 3),
        "peak_tree_rss_bytes": sampler.peak,
        "memory_limit_bytes": limit,
        "peak_ratio": round(sampler.peak / limit, 3),
        "memory_stops": sum("stopped under memory pressure" in line for line in lines),
        "memory_requeues": sum(build.get("memory_requeues", 0) for build in builds),
        "liveness_warnings": sum("starting it alone" in line for line in lines),
        "max_concurrent": completed_concurrency(read_events(events)[already:]),
        "backfilled": sum("starting ahead of" in line for line in lines),
        "built": sum(build["status"] == "built" for build in builds),
        "builds": [
            {key: build[key] for key in ("name", "wall_s", "peak_rss_bytes", "predicted_rss_bytes",
                                         "memory_requeues")}
            for build in builds
        ],
        "log": lines if args.keep_log else [line for line in lines if "memory" in line][:60],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=12)
    parser.add_argument("--min-gb", type=float, default=0.5)
    parser.add_argument("--max-gb", type=float, default=4.0)
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=6.0)
    parser.add_argument("--memory-limit", default="8G")
    parser.add_argument("--memory-per-build", default="1G", help="the cold run's assumed need")
    parser.add_argument("--max-builds", type=int, default=6)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-log", action="store_true", help="keep every line of orchestrate's output in the JSON")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/memory_pressure.json")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    jobs = [
        {"name": f"job{i:02d}", "alloc_mb": int(rng.uniform(args.min_gb, args.max_gb) * 1024),
         "sleep": round(rng.uniform(args.min_s, args.max_s), 1)}
        for i in range(args.builds)
    ]
    limit = parse_size(args.memory_limit)
    runs = []
    with tempfile.TemporaryDirectory(prefix="memory-pressure-") as tmp:
        scratch = Path(tmp)
        events = scratch / "events.log"
        for job in jobs:
            make_sdist(scratch / "sdists", job["name"], alloc_mb=job["alloc_mb"], sleep=job["sleep"],
                       events=str(events))
        for label in ("cold", "warm"):
            runs.append(run_once(label, args, scratch, events, limit))

    print(f"{args.builds} builds, {args.min_gb:g}-{args.max_gb:g} GB for {args.min_s:g}-{args.max_s:g} s,"
          f" --memory-limit {args.memory_limit} --max-builds {args.max_builds}"
          f" --memory-per-build {args.memory_per_build}; {psutil.cpu_count()} CPUs,"
          f" {format_size(psutil.virtual_memory().total)} RAM")
    header = (f"{'run':<5} {'makespan s':>10} {'ideal s':>8} {'ratio':>6} {'ideal(resv) s':>13} {'ratio':>6}"
              f" {'peak RSS':>10} {'limit':>9} {'peak/limit':>10} {'stops':>6} {'requeues':>8} {'backfills':>9}"
              f" {'at once':>7} {'built':>5}")
    print(header)
    print("-" * len(header))
    for run in runs:
        print(f"{run['run']:<5} {run['makespan_s']:>10.1f} {run['ideal_s']:>8.1f} {run['makespan_ratio']:>6.2f}"
              f" {run['ideal_over_reservations_s']:>13.1f} {run['makespan_ratio_over_reservations']:>6.2f}"
              f" {format_size(run['peak_tree_rss_bytes']):>10} {format_size(limit):>9} {run['peak_ratio']:>10.2f}"
              f" {run['memory_stops']:>6} {run['memory_requeues']:>8} {run['backfilled']:>9}"
              f" {run['max_concurrent']:>7} {run['built']:>5}")
    for run in runs:
        bound = ", ".join(f"{name} {value:.1f}" for name, value in run["bound_s"].items())
        met = run["peak_ratio"] <= PEAK_TARGET and run["makespan_ratio"] <= MAKESPAN_TARGET
        print(f"{run['run']}: bound parts (s): {bound}; targets {'met' if met else 'MISSED'}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "memory_pressure",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": psutil.cpu_count(), "memory_bytes": psutil.virtual_memory().total,
                    "python": platform.python_version()},
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "jobs": jobs,
        "targets": {"peak_over_limit": PEAK_TARGET, "makespan_over_bound": MAKESPAN_TARGET},
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
