"""The build history's SQLite schema, as a chain of migrations, and opening a file at the current version.

A new file is created by running every step from version 1, so a fresh file and a migrated
one hold the same tables: there is one definition of the schema, the chain. Each step runs
in the ``BEGIN IMMEDIATE`` transaction that reads ``PRAGMA user_version``, so two processes
opening an old file at once migrate it once, and a step that fails leaves the file as it was.

Version 2 adds the ``runs`` table, each build's run, its outcome as the report names it
(``built``, ``failed``, ``stopped``: version 1 kept only ``success`` or the error), and
columns later parts fill (the host, the admitted memory need, compiler cache counts).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

__all__ = ["SCHEMA_VERSION", "NewerSchema", "prepare"]

logger = logging.getLogger(__name__)

_STEPS: Final[tuple[tuple[str, ...], ...]] = (
    (  # version 1
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
    ),
    (  # version 2: runs, and what the report and later parts need of each build
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            finished_at REAL,
            command_line TEXT NOT NULL,
            tool_version TEXT NOT NULL,
            python TEXT NOT NULL,
            built INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            downloaded INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            stopped INTEGER NOT NULL DEFAULT 0,
            interrupted TEXT
        )
        """,
        "ALTER TABLE builds ADD COLUMN run_id INTEGER REFERENCES runs (id)",
        "ALTER TABLE builds ADD COLUMN outcome TEXT",
        # Version 1 kept "success" or the error: every other build counts as failed.
        "UPDATE builds SET outcome = CASE WHEN status = 'success' THEN 'built' ELSE 'failed' END",
        "ALTER TABLE builds ADD COLUMN host TEXT",
        "ALTER TABLE builds ADD COLUMN predicted_rss_bytes INTEGER",
        "ALTER TABLE builds ADD COLUMN compiler_calls INTEGER",
        "ALTER TABLE builds ADD COLUMN compiler_hits INTEGER",
        "ALTER TABLE builds ADD COLUMN compiler_misses INTEGER",
        "CREATE INDEX builds_by_run ON builds (run_id)",
    ),
    (  # version 3: what waiting for a CPU added to a build's wall time (the report's cpu_wait_s)
        "ALTER TABLE builds ADD COLUMN cpu_wait_s REAL",
    ),
)
SCHEMA_VERSION: Final = len(_STEPS)


class NewerSchema(Exception):
    """The file holds a schema version this orchestrator does not know."""


def prepare(connection: sqlite3.Connection) -> None:
    """Bring the schema of an open (autocommit) connection to :data:`SCHEMA_VERSION`, in one transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise NewerSchema(f"schema version {version}")
        for step in _STEPS[version:]:
            for statement in step:
                connection.execute(statement)
        if version < SCHEMA_VERSION:
            if version:
                logger.info("build history migrated from schema version %d to %d", version, SCHEMA_VERSION)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
