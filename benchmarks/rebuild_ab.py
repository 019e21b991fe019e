"""Two checkouts of orchestrate in turn, rebuilding the same sdists warm: wall and CPU seconds of each.

    python benchmarks/rebuild_ab.py --before /tmp/main-checkout --corpus ../shared/corpus/public \
        --only bitarray,frozenlist,kiwisolver --rounds 3 [--arg=--compiler-cache=off]

A change to what each build costs (its hooks, its environment) shows in a warm rebuild, where
nothing else moves: each checkout gets a state folder of its own (``--keep-build-envs``), warmed
by one untimed build, then builds the sdists again (``--force``) once per round, the two taken in
turn, first one then the other, then the other way round. ``before`` runs with
``PYTHONPATH=DIR`` from a folder holding no checkout; ``after`` is the checkout this script sits
in. CPU seconds are those of every process each run waited for, the orphans of bubblewrap's PID
namespaces included (this process is their subreaper). Environment, offline index and caches as in
``upgrade.py``. Results go to ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from corpus import adopt_orphans, clean_environ, timed

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (its folder)")
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder holding sdists/")
    parser.add_argument("--only", help="comma-separated names: only these packages")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--arg", action="append", default=[], help="one more orchestrate argument, for both")
    parser.add_argument("--output", type=Path, default=Path(tempfile.gettempdir()) / "rebuild_ab.json")
    args = parser.parse_args()
    adopt_orphans()
    output = args.output.resolve()
    names = set(args.only.split(",")) if args.only else None
    sdists = [path for path in sorted((args.corpus / "sdists").resolve().glob("*.tar.gz"))
              if names is None or path.name.rsplit("-", 1)[0].lower().replace("_", "-") in names]
    backends = (args.corpus.parent / "backends").resolve()
    work = Path(tempfile.mkdtemp(prefix="orchestrate-rebuild-ab-"))
    os.chdir(work)  # python -m looks in the current folder first: no checkout there, PYTHONPATH decides
    variants = {"before": str(args.before.resolve()), "after": str(ROOT)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}

    def run(name: str, label: str) -> dict[str, Any]:
        state = work / name
        cmd = [sys.executable, "-m", "orchestrator", "build", *map(str, sdists), "-w", str(state / f"{label}-wh"),
               "-j", str(args.max_builds), "--state-dir", str(state), "--keep-build-envs", "--force", "--no-index",
               "--find-links", str(backends), *args.arg]
        state.mkdir(exist_ok=True)
        env = clean_environ(UV_CACHE_DIR=str(state / "uv-cache"), PYTHONPATH=variants[name])
        return timed(cmd, env, state / f"{label}.log")

    try:
        for name in variants:
            run(name, "warm-up")
        for number in range(args.rounds):
            order = list(variants) if number % 2 == 0 else list(reversed(variants))
            for name in order:
                measured = run(name, f"round-{number + 1}")
                results[name].append(measured)
                print(f"round {number + 1} {name:6} {measured['makespan_s']:6.1f} s {measured['cpu_s']:6.1f} CPU s "
                      f"load {measured['load_1min']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {name: {measure: statistics.median(run[measure] for run in runs) for measure in ("makespan_s", "cpu_s")}
               for name, runs in results.items()}
    ratios = {measure: [round(after[measure] / before[measure], 3)
                        for before, after in zip(results["before"], results["after"])]
              for measure in ("makespan_s", "cpu_s")}
    print(f"\n{len(sdists)} sdists, -j {args.max_builds}, {' '.join(args.arg)}")
    print("| checkout | makespan s, median | CPU s, median | after / before, each round |\n|---|---|---|---|")
    for name, figures in summary.items():
        print(f"| {name} | {figures['makespan_s']:.1f} | {figures['cpu_s']:.1f} | "
              + ("" if name == "before" else f"makespan {ratios['makespan_s']}, CPU {ratios['cpu_s']}") + " |")
    output.write_text(json.dumps({"sdists": [path.name for path in sdists], "command": sys.argv,
                                       "rounds": results, "summary": summary, "ratios": ratios}, indent=1))
    print(f"written {output}")


if __name__ == "__main__":
    main()
