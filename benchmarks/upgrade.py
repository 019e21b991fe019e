"""An "upgrade night": build the previous release of the corpus's compiled packages, then the current ones;
time the second. Every tool keeps its own caches from the first build; the tools run in turn.

    python benchmarks/upgrade.py --corpus ../shared/corpus/public --rounds 3

The previous releases are pinned with their sha256 in ``benchmarks/corpus-previous.txt`` and
downloaded once, hash-checked, by ``orchestrate download`` into ``--state-dir`` (never committed;
each round's folder, with every tool's logs and caches, is left there too);
the current ones are the corpus's sdists of the same names. Build requirements come from the
corpus's ``backends/`` folder, offline, for every tool. A round runs, each with fresh caches of its
own: orchestrate (its compiler cache, prepared build environments and history), orchestrate with
``--compiler-cache off`` (what the cache gives), ``uv pip install --no-deps`` with
``UV_CONCURRENT_BUILDS=K`` into one virtualenv (the upgrade), and ``pip wheel --no-deps`` (serial);
the order of the tools rotates from round to round. Orchestrate (with its cache) then builds the
current releases once more into an empty wheelhouse: every compilation a hit and the history of
these very builds, the floor no compiler cache can go below (the backends' own work around their
compilers), reported as its ratio to uv. Each step records its wall seconds, the CPU
seconds of every process it waited for (steadier than the wall clock on a busy machine) and the
load average as it ended. Ratios are taken within a round, then their median is reported.
Results go to ``benchmarks/results/upgrade.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpus import adopt_orphans, clean_environ, timed

HERE = Path(__file__).parent
PREVIOUS = HERE / "corpus-previous.txt"

Tool = Callable[[list[Path], Path, str], dict[str, Any]]
"""Builds the given sdists in its work folder (``label`` names the step); returns the step's figures."""


def pinned_names(requirements: Path) -> list[str]:
    """The project names pinned in ``requirements`` (``name==version \\`` lines)."""
    return [line.split("==")[0].strip() for line in requirements.read_text().splitlines()
            if "==" in line and not line.lstrip().startswith("#")]


