"""The install stage: put built wheels into a target environment, one atomic wheel at a time.

This module owns five things:

- :class:`Target`: where files go, asked once of the target's own interpreter
  (its ``sysconfig`` scheme, its ``sys.executable`` for script shebangs).
- :func:`find_conflicts`: a check of a whole batch, before anything is written,
  for two wheels of the run that would write the same file.
- :class:`WheelInstaller`: installs one wheel with pypa ``installer`` through a
  destination that records every path it creates, so a failure removes them all.
- :class:`_Compilers`: bytecode compilers, long-lived processes of the
  target's own interpreter, shared by every install thread of one installer.
- The per-wheel timeout (:class:`_Deadline`); the crash journal that lets the
  next run undo an install killed part-way is :mod:`orchestrator.install.journal`.

One wheel, in :meth:`WheelInstaller.install`::

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
    installer.install(...) from _CheckedWheelFile through _RollbackDestination:
      each member is decompressed once and checked against RECORD before it
      is written; .py files are queued for compiling as they are written;
      RECORD, written last, lists the .pyc files
      | ok                          | any exception (a bad hash, the timeout)
    journal "commit"              delete what was written, move the
    delete the aside copy         old files back, release the claim
    prune empty folders
              |
    remove the journal (kept if a rollback itself failed: the next run finishes it)

Bytecode, when asked for (``compile_bytecode=True``)::

    install threads                      feeder threads (one per usable CPU)
    write .py files; every ~32 KB:       take the next chunk
    _Chunk(paths, Future) --> queue -->  JSON line {hash, paths} --> stdin  compiler process
                                                                            (target python -I -S,
    finalize: wait for the wheel's       set the Future's result <-- stdout  writes the .pyc files)
    Futures, list the .pyc in RECORD     [source, pyc, hash, size] per file that compiled

Chunks of every wheel being installed share one queue, so all compilers stay
busy while any install has files left, and compiling overlaps writing even
with one install at a time. The target's own interpreter compiles: its magic
number and cache tag, whatever Python runs this module. The compilers start
on first use and live until :meth:`WheelInstaller.close`, the installer's
collection or interpreter exit; one that dies fails the wheel whose chunk it
had (that wheel waits for all its chunks, then rolls back) and is replaced.
This replaced one interpreter per wheel, whose start-up cost more than the
compiling, and which kept one core idle when one wheel was installed at a time.

With a timeout, a wheel's clock starts when its install does; waiting for a
turn to write, for another install of the same name or for a compiler busy
with another wheel counts. Past it, the wheel's chunks not yet started are
withdrawn, the compilers working on the others are killed (and replaced for
the next chunk), and the wheel is rolled back. Writing is checked between
files: a thread blocked in a system call (a write to a hung network
filesystem) cannot be interrupted, and its wheel fails only once the call returns.

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
may run in many threads at once, of which one at a time writes files (more
only contended for the GIL); the others wait for their compilers, check for
conflicts or wait for that turn. Two wheels of the same distribution are
serialised by a per-name lock. A wheel that would write a file another
distribution of the same installer writes fails before writing anything (the
streaming form of :func:`find_conflicts`, for wheels that arrive one by one).
Pruning empty folders and restoring moved files share one lock; a writer
whose folder was pruned between creating it and opening a file in it (it was
empty then) creates it again, so file creation takes no lock. Installs from
other processes into the same target are coordinated only per distribution
name, by its journal's lock: a second one fails at once.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import logging
import math
import os
import queue
import secrets
import shutil
import signal
import stat
import subprocess
import threading
import time
import weakref
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import Distribution
from pathlib import Path
from typing import BinaryIO

from installer import install as installer_install
from installer.destinations import SchemeDictionaryDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry, parse_record_file
from installer.scripts import Script
from installer.sources import WheelContentElement, WheelFile
from installer.utils import (
    SCHEME_NAMES,
    Scheme,
    copyfileobj_with_hashing,
    get_launcher_kind,
    make_file_executable,
    parse_entrypoints,
    parse_metadata_file,
)
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from orchestrator.errors import InstallError, UsageError
from orchestrator.install.journal import (
    Journal,
    Recovery,
    journal_path,
    prune_empty_folders,
    stale_journals,
    undo,
)
from orchestrator.resources import usable_cpu_count

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
    "cache_tag": sys.implementation.cache_tag,
    "scheme": {
        "purelib": paths["purelib"],
        "platlib": paths["platlib"],
        "headers": sysconfig.get_path("include", vars={"installed_base": base}),
        "scripts": paths["scripts"],
        "data": paths["data"],
    },
}))
"""

