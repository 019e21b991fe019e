"""The messages between the scheduler and a build worker: a job in, events and a result out.

Both cross a process boundary as JSON, so they are plain frozen data.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.build.ceiling import MemoryCeiling
from orchestrator.build.compilercache import CompilerCache
from orchestrator.build.sandbox import Sandbox
from orchestrator.settings import IndexSettings

PHASES = ("extract", "create_env", "install_requires", "get_requires", "backend", "publish")
"""The phases of a build, in order; each gets a timing in the report. ``get_requires`` is the backend's
``get_requires_for_build_wheel``, ``backend`` its ``build_wheel``; everything before ``backend`` runs
before admission when a worker prepared the build ahead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSpan:
    """When one phase of a build ran, in epoch seconds, as the worker's clock saw it."""

    phase: str
    """One of :data:`PHASES`, or ``admission``: prepared, waiting for the build's admission."""
    start: float
    end: float

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "start": round(self.start, 3), "end": round(self.end, 3)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhaseSpan:
        return cls(phase=str(data["phase"]), start=float(data["start"]), end=float(data["end"]))


class Status(str, enum.Enum):
    BUILT = "built"
    DOWNLOADED = "downloaded wheel"
    """The index had a wheel for it: downloaded, checked and placed as it is, not built."""
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_STARTED = "not started"
    """Never started: --fail-fast after a failure, or the run was interrupted."""
    STOPPED = "stopped"
    """Running when the run was stopped (Ctrl-C, SIGTERM): not a failure of its own."""


