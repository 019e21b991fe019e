"""Replays ``memory_pressure.py``'s warm runs in the model, noise-free: what the plan made from history costs.

For each round of a ``memory_pressure.py`` JSON and each warm run, the queue is what that run's history held
(the runs before it in the round: each build's need by ``predict_need`` over its peaks, its expected duration
by the history's rule over its rows), and the scheduler is replayed on it event by event: at each start or
end the queue is planned again (``planning.plan_order``), the head starts when the count cap and the memory
limit allow, another goes ahead of it as ``admission.may_backfill`` allows, each running build reserves its
need and ends after its *true* duration. Two truths are replayed: the builds' solo times (the model of the
CP-SAT ideal in the JSON), and the durations the builds took in that warm run itself. Each estimate rule
(``wall``: the history's, the median wall time; ``solo``: each time less its CPU wait, which JSON files from
before it was measured lack) is replayed beside ``oracle`` (the plan made from the truth), so
the table says what the estimates cost; ``solo/peaks`` is the oracle with needs equal to the learned peaks,
without headroom (what the headroom costs). Of a ``memory_ab.py`` JSON, each warm run is replayed with its own
durations as the truth, planned on what it expected (``itself/planned``) and on the truth (``itself/oracle``)::

    python benchmarks/plan_replay.py benchmarks/results/memory_pressure.json [...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from orchestrator.policy import planning  # noqa: E402
from orchestrator.policy.admission import Candidate, Limits, QueuedBuild, RunningBuild, may_backfill  # noqa: E402
from orchestrator.policy.history import RECENT_BUILDS, RECENT_DURATIONS, predict_need  # noqa: E402
from orchestrator.units import parse_size  # noqa: E402

Row = dict[str, Any]
"""One build of one run as the benchmark's JSON has it: ``wall_s``, ``cpu_s``, ``peak_rss_bytes``..."""


def replay(durations: dict[str, float], estimates: dict[str, float], needs: dict[str, int], limits: Limits) -> float:
    """The makespan of the scheduler's model when builds take ``durations`` and are planned on ``estimates``."""
    queue = [QueuedBuild(key=name, need=needs[name], expected_duration=estimates[name]) for name in durations]
    running: list[RunningBuild] = []
    ends: dict[str, float] = {}
    now = 0.0
    while queue or running:
        queue = planning.plan_order(queue, running, limits, now=now)
        while queue and len(running) < limits.max_builds:
            reserved = sum(build.need for build in running)
            head = queue[0]
            chosen = head if not running or reserved + head.need <= (limits.memory_limit or 0) else next(
                (build for build in queue[1:] if reserved + build.need <= (limits.memory_limit or 0)
                 and may_backfill(build, Candidate(key=head.key, need=head.need), running, limits, now=now)),
                None)
            if chosen is None:
                break
            queue.remove(chosen)
            running.append(RunningBuild(key=chosen.key, need=chosen.need, rss=0, started_at=now,
                                        expected_end=now + (chosen.expected_duration or 0.0)))
            ends[chosen.key] = now + durations[chosen.key]
        now = min(ends[build.key] for build in running)
        running = [build for build in running if ends[build.key] > now]
    return max(ends.values())


def wall_estimate(rows: list[Row]) -> float:
    """The history's rule: the median wall time of the last :data:`RECENT_DURATIONS` builds."""
    return float(statistics.median(row["wall_s"] for row in rows[-RECENT_DURATIONS:]))


def solo_duration(wall_s: float, cpu_s: float | None, cpu_wait_s: float | None) -> float:
    """``wall_s`` as if the build had had the CPUs to itself: less what waiting for a CPU added.

    Waits of processes runnable side by side overlap: with ``p`` of them runnable on average
    (``(cpu_s + cpu_wait_s) / wall_s``, at least 1), the wall time grew by ``cpu_wait_s / p``.
    """
    if cpu_wait_s is None or cpu_s is None or wall_s <= 0:
        return wall_s
    return wall_s - cpu_wait_s / max(1.0, (cpu_s + cpu_wait_s) / wall_s)


