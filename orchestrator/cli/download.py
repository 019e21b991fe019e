"""``orchestrate download``: what -r files need, fetched and checked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import click

from orchestrator.cli.app import handle_errors, main, make_console, resolve_state_dir, writable_folder
from orchestrator.options import (
    index_options,
    option,
    prune_option,
    report_options,
    resolve_options,
)


@main.command()
@option("--requirement", "-r", "requirements", multiple=True, required=True, metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path), help="Requirements file, as pip reads it.")
@option("--dest", "-d", type=click.Path(file_okay=False, path_type=Path), default=Path("sdists"),
        show_default=True, help="Folder the files go to.")
@option("--max-downloads", type=click.IntRange(min=1), default=8, show_default=True, help="Downloads at once.")
@index_options
@option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
        help="Download cache (default: under --state-dir).")
@option("--no-cache", is_flag=True, help="Neither read nor fill the download cache.")
# The names `build` uses; the short ones stay as aliases (there is no build stage to confuse them with).
@option("--download-timeout", "--timeout", "download_timeout", type=click.FloatRange(min=0, min_open=True),
        default=60.0, show_default=True, metavar="SECONDS",
        help="Timeout of each network request; a download under 1 KiB/s for this long is cut.")
@option("--download-retries", "--retries", "download_retries", type=click.IntRange(min=0), default=3,
        show_default=True, help="Retries after a timeout, a stall, a dropped connection or a 5xx answer.")
@option("--require-hashes", is_flag=True, help="Refuse requirements without --hash.")
@resolve_options
@report_options
@option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
        help="Caches (default: the user cache folder).")
@prune_option
@handle_errors
def download(requirements: tuple[Path, ...], dest: Path, max_downloads: int, index_url: str | None,
             extra_index_url: tuple[str, ...], find_links: tuple[str, ...], no_index: bool, cache_dir: Path | None,
             no_cache: bool, download_timeout: float, download_retries: int, require_hashes: bool,
             constraints: tuple[Path, ...], no_deps: bool, no_binary: tuple[str, ...], only_binary: tuple[str, ...],
             prefer_binary: bool, pre: bool, resolver: Literal["auto", "pip", "uv"], report_json: Path | None,
             report_html: Path | None, trace: Path | None, state_dir: Path | None,
             prune_unused_after: int | None) -> None:
    """Download what -r requirements files need, dependencies included, checking hashes.

    Each file is the wheel the index has for this interpreter, else the sdist, as for ``build``.
    """
    # What the command runs with, imported as it runs: --help and the other commands do not load it.
    from orchestrator.cli.run import download_settings, index_settings, prune_state_folder, run_and_report
    from orchestrator.display import LiveDisplay, PlainDisplay
    from orchestrator.download.fetch import Downloader
    from orchestrator.download.results import DOWNLOADS
    from orchestrator.download.wanted import read_requirements, resolve_pins
    from orchestrator.packageconfig import find_config, load_package_config
    from orchestrator.report import RunReport
    from orchestrator.report.runs import ReportFiles, run_folder
    from orchestrator.stages import Stage

    config = find_config(Path.cwd())
    wanted = read_requirements(requirements, verb="download", require_hashes=require_hashes, constraints=constraints,
                           no_deps=no_deps, no_binary=no_binary, only_binary=only_binary,
                           prefer_binary=prefer_binary, pre=pre, resolver=resolver,
                           overrides=load_package_config(config) if config else {})
    assert wanted is not None
    index = index_settings(index_url, extra_index_url, find_links, no_index, wanted.parsed.index)
    state = writable_folder(resolve_state_dir(state_dir), "--state-dir")
    writable_folder(dest, "--dest")
    settings = download_settings(index, state, cache_dir, no_cache, download_timeout,
                                  download_retries, wanted.parsed.require_hashes, wanted.binary)
    console = make_console()
    display = LiveDisplay(console) if console.is_terminal else PlainDisplay(console)
    pruned = prune_state_folder(state, prune_unused_after, cache_dir, display)
    report = RunReport(started_at=time.time(), settings={"max_downloads": max_downloads, "pruned": pruned})

    def work() -> None:
        with Downloader(settings, dest) as downloader, Stage(
            DOWNLOADS, downloader.fetch, max_workers=max_downloads, errors=report.errors, on_event=display.event,
            results=report.downloads, on_progress=display.downloads, stop=downloader.close,
        ) as downloads:
            downloads.submit(*resolve_pins(wanted, index, report, display.event)[0])
            downloads.join()

    files = ReportFiles(json=report_json, html=report_html, trace=trace,
                        run_folder=run_folder(state, report.started_at))
    run_and_report(work, report, display, console, files)


