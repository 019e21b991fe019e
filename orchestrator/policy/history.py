"""What past builds cost (peak memory and duration per package) and the runs they were part of, kept in SQLite.

The history is advisory: it feeds predictions (:func:`predict_need`, queue order)
and never stops a run; ``orchestrate report`` reads it back (``report/history.py``). The
schema and its migrations are in ``history_schema.py``. A damaged database (SQLite says so as it opens the file or
as a read, write or prune meets a damaged page) is moved aside and replaced, and a write that met it is made again in
the new file; one that cannot be opened at all is replaced by an in-memory one for this run; a failed
read or write is logged and treated as "no history". Opening reads no more than it needs: SQLite's quick check of
every page took 0.5 s at 160 MiB (75 ms at a pruned farm's 20 MiB) at the start of every run and report, and
damage in a page no query reads harms nothing until one does.

Several processes may share the file: it is opened in WAL mode with a busy
timeout, and each record is one short ``BEGIN IMMEDIATE`` transaction. Within a
process a :class:`History` may be shared between threads: it holds one
connection (``check_same_thread=False``) and serialises every use with a lock.
:meth:`History.prune` keeps the file bounded (``history_prune.py``).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import platformdirs
from packaging.utils import canonicalize_name

from orchestrator.policy import history_prune
from orchestrator.policy.history_prune import PrunedHistory
from orchestrator.policy.history_schema import NewerSchema, prepare

__all__ = [
    "SUCCESS",
    "BuildRecord",
    "History",
    "PrunedHistory",
    "RunRecord",
    "default_state_dir",
    "predict_need",
]

logger = logging.getLogger(__name__)

SUCCESS: Final = "success"
"""The status of a build that produced a wheel; only these feed predictions."""

_BUSY_TIMEOUT_S: Final = 30.0
CACHE_KIB: Final = 256
"""SQLite's page cache per connection, in KiB. Its default, 2,000 KiB, grew with each build a run recorded (about
0.2 KB a build of the run's own memory); what a query reads past it comes again from the system's file cache."""
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
    outcome: str | None = None
    """The build's status as the run report names it (``built``, ``failed``, ``stopped``); ``None``
    stores ``built`` for :data:`SUCCESS` and ``failed`` for anything else."""
    run_id: int | None = None
    """The run (:class:`RunRecord`) the build was part of; ``None`` before runs were recorded."""
    predicted_rss_bytes: int | None = None
    """The memory need the build was admitted with."""
    host: str | None = None
    """The machine that built it, where builds run on several."""
    compiler_calls: int | None = None
    """Compiler invocations seen by a compiler cache, and how many it answered (hits) or not (misses)."""
    compiler_hits: int | None = None
    compiler_misses: int | None = None
    cpu_wait_s: float | None = None
    """Seconds its processes spent runnable but waiting for a CPU; ``None`` if not measured."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One ``orchestrate build`` run; its counts and end are written when it ends."""

    id: int
    started_at: float
    """Seconds since the epoch."""
    finished_at: float | None
    """``None`` while the run goes on, or if it was killed before it could say it ended."""
    command_line: str
    tool_version: str
    python: str
    """The interpreter built for, such as ``cpython-3.11``."""
    built: int = 0
    failed: int = 0
    downloaded: int = 0
    """Wheels the index had, placed as they were."""
    skipped: int = 0
    """Sources whose wheel the wheelhouse already had."""
    stopped: int = 0
    """Builds stopped, or never started, because the run was stopped."""
    interrupted: str | None = None
    """``SIGINT``/``SIGTERM`` when the run was stopped before its end."""

    @property
    def makespan_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


