"""The locks of the kept stores' entries (prepared envs, shared bytecode): held shared while in use, taken
exclusive to prepare or to prune one.

A build holds its prepared env's ``<key>.lock`` shared (``flock(LOCK_SH)``) for as long as it uses the
env; a preparer holds it exclusive, and so does the pruner (``build/envprune.py``), which only *tries*
(non-blocking) and skips an entry it cannot take: an entry in use is never removed, whatever its age.
The pruner unlinks a lock file it holds once the entry is gone, so each taker checks, once its ``flock``
returned, that the file it locked is still the one at the path, and takes the new one if not.

A maker never *waits* for the lock exclusive (:func:`shared_once`): a build holding its env shared waits
for its admission, which may wait for the maker's build, so a maker blocked behind it would wait forever
(an ``flock`` cannot be upgraded from shared to exclusive in one step either). It tries without waiting,
and otherwise waits for the lock shared, which only a maker or a pruner at work holds against it, and
looks again.
Hand-written because filelock's lock is exclusive only (its reader/writer lock keeps its state in SQLite,
which a ``flock`` cannot test); the run folders' shares (``envruns.py``) are taken the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

RETRY_S = 0.05
"""How long :func:`shared_once` waits before it looks again, when the lock is held shared by others while the
entry was missing (they found it made since, in the meantime)."""


def hold(lock_path: Path, *, shared: bool) -> int:
    """A descriptor holding ``lock_path`` (made if missing, with its folder) shared or exclusive, waiting for
    whoever holds it against us; close it to release the lock."""
    fd = _take(lock_path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    if fd is None:  # pragma: no cover - a blocking flock does not return EWOULDBLOCK
        raise BlockingIOError(lock_path)
    return fd


def try_exclusive(lock_path: Path) -> int | None:
    """A descriptor holding ``lock_path`` exclusive, or ``None`` at once if another holds it (in use) or there
    is no such file (another pruner removed it)."""
    return _take(lock_path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)


def shared_once(lock_path: Path, ready: Callable[[], bool],
                make: Callable[[], None]) -> tuple[int, Literal["found", "made", "made by another"]]:
    """A descriptor holding ``lock_path`` shared once ``ready()`` says its entry exists, ``make()`` having made it
    (under the lock held exclusive) if no one else did; and whether the entry was found, made here, or made by
    another process meanwhile. Never waits for the lock exclusive (see the module docstring)."""
    missed = made = False
    while True:
        fd = hold(lock_path, shared=True)  # waits out a maker or a pruner at work
        if ready():
            return fd, "made" if made else "made by another" if missed else "found"
        os.close(fd)
        missed = True
        maker = _take(lock_path, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if maker is None:  # others hold it shared (the entry was made since), or another maker just took it
            time.sleep(RETRY_S)
            continue
        try:
            if not ready():
                make()
                made = True
        finally:
            os.close(maker)


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """``lock_path`` held exclusive for the block, waiting for whoever holds it."""
    fd = hold(lock_path, shared=False)
    try:
        yield
    finally:
        os.close(fd)


def _take(lock_path: Path, operation: int, *, create: bool = True) -> int | None:
    while True:
        try:  # read-only: flock needs no write access
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if not create:
                return None
            lock_path.parent.mkdir(parents=True, exist_ok=True)  # a store not made yet (as filelock's locks do)
            continue
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(FileNotFoundError):
            found, held = os.stat(lock_path), os.fstat(fd)
            if (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino):
                return fd
        os.close(fd)  # unlinked (or replaced) while we waited: lock the file now at the path