def solo_estimate(rows: list[Row]) -> float:
    """A rule tried and left out (benchmarks/README.md): each wall time made :func:`solo_duration`, the median."""
    return float(statistics.median(solo_duration(row["wall_s"], row["cpu_s"], row["cpu_wait_s"])
                                   for row in rows[-RECENT_DURATIONS:]))


RULES: dict[str, Callable[[list[Row]], float]] = {"wall": wall_estimate, "solo": solo_estimate}


def replay_round(one: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    limits = Limits(max_builds=settings["max_builds"], memory_limit=parse_size(settings["memory_limit"]),
                    min_free_memory=0, max_load=None)
    default = parse_size(settings["memory_per_build"])
    ours = [run for run in one["runs"] if run["tool"] == "orchestrate"]
    solo = {name: build["wall_s"] for name, build in one["solo"]["builds"].items()}
    found, rules = [], RULES
    for index, run in enumerate(ours[1:], start=1):
        before = ours[:index]
        rows = {name: [earlier["builds"][name] for earlier in before] for name in solo}
        if any("cpu_wait_s" not in row for name in solo for row in rows[name]):
            rules = {"wall": wall_estimate}  # a JSON from before the wait was measured
        needs = {name: predict_need([row["peak_rss_bytes"] for row in rows[name][-RECENT_BUILDS:]], default)
                 for name in solo}
        itself = {name: build["wall_s"] for name, build in run["builds"].items()}
        figures: dict[str, Any] = {"run": run["run"], "ran_s": run["report_wall_s"], "ideal_s": one["ideal_s"]}
        for truth_name, truth in (("solo", solo), ("itself", itself)):
            figures[f"{truth_name}/oracle"] = round(replay(truth, truth, needs, limits), 2)
            if truth_name == "solo":  # what the headroom over the peaks costs, for information
                peaks = {name: max(row["peak_rss_bytes"] for row in rows[name]) for name in solo}
                figures["solo/peaks"] = round(replay(truth, truth, peaks, limits), 2)
            for rule, estimate in rules.items():
                estimates = {name: estimate(rows[name]) for name in solo}
                figures[f"{truth_name}/{rule}"] = round(replay(truth, estimates, needs, limits), 2)
        found.append(figures)
    return found


def replay_ab(one: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Each run of a ``memory_ab.py`` round with its own durations as the truth: planned on what it expected
    (``planned``, each build's ``expected_s``) and on the truth itself (``oracle``)."""
    limits = Limits(max_builds=settings["max_builds"], memory_limit=parse_size(settings["memory_limit"]),
                    min_free_memory=0, max_load=None)
    found = []
    for label, run in one["runs"].items():
        builds = run.get("builds")
        if not builds or label.endswith("/cold"):
            continue  # uv's run, or one that had no estimates
        truth = {name: build["wall_s"] for name, build in builds.items()}
        needs = {name: build["predicted_rss_bytes"] for name, build in builds.items()}
        planned = {name: build["expected_s"] for name, build in builds.items()}
        span = max(build["finished_at"] for build in builds.values()) - min(
            build["started_at"] for build in builds.values())
        found.append({"run": label, "ran_s": round(span, 2),
                      "itself/oracle": round(replay(truth, truth, needs, limits), 2),
                      "itself/planned": round(replay(truth, planned, needs, limits), 2)})
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="memory_pressure.py or memory_ab.py JSON files")
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    table = []
    for path in args.results:
        data = json.loads(path.read_text())
        one_round = replay_ab if data["benchmark"] == "memory_ab" else replay_round
        for one in data["rounds"]:
            for figures in one_round(one, data["settings"]):
                table.append({"file": path.name, "round": one["round"], **figures})
    columns = ["ran_s", "ideal_s", "solo/peaks",
               *(f"{truth}/{rule}" for truth in ("solo", "itself") for rule in ("oracle", *RULES)), "itself/planned"]
    print(f"{'file':<34} {'rd':>2} {'run':<12} " + " ".join(f"{column:>14}" for column in columns))
    for figures in table:
        print(f"{figures['file']:<34} {figures['round']:>2} {figures['run']:<12} "
              + " ".join(f"{figures.get(column) or '-':>14}" for column in columns))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
