"""The planner: its model of the scheduler, and the orders it picks."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from orchestrator.policy.admission import (
    Candidate,
    Limits,
    QueuedBuild,
    Readings,
    RunningBuild,
    decide,
    may_backfill,
    order_queue,
)
from orchestrator.policy.planning import GAIN, ends_matter, plan_order, simulate

G = 1024**3
PLENTY = Readings(total_memory=1 << 50, available_memory=1 << 50, load_1m=None, cpu_count=64)


def limits(memory_limit: int | None = 8 * G, max_builds: int = 4) -> Limits:
    return Limits(max_builds=max_builds, memory_limit=memory_limit, min_free_memory=0, max_load=None)


def queued(key: str, gib: float, seconds: float | None) -> QueuedBuild:
    return QueuedBuild(key=key, need=int(gib * G), expected_duration=seconds)


def reference(order: Sequence[QueuedBuild], policy: Limits, *, now: float) -> float:
    """The scheduler's loop, step by step with ``decide`` and ``may_backfill``, every build on time."""
    pending, start = list(order), now
    running: list[tuple[QueuedBuild, float, float]] = []
    while pending or running:
        while pending:
            view = [RunningBuild(key=build.key, need=build.need, rss=0, started_at=begin, expected_end=end)
                    for build, begin, end in running]
            head = Candidate(key=pending[0].key, need=pending[0].need)
            decision = decide(head, PLENTY, view, policy)
            if decision.admit:
                index: int | None = 0
            elif decision.blocked_by == "memory_limit":
                index = next((i for i, build in enumerate(pending[1:], start=1)
                              if may_backfill(build, head, view, policy, now=now)
                              and decide(Candidate(key=build.key, need=build.need), PLENTY, view, policy).admit),
                             None)
            else:
                index = None
            if index is None:
                break
            build = pending.pop(index)
            running.append((build, now, now + (build.expected_duration or 0.0)))
        if not running:
            break
        now = min(end for _, _, end in running)
        running = [entry for entry in running if entry[2] > now]
    return now - start


jobs = st.lists(
    st.tuples(st.floats(min_value=0.1, max_value=6), st.floats(min_value=0.5, max_value=60)),
    min_size=1, max_size=9,
)


@given(jobs, st.integers(min_value=1, max_value=6), st.sampled_from([0.0, 1.8e9]))
# Three builds end at once; the scheduler sees them all gone before it looks again.
@example([(1.0, 1.0), (2.0, 1.0), (4.5, 2.0), (2.0, 1.0), (1.5, 2.0), (0.5, 1.0), (1.0, 1.0)], 4, 0.0)
def test_simulate_follows_the_scheduler(specs: list[tuple[float, float]], max_builds: int, now: float) -> None:
    order = [queued(f"b{i}", gib, seconds) for i, (gib, seconds) in enumerate(specs)]
    policy = limits(max_builds=max_builds)
    assert abs(simulate(order, [], policy, now=now) - reference(order, policy, now=now)) < 1e-6


def test_simulate_counts_running_builds() -> None:
    # 6G runs until t=15; at now=10 a 4G build must wait for it, then take 3 s.
    running = [RunningBuild(key="r", need=6 * G, rss=0, started_at=0.0, expected_end=15.0)]
    assert simulate([queued("q", 4, 3.0)], running, limits(), now=10.0) == 8.0
    # A running build past its expected end is taken to end now.
    late = [RunningBuild(key="r", need=6 * G, rss=0, started_at=0.0, expected_end=5.0)]
    assert simulate([queued("q", 4, 3.0)], late, limits(), now=10.0) == 3.0


def test_plan_beats_longest_first() -> None:
    queue = [queued("long-small", 2, 10.0), queued("big-a", 6, 9.0), queued("big-b", 6, 9.0),
             queued("small-a", 2, 8.0), queued("small-b", 2, 8.0)]
    longest = order_queue(queue)
    assert [build.key for build in longest] == ["long-small", "big-a", "big-b", "small-a", "small-b"]
    assert simulate(longest, [], limits(), now=0.0) == 26.0
    plan = plan_order(queue, [], limits(), now=100.0)
    assert simulate(plan, [], limits(), now=100.0) == 25.0
    # Planned again, the order stands.
    assert plan_order(plan, [], limits(), now=100.0) == plan


@given(jobs, st.integers(min_value=1, max_value=6))
def test_plan_is_never_worse_than_the_queue_or_longest_first(
    specs: list[tuple[float, float]], max_builds: int
) -> None:
    queue = [queued(f"b{i}", gib, seconds) for i, (gib, seconds) in enumerate(specs)]
    policy = limits(max_builds=max_builds)
    plan = plan_order(queue, [], policy, now=5.0)
    assert sorted(build.key for build in plan) == sorted(build.key for build in queue)
    planned = simulate(plan, [], policy, now=5.0)
    assert planned <= simulate(queue, [], policy, now=5.0) + 1e-9
    # It keeps the queue's order unless another ends GAIN sooner.
    assert planned <= simulate(order_queue(queue), [], policy, now=5.0) / (1 - GAIN) + 1e-9


