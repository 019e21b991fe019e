"""Memory admission under pressure: makespan and peak memory of fake builds with mixed needs.

Writes --builds fake-backend sdists, each holding between --min-gb and --max-gb of
memory for --min-s to --max-s seconds (seeded, so every run builds the same set),
and builds them with the real ``orchestrate build`` under --memory-limit:

1. ``solo``: one at a time (``--max-builds 1``, a history of its own), to measure
   what each build costs on this machine alone: its wall time from admission to
   the end, its peak RSS and its CPU seconds.
2. ``cold``: an empty history; every build is assumed to need --memory-per-build,
   so the big ones are stopped and requeued.
3. ``warm1`` to ``warmN`` (--warm-runs): ``--force`` with the history the runs
   before left. ``warm1`` knows one peak per package and reserves it + 20%; ``warm2``,
   two agreeing peaks, + 10%; from ``warm3`` on, three, + 5%.

While each run goes, this script sums the RSS of the whole ``orchestrate`` process
tree every --interval seconds with psutil::

    python benchmarks/memory_pressure.py [--builds 12] [--memory-limit 8G] [--max-builds 6]
        [--warm-runs 3] [--json benchmarks/results/memory_pressure.json]

The bound, the targets' reference, is an offline packing lower bound over the
builds as they ran alone: ``max(max(t_i), sum(peak_i * t_i) / limit,
sum(t_i) / max_builds, sum(cpu_i) / cpus)``, with each build's solo wall time
``t_i``, peak ``peak_i`` and CPU seconds ``cpu_i``. No schedule that reserves each
build's peak for its whole run (as the admission controller does) ends sooner,
provided builds run no faster side by side than alone. The *intended* bound is the
same over what the fake builds are asked to do (``alloc_mb`` held for ``sleep``
seconds, nothing else); it leaves out what every build costs on any tool, starting
its processes and touching its memory (about 1 s per GB on a 2-core VM), so no
real run comes near it: it is printed for reference only.

The *ideal* makespan is the best schedule of the same model (each build holds its peak
for its solo time; the count cap; the memory limit), found by OR-Tools' CP-SAT when
``ortools`` is installed (``--ideal-seconds``, proven optimal when it says so): how far
the bound is from what any schedule of these builds can reach.

Before the runs, the script measures how fast this machine hands out new memory, touched
as the fake builds touch theirs: to one process alone, and summed over as many processes
at once as there are CPUs. Builds touching memory side by side share that rate, which is
where running side by side costs them time (the *stretch*); the bound does not model it.

Targets: peak within the limit + 5%, makespan within 1.25x of the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
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

from sdists import make_sdist, max_concurrency, read_events

from orchestrator.resources import usable_cpu_count
from orchestrator.units import format_size, parse_size

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


def packing_bound(durations: list[float], peaks: list[int], limit: int, max_builds: int) -> dict[str, float]:
    """The parts of the packing lower bound on the makespan; the bound is the largest."""
    return {
        "longest": max(durations),
        "memory": sum(peak * duration for peak, duration in zip(peaks, durations)) / limit,
        "count": sum(durations) / max_builds,
    }


def optimal_makespan(durations: list[float], peaks: list[int], limit: int, max_builds: int,
                     seconds: float) -> tuple[float, float] | None:
    """The best makespan of the bound's model (each build holds its peak for its solo time, at most
    ``max_builds`` at once, the peaks under ``limit``) that OR-Tools' CP-SAT finds in ``seconds``,
    and the lower bound it proves (equal when it proves the optimum); ``None`` without ``ortools``."""
    try:
        from ortools.sat.python import cp_model
    except ImportError:
        return None
    model = cp_model.CpModel()
    ticks = [round(duration * 100) for duration in durations]  # centiseconds
    horizon = sum(ticks)
    intervals, ends = [], []
    for tick in ticks:
        start, end = model.new_int_var(0, horizon, ""), model.new_int_var(0, horizon, "")
        intervals.append(model.new_interval_var(start, tick, end, ""))
        ends.append(end)
    model.add_cumulative(intervals, [-(-peak // 2**20) for peak in peaks], limit // 2**20)  # MiB, peaks rounded up
    model.add_cumulative(intervals, [1] * len(ticks), max_builds)
    makespan = model.new_int_var(0, horizon, "makespan")
    model.add_max_equality(makespan, ends)
    model.minimize(makespan)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return solver.objective_value / 100, solver.best_objective_bound / 100


TOUCH = "import sys, time; n = int(sys.argv[1]) << 20; start = time.perf_counter(); data = b'\\x01' * n; print(time.perf_counter() - start)"
"""Gets ``argv[1]`` MB of new memory and touches it, as the fake builds do; prints the seconds it took."""


def touch_rates(mb: int, processes: int, rounds: int = 3) -> tuple[float, float]:
    """MB/s at which this machine hands out new memory, touched as the fake builds touch theirs:
    to one process alone (the median of ``rounds``) and to ``processes`` at once, summed (the best)."""

    def touch(count: int) -> float:
        children = [subprocess.Popen([sys.executable, "-c", TOUCH, str(mb)], stdout=subprocess.PIPE, text=True)
                    for _ in range(count)]
        return count * mb / max(float(child.communicate()[0]) for child in children)

    alone = statistics.median(touch(1) for _ in range(rounds))
    return alone, max(touch(processes) for _ in range(rounds))


def completed_concurrency(events: list[dict[str, Any]]) -> int:
    """Most builds at once, counting only attempts that ended (a stopped attempt writes no end event)."""
    ended = {event["pid"] for event in events if event["event"] == "end"}
    return max_concurrency([event for event in events if event["pid"] in ended])


def run_once(label: str, args: argparse.Namespace, scratch: Path, *, max_builds: int, state: str) -> dict[str, Any]:
    """One ``orchestrate build`` of every sdist, with its tree's RSS sampled; what its report and output say."""
    report = scratch / f"report-{label}.json"
    command = [
        sys.executable, "-m", "orchestrator", "build", str(scratch / "sdists"), "-w", str(scratch / "wh"),
        "--memory-limit", args.memory_limit, "--memory-per-build", args.memory_per_build,
        "--max-builds", str(max_builds), "--state-dir", str(scratch / state), "--force",
        "--report-json", str(report), *shlex.split(args.orchestrate_args),
    ]
    events = scratch / "events.log"
    already = len(read_events(events))
    load = os.getloadavg()[0]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid, args.interval)
    _, stderr = process.communicate()
    sampler.stop()
    if process.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"{label}: orchestrate exited with {process.returncode}")
    data = json.loads(report.read_text())
    lines = stderr.splitlines()
    return {
        "run": label,
        "command": command,
        "load_1m_at_start": load,
        "makespan_s": round(data["wall_s"], 2),
        "peak_tree_rss_bytes": sampler.peak,
        "memory_stops": sum("stopped under memory pressure" in line for line in lines),
        "memory_requeues": sum(build["memory_requeues"] for build in data["builds"]),
        "liveness_warnings": sum("starting it alone" in line for line in lines),
        "max_concurrent": completed_concurrency(read_events(events)[already:]),
        "backfilled": sum("starting ahead of" in line for line in lines),
        "built": sum(build["status"] == "built" for build in data["builds"]),
        "builds": {
            build["name"]: {key: build[key] for key in ("wall_s", "peak_rss_bytes", "predicted_rss_bytes", "cpu_s",
                                                        "memory_requeues", "waited_s")}
            for build in data["builds"]
        },
        "log": lines if args.keep_log else [line for line in lines if "memory" in line][:60],
    }


