"""The JUnit XML of a run report: every kind of outcome, counted as the exit code sees it, always well-formed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.download.results import DownloadResult, DownloadStatus
from orchestrator.jobs import BuildResult, Status
from orchestrator.report import RunReport
from orchestrator.report.junit import LOG_LINES, junit_xml, write_junit
from orchestrator.stages import StageError


def result(name: str, status: Status, *, error: str | None = None, log: Path | None = None,
           started: float | None = 100.0, wall: float = 2.5) -> BuildResult:
    return BuildResult(name=name, version="1.0", source=f"{name}.tar.gz", status=status, wheel=None,
                       started_at=started, finished_at=None if started is None else started + wall, phases={},
                       peak_rss_bytes=0, cpu_s=0.0, log=None if log is None else str(log), error=error)


def test_every_outcome(tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    # Terminal colours, a NUL and a form feed: none of them can be in an XML 1.0 file.
    log.write_text("\n".join(f"line {i}" for i in range(100)) + "\n\x1b[1;31mError:\x1b[0m bad\x00 \x0c<end> & done\n")
    report = RunReport(started_at=100.0, finished_at=112.25)
    report.builds.extend([
        result("good", Status.BUILT),
        result("bad", Status.FAILED, error="the build backend failed \x1b[31m<here>\x1b[0m", log=log, wall=1.25),
        result("cached", Status.SKIPPED, wall=0.0),
        result("fromindex", Status.DOWNLOADED, wall=0.5),
        result("cut", Status.STOPPED, error="the run was interrupted"),
        result("never", Status.NOT_STARTED, error="the run was interrupted", started=None),
    ])
    report.downloads.append(DownloadResult(name="gone", version="2.0", url=None, sha256=None, bytes=0, started_at=1.0,
                                           finished_at=4.0, status=DownloadStatus.FAILED, error="404: not on the index",
                                           path=None))
    report.errors.append(StageError(stage="install", item="x.whl", error="OSError: disk full", at=1.0))
    report.unmet, report.unmet_fails = ["numpy>=2 (required by good)"], True
    write_junit(report, tmp_path / "out" / "junit.xml")
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    [suite] = root
    assert (suite.tag, suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors"),
            suite.get("time")) == ("testsuite", "9", "4", "2", "0", "12.250")
    cases = {(case.get("classname"), case.get("name")): case for case in suite}
    assert {key: case.get("time") for key, case in cases.items()} == {
        ("orchestrate.build", "good 1.0"): "2.500",
        ("orchestrate.build", "bad 1.0"): "1.250",
        ("orchestrate.build", "cached 1.0"): "0.000",
        ("orchestrate.build", "fromindex 1.0"): "0.500",
        ("orchestrate.build", "cut 1.0"): "2.500",
        ("orchestrate.build", "never 1.0"): "0.000",
        ("orchestrate.download", "gone 2.0"): "3.000",
        ("orchestrate.install", "x.whl"): "0.000",
        ("orchestrate.check", "requirements of the set"): "0.000",
    }
    failure = cases["orchestrate.build", "bad 1.0"].find("failure")
    assert failure is not None and failure.get("message") == "the build backend failed <here>"
    lines = (failure.text or "").splitlines()
    assert lines[0] == "line 61" and len(lines) == LOG_LINES + 1  # the last lines of the log, then where it is
    assert lines[-2:] == ["Error: bad \x3cend> & done", f"full log: {log}"]
    skipped = {key[1]: case.find("skipped") for key, case in cases.items() if case.find("skipped") is not None}
    assert {name: element.get("message") for name, element in skipped.items() if element is not None} == {
        "cut 1.0": "stopped: the run was interrupted", "never 1.0": "not started: the run was interrupted"}
    gone = cases["orchestrate.download", "gone 2.0"].find("failure")
    assert gone is not None and gone.get("message") == "404: not on the index"
    check = cases["orchestrate.check", "requirements of the set"].find("failure")
    assert check is not None and check.text == "numpy>=2 (required by good)"


def test_a_clean_run_and_unmet_requirements_that_only_warn() -> None:
    report = RunReport(started_at=0.0, finished_at=1.0)
    report.builds.append(result("good", Status.BUILT))
    report.unmet, report.unmet_fails = ["numpy>=2 (required by good)"], False  # --no-deps: a warning, exit 0
    suite = ET.fromstring(junit_xml(report)).find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("1", "0", "0")


def test_a_missing_log_still_gives_the_failure() -> None:
    report = RunReport(started_at=0.0, finished_at=1.0)
    report.builds.append(result("bad", Status.FAILED, error="boom", log=Path("/nonexistent/bad.log")))
    failure = ET.fromstring(junit_xml(report)).find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == "boom"
    assert failure.text == "\nfull log: /nonexistent/bad.log"
