"""Scheduler logic with a fake executor, a fake probe and a fake clock: nothing is spawned or signalled.

The fakes (``fake_executor``) stand behind the scheduler's two seams; builds end
when the test says, and time moves only when the test moves it.
"""

from __future__ import annotations

import _thread
import itertools
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fake_executor import FakeClock, FakeMachine, G, M, Script, job

from orchestrator.build.ceiling import MemoryCeiling
from orchestrator.buildstate import MAX_PREPARED, MEMORY_REQUEUE_LIMIT, RunState
from orchestrator.executors import PhaseStarted
from orchestrator.jobs import BuildResult, Status, WorkerOutcome
from orchestrator.policy import admission, planning
from orchestrator.policy.admission import Limits
from orchestrator.scheduler import BuildScheduler, SchedulerSettings


def scheduler(machine: FakeMachine, script: Script, limits: Limits, clock: FakeClock | None = None,
              **settings: Any) -> BuildScheduler:
    return BuildScheduler(SchedulerSettings(**{"limits": limits, "sample_interval": 0.01, "grace": 0, **settings}),
                          probe=machine, observer=script, executor=machine, clock=clock or FakeClock())


def test_build_requeued_to_the_limit_then_runs_alone() -> None:
    # "b" keeps its memory in a server outside its process tree (a compiler cache, a
    # build daemon): its RSS stays small, so a requeue never raises its need, while
    # free memory falls under the floor each time it runs beside "a".
    machine = FakeMachine(rss={"a-1.0": G, "b-1.0": 100 * M}, available={"b-1.0": G // 2})

    def finish(key: str) -> None:
        machine.worker(key).finish(0, built=True)

    def finish_b() -> None:
        if any(worker.key == "b-1.0" for worker in machine.busy()):
            finish("b-1.0")  # wrongly started beside "a": end it now, the assertions tell
        else:
            script.on_event["b-1.0: started"] = lambda: finish("b-1.0")

    # "a" ends once "b" has been requeued to the limit; "b" ends once it has started after that.
    script, clock = Script(), FakeClock()
    script.on_event["a-1.0: started"] = lambda: clock.advance(1)  # "b" is the younger: the one to stop
    script.on_event[f"b-1.0: memory requeue {MEMORY_REQUEUE_LIMIT}"] = lambda: finish("a-1.0")
    script.on_event["a-1.0: built"] = finish_b
    limits = Limits(max_builds=2, memory_limit=4 * G, min_free_memory=G, max_load=None)
    builds = scheduler(machine, script, limits, clock)
    builds.add(job("a-1.0"), need=G, expected_duration=600.0)  # longest first: "a" is older
    builds.add(job("b-1.0"), need=200 * M)

    results = {result.name: result for result in builds.run()}

    assert results["a"].status is Status.BUILT
    assert results["b"].status is Status.BUILT
    assert results["b"].memory_requeues == MEMORY_REQUEUE_LIMIT
    assert results["b"].attempts == 1  # memory requeues are not failures
    assert results["b"].predicted_rss_bytes == limits.memory_limit  # its need is now the whole limit
    starts = script.index("b-1.0: started")
    assert len(starts) == MEMORY_REQUEUE_LIMIT + 1
    assert len(script.index("b-1.0: stopped under memory pressure")) == MEMORY_REQUEUE_LIMIT
    (alone,) = script.index(f"b-1.0: memory requeue {MEMORY_REQUEUE_LIMIT}, reached 100.0 MiB;"
                            " now needs about 4.0 GiB, and runs alone")
    # The last attempt waited for "a" to end, then ran alone to the end, though free memory
    # stayed under the floor: the last running build is never stopped.
    (a_built,) = script.index("a-1.0: built")
    assert alone < a_built < starts[-1]


def test_results_say_how_long_and_why_each_build_waited() -> None:
    machine = FakeMachine(rss={"a-1.0": G, "b-1.0": G, "c-1.0": G}, available={})
    script, clock = Script(), FakeClock()

    def a_ends_later() -> None:
        clock.advance(300)
        machine.worker("a-1.0").finish(0, built=True)

    # "b" waits for memory behind "a"; "c", behind "b" in the queue, cannot go ahead (3G + 2G > 4G).
    script.on_event["b-1.0: waiting"] = a_ends_later
    script.on_event["b-1.0: started"] = lambda: machine.worker("b-1.0").finish(0, built=True)
    script.on_event["c-1.0: started"] = lambda: machine.worker("c-1.0").finish(0, built=True)
    limits = Limits(max_builds=3, memory_limit=4 * G, min_free_memory=0, max_load=None)
    builds = scheduler(machine, script, limits, clock)
    builds.add(job("a-1.0"), need=3 * G, expected_duration=600.0)
    builds.add(job("b-1.0"), need=2 * G, expected_duration=300.0)
    builds.add(job("c-1.0"), need=2 * G, expected_duration=100.0)

    results = {result.name: result for result in builds.run()}

    assert all(result.status is Status.BUILT for result in results.values())
    assert results["a"].waited_s == 0
    assert results["a"].wait_reason is None
    b, c = results["b"], results["c"]
    assert b.waits == {"memory_limit": 300.0}
    assert b.wait_reason == "waiting: 3.0 GiB of the 4.0 GiB memory limit reserved, needs 2.0 GiB"
    assert c.waits == {"queue": 300.0}  # next in line only once "b" had started
    assert c.wait_reason is None
    record = b.to_json()
    assert record["waited_s"] == round(b.waited_s, 3)
    assert record["waits"]["memory_limit"] == round(b.waits["memory_limit"], 3)


def test_memory_requeues_leave_the_retries_to_real_failures() -> None:
    machine = FakeMachine(rss={"a-1.0": G, "b-1.0": 3 * G + G // 2}, available={})
    starts = itertools.count(1)

    def b_started() -> None:
        start = next(starts)
        if start == 2:  # after its memory requeue: killed from outside, which --retries covers
            machine.worker("b-1.0").finish(-signal.SIGKILL)
        elif start == 3:
            machine.worker("b-1.0").finish(0, built=True)

    script, clock = Script(), FakeClock()
    script.on_event["a-1.0: started"] = lambda: clock.advance(1)  # "b" is the younger: the one to stop
    script.on_event["b-1.0: started"] = b_started
    script.on_event["b-1.0: memory requeue 1"] = lambda: machine.worker("a-1.0").finish(0, built=True)
    limits = Limits(max_builds=2, memory_limit=4 * G, min_free_memory=0, max_load=None)
    builds = scheduler(machine, script, limits, clock, retries=1)
    builds.add(job("a-1.0"), need=G, expected_duration=600.0)
    builds.add(job("b-1.0"), need=200 * M)

    results = {result.name: result for result in builds.run()}

    b = results["b"]
    assert b.status is Status.BUILT
    assert b.memory_requeues == 1
    assert b.attempts == 2  # the kill and the success; the memory stop took none of the one retry
    assert script.index("b-1.0: the worker was killed by SIGKILL; retrying (1/1)")


def test_a_memory_requeue_raises_the_memory_ceiling_with_the_need() -> None:
    # "b" was made with the ceiling of its learned need of 200 MiB (200 MiB + 512 MiB of slack). Stopped
    # under memory pressure at 1000 MiB, it needs 1200 MiB: its next worker must get 1.5 x 1200 MiB.
    machine = FakeMachine(rss={"a-1.0": G, "b-1.0": 1000 * M}, available={})
    starts = itertools.count(1)
    script, clock = Script(), FakeClock()
    script.on_event["a-1.0: started"] = lambda: clock.advance(1)  # "b" is the younger: the one to stop
    script.on_event["b-1.0: memory requeue 1"] = lambda: machine.worker("a-1.0").finish(0, built=True)
    script.on_event["b-1.0: started"] = lambda: (
        machine.worker("b-1.0").finish(0, built=True) if next(starts) == 2 else None)
    limits = Limits(max_builds=2, memory_limit=3 * G // 2, min_free_memory=0, max_load=None)
    builds = scheduler(machine, script, limits, clock)
    ceiling = MemoryCeiling(parent="/sys/fs/cgroup/orchestrate-run-1", home="/sys/fs/cgroup", limit=712 * M)
    builds.add(job("a-1.0"), need=G, expected_duration=600.0)
    builds.add(replace(job("b-1.0"), memory_ceiling=ceiling), need=200 * M)

    results = {result.name: result for result in builds.run()}

    assert results["b"].status is Status.BUILT and results["b"].memory_requeues == 1
    assert results["b"].predicted_rss_bytes == 1200 * M
    staged = [worker.job for worker in machine.workers if worker.job is not None]
    assert [job.memory_ceiling for job in staged if job.key == "b-1.0"] == [ceiling, replace(ceiling, limit=1800 * M)]
    assert [job.memory_ceiling for job in staged if job.key == "a-1.0"] == [None]


# -- the core rules -----------------------------------------------------------------------

def test_queue_starts_longest_known_first_then_compiling_then_the_rest() -> None:
    machine, script = FakeMachine(), Script()
    order: list[str] = []

    def started(key: str) -> None:
        order.append(key)
        machine.worker(key).finish(0, built=True)

    for key in ("short-1.0", "long-1.0", "plain-1.0", "c-1.0"):
        script.on_event[f"{key}: started"] = lambda key=key: started(key)  # type: ignore[misc]
    builds = scheduler(machine, script, Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None))
    builds.add(job("short-1.0"), need=G, expected_duration=10.0)
    builds.add(job("plain-1.0"), need=G, size=2000)  # no history: the bigger sdist first...
    builds.add(job("c-1.0"), need=G, size=1000)
    builds.mark_compiling("c-1.0")  # ...unless the other compiles code
    builds.add(job("long-1.0"), need=G, expected_duration=100.0)

    results = builds.run()

    assert order == ["long-1.0", "short-1.0", "c-1.0", "plain-1.0"]
    assert [result.status for result in results] == [Status.BUILT] * 4
    assert machine.started and machine.closed
    assert all(worker.closed for worker in machine.workers)


def test_timeout_stops_the_build_after_its_deadline_by_the_clock() -> None:
    machine, script, clock = FakeMachine(), Script(), FakeClock()
    script.on_event["slow-1.0: started"] = lambda: clock.advance(10.5)  # the deadline passes
    script.on_event["next-1.0: started"] = lambda: machine.worker("next-1.0").finish(0, built=True)
    builds = scheduler(machine, script, Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None),
                       clock, timeout=10.0, grace=2.5)
    builds.add(job("slow-1.0"), need=G, expected_duration=100.0)
    builds.add(job("next-1.0"), need=G)

    results = {result.name: result for result in builds.run()}

    slow = results["slow"]
    assert slow.status is Status.FAILED
    assert slow.error == "timed out after 10 s"
    assert slow.wall_s == 10.5
    (stopped,) = [worker for worker in machine.workers if worker.key == "slow-1.0"]
    assert stopped.stops == [2.5]  # stopped once, with the run's grace period
    assert results["next"].status is Status.BUILT


def test_retries_cover_killed_workers_and_then_it_fails() -> None:
    machine, script = FakeMachine(), Script()
    script.on_event["victim-1.0: started"] = lambda: machine.worker("victim-1.0").finish(-signal.SIGKILL)
    builds = scheduler(machine, script, Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None),
                       retries=1)
    builds.add(job("victim-1.0"), need=G)

    (result,) = builds.run()

    assert result.status is Status.FAILED
    assert result.error == "the worker was killed by SIGKILL"
    assert result.attempts == 2
    assert script.events.count("victim-1.0: the worker was killed by SIGKILL; retrying (1/1)") == 1
    assert machine.staged == ["victim-1.0", "victim-1.0"]  # each attempt on a fresh worker


def test_a_worker_that_died_while_preparing_is_replaced() -> None:
    machine, script = FakeMachine(), Script()

    def die_and_finish_first(state: RunState) -> None:
        if not state.running:
            return
        (prepared,) = [worker for worker in machine.workers if worker.key == "second-1.0"]
        prepared.died = True  # before its build was admitted
        machine.worker("first-1.0").finish(0, built=True)
        script.on_update.clear()

    script.on_update.append(die_and_finish_first)  # the turn after "first" started and "second" was staged
    script.on_event["second-1.0: started"] = lambda: machine.worker("second-1.0").finish(0, built=True)
    builds = scheduler(machine, script, Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None))
    builds.add(job("first-1.0"), need=G, expected_duration=100.0)
    builds.add(job("second-1.0"), need=G)

    results = builds.run()

    assert [result.status for result in results] == [Status.BUILT, Status.BUILT]
    dead, fresh = [worker for worker in machine.workers if worker.key == "second-1.0"]
    assert dead.closed and not dead.admitted
    assert fresh.admitted


def test_fail_fast_drops_the_queue_and_lets_running_builds_end() -> None:
    machine, script = FakeMachine(), Script()
    script.on_event["bad-1.0: started"] = lambda: machine.worker("bad-1.0").finish(
        0, outcome=WorkerOutcome(status=Status.FAILED, error="the build backend failed (exit status 1); see the log"))
    script.on_event["--fail-fast"] = lambda: machine.worker("running-1.0").finish(0, built=True)
    builds = scheduler(machine, script, Limits(max_builds=2, memory_limit=None, min_free_memory=0, max_load=None),
                       fail_fast=True)
    builds.add(job("running-1.0"), need=G, expected_duration=100.0)
    builds.add(job("bad-1.0"), need=G, expected_duration=50.0)
    builds.add(job("later-1.0"), need=G, expected_duration=10.0)
    builds.add(job("last-1.0"), need=G)

    results = {result.name: result for result in builds.run()}

    assert results["bad"].status is Status.FAILED
    assert results["running"].status is Status.BUILT  # not stopped: it ends on its own
    for name in ("later", "last"):
        assert results[name].status is Status.NOT_STARTED
        assert results[name].error == "--fail-fast after a failure"
        assert results[name].started_at is None
    (prepared,) = [worker for worker in machine.workers if worker.key == "later-1.0"]
    assert prepared.closed and not prepared.admitted


def test_interrupt_stops_running_builds_as_stopped_and_queued_ones_as_not_started() -> None:
    machine, script = FakeMachine(), Script()
    results: list[BuildResult] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    script.on_event["b-1.0: started"] = interrupt
    limits = Limits(max_builds=2, memory_limit=None, min_free_memory=0, max_load=None)
    builds = BuildScheduler(SchedulerSettings(limits=limits, sample_interval=0.01, grace=1.5), probe=machine,
                            observer=script, executor=machine, clock=FakeClock(), on_result=results.append)
    for key, duration in (("a-1.0", 40.0), ("b-1.0", 30.0), ("c-1.0", 20.0), ("d-1.0", 10.0)):
        builds.add(job(key), need=G, expected_duration=duration)

    with pytest.raises(KeyboardInterrupt):
        builds.run()

    statuses = {result.name: (result.status, result.error) for result in results}
    assert statuses == {
        "a": (Status.STOPPED, "the run was interrupted"),
        "b": (Status.STOPPED, "the run was interrupted"),
        "c": (Status.NOT_STARTED, "the run was interrupted"),
        "d": (Status.NOT_STARTED, "the run was interrupted"),
    }
    assert "a-1.0: stopped: the run was interrupted in 0.0 s" in script.events
    assert not any("FAILED" in event for event in script.events)
    assert [worker.stops for worker in machine.workers if worker.admitted] == [[1.5], [1.5]]  # the run's grace
    assert all(worker.closed for worker in machine.workers) and machine.closed


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """SIGINT handled by Python, as in a terminal: a process started in the background inherits it ignored, and
    ``interrupt_main`` then does nothing (the test below waited forever)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint")
def test_a_second_interrupt_while_stopping_kills_at_once() -> None:
    machine, script = FakeMachine(), Script()
    machine.obey_stop = False  # the build ignores SIGTERM: stopping it would take the whole grace period

    def interrupt() -> None:
        threading.Timer(0.1, _thread.interrupt_main).start()  # the second Ctrl-C, while the run waits
        raise KeyboardInterrupt

    script.on_event["a-1.0: started"] = interrupt
    limits = Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None)
    builds = scheduler(machine, script, limits, grace=3600.0)
    builds.add(job("a-1.0"), need=G)

    with pytest.raises(KeyboardInterrupt):
        builds.run()

    (worker,) = machine.workers
    assert worker.stops == [3600.0] and worker.killed and worker.closed


# -- workers started ahead ------------------------------------------------------------------

def finish_on_start(machine: FakeMachine, script: Script, *keys: str) -> None:
    for key in keys:
        script.on_event[f"{key}: started"] = lambda key=key: machine.worker(key).finish(0, built=True)  # type: ignore[misc]


def test_a_build_prepared_ahead_keeps_its_worker_when_another_goes_first() -> None:
    machine, script = FakeMachine(), Script()
    unlimited = Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None)
    builds = scheduler(machine, script, unlimited)

    def a_started() -> None:
        # While "a" runs, "b" (the head) is prepared ahead; then "c" arrives and, longer, goes first.
        builds.add(job("c-1.0"), need=G, expected_duration=300.0)
        machine.worker("a-1.0").finish(0, built=True)

    script.on_event["a-1.0: started"] = a_started
    finish_on_start(machine, script, "b-1.0", "c-1.0")
    builds.add(job("a-1.0"), need=G, expected_duration=600.0)
    builds.add(job("b-1.0"), need=G)

    results = builds.run()

    assert [result.name for result in results] == ["a", "c", "b"]
    assert machine.staged == ["a-1.0", "b-1.0", "c-1.0"]  # "b" prepared once, not again after "c" went first
    (b_worker,) = [worker for worker in machine.workers if worker.key == "b-1.0"]
    assert b_worker.admitted
    assert all(worker.admitted for worker in machine.workers)  # no preparation thrown away


def test_workers_prepare_at_most_a_few_builds_ahead() -> None:
    machine, script = FakeMachine(), Script()
    unlimited = Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None)
    builds = scheduler(machine, script, unlimited)
    # Each build, as it starts, brings two longer ones that go ahead of every build queued.
    arrivals = {"a-1.0": (("c-1.0", 300.0), ("d-1.0", 250.0)), "c-1.0": (("e-1.0", 400.0), ("f-1.0", 350.0))}
    preparing: list[int] = []

    def started(key: str) -> None:
        for new, duration in arrivals.get(key, ()):
            builds.add(job(new), need=G, expected_duration=duration)
        machine.worker(key).finish(0, built=True)

    def count_preparing(state: RunState) -> None:
        preparing.append(sum(1 for worker in machine.workers
                             if worker.job is not None and not worker.admitted and not worker.closed))

    for key in ("a-1.0", "b-1.0", "c-1.0", "d-1.0", "e-1.0", "f-1.0"):
        script.on_event[f"{key}: started"] = lambda key=key: started(key)  # type: ignore[misc]
    script.on_update.append(count_preparing)
    builds.add(job("a-1.0"), need=G, expected_duration=600.0)
    builds.add(job("b-1.0"), need=G)

    results = builds.run()

    assert [result.name for result in results] == ["a", "c", "e", "f", "d", "b"]
    assert max(preparing) == MAX_PREPARED == 2
    assert sorted(machine.staged) == ["a-1.0", "b-1.0", "c-1.0", "d-1.0", "e-1.0", "f-1.0"]  # each once
    assert all(worker.admitted for worker in machine.workers)


def test_each_wait_is_announced_once_per_build_and_rule() -> None:
    # "b" waits for memory behind "a"; "c" arrives, goes ahead of it (backfill), so "b" waits for a
    # slot; when "c" ends, "b" waits for memory again, with the very same figures: said once only.
    machine, script = FakeMachine(), Script()
    limits = Limits(max_builds=2, memory_limit=4 * G, min_free_memory=0, max_load=None)
    builds = scheduler(machine, script, limits)
    memory_wait = "b-1.0: waiting: 3.0 GiB of the 4.0 GiB memory limit reserved, needs 2.0 GiB"
    turns_since_c_built: list[int] = []

    def after_c_built(state: RunState) -> None:
        turns_since_c_built.append(1)
        if len(turns_since_c_built) == 2:  # "b" has been refused again, for memory, in between
            machine.worker("a-1.0").finish(0, built=True)

    def c_arrives() -> None:
        del script.on_event[memory_wait]
        builds.add(job("c-1.0"), need=G, expected_duration=10.0)

    script.on_event[memory_wait] = c_arrives
    script.on_event["b-1.0: waiting: 2 of 2 builds running"] = lambda: machine.worker("c-1.0").finish(0, built=True)
    script.on_event["c-1.0: built"] = lambda: script.on_update.append(after_c_built)
    finish_on_start(machine, script, "b-1.0")
    builds.add(job("a-1.0"), need=3 * G, expected_duration=600.0)
    builds.add(job("b-1.0"), need=2 * G, expected_duration=300.0)

    results = builds.run()

    assert [result.status for result in results] == [Status.BUILT] * 3
    assert script.index("c-1.0: starting ahead of b-1.0")
    waits = [event for event in script.events if event.startswith("b-1.0: waiting")]
    assert waits == [memory_wait, "b-1.0: waiting: 2 of 2 builds running"]


@pytest.mark.parametrize(("memory_limit", "replans"), [(64 * G, False), (3 * G, True)])
def test_the_queue_is_planned_again_as_builds_end_only_when_memory_may_hold_one_back(
    monkeypatch: pytest.MonkeyPatch, memory_limit: int, replans: bool
) -> None:
    """Planning after each of thousands of small builds cost more than the builds themselves."""
    made: list[int] = []
    plan_order = planning.plan_order

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return plan_order(*args, **kwargs)

    monkeypatch.setattr(planning, "plan_order", counted)
    machine, script = FakeMachine(), Script()
    keys = [f"b{i}-1.0" for i in range(8)]
    finish_on_start(machine, script, *keys)
    builds = scheduler(machine, script, Limits(max_builds=2, memory_limit=memory_limit, min_free_memory=0,
                                                max_load=None))
    for key in keys:
        builds.add(job(key), need=2 * G, expected_duration=5.0)

    results = builds.run()

    assert [result.status for result in results] == [Status.BUILT] * 8
    # Queued at once: one plan. Under a limit two builds reach (2 + 2 > 3 GiB), a plan as each ends as well,
    # while two of known duration are left to order.
    assert len(made) > 5 if replans else len(made) == 1


def test_a_running_builds_phases_at_the_count_cap_decide_nothing_again(monkeypatch: pytest.MonkeyPatch) -> None:
    decisions: list[str] = []
    real_decide = admission.decide

    def counted(candidate: Any, *args: Any) -> Any:
        decisions.append(candidate.key)
        return real_decide(candidate, *args)

    monkeypatch.setattr(admission, "decide", counted)
    machine, script, clock = FakeMachine(), Script(), FakeClock()
    steps = iter(["get_requires", "backend", "publish", "end"])

    def next_step(state: RunState) -> None:  # at each loop turn while "b" waits: 10 s, then a phase of "a" or its end
        if state.pending == 1 and state.running and (step := next(steps, None)) is not None:
            clock.advance(10)
            if step == "end":
                machine.worker("a-1.0").finish(0, built=True)
            else:
                machine.sink(PhaseStarted("a-1.0", step))

    script.on_update.append(next_step)
    script.on_event["b-1.0: started"] = lambda: machine.worker("b-1.0").finish(0, built=True)
    builds = scheduler(machine, script, Limits(max_builds=1, memory_limit=None, min_free_memory=0, max_load=None),
                       clock)
    builds.add(job("a-1.0"), need=G, expected_duration=60.0)
    builds.add(job("b-1.0"), need=G, expected_duration=30.0)

    results = {result.name: result for result in builds.run()}

    assert decisions == ["a-1.0", "b-1.0", "b-1.0"]  # a starts; b is held by the cap once, then starts
    assert results["b"].waits == {"builds": 40.0}  # every second of its wait, to the count cap
    assert results["b"].wait_reason == "waiting: 1 of 1 builds running"
    assert [event for event in script.events if event.startswith("b-1.0: waiting")] == [
        "b-1.0: waiting: 1 of 1 builds running"]
