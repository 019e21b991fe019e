"""The expected duration of a new release, through the real path: ``orchestrate build`` of a fake-backend sdist
whose ``build_wheel`` compiles its C files through the run's compiler cache, at version 1.0, then 2.0."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import orchestrate
from sdists import make_sdist

from orchestrator.build.sources import sdist_source
from orchestrator.pipeline import PYTHON_TAG
from orchestrator.policy.history import SUCCESS, BuildRecord, History
from orchestrator.predict import RECORDS_FOLDER, Predictor

SOURCES = {  # weights (build/digests.py): 150 for each unit, one per semicolon
    "src/big.c": "int big_a;\n" * 300 + '#include "shared.h"\nint big(void) { return SHARED; }\n',
    "src/middle.c": "int middle_a;\n" * 150 + "int middle(void) { return 2; }\n",
    "src/small.c": "int small(void) { return 3; }\n",
    "src/shared.h": "#define SHARED 1\n",
}
WEIGHTS = {"src/big.c": 150 + 301, "src/middle.c": 150 + 151, "src/small.c": 150 + 1}
COMPILE = [["cc", "-c", path, "-o", f"{Path(path).stem}.o"] for path in WEIGHTS]


def fake_c_sdist(folder: Path, version: str, sources: dict[str, str], **behaviour: Any) -> Path:
    return make_sdist(folder / version, "ccfake", version, extra_files={path: text.encode()
                                                                         for path, text in sources.items()},
                      run=COMPILE, **behaviour)


def build(tmp_path: Path, sdist: Path, label: str, *extra: str) -> dict[str, Any]:
    report = tmp_path / f"{label}.json"
    result = orchestrate("build", sdist, "-w", tmp_path / f"{label}-wh", "--report-json", report, *extra)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(report.read_text())["builds"]
    assert record["status"] == "built", record
    return dict(record)


def test_a_new_release_is_expected_to_take_the_compile_of_what_changed(tmp_path: Path) -> None:
    """Version 2.0 changes middle.c only: it is queued expecting the first build's time outside compiling,
    plus the first build's compiling times middle.c's share of the compile work, not the first build's time."""
    # build_wheel sleeps 1 s after compiling: time the model counts as compiling, so there is some to take off.
    first = build(tmp_path, fake_c_sdist(tmp_path, "1.0", SOURCES, sleep=1), "v1")
    changed = {**SOURCES, "src/middle.c": SOURCES["src/middle.c"].replace("return 2", "return 20")}
    second = build(tmp_path, fake_c_sdist(tmp_path, "2.0", changed, sleep=1), "v2")

    assert first["expected_s"] is None  # never built: no history
    assert (first["compiler_hits"], first["compiler_misses"]) == (0, 3)
    assert (second["compiler_hits"], second["compiler_misses"]) == (2, 1)  # what the prediction foresaw
    compiling = first["phases"]["backend"] - 0.4  # build_wheel less the backend's own floor (over 1 s: it slept)
    other = first["wall_s"] - compiling
    share = WEIGHTS["src/middle.c"] / sum(WEIGHTS.values())
    assert second["expected_s"] == pytest.approx(other + compiling * share, abs=0.01)
    assert second["expected_s"] < first["wall_s"]  # history's figure: the whole first build
    record = json.loads((tmp_path / "state" / RECORDS_FOLDER / PYTHON_TAG / "ccfake.json").read_text())
    assert record["version"] == "2.0" and len(record["seen"]) == 2


def test_a_header_change_counts_for_its_includers_and_without_the_cache_nothing_is_predicted(tmp_path: Path) -> None:
    first = build(tmp_path, fake_c_sdist(tmp_path, "1.0", SOURCES, sleep=1), "v1")
    changed = {**SOURCES, "src/shared.h": "#define SHARED 2\nint shared_code;\n"}  # more than a define: big.c
    second = build(tmp_path, fake_c_sdist(tmp_path, "2.0", changed, sleep=1), "v2")
    compiling = first["phases"]["backend"] - 0.4
    share = WEIGHTS["src/big.c"] / sum(WEIGHTS.values())
    assert second["expected_s"] == pytest.approx(first["wall_s"] - compiling + compiling * share, abs=0.01)
    assert (second["compiler_hits"], second["compiler_misses"]) == (2, 1)
    # With --compiler-cache off everything compiles: history's median of the two builds, and no record written.
    records = tmp_path / "state" / RECORDS_FOLDER / PYTHON_TAG / "ccfake.json"
    written = records.read_text()
    third = build(tmp_path, fake_c_sdist(tmp_path, "3.0", SOURCES, sleep=1), "v3", "--compiler-cache", "off")
    assert third["expected_s"] == pytest.approx((first["wall_s"] + second["wall_s"]) / 2, abs=0.01)
    assert records.read_text() == written


