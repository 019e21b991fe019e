"""The local executor: each build in a worker process of this machine, in a session of its own.

Protocol with a worker (``orchestrator.build.worker``; its docstring has the worker's side)::

    spawn   forked by the run's fork server (``forks.py``), the build machinery already
            imported; new session (the worker leads its process group), stdin and stdout piped
    stage   one JSON line on stdin: {"job": ..., "work_dir": ..., "scratch_dir": ...}; the work folder is new,
            with TMPDIR inside it, so what the build's tools leave goes with it
    admit   with the run's jobserver (``tokens.py``), the build's FIFO of tokens made in its
            scratch folder (else its work folder); the line "go", then stdin closes; the run's one reader thread
            (``readers.py``) turns each message line on stdout into PhaseStarted /
            OutcomeReported, and end of file plus the exit status (from the fork server) into Exited
    stop    SIGTERM to the tree (psutil children, recursive) and the group, SIGKILL after
            the grace period, in a thread; Exited waits for it: the whole tree is gone by
            then. kill: SIGKILL now
    close   stdin closed (a worker never admitted exits), the group killed (whatever the
            build left behind goes with it), its tokens back in the pool, the work folder
            removed off the caller's thread

Work folders live under one temporary folder per run, ``orchestrate-run-PID-*``,
removed when the run closes, however it ends; :meth:`LocalExecutor.start` first
removes those of runs whose process is gone (killed before they could clean up).

Each build also gets a *scratch* folder, under a second run folder of the same name on a tmpfs
(``/dev/shm``, where it is one), removed with its work folder: what the build's worker makes of its
own and the build never grows (its environment's view, linked from the work folder, pyproject_hooks'
control folders) and its jobserver's FIFO. A disk's file system may spend 40-350 us of kernel CPU on
each entry made in a busy temporary folder (a journal-less ext4's inode allocator skips every inode
freed in the last minutes, which a run's own builds free by the thousand), a tmpfs a few: 17 of a
no-op build's 31 entries. The build's sources, its temporary files, home and wheel stay on disk: a
real build's trees would eat the memory the admission controller accounts for.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol, TextIO

from orchestrator.build.jobserver import FIFO_NAME
from orchestrator.build.worker import ADMIT, decode_message
from orchestrator.executors import (
    EventSink,
    Exited,
    OutcomeReported,
    PhaseStarted,
    signal_name,
)
from orchestrator.executors.forks import ForkServer
from orchestrator.executors.readers import OutputReaders
from orchestrator.executors.tokens import TokenPool
from orchestrator.jobs import BuildJob, WorkerOutcome
from orchestrator.resources import TreeUsage, kill_tree, pid_alive, tree_usages

WORK_PREFIX = "orchestrate-run-"
SCRATCH_TMPFS = Path("/dev/shm")
"""Where builds' scratch folders go, if it is a tmpfs this process may write in."""

UNADMITTED_GRACE = 0.5
"""Seconds a worker never admitted gets to exit once told it is not needed: one with
nothing to do exits at once; one still preparing is killed."""


