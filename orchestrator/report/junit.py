"""``orchestrate build --junit FILE``: the run as JUnit XML, one test case per package, for CI systems.

A build is a test case of class ``orchestrate.build`` (a failed download ``orchestrate.download``,
an install ``orchestrate.install``), its time the build's wall time. A failure carries the error
and the last lines of the build's log; a build stopped or never started with the run is
skipped. Failures that belong to no package (a stage error, requirements no wheel meets) are
test cases of their own, so the counts say the run failed exactly when the exit code does.
Written with :mod:`xml.etree`, which escapes, a test case at a time from the results on disk
(``records``), the counts taken from theirs; characters XML 1.0 cannot hold (terminal colour
codes in logs) are removed first.
"""

from __future__ import annotations

import datetime
import io
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

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
        _write(report, out)


def junit_xml(report: RunReport) -> bytes:
    out = io.BytesIO()
    _write(report, out)
    return out.getvalue()


def _write(report: RunReport, out: BinaryIO) -> None:
    """The document, as ``ET.indent`` lays it out, written a test case at a time."""
    builds, downloads, installs = report.builds, report.downloads, report.installs
    unmet = [*(report.unmet if report.unmet_fails else []), *report.target_unmet]
    failures = (builds.counts["failed"] + downloads.counts["failed"] + installs.counts["failed"] + len(report.errors)
                + bool(unmet))
    suite = ET.Element("testsuite", name="orchestrate build", timestamp=datetime.datetime.fromtimestamp(
        report.started_at, datetime.timezone.utc).isoformat(timespec="seconds"),
        time=f"{(report.finished_at or report.started_at) - report.started_at:.3f}",
        tests=str(len(builds) + downloads.counts["failed"] + len(installs) + len(report.errors) + bool(unmet)),
        failures=str(failures), errors="0",
        skipped=str(builds.counts[Status.STOPPED.value] + builds.counts[Status.NOT_STARTED.value]))
    out.write(b"<?xml version='1.0' encoding='utf-8'?>\n<testsuites>\n  ")
    cases = _cases(report, unmet)
    first = next(cases, None)
    if first is None:
        out.write(ET.tostring(suite, encoding="utf-8") + b"\n</testsuites>\n")
        return
    # Its start tag, as ET writes the element's attributes.
    out.write(ET.tostring(suite, encoding="utf-8").removesuffix(b" />") + b">\n")
    for case in itertools.chain((first,), cases):
        ET.indent(case, level=2)
        out.write(b"    " + ET.tostring(case, encoding="utf-8") + b"\n")
    out.write(b"  </testsuite>\n</testsuites>\n")


def _cases(report: RunReport, unmet: list[str]) -> Iterator[ET.Element]:
    for result in report.builds:
        yield _build_case(result)
    for download in report.downloads.failed():
        yield _case("orchestrate.download", f"{download.name} {download.version or ''}".strip(),
                    download.finished_at - download.started_at, failure=download.error or "download failed")
    for install in report.installs:
        yield _case("orchestrate.install", f"{install.name} {install.version}".strip(),
                    install.finished_at - install.started_at,
                    failure=(install.error or "install failed") if install.status.value == "failed" else None)
    for error in report.errors:
        yield _case(f"orchestrate.{error.stage}", str(error.item), 0.0, failure=error.error)
    if unmet:
        yield _case("orchestrate.check", "requirements of the set", 0.0,
                    failure=f"{len(unmet)} requirement(s) met by no wheel", details="\n".join(unmet))


def _build_case(result: BuildResult) -> ET.Element:
    name = f"{result.name} {result.version or ''}".strip()
    if result.status is Status.FAILED:
        return _case("orchestrate.build", name, result.wall_s, failure=result.error or "failed",
                     details="\n".join(log_tail(result.log, LOG_LINES)) + (f"\nfull log: {result.log}" if result.log
                                                                           else ""))
    if result.status in (Status.STOPPED, Status.NOT_STARTED):
        return _case("orchestrate.build", name, result.wall_s, skipped=f"{result.status.value}: {result.error}")
    return _case("orchestrate.build", name, result.wall_s)


def _case(classname: str, name: str, seconds: float, *, failure: str | None = None, details: str = "",
          skipped: str | None = None) -> ET.Element:
    case = ET.Element("testcase", classname=classname, name=_clean(name), time=f"{seconds:.3f}")
    if failure is not None:
        element = ET.SubElement(case, "failure", message=_clean(failure), type="failed")
        element.text = _clean(details) or None
    if skipped is not None:
        ET.SubElement(case, "skipped", message=_clean(skipped))
    return case


def _clean(text: str) -> str:
    return _NOT_XML.sub("", _ANSI.sub("", text))


