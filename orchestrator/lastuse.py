"""When a kept entry of the state folder was last used, what removing one frees, and removing the unused files of
a folder: what the stores and their pruner (``pruning.py``) share.

An entry's last use is its modification time (a symlink's own), set again as runs use the entry, at most
once a day, so that the pruner can tell what no run used for its age at the cost of one ``stat``. Not the
access time: most file systems are mounted ``relatime`` or ``noatime``, and a read by anything (a backup, a
search) would count as a use.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

TOUCH_EVERY_S = 86400.0
"""An entry's time is moved forward at most this often: a day, far below any age the pruner is given."""


def mark_used(path: Path, *, mtime: float | None = None) -> None:
    """Note that a run used ``path`` now, unless that was noted in the last day (``mtime``: its time, when the
    caller has just read it). A store that cannot be written (a read-only mount) keeps its times."""
    now = time.time()
    with contextlib.suppress(OSError):
        if mtime is None:
            mtime = os.lstat(path).st_mtime
        if now - mtime >= TOUCH_EVERY_S:
            os.utime(path, (now, now), follow_symlinks=False)


def bytes_freed(path: str | Path) -> int:
    """The bytes of the file ``path``, or of the files under the folder ``path``, that no other name links to:
    what removing it frees (a prepared env's files hard-linked from uv's cache or the bytecode store free
    nothing)."""
    total = 0
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            return info.st_size if info.st_nlink == 1 and stat.S_ISREG(info.st_mode) else 0
    for parent, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(parent, name))
                total += info.st_size if info.st_nlink == 1 else 0
    return total


def prune_files(folder: Path, unused_since: float) -> tuple[int, int]:
    """Remove the files of ``folder`` last used before ``unused_since`` (each is replaced atomically, and a
    reader that misses one goes without it); the files removed (not counting hidden leftovers), their bytes."""
    removed = freed = 0
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for file in entries:
            with contextlib.suppress(FileNotFoundError):
                info = file.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < unused_since:
                    os.unlink(file.path)
                    removed += not file.name.startswith(".")
                    freed += info.st_size
    return removed, freed
