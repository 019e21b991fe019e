"""A wheelhouse from a lock of 31 real packages: ``orchestrate build -r`` against ``pip wheel -r``, taken in turn.

    python benchmarks/wheelhouse.py [--rounds 3] [--max-builds 2] [--quick] [--work DIR]
        [--orchestrate CMD | --skip-orchestrate] [--output PATH]

The lock, its dependencies and the index files are prepared once under ``--work`` (``_index.py``: corpus
sdists, PyPI wheels, the corpus's build backends, every file checked against PyPI's sha256) and served as a
static PEP 503 index on 127.0.0.1, on a port of its own. Each round runs both tools, pip first in odd
rounds and orchestrate first in even ones, each with an empty wheelhouse and fresh caches (a new
``PIP_CACHE_DIR``; a new ``--state-dir`` and ``UV_CACHE_DIR``)::

    pip wheel -r lock.txt -w WH --index-url URL
    orchestrate build -r lock.txt -w WH --index-url URL --max-builds K

Both resolve the dependencies (pip's default). Every tool runs with ``PIP_CONFIG_FILE=/dev/null``, without
other ``PIP_*``, ``UV_*``, ``ORCHESTRATE_*`` settings or ``PYTHONDONTWRITEBYTECODE``, and with the proxy
variables pointing at a closed local port (``NO_PROXY=127.0.0.1``): a request to any other host fails
instead of reaching the network. Measured per run: wall time, CPU seconds of the tool and every process it
waited for (``RUSAGE_CHILDREN``), exit status, and the 1-minute load average just before (other work on
the machine). Checked per run: the wheelhouse holds one wheel of every package of the closure at its
version and nothing else, and every wheel whose name is on the index has the index's bytes (built wheels
are compared by name only: builds are not reproducible byte for byte); per round: both wheelhouses hold
the same file names. The ratio is orchestrate's wall time over pip's in the same round; the summary gives
the median ratio and how far each tool's own times spread across rounds (the machine's drift).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _index import Inputs, prepare, serve  # noqa: E402
from packaging.utils import parse_wheel_filename  # noqa: E402
from packaging.version import Version  # noqa: E402

CORPUS = HERE.parent.parent / "shared" / "corpus"
CLOSED_PORT = "http://127.0.0.1:9"
"""Where the proxy variables point: the discard port, closed here, so any request not to 127.0.0.1 fails."""


def clean_environ(**extra: str) -> dict[str, str]:
    """The environment of a measured run: no local package sources, no network beyond 127.0.0.1."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_", "ORCHESTRATE_")) and key != "PYTHONDONTWRITEBYTECODE"
           and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[variable] = env[variable.lower()] = CLOSED_PORT
    env.update(extra)
    return env


