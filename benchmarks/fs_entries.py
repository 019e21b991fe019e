"""What the file system's entries of a no-op build cost the kernel: all on the disk, or the scratch ones on a tmpfs.

    python benchmarks/fs_entries.py [--builds 3000] [--rounds 2] [--disk /tmp] [--tmpfs /dev/shm]
        [--json benchmarks/results/fs_entries.json]

Each "build" makes, then removes (``shutil.rmtree``, as the run's cleaner does), the 31 entries a no-op build
made before its scratch folder (``executors/local.py``): a work folder with ``tmp``, a FIFO, ``src`` and 4 files,
an environment view (5 folders, 5 symlinks), two control folders of two files each, ``home``, ``dist`` and a wheel.
``disk``: all of them in the disk's folder; ``scratch``: the view, the control folders and the FIFO in a folder on
the tmpfs, linked from the work folder. Each round runs both in turn (a few thousand builds each), then both
interleaved build by build, which sees the same state of the file system: CPU ms a build (``process_time``: this
process's user and kernel time). On a journal-less ext4 the cost of an entry grows with the inodes freed in the
last minutes (its allocator skips them), so the rounds in turn depend on what ran before; the interleaved figure
does less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(disk: str, tmpfs: str, *, scratch: bool) -> None:
    """One no-op build's entries, made and removed."""
    work = tempfile.mkdtemp(dir=disk)
    own = tempfile.mkdtemp(dir=tmpfs) if scratch else work
    os.mkdir(f"{work}/tmp")
    os.mkfifo(f"{own}/jobserver.fifo")
    os.makedirs(f"{work}/src/p-1.0")
    for name in ("pyproject.toml", "backend.py", "fake.json", "PKG-INFO"):
        os.close(os.open(f"{work}/src/p-1.0/{name}", os.O_CREAT | os.O_WRONLY))
    env = f"{own}/env" if scratch else f"{work}/env"
    os.mkdir(env)
    if scratch:
        os.symlink(env, f"{work}/env")
    for folder in ("bin", "lib", "lib/python3", "lib/python3/site-packages"):
        os.mkdir(f"{env}/{folder}")
    for link in ("pyvenv.cfg", "bin/python", "bin/python3", "bin/python3.11", "prepared"):
        os.symlink("target", f"{env}/{link}")
    for _ in range(2):  # pyproject_hooks' control folder of each hook
        control = tempfile.mkdtemp(dir=own if scratch else f"{work}/tmp")
        for name in ("input.json", "output.json"):
            os.close(os.open(f"{control}/{name}", os.O_CREAT | os.O_WRONLY))
        shutil.rmtree(control)
    os.mkdir(f"{work}/home")
    os.mkdir(f"{work}/dist")
    os.close(os.open(f"{work}/dist/p-1.0-py3-none-any.whl", os.O_CREAT | os.O_WRONLY))
    shutil.rmtree(work)
    if scratch:
        shutil.rmtree(own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--disk", default="/tmp")
    parser.add_argument("--tmpfs", default="/dev/shm")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "fs_entries.json")
    args = parser.parse_args()
    rounds = []
    for number in range(args.rounds):
        disk, tmpfs = tempfile.mkdtemp(dir=args.disk), tempfile.mkdtemp(dir=args.tmpfs)
        spent: dict[str, float] = {}
        for scratch in (False, True):
            start = time.process_time()
            for _ in range(args.builds):
                build(disk, tmpfs, scratch=scratch)
            spent[f"{'scratch' if scratch else 'disk'} in turn"] = time.process_time() - start
        both = {False: 0.0, True: 0.0}
        for index in range(args.builds):
            for scratch in (False, True) if index % 2 else (True, False):
                start = time.process_time()
                build(disk, tmpfs, scratch=scratch)
                both[scratch] += time.process_time() - start
        spent.update({"disk interleaved": both[False], "scratch interleaved": both[True]})
        per_build = {name: round(seconds / args.builds * 1000, 3) for name, seconds in spent.items()}
        rounds.append(per_build)
        print(f"round {number + 1}: " + ", ".join(f"{name} {ms:.2f}" for name, ms in per_build.items())
              + " (CPU ms a build)", flush=True)
        os.rmdir(disk)
        os.rmdir(tmpfs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": sys.argv, "builds": args.builds, "rounds": rounds}, indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
