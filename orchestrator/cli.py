"""The ``orchestrate`` command: parse options, resolve settings, run, map the outcome to an exit code.

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
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click
import psutil
from rich.console import Console

from orchestrator import __version__
from orchestrator.build import ceiling, compilercache
from orchestrator.build.compilercache import CompilerCache
from orchestrator.build.envs import choose_installer
from orchestrator.build.sandbox import for_run
from orchestrator.build.sources import collect_sources
from orchestrator.display import LiveDisplay, PlainDisplay, print_summary
from orchestrator.download.binary import BinaryPolicy
from orchestrator.download.fetch import Downloader, DownloadSettings
from orchestrator.download.results import DOWNLOADS
from orchestrator.download.wanted import read_requirements, resolve_pins
from orchestrator.errors import (
    InstallError,
    OrchestratorError,
    ResolutionError,
    UsageError,
)
from orchestrator.install import INSTALLS, Target, WheelInstaller
from orchestrator.install.conflicts import refuse_conflicts
from orchestrator.install.select import select_wheels, wheel_files
from orchestrator.options import (
    INSTALL_ONLY,
    download_options,
    given,
    index_options,
    install_options,
    option,
    resolve_options,
)
from orchestrator.packageconfig import (
    find_config,
    load_package_config,
)
from orchestrator.pipeline import BuildRun, BuildSettings, check_target
from orchestrator.policy.admission import Limits
from orchestrator.policy.history import default_state_dir
from orchestrator.report import RunReport
from orchestrator.report.junit import write_junit
from orchestrator.report.runs import ReportFiles, run_folder, write_reports
from orchestrator.report.show import show
from orchestrator.resources import usable_cpu_count
from orchestrator.settings import IndexSettings
from orchestrator.stages import Stage
from orchestrator.units import format_size, parse_size
from orchestrator.wheels.distributions import target_environment

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
HISTORY_FILE = "history.sqlite3"
"""The build history's file under --state-dir."""

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from orchestrator.executors.cluster import Farm
    from orchestrator.executors.dask import DaskExecutor


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


def _index(index_url: str | None, extra_index_url: tuple[str, ...], find_links: tuple[str, ...], no_index: bool,
           from_files: IndexSettings | None = None) -> IndexSettings:
    """Command-line index options, merged with those of requirements files as pip does."""
    files = from_files or IndexSettings()
    return IndexSettings(
        index_url=index_url or files.index_url,
        extra_index_urls=tuple(dict.fromkeys([*extra_index_url, *files.extra_index_urls])),
        find_links=_absolute_find_links(tuple(dict.fromkeys([*find_links, *files.find_links]))),
        no_index=no_index or files.no_index,
    )


