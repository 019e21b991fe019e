"""The install stage: put built wheels into a target environment, one atomic wheel at a time.

This module owns three things:

- :class:`Target`: where files go, asked once of the target's own interpreter
  (its ``sysconfig`` scheme, its ``sys.executable`` for script shebangs).
- :func:`find_conflicts`: a check of a whole batch, before anything is written,
  for two wheels of the run that would write the same file.
- :class:`WheelInstaller`: installs one wheel with pypa ``installer`` through a
  destination that records every path it creates, so a failure removes them all.

One wheel, in :meth:`WheelInstaller.install`::

    same name already installed? --same version--> skipped
              | (no, or other version, or reinstall)
    claim its paths for this run (conflict with another distribution: failed)
              |
    open wheel, validate RECORD (hashes, sizes)
              |
    move the old version's files aside (same filesystem)
              |
    installer.install(...) through _RollbackDestination
      | ok                          | any exception
    delete the aside copy         delete what was written, move the
    prune empty folders           old files back, release the claim

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

Thread safety: one :class:`WheelInstaller` per target and run; its ``install``
may run in many threads at once. Two wheels of the same distribution are
serialised by a per-name lock. A wheel that would write a file another
distribution of the same installer writes fails before writing anything (the
streaming form of :func:`find_conflicts`, for wheels that arrive one by one).
Creating and pruning folders share one lock, so a rollback never removes a
folder another wheel is about to write into. Installs from other processes
into the same target are not coordinated.
"""

from __future__ import annotations

import base64
import csv
import enum
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib.metadata import Distribution
from pathlib import Path
from typing import BinaryIO

from installer import install as installer_install
from installer.destinations import SchemeDictionaryDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry
from installer.sources import WheelFile
from installer.utils import (
    Scheme,
    copyfileobj_with_hashing,
    get_launcher_kind,
    make_file_executable,
    parse_entrypoints,
)
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from orchestrator.errors import InstallError, UsageError

__all__ = [
    "Conflict",
    "InstallResult",
    "InstallStatus",
    "Target",
    "WheelInstaller",
    "find_conflicts",
    "install_all",
]

logger = logging.getLogger(__name__)

SCHEME_KEYS: tuple[str, ...] = ("purelib", "platlib", "headers", "scripts", "data")
INSTALLER_NAME = "orchestrate"

# Printed by the target interpreter; `headers` is computed as installer's own
# CLI does (sysconfig has no such path: https://bugs.python.org/issue44445).
_PROBE = """\
import json, sys, sysconfig
paths = sysconfig.get_paths()
base = sysconfig.get_config_var("base")
print(json.dumps({
    "python": sys.executable,
    "scheme": {
        "purelib": paths["purelib"],
        "platlib": paths["platlib"],
        "headers": sysconfig.get_path("include", vars={"installed_base": base}),
        "scripts": paths["scripts"],
        "data": paths["data"],
    },
}))
"""

# Run by the target interpreter: prints [source, pyc] pairs of the files that
# compiled; pip, too, installs files that do not compile.
_COMPILE = """\
import json, py_compile, sys
compiled = []
for path in sys.argv[1:]:
    try:
        compiled.append((path, py_compile.compile(path, dfile=path, doraise=True)))
    except py_compile.PyCompileError:
        pass
print(json.dumps(compiled))
"""


