"""A stage of a run: a bounded pool of threads that works through items, counts them and says how each ended.

Downloads and installs are stages, and so are the estimates that look into sdists
beside the builds; the builds themselves go through the scheduler, which owns
processes rather than threads. ``build`` runs its stages around the scheduler; the
``download`` and ``install`` commands run one stage each, and the library calls
``download_all`` and ``install_all`` one each through :func:`run_all`::

    submit(item) ─► pool thread: work(item) ─► result ─► results, tally, event line ─► on_result(result)
                                    │                                                        │
                                    └─ raises ─► StageError ◄─────────────── raises ─────────┘

Items go in with :meth:`Stage.submit`, a future each (what the library calls wait on),
or with :meth:`Stage.feed`, which keeps them as they are until a thread is free: a future
(its lock and condition, its callback) is about 2 KB, and a run queues thousands of
estimates and pins. No exception disappears with its future: one raised by the work or by the hand-off of
its result (``on_result``: queue a build, install a wheel) becomes a :class:`StageError`
naming the item, an event line, and a failed run. Each stage's kind (how it names
items and reads results) lives with its stage: ``download.results.DOWNLOADS``,
``install.results.INSTALLS``; this module imports neither, so both can use it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from orchestrator.errors import OrchestratorError

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
ResultContra = TypeVar("ResultContra", contravariant=True)


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


class StageFailed(OrchestratorError):
    """What :func:`run_all` raises when the work on an item raised: the :class:`StageError`'s event line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageKind(Generic[ItemT, ResultT]):
    """How a stage names its items and reads its results."""

    name: str
    label: Callable[[ItemT], str]
    """The item as event lines and errors name it."""
    outcome: Callable[[ResultT], Outcome]


class Results(Protocol[ResultContra]):
    """Where a stage's results go as they end (the run report's records, from the stage's threads)."""

    def append(self, result: ResultContra, /) -> None: ...