def _download_settings(index: IndexSettings, state: Path, cache_dir: Path | None, no_cache: bool,
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


def _wheel_installer(into: Path, reinstall: bool, compile_bytecode: bool,
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


def _console() -> Console:
    """Standard error; lines are never wrapped, so each message stays one line in logs."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160  # tables in CI logs and files are not read on 80-column terminals
    return console


def _print_error(message: str) -> None:
    """``error: <message>``, one line: the one form of every error the command reports."""
    _console().print(f"error: {' '.join(message.split())}", markup=False, style="red")


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
            _print_error(exc.format_message())
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
                    _console().print(exc.output, markup=False)
                raise
            _print_error(exc.message)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            _console().print("interrupted: running builds were stopped", markup=False)
            sys.exit(EXIT_SIGINT)
        except Terminated:
            _console().print("terminated: running builds were stopped", markup=False)
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


DEFAULT_MAX_CPU = 100.0
"""``--max-cpu``: a build waits while every usable CPU is busy."""


def _admission_limits(
    max_builds: int | None, memory_limit: str | None, min_free_memory: str | None, memory_per_build: int,
    max_load: float | None, max_cpu: float,
) -> Limits:
    memory = psutil.virtual_memory()
    min_free = (
        parse_size(min_free_memory, total=memory.total)
        if min_free_memory
        else min(memory.total // 10, 1024**3)
    )
    limit = parse_size(memory_limit, total=memory.total) if memory_limit else max(memory.available - min_free, 0)
    # A limit no build fits under would run every build alone, each with a warning.
    if memory_limit and limit == 0:
        raise UsageError(f"--memory-limit {memory_limit} leaves no memory for builds; give a size such as 4G or 50%")
    if memory_limit and limit < memory_per_build:
        raise UsageError(f"--memory-limit {memory_limit} ({format_size(limit)}) is below --memory-per-build "
                         f"{format_size(memory_per_build)}; lower --memory-per-build or raise --memory-limit")
    return Limits(max_builds=max_builds if max_builds is not None else usable_cpu_count(), memory_limit=limit,
                  min_free_memory=min_free, max_load=max_load, max_cpu=max_cpu / 100 if max_cpu else None)


def _compiler_cache(choice: Literal["auto", "ccache", "off"], size: str,
                    state: Path) -> tuple[CompilerCache | None, str | None]:
    """The run's compiler cache, and the note saying why there is none; ``--compiler-cache ccache``
    without a working ccache is a usage error."""
    max_size = parse_size(size)  # 0 (or too small for an object) is a cache that keeps nothing: valid, useless
    if choice == "off":
        return None, None
    cache, why_none = compilercache.for_run(state_dir=state, max_size_bytes=max_size)
    if why_none is None:
        return cache, None
    if choice == "ccache":
        raise UsageError(f"--compiler-cache ccache: {why_none}; install ccache or use --compiler-cache auto")
    return None, f"no compiler cache: {why_none}; --compiler-cache off silences this note"


def _state_dir(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()).resolve()


@main.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@option("--wheelhouse", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("wheelhouse"),
        show_default=True, help="Folder the wheels go to.")
@option("--max-builds", "-j", type=click.IntRange(min=1), help="Builds at once (default: usable CPUs).")
@option("--memory-limit", metavar="SIZE", help="Most memory all builds together may use: 6G, 512M, 75%. "
        "Default: available memory at start minus --min-free-memory.")
@option("--min-free-memory", metavar="SIZE", help="Never start a build that would leave less free "
        "(default: 10% of RAM or 1G, the smaller).")
@option("--memory-per-build", metavar="SIZE", default="1G", show_default=True,
        help="What a build is assumed to need when history and config do not say.")
@option("--max-load", type=click.FloatRange(min=0), help="Do not start a build while the 1-minute load "
        "per CPU exceeds this (default: off).")
@option("--max-cpu", type=click.FloatRange(min=0), default=DEFAULT_MAX_CPU, show_default=True, metavar="PERCENT",
        help="Do not start a build while this percentage of the usable CPUs is busy; above 100 oversubscribes; 0: off.")
@index_options
@download_options
@resolve_options
@option("--sdist-dir", type=click.Path(file_okay=False, path_type=Path),
        help="Keep downloaded sdists here (default: a temporary folder).")
@option("--installer", type=click.Choice(["auto", "pip", "uv"]), default="auto", show_default=True,
        help="What installs build requirements; auto takes uv when installed.")
@option("--keep-build-envs", is_flag=True, help="Keep prepared build environments under --state-dir for later "
        "runs (default: removed when the run ends).")
@option("--sandbox/--no-sandbox", default=True, show_default=True,
        help="Run the build hooks in a sandbox (read-only host, empty home, no secrets in the environment, no "
        "process outlives its build) with bwrap, else unshare, and each build under a memory ceiling where "
        "cgroup v2 is delegated; a note says what is missing and why.")
@option("--build-network/--no-build-network", default=True, show_default=True,
        help="Let sandboxed build hooks reach the network (off: loopback only); per package: build_network "
        "in orchestrate.toml.")
@option("--compiler-cache", type=click.Choice(["auto", "ccache", "off"]), default="auto", show_default=True,
        help="Compile C and C++ through ccache, its cache under --state-dir; auto: where ccache is installed "
        "and works (a note says when not); ccache: the same, required.")
@option("--compiler-cache-size", metavar="SIZE", default="5G", show_default=True,
        help="Largest size of the compiler cache; ccache drops the oldest entries past it.")
@option("--nice", is_flag=True, help="Run every build process at niceness 10 and the idle I/O class, "
        "for a machine doing other work.")
@option("--install-into", type=click.Path(path_type=Path), metavar="VENV|PYTHON",
        help="Install each wheel into this environment as soon as it is built.")
@option("--install-after-build", is_flag=True, help="With --install-into: install once all builds have ended.")
@install_options
@option("--fail-fast", is_flag=True, help="Stop starting builds after the first failure.")
@option("--cluster", metavar="ADDRESS", help="Build on the workers of this Dask scheduler (tcp://HOST:8786); "
        "--max-builds then caps the whole farm, the memory and CPU options apply on each machine.")
@option("--force", is_flag=True, help="Rebuild even when the wheelhouse has a wheel of the same sdist.")
@option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
        help="Stop a build that runs longer.")
@option("--retries", type=click.IntRange(min=0), default=0, show_default=True,
        help="Extra attempts for a build whose worker was killed from outside.")
@option("--log-dir", type=click.Path(file_okay=False, path_type=Path), help="Per-build logs "
        "(default: a run folder under --state-dir).")
@option("--report-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the run report here.")
@option("--report-html", type=click.Path(dir_okay=False, path_type=Path),
        help="Write the run report as one self-contained HTML page (timeline, memory, CPU) here.")
@option("--trace", type=click.Path(dir_okay=False, path_type=Path),
        help="Write the run as Chrome trace events here (Perfetto, chrome://tracing).")
@option("--junit", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
        help="Write the run as JUnit XML for CI: a test case per package, failures with their log's last lines.")
@option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="History, caches and run folders "
        "(default: the user cache folder).")
@option("--no-history", is_flag=True, help="Neither read nor write the build history.")
@option("--config", type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Per-package settings (orchestrate.toml); default: ./orchestrate.toml or ./pyproject.toml.")
@option("--wait-lock", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
        help="Wait this long for another run that holds the wheelhouse.")
@handle_errors
def build(sources: tuple[Path, ...], wheelhouse: Path, max_builds: int | None, memory_limit: str | None,
          min_free_memory: str | None, memory_per_build: str, max_load: float | None, max_cpu: float,
          index_url: str | None,
          extra_index_url: tuple[str, ...], find_links: tuple[str, ...], no_index: bool,
          requirements: tuple[Path, ...], max_downloads: int, cache_dir: Path | None, no_cache: bool,
          download_timeout: float, download_retries: int, require_hashes: bool, constraints: tuple[Path, ...],
          no_deps: bool, no_binary: tuple[str, ...], only_binary: tuple[str, ...], prefer_binary: bool,
          resolver: Literal["auto", "pip", "uv"], sdist_dir: Path | None, installer: str, keep_build_envs: bool,
          sandbox: bool, build_network: bool, compiler_cache: Literal["auto", "ccache", "off"],
          compiler_cache_size: str, nice: bool, install_into: Path | None, install_after_build: bool,
          max_installs: int, install_timeout: float | None, reinstall: bool, compile_bytecode: bool, fail_fast: bool,
          cluster: str | None, force: bool, timeout: float | None, retries: int, log_dir: Path | None,
          report_json: Path | None, report_html: Path | None, trace: Path | None, junit: Path | None,
          state_dir: Path | None, no_history: bool, config: Path | None, wait_lock: float) -> None:
    """Build wheels from SOURCES (sdist files, folders of sdists, source trees) and -r requirements."""
    if not sources and not requirements:
        raise UsageError("nothing to build: name sdists, folders of sdists, source trees or -r requirements files")
    idle = given(click.get_current_context(), INSTALL_ONLY) if install_into is None else []
    if idle:
        raise UsageError(f"{', '.join(idle)} {'needs' if len(idle) == 1 else 'need'} --install-into: "
                         "add --install-into VENV|PYTHON or drop " + ("it" if len(idle) == 1 else "them"))
    per_build = parse_size(memory_per_build)
    farm = _connect_farm(cluster, max_builds, memory_limit, min_free_memory, max_load, max_cpu) if cluster else None
    limits = farm[1] if farm else _admission_limits(max_builds, memory_limit, min_free_memory, per_build, max_load,
                                                    max_cpu)
    config = config or find_config(Path.cwd())
    overrides = load_package_config(config) if config else {}
    wanted = read_requirements(requirements, verb="build", require_hashes=require_hashes, constraints=constraints,
                           no_deps=no_deps, no_binary=no_binary, only_binary=only_binary,
                           prefer_binary=prefer_binary, resolver=resolver, overrides=overrides)
    collected = collect_sources(sources)
    contained, sandbox_note = for_run(sandbox, network=build_network)
    cgroup, ceiling_note = ceiling.for_run() if sandbox else (None, None)
    if cgroup is not None:  # however the command ends
        click.get_current_context().call_on_close(cgroup.remove)
    state = _state_dir(state_dir)
    folder = run_folder(state, time.time())
    cache, cache_note = _compiler_cache(compiler_cache, compiler_cache_size, state)
    index = _index(index_url, extra_index_url, find_links, no_index, wanted.parsed.index if wanted else None)
    settings = BuildSettings(
        wheelhouse=wheelhouse,
        limits=limits,
        memory_per_build=per_build,
        index=index,
        installer=choose_installer(installer),
        log_dir=(log_dir or folder / "logs").resolve(),
        history_path=None if no_history else state / HISTORY_FILE,
        overrides=overrides,
        fail_fast=fail_fast,
        force=force,
        timeout=timeout,
        retries=retries,
        wait_lock=wait_lock,
        download=_download_settings(index, state, cache_dir, no_cache, download_timeout, download_retries,
                                    wanted.parsed.require_hashes if wanted else require_hashes,
                                    wanted.binary if wanted else BinaryPolicy()),
        max_downloads=max_downloads,
        sdist_dir=sdist_dir.resolve() if sdist_dir else None,
        installer_into=(_wheel_installer(install_into, reinstall, compile_bytecode, install_timeout)
                        if install_into else None),
        max_installs=max_installs,
        install_after_build=install_after_build,
        build_env_dir=state / "build-envs",
        keep_build_envs=keep_build_envs,
        sandbox=contained,
        cgroup=cgroup,
        compiler_cache=cache,
        nice=nice,
    )
    console = _console()
    display = LiveDisplay(console) if console.is_terminal else PlainDisplay(console)
    for note in (sandbox_note, ceiling_note, cache_note):
        if note:
            display.event(note)
    for note in collected.notes:
        display.event(note)
    if farm is not None:
        for address, reason in farm[0].refused.items():
            display.event(f"farm worker {address} refused: {reason}")
    run = BuildRun(settings, display, on_download_progress=display.downloads,
                   executor=farm[2] if farm else None, probe=farm[0] if farm else None)
    for path, error in collected.rejected:
        run.reject(path, error)
    run.report.settings = {"max_builds": limits.max_builds, "max_downloads": max_downloads,
                           "max_installs": max_installs, "memory_limit": limits.memory_limit,
                           "min_free_memory": limits.min_free_memory, "memory_per_build": settings.memory_per_build,
                           "max_load": limits.max_load, "max_cpu": limits.max_cpu, "installer": settings.installer,
                           "memory_ceiling": ("memory.max per build whose need is learned" if cgroup
                                              else ceiling_note or "off (--no-sandbox)"),
                           "sandbox": contained.describe(),
                           "compiler_cache": cache.describe() if cache else "none", "nice": nice}
    files = ReportFiles(json=report_json, html=report_html, trace=trace, run_folder=folder)
    try:
        _run_and_report(lambda: run.run(collected.sources, wanted), run.report, display, console, files, junit=junit)
    finally:
        if farm is not None:
            farm[0].close()


def _connect_farm(address: str, max_builds: int | None, memory_limit: str | None, min_free_memory: str | None,
                  max_load: float | None, max_cpu: float) -> tuple[Farm, Limits, DaskExecutor]:
    """The build farm at ``address`` (``--cluster``): the farm, the scheduler's limits there, its executor."""
    try:
        from orchestrator.executors import dask
    except ImportError:
        raise UsageError("--cluster needs Dask distributed: pip install 'orchestrator[dask]'") from None
    return dask.for_run(address, max_builds=max_builds, max_load=max_load, max_cpu=max_cpu / 100 if max_cpu else None,
                        memory_limit=parse_size(memory_limit) if memory_limit else None,
                        min_free_memory=parse_size(min_free_memory) if min_free_memory else None)


def _run_and_report(work: Callable[[], object], report: RunReport, display: PlainDisplay, console: Console,
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
            _print_error(problem)
    sys.exit(EXIT_OK if report.ok and not unwritten else EXIT_FAILED)


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
@option("--report-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the run report here.")
@option("--report-html", type=click.Path(dir_okay=False, path_type=Path),
        help="Write the run report as one self-contained HTML page (timeline, memory, CPU) here.")
@option("--trace", type=click.Path(dir_okay=False, path_type=Path),
        help="Write the run as Chrome trace events here (Perfetto, chrome://tracing).")
@option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
        help="Caches (default: the user cache folder).")
@handle_errors
def download(requirements: tuple[Path, ...], dest: Path, max_downloads: int, index_url: str | None,
             extra_index_url: tuple[str, ...], find_links: tuple[str, ...], no_index: bool, cache_dir: Path | None,
             no_cache: bool, download_timeout: float, download_retries: int, require_hashes: bool,
             constraints: tuple[Path, ...], no_deps: bool, no_binary: tuple[str, ...], only_binary: tuple[str, ...],
             prefer_binary: bool, resolver: Literal["auto", "pip", "uv"], report_json: Path | None,
             report_html: Path | None, trace: Path | None, state_dir: Path | None) -> None:
    """Download what -r requirements files need, dependencies included, checking hashes.

    Each file is the wheel the index has for this interpreter, else the sdist, as for ``build``.
    """
    config = find_config(Path.cwd())
    wanted = read_requirements(requirements, verb="download", require_hashes=require_hashes, constraints=constraints,
                           no_deps=no_deps, no_binary=no_binary, only_binary=only_binary,
                           prefer_binary=prefer_binary, resolver=resolver,
                           overrides=load_package_config(config) if config else {})
    assert wanted is not None
    index = _index(index_url, extra_index_url, find_links, no_index, wanted.parsed.index)
    state = _state_dir(state_dir)
    settings = _download_settings(index, state, cache_dir, no_cache, download_timeout,
                                  download_retries, wanted.parsed.require_hashes, wanted.binary)
    console = _console()
    display = LiveDisplay(console) if console.is_terminal else PlainDisplay(console)
    report = RunReport(started_at=time.time(), settings={"max_downloads": max_downloads})

    def work() -> None:
        with Downloader(settings, dest) as downloader, Stage(
            DOWNLOADS, downloader.fetch, max_workers=max_downloads, errors=report.errors, on_event=display.event,
            results=report.downloads, on_progress=display.downloads, stop=downloader.close,
        ) as downloads:
            downloads.submit(*resolve_pins(wanted, index, report, display.event)[0])
            downloads.join()

    files = ReportFiles(json=report_json, html=report_html, trace=trace,
                        run_folder=run_folder(state, report.started_at))
    _run_and_report(work, report, display, console, files)


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
@option("--report-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the run report here.")
@option("--report-html", type=click.Path(dir_okay=False, path_type=Path),
        help="Write the run report as one self-contained HTML page (timeline, memory, CPU) here.")
@option("--trace", type=click.Path(dir_okay=False, path_type=Path),
        help="Write the run as Chrome trace events here (Perfetto, chrome://tracing).")
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
    if not wheels and not requirements:
        raise UsageError("nothing to install: name wheels or folders of wheels, or -r lock files with --find-links")
    installer = _wheel_installer(into, reinstall, compile_bytecode, install_timeout)
    target = installer.target
    site_packages = [Path(target.scheme["purelib"]), Path(target.scheme["platlib"])]
    console = _console()
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

    _run_and_report(work, report, display, console, ReportFiles(json=report_json, html=report_html, trace=trace))


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
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160
    show(_state_dir(state_dir) / HISTORY_FILE, console, last=last, package=package, html=html, as_json=as_json)
