"""``orchestrate build``: the run's limits, sandbox, compiler cache and farm, from its options."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from orchestrator.cli.app import (
    HISTORY_FILE,
    handle_errors,
    main,
    make_console,
    resolve_state_dir,
    writable_folder,
)
from orchestrator.errors import (
    UsageError,
)
from orchestrator.options import (
    INSTALL_ONLY,
    download_options,
    given,
    index_options,
    install_options,
    option,
    prune_option,
    report_options,
    resolve_options,
    size_check,
)
from orchestrator.units import format_size, parse_size

if TYPE_CHECKING:
    from orchestrator.build.compilercache import CompilerCache
    from orchestrator.executors.cluster import Farm
    from orchestrator.executors.dask import DaskExecutor
    from orchestrator.policy.admission import Limits

DEFAULT_MAX_CPU = 100.0
"""``--max-cpu``: a build waits while every usable CPU is busy."""


def _admission_limits(
    max_builds: int | None, memory_limit: str | None, min_free_memory: str | None, memory_per_build: int,
    max_load: float | None, max_cpu: float,
) -> Limits:
    import psutil

    from orchestrator.policy.admission import Limits
    from orchestrator.resources import usable_cpu_count

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
    from orchestrator.build import compilercache

    max_size = parse_size(size)  # 0 (or too small for an object) is a cache that keeps nothing: valid, useless
    if choice == "off":
        return None, None
    cache, why_none = compilercache.for_run(state_dir=state, max_size_bytes=max_size)
    if why_none is None:
        return cache, None
    if choice == "ccache":
        raise UsageError(f"--compiler-cache ccache: {why_none}; install ccache or use --compiler-cache auto")
    return None, f"no compiler cache: {why_none}; --compiler-cache off silences this note"


@main.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@option("--wheelhouse", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("wheelhouse"),
        show_default=True, help="Folder the wheels go to.")
@option("--max-builds", "-j", type=click.IntRange(min=1), help="Builds at once (default: usable CPUs).")
@option("--memory-limit", metavar="SIZE", callback=size_check(percent=True),
        help="Most memory all builds together may use: 6G, 512M, 75%. "
        "Default: available memory at start minus --min-free-memory.")
@option("--min-free-memory", metavar="SIZE", callback=size_check(percent=True),
        help="Never start a build that would leave less free (default: 10% of RAM or 1G, the smaller).")
@option("--memory-per-build", metavar="SIZE", callback=size_check(percent=False), default="1G", show_default=True,
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
@option("--compiler-cache-size", metavar="SIZE", callback=size_check(percent=False), default="5G", show_default=True,
        help="Largest size of the compiler cache; ccache drops the oldest entries past it.")
@option("--jobserver", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
        help="Be the GNU make jobserver of the builds: usable CPUs shared as tokens by the make >= 4.4, ninja "
        ">= 1.13 and cargo they run (an older make keeps the -jK split); off: -jK for every build.")
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
@report_options
@option("--junit", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
        help="Write the run as JUnit XML for CI: a test case per package, failures with their log's last lines.")
@option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="History, caches and run folders "
        "(default: the user cache folder).")
@prune_option
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
          pre: bool, resolver: Literal["auto", "pip", "uv"], sdist_dir: Path | None, installer: str,
          keep_build_envs: bool,
          sandbox: bool, build_network: bool, compiler_cache: Literal["auto", "ccache", "off"],
          compiler_cache_size: str, jobserver: Literal["auto", "off"], nice: bool, install_into: Path | None,
          install_after_build: bool,
          max_installs: int, install_timeout: float | None, reinstall: bool, compile_bytecode: bool, fail_fast: bool,
          cluster: str | None, force: bool, timeout: float | None, retries: int, log_dir: Path | None,
          report_json: Path | None, report_html: Path | None, trace: Path | None, junit: Path | None,
          state_dir: Path | None, prune_unused_after: int | None, no_history: bool, config: Path | None,
          wait_lock: float) -> None:
    """Build wheels from SOURCES (sdist files, folders of sdists, source trees) and -r requirements."""
    # What the command runs with, imported as it runs: --help and the other commands do not load it.
    from orchestrator.build import ceiling
    from orchestrator.build.envs import choose_installer
    from orchestrator.build.sandbox import for_run
    from orchestrator.build.sources import collect_sources
    from orchestrator.cli.run import (
        download_settings,
        index_settings,
        prune_state_folder,
        run_and_report,
        wheel_installer,
    )
    from orchestrator.display import LiveDisplay, PlainDisplay
    from orchestrator.download.wanted import read_requirements
    from orchestrator.packageconfig import find_config, load_package_config
    from orchestrator.pipeline import BuildRun, BuildSettings
    from orchestrator.report.runs import ReportFiles, run_folder

    if not sources and not requirements:
        raise UsageError("nothing to build: name sdists, folders of sdists, source trees or -r requirements files")
    idle = given(click.get_current_context(), INSTALL_ONLY) if install_into is None else []
    if idle:
        raise UsageError(f"{', '.join(idle)} {'needs' if len(idle) == 1 else 'need'} --install-into: "
                         "add --install-into VENV|PYTHON or drop " + ("it" if len(idle) == 1 else "them"))
    per_build = parse_size(memory_per_build)
    farm = (_connect_farm(cluster, max_builds, memory_limit, min_free_memory, max_load, max_cpu, keep_build_envs,
                          prune_unused_after) if cluster else None)
    limits = farm[1] if farm else _admission_limits(max_builds, memory_limit, min_free_memory, per_build, max_load,
                                                    max_cpu)
    config = config or find_config(Path.cwd())
    overrides = load_package_config(config) if config else {}
    wanted = read_requirements(requirements, verb="build", require_hashes=require_hashes, constraints=constraints,
                           no_deps=no_deps, no_binary=no_binary, only_binary=only_binary,
                           prefer_binary=prefer_binary, pre=pre, resolver=resolver, overrides=overrides)
    collected = collect_sources(sources)
    contained, sandbox_note = for_run(sandbox, network=build_network)
    cgroup, ceiling_note = ceiling.for_run() if sandbox else (None, None)
    if cgroup is not None:  # however the command ends
        click.get_current_context().call_on_close(cgroup.remove)
    state = writable_folder(resolve_state_dir(state_dir), "--state-dir")
    for path, name in ((log_dir, "--log-dir"), (sdist_dir, "--sdist-dir")):
        if path is not None:
            writable_folder(path, name)
    folder = run_folder(state, time.time())
    cache, cache_note = _compiler_cache(compiler_cache, compiler_cache_size, state)
    index = index_settings(index_url, extra_index_url, find_links, no_index, wanted.parsed.index if wanted else None)
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
        download=download_settings(index, state, cache_dir, no_cache, download_timeout, download_retries,
                                    wanted.parsed.require_hashes, wanted.binary) if wanted else None,
        max_downloads=max_downloads,
        sdist_dir=sdist_dir.resolve() if sdist_dir else None,
        installer_into=(wheel_installer(install_into, reinstall, compile_bytecode, install_timeout)
                        if install_into else None),
        max_installs=max_installs,
        install_after_build=install_after_build,
        build_env_dir=state / "build-envs",
        keep_build_envs=keep_build_envs,
        sandbox=contained,
        cgroup=cgroup,
        compiler_cache=cache,
        nice=nice,
        jobserver=jobserver == "auto" and farm is None,
    )
    console = make_console()
    display = LiveDisplay(console) if console.is_terminal else PlainDisplay(console)
    for note in (sandbox_note, ceiling_note, cache_note):
        if note:
            display.event(note)
    for note in collected.notes:
        display.event(note)
    pruned = prune_state_folder(state, prune_unused_after, cache_dir, display)
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
                           "compiler_cache": cache.describe() if cache else "none", "nice": nice,
                           "jobserver": "on" if settings.jobserver else "off", "pruned": pruned}
    files = ReportFiles(json=report_json, html=report_html, trace=trace, run_folder=folder)
    try:
        run_and_report(lambda: run.run(collected.take_sources(), wanted), run.report, display, console, files,
                       junit=junit)
    finally:
        if farm is not None:
            farm[0].close()


def _connect_farm(address: str, max_builds: int | None, memory_limit: str | None, min_free_memory: str | None,
                  max_load: float | None, max_cpu: float, keep_build_envs: bool,
                  prune_unused_after: int | None) -> tuple[Farm, Limits, DaskExecutor]:
    """The build farm at ``address`` (``--cluster``): the farm, the scheduler's limits there, its executor."""
    try:
        from orchestrator.executors import dask
    except ImportError:
        raise UsageError("--cluster needs Dask distributed: pip install 'orchestrator[dask]'") from None
    return dask.for_run(address, max_builds=max_builds, max_load=max_load, max_cpu=max_cpu / 100 if max_cpu else None,
                        memory_limit=parse_size(memory_limit) if memory_limit else None,
                        min_free_memory=parse_size(min_free_memory) if min_free_memory else None,
                        keep_build_envs=keep_build_envs, prune_unused_after=prune_unused_after)