def download_previous(requirements: Path, state: Path) -> list[Path]:
    """The previous releases' sdists, fetched once into ``state`` (hash-checked, cached)."""
    dest = state / "previous-sdists"
    cmd = [sys.executable, "-m", "orchestrator", "download", "-r", str(requirements), "--no-deps",
           "--no-binary", ":all:", "-d", str(dest), "--state-dir", str(state / "download-state")]
    done = subprocess.run(cmd, env=clean_environ(), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cannot download the previous releases:\n{done.stderr}")
    return sorted(dest.glob("*.tar.gz"))


def orchestrate(k: int, backends: Path, work: Path, *extra: str) -> Tool:
    state = work / "state"

    def run(sdists: list[Path], folder: Path, label: str) -> dict[str, Any]:
        report = folder / f"{label}.json"
        cmd = [sys.executable, "-m", "orchestrator", "build", *map(str, sdists), "-w", str(folder / f"{label}-wh"),
               "-j", str(k), "--state-dir", str(state), "--keep-build-envs", "--no-index", "--find-links",
               str(backends), "--report-json", str(report), *extra]
        measured = timed(cmd, clean_environ(UV_CACHE_DIR=str(state / "uv-cache")), folder / f"{label}.log")
        builds = json.loads(report.read_text())["builds"]
        failed = [build["name"] for build in builds if build["status"] != "built"]
        if failed:
            sys.exit(f"orchestrate {label}: not built: {failed}; see {folder / label}.log")
        hits = sum(build.get("compiler_hits") or 0 for build in builds)
        misses = sum(build.get("compiler_misses") or 0 for build in builds)
        phases: dict[str, float] = {}
        for build in builds:
            for phase, seconds in build["phases"].items():
                phases[phase] = phases.get(phase, 0.0) + seconds
        origin = min(build["started_at"] for build in builds)
        return {**measured, "compiler_hits": hits, "compiler_misses": misses,
                "backend_sum_s": round(phases.get("backend", 0.0), 2),
                "phases_sum_s": {phase: round(seconds, 2) for phase, seconds in phases.items()},
                "fewer_than_k_s": round(fewer_than(k, builds), 2),
                "builds": [{"name": build["name"], "start_s": round(build["started_at"] - origin, 2),
                            "wall_s": build["wall_s"], "expected_s": build.get("expected_s")}
                           for build in sorted(builds, key=lambda build: build["started_at"])]}

    return run


def fewer_than(k: int, builds: list[dict[str, Any]]) -> float:
    """Seconds, from the first build's start to the last one's end, in which fewer than ``k`` builds ran:
    a slot idle, most often at the end while one long build finishes alone (the tail)."""
    edges = sorted([(build["started_at"], 1) for build in builds] + [(build["finished_at"], -1) for build in builds])
    running, idle, last = 0, 0.0, edges[0][0]
    for at, change in edges:
        if running < k:
            idle += at - last
        running, last = running + change, at
    return idle


def uv(k: int, backends: Path, work: Path) -> Tool:
    import uv as uv_package

    binary = str(uv_package.find_uv_bin())
    env = clean_environ(UV_CACHE_DIR=str(work / "uv-cache"), UV_CONCURRENT_BUILDS=str(k))
    subprocess.run([binary, "venv", "--quiet", str(work / "venv")], env=env, check=True)

    def run(sdists: list[Path], folder: Path, label: str) -> dict[str, Any]:
        cmd = [binary, "pip", "install", "--no-deps", "--offline", "--no-index", "--find-links", str(backends),
               "--python", str(work / "venv" / "bin" / "python"), *map(str, sdists)]
        return timed(cmd, env, folder / f"{label}.log")

    return run


def pip(backends: Path, work: Path) -> Tool:
    env = clean_environ(PIP_CACHE_DIR=str(work / "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")

    def run(sdists: list[Path], folder: Path, label: str) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--find-links", str(backends),
               "-w", str(folder / f"{label}-wh"), *map(str, sdists)]
        return timed(cmd, env, folder / f"{label}.log")

    return run


def upgrade_night(name: str, make: Callable[[Path], Tool], previous: list[Path], current: list[Path],
                  tmp: Path, *, again: bool = False) -> dict[str, Any]:
    """Build ``previous`` with a fresh tool (untimed), then ``current`` (timed) on what it kept; with ``again``,
    ``current`` once more into an empty wheelhouse: every compilation a hit, what no compiler cache can take off."""
    work = tmp / name
    work.mkdir()
    tool = make(work)
    first = tool(previous, work, "previous")
    second = tool(current, work, "current")
    print(f"  {name:31} previous {first['makespan_s']:6.1f} s ({first['cpu_s']:6.1f} CPU s), current "
          f"{second['makespan_s']:6.1f} s ({second['cpu_s']:6.1f} CPU s), load {second['load_1min']}", flush=True)
    if "fewer_than_k_s" in second:
        print(f"  {'':31} current: a slot idle {second['fewer_than_k_s']:.1f} s; " + ", ".join(
            f"{build['name']} at {build['start_s']:.1f} s, {build['wall_s']:.1f} s (expected "
            f"{build['expected_s'] or 0:.1f})" for build in second["builds"]), flush=True)
    if not again:
        return {"previous": first, "current": second}
    third = tool(current, work, "again")
    print(f"  {'':31} current again (all hits)  {third['makespan_s']:6.1f} s ({third['cpu_s']:6.1f} CPU s), "
          f"{third['compiler_hits']} hits, {third['compiler_misses']} misses", flush=True)
    return {"previous": first, "current": second, "again": third}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder holding sdists/")
    parser.add_argument("--backends", type=Path, help="find-links folder of build requirements "
                        "(default: CORPUS/../backends)")
    parser.add_argument("--previous", type=Path, default=PREVIOUS, help="pins and hashes of the previous releases")
    parser.add_argument("--only", help="comma-separated names: only these packages")
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-pip", action="store_true")
    parser.add_argument("--state-dir", type=Path, default=Path(tempfile.gettempdir()) / "orchestrate-bench-upgrade",
                        help="the previous releases' download (kept between runs) and each round's work folder")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "upgrade.json")
    args = parser.parse_args()
    adopt_orphans()
    backends = (args.backends or args.corpus.parent / "backends").resolve()
    names = args.only.split(",") if args.only else pinned_names(args.previous)
    previous = [path for path in download_previous(args.previous.resolve(), args.state_dir.resolve())
                if _project(path) in names]
    current = [path for path in sorted((args.corpus / "sdists").resolve().glob("*.tar.gz")) if _project(path) in names]
    if sorted(map(_project, previous)) != sorted(map(_project, current)):
        sys.exit(f"previous {sorted(map(_project, previous))} and current {sorted(map(_project, current))} differ")
    k = args.max_builds
    tools: dict[str, Callable[[Path], Tool]] = {
        "orchestrate": lambda work: orchestrate(k, backends, work),
        "orchestrate, no compiler cache": lambda work: orchestrate(k, backends, work, "--compiler-cache", "off"),
        "uv": lambda work: uv(k, backends, work),
    }
    if not args.skip_pip:
        tools["pip wheel (serial)"] = lambda work: pip(backends, work)
    rounds = []
    for number in range(args.rounds):
        order = list(tools)[number % len(tools):] + list(tools)[:number % len(tools)]
        print(f"round {number + 1}: {len(current)} packages, K={k}, order: {', '.join(order)}", flush=True)
        work = args.state_dir.resolve() / f"round-{number + 1}"  # kept afterwards: its logs say what happened
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rounds.append({name: upgrade_night(name, tools[name], previous, current, work, again=name == "orchestrate")
                       for name in order})
    summary = _summary(rounds)
    _print(summary, [_project(path) for path in current], k)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"packages": [path.name for path in current],
                                       "previous": [path.name for path in previous], "max_builds": k,
                                       "command": sys.argv, "summary": summary, "rounds": rounds}, indent=1))
    print(f"written {args.output}")


