"""Turn command-line paths into build sources: sdist files, folders of sdists, source trees."""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.utils import (
    InvalidSdistFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
)

from orchestrator.errors import SourceError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SDIST_SUFFIXES = (".tar.gz", ".zip")
COMPILED_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".pyx", ".pxd", ".rs", ".f", ".f90", ".cu")


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """One thing to build."""

    path: Path
    """The sdist file or the source tree, absolute."""
    kind: Literal["sdist", "tree"]
    name: NormalizedName
    """Canonical project name (from the sdist filename or the tree's pyproject.toml)."""
    version: str | None
    """The version, when the filename or static metadata says it."""
    sha256: str | None = None
    """The sdist's digest; ``None`` for a source tree."""

    @property
    def key(self) -> str:
        """Identifies the source in logs, events and the report."""
        return f"{self.name}-{self.version}" if self.version else self.name

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.kind == "sdist" else 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_sdist_name(path: Path) -> bool:
    return path.name.endswith(SDIST_SUFFIXES)


def sdist_source(path: Path, *, sha256: str | None = None) -> Source:
    """A source for one sdist file; name and version come from its filename.

    ``sha256`` saves reading the file again when the digest is already known.
    """
    try:
        name, version = parse_sdist_filename(path.name)
    except InvalidSdistFilename:
        raise SourceError(
            f"{path}: not an sdist filename (expected NAME-VERSION.tar.gz or NAME-VERSION.zip)"
        ) from None
    try:
        digest = sha256 or file_sha256(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file: {exc.strerror}") from None
    return Source(path=path.resolve(), kind="sdist", name=name, version=str(version), sha256=digest)


def tree_source(path: Path) -> Source:
    """A source for a project folder; name and version come from static ``[project]`` metadata."""
    name, version = path.resolve().name, None
    pyproject = path / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SourceError(f"{pyproject}: cannot be parsed: {exc}") from None
        name = project.get("name", name)
        if "version" not in project.get("dynamic", []):
            version = project.get("version")
    return Source(path=path.resolve(), kind="tree", name=canonicalize_name(name), version=version)


def compiles(source: Source) -> bool:
    """Whether ``source`` holds code in a compiled language (C, C++, Cython, Rust, Fortran, CUDA).

    Such builds take seconds to minutes, pure-Python ones about a second: with no
    history, builds that compile start first. Listing a ``.tar.gz`` decompresses it,
    so call this off the scheduler's thread. An archive that cannot be read counts
    as not compiling; its build reports the damage.
    """
    names: Iterable[str]
    try:
        if source.kind == "tree":
            names = _tree_files(source.path)
        elif source.path.name.endswith(".zip"):
            with zipfile.ZipFile(source.path) as archive:
                names = archive.namelist()
        else:
            with tarfile.open(source.path, "r|*") as tar:
                names = [member.name for member in tar]
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile):
        return False
    return any(name.lower().endswith(COMPILED_SUFFIXES) for name in names)


def _tree_files(root: Path) -> Iterator[str]:
    for _, folders, files in os.walk(root):
        folders[:] = [folder for folder in folders if not folder.startswith(".")]  # .git, .venv, .tox
        yield from files


def is_source_tree(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() or (path / "setup.py").is_file()


@dataclass(frozen=True, slots=True, kw_only=True)
class Collected:
    """What the command-line paths hold."""

    sources: list[Source]
    notes: list[str]
    """One line per duplicate dropped."""
    rejected: list[tuple[Path, str]]
    """Sources that cannot be built at all (unreadable, misnamed), with why; each fails alone."""


def collect_sources(paths: Iterable[Path]) -> Collected:
    """Expand paths into sources, dropping duplicates (same name and version).

    A path that is neither an sdist, a source tree nor a folder holding sdists is
    a :class:`UsageError`; an sdist that cannot be read is rejected on its own.
    """
    sources: dict[str, Source] = {}
    notes: list[str] = []
    rejected: list[tuple[Path, str]] = []
    for path in paths:
        candidates: list[tuple[Path, Callable[[Path], Source]]]
        if path.is_dir() and not is_source_tree(path):
            found = sorted(p for p in path.iterdir() if p.is_file() and is_sdist_name(p))
            if not found:
                raise UsageError(f"{path}: folder holds no sdist (*.tar.gz, *.zip) and is not a source tree")
            candidates = [(p, sdist_source) for p in found]
        elif path.is_dir():
            candidates = [(path, tree_source)]
        elif path.is_file():
            if not is_sdist_name(path):
                raise UsageError(f"{path}: not an sdist (*.tar.gz, *.zip), a source tree or a folder of sdists")
            candidates = [(path, sdist_source)]
        else:
            raise UsageError(f"{path}: no such file or folder")
        for candidate, make in candidates:
            try:
                source = make(candidate)
            except SourceError as exc:
                rejected.append((candidate, exc.message))
                continue
            key = source.key if source.version else str(source.path)
            if key in sources:
                notes.append(f"{source.path}: same name and version as {sources[key].path}; built once")
                continue
            sources[key] = source
    return Collected(sources=list(sources.values()), notes=notes, rejected=rejected)
