"""Memory admission under pressure, against peers: makespan and peak memory of fake builds with mixed needs.

Writes --builds fake-backend sdists, each holding between --min-gb and --max-gb of memory for --min-s to
--max-s seconds (seeded, so every run builds the same set). One round (--rounds of them) runs, in turn, on
those sdists and the same --memory-limit:

1. ``solo``: orchestrate one build at a time (``--max-builds 1``, a history of its own), to measure what
   each build costs on this machine alone: its wall time from admission to the end, its peak RSS, its CPU
   seconds. The round's bound, ideal and safe cap come from it.
2. orchestrate ``--max-builds N`` (the count cap): ``cold``, an empty history, every build assumed to need
   --memory-per-build (the big ones are stopped and requeued); then ``warm1`` to ``warmN`` (--warm-runs),
   ``--force`` on the history the runs before left (one peak + 20%, two agreeing + 10%, three + 5%).
3. ``uv-safe``: ``uv pip install --no-deps`` of every sdist with ``UV_CONCURRENT_BUILDS`` at the cap a uv
   user must choose so the builds can never exceed the limit: the limit over the largest solo peak, at
   least 1. ``uv-count``: the same at the count cap orchestrate was given (its peak goes over the limit).
4. ``parallel``: GNU parallel, ``-j N --memfree M``, one ``uv build --wheel`` per sdist (the same isolation
   as uv's rows: see ``_peers.py``). M is parallel's free memory when the run starts, less the limit, plus
   the largest solo peak: parallel starts a build only while the builds use at most the limit less the
   largest build.

Odd rounds run orchestrate's runs before the peers, even rounds after, so the machine's drift weighs on
both. Every tool's peak is measured the same way: one sampler sums the RSS of the tool's whole process
tree every --interval seconds with psutil, never the tool's own figure; the makespan is the process's
wall time. Orchestrate runs ``--no-sandbox`` (``--orchestrate-args "--sandbox"`` puts it back): the
peers have none, and a sandbox hides the events file the fake builds report to (``at once``, ``starts``)::

    python benchmarks/memory_pressure.py [--builds 12] [--memory-limit 8G] [--max-builds 6]
        [--warm-runs 3] [--rounds 3] [--json benchmarks/results/memory_pressure.json]

Targets, in every round: orchestrate's peak within the limit + 5% in every run; every warm makespan
<= 0.65x uv's at the safe cap and below uv's at the count cap.

For information: the bound, an offline packing lower bound over the builds as they ran alone,
``max(max(t_i), sum(peak_i * t_i) / limit, sum(t_i) / max_builds, sum(cpu_i) / cpus)``; the *ideal*, the
best schedule of the same model (each build holds its solo peak for its solo time; the count cap; the
limit) found by OR-Tools' CP-SAT (``pip install ortools``; ``--ideal-seconds``, proven optimal when it
says so), and the *intended* bound over what the fake builds are asked to do (``alloc_mb`` for ``sleep``
seconds, nothing else), which leaves out starting processes and touching memory. Before each round, the
script measures how fast this machine hands out new memory to one process and to as many at once as
there are CPUs: builds touching memory side by side share that rate (the *stretch*).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _packing import memfree_setting, optimal_schedule, packing_bound, safe_cap  # noqa: E402
from _peers import (  # noqa: E402
    Sampled,
    gnu_parallel,
    parallel_free_bytes,
    run_parallel,
    run_sampled,
    run_uv,
    uv_binary,
)
from corpus import clean_environ  # noqa: E402
from sdists import make_sdist, max_concurrency, read_events  # noqa: E402

from orchestrator.resources import usable_cpu_count  # noqa: E402
from orchestrator.units import format_size, parse_size  # noqa: E402

PEAK_TARGET = 1.05
"""Orchestrate's peak over the limit, in every run."""
SAFE_CAP_TARGET = 0.65
"""Every warm makespan over uv's at the safe cap: at most this."""
COUNT_CAP_TARGET = 1.0
"""Every warm makespan over uv's at the count cap: below this."""

