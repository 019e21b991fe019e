"""The build farm's scale-out and its cost per build: fake builds that mostly wait, on 1 and on 3 Dask workers.

On one machine, several build machines can only be simulated with builds that wait
(the fake backend sleeps ``--sleep`` seconds), so that the machine's 2 CPUs are not
what limits them. Each round runs, in turn, on the same ``--builds`` sdists:

1. ``local``: ``orchestrate build -j SLOTS`` with local worker processes (no farm);
2. ``farm1``: ``--cluster`` on a ``dask scheduler`` with 1 ``dask worker --nthreads SLOTS``;
3. ``farm3``: the same scheduler with 3 such workers.

The scheduler and workers are real processes started here on 127.0.0.1 (``--no-nanny``), each worker
with a ``TMPDIR`` of its own, so that each is a machine of its own to orchestrate.
Every run: ``--no-history --force --max-cpu 0 --no-sandbox`` (the machine is shared, so the CPU
rule would measure the other users, and the sandbox's cost is the same with and without the
farm). Figures are the median over ``--repeat`` rounds::

    python benchmarks/farm.py [--builds 60] [--sleep 3] [--slots 2] [--repeat 2]
        [--json benchmarks/results/farm.json]

- *scale-out efficiency*: ``makespan(farm1) * 1 / (makespan(farm3) * 3)``, the speed-up over
  the ideal speed-up of 3x the slots; also each farm run's *ideal* makespan,
  ``ceil(builds / slots) * build time``, build time being the local run's median build wall
  time, over the measured one. Target: >= 0.9 at 3 workers.
- *added cost per build*: ``(makespan(farm1) - makespan(local)) * slots / builds``, what going
  through Dask adds to each build's slot time, and the median build wall time of farm1 less
  that of local. Target: <= 150 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sdists import make_sdist  # noqa: E402


@contextlib.contextmanager
def cluster(folder: Path, workers: int, slots: int) -> Iterator[str]:
    """A ``dask scheduler`` and ``workers`` ``dask worker --nthreads slots`` processes; yields the address."""
    scheduler_file = folder / f"scheduler-{workers}.json"
    processes = []
    log = (folder / f"cluster-{workers}.log").open("wb")
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(scheduler_file)], stdout=log, stderr=subprocess.STDOUT))
        while not scheduler_file.exists():
            time.sleep(0.1)
        for index in range(workers):
            # A temporary folder of its own makes each worker a machine of its own: the worker processes that
            # share one are one machine to orchestrate (its ledger of builds, its prepared environments).
            machine = folder / f"machine-{workers}-{index}"
            machine.mkdir(exist_ok=True)
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                 "--nthreads", str(slots), "--host", "127.0.0.1", "--no-nanny", "--no-dashboard"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(machine)}))
        import distributed

        address = json.loads(scheduler_file.read_text())["address"]
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
        yield str(address)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:  # a dask worker can hang in asyncio's shutdown when its scheduler
                process.kill()                 # stops at the same moment: the rounds are measured by then
                process.wait()
        log.close()


def run(sdists: Path, wheelhouse: Path, report: Path, slots: int, cluster_address: str | None) -> dict[str, Any]:
    """One ``orchestrate build``; its makespan and its builds' median wall time."""
    command = [sys.executable, "-m", "orchestrator", "build", str(sdists), "-w", str(wheelhouse), "--no-history",
               "--force", "--max-cpu", "0", "--no-sandbox", "--report-json", str(report)]
    command += ["--cluster", cluster_address] if cluster_address else ["-j", str(slots)]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    data = json.loads(report.read_text())
    builds = data["builds"]
    starts = [build["started_at"] for build in builds]
    ends = [build["finished_at"] for build in builds]
    return {"makespan_s": round(max(ends) - min(starts), 3), "command_s": round(elapsed, 3),
            "median_build_s": round(statistics.median(build["wall_s"] for build in builds), 3),
            "hosts": sorted({build.get("host") or "local" for build in builds})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=60)
    parser.add_argument("--sleep", type=float, default=3.0)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "farm.json")
    args = parser.parse_args()
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as temp:
        folder = Path(temp)
        for index in range(args.builds):
            make_sdist(folder / "sdists", f"wait{index:02d}", sleep=args.sleep)
        with cluster(folder, 1, args.slots) as one, cluster(folder, 3, args.slots) as three:
            for number in range(args.repeat):
                round_: dict[str, dict[str, Any]] = {}
                for name, address in (("local", None), ("farm1", one), ("farm3", three)):
                    round_[name] = run(folder / "sdists", folder / f"wh-{name}", folder / f"{name}.json",
                                       args.slots, address)
                    print(f"round {number + 1} {name}: {round_[name]}", flush=True)
                rounds.append(round_)
    median = {name: {key: statistics.median(r[name][key] for r in rounds)
                     for key in ("makespan_s", "command_s", "median_build_s")} for name in rounds[0]}
    build_s = median["local"]["median_build_s"]
    ideal = {name: math.ceil(args.builds / (args.slots * workers)) * build_s
             for name, workers in (("local", 1), ("farm1", 1), ("farm3", 3))}
    efficiency = median["farm1"]["makespan_s"] / (3 * median["farm3"]["makespan_s"])
    added_ms = (median["farm1"]["makespan_s"] - median["local"]["makespan_s"]) * args.slots / args.builds * 1000
    added_wall_ms = (median["farm1"]["median_build_s"] - build_s) * 1000
    print()
    print(f"{args.builds} builds sleeping {args.sleep:g} s, {args.slots} slots per worker, "
          f"median of {args.repeat} round(s)")
    print("| run | makespan s | ideal s | ideal / measured | median build s |")
    print("|---|---|---|---|---|")
    for name in median:
        print(f"| {name} | {median[name]['makespan_s']:.2f} | {ideal[name]:.2f} | "
              f"{ideal[name] / median[name]['makespan_s']:.2f} | {median[name]['median_build_s']:.2f} |")
    print(f"scale-out efficiency, 3 workers against 1: {efficiency:.2f} (target >= 0.9)")
    print(f"added per build through Dask: {added_ms:.0f} ms of slot time (makespans), "
          f"{added_wall_ms:.0f} ms of build wall time (target <= 150 ms)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "settings": vars(args) | {"json": str(args.json)}, "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "load_1m_at_end": os.getloadavg()[0]},
        "rounds": rounds, "median": median, "ideal_s": ideal, "scale_out_efficiency": round(efficiency, 3),
        "added_ms_per_build": round(added_ms, 1), "added_build_wall_ms": round(added_wall_ms, 1),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
