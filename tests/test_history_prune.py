"""Pruning the history: every answer predictions and ``orchestrate report`` read of what is kept stays the same,
the file shrinks, and a run recording builds meanwhile is never held up for long."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.policy import history_prune
from orchestrator.policy.history import SUCCESS, BuildRecord, History
from orchestrator.report.show import load

DAY = 86400.0
NOW = 1.8e9
PY, OTHER_PY = "cpython-3.11", "cpython-3.12"


Build = tuple[str, str, str, int | None, str, int | None]
"""A build of a night: name, version, interpreter, peak, status, compiler calls."""


def _shaped(night: int, rng: random.Random) -> list[Build]:
    """Packages shaped so that each rule of what is kept decides an answer (the age: 40 nights)."""
    peak = rng.randrange(1, 900) << 20
    builds: list[Build] = [("nightly", "1.0", PY, peak, "backend failed" if rng.random() < 0.2 else SUCCESS, None),
                           ("nightly", "1.0", OTHER_PY, peak, SUCCESS, None),
                           ("compiled-once", "1.0", PY, peak, SUCCESS, 12 if night == 75 else None)]
    if night >= 42 or night == 9:  # mostly long ago: a report's baseline and the peaks are of its old builds
        builds.append(("rare", "1.0", PY, (100 + night) << 20, "backend failed" if night == 66 else SUCCESS, None))
    if night >= 42 or night == 3:  # its last old peaks measured are further back than its last old builds
        builds.append(("unmeasured", "2.0" if night == 3 else "1.0", PY, None if night in (42, 45) else peak,
                       SUCCESS, None))
    # Version 2.0 long ago and once again: its own old measured peaks are its peaks, not 3.0's.
    builds.append(("versioned", "2.0" if night >= 51 or night == 6 else "3.0", PY,
                   None if night in (51, 54) else peak, SUCCESS, None))
    if night > 42:
        builds.append(("gone", "1.0", PY, peak, SUCCESS, None))
    return builds


def _nightly(path: Path, *, nights: int, packages: int = 0, seed: int = 3) -> None:
    """A run every third night for ``nights`` nights up to ``NOW``: ``packages`` plain packages, and the shaped
    ones (:func:`_shaped`)."""
    rng = random.Random(seed)
    with History(path) as history:
        for night in range(nights, -1, -3):
            started = NOW - night * DAY
            run = history.start_run(started_at=started, command_line="orchestrate build", tool_version="t", python=PY)
            assert run is not None
            plain: list[Build] = [(f"pkg-{index}", "1.0", PY, 1 << 20, SUCCESS, None) for index in range(packages)]
            for offset, (name, version, python, peak, status, calls) in enumerate([*plain, *_shaped(night, rng)]):
                wall = 60.0 if (name, night) == ("rare", 9) else 10 + night / 3 if name == "rare" else 10 + rng.random()
                history.record(BuildRecord(
                    name=name, version=version, sdist_sha256=None, python=python, wall_s=wall, cpu_s=wall,
                    peak_rss_bytes=peak, status=status, started_at=started + offset,
                    finished_at=started + offset + wall, run_id=run.id, compiler_calls=calls))


def _answers(path: Path, names: list[str]) -> dict[str, object]:
    answers: dict[str, object] = {}
    with History(path) as history:
        for name in names:
            for python in (PY, OTHER_PY):
                answers[f"compiled {name} {python}"] = history.compiled(name, python=python)
                for version in ("1.0", "2.0", "3.0", "9.9"):
                    answers[f"peaks {name} {version} {python}"] = history.recent_peaks(name, python=python,
                                                                                       version=version)
                    answers[f"duration {name} {version} {python}"] = history.expected_duration(
                        name, python=python, version=version)
    answers["report"] = load(path, last=14).to_json()  # the runs of the last 40 days
    return answers


def test_what_predictions_and_the_report_read_of_packages_still_built_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    _nightly(path, nights=90)
    names = ["nightly", "compiled-once", "rare", "unmeasured", "versioned", "gone"]
    before = _answers(path, names)
    with sqlite3.connect(path) as db:
        rows_before = db.execute("SELECT COUNT(*) FROM builds").fetchone()[0]
    with History(path) as history:
        pruned = history.prune(unused_since=NOW - 40 * DAY)
    assert _answers(path, names) == before
    assert pruned.runs == 17  # nights 90 to 42, every third
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM builds").fetchone()[0] == rows_before - pruned.builds
        # Not built for the age, it keeps what its next build's learned need reads: its last five (of 16).
        assert db.execute("SELECT COUNT(*) FROM builds WHERE name = 'gone'").fetchone()[0] == 5
        assert db.execute("SELECT MIN(started_at) FROM runs").fetchone()[0] >= NOW - 40 * DAY
    # Pruning again finds nothing more: what is kept is exactly what is read.
    with History(path) as history:
        assert history.prune(unused_since=NOW - 40 * DAY).builds == 0


def test_the_file_shrinks_and_a_run_recording_meanwhile_waits_little(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    _nightly(path, nights=360, packages=100)
    size = path.stat().st_size
    waits: list[float] = []
    done = threading.Event()

    def record() -> None:
        with History(path) as other:
            while not done.is_set():
                began = time.perf_counter()
                other.record(BuildRecord(name="live", version="1.0", sdist_sha256=None, python=PY, wall_s=1.0,
                                         cpu_s=1.0, peak_rss_bytes=1, status=SUCCESS, started_at=NOW, finished_at=NOW))
                waits.append(time.perf_counter() - began)

    recorder = threading.Thread(target=record)
    recorder.start()
    try:
        with History(path) as history:
            pruned = history.prune(unused_since=NOW - 40 * DAY)
    finally:
        done.set()
        recorder.join()
    assert pruned.builds > 10_000
    assert path.stat().st_size < size / 2  # rewritten (VACUUM), the log checkpointed as the last user closed it
    with History(path) as history:  # every build recorded meanwhile is there
        assert len(history.builds(["live"])) == len(waits) > 0
    assert max(waits) < 5.0  # a batch's lock, not the whole prune (seconds even on a crowded machine)


def test_a_package_built_while_the_prune_chose_keeps_its_rows_until_the_next(tmp_path: Path) -> None:
    """A version no run built for the age has all its rows chosen but the package's last five; if a run records a
    build of it before they are deleted, what its predictions need stays (the prune leaves them all, the next keeps
    the version's last five)."""
    path = tmp_path / "history.sqlite3"

    def build(history: History, night: float, peak: int, version: str = "2.0") -> None:
        history.record(BuildRecord(name="back", version=version, sdist_sha256=None, python=PY, wall_s=1.0,
                                   cpu_s=1.0, peak_rss_bytes=peak, status=SUCCESS, started_at=NOW - night * DAY,
                                   finished_at=NOW - night * DAY))

    with History(path) as history:
        for night in range(50, 58):
            build(history, night, night << 20)
        for night in range(41, 46):  # the package's last five, of another version
            build(history, night, 1 << 20, version="1.0")

    class Interposed(sqlite3.Connection):
        """Records a build of ``back`` from another connection just before the prune's first delete (as it takes
        the write lock)."""

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == "BEGIN IMMEDIATE" and not recorded:  # the first delete's transaction
                with History(path) as other:
                    build(other, 0, 1 << 20)
                recorded.append(True)
            return super().execute(sql, *args)

    recorded: list[bool] = []
    with contextlib.closing(sqlite3.connect(path, isolation_level=None, factory=Interposed)) as connection:
        first = history_prune.prune(connection, path, unused_since=NOW - 40 * DAY, success=SUCCESS)
    assert recorded and first.builds == 0  # version 2.0's eight were chosen; none went
    with History(path) as history:
        assert history.prune(unused_since=NOW - 40 * DAY).builds == 3
        assert history.recent_peaks("back", python=PY, version="2.0") == [
            1 << 20, *(night << 20 for night in range(50, 54))]
