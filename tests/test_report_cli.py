"""``orchestrate report`` and ``orchestrate build --junit`` through the real path.

Four real runs of fake builds share one --state-dir: ``slow`` becomes slower and larger in the
last, ``breaks`` fails in the last, ``flaky`` fails in the third only. The report must show the
runs, flag the regression, name the status changes and the tail; its HTML is opened in a
headless Chromium and checked on the rendered DOM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import filelock
import pytest
from conftest import orchestrate
from sdists import make_sdist, read_events

from orchestrator.policy.history import SUCCESS, BuildRecord, History
from orchestrator.wheels.wheelhouse import LOCK

RUNS = 4
SLOWER = 2.0
ENV = {"ORCHESTRATE_SANDBOX": "0", "PIP_CONFIG_FILE": os.devnull}


def sdists(folder: Path, run: int) -> Path:
    last = run == RUNS
    make_sdist(folder, "steady")
    # The last is 2 s slower: 1 s over the regression rule's floor, whatever the machine's noise between runs.
    make_sdist(folder, "slow", sleep=SLOWER if last else 0, alloc_mb=150 if last else 0)
    make_sdist(folder, "flaky", fail=run == 3)
    # Terminal colours in the log: the JUnit file must still be XML.
    make_sdist(folder, "breaks", fail=last, print="\x1b[31mred\x1b[0m breaks here")
    return folder


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state folder after the four runs; the last run's JUnit file is ``junit.xml`` beside it."""
    root = tmp_path_factory.mktemp("history")
    for run in range(1, RUNS + 1):
        junit: list[str | Path] = ["--junit", root / "junit.xml"] if run == RUNS else []
        result = orchestrate("build", sdists(root / f"run{run}", run), "-w", root / "wh", "--state-dir",
                             root / "state", "--force", "-j", "2" if run == RUNS else "4", *junit, env=ENV)
        assert result.returncode == (0 if run < 3 else 1), result.stderr
    return root / "state"


def report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return orchestrate("report", *args, env=ENV)


def test_the_report_shows_runs_regressions_changes_and_the_tail(history: Path) -> None:
    result = report("--state-dir", history)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"build history {history / 'history.sqlite3'}: the last {RUNS} runs" in out
    run_lines = [line.split() for line in out.splitlines()[2:2 + RUNS]]
    # run, date, time, makespan, unit, built, failed, downloaded, skipped, stopped; the most recent first
    assert [(line[0], line[5], line[6]) for line in run_lines] == [("4", "3", "1"), ("3", "3", "1"),
                                                                  ("2", "4", "0"), ("1", "4", "0")]
    regressions = [line for line in out.splitlines() if line.startswith("  REGRESSION")]
    assert any(line.startswith("  REGRESSION slow: wall") for line in regressions)
    assert any(line.startswith("  REGRESSION slow: peak memory") for line in regressions)
    assert not any("steady: peak" in line for line in regressions)
    assert "  NEWLY FAILING breaks  ✓✓✓✗  the build backend failed" in out
    assert "  FIXED flaky  ✓✓✗✓  flipping: changed 2 times" in out
    [name, outcomes, wall, _, wall_trend, peak, _, peak_trend] = next(
        line for line in out.splitlines() if line.startswith("slow ")).split()
    assert (name, outcomes) == ("slow", "✓✓✓✓") and float(wall) > SLOWER
    assert wall_trend[-1] == peak_trend[-1] == "█" and len(wall_trend) == len(peak_trend) == RUNS  # the last is highest
    assert "predicted memory against the peak, run 4: " in out
    assert "the tail of run 4" in out
    tail = out.split("the tail of run 4")[1]
    assert "  slow: " in tail


def test_json_and_one_package(history: Path) -> None:
    result = report("--state-dir", history, "--json", "--package", "SLOW", "--last", "3")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [run["id"] for run in data["runs"]] == [2, 3, 4]
    assert [trend["name"] for trend in data["trends"]] == ["slow"]
    assert {(r["name"], r["metric"], r["run_id"]) for r in data["regressions"]} == {("slow", "wall", 4),
                                                                                     ("slow", "peak", 4)}
    slow = data["trends"][0]
    assert slow["outcomes"] == ["built"] * 3 and slow["walls"][-1] > SLOWER and slow["peaks"][-1] > 150 * 1024**2
    assert data["runs"][-1]["failed"] == 1 and data["runs"][-1]["makespan_s"] > SLOWER