TOUCH = ("import sys, time; n = int(sys.argv[1]) << 20; start = time.perf_counter(); data = b'\\x01' * n;"
         " print(time.perf_counter() - start)")
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
    most: int = max_concurrency([event for event in events if event["pid"] in ended])
    return most


def measured(label: str, tool: str, cap: int, sampled: Sampled, command: list[str],
             events: list[dict[str, Any]]) -> dict[str, Any]:
    """What every run reports, whatever the tool: measured from outside and from the fake builds' events."""
    return {
        "run": label,
        "tool": tool,
        "cap": cap,
        "command": command,
        "load_1m_at_start": sampled.load_1m_at_start,
        "makespan_s": sampled.makespan_s,
        "peak_tree_rss_bytes": sampled.peak_tree_rss_bytes,
        "max_concurrent": completed_concurrency(events),
        "starts": sum(event["event"] == "start" for event in events),
    }


def built(events: list[dict[str, Any]]) -> int:
    """How many of the fake builds ended well, by their own events."""
    return len({event["name"] for event in events if event["event"] == "end" and event.get("ok")})


class Round:
    """One round's runs: the sdists, its own folder and the settings every run shares."""

    def __init__(self, number: int, args: argparse.Namespace, sdists: list[Path], events: Path,
                 work: Path) -> None:
        self.number, self.args, self.sdists, self.events, self.work = number, args, sdists, events, work
        self.limit = parse_size(args.memory_limit)
        self.timeout = args.run_timeout

    def _sampled(self, label: str, run: Callable[[], tuple[Sampled, list[str]]]) -> tuple[Sampled, list[str],
                                                                                         list[dict[str, Any]]]:
        already = len(read_events(self.events))
        print(f"  round {self.number}: {label}", flush=True)
        sampled, command = run()
        return sampled, command, read_events(self.events)[already:]

    def orchestrate(self, label: str, *, max_builds: int, state: str, checkout: Path = ROOT) -> dict[str, Any]:
        """One ``orchestrate build`` of every sdist (of the code in ``checkout``); what its report and output say
        besides."""
        args, report = self.args, self.work / f"report-{label}.json"
        command = [
            sys.executable, "-m", "orchestrator", "build", *map(str, self.sdists), "-w", str(self.work / "wh"),
            "--memory-limit", args.memory_limit, "--memory-per-build", args.memory_per_build,
            "--max-builds", str(max_builds), "--state-dir", str(self.work / state), "--force", "--no-sandbox",
            "--report-json", str(report), *args.orchestrate_args.split(),
        ]
        env = clean_environ(UV_CACHE_DIR=str(self.work / state / "uv-cache"), PYTHONPATH=str(checkout))
        sampled, command, events = self._sampled(label, lambda: (
            run_sampled(label, command, env=env, interval=args.interval, timeout=self.timeout), command))
        data = json.loads(report.read_text())
        lines = sampled.stderr.splitlines()
        return {
            **measured(label, "orchestrate", max_builds, sampled, command, events),
            "report_wall_s": round(data["wall_s"], 2),
            "memory_stops": sum("stopped under memory pressure" in line for line in lines),
            "memory_requeues": sum(build["memory_requeues"] for build in data["builds"]),
            "liveness_warnings": sum("starting it alone" in line for line in lines),
            "backfilled": sum("starting ahead of" in line for line in lines),
            "built": sum(build["status"] == "built" for build in data["builds"]),
            "builds": {
                build["name"]: {key: build.get(key) for key in ("wall_s", "peak_rss_bytes", "predicted_rss_bytes",
                                                            "cpu_s", "memory_requeues", "waited_s", "expected_s",
                                                            "cpu_wait_s", "started_at", "finished_at")}
                for build in data["builds"]
            },
            "log": lines if args.keep_log else [line for line in lines if "memory" in line][:60],
        }

    def uv(self, label: str, uv: str, cap: int) -> dict[str, Any]:
        folder = self.work / label
        sampled, command, events = self._sampled(label, lambda: run_uv(
            label, uv, self.sdists, folder, cap, python=sys.executable, env=clean_environ(),
            interval=self.args.interval, timeout=self.timeout))
        return {**measured(label, "uv", cap, sampled, command, events), "built": built(events)}

    def parallel(self, parallel: str, uv: str, largest: int) -> dict[str, Any]:
        folder, free = self.work / "parallel", parallel_free_bytes()
        memfree = memfree_setting(free, self.limit, largest)
        sampled, command, events = self._sampled("parallel", lambda: run_parallel(
            "parallel", parallel, uv, self.sdists, folder, self.args.max_builds, memfree, python=sys.executable,
            env=clean_environ(), interval=self.args.interval, timeout=self.timeout))
        return {**measured("parallel", "GNU parallel", self.args.max_builds, sampled, command, events),
                "free_at_start_bytes": free, "memfree_bytes": memfree,
                "built": built(events), "wheels": len(list((folder / "wh").glob("*.whl")))}


