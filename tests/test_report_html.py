"""The run report of a real run, through the CLI, opened in a real headless browser.

One run serves the module: fake sdists served by a real index on 127.0.0.1, downloaded, built
(four fit the build cap, only two the memory limit, so builds wait for memory; one backend
fails printing markup, one is killed), installed into a real virtualenv. The report must show
every build, mark the failed ones, draw its charts, and stay small and inert for 1,000 builds.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import Dom, chromium, needs_browser, rendered
from conftest import orchestrate
from index_server import IndexServer
from sdists import make_sdist

from orchestrator.jobs import BuildResult, PhaseSpan, Status
from orchestrator.report import RunReport, runs
from orchestrator.report.html import write_html
from orchestrator.samples import Sample

MiB = 1024**2
GOOD: dict[str, dict[str, Any]] = {f"fine{i}": {"sleep": 0.3 + 0.15 * (i % 4), "alloc_mb": 40 + 20 * (i % 3)}
                                   for i in range(6)}
MARKUP = "<script>window.pwned = 1</script><b>bold</b>"
BAD: dict[str, dict[str, Any]] = {
    "broken": {"sleep": 0.2, "fail": True, "print": f"compiling...\n{MARKUP}\nerror: it broke"},
    "crashy": {"sleep": 0.2, "crash": True},
}


@dataclass(frozen=True)
class Run:
    folder: Path
    state: Path
    stdout: str
    stderr: str
    returncode: int
    html: Path
    trace: Path
    json: dict[str, Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    folder = tmp_path_factory.mktemp("report-run")
    target = folder / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    with IndexServer() as index:
        index.delay = 0.2  # downloads long enough to see
        lines = []
        for name, behaviour in {**GOOD, **BAD}.items():
            sdist = make_sdist(folder / "made", name, **behaviour)
            lines.append(f"{name}==1.0 --hash=sha256:{index.add(sdist.name, sdist.read_bytes())}")
        (folder / "req.txt").write_text("\n".join(lines) + "\n")
        result = orchestrate(
            "build", "-r", folder / "req.txt", "--no-deps", "-w", folder / "wh", "-i", index.simple_url,
            "--max-downloads", "3", "--max-builds", "4", "--memory-limit", "1G", "--memory-per-build", "400M",
            "--max-cpu", "0", "--install-into", target, "--state-dir", folder / "state",
            "--report-html", folder / "run.html", "--trace", folder / "run.trace.json",
            "--report-json", folder / "run.json")
    yield Run(folder=folder, state=folder / "state", stdout=result.stdout, stderr=result.stderr,
              returncode=result.returncode, html=folder / "run.html", trace=folder / "run.trace.json",
              json=json.loads((folder / "run.json").read_text()))


def test_the_run_failed_as_its_builds_did(run: Run) -> None:
    assert run.returncode == 1, run.stderr
    statuses = {build["name"]: build["status"] for build in run.json["builds"]}
    assert statuses == {**dict.fromkeys(GOOD, "built"), "broken": "failed", "crashy": "failed"}
    # Two builds of 400M fit the 1G limit, four the build cap: some waited for memory.
    assert any(build["waits"].get("memory_limit") for build in run.json["builds"])
    assert max(sample["running"] for sample in run.json["samples"]) == 2
    assert max(sample["reserved"] for sample in run.json["samples"]) == 2 * 400 * MiB  # their needs, above their RSS
    for build in run.json["builds"]:
        assert run.json["started_at"] <= build["queued_at"] <= build["started_at"]
        phases = [span["phase"] for span in build["spans"]]
        if build["status"] == "built":  # the worker's own account, in order, the wait for admission included
            assert phases == ["extract", "create_env", "install_requires", "get_requires", "admission", "backend",
                              "publish"]
            starts = [span["start"] for span in build["spans"]]
            assert starts == sorted(starts)


def test_the_run_folder_keeps_both_reports_and_the_summary_ends_saying_where(run: Run) -> None:
    (folder,) = (run.state / "runs").iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-\d+", folder.name)
    assert sorted(path.name for path in folder.iterdir()) == ["logs", "report.html", "report.json"]
    assert {build["name"] for build in json.loads((folder / "report.json").read_text())["builds"]} == {*GOOD, *BAD}
    last = (run.stdout + run.stderr).strip().splitlines()[-1]
    assert last == f"report: {folder / 'report.html'} (and report.json beside it)"
    assert (folder / "logs" / "broken-1.0.log").is_file()


def test_old_run_folders_are_pruned_to_the_newest_fifty(tmp_path: Path) -> None:
    runs = tmp_path / "state" / "runs"
    old = [f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(1_700_000_000 + hour * 3600))}-{100 + hour}"
           for hour in range(55)]
    for name in old:
        (runs / name).mkdir(parents=True)
    (runs / "notes").mkdir()  # not a run's: left alone
    make_sdist(tmp_path / "sdists", "one")
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--state-dir", tmp_path / "state")
    assert result.returncode == 0, result.stderr
    this_run = Path(result.stderr.strip().splitlines()[-1].split()[1]).parent
    assert sorted(path.name for path in runs.iterdir()) == sorted([*old[6:], this_run.name, "notes"])


def test_every_build_is_in_the_html_and_the_failed_ones_are_marked(run: Run) -> None:
    page = Dom(run.html.read_text())
    bars = {bar.attrs["data-name"]: bar for bar in page.find_all("g", "bar") if bar.attrs["data-group"] == "build"}
    assert set(bars) == {*GOOD, *BAD}
    assert {name for name, bar in bars.items() if "failed" in bar.classes} == set(BAD)
    # Hovering a bar says what it was, when, its memory, and why it waited.
    tips = {name: bar.find_all("title")[0].text() for name, bar in bars.items()}
    assert tips["broken"].startswith("broken 1.0: failed\n") and "the build backend failed" in tips["broken"]
    assert all(re.search(r"peak \d.* predicted 400\.0 MiB", tip) for tip in tips.values())
    held = [build["name"] for build in run.json["builds"] if build["waits"].get("memory_limit")]
    assert held and all("memory limit reserved" in tips[name] for name in held)
    rows = {row.attrs["data-name"]: row for row in page.find_all("tr") if "data-name" in row.attrs}
    assert set(rows) == {*GOOD, *BAD}
    assert {name for name, row in rows.items() if "failed" in row.classes} == set(BAD)
    failures = {block.attrs["data-name"]: block for block in page.find_all("div", "failure")}
    assert set(failures) == set(BAD)
    assert MARKUP in failures["broken"].text()  # the log line, as text
    (link,) = failures["broken"].find_all("a")
    assert link.attrs["href"].startswith("file:///") and link.attrs["href"].endswith("broken-1.0.log")


@needs_browser
def test_the_browser_draws_the_timeline_and_the_charts(run: Run) -> None:
    page = rendered(run.html)
    assert page.root.find_all("body")[0].attrs["data-scripts"] == "2"  # the report's and the probe: no other
    timeline, *charts = page.find_all("svg")
    assert "timeline" in timeline.classes and float(timeline.attrs["data-w"]) > 1000
    bars = page.find_all("g", "bar")
    by_group = {group: {bar.attrs["data-name"] for bar in bars if bar.attrs["data-group"] == group}
                for group in ("build", "download", "install")}
    assert by_group == {"build": {*GOOD, *BAD}, "download": {*GOOD, *BAD}, "install": set(GOOD)}
    assert all(float(bar.attrs["data-bw"]) > 0 and float(bar.attrs["data-bh"]) > 0 for bar in bars)
    groups = {text.text() for text in timeline.find_all("text", "group")}
    assert groups == {"builds", "downloads", "installs"}
    assert [chart.attrs["aria-label"] for chart in charts] == ["Builds", "Builds' memory", "Free memory", "CPU"]
    for chart in charts:
        assert float(chart.attrs["data-w"]) > 1000 and float(chart.attrs["data-h"]) > 50
        series = chart.find_all("path", "series")
        assert series and all(float(path.attrs["data-bw"]) > 100 for path in series), chart.attrs["aria-label"]
    memory = charts[1]
    assert {path.attrs["data-series"] for path in memory.find_all("path", "series")} == {"rss", "reserved", "limit"}
    # The builds' memory rose above zero: the RSS path is more than a flat line.
    rss = next(path for path in memory.find_all("path", "series") if path.attrs["data-series"] == "rss")
    assert float(rss.attrs["data-bh"]) > 1


@needs_browser
def test_clicking_a_column_sorts_the_table(run: Run) -> None:
    # Click "peak" once (largest first), and record the order; then "waited" twice (smallest first).
    script = """
    const heads = [...document.querySelectorAll("table.builds th")];
    const order = () => [...document.querySelectorAll("table.builds tbody tr")].map(r => r.dataset.name).join(",");
    heads.find(th => th.textContent === "peak").click();
    document.body.dataset.bypeak = order();
    const waited = heads.find(th => th.textContent === "waited");
    waited.click(); waited.click();
    document.body.dataset.bywaited = order();
    """
    body = rendered(run.html, script).root.find_all("body")[0]
    builds = run.json["builds"]
    by_peak = sorted(builds, key=lambda build: -build["peak_rss_bytes"])
    assert body.attrs["data-bypeak"].split(",") == [build["name"] for build in by_peak]
    waited_s = {build["name"]: build["waited_s"] for build in builds}
    waited = [waited_s[name] for name in body.attrs["data-bywaited"].split(",")]
    assert waited == sorted(waited) and len(waited) == len(builds)


@needs_browser
def test_a_screenshot_of_the_report(run: Run) -> None:
    shot = run.folder / "report.png"
    result = chromium("--window-size=1280,1400", f"--screenshot={shot}", run.html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 1400)
    assert len(data) > 50_000  # a page of drawings, not a blank one


def synthetic_report(count: int, name: str = "pkg{index}", error: str = "the build backend failed") -> RunReport:
    """``count`` builds of made-up figures on 8 slots over about an hour, with a full series of samples; one in 50
    (the first among them) fails with ``error``."""
    report = RunReport(started_at=1_000_000.0, finished_at=1_000_000.0 + 3600,
                       settings={"max_builds": 8, "memory_limit": 16 * 1024 * MiB, "min_free_memory": 1024 * MiB})
    slot_end = [1_000_000.0] * 8
    for index in range(count):
        slot = index % 8
        start = slot_end[slot]
        steps = [("extract", 0.4), ("create_env", 0.3), ("install_requires", 2.0), ("get_requires", 0.5),
                 ("admission", 3.0 + index % 7), ("backend", 10.0 + (index * 37) % 40), ("publish", 0.2)]
        spans = []
        for phase, seconds in steps:
            spans.append(PhaseSpan(phase=phase, start=start, end=start + seconds))
            start += seconds
        slot_end[slot] = start
        failed = index % 50 == 0
        report.builds.append(BuildResult(
            name=name.format(index=index), version=f"{index}.0", source=f"pkg{index}.tar.gz",
            status=Status.FAILED if failed else Status.BUILT, wheel=None, started_at=spans[5].start,
            finished_at=start, phases={}, peak_rss_bytes=(100 + index % 900) * MiB, cpu_s=12.5,
            log=f"/nonexistent/pkg{index}.log", error=error if failed else None,
            predicted_rss_bytes=1024 * MiB, waits={"memory_limit": 3.0, "queue": 12.0},
            wait_reason="waiting: 15.0 GiB of the 16.0 GiB memory limit reserved, needs 1.0 GiB", spans=tuple(spans)))
    for point in range(4000):
        report.samples.add(Sample(at=1_000_000.0 + point * 0.9, running=point % 8, waiting=count // 2,
                                  preparing=2, rss=(point % 50) * 200 * MiB, reserved=16_000 * MiB,
                                  available_memory=20_000 * MiB,
                                  cpu_busy=6.5, cpu_count=8))
    return report


def test_a_thousand_builds_make_a_report_under_2_mb(tmp_path: Path) -> None:
    write_html(synthetic_report(1000), tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    size = len(page.encode())
    print(f"\nHTML report of 1,000 builds: {size / 1e6:.2f} MB", file=sys.stderr)
    assert size < 2_000_000
    dom = Dom(page)
    assert len([bar for bar in dom.find_all("g", "bar")]) == 1000
    assert len([row for row in dom.find_all("tr") if "data-name" in row.attrs]) == 1000


@needs_browser
def test_untrusted_names_and_errors_stay_text(tmp_path: Path) -> None:
    report = synthetic_report(3, name="<script>window.pwned=1</script>{index}",
                              error='<img src=x onerror="window.pwned=2">')
    page = tmp_path / "hostile.html"
    write_html(report, page)
    dom = rendered(page)
    assert dom.root.find_all("body")[0].attrs["data-scripts"] == "2"  # the report's and the probe: none injected
    assert not dom.find_all("img")
    names = {bar.attrs["data-name"] for bar in dom.find_all("g", "bar")}
    assert names == {f"<script>window.pwned=1</script>{index}" for index in range(3)}
    (failure,) = dom.find_all("div", "failure")
    assert '<img src=x onerror="window.pwned=2">' in failure.text()


def test_download_keeps_its_reports_too(tmp_path: Path) -> None:
    with IndexServer() as index:
        lines = []
        for name in ("one", "two"):
            sdist = make_sdist(tmp_path / "made", name)
            lines.append(f"{name}==1.0 --hash=sha256:{index.add(sdist.name, sdist.read_bytes())}")
        (tmp_path / "req.txt").write_text("\n".join(lines) + "\n")
        result = orchestrate("download", "-r", tmp_path / "req.txt", "--no-deps", "-d", tmp_path / "sdists",
                             "-i", index.simple_url, "--state-dir", tmp_path / "state",
                             "--report-html", tmp_path / "dl.html", "--trace", tmp_path / "dl.trace.json")
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "state" / "runs").iterdir()
    assert sorted(path.name for path in folder.iterdir()) == ["report.html", "report.json"]
    page = Dom((tmp_path / "dl.html").read_text())
    assert {(bar.attrs["data-group"], bar.attrs["data-name"]) for bar in page.find_all("g", "bar")} == {
        ("download", "one"), ("download", "two")}
    trace = json.loads((tmp_path / "dl.trace.json").read_text())["traceEvents"]
    assert {event["args"]["name"] for event in trace if event["ph"] == "X"} == {"one", "two"}


@pytest.mark.parametrize("option", ["--report-json", "--report-html", "--trace"])
def test_a_report_that_cannot_be_written_is_one_line_and_a_failed_run(tmp_path: Path, option: str) -> None:
    make_sdist(tmp_path / "sdists", "one")
    (tmp_path / "afile").write_text("not a folder")
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--state-dir", tmp_path / "state",
                         option, tmp_path / "afile" / "report")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert f"error: {option} {tmp_path / 'afile' / 'report'}: cannot write it" in result.stderr
    assert list((tmp_path / "wh").glob("one-1.0-*.whl"))  # the build itself went on, and its run folder is kept
    assert list((tmp_path / "state" / "runs").glob("*/report.html"))


def test_a_report_the_run_folder_holds_is_copied_where_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pages: list[Path] = []

    def counted(report: RunReport, path: Path) -> None:
        pages.append(path)
        write_html(report, path)

    monkeypatch.setattr(runs, "write_html", counted)
    folder, mine = tmp_path / "runs" / "20261205T000000Z-1", tmp_path / "mine"
    kept, problems = runs.write_reports(synthetic_report(5), runs.ReportFiles(
        json=mine / "r.json", html=mine / "r.html", run_folder=folder))
    assert (kept, problems) == (folder / "report.html", [])
    assert pages == [folder / "report.html"]
    assert (mine / "r.html").read_bytes() == (folder / "report.html").read_bytes()
    assert (mine / "r.json").read_bytes() == (folder / "report.json").read_bytes()
    # Without a run folder to copy from, each is written from the results.
    (tmp_path / "blocked").write_text("not a folder")
    kept, problems = runs.write_reports(synthetic_report(5), runs.ReportFiles(
        html=mine / "again.html", run_folder=tmp_path / "blocked" / "run"))
    assert (kept, problems) == (None, [])
    assert pages[1:] == [mine / "again.html"]
    assert (mine / "again.html").read_bytes() == (mine / "r.html").read_bytes()
