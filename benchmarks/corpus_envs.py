"""The CPU of preparing the corpus's build environments, cold: what orchestrate spends before any hook runs.

    python benchmarks/corpus_envs.py --corpus ../shared/corpus/public [--rounds 3]
        [--variant before=/path/to/other/checkout]

For each sdist of the corpus, its ``build-system.requires`` (setuptools where it names none)
is prepared the way a sandboxed build prepares it (``EnvCache.prepare`` with uv, bytecode
compiled at preparation: ``PYTHONDONTWRITEBYTECODE`` is set, for which every version compiles),
one set after another in one process, on a fresh store and a fresh uv cache: each distinct set
resolved, each distinct resolution installed and compiled. A round takes every variant in turn
(``this`` is the checkout this script sits in; ``--variant NAME=DIR`` another, ``PYTHONPATH=DIR``,
run from a folder holding no checkout), each in its own process; the CPU seconds are that
process's and its children's (uv, and the compilers uv starts).
Results go to ``benchmarks/results/corpus_envs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

PREPARE = """
import io, json, resource, sys, time
from pathlib import Path
from orchestrator.build.envcache import EnvCache, SubprocessInstaller
from orchestrator.settings import IndexSettings

run_dir, backends, sets = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
(run_dir / "envs").mkdir(parents=True)
(run_dir / "resolutions").mkdir()
index = IndexSettings(no_index=True, find_links=(backends,))
with (run_dir / "log").open("w") as log:
    cache = EnvCache(run_dir, SubprocessInstaller("uv", index, log), index=index, log=log)
    start = time.perf_counter()
    for requires in sets:
        cache.prepare(requires)
    wall = time.perf_counter() - start
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall_s": wall, "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                  "envs": len([p for p in (run_dir / "envs").iterdir() if p.is_symlink()])}))
"""


def requirement_sets(sdists: list[Path]) -> list[list[str]]:
    """Each sdist's ``build-system.requires``, in the corpus's order (setuptools where there is none)."""
    sets = []
    for sdist in sdists:
        with tarfile.open(sdist) as archive:
            member = next((m for m in archive.getmembers() if m.name.count("/") == 1
                           and m.name.endswith("/pyproject.toml")), None)
            document = tomllib.load(archive.extractfile(member)) if member else {}  # type: ignore[arg-type]
        sets.append(document.get("build-system", {}).get("requires", ["setuptools>=40.8.0"]))
    return sets


def prepare(src: Path, backends: Path, sets: list[list[str]], work: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PYTHONDONTWRITEBYTECODE") and not k.startswith(("ORCHESTRATE_", "UV_"))}
    # PYTHONDONTWRITEBYTECODE: every version compiles at preparation by default then, as a sandboxed build does.
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONPATH=str(src), UV_CACHE_DIR=str(work / "uv-cache"),
               PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-c", PREPARE, str(work / "run"), str(backends), json.dumps(sets)],
                          env=env, cwd=work, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"preparing with {src} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["load_1min"] = round(os.getloadavg()[0], 2)
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder holding sdists/")
    parser.add_argument("--backends", type=Path, help="default: CORPUS/../backends")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "corpus_envs.json")
    args = parser.parse_args()
    backends = (args.backends or args.corpus.parent / "backends").resolve()
    sdists = sorted((args.corpus / "sdists").resolve().glob("*.tar.gz"))
    sets = requirement_sets(sdists)
    variants = {"this": HERE.parent.resolve()}
    variants.update({name: Path(folder).resolve() for name, _, folder in (v.partition("=") for v in args.variant)})
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        result = {}
        for name, src in variants.items():
            with tempfile.TemporaryDirectory(prefix="orchestrate-envs-") as tmp:
                result[name] = prepare(src, backends, sets, Path(tmp))
            print(f"round {number + 1}: {name} {result[name]}", flush=True)
        rounds.append(result)
        time.sleep(1)
    print(f"\n{len(sets)} requirement sets\n| variant | CPU s, each round | median | envs |\n|---|---|---|---|")
    for name in variants:
        cpus = [r[name]["cpu_s"] for r in rounds]
        print(f"| {name} | {', '.join(f'{c:.2f}' for c in cpus)} | {statistics.median(cpus):.2f} "
              f"| {rounds[0][name]['envs']} |")
    for name in list(variants)[1:]:
        ratios = [r["this"]["cpu_s"] / r[name]["cpu_s"] for r in rounds]
        print(f"this / {name} CPU: {', '.join(f'{x:.3f}' for x in ratios)}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"command": sys.argv, "sets": len(sets), "variants": {
        n: str(p) for n, p in variants.items()}, "rounds": rounds}, indent=1) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
