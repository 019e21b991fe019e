"""``orchestrate build --junit FILE``: the run as JUnit XML, one test case per package, for CI systems.

A build is a test case of class ``orchestrate.build`` (a failed download ``orchestrate.download``,
an install ``orchestrate.install``), its time the build's wall time. A failure carries the error
and the last lines of the build's log; a build stopped or never started with the run is
skipped. Failures that belong to no package (a stage error, requirements no wheel meets) are
test cases of their own, so the counts say the run failed exactly when the exit code does.
Written with :mod:`xml.etree`, which escapes; characters XML 1.0 cannot hold (terminal colour
codes in logs) are removed first.
"""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

from orchestrator.atomic import atomic_write
from orchestrator.jobs import BuildResult, Status
from orchestrator.report import RunReport
from orchestrator.report.logtail import log_tail

__all__ = ["LOG_LINES", "junit_xml", "write_junit"]

LOG_LINES: Final = 40
"""Lines of a failed build's log in its failure."""
_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_junit(report: RunReport, path: Path) -> None:
    """Write the JUnit file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as out:
        out.write(junit_xml(report))


def junit_xml(report: RunReport) -> bytes:
    suite = ET.Element("testsuite", name="orchestrate build", timestamp=datetime.datetime.fromtimestamp(
        report.started_at, datetime.timezone.utc).isoformat(timespec="seconds"),
        time=f"{(report.finished_at or report.started_at) - report.started_at:.3f}")
    for result in report.builds:
        _build_case(suite, result)
    for download in report.downloads:
        if download.status.value == "failed":
            _case(suite, "orchestrate.download", f"{download.name} {download.version or ''}".strip(),
                  download.finished_at - download.started_at, failure=download.error or "download failed")
    for install in report.installs:
        _case(suite, "orchestrate.install", f"{install.name} {install.version}".strip(),
              install.finished_at - install.started_at,
              failure=(install.error or "install failed") if install.status.value == "failed" else None)
    for error in report.errors:
        _case(suite, f"orchestrate.{error.stage}", str(error.item), 0.0, failure=error.error)
    unmet = [*(report.unmet if report.unmet_fails else []), *report.target_unmet]
    if unmet:
        _case(suite, "orchestrate.check", "requirements of the set", 0.0,
              failure=f"{len(unmet)} requirement(s) met by no wheel", details="\n".join(unmet))
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for case in cases if case.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for case in cases if case.find("skipped") is not None)))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _build_case(suite: ET.Element, result: BuildResult) -> None:
    name = f"{result.name} {result.version or ''}".strip()
    if result.status is Status.FAILED:
        _case(suite, "orchestrate.build", name, result.wall_s, failure=result.error or "failed",
              details="\n".join(log_tail(result.log, LOG_LINES)) + (f"\nfull log: {result.log}" if result.log else ""))
    elif result.status in (Status.STOPPED, Status.NOT_STARTED):
        _case(suite, "orchestrate.build", name, result.wall_s, skipped=f"{result.status.value}: {result.error}")
    else:
        _case(suite, "orchestrate.build", name, result.wall_s)


def _case(suite: ET.Element, classname: str, name: str, seconds: float, *, failure: str | None = None,
          details: str = "", skipped: str | None = None) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=_clean(name), time=f"{seconds:.3f}")
    if failure is not None:
        element = ET.SubElement(case, "failure", message=_clean(failure), type="failed")
        element.text = _clean(details) or None
    if skipped is not None:
        ET.SubElement(case, "skipped", message=_clean(skipped))


def _clean(text: str) -> str:
    return _NOT_XML.sub("", _ANSI.sub("", text))


