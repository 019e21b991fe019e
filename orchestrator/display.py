"""What a person sees: live progress on a terminal, one line per event elsewhere, and the summary."""

from __future__ import annotations

import threading
import time

from rich.console import Console, Group
from rich.control import strip_control_codes
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.buildstate import RunState
from orchestrator.download.results import DownloadStatus
from orchestrator.install.results import InstallStatus
from orchestrator.jobs import PHASES, BuildResult, Status
from orchestrator.report import RunReport
from orchestrator.report.logtail import log_tail
from orchestrator.stages import StageProgress
from orchestrator.units import format_size

LOG_TAIL_LINES = 12
SUMMARY_ROWS = 50
"""Builds in the summary's table at most, the longest first (failures come again below it, and every build is
in the reports): a farm's night of thousands would print a table no one reads, and rendering it took 1 ms and
8 KB a row."""


def describe_downloads(progress: StageProgress) -> str:
    """``downloads: 3/10 files done, 2 in flight, 1 failed, 4.2 MiB``."""
    return (f"downloads: {progress.done}/{progress.total} files done, {progress.in_flight} in flight, "
            f"{progress.failed} failed, {format_size(progress.bytes_done)}")


class PlainDisplay:
    """One timestamped line per event, for logs and CI.

    Download progress gets a line of its own when a download ends: the first time, then
    at most once every ``progress_interval`` seconds, and when the last one ends.

    On a console that styles and wraps nothing (not a terminal, ``soft_wrap``, not recording), a line
    is written to its file as it is, control codes removed and tabs expanded as rich does: rich's
    rendering took 35 us a line, four lines a build (1 us written as it is).
    """

    def __init__(self, console: Console, *, progress_interval: float = 5.0) -> None:
        self._console = console
        self._as_text = not console.is_terminal and console.soft_wrap and not console.record
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._progress_interval = progress_interval
        self._progress_printed_at = -float("inf")
        self._downloads_ended = 0

    def event(self, message: str) -> None:
        with self._lock:
            self._print(message)

    def _print(self, message: str) -> None:
        line = f"[{time.monotonic() - self._start:7.1f}s] {message}"
        if self._as_text:
            file = self._console.file
            file.write(strip_control_codes(line).expandtabs(8) + "\n")
            file.flush()
        else:
            self._console.print(line, markup=False, highlight=False)

    def downloads(self, progress: StageProgress) -> None:
        """Called from download threads as fetches start and end."""
        ended = progress.done + progress.failed
        now = time.monotonic()
        with self._lock:
            if ended <= self._downloads_ended:  # a start, or a snapshot older than one printed
                return
            self._downloads_ended = ended
            if not progress.finished and now - self._progress_printed_at < self._progress_interval:
                return
            self._progress_printed_at = now
            # Printed under the lock: an older snapshot let through must not print after a newer one.
            self._print(describe_downloads(progress))

    def update(self, state: RunState) -> None:
        """Nothing to redraw: every change already printed a line."""

    def close(self) -> None:
        """Nothing to tear down."""