class InstallStatus(str, enum.Enum):
    """How one wheel's install ended."""

    INSTALLED = "installed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallResult:
    """The outcome of installing one wheel; never an exception."""

    name: str
    """Canonical distribution name (the file name if it is not a valid wheel name)."""
    version: str
    """Version from the wheel file name (empty if it is not a valid wheel name)."""
    wheel: str
    """Path of the wheel file."""
    started_at: float
    """Epoch seconds."""
    finished_at: float
    """Epoch seconds."""
    status: InstallStatus
    reason: str | None = None
    """Why a wheel was skipped, or which version an install replaced."""
    error: str | None = None
    """One line naming the wheel, what failed and what to do; only when failed."""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (``status`` as its string value)."""
        return {
            "name": self.name,
            "version": self.version,
            "wheel": self.wheel,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status.value,
            "reason": self.reason,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A Python environment to install into, as its own interpreter describes it."""

    python: Path
    """The interpreter (its ``sys.executable``); written into script shebangs."""
    scheme: Mapping[str, str]
    """Absolute folders for purelib, platlib, headers, scripts and data.

    ``headers`` is the include folder; each distribution's headers go in a
    sub-folder named after it.
    """

    @classmethod
    def from_path(cls, path: Path, *, timeout: float = 60.0) -> Target:
        """Ask the interpreter at ``path`` (a virtualenv folder or an interpreter) for its scheme."""
        python = _find_python(path)
        try:
            completed = subprocess.run(
                [os.fspath(python), "-I", "-c", _PROBE],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"Target {path} is not a usable Python: running {python} failed ({exc})") from exc
        try:
            facts = json.loads(completed.stdout)
            scheme = {key: os.path.abspath(facts["scheme"][key]) for key in SCHEME_KEYS}
            return cls(
                python=Path(facts["python"] or python).absolute(),
                scheme=scheme,
            )
        except (ValueError, KeyError, TypeError) as exc:
            stderr = completed.stderr.strip().splitlines()[-1:] or ["no output"]
            raise InstallError(
                f"Target {path} is not a usable Python: {python} exited with {completed.returncode}"
                f" ({stderr[0]}); pass a virtualenv folder or a Python interpreter"
            ) from exc


def _find_python(path: Path) -> Path:
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.is_file():
                return candidate
        raise InstallError(
            f"Target {path} is not a Python environment: no bin/python or Scripts/python.exe in it;"
            " create it with `python -m venv` or pass an interpreter"
        )
    if not path.is_file():
        raise InstallError(f"Target {path} does not exist; create the virtualenv first or pass an interpreter")
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """Two wheels of one run that would write the same file."""

    path: str
    """The file, as ``lib/...`` (purelib or platlib), ``scripts/...``, ``data/...``,
    ``headers/...``, or ``distribution NAME`` when one distribution comes twice."""
    distributions: tuple[str, str]
    wheels: tuple[str, str]

    def __str__(self) -> str:
        first, second = self.distributions
        return f"{first} ({self.wheels[0]}) and {second} ({self.wheels[1]}) both install {self.path}"


def find_conflicts(wheels: Sequence[Path]) -> list[Conflict]:
    """Every file that two wheels of ``wheels`` would both write, and every distribution given twice.

    Reads only the archives' member lists and entry points. purelib and platlib
    count as one place, as they are in virtualenvs. A wheel that cannot be read
    is left out here; installing it fails on its own.
    """
    owners: dict[str, tuple[str, str]] = {}
    conflicts: list[Conflict] = []
    for wheel in wheels:
        try:
            name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
            paths = _paths_written(wheel, name)
        except (OSError, zipfile.BadZipFile, InvalidWheelFilename, ValueError, KeyError) as exc:
            logger.debug("Not checking %s for conflicts: %s", wheel, exc)
            continue
        # The distribution itself is a path: two wheels of one name clash on it.
        for path in [f"distribution {name}", *paths]:
            owner = owners.setdefault(path, (name, wheel.name))
            if owner[1] != wheel.name:
                conflicts.append(Conflict(path=path, distributions=(owner[0], name), wheels=(owner[1], wheel.name)))
    return conflicts


