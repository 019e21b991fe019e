"""Keeping the build history bounded: what :meth:`History.prune` removes, and how, without blocking a run.

At most hourly (``pruning.py``) the runs that started, and the builds that finished, before the state folder's
age (``--prune-unused-after``) go, except, of each package and interpreter, the last :data:`KEPT_SUCCESSES`
successful builds before that age (of each version a run built since, too) and the last one that went through the
compiler cache. That is what ``History.recent_peaks``, ``expected_duration`` and ``compiled`` read, and the
baseline of ``orchestrate report``'s regressions for any run kept: each answers the same before and after. A
package no run built for the age keeps them too: its learned memory need is what keeps its next build, months
later, from being admitted at the default need, and a few rows a package ever built is a small bound. A version no
run built for the age counts as any other of its package (else a package built at a new version each night keeps
a row per version).

What goes is chosen in one read (under WAL a reader blocks no writer) into a temporary table, then deleted in
transactions of :data:`BATCH` rows, so that a run recording builds meanwhile waits one batch, not the whole
prune; a package a run built since the read keeps its rows until the next prune. Two runs pruning at once each
delete what the other has not yet (a row goes once), and the second finds little to compact.

SQLite reuses the pages deleted rows free, so a file pruned hourly stops growing at about the age's worth of
builds. A file whose free pages are over half of it (the first prune of a long history, or a shorter age) is
rewritten once by ``VACUUM``: its write lock lasts as long as copying what is kept, not the whole file.
``auto_vacuum`` is not used: switching an existing file to it takes that ``VACUUM`` anyway, and then it either
moves pages at every commit (``FULL``) or needs a call of its own after each prune (``INCREMENTAL``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["BATCH", "KEPT_SUCCESSES", "PrunedHistory", "prune"]

logger = logging.getLogger(__name__)

KEPT_SUCCESSES: Final = 5
"""Successful builds before the age kept of each package still built: at least ``RECENT_BUILDS`` and
``RECENT_DURATIONS`` (``history.py``) and the report's ``BASELINE_BUILDS`` (``report/history.py``)."""
BATCH: Final = 10_000
"""Rows deleted per transaction: a writer waited 0.44 s at most as the first prune of a year of 3,000 nightly
builds went (``benchmarks/history_size.py``, shared machine)."""
CACHE_KIB: Final = 16_384
"""The connection's page cache while it prunes, in KiB: a batch's deletes touch an index page per package."""

# Partitioning by whether the peak was measured keeps both the last measured peaks (``recent_peaks`` reads only
# those) and the last durations (any successful build).
_PRUNABLE: Final = f"""
    SELECT id FROM builds WHERE finished_at < :cut
    EXCEPT
    SELECT id FROM (
        SELECT id, name, python, version, compiler_calls > 0 AS compiled,
            ROW_NUMBER() OVER (PARTITION BY name, python, peak_rss_bytes IS NULL
                               ORDER BY finished_at DESC, id DESC) AS newest,
            ROW_NUMBER() OVER (PARTITION BY name, python, version, peak_rss_bytes IS NULL
                               ORDER BY finished_at DESC, id DESC) AS newest_of_version,
            ROW_NUMBER() OVER (PARTITION BY name, python, compiler_calls > 0
                               ORDER BY finished_at DESC, id DESC) AS newest_compiled
        FROM builds WHERE finished_at < :cut AND status = :success
    ) AS old
    WHERE newest <= {KEPT_SUCCESSES} OR compiled AND newest_compiled = 1
        OR newest_of_version <= {KEPT_SUCCESSES} AND EXISTS (
            SELECT 1 FROM builds AS later
            WHERE later.name = old.name AND later.python = old.python AND later.version = old.version
                AND later.finished_at >= :cut)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrunedHistory:
    """What one prune of the history removed."""

    builds: int = 0
    runs: int = 0
    bytes_freed: int = 0
    """What the file and its write-ahead log shrank by."""


def prune(connection: sqlite3.Connection, path: Path, *, unused_since: float, success: str) -> PrunedHistory:
    """Prune the history open on ``connection`` (autocommit; the file ``path``) of what is older than
    ``unused_since`` and nothing reads (see the module docstring); builds of status ``success`` feed predictions."""
    size_before = _file_bytes(path)
    (cache,) = connection.execute("PRAGMA cache_size").fetchone()
    connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    try:
        connection.execute("BEGIN")  # one snapshot: the newest build then, and what may go
        try:
            (seen,) = connection.execute("SELECT COALESCE(MAX(id), 0) FROM builds").fetchone()
            connection.execute("DROP TABLE IF EXISTS temp.prunable")
            connection.execute("CREATE TEMP TABLE prunable (id INTEGER PRIMARY KEY)")
            connection.execute(f"INSERT INTO prunable {_PRUNABLE}", {"cut": unused_since, "success": success})
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        builds, after = 0, 0
        while (last := connection.execute("SELECT MAX(id) FROM (SELECT id FROM prunable WHERE id > ? ORDER BY id"
                                          " LIMIT ?)", (after, BATCH)).fetchone()[0]) is not None:
            # A package a run built since the snapshot may now need rows chosen: they wait for the next prune.
            builds += _in_transaction(connection, "DELETE FROM builds WHERE id IN (SELECT id FROM prunable WHERE"
                                     " id > ? AND id <= ?) AND (name, python) NOT IN (SELECT name, python FROM builds"
                                     " WHERE id > ?)", (after, last, seen)).rowcount
            after = last
        connection.execute("DROP TABLE prunable")
        runs = _in_transaction(connection, "DELETE FROM runs WHERE started_at < ?", (unused_since,)).rowcount
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        if free * 2 > pages:
            try:
                connection.execute("VACUUM")
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copy went through the log: give it back
            except sqlite3.OperationalError as exc:  # busy past the timeout: the pages are reused all the same
                logger.warning("could not compact the build history %s: %s", path, exc)
    finally:
        connection.execute(f"PRAGMA cache_size = {cache}")
    return PrunedHistory(builds=builds, runs=runs, bytes_freed=max(0, size_before - _file_bytes(path)))


def _in_transaction(connection: sqlite3.Connection, statement: str, parameters: tuple[object, ...]) -> sqlite3.Cursor:
    """Run one statement in its own write transaction (``BEGIN IMMEDIATE``: it waits for the file's write lock
    rather than failing half way); its cursor."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        cursor = connection.execute(statement, parameters)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return cursor


def _file_bytes(path: Path) -> int:
    """The bytes of the history file and its write-ahead log."""
    total = 0
    for name in (path, path.with_name(f"{path.name}-wal")):
        with contextlib.suppress(OSError):
            total += name.stat().st_size
    return total
