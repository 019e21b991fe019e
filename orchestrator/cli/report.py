"""``orchestrate report``: the build history."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.app import HISTORY_FILE, handle_errors, main, resolve_state_dir
from orchestrator.options import (
    option,
)


@main.command()
@option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
        help="Where `orchestrate build` kept its history (default: the user cache folder).")
@option("--last", type=click.IntRange(min=1, max=1000), default=10, show_default=True, metavar="N",
        help="Show the N most recent runs.")
@option("--package", metavar="NAME", help="Only this package.")
@option("--html", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
        help="Also write the report as one self-contained HTML page.")
@option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@handle_errors
def report(state_dir: Path | None, last: int, package: str | None, html: Path | None, as_json: bool) -> None:
    """Show the build history: the last runs, each package's duration and memory over them, regressions,
    packages newly failing, fixed or flipping, predicted memory against the peak, the tail of the last run.

    An empty or missing history is one error line and exit 1.
    """
    # What the command runs with, imported as it runs: --help and the other commands do not load it.
    from rich.console import Console

    from orchestrator.report.show import show

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160
    show(resolve_state_dir(state_dir) / HISTORY_FILE, console, last=last, package=package, html=html, as_json=as_json)