# Run by the target interpreter as a long-lived compiler (see _Compilers): one
# JSON request per line on stdin, one JSON answer per line on stdout. Files that
# do not compile are left out of the answer: pip, too, installs them.
#
# A .pyc is what py_compile.compile(path, dfile=path) writes in its default
# timestamp mode (PEP 552 header: magic, flags 0, source mtime and size; then
# the marshalled code), written straight into a new file instead of a temporary
# file renamed into place: the install's rollback, not the rename, keeps a
# failed wheel from leaving anything behind. The .pyc hash for RECORD is
# computed here, in parallel, from the bytes in hand. This measured 7 % less
# work than py_compile; py_compile itself still handles what this does not:
# SOURCE_DATE_EPOCH (hash-based .pyc), a .pyc that already exists, and
# interpreters older than 3.7 (another header). Keep it valid Python 3.6.
#
# Its argument is the installer's process id: once the installer is gone
# (killed), it writes no more files, so the next run, undoing the install from
# its journal, does not race a compiler finishing its chunk.
_COMPILE_SERVER = """\
import base64, hashlib, json, marshal, os, py_compile, sys, warnings
warnings.simplefilter("ignore")  # nobody reads this stderr; pip hides them too
INSTALLER = int(sys.argv[1])
DIRECT = sys.version_info >= (3, 7) and "SOURCE_DATE_EPOCH" not in os.environ
if DIRECT:
    import importlib.util
    MAGIC = importlib.util.MAGIC_NUMBER
folders = set()

def compile_file(path):
    with open(path, "rb") as file:
        source = file.read()
        status = os.fstat(file.fileno())
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except Exception:
        return None, None
    pyc = importlib.util.cache_from_source(path)
    data = b"".join([
        MAGIC, bytes(4), (int(status.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little"),
        (status.st_size & 0xFFFFFFFF).to_bytes(4, "little"), marshal.dumps(code),
    ])
    for _ in range(5):
        folder = os.path.dirname(pyc)
        if folder not in folders:
            os.makedirs(folder, exist_ok=True)
            folders.add(folder)
        try:
            handle = os.open(pyc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, (status.st_mode | 0o200) & 0o666)
            break
        except FileExistsError:
            return pyc_of(path)
        except FileNotFoundError:
            # A rollback of another wheel removed an empty, shared __pycache__.
            folders.discard(folder)
    else:
        raise FileNotFoundError(folder)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view):]
    finally:
        os.close(handle)
    return pyc, data

def pyc_of(path):
    try:
        pyc = py_compile.compile(path, dfile=path, doraise=True)
    except py_compile.PyCompileError:
        return None, None
    with open(pyc, "rb") as file:
        return pyc, file.read()

for line in sys.stdin.buffer:
    request = json.loads(line)
    compiled = []
    try:
        for path in request["paths"]:
            if os.getppid() != INSTALLER:
                sys.exit(1)
            pyc, data = compile_file(path) if DIRECT else pyc_of(path)
            if pyc is not None:
                digest = base64.urlsafe_b64encode(hashlib.new(request["hash"], data).digest()).decode().rstrip("=")
                compiled.append([path, pyc, digest, len(data)])
        answer = {"compiled": compiled}
    except Exception as exc:
        answer = {"error": "%s: %s" % (type(exc).__name__, exc)}
    sys.stdout.write(json.dumps(answer) + "\\n")
    sys.stdout.flush()
"""

# A wheel member at most this big is decompressed once, into memory, and
# checked against RECORD before it is written; a bigger one is read twice.
_IN_MEMORY_LIMIT = 16 * 1024 * 1024
# Files written per chunk; one chunk per write call to the OS.
_COPY_BUFFER = 256 * 1024
# Installs that read and write wheel members at once, per installer; the others
# check for conflicts, wait for their compilers or for a turn. That loop is
# Python under the GIL, released at every open/write/close: 4 threads in it
# took twice the time and CPU of one (100 wheels, 2 CPUs, tmpfs: 0.9-1.0 s
# against 0.45-0.5 s, most of the extra in the kernel), and did not help
# compiling (writing one wheel keeps the compilers fed).
_MAX_WRITERS = 1
# Source bytes per chunk sent to a compiler (about 10 ms of compiling): small
# enough to spread one wheel over every compiler, big enough that talking to
# the process costs little.
_CHUNK_BYTES = 32 * 1024


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
    cache_tag: str | None = None
    """The interpreter's bytecode tag (``cpython-311``): where its ``.pyc`` files go; ``None`` if unknown."""

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
                cache_tag=facts["cache_tag"],
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
        return _paths_in(archive, name)


def _paths_in(archive: zipfile.ZipFile, name: str) -> set[str]:
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


