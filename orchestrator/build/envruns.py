"""A run's folder of prepared build environments (``envcache`` lays it out), and its removal however the run ends.

On one machine a run's folder comes from :func:`run_env_cache`, alive while the run's
process holds its lock. On a farm machine several worker processes (``dask worker
--nworkers N``, a LocalCluster) build for one run: each joins the same folder,
``ROOT/runs/run-farm-<run id>``, so that each requirement set is prepared once per machine
(``EnvCache`` locks each key and publishes atomically: concurrent preparers are safe).

Each process holds the run's lock *shared* (``flock(LOCK_SH)``); the store's dead-run sweep
(:func:`remove_dead_runs`, an exclusive non-blocking ``FileLock``) sees the run alive while
any of them lives. The last process to leave removes the folder; a process that was killed
holds nothing, so the ones left (or any process's sweep) remove it. Hand-written because
filelock's file lock is exclusive only, and its reader/writer lock keeps its state in SQLite,
which the sweep's lock cannot test (``storelocks.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from orchestrator.build import storelocks
from orchestrator.build.envcache import remove_tree

logger = logging.getLogger(__name__)

PREFIX = "run-farm-"


@contextlib.contextmanager
def run_env_cache(root: Path, *, keep: bool) -> Iterator[Path]:
    """A run's folder under ``root`` (see the module docstring), removed when the run ends.

    With ``keep`` the run's store is the shared one under ``root/envs`` and outlives the
    run; without, every env the run prepared goes with it.
    """
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    remove_dead_runs(runs)
    fd, run_dir = _new_run(runs)
    try:
        if keep:
            store = root / "envs"
            store.mkdir(exist_ok=True)
            (run_dir / "envs").symlink_to(store.resolve(), target_is_directory=True)
        else:
            (run_dir / "envs").mkdir()
        (run_dir / "resolutions").mkdir()
        yield run_dir
    finally:
        try:
            remove_tree(run_dir)
            with contextlib.suppress(FileNotFoundError):  # unlinked while held, as SharedRun.leave does
                os.unlink(f"{run_dir}.lock")
        finally:
            os.close(fd)


def _new_run(runs: Path) -> tuple[int, Path]:
    """A new run's folder under ``runs``, and the descriptor holding its lock exclusive: the lock first, so that
    a folder whose lock file is gone is a dead run's (see :func:`remove_dead_runs`)."""
    while True:
        made, name = tempfile.mkstemp(dir=runs, prefix="run-", suffix=".lock")
        os.close(made)
        fd = storelocks.hold(Path(name), shared=False)  # a sweep that unlinked it meanwhile: made again, held
        run_dir = Path(name.removesuffix(".lock"))
        try:
            run_dir.mkdir()
        except FileExistsError:  # a dead run's folder of that name, its lock gone: another name
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return fd, run_dir


def remove_dead_runs(runs: Path) -> None:
    """Remove run folders whose run is gone (killed, so it could not clean up).

    A run is alive while a process holds its lock: exclusively (a run on this machine), or
    shared (each Dask worker process of a farm run, :class:`SharedRun`); each takes its lock before it makes its
    folder. A folder whose lock file is gone is a dead run's too: a process of a stopped run still at work as its
    run removed the folder (preparing an environment in it) can make it again after the lock has gone.
    """
    for folder in runs.glob("run-*"):
        if folder.is_dir() and not folder.is_symlink() and not Path(f"{folder}.lock").exists():
            remove_tree(folder)
            logger.debug("removed %s, left without its lock by a run that ended", folder.name)
    for lock_path in runs.glob("run-*.lock"):
        lock = FileLock(lock_path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue  # a live run
        try:
            remove_tree(runs / lock_path.stem)
            logger.debug("removed %s, left by a run that ended without cleaning up", lock_path.stem)
        finally:
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()


class SharedRun:
    """This process's share of a run's folder: :func:`join` makes one, :meth:`leave` ends it."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        """The run's folder, as ``BuildJob.env_cache``."""
        self._lock_fd = lock_fd

    def leave(self) -> None:
        """Release this process's share; the last process out removes the folder (and its envs, unless kept)."""
        os.close(self._lock_fd)
        lock_path = Path(f"{self.path}.lock")
        last = FileLock(lock_path, timeout=0)
        try:
            last.acquire()
        except Timeout:
            return  # another process of the run still builds here
        try:
            remove_tree(self.path)
            # Unlinked while held: a process joining meanwhile finds its lock file gone, and makes a new one.
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
        finally:
            last.release()


def join(root: Path, run_id: str, *, keep: bool) -> SharedRun:
    """Join run ``run_id``'s folder under ``root`` (made by the first process to join), as ``run_env_cache``
    lays it out: with ``keep``, its store is ``root/envs``, which outlives the run."""
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    remove_dead_runs(runs)
    path = runs / f"{PREFIX}{run_id}"
    fd = storelocks.hold(Path(f"{path}.lock"), shared=True)
    try:
        path.mkdir(exist_ok=True)
        envs = path / "envs"
        if keep:
            store = root / "envs"
            store.mkdir(exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another process of the run made it
                envs.symlink_to(store.resolve(), target_is_directory=True)
        else:
            envs.mkdir(exist_ok=True)
        (path / "resolutions").mkdir(exist_ok=True)
    except BaseException:
        os.close(fd)
        raise
    return SharedRun(path, fd)
