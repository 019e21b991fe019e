"""What the jobserver gives a meson-python build: built alone, and beside a small build at ``-j 2``.

    python benchmarks/jobserver.py --corpus ../shared/corpus --rounds 3

The big build is the corpus's ``jobserver/sdists`` (PyWavelets: meson-python, ninja, C and
Cython sources), the small one ``public/sdists/simplejson`` (setuptools, one C file); build
requirements come from ``backends/``, offline. Each round runs, in turn (the order rotating
from round to round), every tool on both scenarios, each with fresh caches of its own:

* orchestrate ``--jobserver auto`` (the default): ninja takes the run's tokens;
* orchestrate ``--jobserver off``: each build gets ``-jK``, which meson-python's ninja ignores
  (it runs CPUs + 2 jobs per build, whatever runs beside it);
* ``uv pip install --no-deps`` into a fresh virtualenv with ``UV_CONCURRENT_BUILDS=2``;
* ``uv build --wheel`` of each sdist, the pair run as two processes at once.

Both orchestrate runs use ``--compiler-cache off`` (no peer has one) and ``-j 2``. Each step
records its wall seconds and the CPU seconds of every process it waited for. Ratios are taken
within a round, then their median is reported. Results go to ``benchmarks/results/jobserver.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpus import adopt_orphans, clean_environ, timed

HERE = Path(__file__).parent
SCENARIOS = ("alone", "beside")
"""The big build alone; the big build and the small one, two builds at once."""

Tool = Callable[[list[Path], Path], dict[str, Any]]
"""Builds the sdists in a fresh work folder; returns the step's figures."""


def orchestrate(backends: Path, jobserver: str) -> Tool:
    def run(sdists: list[Path], work: Path) -> dict[str, Any]:
        report = work / "report.json"
        cmd = [sys.executable, "-m", "orchestrator", "build", *map(str, sdists), "-w", str(work / "wh"), "-j", "2",
               "--state-dir", str(work / "state"), "--no-index", "--find-links", str(backends),
               "--compiler-cache", "off", "--jobserver", jobserver, "--report-json", str(report)]
        measured = timed(cmd, clean_environ(UV_CACHE_DIR=str(work / "uv-cache")), work / "log")
        builds = json.loads(report.read_text())["builds"]
        failed = [build["name"] for build in builds if build["status"] != "built"]
        if failed:
            sys.exit(f"orchestrate: not built: {failed}; see {work / 'log'}")
        return {**measured, "backend_s": {build["name"]: build["phases"].get("backend") for build in builds}}

    return run


def _uv_binary() -> str:
    import uv as uv_package

    return str(uv_package.find_uv_bin())


def uv_pip(backends: Path) -> Tool:
    def run(sdists: list[Path], work: Path) -> dict[str, Any]:
        env = clean_environ(UV_CACHE_DIR=str(work / "uv-cache"), UV_CONCURRENT_BUILDS="2")
        subprocess.run([_uv_binary(), "venv", "--quiet", "--python", sys.executable, str(work / "venv")], env=env,
                       check=True)
        cmd = [_uv_binary(), "pip", "install", "--no-deps", "--offline", "--no-index", "--find-links", str(backends),
               "--python", str(work / "venv" / "bin" / "python"), *map(str, sdists)]
        return timed(cmd, env, work / "log")

    return run