def judge(run: dict[str, Any], solo: dict[str, Any], bound: float, ideal: float | None, intended: float,
          limit: int) -> None:
    """Add to ``run`` its ratios to the bounds and where its time went, against the solo run."""
    builds = run["builds"]
    makespan = run["makespan_s"]
    run["makespan_ratio"] = round(makespan / bound, 3)
    run["makespan_over_ideal"] = round(makespan / ideal, 3) if ideal else None
    run["makespan_over_intended"] = round(makespan / intended, 3)
    run["peak_ratio"] = round(run["peak_tree_rss_bytes"] / limit, 3)
    # Each build's wall time against its time alone: how much running side by side slowed them.
    run["stretch"] = round(sum(build["wall_s"] for build in builds.values())
                           / sum(solo["builds"][name]["wall_s"] for name in builds), 3)
    # The share of limit x makespan the builds' last attempts held reserved: the rest is packing loss.
    reserved = sum(build["predicted_rss_bytes"] * build["wall_s"] for build in builds.values())
    run["reserved_share"] = round(reserved / (limit * makespan), 3)
    run["met"] = run["peak_ratio"] <= PEAK_TARGET and run["makespan_ratio"] <= MAKESPAN_TARGET


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
    parser.add_argument("--warm-runs", type=int, default=3, help="runs after the cold one, each with more history")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ideal-seconds", type=float, default=60,
                        help="time CP-SAT may take for the ideal schedule (needs ortools)")
    parser.add_argument("--orchestrate-args", default="", metavar="ARGS",
                        help='more options for every orchestrate run, e.g. "--max-cpu 50"')
    parser.add_argument("--keep-log", action="store_true", help="keep every line of orchestrate's output in the JSON")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/memory_pressure.json")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    jobs: list[dict[str, Any]] = [
        {"name": f"job{i:02d}", "alloc_mb": int(rng.uniform(args.min_gb, args.max_gb) * 1024),
         "sleep": round(rng.uniform(args.min_s, args.max_s), 1)}
        for i in range(args.builds)
    ]
    limit = parse_size(args.memory_limit)
    cpus = usable_cpu_count()
    with tempfile.TemporaryDirectory(prefix="memory-pressure-") as tmp:
        scratch = Path(tmp)
        for job in jobs:
            make_sdist(scratch / "sdists", job["name"], alloc_mb=job["alloc_mb"], sleep=job["sleep"],
                       events=str(scratch / "events.log"))
        touch_alone, touch_together = touch_rates(2000, cpus)
        solo = run_once("solo", args, scratch, max_builds=1, state="state-solo")
        runs = [run_once(label, args, scratch, max_builds=args.max_builds, state="state")
                for label in ["cold", *(f"warm{i}" for i in range(1, args.warm_runs + 1))]]

    alone = [solo["builds"][job["name"]] for job in jobs]
    times, peaks = [build["wall_s"] for build in alone], [build["peak_rss_bytes"] for build in alone]
    bound_parts = packing_bound(times, peaks, limit, args.max_builds)
    bound_parts["cpu"] = sum(build["cpu_s"] for build in alone) / cpus
    intended_parts = packing_bound([job["sleep"] for job in jobs], [job["alloc_mb"] * 1024**2 for job in jobs],
                                   limit, args.max_builds)
    bound, intended = max(bound_parts.values()), max(intended_parts.values())
    optimum = optimal_makespan(times, peaks, limit, args.max_builds, args.ideal_seconds)
    ideal = optimum[0] if optimum else None
    for run in runs:
        judge(run, solo, bound, ideal, intended, limit)

    print(f"{args.builds} builds, {args.min_gb:g}-{args.max_gb:g} GB for {args.min_s:g}-{args.max_s:g} s,"
          f" --memory-limit {args.memory_limit} --max-builds {args.max_builds}"
          f" --memory-per-build {args.memory_per_build}; {cpus} CPUs, {format_size(psutil.virtual_memory().total)} RAM")
    print(f"bound {bound:.1f} s = max({', '.join(f'{name} {value:.1f}' for name, value in bound_parts.items())}),"
          f" from the solo run ({solo['makespan_s']:.1f} s one at a time);"
          f" intended {intended:.1f} s = max({', '.join(f'{name} {value:.1f}' for name, value in intended_parts.items())})")
    touched_mb = sum(job["alloc_mb"] for job in jobs)
    touching = touched_mb / touch_together
    print(f"new memory: {touch_alone / 1024:.2f} GB/s to one process, {touch_together / 1024:.2f} GB/s summed over {cpus}"
          f" at once; touching the builds' {touched_mb / 1024:.1f} GB takes {touching:.1f} s at best")
    if optimum:
        proven = "optimal" if optimum[1] >= optimum[0] else f"at least {optimum[1]:.1f} s"
        print(f"ideal {optimum[0]:.1f} s ({proven}): the best schedule of the bound's model, by CP-SAT")
    else:
        print("ideal: not computed (pip install ortools)")
    header = (f"{'run':<6} {'makespan s':>10} {'/bound':>6} {'/ideal':>6} {'/intended':>9} {'peak RSS':>10} {'peak/limit':>10}"
              f" {'stops':>5} {'requeues':>8} {'backfills':>9} {'at once':>7} {'built':>5} {'stretch':>7}"
              f" {'reserved':>8} {'load':>5} {'targets':>7}")
    print(header)
    print("-" * len(header))
    for run in runs:
        over_ideal = f"{run['makespan_over_ideal']:.2f}" if run["makespan_over_ideal"] else "-"
        print(f"{run['run']:<6} {run['makespan_s']:>10.1f} {run['makespan_ratio']:>6.2f} {over_ideal:>6}"
              f" {run['makespan_over_intended']:>9.2f} {format_size(run['peak_tree_rss_bytes']):>10}"
              f" {run['peak_ratio']:>10.2f} {run['memory_stops']:>5} {run['memory_requeues']:>8}"
              f" {run['backfilled']:>9} {run['max_concurrent']:>7} {run['built']:>5} {run['stretch']:>7.2f}"
              f" {run['reserved_share']:>8.2f} {run['load_1m_at_start']:>5.1f} {'met' if run['met'] else 'MISSED':>7}")
    print("stretch: the builds' wall times over their solo ones; reserved: the share of limit x makespan"
          " their reservations held; load: the 1-minute load average as the run started")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "memory_pressure",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": cpus, "memory_bytes": psutil.virtual_memory().total, "python": platform.python_version()},
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "jobs": jobs,
        "targets": {"peak_over_limit": PEAK_TARGET, "makespan_over_bound": MAKESPAN_TARGET},
        "bound_s": round(bound, 2),
        "bound_parts_s": {name: round(value, 2) for name, value in bound_parts.items()},
        "ideal_s": optimum[0] if optimum else None,
        "ideal_proven_at_least_s": optimum[1] if optimum else None,
        "intended_bound_s": round(intended, 2),
        "intended_bound_parts_s": {name: round(value, 2) for name, value in intended_parts.items()},
        "touch": {"alone_mb_per_s": round(touch_alone), "together_mb_per_s": round(touch_together), "processes": cpus,
                  "builds_s": round(touching, 2)},
        "solo": solo,
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