def nested_jobs_environ(jobs: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Caps for the build tools' own parallelism (for :attr:`BuildJob.environ`), except those the user set."""
    values = {
        "MAKEFLAGS": f"-j{jobs}",
        "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs),
        "MAX_JOBS": str(jobs),
        "NPY_NUM_BUILD_JOBS": str(jobs),
    }
    return {name: value for name, value in values.items() if name not in environ}


def _fields(instance: Any) -> dict[str, Any]:
    """A dataclass instance's fields, by name, the values as they are: ``dataclasses.asdict`` deep-copied every
    nested value, to be replaced by their JSON forms (64 against 25 us a job, with its JSON encoding)."""
    return {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildJob:
    """Everything a worker needs to build one source."""

    key: str
    """The source's key, for events and names."""
    source: Path
    kind: str
    """``sdist`` or ``tree``."""
    name: str
    version: str | None
    sha256: str | None
    wheelhouse: Path
    log_path: Path
    index: IndexSettings
    installer: str
    """``pip`` or ``uv``: what installs build requirements."""
    env_cache: Path
    """The run's folder of prepared build environments, shared between its builds (``build/envcache.py``)."""
    environ: dict[str, str] = field(default_factory=dict)
    """Extra environment for the backend (nested-parallelism caps)."""
    sandbox: Sandbox = field(default_factory=Sandbox)
    """The containment the backend's hooks run in (``build/sandbox.py``); the default is none."""
    memory_ceiling: MemoryCeiling | None = None
    """The build's cgroup ``memory.max`` (``build/ceiling.py``), where the run has one and the need was learned."""
    compiler_cache: CompilerCache | None = None
    """The compiler cache the hooks' compilers go through (``build/compilercache.py``); ``None``: none."""
    nice: bool = False
    """Run every process of the build at a lower CPU and I/O priority (``--nice``)."""
    jobserver: bool = False
    """Offer ``build_wheel``'s tools the run's jobserver, where the executor made the build a FIFO of tokens
    (``build/jobserver.py``); otherwise they keep the ``-jK`` of :attr:`environ`."""

    def build_job(self, need: int) -> BuildJob:
        """This job for a build that needs ``need`` bytes (:class:`JobSpec`): its memory ceiling raised to that
        need, never lowered (after a memory requeue, else the ceiling made from the old need kills the next run)."""
        if self.memory_ceiling is None:
            return self
        return dataclasses.replace(self, memory_ceiling=self.memory_ceiling.raised_to(need))

    def to_json(self) -> dict[str, Any]:
        data = _fields(self)
        data["source"] = str(self.source)
        data["wheelhouse"] = str(self.wheelhouse)
        data["log_path"] = str(self.log_path)
        data["env_cache"] = str(self.env_cache)
        data["index"] = _fields(self.index)
        data["environ"] = dict(self.environ)
        data["sandbox"] = self.sandbox.to_json()
        data["memory_ceiling"] = dataclasses.asdict(self.memory_ceiling) if self.memory_ceiling else None
        data["compiler_cache"] = self.compiler_cache.to_json() if self.compiler_cache else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildJob:
        data = dict(data)
        data["source"] = Path(data["source"])
        data["wheelhouse"] = Path(data["wheelhouse"])
        data["log_path"] = Path(data["log_path"])
        data["env_cache"] = Path(data["env_cache"])
        data["index"] = IndexSettings.from_json(data["index"])
        data["sandbox"] = Sandbox.from_json(data.get("sandbox", {}))
        if data.get("memory_ceiling") is not None:
            data["memory_ceiling"] = MemoryCeiling(**data["memory_ceiling"])
        data["compiler_cache"] = CompilerCache.from_json(data["compiler_cache"]) if data.get("compiler_cache") else None
        return cls(**data)


class JobSpec(Protocol):
    """A queued build as the scheduler keeps it until it starts: a :class:`BuildJob`, or a compact record that
    makes one only then (``queued.QueuedSource``: a run queues thousands)."""

    @property
    def key(self) -> str:
        """The build's key, as its job's."""
        ...

    def build_job(self, need: int) -> BuildJob:
        """The job to hand a worker, for a build that now needs ``need`` bytes."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOutcome:
    """What a worker reports when its build ends (the scheduler adds timing and memory)."""

    status: Status
    wheel: str | None = None
    """Filename of the wheel placed in the wheelhouse."""
    wheel_sha256: str | None = None
    """Its sha256, taken as it was copied there (the run need not read it again)."""
    name: str | None = None
    version: str | None = None
    """Name and version as the built wheel says them."""
    error: str | None = None
    killed_by: str | None = None
    """The signal that killed a process of the build (``SIGKILL``), if that is why it failed."""
    phases: dict[str, float] = field(default_factory=dict)
    spans: tuple[PhaseSpan, ...] = ()
    """Each phase as it ran, in order (a phase that ran twice, twice), and the wait for admission."""
    cpu_s: float = 0.0
    """CPU seconds of the worker and every process it waited for."""
    max_rss_bytes: int = 0
    """The largest single process of the build, from ``getrusage``."""
    memory_ceiling: int | None = None
    """The ``memory.max`` the build ran under, in bytes; ``None`` without one."""
    compiler_calls: int | None = None
    """Calls of the compiler cache (compilations, links, calls it cannot cache); ``None``: no cache ran."""
    compiler_hits: int | None = None
    """Compilations answered from the compiler cache."""
    compiler_misses: int | None = None
    """Compilations the compiler cache could keep but had to run."""
    host: str | None = None
    """The machine that built it, on a farm; ``None``: this one."""
    attempts: int = 1
    """Runs it took on a farm: more than one when a worker running it was lost and it ran again elsewhere."""

    def to_json(self) -> dict[str, Any]:
        data = _fields(self)
        data["status"] = self.status.value
        data["phases"] = dict(self.phases)
        data["spans"] = [span.to_json() for span in self.spans]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerOutcome:
        spans = tuple(PhaseSpan.from_json(span) for span in data.get("spans", ()))
        return cls(**{**data, "status": Status(data["status"]), "spans": spans})


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildResult:
    """One record of the report: what happened to one source."""

    name: str
    version: str | None
    source: str
    status: Status
    wheel: str | None
    started_at: float | None
    finished_at: float | None
    phases: dict[str, float]
    peak_rss_bytes: int
    cpu_s: float
    log: str | None
    error: str | None
    predicted_rss_bytes: int | None = None
    """The memory need the last attempt was admitted with (history, config or default, raised by requeues)."""
    cpu_wait_s: float | None = None
    """Seconds its last attempt's processes spent runnable but waiting for a CPU, as sampled; ``None``: not
    measured (a farm, or no scheduler statistics)."""
    expected_s: float | None = None
    """Seconds the scheduler expected the build to take when it queued it (``predict.py``); ``None``: no estimate."""
    attempts: int = 1
    memory_requeues: int = 0
    """Times the build was stopped under memory pressure and queued again (not counted in ``attempts``)."""
    waits: dict[str, float] = field(default_factory=dict)
    """Seconds queued before admission, over every attempt, by what held the build back: a rule
    of the admission policy (``builds``, ``memory_limit``, ``free_memory``, ``cpu``, ``load``) while it
    was next in line, or ``queue`` while other builds were ahead of it."""
    wait_reason: str | None = None
    """The policy's last reason for holding the build back, in words; ``None`` if it never held it."""
    wheel_sha256: str | None = None
    """The sha256 of the wheel in the wheelhouse."""
    wheel_tag: str | None = None
    """The wheel's compatibility tag, as its file name says it (``cp311-cp311-manylinux_2_17_x86_64``)."""
    sandbox: str | None = None
    """The protections the build's hooks ran under (``bwrap: read-only host, ..., no network``, or ``none``),
    and its memory ceiling if it had one (``..., memory ceiling 1.5 GiB``)."""
    queued_at: float | None = None
    """When it was first queued for a build (epoch seconds); ``None`` if it never was."""
    spans: tuple[PhaseSpan, ...] = ()
    """The worker's account of its last attempt's phases (see :attr:`WorkerOutcome.spans`); empty without one."""
    compiler_calls: int | None = None
    """Calls of the compiler cache during the build; ``None`` when no compiler cache ran."""
    compiler_hits: int | None = None
    """Compilations answered from the compiler cache."""
    compiler_misses: int | None = None
    """Compilations the compiler cache had to run."""
    host: str | None = None
    """The farm machine that built it (its host name); ``None``: this machine."""

    @property
    def waited_s(self) -> float:
        """Seconds queued before admission, whatever held the build back."""
        return sum(self.waits.values())

    @property
    def wall_s(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.started_at

    @property
    def overhead_s(self) -> float:
        """Wall time not spent in the backend's hooks: worker start, extraction, environment, checks, publishing."""
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max(self.wall_s - self.phases.get("backend", 0.0), 0.0)

    def to_json(self) -> dict[str, Any]:
        data = _fields(self)
        data["status"] = self.status.value
        data["phases"] = dict(self.phases)
        data["wall_s"] = round(self.wall_s, 3)
        data["overhead_s"] = round(self.overhead_s, 3)
        data["waits"] = {held_by: round(seconds, 3) for held_by, seconds in self.waits.items() if round(seconds, 3)}
        data["waited_s"] = round(self.waited_s, 3)
        data["spans"] = [span.to_json() for span in self.spans]
        return data
