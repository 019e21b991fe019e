"""What a no-op build costs in counts that do not move with the machine's load: page faults, system calls, entries made.

    python benchmarks/build_counts.py [--count 40] [--variant before=/path/to/other/checkout] [--no-strace]
        [--json benchmarks/results/build_counts.json]

CPU seconds on a shared machine move by a third between runs of the same code; the counts here do
not. For each variant (``this``, the checkout this script sits in, and each ``--variant``), N fake
no-op sdists (``tests/sdists.py``, ``-j 2``, unsandboxed: bubblewrap's own mounts would be counted)
are built twice on one state folder, and the second run is counted: the state a machine has once it
built before (history, what the hooks imported: ``build/preload.py``). Per build: the minor page
faults and CPU seconds of the run's whole waited-for tree (``os.wait4``); then, run again under
``strace -ff``, the system calls, and the file-system entries made (folders, files opened to be created,
links, FIFOs) and removed, all and those on a tmpfs (``_tmpfs``: a build's scratch folder, ``/dev/shm``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from overhead import clean_environ  # noqa: E402
from sdists import make_sdist  # noqa: E402

MADE = re.compile(r"^(mkdir|mkdirat|symlink|symlinkat|link|linkat|mknodat|mknod|openat|open|creat)\(.*\)"
                  r" = \d+(<[^>]*>)?$")
REMOVED = re.compile(r"^(unlink|unlinkat|rmdir)\(.*\) = 0$")
CALL = re.compile(r"^([a-z0-9_]+)\(")
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
DIRFD = re.compile(r"^[a-z0-9_]+\(\d+<([^>]*)>")
"""A call's first argument as ``strace -y`` shows a descriptor: its number and, in brackets, its path."""


def tmpfs_mounts() -> list[str]:
    """The mount points of this machine's tmpfs file systems (``/proc/self/mountinfo``)."""
    with open("/proc/self/mountinfo") as mounts:
        return [line.split()[4] for line in mounts if " - tmpfs " in line]


def entry_path(line: str) -> str:
    """The path of the entry a traced call makes or removes (a link's own, not its target's)."""
    names: list[str] = QUOTED.findall(line)
    if not names:
        return ""
    name = names[-1] if line.startswith("symlink") else names[0]
    if not name.startswith("/") and (dirfd := DIRFD.match(line)):
        name = f"{dirfd.group(1)}/{name}"
    return name


def on_tmpfs(path: str, mounts: list[str]) -> bool:
    return any(path == mount or path.startswith(mount.rstrip("/") + "/") for mount in mounts if mount != "/")


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Run ``cmd``; the CPU seconds and minor page faults of its whole waited-for tree."""
    with (cwd / "run.log").open("w") as log:
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed: see {cwd / 'run.log'}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "minor_faults": usage.ru_minflt}


def traced(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, int]:
    """Run ``cmd`` under ``strace -f``: its tree's system calls, entries made and removed, and of those the ones on
    a tmpfs (where each costs the kernel a few microseconds, where a disk's file system may take a hundred)."""
    traces = cwd / "traces"
    traces.mkdir()
    # A file per process: whole lines; -y: a descriptor's path, so that an entry removed by name in a folder
    # opened (shutil.rmtree's unlinkat) is placed.
    run(["strace", "-ff", "-qq", "-y", "-o", str(traces / "t"), *cmd], env, cwd)
    mounts = tmpfs_mounts()
    counts = dict.fromkeys(["syscalls", "entries_made", "entries_removed", "entries_made_tmpfs",
                            "entries_removed_tmpfs"], 0)
    for trace in traces.iterdir():
        with trace.open(errors="replace") as lines:
            for line in lines:
                if CALL.match(line):
                    counts["syscalls"] += 1
                if MADE.match(line) and ("open" not in line.split("(")[0] or "O_CREAT" in line):
                    kind = "made"
                elif REMOVED.match(line):
                    kind = "removed"
                else:
                    continue
                counts[f"entries_{kind}"] += 1
                if on_tmpfs(entry_path(line), mounts):
                    counts[f"entries_{kind}_tmpfs"] += 1
    shutil.rmtree(traces)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "build_counts.json")
    args = parser.parse_args()
    variants = {"this": ROOT, **{name: Path(folder).resolve() for name, _, folder in
                                 (spec.partition("=") for spec in args.variant)}}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="orchestrate-counts-") as tmp:
        work = Path(tmp)
        sdists = [make_sdist(work / "sdists", f"count{i:04d}") for i in range(args.count)]
        for name, src in variants.items():
            folder = work / name
            folder.mkdir()
            env = clean_environ(PYTHONPATH=str(src), ORCHESTRATE_SANDBOX="0")
            cmd = [sys.executable, "-m", "orchestrator", "build", *map(str, sdists), "-w", str(folder / "wh"),
                   "-j", "2", "--state-dir", str(folder / "state"), "--force"]
            run(cmd, env, folder)  # the first run: what the second finds
            counts: dict[str, float] = run(cmd, env, folder)
            if not args.no_strace:
                counts.update(traced(cmd, env, folder))
            per_build = {key: round(value / args.count, 4 if key == "cpu_s" else 1) for key, value in counts.items()}
            results[name] = per_build
            print(f"{name:10} " + "  ".join(f"{key} {value}" for key, value in per_build.items()), flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": sys.argv, "count": args.count, "per_build": results}, indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