def uv_build(backends: Path) -> Tool:
    def run(sdists: list[Path], work: Path) -> dict[str, Any]:
        env = clean_environ(UV_CACHE_DIR=str(work / "uv-cache"), UV_CONCURRENT_BUILDS="2")
        # One `uv build` per sdist, all at once (two at most here), timed together.
        script = " & ".join(f"{_uv_binary()} build --wheel --offline --no-index --find-links {backends} "
                            f"--python {sys.executable} -o {work / 'wh'} {sdist}" for sdist in sdists) + " & wait"
        return timed(["sh", "-c", script], env, work / "log")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=HERE.parent.parent / "shared" / "corpus")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "jobserver.json")
    parser.add_argument("--orchestrate-only", action="store_true",
                        help="Only orchestrate with and without the jobserver: more rounds in the same time.")
    args = parser.parse_args()
    adopt_orphans()
    corpus = args.corpus.resolve()
    backends = corpus / "backends"
    big = sorted((corpus / "jobserver" / "sdists").glob("pywavelets-*.tar.gz"))[-1]
    small = sorted((corpus / "public" / "sdists").glob("simplejson-*.tar.gz"))[-1]
    inputs = {"alone": [big], "beside": [big, small]}
    tools: dict[str, Tool] = {
        "orchestrate --jobserver auto": orchestrate(backends, "auto"),
        "orchestrate --jobserver off": orchestrate(backends, "off"),
        "uv pip install (UV_CONCURRENT_BUILDS=2)": uv_pip(backends),
        "uv build, two at once": uv_build(backends),
    }
    if args.orchestrate_only:
        tools = {name: tool for name, tool in tools.items() if name.startswith("orchestrate")}
    names = list(tools)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-jobserver-") as tmp:
        for index in range(args.rounds):
            order = names[index % len(names):] + names[:index % len(names)]
            figures: dict[str, dict[str, Any]] = {scenario: {} for scenario in SCENARIOS}
            for name in order:
                for scenario in SCENARIOS:
                    work = Path(tmp) / f"r{index}-{names.index(name)}-{scenario}"
                    work.mkdir()
                    step = figures[scenario][name] = tools[name](inputs[scenario], work)
                    print(f"round {index + 1} {scenario:6} {name:40} {step['makespan_s']:7.1f} s"
                          f" ({step['cpu_s']:6.1f} CPU s, load {step['load_1min']})", flush=True)
            rounds.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "order": order, **figures})
            summary = _summary(rounds, names)  # written after every round: a cut-off run keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({
                "machine": {"cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0]},
                "sdists": {"big": big.name, "small": small.name}, "summary": summary, "rounds": rounds},
                indent=2) + "\n")
    _print(summary, names)
    print(f"written {args.out}")


def _summary(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per scenario and tool: the median wall and CPU seconds, and the median of the per-round ratios to the
    ``--jobserver off`` run and to ``uv pip install``."""
    summary: dict[str, Any] = {}
    for scenario in SCENARIOS:
        summary[scenario] = {}
        for name in names:
            walls = [item[scenario][name]["makespan_s"] for item in rounds]
            summary[scenario][name] = {
                "median_s": round(statistics.median(walls), 2),
                "median_cpu_s": round(statistics.median(item[scenario][name]["cpu_s"] for item in rounds), 2),
                "vs_off": round(statistics.median(
                    item[scenario][name]["makespan_s"] / item[scenario][names[1]]["makespan_s"] for item in rounds), 3),
                "vs_uv_pip": round(statistics.median(
                    item[scenario][name]["makespan_s"] / item[scenario][names[2]]["makespan_s"] for item in rounds), 3)
                if len(names) > 2 else None,
                "rounds_s": walls,
            }
    return summary


def _print(summary: dict[str, Any], names: list[str]) -> None:
    print("\n| scenario | tool | median s | CPU s | vs --jobserver off | vs uv pip | rounds s |")
    print("|---|---|---|---|---|---|---|")
    for scenario in SCENARIOS:
        for name in names:
            row = summary[scenario][name]
            vs_uv = f"{row['vs_uv_pip']:.2f}" if row["vs_uv_pip"] is not None else "-"
            print(f"| {scenario} | {name} | {row['median_s']:.1f} | {row['median_cpu_s']:.1f} | {row['vs_off']:.2f}"
                  f" | {vs_uv} | {', '.join(f'{wall:.1f}' for wall in row['rounds_s'])} |")


if __name__ == "__main__":
    main()
