"""Two versions of orchestrate on memory_pressure.py's builds, in turn: each warm run's makespan, side by side.

A shared machine's speed moves by half within minutes, so two checkouts measured in separate rounds of
``memory_pressure.py`` cannot be compared. Here each step (``cold``, then ``warm1`` to ``warmN``, each on
the history its variant's runs before left) runs once per variant, one variant right after the other
(the order alternating from step to step and round to round), and uv at the safe cap once per round
between them, on the same builds and limit as ``memory_pressure.py``::

    python benchmarks/memory_ab.py --variant before=/path/to/checkout [--variant after=.] [--rounds 2]
        [--json benchmarks/results/memory_ab.json]

It prints each run's makespan and peak over the limit, each warm run over uv's safe cap, and each variant's
warm runs over the first variant's, step by step.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from _packing import safe_cap  # noqa: E402
from _peers import uv_binary  # noqa: E402
from memory_pressure import Round  # noqa: E402
from sdists import make_sdist  # noqa: E402

from orchestrator.units import parse_size  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR", required=True,
                        help="a checkout to run orchestrate from (PYTHONPATH=DIR); the first is the reference")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--builds", type=int, default=12)
    parser.add_argument("--memory-limit", default="8G")
    parser.add_argument("--memory-per-build", default="1G")
    parser.add_argument("--max-builds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/memory_ab.json")
    args = parser.parse_args()
    variants = {name: Path(folder).resolve() for name, folder in (spec.split("=", 1) for spec in args.variant)}
    # What Round reads of memory_pressure.py's settings.
    args.orchestrate_args, args.keep_log, args.interval, args.run_timeout = "", False, 0.05, 900.0
    rng = random.Random(args.seed)  # the same builds as memory_pressure.py's defaults
    jobs: list[dict[str, Any]] = [{"name": f"job{i:02d}", "alloc_mb": int(rng.uniform(0.5, 4.0) * 1024),
             "sleep": round(rng.uniform(1.0, 6.0), 1)} for i in range(args.builds)]
    limit = parse_size(args.memory_limit)
    uv = uv_binary()
    steps = ["cold", *(f"warm{i}" for i in range(1, args.warm_runs + 1))]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="memory-ab-") as tmp:
        scratch = Path(tmp)
        events = scratch / "events.log"
        sdists = [make_sdist(scratch / "sdists", job["name"], alloc_mb=job["alloc_mb"], sleep=job["sleep"],
                             events=str(events)) for job in jobs]
        for number in range(1, args.rounds + 1):
            one = Round(number, args, sdists, events, scratch / f"round{number}")
            runs: dict[str, dict[str, Any]] = {}
            cap = safe_cap(limit, [job["alloc_mb"] * 2**20 for job in jobs])
            for index, step in enumerate(steps):
                order = list(variants) if (index + number) % 2 else list(reversed(variants))
                for name in order:
                    run = one.orchestrate(f"{name}-{step}", max_builds=args.max_builds, state=f"state-{name}",
                                          checkout=variants[name])
                    runs[f"{name}/{step}"] = {"makespan_s": run["makespan_s"],
                                              "peak_ratio": round(run["peak_tree_rss_bytes"] / limit, 3),
                                              "backfilled": run["backfilled"], "builds": run["builds"]}
                if index == 1 and uv is not None:  # between the cold and the warm runs
                    peer = one.uv("uv-safe", uv, cap)
                    runs["uv-safe"] = {"makespan_s": peer["makespan_s"],
                                       "peak_ratio": round(peer["peak_tree_rss_bytes"] / limit, 3)}
            reference = next(iter(variants))
            ratios = {f"{name}/{step}": {
                "over_uv_safe": round(runs[f"{name}/{step}"]["makespan_s"] / runs["uv-safe"]["makespan_s"], 3)
                if "uv-safe" in runs else None,
                f"over_{reference}": round(runs[f"{name}/{step}"]["makespan_s"]
                                           / runs[f"{reference}/{step}"]["makespan_s"], 3)}
                for name in variants for step in steps if step != "cold"}
            rounds.append({"round": number, "safe_cap": cap, "runs": runs, "ratios": ratios})
            print(f"\nround {number} (uv at the safe cap {cap}: {runs.get('uv-safe', {}).get('makespan_s')} s)")
            for label, run in runs.items():
                extra = ratios.get(label, {})
                print(f"{label:<16} {run['makespan_s']:>7.1f} s  peak/limit {run['peak_ratio']:.2f}  "
                      + "  ".join(f"{key} {value:.3f}" for key, value in extra.items() if value is not None))
    medians = {label: statistics.median(one["ratios"][label][key] for one in rounds)
               for label in rounds[0]["ratios"] for key in ["over_uv_safe"] if rounds[0]["ratios"][label][key]}
    print("\nmedian over uv-safe: " + "  ".join(f"{label} {value:.3f}" for label, value in medians.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "memory_ab", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "variants": {name: str(path) for name, path in variants.items()}, "jobs": jobs,
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "rounds": rounds, "median_over_uv_safe": medians,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