def _project(sdist: Path) -> str:
    return sdist.name.rsplit("-", 1)[0].lower().replace("_", "-")


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The timed (current) makespans of every round, and per-round ratios to uv and pip with their medians."""
    makespans = {name: [result[name]["current"]["makespan_s"] for result in rounds] for name in rounds[0]}
    cpu = {name: [result[name]["current"]["cpu_s"] for result in rounds] for name in rounds[0]}
    ratios: dict[str, list[float]] = {}
    for result in rounds:
        for name in ("orchestrate", "orchestrate, no compiler cache"):
            for peer in ("uv", "pip wheel (serial)"):
                if peer not in result:
                    continue
                for measure, word in (("makespan_s", "makespan"), ("cpu_s", "CPU s")):
                    ours, theirs = result[name]["current"][measure], result[peer]["current"][measure]
                    ratios.setdefault(f"{name} / {peer}, {word}", []).append(round(ours / theirs, 3))
    cached = [result["orchestrate"]["current"] for result in rounds]
    again = [result["orchestrate"]["again"]["makespan_s"] for result in rounds]
    ratios["orchestrate, all hits / uv, makespan"] = [
        round(result["orchestrate"]["again"]["makespan_s"] / result["uv"]["current"]["makespan_s"], 3)
        for result in rounds]
    return {"makespan_s": makespans, "all_hits_makespan_s": again, "median_makespan_s": {name: statistics.median(values)
                                                           for name, values in makespans.items()},
            "cpu_s": cpu, "median_cpu_s": {name: statistics.median(values) for name, values in cpu.items()},
            "ratios": ratios, "median_ratios": {name: statistics.median(values) for name, values in ratios.items()},
            "compiler_hits": [entry["compiler_hits"] for entry in cached],
            "compiler_misses": [entry["compiler_misses"] for entry in cached]}


def _print(summary: dict[str, Any], packages: list[str], k: int) -> None:
    print(f"\nupgrade night: {len(packages)} compiled packages ({', '.join(packages)}), K={k}; the current "
          "releases' build, after the previous ones'")
    print("| tool | makespan s, each round | median | CPU s, each round | median |\n|---|---|---|---|---|")
    for name, values in summary["makespan_s"].items():
        cpu = summary["cpu_s"][name]
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {summary['median_makespan_s'][name]:.1f} "
              f"| {', '.join(f'{v:.1f}' for v in cpu)} | {summary['median_cpu_s'][name]:.1f} |")
    print("\n| ratio | each round | median |\n|---|---|---|")
    for name, values in summary["ratios"].items():
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in values)} | {summary['median_ratios'][name]:.3f} |")
    print(f"\ncompiler cache hits/misses of orchestrate's current builds: "
          f"{', '.join(f'{h}/{m}' for h, m in zip(summary['compiler_hits'], summary['compiler_misses']))}; "
          f"the same builds again, every compilation a hit: "
          f"{', '.join(f'{v:.1f}' for v in summary['all_hits_makespan_s'])} s")


if __name__ == "__main__":
    main()