def test_junit_of_a_run_with_one_failure(history: Path) -> None:
    root = ET.parse(history.parent / "junit.xml").getroot()
    [suite] = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("4", "1", "0",
                                                                                                      "0")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert set(cases) == {"steady 1.0", "slow 1.0", "flaky 1.0", "breaks 1.0"}
    assert {case.get("classname") for case in cases.values()} == {"orchestrate.build"}
    assert float(cases["slow 1.0"].get("time") or 0) > SLOWER
    [failure] = [found for case in cases.values() if (found := case.find("failure")) is not None]
    assert failure is cases["breaks 1.0"].find("failure")
    assert failure.get("message") == "the build backend failed (exit status 1); see the log"
    assert "red breaks here" in (failure.text or "") and "fake backend asked to fail" in (failure.text or "")


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.page = page
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [found for name, found in self.tags if name == tag and all(
            value in (found.get(key.replace("_", "-")) or "").split() or found.get(key.replace("_", "-")) == value
            for key, value in attrs.items())]


def rendered(page: Path) -> Elements:
    """The DOM headless Chromium builds from ``page``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return Elements(result.stdout)


def test_the_html_report_in_a_browser(history: Path, tmp_path: Path) -> None:
    page = tmp_path / "out" / "history.html"
    result = report("--state-dir", history, "--html", page)
    assert result.returncode == 0, result.stderr
    assert f"HTML report: {page}" in result.stdout
    source = page.read_text()
    assert "http://" not in source and "https://" not in source and "<script" not in source  # nothing fetched
    dom = rendered(page)
    assert [run["data-run"] for run in dom.having("tr", **{"class": "run"})] == ["4", "3", "2", "1"]
    flagged = dom.having("tr", **{"class": "regression"})
    assert {(row["data-package"], row.get("data-metric")) for row in flagged if row.get("data-metric")} == {
        ("slow", "wall"), ("slow", "peak")}
    assert [row["data-package"] for row in dom.having("tr", **{"class": "package"})][0] == "slow"  # slowest first
    assert "slow" in [row["data-package"] for row in flagged if not row.get("data-metric")]  # its trend row too
    assert {(row["data-package"], row["data-state"]) for row in dom.having("tr", **{"class": "change"})} == {
        ("breaks", "newly failing"), ("flaky", "fixed")}
    sparks = dom.having("svg", **{"class": "spark"})
    assert len(sparks) == 8  # wall and peak of each of the four packages
    assert len(dom.having("polyline")) >= 6
    assert [row["data-package"] for row in dom.having("tr", **{"class": "tail"})][0] == "slow"


def test_the_html_escapes_what_the_history_holds(tmp_path: Path) -> None:
    state = tmp_path / "state"
    hostile = "<script>document.title='pwned'</script>"
    with History(state / "history.sqlite3") as history:
        run = history.start_run(started_at=1000.0, command_line=f"orchestrate build '{hostile}'", tool_version="1",
                                python="cpython-3.11")
        assert run is not None
        history.record(BuildRecord(name=hostile, version="1", sdist_sha256=None, python="cpython-3.11",
                                   peak_rss_bytes=1, wall_s=1.0, cpu_s=None, status=f"failed: {hostile}",
                                   started_at=1000.0, finished_at=1001.0, run_id=run.id))
    page = tmp_path / "h.html"
    assert report("--state-dir", state, "--html", page).returncode == 0
    dom = rendered(page)
    assert not dom.having("script")  # nothing ran: the page's title is still its own
    assert "<title>orchestrate: build history</title>" in dom.page
    text = "".join(dom.text)
    # As text: the error and the command line as they were, the package under its canonical name.
    assert text.count(hostile) == 2
    assert text.count("<script>document-title='pwned'</script>") >= 2  # its trend and its status change


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_is_recorded_and_its_stopped_build_skipped_in_junit(tmp_path: Path, signum: signal.Signals,
                                                                               code: int) -> None:
    events = tmp_path / "events.jsonl"
    # The larger sdist goes first (nothing is known of either); one build at a time: "later" never starts.
    make_sdist(tmp_path / "src", "hangs", hang=True, events=str(events), extra_files={"pad": os.urandom(200_000)})
    make_sdist(tmp_path / "src", "later")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "build", str(tmp_path / "src"), "-j", "1", "-w", str(tmp_path / "wh"),
         "--state-dir", str(tmp_path / "state"), "--junit", str(tmp_path / "j.xml")],
        env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(event["event"] == "start" for event in read_events(events)):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, stderr
    data = json.loads(report("--state-dir", tmp_path / "state", "--json").stdout)
    [run] = data["runs"]
    assert (run["interrupted"], run["stopped"], run["built"]) == (signum.name, 2, 0) and run["finished_at"] is not None
    # Only builds that started are in the history.
    assert [(trend["name"], trend["outcomes"]) for trend in data["trends"]] == [("hangs", ["stopped"])]
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "2")
    skipped = {case.get("name"): case.find("skipped") for case in suite.findall("testcase")}
    assert {name: None if element is None else element.get("message") for name, element in skipped.items()} == {
        "hangs 1.0": "stopped: the run was interrupted", "later 1.0": "not started: the run was interrupted"}


@pytest.mark.parametrize(("make", "says"), [
    ("missing", "run `orchestrate build` first"),
    ("no runs", "holds no run yet"),
    ("newer", "cannot read the build history"),  # a newer orchestrator's: left alone, not reported as empty
])
def test_no_history_is_one_line_and_exit_1(tmp_path: Path, make: str, says: str) -> None:
    state = tmp_path / "elsewhere"
    path = state / "history.sqlite3"
    if make != "missing":
        History(path).close()
    if make == "newer":
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA user_version = 99")
        connection.close()
    result = orchestrate("report", "--state-dir", state)
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]
    assert line.startswith("error: ") and str(path) in line and says in line
    assert path.exists() is (make != "missing")  # a report creates nothing


def test_many_status_changes_are_cut_to_the_newly_failing_first_and_counted(tmp_path: Path) -> None:
    """A farm's night: more changes than the terminal shows (MAX_CHANGES is 30); --json keeps them all."""
    with History(tmp_path / "state" / "history.sqlite3") as history:
        for night, started in enumerate((1000.0, 2000.0)):
            run = history.start_run(started_at=started, command_line="x", tool_version="1", python="cpython-3.11")
            assert run is not None
            # 32 packages fail in the second run; "a-fixed" (first by name) fails in the first only.
            for name, failed in [("a-fixed", night == 0), *((f"p-{index:02d}", night == 1) for index in range(32))]:
                history.record(BuildRecord(name=name, version="1", sdist_sha256=None, python="cpython-3.11",
                                           peak_rss_bytes=1, wall_s=1.0, cpu_s=None,
                                           status="boom" if failed else SUCCESS, started_at=started,
                                           finished_at=started + 1, run_id=run.id))
    out = report("--state-dir", tmp_path / "state").stdout.splitlines()
    shown = [line.split()[2] for line in out if line.startswith("  NEWLY FAILING ") or line.startswith("  FIXED ")]
    assert shown == [f"p-{index:02d}" for index in range(30)]
    assert "  ... and 3 more: 2 newly failing, 1 fixed (--package NAME, --html or --json)" in out
    changes = json.loads(report("--state-dir", tmp_path / "state", "--json").stdout)["changes"]
    assert len(changes) == 33 and changes[0]["name"] == "a-fixed"


