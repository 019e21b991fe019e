"""The compiled-language files of an sdist or source tree: digests, compile weight, what each includes.

One streaming pass over the archive through the bounded reader of ``archive.py``: a tar is a
stream, so its members are hashed as tarfile reads past them, and only compiled-language members
are read at all. Includes, ``#define`` lines and identifiers are read with regular expressions,
not a preprocessor: the prediction (``policy/changes.py``) needs only to know which units may see
a changed header, and a name matched too often only predicts a build as longer.

A unit's weight stands for its compile time. Bytes do not: regex's ``_regex_unicode.c`` is 70% of
its units' bytes, mostly tables, and compiles in a fraction of the time of ``_regex.c``, which holds
88% of their semicolons. So C and C++ weigh a semicolon each (a statement or declaration), a line
of Cython :data:`CYTHON_LINE` (the C statements Cython writes for it), a line of Fortran or Rust
one (blank lines too: telling them apart costs a pass over the text), and every unit
:data:`UNIT_BASE` more for the compiler's start and the headers it parses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from orchestrator.build.archive import CORRUPT_ERRORS, MAX_MEMBERS, open_archive
from orchestrator.build.members import archive_members
from orchestrator.build.sources import Source
from orchestrator.errors import SourceError
from orchestrator.policy.changes import SourceFile

__all__ = ["HEADER_SUFFIXES", "MAX_READ_BYTES", "UNIT_SUFFIXES", "source_files"]

logger = logging.getLogger(__name__)

UNIT_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".pyx", ".f", ".f90", ".cu", ".rs")
"""What a backend hands a compiler, one call each (a Cython ``.pyx`` through its C)."""
HEADER_SUFFIXES = (".h", ".hh", ".hpp", ".hxx", ".inc", ".pxd", ".pxi")
"""What those include."""
UNIT_BASE = 150
"""The weight of compiling an empty unit that includes ``Python.h`` (0.1-0.2 s, at about 1 ms a statement)."""
CYTHON_LINE = 8
"""C statements per line of Cython (pyyaml's ``_yaml.pyx``, in the C it becomes)."""
MAX_READ_BYTES = 256 * 1024 * 1024
"""Compiled-language bytes read from one source at most; past them it gets no prediction."""

# Not anchored at line starts: ten times faster on megabytes of generated C, and a match in a comment only
# predicts longer.
_C_INCLUDE = re.compile(rb'#[ \t]*include[ \t]*[<"]([^>"\n]+)[>"]')
_NOT_BUILT = frozenset({"test", "tests", "testing", "benchmark", "benchmarks", "bench", "example", "examples", "doc",
                        "docs"})
_DEFINE = re.compile(rb"#[ \t]*define[ \t]+(\w+)[^\n]*")
_IDENTIFIER = re.compile(rb"[A-Za-z_]\w*")
_CYTHON_INCLUDE = re.compile(
    rb'^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+cimport|cimport[ \t]+([\w.]+)|include[ \t]+["\']([^"\'\n]+)["\'])',
    re.MULTILINE)


def source_files(source: Source) -> list[SourceFile] | None:
    """The compiled-language files of ``source``; ``None`` when it cannot be read within the bounds
    (its build reports why; here it only goes without a prediction). Call it off the scheduler's thread."""
    problem: BaseException
    try:
        return _units(list(_tree(source.path) if source.kind == "tree" else _archive(source.path)))
    except SourceError as exc:
        problem = exc
    except CORRUPT_ERRORS as exc:
        problem = exc
    logger.debug("%s: cannot read its compiled sources (%s); no prediction", source.path, problem)
    return None


def _units(files: list[SourceFile]) -> list[SourceFile]:
    """``files``, less the units a backend does not compile on its own: those other files include (by base
    name: msgpack's ``_packer.pyx``), a ``.pyx`` shipped with its C (the C is compiled and includes it), and
    those of tests, benchmarks or examples, by their folder (kiwisolver's ``tests/*.cpp``) or name (multidict's
    ``_testcapi.c``)."""
    included = {name for file in files for name in file.includes}
    compiled_c = {_stem(file.path) for file in files if file.path.lower().endswith((".c", ".cpp"))}
    cython = {_stem(file.path) for file in files if file.path.lower().endswith(".pyx")}
    result = []
    for file in files:
        stem, base = _stem(file.path), file.path.rsplit("/", 1)[-1]
        folders = {folder.lower() for folder in file.path.split("/")[:-1]}
        if file.unit and (base in included or folders & _NOT_BUILT or base.lower().startswith(("test", "_test"))
                          or file.path.lower().endswith(".pyx") and stem in compiled_c):
            file = dataclasses.replace(file, unit=False, weight=0)
        elif file.unit and stem in cython and not file.path.lower().endswith(".pyx"):
            file = dataclasses.replace(file, includes=file.includes | {f"{stem.rsplit('/', 1)[-1]}.pyx"})
        result.append(file)
    return result


def _stem(path: str) -> str:
    return path.rsplit(".", 1)[0]


def _archive(path: Path) -> Iterator[SourceFile]:
    read = 0
    with open_archive(path) as container:
        for count, member in enumerate(archive_members(container, path.name), start=1):
            if count > MAX_MEMBERS:
                raise SourceError(f"{path.name}: more than {MAX_MEMBERS} members")
            relative = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if member.kind != "file" or member.open is None or not relative.lower().endswith(
                    UNIT_SUFFIXES + HEADER_SUFFIXES):
                continue
            with member.open() as stream:
                file = _read(relative, stream, MAX_READ_BYTES - read)
            read += file.size
            yield file


def _tree(root: Path) -> Iterator[SourceFile]:
    read = 0
    for folder, folders, names in os.walk(root):
        folders[:] = sorted(folder for folder in folders if not folder.startswith("."))  # .git, .venv, .tox
        for name in sorted(names):
            if not name.lower().endswith(UNIT_SUFFIXES + HEADER_SUFFIXES):
                continue
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as opened:
                file = _read(path.relative_to(root).as_posix(), opened, MAX_READ_BYTES - read)
            read += file.size
            yield file


def _read(relative: str, stream: IO[bytes], budget: int) -> SourceFile:
    """One file's record, reading at most ``budget`` bytes of it (one more says it is over)."""
    data = stream.read(budget + 1)
    if len(data) > budget:
        raise SourceError(f"{relative}: over the {MAX_READ_BYTES} bytes of compiled sources read for a prediction")
    lower = relative.lower()
    includes = {os.path.basename(name.decode("utf-8", "replace")) for name in _C_INCLUDE.findall(data)}
    cython = lower.endswith((".pyx", ".pxd", ".pxi"))
    if cython:
        for cimported, module, included in _CYTHON_INCLUDE.findall(data):
            name = (cimported or module).decode("ascii", "replace")
            includes.add(f"{name.rsplit('.', 1)[-1]}.pxd" if name else os.path.basename(included.decode()))
    unit = lower.endswith(UNIT_SUFFIXES)
    body = data if unit else _DEFINE.sub(b"", data)
    defines = tuple((match[1].decode("ascii", "replace"), _digest(match[0])) for match in _DEFINE.finditer(data))
    if not unit:
        weight = 0
    elif cython or lower.endswith((".f", ".f90", ".rs")):
        weight = UNIT_BASE + data.count(b"\n") * (CYTHON_LINE if cython else 1)
    else:
        weight = UNIT_BASE + data.count(b";")
    return SourceFile(path=relative, size=len(data), digest=_digest(data), unit=unit, weight=weight,
                      includes=frozenset(includes), body="" if unit else _digest(body),
                      defines=defines, names=frozenset(name.decode("ascii") for name in set(_IDENTIFIER.findall(body))))


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
