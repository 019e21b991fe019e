"""One run: turn sources (and, later, requirements) into wheels, then hand them to the install stage.

This module wires the stages together; the policy lives in ``admission``, the
processes in ``scheduler`` and ``worker``, the I/O of each stage in its own module.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name

from orchestrator.build.envcache import run_env_cache
from orchestrator.build.sources import Source, compiles, sdist_source, tree_source
from orchestrator.build.wheelhouse import Wheelhouse
from orchestrator.download.fetch import (
    Downloader,
    DownloadProgress,
    DownloadResult,
    DownloadSettings,
    DownloadStatus,
    DownloadTally,
)
from orchestrator.download.requirements import PinnedRequirement
from orchestrator.errors import SourceError
from orchestrator.install.installer import InstallStatus, WheelInstaller
from orchestrator.jobs import BuildJob, BuildResult, Status, nested_jobs_environ
from orchestrator.packageconfig import PackageOverrides
from orchestrator.policy.admission import Limits, jobs_per_build
from orchestrator.policy.history import SUCCESS, BuildRecord, History, predict_need
from orchestrator.report import RunReport
from orchestrator.resources import SystemProbe
from orchestrator.scheduler import BuildScheduler, Observer, SchedulerSettings
from orchestrator.settings import IndexSettings
from orchestrator.units import format_size

logger = logging.getLogger(__name__)

PYTHON_TAG = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildSettings:
    """What ``orchestrate build`` was asked to do, resolved to plain values."""

    wheelhouse: Path
    limits: Limits
    memory_per_build: int
    """Bytes a build is assumed to need when neither history nor config says."""
    index: IndexSettings = field(default_factory=IndexSettings)
    installer: str = "auto"
    log_dir: Path
    history_path: Path | None
    """SQLite history file; ``None`` keeps no history."""
    overrides: Mapping[NormalizedName, PackageOverrides] = field(default_factory=dict)
    fail_fast: bool = False
    force: bool = False
    timeout: float | None = None
    retries: int = 0
    wait_lock: float = 0.0
    download: DownloadSettings | None = None
    """How requirements are fetched, when the run has any."""
    max_downloads: int = 8
    sdist_dir: Path | None = None
    """Where downloaded sdists are kept; ``None`` uses a temporary folder removed at the end."""
    installer_into: WheelInstaller | None = None
    """Installs each wheel of the run into a target environment, when one was given."""
    max_installs: int = 4
    install_after_build: bool = False
    """Install once every build has ended, instead of each wheel as soon as it is built."""
    build_env_dir: Path | None = None
    """Where prepared build environments live (``envcache``); ``None`` gives each build a virtualenv from scratch."""
    keep_build_envs: bool = False
    """Keep the prepared build environments for later runs instead of removing them when the run ends."""


class BuildRun:
    """Builds a set of sources into a wheelhouse under the caps; see :meth:`run`.

    ``on_download_progress`` receives the download stage's counts as each fetch starts
    and ends (from the download threads); the scheduler's ``observer`` knows only builds.
    """

    def __init__(self, settings: BuildSettings, observer: Observer, *,
                 on_download_progress: Callable[[DownloadProgress], None] | None = None) -> None:
        self._settings = settings
        self._observer = observer
        self._on_download_progress = on_download_progress or (lambda progress: None)
        self._wheelhouse = Wheelhouse(settings.wheelhouse)
        self._history = History(settings.history_path) if settings.history_path else None
        self._sources: dict[str, Source] = {}
        self._install_pool: ThreadPoolExecutor
        self._install_later: list[str] = []
        self._estimates: ThreadPoolExecutor
        self._env_cache: Path | None = None
        self._environ = nested_jobs_environ(jobs_per_build(SystemProbe().read().cpu_count, settings.limits.max_builds))
        self.report = RunReport(started_at=time.time())
        self._scheduler = BuildScheduler(
            SchedulerSettings(
                limits=settings.limits,
                timeout=settings.timeout,
                retries=settings.retries,
                fail_fast=settings.fail_fast,
            ),
            probe=SystemProbe(),
            observer=observer,
            on_result=self._built,
        )

    def run(self, sources: Sequence[Source], requirements: Sequence[PinnedRequirement] = ()) -> RunReport:
        """Build every source and every requirement's sdist as soon as it is downloaded.

        With an installer, each wheel is installed as soon as it is built (or, with
        ``install_after_build``, once all builds have ended).
        """
        settings = self._settings
        try:
            with self._wheelhouse.locked(wait=settings.wait_lock), contextlib.ExitStack() as stack:
                if settings.installer_into is not None:
                    for recovery in settings.installer_into.recover():
                        self._observer.event(str(recovery))
                    self._install_pool = ThreadPoolExecutor(settings.max_installs, thread_name_prefix="install")
                    stack.push(self._stop_installs)
                self._estimates = ThreadPoolExecutor(1, thread_name_prefix="estimate")
                stack.callback(self._estimates.shutdown, wait=True, cancel_futures=True)
                if settings.build_env_dir is not None:
                    self._env_cache = stack.enter_context(
                        run_env_cache(settings.build_env_dir, keep=settings.keep_build_envs))
                for source in sources:
                    self.add(source)
                if requirements:
                    self._start_downloads(requirements, stack)
                self._scheduler.run()
                for wheel in self._install_later:
                    self._install_pool.submit(self._install, wheel)
        finally:
            self.report.finished_at = time.time()
            if self._history is not None:
                self._history.close()
        return self.report

    def _stop_installs(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Wait for the installs; when the run is failing or interrupted, start no more."""
        self._install_pool.shutdown(wait=True, cancel_futures=exc_type is not None)

    def _wheel_ready(self, wheel: str) -> None:
        """A wheel of this run is in the wheelhouse: install it now, later, or not at all."""
        if self._settings.installer_into is None:
            return
        if self._settings.install_after_build:
            self._install_later.append(wheel)
        else:
            self._install_pool.submit(self._install, wheel)

    def _install(self, wheel: str) -> None:
        assert self._settings.installer_into is not None
        result = self._settings.installer_into.install(self._wheelhouse.path / wheel)
        self.report.installs.append(result)
        if result.status is InstallStatus.FAILED:
            self._observer.event(f"{result.name}-{result.version}: install FAILED: {result.error}")
        else:
            self._observer.event(f"{result.name}-{result.version}: {result.status.value} {result.reason or ''}".rstrip())

    def _start_downloads(self, requirements: Sequence[PinnedRequirement], stack: contextlib.ExitStack) -> None:
        """Fetch in a pool of ``max_downloads`` threads; each sdist joins the build queue as it lands."""
        settings = self._settings
        assert settings.download is not None
        sdist_dir = settings.sdist_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orchestrate-")))
        downloader = Downloader(settings.download, sdist_dir)
        pool = ThreadPoolExecutor(max_workers=settings.max_downloads, thread_name_prefix="download")
        # Unwound in reverse: drop queued fetches, close the client (which ends fetches
        # in flight at once when the run is interrupted), then wait for the threads.
        stack.callback(pool.shutdown, wait=True)
        stack.callback(downloader.close)
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        tally = DownloadTally(len(requirements))
        self._on_download_progress(tally.snapshot())

        def fetch(requirement: PinnedRequirement) -> None:
            try:
                self._on_download_progress(tally.started())
                result = downloader.fetch(requirement)
                try:
                    self._downloaded(result)
                finally:
                    self._on_download_progress(tally.finished(result))
            finally:
                self._scheduler.release()

        for requirement in requirements:
            self._scheduler.hold()
            pool.submit(fetch, requirement)

    def reject(self, path: Path, error: str) -> None:
        """Record a source that cannot be built at all as a failure of its own."""
        now = time.time()
        self.report.builds.append(
            BuildResult(name=path.name, version=None, source=str(path), status=Status.FAILED, wheel=None,
                        started_at=now, finished_at=now, phases={}, peak_rss_bytes=0, cpu_s=0.0, log=None,
                        error=error)
        )
        self._observer.event(f"{path.name}: FAILED: {error}")

    def _downloaded(self, result: DownloadResult) -> None:
        self.report.downloads.append(result)
        label = f"{result.name}-{result.version}" if result.version else result.name
        if result.status is DownloadStatus.FAILED or result.path is None:
            self._observer.event(f"{label}: download FAILED: {result.error}")
            return
        self._observer.event(f"{label}: {result.status.value} {format_size(result.bytes)}")
        try:
            source = sdist_source(result.path, sha256=result.sha256) if result.path.is_file() else tree_source(result.path)
        except SourceError as exc:
            self.reject(result.path, exc.message)
            return
        self.add(source)

    def add(self, source: Source) -> None:
        """Queue one source (skipping it when its wheel is already in the wheelhouse)."""
        settings = self._settings
        existing = self._wheelhouse.built_wheel(source.sha256)
        if existing and not settings.force:
            now = time.time()
            self.report.builds.append(
                BuildResult(name=source.name, version=source.version, source=str(source.path), status=Status.SKIPPED,
                            wheel=existing, started_at=now, finished_at=now, phases={}, peak_rss_bytes=0, cpu_s=0.0,
                            log=None, error=None)
            )
            self._observer.event(f"{source.key}: skipped, {existing} is already in the wheelhouse (--force rebuilds)")
            self._wheel_ready(existing)
            return
        if any(known.key == source.key for known in self._sources.values()) and source.version:
            self._observer.event(f"{source.path}: same name and version as another source; built once")
            return
        self._sources[str(source.path)] = source
        job = BuildJob(
            key=source.key,
            source=source.path,
            kind=source.kind,
            name=source.name,
            version=source.version,
            sha256=source.sha256,
            wheelhouse=self._wheelhouse.path,
            log_path=settings.log_dir / f"{source.key}.log",
            index=settings.index,
            installer=settings.installer,
            env_cache=self._env_cache,
            environ=self._environ,
        )
        override = settings.overrides.get(canonicalize_name(source.name))
        history = self._history
        peaks = history.recent_peaks(source.name, version=source.version) if history else []
        need = predict_need(peaks, settings.memory_per_build, override=override.memory if override else None)
        duration = history.expected_duration(source.name, version=source.version) if history else None
        timeout = override.timeout if override else None
        self._scheduler.add(job, need=need, expected_duration=duration, size=source.size, timeout=timeout)
        if duration is None:
            self._estimates.submit(self._estimate, source)

    def _estimate(self, source: Source) -> None:
        """Tell the scheduler whether a build with no history compiles code (it then starts earlier)."""
        if compiles(source):
            self._scheduler.mark_compiling(source.key)

    def _built(self, result: BuildResult) -> None:
        self.report.builds.append(result)
        source = self._sources.get(result.source)
        if result.status is Status.BUILT and result.wheel:
            if source is not None:
                self._wheelhouse.record(source.sha256, wheel=result.wheel, source=source.path.name)
            self._wheel_ready(result.wheel)
        if self._history is not None and result.started_at is not None and result.finished_at is not None:
            self._history.record(
                BuildRecord(
                    name=result.name,
                    version=result.version or "",
                    sdist_sha256=source.sha256 if source else None,
                    python=PYTHON_TAG,
                    peak_rss_bytes=result.peak_rss_bytes or None,
                    wall_s=result.wall_s,
                    cpu_s=result.cpu_s or None,
                    status=SUCCESS if result.status is Status.BUILT else (result.error or "failed")[:200],
                    started_at=result.started_at,
                    finished_at=result.finished_at,
                )
            )