class Holder(Protocol):
    """Kept open while an item of a stage is queued or running: the build scheduler, which the item may feed."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class Stage(Generic[ItemT, ResultT]):
    """Runs ``work`` on each submitted item in at most ``max_workers`` threads; see the module docstring.

    Each result is appended to ``results`` (when given), counted, shown through
    ``on_event``, then handed to ``on_result``, all in the thread that produced it, so
    "in flight" never exceeds ``max_workers``. ``on_progress`` gets the counts as items
    are submitted, start and end, in the order the counts moved (the last call has the
    final counts). ``stop`` (e.g. closing a download client) ends work in flight at
    once when the stage is cancelled. Use it as a context manager: leaving waits for
    the items; leaving by an exception first drops the queued ones.
    """

    def __init__(
        self,
        kind: StageKind[ItemT, ResultT],
        work: Callable[[ItemT], ResultT],
        *,
        max_workers: int,
        errors: list[StageError],
        on_event: Callable[[str], None],
        results: Results[ResultT] | None = None,
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
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        """Notified as the last unfinished item ends."""
        self._unfinished = 0
        """Items submitted or fed that have not ended (nor been dropped)."""
        self._backlog: deque[ItemT] = deque()
        """Fed items not yet in the pool."""
        self._feeders = 0
        """Threads of the pool taking fed items from the backlog, one after another (at most ``max_workers``)."""
        self._closing = False
        """Cancelled: the backlog was dropped, and the feeders take no more."""
        # Held from moving the counts until they are reported, so reports leave in order;
        # apart from _lock, so that on_progress may read progress().
        self._reporting = threading.Lock()
        # Only those not ended: an ended future refers back to the stage (its callback), and
        # that cycle would keep the work (an installer and its compilers) alive past the call.
        self._futures: set[Future[ResultT]] = set()
        self._progress = StageProgress(total=0, in_flight=0, done=0, failed=0)

    def __enter__(self) -> Stage[ItemT, ResultT]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(cancel=exc_type is not None)

    def submit(self, *items: ItemT) -> list[Future[ResultT]]:
        """Queue ``items``, counted in the total (and reported) before any of them starts; their futures.

        A future's result is its item's result; an item whose work raised ends with :class:`StageFailed`.
        """
        self._move(total=len(items))
        futures = []
        for item in items:
            if self._holds is not None:
                self._holds.hold()
            with self._lock:
                self._unfinished += 1
            try:
                future = self._pool.submit(self._run, item)
            except BaseException:
                self._finished()
                raise
            with self._lock:
                self._futures.add(future)
            future.add_done_callback(functools.partial(self._ended, item))
            futures.append(future)
        return futures

    def feed(self, *items: ItemT) -> None:
        """Queue ``items`` as :meth:`submit` does, but without a future each: they wait here as they are, and
        enter the pool as a thread frees (:meth:`join` waits for them; their results go where every result goes).
        """
        self._move(total=len(items))
        for _ in items:
            if self._holds is not None:
                self._holds.hold()
        with self._lock:  # held across the submits: close() drops the backlog and shuts the pool after them
            self._unfinished += len(items)
            self._backlog.extend(items)
            while not self._closing and self._feeders < min(self._max_workers, len(self._backlog)):
                self._pool.submit(self._feed_from_backlog)
                self._feeders += 1

    def join(self) -> None:
        """Wait until every item submitted or fed so far has ended."""
        with self._idle:
            self._idle.wait_for(lambda: self._unfinished == 0)

    def close(self, *, cancel: bool) -> None:
        """Wait for the items under way; with ``cancel``, start no more and ``stop`` those under way first."""
        if cancel:
            with self._lock:
                self._closing = True
                dropped, self._backlog = self._backlog, deque()
            for _ in dropped:
                self._finished()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._stop is not None:
                self._stop()
        else:
            self.join()  # the backlog enters the pool as items end: it must be empty before the pool shuts
        self._pool.shutdown(wait=True)

    def progress(self) -> StageProgress:
        with self._lock:
            return self._progress

    def _move(self, *, total: int = 0, in_flight: int = 0, done: int = 0, failed: int = 0, bytes_done: int = 0,
              line: str | None = None) -> None:
        """Move the counts, show ``line`` (when given), then report the counts."""
        with self._reporting:
            with self._lock:
                now = self._progress
                self._progress = moved = StageProgress(
                    total=now.total + total, in_flight=now.in_flight + in_flight, done=now.done + done,
                    failed=now.failed + failed, bytes_done=now.bytes_done + bytes_done)
            if line is not None:
                self._on_event(line)
            self._on_progress(moved)

    def _run(self, item: ItemT) -> ResultT:
        self._move(in_flight=1)
        try:
            result = self._work(item)
            outcome = self._kind.outcome(result)
        except Exception as exc:
            error = self._error(item, exc)
            self._move(in_flight=-1, failed=1, line=error.event)
            raise StageFailed(error.event) from exc
        if self._results is not None:
            self._results.append(result)
        if outcome.failed:
            self._move(in_flight=-1, failed=1, line=outcome.line)
        else:
            self._move(in_flight=-1, done=1, bytes_done=outcome.bytes, line=outcome.line)
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception as exc:
                self._on_event(self._error(item, exc).event)
        return result

    def _error(self, item: ItemT, exc: BaseException) -> StageError:
        """Record ``exc``, raised while working on ``item``, as an error of the run; the caller shows its event."""
        logger.debug("%s of %s raised", self._kind.name, self._kind.label(item), exc_info=exc)
        message = exc.message if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
        error = StageError(stage=self._kind.name, item=self._kind.label(item), error=" ".join(message.split()),
                           at=time.time())
        self._errors.append(error)
        return error

    def _feed_from_backlog(self) -> None:
        """In a thread of the pool: work on fed items, one after another, until the backlog is empty."""
        while True:
            with self._lock:
                if self._closing or not self._backlog:
                    self._feeders -= 1
                    return
                item = self._backlog.popleft()
            try:
                self._run(item)
            except StageFailed:
                pass  # recorded and shown by _run
            except Exception as exc:  # noqa: BLE001 - as _ended does for a submitted item's future
                self._on_event(self._error(item, exc).event)
            finally:
                self._finished()

    def _ended(self, item: ItemT, future: Future[ResultT]) -> None:
        """Runs when an item's future ends or is cancelled: release its hold, keep what ``_run`` let through."""
        with self._lock:
            self._futures.discard(future)
        exc = None if future.cancelled() else future.exception()
        if exc is not None and not isinstance(exc, StageFailed):
            self._on_event(self._error(item, exc).event)
        self._finished()

    def _finished(self) -> None:
        """An item ended, was cancelled or dropped: release its hold, count it out."""
        if self._holds is not None:
            self._holds.release()
        with self._lock:
            self._unfinished -= 1
            if not self._unfinished:
                self._idle.notify_all()


def run_all(
    kind: StageKind[ItemT, ResultT],
    work: Callable[[ItemT], ResultT],
    items: Sequence[ItemT],
    *,
    max_workers: int,
    on_result: Callable[[ResultT], None] | None = None,
    on_progress: Callable[[StageProgress], None] | None = None,
    stop: Callable[[], None] | None = None,
) -> list[ResultT]:
    """Run ``work`` on every item in a :class:`Stage` of ``max_workers`` threads; the results in the order of ``items``.

    The stage of a library call (``download_all``, ``install_all``): ``on_result`` is
    called in this thread as each item ends, the event lines go to the debug log, and
    an item whose work raised raises :class:`StageFailed` here. That, an exception of
    ``on_result`` or an interrupt starts no more items, calls ``stop`` (to end those in
    flight) and waits for those under way, handing each that ends with a result to
    ``on_result``, before it propagates.
    """
    stage = Stage(kind, work, max_workers=max_workers, errors=[], on_event=logger.debug, on_progress=on_progress,
                  stop=stop)
    futures: list[Future[ResultT]] = []
    handed: set[Future[ResultT]] = set()
    try:
        futures = stage.submit(*items)
        for future in as_completed(futures):
            result = future.result()
            handed.add(future)
            if on_result is not None:
                on_result(result)
    except BaseException:
        stage.close(cancel=True)
        for future in futures:
            if on_result is not None and future not in handed and not future.cancelled() and not future.exception():
                on_result(future.result())
        raise
    stage.close(cancel=False)
    return [future.result() for future in futures]
