"""Safe extraction of untrusted sdists (tar or zip) into a private folder.

This module owns one promise: whatever an archive holds, extraction either
writes regular files, folders and symlinks strictly inside ``dest``, or raises
:class:`~orchestrator.errors.SourceError` (``UnsafeArchiveError`` for hostile
members) and leaves ``dest`` empty.

Data flow::

    archive --archive.open_archive()--> TarFile | ZipFile (bounded headers)
            --members.archive_members()--> Member (format-neutral)
            --_Extractor.add()--> checks (name, type, link, budget) --> dest

The checks follow tarfile's ``data`` filter (PEP 706) but are stricter and
purely lexical: the ``data`` filter resolves paths with ``os.path.realpath``
against whatever is already on disk, which the 2025 CVEs (CVE-2025-4517,
-4330, -4138, -4435) showed can be steered by earlier members, and Python
before 3.11.4 has no filter at all. So here:

* member names are split on ``/`` and ``\\``; absolute names, drive letters,
  NUL bytes and any ``..`` component are refused;
* a member is never written through a symlink (every parent must be a real
  folder) and never replaces a symlink or folder;
* symlink targets may only climb with *leading* ``..`` and no further than the
  link's own folder allows; a ``..`` after a name could cancel a symlink
  component, so it is refused;
* tar hardlinks are materialised as copies of a file extracted earlier;
* device files, FIFOs and unknown member types are refused;
* files keep their executable bits, lose setuid/setgid/sticky and group/other
  write; folder modes and ownership are ignored.

Where the running Python has ``tarfile.data_filter`` it is consulted as well,
as a second opinion, and its ``FilterError`` becomes ``UnsafeArchiveError``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NoReturn

from orchestrator.build.archive import (
    CORRUPT_ERRORS,
    MAX_MEMBERS,
    REFUSE,
    one_line,
    open_archive,
    too_many_members,
)
from orchestrator.build.members import Member, archive_members
from orchestrator.errors import SourceError, UnsafeArchiveError

__all__ = ["extract_sdist"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1024 * 1024
_MAX_LINK_TARGET_BYTES = 4096  # PATH_MAX on Linux; a zip symlink's body is its target
_DRIVE = re.compile(r"[A-Za-z]:")
_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)

_DATA_FILTER: Callable[[tarfile.TarInfo, str], tarfile.TarInfo] | None = getattr(
    tarfile, "data_filter", None
)
_FILTER_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(tarfile, name) for name in ("FilterError",) if hasattr(tarfile, name)
)


def extract_sdist(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = 4 * 1024**3,
    max_members: int = MAX_MEMBERS,
) -> Path:
    """Extract the sdist ``archive`` into the existing, empty folder ``dest``.

    The format (tar, optionally gzip/bzip2/xz/lzma compressed, or zip) is decided
    by content, not by suffix. Returns the project root: the single top-level
    folder when there is exactly one (``name-version/``), else ``dest``.

    Raises ``UnsafeArchiveError`` for a hostile member (escaping path or link,
    special file, more than ``max_members`` members or more than ``max_bytes``
    uncompressed bytes) and ``SourceError`` for an unreadable, corrupt or
    unrecognised archive; either way ``dest`` is left empty. ``ValueError``
    means the caller broke the contract (``dest`` missing or not empty).
    """
    archive = Path(archive)
    dest = Path(dest)
    if not dest.is_dir():
        raise ValueError(f"extraction folder {dest} does not exist or is not a folder")
    if any(dest.iterdir()):
        raise ValueError(f"extraction folder {dest} is not empty")
    try:
        _extract(archive, dest, max_bytes=max_bytes, max_members=max_members)
    except BaseException:
        _empty_folder(dest)
        raise
    entries = list(os.scandir(dest))
    if len(entries) == 1 and entries[0].is_dir(follow_symlinks=False):
        return dest / entries[0].name
    return dest


def _extract(archive: Path, dest: Path, *, max_bytes: int, max_members: int) -> None:
    """The one boundary where tarfile/zipfile/decompressor errors become SourceError."""
    try:
        container = open_archive(archive)
        with container:
            extractor = _Extractor(archive.name, dest, max_bytes=max_bytes, max_members=max_members)
            for member in archive_members(container, archive.name, extractor.refuse_early):
                extractor.add(member)
    except SourceError:
        raise
    except CORRUPT_ERRORS as exc:
        raise SourceError(
            f"{archive.name}: is truncated or corrupt: {one_line(exc)}; download it again"
        ) from exc
    logger.debug(
        "extracted %s: %d members, %d bytes", archive.name, extractor.members, extractor.bytes_written
    )


class _Extractor:
    """Writes members into ``dest``, refusing anything that could leave it."""

    def __init__(self, archive_name: str, dest: Path, *, max_bytes: int, max_members: int) -> None:
        self.archive_name = archive_name
        self.dest = dest
        self.members = 0
        self.bytes_written = 0
        self._max_bytes = max_bytes
        self._max_members = max_members
        self._dest_real = os.path.realpath(dest)
        self._folders: set[tuple[str, ...]] = {()}
        """Folders known to be real (not symlinks); a folder is never replaced later."""
        self._files: dict[tuple[str, ...], Path] = {}
        """Regular files written so far, by normalised name: sources for hardlinks."""

    # -- budget ------------------------------------------------------------

    def refuse_early(self, names: list[str], sizes: list[int]) -> None:
        """Refuse from headers alone when they already announce too much."""
        if len(names) > self._max_members:
            self._too_many(names[self._max_members])
        total = 0
        for name, size in zip(names, sizes):
            total += size
            if total > self._max_bytes:
                self._too_big(name)

    def _count_member(self, name: str) -> None:
        self.members += 1
        if self.members > self._max_members:
            self._too_many(name)

    def _take(self, name: str, size: int) -> None:
        if self.bytes_written + size > self._max_bytes:
            self._too_big(name)
        self.bytes_written += size

    def _too_many(self, name: str) -> NoReturn:
        raise too_many_members(self.archive_name, name, self._max_members)

    def _too_big(self, name: str) -> NoReturn:
        raise UnsafeArchiveError(
            f"{self.archive_name}: member {name!r} takes the uncompressed size past the limit of"
            f" {self._max_bytes} bytes (decompression bomb?); {REFUSE}"
        )

    # -- members -----------------------------------------------------------

    def add(self, member: Member) -> None:
        self._count_member(member.name)
        if member.kind not in ("file", "dir", "symlink", "hardlink"):
            self._unsafe(member.name, f"is a {member.kind}; sdists hold only files, folders and links")
        parts = self._split(member.name, member.name, "would be written")
        if not parts:
            if member.kind == "dir":
                return  # "./" or "/": the extraction folder itself
            self._unsafe(member.name, "does not name anything inside the extraction folder")
        link = source = None
        if member.kind == "symlink":
            link = self._check_symlink(member, parts)
        elif member.kind == "hardlink":
            source = self._check_hardlink(member)
        if member.tarinfo is not None:
            self._second_opinion(member.tarinfo)
        parent = self._make_parents(member.name, parts)
        target = parent / parts[-1]
        if member.kind == "dir":
            self._make_folder(member.name, parts, target)
        elif link is not None:
            self._clear_way(member.name, target, replace_file=False)
            with self._writing(member.name):
                os.symlink(link, target)
        elif source is not None:
            if source != target:
                # A copy, not a link: nothing but the archive's own files can be
                # reached, and the copy counts against the byte budget like any file.
                with self._writing(member.name):
                    fd = os.open(source, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
                with os.fdopen(fd, "rb") as body:
                    self._write_file(member, parts, target, body)
        else:
            assert member.open is not None
            with member.open() as body:
                self._write_file(member, parts, target, body)

    def _split(self, name: str, path: str, what: str) -> tuple[str, ...]:
        """Normalise an archive path into safe components, or refuse it."""
        if "\x00" in path:
            self._unsafe(name, f"has a NUL byte in {path!r}")
        path = path.replace("\\", "/")
        if path.startswith("/") or _DRIVE.match(path):
            self._unsafe(name, f"{what} at the absolute path {path!r}")
        parts = tuple(part for part in path.split("/") if part not in ("", "."))
        if ".." in parts:
            depth = 0
            for part in parts:
                depth += -1 if part == ".." else 1
                if depth < 0:
                    self._unsafe(name, f"{what} outside the extraction folder")
            self._unsafe(name, f"{what} through a '..' path component")
        return parts

    def _second_opinion(self, info: tarfile.TarInfo) -> None:
        if _DATA_FILTER is None:
            return
        try:
            _DATA_FILTER(info, self._dest_real)
        except _FILTER_ERRORS as exc:
            self._unsafe(info.name, f"is refused by tarfile's 'data' filter ({exc})")

    def _make_parents(self, name: str, parts: tuple[str, ...]) -> Path:
        for depth in range(1, len(parts)):
            prefix = parts[:depth]
            if prefix in self._folders:
                continue
            path = self.dest.joinpath(*prefix)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                with self._writing(name):
                    os.mkdir(path)
            else:
                if stat.S_ISLNK(st.st_mode):
                    self._unsafe(name, f"would be written through the symlink {'/'.join(prefix)!r}")
                if not stat.S_ISDIR(st.st_mode):
                    raise SourceError(
                        f"{self.archive_name}: member {name!r} would be written inside"
                        f" {'/'.join(prefix)!r}, which is a file; the archive is corrupt"
                    )
            self._folders.add(prefix)
        return self.dest.joinpath(*parts[:-1])

    def _make_folder(self, name: str, parts: tuple[str, ...], target: Path) -> None:
        if parts in self._folders:
            return
        self._clear_way(name, target, replace_file=False)
        with self._writing(name):
            os.mkdir(target)
        self._folders.add(parts)

    def _check_symlink(self, member: Member, parts: tuple[str, ...]) -> str:
        """Return the normalised target of a symlink that stays inside, or refuse it."""
        link = member.linkname if member.linkname is not None else self._read_zip_link(member)
        if not link or "\x00" in link:
            self._unsafe(member.name, f"is a symlink with the invalid target {link!r}")
        link = link.replace("\\", "/")
        if link.startswith("/") or _DRIVE.match(link):
            self._unsafe(member.name, f"is a symlink to the absolute path {link!r}")
        link_parts = [part for part in link.split("/") if part not in ("", ".")]
        climbs = 0
        while climbs < len(link_parts) and link_parts[climbs] == "..":
            climbs += 1
        # Every folder above the link is real, so leading '..' are exact; a later
        # '..' could follow a symlink and climb out, as in 'a -> .' plus 'b -> a/..'.
        if climbs > len(parts) - 1:
            self._unsafe(member.name, f"is a symlink to {link!r}, outside the extraction folder")
        if ".." in link_parts[climbs:]:
            self._unsafe(member.name, f"is a symlink to {link!r}, which has '..' after a folder name")
        return "/".join(link_parts) or "."

    def _read_zip_link(self, member: Member) -> str:
        assert member.open is not None
        with member.open() as body:
            raw = body.read(_MAX_LINK_TARGET_BYTES + 1)
        if len(raw) > _MAX_LINK_TARGET_BYTES:
            self._unsafe(member.name, f"is a symlink whose target is over {_MAX_LINK_TARGET_BYTES} bytes")
        self._take(member.name, len(raw))
        return os.fsdecode(raw)

    def _check_hardlink(self, member: Member) -> Path:
        """Return the earlier extracted file a tar hardlink names, or refuse it."""
        assert member.linkname is not None
        source_parts = self._split(member.name, member.linkname, "is a hardlink to a file")
        source = self._files.get(source_parts)
        if source is None:
            self._unsafe(
                member.name,
                f"is a hardlink to {member.linkname!r}, which is not a file extracted before it",
            )
        return source

    def _write_file(self, member: Member, parts: tuple[str, ...], target: Path, body: IO[bytes]) -> None:
        if member.size > self._max_bytes - self.bytes_written:
            self._too_big(member.name)  # the header already says too much
        self._clear_way(member.name, target, replace_file=True)
        # O_EXCL|O_NOFOLLOW: never write into something that appeared at this path.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        with self._writing(member.name):
            fd = os.open(target, flags, 0o600)
        self._files[parts] = target
        try:
            while chunk := body.read(_CHUNK_BYTES):  # archive errors go to the boundary
                self._take(member.name, len(chunk))
                with self._writing(member.name):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            with self._writing(member.name):
                os.chmod(fd, _file_mode(member.mode))
        finally:
            with self._writing(member.name):
                os.close(fd)
        if member.mtime is not None:
            try:
                os.utime(target, (member.mtime, member.mtime))
            except (OverflowError, ValueError, OSError):
                logger.debug("%s: cannot set mtime of %r", self.archive_name, member.name)

    def _clear_way(self, name: str, target: Path, *, replace_file: bool) -> None:
        """Let a later file replace an earlier one (as tar does); refuse any other clash."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if replace_file and stat.S_ISREG(st.st_mode):
            with self._writing(name):
                os.unlink(target)
            return
        self._unsafe(name, "would replace an earlier member of another type at the same path")

    @contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise SourceError(
                f"{self.archive_name}: cannot write member {name!r}: {exc.strerror or exc}"
            ) from exc

    def _unsafe(self, name: str, problem: str) -> NoReturn:
        raise UnsafeArchiveError(f"{self.archive_name}: member {name!r} {problem}; {REFUSE}")


def _file_mode(mode: int | None) -> int:
    """The ``data`` filter's rule: keep exec bits, drop setuid/setgid/sticky and go-w."""
    if mode is None:
        return 0o644
    mode = (mode & 0o755) | 0o600
    if not mode & 0o100:
        mode &= ~0o111
    return mode


def _empty_folder(folder: Path) -> None:
    """Remove everything under ``folder`` without following symlinks."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        logger.warning("cannot list %s to clean it up", folder, exc_info=True)
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            logger.warning("cannot remove %s after a failed extraction", entry.path, exc_info=True)

