"""What the state folder's check (``--prune-unused-after``) costs a run's start when nothing is old.

    python benchmarks/prune_check.py [--downloads 5000] [--envs 50] [--rounds 7]
        [--json benchmarks/results/prune_check.json]

Makes a state folder in a temporary folder: ``--downloads`` download-cache entries (a 4 KiB file each, under
``sha256/<2 hex>/<64 hex>/``), ``--envs`` published prepared environments (a folder of 200 small files
each, its link and lock), 6 bytecode entries per env, a kept resolution per env and 20 learned preload lists,
every one used an hour ago. Each round times ``pruning.prune_state`` (wall and this process's CPU):
``due`` (no run checked in the last hour: every store is listed and nothing goes), ``throttled`` (a run
checked a minute ago: one ``stat``); then ``marking`` (``lastuse.mark_used`` on one fresh entry, what each
build pays per env it uses) and ``reuse`` (``EnvCache.prepare`` of a published env, which now also takes its
lock shared and marks its use; a fake installer, 200 calls a round in a process of their own, each of a new
``EnvCache`` as each build makes; ``--variant DIR`` times it by another checkout's code too, e.g. one made
with ``git archive main | tar -x -C DIR``). The table gives each case's median over the rounds and every
round; the file system's caches are warm after the first round (its ``due`` is the coldest figure here).
Nothing here reads the machine's load: on a shared machine, compare rounds, not single figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import lastuse  # noqa: E402
from orchestrator.build import envprune  # noqa: E402, F401 - imported as a build run has it: rounds time no import
from orchestrator.download import cache as download_cache  # noqa: E402, F401
from orchestrator.pruning import STAMP, Pruned, prune_state  # noqa: E402


def make_state(state: Path, *, downloads: int, envs: int) -> None:
    """The state folder described in the module docstring, every entry used an hour ago."""
    hour_ago = time.time() - 3600
    cache = state / "downloads" / "sha256"
    for number in range(downloads):
        digest = hashlib.sha256(str(number).encode()).hexdigest()
        folder = cache / digest[:2] / digest
        folder.mkdir(parents=True)
        (folder / f"dist{number}-1.0.tar.gz").write_bytes(b"x" * 4096)
        os.utime(folder, (hour_ago, hour_ago))
    store = state / "build-envs" / "envs"
    for folder in (store / "bytecode", store / "resolutions", state / "build-envs" / "preload"):
        folder.mkdir(parents=True)
    for number in range(envs):
        key = hashlib.sha256(f"env{number}".encode()).hexdigest()[:24]
        env = store / f"{key}-abcd1234"
        site = env / "lib" / "site-packages" / f"dist{number}"
        site.mkdir(parents=True)
        for module in range(200):
            (site / f"m{module}.py").write_text("X = 1\n")
        (store / key).symlink_to(env.name)
        (store / f"{key}.lock").touch()
        os.utime(store / key, (hour_ago, hour_ago), follow_symlinks=False)
        for entry in range(6):
            compiled = store / "bytecode" / f"dist{number}_{entry}-1.0-{key}"
            compiled.mkdir()
            (compiled / "m.pyc").write_bytes(b"x" * 512)
            (store / "bytecode" / f"{compiled.name}.lock").touch()
            os.utime(compiled, (hour_ago, hour_ago))
        (store / "resolutions" / f"{key}.txt").write_text(f"dist{number}==1.0\n")
        (store / "resolutions" / f"{key}.lock").touch()
    for number in range(20):
        (state / "build-envs" / "preload" / f"{number:024x}.json").write_text('{"modules": ["json"]}')


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """The wall and CPU seconds of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


REUSE = """
import io, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from orchestrator.build.envcache import EnvCache
from orchestrator.settings import IndexSettings

class Installer:
    name, seed_pip = "fake", False
    def resolve(self, requirements): return list(requirements)
    def install(self, venv, python, pins): pass

run = Path(sys.argv[2])
(run / "envs").mkdir(parents=True, exist_ok=True)
(run / "resolutions").mkdir(exist_ok=True)
EnvCache(run, Installer(), index=IndexSettings(), log=io.StringIO()).prepare(())
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(200):
    EnvCache(run, Installer(), index=IndexSettings(), log=io.StringIO()).prepare(())
print((time.perf_counter() - wall) / 200, (time.process_time() - cpu) / 200)
"""


def reuse(checkout: Path, run: Path) -> tuple[float, float]:
    """The wall and CPU seconds of one ``EnvCache.prepare`` of a published env, by ``checkout``'s code."""
    done = subprocess.run([sys.executable, "-c", REUSE, str(checkout), str(run)], capture_output=True, text=True,
                          check=True)
    wall, cpu = done.stdout.split()
    return float(wall), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--downloads", type=int, default=5000)
    parser.add_argument("--envs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--variant", type=Path, help="Another checkout whose EnvCache.prepare reuse is timed too.")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "prune_check.json")
    args = parser.parse_args()
    rounds: dict[str, list[tuple[float, float]]] = {"due": [], "throttled": [], "marking": [], "reuse": []}
    if args.variant:
        rounds["reuse (variant)"] = []
    with tempfile.TemporaryDirectory(prefix="prune-check-") as tmp:
        state = Path(tmp) / "state"
        made = time.perf_counter()
        make_state(state, downloads=args.downloads, envs=args.envs)
        print(f"state folder made in {time.perf_counter() - made:.1f} s: {args.downloads} downloads, "
              f"{args.envs} envs", file=sys.stderr)
        downloads = state / "downloads"
        fresh = next((state / "build-envs" / "envs").glob("*.lock")).with_suffix("")
        for _ in range(args.rounds):
            (state / STAMP).unlink(missing_ok=True)
            pruned: list[Pruned | None] = []
            rounds["due"].append(timed(lambda: pruned.append(
                prune_state(state, days=40, downloads=downloads, history=None,
                            now=time.time()))))
            assert pruned[0] is not None and pruned[0].line() is None, pruned  # checked, and nothing was old
            rounds["throttled"].append(timed(lambda: prune_state(state, days=40, downloads=downloads, history=None,
                                                                 now=time.time() + 60)))
            os.utime(fresh, follow_symlinks=False)
            rounds["marking"].append(timed(lambda: lastuse.mark_used(fresh)))
            for case, checkout in (("reuse", ROOT), ("reuse (variant)", args.variant)):
                if checkout is not None:
                    rounds[case].append(reuse(checkout, Path(tmp) / "reuse"))
    print(f"{'case':<16} {'wall ms (median)':>17} {'cpu ms (median)':>16}  every round's wall ms")
    results = {}
    for case, times in rounds.items():
        walls, cpus = [wall * 1000 for wall, _ in times], [cpu * 1000 for _, cpu in times]
        results[case] = {"wall_ms": statistics.median(walls), "cpu_ms": statistics.median(cpus),
                         "rounds_wall_ms": walls, "rounds_cpu_ms": cpus}
        print(f"{case:<16} {statistics.median(walls):>17.3f} {statistics.median(cpus):>16.3f}  "
              + " ".join(f"{wall:.3f}" for wall in walls))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "downloads": args.downloads, "envs": args.envs, "rounds": args.rounds, "cases": results,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=1) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
