"""The run's own memory against the number of builds: peak RSS of ``orchestrate`` at N no-op builds, and its slope.

    python benchmarks/own_memory.py [--count 300 --count 1000 --count 3000] [--rounds 1]
        [--variant before=/path/to/other/checkout] [--json benchmarks/results/own_memory.json]

Each run is ``overhead.py``'s cold orchestrate run (the same no-op sdists, fresh ``--state-dir``,
``-j 2``, offline) with ``--no-sandbox`` (the sandbox changes what the builds cost, not what the
run keeps) and every report asked for: ``--report-json``, ``--trace``, ``--junit`` and the run
folder's ``report.json`` and ``report.html``, so the end of the run is measured too (each variant first
makes one unmeasured run of two builds: no measured run compiles bytecode). The figure is
the peak RSS of the tool's own top process (``VmHWM``, read every 0.1 s until it exits). Variants
(``--variant NAME=DIR``, another checkout run with ``PYTHONPATH=DIR``) are taken in turn within
each count and round, so two versions of the code are compared on the same machine state.

The slope is the least-squares line of the peak over N, in KB a build: a run whose own memory
is flat in N has a slope near 0 (the noise between rounds is a few hundred KB over the run).

Each sdist named on the command line costs the interpreter itself memory before any code of ours
runs (it keeps the arguments several times over, some as wide characters): the ``argv`` row is
the peak of a bare ``python -c 'sleep'`` given the same arguments. ``--folder`` names instead one
folder per N (symbolic links to the same sdists), as a user with thousands of sdists would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from overhead import ROOT, clean_environ, measure, run_orchestrate
from sdists import make_sdist  # tests/, which overhead puts on the path


def slope_kb(points: list[tuple[int, float]]) -> float:
    """The least-squares slope of ``(N, MB)`` points, in KB a build."""
    mean_n = statistics.fmean(n for n, _ in points)
    mean_mb = statistics.fmean(mb for _, mb in points)
    spread = sum((n - mean_n) ** 2 for n, _ in points)
    if not spread:
        return 0.0
    return sum((n - mean_n) * (mb - mean_mb) for n, mb in points) / spread * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, action="append", help="no-op sdists per run (default 300, 1000, 3000)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also run orchestrate from the checkout DIR, named NAME (taken first in each turn)")
    parser.add_argument("--folder", action="store_true", help="name a folder of the N sdists, not each sdist")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "own_memory.json")
    args = parser.parse_args()
    variants: dict[str, Path] = {}
    for spec in args.variant:
        name, _, folder = spec.partition("=")
        variants[name] = Path(folder).resolve()
    variants["this"] = ROOT
    counts = args.count or [300, 1000, 3000]
    peaks: dict[str, dict[int, list[float]]] = {name: {} for name in [*variants, "argv"]}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="orchestrate-own-memory-") as tmp:
        work = Path(tmp)
        sdists = [make_sdist(work / "sdists", f"noop{i:05d}") for i in range(max(counts))]
        named = {count: _named(work, sdists[:count], args.folder) for count in counts}
        # An unmeasured run of each variant first: an interpreter compiles what has no bytecode yet as it first
        # imports it (rich's emoji table alone peaked 8 MB above the run), which the variant taken first paid alone.
        for name, src in variants.items():
            run_orchestrate(sdists[:2], src, work, work / f"state-{name}", args.max_builds, f"{name}-warm",
                            ["--no-sandbox"])
        for number in range(args.rounds):
            for count in counts:
                bare = measure([sys.executable, "-c", "import time; time.sleep(0.5)", *map(str, named[count])],
                               clean_environ(), work / f"argv-{count}.log")
                peaks["argv"].setdefault(count, []).append(bare["own_peak_rss_mb"])
                for name, src in variants.items():
                    state = work / f"state-{name}"
                    shutil.rmtree(state, ignore_errors=True)
                    label = f"{name}-{count}"
                    reports = ["--trace", str(work / f"{label}.trace.json"), "--junit", str(work / f"{label}.xml")]
                    result = run_orchestrate(named[count], src, work, state, args.max_builds, label,
                                             ["--no-sandbox", *reports])
                    shutil.rmtree(state, ignore_errors=True)
                    if result["built"] != count:
                        sys.exit(f"{label}: built {result['built']} of {count}; see {work / label}.log")
                    peaks[name].setdefault(count, []).append(result["own_peak_rss_mb"])
                    runs.append({"round": number + 1, "variant": name, "count": count, **result})
                    print(f"round {number + 1}  {name:10} N={count:5}  {result['makespan_s']:7.1f} s"
                          f"  {result['cpu_s']:7.1f} CPU-s  own peak {result['own_peak_rss_mb']:6.1f} MB", flush=True)
    print(f"\nown peak RSS (MB), --no-sandbox -j {args.max_builds}, median of {args.rounds} round(s)")
    print(f"| variant | {' | '.join(f'N={count}' for count in counts)} | slope KB/build |")
    print(f"|---|{'---|' * len(counts)}---|")
    summary: dict[str, Any] = {}
    for name, by_count in peaks.items():
        medians = {count: statistics.median(values) for count, values in by_count.items()}
        slope = slope_kb(list(medians.items()))
        summary[name] = {"peak_mb": {str(count): values for count, values in by_count.items()},
                         "median_mb": {str(count): value for count, value in medians.items()},
                         "slope_kb_per_build": round(slope, 2)}
        print(f"| {name} | {' | '.join(f'{medians[count]:.1f}' for count in counts)} | {slope:.1f} |")
    output = {"command": sys.argv, "max_builds": args.max_builds, "flags": ["--no-sandbox"], "folder": args.folder,
              "variants": {name: str(path) for name, path in variants.items()}, "python": sys.version.split()[0],
              "platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(),
              "summary": summary, "runs": runs}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=1) + "\n")
    print(f"written {args.json}")


def _named(work: Path, sdists: list[Path], folder: bool) -> list[Path]:
    """What the command line names: each sdist, or (``folder``) one folder of links to them."""
    if not folder:
        return sdists
    named = work / f"sdists-{len(sdists)}"
    named.mkdir()
    for sdist in sdists:
        (named / sdist.name).symlink_to(sdist)
    return [named]


if __name__ == "__main__":
    main()
