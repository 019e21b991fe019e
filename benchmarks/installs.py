"""Time the install stage against pip and uv on the same wheels: 100 generated ones, or a wheelhouse's.

Each run installs every wheel into its own fresh virtualenv (stdlib ``venv``,
no pip), and every tool runs as its own process, so interpreter start-up and
imports count for all of them. Ratios compare medians. Rows with ``compile`` on write ``.pyc`` files
(pip's default, ``uv --compile-bytecode``, ``WheelInstaller(compile_bytecode=True)``); rows with it
off do not (``pip --no-compile``, uv's default, ``compile_bytecode=False``); the ``flags`` column
says which. uv gets a fresh, empty cache for each run.

Machine noise is large on shared virtual machines, so: every configuration
runs once unmeasured first (page cache); each repeat runs the configurations
in a new shuffled order, so drift in load does not always hit the same tool;
the table gives the median and the best run, and ``cpu s``, the median user +
system time of the tool and every process it waited for (less noisy than the
wall clock, but blind to how well a tool uses the cores). Virtualenvs are
removed only at the end: on an ext4 without a journal, creating files right
after many were deleted costs more (the inode allocator skips recently freed
inodes), which would charge one tool for the previous one's clean-up.

``--wheelhouse DIR`` installs the real wheels in DIR instead (e.g. the public corpus's, built, with
its build backends: one version of each distribution); ``--bytecode yes`` runs only the rows that
compile.

    python benchmarks/installs.py [--wheels 100 | --wheelhouse DIR] [--bytecode both|yes|no] [--repeat 3]
        [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
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
from orchestrator.install.installer import WheelInstaller, install_all
from orchestrator.install.target import Target
venv, max_installs, compile_bytecode, *wheels = sys.argv[1:]
target = Target.from_path(Path(venv))
with WheelInstaller(target, compile_bytecode=compile_bytecode == "1") as installer:
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
    flags: str
    """How the tool was told to compile or not."""
    seconds: list[float]
    median: float
    best: float
    cpu_seconds: list[float]
    """User + system time of the tool and the processes it waited for, per run."""
    cpu_median: float
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
            write_wheel(
                folder, name, files=files,
                console_scripts={f"{name}-cli": f"{module}:main"} if index % 10 == 0 else None,
            )
        )
    return wheels


FLAGS = {
    ("pip", True): "pip (compiles by default)",
    ("pip", False): "pip --no-compile",
    ("uv", True): "uv --compile-bytecode",
    ("uv", False): "uv (no bytecode by default)",
    ("orchestrate", True): "compile_bytecode=True",
    ("orchestrate", False): "compile_bytecode=False",
}


def fresh_venv(parent: Path) -> Path:
    path = Path(tempfile.mkdtemp(prefix="venv-", dir=parent))
    venv.create(path, with_pip=False, symlinks=True)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE would stop the tools caching their own imports.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "UV_", "PYTHONDONTWRITE"))}
    env.update(PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONPATH=os.fspath(ROOT), **extra)
    return env


Command = Callable[[Path], tuple[list[str], dict[str, str]]]
"""A target virtualenv -> the argv and environment that install into it."""


def timed(
    command: Command, parent: Path, wheel_count: int, compile_bytecode: bool
) -> tuple[float, float]:
    """Wall and CPU seconds of one install into a new virtualenv (left in place: see the module docstring)."""
    target = fresh_venv(parent)
    argv, env = command(target)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # cwd: not the checkout, which `python -c` would put first on sys.path, ahead of PYTHONPATH.
    subprocess.run(argv, env=env, cwd=parent, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    site_packages = next((target / "lib").glob("python*/site-packages"))
    installed = list(site_packages.glob("*.dist-info"))
    if len(installed) != wheel_count:
        raise SystemExit(f"{argv[:4]} installed {len(installed)} of {wheel_count} wheels")
    if any(site_packages.glob("*/__pycache__/*.pyc")) != compile_bytecode:
        raise SystemExit(f"{argv[:4]}: bytecode {'missing' if compile_bytecode else 'written'}")
    return elapsed, cpu


def commands(
    wheels: Sequence[Path], parent: Path, bytecode: Sequence[bool]
) -> dict[tuple[str, int | None, bool], Command]:
    paths = [os.fspath(wheel) for wheel in wheels]
    python = sys.executable

    def ours(workers: int, compile_bytecode: bool) -> Command:
        return lambda venv_dir: (
            [python, "-c", _OURS, os.fspath(venv_dir), str(workers), "1" if compile_bytecode else "0", *paths],
            clean_env(),
        )

    def pip(compile_bytecode: bool) -> Command:
        flags = [] if compile_bytecode else ["--no-compile"]
        return lambda venv_dir: (
            [python, "-m", "pip", "--python", os.fspath(venv_dir / "bin" / "python"), "install", "--no-deps",
             "--no-index", "-q", *flags, *paths],
            clean_env(),
        )

    def uv(compile_bytecode: bool, uv: str) -> Command:
        flags = ["--compile-bytecode"] if compile_bytecode else []
        return lambda venv_dir: (
            [uv, "pip", "install", "--no-config", "--no-deps", "--no-index", "-q", *flags,
             "--python", os.fspath(venv_dir / "bin" / "python"), *paths],
            clean_env(UV_CACHE_DIR=tempfile.mkdtemp(prefix="uv-cache-", dir=parent)),
        )

    table: dict[tuple[str, int | None, bool], Command] = {}
    for compile_bytecode in bytecode:
        table[("pip", None, compile_bytecode)] = pip(compile_bytecode)
        if UV:
            table[("uv", None, compile_bytecode)] = uv(compile_bytecode, UV)
        for workers in (1, 2, 4):
            table[("orchestrate", workers, compile_bytecode)] = ours(workers, compile_bytecode)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=int, default=100)
    parser.add_argument("--wheelhouse", type=Path, default=None, help="install the wheels in this folder instead")
    parser.add_argument("--bytecode", choices=["both", "yes", "no"], default="both", help="which rows to run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where wheels and venvs go (default: the temp folder)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "installs.json")
    parser.add_argument("--seed", type=int, default=0, help="for the order of configurations in each repeat")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-installs-", dir=args.workdir) as tmp:
        parent = Path(tmp)
        (parent / "wheels").mkdir()
        if args.wheelhouse is not None:
            wheels = [Path(shutil.copy(wheel, parent / "wheels")) for wheel in sorted(args.wheelhouse.glob("*.whl"))]
            if not wheels:
                raise SystemExit(f"{args.wheelhouse} holds no .whl files; pass a folder of wheels")
        else:
            wheels = generate(parent / "wheels", args.wheels)
        wheel_bytes = sum(wheel.stat().st_size for wheel in wheels)
        bytecode = {"both": (True, False), "yes": (True,), "no": (False,)}[args.bytecode]
        runs = commands(wheels, parent, bytecode)
        for key, command in runs.items():  # warm-up, not measured
            timed(command, parent, len(wheels), compile_bytecode=key[2])
        timings: dict[tuple[str, int | None, bool], list[tuple[float, float]]] = {key: [] for key in runs}
        order = random.Random(args.seed)
        for _ in range(args.repeat):
            keys = list(runs)
            order.shuffle(keys)
            for key in keys:
                timings[key].append(timed(runs[key], parent, len(wheels), compile_bytecode=key[2]))

    medians = {key: statistics.median(wall for wall, _ in runs_) for key, runs_ in timings.items()}
    rows = []
    for (tool, workers, compile_bytecode), measured in timings.items():
        seconds = [wall for wall, _ in measured]
        cpu_seconds = [cpu for _, cpu in measured]
        median = medians[(tool, workers, compile_bytecode)]
        uv_median = medians.get(("uv", None, compile_bytecode))
        rows.append(
            Row(
                tool=tool,
                workers=workers,
                compile=compile_bytecode,
                flags=FLAGS[(tool, compile_bytecode)],
                seconds=[round(s, 3) for s in seconds],
                median=round(median, 3),
                best=round(min(seconds), 3),
                cpu_seconds=[round(s, 3) for s in cpu_seconds],
                cpu_median=round(statistics.median(cpu_seconds), 3),
                vs_pip=round(median / medians[("pip", None, compile_bytecode)], 2),
                vs_uv=round(median / uv_median, 2) if uv_median else None,
            )
        )

    where = args.workdir or Path(tempfile.gettempdir())
    print(f"{len(wheels)} wheels, {wheel_bytes / 1e6:.1f} MB, median of {args.repeat}, {os.cpu_count()} CPUs,"
          f" in {where}")
    print(f"{'tool':<12} {'workers':>7} {'flags':<28} {'median s':>9} {'best s':>7} {'cpu s':>6} {'x pip':>6}"
          f" {'x uv':>6}")
    for row in rows:
        cap = "-" if row.workers is None else str(row.workers)
        vs_uv = "-" if row.vs_uv is None else f"{row.vs_uv:.2f}"
        print(
            f"{row.tool:<12} {cap:>7} {row.flags:<28} {row.median:>9.2f} {row.best:>7.2f} {row.cpu_median:>6.2f}"
            f" {row.vs_pip:>6.2f} {vs_uv:>6}"
        )

    versions = {"python": platform.python_version(), "pip": _version([sys.executable, "-m", "pip", "--version"])}
    if UV:
        versions["uv"] = _version([UV, "--version"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "wheels": len(wheels),
                "wheelhouse": None if args.wheelhouse is None else os.fspath(args.wheelhouse),
                "wheel_bytes": wheel_bytes,
                "repeat": args.repeat,
                "seed": args.seed,
                "workdir": os.fspath(where),
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
    completed = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), check=True)
    return completed.stdout.split("\n")[0].strip()


if __name__ == "__main__":
    main()
