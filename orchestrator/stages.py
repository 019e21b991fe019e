"""A stage of a run: a bounded pool of threads that works through items, counts them and says how each ended.

Downloads and installs are stages, and so are the estimates that look into sdists
beside the builds; the builds themselves go through the scheduler, which owns
processes rather than threads. ``build`` runs its stages around the scheduler; the
``download`` and ``install`` commands run one stage each::

    submit(item) ─► pool thread: work(item) ─► result ─► results, tally, event line ─► on_result(result)
                                    │                                                        │
                                    └─ raises ─► StageError ◄─────────────── raises ─────────┘

No exception disappears with its future: one raised by the work or by the hand-off of
its result (``on_result``: queue a build, install a wheel) becomes a :class:`StageError`
naming the item, an event line, and a failed run.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from orchestrator.download.fetch import DownloadResult, DownloadStatus
from orchestrator.download.requirements import PinnedRequirement
from orchestrator.errors import OrchestratorError
from orchestrator.install import InstallResult, InstallStatus
from orchestrator.units import format_size

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one result means to its stage."""

    line: str | None
    """The event line to show; ``None`` shows nothing."""
    failed: bool = False
    """The item failed (its result says why); the run fails."""
    bytes: int = 0
    """Bytes the item brought in (a downloaded file), for the progress line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageProgress:
    """A stage's counts at one moment, for the live display and progress lines."""

    total: int
    """Items submitted so far."""
    in_flight: int
    """Items being worked on now."""
    done: int
    """Items that ended well."""
    failed: int
    """Items that failed, by their result or by an exception."""
    bytes_done: int = 0
    """Bytes the items that ended well brought in."""

    @property
    def finished(self) -> bool:
        """Every submitted item has ended."""
        return self.done + self.failed >= self.total


@dataclass(frozen=True, slots=True, kw_only=True)
class StageError:
    """An exception raised by a stage's work or by the hand-off of its result: a failure of the run, never silent."""

    stage: str
    """``download``, ``install`` or ``estimate``."""
    item: str
    """The package or file the stage was working on."""
    error: str
    """The error's own message for ours; ``Type: message`` for any other exception."""
    at: float
    """Epoch seconds."""

    @property
    def event(self) -> str:
        return f"{self.item}: {self.stage} FAILED: {self.error}"

    def to_json(self) -> dict[str, object]:
        return {"stage": self.stage, "item": self.item, "error": self.error, "at": self.at}


@dataclass(frozen=True, slots=True, kw_only=True)
class StageKind(Generic[ItemT, ResultT]):
    """How a stage names its items and reads its results."""

    name: str
    label: Callable[[ItemT], str]
    """The item as event lines and errors name it."""
    outcome: Callable[[ResultT], Outcome]