def judge(run: dict[str, Any], solo: dict[str, Any], bound: float, ideal: float | None, intended: float,
          limit: int) -> None:
    """Add to ``run`` its ratios to the limit and the bounds, and for orchestrate's, where its time went."""
    makespan = run["makespan_s"]
    run["peak_ratio"] = round(run["peak_tree_rss_bytes"] / limit, 3)
    run["makespan_ratio"] = round(makespan / bound, 3)
    run["makespan_over_ideal"] = round(makespan / ideal, 3) if ideal else None
    run["makespan_over_intended"] = round(makespan / intended, 3)
    if run["tool"] != "orchestrate":
        return
    builds = run["builds"]
    # Each build's wall time against its time alone: how much running side by side slowed them.
    run["stretch"] = round(sum(build["wall_s"] for build in builds.values())
                           / sum(solo["builds"][name]["wall_s"] for name in builds), 3)
    # The share of limit x makespan the builds' last attempts held reserved: the rest is packing loss.
    reserved = sum(build["predicted_rss_bytes"] * build["wall_s"] for build in builds.values())
    run["reserved_share"] = round(reserved / (limit * run["report_wall_s"]), 3)


def run_round(number: int, args: argparse.Namespace, jobs: list[dict[str, Any]], sdists: list[Path],
              events: Path, work: Path, tools: dict[str, str | None]) -> dict[str, Any]:
    """Solo, then orchestrate's runs and the peers' (in turn: orchestrate first in odd rounds); the round's
    bounds, ideal and ratios."""
    one = Round(number, args, sdists, events, work)
    limit, cpus = one.limit, usable_cpu_count()
    touch_alone, touch_together = touch_rates(2000, cpus)
    solo = one.orchestrate("solo", max_builds=1, state="state-solo")
    alone = [solo["builds"][job["name"]] for job in jobs]
    times, peaks = [build["wall_s"] for build in alone], [build["peak_rss_bytes"] for build in alone]
    cap = safe_cap(limit, peaks)

    def ours() -> list[dict[str, Any]]:
        return [one.orchestrate(label, max_builds=args.max_builds, state="state")
                for label in ["cold", *(f"warm{i}" for i in range(1, args.warm_runs + 1))]]

    def peers() -> list[dict[str, Any]]:
        uv, parallel = tools["uv"], tools["parallel"]
        if uv is None:
            return []
        runs = [one.uv("uv-safe", uv, cap), one.uv("uv-count", uv, args.max_builds)]
        return runs + ([one.parallel(parallel, uv, max(peaks))] if parallel else [])

    runs = ours() + peers() if number % 2 else peers() + ours()  # in the order they ran

    bound_parts = packing_bound(times, peaks, limit, args.max_builds)
    bound_parts["cpu"] = sum(build["cpu_s"] for build in alone) / cpus
    intended_parts = packing_bound([job["sleep"] for job in jobs], [job["alloc_mb"] * 2**20 for job in jobs],
                                   limit, args.max_builds)
    bound, intended = max(bound_parts.values()), max(intended_parts.values())
    optimum = optimal_schedule(times, peaks, limit, args.max_builds, args.ideal_seconds)
    ideal = optimum.makespan_s if optimum else None
    for run in [solo, *runs]:
        judge(run, solo, bound, ideal, intended, limit)
    touched_mb = sum(job["alloc_mb"] for job in jobs)
    return {
        "round": number,
        "safe_cap": cap,
        "count_cap": args.max_builds,
        "largest_solo_peak_bytes": max(peaks),
        "bound_s": round(bound, 2),
        "bound_parts_s": {name: round(value, 2) for name, value in bound_parts.items()},
        "intended_bound_s": round(intended, 2),
        "intended_bound_parts_s": {name: round(value, 2) for name, value in intended_parts.items()},
        "ideal_s": ideal,
        "ideal_proven_at_least_s": optimum.proven_at_least_s if optimum else None,
        "ideal_starts_s": dict(zip((job["name"] for job in jobs), optimum.starts_s)) if optimum else None,
        "touch": {"alone_mb_per_s": round(touch_alone), "together_mb_per_s": round(touch_together),
                  "processes": cpus, "builds_s": round(touched_mb / touch_together, 2)},
        "solo": solo,
        "runs": runs,
        **round_ratios(runs),
    }


