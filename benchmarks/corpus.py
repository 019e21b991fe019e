"""Build the real-sdist corpus offline with orchestrate (cold and warm), pip wheel and uv; compare makespans.

    python benchmarks/corpus.py --corpus ../shared/corpus/public --max-builds 2

Every tool runs with ``PIP_CONFIG_FILE=/dev/null`` and without ``PIP_FIND_LINKS`` (this
machine's pip configuration adds local package sources) or ``PYTHONDONTWRITEBYTECODE`` (set
on this machine, unlike Python's default), offline (``--no-index
--find-links BACKENDS``) and with fresh caches of its own. One round runs, in this order:
orchestrate with a cold build-environment cache (fresh state: no history, no prepared
envs, empty uv cache), ``pip wheel --no-deps`` (serial), ``uv pip install --no-deps`` with
``UV_CONCURRENT_BUILDS=K``, then orchestrate again on the state the cold run left (warm
prepared envs, history for longest-first). ``--repeat`` alternates further rounds.

The lower bound of a run is LB = max(sum of ``build_wheel`` seconds / K, longest
``build_wheel``), from that orchestrate run's own report (its ``backend`` phases): no
schedule of those builds on K slots can end sooner. (``get_requires_for_build_wheel`` runs
as the build is prepared, before admission, so outside the K slots.) Each step also records
the CPU seconds of every process it waited for; with K CPUs, a run can end no sooner than its
CPU seconds over K (its CPU bound). Results go to ``benchmarks/results/corpus.json``.

``--variant NAME=DIR`` runs orchestrate cold from another checkout too (``PYTHONPATH=DIR``, same
interpreter), right after this checkout's cold run in each round, so two versions of the code are
compared side by side (``cold[NAME]``; its CPU over this one's as ``cold/NAME CPU``); ``--variant-arg
NAME=ARG`` gives it one more argument (``--variant off=. --variant-arg off=--compiler-cache=off``: this
checkout without the compiler cache). ``--skip-warm`` leaves out the warm run; ``--name PREFIX`` keeps
only the sdists whose file names start with a given prefix (repeatable).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PYTHONDONTWRITEBYTECODE") and not k.startswith(("ORCHESTRATE_", "UV_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (Linux), so their CPU seconds count.

    bubblewrap with a PID namespace (orchestrate's sandbox) leaves the namespace's first process to be
    reaped by whoever adopts it: without this, the CPU of every sandboxed hook is missing from
    ``RUSAGE_CHILDREN``, and from the ``cpu_s`` orchestrate's own report reads the same way.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans() -> None:
    """Wait for the adopted orphans of a finished step (they end with it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def timed(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` to its end; its wall seconds, the CPU seconds of it and every process it or this one
    waited for (less noisy than the wall clock on a shared machine), and the 1-minute load average."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as out:
        completed = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=cwd)
    wall = time.perf_counter() - start
    reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode:
        sys.exit(f"{cmd[:4]} failed with status {completed.returncode}; see {log}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"makespan_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_1min": round(os.getloadavg()[0], 2)}


def run_orchestrate(sdists: list[Path], backends: Path, work: Path, state: Path, k: int, label: str,
                    src: Path | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One ``orchestrate build`` of every sdist, from the checkout at ``src`` (default: this one), run from ``work``
    (``python -m`` puts its folder first on the path: a checkout there would shadow ``src``)."""
    report = work / f"{label}.json"
    wheelhouse = work / f"{label}-wh"
    cmd = [sys.executable, "-m", "orchestrator", "build", *map(str, sdists), "-w", str(wheelhouse), "-j", str(k),
           "--state-dir", str(state), "--keep-build-envs", "--no-index", "--find-links", str(backends),
           "--report-json", str(report), "--force", *extra]
    environ = clean_environ(UV_CACHE_DIR=str(state / "uv-cache"), PYTHONPATH=str(src or HERE.parent.resolve()))
    measured = timed(cmd, environ, work / f"{label}.log", cwd=work)
    makespan = measured["makespan_s"]
    builds = json.loads(report.read_text())["builds"]
    backend = [build["phases"].get("backend", 0.0) for build in builds]
    lower_bound = max(sum(backend) / k, max(backend))
    return {
        **measured,
        "cpu_bound_s": round(measured["cpu_s"] / k, 2),
        "built": sum(build["status"] == "built" for build in builds),
        "backend_sum_s": round(sum(backend), 2),
        "longest_backend_s": round(max(backend), 2),
        "lower_bound_s": round(lower_bound, 2),
        "over_lower_bound": round(makespan / lower_bound, 3),
        "median_overhead_s": round(statistics.median(build["overhead_s"] for build in builds), 3),
        "overhead_sum_s": round(sum(build["overhead_s"] for build in builds), 2),
        "phase_sums_s": {phase: round(sum(build["phases"].get(phase, 0.0) for build in builds), 2)
                         for phase in ("extract", "create_env", "install_requires", "get_requires", "backend",
                                       "publish")},
        "unphased_sum_s": round(sum(build["wall_s"] - sum(build["phases"].values()) for build in builds), 2),
        "builds": [{"name": build["name"], "started_at": round(build["started_at"], 3), "wall_s": build["wall_s"],
                    "overhead_s": build["overhead_s"], "phases": build["phases"]}
                   for build in sorted(builds, key=lambda b: b["started_at"])],
    }


def run_pip(sdists: list[Path], backends: Path, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--find-links", str(backends),
           "-w", str(work / "pip-wh"), *map(str, sdists)]
    env = clean_environ(PIP_CACHE_DIR=str(work / "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return timed(cmd, env, work / "pip.log")


def run_uv(sdists: list[Path], backends: Path, work: Path, k: int) -> dict[str, Any]:
    import uv

    binary = str(uv.find_uv_bin())
    env = clean_environ(UV_CACHE_DIR=str(work / "uv-cache"), UV_CONCURRENT_BUILDS=str(k))
    subprocess.run([binary, "venv", "--quiet", str(work / "uv-venv")], env=env, check=True)
    cmd = [binary, "pip", "install", "--no-deps", "--offline", "--no-index", "--find-links", str(backends),
           "--python", str(work / "uv-venv" / "bin" / "python"), *map(str, sdists)]
    return timed(cmd, env, work / "uv.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder holding sdists/")
    parser.add_argument("--backends", type=Path, help="find-links folder of build requirements "
                        "(default: CORPUS/../backends)")
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--only", type=int, metavar="N", help="only the N smallest sdists")
    parser.add_argument("--skip-pip", action="store_true")
    parser.add_argument("--skip-uv", action="store_true")
    parser.add_argument("--skip-warm", action="store_true")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also run orchestrate cold from the checkout DIR (not under /tmp: the sandbox hides it)")
    parser.add_argument("--variant-arg", action="append", default=[], metavar="NAME=ARG",
                        help="one more argument for variant NAME's runs")
    parser.add_argument("--name", action="append", default=[], metavar="PREFIX",
                        help="only the sdists whose file names start with PREFIX (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, alternating the tools")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "corpus.json")
    args = parser.parse_args()
    backends = (args.backends or args.corpus.parent / "backends").resolve()
    sdists = sorted((args.corpus / "sdists").resolve().glob("*.tar.gz"), key=lambda path: path.stat().st_size)
    if args.name:
        sdists = [path for path in sdists if path.name.startswith(tuple(args.name))]
    if args.only:
        sdists = sdists[: args.only]
    k = args.max_builds
    variants = {name: Path(folder).resolve() for name, _, folder in (spec.partition("=") for spec in args.variant)}
    extra: dict[str, tuple[str, ...]] = {}
    for name, _, arg in (spec.partition("=") for spec in args.variant_arg):
        extra[name] = (*extra.get(name, ()), arg)
    adopt_orphans()
    rounds = []
    for round_number in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="orchestrate-bench-") as tmp:
            work = Path(tmp)
            state = work / "state"
            result: dict[str, Any] = {}
            print(f"round {round_number + 1}: {len(sdists)} sdists, K={k}", flush=True)
            result["orchestrate_cold"] = run_orchestrate(sdists, backends, work, state, k, "cold")
            print(f"  orchestrate cold {result['orchestrate_cold']['makespan_s']} s", flush=True)
            shutil.rmtree(work / "cold-wh", ignore_errors=True)
            for name, src in variants.items():
                label = f"cold-{name}"
                result[f"orchestrate_cold[{name}]"] = run_orchestrate(sdists, backends, work, work / f"state-{name}", k,
                                                                      label, src, extra.get(name, ()))
                print(f"  orchestrate cold[{name}] {result[f'orchestrate_cold[{name}]']['makespan_s']} s", flush=True)
                shutil.rmtree(work / f"{label}-wh", ignore_errors=True)
                shutil.rmtree(work / f"state-{name}", ignore_errors=True)
            if not args.skip_pip:
                result["pip_wheel_serial"] = run_pip(sdists, backends, work)
                print(f"  pip wheel        {result['pip_wheel_serial']['makespan_s']} s", flush=True)
            if not args.skip_uv:
                result["uv"] = run_uv(sdists, backends, work, k)
                print(f"  uv               {result['uv']['makespan_s']} s", flush=True)
            if not args.skip_warm:
                result["orchestrate_warm"] = run_orchestrate(sdists, backends, work, state, k, "warm")
                print(f"  orchestrate warm {result['orchestrate_warm']['makespan_s']} s", flush=True)
            rounds.append(result)
    summary = _summary(rounds)
    _print(summary, len(sdists), k)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"sdists": len(sdists), "max_builds": k, "command": sys.argv,
                                       "summary": summary, "rounds": rounds}, indent=1))
    print(f"written {args.output}")


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios within each round (tools measured side by side), then their medians."""
    ratios: dict[str, list[float]] = {}

    def ratio(name: str, value: float) -> None:
        ratios.setdefault(name, []).append(round(value, 3))

    for result in rounds:
        cold = result["orchestrate_cold"]["makespan_s"]
        warm = result.get("orchestrate_warm")
        if "pip_wheel_serial" in result:
            ratio("cold/pip", cold / result["pip_wheel_serial"]["makespan_s"])
        if "uv" in result:
            ratio("cold/uv", cold / result["uv"]["makespan_s"])
            if warm:
                ratio("warm/uv", warm["makespan_s"] / result["uv"]["makespan_s"])
            ratio("cold/uv CPU", result["orchestrate_cold"]["cpu_s"] / result["uv"]["cpu_s"])
        for tool, values in result.items():
            if tool.startswith("orchestrate_cold["):
                name = tool.removeprefix("orchestrate_cold[").removesuffix("]")
                ratio(f"cold/{name} CPU", result["orchestrate_cold"]["cpu_s"] / values["cpu_s"])
                if "uv" in result:
                    ratio(f"cold[{name}]/uv CPU", values["cpu_s"] / result["uv"]["cpu_s"])
        ratio("cold/LB", result["orchestrate_cold"]["over_lower_bound"])
        ratio("cold/CPU bound", cold / result["orchestrate_cold"]["cpu_bound_s"])
        ratio("cold median overhead s", result["orchestrate_cold"]["median_overhead_s"])
        if warm:
            ratio("warm/LB", warm["over_lower_bound"])
            ratio("warm median overhead s", warm["median_overhead_s"])
    makespans: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    for result in rounds:
        for tool, values in result.items():
            makespans.setdefault(tool, []).append(values["makespan_s"])
            cpus.setdefault(tool, []).append(values["cpu_s"])
    return {"makespan_s": makespans, "cpu_s": cpus, "ratios": ratios,
            "lower_bound_s": [result["orchestrate_cold"]["lower_bound_s"] for result in rounds]}


def _print(summary: dict[str, Any], count: int, k: int) -> None:
    print(f"\n{count} sdists, K={k}")
    print("| tool | makespan s | CPU s |\n|---|---|---|")
    for tool, values in summary["makespan_s"].items():
        cpu = summary["cpu_s"][tool]
        print(f"| {tool} | {', '.join(f'{v:.1f}' for v in values)} | {', '.join(f'{v:.1f}' for v in cpu)} |")
    print(f"| lower bound (cold run's hooks) | {', '.join(f'{v:.1f}' for v in summary['lower_bound_s'])} |")
    print("\n| ratio | value |\n|---|---|")
    for name, values in summary["ratios"].items():
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in values)} |")


if __name__ == "__main__":
    main()