def _paths_written(wheel: Path, name: str) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        members = [member for member in archive.namelist() if not member.endswith("/")]
        dist_info = {member.split("/", 1)[0] for member in members if member.split("/", 1)[0].endswith(".dist-info")}
        entry_points = [f"{info}/entry_points.txt" for info in dist_info if f"{info}/entry_points.txt" in members]
        scripts = set()
        for member in entry_points:
            text = archive.read(member).decode("utf-8")
            scripts |= {f"scripts/{script}" for script, _, _, _ in parse_entrypoints(text)}
    paths = set(scripts)
    for member in members:
        top, _, rest = member.partition("/")
        if top in dist_info:
            continue  # named after the distribution and version: unique per wheel
        if top.endswith(".data") and rest:
            scheme, _, inner = rest.partition("/")
            if scheme == "headers":
                paths.add(f"headers/{name}/{inner}")
            else:
                paths.add(f"{'lib' if scheme in ('purelib', 'platlib') else scheme}/{inner}")
        else:
            paths.add(f"lib/{member}")
    return paths


@dataclass(kw_only=True)
class _RollbackDestination(SchemeDictionaryDestination):
    """installer's destination that remembers every file it creates and never overwrites one.

    Files are created exclusively under ``tree_lock`` (with their folders), so a
    concurrent prune of empty folders cannot remove a folder between its
    creation and the first file in it.
    """

    tree_lock: threading.Lock
    compile_bytecode: bool
    written: list[Path] = field(default_factory=list)

    def write_to_fs(self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool) -> RecordEntry:
        target_path = self._path_with_destdir(scheme, path)  # installer's check against escaping the scheme
        with self.tree_lock:
            target_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = target_path.open("xb")
            except FileExistsError:
                raise FileExistsError(
                    f"{target_path} already exists and is not part of an older version of this distribution"
                ) from None
            self.written.append(target_path)
        with handle:
            digest, size = copyfileobj_with_hashing(stream, handle, self.hash_algorithm)
        if is_executable:
            make_file_executable(target_path)
        return RecordEntry(path, Hash(self.hash_algorithm, digest), size)

    def finalize_installation(
        self, scheme: Scheme, record_file_path: str, records: Iterable[tuple[Scheme, RecordEntry]]
    ) -> None:
        # Compile before RECORD is written so the .pyc files are listed in it, as pip does.
        entries = list(records)
        if self.compile_bytecode:
            entries += self._compile(entries)
        super().finalize_installation(scheme, record_file_path, entries)

    def _compile(self, entries: list[tuple[Scheme, RecordEntry]]) -> list[tuple[Scheme, RecordEntry]]:
        sources = {
            os.path.join(self.scheme_dict[scheme], entry.path): scheme
            for scheme, entry in entries
            if scheme in ("purelib", "platlib") and entry.path.endswith(".py")
        }
        if not sources:
            return []
        # The target's own interpreter writes its own bytecode, and a subprocess
        # lets installs in other threads compile in parallel (no shared GIL).
        completed = subprocess.run(
            [self.interpreter, "-I", "-S", "-c", _COMPILE, *sources],
            capture_output=True,
            text=True,
            check=True,
        )
        compiled: list[tuple[str, str]] = json.loads(completed.stdout)
        records: list[tuple[Scheme, RecordEntry]] = []
        for source, pyc in compiled:
            self.written.append(Path(pyc))
            scheme = sources[source]
            data = Path(pyc).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.new(self.hash_algorithm, data).digest())
            path = os.path.relpath(pyc, self.scheme_dict[scheme]).replace(os.sep, "/")
            records.append((scheme, RecordEntry(path, Hash(self.hash_algorithm, digest.decode().rstrip("=")), len(data))))
        return records


@dataclass(frozen=True, slots=True, kw_only=True)
class _Installed:
    """A distribution found in the target."""

    dist_info: Path
    version: str