def round_ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each warm makespan over uv's at the safe and the count cap, and which targets the round met."""
    by_label = {run["run"]: run for run in runs}
    ratios = {f"{run['run']}/{peer}": round(run["makespan_s"] / by_label[peer]["makespan_s"], 3)
              for peer in ("uv-safe", "uv-count") if peer in by_label
              for run in runs if run["run"].startswith("warm")}

    def all_of(peer: str, target: Callable[[float], bool]) -> bool | None:
        return all(target(value) for name, value in ratios.items() if name.endswith(peer)) if peer in by_label \
            else None

    return {"ratios": ratios, "met": {
        "peak": all(run["peak_ratio"] <= PEAK_TARGET for run in runs if run["tool"] == "orchestrate"),
        "uv-safe": all_of("uv-safe", lambda value: value <= SAFE_CAP_TARGET),
        "uv-count": all_of("uv-count", lambda value: value < COUNT_CAP_TARGET),
    }}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Every run's makespan and peak over the limit, and every ratio, round by round and their medians."""
    runs: dict[str, dict[str, list[float]]] = {}
    for one in rounds:
        for run in [one["solo"], *one["runs"]]:
            figures = runs.setdefault(run["run"], {"makespan_s": [], "peak_ratio": []})
            figures["makespan_s"].append(run["makespan_s"])
            figures["peak_ratio"].append(run["peak_ratio"])
    ratios: dict[str, list[float]] = {}
    for one in rounds:
        for name, value in one["ratios"].items():
            ratios.setdefault(name, []).append(value)
    return {
        "runs": {label: {**figures, **{f"median_{key}": round(statistics.median(values), 3)
                                       for key, values in figures.items()}}
                 for label, figures in runs.items()},
        "ratios": {name: {"rounds": values, "median": round(statistics.median(values), 3)}
                   for name, values in ratios.items()},
        "met_in_every_round": {target: None if None in (met := [one["met"][target] for one in rounds]) else all(met)
                               for target in ("peak", "uv-safe", "uv-count")},
    }


