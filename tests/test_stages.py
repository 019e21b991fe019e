"""The stage abstraction with fake work: bounded threads, counts, event lines, and no exception lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from orchestrator.stages import Outcome, Stage, StageError, StageKind, StageProgress

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


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_an_exception_in_the_work_is_an_error_naming_the_item_and_the_others_go_on() -> None:
    def work(item: str) -> str:
        if item == "b":
            raise OSError(28, "No space left on device")
        return item

    recorder = Recorder()
    with recorder.stage(work) as stage:
        stage.submit("a", "b", "c")
    assert sorted(recorder.results) == ["a", "c"]
    assert [(e.stage, e.item, e.error) for e in recorder.errors] == [
        ("fake", "item b", "OSError: [Errno 28] No space left on device")]
    assert "item b: fake FAILED: OSError: [Errno 28] No space left on device" in recorder.events
    assert recorder.progress[-1] == stage.progress()
    assert stage.progress() == StageProgress(total=3, in_flight=0, done=2, failed=1, bytes_done=2)
    assert recorder.holds == 0


def test_an_exception_in_the_hand_off_is_an_error_and_the_result_is_kept() -> None:
    def hand_off(result: str) -> None:
        if result == "A":
            raise KeyError("queue gone")

    recorder = Recorder()
    with recorder.stage(str.upper, on_result=hand_off) as stage:
        stage.submit("a", "b")
    assert sorted(recorder.results) == ["A", "B"]
    assert [(e.item, e.error) for e in recorder.errors] == [("item a", "KeyError: 'queue gone'")]
    assert {"A: done", "B: done", "item a: fake FAILED: KeyError: 'queue gone'"} == set(recorder.events)
    assert recorder.holds == 0


def test_failed_results_are_counted_and_shown_but_are_not_errors() -> None:
    recorder = Recorder()
    with recorder.stage(lambda item: item) as stage:
        stage.submit("bad1", "good")
    assert stage.progress() == StageProgress(total=2, in_flight=0, done=1, failed=1, bytes_done=4)
    assert recorder.errors == [] and sorted(recorder.events) == ["bad1: done", "good: done"]


def test_at_most_max_workers_items_run_at_once() -> None:
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
        stage.submit(*"abcde")
        wait_for(lambda: stage.progress().in_flight == 2)
        assert stage.progress().total == 5 and running == 2
        go.set()
        stage.join()
        assert stage.progress().done == 5
    assert most == 2
    assert max(snapshot.in_flight for snapshot in recorder.progress) == 2


def test_cancelling_drops_the_queued_items_stops_those_in_flight_and_releases_every_hold() -> None:
    stopped = threading.Event()

    def work(item: str) -> str:
        assert stopped.wait(30)
        return item

    recorder = Recorder()
    stage = recorder.stage(work, max_workers=1, stop=stopped.set)
    stage.submit("a", "b", "c")
    assert recorder.holds == 3  # held from the submit: the scheduler must not finish before they land
    wait_for(lambda: stage.progress().in_flight == 1)
    with pytest.raises(KeyboardInterrupt):
        with stage:
            raise KeyboardInterrupt
    assert recorder.results == ["a"]
    assert recorder.holds == 0
    assert recorder.errors == []
