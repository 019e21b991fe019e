"""The run's results kept on disk as they arrive (``report/records.py``), and the reports written from there."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from browser import Dom
from conftest import orchestrate
from fake_executor import FakeClock, FakeMachine, G, job
from sdists import make_sdist

from orchestrator.buildstate import RunState
from orchestrator.download.results import DownloadResult, DownloadStatus
from orchestrator.install.results import InstallResult, InstallStatus
from orchestrator.jobs import BuildResult, PhaseSpan, Status
from orchestrator.policy.admission import Limits
from orchestrator.report import RunReport
from orchestrator.report.records import BUILDS, DOWNLOADS, INSTALLS, Records
from orchestrator.scheduler import BuildScheduler, SchedulerSettings


def build(index: int, *, status: Status = Status.BUILT, wall: float = 1.0) -> BuildResult:
    start = 1000.0 + index / 3  # thirds: floats a decimal rounding would change
    return BuildResult(
        name=f"pkg{index}", version=None if index % 5 == 0 else f"{index}.0", source=f"/s/pkg{index}.tar.gz",
        status=status, wheel=f"pkg{index}-1.0-py3-none-any.whl" if status is Status.BUILT else None,
        started_at=start, finished_at=start + wall, phases={"backend": wall / 7}, peak_rss_bytes=index * 1000,
        cpu_s=wall / 3, log=f"/logs/pkg{index}.log", error="boom" if status is Status.FAILED else None,
        predicted_rss_bytes=None if index % 2 else 2**30, waits={"queue": 1 / 7, "memory_limit": 0.0001},
        wait_reason="held", spans=(PhaseSpan(phase="backend", start=start, end=start + wall / 3),),
        compiler_calls=index % 3 or None, host="farm1" if index % 4 == 0 else None)


def open_files() -> list[str]:
    """What this process's file descriptors point to."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return targets


def live_builds() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if type(thing) is BuildResult)


def test_results_are_kept_on_disk_not_in_memory(tmp_path: Path) -> None:
    report = RunReport(started_at=1000.0)
    report.spool_in(tmp_path / "logs")
    before = live_builds()
    for index in range(300):
        report.builds.append(build(index, status=Status.FAILED if index % 7 == 0 else Status.BUILT))
    assert live_builds() == before  # a list of results kept all 300
    assert len(report.builds) == 300
    assert list(os.scandir(tmp_path / "logs")) == []  # the spool is made there, and unlinked at once
    spool = [target for target in open_files() if target.startswith(str(tmp_path / "logs"))]
    assert len(spool) == 1 and spool[0].endswith(".jsonl (deleted)"), spool
    del report
    gc.collect()
    assert not [target for target in open_files() if target.startswith(str(tmp_path))]  # closed with its report


def test_a_result_reads_back_equal_in_every_order() -> None:
    results = [build(index, status=Status.FAILED if index in (3, 8) else Status.BUILT, wall=[2.0, 5.0, 1.0][index % 3])
               for index in range(12)]
    records = Records(BUILDS, results)
    assert list(records) == results
    assert records[0] == results[0] and records[-1] == results[-1] and records[5] == results[5]
    longest = sorted(results, key=lambda result: -result.wall_s)  # what the page and the summary sorted by
    assert [result for _, result in records.longest_first()] == longest
    assert [result for _, result in records.longest_first(4)] == longest[:4]
    assert [index for index, _ in records.longest_first(3)] == [1, 4, 7]  # ties in arrival order
    assert list(records.failed()) == [results[3], results[8]]
    assert records.counts == {"built": 10, "failed": 2}
    assert sorted(records.intervals()) == sorted((result.started_at, result.finished_at) for result in results)


def test_downloads_and_installs_read_back_equal() -> None:
    downloads = [DownloadResult(name="a", version="1", url="https://x/a.tar.gz", sha256="0" * 64, bytes=5,
                                started_at=1.5, finished_at=2.25, status=DownloadStatus.CACHED, error=None,
                                path=Path("/d/a-1.tar.gz")),
                 DownloadResult(name="b", version=None, url=None, sha256=None, bytes=0, started_at=1.0,
                                finished_at=1.0, status=DownloadStatus.FAILED, error="404", path=None)]
    installs = [InstallResult(name="a", version="1", wheel="/w/a.whl", started_at=3.0, finished_at=3.5,
                              status=InstallStatus.SKIPPED, reason="same version")]
    assert list(Records(DOWNLOADS, downloads)) == downloads
    assert list(Records(INSTALLS, installs)) == installs
    assert list(Records(DOWNLOADS, downloads).failed()) == downloads[1:]


