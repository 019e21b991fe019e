"""The expected duration of each queued build: history's, or, for a compiled package the compiler cache has
seen before, the time to compile what changed (``policy/changes.py``).

After each successful build that went through the compiler cache, the package's record is
updated from the digests of its compiled sources and what the build spent: one JSON file per
package and interpreter, beside the history (``STATE/compiled-sources/PYTHON/NAME.json``),
written whole and renamed into place. When a package with a record is queued again, its sdist's
compiled sources are read (``build/digests.py``) and the prediction replaces history's median.
Packages without a record keep history's estimate; a run without a compiler cache (everything
compiles), without history, or on a farm (each machine's cache holds what that machine compiled)
predicts nothing and records nothing. A record whose package's cache folder is gone (``trim`` removed it,
or the user did) is removed as its package is queued, which is expected to take its full compile; that
build starts a new record. Like the history, the records
are advisory: one that cannot be read or written is logged and counts as none. A record's time is its last use
(``lastuse``: moved forward as a queued package reads it, at most daily): one no run used for the state
folder's age goes (:func:`prune_records`, from ``pruning.py``).

Thread use: :meth:`Predictor.predict` runs where builds are queued (the download threads),
:meth:`Predictor.look` on the estimates thread, :meth:`Predictor.built` on the scheduler's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import NormalizedName

from orchestrator import lastuse
from orchestrator.atomic import atomic_write
from orchestrator.build.compilercache import CompilerCache
from orchestrator.build.digests import source_files
from orchestrator.build.sources import Source
from orchestrator.jobs import BuildResult, Status
from orchestrator.policy.changes import CompileRecord, predict_duration, seen_in, updated_record
from orchestrator.policy.history import History

__all__ = ["RECORDS_FOLDER", "Prediction", "Predictor", "prune_records", "read_record"]

logger = logging.getLogger(__name__)

RECORDS_FOLDER = "compiled-sources"
"""The folder of the records, beside the history file."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """What the scheduler is told of a queued build."""

    duration: float | None
    """Seconds it should take; ``None``: no estimate."""
    look: bool
    """Its compiled sources are to be read off the queueing thread (:meth:`Predictor.look`), to be recorded
    after its build: it has no record yet, but it may compile."""


class Predictor:
    """Predicts durations from the records beside the history file ``history_path`` (``None``: history's
    estimates only: no history, no compiler cache, or a farm) for interpreter ``python``; ``history`` tells
    which packages compiled before the records existed."""

    def __init__(self, history_path: Path | None, *, python: str, history: History | None,
                 cache: CompilerCache | None = None) -> None:
        self._folder = history_path.parent / RECORDS_FOLDER / python if history_path is not None else None
        self._cache = cache
        self._history = history
        self._python = python
        self._seen: dict[str, tuple[NormalizedName, frozenset[str]]] = {}
        """The name and the digests of the compiled sources of each queued source (by its path), for its record
        (only the digests: a queue of thousands must not hold every identifier of their sources)."""
        self._lock = threading.Lock()

    def predict(self, source: Source, duration: float | None) -> Prediction:
        """The duration to queue ``source`` with, given history's ``duration`` for it.

        A package with a record has its compiled sources read here, which costs a pass over its sdist
        (``build/digests.py``: tens of milliseconds for most, a few hundred for an 8 MB one).
        """
        if self._folder is None:
            return Prediction(duration=duration, look=False)
        record = read_record(self._folder, source.name)
        if record is not None:
            lastuse.mark_used(self._folder / f"{source.name}.json")
        if record is not None and self._cache is not None and not self._cache.package_dir(source.name).is_dir():
            with contextlib.suppress(OSError):  # what it says the cache holds, the cache no longer does
                (self._folder / f"{source.name}.json").unlink()
            full = record.other_s + record.compile_s if record.compile_s is not None else duration
            return Prediction(duration=full, look=True)  # everything compiles; its sources start a new record
        if record is None:
            compiled = duration is None or (
                self._history is not None and self._history.compiled(source.name, python=self._python))
            return Prediction(duration=duration, look=compiled)
        files = source_files(source)
        if files is None:
            return Prediction(duration=duration, look=False)
        with self._lock:
            self._seen[str(source.path)] = (source.name, seen_in(files))
        predicted = predict_duration(record, files)
        if predicted is not None:
            logger.debug("%s: expected %.1f s (history: %s)", source.key, predicted, duration)
        return Prediction(duration=predicted if predicted is not None else duration, look=False)

    def look(self, source: Source) -> None:
        """Read the compiled sources of ``source``, to record them once it is built."""
        if self._folder is None:
            return
        files = source_files(source)
        if files:
            with self._lock:
                self._seen[str(source.path)] = (source.name, seen_in(files))

    def built(self, result: BuildResult) -> None:
        """Update the record of ``result``'s package when it was built through the compiler cache."""
        with self._lock:
            name, seen = self._seen.pop(result.source, (None, None))
        if (self._folder is None or name is None or not seen or result.status is not Status.BUILT
                or result.compiler_hits is None or result.compiler_misses is None):
            return
        if result.compiler_hits + result.compiler_misses == 0:
            return  # ccache ran, but compiled nothing it could keep: the sources were not its input
        record = updated_record(read_record(self._folder, name), version=result.version or "", seen=seen,
                                wall_s=result.wall_s, backend_s=result.phases.get("backend", result.wall_s),
                                hits=result.compiler_hits, misses=result.compiler_misses)
        path = self._folder / f"{name}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as out:
                out.write(json.dumps(_to_json(record)).encode())
        except OSError as exc:
            logger.warning("could not record the compiled sources of %s in %s: %s", name, path, exc)


def read_record(folder: Path, name: str) -> CompileRecord | None:
    """The record of package ``name`` in ``folder`` (one interpreter's); ``None`` if none can be read."""
    path = folder / f"{name}.json"
    try:
        return _from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("cannot read the compiled sources recorded in %s (%s); predicting without them", path, exc)
        return None


def prune_records(folder: Path, *, unused_since: float) -> tuple[int, int]:
    """Remove the records under ``folder`` (``STATE/compiled-sources``) no run used since ``unused_since``: how
    many, and their bytes."""
    removed = freed = 0
    with contextlib.suppress(OSError):
        for interpreter in folder.iterdir():
            if interpreter.is_dir() and not interpreter.is_symlink():
                count, size = lastuse.prune_files(interpreter, unused_since)
                removed, freed = removed + count, freed + size
    return removed, freed


def _to_json(record: CompileRecord) -> dict[str, Any]:
    return {"version": record.version, "other_s": round(record.other_s, 3),
            "compile_s": None if record.compile_s is None else round(record.compile_s, 3),
            "seen": [sorted(digests) for digests in record.seen]}


def _from_json(data: dict[str, Any]) -> CompileRecord:
    compile_s = data["compile_s"]
    return CompileRecord(version=str(data["version"]), other_s=float(data["other_s"]),
                         compile_s=None if compile_s is None else float(compile_s),
                         seen=tuple(frozenset(str(digest) for digest in digests) for digests in data["seen"]))
