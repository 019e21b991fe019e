"""Opening untrusted sdist archives within bounds, and listing them without extracting.

This module owns the first contact with an archive's bytes: the format is sniffed from
the content (gzip, bzip2, xz or legacy lzma compressed tar, plain tar, zip), never from
the suffix, and tar headers pass through a ``TarInfo`` class that refuses an oversized pax
or GNU metadata header before tarfile reads it into memory. :func:`list_member_names`
reads member names under the same bounds as extraction (:mod:`orchestrator.build.extract`),
so that looking into an sdist in the main process is as safe as extracting it in a worker.
"""

from __future__ import annotations

import lzma
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Literal

from orchestrator.errors import SourceError, UnsafeArchiveError

__all__ = ["CORRUPT_ERRORS", "MAX_MEMBERS", "REFUSE", "list_member_names", "one_line", "open_archive",
           "too_many_members"]

MAX_MEMBERS = 200_000
"""Members an sdist may hold; more is refused as hostile (the largest real sdists hold tens of thousands)."""
REFUSE = "refusing to build this sdist"

# tarfile reads pax and GNU long-name headers whole into memory before we see
# the member; a gzip of a few MB can declare a multi-GB header.
_MAX_METADATA_HEADER_BYTES = 1024 * 1024
_METADATA_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)

# What tarfile, zipfile and the decompressors raise for damaged input
# (ValueError covers UnicodeDecodeError in zip names and bad GNU sparse maps;
# NotImplementedError covers zip compression methods zipfile cannot read).
CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    ValueError,
    NotImplementedError,
)


def list_member_names(archive: Path, *, max_members: int | None = None) -> list[str]:
    """The names of the members of the sdist ``archive``, as stored (not yet trusted).

    Reads headers only, with extraction's bounds: more than ``max_members`` members
    (default :data:`MAX_MEMBERS`) or an oversized pax or GNU header raises
    ``UnsafeArchiveError``; an unreadable, corrupt or unrecognised archive raises
    ``SourceError``.
    """
    limit = MAX_MEMBERS if max_members is None else max_members
    try:
        with open_archive(archive) as container:
            if isinstance(container, zipfile.ZipFile):
                names = container.namelist()
                if len(names) > limit:
                    raise too_many_members(archive.name, names[limit], limit)
                return names
            names = []
            for info in container:
                if len(names) == limit:
                    raise too_many_members(archive.name, info.name, limit)
                names.append(info.name)
            return names
    except SourceError:
        raise
    except CORRUPT_ERRORS as exc:
        raise SourceError(f"{archive.name}: is truncated or corrupt: {one_line(exc)}; download it again") from exc


def too_many_members(archive_name: str, name: str, limit: int) -> UnsafeArchiveError:
    """The refusal of an archive whose member ``name`` is past ``limit`` members."""
    return UnsafeArchiveError(f"{archive_name}: member {name!r} is past the limit of {limit} members; {REFUSE}")


def open_archive(archive: Path) -> tarfile.TarFile | zipfile.ZipFile:
    """Sniff the content and open it; only the tar or zip module decides."""
    try:
        with archive.open("rb") as file:
            head = file.read(512)
    except OSError as exc:
        raise SourceError(f"{archive.name}: cannot be read: {exc.strerror or exc}") from exc
    if not head:
        raise SourceError(f"{archive.name}: is empty, not a tar or zip archive")

    mode = _tar_mode(head)
    tarinfo = _bounded_tarinfo(archive.name)
    if mode != "r:":
        # A compressed stream is meant to hold a tar: failing to read it means damage.
        return tarfile.open(archive, mode, tarinfo=tarinfo)
    try:
        return tarfile.open(archive, "r:", tarinfo=tarinfo)
    except tarfile.ReadError as exc:
        tar_error = exc
    if zipfile.is_zipfile(archive):
        return zipfile.ZipFile(archive)
    if head[257:262] == b"ustar" or head.startswith(b"PK\x03\x04"):
        reason = "no zip central directory" if head.startswith(b"PK") else one_line(tar_error)
        raise SourceError(f"{archive.name}: is truncated or corrupt: {reason}; download it again")
    raise SourceError(f"{archive.name}: is not a tar or zip archive")


def _tar_mode(head: bytes) -> Literal["r:gz", "r:bz2", "r:xz", "r:"]:
    """The tarfile mode the magic bytes call for; ``r:`` when not compressed."""
    if head.startswith(b"\x1f\x8b"):
        return "r:gz"
    if head.startswith(b"BZh"):
        return "r:bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "r:xz"
    if head[257:262] != b"ustar" and _is_lzma_alone_tar(head):
        return "r:xz"  # tarfile's xz reader also takes the legacy .lzma format, as pip relies on
    return "r:"


def _is_lzma_alone_tar(head: bytes) -> bool:
    """Whether ``head`` starts a legacy ``.lzma`` stream holding a tar (that format has no magic bytes)."""
    try:
        start = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(head, max_length=512)
    except lzma.LZMAError:
        return False
    return start[257:262] == b"ustar"


def _bounded_tarinfo(archive_name: str) -> type[tarfile.TarInfo]:
    """A TarInfo class that refuses oversized pax/GNU headers before tarfile reads them."""

    class _BoundedTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _BoundedTarInfo:
            info = super().frombuf(buf, encoding, errors)
            if info.type in _METADATA_TYPES and info.size > _MAX_METADATA_HEADER_BYTES:
                raise UnsafeArchiveError(
                    f"{archive_name}: member {info.name!r} is a {info.size}-byte pax or GNU"
                    f" metadata header, above the {_MAX_METADATA_HEADER_BYTES}-byte limit; {REFUSE}"
                )
            return info

    return _BoundedTarInfo


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for messages that must stay one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
