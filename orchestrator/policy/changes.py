"""How long a new release of a compiled package will build, from what changed since the releases before it.

With a compiler cache, a release that changed one small file of twenty compiles that file:
the previous release's full-compile time, history's estimate, is then wrong by the compile
of the nineteen others. Here a package's compiled sources are compared, by digest, with those
of its recent builds (:class:`CompileRecord`). A translation unit (``.c``, ``.cpp``, ``.pyx``,
...) misses the cache when no recent build compiled its text, or when it includes a header
(``.h``, ``.pxd``, ...) that changed. A header whose only change is in ``#define`` lines (a
version bump in ``version.h``) changes only the units that name a redefined macro: the others
preprocess to the same text, which ccache then finds. The prediction is the time the last
build spent outside its compilations plus the package's full-compile time times the share of
its compile work (:attr:`SourceFile.weight`) that misses::

    duration = other_s + compile_s x (weight of the units that miss / weight of every unit)

Pure: the caller reads the sdist (``build/digests.py``) and keeps the records (``predict.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["BACKEND_FLOOR_S", "SEEN_BUILDS", "CompileRecord", "SourceFile", "missed_share", "predict_duration",
           "seen_in", "updated_record"]

BACKEND_FLOOR_S = 0.4
"""Seconds of ``build_wheel`` that are not compiling when every compilation hits: the median of the
upgrade benchmark's ten compiled packages rebuilt with every compilation a hit was 0.3 s (0.2-1.2)."""

SEEN_BUILDS = 3
"""Recent builds whose file digests count as in the compiler cache."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFile:
    """One compiled-language file of an sdist."""

    path: str
    """Relative to the sdist's top folder, ``/``-separated."""
    size: int
    """Bytes."""
    digest: str
    """Of its content (any stable hash)."""
    unit: bool
    """A translation unit the backend hands a compiler (``.c``, ``.pyx``, ...), not a header (``.h``, ``.pxd``)."""
    weight: int = 0
    """How much compiling it takes, relative to the other units of its sdist (``build/digests.py``)."""
    includes: frozenset[str] = frozenset()
    """The base names of the files it includes or cimports (``#include "x/y.h"``: ``y.h``)."""
    body: str = ""
    """The digest of its content less its ``#define`` lines (a header's); empty: not told apart from ``digest``."""
    defines: tuple[tuple[str, str], ...] = ()
    """Each macro it ``#define``s, with the digest of its line."""
    names: frozenset[str] = frozenset()
    """Every identifier it mentions (comments and strings too)."""

    @property
    def digests(self) -> frozenset[str]:
        """What a build of it leaves known: its digest, its body's and those of its ``#define`` lines."""
        return frozenset({self.digest, *([self.body] if self.body else []), *(line for _, line in self.defines)})


@dataclass(frozen=True, slots=True, kw_only=True)
class CompileRecord:
    """What the recent builds of one package compiled, and what its last build spent."""

    version: str
    """The version of the last build."""
    other_s: float
    """Seconds of the last build spent outside its compilations."""
    compile_s: float | None
    """Seconds to compile every unit, from the last build that missed; ``None``: no build missed yet."""
    seen: tuple[frozenset[str], ...]
    """The digests of the files of each of the last :data:`SEEN_BUILDS` builds, the most recent first."""


def missed_share(files: Sequence[SourceFile], seen: Iterable[frozenset[str]]) -> float:
    """The share of the compile work of ``files`` that a cache holding the builds of ``seen`` misses.

    A unit misses when its text was not seen; when it includes, directly or through other headers,
    a changed file (matched by base name: which of two headers of one name the compiler finds
    depends on the include path, so both count); or when it names a macro whose ``#define`` line
    changed in a header whose other lines did not.
    """
    known = frozenset().union(*seen)
    changed: set[str] = set()
    macros: set[str] = set()
    for file in files:
        if file.digest in known:
            continue
        if not file.unit and file.body and file.body in known:
            macros.update(name for name, line in file.defines if line not in known)
        else:
            changed.add(_base(file.path))
    grew = True
    while grew:  # a header that includes a changed file, or names a redefined macro, changes too, at any depth
        grew = False
        for file in files:
            name = _base(file.path)
            if not file.unit and name not in changed and (changed & file.includes or macros & file.names):
                changed.add(name)
                grew = True
    units = [file for file in files if file.unit]
    total = sum(file.weight for file in units)
    if total == 0:
        return 0.0
    missed = sum(file.weight for file in units
                 if file.digest not in known or changed & file.includes or macros & file.names)
    return missed / total


def predict_duration(record: CompileRecord | None, files: Sequence[SourceFile]) -> float | None:
    """Seconds the build of ``files`` should take after the builds of ``record``; ``None``: no prediction
    (no record, or none of its builds compiled anything, so its full-compile time is unknown)."""
    if record is None or record.compile_s is None:
        return None
    return record.other_s + record.compile_s * missed_share(files, record.seen)


def seen_in(files: Iterable[SourceFile]) -> frozenset[str]:
    """What a build of ``files`` leaves known, for :func:`updated_record`."""
    return frozenset().union(*(file.digests for file in files))


def updated_record(record: CompileRecord | None, *, version: str, seen: frozenset[str], wall_s: float,
                   backend_s: float, hits: int, misses: int) -> CompileRecord:
    """``record`` after a successful build whose files left ``seen`` known (:func:`seen_in`), that took
    ``wall_s`` (``backend_s`` of it in ``build_wheel``), and whose cacheable compilations hit ``hits``
    times and missed ``misses`` times.

    A build that missed spent ``build_wheel`` less :data:`BACKEND_FLOOR_S` compiling its misses; spread
    over every cacheable compilation, that is the full-compile time (each compilation taken as costing
    the same). A build that missed nothing says nothing of it: the last estimate stays.
    """
    compiling = max(backend_s - min(backend_s, BACKEND_FLOOR_S), 0.0) if misses else 0.0
    compile_s = compiling * (hits + misses) / misses if misses else (record.compile_s if record else None)
    return CompileRecord(version=version, other_s=max(wall_s - compiling, 0.0), compile_s=compile_s,
                         seen=(seen, *(record.seen if record else ()))[:SEEN_BUILDS])


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]

