"""What the displays print, fed with plain snapshots: no run, no processes."""

from __future__ import annotations

import dataclasses
import io
import re
import threading
import time

import pytest
from rich.console import Console

from orchestrator import display as display_module
from orchestrator.buildstate import RunState
from orchestrator.display import SUMMARY_ROWS, LiveDisplay, PlainDisplay, print_summary
from orchestrator.jobs import BuildResult, Status
from orchestrator.report import RunReport
from orchestrator.report.records import BUILDS, Records
from orchestrator.stages import StageProgress


def progress(done: int, *, in_flight: int = 0, failed: int = 0, total: int = 4) -> StageProgress:
    return StageProgress(total=total, in_flight=in_flight, done=done, failed=failed, bytes_done=done * 2048)


def lines(out: io.StringIO) -> list[str]:
    return [re.sub(r"^\[ *\d+\.\ds\] ", "", line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        # The first end, then the last; the ends between fall within the interval.
        (60.0, ["downloads: 1/4 files done, 1 in flight, 0 failed, 2.0 KiB",
                "downloads: 3/4 files done, 0 in flight, 1 failed, 6.0 KiB"]),
        # Every end when there is no interval; starts and stale snapshots never print.
        (0.0, ["downloads: 1/4 files done, 1 in flight, 0 failed, 2.0 KiB",
               "downloads: 2/4 files done, 1 in flight, 0 failed, 4.0 KiB",
               "downloads: 3/4 files done, 0 in flight, 1 failed, 6.0 KiB"]),
    ],
)
def test_plain_display_prints_download_progress_lines(interval: float, expected: list[str]) -> None:
    out = io.StringIO()
    display = PlainDisplay(Console(file=out, width=200), progress_interval=interval)
    for snapshot in [
        progress(0),
        progress(0, in_flight=2),
        progress(1, in_flight=1),
        progress(1, in_flight=2),  # a start
        progress(2, in_flight=1),
        progress(1, in_flight=2),  # older than the one before, reported late by another thread
        progress(3, failed=1),
    ]:
        display.downloads(snapshot)
    assert lines(out) == expected


def test_live_display_shows_downloads_above_builds() -> None:
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, width=120, force_terminal=True))
    try:
        display.downloads(progress(1, in_flight=2))
        display.update(RunState(running=(), pending=3, built=0, failed=0, waiting_reason=None, readings=None))
    finally:
        display.close()  # draws once more before clearing (transient)
    rendered = out.getvalue()
    downloads = rendered.rfind("downloads: 1/4 files done, 2 in flight, 0 failed, 2.0 KiB")
    builds = rendered.rfind("0 built, 0 failed, 0 running, 3 waiting")
    assert 0 <= downloads < builds


def built(name: str, waits: dict[str, float] | None = None, version: str = "1.0") -> BuildResult:
    return BuildResult(name=name, version=version, source=f"{name}.tar.gz", status=Status.BUILT,
                       wheel=f"{name}-{version}-py3-none-any.whl", started_at=10.0, finished_at=14.0, phases={},
                       peak_rss_bytes=2 * 1024**3, cpu_s=3.0, log=None, error=None,
                       predicted_rss_bytes=3 * 1024**3, waits=waits or {})


def table_cells(text: str) -> list[list[str]]:
    """The cells of each line of the summary's tables."""
    return [[cell.strip() for cell in re.split("[│┃]", line)[1:-1]]
            for line in text.splitlines() if line.startswith(("│", "┃"))]


def test_summary_shows_how_long_each_build_waited() -> None:
    report = RunReport(started_at=0.0, finished_at=20.0,
                       builds=Records(BUILDS, [built("first"), built("held", {"queue": 1.5, "memory_limit": 6.25})]))
    out = io.StringIO()
    print_summary(Console(file=out, width=200), report)
    header, *rows = table_cells(out.getvalue())[:3]
    column = header.index("waited s")
    assert {row[0]: row[column] for row in rows} == {"first 1.0": "-", "held 1.0": "7.8"}  # 7.75 s in all


def test_summary_folds_a_long_name_instead_of_cutting_it() -> None:
    name = "a-package-whose-name-goes-on-" + "and-on-" * 12 + "end"
    report = RunReport(started_at=0.0, finished_at=20.0,
                       builds=Records(BUILDS, [built(name, version="2024.1.post12345")]))
    out = io.StringIO()
    print_summary(Console(file=out, width=160, soft_wrap=True), report)  # the width off a terminal
    assert "…" not in out.getvalue()
    builds = table_cells(out.getvalue().split("stages")[0])
    folded = "".join(row[0] for row in builds[1:]).replace(" ", "")
    assert folded == f"{name}2024.1.post12345"  # the whole name, then the version


