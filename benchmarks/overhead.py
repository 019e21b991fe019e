"""The cost of a build that does nothing: N no-op sdists with orchestrate, uv and pip wheel; wall and CPU.

    python benchmarks/overhead.py --count 300 [--count 3000] [--rounds 3] [--max-builds 2]
        [--variant before=/path/to/other/checkout] [--variant-arg NAME=ARG] [--skip pip]
        [--json benchmarks/results/overhead.json]

Each sdist is a fake project (``tests/sdists.py``) whose in-tree backend writes a tiny wheel
at once and needs nothing installed: what a tool spends on it is the tool's own overhead per
build (processes started, environments made, sampling, bookkeeping). A round runs, one after
another on the same machine state: for each orchestrate variant, a cold run (fresh
``--state-dir``: no history, no prepared build environments) and a warm one (the state the
cold run left, ``--keep-build-envs``, ``--force``); then ``uv pip install --no-deps`` into a
fresh virtualenv with ``UV_CONCURRENT_BUILDS=K`` and a fresh cache; then ``pip wheel --no-deps``
(serial, as pip builds). Every tool runs offline, with ``PIP_CONFIG_FILE=/dev/null``, without
``PIP_FIND_LINKS``/``PYTHONDONTWRITEBYTECODE`` or any ``ORCHESTRATE_*``/``UV_*`` variable of
the caller.

Per run: the makespan; the CPU seconds of the tool and every process it waited for (the
``rusage`` that ``os.wait4`` returns; a build's processes are all waited for by the tool or
its workers); the peak RSS of the tool's own top process (``VmHWM`` read every 0.1 s until
it exits), which must stay flat in N. The table gives the median of the rounds and every
round; ratios are taken within a round (tools side by side) and their median reported. The tools'
order rotates by a place each round (``--rotate-from N`` starts at round N's): on this machine's ext4 a
run of thousands of builds leaves deleted inodes that slow the next run's file creations, so a fixed
order favours whichever tool runs first.

``--variant NAME=DIR`` runs orchestrate from another checkout too (``PYTHONPATH=DIR``, same
interpreter, run from a folder holding no checkout), so two versions of the code are compared
in the same rounds; the default variant, ``this``, is the checkout this script sits in.
``--variant-arg NAME=ARG`` gives variant NAME one more argument (``--variant nocpu=. --variant-arg
nocpu=--max-cpu=0``: this checkout again, without the CPU rule).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from sdists import make_sdist  # noqa: E402


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
           and not k.startswith(("ORCHESTRATE_", "UV_", "PIP_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


def _hwm(pid: int) -> int:
    """The peak resident memory of process ``pid`` so far (``VmHWM``), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``cmd`` in the folder of ``log`` (so that ``python -m`` finds no checkout there); its makespan,
    the CPU seconds of its whole waited-for tree, and its own peak RSS."""
    peak = 0
    with log.open("w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=log.parent)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.1):
                peak = max(peak, _hwm(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    if process.returncode:
        sys.exit(f"{' '.join(cmd[:4])} failed with status {process.returncode}; see {log}")
    return {"makespan_s": round(elapsed, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "own_peak_rss_mb": round(peak / 2**20, 1)}


def run_orchestrate(sdists: list[Path], src: Path, work: Path, state: Path, k: int, label: str,
                    extra: list[str]) -> dict[str, Any]:
    """One ``orchestrate build`` of every sdist into a fresh wheelhouse, on ``state``."""
    wheelhouse = work / f"{label}-wh"
    report = work / f"{label}.json"
    empty = work / "no-links"
    empty.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "orchestrator", "build", *map(str, sdists), "-w", str(wheelhouse), "-j", str(k),
           "--state-dir", str(state), "--keep-build-envs", "--no-index", "--find-links", str(empty),
           "--report-json", str(report), "--force", *extra]
    result: dict[str, Any] = measure(cmd, clean_environ(PYTHONPATH=str(src), UV_CACHE_DIR=str(state / "uv-cache")),
                                     work / f"{label}.log")
    builds = json.loads(report.read_text())["builds"]
    result["built"] = sum(build["status"] == "built" for build in builds)
    result["median_overhead_s"] = round(statistics.median(build["overhead_s"] for build in builds), 3)
    result["phase_sums_s"] = {phase: round(sum(build["phases"].get(phase, 0.0) for build in builds), 2)
                              for phase in ("extract", "create_env", "install_requires", "get_requires", "backend",
                                            "publish")}
    result["waits_s"] = {rule: round(sum(build["waits"].get(rule, 0.0) for build in builds), 2)
                         for rule in sorted({rule for build in builds for rule in build["waits"]})}
    shutil.rmtree(wheelhouse, ignore_errors=True)
    return result


def run_uv(sdists: list[Path], work: Path, k: int) -> dict[str, Any]:
    import uv

    binary = str(uv.find_uv_bin())
    env = clean_environ(UV_CACHE_DIR=str(work / "uv-cache"), UV_CONCURRENT_BUILDS=str(k))
    venv = work / "uv-venv"
    subprocess.run([binary, "venv", "--quiet", str(venv)], env=env, check=True)
    cmd = [binary, "pip", "install", "--no-deps", "--offline", "--no-index", "--python", str(venv / "bin" / "python"),
           *map(str, sdists)]
    result: dict[str, Any] = measure(cmd, env, work / "uv.log")
    result["built"] = len(list((venv / "lib").glob("python*/site-packages/*.dist-info")))
    shutil.rmtree(venv, ignore_errors=True)
    shutil.rmtree(work / "uv-cache", ignore_errors=True)
    return result


def run_pip(sdists: list[Path], work: Path) -> dict[str, Any]:
    wheelhouse = work / "pip-wh"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "-w", str(wheelhouse), *map(str, sdists)]
    env = clean_environ(PIP_CACHE_DIR=str(work / "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    result: dict[str, Any] = measure(cmd, env, work / "pip.log")
    result["built"] = len(list(wheelhouse.glob("*.whl")))
    shutil.rmtree(wheelhouse, ignore_errors=True)
    return result


def one_round(sdists: list[Path], variants: dict[str, Path], work: Path, k: int, skip: set[str],
              extra: dict[str, list[str]], shift: int) -> dict[str, Any]:
    """Every tool in turn: each variant cold then warm, uv, pip, the order shifted by ``shift`` places, so that no
    tool always runs after the same others (a long run's deleted files slow the next one's file creations)."""
    tools = [*variants, *(tool for tool in ("uv", "pip") if tool not in skip)]
    shift %= len(tools)
    result: dict[str, Any] = {}
    for tool in tools[shift:] + tools[:shift]:
        if tool == "uv":
            result["uv"] = run_uv(sdists, work, k)
            _say("uv", result["uv"])
        elif tool == "pip":
            result["pip wheel"] = run_pip(sdists, work)
            _say("pip wheel", result["pip wheel"])
        else:
            state = work / f"state-{tool}"
            shutil.rmtree(state, ignore_errors=True)
            for phase in ("cold", "warm"):
                label = f"orchestrate[{tool}] {phase}"
                if phase not in skip:
                    result[label] = run_orchestrate(sdists, variants[tool], work, state, k, f"{tool}-{phase}",
                                                    extra.get(tool, []))
                    _say(label, result[label])
            shutil.rmtree(state, ignore_errors=True)
    return result


def _say(label: str, values: dict[str, Any]) -> None:
    print(f"    {label:30} {values['makespan_s']:8.2f} s  {values['cpu_s']:8.2f} CPU-s"
          f"  {values['own_peak_rss_mb']:7.1f} MB  built {values['built']}", flush=True)


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each tool's figures, and each orchestrate run's ratios to uv within its round."""
    tools: dict[str, dict[str, list[float]]] = {}
    for result in rounds:
        for tool, values in result.items():
            for figure in ("makespan_s", "cpu_s", "own_peak_rss_mb"):
                tools.setdefault(tool, {}).setdefault(figure, []).append(values[figure])
    ratios: dict[str, dict[str, list[float]]] = {}
    for result in rounds:
        if "uv" not in result:
            continue
        for tool, values in result.items():
            if tool.startswith("orchestrate"):
                for figure in ("makespan_s", "cpu_s"):
                    ratios.setdefault(tool, {}).setdefault(figure, []).append(
                        round(values[figure] / result["uv"][figure], 3))
    return {
        "tools": {tool: {figure: {"median": statistics.median(values), "rounds": values}
                         for figure, values in figures.items()} for tool, figures in tools.items()},
        "over_uv": {tool: {figure: {"median": statistics.median(values), "rounds": values}
                           for figure, values in figures.items()} for tool, figures in ratios.items()},
    }


