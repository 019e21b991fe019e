"""``orchestrate build`` end to end with fake-backend sdists: real processes, virtualenvs and hooks."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import orchestrate
from sdists import make_sdist, make_tree, max_concurrency, read_events
from wheels import write_wheel


def wheels(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.whl"))


def test_max_builds_two_runs_exactly_two_of_six(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    for i in range(6):  # the first two wait for each other; each then runs 0.5 s, time for a third to start
        make_sdist(tmp_path / "sdists", f"pkg{i}", until_starts=2, sleep=0.5, events=str(events))
    # The environment asks for 6 (more than this machine's CPUs, the default): the flag wins.
    # The CPU rule is off: it counts other load on the machine, which could keep the second build waiting.
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "2", "--max-cpu", "0",
                         env={"ORCHESTRATE_MAX_BUILDS": "6"})
    assert result.returncode == 0, result.stderr
    assert max_concurrency(read_events(events)) == 2
    assert wheels(tmp_path / "wh") == [f"pkg{i}-1.0-py3-none-any.whl" for i in range(6)]


def test_env_var_max_builds_one_serialises(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    for i in range(3):
        make_sdist(tmp_path / "sdists", f"pkg{i}", sleep=0.5, events=str(events))
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", env={"ORCHESTRATE_MAX_BUILDS": "1"})
    assert result.returncode == 0, result.stderr
    assert max_concurrency(read_events(events)) == 1
    assert len(wheels(tmp_path / "wh")) == 3


def test_wheels_and_report_are_readable_like_any_new_file(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "shared")
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "wh" / "shared-1.0-py3-none-any.whl", tmp_path / "r.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_builds_that_compile_start_before_pure_python_ones(tmp_path: Path) -> None:
    # No history: by sdist size alone the order would be big, medium, small-c.
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "sdists", "big", sleep=1, events=str(events), extra_files={"big.dat": os.urandom(400_000)})
    make_sdist(tmp_path / "sdists", "medium", events=str(events), extra_files={"medium.dat": os.urandom(200_000)})
    make_sdist(tmp_path / "sdists", "small-c", events=str(events), extra_files={"src/speedups.c": b"int f(void);\n"})
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1", "--no-history")
    assert result.returncode == 0, result.stderr
    started = [event["name"] for event in read_events(events) if event["event"] == "start"]
    assert started.index("small-c") < started.index("medium"), started


def test_next_build_is_extracted_while_the_current_one_runs(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "first", sleep=3, extra_files={"big.dat": os.urandom(400_000)})
    files = {f"pkg/m{i}.py": b"X = 1\n" for i in range(1500)}
    make_sdist(tmp_path / "sdists", "second", extra_files=files)
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1", "--report-json", report)
    assert result.returncode == 0, result.stderr
    builds = {b["name"]: b for b in json.loads(report.read_text())["builds"]}
    first, second = builds["first"], builds["second"]
    assert second["started_at"] >= first["finished_at"] - 0.1  # one build at a time
    # Its phases add up to more than its time since admission: extraction came before.
    ahead = sum(second["phases"].values()) - second["wall_s"]
    assert ahead > 0.8 * second["phases"]["extract"] > 0, second


def test_next_build_asks_its_backend_what_it_requires_while_the_current_one_runs(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "sdists", "first", sleep=3, events=str(events), extra_files={"big.dat": os.urandom(400_000)})
    make_sdist(tmp_path / "sdists", "second", events=str(events), requires=["tinyextra"])
    (tmp_path / "find-links").mkdir()
    write_wheel(tmp_path / "find-links", "tinyextra", "2.0")
    report = tmp_path / "r.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1", "--report-json", report,
                         "--no-index", "--find-links", tmp_path / "find-links")
    assert result.returncode == 0, result.stderr
    times = {(event["name"], event["event"]): event["t"] for event in read_events(events)}
    assert times["second", "requires"] < times["first", "end"] < times["second", "start"]
    second = {b["name"]: b for b in json.loads(report.read_text())["builds"]}["second"]
    assert second["phases"]["get_requires"] > 0 and second["phases"]["install_requires"] > 0
    assert second["started_at"] >= times["first", "end"]


def test_failure_fails_the_run_but_others_land(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "good-one")
    make_sdist(tmp_path / "sdists", "bad", fail=True, print="something went wrong in the backend")
    make_sdist(tmp_path / "sdists", "good-two")
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report)
    assert result.returncode == 1
    assert wheels(tmp_path / "wh") == ["good_one-1.0-py3-none-any.whl", "good_two-1.0-py3-none-any.whl"]
    assert "FAILED bad 1.0" in result.stderr
    assert "fake backend asked to fail" in result.stderr  # the log tail is shown
    records = {record["name"]: record for record in json.loads(report.read_text())["builds"]}
    assert records["bad"]["status"] == "failed"
    assert Path(records["bad"]["log"]).is_file()
    assert "Traceback" not in result.stderr.split("FAILED")[0]


def test_fail_fast_stops_admitting(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "aaa-bad", fail=True)
    for i in range(3):
        make_sdist(tmp_path / "sdists", f"later{i}", sleep=0.2)
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1", "--fail-fast",
                         "--report-json", tmp_path / "r.json")
    assert result.returncode == 1
    records = json.loads((tmp_path / "r.json").read_text())["builds"]
    statuses = [r["status"] for r in records]
    assert statuses.count("failed") == 1 and statuses.count("built") < 3
    never = [r for r in records if r["status"] == "not started"]
    assert never and all(r["error"] == "--fail-fast after a failure" and r["started_at"] is None for r in never)
    *_, counts, where = result.stderr.splitlines()  # the summary's counts, then where the run's report is
    assert f"{len(never)} not started" in counts
    assert where.startswith("report: ") and where.endswith("report.html (and report.json beside it)")


def test_report_has_phases_memory_and_timestamps(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "measured", alloc_mb=150, sleep=1.0)
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", report)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    (record,) = data["builds"]
    assert record["status"] == "built"
    assert record["wheel"] == "measured-1.0-py3-none-any.whl"
    assert set(record["phases"]) == {"extract", "create_env", "install_requires", "get_requires", "backend", "publish"}
    assert record["phases"]["backend"] >= 1.0
    assert record["started_at"] < record["finished_at"]
    assert record["peak_rss_bytes"] > 150 * 1024 * 1024
    assert data["stages"]["build"]["count"] == 1


def test_zip_sdist_source_tree_and_duplicates(tmp_path: Path) -> None:
    zipped = make_sdist(tmp_path / "a", "zipped", fmt="zip")
    tree = make_tree(tmp_path / "tree", "treepkg", "2.0")
    duplicate = make_sdist(tmp_path / "b", "zipped")  # same name and version as the zip
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "c", "counted", events=str(events))
    make_sdist(tmp_path / "d", "counted", events=str(events))
    result = orchestrate("build", zipped, tree, duplicate, tmp_path / "c", tmp_path / "d", "-w", tmp_path / "wh")
    assert result.returncode == 0, result.stderr
    assert wheels(tmp_path / "wh") == [
        "counted-1.0-py3-none-any.whl", "treepkg-2.0-py3-none-any.whl", "zipped-1.0-py3-none-any.whl"
    ]
    assert len([e for e in read_events(events) if e["event"] == "start"]) == 1
    assert "built once" in result.stderr
    # The tree's static version makes it a duplicate of an sdist of the same name and version.
    again = orchestrate("build", tree, make_sdist(tmp_path / "e", "treepkg", "2.0"), "-w", tmp_path / "wh2")
    assert again.returncode == 0, again.stderr
    assert "built once" in again.stderr


def test_existing_wheel_is_skipped_unless_force(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "sdists", "again", events=str(events))
    args = ("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--report-json", tmp_path / "r.json")
    assert orchestrate(*args).returncode == 0
    second = orchestrate(*args)
    assert second.returncode == 0
    assert json.loads((tmp_path / "r.json").read_text())["builds"][0]["status"] == "skipped"
    assert orchestrate(*args, "--force").returncode == 0
    assert len([e for e in read_events(events) if e["event"] == "start"]) == 2


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ({"wheel_name": "other-1.0-py3-none-any.whl"}, "is of project 'other'"),
        ({"wheel_name": "oddname-9.9-py3-none-any.whl"}, "has version 9.9"),
        ({"no_wheel": True}, "wrote no such file"),
        ({"crash": True}, "the build backend was killed by SIGKILL"),
    ],
)
def test_bad_backends_are_clear_failures(tmp_path: Path, behaviour: dict[str, Any], message: str) -> None:
    make_sdist(tmp_path / "sdists", "oddname", **behaviour)
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh")
    assert result.returncode == 1
    assert message in result.stderr
    assert not list((tmp_path / "wh").iterdir()) or wheels(tmp_path / "wh") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "-w", "wh"], "nothing to build"),
        (["build", "missing.tar.gz", "-w", "wh"], "missing.tar.gz: no such file or folder"),
        (["build", ".", "--memory-limit", "lots", "-w", "wh"], "invalid size 'lots'"),
        (["build", ".", "--max-builds", "0", "-w", "wh"], "--max-builds"),
    ],
)
def test_usage_errors_exit_2_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    result = orchestrate(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_wheelhouse_holds_only_complete_wheels(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "whole")
    assert orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh").returncode == 0
    visible = [p.name for p in (tmp_path / "wh").iterdir() if not p.name.startswith(".orchestrate")]
    assert visible == ["whole-1.0-py3-none-any.whl"]
    with zipfile.ZipFile(tmp_path / "wh" / visible[0]) as wheel:
        assert wheel.testzip() is None
