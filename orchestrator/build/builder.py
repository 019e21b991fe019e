"""Build one source into a wheel: extract, create the environment, run the PEP 517 hooks, publish.

Runs inside a worker process. Every failure becomes a :class:`BuildError` (or
another :class:`OrchestratorError`) here, at one choke point, so the worker can
report it as a status rather than a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from orchestrator.build.jobserver import BIN_NAME, FIFO_NAME, OLD_MAKE_ERROR, hook_environ
from orchestrator.build.sandbox import wrap
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


class _HookRunner:
    """Runs each hook, inside the job's sandbox (``build/sandbox.py``) when it has one, through the
    job's compiler cache while :attr:`use_cache`, and with the run's jobserver while :attr:`use_jobserver`
    (``pyproject_hooks``' runner protocol)."""

    def __init__(self, log: IO[str], job: BuildJob, work_dir: Path) -> None:
        self._log, self._job, self._work_dir = log, job, work_dir
        self.use_cache = job.compiler_cache is not None
        # A MAKEFLAGS of the user's own stays as it is.
        self.use_jobserver = job.jobserver and "MAKEFLAGS" in job.environ

    def __call__(self, cmd: Sequence[str], cwd: str | None = None,
                 extra_environ: Mapping[str, str] | None = None) -> None:
        job, work_dir = self._job, self._work_dir
        env: dict[str, str] = {**os.environ, **job.environ, **(extra_environ or {})}
        # With --keep-build-envs the run's store is a symlink to the shared one: its target is read too.
        readable = [job.env_cache, (job.env_cache / "envs").resolve()]
        writable = [job.source] if job.kind == "tree" else []
        if job.compiler_cache is not None and self.use_cache:
            env.update(job.compiler_cache.environ(env, build_dir=work_dir, package=job.name))
            readable += [job.compiler_cache.wrapper_dir, Path(job.compiler_cache.executable)]
            writable.append(job.compiler_cache.package_dir(job.name))
        fifo = work_dir / FIFO_NAME
        if self.use_jobserver and fifo.exists():  # made by the run at admission: for build_wheel only
            try:
                env = hook_environ(env, fifo=fifo, bin_dir=work_dir / BIN_NAME,
                                   set_by_run=job.environ)
                shadowed = sorted(path.name for path in (work_dir / BIN_NAME).glob("*"))
                self._log.write(f"=== orchestrate: jobserver: MAKEFLAGS={env['MAKEFLAGS']}"
                                f"{'; first on PATH: ' + ', '.join(shadowed) if shadowed else ''} ===\n")
            except OSError as exc:
                self._log.write(f"=== orchestrate: no jobserver for this build: {exc} ===\n")
                self.use_jobserver = False
        # A source tree is built in place (setuptools writes build/ there): it is the build's own folder too.
        cmd, env = wrap(cmd, sandbox=job.sandbox, build_dir=work_dir, tmp_dir=work_dir / "tmp",
                        out_dir=work_dir / "dist", env=env, cwd=cwd, readable=readable, writable=writable)
        self._log.flush()
        subprocess.run(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       check=True)


def build_source(job: BuildJob, work_dir: Path, log: IO[str], on_phase: PhaseCallback, *,
                 admitted: Callable[[], None] = lambda: None) -> WorkerOutcome:
    """Build ``job`` in ``work_dir`` (private, empty; its owner removes it) and publish the wheel.

    Extracting the source and preparing its environment (what it needs to build included)
    happen first; then ``admitted`` is called, which returns when the build may build the wheel.
    Never raises for a build failure.
    """
    timer = _Timer(log, on_phase)
    try:
        try:
            builder, runner = _prepare(job, work_dir, log, timer)
        finally:
            timer.admission(admitted)  # a failure to prepare is reported once the build is admitted
        wheel = _build(builder, runner, job, work_dir, log, timer)
        with timer.phase("publish"):
            name, version = _check_wheel(job, wheel)
            published = publish_wheel(wheel, job.wheelhouse)
    except BuildKilledError as exc:
        outcome = timer.outcome(Status.FAILED, error=exc.message, killed_by=exc.signal_name)
    except (BuildError, SourceError, WheelError) as exc:
        outcome = timer.outcome(Status.FAILED, error=exc.message)
    except OSError as exc:
        # Disk full, permissions: name the file and the reason, nothing else.
        where = f" ({exc.filename})" if exc.filename else ""
        outcome = timer.outcome(Status.FAILED, error=f"{exc.strerror or exc}{where}")
    else:
        outcome = timer.outcome(Status.BUILT, wheel=published.name, name=name, version=version)
    return _with_compiler_stats(outcome, job, work_dir)


def _with_compiler_stats(outcome: WorkerOutcome, job: BuildJob, work_dir: Path) -> WorkerOutcome:
    """``outcome`` with what the build's compiler calls did, when they went through a compiler cache."""
    if job.compiler_cache is None:
        return outcome
    stats = read_stats(work_dir) or CompilerStats(calls=0, hits=0, misses=0)
    return dataclasses.replace(outcome, compiler_calls=stats.calls, compiler_hits=stats.hits,
                               compiler_misses=stats.misses)


def _prepare(job: BuildJob, tmp: Path, log: IO[str], timer: _Timer) -> tuple[build.ProjectBuilder, _HookRunner]:
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
        env = _environment(job, tmp / "env", log)
        runner = _HookRunner(log, job, tmp)
        try:
            builder = build.ProjectBuilder.from_isolated_env(env, source_dir, runner=runner)
        except build.BuildException as exc:
            raise BuildError(f"{job.source}: {exc}") from None
    with timer.phase("install_requires"):
        env.install(builder.build_system_requires)
    with timer.phase("get_requires"), _backend_errors(job, builder):
        extra = builder.get_requires_for_build("wheel")
    if extra:
        with timer.phase("install_requires"):
            env.install(extra)
    return builder, runner


def _build(builder: build.ProjectBuilder, runner: _HookRunner, job: BuildJob, tmp: Path, log: IO[str],
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


def _environment(job: BuildJob, path: Path, log: IO[str]) -> EnvView:
    """The build's isolated environment: an empty virtualenv that sees the run's prepared environments."""
    installer = choose_installer(job.installer)
    compiled = compile_at_preparation(sandboxed=job.sandbox.tool != "none")
    cache = EnvCache(job.env_cache, SubprocessInstaller(installer, job.index, log, compile_bytecode=compiled),
                     index=job.index, log=log, compiled=compiled)
    return cache.view(path)


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
