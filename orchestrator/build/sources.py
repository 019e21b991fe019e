"""Turn command-line paths into build sources: sdist files, folders of sdists, source trees.

This module also owns what counts as an sdist file name (:data:`SDIST_SUFFIXES`,
:func:`parse_sdist_name`), for the download stage as much as for the build stage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tomllib
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
from packaging.version import Version

from orchestrator.build.archive import list_member_names
from orchestrator.errors import SourceError, UsageError

logger = logging.getLogger(__name__)

# pip's sdist suffixes (its utils/filetypes.py), less .tar.lz: lzip, which neither Python nor
# pip can unpack. Old releases on PyPI use the legacy ones; build/archive.py reads them all.
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tbz", ".txz", ".tlz", ".tar.lzma", ".tar")
SDIST_FORMATS = ", ".join(SDIST_SUFFIXES)
"""The suffixes, for messages."""
COMPILED_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".pyx", ".pxd", ".rs", ".f", ".f90", ".cu")


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """One thing to build."""

    location: str
    """The sdist file or the source tree, absolute (:attr:`path`). A string: a run holds every source it was
    given, and a ``Path`` each, its parts listed, cost thousands of them about 400 bytes more apiece."""
    kind: Literal["sdist", "tree"]
    name: NormalizedName
    """Canonical project name (from the sdist filename or the tree's pyproject.toml)."""
    version: str | None
    """The version, when the filename or static metadata says it."""
    sha256: str | None = None
    """The sdist's digest; ``None`` for a source tree."""

    @property
    def path(self) -> Path:
        return Path(self.location)

    @property
    def key(self) -> str:
        """Identifies the source in logs, events and the report."""
        return f"{self.name}-{self.version}" if self.version else self.name

    @property
    def size(self) -> int:
        return os.stat(self.location).st_size if self.kind == "sdist" else 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_sdist_name(path: Path) -> bool:
    return path.name.endswith(SDIST_SUFFIXES)


def parse_sdist_name(filename: str) -> tuple[NormalizedName, Version]:
    """packaging's ``parse_sdist_filename``, for every suffix of :data:`SDIST_SUFFIXES`.

    packaging knows only ``.tar.gz`` and ``.zip`` (the current standard); the name and
    version part of a legacy sdist's name follows the same rules.

    :raises InvalidSdistFilename: not an sdist suffix, or no valid name and version.
    """
    suffix = next((suffix for suffix in SDIST_SUFFIXES if filename.endswith(suffix)), None)
    if suffix is None:
        raise InvalidSdistFilename(f"Invalid sdist filename (extension must be one of {SDIST_FORMATS}): {filename!r}")
    if suffix in (".tar.gz", ".zip"):
        return parse_sdist_filename(filename)
    stand_in = filename[: -len(suffix)] + ".tar.gz"
    try:
        return parse_sdist_filename(stand_in)
    except InvalidSdistFilename as exc:
        raise InvalidSdistFilename(str(exc).replace(repr(stand_in), repr(filename))) from None


def sdist_source(path: Path, *, sha256: str | None = None) -> Source:
    """A source for one sdist file; name and version come from its filename.

    ``sha256`` saves reading the file again when the digest is already known.
    """
    try:
        name, version = parse_sdist_name(path.name)
    except InvalidSdistFilename:
        raise SourceError(
            f"{path}: not an sdist filename (expected NAME-VERSION followed by one of {SDIST_FORMATS})"
        ) from None
    try:
        digest = sha256 or file_sha256(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file: {exc.strerror}") from None
    return Source(location=str(path.resolve()), kind="sdist", name=name, version=str(version), sha256=digest)


def tree_source(path: Path) -> Source:
    """A source for a project folder; name and version come from static ``[project]`` metadata."""
    try:
        name, version = static_project(path)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path / 'pyproject.toml'}: cannot be parsed: {exc}") from None
    return Source(location=str(path.resolve()), kind="tree", name=canonicalize_name(name or path.resolve().name),
                  version=version)


def static_project(folder: Path) -> tuple[str | None, str | None]:
    """The name and version that ``folder``'s ``pyproject.toml`` states in ``[project]``; each ``None`` where it
    states none (no file, not there, or dynamic). ``OSError`` or ``ValueError`` if it cannot be read or parsed."""
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return None, None
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    name, version = project.get("name"), project.get("version")
    return (name if isinstance(name, str) else None,
            version if isinstance(version, str) and "version" not in project.get("dynamic", []) else None)


def compiles(source: Source) -> bool:
    """Whether ``source`` holds code in a compiled language (C, C++, Cython, Rust, Fortran, CUDA).

    Such builds take seconds to minutes, pure-Python ones about a second: with no
    history, builds that compile start first. Listing a compressed tar decompresses
    it, so call this off the scheduler's thread. The listing keeps extraction's bounds
    (this runs in the main process); an archive that cannot be read or is refused
    counts as not compiling, and its build reports the damage.
    """
    names: Iterable[str]
    try:
        names = _tree_files(source.path) if source.kind == "tree" else list_member_names(source.path)
    except (OSError, SourceError) as exc:
        logger.debug("%s: cannot list its files (%s); counted as not compiling", source.path, exc)
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
    """One line per duplicate dropped and per entry of a folder of sdists that is not built, with why."""
    rejected: list[tuple[Path, str]]
    """Sources that cannot be built at all (unreadable, misnamed), with why; each fails alone."""

    def take_sources(self) -> Iterator[Source]:
        """The sources in order, each let go of as it is taken (:attr:`sources` ends empty): a run that queues them
        then holds each only until its build ends, not thousands of them to its end."""
        sources = self.sources
        sources.reverse()
        while sources:
            yield sources.pop()


def collect_sources(paths: Iterable[Path]) -> Collected:
    """Expand paths into sources, dropping duplicates (same name and version).

    A path that is neither an sdist, a source tree nor a folder holding sdists is
    a :class:`UsageError`; an sdist that cannot be read is rejected on its own; what
    else a folder of sdists holds is skipped, each entry with a note saying why.
    """
    sources: dict[str, Source] = {}
    notes: list[str] = []
    rejected: list[tuple[Path, str]] = []
    for path in paths:
        candidates: Iterable[tuple[Path, Callable[[Path], Source]]]
        if path.is_dir() and not is_source_tree(path):
            # Names, each made a Path only as it is looked at: a folder of thousands listed as paths held them
            # all at once (each its parts, its string, its name interned: about 1 KB apiece).
            found: list[str] = []
            for name in sorted(os.listdir(path)):
                entry = path / name
                if entry.is_file() and is_sdist_name(entry):
                    found.append(name)
                else:
                    notes.append(f"skipped {entry}: {_not_an_sdist(entry)}")
            if not found:
                raise UsageError(f"{path}: folder holds no sdist ({SDIST_FORMATS}) and is not a source tree")
            candidates = ((path / name, sdist_source) for name in found)
        elif path.is_dir():
            candidates = [(path, tree_source)]
        elif path.is_file():
            if not is_sdist_name(path):
                raise UsageError(f"{path}: {_not_an_sdist(path)}; name an sdist, a source tree or a folder of sdists")
            candidates = [(path, sdist_source)]
        else:
            raise UsageError(f"{path}: no such file or folder")
        for candidate, make in candidates:
            try:
                source = make(candidate)
            except SourceError as exc:
                rejected.append((candidate, exc.message))
                continue
            key = source.key if source.version else source.location
            if key in sources:
                notes.append(f"{source.path}: same name and version as {sources[key].path}; built once")
                continue
            sources[key] = source
    return Collected(sources=list(sources.values()), notes=notes, rejected=rejected)


def _not_an_sdist(path: Path) -> str:
    """Why ``path``, found beside sdists or named on the command line, is not built."""
    if path.is_dir():
        return "a folder inside a folder of sdists; name it on its own to build it"
    if not path.is_file():
        return "not a regular file"
    if path.name.endswith(".whl"):
        return "a wheel, not a source"
    return f"not an sdist ({SDIST_FORMATS})"
