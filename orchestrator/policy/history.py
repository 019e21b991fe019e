"""What past builds cost: peak memory and duration per package, kept in SQLite.

The history is advisory: it feeds predictions (:func:`predict_need`, queue order)
and never stops a run. A corrupt database is moved aside and replaced; one that
cannot be opened at all is replaced by an in-memory one for this run; a failed
read or write is logged and treated as "no history".

Several processes may share the file: it is opened in WAL mode with a busy
timeout, and each record is one short ``BEGIN IMMEDIATE`` transaction. Within a
process a :class:`History` may be shared between threads: it holds one
connection (``check_same_thread=False``) and serialises every use with a lock.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import platformdirs
from packaging.utils import canonicalize_name

__all__ = [
    "SUCCESS",
    "BuildRecord",
    "History",
    "default_state_dir",
    "predict_need",
]

logger = logging.getLogger(__name__)

SUCCESS: Final = "success"
"""The status of a build that produced a wheel; only these feed predictions."""

_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = (
    """
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        sdist_sha256 TEXT,
        python TEXT NOT NULL,
        peak_rss_bytes INTEGER,
        wall_s REAL NOT NULL,
        cpu_s REAL,
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL
    )
    """,
    "CREATE INDEX builds_by_name ON builds (name, status, finished_at)",
)
_BUSY_TIMEOUT_S: Final = 30.0
# SQLite's primary result codes for a damaged file; extended codes keep these in the low byte.
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


def default_state_dir() -> Path:
    """The per-user folder for orchestrator's state (the platform's cache folder)."""
    return Path(platformdirs.user_cache_dir("orchestrator", appauthor=False))


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRecord:
    """One finished build, as measured by the worker."""

    name: str
    """The project name; stored canonicalised."""
    version: str
    """The version built."""
    sdist_sha256: str | None
    """The sdist's hash; ``None`` when built from a source tree."""
    python: str
    """The interpreter built for, such as ``cpython-3.11``."""
    peak_rss_bytes: int | None
    """Peak resident memory of the build's whole process tree; ``None`` if not measured."""
    wall_s: float
    """Seconds from start to finish."""
    cpu_s: float | None
    """CPU seconds used by the build's process tree; ``None`` if not measured."""
    status: str
    """:data:`SUCCESS`, or why the build did not produce a wheel."""
    started_at: float
    """Seconds since the epoch."""
    finished_at: float
    """Seconds since the epoch."""


HEADROOMS: Final = (0.2, 0.1, 0.05)
"""Added to the largest recent peak when one, two, or three or more recent peaks agree
within :data:`SETTLED_SPREAD`; peaks that scatter more get the first, widest margin."""
SETTLED_SPREAD: Final = 0.1
"""How far (a fraction of the smallest) the largest of the recent peaks may be above the smallest."""
RECENT_BUILDS: Final = 5
"""Successful builds of a package whose peaks feed its prediction."""
RECENT_DURATIONS: Final = 3
"""Successful builds of a package whose median wall time is its expected duration."""


def predict_need(peaks: Sequence[int], default: int, *, override: int | None = None) -> int:
    """Bytes to reserve for a build: the user's override, else the largest of the
    recent ``peaks`` plus headroom, else ``default``.

    The headroom narrows with each recent peak that agrees with the others
    (:data:`HEADROOMS`): a wide margin on a well-known package would only keep memory
    from other builds, and the narrowest covers what sampling RSS can miss.
    """
    if override is not None:
        return override
    if not peaks:
        return default
    largest = max(peaks)
    agreeing = len(peaks) if largest <= min(peaks) * (1 + SETTLED_SPREAD) else 1
    return math.ceil(largest * (1 + HEADROOMS[min(agreeing, len(HEADROOMS)) - 1]))


