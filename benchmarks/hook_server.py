"""What a build's hook server and its two hooks cost, alone: CPU and page faults per build, checkouts side by side.

    python benchmarks/hook_server.py [--builds 40] [--rounds 3] [--variant before=/path/to/other/checkout]
        [--json benchmarks/results/hook_server.json]

``overhead.py`` counts a whole run; this counts only what ``build/hooks.py`` starts for a build: the hook
server (``build/hookserver.py``) in a fresh virtual environment's interpreter, unsandboxed, preloading the
list a fake no-op backend's hooks taught it (``tests/sdists.py``), then its two hooks
(``get_requires_for_build_wheel``, ``build_wheel``), each checked to have returned, and its end. For each
variant (``this``, the checkout this script sits in, and each ``--variant``), a child process with that
checkout first on ``sys.path`` (run from the work folder, never from a checkout) starts the server
``--builds`` times, variants taken in turn each round; the figures are the ``RUSAGE_CHILDREN`` of that
child, per build: the server and its hooks, not the child itself. Also per build: the server alone (started
and closed, no hook). Page faults do not move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from overhead import clean_environ  # noqa: E402
from sdists import sdist_files  # noqa: E402

LEARNED = ["base64", "math", "hashlib", "threading", "zipfile", "_locale", "locale", "fcntl", "_posixsubprocess",
           "select", "selectors", "subprocess", "sysconfig"]
"""What the fake backend's hooks imported (``build/preload.py`` learned it so, on 3.11)."""

CHILD = r'''
import importlib.util, json, os, resource, sys, tempfile
from pathlib import Path
from orchestrator.build.hooks import HookServer

python, source, builds, hooks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
script = importlib.util.find_spec("pyproject_hooks._in_process._in_process").origin
env = {**os.environ, "_PYPROJECT_HOOKS_BUILD_BACKEND": "_fakebackend",
       "_PYPROJECT_HOOKS_BACKEND_PATH_JSON": json.dumps([source])}
out = tempfile.mkdtemp()
calls = (("get_requires_for_build_wheel", {"config_settings": None}),
         ("build_wheel", {"wheel_directory": out, "config_settings": None, "metadata_directory": None}))
before = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(os.path.join(out, "server.log"), "w") as log:
    for _ in range(builds):
        server = HookServer.start(python, script, env=env, cwd=source, log=log, sandboxed=False,
                                  wrap=lambda cmd, environ, cwd: (list(cmd), dict(environ)), preload=PRELOAD)
        assert server is not None, "no hook server: see " + log.name
        for hook, kwargs in calls[:hooks]:
            with tempfile.TemporaryDirectory() as control:
                Path(control, "input.json").write_text(json.dumps({"kwargs": kwargs}))
                assert server.run([hook, control], cwd=source, env=env) == 0
                returned = json.loads(Path(control, "output.json").read_text())
                assert "return_val" in returned and "traceback" not in returned, returned
        server.close()
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / builds
faults = (after.ru_minflt - before.ru_minflt) / builds
print(json.dumps({"cpu_ms": round(cpu * 1000, 2), "minor_faults": round(faults)}))
'''


def measure(src: Path, python: Path, source: Path, builds: int, hooks: int) -> dict[str, float]:
    """Per build, the CPU and page faults of ``builds`` hook servers (and ``hooks`` hooks each) of checkout ``src``."""
    child = CHILD.replace("preload=PRELOAD", f"preload={tuple(LEARNED)!r}")
    env = clean_environ(PYTHONPATH=str(src))
    done = subprocess.run([sys.executable, "-c", child, str(python), str(source), str(builds), str(hooks)],
                          env=env, cwd=source.parent, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the hook servers of {src} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also measure the checkout DIR, named NAME")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "hook_server.json")
    args = parser.parse_args()
    variants = {"this": ROOT, **{name: Path(folder).resolve()
                                 for name, _, folder in (item.partition("=") for item in args.variant)}}
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="orchestrate-hook-server-") as tmp:
        work = Path(tmp)
        venv.create(work / "env", with_pip=False)  # what a prepared build environment is: nothing installed
        source = work / "noop-1.0"
        source.mkdir()
        for member, data in sdist_files("noop", "1.0").items():
            (source / member).write_bytes(data)
        python = work / "env" / "bin" / "python"
        subprocess.run([str(python), "-c", "import _fakebackend"], cwd=source, check=True,
                       env=clean_environ())  # its bytecode, as the first hook of a build writes it
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}")
            this_round: dict[str, Any] = {}
            for name, src in variants.items():
                this_round[name] = {"server_and_hooks": measure(src, python, source, args.builds, 2),
                                    "server_alone": measure(src, python, source, args.builds, 0)}
                print(f"    {name:10s} server and two hooks {this_round[name]['server_and_hooks']}, "
                      f"server alone {this_round[name]['server_alone']}")
            rounds.append(this_round)
    print("\nper build, median of rounds (each round)")
    print("| variant | server and two hooks, CPU ms | page faults | server alone, CPU ms | page faults |")
    print("|---|---|---|---|---|")
    for name in variants:
        cells = []
        for part in ("server_and_hooks", "server_alone"):
            for figure in ("cpu_ms", "minor_faults"):
                values = [one[name][part][figure] for one in rounds]
                cells.append(f"{statistics.median(values):g} ({', '.join(f'{value:g}' for value in values)})")
        print(f"| {name} | {' | '.join(cells)} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"builds": args.builds, "python": sys.version, "load": os.getloadavg(),
                                     "variants": {name: str(src) for name, src in variants.items()},
                                     "rounds": rounds}, indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
