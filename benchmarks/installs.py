"""Time the install stage against pip and uv on the same 100 generated wheels.

Each run installs every wheel into its own fresh virtualenv (stdlib ``venv``,
no pip), and every tool runs as its own process, so interpreter start-up and
imports count for all of them. Ratios compare medians. Rows with ``compile`` on write ``.pyc`` files
(pip's default, ``uv --compile-bytecode``); rows with it off do not (``pip
--no-compile``, uv's default). uv gets a fresh, empty cache for each run.

    python benchmarks/installs.py [--wheels 100] [--repeat 3] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [os.fspath(ROOT), os.fspath(ROOT / "tests")]

from wheels import write_wheel  # noqa: E402

UV = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")

# Runs in its own process, like `orchestrate install`, minus click.
_OURS = """\
import sys
from pathlib import Path
from orchestrator.install import Target, WheelInstaller, install_all
venv, max_installs, compile_bytecode, *wheels = sys.argv[1:]
target = Target.from_path(Path(venv))
installer = WheelInstaller(target, compile_bytecode=compile_bytecode == "1")
results = install_all([Path(w) for w in wheels], installer, max_installs=int(max_installs))
failed = [r.error for r in results if r.status.value != "installed"]
sys.exit("\\n".join(failed) if failed else 0)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One configuration's timings."""

    tool: str
    workers: int | None
    compile: bool
    seconds: list[float]
    median: float
    best: float
    vs_pip: float | None = None
    vs_uv: float | None = None


def generate(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` pure-Python wheels of 20 to 50 modules of 1 to 8 KB, in a few sub-packages each."""
    rng = random.Random(seed)
    wheels = []
    for index in range(count):
        name = f"bench-pkg-{index:03d}"
        module = name.replace("-", "_")
        files: dict[str, str] = {f"{module}/__init__.py": "VERSION = '1.0'\n"}
        subpackages = [f"{module}/sub{n}" for n in range(rng.randint(1, 4))]
        for sub in subpackages:
            files[f"{sub}/__init__.py"] = ""
        for n in range(rng.randint(20, 50) - len(files)):
            body = "".join(
                f"def function_{n}_{k}(x, y={k}):\n    return [x * y + i for i in range({k})]\n\n"
                for k in range(rng.randint(1, 8) * 12)
            )
            files[f"{rng.choice([module, *subpackages])}/mod{n}.py"] = body
        wheels.append(
            write_wheel(folder, name, files=files, console_scripts={f"{name}-cli": f"{module}:main"} if index % 10 == 0 else None)
        )
    return wheels


def fresh_venv(parent: Path) -> Path:
    path = Path(tempfile.mkdtemp(prefix="venv-", dir=parent))
    venv.create(path, with_pip=False, symlinks=True)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONPATH=os.fspath(ROOT), **extra)
    return env


def timed(command: Callable[[Path], tuple[list[str], dict[str, str]]], parent: Path, wheel_count: int) -> float:
    target = fresh_venv(parent)
    argv, env = command(target)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    installed = list((target / "lib").glob("python*/site-packages/*.dist-info"))
    if len(installed) != wheel_count:
        raise SystemExit(f"{argv[:4]} installed {len(installed)} of {wheel_count} wheels")
    shutil.rmtree(target)
    return elapsed


def commands(wheels: Sequence[Path], parent: Path) -> dict[tuple[str, int | None, bool], Callable[[Path], tuple[list[str], dict[str, str]]]]:
    paths = [os.fspath(wheel) for wheel in wheels]
    python = sys.executable

    def ours(workers: int, compile_bytecode: bool) -> Callable[[Path], tuple[list[str], dict[str, str]]]:
        return lambda venv_dir: (
            [python, "-c", _OURS, os.fspath(venv_dir), str(workers), "1" if compile_bytecode else "0", *paths],
            clean_env(),
        )

    def pip(compile_bytecode: bool) -> Callable[[Path], tuple[list[str], dict[str, str]]]:
        flags = [] if compile_bytecode else ["--no-compile"]
        return lambda venv_dir: (
            [python, "-m", "pip", "--python", os.fspath(venv_dir / "bin" / "python"), "install", "--no-deps",
             "--no-index", "-q", *flags, *paths],
            clean_env(),
        )

    def uv(compile_bytecode: bool) -> Callable[[Path], tuple[list[str], dict[str, str]]]:
        flags = ["--compile-bytecode"] if compile_bytecode else []
        return lambda venv_dir: (
            [os.fspath(UV), "pip", "install", "--no-config", "--no-deps", "--no-index", "-q", *flags,
             "--python", os.fspath(venv_dir / "bin" / "python"), *paths],
            clean_env(UV_CACHE_DIR=tempfile.mkdtemp(prefix="uv-cache-", dir=parent)),
        )

    table: dict[tuple[str, int | None, bool], Callable[[Path], tuple[list[str], dict[str, str]]]] = {}
    for compile_bytecode in (True, False):
        table[("pip", None, compile_bytecode)] = pip(compile_bytecode)
        if UV:
            table[("uv", None, compile_bytecode)] = uv(compile_bytecode)
        for workers in (1, 2, 4):
            table[("orchestrate", workers, compile_bytecode)] = ours(workers, compile_bytecode)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="where wheels and venvs go (default: the temp folder)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "installs.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-installs-", dir=args.workdir) as tmp:
        parent = Path(tmp)
        (parent / "wheels").mkdir()
        wheels = generate(parent / "wheels", args.wheels)
        wheel_bytes = sum(wheel.stat().st_size for wheel in wheels)
        runs = commands(wheels, parent)
        timings: dict[tuple[str, int | None, bool], list[float]] = {key: [] for key in runs}
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits every tool alike
            for key, command in runs.items():
                timings[key].append(timed(command, parent, len(wheels)))

    medians = {key: statistics.median(seconds) for key, seconds in timings.items()}
    rows = []
    for (tool, workers, compile_bytecode), seconds in timings.items():
        median = medians[(tool, workers, compile_bytecode)]
        uv_median = medians.get(("uv", None, compile_bytecode))
        rows.append(
            Row(
                tool=tool,
                workers=workers,
                compile=compile_bytecode,
                seconds=[round(s, 3) for s in seconds],
                median=round(median, 3),
                best=round(min(seconds), 3),
                vs_pip=round(median / medians[("pip", None, compile_bytecode)], 2),
                vs_uv=round(median / uv_median, 2) if uv_median else None,
            )
        )

    print(f"{len(wheels)} wheels, {wheel_bytes / 1e6:.1f} MB, median of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'tool':<12} {'workers':>7} {'compile':>7} {'median s':>9} {'best s':>7} {'x pip':>6} {'x uv':>6}")
    for row in rows:
        workers = "-" if row.workers is None else str(row.workers)
        vs_uv = "-" if row.vs_uv is None else f"{row.vs_uv:.2f}"
        print(f"{row.tool:<12} {workers:>7} {'on' if row.compile else 'off':>7} {row.median:>9.2f} {row.best:>7.2f} {row.vs_pip:>6.2f} {vs_uv:>6}")

    versions = {"python": platform.python_version(), "pip": _version([sys.executable, "-m", "pip", "--version"])}
    if UV:
        versions["uv"] = _version([UV, "--version"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "wheels": len(wheels),
                "wheel_bytes": wheel_bytes,
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
                "versions": versions,
                "rows": [asdict(row) for row in rows],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")


def _version(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, env=clean_env(), check=True).stdout.split("\n")[0].strip()


if __name__ == "__main__":
    main()
