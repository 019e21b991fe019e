"""The stage abstraction with fake work: bounded threads, counts, event lines, and no exception lost."""

from __future__ import annotations

import struct
import threading
import time
import tracemalloc
from collections.abc import Callable

import pytest

from orchestrator.stages import (
    Outcome,
    Stage,
    StageError,
    StageFailed,
    StageKind,
    StageProgress,
    run_all,
)

KIND: StageKind[str, str] = StageKind(
    name="fake", label=lambda item: f"item {item}",
    outcome=lambda result: Outcome(line=f"{result}: done", failed=result.startswith("bad"), bytes=len(result)))


class Recorder:
    """The observer and the holder a stage talks to."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.progress: list[StageProgress] = []
        self.errors: list[StageError] = []
        self.results: list[str] = []
        self.holds = 0
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self.holds += 1

    def release(self) -> None:
        with self._lock:
            self.holds -= 1

    def stage(self, work: Callable[[str], str], *, max_workers: int = 2, on_result: Callable[[str], None] | None = None,
              stop: Callable[[], None] | None = None) -> Stage[str, str]:
        return Stage(KIND, work, max_workers=max_workers, errors=self.errors, on_event=self.events.append,
                     results=self.results, on_result=on_result, on_progress=self.progress.append, holds=self,
                     stop=stop)


BOTH = pytest.mark.parametrize("queue", ["submit", "feed"])
"""Each way of queueing items: a future each, or as they are (``Stage.feed``)."""


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


@BOTH
def test_an_exception_in_the_work_is_an_error_naming_the_item_and_the_others_go_on(queue: str) -> None:
    def work(item: str) -> str:
        if item == "b":
            raise OSError(28, "No space left on device")
        return item

    recorder = Recorder()
    with recorder.stage(work) as stage:
        getattr(stage, queue)("a", "b", "c")
    assert sorted(recorder.results) == ["a", "c"]
    assert [(e.stage, e.item, e.error) for e in recorder.errors] == [
        ("fake", "item b", "OSError: [Errno 28] No space left on device")]
    assert "item b: fake FAILED: OSError: [Errno 28] No space left on device" in recorder.events
    assert recorder.progress[-1] == stage.progress()
    assert stage.progress() == StageProgress(total=3, in_flight=0, done=2, failed=1, bytes_done=2)
    assert recorder.holds == 0


@BOTH
def test_an_exception_in_the_hand_off_is_an_error_and_the_result_is_kept(queue: str) -> None:
    def hand_off(result: str) -> None:
        if result == "A":
            raise KeyError("queue gone")

    recorder = Recorder()
    with recorder.stage(str.upper, on_result=hand_off) as stage:
        getattr(stage, queue)("a", "b")
    assert sorted(recorder.results) == ["A", "B"]
    assert [(e.item, e.error) for e in recorder.errors] == [("item a", "KeyError: 'queue gone'")]
    assert {"A: done", "B: done", "item a: fake FAILED: KeyError: 'queue gone'"} == set(recorder.events)
    assert recorder.holds == 0


@BOTH
def test_failed_results_are_counted_and_shown_but_are_not_errors(queue: str) -> None:
    recorder = Recorder()
    with recorder.stage(lambda item: item) as stage:
        getattr(stage, queue)("bad1", "good")
    assert stage.progress() == StageProgress(total=2, in_flight=0, done=1, failed=1, bytes_done=4)
    assert recorder.errors == [] and sorted(recorder.events) == ["bad1: done", "good: done"]


@BOTH
def test_at_most_max_workers_items_run_at_once(queue: str) -> None:
    running, most = 0, 0
    lock = threading.Lock()
    go = threading.Event()

    def work(item: str) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        go.wait(30)
        with lock:
            running -= 1
        return item

    recorder = Recorder()
    with recorder.stage(work, max_workers=2) as stage:
        getattr(stage, queue)(*"abcde")
        wait_for(lambda: stage.progress().in_flight == 2)
        assert stage.progress().total == 5 and running == 2
        go.set()
        stage.join()
        assert stage.progress().done == 5
    assert most == 2
    assert max(snapshot.in_flight for snapshot in recorder.progress) == 2


@BOTH
def test_cancelling_drops_the_queued_items_stops_those_in_flight_and_releases_every_hold(queue: str) -> None:
    stopped = threading.Event()

    def work(item: str) -> str:
        assert stopped.wait(30)
        return item

    recorder = Recorder()
    stage = recorder.stage(work, max_workers=1, stop=stopped.set)
    getattr(stage, queue)("a", "b", "c")
    assert recorder.holds == 3  # held from the submit: the scheduler must not finish before they land
    wait_for(lambda: stage.progress().in_flight == 1)
    with pytest.raises(KeyboardInterrupt):
        with stage:
            raise KeyboardInterrupt
    assert recorder.results == ["a"]
    assert recorder.holds == 0
    assert recorder.errors == []


def test_fed_items_wait_as_they_are_not_as_futures() -> None:
    # A queue of thousands (estimates, pins to fetch) must cost about what a list of them does: eight pointers
    # an item is the bound, where a future each (its lock, its condition, its callback) was about 2 KB.
    count, go = 5000, threading.Event()
    items = [f"item-{index}" for index in range(count)]
    recorder = Recorder()
    with recorder.stage(lambda item: item if go.wait(30) else "", max_workers=1) as stage:
        stage.feed(items[0])
        wait_for(lambda: stage.progress().in_flight == 1)  # the pool's thread has started, and waits
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            stage.feed(*items[1:])
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        go.set()
    assert grown < count * 8 * struct.calcsize("P"), grown
    assert sorted(recorder.results) == sorted(items) and recorder.holds == 0


def test_the_first_report_is_the_total_before_any_item_starts() -> None:
    started = threading.Event()

    class HoldsUntilTheFirstStarts(Recorder):
        def hold(self) -> None:
            super().hold()
            if self.holds == 2:  # the first item has been queued: let it start before the second is
                assert started.wait(30)

    def work(item: str) -> str:
        started.set()
        return item

    recorder = HoldsUntilTheFirstStarts()
    with recorder.stage(work, max_workers=1) as stage:
        stage.submit("a", "b")
    assert recorder.progress[0] == StageProgress(total=2, in_flight=0, done=0, failed=0)
    assert len(recorder.progress) == 1 + 2 + 2  # the submit, then each item's start and end


def test_progress_is_reported_in_the_order_the_counts_moved() -> None:
    both_running = threading.Barrier(2)
    slowed = threading.Event()
    seen: list[StageProgress] = []

    def on_progress(progress: StageProgress) -> None:
        if progress.done == 1 and not slowed.is_set():
            slowed.set()
            time.sleep(0.3)  # the other item ends meanwhile; its counts must not be reported before these
        seen.append(progress)

    def work(item: str) -> str:
        both_running.wait(30)
        return item

    with Stage(KIND, work, max_workers=2, errors=[], on_event=lambda line: None, on_progress=on_progress) as stage:
        stage.submit("a", "b")
    assert [snapshot.done for snapshot in seen] == [0, 0, 0, 1, 2]
    assert seen[-1] == stage.progress() == StageProgress(total=2, in_flight=0, done=2, failed=0, bytes_done=2)


def test_run_all_hands_each_result_to_the_calling_thread_as_it_ends_and_returns_them_in_order() -> None:
    b_handed = threading.Event()
    handed: list[tuple[str, threading.Thread]] = []

    def work(item: str) -> str:
        if item == "a":
            assert b_handed.wait(30)
        return item.upper()

    def on_result(result: str) -> None:
        handed.append((result, threading.current_thread()))
        if result == "B":
            b_handed.set()

    assert run_all(KIND, work, ["a", "b"], max_workers=2, on_result=on_result) == ["A", "B"]
    assert handed == [("B", threading.current_thread()), ("A", threading.current_thread())]


def test_run_all_raises_what_the_work_raised_naming_the_item_and_starts_no_more() -> None:
    stopped = threading.Event()
    started: list[str] = []

    def work(item: str) -> str:
        started.append(item)
        if item == "b":
            raise OSError(28, "No space left on device")
        if item != "a":
            assert stopped.wait(30)  # in flight until stopped
        return item

    with pytest.raises(StageFailed, match=r"^item b: fake FAILED: OSError: \[Errno 28\] No space left on device$"):
        run_all(KIND, work, ["a", "b", "c", "d"], max_workers=1, stop=stopped.set)
    assert stopped.is_set()
    assert "d" not in started


def test_run_all_interrupted_starts_no_more_stops_those_in_flight_and_hands_over_those_that_end() -> None:
    stopped = threading.Event()
    started: list[str] = []
    handed: list[str] = []

    def work(item: str) -> str:
        started.append(item)
        if item != "a":
            assert stopped.wait(30)  # in flight until stopped
        return item

    def on_result(result: str) -> None:
        handed.append(result)
        if result == "a":
            wait_for(lambda: len(started) == 3)  # the thread "a" freed has taken "c"
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_all(KIND, work, ["a", "b", "c", "d"], max_workers=2, on_result=on_result, stop=stopped.set)
    assert started == ["a", "b", "c"]
    assert handed == ["a", "b", "c"]