class History:
    """The build history in one SQLite file; see the module docstring for the guarantees."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._connection = self._open_or_recover(path)

    def record(self, rec: BuildRecord) -> None:
        """Store one finished build, in its own transaction."""
        row = (
            canonicalize_name(rec.name),
            rec.version,
            rec.sdist_sha256,
            rec.python,
            rec.peak_rss_bytes,
            rec.wall_s,
            rec.cpu_s,
            rec.status,
            rec.started_at,
            rec.finished_at,
        )
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                try:
                    self._connection.execute(
                        "INSERT INTO builds (name, version, sdist_sha256, python,"
                        " peak_rss_bytes, wall_s, cpu_s, status, started_at, finished_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    self._connection.execute("COMMIT")
                except BaseException:
                    if self._connection.in_transaction:
                        self._connection.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                logger.warning(
                    "could not record the build of %s %s in %s: %s",
                    rec.name,
                    rec.version,
                    self.path,
                    exc,
                )

    def recent_peaks(self, name: str, *, python: str, version: str | None = None) -> list[int]:
        """Peak memory of the :data:`RECENT_BUILDS` most recent successful builds of ``name``
        for interpreter ``python`` (of ``version`` first), the most recent first."""
        values = self._latest_success("peak_rss_bytes", name, python, version, RECENT_BUILDS)
        return [int(value) for value in values]

    def expected_duration(self, name: str, *, python: str, version: str | None = None) -> float | None:
        """Median wall time of the :data:`RECENT_DURATIONS` most recent successful builds
        of ``name`` for interpreter ``python``, preferring ``version``: one build slowed by
        a crowded machine does not reorder the next run."""
        values = self._latest_success("wall_s", name, python, version, RECENT_DURATIONS)
        return float(statistics.median(values)) if values else None

    def close(self) -> None:
        """Close the database; the history cannot be used afterwards."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _latest_success(
        self, column: Literal["peak_rss_bytes", "wall_s"], name: str, python: str, version: str | None, count: int
    ) -> list[int | float]:
        # Another interpreter builds other code (extensions, backports) at another cost: never mix them.
        query = (
            f"SELECT {column} FROM builds"
            f" WHERE name = ? AND python = ? AND status = ? AND {column} IS NOT NULL"
            " ORDER BY version = ? DESC, finished_at DESC, id DESC LIMIT ?"
        )
        with self._lock:
            try:
                found = self._connection.execute(
                    query, (canonicalize_name(name), python, SUCCESS, version, count)
                ).fetchall()
            except sqlite3.Error as exc:
                logger.warning(
                    "could not read the history of %s from %s: %s", name, self.path, exc
                )
                return []
        return [value for (value,) in found]

    @staticmethod
    def _open_or_recover(path: Path) -> sqlite3.Connection:
        try:
            return _open(path)
        except _NewerSchema as exc:
            logger.warning(
                "the build history %s was written by a newer orchestrator (%s); leaving it"
                " alone and keeping history in memory for this run",
                path,
                exc,
            )
            return _open(None)
        except (sqlite3.Error, OSError, _Damaged) as exc:
            if not _is_damage(exc):
                logger.warning(
                    "cannot open the build history %s (%s); keeping history in memory"
                    " for this run",
                    path,
                    exc,
                )
                return _open(None)
            damage = exc
        try:
            aside = _move_aside(path)
            logger.warning(
                "the build history %s is damaged (%s); moved it to %s and starting afresh",
                path,
                damage,
                aside,
            )
            return _open(path)
        except (sqlite3.Error, OSError, _Damaged) as exc:
            logger.warning(
                "the build history %s is damaged (%s) and cannot be replaced (%s); keeping"
                " history in memory for this run",
                path,
                damage,
                exc,
            )
            return _open(None)


class _Damaged(Exception):
    """The file opens but fails SQLite's quick check."""


class _NewerSchema(Exception):
    """The file holds a schema version this orchestrator does not know."""


def _is_damage(exc: BaseException) -> bool:
    if isinstance(exc, _Damaged):
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # None when the sqlite3 module raised it itself
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    # Without a code: "locked", "unable to open" and I/O errors are OperationalError, not damage.
    return not isinstance(exc, sqlite3.OperationalError)


def _move_aside(path: Path) -> Path:
    """Rename the damaged file (and drop its journal files); return the new name."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    # A stale WAL belongs to the damaged file and must not be replayed into the new one.
    for suffix in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return aside


def _open(path: Path | None) -> sqlite3.Connection:
    """Connect, configure and create the schema; ``None`` opens an in-memory database."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        ":memory:" if path is None else path,
        timeout=_BUSY_TIMEOUT_S,
        isolation_level=None,  # transactions are explicit
        check_same_thread=False,  # History serialises use with its own lock
    )
    try:
        _prepare(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _prepare(connection: sqlite3.Connection) -> None:
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode not in ("wal", "memory"):
        # Some file systems (network mounts) cannot share WAL's index; still usable.
        logger.debug("the build history stays in %s journal mode", mode)
    connection.execute("PRAGMA synchronous = NORMAL")
    (check,) = connection.execute("PRAGMA quick_check").fetchone()
    if check != "ok":
        raise _Damaged(f"quick check: {check}")
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version == 0:
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        elif version != _SCHEMA_VERSION:
            raise _NewerSchema(f"schema version {version}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
