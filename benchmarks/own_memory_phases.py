"""The run's own memory at each moment of a run, in-process: where a peak that grows with N is made.

    python benchmarks/own_memory_phases.py [--count 300 --count 3000] [--variant before=/path/to/checkout]
        [--json benchmarks/results/own_memory_phases.json]

``own_memory.py`` gives the peak of the real command; this says when memory grows. Each run is a
fresh interpreter (``PYTHONPATH`` the checkout; ``this``, the one this script sits in, taken last
in each turn) that imports the command's modules, lists a folder of N no-op sdists
(``collect_sources``), hands them to a real ``BuildRun`` with its history, and builds them on the
fake workers of ``tests/fake_executor.py`` (each built as it starts; no set check: the fake wheels
are not there). ``VmRSS`` is read from ``/proc/self/status`` at four moments: the imports done,
the sources listed, the first build started (every source queued), the run returned. The table
gives each moment over the imports, in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from sdists import make_sdist  # noqa: E402 - tests/, put on the path above

MOMENTS = ("imports", "listed", "first start", "end")

CHILD = """
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[3])
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
from fake_executor import FakeMachine
import orchestrator.cli  # the command's imports
from orchestrator import pipeline
from orchestrator.build.sources import collect_sources
from orchestrator.pipeline import BuildRun, BuildSettings
from orchestrator.policy.admission import Limits
read = {}
class Builder:
    def __init__(self, machine):
        self.machine, self.started = machine, 0
    def event(self, message):
        if ": started" not in message:
            return
        self.started += 1
        if self.started == 1:
            read["first start"] = rss()
        (worker,) = [w for w in self.machine.busy() if message.startswith(f"{w.key}: ")]
        worker.finish(0, built=True)
        self.machine.workers.remove(worker)
        self.machine.staged.clear()
    def update(self, state):
        pass
machine = FakeMachine()
pipeline.compiles = lambda source: False
pipeline.check_wheels = lambda *args, **kwargs: ()
work = Path(tempfile.mkdtemp(dir=sys.argv[2]))
settings = BuildSettings(wheelhouse=work / "wheelhouse", log_dir=work / "logs", history_path=work / "history.db",
                         limits=Limits(max_builds=2, memory_limit=None, min_free_memory=0, max_load=None),
                         memory_per_build=2**30, build_env_dir=work / "envs")
run = BuildRun(settings, Builder(machine), executor=machine, probe=machine)
read["imports"] = rss()
collected = collect_sources([Path(sys.argv[1])])
read["listed"] = rss()
run.run(collected.take_sources())
read["end"] = rss()
print(json.dumps(read))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, action="append", help="no-op sdists per run (default 300, 3000)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "own_memory_phases.json")
    args = parser.parse_args()
    variants = {name: str(Path(folder).resolve()) for name, _, folder in (v.partition("=") for v in args.variant)}
    variants["this"] = str(ROOT)
    counts = args.count or [300, 3000]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="orchestrate-own-memory-phases-") as tmp:
        work = Path(tmp)
        for index in range(max(counts)):
            make_sdist(work / "all", f"noop{index:05d}")
        for count in counts:
            folder = work / f"sdists-{count}"
            folder.mkdir()
            for sdist in sorted((work / "all").iterdir())[:count]:
                (folder / sdist.name).symlink_to(sdist)
            for name, src in variants.items():
                environ = {**os.environ, "PYTHONPATH": src, "PIP_CONFIG_FILE": "/dev/null"}
                out = subprocess.run([sys.executable, "-c", CHILD, str(folder), tmp, str(ROOT / "tests")],
                                     env=environ, capture_output=True, text=True, check=True, cwd=tmp).stdout
                read = json.loads(out.splitlines()[-1])
                runs.append({"variant": name, "count": count, "rss_bytes": read})
                base = read["imports"]
                print(f"{name:10} N={count:5}  imports {base / 2**20:5.1f} MB, then +"
                      + "  +".join(f"{(read[moment] - base) / 2**20:.1f} ({moment})" for moment in MOMENTS[1:]),
                      flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": sys.argv, "variants": variants, "load": os.getloadavg(),
                                     "python": sys.version.split()[0], "runs": runs}, indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