def test_live_display_says_why_a_build_waits_without_repeating_the_event_line() -> None:
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, width=120, force_terminal=True))
    try:
        display.event("wc-1.0: waiting: 1 of 1 builds running")  # the scheduler says it once, as an event
        display.update(RunState(running=(), pending=2, built=0, failed=0,
                                waiting_reason="waiting: 1 of 1 builds running", readings=None))
    finally:
        display.close()
    rendered = out.getvalue()
    assert rendered.count("waiting: 1 of 1 builds running") == 1
    assert "0 built, 0 failed, 0 running, 2 waiting (1 of 1 builds running)" in rendered


def test_the_last_progress_line_printed_is_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads end downloads at once: the older snapshot, let through first, never prints after the newer one."""
    out = io.StringIO()
    display = PlainDisplay(Console(file=out, width=200), progress_interval=0.0)
    newer_described = threading.Event()
    describe = display_module.describe_downloads

    def slow_describe(snapshot: StageProgress) -> str:
        if snapshot.done == 2:
            newer_described.wait(timeout=0.5)  # slow for the older one: the newer one must wait its turn
        else:
            newer_described.set()
        return describe(snapshot)

    monkeypatch.setattr(display_module, "describe_downloads", slow_describe)
    older = threading.Thread(target=display.downloads, args=(progress(2, in_flight=1, total=3),))
    older.start()
    while display._downloads_ended < 2:  # noqa: SLF001 - until the older snapshot has been let through
        time.sleep(0.001)
    display.downloads(progress(3, total=3))
    older.join()
    assert lines(out)[-1] == "downloads: 3/3 files done, 0 in flight, 0 failed, 6.0 KiB"


def test_summary_shows_compiler_cache_hits_when_a_build_compiled() -> None:
    compiled = dataclasses.replace(built("ext"), compiler_calls=5, compiler_hits=3, compiler_misses=1)
    uncached = dataclasses.replace(built("pure"), compiler_calls=0, compiler_hits=0, compiler_misses=0)
    report = RunReport(started_at=0.0, finished_at=20.0,
                       builds=Records(BUILDS, [compiled, uncached, built("no-cache")]))
    out = io.StringIO()
    print_summary(Console(file=out, width=250), report)
    header, *rows = table_cells(out.getvalue().split("stages")[0])
    column = header.index("cache hits")
    assert {row[0]: row[column] for row in rows} == {"ext 1.0": "3/4", "pure 1.0": "-", "no-cache 1.0": "-"}
    assert "compiler cache: 3 of 4 cacheable compilations hit (75%); 5 compiler calls in all" in out.getvalue()
    plain = io.StringIO()
    print_summary(Console(file=plain, width=250),
                  RunReport(started_at=0.0, finished_at=20.0, builds=Records(BUILDS, [uncached])))
    assert "cache hits" not in plain.getvalue() and "compiler cache" not in plain.getvalue()


def test_plain_lines_on_a_log_console_read_as_rich_prints_them() -> None:
    """On a console that neither styles nor wraps (a CI log), lines are written as they are, not rendered:
    the same characters as rich's own print, whatever the message holds."""
    messages = [
        "demo-1.0: started (needs about 1.0 GiB)",
        "[red]not markup[/red] and [bold]",  # brackets are text
        "x" * 400,  # far past the width: one line
        "tab\tand\tcarriage\rreturn, bell\x07, backspace\x08",
        "wide: 構築 ✓ — é",
        "two\nlines",
    ]
    ours, rich = io.StringIO(), io.StringIO()
    display = PlainDisplay(Console(file=ours, width=80, soft_wrap=True, highlight=False))
    console = Console(file=rich, width=80, soft_wrap=True, highlight=False)
    for message in messages:
        display.event(message)
        console.print(f"[    0.0s] {message}", markup=False, highlight=False)
    assert ours.getvalue().splitlines() and lines(ours) == lines(rich)
    assert len(ours.getvalue().splitlines()) == len(messages) + 1  # "two\nlines" is two


def test_summary_table_shows_the_longest_builds_and_says_how_many_more_the_report_holds() -> None:
    builds = [dataclasses.replace(built(f"pkg{index:03d}"), finished_at=10.0 + index / 10)
              for index in range(SUMMARY_ROWS + 7)]
    out = io.StringIO()
    print_summary(Console(file=out, width=250),
                  RunReport(started_at=0.0, finished_at=20.0, builds=Records(BUILDS, builds)))
    header, *rows = table_cells(out.getvalue().split("stages")[0])
    longest_first = [f"{result.name} 1.0" for result in builds[::-1]]
    assert [row[0] for row in rows] == longest_first[:SUMMARY_ROWS]
    assert "and 7 shorter builds: see the report" in out.getvalue()
