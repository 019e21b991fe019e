"""Where builds run: the seam between the scheduler and the workers that build.

The scheduler drives every build through a :class:`WorkerHandle` that an
:class:`Executor` spawns, and never touches a process, a signal or a file itself.
One handle's life::

    spawn() ──► stage(job) ──► (prepares the build ahead) ──► admit() ──► events ──► close()
                    │                                            │
                    └──► close(): not needed after all           └──► stop(grace) / kill()

From :meth:`WorkerHandle.admit` on, the handle puts on the sink given to
:meth:`Executor.start`, in order: any number of :class:`PhaseStarted`, at most one
:class:`StoppedForMemory` (from an executor whose machines stop builds themselves), at most one
:class:`OutcomeReported`, then exactly one :class:`Exited`, also when it was stopped.
``local`` runs each build in a process of this machine; ``dask`` on the workers of a
Dask cluster (``remote`` being its side on each worker); an executor implements these
two protocols and nothing else.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orchestrator.jobs import BuildJob, WorkerOutcome
from orchestrator.resources import TreeUsage


@dataclass(frozen=True, slots=True)
class PhaseStarted:
    """A build entered a phase (see ``jobs.PHASES``)."""

    key: str
    phase: str


@dataclass(frozen=True, slots=True)
class OutcomeReported:
    """The worker's own account of how the build ended."""

    key: str
    outcome: WorkerOutcome


@dataclass(frozen=True, slots=True)
class Exited:
    """The worker is gone; the last event of an admitted handle."""

    key: str
    returncode: int
    """Its exit status; negative when a signal ended it."""
    killed_by: str | None = None
    """The name of the signal that ended it (``SIGKILL``), if one did."""


@dataclass(frozen=True, slots=True)
class StoppedForMemory:
    """A farm machine stopped the build under memory pressure, as the scheduler stops one here; it runs again."""

    key: str
    host: str
    rss: int
    """What its whole process tree used when it was stopped, in bytes."""
    pressure: str
    """What the machine saw (``admission.pressure_reason``)."""


WorkerEvent = PhaseStarted | StoppedForMemory | OutcomeReported | Exited
EventSink = Callable[[WorkerEvent], None]
"""Takes events from any thread; the scheduler's queue."""


class WorkerHandle(Protocol):
    """One worker, holding at most one build."""

    def stage(self, job: BuildJob) -> None:
        """Hand it ``job`` to prepare (extract, environment, requirements) until :meth:`admit`."""

    def admit(self, need: int = 0) -> None:
        """Let the staged build call its backend; its events follow on the sink.

        ``need`` is the memory it was admitted with: a farm routes it to a machine that can hold it.
        """

    def alive(self) -> bool:
        """Whether the worker can still build (one that died while preparing cannot)."""

    def sample(self) -> TreeUsage:
        """What the build's whole process tree uses now (zeros once it is gone)."""

    def stop(self, grace: float) -> None:
        """Start stopping the build: politely, then by force after ``grace`` seconds; returns at once."""

    def kill(self) -> None:
        """Stop the build by force, now."""

    def close(self) -> None:
        """Release the worker and what it holds; after :class:`Exited`, or instead of :meth:`admit`."""


class Executor(Protocol):
    """Spawns workers for one run at a time."""

    def start(self, sink: EventSink) -> None:
        """Begin a run; ``sink`` receives the events of every worker spawned until :meth:`close`."""

    def spawn(self) -> WorkerHandle:
        """A new worker, starting up while it waits for its job."""

    def close(self) -> None:
        """End the run once every handle is closed; wait for the clean-up."""


def signal_name(returncode: int) -> str | None:
    """``SIGKILL`` for a process that signal ended (a negative ``returncode``)."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
