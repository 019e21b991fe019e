"""A hard memory ceiling per build: cgroup v2 ``memory.max``, where the kernel hands this process a subtree.

The run probes once (:func:`for_run`): it needs a cgroup v2 hierarchy, the memory controller
available in its own cgroup, and that cgroup delegated to it (writable). The controller is
handed down to children only by a cgroup without processes of its own, so when orchestrate is
the only process of its cgroup (``systemd-run --user --scope -p Delegate=yes orchestrate ...``)
it first moves itself into a leaf, ``orchestrate``. The run then owns one cgroup,
``orchestrate-run-PID``, with the controller enabled; any step that fails gives one line,
``no memory ceiling: <reason>``, and builds run without one.

Each build with a learned need (its history, or ``memory`` in ``orchestrate.toml``) gets a
:class:`MemoryCeiling` of :func:`ceiling_for` that need. Its worker moves itself into a cgroup
of its own under the run's (:meth:`BuildCgroup.enter`) before it does anything, so every
process of the build is under ``memory.max`` (and ``memory.swap.max`` 0: the ceiling is not
a licence to swap). A build past it is killed by the kernel's OOM killer, counted in
``memory.events``; the worker reports that as the build's failure. A build never seen before
gets no ceiling: the default need is a guess for admission, not a measurement, and a ceiling
from a guess would kill the first build of every large package.

Hand-written (no library manages a delegated cgroup v2 subtree) and Linux only; the paths are
parameters, so tests point it at any cgroup v2 folder.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.units import format_size

HEADROOM = 1.5
SLACK = 512 * 1024**2
"""A ceiling is the larger of the need times :data:`HEADROOM` and the need plus :data:`SLACK`: the need is a
peak of sampled RSS (which misses short spikes), and page cache is charged to the cgroup too, so a ceiling
right at the need would kill builds that are fine; half as much again stops a runaway build long before it
takes the machine."""
RUN_PREFIX = "orchestrate-run-"
LEAF = "orchestrate"


def ceiling_for(need: int) -> int:
    """The ``memory.max`` of a build that needs ``need`` bytes."""
    return max(math.ceil(need * HEADROOM), need + SLACK)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryCeiling:
    """What a worker needs to put its build under a ceiling."""

    parent: str
    """The run's cgroup folder, where the build's own cgroup is made."""
    home: str
    """The cgroup folder the run's processes live in, where the worker goes back to at its end."""
    limit: int
    """``memory.max`` in bytes."""

    def raised_to(self, need: int) -> MemoryCeiling:
        """This ceiling for a build whose need was raised to ``need`` (a memory requeue); never lower."""
        return replace(self, limit=max(self.limit, ceiling_for(need)))


@dataclass(frozen=True, slots=True)
class RunCgroup:
    """The run's cgroup, under which each build gets its own."""

    path: Path
    home: Path

    def ceiling(self, need: int) -> MemoryCeiling:
        return MemoryCeiling(parent=str(self.path), home=str(self.home), limit=ceiling_for(need))

    def remove(self) -> None:
        """Kill what is left in the builds' cgroups (a build's daemon, without a sandbox) and remove them all."""
        if not self.path.is_dir():
            return
        for child in [path for path in self.path.iterdir() if path.is_dir()] + [self.path]:
            _remove(child)


def own_cgroup(mountinfo: Path = Path("/proc/self/mountinfo"), membership: Path = Path("/proc/self/cgroup")) -> Path:
    """The folder of this process's cgroup in the cgroup v2 hierarchy; ``OSError`` saying why there is none."""
    relative = next((line[3:].strip() for line in membership.read_text().splitlines() if line.startswith("0::")),
                    None)
    mounts = [line.split(" - ")[0].split()[4] for line in mountinfo.read_text().splitlines()
              if " - cgroup2 " in line]
    if relative is None or not mounts:
        raise OSError(errno.ENOENT, "no cgroup v2 hierarchy is mounted")
    return Path(mounts[0]) / relative.lstrip("/")


def for_run() -> tuple[RunCgroup | None, str | None]:
    """The run's cgroup, made under this process's own, or the one line saying why builds get no ceiling."""
    try:
        return prepare(own_cgroup(), pid=os.getpid()), None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return None, f"no memory ceiling: {exc.strerror or exc}{where}"


