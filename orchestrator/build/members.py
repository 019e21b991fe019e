"""An sdist's entries as format-neutral members, for extraction (``extract.py``) and the digests of its
compiled sources (``digests.py``).

This module owns reading what a tar or a zip says of each entry: its name (not yet
trusted), its kind (file, folder, symlink, tar hardlink, or the refused type it is),
its mode, mtime and claimed size, its link, and a way to open its body. Extraction's
checks are then written once for both formats. Nothing here writes or judges a path.
"""

from __future__ import annotations

import stat
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from orchestrator.errors import SourceError

__all__ = ["Member", "archive_members", "tar_members", "zip_members"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One archive entry, whatever the format."""

    name: str
    """The name as stored in the archive, not yet trusted."""
    kind: str
    """``file``, ``dir``, ``symlink`` or ``hardlink``; anything else names a refused type."""
    mode: int | None = None
    """Permission bits from the archive; ``None`` when the archive has none."""
    mtime: float | None = None
    """Modification time to restore on files, best effort."""
    size: int = 0
    """Uncompressed size the header claims; only used for an early refusal."""
    linkname: str | None = None
    """Symlink target or hardlink source; ``None`` for a zip symlink (read from the body)."""
    open: Callable[[], IO[bytes]] | None = None
    """Open the body for streaming."""
    tarinfo: tarfile.TarInfo | None = None
    """The tar header, for the ``data`` filter's second opinion."""


_TAR_KINDS: tuple[tuple[Callable[[tarfile.TarInfo], bool], str], ...] = (
    (tarfile.TarInfo.isreg, "file"), (tarfile.TarInfo.isdir, "dir"), (tarfile.TarInfo.issym, "symlink"),
    (tarfile.TarInfo.islnk, "hardlink"), (tarfile.TarInfo.ischr, "character device"),
    (tarfile.TarInfo.isblk, "block device"), (tarfile.TarInfo.isfifo, "FIFO"))
"""Each tar member type's kind, tested in turn."""

_ZIP_KINDS = {0: "file", stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFIFO: "FIFO"}
"""The kind of a zip member by the file type of its unix mode (0: none given, a file)."""


def archive_members(container: tarfile.TarFile | zipfile.ZipFile, archive_name: str,
                    refuse_early: Callable[[list[str], list[int]], None] = lambda names, sizes: None
                    ) -> Iterator[Member]:
    """The members of an opened sdist, whichever its format (see :func:`zip_members` for ``refuse_early``)."""
    if isinstance(container, tarfile.TarFile):
        return tar_members(container)
    return zip_members(container, archive_name, refuse_early)


def tar_members(tar: tarfile.TarFile) -> Iterator[Member]:
    """The members of a tar, read one header at a time as the archive streams."""
    for info in tar:
        kind = next((name for test, name in _TAR_KINDS if test(info)), f"tar member of type {info.type!r}")
        yield Member(
            name=info.name,
            kind=kind,
            mode=info.mode,
            mtime=info.mtime,
            size=info.size if kind == "file" else 0,
            linkname=info.linkname,
            open=_tar_opener(tar, info),
            tarinfo=info,
        )


def _tar_opener(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
    def open_body() -> IO[bytes]:
        body = tar.extractfile(info)
        if body is None:  # pragma: no cover - only for non-files, which never get here
            raise tarfile.ReadError(f"member {info.name!r} has no data")
        return body

    return open_body


def zip_members(archive: zipfile.ZipFile, archive_name: str,
                refuse_early: Callable[[list[str], list[int]], None]) -> Iterator[Member]:
    """The members of a zip; before the first, ``refuse_early`` sees every name and size its central directory gives,
    and an encrypted member is refused."""
    infos = archive.infolist()
    # The central directory gives an early refusal; the bytes are counted again as they stream.
    refuse_early([info.filename for info in infos], [info.file_size for info in infos])
    for info in infos:
        if info.flag_bits & 0x1:
            raise SourceError(
                f"{archive_name}: member {info.filename!r} is encrypted;"
                " sdists must not be password-protected"
            )
    for info in infos:
        unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
        file_type = stat.S_IFMT(unix_mode)
        if info.filename.endswith(("/", "\\")):
            kind = "dir"
        else:
            kind = _ZIP_KINDS.get(file_type, f"zip member of unix type {file_type:#o}")
        yield Member(
            name=info.filename,
            kind=kind,
            mode=stat.S_IMODE(unix_mode) or None,
            mtime=_zip_mtime(info),
            size=info.file_size,
            open=_zip_opener(archive, info),
        )


def _zip_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(info)


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None
