"""The install journal: a durable note, inside the target, of one wheel's install under way.

An install killed part-way (SIGKILL, a crash, a power cut) would leave a
half-written distribution, and the old version's files moved aside. So before
it touches the target, an install writes what it is about to do into a journal
and syncs it; it holds an exclusive ``flock`` on the journal until it removes
it, having finished or rolled back. The next install into the target finds the
journal, takes its lock (so the writer is dead: a live one still holds it) and
undoes what it lists, and only that. POSIX only (``fcntl.flock``).

One journal per distribution, in the target's purelib folder, named
``.orchestrate-install-NAME.journal``; JSON lines::

    {"name": N, "wheel": W, "pid": P}                   who; written once, with the next two
    {"create": [path, ...]}                             files it may create, before it creates one
    {"move": [[path, aside], ...], "folders": [...]}    old files it moves aside, and the aside folders
    {"create": [path, ...]}                             later: files the first list missed, before they are
                                                        written (bytecode in an unforeseen place: just after)
    {"commit": true}                                    the new version is complete; the aside copies go next

Undoing an uncommitted journal removes the listed files that exist, puts the
aside copies back and prunes the folders left empty; a committed one is
finished instead: the aside copies are deleted. A last line cut short (a power
cut during a write) is ignored: nothing it announced had started.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InstallError

__all__ = ["Journal", "JournalEntries", "Recovery", "journal_path", "prune_empty_folders", "stale_journals", "undo"]

logger = logging.getLogger(__name__)

PREFIX = ".orchestrate-install-"
SUFFIX = ".journal"


def journal_path(folder: Path, name: str) -> Path:
    """Where ``name``'s journal is in ``folder``, when there is one."""
    return folder / f"{PREFIX}{name}{SUFFIX}"


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntries:
    """What a journal lists."""

    name: str
    """Canonical distribution name."""
    wheel: str
    """File name of the wheel being installed."""
    created: tuple[str, ...] = ()
    """Files the install was about to create (absolute); some may never have been."""
    moved: tuple[tuple[str, str], ...] = ()
    """``(path, aside)`` for each old file it was about to move aside."""
    folders: tuple[str, ...] = ()
    """The aside folders it was about to create."""
    committed: bool = False
    """The new version was complete: only the aside copies were left to delete."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovery:
    """What undoing the journal of a dead install did; its ``str`` is one line for the user."""

    name: str
    wheel: str
    committed: bool
    """The install had completed; the old version's copies were deleted."""
    removed: int
    """Files deleted: the new files of an uncommitted install, the old copies of a committed one."""
    restored: int
    """Old files moved back into place."""

    def __str__(self) -> str:
        if self.committed:
            return f"finished an interrupted install of {self.name} ({self.wheel}): removed {self.removed} old files"
        restored = f", restored {self.restored} files of the version it replaced" if self.restored else ""
        return f"recovered an interrupted install of {self.name} ({self.wheel}): removed {self.removed} files{restored}"