class LiveDisplay(PlainDisplay):
    """Download counts and a live table of running builds under the event lines (rich), for terminals."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._as_text = False  # the live table is drawn under the lines: rich places them
        self._live = Live(console=console, refresh_per_second=4, transient=True)
        self._render_lock = threading.Lock()
        self._state: RunState | None = None
        self._downloads: StageProgress | None = None
        self._live.start()

    def downloads(self, progress: StageProgress) -> None:
        with self._render_lock:
            self._downloads = progress
            self._render()

    def update(self, state: RunState) -> None:
        with self._render_lock:
            self._state = state
            self._render()

    def _render(self) -> None:
        parts: list[Table | Text] = []
        if self._downloads is not None:
            parts.append(Text(describe_downloads(self._downloads), style="bold"))
        if self._state is not None:
            parts.extend(self._builds(self._state))
        self._live.update(Group(*parts))

    @staticmethod
    def _builds(state: RunState) -> list[Table | Text]:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for column in ("build", "phase", "elapsed", "memory", "peak", "predicted"):
            table.add_column(column, justify="left" if column in ("build", "phase") else "right")
        for view in state.running:
            table.add_row(view.key, view.phase, f"{view.elapsed:.0f}s", format_size(view.rss),
                          format_size(view.peak_rss), format_size(view.need))
        # Why the next build waits, in the counts' line: the event lines above already say
        # "<build>: waiting: ..." once, and the same line again under them read as printed twice.
        why = f" ({state.waiting_reason.removeprefix('waiting: ')})" if state.waiting_reason else ""
        status = Text(
            f"{state.built} built, {state.failed} failed, {len(state.running)} running, {state.pending} waiting{why}",
            style="bold",
        )
        return [status, table]

    def close(self) -> None:
        self._live.stop()


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value else "-"


STATUS_STYLES = {Status.BUILT: "green", Status.DOWNLOADED: "cyan", Status.FAILED: "red", Status.SKIPPED: "dim",
                 Status.NOT_STARTED: "yellow", Status.STOPPED: "yellow"}


def _cache_hits(result: BuildResult) -> str:
    """``hits/cacheable compilations`` of one build, ``-`` when it compiled nothing cacheable."""
    cacheable = (result.compiler_hits or 0) + (result.compiler_misses or 0)
    return f"{result.compiler_hits or 0}/{cacheable}" if cacheable else "-"


def _cache_line(calls: int, hits: int, misses: int) -> str:
    """The compiler cache over the run's builds, in one line."""
    share = f" ({100 * hits / (hits + misses):.0f}%)" if hits + misses else ""
    return (f"compiler cache: {hits} of {hits + misses} cacheable compilations hit{share}; "
            f"{calls} compiler calls in all")


