"""What every short command costs before it does anything: wall and CPU of `orchestrate` commands, pip's, uv's.

    python benchmarks/startup.py [--rounds 10] [--variant before=/path/to/other/checkout] [--importtime]
        [--json benchmarks/results/startup.json]

Each case is one command that ends at once or does little: ``import orchestrator.cli``, ``--help`` of the
group and of each command, ``report`` of a small history, ``build`` of one no-op sdist (``tests/sdists.py``)
whose wheel is already in the wheelhouse (nothing to do) and with ``--force`` (one trivial build), and
``install`` of one small wheel with ``--reinstall``; beside them ``pip --help``, ``pip install --help`` and
``uv --help`` of the same machine. A round runs every case once, each variant in turn, so variants are compared
side by side; the table gives the median over the rounds of the wall time and of the CPU seconds of the
command and every process it waited for (``os.wait4``), and the ratio of each variant to the first within
each round (median). Every command runs from an empty folder, offline, with ``PIP_CONFIG_FILE=/dev/null``
and no ``ORCHESTRATE_*``, ``UV_*`` or ``PIP_*`` variable of the caller.

``--variant NAME=DIR`` runs orchestrate from another checkout too (``PYTHONPATH=DIR``, same interpreter); the
default variant, ``this``, is this checkout. ``--importtime`` runs each orchestrate case once more per
variant under ``python -X importtime`` (three times, each module's least) and prints the top-level packages
that took longest to import (self time summed over their modules), to show what a command still imports.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from overhead import clean_environ  # noqa: E402
from sdists import make_sdist  # noqa: E402


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd``; its wall time and the CPU seconds of it and every process it waited for."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = code = os.waitstatus_to_exitcode(status)
    if code:
        sys.exit(f"{' '.join(cmd)} failed with status {code}:\n{errors.decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime


def prepare(work: Path) -> dict[str, list[str]]:
    """The fixtures (a no-op sdist, its wheel in a wheelhouse, a history, a target virtualenv); each case's
    arguments after ``python -m orchestrator``."""
    sdist = make_sdist(work / "sdists", "noop")
    wheelhouse, state, empty = work / "wh", work / "state", work / "no-links"
    empty.mkdir()
    offline = ["--no-index", "--find-links", str(empty), "--no-sandbox", "--compiler-cache", "off"]
    build = ["build", str(sdist), "-w", str(wheelhouse), "--state-dir", str(state), *offline]
    env = clean_environ(PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "orchestrator", *build], env=env, cwd=empty, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wheel = next(wheelhouse.glob("*.whl"))
    target = work / "target"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    return {
        "import orchestrator.cli": [],
        "--help": ["--help"],
        "build --help": ["build", "--help"],
        "install --help": ["install", "--help"],
        "report": ["report", "--state-dir", str(state)],
        "build, nothing to do": build,
        "build one, --force": [*build, "--force"],
        "install one wheel": ["install", str(wheel), "--into", str(target), "--reinstall"],
    }


def peers(uv: str | None) -> dict[str, list[str]]:
    commands = {"pip --help": [sys.executable, "-m", "pip", "--help"],
                "pip install --help": [sys.executable, "-m", "pip", "install", "--help"]}
    if uv:
        commands["uv --help"] = [uv, "--help"]
    return commands


def orchestrate_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "import orchestrator.cli"] if not args else [sys.executable, "-m", "orchestrator",
                                                                                 *args]


def top_imports(cmd: list[str], env: dict[str, str], cwd: Path, count: int, runs: int = 3) -> list[tuple[str, float]]:
    """The ``count`` top-level packages whose modules took longest to import (ms) in ``cmd``: each module's self
    time, the least of ``runs`` runs (one run's figures jump with the machine's load), summed per package."""
    least: dict[str, int] = {}
    for _ in range(runs):
        done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=cwd, capture_output=True,
                              text=True)
        for line in done.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                self_us, _, name = line.split(":", 1)[1].split("|")
                least[name.strip()] = min(least.get(name.strip(), int(self_us)), int(self_us))
    spent: collections.Counter[str] = collections.Counter()
    for name, micros in least.items():
        parts = name.split(".")
        spent[".".join(parts[:2]) if parts[0] == "orchestrator" else parts[0]] += micros
    return [(name, round(us / 1000, 1)) for name, us in spent.most_common(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    variants = {"this": ROOT, **{v.split("=", 1)[0]: Path(v.split("=", 1)[1]).resolve() for v in args.variant}}
    try:
        import uv as uv_module

        uv: str | None = str(uv_module.find_uv_bin())
    except ImportError:
        uv = None
    rows: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    imports: dict[str, dict[str, list[tuple[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="orchestrate-startup-") as tmp:
        work = Path(tmp)
        cases = prepare(work)
        cwd = work / "no-links"
        envs = {name: clean_environ(PYTHONPATH=str(src), UV_CACHE_DIR=str(work / "uv-cache"))
                for name, src in variants.items()}
        for name, args_ in cases.items():
            for variant in variants:
                measure(orchestrate_cmd(args_), envs[variant], cwd)  # unmeasured: bytecode, page cache
        for round_ in range(args.rounds):
            for case, args_ in cases.items():
                for variant in variants:
                    wall, cpu = measure(orchestrate_cmd(args_), envs[variant], cwd)
                    rows[f"{case} [{variant}]"]["wall_s"].append(round(wall, 4))
                    rows[f"{case} [{variant}]"]["cpu_s"].append(round(cpu, 4))
            for case, cmd in peers(uv).items():
                wall, cpu = measure(cmd, envs["this"], cwd)
                rows[case]["wall_s"].append(round(wall, 4))
                rows[case]["cpu_s"].append(round(cpu, 4))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        if args.importtime:
            for case, args_ in cases.items():
                imports[case] = {variant: top_imports(orchestrate_cmd(args_), envs[variant], cwd, 8)
                                 for variant in variants}
    first = next(iter(variants))
    ratios: dict[str, dict[str, float]] = {}
    for case in cases:
        for variant in list(variants)[1:]:
            ratios[f"{case} [{variant}/{first}]"] = {
                figure: round(statistics.median(
                    b / a for a, b in zip(rows[f"{case} [{first}]"][figure], rows[f"{case} [{variant}]"][figure])), 3)
                for figure in ("wall_s", "cpu_s")}
    print(f"\n{'command':52} {'wall s':>8} {'CPU s':>8}   (median of {args.rounds} rounds)")
    for label, figures in rows.items():
        print(f"{label:52} {statistics.median(figures['wall_s']):8.3f} {statistics.median(figures['cpu_s']):8.3f}")
    if ratios:
        print(f"\n{'ratio (median of the rounds)':52} {'wall':>8} {'CPU':>8}")
        for label, ratio in ratios.items():
            print(f"{label:52} {ratio['wall_s']:8.3f} {ratio['cpu_s']:8.3f}")
    for case, by_variant in imports.items():
        for variant, top in by_variant.items():
            print(f"\n-X importtime, {case} [{variant}]: " + ", ".join(f"{name} {ms}" for name, ms in top))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "rounds": args.rounds, "variants": {name: str(src) for name, src in variants.items()},
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_at_end": os.getloadavg(), "uv": uv and shutil.which(uv) and subprocess.run(
            [uv, "--version"], capture_output=True, text=True).stdout.strip(),
        "commands": {label: {figure: {"median": statistics.median(values), "rounds": values}
                             for figure, values in figures.items()} for label, figures in rows.items()},
        "ratios": ratios, "importtime_top_ms": imports,
    }, indent=1) + "\n")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
