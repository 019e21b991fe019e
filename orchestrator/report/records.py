"""The run's results on disk as they arrive, so that the run's own memory stays flat in the number of builds.

A run of thousands of builds held every result in memory (3 KB a build) and rendered its
reports from those lists. Here each result is written as it arrives, one JSON line, to a spool
file of its kind (unlinked as soon as it is made: nothing is left behind, even by a killed
run), and only what the run and its reports need before a rendering starts stays in memory:
the count of each status, where each line starts, each result's wall time and interval, and
which failed (a few dozen bytes a result). The reports read the results back one at a time
(:meth:`Records.__iter__`, :meth:`Records.longest_first`, :meth:`Records.failed`).

A spool that cannot be written (a full disk) is read back into memory once, with one warning, and the
results are kept there from then on: a full disk costs memory, never the run.

The lines hold every field as it is (floats round-trip exactly through JSON), so a result read
back equals the one written and renders the same. Hand-written: the few on-disk list types on
PyPI (shelve, diskcache, sqlitedict) key by name and pickle; this needs appends, arrival
order, and the JSON the reports are made of.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import os
import tempfile
import threading
import weakref
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from orchestrator.download.results import DownloadResult, DownloadStatus
from orchestrator.install.results import InstallResult, InstallStatus
from orchestrator.jobs import BuildResult, PhaseSpan, Status

__all__ = ["BUILDS", "DOWNLOADS", "INSTALLS", "JsonArray", "Kind", "Records"]

logger = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
"""Bytes read at a time when the results are read back in order: a chunk is held about three times over (read,
joined to the last line's start, split), so 1 MiB was a peak of 3 MiB at every reading of a run of thousands."""


class Result(Protocol):
    """What every kind of result has (``BuildResult``, ``DownloadResult``, ``InstallResult``)."""

    @property
    def status(self) -> Enum: ...

    @property
    def started_at(self) -> float | None: ...

    @property
    def finished_at(self) -> float | None: ...


ResultT = TypeVar("ResultT", bound=Result)


def _encode(result: Any) -> dict[str, Any]:
    """A result's fields as JSON values: enums by value, paths as strings, phase spans as triples."""
    data = {field.name: getattr(result, field.name) for field in dataclasses.fields(result)}
    for name, value in data.items():
        if isinstance(value, Enum):
            data[name] = value.value
        elif isinstance(value, Path):
            data[name] = str(value)
        elif name == "spans":
            data[name] = [(span.phase, span.start, span.end) for span in value]
    return data


def _build(data: dict[str, Any]) -> BuildResult:
    spans = tuple(PhaseSpan(phase=phase, start=start, end=end) for phase, start, end in data["spans"])
    return BuildResult(**{**data, "status": Status(data["status"]), "spans": spans})


def _download(data: dict[str, Any]) -> DownloadResult:
    path = data["path"]
    return DownloadResult(**{**data, "status": DownloadStatus(data["status"]), "path": None if path is None
                             else Path(path)})


def _install(data: dict[str, Any]) -> InstallResult:
    return InstallResult(**{**data, "status": InstallStatus(data["status"])})


@dataclass(frozen=True, slots=True)
class Kind(Generic[ResultT]):
    """One kind of result: how a line reads back into it."""

    name: str
    decode: Callable[[dict[str, Any]], ResultT]


BUILDS: Kind[BuildResult] = Kind("builds", _build)
DOWNLOADS: Kind[DownloadResult] = Kind("downloads", _download)
INSTALLS: Kind[InstallResult] = Kind("installs", _install)


def _wall(result: Result) -> float:
    if result.started_at is None or result.finished_at is None:
        return 0.0
    return result.finished_at - result.started_at


class Records(Generic[ResultT]):
    """The results of one kind, in the order they arrived: appended from any thread, read back from disk.

    The spool file is made at the first append, in ``folder`` (the run's logs folder: the
    temporary folder when that cannot be written, or when ``None``).
    """

    def __init__(self, kind: Kind[ResultT], items: Iterable[ResultT] = (), *, folder: Path | None = None) -> None:
        self.kind = kind
        self.folder = folder
        self.counts: Counter[str] = Counter()
        """Results of each status (its value: ``built``, ``failed``...)."""
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._memory: bytearray | None = None
        """The lines, once the spool could not be written."""
        self._size = 0
        self._starts = array("q")
        """Where each result's line starts in the spool file."""
        self._walls = array("d")
        """Each result's seconds from start to end (0 without both)."""
        self._intervals = array("d")
        """Start and end of each result that has both, flat."""
        self._failed = array("q")
        """The indexes of the failed results."""
        self.extend(items)

    def append(self, result: ResultT) -> None:
        """Write ``result`` to the spool and count it."""
        line = json.dumps(_encode(result), separators=(",", ":")).encode() + b"\n"
        status = result.status.value
        with self._lock:
            self._store(line)
            self._starts.append(self._size)
            self._size += len(line)
            self._walls.append(_wall(result))
            if result.started_at is not None and result.finished_at is not None:
                self._intervals.extend((result.started_at, result.finished_at))
            if status == "failed":
                self._failed.append(len(self._starts) - 1)
            self.counts[status] += 1

    def extend(self, results: Iterable[ResultT]) -> None:
        for result in results:
            self.append(result)

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __getitem__(self, index: int) -> ResultT:
        with self._lock:
            count = len(self._starts)
            index = index + count if index < 0 else index
            start = self._starts[index]  # IndexError past either end
            end = self._starts[index + 1] if index + 1 < count else self._size
        return self._read(start, end)

    def __iter__(self) -> Iterator[ResultT]:
        """Every result, in the order they arrived (those appended once the reading has started excepted)."""
        with self._lock:
            size = self._size
        offset, rest = 0, b""
        while offset < size:
            chunk = self._bytes(offset, min(offset + READ_CHUNK, size))
            offset += len(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield self.kind.decode(json.loads(line))

    def longest_first(self, limit: int | None = None) -> Iterator[tuple[int, ResultT]]:
        """``(index, result)`` from the longest wall time down (ties in arrival order), the first ``limit``."""
        indexes = range(len(self._walls))
        walls = self._walls
        order = (sorted(indexes, key=lambda index: -walls[index]) if limit is None
                 else heapq.nsmallest(limit, indexes, key=lambda index: -walls[index]))
        return ((index, self[index]) for index in order)

    def failed(self) -> Iterator[ResultT]:
        """The failed results, in the order they arrived."""
        return (self[index] for index in list(self._failed))

    def intervals(self) -> Iterator[tuple[float, float]]:
        """``(start, end)`` of each result that has both."""
        flat = self._intervals
        return ((flat[index], flat[index + 1]) for index in range(0, len(flat), 2))

    def _read(self, start: int, end: int) -> ResultT:
        return self.kind.decode(json.loads(self._bytes(start, end)))

    def _bytes(self, start: int, end: int) -> bytes:
        memory = self._memory
        if memory is not None:
            return bytes(memory[start:end])
        assert self._fd is not None
        return os.pread(self._fd, end - start, start)

    def _store(self, line: bytes) -> None:
        """Append ``line`` to the spool, or to memory once the spool could not take one."""
        if self._memory is None:
            try:
                if self._fd is None:
                    self._fd = self._open()
                written = 0
                while written < len(line):  # a regular file takes it whole, but os.write promises no more than some
                    written += os.write(self._fd, line[written:])
                return
            except OSError as exc:
                logger.warning("cannot keep the run's %s on disk (%s): keeping them in memory", self.kind.name,
                               exc.strerror or exc)
                self._memory = bytearray(os.pread(self._fd, self._size, 0) if self._fd is not None else b"")
        self._memory += line

    def _open(self) -> int:
        """A new spool file, unlinked at once; closed when these records go."""
        prefix = f".orchestrate-{self.kind.name}-"
        try:
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=prefix, suffix=".jsonl", dir=self.folder)
        except OSError:
            if self.folder is None:
                raise
            fd, path = tempfile.mkstemp(prefix=prefix, suffix=".jsonl")
        os.unlink(path)
        weakref.finalize(self, os.close, fd)
        return fd


class JsonArray(list):  # type: ignore[type-arg]
    """A JSON array made item by item as ``json.dump`` writes it, so that it never exists whole: that encoder
    (the pure-Python one, which ``json.dump`` uses) takes any ``list`` and iterates it. Each iteration calls
    ``items`` again; ``count`` (when known) answers ``len``. Only iteration works: there is nothing to index."""

    def __init__(self, items: Callable[[], Iterable[Any]], count: int | None = None) -> None:
        super().__init__()
        self._items = items
        self._count = count

    @classmethod
    def of(cls, records: Records[Any]) -> JsonArray:
        """The JSON form of each of ``records``."""
        return cls(lambda: (record.to_json() for record in records), len(records))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items())

    def __len__(self) -> int:
        return self._count if self._count is not None else sum(1 for _ in self)

    def __bool__(self) -> bool:
        return bool(self._count) if self._count is not None else any(True for _ in self)