def test_an_unknown_package_is_one_line_and_exit_1(history: Path) -> None:
    result = report("--state-dir", history, "--package", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: no build of nope in the last {RUNS} runs of "
                                     f"{history / 'history.sqlite3'}: check the name, or widen --last")


def test_a_run_that_never_had_the_wheelhouse_is_not_a_run(tmp_path: Path) -> None:
    make_sdist(tmp_path / "src", "one")
    (tmp_path / "wh").mkdir()
    with filelock.FileLock(str(tmp_path / "wh" / LOCK)):  # another run holds the wheelhouse
        result = orchestrate("build", tmp_path / "src", "-w", tmp_path / "wh", "--state-dir", tmp_path / "state",
                             env=ENV)
    assert result.returncode == 1 and "another orchestrate run is writing this wheelhouse" in result.stderr
    assert "holds no run yet" in report("--state-dir", tmp_path / "state").stderr


def test_an_html_file_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    with History(tmp_path / "state" / "history.sqlite3") as history:
        assert history.start_run(started_at=1.0, command_line="x", tool_version="1", python="cpython-3.11")
    (tmp_path / "file").write_text("")
    result = report("--state-dir", tmp_path / "state", "--html", tmp_path / "file" / "report.html")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: cannot write the HTML report {tmp_path / 'file' / 'report.html'} "
                                     f"(File exists: {tmp_path / 'file'}); choose another --html file")


def test_a_junit_file_that_cannot_be_written_fails_the_run_in_one_line(tmp_path: Path) -> None:
    make_sdist(tmp_path / "src", "one")
    (tmp_path / "file").write_text("")
    junit = tmp_path / "file" / "junit.xml"
    result = orchestrate("build", tmp_path / "src", "-w", tmp_path / "wh", "--junit", junit, env=ENV)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"error: cannot write the JUnit file {junit} (File exists: "
                                              f"{tmp_path / 'file'}); choose another --junit file")
    assert "1 built" in result.stderr and "Traceback" not in result.stderr
