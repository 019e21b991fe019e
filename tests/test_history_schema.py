"""The history's schema: a file of the first version is migrated in place, and runs are kept."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.policy.history import SUCCESS, BuildRecord, History
from orchestrator.policy.history_schema import SCHEMA_VERSION

PY = "cpython-3.11"

# The statements orchestrator 0.x (schema version 1) created its history with, copied as they were:
# the migration must take a file they made, whatever the code holds now.
V1_SCHEMA = (
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
V1_INSERT = (
    "INSERT INTO builds (name, version, sdist_sha256, python, peak_rss_bytes, wall_s, cpu_s, status, started_at,"
    " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def v1_file(path: Path) -> Path:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    for statement in V1_SCHEMA:
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 1")
    connection.execute(V1_INSERT, ("numpy", "2.0", "0" * 64, PY, 100, 30.0, 60.0, SUCCESS, 10.0, 40.0))
    connection.execute(V1_INSERT, ("numpy", "2.0", "0" * 64, PY, 120, 32.0, 61.0, SUCCESS, 50.0, 82.0))
    connection.execute(V1_INSERT, ("lxml", "5.0", None, PY, None, 3.0, None, "backend failed: no libxml2", 1, 4))
    connection.close()
    return path


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def columns(path: Path, table: str) -> list[tuple[object, ...]]:
    return [row[1:] for row in query(path, f"PRAGMA table_info({table})")]


def test_a_version_1_file_is_migrated_keeping_its_builds(tmp_path: Path) -> None:
    old = v1_file(tmp_path / "old.sqlite3")
    with History(old) as history:
        # What version 1 recorded still feeds predictions.
        assert history.recent_peaks("numpy", python=PY) == [120, 100]
        assert history.expected_duration("numpy", python=PY) == 31.0
        builds = history.builds(["numpy", "lxml"])
    assert query(old, "PRAGMA user_version") == [(3,)] and SCHEMA_VERSION == 3
    assert [(b.name, b.outcome, b.run_id, b.host, b.predicted_rss_bytes) for b in builds] == [
        ("lxml", "failed", None, None, None),
        ("numpy", "built", None, None, None),
        ("numpy", "built", None, None, None),
    ]
    # A migrated file holds exactly the tables a new one does.
    with History(tmp_path / "new.sqlite3"):
        pass
    for table in ("builds", "runs"):
        assert columns(old, table) == columns(tmp_path / "new.sqlite3", table)
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name"
    assert query(old, indexes) == query(tmp_path / "new.sqlite3", indexes) == [("builds_by_name",), ("builds_by_run",)]


def test_a_migrated_file_records_runs_and_the_new_columns(tmp_path: Path) -> None:
    old = v1_file(tmp_path / "old.sqlite3")
    with History(old) as history:
        run = history.start_run(started_at=1000.0, command_line="orchestrate build x", tool_version="9.9",
                                python=PY)
        assert run is not None
        history.record(BuildRecord(name="Zope.Interface", version="7.0", sdist_sha256=None, python=PY,
                                   peak_rss_bytes=50, wall_s=2.0, cpu_s=1.0, status="the run was interrupted",
                                   started_at=1001.0, finished_at=1003.0, outcome="stopped", run_id=run.id,
                                   predicted_rss_bytes=64, host="farm-3", compiler_calls=10, compiler_hits=7,
                                   compiler_misses=3, cpu_wait_s=0.5))
        history.finish_run(replace(run, finished_at=1010.0, stopped=1, interrupted="SIGINT"))
        [stored] = history.runs(5)
        [built] = history.builds(["zope-interface"])
    assert (stored.id, stored.makespan_s, stored.stopped, stored.interrupted, stored.command_line) == (
        run.id, 10.0, 1, "SIGINT", "orchestrate build x")
    assert (built.name, built.outcome, built.run_id, built.predicted_rss_bytes, built.host,
            built.compiler_calls, built.compiler_hits, built.compiler_misses, built.cpu_wait_s) == (
        "zope-interface", "stopped", run.id, 64, "farm-3", 10, 7, 3, 0.5)


def test_a_migration_that_fails_leaves_the_file_at_version_1(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    old = v1_file(tmp_path / "old.sqlite3")
    connection = sqlite3.connect(old, isolation_level=None)
    connection.execute("CREATE TABLE runs (id INTEGER)")  # in the way of the migration's own
    connection.close()
    with History(old) as history:  # advisory: the run goes on with history in memory
        assert history.recent_peaks("numpy", python=PY) == []
    assert query(old, "PRAGMA user_version") == [(1,)]
    assert len(query(old, "SELECT * FROM builds")) == 3
    assert "run_id" not in [row[0] for row in columns(old, "builds")]
    assert "keeping history in memory" in caplog.text


def test_runs_are_listed_most_recent_first(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        started = [history.start_run(started_at=float(i), command_line=f"run {i}", tool_version="1", python=PY)
                   for i in range(4)]
        assert all(run is not None for run in started)
        assert [run.command_line for run in history.runs(3)] == ["run 3", "run 2", "run 1"]
        assert history.runs(1)[0].finished_at is None and history.runs(1)[0].makespan_s is None


def test_builds_since_a_moment_with_the_last_successes_before_it(tmp_path: Path) -> None:
    def build(name: str, finished: float, *, ok: bool = True, python: str = PY) -> BuildRecord:
        return BuildRecord(name=name, version="1", sdist_sha256=None, python=python, peak_rss_bytes=1, wall_s=1.0,
                           cpu_s=None, status=SUCCESS if ok else "boom", started_at=finished - 1, finished_at=finished)

    with History(tmp_path / "h.sqlite3") as history:
        for finished in range(1, 8):
            history.record(build("a", finished, ok=finished != 6))
        history.record(build("a", 5.5, python="cpython-3.12"))
        history.record(build("b", 3))
        history.record(build("c", 9))  # not asked for
        found = history.builds(["A", "b"], since=7, earlier_successes=2)
        everything = history.builds(["a"])
    # Since 7: a's build at 7; before it, per interpreter, the two last successes (6 failed).
    assert [(b.name, b.finished_at, b.python) for b in found] == [
        ("b", 3, PY), ("a", 4, PY), ("a", 5, PY), ("a", 5.5, "cpython-3.12"), ("a", 7, PY)]
    assert [b.finished_at for b in everything] == [1, 2, 3, 4, 5, 5.5, 6, 7]
