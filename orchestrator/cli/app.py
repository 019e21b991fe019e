"""What every ``orchestrate`` command shares: the command group, one-line errors and exit codes, signals,
the settings read from shared options, and the end of a run (reports, summary, exit code).

Exit codes: 0 everything built (or installed), 1 something failed, 2 usage
error, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from rich.console import Console

from orchestrator import __version__
from orchestrator.display import PlainDisplay, print_summary
from orchestrator.download.binary import BinaryPolicy
from orchestrator.download.fetch import DownloadSettings
from orchestrator.errors import (
    InstallError,
    OrchestratorError,
    ResolutionError,
    UsageError,
)
from orchestrator.install.installer import WheelInstaller
from orchestrator.install.target import Target
from orchestrator.policy.history import default_state_dir
from orchestrator.report import RunReport
from orchestrator.report.junit import write_junit
from orchestrator.report.runs import ReportFiles, write_reports
from orchestrator.settings import IndexSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
HISTORY_FILE = "history.sqlite3"
"""The build history's file under --state-dir."""

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread like KeyboardInterrupt."""


class _QuietNotFoundPages(logging.Filter):
    """Drop unearth's warning for an index page that answers 404.

    A 404 page means "no such project on this index" (PEP 503), normal with
    --extra-index-url; a requirement found nowhere is reported once, by the download stage.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Client Error(404)" not in record.getMessage()


_QUIET_NOT_FOUND_PAGES = _QuietNotFoundPages()


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
    return DownloadSettings(
        index=index,
        cache_dir=None if no_cache else (cache_dir or state / "downloads").resolve(),
        retries=download_retries,
        timeout=download_timeout,
        require_hashes=require_hashes,
        binary=binary,
    )


def wheel_installer(into: Path, reinstall: bool, compile_bytecode: bool,
                     install_timeout: float | None) -> WheelInstaller:
    try:
        target = Target.from_path(into)
    except InstallError as exc:
        raise UsageError(exc.message) from None
    return WheelInstaller(target, compile_bytecode=compile_bytecode, reinstall=reinstall, timeout=install_timeout)


@contextmanager
def _signals() -> Iterator[None]:
    """Turn SIGTERM into an exception in the main thread, as SIGINT already is."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_console() -> Console:
    """Standard error; lines are never wrapped, so each message stays one line in logs."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160  # tables in CI logs and files are not read on 80-column terminals
    return console


def print_error(message: str) -> None:
    """``error: <message>``, one line: the one form of every error the command reports."""
    make_console().print(f"error: {' '.join(message.split())}", markup=False, style="red")


class _Orchestrate(click.Group):
    """The command group; every usage error, click's own or ours, is one ``error:`` line and exit 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args:  # the help, as click shows it, without an error line made of it
            click.echo(ctx.get_help(), err=True)
            ctx.exit(EXIT_USAGE)
        return super().parse_args(ctx, args)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:  # a bad option value, an unknown option, a missing argument
            print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C while the command line was being read
            sys.exit(EXIT_SIGINT)
        sys.exit(code if isinstance(code, int) else EXIT_OK)  # --help and --version end here


def handle_errors(function: F) -> F:
    """Map our exceptions to one-line messages and exit codes; tracebacks only with --debug."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            with _signals():
                return function(*args, **kwargs)
        except UsageError as exc:
            if debug:
                raise
            raise click.UsageError(exc.message) from None
        except OrchestratorError as exc:
            if debug:
                if isinstance(exc, ResolutionError):
                    make_console().print(exc.output, markup=False)
                raise
            print_error(exc.message)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            make_console().print("interrupted: running builds were stopped", markup=False)
            sys.exit(EXIT_SIGINT)
        except Terminated:
            make_console().print("terminated: running builds were stopped", markup=False)
            sys.exit(EXIT_SIGTERM)

    return wrapper  # type: ignore[return-value]


@click.group(cls=_Orchestrate, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="orchestrate")
@click.option("--debug", is_flag=True, envvar="ORCHESTRATE_DEBUG", help="Show tracebacks and debug logs.")
def main(debug: bool) -> None:
    """Build wheels from sdists in parallel, capped by count, memory and CPU."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        logging.getLogger("unearth.collector").addFilter(_QUIET_NOT_FOUND_PAGES)


def resolve_state_dir(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()).resolve()


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