class Journal:
    """One distribution's journal in a target, open and locked by this process; see the module docstring.

    Not thread-safe: one install thread owns it.
    """

    def __init__(self, path: Path, fd: int, left_over: JournalEntries | None) -> None:
        self.path = path
        self.name = path.name.removeprefix(PREFIX).removesuffix(SUFFIX)
        """The distribution's canonical name."""
        self._fd = fd
        self.left_over = left_over
        """What a dead install left in it, read when the lock was taken; ``None`` if it was empty."""
        self._keep = False

    @classmethod
    def acquire(cls, folder: Path, name: str) -> Journal:
        """Open ``name``'s journal in ``folder``, creating it, and lock it.

        Raises :class:`InstallError` if a live process holds it.
        """
        path = journal_path(folder, name)
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                journal = _locked(path, fd)
            except BlockingIOError:
                os.close(fd)
                raise InstallError(
                    f"another process is installing {name} into this target (it holds {path});"
                    " retry once it has finished"
                ) from None
            if journal is not None:
                return journal
            os.close(fd)  # its owner removed it between our open and lock: open the new one

    def begin(self, *, wheel: str, created: Sequence[str], moved: Sequence[tuple[str, str]],
              folders: Sequence[str]) -> None:
        """Start afresh: say what the install is about to create and move, and sync it before it does."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._append(
            {"name": self.name, "wheel": wheel, "pid": os.getpid()},
            {"create": list(created)},
            {"move": [list(pair) for pair in moved], "folders": list(folders)},
        )
        # The journal's own name must survive a power cut too.
        folder = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def add(self, created: Iterable[str]) -> None:
        """Add files the install is about to create (or, for bytecode, has created) to the list."""
        self._append({"create": list(created)})

    def commit(self) -> None:
        """The new version is complete: from now on, undoing finishes the install instead."""
        self._append({"commit": True})

    def keep(self) -> None:
        """Leave the journal for the next install when this one is closed (a rollback failed part-way)."""
        self._keep = True

    def close(self) -> None:
        """Remove the journal (unless kept) and release its lock."""
        try:
            if not self._keep:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)

    def _append(self, *lines: dict[str, object]) -> None:
        data = memoryview("".join(json.dumps(line) + "\n" for line in lines).encode())
        while data:
            data = data[os.write(self._fd, data):]
        os.fsync(self._fd)


def stale_journals(folder: Path) -> Iterator[Journal]:
    """The journals in ``folder`` that no live process holds, each locked; the caller closes each."""
    try:
        names = sorted(entry for entry in os.listdir(folder) if entry.startswith(PREFIX) and entry.endswith(SUFFIX))
    except FileNotFoundError:
        return
    for entry in names:
        path = folder / entry
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # finished meanwhile
        try:
            journal = _locked(path, fd)
        except BlockingIOError:
            journal = None  # a live install holds it
        if journal is None:
            os.close(fd)
            continue
        yield journal


def _locked(path: Path, fd: int) -> Journal | None:
    """Lock ``fd`` and read it; ``None`` if it is no longer the file at ``path``.

    Raises :class:`BlockingIOError` if another process holds the lock.
    """
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    opened = os.fstat(fd)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return None
    if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
        return None
    return Journal(path, fd, _read(fd))


def _read(fd: int) -> JournalEntries | None:
    lines = []
    for line in os.pread(fd, os.fstat(fd).st_size, 0).splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            break  # cut short: what it announced never started
    if not lines or "name" not in lines[0]:
        return None
    return JournalEntries(
        name=str(lines[0]["name"]),
        wheel=str(lines[0]["wheel"]),
        created=tuple(path for line in lines for path in line.get("create", ())),
        moved=tuple((path, aside) for line in lines for path, aside in line.get("move", ())),
        folders=tuple(folder for line in lines for folder in line.get("folders", ())),
        committed=any(line.get("commit") for line in lines),
    )


def undo(entries: JournalEntries, roots: Sequence[Path]) -> Recovery:
    """Put the target back as the dead install found it, or finish a committed one; touch only listed files.

    ``roots`` are the target's scheme folders: emptied folders are pruned up to them.
    """
    removed = restored = 0
    if entries.committed:
        for _, aside in entries.moved:
            removed += _remove_file(aside)
        prune_empty_folders([Path(path) for path, _ in entries.moved], roots)
    else:
        for path in entries.created:
            removed += _remove_file(path)
        for path, aside in reversed(entries.moved):
            if not os.path.lexists(aside):
                continue  # never moved, or already back
            if os.path.lexists(path):
                logger.warning("Not restoring %s from %s: something else is there now", path, aside)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(aside, path)
            restored += 1
        prune_empty_folders([Path(path) for path in entries.created], roots)
    for folder in entries.folders:
        _remove_empty_tree(folder)
    return Recovery(name=entries.name, wheel=entries.wheel, committed=entries.committed, removed=removed,
                    restored=restored)


def _remove_file(path: str) -> int:
    """1 if ``path`` was a file (or link) and is removed now, else 0; a folder is left alone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    except (IsADirectoryError, PermissionError):  # macOS says EPERM for a folder
        if os.path.isdir(path) and not os.path.islink(path):
            return 0
        raise
    return 1


def _remove_empty_tree(folder: str) -> None:
    """Remove ``folder`` and its sub-folders, as far as they are empty."""
    for parent, _, _ in os.walk(folder, topdown=False):
        try:
            os.rmdir(parent)
        except OSError:  # not empty
            pass


def prune_empty_folders(paths: Iterable[Path], roots: Sequence[Path]) -> None:
    """Remove the folders of ``paths`` that are now empty, up to (not including) a scheme folder."""
    for folder in sorted({path.parent for path in paths}, key=lambda p: len(p.parts), reverse=True):
        while folder not in roots and any(folder.is_relative_to(root) for root in roots):
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone
                break
            folder = folder.parent