_BUILD_COLUMNS: Final = (
    "name", "version", "sdist_sha256", "python", "peak_rss_bytes", "wall_s", "cpu_s", "status", "started_at",
    "finished_at", "outcome", "run_id", "predicted_rss_bytes", "host", "compiler_calls", "compiler_hits",
    "compiler_misses", "cpu_wait_s",
)
_RUN_COLUMNS: Final = (
    "id", "started_at", "finished_at", "command_line", "tool_version", "python", "built", "failed", "downloaded",
    "skipped", "stopped", "interrupted",
)


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

    @property
    def persistent(self) -> bool:
        """The history is the file at ``path``, not the in-memory stand-in for one that could not be opened."""
        with self._lock:
            return bool(self._connection.execute("PRAGMA database_list").fetchone()[2])

    def record(self, rec: BuildRecord) -> None:
        """Store one finished build, in its own transaction."""
        values = {name: getattr(rec, name) for name in _BUILD_COLUMNS}
        values["name"] = canonicalize_name(rec.name)
        if rec.outcome is None:
            values["outcome"] = "built" if rec.status == SUCCESS else "failed"
        self._write(
            f"INSERT INTO builds ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            tuple(values.values()),
            what=f"the build of {rec.name} {rec.version}",
        )

    def start_run(self, *, started_at: float, command_line: str, tool_version: str, python: str) -> RunRecord | None:
        """Record that a run started; ``None`` if it could not be recorded (the builds are then kept without it)."""
        run_id = self._write(
            "INSERT INTO runs (started_at, command_line, tool_version, python) VALUES (?, ?, ?, ?)",
            (started_at, command_line, tool_version, python),
            what="the start of this run",
        )
        if run_id is None:
            return None
        return RunRecord(id=run_id, started_at=started_at, finished_at=None, command_line=command_line,
                         tool_version=tool_version, python=python)

    def finish_run(self, run: RunRecord) -> None:
        """Store a run's end, counts and interruption (``run.id`` from :meth:`start_run`)."""
        names = _RUN_COLUMNS[2:]
        self._write(
            f"UPDATE runs SET {', '.join(f'{name} = ?' for name in names)} WHERE id = ?",
            (*(getattr(run, name) for name in names), run.id),
            what="the end of this run",
        )

    def runs(self, last: int) -> list[RunRecord]:
        """The ``last`` runs, the most recent first."""
        found = self._read(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs ORDER BY id DESC LIMIT ?", (last,))
        return [RunRecord(**dict(zip(_RUN_COLUMNS, row, strict=True))) for row in found]

    def names(self, run_ids: Iterable[int]) -> list[str]:
        """The projects the runs ``run_ids`` built (or tried to)."""
        ids = sorted(set(run_ids))
        found = self._read(f"SELECT DISTINCT name FROM builds WHERE run_id IN ({', '.join('?' * len(ids))})",
                           tuple(ids))
        return sorted(name for (name,) in found)

    def builds(self, names: Sequence[str], *, since: float | None = None, earlier_successes: int = 0
               ) -> list[BuildRecord]:
        """The recorded builds of the projects ``names``, in the order they finished.

        With ``since``: those that finished then or later, and the last ``earlier_successes``
        successful builds before it of each project and interpreter (what a comparison needs).
        """
        columns = ", ".join(_BUILD_COLUMNS)
        canonical = sorted({canonicalize_name(name) for name in names})
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(canonical), 500):  # under SQLite's limit of parameters per statement
            chunk = tuple(canonical[start:start + 500])
            among = f"name IN ({', '.join('?' * len(chunk))})"
            if since is None:
                found += self._read(f"SELECT {columns} FROM builds WHERE {among}", chunk)
                continue
            found += self._read(f"SELECT {columns} FROM builds WHERE {among} AND finished_at >= ?", (*chunk, since))
            # Per project and interpreter, the index read backwards from ``since``, a few rows each: a window
            # over every earlier success took three times as long at 40 nights of 3,000 packages.
            found += self._read(
                f"WITH pairs AS (SELECT DISTINCT name, python FROM builds"
                f" WHERE {among} AND status = ? AND finished_at < ?)"
                f" SELECT {', '.join(f'b.{column}' for column in _BUILD_COLUMNS)} FROM pairs JOIN builds AS b"
                f" ON b.id IN (SELECT id FROM builds AS e WHERE e.name = pairs.name AND e.python = pairs.python"
                f" AND e.status = ? AND e.finished_at < ? ORDER BY e.finished_at DESC, e.id DESC LIMIT ?)",
                (*chunk, SUCCESS, since, SUCCESS, since, earlier_successes),
            )
        records = [BuildRecord(**dict(zip(_BUILD_COLUMNS, row, strict=True))) for row in found]
        return sorted(records, key=lambda record: record.finished_at)

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

    def compiled(self, name: str, *, python: str) -> bool:
        """Whether a successful build of ``name`` for ``python`` went through the compiler cache and called it."""
        found = self._read("SELECT 1 FROM builds WHERE name = ? AND python = ? AND status = ? AND compiler_calls > 0"
                           " LIMIT 1", (canonicalize_name(name), python, SUCCESS), what=name)
        return bool(found)

    def prune(self, *, unused_since: float) -> PrunedHistory:
        """Remove the runs and builds from before ``unused_since`` that no prediction or report needs
        (``history_prune.py``); what went (nothing, and a warning, if the file cannot be pruned)."""
        with self._lock:
            try:
                return history_prune.prune(self._connection, self.path, unused_since=unused_since, success=SUCCESS)
            except sqlite3.Error as exc:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                logger.warning("could not prune the build history %s: %s", self.path, exc)
                self._replace_if_damaged(exc)
                return PrunedHistory()

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
        found = self._read(query, (canonicalize_name(name), python, SUCCESS, version, count), what=name)
        return [value for (value,) in found]

    def _read(self, query: str, parameters: tuple[object, ...], *, what: str = "builds") -> list[tuple[Any, ...]]:
        """The rows ``query`` finds; none (and a warning) if the file cannot be read."""
        with self._lock:
            try:
                return self._connection.execute(query, parameters).fetchall()
            except sqlite3.Error as exc:
                logger.warning("could not read the history of %s from %s: %s", what, self.path, exc)
                self._replace_if_damaged(exc)
                return []

    def _write(self, statement: str, parameters: tuple[object, ...], *, what: str) -> int | None:
        """Run one statement in its own transaction; the row id it wrote, or ``None`` (and a warning).

        A write that meets a damaged file is made again in the file that replaces it."""
        with self._lock:
            try:
                return self._write_once(statement, parameters)
            except sqlite3.Error as exc:
                failure = exc
            if self._replace_if_damaged(failure):
                try:
                    return self._write_once(statement, parameters)
                except sqlite3.Error as exc:
                    failure = exc
            logger.warning("could not record %s in %s: %s", what, self.path, failure)
            return None

    def _write_once(self, statement: str, parameters: tuple[object, ...]) -> int | None:
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            row_id = self._connection.execute(statement, parameters).lastrowid
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise
        return row_id

    def _replace_if_damaged(self, exc: sqlite3.Error) -> bool:
        """Move the file aside and open a new one if SQLite said the file is damaged (the lock held); whether it did.

        Only SQLite's own code counts here: an error the sqlite3 module raised itself says nothing of the file."""
        if getattr(exc, "sqlite_errorcode", None) is None or not _is_damage(exc):
            return False
        if not self._connection.execute("PRAGMA database_list").fetchone()[2]:
            return False
        self._connection.close()
        self._connection = self._replace_damaged(self.path, exc)
        return True

    @staticmethod
    def _open_or_recover(path: Path) -> sqlite3.Connection:
        try:
            return _open(path)
        except NewerSchema as exc:
            logger.warning(
                "the build history %s was written by a newer orchestrator (%s); leaving it"
                " alone and keeping history in memory for this run",
                path,
                exc,
            )
            return _open(None)
        except (sqlite3.Error, OSError) as exc:
            if not _is_damage(exc):
                logger.warning(
                    "cannot open the build history %s (%s); keeping history in memory"
                    " for this run",
                    path,
                    exc,
                )
                return _open(None)
            return History._replace_damaged(path, exc)

    @staticmethod
    def _replace_damaged(path: Path, damage: BaseException) -> sqlite3.Connection:
        try:
            aside = _move_aside(path)
            logger.warning(
                "the build history %s is damaged (%s); moved it to %s and starting afresh",
                path,
                damage,
                aside,
            )
            return _open(path)
        except (sqlite3.Error, OSError) as exc:
            logger.warning(
                "the build history %s is damaged (%s) and cannot be replaced (%s); keeping"
                " history in memory for this run",
                path,
                damage,
                exc,
            )
            return _open(None)


def _is_damage(exc: BaseException) -> bool:
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
    connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # negative: in KiB, not pages
    prepare(connection)