def verdict(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "MISSED"


def print_round(one: dict[str, Any], limit: int) -> None:
    print(f"\nround {one['round']}: safe cap {one['safe_cap']} ({format_size(limit)} limit over the largest solo"
          f" peak, {format_size(one['largest_solo_peak_bytes'])}), count cap {one['count_cap']}")
    parts = ", ".join(f"{name} {value:.1f}" for name, value in one["bound_parts_s"].items())
    intended = ", ".join(f"{name} {value:.1f}" for name, value in one["intended_bound_parts_s"].items())
    print(f"bound {one['bound_s']:.1f} s = max({parts}), from the solo run ({one['solo']['makespan_s']:.1f} s);"
          f" intended {one['intended_bound_s']:.1f} s = max({intended})")
    touch = one["touch"]
    print(f"new memory: {touch['alone_mb_per_s'] / 1024:.2f} GB/s to one process,"
          f" {touch['together_mb_per_s'] / 1024:.2f} GB/s summed over {touch['processes']} at once;"
          f" touching the builds' memory takes {touch['builds_s']:.1f} s at best")
    if one["ideal_s"]:
        proven = ("proven optimal" if one["ideal_proven_at_least_s"] >= one["ideal_s"]
                  else f"at least {one['ideal_proven_at_least_s']:.1f} s")
        print(f"ideal {one['ideal_s']:.1f} s ({proven}): the best schedule of the bound's model, by CP-SAT")
    else:
        print("ideal: not computed (pip install ortools)")
    for run in one["runs"]:
        if run["tool"] == "GNU parallel":
            print(f"parallel: --memfree {format_size(run['memfree_bytes'])}, with"
                  f" {format_size(run['free_at_start_bytes'])} free (as parallel counts it) at its start")
    header = (f"{'run':<8} {'cap':>3} {'makespan s':>10} {'/ideal':>6} {'/bound':>6} {'peak RSS':>10}"
              f" {'peak/limit':>10} {'at once':>7} {'starts':>6} {'built':>5} {'stops':>5} {'stretch':>7} {'load':>5}")
    print(header)
    print("-" * len(header))
    for run in [one["solo"], *one["runs"]]:
        over_ideal = f"{run['makespan_over_ideal']:.2f}" if run["makespan_over_ideal"] else "-"
        print(f"{run['run']:<8} {run['cap']:>3} {run['makespan_s']:>10.1f} {over_ideal:>6}"
              f" {run['makespan_ratio']:>6.2f} {format_size(run['peak_tree_rss_bytes']):>10}"
              f" {run['peak_ratio']:>10.2f} {run['max_concurrent']:>7}"
              f" {run['starts']:>6} {run['built']:>5} {run.get('memory_stops', '-'):>5}"
              f" {format(run['stretch'], '.2f') if 'stretch' in run else '-':>7}"
              f" {run['load_1m_at_start']:>5.1f}")
    print("  ".join(f"{name} {value:.2f}" for name, value in one["ratios"].items()))
    print(f"targets: peak <= limit + 5% in every run {verdict(one['met']['peak'])};"
          f" warm <= {SAFE_CAP_TARGET}x uv-safe {verdict(one['met']['uv-safe'])};"
          f" warm < uv-count {verdict(one['met']['uv-count'])}")


def print_summary(summary: dict[str, Any], rounds: int) -> None:
    print(f"\nmedians of {rounds} round(s) (every round in the JSON)")
    header = f"{'run':<8} {'makespan s, each round':>28} {'median':>7} {'peak/limit, each round':>28} {'median':>7}"
    print(header)
    print("-" * len(header))
    for label, figures in summary["runs"].items():
        print(f"{label:<8} {', '.join(f'{value:.1f}' for value in figures['makespan_s']):>28}"
              f" {figures['median_makespan_s']:>7.1f}"
              f" {', '.join(f'{value:.2f}' for value in figures['peak_ratio']):>28}"
              f" {figures['median_peak_ratio']:>7.2f}")
    for name, figures in summary["ratios"].items():
        target = f"<= {SAFE_CAP_TARGET}" if name.endswith("uv-safe") else f"< {COUNT_CAP_TARGET}"
        print(f"{name:<16} {', '.join(f'{value:.3f}' for value in figures['rounds']):>28} median"
              f" {figures['median']:.3f} (target {target})")
    met = summary["met_in_every_round"]
    print(f"in every round: peak <= limit + 5% {verdict(met['peak'])}; warm <= {SAFE_CAP_TARGET}x uv-safe"
          f" {verdict(met['uv-safe'])}; warm < uv-count {verdict(met['uv-count'])}")


def tool_versions(tools: dict[str, str | None], parallel_version: str) -> dict[str, str | None]:
    uv = tools["uv"]
    try:
        ortools_version: str | None = importlib.metadata.version("ortools")
    except importlib.metadata.PackageNotFoundError:
        ortools_version = None
    return {
        "uv": subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip() if uv else None,
        "parallel": parallel_version if tools["parallel"] else None,
        "ortools": ortools_version,
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
    parser.add_argument("--max-builds", type=int, default=6,
                        help="the count cap: orchestrate's, uv-count's and parallel's -j")
    parser.add_argument("--warm-runs", type=int, default=3, help="runs after the cold one, each with more history")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with its own solo run and every tool")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ideal-seconds", type=float, default=60,
                        help="time CP-SAT may take for the ideal schedule (needs ortools)")
    parser.add_argument("--run-timeout", type=float, default=900, help="seconds after which a run is stopped")
    parser.add_argument("--orchestrate-args", default="", metavar="ARGS",
                        help='more options for every orchestrate run, e.g. "--max-cpu 50"')
    parser.add_argument("--keep-log", action="store_true", help="keep every line of orchestrate's output in the JSON")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/memory_pressure.json")
    args = parser.parse_args()

    uv = uv_binary()
    parallel, parallel_version = gnu_parallel()
    tools = {"uv": uv, "parallel": parallel}
    if uv is None:
        print("uv: not found (pip install uv): the uv and GNU parallel rows are not run")
    if parallel is None:
        print(f"GNU parallel: {parallel_version}: its row is not run")
    rng = random.Random(args.seed)
    jobs: list[dict[str, Any]] = [
        {"name": f"job{i:02d}", "alloc_mb": int(rng.uniform(args.min_gb, args.max_gb) * 1024),
         "sleep": round(rng.uniform(args.min_s, args.max_s), 1)}
        for i in range(args.builds)
    ]
    limit = parse_size(args.memory_limit)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="memory-pressure-") as tmp:
        scratch = Path(tmp)
        events = scratch / "events.log"
        sdists = [make_sdist(scratch / "sdists", job["name"], alloc_mb=job["alloc_mb"], sleep=job["sleep"],
                             events=str(events)) for job in jobs]
        for number in range(1, args.rounds + 1):
            rounds.append(run_round(number, args, jobs, sdists, events, scratch / f"round{number}", tools))
            print_round(rounds[-1], limit)
    summary = summarize(rounds)
    print(f"\n{args.builds} builds, {args.min_gb:g}-{args.max_gb:g} GB for {args.min_s:g}-{args.max_s:g} s,"
          f" --memory-limit {args.memory_limit} --max-builds {args.max_builds}"
          f" --memory-per-build {args.memory_per_build}; {usable_cpu_count()} CPUs,"
          f" {format_size(psutil.virtual_memory().total)} RAM")
    print_summary(summary, len(rounds))

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "memory_pressure",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": usable_cpu_count(), "memory_bytes": psutil.virtual_memory().total,
                    "python": platform.python_version()},
        "tools": tool_versions(tools, parallel_version),
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "jobs": jobs,
        "targets": {"peak_over_limit": PEAK_TARGET, "warm_over_uv_safe": SAFE_CAP_TARGET,
                    "warm_over_uv_count_below": COUNT_CAP_TARGET},
        "summary": summary,
        "rounds": rounds,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
