"""One run: turn requirements and sources into a complete wheelhouse, then hand it to the install stage.

This module wires the stages together; the policy lives in ``policy``, the
processes in ``scheduler`` and ``executors``, the I/O of each stage in its own folder::

    -r files ─► resolve (pip's resolver; --no-deps: the pins as written)
                   │ one file per distribution: a wheel the index has, or an sdist
                   ▼
               download stage ─► wheel: checked, published as it is ("downloaded wheel")
                   │ sdist
    sources ───────┴──────────► build queue ─► scheduler ─► wheel published ("built")
                                                    │
               every wheel of the run ─► check of the set (Requires-Dist met?) ─► install stage
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import NormalizedName

from orchestrator.build.ceiling import RunCgroup
from orchestrator.build.compilercache import CompilerCache
from orchestrator.build.envruns import run_env_cache
from orchestrator.build.sandbox import Sandbox
from orchestrator.build.sources import Source, compiles, file_sha256, sdist_source, tree_source
from orchestrator.buildstate import Observer
from orchestrator.download.requirements import PinnedRequirement
from orchestrator.download.resolve import stop_resolvers
from orchestrator.download.results import DOWNLOADS, DownloadResult, DownloadStatus
from orchestrator.download.wanted import Requirements, resolve_pins
from orchestrator.errors import SourceError, WheelError
from orchestrator.executors import Executor
from orchestrator.executors.local import LocalExecutor
from orchestrator.executors.tokens import TokenPool, usable_cpus
from orchestrator.install.results import INSTALLS, InstallResult
from orchestrator.jobs import BuildResult, Status, nested_jobs_environ
from orchestrator.packageconfig import PackageOverrides
from orchestrator.policy.admission import Limits, Probe, jobs_per_build
from orchestrator.policy.history import (
    SUCCESS,
    BuildRecord,
    History,
    RunRecord,
    predict_need,
)
from orchestrator.predict import Predictor
from orchestrator.queued import JobMaker, QueuedSource
from orchestrator.report import RunReport
from orchestrator.resources import SystemProbe
from orchestrator.scheduler import BuildScheduler, SchedulerSettings
from orchestrator.settings import IndexSettings
from orchestrator.stages import (
    Outcome,
    Stage,
    StageFailed,
    StageKind,
    StageProgress,
)
from orchestrator.wheels.distributions import (
    check_target,
    check_wheels,
    target_environment,
)
from orchestrator.wheels.wheelfile import check_wheel
from orchestrator.wheels.wheelhouse import Wheelhouse, publish_wheel

if TYPE_CHECKING:
    from orchestrator.download.fetch import DownloadSettings
    from orchestrator.install.installer import WheelInstaller

logger = logging.getLogger(__name__)

PYTHON_TAG = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"

ESTIMATES: StageKind[QueuedSource, None] = StageKind(name="estimate", label=lambda queued: queued.key,
                                                     outcome=lambda nothing: Outcome(line=None))
"""Sdists with no history looked into for compiled code, beside the builds."""


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
    build_env_dir: Path
    """Where prepared build environments live (``build/envcache.py``)."""
    keep_build_envs: bool = False
    """Keep the prepared build environments for later runs instead of removing them when the run ends."""
    sandbox: Sandbox = field(default_factory=Sandbox)
    """The sandbox of every build's hooks; a package's ``build_network`` overrides its ``network``."""
    cgroup: RunCgroup | None = None
    """The run's cgroup, where builds whose need is learned get a memory ceiling (``build/ceiling.py``)."""
    compiler_cache: CompilerCache | None = None
    """The compiler cache every build compiles through (``--compiler-cache``); ``None``: none."""
    nice: bool = False
    """Every build process at a lower CPU and I/O priority (``--nice``)."""
    jobserver: bool = False
    """Be the GNU make jobserver of the run's local builds (``--jobserver``, ``executors/tokens.py``)."""