def timed(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` with its output in ``log``: wall and CPU seconds, exit status, load average before."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        status = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                check=False).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "status": status, "load_1m_before": round(load, 2),
            "log": str(log)}


def run_pip(inputs: Inputs, url: str, folder: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pip", "wheel", "-r", str(inputs.lock), "-w", str(folder / "wh"),
           "--index-url", url]
    return timed(cmd, clean_environ(PIP_CACHE_DIR=str(folder / "cache")), folder / "pip.log")


def run_orchestrate(command: list[str], inputs: Inputs, url: str, folder: Path, max_builds: int) -> dict[str, Any]:
    report = folder / "report.json"
    cmd = [*command, "build", "-r", str(inputs.lock), "-w", str(folder / "wh"), "--index-url", url,
           "--max-builds", str(max_builds), "--state-dir", str(folder / "state"), "--report-json", str(report)]
    result = timed(cmd, clean_environ(UV_CACHE_DIR=str(folder / "state" / "uv-cache")), folder / "orchestrate.log")
    try:
        builds = json.loads(report.read_text())["builds"]
        result["report_statuses"] = dict(collections.Counter(str(build.get("status")) for build in builds))
    except (OSError, ValueError, KeyError, TypeError):
        result["report_statuses"] = None
    return result


def check_wheelhouse(wheelhouse: Path, inputs: Inputs) -> dict[str, Any]:
    """What a wheelhouse holds, against the closure and the index's bytes.

    Complete: one wheel of each package of the closure at its version, no other wheel, and every wheel
    whose name is on the index holds the index's bytes. Other files (a tool's lock file) are listed apart.
    """
    names = sorted(path.name for path in wheelhouse.iterdir()) if wheelhouse.is_dir() else []
    wheels = [name for name in names if name.endswith(".whl")]
    from_index = [name for name in wheels if name in inputs.sha256
                  and hashlib.sha256((wheelhouse / name).read_bytes()).hexdigest() == inputs.sha256[name]]
    other_bytes = [name for name in wheels if name in inputs.sha256 and name not in from_index]
    extra: list[str] = []
    found: set[tuple[str, str]] = set()
    for name in wheels:
        project, version = parse_wheel_filename(name)[:2]
        key = (str(project), str(version))
        if key in found or project not in inputs.closure or Version(inputs.closure[project]) != version:
            extra.append(name)
        found.add(key)
    missing = sorted(f"{project}=={version}" for project, version in inputs.closure.items()
                     if (project, str(Version(version))) not in found)
    return {"files": names, "from_index": len(from_index), "built": sorted(set(wheels) - set(inputs.sha256)),
            "index_name_other_bytes": other_bytes, "missing": missing, "extra": extra,
            "other_files": [name for name in names if not name.endswith(".whl")],
            "complete": bool(wheels) and not (other_bytes or missing or extra)}


def tool_versions(orchestrate: list[str] | None) -> dict[str, str]:
    def output(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False, env=clean_environ()).stdout.strip()
        except OSError as exc:
            return f"not run: {exc}"

    versions = {"pip": output([sys.executable, "-m", "pip", "--version"]).split(" from ")[0]}
    if orchestrate:
        versions["orchestrate"] = output([*orchestrate, "--version"])
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        versions["uv"] = output([uv, "--version"]) if uv else "not installed"
    return versions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/orchestrate-bench-wheelhouse"),
                        help="prepared inputs (kept and reused) and the runs' folders")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the corpus folder holding public/ and backends/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a lock of 8 packages (13 with dependencies)")
    parser.add_argument("--orchestrate", metavar="CMD", help="how to run orchestrate (default: the one beside "
                        "this Python, else python -m orchestrator)")
    parser.add_argument("--skip-orchestrate", action="store_true", help="time pip alone")
    parser.add_argument("--keep", action="store_true", help="keep the runs' wheelhouses and caches")
    parser.add_argument("--output", type=Path, help="default: results/wheelhouse.json (wheelhouse-quick.json "
                        "with --quick)")
    args = parser.parse_args()
    output = args.output or HERE / "results" / ("wheelhouse-quick.json" if args.quick else "wheelhouse.json")
    orchestrate = None if args.skip_orchestrate else (shlex.split(args.orchestrate) if args.orchestrate else (
        [str(Path(sys.executable).parent / "orchestrate")] if (Path(sys.executable).parent / "orchestrate").exists()
        else [sys.executable, "-m", "orchestrator"]))
    inputs = prepare(args.work.resolve(), args.corpus / "public", args.corpus / "backends", quick=args.quick)
    print(f"lock: {len(inputs.manifest['lock'])} pins, {len(inputs.closure)} packages with dependencies; index: "
          + ", ".join(f"{len(inputs.manifest[kind])} {kind}" for kind in ("wheel_only", "sdist_only", "both"))
          + f" (+ build backends), {len(inputs.sha256)} files", flush=True)
    runs_root = args.work.resolve() / "runs" / time.strftime("%Y%m%d-%H%M%S")
    rounds = []
    with serve(inputs) as index_url:
        for number in range(1, args.rounds + 1):
            order = ["pip", "orchestrate"] if number % 2 else ["orchestrate", "pip"]
            result: dict[str, Any] = {"round": number, "order": order}
            for tool in order:
                if tool == "orchestrate" and orchestrate is None:
                    continue
                folder = runs_root / f"round{number}-{tool}"
                folder.mkdir(parents=True)
                run = (run_pip(inputs, index_url, folder) if tool == "pip"
                       else run_orchestrate(orchestrate or [], inputs, index_url, folder, args.max_builds))
                run["wheelhouse"] = check_wheelhouse(folder / "wh", inputs)
                result[tool] = run
                print(f"round {number}: {tool:<11} {run['wall_s']:8.1f} s  CPU {run['cpu_s']:7.1f} s  "
                      f"exit {run['status']}  {_verdict(run['wheelhouse'])}", flush=True)
            if "orchestrate" in result:
                pip_files = set(result["pip"]["wheelhouse"]["files"])
                ours = set(result["orchestrate"]["wheelhouse"]["files"])
                result["only_pip"], result["only_orchestrate"] = sorted(pip_files - ours), sorted(ours - pip_files)
                result["same_files"] = pip_files == ours
                result["same_wheels"] = {n for n in pip_files if n.endswith(".whl")} == {
                    n for n in ours if n.endswith(".whl")}
                if result["pip"]["status"] == 0 and result["orchestrate"]["status"] == 0:
                    result["ratio"] = round(result["orchestrate"]["wall_s"] / result["pip"]["wall_s"], 3)
                # A ratio counts only between two complete wheelhouses of the same wheels.
                result["comparable"] = "ratio" in result and result["same_wheels"] and all(
                    result[tool]["wheelhouse"]["complete"] for tool in ("pip", "orchestrate"))
            rounds.append(result)
    if not args.keep:
        for folder in runs_root.iterdir():
            for name in ("wh", "cache", "state"):
                shutil.rmtree(folder / name, ignore_errors=True)
    summary = _summary(rounds)
    _print(rounds, summary, args.max_builds)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "benchmark": "wheelhouse", "command": sys.argv, "quick": args.quick, "max_builds": args.max_builds,
        "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "tools": tool_versions(orchestrate), "summary": summary, "rounds": rounds,
        "inputs": {key: inputs.manifest[key] for key in ("lock", "closure", "wheel_only", "sdist_only", "both")}
        | {"files": inputs.manifest["files"]},
    }, indent=1) + "\n")
    print(f"written {output}; logs under {runs_root}")
    return 0


def _verdict(wheelhouse: dict[str, Any]) -> str:
    problems = [f"{key.replace('_', ' ')}: {', '.join(wheelhouse[key])}"
                for key in ("missing", "extra", "index_name_other_bytes", "other_files") if wheelhouse[key]]
    if wheelhouse["complete"]:
        problems.insert(0, f"complete: {wheelhouse['from_index']} wheels from the index, "
                           f"{len(wheelhouse['built'])} built")
    return "; ".join(problems) or "empty wheelhouse"


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median ratio over comparable rounds, and each tool's spread across rounds."""
    ratios = [result["ratio"] for result in rounds if result.get("comparable")]
    summary: dict[str, Any] = {
        "ratios": ratios, "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
        "all_same_files": all(result.get("same_files", False) for result in rounds),
        "all_same_wheels": all(result.get("same_wheels", False) for result in rounds),
        "all_complete": all(result[tool]["wheelhouse"]["complete"] for result in rounds
                            for tool in ("pip", "orchestrate") if tool in result),
    }
    for tool in ("pip", "orchestrate"):
        walls = [result[tool]["wall_s"] for result in rounds if tool in result and result[tool]["status"] == 0]
        if walls:
            summary[f"{tool}_wall_s"] = walls
            summary[f"{tool}_spread"] = round(max(walls) / min(walls) - 1, 3)
    return summary


def _print(rounds: list[dict[str, Any]], summary: dict[str, Any], max_builds: int) -> None:
    print(f"\n| round | first | pip wheel s (CPU s) | orchestrate -j {max_builds} s (CPU s) | ratio | same files | "
          "load before |\n|---|---|---|---|---|---|---|")
    for result in rounds:
        def cell(tool: str) -> str:
            run = result.get(tool)
            if run is None:
                return "-"
            failed = "" if run["status"] == 0 else f" exit {run['status']}"
            return f"{run['wall_s']:.1f} ({run['cpu_s']:.1f}){failed}"

        loads = ", ".join(f"{result[tool]['load_1m_before']:.2f}" for tool in result["order"] if tool in result)
        same = "-" if "same_files" not in result else "yes" if result["same_files"] else "no"
        ratio = result.get("ratio", "-")
        if "ratio" in result and not result["comparable"]:
            ratio = f"({ratio}, not comparable)"
        print(f"| {result['round']} | {result['order'][0]} | {cell('pip')} | {cell('orchestrate')} | "
              f"{ratio} | {same} | {loads} |")
    for result in rounds:
        for tool in ("pip", "orchestrate"):
            if result.get(f"only_{tool}"):
                print(f"round {result['round']}: only {tool} wrote {', '.join(result[f'only_{tool}'])}")
    print(f"\nmedian ratio of {len(summary['ratios'])} comparable rounds: {summary['median_ratio']}; "
          "spread across rounds: "
          + ", ".join(f"{tool} {summary[f'{tool}_spread']:.1%}" for tool in ("pip", "orchestrate")
                      if f"{tool}_spread" in summary))


if __name__ == "__main__":
    raise SystemExit(main())