class Holder(Protocol):
    """Kept open while an item of a stage is queued or running: the build scheduler, which the item may feed."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class Stage(Generic[ItemT, ResultT]):
    """Runs ``work`` on each submitted item in at most ``max_workers`` threads; see the module docstring.

    Each result is appended to ``results`` (when given), counted, shown through
    ``on_event``, then handed to ``on_result``, all in the thread that produced it, so
    "in flight" never exceeds ``max_workers``. ``on_progress`` gets the counts as each
    item starts and ends. ``stop`` (e.g. closing a download client) ends work in
    flight at once when the stage is cancelled. Use it as a context manager: leaving
    waits for the items; leaving by an exception first drops the queued ones.
    """

    def __init__(
        self,
        kind: StageKind[ItemT, ResultT],
        work: Callable[[ItemT], ResultT],
        *,
        max_workers: int,
        errors: list[StageError],
        on_event: Callable[[str], None],
        results: list[ResultT] | None = None,
        on_result: Callable[[ResultT], None] | None = None,
        on_progress: Callable[[StageProgress], None] | None = None,
        holds: Holder | None = None,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self._kind = kind
        self._work = work
        self._errors = errors
        self._on_event = on_event
        self._results = results
        self._on_result = on_result
        self._on_progress = on_progress or (lambda progress: None)
        self._holds = holds
        self._stop = stop
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=kind.name)
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._progress = StageProgress(total=0, in_flight=0, done=0, failed=0)

    def __enter__(self) -> Stage[ItemT, ResultT]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(cancel=exc_type is not None)

    def submit(self, *items: ItemT) -> None:
        """Queue ``items``; they count in the total before any of them starts."""
        with self._lock:
            self._progress = self._count(total=len(items))
        for item in items:
            if self._holds is not None:
                self._holds.hold()
            try:
                future = self._pool.submit(self._run, item)
            except BaseException:
                if self._holds is not None:
                    self._holds.release()
                raise
            with self._lock:
                self._futures.append(future)
            future.add_done_callback(functools.partial(self._ended, item))
        self._on_progress(self.progress())

    def join(self) -> None:
        """Wait until every item submitted so far has ended."""
        with self._lock:
            futures = list(self._futures)
        wait(futures)

    def close(self, *, cancel: bool) -> None:
        """Wait for the items under way; with ``cancel``, start no more and ``stop`` those under way first."""
        if cancel:
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._stop is not None:
                self._stop()
        self._pool.shutdown(wait=True)

    def progress(self) -> StageProgress:
        with self._lock:
            return self._progress

    def _count(self, *, total: int = 0, in_flight: int = 0, done: int = 0, failed: int = 0,
               bytes_done: int = 0) -> StageProgress:
        """Move the counts (under the lock); the new snapshot."""
        now = self._progress
        return StageProgress(total=now.total + total, in_flight=now.in_flight + in_flight, done=now.done + done,
                             failed=now.failed + failed, bytes_done=now.bytes_done + bytes_done)

    def _run(self, item: ItemT) -> None:
        with self._lock:
            self._progress = started = self._count(in_flight=1)
        self._on_progress(started)
        try:
            result = self._work(item)
            outcome = self._kind.outcome(result)
        except Exception as exc:
            with self._lock:
                self._progress = ended = self._count(in_flight=-1, failed=1)
            self._fail(item, exc)
            self._on_progress(ended)
            return
        if self._results is not None:
            self._results.append(result)
        with self._lock:
            self._progress = ended = (self._count(in_flight=-1, failed=1) if outcome.failed
                                      else self._count(in_flight=-1, done=1, bytes_done=outcome.bytes))
        if outcome.line is not None:
            self._on_event(outcome.line)
        self._on_progress(ended)
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception as exc:
                self._fail(item, exc)

    def _fail(self, item: ItemT, exc: BaseException) -> None:
        logger.debug("%s of %s raised", self._kind.name, self._kind.label(item), exc_info=exc)
        message = exc.message if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
        error = StageError(stage=self._kind.name, item=self._kind.label(item), error=" ".join(message.split()),
                           at=time.time())
        self._errors.append(error)
        self._on_event(error.event)

    def _ended(self, item: ItemT, future: Future[None]) -> None:
        """Runs when an item's future ends or is cancelled: release its hold, keep what ``_run`` let through."""
        if self._holds is not None:
            self._holds.release()
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            self._fail(item, exc)


def _download_label(requirement: PinnedRequirement) -> str:
    return f"{requirement.name}-{requirement.version}" if requirement.version else requirement.name


def _download_outcome(result: DownloadResult) -> Outcome:
    label = f"{result.name}-{result.version}" if result.version else result.name
    if result.status is DownloadStatus.FAILED or result.path is None:
        return Outcome(line=f"{label}: download FAILED: {result.error}", failed=True)
    size = f" ({format_size(result.bytes)})" if result.path.is_file() else ""
    return Outcome(line=f"{label}: {result.status.value} {result.path}{size}", bytes=result.bytes)


def _install_outcome(result: InstallResult) -> Outcome:
    label = f"{result.name}-{result.version}"
    if result.status is InstallStatus.FAILED:
        return Outcome(line=f"{label}: install FAILED: {result.error}", failed=True)
    return Outcome(line=f"{label}: {result.status.value} {result.reason or ''}".rstrip())


DOWNLOADS: StageKind[PinnedRequirement, DownloadResult] = StageKind(
    name="download", label=_download_label, outcome=_download_outcome)
"""Requirements fetched into sdists."""

INSTALLS: StageKind[Path, InstallResult] = StageKind(
    name="install", label=lambda wheel: wheel.name, outcome=_install_outcome)
"""Wheel files installed into a target environment."""