class _CheckedWheelFile(WheelFile):
    """installer's wheel source that checks each member against RECORD as it hands it over.

    ``validate_record(validate_contents=True)`` decompresses every member to
    hash it, and installing decompresses it again. Here each member is read
    once, its size and hash compared with RECORD, and the same bytes handed
    to the destination; a mismatch raises :attr:`WheelFile.validation_error`
    part-way through the install, and the rollback removes what was written.
    Call ``validate_record(validate_contents=False)`` first: it checks that
    every member is listed with a hash and a size.
    """

    def __init__(self, archive: zipfile.ZipFile) -> None:
        super().__init__(archive)
        self._archive = archive

    def get_contents(self) -> Iterator[WheelContentElement]:
        rows = {row[0]: row for row in parse_record_file(self.read_dist_info("RECORD").splitlines())}
        for item in self._archive.infolist():
            if item.filename.endswith("/"):
                continue
            row = rows.pop(item.filename, (item.filename, "", ""))
            entry = RecordEntry.from_elements(*row)
            mode = item.external_attr >> 16
            is_executable = bool(mode and stat.S_ISREG(mode) and mode & 0o111)
            if item.file_size <= _IN_MEMORY_LIMIT:
                data = self._archive.read(item)
                matches = (entry.size is None or entry.size == len(data)) and (
                    entry.hash_ is None or entry.hash_.validate(data)
                )
                self._check(item, matches)
                with io.BytesIO(data) as stream:
                    yield row, stream, is_executable
            else:
                with self._archive.open(item) as stream:
                    self._check(item, entry.validate_stream(stream))  # type: ignore[arg-type]
                with self._archive.open(item) as stream:
                    yield row, stream, is_executable  # type: ignore[misc]

    def _check(self, item: zipfile.ZipInfo, matches: bool) -> None:
        if not matches:
            # The words of installer's own validate_record.
            raise self.validation_error(
                [f"In {self._archive.filename}, hash / size of {item.filename} didn't match RECORD"]
            )


def _planned(source: WheelFile, members: Sequence[str], scheme: Mapping[str, str], *, interpreter: str,
             cache_tag: str | None) -> list[str]:
    """The files that installing ``source`` (whose archive holds ``members``) creates in ``scheme``'s folders.

    installer's rules, read off its ``install``: archive-root files go to
    purelib or platlib (``Root-Is-Purelib``), ``NAME.data/SCHEME/...`` to
    that scheme, members in ``__pycache__`` nowhere; entry points become
    scripts; the ``.dist-info`` gains INSTALLER. With ``cache_tag``, the
    ``.py`` files of purelib and platlib bring their bytecode. A file this
    misses is journaled just before it is written (:class:`_RollbackDestination`):
    a miss costs an fsync, not safety. Running installer itself through a
    destination that writes nothing cost five times as much (100 wheels,
    3,900 files: 0.18 s against 0.035 s).
    """
    wheel = parse_metadata_file(source.read_dist_info("WHEEL"))
    root = Scheme("purelib" if wheel["Root-Is-Purelib"] == "true" else "platlib")
    dist_info, data = source.dist_info_dir, f"{source.data_dir}/"
    placed: list[tuple[Scheme, str]] = [(root, f"{dist_info}/INSTALLER")]
    if f"{dist_info}/entry_points.txt" in members:
        for name, module, attr, section in parse_entrypoints(source.read_dist_info("entry_points.txt")):
            script_name, _ = Script(name, module, attr, section).generate(interpreter, get_launcher_kind())
            placed.append((Scheme("scripts"), script_name))
    for member in members:
        if member.endswith("/") or "__pycache__" in member.split("/")[:-1]:
            continue
        if not member.startswith(data):
            placed.append((root, member))
            continue
        scheme_name, _, inner = member[len(data):].partition("/")
        if scheme_name in SCHEME_NAMES and inner:  # else installer refuses the wheel
            placed.append((Scheme(scheme_name), inner))
    folders = _folders(scheme)
    paths = []
    for scheme_name, path in placed:
        target_path = _target_path(folders[scheme_name], path)
        paths.append(target_path)
        if cache_tag and _is_compiled(scheme_name, target_path):
            paths.append(_bytecode_path(target_path, cache_tag))
    return paths


def _folders(scheme_dict: Mapping[str, str]) -> dict[str, str]:
    """Each scheme's absolute folder, ending in a separator: what :func:`_target_path` takes."""
    return {name: os.path.join(os.path.abspath(folder), "") for name, folder in scheme_dict.items()}


def _target_path(folder: str, path: str) -> str:
    # installer's _path_with_destdir check (no escaping the scheme folder),
    # on strings: pathlib cost more than the writes on tmpfs.
    target_path = os.path.abspath(os.path.join(folder, path))
    if not target_path.startswith(folder):
        raise ValueError(f"Attempting to write {path} outside of the target directory")
    return target_path


def _is_compiled(scheme: Scheme, target_path: str) -> bool:
    return scheme in ("purelib", "platlib") and target_path.endswith(".py")


