"""Build one source into a wheel: extract, create the environment, run the PEP 517 hooks, publish.

Runs inside a worker process. Every failure becomes a :class:`BuildError` (or
another :class:`OrchestratorError`) here, at one choke point, so the worker can
report it as a status rather than a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import build
import pyproject_hooks
from packaging.utils import (
    canonicalize_name,
)

from orchestrator.build.compilercache import CompilerStats, read_stats
from orchestrator.build.envcache import EnvCache, EnvView, SubprocessInstaller, compile_at_preparation
from orchestrator.build.envs import choose_installer
from orchestrator.build.extract import extract_sdist
from orchestrator.build.hooks import HookRunner
from orchestrator.build.jobserver import OLD_MAKE_ERROR
from orchestrator.errors import BuildError, BuildKilledError, SourceError, WheelError
from orchestrator.jobs import BuildJob, PhaseSpan, Status, WorkerOutcome
from orchestrator.wheels.wheelfile import check_wheel
from orchestrator.wheels.wheelhouse import publish_wheel

logger = logging.getLogger(__name__)

PhaseCallback = Callable[[str], None]


class _Timer:
    """Times the phases of one build and announces each as it starts."""

    def __init__(self, log: IO[str], on_phase: PhaseCallback) -> None:
        self.phases: dict[str, float] = {}
        self.spans: list[PhaseSpan] = []
        self._log = log
        self._on_phase = on_phase

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._on_phase(name)
        self._log.write(f"\n=== orchestrate: {name} ===\n")
        self._log.flush()
        start, began = time.perf_counter(), time.time()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - start, 4)
            self.spans.append(PhaseSpan(phase=name, start=began, end=time.time()))

    def admission(self, admitted: Callable[[], None]) -> None:
        """Wait for ``admitted`` to return, keeping the wait as a span (it is no phase of the build's own)."""
        began = time.time()
        try:
            admitted()
        finally:
            self.spans.append(PhaseSpan(phase="admission", start=began, end=time.time()))

    def outcome(self, status: Status, **fields: Any) -> WorkerOutcome:
        """The build's outcome, with the phases timed so far."""
        return WorkerOutcome(status=status, phases=self.phases, spans=tuple(self.spans), **fields)


def build_source(job: BuildJob, work_dir: Path, log: IO[str], on_phase: PhaseCallback, *,
                 admitted: Callable[[], None] = lambda: None, scratch: Path | None = None) -> WorkerOutcome:
    """Build ``job`` in ``work_dir`` (private, empty; its owner removes it) and publish the wheel.

    Extracting the source and preparing its environment (what it needs to build included)
    happen first; then ``admitted`` is called, which returns when the build may build the wheel.
    ``scratch``: a private, empty folder on a tmpfs (its owner removes it) for the environment's view,
    linked from ``work_dir``. Never raises for a build failure.
    """
    timer = _Timer(log, on_phase)
    runner = HookRunner(log, job, work_dir, scratch=scratch)
    try:
        try:
            builder = _prepare(job, work_dir, log, timer, runner, scratch)
        finally:
            timer.admission(admitted)  # a failure to prepare is reported once the build is admitted
        wheel = _build(builder, runner, job, work_dir, log, timer)
        runner.close()
        with timer.phase("publish"):
            name, version = _check_wheel(job, wheel)
            published, digest = publish_wheel(wheel, job.wheelhouse)
    except BuildKilledError as exc:
        outcome = timer.outcome(Status.FAILED, error=exc.message, killed_by=exc.signal_name)
    except (BuildError, SourceError, WheelError) as exc:
        outcome = timer.outcome(Status.FAILED, error=exc.message)
    except OSError as exc:
        # Disk full, permissions: name the file and the reason, nothing else.
        where = f" ({exc.filename})" if exc.filename else ""
        outcome = timer.outcome(Status.FAILED, error=f"{exc.strerror or exc}{where}")
    else:
        outcome = timer.outcome(Status.BUILT, wheel=published.name, wheel_sha256=digest, name=name, version=version)
    finally:
        runner.close()
    return _with_compiler_stats(outcome, job, work_dir)


def _with_compiler_stats(outcome: WorkerOutcome, job: BuildJob, work_dir: Path) -> WorkerOutcome:
    """``outcome`` with what the build's compiler calls did, when they went through a compiler cache."""
    if job.compiler_cache is None:
        return outcome
    stats = read_stats(work_dir) or CompilerStats(calls=0, hits=0, misses=0)
    return dataclasses.replace(outcome, compiler_calls=stats.calls, compiler_hits=stats.hits,
                               compiler_misses=stats.misses)


def _prepare(job: BuildJob, tmp: Path, log: IO[str], timer: _Timer, runner: HookRunner,
             scratch: Path | None) -> build.ProjectBuilder:
    """Extract the source, create its environment and install what it needs to build: its
    ``build-system.requires``, then what the backend's ``get_requires_for_build_wheel`` asks for."""
    with timer.phase("extract"):
        if job.kind == "sdist":
            (tmp / "src").mkdir()
            source_dir = extract_sdist(job.source, tmp / "src")
        else:
            source_dir = job.source
        if not (source_dir / "pyproject.toml").is_file() and not (source_dir / "setup.py").is_file():
            raise SourceError(f"{job.source}: does not appear to be a Python project: no pyproject.toml or setup.py")
    with timer.phase("create_env"):
        env = _environment(job, tmp / "env", log, at=scratch / "env" if scratch is not None else None)
        try:
            builder = build.ProjectBuilder.from_isolated_env(env, source_dir, runner=runner)
        except build.BuildException as exc:
            raise BuildError(f"{job.source}: {exc}") from None
        runner.backend_requires(builder.build_system_requires)
    with timer.phase("install_requires"):
        env.install(builder.build_system_requires)
    with timer.phase("get_requires"), _backend_errors(job, builder):
        extra = builder.get_requires_for_build("wheel")
    if extra:
        with timer.phase("install_requires"):
            env.install(extra)
        runner.close()  # the next hook's interpreter starts on what was just installed (its .pth files run)
    return builder


def _build(builder: build.ProjectBuilder, runner: HookRunner, job: BuildJob, tmp: Path, log: IO[str],
           timer: _Timer) -> Path:
    """Run the backend's ``build_wheel``; once more when it failed because of what this tool added: without
    ccache when ccache itself failed (it fails compilations rather than run the compiler when its cache
    turned unusable during the run), without the jobserver when a GNU make older than 4.4 met it (one the
    build runs by its full path, past the ``make`` script on PATH)."""
    log.flush()
    start = job.log_path.stat().st_size
    try:
        with timer.phase("backend"), _backend_errors(job, builder):
            return Path(builder.build("wheel", tmp / "dist"))
    except BuildKilledError:
        raise
    except BuildError:
        said = _log_since(job.log_path, start)
        if runner.use_cache and b"ccache: error:" in said:
            runner.use_cache = False
            log.write("\n=== orchestrate: ccache failed (above); building again without the compiler cache ===\n")
        elif runner.use_jobserver and OLD_MAKE_ERROR in said:
            runner.use_jobserver = False
            log.write("\n=== orchestrate: a GNU make older than 4.4 refused the jobserver (above); "
                      "building again with the -jK split ===\n")
        else:
            raise
    with timer.phase("backend"), _backend_errors(job, builder):
        return Path(builder.build("wheel", tmp / "dist"))


def _log_since(log_path: Path, start: int) -> bytes:
    """What the build log holds after byte ``start``."""
    try:
        with log_path.open("rb") as log:
            log.seek(start)
            return log.read()
    except OSError:
        return b""


def _environment(job: BuildJob, path: Path, log: IO[str], *, at: Path | None) -> EnvView:
    """The build's isolated environment: an empty virtualenv that sees the run's prepared environments (made in
    ``at``, linked from ``path``, if given)."""
    installer = choose_installer(job.installer)
    compiled = compile_at_preparation(sandboxed=job.sandbox.tool != "none")
    cache = EnvCache(job.env_cache, SubprocessInstaller(installer, job.index, log),
                     index=job.index, log=log, compiled=compiled)
    return cache.view(path, at=at)


@contextlib.contextmanager
def _backend_errors(job: BuildJob, builder: build.ProjectBuilder) -> Iterator[None]:
    """Map what the backend or its runner raised into one-line build errors."""
    try:
        yield
    except build.BuildBackendException as exc:
        cause = exc.exception
        if isinstance(cause, pyproject_hooks.BackendUnavailable):
            backend = builder._backend  # noqa: SLF001 - build has no public accessor
            raise BuildError(f"build backend '{backend}' is not available; "
                             "check build-system in pyproject.toml") from None
        if isinstance(cause, subprocess.CalledProcessError) and cause.returncode < 0:
            name = signal.Signals(-cause.returncode).name
            raise BuildKilledError(f"the build backend was killed by {name}", name) from None
        if isinstance(cause, subprocess.CalledProcessError):
            raise BuildError(f"the build backend failed (exit status {cause.returncode}); see the log"
                             + _network_note(job)) from None
        raise BuildError(f"the build backend failed: {cause}{_network_note(job)}") from None
    except build.BuildException as exc:
        raise BuildError(str(exc)) from None


def _network_note(job: BuildJob) -> str:
    """What a failed build with the network off adds to its error: that it was off, and how to allow it."""
    if job.sandbox.tool == "none" or job.sandbox.network:
        return ""
    return (f"; the build network was off: if {job.name} needs it, set build_network = true "
            f"in [packages.{job.name}] of orchestrate.toml")


def _check_wheel(job: BuildJob, wheel: Path) -> tuple[str, str]:
    """Check that the backend produced a complete wheel of the right project; return its name and version."""
    if not wheel.is_file():
        raise BuildError(f"the build backend reported {wheel.name} but wrote no such file")
    # A source tree's name is its folder's: only an sdist's name is known for sure.
    name = job.name if job.kind == "sdist" else wheel.name.split("-")[0]
    try:
        metadata = check_wheel(wheel, name=name, version=job.version)
    except WheelError as exc:
        raise BuildError(exc.message) from None
    return canonicalize_name(metadata.name), str(metadata.version)
