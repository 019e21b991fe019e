from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import UsageError
from orchestrator.policy.admission import (
    Candidate,
    Decision,
    Limits,
    QueuedBuild,
    Readings,
    RunningBuild,
    decide,
    jobs_per_build,
    may_backfill,
    order_queue,
    pick_victim,
    sample_interval,
)

G = 1024**3
M = 1024**2


def readings(
    *, available: int = 16 * G, load: float | None = 0.0, cpus: int = 8, cpu_busy: float | None = None
) -> Readings:
    return Readings(
        total_memory=32 * G, available_memory=available, load_1m=load, cpu_count=cpus, cpu_busy=cpu_busy
    )


def limits(
    *,
    max_builds: int = 4,
    memory_limit: int | None = None,
    min_free: int = 0,
    max_load: float | None = None,
    max_cpu: float | None = None,
) -> Limits:
    return Limits(
        max_builds=max_builds,
        memory_limit=memory_limit,
        min_free_memory=min_free,
        max_load=max_load,
        max_cpu=max_cpu,
    )


def build(
    key: str = "a",
    *,
    need: int = G,
    rss: int = 0,
    started_at: float = 0.0,
    stopping: bool = False,
    cpu: float | None = 0.0,
    cpu_seen: float = 0.0,
) -> RunningBuild:
    return RunningBuild(key=key, need=need, rss=rss, started_at=started_at, stopping=stopping, cpu=cpu,
                        cpu_seen=cpu_seen)


def want(need: int) -> Candidate:
    return Candidate(key="next", need=need)