def _bytecode_path(source: str, cache_tag: str) -> str:
    """Where ``importlib.util.cache_from_source`` puts ``source``'s bytecode for ``cache_tag``."""
    folder, name = os.path.split(source)
    return os.path.join(folder, "__pycache__", f"{name[:-3]}.{cache_tag}.pyc")


@dataclass(kw_only=True)
class _RollbackDestination(SchemeDictionaryDestination):
    """installer's destination that remembers every file it creates and never overwrites one.

    Files are created exclusively. A folder is created only when opening a
    file in it fails, and created again if a concurrent prune removed it
    (empty) in between, so writers need no lock against pruning.

    With ``compilers``, ``.py`` files of purelib and platlib are sent to be
    compiled in chunks as they are written, so compiling overlaps writing;
    :meth:`finalize_installation` waits for them and lists the ``.pyc`` files
    in RECORD, as pip does.

    A file the journal does not list yet (``planned`` missed it) is added to
    it before it is created; bytecode the plan missed, once it is written.
    """

    compilers: _Compilers | None
    """Where ``.py`` files are compiled; ``None``: no bytecode."""
    writing: _Turn
    """This wheel's turn to write files; given up while it waits for its compilers."""
    journal: Journal
    planned: AbstractSet[str]
    """Every path the journal lists, or that was there before and may be replaced (stale bytecode)."""
    deadline: _Deadline
    written: list[str] = field(default_factory=list)
    """Every file created, in order (``.pyc`` files once their compiler answered)."""
    _chunk: list[str] = field(default_factory=list)
    _chunk_bytes: int = 0
    _compiling: list[Future[list[_Compiled]]] = field(default_factory=list)
    _source_schemes: dict[str, Scheme] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._folders = _folders(self.scheme_dict)

    def write_to_fs(self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool) -> RecordEntry:
        self.deadline.check("writing files")
        target_path = _target_path(self._folders[scheme], path)
        compiled = self.compilers is not None and _is_compiled(scheme, target_path)
        if target_path not in self.planned:
            self.journal.add([target_path])
        handle = self._create(target_path)
        self.written.append(target_path)
        with handle:
            digest, size = copyfileobj_with_hashing(stream, handle, self.hash_algorithm)
        if is_executable:
            make_file_executable(Path(target_path))
        if compiled:
            self._source_schemes[target_path] = scheme
            self._chunk.append(target_path)
            self._chunk_bytes += size
            if self._chunk_bytes >= _CHUNK_BYTES:
                self._send_chunk()
        return RecordEntry(path, Hash(self.hash_algorithm, digest), size)

    @staticmethod
    def _create(target_path: str) -> BinaryIO:
        for _ in range(10):
            try:
                # An explicit buffer size spares the isatty() probe of open().
                return open(target_path, "xb", buffering=_COPY_BUFFER)  # noqa: SIM115 - the caller closes it
            except FileExistsError:
                raise FileExistsError(
                    f"{target_path} already exists and is not part of an older version of this distribution"
                ) from None
            except FileNotFoundError:
                os.makedirs(os.path.dirname(target_path), exist_ok=True)
        raise InstallError(f"{os.path.dirname(target_path)} kept disappearing while writing {target_path}; retry")

    def _send_chunk(self) -> None:
        if self._chunk:
            assert self.compilers is not None
            self._compiling.append(self.compilers.submit(self._chunk, self.hash_algorithm))
            self._chunk, self._chunk_bytes = [], 0

    def finalize_installation(
        self, scheme: Scheme, record_file_path: str, records: Iterable[tuple[Scheme, RecordEntry]]
    ) -> None:
        # Compiled before RECORD is written so the .pyc files are listed in it, as pip does.
        entries = list(records)
        if self.compilers is not None:
            self._send_chunk()
            self.writing.give_up()  # another install writes while this one waits
            entries += self._compiled()
        super().finalize_installation(scheme, record_file_path, entries)

    def _compiled(self) -> list[tuple[Scheme, RecordEntry]]:
        # Every chunk ends before any failure is raised: the rollback must not race a compiler.
        in_time = self._settle()
        futures, self._compiling = self._compiling, []
        if not in_time:
            del futures
            raise self.deadline.error(f"compiling bytecode with {self.interpreter}", "or without compiling")
        errors = [error for error in (future.exception() for future in futures) if error is not None]
        if errors:  # the first failure fails the wheel
            error = errors[0]
            # Raised, the error's traceback holds this frame: without these
            # locals it does not hold the future that holds the error, and the
            # installer is freed (its compilers stopped) without waiting for gc.
            del futures, errors
            try:
                raise error
            finally:
                del error
        records: list[tuple[Scheme, RecordEntry]] = []
        unplanned = []
        for future in futures:
            for compiled in future.result():
                self.written.append(compiled.pyc)
                if compiled.pyc not in self.planned:
                    unplanned.append(compiled.pyc)
                scheme = self._source_schemes[compiled.source]
                path = os.path.relpath(compiled.pyc, self.scheme_dict[scheme]).replace(os.sep, "/")
                records.append((scheme, RecordEntry(path, Hash(self.hash_algorithm, compiled.digest), compiled.size)))
        if unplanned:
            self.journal.add(unplanned)  # written already: the plan did not know where bytecode goes
        return records

    def stop_compiling(self) -> None:
        """Withdraw chunks not yet started and wait for the others: no compiler writes for this wheel after."""
        for future in self._compiling:
            future.cancel()
        self._settle()

    def _settle(self) -> bool:
        """Wait for this wheel's chunks until its deadline; past it, stop the rest. True if none was stopped."""
        pending = wait(self._compiling, timeout=self.deadline.remaining()).not_done
        if pending:
            assert self.compilers is not None
            self.compilers.stop(pending)
            wait(pending)
        return not pending


