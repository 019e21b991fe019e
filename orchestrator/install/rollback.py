"""What one install changes in the target, kept so it can be undone: the files it writes, the old files it moves.

- :class:`RollbackDestination`: installer's destination that creates files
  exclusively, remembers each one, journals any the plan missed, and sends
  ``.py`` files to the compilers as it writes them; :meth:`~RollbackDestination.roll_back`
  deletes them all again.
- :class:`Aside`: an installed older version's files, moved into a hidden
  folder beside them (a rename on one filesystem) until the new version is
  complete, then deleted, or put back.

Pruning empty folders and restoring moved files share the installer's tree
lock; a writer whose folder was pruned between creating it and opening a
file in it (it was empty then) creates it again, so file creation takes no lock.
"""

from __future__ import annotations

import csv
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from installer.destinations import SchemeDictionaryDestination
from installer.records import Hash, RecordEntry
from installer.utils import Scheme, copyfileobj_with_hashing, make_file_executable

from orchestrator.errors import InstallError
from orchestrator.install.bytecode import Compiled, Compilers
from orchestrator.install.deadline import Deadline, Turn
from orchestrator.install.journal import Journal, prune_empty_folders
from orchestrator.install.wheel import (
    VerifiedMember,
    is_compiled,
    scheme_folders,
    target_path,
)

__all__ = ["Aside", "RollbackDestination", "copy_member"]

logger = logging.getLogger(__name__)

# Files written per chunk; one chunk per write call to the OS.
_COPY_BUFFER = 256 * 1024
# Source bytes per chunk sent to a compiler (about 10 ms of compiling): small
# enough to spread one wheel over every compiler, big enough that talking to
# the process costs little.
_CHUNK_BYTES = 32 * 1024


def copy_member(stream: BinaryIO, handle: BinaryIO, hash_algorithm: str) -> tuple[str, int]:
    """Copy one member into ``handle``; its RECORD hash (urlsafe base64) and size.

    A member already checked against RECORD by the same algorithm is not
    hashed again: its RECORD hash is reused.
    """
    if isinstance(stream, VerifiedMember) and stream.hash_name == hash_algorithm:
        with stream.getbuffer() as data:
            return stream.digest, handle.write(data)
    return copyfileobj_with_hashing(stream, handle, hash_algorithm)


@dataclass(kw_only=True)
class RollbackDestination(SchemeDictionaryDestination):
    """installer's destination that remembers every file it creates and never overwrites one.

    Files are created exclusively. A folder is created only when opening a
    file in it fails, and created again if a concurrent prune removed it
    (empty) in between, so writers need no lock against pruning.

    With ``compilers``, ``.py`` files of purelib and platlib are sent to be
    compiled in chunks as they are written, so compiling overlaps writing;
    :meth:`finalize_installation` waits for them and lists the ``.pyc`` files
    in RECORD, as pip does.

    A file the journal does not list yet (the plan missed it) is added to it
    before it is created; bytecode the plan missed, once it is written.
    """

    compilers: Compilers | None
    """Where ``.py`` files are compiled; ``None``: no bytecode."""
    writing: Turn
    """This wheel's turn to write files; given up while it waits for its compilers."""
    journal: Journal
    planned: AbstractSet[str]
    """Every path the journal lists, or that was there before and may be replaced (stale bytecode)."""
    deadline: Deadline
    written: list[str] = field(default_factory=list)
    """Every file created, in order (``.pyc`` files once their compiler answered)."""
    _chunk: list[str] = field(default_factory=list)
    _chunk_bytes: int = 0
    _compiling: list[Future[list[Compiled]]] = field(default_factory=list)
    _source_schemes: dict[str, Scheme] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._folders = scheme_folders(self.scheme_dict)

    def write_to_fs(self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool) -> RecordEntry:
        self.deadline.check("writing files")
        created = target_path(self._folders[scheme], path)
        compiled = self.compilers is not None and is_compiled(scheme, created)
        if created not in self.planned:
            self.journal.add([created])
        handle = self._create(created)
        self.written.append(created)
        with handle:
            digest, size = copy_member(stream, handle, self.hash_algorithm)
        if is_executable:
            make_file_executable(Path(created))
        if compiled:
            self._source_schemes[created] = scheme
            self._chunk.append(created)
            self._chunk_bytes += size
            if self._chunk_bytes >= _CHUNK_BYTES:
                self._send_chunk()
        return RecordEntry(path, Hash(self.hash_algorithm, digest), size)

    @staticmethod
    def _create(path: str) -> BinaryIO:
        for _ in range(10):
            try:
                # An explicit buffer size spares the isatty() probe of open().
                return open(path, "xb", buffering=_COPY_BUFFER)  # noqa: SIM115 - the caller closes it
            except FileExistsError:
                raise FileExistsError(
                    f"{path} already exists and is not part of an older version of this distribution"
                ) from None
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
        raise InstallError(f"{os.path.dirname(path)} kept disappearing while writing {path}; retry")

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

    def roll_back(self, *, roots: Sequence[Path], tree_lock: threading.Lock) -> None:
        """Delete every file written, once no compiler writes for this wheel; prune the folders left empty."""
        self._stop_compiling()
        # A compiler stopped before it reported may have left bytecode.
        removed = [file for path in map(Path, self.written) for file in [path, *_bytecode_of(path)]]
        with tree_lock:
            for path in removed:
                path.unlink(missing_ok=True)
            prune_empty_folders(removed, roots)

    def _stop_compiling(self) -> None:
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


class Aside:
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
        """``(original, aside)`` for each file :meth:`move` moves."""
        return [(os.fspath(original), os.fspath(moved_to)) for original, moved_to in self._moves]

    @property
    def originals(self) -> set[str]:
        return {os.fspath(original) for original, _ in self._moves}

    @property
    def folders(self) -> list[str]:
        """The hidden folders :meth:`move` creates."""
        return [os.fspath(folder) for folder in self._folders.values()]

    def plan(self, dist_info: Path) -> None:
        """Add the files of the distribution installed at ``dist_info`` (its RECORD, and their bytecode)."""
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
        """Put back what was moved."""
        with self._tree_lock:
            for original, moved_to in reversed(self._moved):
                original.parent.mkdir(parents=True, exist_ok=True)
                os.replace(moved_to, original)
        self._remove_folders()

    def discard(self) -> None:
        """Delete what was moved, and prune the folders it leaves empty."""
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