class BuildRun:
    """Builds a set of sources into a wheelhouse under the caps; see :meth:`run`.

    ``on_download_progress`` receives the download stage's counts as each fetch starts
    and ends (from the download threads); the scheduler's ``observer`` knows only builds.
    ``executor`` and ``probe`` are where builds run and what admission reads (default:
    worker processes on this machine, and this machine; a farm passes its own).
    """

    def __init__(self, settings: BuildSettings, observer: Observer, *,
                 on_download_progress: Callable[[StageProgress], None] | None = None,
                 executor: Executor | None = None, probe: Probe | None = None) -> None:
        self._settings = settings
        self._observer = observer
        self._on_download_progress = on_download_progress or (lambda progress: None)
        self._wheelhouse = Wheelhouse(settings.wheelhouse)
        self._history = History(settings.history_path) if settings.history_path else None
        self._predictor = Predictor(settings.history_path if settings.compiler_cache and executor is None else None,
                                    python=PYTHON_TAG, history=self._history,  # a farm: a cache per machine
                                    cache=settings.compiler_cache)
        self._sources: dict[str, QueuedSource] = {}
        """The sources queued for a build, by their location, until it ends."""
        self._keys: set[str] = set()  # of the sources: looking through them all at each add was quadratic
        self._installs: Stage[Path, InstallResult] | None = None
        self._install_later: list[Path] = []
        self._estimates: Stage[QueuedSource, None]
        self._jobs: JobMaker  # with the run's folder of build environments, set by run() before any source is added
        self._environment: Mapping[str, str] | None = None
        """The marker environment the resolver resolved for; ``None``: this interpreter's."""
        self._extras: dict[str, list[str]] = {}
        """The extras the requirements ask of each distribution."""
        self._resolution_failed: Exception | None = None
        """What the resolver raised, in its thread: the run fails with it."""
        cpu_count = SystemProbe().read().cpu_count
        jobs = jobs_per_build(cpu_count, settings.limits.max_builds)
        self._environ = nested_jobs_environ(jobs)
        if executor is None and settings.jobserver:
            executor = LocalExecutor(TokenPool(usable=usable_cpus(cpu_count, settings.limits.max_cpu), share=jobs - 1))
        self.report = RunReport(started_at=time.time())
        self.report.spool_in(settings.log_dir)  # the results, as they arrive: in the run's folder, not in memory
        self._run: RunRecord | None = None
        """This run in the history, once started there."""
        self._scheduler = BuildScheduler(
            SchedulerSettings(
                limits=settings.limits,
                timeout=settings.timeout,
                retries=settings.retries,
                fail_fast=settings.fail_fast,
            ),
            probe=probe or SystemProbe(),
            observer=observer,
            on_result=self._built,
            executor=executor,
        )
        self.report.samples = self._scheduler.samples

    def run(self, sources: Iterable[Source], requirements: Requirements | None = None) -> RunReport:
        """Resolve the requirements, then place each wheel the index has and build every sdist and source.

        ``sources`` is gone through once, as they are queued, and not kept: a source is held by its queue entry
        until its build ends (``Collected.take_sources`` lets the caller's list go of each as it is taken).

        Each sdist is built as soon as it is downloaded. With an installer, each wheel
        is installed as soon as it is in the wheelhouse (or, with ``install_after_build``,
        once all builds have ended). The run's wheels are then checked as a set.
        """
        settings = self._settings
        interrupted: str | None = None
        try:
            with self._wheelhouse.locked(wait=settings.wait_lock), contextlib.ExitStack() as stack:
                if self._history is not None:  # a run that never had the wheelhouse did nothing to record
                    self._run = self._history.start_run(
                        started_at=self.report.started_at, command_line=self.report.context["command_line"],
                        tool_version=self.report.context["tool_version"], python=PYTHON_TAG)
                if settings.installer_into is not None:
                    for recovery in settings.installer_into.recover():
                        self._observer.event(str(recovery))
                    # Left last: a failing or interrupted run starts no more installs.
                    self._installs = stack.enter_context(Stage(
                        INSTALLS, settings.installer_into.install, max_workers=settings.max_installs,
                        errors=self.report.errors, on_event=self._observer.event, results=self.report.installs))
                self._estimates = Stage(ESTIMATES, self._estimate, max_workers=1, errors=self.report.errors,
                                        on_event=self._observer.event)
                stack.callback(self._estimates.close, cancel=True)
                self._jobs = JobMaker(settings=settings, wheelhouse=self._wheelhouse.path, environ=self._environ,
                                      env_cache=stack.enter_context(
                                          run_env_cache(settings.build_env_dir, keep=settings.keep_build_envs)))
                for source in sources:
                    self.add(source)
                if requirements is not None:
                    self._start_downloads(requirements, stack)
                else:  # no source joins later (each download would): let go of their keys
                    self._keys.clear()
                self._scheduler.run()
                # Every build has ended, and no source joins now: a dict or set keeps the table of its largest size.
                self._sources.clear()
                self._keys.clear()
                if self._resolution_failed is not None:
                    raise self._resolution_failed
                self._check_set(strict=requirements is not None and not requirements.no_deps)
                if self._installs is not None:
                    self._installs.submit(*self._install_later)
            if settings.installer_into is not None:  # the installs have ended
                target = settings.installer_into.target
                check_target(target, target_environment(target.python), self.report, self._observer.event)
        except KeyboardInterrupt:
            interrupted = "SIGINT"
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # the command's SIGTERM exception
                interrupted = "SIGTERM"
            raise
        finally:
            self.report.finished_at = time.time()
            if self._history is not None:
                if self._run is not None:
                    self._history.finish_run(finished_run(self._run, self.report, interrupted))
                self._history.close()
        return self.report

    def _wheel_ready(self, wheel: str) -> None:
        """A wheel of this run is in the wheelhouse: install it now, later, or not at all."""
        if self._installs is None:
            return
        if self._settings.install_after_build:
            self._install_later.append(self._wheelhouse.path / wheel)
        else:
            self._installs.submit(self._wheelhouse.path / wheel)

    def _pins(self, requirements: Requirements) -> tuple[PinnedRequirement, ...]:
        pins, self._environment = resolve_pins(requirements, self._settings.index, self.report, self._observer.event)
        self._extras = {pin.name: sorted(pin.extras) for pin in pins if pin.extras}
        return pins

    def _start_downloads(self, requirements: Requirements, stack: contextlib.ExitStack) -> None:
        """Fetch in a pool of ``max_downloads`` threads; each sdist joins the build queue as it lands.

        With dependencies, the lines that pin one version are fetched at once, while the
        resolver pins the rest in a thread of its own, but out of sight (no line, no result,
        nothing placed or built) until it answers: a resolution that fails stops the run and
        fails it with the resolver's message alone, leaving the wheelhouse as it was (as
        ``pip wheel`` does); what was fetched stays in the download cache for the next run.
        """
        from orchestrator.download.fetch import Downloader  # httpx and unearth: only a run with -r files loads them

        settings = self._settings
        assert settings.download is not None
        sdist_dir = settings.sdist_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orchestrate-")))
        downloader = stack.enter_context(Downloader(settings.download, sdist_dir))
        fetched: dict[NormalizedName, Future[DownloadResult]] = {}
        """The early fetches, by name, until the download stage takes their results."""
        slots = threading.BoundedSemaphore(settings.max_downloads)
        """``--max-downloads`` over both stages: an early fetch no pin of the resolution waits for goes on."""

        def fetch_one(pin: PinnedRequirement) -> DownloadResult:
            with slots:
                return downloader.fetch(pin)

        def fetch(pin: PinnedRequirement) -> DownloadResult:
            early = fetched.pop(pin.name, None)
            if early is not None:
                with contextlib.suppress(CancelledError, StageFailed):  # a fetch never raises: the run was stopped
                    result = early.result()
                    if result.status is not DownloadStatus.FAILED:
                        return result
            # Failed: the resolver's file (pip's names its URL, on an index that answered) is fetched instead.
            return fetch_one(pin)

        # Every download is over once the scheduler has run (each holds it open);
        # an interrupted run drops the queued ones and closes the client to end those in flight.
        downloads = Stage(DOWNLOADS, fetch, max_workers=settings.max_downloads, errors=self.report.errors,
                          on_event=self._observer.event, results=self.report.downloads, on_result=self._downloaded,
                          on_progress=self._on_download_progress, holds=self._scheduler, stop=downloader.close)
        stack.callback(downloads.close, cancel=True)
        if requirements.no_deps:
            downloads.feed(*self._pins(requirements))
            return
        # With hashes, pip's resolver checks every file itself: fetching the pins first would say a mismatch twice.
        pinned = () if requirements.parsed.require_hashes else requirements.parsed.requirements
        early = Stage(DOWNLOADS, fetch_one, max_workers=settings.max_downloads, errors=[],
                      on_event=logger.debug, stop=downloader.close)
        stack.callback(early.close, cancel=True)  # a failed or stopped run: those in flight are cut
        fetched.update(zip((pin.name for pin in pinned), early.submit(*pinned)))
        self._scheduler.hold()
        stack.callback(stop_resolvers)  # a run that ends first leaves no resolver behind
        threading.Thread(target=self._resolve_the_rest, args=(requirements, downloads, set(fetched)),
                         name="resolve", daemon=True).start()

    def _resolve_the_rest(self, requirements: Requirements, downloads: Stage[PinnedRequirement, DownloadResult],
                          taken: set[NormalizedName]) -> None:
        try:
            pins = self._pins(requirements)
            # Those fetched early first: their results come from those fetches.
            downloads.feed(*sorted(pins, key=lambda pin: pin.name not in taken))
        except Exception as exc:  # raised by run() once the scheduler has stopped
            self._resolution_failed = exc
            self._scheduler.cancel("stopped: the requirements cannot be resolved")
        finally:
            self._scheduler.release()

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
        """Place a downloaded wheel in the wheelhouse, or queue a downloaded sdist (or local source) for its build."""
        if result.status is DownloadStatus.FAILED or result.path is None:
            return
        if result.path.name.endswith(".whl"):
            self._place(result, result.path)
            return
        try:
            source = (sdist_source(result.path, sha256=result.sha256) if result.path.is_file()
                      else tree_source(result.path))
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
                            log=None, error=None, wheel_sha256=_file_sha256(self._wheelhouse.path / existing),
                            wheel_tag=_wheel_tag(existing))
            )
            self._observer.event(f"{source.key}: skipped, {existing} is already in the wheelhouse (--force rebuilds)")
            self._wheel_ready(existing)
            return
        key = source.key
        if source.version and key in self._keys:
            self._observer.event(f"{source.path}: same name and version as another source; built once")
            return
        self._keys.add(key)
        override = settings.overrides.get(source.name)
        history = self._history
        peaks = history.recent_peaks(source.name, python=PYTHON_TAG, version=source.version) if history else []
        need = predict_need(peaks, settings.memory_per_build, override=override.memory if override else None)
        learned = bool(peaks) or (override is not None and override.memory is not None)
        predicted = self._predictor.predict(source, history.expected_duration(
            source.name, python=PYTHON_TAG, version=source.version) if history else None)
        timeout = override.timeout if override else None
        queued = self._sources[source.location] = QueuedSource.of(source, learned=learned, jobs=self._jobs)
        self._scheduler.add(queued, need=need, expected_duration=predicted.duration, size=source.size,
                            timeout=timeout)
        if predicted.duration is None or predicted.look:
            self._estimates.feed(queued)

    def _estimate(self, queued: QueuedSource) -> None:
        """Tell the scheduler whether a build with no history compiles code (it then starts earlier); note what."""
        source = queued.source()
        if compiles(source):
            self._scheduler.mark_compiling(queued.key)
            self._predictor.look(source)

    def _place(self, result: DownloadResult, wheel: Path) -> None:
        """Check a wheel the index had and publish it as it is, byte for byte; it is the build's result."""
        started = time.time()
        status, error = Status.DOWNLOADED, None
        present = self._wheelhouse.path / wheel.name
        if not self._settings.force and result.sha256 and present.is_file() and _file_sha256(present) == result.sha256:
            status = Status.SKIPPED  # these very bytes, checked when they were placed
        else:
            try:
                check_wheel(wheel, name=result.name, version=result.version)
                publish_wheel(wheel, self._wheelhouse.path)
                self._wheelhouse.forget(wheel.name)
            except WheelError as exc:
                status, error = Status.FAILED, exc.message
        placed = BuildResult(
            name=result.name, version=result.version, source=result.url or str(wheel), status=status,
            wheel=wheel.name if error is None else None, started_at=started, finished_at=time.time(),
            phases={"publish": round(time.time() - started, 4)}, peak_rss_bytes=0, cpu_s=0.0, log=None, error=error,
            wheel_sha256=result.sha256 if error is None else None,
            wheel_tag=_wheel_tag(wheel.name) if error is None else None)
        self.report.builds.append(placed)
        label = f"{result.name}-{result.version}" if result.version else result.name
        if error is not None:
            self._observer.event(f"{label}: FAILED: {error}")
            return
        if status is Status.SKIPPED:
            self._observer.event(f"{label}: skipped, {wheel.name} is already in the wheelhouse, the same bytes")
        else:
            self._observer.event(f"{label}: downloaded wheel {wheel.name}, placed as it is")
        self._wheel_ready(wheel.name)

    def _check_set(self, *, strict: bool) -> None:
        """Check that every requirement of the run's wheels is met by a wheel of the run or of the wheelhouse.

        ``strict`` (``-r`` without ``--no-deps``): an unmet requirement fails the run; else it is a warning.
        """
        if not any(result.wheel and result.status in WHEELS for result in self.report.builds):
            return
        wheels = (self._wheelhouse.path / result.wheel for result in self.report.builds  # read back one at a time
                  if result.wheel and result.status in WHEELS)
        try:
            unmet = check_wheels(wheels, self._environment or target_environment(), wheelhouse=self._wheelhouse.path,
                                 extras=self._extras)
        except WheelError as exc:
            self.report.unmet, self.report.unmet_fails = [f"cannot check the set: {exc.message}"], strict
            self._observer.event(f"cannot check the set: {exc.message}")
            return
        self.report.unmet = [str(requirement) for requirement in unmet]
        self.report.unmet_fails = strict
        word = "missing" if strict else "warning: missing"
        for line in self.report.unmet:
            self._observer.event(f"{word}: {line}")

    def _built(self, result: BuildResult) -> None:
        if result.wheel:  # its worker hashed it as it published it: this thread (the scheduler's) reads no wheel
            result = replace(result, wheel_tag=_wheel_tag(result.wheel))
        self.report.builds.append(result)
        self._predictor.built(result)
        queued = self._sources.pop(result.source, None)  # its build has ended
        if result.status is Status.BUILT and result.wheel:
            if queued is not None:
                self._wheelhouse.record(queued.sha256, wheel=result.wheel, source=os.path.basename(queued.location))
            self._wheel_ready(result.wheel)
        if self._history is not None and result.started_at is not None and result.finished_at is not None:
            self._history.record(
                BuildRecord(
                    name=result.name,
                    version=result.version or "",
                    sdist_sha256=queued.sha256 if queued else None,
                    python=PYTHON_TAG,
                    peak_rss_bytes=result.peak_rss_bytes or None,
                    wall_s=result.wall_s,
                    cpu_s=result.cpu_s or None,
                    cpu_wait_s=result.cpu_wait_s,
                    status=SUCCESS if result.status is Status.BUILT else (result.error or "failed")[:200],
                    started_at=result.started_at,
                    finished_at=result.finished_at,
                    outcome=result.status.value,
                    run_id=self._run.id if self._run else None,
                    predicted_rss_bytes=result.predicted_rss_bytes,
                    compiler_calls=result.compiler_calls,
                    compiler_hits=result.compiler_hits,
                    compiler_misses=result.compiler_misses,
                    host=result.host,
                )
            )


WHEELS = (Status.BUILT, Status.DOWNLOADED, Status.SKIPPED)
"""The outcomes of a build or download that leave a wheel of the run in the wheelhouse."""


def finished_run(run: RunRecord, report: RunReport, interrupted: str | None) -> RunRecord:
    """``run`` as it ended: its end and the count of each outcome of ``report`` (a failed download is a failure)."""
    counts = report.builds.counts
    return replace(run, finished_at=report.finished_at, built=counts[Status.BUILT.value],
                   failed=counts[Status.FAILED.value] + report.downloads.counts[DownloadStatus.FAILED.value],
                   downloaded=counts[Status.DOWNLOADED.value], skipped=counts[Status.SKIPPED.value],
                   stopped=counts[Status.STOPPED.value] + counts[Status.NOT_STARTED.value], interrupted=interrupted)


def _file_sha256(path: Path) -> str | None:
    """The sha256 of a wheel in the wheelhouse, for the report; ``None`` if it cannot be read."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def _wheel_tag(filename: str) -> str:
    """The tag part of a wheel's file name: ``cp311-cp311-manylinux_2_17_x86_64``."""
    return "-".join(filename.removesuffix(".whl").split("-")[-3:])