class _Turn:
    """A turn taken from a semaphore on entering, which can be given up early, once."""

    def __init__(self, semaphore: threading.BoundedSemaphore, deadline: _Deadline) -> None:
        self._semaphore = semaphore
        self._deadline = deadline
        self._held = False

    def __enter__(self) -> None:
        if not self._semaphore.acquire(timeout=self._deadline.remaining()):
            raise self._deadline.error("waiting for another install to finish writing")
        self._held = True

    def __exit__(self, *exc_info: object) -> None:
        self.give_up()

    def give_up(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


@dataclass(frozen=True, slots=True)
class _Deadline:
    """When one wheel's install must have ended (``time.monotonic``); ``seconds=None``: never."""

    seconds: float | None
    at: float = math.inf

    @classmethod
    def start(cls, seconds: float | None) -> _Deadline:
        return cls(seconds, math.inf if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        """Seconds left (0 once past), or ``None`` without a timeout: what ``wait`` and ``acquire`` take."""
        return None if self.seconds is None else max(0.0, self.at - time.monotonic())

    def check(self, doing: str) -> None:
        if time.monotonic() >= self.at:
            raise self.error(doing)

    def error(self, doing: str, hint: str = "") -> InstallError:
        return InstallError(
            f"timed out after {self.seconds:g} s {doing}; rolled back; retry with a longer install timeout {hint}".rstrip()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Compiled:
    """One ``.py`` file a compiler wrote bytecode for."""

    source: str
    pyc: str
    digest: str
    """urlsafe base64 of the ``.pyc`` hash, as RECORD writes it."""
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chunk:
    """Files of one wheel to compile, and where their answer goes."""

    paths: list[str]
    hash_algorithm: str
    future: Future[list[_Compiled]]


class _Compilers:
    """Bytecode compilers: long-lived processes of the target's interpreter, shared by install threads.

    The target's own interpreter writes the ``.pyc`` files, so they carry its
    magic number and cache tag whatever Python runs this module. Installs
    submit chunks of files to one queue; one feeder thread per process takes
    the next chunk, sends it and waits for the answer, so every process stays
    busy while any install has files to compile. A process that dies fails
    the chunk it had (its wheel rolls back) and is started again for the next;
    so does one killed by :meth:`stop`, for a wheel past its timeout.
    """

    def __init__(self, python: str, *, max_processes: int) -> None:
        self.python = python
        self.max_processes = max_processes
        self._chunks: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
        self._feeders: list[threading.Thread] = []
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._working = _Working()
        self._start_lock = threading.Lock()
        # Feeders hold no reference to self, so an installer dropped without
        # close() is still collected, and this stops them then or at exit.
        self._finalizer = weakref.finalize(self, _stop_feeders, self._chunks, self._feeders, self._processes)

    def submit(self, paths: list[str], hash_algorithm: str) -> Future[list[_Compiled]]:
        """Compile ``paths``; the future holds the files that compiled, or an :class:`InstallError`."""
        with self._start_lock:
            if not self._finalizer.alive:
                raise InstallError("compilers were closed; create a new WheelInstaller")
            while len(self._feeders) < self.max_processes:
                feeder = threading.Thread(
                    target=_feed,
                    args=(self.python, self._chunks, self._processes, self._working),
                    name=f"compile-{len(self._feeders)}",
                    daemon=True,  # never holds up interpreter exit; its process sees EOF then
                )
                feeder.start()
                self._feeders.append(feeder)
        future: Future[list[_Compiled]] = Future()
        self._chunks.put(_Chunk(paths=paths, hash_algorithm=hash_algorithm, future=future))
        return future

    def stop(self, futures: Iterable[Future[list[_Compiled]]]) -> None:
        """End these chunks now: withdraw those not started, kill the compilers of the others.

        Each future ends with an :class:`InstallError` soon after; other
        wheels' chunks are not touched.
        """
        self._working.stop(futures)

    def close(self) -> None:
        """Let the feeders finish their chunks, then stop them and their processes."""
        self._finalizer()


class _Working:
    """Which compiler process has which chunk, so that a wheel past its deadline stops its own chunks only.

    A chunk's future is settled under the same lock as :meth:`stop` looks, and
    a process is killed only while registered (so not yet reaped, its process
    id not reused).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: dict[Future[list[_Compiled]], subprocess.Popen[bytes]] = {}
        self._stopped: set[Future[list[_Compiled]]] = set()

    def stop(self, futures: Iterable[Future[list[_Compiled]]]) -> None:
        with self._lock:
            for future in futures:
                if future.cancel() or future.done():
                    continue
                self._stopped.add(future)  # started: its feeder sees this
                process = self._processes.get(future)
                if process is not None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)  # it leads its own session
                    except ProcessLookupError:
                        pass

    def begin(self, future: Future[list[_Compiled]], process: subprocess.Popen[bytes]) -> bool:
        """Register ``process`` as compiling ``future``'s chunk; False if the chunk was stopped already."""
        with self._lock:
            if future in self._stopped:
                return False
            self._processes[future] = process
            return True

    def release(self, future: Future[list[_Compiled]]) -> None:
        """The process has answered or died: it is no longer ``stop``'s to kill."""
        with self._lock:
            self._processes.pop(future, None)

    def settle(self, future: Future[list[_Compiled]], result: list[_Compiled] | None, error: BaseException | None,
               *, python: str) -> bool:
        """Set the chunk's outcome; True (and an error saying so) if it was stopped."""
        with self._lock:
            stopped = future in self._stopped
            self._stopped.discard(future)
            if stopped:
                future.set_exception(InstallError(f"compiling bytecode with {python} was stopped: its wheel timed out"))
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or [])
            return stopped


def _feed(python: str, chunks: queue.SimpleQueue[_Chunk | None], processes: set[subprocess.Popen[bytes]],
          working: _Working) -> None:
    """One feeder thread: its own compiler process, chunk after chunk, until ``None``."""
    process: subprocess.Popen[bytes] | None = None
    try:
        while True:
            chunk = chunks.get()
            if chunk is None:
                break
            if chunk.future.set_running_or_notify_cancel():
                process = _compile_chunk(python, chunk, process, processes, working)
            # Holding a finished chunk while waiting would keep its future's error, and
            # through the error's traceback the installer, alive.
            del chunk
    finally:
        if process is not None:
            processes.discard(process)
            _stop_process(process)


def _compile_chunk(
    python: str,
    chunk: _Chunk,
    process: subprocess.Popen[bytes] | None,
    processes: set[subprocess.Popen[bytes]],
    working: _Working,
) -> subprocess.Popen[bytes] | None:
    """Settle ``chunk``'s future with ``process`` (started if ``None``); the process for the next chunk."""
    if process is None:
        try:
            process = subprocess.Popen(
                [python, "-I", "-S", "-c", _COMPILE_SERVER, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the installer, which stops them
            )
        except OSError as exc:
            message = f"compiling bytecode with {python} failed: it did not start ({exc}); retry without compiling"
            working.settle(chunk.future, None, InstallError(message), python=python)
            return None
        processes.add(process)
    if not working.begin(chunk.future, process):
        working.settle(chunk.future, None, None, python=python)
        return process
    result: list[_Compiled] | None = None
    error: BaseException | None = None
    alive = True
    try:
        result = _ask(python, process, chunk)
    except InstallError as exc:  # it answered with an error: still in step
        error = exc
    except BaseException as exc:  # noqa: BLE001 - the install thread waiting on the future reports it
        error, alive = exc, False
    working.release(chunk.future)
    if not alive:
        processes.discard(process)
        _stop_process(process)
        if isinstance(error, _CompilerDied):
            error = InstallError(f"compiling bytecode with {python} failed (exit {process.returncode}); retry without compiling")
    if working.settle(chunk.future, result, error, python=python) and alive:
        processes.discard(process)  # killed, though it may have answered first
        _stop_process(process)
        alive = False
    return process if alive else None


class _CompilerDied(Exception):
    """A compiler process exited or closed its output mid-request."""


def _ask(python: str, process: subprocess.Popen[bytes], chunk: _Chunk) -> list[_Compiled]:
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(json.dumps({"hash": chunk.hash_algorithm, "paths": chunk.paths}).encode() + b"\n")
        process.stdin.flush()
    except BrokenPipeError:
        raise _CompilerDied from None
    answer = process.stdout.readline()
    if not answer.endswith(b"\n"):
        raise _CompilerDied
    reply = json.loads(answer)
    if "error" in reply:
        raise InstallError(f"compiling bytecode with {python} failed ({reply['error']}); retry without compiling")
    return [_Compiled(source=source, pyc=pyc, digest=digest, size=size) for source, pyc, digest, size in reply["compiled"]]


def _stop_feeders(
    chunks: queue.SimpleQueue[_Chunk | None], feeders: list[threading.Thread], processes: set[subprocess.Popen[bytes]]
) -> None:
    for _ in feeders:
        chunks.put(None)
    for feeder in feeders:
        feeder.join(timeout=5)
    for process in list(processes):  # a feeder stuck on a huge file
        _stop_process(process)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Close its pipes (it exits at end of input); kill it if it has not exited within a second."""
    for pipe in (process.stdin, process.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass
    try:
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
    back (see the module docstring for what counts and what cannot be cut short).
    Before its first install, it undoes what installs killed part-way left in
    the target (:meth:`recover`).
    """

    def __init__(self, target: Target, *, compile_bytecode: bool = True, reinstall: bool = False,
                 timeout: float | None = None) -> None:
        if timeout is not None and timeout <= 0:
            raise UsageError(f"--install-timeout must be more than 0 seconds, not {timeout:g}")
        self.target = target
        self.compile_bytecode = compile_bytecode
        self.reinstall = reinstall
        self.timeout = timeout
        self._compilers = (
            _Compilers(os.fspath(target.python), max_processes=usable_cpu_count()) if compile_bytecode else None
        )
        # Longest first, so a file belongs to the most specific scheme folder holding it.
        self._roots = sorted({Path(p) for p in target.scheme.values()}, key=lambda p: len(p.parts), reverse=True)
        self._journals = Path(target.scheme["purelib"])
        self._tree_lock = threading.Lock()
        self._writers = threading.BoundedSemaphore(_MAX_WRITERS)
        self._name_locks: dict[str, threading.Lock] = {}
        self._name_locks_lock = threading.Lock()
        # Paths (as find_conflicts names them) -> (distribution, wheel file name) that wrote them.
        self._claims: dict[str, tuple[str, str]] = {}
        self._claims_lock = threading.Lock()
        self._recover_lock = threading.Lock()
        self._recovered = False

    def close(self) -> None:
        """Stop the compiler processes; installing later starts new ones.

        Call it when no install is running: a running one may fail.
        """
        if self._compilers is not None:
            self._compilers.close()
            self._compilers = _Compilers(self._compilers.python, max_processes=self._compilers.max_processes)

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
            deadline = _Deadline.start(self.timeout)
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
    def _lock_for(self, name: str, deadline: _Deadline) -> Iterator[None]:
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

    def _install(self, wheel: Path, name: str, version: str, deadline: _Deadline) -> tuple[InstallStatus, str | None]:
        # Nothing to write, so no journal: a target we may only read still says "skipped".
        if not journal_path(self._journals, name).exists() and self._skips(wheel, version, self._installed(name)):
            return InstallStatus.SKIPPED, "already installed"
        with self._journal(name) as journal:
            installed = self._installed(name)  # again, locked: another process may have installed it meanwhile
            if self._skips(wheel, version, installed):
                return InstallStatus.SKIPPED, "already installed"
            with zipfile.ZipFile(wheel) as archive:
                claimed = self._claim(archive, wheel.name, name)
                try:
                    self._write(archive, installed, journal, deadline)
                except BaseException:
                    with self._claims_lock:
                        for path in claimed:
                            del self._claims[path]
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

    def _claim(self, archive: zipfile.ZipFile, wheel_name: str, name: str) -> list[str]:
        """Reserve the wheel's paths for its distribution; the ones claimed for the first time.

        The same check as :func:`find_conflicts`, for wheels that arrive one by
        one (a build feeding installs): two distributions installed by this
        installer never write the same file.
        """
        paths = _paths_in(archive, name)
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
                self._claims[path] = (name, wheel_name)
        return claimed

    def _write(self, archive: zipfile.ZipFile, installed: list[_Installed], journal: Journal, deadline: _Deadline) -> None:
        source = _CheckedWheelFile(archive)
        source.validate_record(validate_contents=False)  # contents: as they are written
        scheme = dict(self.target.scheme)
        scheme["headers"] = os.path.join(scheme["headers"], source.distribution)
        aside = _Aside(roots=self._roots, tree_lock=self._tree_lock)
        for old in installed:
            aside.plan(old.dist_info)
        planned = _planned(source, archive.namelist(), scheme, interpreter=os.fspath(self.target.python),
                           cache_tag=self.target.cache_tag if self._compilers is not None else None)
        created = _free(planned, aside.originals)
        journal.begin(wheel=os.path.basename(archive.filename or ""), created=created, moved=aside.moves,
                      folders=aside.folders)
        destination = _RollbackDestination(
            scheme_dict=scheme,
            interpreter=os.fspath(self.target.python),
            script_kind=get_launcher_kind(),
            compilers=self._compilers,
            writing=_Turn(self._writers, deadline),
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
                destination.stop_compiling()
                # A compiler stopped before it reported may have left bytecode.
                written = [Path(path) for path in destination.written]
                removed = [file for path in written for file in [path, *_bytecode_of(path)]]
                with self._tree_lock:
                    for path in removed:
                        path.unlink(missing_ok=True)
                    prune_empty_folders(removed, self._roots)
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


def _free(planned: Sequence[str], moving: AbstractSet[str]) -> list[str]:
    """The planned files this install creates; raises if one is there already and is not moving aside.

    Bytecode of nobody that is there already is left out: a compiler replaces
    it, and it is not the journal's to delete.
    """
    created = []
    folders: dict[str, bool] = {}  # one stat per new folder, not one per file in it
    moving_resolved: set[str] | None = None
    for path in planned:
        folder = os.path.dirname(path)
        if folder not in folders:
            folders[folder] = os.path.isdir(folder)
        if path in moving or not folders[folder] or not os.path.lexists(path):
            created.append(path)
            continue
        if moving_resolved is None:  # purelib and platlib may be two names of one folder
            moving_resolved = {os.path.realpath(path) for path in moving}
        if os.path.realpath(path) in moving_resolved:
            created.append(path)
        elif not path.endswith(".pyc"):
            raise FileExistsError(f"{path} already exists and is not part of an older version of this distribution")
    return created


class _Aside:
    """An installed distribution's files, moved into hidden folders beside them until discarded or restored.

    Each file goes to a folder inside the scheme folder that holds it, so the
    move is a rename on one filesystem. :meth:`plan` only lists the moves, for
    the journal; :meth:`move` makes them.
    """

    def __init__(self, *, roots: Sequence[Path], tree_lock: threading.Lock) -> None:
        self._roots = roots
        self._tree_lock = tree_lock
        self._label = secrets.token_hex(8)
        self._folders: dict[Path, Path] = {}
        self._moves: list[tuple[Path, Path]] = []
        self._moved: list[tuple[Path, Path]] = []

    @property
    def moves(self) -> list[tuple[str, str]]:
        return [(os.fspath(original), os.fspath(moved_to)) for original, moved_to in self._moves]

    @property
    def originals(self) -> set[str]:
        return {os.fspath(original) for original, _ in self._moves}

    @property
    def folders(self) -> list[str]:
        return [os.fspath(folder) for folder in self._folders.values()]

    def plan(self, dist_info: Path) -> None:
        for path in _recorded_files(dist_info):
            root = next((root for root in self._roots if path != root and path.is_relative_to(root)), None)
            if root is None:
                logger.warning("Not removing %s of %s: it is outside the target", path, dist_info.name)
                continue
            if not os.path.lexists(path):
                continue
            folder = self._folders.setdefault(root, root / f".orchestrate-old-{self._label}")
            self._moves.append((path, folder / path.relative_to(root)))

    def move(self) -> None:
        for folder in self._folders.values():
            folder.mkdir(mode=0o700)
        for original, moved_to in self._moves:
            moved_to.parent.mkdir(parents=True, exist_ok=True)
            os.replace(original, moved_to)
            self._moved.append((original, moved_to))

    def restore(self) -> None:
        with self._tree_lock:
            for original, moved_to in reversed(self._moved):
                original.parent.mkdir(parents=True, exist_ok=True)
                os.replace(moved_to, original)
        self._remove_folders()

    def discard(self) -> None:
        with self._tree_lock:
            prune_empty_folders([original for original, _ in self._moved], self._roots)
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
    futures: dict[Future[InstallResult], int] = {}

    def finished(future: Future[InstallResult]) -> None:
        results[futures[future]] = result = future.result()
        if on_result is not None:
            on_result(result)

    pool = ThreadPoolExecutor(max_workers=max_installs, thread_name_prefix="install")
    try:
        futures.update((pool.submit(wheel_installer.install, wheel), index) for index, wheel in enumerate(wheels))
        for future in as_completed(futures):
            finished(future)
    except BaseException:
        # Interrupted: installs under way finish (each is atomic) and are reported; queued ones never start.
        pool.shutdown(wait=True, cancel_futures=True)
        for future, index in futures.items():
            if index not in results and not future.cancelled() and future.exception() is None:
                finished(future)
        raise
    pool.shutdown(wait=True)
    return [results[index] for index in range(len(wheels))]
