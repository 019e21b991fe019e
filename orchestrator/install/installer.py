"""Installing wheels into a target: :class:`WheelInstaller` (one wheel, atomic), :func:`install_all` (a batch).

The algorithm of one wheel is here, in :meth:`WheelInstaller.install`; its
I/O sits behind objects of the other modules: the target's paths
(:mod:`.target`), the wheel read and planned (:mod:`.wheel`), the files
written and moved (:mod:`.rollback`), the bytecode compilers
(:mod:`.bytecode`), the crash journal (:mod:`.journal`), conflicts between
distributions (:mod:`.conflicts`) and the per-wheel timeout (:mod:`.deadline`)::

    lock the distribution's journal (a dead install's journal: undo it first)
              |
    same name already installed? --same version--> skipped
              | (no, or other version, or reinstall)
    claim its paths for this run (conflict with another distribution: failed)
              |
    open wheel, check RECORD lists every file with a hash and size
              |
    list the files it will create (installer's rules, and their bytecode) and
    the old version's files to move aside; a file of nobody in the way: failed
              |
    journal both lists, fsync; move the old version's files aside (same filesystem)
              |
    installer.install(...) from CheckedWheelFile through RollbackDestination:
      each member is decompressed once and checked against RECORD before it
      is written; .py files are queued for compiling as they are written;
      RECORD, written last, lists the .pyc files
      | ok                          | any exception (a bad hash, the timeout)
    journal "commit"              delete what was written, move the
    delete the aside copy         old files back, release the claim
    prune empty folders
              |
    remove the journal (kept if a rollback itself failed: the next run finishes it)

What ``pip install ./pkg.whl`` users expect, and what this module does:

- The same distribution (canonical name) at the same version is already
  installed: the wheel is **skipped** (status ``skipped``, reason ``already
  installed``) unless ``reinstall=True``, which replaces it like
  ``pip install --force-reinstall``.
- Another version is installed, older or newer: it is **replaced** (upgrade or
  downgrade), like pip installing a specific wheel file. Only files listed in
  the old ``RECORD`` that lie inside the target's scheme paths are removed
  (plus the ``__pycache__`` files of its ``.py`` files); an old install without
  a ``RECORD`` is an error, as in pip.
- A file that exists in the target and does not belong to the old version of
  the same distribution is never overwritten: the wheel fails and is rolled
  back (pip would overwrite it silently; a rollback could not restore it).
- Dependencies are not looked at (``--no-deps``), nor are wheel tags checked
  against the target.

What runs at once: :func:`install_all` (or a command) runs at most
``max_installs`` installs at once, each in a thread of an :data:`INSTALLS` stage. Of those, one at a
time writes files (``_MAX_WRITERS``); the others meanwhile lock their journal,
check for conflicts, plan, move an old version aside or wait for their
bytecode, which one compiler process per usable CPU writes for all installs
together. Two wheels of the same distribution are serialised by a per-name
lock. Installs from other processes into the same target are coordinated only
per distribution name, by its journal's lock: a second one fails at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import Distribution
from pathlib import Path

from installer import install as installer_install
from installer.exceptions import InstallerError
from installer.sources import WheelFile
from installer.utils import get_launcher_kind
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from orchestrator.errors import InstallError, UsageError
from orchestrator.install.bytecode import Compilers
from orchestrator.install.conflicts import Claims, refuse_conflicts
from orchestrator.install.deadline import Deadline, Turn
from orchestrator.install.journal import (
    Journal,
    Recovery,
    journal_path,
    stale_journals,
    undo,
)
from orchestrator.install.results import INSTALLS, InstallResult, InstallStatus
from orchestrator.install.rollback import Aside, RollbackDestination
from orchestrator.install.target import Target
from orchestrator.install.wheel import CheckedWheelFile, created_paths, planned_paths
from orchestrator.resources import usable_cpu_count
from orchestrator.stages import run_all

__all__ = ["WheelInstaller", "install_all"]

logger = logging.getLogger(__name__)

INSTALLER_NAME = "orchestrate"
"""Written into each installed distribution's ``INSTALLER`` file."""