def print_table(count: int, k: int, summary: dict[str, Any]) -> None:
    print(f"\n{count} no-op sdists, {k} builds at once: median of rounds (every round)")
    print("| tool | makespan s | CPU s | own peak RSS MB | makespan / uv | CPU / uv |")
    print("|---|---|---|---|---|---|")
    for tool, figures in summary["tools"].items():
        cells = [f"{figures[f]['median']:.1f} ({', '.join(f'{v:.1f}' for v in figures[f]['rounds'])})"
                 for f in ("makespan_s", "cpu_s")]
        cells.append(f"{figures['own_peak_rss_mb']['median']:.0f}")
        over = summary["over_uv"].get(tool)
        for figure in ("makespan_s", "cpu_s"):
            cells.append(f"{over[figure]['median']:.2f} ({', '.join(f'{v:.2f}' for v in over[figure]['rounds'])})"
                         if over else "")
        print(f"| {tool} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, action="append", help="no-op sdists per run (repeatable; default 300)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also run orchestrate from the checkout DIR, named NAME")
    parser.add_argument("--skip", action="append", default=[], choices=["cold", "warm", "uv", "pip"])
    parser.add_argument("--variant-arg", action="append", default=[], metavar="NAME=ARG",
                        help="an extra argument for variant NAME's runs (this=--no-sandbox)")
    parser.add_argument("--rotate-from", type=int, default=0, metavar="N",
                        help="start the tools' rotation at round N's order (a one-round run in another order)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    args = parser.parse_args()
    variants = {"this": ROOT}
    for spec in args.variant:
        name, _, folder = spec.partition("=")
        variants[name] = Path(folder).resolve()
    hidden = [name for name, folder in variants.items() if folder.is_relative_to(tempfile.gettempdir())]
    if hidden:  # a build's sandbox has a /tmp of its own: the hook server could not import the checkout there
        parser.error(f"variant {hidden[0]}: a checkout under {tempfile.gettempdir()} is hidden from the builds' "
                     "sandbox (each hook would start its own interpreter); copy it elsewhere")
    extra: dict[str, list[str]] = {}
    for spec in args.variant_arg:
        name, _, arg = spec.partition("=")
        extra.setdefault(name, []).append(arg)
    output: dict[str, Any] = {
        "command": sys.argv, "max_builds": args.max_builds,
        "variants": {n: [str(p), *extra.get(n, [])] for n, p in variants.items()},
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(), "runs": {},
    }
    for count in args.count or [300]:
        with tempfile.TemporaryDirectory(prefix="orchestrate-overhead-") as tmp:
            work = Path(tmp)
            sdists = [make_sdist(work / "sdists", f"noop{i:05d}") for i in range(count)]
            rounds = []
            for number in range(args.rounds):
                print(f"N={count}, round {number + 1} of {args.rounds}", flush=True)
                rounds.append(one_round(sdists, variants, work, args.max_builds, set(args.skip), extra,
                                        shift=args.rotate_from + number))
            summary = summarise(rounds)
            print_table(count, args.max_builds, summary)
            output["runs"][str(count)] = {"summary": summary, "rounds": rounds}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
