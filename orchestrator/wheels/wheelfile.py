"""Read a wheel's core metadata from the archive, cross-checked with the wheel's file name.

The one place that opens a ``.whl`` to learn what it is: its name and version
(from the file name, which must agree with ``*.dist-info/METADATA``), its tags,
and its ``Requires-Dist`` and ``Requires-Python`` as written; and the one check a
wheel passes before it enters the wheelhouse, built or downloaded (:func:`check_wheel`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.metadata import parse_email
from packaging.tags import Tag
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from orchestrator.errors import WheelError

__all__ = ["WheelMetadata", "check_wheel", "identity", "read_wheel"]

_REMEDY = "remove it, then build or download it again"


@dataclass(frozen=True, slots=True, kw_only=True)
class WheelMetadata:
    """What a wheel says it is."""

    path: Path
    name: str
    """As METADATA spells it (canonicalised, it is the file name's)."""
    version: Version
    tags: frozenset[Tag]
    """The tags of the file name, expanded (``py2.py3-none-any`` gives two)."""
    requires_dist: tuple[str, ...]
    """The ``Requires-Dist`` lines, as written, markers included; not validated here."""
    requires_python: str | None


def read_wheel(path: Path) -> WheelMetadata:
    """Read ``path``'s METADATA; a :class:`WheelError` names the file if it is not the wheel it is named."""
    return _read(path, validate_record=False)


def _read(path: Path, *, validate_record: bool) -> WheelMetadata:
    """:func:`read_wheel`, and with ``validate_record`` pypa/installer's check of every file against RECORD, on the
    one opening of the archive (its central directory read once)."""
    try:
        file_name, file_version, _, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise WheelError(f"{path}: not a wheel's file name ({exc}); {_REMEDY}") from None
    try:
        with zipfile.ZipFile(path) as archive:
            found = [
                member for member in archive.namelist()
                if member.count("/") == 1 and member.endswith(".dist-info/METADATA")
            ]
            if len(found) != 1:
                what = "no *.dist-info/METADATA" if not found else f"several METADATA files ({', '.join(found)})"
                raise WheelError(f"{path}: {what} in the wheel; {_REMEDY}")
            raw, _ = parse_email(archive.read(found[0]))
            name, version = identity(raw.get("name"), raw.get("version"), f"{path}: {found[0]}", _REMEDY)
            if canonicalize_name(name) != file_name or version != file_version:
                raise WheelError(f"{path}: METADATA says {name} {version} but the file name says {file_name} "
                                 f"{file_version}; {_REMEDY}")
            if validate_record:
                _validate_record(archive, path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise WheelError(f"{path}: cannot read the wheel ({exc}); {_REMEDY}") from None
    return WheelMetadata(
        path=path,
        name=name,
        version=version,
        tags=tags,
        requires_dist=tuple(raw.get("requires_dist", [])),
        requires_python=raw.get("requires_python"),
    )


def _validate_record(archive: zipfile.ZipFile, path: Path) -> None:
    """pypa/installer's check that every file of the open wheel ``archive`` matches its RECORD line."""
    # pypa installer, imported here: reading a wheel (the set check of every run) does not need it; the fork
    # server preloads it for the builds.
    from installer.exceptions import InstallerError
    from installer.sources import WheelFile

    try:
        WheelFile(archive).validate_record()
    except (zipfile.BadZipFile, InstallerError, ValueError, KeyError) as exc:
        raise WheelError(f"the wheel {path.name} is corrupt: {exc}") from None


def identity(name: str | None, version: str | None, where: str, remedy: str) -> tuple[str, Version]:
    """The Name and Version fields of metadata read from ``where``; missing or invalid ones are a WheelError."""
    try:
        if name and version:
            return name, Version(version)
    except InvalidVersion:
        pass
    raise WheelError(f"{where} has no valid Name and Version; {remedy}")


def check_wheel(path: Path, *, name: str, version: str | None) -> WheelMetadata:
    """Check that ``path`` is a complete wheel of project ``name`` at ``version`` (any if ``None``).

    Complete: the zip opens, its METADATA agrees with its file name, and every file
    matches its RECORD line (pypa/installer's check). A :class:`WheelError` says which
    of these failed.
    """
    try:
        file_name, file_version = parse_wheel_filename(path.name)[:2]
    except InvalidWheelFilename as exc:
        raise WheelError(f"{path.name} is not a valid wheel filename ({exc})") from None
    if file_name != canonicalize_name(name):
        raise WheelError(f"the wheel {path.name} is of project '{file_name}', not '{name}'")
    if version is not None:
        try:
            expected: Version | None = Version(version)
        except InvalidVersion:
            expected = None
        if expected is not None and file_version != expected:
            raise WheelError(f"the wheel {path.name} has version {file_version}, but {version} was expected")
    return _read(path, validate_record=True)