def test_unknown_durations_come_last_and_no_limit_means_longest_first() -> None:
    queue = [queued("new", 1, None), queued("short", 1, 1.0), queued("long", 7, 9.0), queued("mid", 7, 5.0)]
    plan = plan_order(queue, [], limits(), now=0.0)
    assert plan[-1].key == "new"
    assert [build.key for build in plan_order(queue, [], limits(memory_limit=None), now=0.0)] == [
        "long", "mid", "short", "new"]


def running(key: str, gib: float) -> RunningBuild:
    return RunningBuild(key=key, need=int(gib * G), rss=0, started_at=0.0, expected_end=10.0)


@pytest.mark.parametrize(("queue", "now_running", "policy", "expected"), [
    # 4 builds at once, 8 GiB: the four largest needs (2+2+2+1) fit, so memory never holds one back.
    ([queued("a", 2, 5.0), queued("b", 2, 5.0), queued("c", 2, 5.0), queued("d", 1, 5.0)], [], limits(), False),
    # 3+2+2+2 > 8: the order decides how they pack.
    ([queued("a", 3, 5.0), queued("b", 2, 5.0), queued("c", 2, 5.0), queued("d", 2, 5.0)], [], limits(), True),
    # A running build's reservation counts with the queue's needs.
    ([queued("a", 2, 5.0), queued("b", 2, 5.0)], [running("r", 5)], limits(), True),
    # Fewer than two durations known: nothing is simulated.
    ([queued("a", 6, 5.0), queued("b", 6, None)], [], limits(), False),
    # No memory limit: nothing to pack.
    ([queued("a", 6, 5.0), queued("b", 6, 5.0)], [], limits(memory_limit=None), False),
    # Only max_builds run at once: two of 5 GiB never run beside each other with one slot.
    ([queued("a", 5, 5.0), queued("b", 5, 5.0)], [], limits(max_builds=1), False),
])
def test_ends_matter_only_when_the_memory_limit_may_hold_a_build_back(
    queue: list[QueuedBuild], now_running: list[RunningBuild], policy: Limits, expected: bool
) -> None:
    assert ends_matter(queue, now_running, policy) is expected


def test_an_order_that_only_rounds_lower_does_not_replace_longest_first() -> None:
    """The expected durations of an upgrade night's ten builds (seconds, as predicted): longest first packs
    them perfectly on two slots, 26.85 s. An order that puts pyyaml, 11.2 s, last simulates to the same end,
    26.849999999999998 s by the order of the float additions: it must not win on that, or the longest
    build starts last and any overrun of its estimate ends the run alone."""
    expected = {"bitarray": 5.7, "frozenlist": 1.58, "kiwisolver": 2.84, "markupsafe": 0.42, "msgpack": 8.15,
                "multidict": 6.89, "psutil": 2.59, "pyyaml": 11.2, "regex": 11.25, "simplejson": 3.06}
    queue = [queued(name, 1, seconds) for name, seconds in expected.items()]
    plan = plan_order(queue, [], limits(max_builds=2), now=0.0)
    assert [build.key for build in plan] == [build.key for build in order_queue(queue)]


def test_of_two_orders_that_end_together_the_one_an_overrun_delays_least_wins() -> None:
    """Three 2 s builds and one of 4 s on two slots end at 6 s in either order; started last, the 4 s build
    ends the run alone if it overruns its estimate (the queue's order), started first it does not."""
    queue = [queued("a", 1, 2.0), queued("b", 1, 2.0), queued("c", 1, 2.0), queued("long", 1, 4.0)]
    assert simulate(queue, [], limits(max_builds=2), now=0.0) == simulate(order_queue(queue), [], limits(max_builds=2),
                                                                         now=0.0) == 6.0
    plan = plan_order(queue, [], limits(max_builds=2), now=0.0)
    assert plan[0].key == "long"
    assert plan_order(plan, [], limits(max_builds=2), now=0.0) == plan  # and it stands


def test_a_plan_barely_sooner_on_paper_does_not_start_the_longest_build_late() -> None:
    """An upgrade night's predictions (seconds): an order starting kiwisolver, frozenlist, msgpack and
    markupsafe before regex simulates 0.4% sooner than longest first, and leaves regex, 30.5 s, and
    multidict later; any overrun of theirs ends the run later. The plan starts regex first."""
    expected = {"bitarray": 10.4, "frozenlist": 4.4, "kiwisolver": 3.0, "markupsafe": 0.4, "msgpack": 19.9,
                "multidict": 14.6, "psutil": 1.4, "pyyaml": 14.5, "regex": 30.5, "simplejson": 3.8}
    queue = [queued(name, 1, seconds) for name, seconds in expected.items()]
    plan = plan_order(queue, [], limits(max_builds=2), now=0.0)
    assert [build.key for build in plan[:2]] == ["regex", "msgpack"]
    assert simulate(plan, [], limits(max_builds=2), now=0.0) <= simulate(order_queue(queue), [], limits(max_builds=2),
                                                                         now=0.0)