@pytest.mark.parametrize(
    ("candidate", "sample", "running", "policy", "admit", "reason"),
    [
        # Plenty of everything: admitted, and the reason says what is left.
        (
            want(2 * G), readings(), [build()], limits(), True,
            "starting: needs 2.0 GiB, 13.0 GiB stays free, 2 of 4 builds running",
        ),
        # The count cap comes first, even with memory to spare.
        (
            want(G), readings(), [build("a"), build("b")], limits(max_builds=2), False,
            "waiting: 2 of 2 builds running",
        ),
        # Reservations use the need while a build has not grown into it yet.
        (
            want(2 * G), readings(), [build(need=3 * G, rss=G)], limits(memory_limit=4 * G),
            False, "waiting: 3.0 GiB of the 4.0 GiB memory limit reserved, needs 2.0 GiB",
        ),
        # ...and the RSS once a build outgrows its prediction.
        (
            want(2 * G), readings(), [build(need=G, rss=3 * G)], limits(memory_limit=4 * G),
            False, "waiting: 3.0 GiB of the 4.0 GiB memory limit reserved, needs 2.0 GiB",
        ),
        # Exactly at the memory limit is allowed.
        (
            want(G), readings(), [build(need=3 * G, rss=G)], limits(memory_limit=4 * G),
            True, None,
        ),
        # Free memory: the candidate simply does not fit.
        (
            want(2 * G), readings(available=int(1.2 * G)), [build(need=G, rss=G)], limits(),
            False, "waiting: 1.2 GiB free, needs 2.0 GiB",
        ),
        # Free memory looks ample, but a young build will still take 3 GiB of it.
        (
            want(2 * G), readings(available=4 * G), [build(need=4 * G, rss=G)],
            limits(min_free=G), False,
            ("waiting: 4.0 GiB free (3.0 GiB of it promised to running builds),"
             " needs 2.0 GiB and 1.0 GiB kept free"),
        ),
        # A build already over its need promises nothing more; the candidate fits exactly.
        (
            want(2 * G), readings(available=3 * G), [build(need=G, rss=2 * G)],
            limits(min_free=G), True, None,
        ),
        # Load per CPU above the cap: wait.
        (
            want(G), readings(load=18.4, cpus=8), [build()], limits(max_load=1.5), False,
            "waiting: load 2.30 per CPU > 1.5",
        ),
        # Load exactly at the cap is fine.
        (want(G), readings(load=12.0, cpus=8), [build()], limits(max_load=1.5), True, None),
        # No load average on this platform: the load rule is skipped.
        (want(G), readings(load=None), [build()], limits(max_load=0.1), True, None),
        # Load is ignored when no cap is set.
        (want(G), readings(load=100.0), [build()], limits(), True, None),
        # The machine's CPUs are busy, by the builds or anything else: wait.
        (
            want(G), readings(cpus=2, cpu_busy=1.97), [build("a", cpu=0.5)], limits(max_cpu=0.9),
            False, "waiting: CPUs busy 1.97, limit 1.80 (90% of 2 usable CPUs)",
        ),
        (want(G), readings(cpus=2, cpu_busy=1.5), [build("a", cpu=1.0)], limits(max_cpu=0.9), True, None),
        # Unmeasured machine (a cgroup quota): the running builds keep every CPU busy.
        (
            want(G), readings(cpus=2), [build("a", cpu=1.0), build("b", cpu=0.97)], limits(max_cpu=0.9),
            False, "waiting: CPUs busy with builds 1.97, limit 1.80 (90% of 2 usable CPUs)",
        ),
        # One of them is sleeping or waiting on I/O: a CPU is free.
        (want(G), readings(cpus=2), [build("a", cpu=1.0), build("b", cpu=0.3)], limits(max_cpu=0.9), True, None),
        # A build not sampled yet adds one busy CPU, the machine measured or not.
        (
            want(G), readings(cpus=2), [build("a", cpu=1.0), build("b", cpu=None)], limits(max_cpu=1.0),
            False,
            "waiting: CPUs busy with builds 2.00, limit 2.00 (100% of 2 usable CPUs); 1 just started, counted as"
            " one busy CPU each",
        ),
        # Counted in full, a build just started can put the estimate above the CPUs: it reads against the limit.
        (
            want(G), readings(cpus=2, cpu_busy=1.1), [build("a", cpu=1.0), build("b", cpu=None)], limits(max_cpu=1.0),
            False,
            "waiting: CPUs busy 2.10, limit 2.00 (100% of 2 usable CPUs); 1 just started, counted as one busy CPU each",
        ),
        # What the machine's figure saw of a build just started is not counted twice: it counts as one CPU instead
        # (1.2 - 0.9 + 1). Short builds all end before they are measured: the second slot stayed idle.
        (want(G), readings(cpus=2, cpu_busy=1.2), [build("a", cpu=None, cpu_seen=0.9)], limits(max_cpu=1.0), True,
         None),
        # Seen using little so far, it still counts as one: 1.2 - 0.1 + 1.
        (
            want(G), readings(cpus=2, cpu_busy=1.2), [build("a", cpu=None, cpu_seen=0.1)], limits(max_cpu=1.0),
            False,
            "waiting: CPUs busy 2.10, limit 2.00 (100% of 2 usable CPUs); 1 just started, counted as one busy CPU each",
        ),
        # A multi-threaded build can fill the machine alone.
        (want(G), readings(cpus=4), [build("a", cpu=3.9)], limits(max_cpu=0.9), False, None),
        # The CPU rule is off without a cap.
        (want(G), readings(cpus=2), [build("a", cpu=2.0), build("b", cpu=None)], limits(), True, None),
    ],
)
def test_decide(
    candidate: Candidate,
    sample: Readings,
    running: list[RunningBuild],
    policy: Limits,
    admit: bool,
    reason: str | None,
) -> None:
    decision = decide(candidate, sample, running, policy)
    assert decision.admit is admit
    if reason is not None:
        assert decision.reason == reason
    assert "\n" not in decision.reason
    assert decision.warning is None
    assert (decision.blocked_by is None) is admit