def sweep_stale_work_dirs(parent: Path) -> None:
    """Remove the work folders of runs that were killed before they could clean up."""
    for folder in parent.glob(f"{WORK_PREFIX}*"):
        pid = folder.name[len(WORK_PREFIX):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def tmpfs_folder(folder: Path = SCRATCH_TMPFS) -> Path | None:
    """``folder`` if a tmpfs is mounted there, this process may write in it and run what is in it (``noexec``, as
    containers often mount ``/dev/shm``, would fail a build that runs a script it installed into its environment);
    else ``None``."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            # "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS ... - FSTYPE SOURCE SUPER_OPTIONS": the last mount wins.
            found = {fields[4]: (line.split(" - ", 1)[1].split()[0], fields[5].split(","))
                     for line in mounts if " - " in line and len(fields := line.split()) > 5}
    except OSError:
        return None
    kind, options = found.get(str(folder), ("", []))
    usable = kind == "tmpfs" and "noexec" not in options and os.access(folder, os.W_OK | os.X_OK)
    return folder if usable else None


class WorkerProcess(Protocol):
    """What :class:`LocalWorker` uses of its process: a worker the fork server forked (``forks.ForkedWorker``)."""

    @property
    def pid(self) -> int | None:
        """``None``: the process never started."""

    stdin: TextIO | None
    stdout: TextIO | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def when_exited(self, callback: Callable[[int], None]) -> None:
        """Call ``callback`` with the exit status once the process has exited and been reaped."""


class LocalExecutor:
    """Spawns :class:`LocalWorker` processes, forked by the run's fork server; one run at a time.

    ``tokens``: the run's jobserver, lending each admitted build CPU tokens; ``None``: none. ``scratch``: the
    folder the run's scratch folder goes in (``"tmpfs"``: :data:`SCRATCH_TMPFS` where it is a tmpfs; ``None``: none,
    all in the work folder).
    """

    def __init__(self, tokens: TokenPool | None = None, *, scratch: Path | Literal["tmpfs"] | None = "tmpfs") -> None:
        self._tokens = tokens
        self._scratch_parent = tmpfs_folder() if scratch == "tmpfs" else scratch
        self._sink: EventSink | None = None
        self._root: Path | None = None
        self._scratch_root: Path | None = None
        self._cleaner: ThreadPoolExecutor | None = None
        self._forks: ForkServer | None = None
        self._readers: OutputReaders | None = None

    def start(self, sink: EventSink) -> None:
        temp = Path(tempfile.gettempdir())
        sweep_stale_work_dirs(temp)
        self._sink = sink
        self._root = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=temp))
        if self._scratch_parent is not None:
            sweep_stale_work_dirs(self._scratch_parent)
            try:
                self._scratch_root = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-",
                                                           dir=self._scratch_parent))
            except OSError:
                self._scratch_root = None  # full, or gone: each build's folder holds it all, as without a tmpfs
        self._cleaner = ThreadPoolExecutor(1, thread_name_prefix="cleanup")
        self._forks = ForkServer()
        self._forks.start()  # it imports the build machinery while the run downloads and resolves
        self._readers = OutputReaders()
        self._readers.start()
        if self._tokens is not None:
            self._tokens.start()

    def spawn(self) -> LocalWorker:
        assert self._sink is not None and self._root is not None and self._cleaner is not None, "start() first"
        assert self._forks is not None and self._readers is not None
        return LocalWorker(self._forks.fork(), root=self._root, sink=self._sink, cleaner=self._cleaner,
                           readers=self._readers, tokens=self._tokens, scratch_root=self._scratch_root)

    def close(self) -> None:
        if self._tokens is not None:
            self._tokens.stop()
        if self._cleaner is not None:
            self._cleaner.shutdown(wait=True)
        if self._forks is not None:
            self._forks.close()
        if self._readers is not None:
            self._readers.stop()
        for root in (self._root, self._scratch_root):
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
        self._sink = self._root = self._scratch_root = self._cleaner = self._forks = self._readers = None


class LocalWorker:
    """A worker process as a :class:`~orchestrator.executors.WorkerHandle`."""

    def __init__(self, process: WorkerProcess, *, root: Path, sink: EventSink, cleaner: ThreadPoolExecutor,
                 readers: OutputReaders, tokens: TokenPool | None = None, scratch_root: Path | None = None) -> None:
        self._process = process
        self._tokens = tokens
        self._root = root
        self._scratch_root = scratch_root
        self._scratch: Path | None = None
        self._sink = sink
        self._cleaner = cleaner
        self._readers = readers
        self._key = ""
        self._work_dir: Path | None = None
        self._admitted = False
        self._stoppers: list[threading.Thread] = []

    def stage(self, job: BuildJob) -> None:
        self._key = job.key
        self._work_dir = Path(tempfile.mkdtemp(prefix=f"{job.key}-", dir=self._root))
        (self._work_dir / "tmp").mkdir()
        if self._scratch_root is not None:
            with contextlib.suppress(OSError):  # the tmpfs is full: all in the work folder
                self._scratch = Path(tempfile.mkdtemp(prefix=f"{job.key}-", dir=self._scratch_root))
        request = {"job": job.to_json(), "work_dir": str(self._work_dir),
                   "scratch_dir": str(self._scratch) if self._scratch is not None else None}
        self._tell(json.dumps(request) + "\n")

    def admit(self, need: int = 0) -> None:
        if self._tokens is not None and self._work_dir is not None:
            self._tokens.open(self._key, (self._scratch or self._work_dir) / FIFO_NAME)
        self._tell(ADMIT + "\n", last=True)
        self._admitted = True
        assert self._process.stdout is not None
        self._readers.add(self._process.stdout.fileno(), self._line, self._output_ended)

    def alive(self) -> bool:
        return self._process.poll() is None

    def sample(self) -> TreeUsage:
        pid = self._process.pid
        return tree_usages([pid])[pid] if pid is not None else TreeUsage(rss=0, cpu_s=0.0)

    def stop(self, grace: float) -> None:
        # Stopping waits up to the grace period: not on the caller's thread.
        if (pid := self._process.pid) is not None:
            stopper = threading.Thread(target=kill_tree, args=(pid,), kwargs={"grace": grace}, daemon=True)
            stopper.start()
            self._stoppers.append(stopper)

    def kill(self) -> None:
        if (pid := self._process.pid) is not None:
            kill_tree(pid, grace=0)

    def close(self) -> None:
        if not self._admitted:  # never admitted: it is told so, and goes (see _retire)
            self._close_stdin()
            self._cleaner.submit(self._retire)
            return
        # The worker leads its process group: whatever it left behind goes with it.
        if (pid := self._process.pid) is not None:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        if self._tokens is not None:  # whatever its tools took and never gave back
            self._tokens.close(self._key)
        with contextlib.suppress(OSError):
            assert self._process.stdout is not None
            self._process.stdout.close()  # read to its end: Exited came after it
        self._cleaner.submit(self._remove_folders)  # a build folder can take a while to remove: not in the caller's way

    def _retire(self) -> None:
        try:
            self._process.wait(timeout=UNADMITTED_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()
            self._process.wait()
        with contextlib.suppress(OSError):
            assert self._process.stdout is not None
            self._process.stdout.close()
        self._remove_folders()

    def _remove_folders(self) -> None:
        """Remove the build's work and scratch folders (its work folder's link to the scratch folder is no way in)."""
        for folder in (self._work_dir, self._scratch):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _tell(self, line: str, *, last: bool = False) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(line)
            self._process.stdin.flush()
            if last:
                self._process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died while waiting: its exit status tells the rest

    def _close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()

    def _line(self, line: str) -> None:
        """A line of its stdout (on the readers' thread)."""
        message = decode_message(line)
        if message is None:
            return
        if "phase" in message:
            self._sink(PhaseStarted(self._key, message["phase"]))
        elif "outcome" in message:
            self._sink(OutcomeReported(self._key, WorkerOutcome.from_json(message["outcome"])))

    def _output_ended(self) -> None:
        """Its stdout ended (on the readers' thread): it exits, or has; Exited once its fork server has reaped it."""
        self._process.when_exited(self._exited)

    def _exited(self, returncode: int) -> None:
        stoppers = [stopper for stopper in self._stoppers if stopper.is_alive()]
        if not stoppers:
            self._sink(Exited(self._key, returncode, signal_name(returncode)))
            return

        def after_stoppers() -> None:  # a stopped build has exited once its whole tree has
            for stopper in stoppers:
                stopper.join()
            self._sink(Exited(self._key, returncode, signal_name(returncode)))

        threading.Thread(target=after_stoppers, name=f"stopped-{self._key}", daemon=True).start()