class WheelInstaller:
    """Installs wheels into one target; :meth:`install` is thread-safe and never raises."""

    def __init__(self, target: Target, *, compile_bytecode: bool = True, reinstall: bool = False) -> None:
        self.target = target
        self.compile_bytecode = compile_bytecode
        self.reinstall = reinstall
        # Longest first, so a file belongs to the most specific scheme folder holding it.
        self._roots = sorted({Path(p) for p in target.scheme.values()}, key=lambda p: len(p.parts), reverse=True)
        self._tree_lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._name_locks_lock = threading.Lock()
        # Paths (as find_conflicts names them) -> (distribution, wheel file name) that wrote them.
        self._claims: dict[str, tuple[str, str]] = {}
        self._claims_lock = threading.Lock()

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
            with self._lock_for(name):
                status, reason = self._install(wheel, name, version)
        except Exception as exc:  # noqa: BLE001 - every failure of one wheel becomes its result
            logger.debug("Installing %s failed", wheel, exc_info=True)
            status, error = InstallStatus.FAILED, _describe(wheel, exc, self.target)
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

    def _lock_for(self, name: str) -> threading.Lock:
        with self._name_locks_lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def _install(self, wheel: Path, name: str, version: str) -> tuple[InstallStatus, str | None]:
        installed = self._installed(name)
        same = [old for old in installed if _same_version(old.version, version)]
        if same and not self.reinstall:
            logger.info("Skipping %s: %s %s is already installed", wheel.name, name, version)
            return InstallStatus.SKIPPED, "already installed"
        claimed = self._claim(wheel, name)
        try:
            self._write(wheel, installed)
        except BaseException:
            with self._claims_lock:
                for path in claimed:
                    del self._claims[path]
            raise
        if same:
            return InstallStatus.INSTALLED, "reinstalled"
        if installed:
            return InstallStatus.INSTALLED, "replaced " + ", ".join(sorted(old.version for old in installed))
        return InstallStatus.INSTALLED, None

    def _claim(self, wheel: Path, name: str) -> list[str]:
        """Reserve the wheel's paths for its distribution; the ones claimed for the first time.

        The same check as :func:`find_conflicts`, for wheels that arrive one by
        one (a build feeding installs): two distributions installed by this
        installer never write the same file.
        """
        paths = _paths_written(wheel, name)
        with self._claims_lock:
            clashes = sorted(path for path in paths if self._claims.get(path, (name, ""))[0] != name)
            if clashes:
                other, other_wheel = self._claims[clashes[0]]
                more = f" and {len(clashes) - 1} more files" if len(clashes) > 1 else ""
                raise InstallError(
                    f"{other} ({other_wheel}), being installed or installed earlier in this run, also installs {clashes[0]}{more};"
                    " drop one of the two"
                )
            claimed = [path for path in paths if path not in self._claims]
            for path in claimed:
                self._claims[path] = (name, wheel.name)
        return claimed

    def _write(self, wheel: Path, installed: list[_Installed]) -> None:
        with WheelFile.open(wheel) as source:
            source.validate_record()
            scheme = dict(self.target.scheme)
            scheme["headers"] = os.path.join(scheme["headers"], source.distribution)
            destination = _RollbackDestination(
                scheme_dict=scheme,
                interpreter=os.fspath(self.target.python),
                script_kind=get_launcher_kind(),
                tree_lock=self._tree_lock,
                compile_bytecode=self.compile_bytecode,
            )
            aside = _Aside(roots=self._roots, tree_lock=self._tree_lock)
            try:
                for old in installed:
                    aside.move_distribution(old.dist_info)
                installer_install(source, destination, {"INSTALLER": f"{INSTALLER_NAME}\n".encode()})
            except BaseException:
                # A compiler stopped before it reported may have left bytecode.
                removed = [file for path in destination.written for file in [path, *_bytecode_of(path)]]
                with self._tree_lock:
                    for path in removed:
                        path.unlink(missing_ok=True)
                    _prune_empty_folders(removed, self._roots)
                aside.restore()
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