@pytest.mark.parametrize(
    ("candidate", "sample", "policy", "warning"),
    [
        # Fits: no warning.
        (want(G), readings(), limits(memory_limit=4 * G, min_free=G), None),
        # Needs more than the whole memory limit: it runs alone, with a warning.
        (
            want(6 * G), readings(), limits(memory_limit=4 * G),
            "next needs 6.0 GiB, more than the memory limit of 4.0 GiB; starting it alone",
        ),
        # Would leave less than the minimum free: it runs alone, with a warning.
        (
            want(6 * G), readings(available=6 * G), limits(min_free=G),
            ("next needs 6.0 GiB and would leave 0 B free, less than the 1.0 GiB to keep;"
             " starting it alone"),
        ),
        # High load never holds back the only build.
        (want(G), readings(load=1000.0), limits(max_load=1.0), None),
        # Nor does a tiny CPU cap.
        (want(G), readings(), limits(max_cpu=0.01), None),
    ],
)
def test_decide_admits_when_nothing_runs(
    candidate: Candidate, sample: Readings, policy: Limits, warning: str | None
) -> None:
    decision = decide(candidate, sample, [], policy)
    assert decision.admit
    assert decision.reason == f"starting: nothing else running, needs {_size(candidate.need)}"
    assert decision.warning == warning


def _size(n: int) -> str:
    return f"{n / G:.1f} GiB"