def test_appends_from_many_threads_keep_every_line_whole() -> None:
    records = Records(BUILDS)

    def append(first: int) -> None:
        for index in range(first, first + 200):
            records.append(build(index))

    threads = [threading.Thread(target=append, args=(first,)) for first in range(0, 800, 200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result.name for result in records) == sorted(f"pkg{index}" for index in range(800))
    assert {records[index].name for index in range(800)} == {f"pkg{index}" for index in range(800)}


def test_an_unwritable_folder_spools_in_the_temporary_folder(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    records = Records(BUILDS, folder=blocked / "logs")
    records.append(build(1))
    assert list(records) == [build(1)]


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from test_report_records import build
from orchestrator.report.records import BUILDS, Records

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
results = [build(index) for index in range(60)]
records = Records(BUILDS, folder=Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
for result in results:
    records.append(result)
assert list(records) == results and [records[index] for index in (0, 3, 59)] == [results[0], results[3], results[59]]
assert [result.name for result in records.failed()] == [] and records.counts["built"] == 60
print("all read back")
"""


def test_a_spool_the_disk_refuses_goes_on_in_memory(tmp_path: Path) -> None:
    """A full disk under the spool costs memory, not the run: what was written is read back, then kept."""
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "logs")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "all read back\n"
    assert done.stderr.count("cannot keep the run's builds on disk (File too large): keeping them in memory") == 1


def test_a_report_is_ok_when_nothing_failed() -> None:
    report = RunReport(started_at=0.0, builds=Records(BUILDS, [build(1), build(2, status=Status.SKIPPED)]))
    assert report.ok and list(report.failed) == []
    report.builds.append(build(3, status=Status.FAILED))
    assert not report.ok and list(report.failed) == [build(3, status=Status.FAILED)]


def test_every_report_of_a_run_holds_every_build(tmp_path: Path) -> None:
    """60 builds through the real command: the JSON report, the page, the JUnit file and the trace all list
    each of them, written from the results on disk; no spool file is left anywhere."""
    names = [f"many{index:02d}" for index in range(60)]
    for name in names:
        make_sdist(tmp_path / "sdists", name, fail=name.endswith("7"))
    spools = tmp_path / "tmp"
    spools.mkdir()
    files = {"json": tmp_path / "run.json", "html": tmp_path / "run.html", "junit": tmp_path / "run.xml",
             "trace": tmp_path / "run.trace.json"}
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "2",
                         "--report-json", files["json"], "--report-html", files["html"], "--junit", files["junit"],
                         "--trace", files["trace"], env={"TMPDIR": str(spools)})
    assert result.returncode == 1, result.stderr  # six failed
    failed = {name for name in names if name.endswith("7")}

    builds = json.loads(files["json"].read_text())["builds"]
    assert sorted(build["name"] for build in builds) == names
    assert {build["name"] for build in builds if build["status"] == "failed"} == failed
    assert all(build["spans"] and build["wheel_tag"] for build in builds if build["status"] == "built")

    page = Dom(files["html"].read_text())
    assert sorted(row.attrs["data-name"] for row in page.find_all("tr") if "data-name" in row.attrs) == names
    assert sorted(bar.attrs["data-name"] for bar in page.find_all("g", "bar")) == names
    assert {failure.attrs["data-name"] for failure in page.find_all("div", "failure")} == failed
    walls = [float(row.find_all("td")[5].attrs["data-v"]) for row in page.find_all("tr") if "data-name" in row.attrs]
    assert walls == sorted(walls, reverse=True)

    suite = ET.parse(files["junit"]).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert sorted(case.get("name", "").removesuffix(" 1.0") for case in cases) == names
    assert (suite.get("tests"), suite.get("failures")) == ("60", "6")
    assert {case.get("name", "").removesuffix(" 1.0") for case in cases if case.find("failure") is not None} == failed

    events = json.loads(files["trace"].read_text())["traceEvents"]
    assert {event["args"]["name"] for event in events if event["ph"] == "X"} == set(names)

    folder = next((tmp_path / "state" / "runs").iterdir())
    kept = json.loads((folder / "report.json").read_text())
    assert kept["builds"] == json.loads(files["json"].read_text())["builds"]
    assert (folder / "report.html").read_text() == files["html"].read_text()
    assert "and 10 shorter builds: see the report" in result.stderr  # the summary's 50 longest
    assert "FAILED many07 1.0" in result.stderr
    assert not [path for path in (*spools.rglob("*"), *folder.rglob("*")) if path.suffix == ".jsonl"]


class EndsAsItStarts:
    """The observer of a scheduler over fake workers: each build ends, built, as soon as it starts."""

    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine
        self.events: list[str] = []

    def event(self, message: str) -> None:
        self.events.append(message)
        if ": started (" in message:
            self.machine.worker(message.split(":")[0]).finish(0, built=True)

    def update(self, state: RunState) -> None:
        pass


def test_the_scheduler_keeps_nothing_of_a_build_once_it_has_handed_its_result_on() -> None:
    machine = FakeMachine()
    observer = EndsAsItStarts(machine)
    handed: list[BuildResult] = []
    limits = Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None)
    builds = BuildScheduler(SchedulerSettings(limits=limits, sample_interval=0.01, grace=0), probe=machine,
                            observer=observer, executor=machine, clock=FakeClock(), on_result=handed.append)
    for index in range(30):
        builds.add(job(f"p{index}-1.0"), need=G)
    assert builds.run() == []  # the pipeline keeps them (on disk): not a second copy here
    assert sorted(result.name for result in handed) == sorted(f"p{index}" for index in range(30))
    assert len([event for event in observer.events if "waiting" in event]) >= 29  # each said why it waited once
    assert builds._announced_waits == {}  # and that is forgotten as it starts (it was kept for every build)
