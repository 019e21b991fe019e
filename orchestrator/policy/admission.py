"""The admission policy: may one more build start now, and which build should yield?

Pure functions over plain data. The caller samples the machine (a :class:`Probe`),
describes what is running, and asks :func:`decide`; nothing here reads the clock,
the process table or ``/proc``, so every rule is testable with made-up numbers.

Memory is counted by *reservation*: a running build holds ``max(need, rss)``, what
it was predicted to need or what it already uses, whichever is larger. A build that
has just started uses little but will soon use its ``need``, so the momentary free
memory overstates what is really free; the part of each reservation not yet used is
subtracted from it before a new build is admitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal, Protocol, TypeVar

from orchestrator.errors import UsageError
from orchestrator.units import format_size

__all__ = [
    "Candidate",
    "Decision",
    "Limits",
    "Probe",
    "QueuedBuild",
    "Readings",
    "RunningBuild",
    "decide",
    "jobs_per_build",
    "may_backfill",
    "order_queue",
    "pick_victim",
    "pressure_reason",
    "shadow_time",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Readings:
    """One sample of the machine, taken by the caller."""

    total_memory: int
    """Physical memory (or the cgroup's limit), in bytes."""
    available_memory: int
    """Memory that can be given to new processes without swapping, in bytes."""
    load_1m: float | None
    """The 1-minute load average; ``None`` where the platform has none."""
    cpu_count: int
    """CPUs this process may use (affinity and cgroup quota applied)."""
    cpu_busy: float | None = None
    """How many of those CPUs were busy lately, whoever kept them busy; ``None``: not measured."""


class Probe(Protocol):
    """Supplies :class:`Readings`; the real one lives in ``resources.py``."""

    def read(self) -> Readings:
        """Sample the machine now."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningBuild:
    """A build that has been admitted and has not finished."""

    key: str
    """Identifies the build to the caller (for :func:`pick_victim`)."""
    need: int
    """Predicted peak memory, in bytes."""
    rss: int
    """Current resident memory of the build's whole process tree, in bytes."""
    started_at: float
    """When it was admitted, on any monotonic clock the caller uses consistently."""
    expected_end: float | None = None
    """When history expects it to finish (``started_at`` plus its expected duration); ``None``: unknown."""
    stopping: bool = False
    """Being stopped (its process tree signalled) but not yet gone: its ``rss`` is about to be freed."""
    cpu: float | None = None
    """CPUs its whole process tree kept busy over the last sample; ``None``: not sampled yet."""
    cpu_seen: float = 0.0
    """While ``cpu`` is ``None``: what its tree was seen using since its first sample, in CPUs over the
    machine's CPU window; the machine's ``cpu_busy`` already holds it."""

    @property
    def reservation(self) -> int:
        """What this build holds against the limits: its prediction or its use, if larger."""
        return max(self.need, self.rss)

    @property
    def unused_reservation(self) -> int:
        """Memory reserved but not yet taken; it will still come out of what is available."""
        return max(0, self.need - self.rss)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What all running builds together may take from the machine."""

    max_builds: int
    """Builds running at once, at most; at least 1."""
    memory_limit: int | None
    """The most memory all running builds together may reserve, in bytes; ``None``: no cap."""
    min_free_memory: int
    """Available memory to leave untouched after a new build takes what it needs, in bytes."""
    max_load: float | None
    """Wait while the 1-minute load per usable CPU is above this; ``None``: ignore load."""
    max_cpu: float | None = None
    """Wait while this share of the usable CPUs is busy (1.0: all); ``None``: ignore."""

    def __post_init__(self) -> None:
        if self.max_builds < 1:
            raise UsageError(f"max builds must be at least 1, not {self.max_builds}")
        if self.memory_limit is not None and self.memory_limit < 0:
            raise UsageError(f"memory limit cannot be negative: {self.memory_limit}")
        if self.min_free_memory < 0:
            raise UsageError(f"minimum free memory cannot be negative: {self.min_free_memory}")
        if self.max_load is not None and self.max_load <= 0:
            raise UsageError(f"max load must be above 0, not {self.max_load}")
        if self.max_cpu is not None and self.max_cpu <= 0:
            raise UsageError(f"max CPU share must be above 0, not {self.max_cpu}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """The build at the head of the queue."""

    key: str
    """Identifies the build to the caller."""
    need: int
    """Predicted peak memory, in bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Whether to start the candidate now, and why, in words fit for a status line."""

    admit: bool
    """Start it now."""
    reason: str
    """One line: ``"waiting: 2 of 2 builds running"``,
    ``"waiting: CPUs busy 2.96, limit 2.00 (100% of 2 usable CPUs)"``."""
    warning: str | None = None
    """Set when admitting anyway would break a limit (nothing else is running)."""
    blocked_by: Literal["builds", "memory_limit", "free_memory", "load", "cpu"] | None = None
    """The rule that holds the candidate back; ``reason``'s figures change with every sample, this does not."""


def decide(
    candidate: Candidate,
    readings: Readings,
    running: Sequence[RunningBuild],
    limits: Limits,
) -> Decision:
    """Admit ``candidate`` now, or say what it is waiting for.

    Checks, in order: the count cap, the memory limit on the sum of reservations,
    the free memory left after unused reservations and the candidate's need, the
    busy CPUs (measured on the machine, else the running builds' own; a build not
    sampled yet adds one), and the load per CPU. When nothing is running the
    candidate is always admitted, with a warning if it breaks a memory rule, so that
    a queue never stalls forever.
    """
    need = candidate.need
    reserved = sum(build.reservation for build in running)
    headroom = (
        readings.available_memory - sum(build.unused_reservation for build in running) - need
    )
    if not running:
        return Decision(
            admit=True,
            reason=f"starting: nothing else running, needs {format_size(need)}",
            warning=_liveness_warning(candidate, headroom, limits),
        )
    if len(running) >= limits.max_builds:
        return Decision(
            admit=False,
            reason=f"waiting: {len(running)} of {limits.max_builds} builds running",
            blocked_by="builds",
        )
    if limits.memory_limit is not None and reserved + need > limits.memory_limit:
        return Decision(
            admit=False,
            reason=(
                f"waiting: {format_size(reserved)} of the {format_size(limits.memory_limit)}"
                f" memory limit reserved, needs {format_size(need)}"
            ),
            blocked_by="memory_limit",
        )
    if headroom < limits.min_free_memory:
        return Decision(
            admit=False,
            reason=_free_memory_reason(readings, running, need, limits),
            blocked_by="free_memory",
        )
    if limits.max_cpu is not None:
        unmeasured = sum(build.cpu is None for build in running)
        if readings.cpu_busy is not None:
            # A just-started build counts as one busy CPU, in place of what the machine's figure saw of it.
            measured = max(0.0, readings.cpu_busy - sum(min(1.0, build.cpu_seen) for build in running
                                                       if build.cpu is None))
        else:
            measured = sum(build.cpu for build in running if build.cpu is not None)
        busy = measured + unmeasured
        cap = limits.max_cpu * readings.cpu_count
        if busy >= cap:
            # An estimate (just-started builds count in full), so it may exceed the CPUs: say it against the limit.
            return Decision(
                admit=False,
                reason=(
                    f"waiting: CPUs busy{'' if readings.cpu_busy is not None else ' with builds'} {busy:.2f},"
                    f" limit {cap:.2f} ({limits.max_cpu * 100:g}% of {readings.cpu_count} usable CPUs)"
                    + (f"; {unmeasured} just started, counted as one busy CPU each" if unmeasured else "")
                ),
                blocked_by="cpu",
            )
    if limits.max_load is not None and readings.load_1m is not None:
        load_per_cpu = readings.load_1m / max(1, readings.cpu_count)
        if load_per_cpu > limits.max_load:
            return Decision(
                admit=False,
                reason=f"waiting: load {load_per_cpu:.2f} per CPU > {limits.max_load:g}",
                blocked_by="load",
            )
    return Decision(
        admit=True,
        reason=(
            f"starting: needs {format_size(need)}, {format_size(headroom)} stays free,"
            f" {len(running) + 1} of {limits.max_builds} builds running"
        ),
    )


def _free_memory_reason(
    readings: Readings, running: Sequence[RunningBuild], need: int, limits: Limits
) -> str:
    free = f"waiting: {format_size(readings.available_memory)} free"
    unused = sum(build.unused_reservation for build in running)
    if unused:
        free += f" ({format_size(unused)} of it promised to running builds)"
    wanted = f"needs {format_size(need)}"
    if limits.min_free_memory:
        wanted += f" and {format_size(limits.min_free_memory)} kept free"
    return f"{free}, {wanted}"


def _liveness_warning(candidate: Candidate, headroom: int, limits: Limits) -> str | None:
    need = format_size(candidate.need)
    if limits.memory_limit is not None and candidate.need > limits.memory_limit:
        return (
            f"{candidate.key} needs {need}, more than the memory limit of"
            f" {format_size(limits.memory_limit)}; starting it alone"
        )
    if headroom < limits.min_free_memory:
        return (
            f"{candidate.key} needs {need} and would leave {format_size(headroom)} free,"
            f" less than the {format_size(limits.min_free_memory)} to keep; starting it alone"
        )
    return None


def pick_victim(
    readings: Readings, running: Sequence[RunningBuild], limits: Limits
) -> str | None:
    """The key of the build to stop (and requeue) to relieve memory pressure, if any.

    Pressure is running builds using more than the memory limit, or available
    memory below the minimum to keep free. The youngest build is stopped: it has
    the least work to lose. The last running build is never stopped, or nothing
    would ever finish.

    Builds already being stopped are never picked, and their memory counts as
    freed: available memory only recovers once they have exited, which can take
    the whole grace period, and judging by the momentary figure until then would
    stop one more build at every sample.
    """
    staying = [build for build in running if not build.stopping]
    if len(staying) <= 1:
        return None
    over_limit = (
        limits.memory_limit is not None
        and sum(build.rss for build in staying) > limits.memory_limit
    )
    freeing = sum(build.rss for build in running if build.stopping)
    if not over_limit and readings.available_memory + freeing >= limits.min_free_memory:
        return None
    return max(staying, key=lambda build: build.started_at).key


def pressure_reason(readings: Readings, running: Sequence[RunningBuild], limits: Limits) -> str:
    """The pressure :func:`pick_victim` found, in words: the builds over the memory limit, or memory free."""
    used = sum(build.rss for build in running if not build.stopping)
    if limits.memory_limit is not None and used > limits.memory_limit:
        return f"builds use {format_size(used)} of the {format_size(limits.memory_limit)} limit"
    return f"{format_size(readings.available_memory)} free, {format_size(limits.min_free_memory)} to keep"


NEAR_PRESSURE = 0.85
"""Builds using more than this share of the memory limit are near pressure: they are sampled more often."""


def sample_interval(readings: Readings | None, running: Sequence[RunningBuild], limits: Limits, base: float) -> float:
    """Seconds until the builds are sampled again: ``base``, or a quarter of it near memory pressure.

    A build that takes memory at gigabytes a second passes the limit by what it takes between two
    samples before :func:`pick_victim` can stop one; near pressure (two builds or more using over
    :data:`NEAR_PRESSURE` of the memory limit, or less than twice the floor left available) the
    samples come four times as often, and cost nothing extra the rest of the time.
    """
    staying = [build for build in running if not build.stopping]
    if readings is None or len(staying) <= 1:  # one build alone is never stopped
        return base
    used = sum(build.rss for build in staying)
    near = ((limits.memory_limit is not None and used > NEAR_PRESSURE * limits.memory_limit)
            or readings.available_memory < 2 * limits.min_free_memory)
    return base / 4 if near else base


def jobs_per_build(cpu_count: int, max_builds: int) -> int:
    """Parallel jobs each build may run itself (``MAKEFLAGS=-jN``, ``CMAKE_BUILD_PARALLEL_LEVEL``,
    ``MAX_JOBS``, ``NPY_NUM_BUILD_JOBS``).

    An even share of the CPUs, rounded down and at least 1, so that ``max_builds``
    builds compiling at full tilt do not oversubscribe the machine.
    """
    if max_builds < 1:
        raise ValueError(f"max_builds must be at least 1, not {max_builds}")
    return max(1, cpu_count // max_builds)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedBuild:
    """A build waiting for admission, with what history predicts about it."""

    key: str
    """Identifies the build to the caller."""
    need: int
    """Predicted peak memory, in bytes."""
    expected_duration: float | None
    """Seconds its last successful build took; ``None`` if never built."""
    size: int = 0
    """Bytes of its sdist: a rough stand-in for build time when there is no history."""
    compiles: bool = False
    """Whether it holds code in a compiled language: a build of minutes rather than seconds."""


class Orderable(Protocol):
    """What :func:`order_queue` reads of a queued build: a :class:`QueuedBuild`, or the scheduler's own entry."""

    @property
    def key(self) -> str: ...

    @property
    def need(self) -> int: ...

    @property
    def expected_duration(self) -> float | None: ...

    @property
    def size(self) -> int: ...

    @property
    def compiles(self) -> bool: ...


Build = TypeVar("Build", bound=Orderable)


def order_queue(builds: Iterable[Build]) -> list[Build]:
    """``builds`` in the order to start them: the longest first.

    Starting the longest builds first keeps one slow build from running alone at
    the end. Builds with a known duration come first, longest first; builds never
    seen before follow: those that compile code first, each group largest sdist
    first. Remaining ties go to the larger memory need, then the key, so the order
    is reproducible.
    """
    # One stable sort per rule, the last rule first: a key tuple per build (and the numbers negated in it), all
    # made at once, was about 200 bytes a build of a queue of thousands, each time it was ordered.
    ordered = sorted(builds, key=attrgetter("key"))
    ordered.sort(key=attrgetter("need"), reverse=True)  # reverse keeps a sort stable
    ordered.sort(key=attrgetter("size"), reverse=True)
    ordered.sort(key=attrgetter("compiles"), reverse=True)
    ordered.sort(key=_duration, reverse=True)
    ordered.sort(key=_unknown)
    return ordered


def _duration(build: Orderable) -> float:
    return build.expected_duration or 0.0


def _unknown(build: Orderable) -> bool:
    return build.expected_duration is None


def may_backfill(
    candidate: QueuedBuild,
    head: Candidate,
    running: Sequence[RunningBuild],
    limits: Limits,
    *,
    now: float,
) -> bool:
    """Whether ``candidate`` may start before ``head``, which waits for the memory limit, without delaying it.

    Conservative (EASY) backfilling: find the *shadow time*, when the running builds,
    ending as history expects, will have released enough of the memory limit for
    ``head``. The candidate may go first if history expects it to end by then, or if
    it fits beside ``head`` in what is still reserved at that time. A candidate never
    built before, or a running build whose end is unknown, allows nothing: the
    queue's order stands, and the big build at its head is never starved. Whether the
    candidate fits *now* is :func:`decide`'s question, asked separately.
    """
    limit = limits.memory_limit
    if limit is None or candidate.expected_duration is None:
        return False
    ends = sorted(((build.expected_end, build.reservation) for build in running),
                  key=lambda end: (end[0] is None, end[0] or 0.0))
    found = shadow_time(ends, sum(build.reservation for build in running), head.need, limit, now=now)
    if found is None:
        return False
    shadow, left = found
    return now + candidate.expected_duration <= shadow or left + head.need + candidate.need <= limit


def shadow_time(
    ends: Iterable[tuple[float | None, int]], reserved: int, need: int, limit: int, *, now: float
) -> tuple[float, int] | None:
    """When enough running builds will have ended for ``need`` to fit under ``limit``, and
    what they still reserve then: ``(shadow time, reserved)``. ``ends`` are the running
    builds' ``(expected end, reservation)``, earliest first, those of unknown end last;
    ``None`` if the room depends on one of those. A build past its expected end may end
    any moment: it counts as ending ``now``.
    """
    shadow = now
    for end, reservation in ends:
        if reserved + need <= limit:
            break
        if end is None:
            return None
        reserved -= reservation
        shadow = max(shadow, end)
    return shadow, reserved
