from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from orchestrator.policy.history import (
    RECENT_BUILDS,
    SUCCESS,
    BuildRecord,
    History,
    default_state_dir,
    predict_need,
)

ROOT = Path(__file__).resolve().parents[1]
G = 1024**3
PY = "cpython-3.11"

# Runs in a child process: records builds as fast as it can and prints each index
# once its transaction has committed.
WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from orchestrator.policy.history import BuildRecord, History

    history = History(Path(sys.argv[1]))
    prefix, count = sys.argv[2], int(sys.argv[3])
    i = 0
    while count < 0 or i < count:
        history.record(BuildRecord(
            name=f"{prefix}-{i}", version="1.0", sdist_sha256="ab" * 32,
            python="cpython-3.11", peak_rss_bytes=i, wall_s=1.0, cpu_s=1.0,
            status="success", started_at=float(i), finished_at=float(i) + 1,
        ))
        print(i, flush=True)
        i += 1
    history.close()
    """
)


def record(
    name: str = "numpy",
    *,
    version: str = "2.0.0",
    peak: int | None = G,
    wall: float = 60.0,
    status: str = SUCCESS,
    finished_at: float = 100.0,
    python: str = PY,
) -> BuildRecord:
    return BuildRecord(
        name=name,
        version=version,
        sdist_sha256="0" * 64,
        python=python,
        peak_rss_bytes=peak,
        wall_s=wall,
        cpu_s=wall * 4,
        status=status,
        started_at=finished_at - wall,
        finished_at=finished_at,
    )


def writer(path: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), prefix, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.sqlite3"  # the folder is created
    with History(path) as history:
        history.record(record(peak=3 * G, wall=90.5))
        assert history.recent_peaks("numpy", python=PY) == [3 * G]
        assert history.expected_duration("numpy", python=PY) == 90.5
        assert history.recent_peaks("scipy", python=PY) == []
        assert history.expected_duration("scipy", python=PY) is None
    with History(path) as history:
        assert history.recent_peaks("numpy", python=PY) == [3 * G]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_names_are_canonical(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        history.record(record("Zope.Interface", peak=5))
        assert history.recent_peaks("zope-interface", python=PY) == [5]
        assert history.recent_peaks("ZOPE_interface", python=PY) == [5]
    assert rows(tmp_path / "h.sqlite3", "SELECT name FROM builds") == [("zope-interface",)]


def test_most_recent_success_preferring_the_same_version(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        history.record(record(version="1.0", peak=1 * G, wall=10, finished_at=100))
        history.record(record(version="2.0", peak=2 * G, wall=20, finished_at=200))
        history.record(record(version="1.0", peak=3 * G, wall=30, finished_at=300))
        # Failures and unmeasured builds never feed predictions.
        history.record(record(version="2.0", peak=9 * G, status="failed", finished_at=400))
        history.record(record(version="2.0", peak=None, finished_at=500))

        assert history.recent_peaks("numpy", python=PY) == [3 * G, 2 * G, G]  # most recent first, of any version
        assert history.recent_peaks("numpy", python=PY, version="2.0") == [2 * G, 3 * G, G]  # that version first
        assert history.recent_peaks("numpy", python=PY, version="9.9") == [3 * G, 2 * G, G]  # unseen version
        assert history.expected_duration("numpy", python=PY, version="1.0") == 30  # of 30, 10, 60
        assert history.expected_duration("numpy", python=PY) == 30  # of 60 (a measured time, no peak), 30, 20


def test_predictions_are_per_interpreter(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        history.record(record(python="cpython-3.11", peak=G, wall=10, finished_at=100))
        history.record(record(python="cpython-3.12", peak=3 * G, wall=50, finished_at=200))
        history.record(record(python="cpython-3.12", peak=4 * G, wall=70, finished_at=300))
        # The most recent builds are for 3.12; a build for 3.11 predicts from 3.11's alone.
        assert history.recent_peaks("numpy", python="cpython-3.11") == [G]
        assert history.expected_duration("numpy", python="cpython-3.11") == 10
        assert history.recent_peaks("numpy", python="cpython-3.12") == [4 * G, 3 * G]
        assert history.expected_duration("numpy", python="cpython-3.12") == 60
        # An interpreter never built for has no history, however much the others have.
        assert history.recent_peaks("numpy", python="pypy-3.10") == []
        assert history.expected_duration("numpy", python="pypy-3.10") is None


def test_only_failures_mean_no_history(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        history.record(record(status="failed"))
        assert history.recent_peaks("numpy", python=PY) == []
        assert history.expected_duration("numpy", python=PY) is None


def test_recent_peaks_are_the_last_few(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        for i in range(RECENT_BUILDS + 2):
            history.record(record(peak=i, finished_at=float(i)))
        assert history.recent_peaks("numpy", python=PY) == list(range(RECENT_BUILDS + 1, 1, -1))


def test_expected_duration_is_the_median_of_the_last_three(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        history.record(record(wall=100, finished_at=1))  # too old to count
        history.record(record(wall=10, finished_at=2))
        assert history.expected_duration("numpy", python=PY) == 55  # of 10 and 100
        history.record(record(wall=90, finished_at=3))  # a crowded run
        history.record(record(wall=12, finished_at=4))
        assert history.expected_duration("numpy", python=PY) == 12  # of 12, 90, 10


@pytest.mark.parametrize(
    ("peaks", "override", "expected"),
    [
        ([], None, 2 * G),  # never built: the default
        ([1000], None, 1200),  # one peak plus 20%
        ([999], None, 1199),  # rounded up: 1198.8
        ([1000, 1500], None, 1800),  # the largest of the recent peaks
        ([1000, 1050], None, 1155),  # two peaks within 10%: plus 10%
        ([1000, 1050, 1100], None, 1155),  # three peaks within 10%: plus 5%
        ([1000] * 5, None, 1050),  # ...and no less with more
        ([1000, 1000, 1101], None, 1322),  # scattered by more than 10%: plus 20%
        ([1000], 5 * G, 5 * G),  # the user's override wins over history
        ([], 1, 1),  # ...and over the default
    ],
)
def test_predict_need(peaks: list[int], override: int | None, expected: int) -> None:
    assert predict_need(peaks, 2 * G, override=override) == expected


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG rule is Linux's")
@pytest.mark.parametrize(
    ("xdg_cache_home", "expected"),
    [
        ("/xdg/cache", "/xdg/cache/orchestrator"),  # the user's cache folder
        (None, "/home/someone/.cache/orchestrator"),  # else ~/.cache
        ("", "/home/someone/.cache/orchestrator"),  # an empty variable counts as unset
    ],
)
def test_default_location_follows_the_xdg_rule(
    monkeypatch: pytest.MonkeyPatch, xdg_cache_home: str | None, expected: str
) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    if xdg_cache_home is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg_cache_home)
    assert default_state_dir() == Path(expected)


def test_survives_a_writer_killed_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    process = writer(path, "killed", -1)
    assert process.stdout is not None
    committed = -1
    while committed < 2000:
        line = process.stdout.readline()
        assert line, "the writer exited early"
        committed = int(line)
    process.kill()
    rest, _ = process.communicate()
    assert process.returncode != 0  # killed, not finished
    committed = max([committed, *map(int, rest.split())])

    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    with History(path) as history:
        # Every record whose commit the writer reported survived.
        assert history.recent_peaks(f"killed-{committed}", python=PY) == [committed]
        history.record(record())  # and the file is writable again
    stored = rows(path, "SELECT peak_rss_bytes FROM builds WHERE name LIKE 'killed-%'")
    assert {peak for (peak,) in stored} >= set(range(committed + 1))


def test_processes_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    processes = [writer(path, f"p{n}", 100) for n in range(3)]
    for process in processes:
        process.communicate()
        assert process.returncode == 0
    assert rows(path, "SELECT count(*) FROM builds") == [(300,)]


def test_threads_share_one_history(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:

        def work(n: int) -> None:
            for i in range(25):
                history.record(record(f"t{n}-{i}", peak=i))
                assert history.recent_peaks(f"t{n}-{i}", python=PY) == [i]

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert rows(tmp_path / "h.sqlite3", "SELECT count(*) FROM builds") == [(200,)]


def test_garbage_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database\n" * 100)
    (tmp_path / "h.sqlite3-wal").write_bytes(b"stale")
    with caplog.at_level(logging.WARNING, logger="orchestrator.policy.history"), History(path) as history:
        history.record(record(peak=7))
        assert history.recent_peaks("numpy", python=PY) == [7]
    assert "is damaged" in caplog.text
    (aside,) = tmp_path.glob("h.sqlite3.damaged-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_damaged_pages_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.sqlite3"
    with History(path) as history:
        for i in range(500):
            history.record(record(f"pkg-{i}"))
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[4096 * 2 : 4096 * 6] = b"\xff" * (4096 * 4)  # keep the header, wreck the tables
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="orchestrator.policy.history"), History(path) as history:
        assert history.recent_peaks("pkg-1", python=PY) == []  # started afresh
        history.record(record())
    assert "is damaged" in caplog.text
    assert len(list(tmp_path.glob("h.sqlite3.damaged-*"))) == 1


def test_damage_is_moved_aside_when_a_write_meets_it_not_by_reading_every_page_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "h.sqlite3"
    with History(path) as history:  # the runs first, a page each: their pages hold nothing of the builds
        for i in range(40):
            history.start_run(started_at=float(i), command_line="x" * 3000, tool_version="1", python=PY)
    runs_end = path.stat().st_size  # closing checkpoints the WAL into the file
    with History(path) as history:
        for i in range(500):
            history.record(record(f"pkg-{i}", peak=i + 1))
    data = bytearray(path.read_bytes())
    data[4096 * 8 : runs_end] = b"\xff" * (runs_end - 4096 * 8)  # keep the tables' roots, wreck the runs' pages
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="orchestrator.policy.history"), History(path) as history:
        assert history.recent_peaks("pkg-1", python=PY) == [2]  # what the builds taught is still read
        assert not list(tmp_path.glob("h.sqlite3.damaged-*"))
        # A write meets the damage: the file is moved aside and the write made again in a new one.
        run = history.start_run(started_at=99.0, command_line="after", tool_version="1", python=PY)
        assert run is not None and [found.command_line for found in history.runs(10)] == ["after"]
    assert "is damaged" in caplog.text
    assert len(list(tmp_path.glob("h.sqlite3.damaged-*"))) == 1
    assert rows(path, "SELECT command_line FROM runs") == [("after",)]
    assert rows(path, "SELECT count(*) FROM builds") == [(0,)]


def test_unopenable_path_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a-folder"
    path.mkdir()
    with caplog.at_level(logging.WARNING, logger="orchestrator.policy.history"), History(path) as history:
        history.record(record(peak=3))
        assert history.recent_peaks("numpy", python=PY) == [3]
    assert "keeping history in memory" in caplog.text
    assert path.is_dir() and not list(path.iterdir())  # left alone


def test_newer_schema_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.sqlite3"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with caplog.at_level(logging.WARNING, logger="orchestrator.policy.history"), History(path) as history:
        history.record(record())
    assert "newer orchestrator" in caplog.text
    assert rows(path, "PRAGMA user_version") == [(99,)]
    assert not list(tmp_path.glob("*.damaged-*"))