class _Aside:
    """An installed distribution's files, moved into hidden folders beside them until discarded or restored.

    Each file goes to a folder inside the scheme folder that holds it, so the
    move is a rename on one filesystem.
    """

    def __init__(self, *, roots: Sequence[Path], tree_lock: threading.Lock) -> None:
        self._roots = roots
        self._tree_lock = tree_lock
        self._folders: dict[Path, Path] = {}
        self._moved: list[tuple[Path, Path]] = []

    def move_distribution(self, dist_info: Path) -> None:
        for path in _recorded_files(dist_info):
            root = next((root for root in self._roots if path != root and path.is_relative_to(root)), None)
            if root is None:
                logger.warning("Not removing %s of %s: it is outside the target", path, dist_info.name)
                continue
            if not os.path.lexists(path):
                continue
            if root not in self._folders:
                self._folders[root] = Path(tempfile.mkdtemp(prefix=".orchestrate-old-", dir=root))
            moved_to = self._folders[root] / path.relative_to(root)
            moved_to.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, moved_to)
            self._moved.append((path, moved_to))

    def restore(self) -> None:
        with self._tree_lock:
            for original, moved_to in reversed(self._moved):
                original.parent.mkdir(parents=True, exist_ok=True)
                os.replace(moved_to, original)
        self._remove_folders()

    def discard(self) -> None:
        with self._tree_lock:
            _prune_empty_folders([original for original, _ in self._moved], self._roots)
        self._remove_folders()

    def _remove_folders(self) -> None:
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def _recorded_files(dist_info: Path) -> list[Path]:
    """The files an installed distribution's RECORD lists, with the bytecode of its ``.py`` files."""
    try:
        text = (dist_info / "RECORD").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InstallError(
            f"{dist_info} has no RECORD, so its files are unknown; remove that distribution by hand"
        ) from None
    files = set()
    for row in csv.reader(text.splitlines()):
        if not row:
            continue
        path = Path(os.path.normpath(dist_info.parent / row[0]))
        files.add(path)
        files.update(_bytecode_of(path))
    return sorted(files)


def _bytecode_of(path: Path) -> list[Path]:
    """The ``__pycache__`` files of ``path`` for any interpreter, if it is a ``.py`` file."""
    cache = path.parent / "__pycache__"
    if path.suffix != ".py" or not cache.is_dir():
        return []
    return [cache / pyc for pyc in os.listdir(cache) if pyc.startswith(f"{path.stem}.") and pyc.endswith(".pyc")]


def _prune_empty_folders(paths: Iterable[Path], roots: Sequence[Path]) -> None:
    """Remove the folders of ``paths`` that are now empty, up to (not including) a scheme folder."""
    for folder in sorted({path.parent for path in paths}, key=lambda p: len(p.parts), reverse=True):
        while folder not in roots and any(folder.is_relative_to(root) for root in roots):
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone
                break
            folder = folder.parent


def _same_version(first: str, second: str) -> bool:
    try:
        return Version(first) == Version(second)
    except InvalidVersion:
        return first == second


def _describe(wheel: Path, exc: Exception, target: Target) -> str:
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
    elif isinstance(exc, subprocess.CalledProcessError):
        problem = f"compiling bytecode with {target.python} failed (exit {exc.returncode}); retry without compiling"
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
    each wheel finishes.
    """
    if max_installs < 1:
        raise UsageError(f"--max-installs must be at least 1, not {max_installs}")
    conflicts = find_conflicts(wheels)
    if conflicts:
        shown = "; ".join(str(conflict) for conflict in conflicts[:3])
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise InstallError(
            f"Nothing installed: wheels of this run conflict: {shown}{more}; drop one of each pair or install them separately"
        )
    results: dict[int, InstallResult] = {}
    with ThreadPoolExecutor(max_workers=max_installs, thread_name_prefix="install") as pool:
        futures = {pool.submit(wheel_installer.install, wheel): index for index, wheel in enumerate(wheels)}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if on_result is not None:
                on_result(result)
    return [results[index] for index in range(len(wheels))]