def test_a_damaged_record_is_no_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history_path = tmp_path / "state" / "history.sqlite3"
    folder = history_path.parent / RECORDS_FOLDER / PYTHON_TAG
    folder.mkdir(parents=True)
    (folder / "ccfake.json").write_text("{not json")
    source = sdist_source(fake_c_sdist(tmp_path, "1.0", SOURCES))
    with History(history_path) as history, caplog.at_level(logging.WARNING):
        prediction = Predictor(history_path, python=PYTHON_TAG, history=history).predict(source, 7.0)
    assert (prediction.duration, prediction.look) == (7.0, False)  # history's, and it never compiled here
    assert "cannot read the compiled sources recorded in" in caplog.text


@pytest.mark.parametrize(("calls", "look"), [(3, True), (0, False), (None, False)],
                         ids=["compiled-before-the-records", "ccache-ran-but-nothing-compiled", "no-cache-then"])
def test_a_package_whose_history_shows_compiler_calls_is_read_for_its_first_record(
        tmp_path: Path, calls: int | None, look: bool) -> None:
    history_path = tmp_path / "state" / "history.sqlite3"
    source = sdist_source(fake_c_sdist(tmp_path, "1.0", SOURCES))
    with History(history_path) as history:
        history.record(BuildRecord(name="ccfake", version="0.9", sdist_sha256=None, python=PYTHON_TAG,
                                   peak_rss_bytes=None, wall_s=4.0, cpu_s=None, status=SUCCESS, started_at=1.0,
                                   finished_at=5.0, compiler_calls=calls, compiler_hits=0, compiler_misses=calls))
        prediction = Predictor(history_path, python=PYTHON_TAG, history=history).predict(source, 4.0)
        assert (prediction.duration, prediction.look) == (4.0, look)
        # Without the compiler cache (no folder), nothing is read or recorded, whatever the history says.
        assert Predictor(None, python=PYTHON_TAG, history=history).predict(source, 4.0).look is False


def test_a_package_whose_cache_folder_was_trimmed_is_expected_to_compile_everything(tmp_path: Path) -> None:
    first = build(tmp_path, fake_c_sdist(tmp_path, "1.0", SOURCES, sleep=1), "v1")
    shutil.rmtree(tmp_path / "state" / "compiler-cache" / "packages" / "ccfake")  # as trim does
    changed = {**SOURCES, "src/middle.c": SOURCES["src/middle.c"] + "int more;\n"}
    second = build(tmp_path, fake_c_sdist(tmp_path, "2.0", changed, sleep=1), "v2")
    assert second["expected_s"] == pytest.approx(first["wall_s"], abs=0.01)  # outside compiling + all of it
    assert (second["compiler_hits"], second["compiler_misses"]) == (0, 3)
    record = json.loads((tmp_path / "state" / RECORDS_FOLDER / PYTHON_TAG / "ccfake.json").read_text())
    assert record["version"] == "2.0" and len(record["seen"]) == 1  # started anew: 1.0's objects are gone


def test_a_record_read_as_its_package_is_queued_counts_as_used(tmp_path: Path) -> None:
    """The pruner removes the records no run used for its age (``pruning.py``): reading one moves its time."""
    history_path = tmp_path / "state" / "history.sqlite3"
    record = history_path.parent / RECORDS_FOLDER / PYTHON_TAG / "ccfake.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"version": "1.0", "other_s": 1.0, "compile_s": 2.0, "seen": []}')
    long_ago = time.time() - 50 * 86400
    os.utime(record, (long_ago, long_ago))
    source = sdist_source(fake_c_sdist(tmp_path, "1.0", SOURCES))
    with History(history_path) as history:
        Predictor(history_path, python=PYTHON_TAG, history=history).predict(source, 4.0)
    assert record.stat().st_mtime > time.time() - 60
