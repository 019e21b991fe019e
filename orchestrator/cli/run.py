"""What the commands that run share: the settings of their stages from shared options, and the end of a run
(reports, summary, exit code).

Each command imports this module when it runs, not with its options: ``orchestrate --help`` loads none of it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.app import EXIT_FAILED, EXIT_OK, HISTORY_FILE, Terminated, print_error, writable_folder
from orchestrator.display import PlainDisplay, print_summary
from orchestrator.errors import InstallError, UsageError
from orchestrator.install.target import Target
from orchestrator.report import RunReport
from orchestrator.report.junit import write_junit
from orchestrator.report.runs import ReportFiles, write_reports
from orchestrator.settings import IndexSettings

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.download.binary import BinaryPolicy
    from orchestrator.download.fetch import DownloadSettings
    from orchestrator.install.installer import WheelInstaller


def _absolute_find_links(links: tuple[str, ...]) -> tuple[str, ...]:
    """Local find-links folders as absolute paths: builds run in other folders."""
    return tuple(str(Path(link).resolve()) if "://" not in link and Path(link).exists() else link for link in links)


def index_settings(index_url: str | None, extra_index_url: tuple[str, ...], find_links: tuple[str, ...], no_index: bool,
           from_files: IndexSettings | None = None) -> IndexSettings:
    """Command-line index options, merged with those of requirements files as pip does."""
    files = from_files or IndexSettings()
    return IndexSettings(
        index_url=index_url or files.index_url,
        extra_index_urls=tuple(dict.fromkeys([*extra_index_url, *files.extra_index_urls])),
        find_links=_absolute_find_links(tuple(dict.fromkeys([*find_links, *files.find_links]))),
        no_index=no_index or files.no_index,
    )


def download_settings(index: IndexSettings, state: Path, cache_dir: Path | None, no_cache: bool,
                       download_timeout: float, download_retries: int, require_hashes: bool,
                       binary: BinaryPolicy) -> DownloadSettings:
    from orchestrator.download.fetch import DownloadSettings  # httpx and unearth: only runs that download

    if cache_dir is not None and not no_cache:
        writable_folder(cache_dir, "--cache-dir")
    return DownloadSettings(
        index=index,
        cache_dir=None if no_cache else (cache_dir or state / "downloads").resolve(),
        retries=download_retries,
        timeout=download_timeout,
        require_hashes=require_hashes,
        binary=binary,
    )


def prune_state_folder(state: Path, days: int | None, cache_dir: Path | None, display: PlainDisplay) -> str | None:
    """What no run used for ``days`` out of ``state``, the download cache and the history (``--prune-unused-after``),
    said in one line when anything went: that line."""
    from orchestrator.pruning import prune_state

    pruned = prune_state(state, days=days, downloads=(cache_dir or state / "downloads").resolve(),
                         history=state / HISTORY_FILE, now=time.time())
    line = pruned.line() if pruned else None
    if line:
        display.event(line)
    return line


def wheel_installer(into: Path, reinstall: bool, compile_bytecode: bool,
                     install_timeout: float | None) -> WheelInstaller:
    from orchestrator.install.installer import WheelInstaller  # pypa installer: only runs that install

    try:
        target = Target.from_path(into)
    except InstallError as exc:
        raise UsageError(exc.message) from None
    return WheelInstaller(target, compile_bytecode=compile_bytecode, reinstall=reinstall, timeout=install_timeout)


def run_and_report(work: Callable[[], object], report: RunReport, display: PlainDisplay, console: Console,
                    files: ReportFiles, *, junit: Path | None = None) -> None:
    """Run ``work``; whatever happens, write the (partial) reports and the summary, whose last line says where
    the run folder's report is, then a line for each report that could not be written (which fails the run);
    exit by the outcome."""
    unwritten: list[str] = []
    try:
        work()
    except KeyboardInterrupt:
        report.interrupted = "SIGINT"
        raise
    except Terminated:
        report.interrupted = "SIGTERM"
        raise
    finally:
        report.finished_at = report.finished_at or time.time()
        display.close()
        kept, unwritten = write_reports(report, files)
        if junit:
            try:
                write_junit(report, junit)
            except OSError as exc:  # said after the summary, and the run fails: CI would miss the file
                reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
                unwritten.append(f"cannot write the JUnit file {junit} ({reason}); choose another --junit file")
        if report.builds or report.downloads or report.installs or report.errors:
            print_summary(console, report)
        if kept is not None:
            console.print(f"report: {kept} (and report.json beside it)", markup=False, highlight=False)
        for problem in unwritten:
            print_error(problem)
    sys.exit(EXIT_OK if report.ok and not unwritten else EXIT_FAILED)
