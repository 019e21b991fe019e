"""What every ``orchestrate`` command shares: the command group, one-line errors and exit codes, signals.

It imports little (click and the error classes): ``orchestrate --help`` and every command load it, and each
command imports what it runs with when it runs (:mod:`.run` holds what the running commands share).

Exit codes: 0 everything built (or installed), 1 something failed, 2 usage
error, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from orchestrator import __version__
from orchestrator.errors import (
    OrchestratorError,
    ResolutionError,
    UsageError,
)

if TYPE_CHECKING:
    from rich.console import Console

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
    from rich.console import Console  # rich, imported when there is something to print: not for --help

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


_STOPPED = {
    "build": "running builds were stopped",
    "download": "the downloads under way were stopped",
    "install": "no other install was started; those under way were completed",
}
"""What an interrupted command did with the work under way, by command."""


def handle_errors(function: F) -> F:
    """Map our exceptions to one-line messages and exit codes; tracebacks only with --debug."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context = click.get_current_context()
        debug, command = context.find_root().params.get("debug", False), context.info_name or "build"
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
            make_console().print(f"interrupted: {_STOPPED.get(command, _STOPPED['build'])}", markup=False)
            sys.exit(EXIT_SIGINT)
        except Terminated:
            make_console().print(f"terminated: {_STOPPED.get(command, _STOPPED['build'])}", markup=False)
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
    from orchestrator.policy.history import default_state_dir  # sqlite3 and platformdirs: not for --help

    return (state_dir or default_state_dir()).resolve()


def writable_folder(path: Path, option: str) -> Path:
    """``path``, made with its parents where missing; a usage error naming ``option`` where it cannot be made or
    written, before the run starts rather than in every build or as a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot make the folder ({exc.strerror or exc}); "
                         "name a folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder is not writable; name a folder you can write to")
    return path