def prepare(own: Path, *, pid: int) -> RunCgroup:
    """Make the run's cgroup under ``own`` (the cgroup process ``pid`` is in) with the memory controller,
    and check that a build's cgroup there takes ``memory.max``; ``OSError`` with the reason if it cannot."""
    if "memory" not in _words(own / "cgroup.controllers"):
        raise OSError(errno.ENOTSUP, f"the memory controller is not available in {own} (cgroup v1 may hold it)")
    if not os.access(own / "cgroup.subtree_control", os.W_OK) or not os.access(own, os.W_OK):
        raise OSError(errno.EACCES, f"{own} is not delegated to this user (systemd-run --user --scope "
                                    "-p Delegate=yes orchestrate ... delegates one)")
    _sweep(own)
    home = own
    if "memory" not in _words(own / "cgroup.subtree_control"):
        try:
            _write(own / "cgroup.subtree_control", "+memory")
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # Processes in `own`: the controller goes down only if they move to a leaf, and only ours may.
            others = set(_words(own / "cgroup.procs")) - {str(pid)}
            if others:
                raise OSError(errno.EBUSY, f"{own} holds other processes, so it cannot hand the memory controller "
                                           "down; run orchestrate in a delegated cgroup of its own") from None
            home = own / LEAF
            home.mkdir(exist_ok=True)
            _write(home / "cgroup.procs", str(pid))
            _write(own / "cgroup.subtree_control", "+memory")
    run = own / f"{RUN_PREFIX}{pid}"
    run.mkdir(exist_ok=True)
    try:
        _write(run / "cgroup.subtree_control", "+memory")
        trial = run / "probe"
        trial.mkdir(exist_ok=True)
        try:
            _write(trial / "memory.max", "max")
        finally:
            trial.rmdir()
    except OSError:
        _remove(run)
        raise
    return RunCgroup(run, home)


class BuildCgroup:
    """A build's own cgroup, holding its worker and everything that starts from it."""

    def __init__(self, path: Path, ceiling: MemoryCeiling) -> None:
        self.path = path
        self.ceiling = ceiling

    @classmethod
    def enter(cls, ceiling: MemoryCeiling, name: str) -> BuildCgroup:
        """Make the cgroup ``name`` under the run's, set its ceiling, and move this process into it."""
        path = Path(ceiling.parent) / name
        path.mkdir()
        try:
            _write(path / "memory.max", str(ceiling.limit))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
            _write(path / "cgroup.procs", str(os.getpid()))
        except OSError:
            _remove(path)
            raise
        return cls(path, ceiling)

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the build for passing the ceiling."""
        with contextlib.suppress(OSError):
            for line in (self.path / "memory.events").read_text().splitlines():
                name, _, count = line.partition(" ")
                if name == "oom_kill" and int(count) > 0:
                    return True
        return False

    def reason(self) -> str:
        """The build's failure, when the kernel stopped it."""
        return (f"stopped by its memory ceiling of {format_size(self.ceiling.limit)}: "
                "raise `memory` for it in orchestrate.toml")

    def leave(self) -> None:
        """Move this process back home and remove the cgroup, once what the build left there is gone."""
        with contextlib.suppress(OSError):
            _write(Path(self.ceiling.home) / "cgroup.procs", str(os.getpid()))
        _remove(self.path)


def _remove(path: Path) -> None:
    """Remove a cgroup folder, killing what runs in it first (``cgroup.kill``, Linux 5.14), waiting a little."""
    if not path.is_dir():
        return
    with contextlib.suppress(OSError):
        if _words(path / "cgroup.procs"):
            _write(path / "cgroup.kill", "1")
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
            time.sleep(0.02)


def _sweep(own: Path) -> None:
    """Remove the run cgroups of runs that were killed before they could."""
    for path in own.glob(f"{RUN_PREFIX}*"):
        pid = path.name[len(RUN_PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            RunCgroup(path, own).remove()


def _words(path: Path) -> list[str]:
    return path.read_text().split()


def _write(path: Path, value: str) -> None:
    """Write a cgroup file in one ``write``, as the kernel reads each write as one command; an error names both."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {value!r} to {path}: {exc.strerror}") from None