# Installs that read and write wheel members at once, per installer; the others
# check for conflicts, wait for their compilers or for a turn. That loop is
# Python under the GIL, released at every open/write/close: 4 threads in it
# took twice the time and CPU of one (100 wheels, 2 CPUs, tmpfs: 0.9-1.0 s
# against 0.45-0.5 s, most of the extra in the kernel), and did not help
# compiling (writing one wheel keeps the compilers fed).
_MAX_WRITERS = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class _Installed:
    """A distribution found in the target."""

    dist_info: Path
    version: str


class WheelInstaller:
    """Installs wheels into one target; :meth:`install` is thread-safe and never raises.

    With ``compile_bytecode``, the first install starts compiler processes of
    the target's interpreter; :meth:`close` (or leaving a ``with`` block)
    stops them, and so do the installer's collection and interpreter exit.
    With ``timeout``, a wheel whose install takes longer fails and is rolled
    back (see :mod:`.deadline` for what counts and what cannot be cut short).
    Before its first install, it undoes what installs killed part-way left in
    the target (:meth:`recover`).
    """

    def __init__(self, target: Target, *, compile_bytecode: bool = True, reinstall: bool = False,
                 timeout: float | None = None) -> None:
        if timeout is not None and timeout <= 0:
            raise UsageError(f"--install-timeout must be more than 0 seconds, not {timeout:g}")
        self.target = target
        self.reinstall = reinstall
        self.timeout = timeout
        self._compilers = (
            Compilers(os.fspath(target.python), max_processes=usable_cpu_count()) if compile_bytecode else None
        )
        # Longest first, so a file belongs to the most specific scheme folder holding it.
        self._roots = sorted({Path(p) for p in target.scheme.values()}, key=lambda p: len(p.parts), reverse=True)
        self._journals = Path(target.scheme["purelib"])
        self._tree_lock = threading.Lock()
        self._writers = threading.BoundedSemaphore(_MAX_WRITERS)
        self._name_locks: dict[str, threading.Lock] = {}
        self._name_locks_lock = threading.Lock()
        self._claims = Claims()
        self._recover_lock = threading.Lock()
        self._recovered = False

    def close(self) -> None:
        """Stop the compiler processes; installing later starts new ones.

        Call it when no install is running: a running one may fail.
        """
        if self._compilers is not None:
            self._compilers.close()
            self._compilers = Compilers(self._compilers.python, max_processes=self._compilers.max_processes)

    def __enter__(self) -> WheelInstaller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def recover(self) -> list[Recovery]:
        """Undo the installs into this target that died part-way, from their journals; once per installer.

        A journal that a live process holds is left alone. One that cannot be
        undone (permissions) is logged and kept; installing its distribution then fails.
        """
        with self._recover_lock:
            if self._recovered:
                return []
            self._recovered = True
            recoveries = []
            try:
                for journal in stale_journals(self._journals):
                    try:
                        recoveries.extend(self._undo(journal))
                    except InstallError as exc:
                        logger.warning("%s", exc)
                    finally:
                        journal.close()
            except OSError as exc:  # each distribution's install checks its own journal again
                logger.warning("Could not look for interrupted installs in %s: %s", self._journals, exc)
            return recoveries

    def _undo(self, journal: Journal) -> list[Recovery]:
        """Undo what ``journal`` (locked) lists; keep it if that fails part-way."""
        if journal.left_over is None:
            return []  # its install died before it wrote anything
        try:
            with self._tree_lock:
                return [undo(journal.left_over, self._roots)]
        except OSError as exc:
            journal.keep()
            raise InstallError(
                f"undoing the interrupted install of {journal.left_over.name} that {journal.path} lists failed ({exc});"
                " fix permissions and retry"
            ) from exc

    def install(self, wheel: Path) -> InstallResult:
        """Install ``wheel`` (see the module docstring for skip and replace rules)."""
        started_at = time.time()
        try:
            project, parsed_version = parse_wheel_filename(wheel.name)[:2]
        except InvalidWheelFilename as exc:
            return InstallResult(
                name=wheel.name,
                version="",
                wheel=os.fspath(wheel),
                started_at=started_at,
                finished_at=time.time(),
                status=InstallStatus.FAILED,
                error=f"Installing {wheel.name} failed: not a wheel file name ({exc}); rename or rebuild it",
            )
        name, version = canonicalize_name(project), str(parsed_version)
        status, reason, error = InstallStatus.INSTALLED, None, None
        try:
            for recovery in self.recover():
                logger.warning("%s", recovery)
            deadline = Deadline.start(self.timeout)
            with self._lock_for(name, deadline):
                status, reason = self._install(wheel, name, version, deadline)
        except Exception as exc:  # noqa: BLE001 - every failure of one wheel becomes its result
            logger.debug("Installing %s failed", wheel, exc_info=True)
            status, error = InstallStatus.FAILED, _describe(wheel, exc)
        return InstallResult(
            name=name,
            version=version,
            wheel=os.fspath(wheel),
            started_at=started_at,
            finished_at=time.time(),
            status=status,
            reason=reason,
            error=error,
        )

    @contextmanager
    def _lock_for(self, name: str, deadline: Deadline) -> Iterator[None]:
        """This installer's turn for ``name`` (other processes are kept off it by its journal's lock)."""
        with self._name_locks_lock:
            lock = self._name_locks.setdefault(name, threading.Lock())
        remaining = deadline.remaining()
        if not lock.acquire(timeout=-1 if remaining is None else remaining):
            raise deadline.error(f"waiting for another install of {name}")
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def _journal(self, name: str) -> Iterator[Journal]:
        """``name``'s journal, locked; a dead install's journal is undone first. Removed on leaving, unless kept."""
        journal = Journal.acquire(self._journals, name)
        try:
            for recovery in self._undo(journal):
                logger.warning("%s", recovery)
            yield journal
        finally:
            journal.close()

    def _install(self, wheel: Path, name: str, version: str, deadline: Deadline) -> tuple[InstallStatus, str | None]:
        # Nothing to write, so no journal: a target we may only read still says "skipped".
        if not journal_path(self._journals, name).exists() and self._skips(wheel, version, self._installed(name)):
            return InstallStatus.SKIPPED, "already installed"
        with self._journal(name) as journal:
            installed = self._installed(name)  # again, locked: another process may have installed it meanwhile
            if self._skips(wheel, version, installed):
                return InstallStatus.SKIPPED, "already installed"
            with zipfile.ZipFile(wheel) as archive:
                claimed = self._claims.claim(archive, wheel.name, name)
                try:
                    self._write(archive, installed, journal, deadline)
                except BaseException:
                    self._claims.release(claimed)
                    raise
        if any(_same_version(old.version, version) for old in installed):
            return InstallStatus.INSTALLED, "reinstalled"
        if installed:
            return InstallStatus.INSTALLED, "replaced " + ", ".join(sorted(old.version for old in installed))
        return InstallStatus.INSTALLED, None

    def _skips(self, wheel: Path, version: str, installed: Sequence[_Installed]) -> bool:
        """Whether ``wheel`` is skipped: its version is installed, and no --reinstall."""
        if self.reinstall or not any(_same_version(old.version, version) for old in installed):
            return False
        logger.info("Skipping %s: version %s is already installed", wheel.name, version)
        return True

    def _write(self, archive: zipfile.ZipFile, installed: list[_Installed], journal: Journal,
               deadline: Deadline) -> None:
        source = CheckedWheelFile(archive)
        source.validate_record(validate_contents=False)  # contents: as they are written
        scheme = dict(self.target.scheme)
        scheme["headers"] = os.path.join(scheme["headers"], source.distribution)
        aside = Aside(roots=self._roots, tree_lock=self._tree_lock)
        for old in installed:
            aside.plan(old.dist_info)
        planned = planned_paths(source, archive.namelist(), scheme, interpreter=os.fspath(self.target.python),
                                cache_tag=self.target.cache_tag if self._compilers is not None else None)
        created = created_paths(planned, aside.originals)
        journal.begin(wheel=os.path.basename(archive.filename or ""), created=created, moved=aside.moves,
                      folders=aside.folders)
        destination = RollbackDestination(
            scheme_dict=scheme,
            interpreter=os.fspath(self.target.python),
            script_kind=get_launcher_kind(),
            compilers=self._compilers,
            writing=Turn(self._writers, deadline),
            journal=journal,
            planned=set(planned),
            deadline=deadline,
        )
        try:
            aside.move()
            with destination.writing:
                installer_install(source, destination, {"INSTALLER": f"{INSTALLER_NAME}\n".encode()})
            if aside.moves:
                journal.commit()
        except BaseException:
            try:
                destination.roll_back(roots=self._roots, tree_lock=self._tree_lock)
                aside.restore()
            except BaseException:
                journal.keep()  # the next install into this target finishes the rollback
                raise
            raise
        aside.discard()

    def _installed(self, name: str) -> list[_Installed]:
        found = []
        for root in sorted({self.target.scheme["purelib"], self.target.scheme["platlib"]}):
            try:
                entries = sorted(os.listdir(root))
            except FileNotFoundError:
                continue
            for entry in entries:
                project, _, dir_version = entry.removesuffix(".dist-info").rpartition("-")
                if entry.endswith(".dist-info") and canonicalize_name(project) == name:
                    path = Path(root, entry)
                    found.append(_Installed(dist_info=path, version=Distribution.at(path).version or dir_version))
        return found