@pytest.mark.parametrize(
    ("sample", "running", "policy", "victim"),
    [
        # No pressure: nobody is stopped.
        (readings(), [build("a"), build("b", started_at=1)], limits(memory_limit=4 * G), None),
        # Over the memory limit by RSS: the youngest goes.
        (
            readings(),
            [build("old", rss=3 * G, started_at=1), build("young", rss=2 * G, started_at=5)],
            limits(memory_limit=4 * G),
            "young",
        ),
        # Over the limit by reservation only is not pressure: predictions are not use.
        (
            readings(),
            [build("a", need=3 * G, rss=M), build("b", need=3 * G, rss=M, started_at=2)],
            limits(memory_limit=4 * G),
            None,
        ),
        # Available memory below the minimum free: the youngest goes.
        (
            readings(available=M),
            [build("b", started_at=2), build("c", started_at=3), build("a", started_at=1)],
            limits(min_free=G),
            "c",
        ),
        # Under pressure but only one build: it is never stopped.
        (
            readings(available=0),
            [build("only", rss=8 * G)],
            limits(memory_limit=G, min_free=G),
            None,
        ),
        # Nothing running.
        (readings(available=0), [], limits(min_free=G), None),
        # A build being stopped still holds 3 GiB that the next sample's free memory
        # does not show yet: that is not new pressure, nobody else is stopped.
        (
            readings(available=G // 2),
            [
                build("a", rss=G),
                build("b", rss=G, started_at=1),
                build("c", rss=3 * G, started_at=2, stopping=True),
            ],
            limits(min_free=G),
            None,
        ),
        # ...but when even its memory will not be enough, the youngest of the others goes.
        (
            readings(available=G // 4),
            [
                build("a", rss=G),
                build("b", rss=G, started_at=1),
                build("c", rss=G // 2, started_at=2, stopping=True),
            ],
            limits(min_free=G),
            "b",
        ),
        # A build being stopped no longer counts against the memory limit.
        (
            readings(),
            [
                build("a", rss=2 * G),
                build("b", rss=G, started_at=1),
                build("c", rss=3 * G, started_at=2, stopping=True),
            ],
            limits(memory_limit=4 * G),
            None,
        ),
        # Nor does it count as another build: the last one staying is never stopped.
        (
            readings(available=0),
            [build("a", rss=8 * G), build("b", rss=G, started_at=1, stopping=True)],
            limits(memory_limit=G, min_free=G),
            None,
        ),
    ],
)
def test_pick_victim(
    sample: Readings, running: list[RunningBuild], policy: Limits, victim: str | None
) -> None:
    assert pick_victim(sample, running, policy) == victim


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_builds": 0}, "max builds must be at least 1"),
        ({"memory_limit": -1}, "memory limit cannot be negative"),
        ({"min_free": -1}, "minimum free memory cannot be negative"),
        ({"max_load": 0.0}, "max load must be above 0"),
        ({"max_cpu": 0.0}, "max CPU share must be above 0"),
    ],
)
def test_limits_rejects_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        limits(**kwargs)


@pytest.mark.parametrize(
    ("sample", "running", "policy", "interval"),
    [
        # Far from the limit: every 0.2 s.
        (readings(), [build("a", rss=2 * G), build("b", rss=2 * G)], limits(memory_limit=8 * G), 0.2),
        # 7 of 8 GiB used (87.5%): four times as often.
        (readings(), [build("a", rss=4 * G), build("b", rss=3 * G)], limits(memory_limit=8 * G), 0.05),
        # 6.5 of 8 GiB (81%): not yet.
        (readings(), [build("a", rss=4 * G), build("b", rss=5 * G // 2)], limits(memory_limit=8 * G), 0.2),
        # A build being stopped does not count: 4 of 8 GiB stay.
        (readings(), [build("a", rss=4 * G), build("b", rss=4 * G, stopping=True)], limits(memory_limit=8 * G),
         0.2),
        # One build alone is never stopped: nothing to sample for.
        (readings(available=0), [build("a", rss=30 * G)], limits(memory_limit=8 * G, min_free=G), 0.2),
        # No limit, but 1.5 GiB available with a 1 GiB floor: under twice the floor.
        (readings(available=3 * G // 2), [build("a"), build("b")], limits(min_free=G), 0.05),
        (readings(available=5 * G // 2), [build("a"), build("b")], limits(min_free=G), 0.2),
        # Nothing read yet.
        (None, [build("a", rss=8 * G), build("b", rss=8 * G)], limits(memory_limit=8 * G), 0.2),
    ],
)
def test_samples_come_four_times_as_often_near_memory_pressure(
    sample: Readings | None, running: list[RunningBuild], policy: Limits, interval: float
) -> None:
    assert sample_interval(sample, running, policy, 0.2) == pytest.approx(interval)


def test_pick_victim_stops_one_build_at_a_time_under_free_memory_pressure() -> None:
    """Samples 0.2 s apart while a stopped build takes its grace period to exit."""
    policy = limits(min_free=G)
    a, b = build("a", rss=2 * G), build("b", rss=2 * G, started_at=1)
    young = build("young", rss=2 * G, started_at=2)
    assert pick_victim(readings(available=G // 2), [a, b, young], policy) == "young"
    # Still exiting: free memory has not moved yet.
    dying = build("young", rss=2 * G, started_at=2, stopping=True)
    assert pick_victim(readings(available=G // 2), [a, b, dying], policy) is None
    # Half gone: what it gave back shows up as available memory, the sum is the same.
    dying = build("young", rss=G, started_at=2, stopping=True)
    assert pick_victim(readings(available=G + G // 2), [a, b, dying], policy) is None
    # Gone, and the others grew meanwhile: real new pressure stops the next youngest.
    assert pick_victim(readings(available=G // 2), [a, b], policy) == "b"


def test_reservation() -> None:
    assert build(need=2 * G, rss=G).reservation == 2 * G
    assert build(need=G, rss=2 * G).reservation == 2 * G


def test_the_policy_imports_nothing_that_does_io() -> None:
    # In a fresh interpreter: this test process has loaded everything already.
    script = (
        "import sys; before = set(sys.modules)\n"
        "import orchestrator.policy.admission, orchestrator.policy.planning\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    run = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    loaded = set(run.stdout.split())
    assert {"orchestrator.policy.admission", "orchestrator.policy.planning"} <= loaded  # the probe works
    io = {"os", "io", "pathlib", "shutil", "socket", "sqlite3", "subprocess", "threading", "time", "psutil",
          "platformdirs", "orchestrator.resources", "orchestrator.policy.history"}
    assert not loaded & io


def test_values_pickle() -> None:
    for value in (readings(), build(), limits(), want(G), Decision(admit=True, reason="x")):
        assert pickle.loads(pickle.dumps(value)) == value


@pytest.mark.parametrize(
    ("cpus", "max_builds", "jobs"),
    [
        (16, 4, 4),  # an even share
        (10, 4, 2),  # rounded down: never oversubscribe
        (2, 4, 1),  # at least one job
        (1, 1, 1),
        (64, 1, 64),  # a lone build gets the machine
    ],
)
def test_jobs_per_build(cpus: int, max_builds: int, jobs: int) -> None:
    assert jobs_per_build(cpus, max_builds) == jobs


def test_jobs_per_build_rejects_zero_builds() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        jobs_per_build(8, 0)


def test_order_queue() -> None:
    queue = [
        QueuedBuild(key="new-small", need=8 * G, expected_duration=None, size=10_000),
        QueuedBuild(key="quick", need=8 * G, expected_duration=5.0),
        QueuedBuild(key="new-big", need=G, expected_duration=None, size=5_000_000),
        QueuedBuild(key="new-small-lean", need=G, expected_duration=None, size=10_000),
        QueuedBuild(key="new-tiny-c", need=G, expected_duration=None, size=100, compiles=True),
        QueuedBuild(key="slow", need=G, expected_duration=600.0, size=1),
        QueuedBuild(key="b-tie", need=G, expected_duration=5.0),
        QueuedBuild(key="a-tie", need=G, expected_duration=5.0),
    ]
    # Longest known duration first (ties: larger need, then key); then never-built
    # ones, those that compile first, by sdist size (ties: larger need).
    assert [b.key for b in order_queue(queue)] == [
        "slow", "quick", "a-tie", "b-tie", "new-tiny-c", "new-big", "new-small", "new-small-lean",
    ]


# Property tests --------------------------------------------------------------

queued_builds = st.builds(
    QueuedBuild,
    key=st.sampled_from(["a", "b", "c"]),  # ties of every rule, down to the key
    need=st.sampled_from([G, 2 * G]),
    expected_duration=st.none() | st.sampled_from([0.0, 1.5, 60.0]),
    size=st.sampled_from([0, 10, 10_000]),
    compiles=st.booleans(),
)


@given(st.lists(queued_builds, max_size=12))
def test_order_queue_is_the_rules_in_turn(queue: list[QueuedBuild]) -> None:
    # The rules of order_queue's docstring as one key; builds equal by every rule keep their order.
    expected = sorted(queue, key=lambda b: (b.expected_duration is None, -(b.expected_duration or 0.0),
                                            not b.compiles, -b.size, -b.need, b.key))
    assert [id(b) for b in order_queue(queue)] == [id(b) for b in expected]



sizes = st.integers(min_value=0, max_value=64 * G)
running_builds = st.builds(
    RunningBuild,
    key=st.text(min_size=1, max_size=5),
    need=sizes,
    rss=sizes,
    started_at=st.floats(min_value=0, max_value=1e6),
    stopping=st.booleans(),
    cpu=st.none() | st.floats(min_value=0, max_value=64),
)
any_readings = st.builds(
    Readings,
    total_memory=sizes,
    available_memory=sizes,
    load_1m=st.none() | st.floats(min_value=0, max_value=256),
    cpu_count=st.integers(min_value=1, max_value=256),
    cpu_busy=st.none() | st.floats(min_value=0, max_value=256),
)
any_limits = st.builds(
    Limits,
    max_builds=st.integers(min_value=1, max_value=8),
    memory_limit=st.none() | sizes,
    min_free_memory=sizes,
    max_load=st.none() | st.floats(min_value=0.1, max_value=8),
    max_cpu=st.none() | st.floats(min_value=0.05, max_value=2),
)
candidates = st.builds(Candidate, key=st.just("next"), need=sizes)


RULES = ("builds", "memory_limit", "free_memory", "cpu", "load")
"""The admission rules, in the order ``decide`` documents it checks them."""


def broken_rules(candidate: Candidate, sample: Readings, running: list[RunningBuild], policy: Limits) -> list[str]:
    """The rules that starting ``candidate`` beside ``running`` would break, in :data:`RULES`' order."""
    broken = []
    if len(running) + 1 > policy.max_builds:
        broken.append("builds")
    if policy.memory_limit is not None and sum(b.reservation for b in running) + candidate.need > policy.memory_limit:
        broken.append("memory_limit")
    promised = sum(max(0, b.need - b.rss) for b in running)
    if sample.available_memory - promised - candidate.need < policy.min_free_memory:
        broken.append("free_memory")
    if policy.max_cpu is not None:
        # The machine's busy CPUs if measured, else the builds' own; a build not sampled yet is one busy CPU.
        young = sum(b.cpu is None for b in running)
        measured = sum(b.cpu for b in running if b.cpu is not None) if sample.cpu_busy is None else sample.cpu_busy
        if measured + young >= policy.max_cpu * sample.cpu_count:
            broken.append("cpu")
    if policy.max_load is not None and sample.load_1m is not None:
        if sample.load_1m / sample.cpu_count > policy.max_load:
            broken.append("load")
    return broken


@given(candidates, any_readings, st.lists(running_builds, min_size=1, max_size=8), any_limits)
def test_decide_admits_unless_a_rule_is_broken_and_then_names_the_first(
    candidate: Candidate, sample: Readings, running: list[RunningBuild], policy: Limits
) -> None:
    decision = decide(candidate, sample, running, policy)
    broken = broken_rules(candidate, sample, running, policy)
    assert decision.admit is (not broken)
    assert decision.blocked_by == (broken[0] if broken else None)
    assert decision.reason.startswith("waiting: " if broken else "starting: ")
    assert decision.warning is None


@st.composite
def admissible(draw: st.DrawFn) -> tuple[Candidate, Readings, list[RunningBuild], Limits]:
    """A candidate, a sample, running builds and limits under which every rule lets it start, each with room."""
    running = draw(st.lists(running_builds, min_size=1, max_size=8))
    candidate = Candidate(key="next", need=draw(st.integers(min_value=1, max_value=64 * G)))
    cpus = draw(st.integers(min_value=1, max_value=256))
    min_free = draw(sizes)
    promised = sum(max(0, b.need - b.rss) for b in running)
    reserved = sum(b.reservation for b in running)
    cpu_busy = draw(st.none() | st.floats(min_value=0, max_value=256))
    busy = (cpu_busy if cpu_busy is not None else sum(b.cpu for b in running if b.cpu is not None)) + sum(
        b.cpu is None for b in running
    )
    max_cpu = draw(st.none() | st.floats(min_value=0, max_value=2).map(lambda more: busy / cpus * 1.01 + 0.001 + more))
    max_load = draw(st.none() | st.floats(min_value=0.1, max_value=8))
    load = draw(st.none() | st.floats(min_value=0, max_value=0.99 * (max_load or 8) * cpus))
    sample = Readings(
        total_memory=draw(sizes),
        available_memory=promised + candidate.need + min_free + draw(sizes),
        load_1m=load,
        cpu_count=cpus,
        cpu_busy=cpu_busy,
    )
    policy = Limits(
        max_builds=len(running) + draw(st.integers(min_value=1, max_value=4)),
        memory_limit=draw(st.none() | sizes.map(lambda more: reserved + candidate.need + more)),
        min_free_memory=min_free,
        max_load=max_load,
        max_cpu=max_cpu,
    )
    return candidate, sample, running, policy


@given(admissible())
def test_decide_admits_when_every_rule_holds(case: tuple[Candidate, Readings, list[RunningBuild], Limits]) -> None:
    decision = decide(*case)
    assert decision.admit
    assert decision.blocked_by is None
    assert decision.warning is None
    assert decision.reason.startswith("starting: ")


@given(admissible(), st.sampled_from(RULES))
def test_decide_refuses_for_the_one_rule_broken(
    case: tuple[Candidate, Readings, list[RunningBuild], Limits], rule: str
) -> None:
    candidate, sample, running, policy = case
    # Break ``rule`` alone, just: every other rule still holds.
    if rule == "builds":
        policy = dataclasses.replace(policy, max_builds=len(running))
    elif rule == "memory_limit":
        policy = dataclasses.replace(policy, memory_limit=sum(b.reservation for b in running) + candidate.need - 1)
    elif rule == "free_memory":
        headroom = sample.available_memory - sum(max(0, b.need - b.rss) for b in running) - candidate.need
        policy = dataclasses.replace(policy, min_free_memory=headroom + 1)
    elif rule == "cpu":
        max_cpu = policy.max_cpu or 1.0
        policy = dataclasses.replace(policy, max_cpu=max_cpu)
        sample = dataclasses.replace(sample, cpu_busy=max_cpu * sample.cpu_count)
    else:
        max_load = policy.max_load or 1.0
        policy = dataclasses.replace(policy, max_load=max_load)
        sample = dataclasses.replace(sample, load_1m=max_load * sample.cpu_count * 1.01 + 0.01)
    assert broken_rules(candidate, sample, running, policy) == [rule]
    decision = decide(candidate, sample, running, policy)
    assert not decision.admit
    assert decision.blocked_by == rule
    assert decision.reason.startswith("waiting: ")


@given(candidates, any_readings, any_limits)
def test_nothing_running_always_admits(
    candidate: Candidate, sample: Readings, policy: Limits
) -> None:
    assert decide(candidate, sample, [], policy).admit


@given(any_readings, st.lists(running_builds, max_size=8), any_limits)
def test_pick_victim_spares_the_last_build_and_picks_the_youngest(
    sample: Readings, running: list[RunningBuild], policy: Limits
) -> None:
    victim = pick_victim(sample, running, policy)
    staying = [b for b in running if not b.stopping]
    freeing = sum(b.rss for b in running if b.stopping)
    pressure = sample.available_memory + freeing < policy.min_free_memory or (
        policy.memory_limit is not None and sum(b.rss for b in staying) > policy.memory_limit
    )
    assert (victim is not None) == (pressure and len(staying) >= 2)
    if victim is None:
        return
    youngest = max(b.started_at for b in staying)
    assert any(b.key == victim and b.started_at == youngest for b in staying)


def ending(key: str, *, need: int, end: float | None) -> RunningBuild:
    return RunningBuild(key=key, need=need, rss=0, started_at=0.0, expected_end=end)


def queued(need: int, duration: float | None) -> QueuedBuild:
    return QueuedBuild(key="small", need=need, expected_duration=duration)


@pytest.mark.parametrize(
    ("candidate", "running", "allowed"),
    [
        # The head (4G of an 8G limit) can start at t=10, when "a" ends; 5 s from now=2 ends by then.
        (queued(2 * G, 5.0), [ending("a", need=3 * G, end=10.0), ending("b", need=3 * G, end=20.0)], True),
        # ...but 9 s would hold the head's memory past its start.
        (queued(2 * G, 9.0), [ending("a", need=3 * G, end=10.0), ending("b", need=3 * G, end=20.0)], False),
        # A long one is fine if it fits beside the head at that time (3G + 4G + 1G = 8G).
        (queued(G, 99.0), [ending("a", need=3 * G, end=10.0), ending("b", need=3 * G, end=20.0)], True),
        # Never built: no expected duration, no jumping the queue.
        (queued(G, None), [ending("a", need=3 * G, end=10.0), ending("b", need=3 * G, end=20.0)], False),
        # A running build of unknown length stands between the head and its memory.
        (queued(G, 1.0), [ending("a", need=5 * G, end=None), ending("b", need=3 * G, end=20.0)], False),
        # ...unless the head fits once the builds that will end have ended.
        (queued(G, 5.0), [ending("a", need=3 * G, end=10.0), ending("b", need=3 * G, end=None)], True),
        # A build past its expected end may end any moment: the shadow time is now.
        (queued(2 * G, 5.0), [ending("a", need=3 * G, end=1.0), ending("b", need=3 * G, end=20.0)], False),
    ],
)
def test_may_backfill(candidate: QueuedBuild, running: list[RunningBuild], allowed: bool) -> None:
    head = Candidate(key="head", need=4 * G)
    assert may_backfill(candidate, head, running, limits(memory_limit=8 * G), now=2.0) is allowed


def test_may_backfill_needs_a_memory_limit() -> None:
    running = [ending("a", need=3 * G, end=10.0)]
    assert not may_backfill(queued(G, 1.0), Candidate(key="head", need=4 * G), running, limits(), now=0.0)