def print_summary(console: Console, report: RunReport) -> None:
    """The end-of-run table: per package and per stage, then every failure with its log tail."""
    builds = report.builds
    if builds:
        # One pass over the results (on disk): where they ran, and what the compiler cache did.
        farm, calls, hits, misses = False, 0, 0, 0
        for result in builds:
            farm = farm or bool(result.host)  # where each ran, when not all on this machine
            calls += result.compiler_calls or 0
            hits += result.compiler_hits or 0
            misses += result.compiler_misses or 0
        compiled = bool(calls)
        hidden = len(builds) - SUMMARY_ROWS
        caption = f"and {hidden} shorter builds: see the report" if hidden > 0 else None
        table = Table(title="builds", title_justify="left", caption=caption, caption_justify="left")
        # Folded, never cut: a long name (or version) keeps every character, over several lines if need be.
        table.add_column("package", overflow="fold")
        table.add_column("status")
        if farm:
            table.add_column("host", overflow="fold")
        for column in ("waited s", *PHASES, "wall s", "cpu s", "peak RSS", "predicted",
                       *(("cache hits",) if compiled else ())):
            table.add_column(column, justify="right")
        for _, result in builds.longest_first(SUMMARY_ROWS):
            style = STATUS_STYLES[result.status]
            table.add_row(
                f"{result.name} {result.version or ''}",
                Text(result.status.value, style=style),
                *([result.host or "-"] if farm else []),
                _seconds(result.waited_s),
                *(_seconds(result.phases.get(phase)) for phase in PHASES),
                _seconds(result.wall_s),
                _seconds(result.cpu_s),
                format_size(result.peak_rss_bytes) if result.peak_rss_bytes else "-",
                format_size(result.predicted_rss_bytes) if result.predicted_rss_bytes else "-",
                *((_cache_hits(result),) if compiled else ()),
            )
        console.print(table)
        if compiled:
            console.print(_cache_line(calls, hits, misses), markup=False, highlight=False)
    stages = Table(title="stages", title_justify="left")
    for column in ("stage", "items", "span s", "busy s", "sum of items s"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for name, stage in report.stages().items():
        if stage.count:
            stages.add_row(name, str(stage.count), f"{stage.span_s:.1f}", f"{stage.busy_s:.1f}", f"{stage.total_s:.1f}")
    console.print(stages)
    for result in report.failed:
        console.print(Text(f"FAILED {result.name} {result.version or ''}: {result.error}", style="bold red"))
        tail = "\n".join(log_tail(result.log, LOG_TAIL_LINES))
        if tail:
            console.print(Text(tail, style="dim"))
        if result.log:
            console.print(f"  full log: {result.log}", markup=False, highlight=False)
    for stage_name, records in (("download", report.downloads), ("install", report.installs)):
        for item in records.failed():
            console.print(Text(f"FAILED {stage_name} of {item.name} {item.version or ''}: {item.error}",
                               style="bold red"))
    for error in report.errors:
        console.print(Text(f"FAILED {error.stage} of {error.item}: {error.error}", style="bold red"))
    if report.unmet:
        what = "the set is incomplete" if report.unmet_fails else "warning: the set is incomplete"
        style = "red" if report.unmet_fails else "yellow"
        console.print(Text(f"{what}: {len(report.unmet)} requirement(s) of its wheels met by no wheel of the run "
                           "or of the wheelhouse:", style=f"bold {style}" if report.unmet_fails else style))
        for line in report.unmet:
            console.print(Text(f"  {line}", style=style))
    if report.target_unmet:
        console.print(Text(f"the environment is incomplete: {len(report.target_unmet)} requirement(s) of what is "
                           "installed there met by nothing installed there:", style="bold red"))
        for line in report.target_unmet:
            console.print(Text(f"  {line}", style="red"))
    wall = (report.finished_at or time.time()) - report.started_at
    console.print(f"{'; '.join(_counts(report))} in {wall:.1f} s", markup=False, highlight=False)


def _counts(report: RunReport) -> list[str]:
    """What each stage of the run did, for the last line: only the stages the run had."""
    parts = []
    if report.downloads:
        downloads = report.downloads.counts
        local = f", {downloads[DownloadStatus.LOCAL.value]} local" if downloads[DownloadStatus.LOCAL.value] else ""
        if downloads[DownloadStatus.PRESENT.value]:
            local = f", {downloads[DownloadStatus.PRESENT.value]} present{local}"
        halted_count = downloads[DownloadStatus.STOPPED.value]
        halted = f", {halted_count} stopped" if halted_count else ""
        parts.append(f"{downloads[DownloadStatus.DOWNLOADED.value]} downloaded, "
                     f"{downloads[DownloadStatus.CACHED.value]} cached{local}, "
                     f"{downloads[DownloadStatus.FAILED.value]} failed{halted}")
    if report.builds or not (report.downloads or report.installs or report.errors):
        builds = report.builds.counts
        not_started = f", {builds[Status.NOT_STARTED.value]} not started" if builds[Status.NOT_STARTED.value] else ""
        stopped = f", {builds[Status.STOPPED.value]} stopped" if builds[Status.STOPPED.value] else ""
        taken = builds[Status.DOWNLOADED.value]
        taken_text = f"{taken} wheel{'s' if taken > 1 else ''} from the index, " if taken else ""
        parts.append(f"{taken_text}{builds[Status.BUILT.value]} built, {builds[Status.SKIPPED.value]} skipped, "
                     f"{builds[Status.FAILED.value]} failed{not_started}{stopped}")
    if report.installs:
        installs = report.installs.counts
        parts.append(f"{installs[InstallStatus.INSTALLED.value]} installed, "
                     f"{installs[InstallStatus.SKIPPED.value]} skipped, {installs[InstallStatus.FAILED.value]} failed")
    if report.errors:
        parts.append(f"{len(report.errors)} stage error{'s' if len(report.errors) > 1 else ''}")
    unmet = len(report.unmet) + len(report.target_unmet)
    if unmet:
        parts.append(f"{unmet} unmet requirement{'s' if unmet > 1 else ''}")
    return parts