def _same_version(first: str, second: str) -> bool:
    try:
        return Version(first) == Version(second)
    except InvalidVersion:
        return first == second


def _describe(wheel: Path, exc: Exception) -> str:
    """One line: which wheel, what failed, what to do."""
    if isinstance(exc, WheelFile.validation_error):
        issues = [issue.split(", ", 1)[-1] for issue in getattr(exc, "issues", [str(exc)])]
        more = f" and {len(issues) - 1} more" if len(issues) > 1 else ""
        problem = f"its RECORD does not match its contents ({issues[0]}{more}); rebuild the wheel"
    elif isinstance(exc, (zipfile.BadZipFile, EOFError)):
        problem = f"it is not a readable zip archive ({exc}); rebuild or download it again"
    elif isinstance(exc, InstallError):
        problem = str(exc)
    elif isinstance(exc, FileExistsError):
        problem = f"{exc}; uninstall the distribution that owns it, then retry"
    elif isinstance(exc, OSError):
        problem = f"writing to the target failed ({exc}); free disk space or fix permissions, then retry"
    elif isinstance(exc, (InstallerError, ValueError, KeyError)):
        problem = f"it is not a valid wheel ({exc}); rebuild it"
    else:
        problem = f"unexpected {type(exc).__name__}: {exc}; please report this"
    return f"Installing {wheel.name} failed: {problem}".replace("\n", " ")


def install_all(
    wheels: Sequence[Path],
    wheel_installer: WheelInstaller,
    *,
    max_installs: int,
    on_result: Callable[[InstallResult], None] | None = None,
) -> list[InstallResult]:
    """Install ``wheels`` with at most ``max_installs`` at once; results in the order of ``wheels``.

    Raises :class:`InstallError`, before anything is written, if two wheels
    would write the same file. ``on_result`` is called in the calling thread as
    each wheel finishes. Interrupted, it starts no more installs and lets those
    under way finish (each is atomic), handing them to ``on_result``.
    """
    if max_installs < 1:
        raise UsageError(f"--max-installs must be at least 1, not {max_installs}")
    refuse_conflicts(wheels)
    return run_all(INSTALLS, wheel_installer.install, wheels, max_workers=max_installs, on_result=on_result)
