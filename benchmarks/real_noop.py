"""The cost of a trivial build through the real backends: N one-module sdists per backend, orchestrate and uv; CPU.

    python benchmarks/real_noop.py [--count 20] [--rounds 3] [--backend flit_core ...] [--warm]
        [--variant before=/path/to/other/checkout] [--skip uv] [--json benchmarks/results/real_noop.json]

``overhead.py`` measures a tool's own cost per build with a fake backend that imports almost nothing;
what a real backend's hooks import (``setuptools``, ``flit_core``, ``hatchling``, ``pdm-backend``,
``poetry-core``: each pulls in ``zipfile``, ``hashlib``, ``inspect``, ``tempfile`` and more) is part
of every real build, and of what a hook server can share between a build's hooks. Each sdist here is
a project of one empty module built by one of those backends, installed from the offline corpus folder
(``../shared/corpus/backends``, or ``--find-links``). A round runs, one after another on the same
machine state, each orchestrate variant cold (fresh ``--state-dir``: the backends are installed once
per run into a prepared environment, then reused) and ``uv pip install --no-deps --offline`` with
``UV_CONCURRENT_BUILDS=K`` and a fresh cache (which installs each backend once per run too). Figures
as in ``overhead.py``: makespan, the CPU seconds of the whole waited-for tree, ratios within a round.
With ``--warm`` each variant then runs again on the state its cold run left (its history, what its
hooks imported: ``build/preload.py``), as a second run on a machine does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from overhead import clean_environ, measure, print_table, summarise

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {
    "setuptools": ('["setuptools"]', "setuptools.build_meta", ""),
    "flit_core": ('["flit_core>=3.4"]', "flit_core.buildapi", 'description = "one module"\n'),
    "hatchling": ('["hatchling"]', "hatchling.build", ""),
    "pdm-backend": ('["pdm-backend"]', "pdm.backend", ""),
    "poetry-core": ('["poetry-core>=2"]', "poetry.core.masonry.api", ""),
}
"""Each backend: its ``build-system.requires``, ``build-backend`` and what its ``[project]`` needs besides a name."""


def make_sdist(folder: Path, backend: str, name: str) -> Path:
    """An sdist of project ``name`` (one empty module of that name), built by ``backend``."""
    requires, api, extra = BACKENDS[backend]
    files = {
        "pyproject.toml": (f"[build-system]\nrequires = {requires}\nbuild-backend = \"{api}\"\n\n"
                           f"[project]\nname = \"{name}\"\nversion = \"1.0\"\n{extra}"),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{name}/__init__.py": '"""One module."""\n',
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-1.0/{member}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000  # zip needs 1980 or later
            archive.addfile(info, io.BytesIO(data))
    return path


def run_orchestrate(sdists: list[Path], src: Path, work: Path, links: Path, k: int, label: str, *,
                    keep_state: bool = False) -> dict[str, Any]:
    """One run; a fresh state unless the last run of ``label`` kept its own (``keep_state``: keep it again)."""
    wheelhouse, state = work / f"{label}-wh", work / f"{label}-state"
    cmd = [sys.executable, "-m", "orchestrator", "build", *map(str, sdists), "-w", str(wheelhouse), "-j", str(k),
           "--state-dir", str(state), "--no-index", "--find-links", str(links), "--force"]
    result: dict[str, Any] = measure(cmd, clean_environ(PYTHONPATH=str(src), UV_CACHE_DIR=str(state / "uv-cache")),
                                     work / f"{label}.log")
    result["built"] = len(list(wheelhouse.glob("*.whl")))
    shutil.rmtree(wheelhouse, ignore_errors=True)
    if not keep_state:
        shutil.rmtree(state, ignore_errors=True)
    return result


def run_uv(sdists: list[Path], work: Path, links: Path, k: int) -> dict[str, Any]:
    import uv

    binary = str(uv.find_uv_bin())
    env = clean_environ(UV_CACHE_DIR=str(work / "uv-cache"), UV_CONCURRENT_BUILDS=str(k))
    venv = work / "uv-venv"
    subprocess.run([binary, "venv", "--quiet", str(venv)], env=env, check=True)
    cmd = [binary, "pip", "install", "--no-deps", "--offline", "--no-index", "--find-links", str(links),
           "--python", str(venv / "bin" / "python"), *map(str, sdists)]
    result: dict[str, Any] = measure(cmd, env, work / "uv.log")
    result["built"] = len(list((venv / "lib").glob("python*/site-packages/*.dist-info")))
    shutil.rmtree(venv, ignore_errors=True)
    shutil.rmtree(work / "uv-cache", ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20, help="sdists per backend (default 20)")
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS), help="repeatable; default all five")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-builds", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also run orchestrate from the checkout DIR, named NAME")
    parser.add_argument("--skip", action="append", default=[], choices=["uv"])
    parser.add_argument("--warm", action="store_true",
                        help="each variant runs again on the state its cold run left (history, what hooks imported)")
    parser.add_argument("--find-links", type=Path, default=ROOT.parent / "shared" / "corpus" / "backends",
                        help="the folder of backend wheels (offline)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "real_noop.json")
    args = parser.parse_args()
    if not args.find_links.is_dir():
        sys.exit(f"{args.find_links}: no such folder of backend wheels; pass --find-links FOLDER")
    variants = {"this": ROOT}
    for spec in args.variant:
        name, _, folder = spec.partition("=")
        variants[name] = Path(folder).resolve()
    backends = args.backend or sorted(BACKENDS)
    output: dict[str, Any] = {
        "command": sys.argv, "max_builds": args.max_builds, "backends": backends,
        "variants": {n: str(p) for n, p in variants.items()},
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="orchestrate-real-noop-") as tmp:
        work = Path(tmp)
        sdists = [make_sdist(work / "sdists", backend, f"rb{backend.replace('-', '').replace('_', '')}{i:04d}")
                  for backend in backends for i in range(args.count)]
        rounds = []
        for number in range(args.rounds):
            print(f"{len(sdists)} sdists, round {number + 1} of {args.rounds}", flush=True)
            result: dict[str, Any] = {}
            for name, src in variants.items():
                label = f"orchestrate[{name}] cold"
                result[label] = run_orchestrate(sdists, src, work, args.find_links, args.max_builds, name,
                                                keep_state=args.warm)
                _say(label, result[label], len(sdists))
                if args.warm:
                    label = f"orchestrate[{name}] warm"
                    result[label] = run_orchestrate(sdists, src, work, args.find_links, args.max_builds, name)
                    _say(label, result[label], len(sdists))
            if "uv" not in args.skip:
                result["uv"] = run_uv(sdists, work, args.find_links, args.max_builds)
                _say("uv", result["uv"], len(sdists))
            rounds.append(result)
        summary = summarise(rounds)
        print_table(len(sdists), args.max_builds, summary)
        output.update(summary=summary, rounds=rounds)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=1) + "\n")
    print(f"written {args.json}")


def _say(label: str, values: dict[str, Any], count: int) -> None:
    print(f"    {label:30} {values['makespan_s']:8.2f} s  {values['cpu_s']:8.2f} CPU-s"
          f" ({values['cpu_s'] / count * 1000:5.1f} ms a build)  built {values['built']}", flush=True)


if __name__ == "__main__":
    main()
