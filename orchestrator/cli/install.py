"""``orchestrate install``: wheels and the pins of locks, into an environment."""

from __future__ import annotations

import time
from pathlib import Path

import click

from orchestrator.cli.app import handle_errors, main, make_console
from orchestrator.errors import UsageError
from orchestrator.options import (
    install_options,
    option,
    report_options,
)


@main.command()
@click.argument("wheels", nargs=-1, type=click.Path(exists=True, path_type=Path))
@option("--requirement", "-r", "requirements", multiple=True, metavar="FILE",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Lock file: every line pins one version (name==version) or names a local wheel.")
@option("--find-links", "-f", multiple=True, metavar="DIR",
        help="Local folder of wheels the -r pins are taken from; several versions of a package may sit there.")
@option("--into", "into", required=True, type=click.Path(path_type=Path), metavar="VENV|PYTHON",
        help="The virtualenv folder or Python interpreter to install into.")
@install_options
@report_options
@handle_errors
def install(wheels: tuple[Path, ...], requirements: tuple[Path, ...], find_links: tuple[str, ...], into: Path,
            max_installs: int, install_timeout: float | None, reinstall: bool, compile_bytecode: bool,
            report_json: Path | None, report_html: Path | None, trace: Path | None) -> None:
    """Install WHEELS (files, or folders of wheels) and the pins of -r locks into an environment, several at once.

    Each pin takes, from the --find-links folders, the wheel of that version the
    target's interpreter ranks best, as pip does; a pin with no such wheel
    installs nothing. A distribution already installed at the same version is
    skipped (--reinstall replaces it); another version is replaced, as pip does
    for a wheel file. Afterwards the environment is checked as `pip check` does:
    an unmet requirement fails the command (the installs stay).
    """
    # What the command runs with, imported as it runs: --help and the other commands do not load it.
    from orchestrator.cli.run import run_and_report, wheel_installer
    from orchestrator.display import PlainDisplay
    from orchestrator.install.conflicts import refuse_conflicts
    from orchestrator.install.results import INSTALLS
    from orchestrator.install.select import select_wheels, wheel_files
    from orchestrator.report import RunReport
    from orchestrator.report.runs import ReportFiles
    from orchestrator.stages import Stage
    from orchestrator.wheels.distributions import check_target, target_environment

    if not wheels and not requirements:
        raise UsageError("nothing to install: name wheels or folders of wheels, or -r lock files with --find-links")
    installer = wheel_installer(into, reinstall, compile_bytecode, install_timeout)
    target = installer.target
    site_packages = [Path(target.scheme["purelib"]), Path(target.scheme["platlib"])]
    console = make_console()
    display = PlainDisplay(console)
    report = RunReport(started_at=time.time(), settings={"max_installs": max_installs})
    for recovery in installer.recover():  # first: what the target holds is read next
        display.event(str(recovery))
    environment = target_environment(target.python)  # asked now: a Python that cannot answer is refused unwritten
    chosen = select_wheels(given=wheel_files(wheels), requirements=requirements, find_links=find_links,
                           python=target.python, site_packages=site_packages, reinstall=reinstall,
                           environment=environment)
    for note in chosen.notes:
        display.event(note)
    refuse_conflicts(chosen.wheels)

    def work() -> None:
        with Stage(INSTALLS, installer.install, max_workers=max_installs, errors=report.errors,
                   on_event=display.event, results=report.installs) as installs:
            installs.submit(*chosen.wheels)
            installs.join()
        check_target(target, environment, report, display.event, extras=chosen.extras)

    run_and_report(work, report, display, console, ReportFiles(json=report_json, html=report_html, trace=trace))


