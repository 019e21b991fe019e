"""The report's pure parts: lanes, segments, the thinned time series, the trace of made-up runs,
and the series the scheduler records (driven by the fakes: nothing is spawned)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from fake_executor import FakeClock, FakeMachine, G, M, Script, job
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.jobs import BuildResult, PhaseSpan, Status
from orchestrator.policy.admission import Limits
from orchestrator.report import RunReport
from orchestrator.report.timeline import assign_lanes, bars, build_segments
from orchestrator.report.trace import trace_events
from orchestrator.samples import Sample, Samples
from orchestrator.scheduler import BuildScheduler, SchedulerSettings

intervals = st.lists(
    st.tuples(st.floats(0, 1000, allow_nan=False), st.floats(0.01, 100, allow_nan=False)).map(
        lambda pair: (pair[0], pair[0] + pair[1])),
    max_size=60)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment (touching ends do not overlap), by a sweep."""
    edges = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    open_now = most = 0
    for _, step in edges:  # at a tie, an end (-1) sorts before a start (+1)
        open_now += step
        most = max(most, open_now)
    return most


@given(intervals)
def test_lanes_never_overlap_and_are_as_few_as_the_busiest_moment(spans: list[tuple[float, float]]) -> None:
    lanes = assign_lanes(spans)
    assert len(lanes) == len(spans)
    by_lane: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for span, lane in zip(spans, lanes, strict=True):
        by_lane[lane].append(span)
    for placed in by_lane.values():
        placed.sort()
        for (_, end), (start, _) in zip(placed, placed[1:], strict=False):
            assert start >= end
    assert len(set(lanes)) == most_at_once(spans)
    assert set(lanes) == set(range(len(set(lanes))))  # lanes 0..n-1, none skipped


def test_lanes_reuse_the_lowest_free_lane() -> None:
    assert assign_lanes([(0, 10), (1, 2), (3, 4), (2, 3), (10, 11)]) == [0, 1, 1, 1, 0]


def result(name: str, spans: list[tuple[str, float, float]], *, status: Status = Status.BUILT,
           started: float | None = None, finished: float | None = None, **extra: Any) -> BuildResult:
    phase_spans = tuple(PhaseSpan(phase=phase, start=start, end=end) for phase, start, end in spans)
    return BuildResult(name=name, version="1.0", source=f"{name}.tar.gz", status=status, wheel=None,
                       started_at=started if started is not None else (phase_spans[0].start if spans else None),
                       finished_at=finished if finished is not None else (phase_spans[-1].end if spans else None),
                       phases={}, peak_rss_bytes=10 * M, cpu_s=1.0, log="/nonexistent.log", error=None,
                       spans=phase_spans, **extra)


def test_segments_follow_the_worker_and_never_overlap() -> None:
    # Worker and scheduler clocks round differently: a span that starts before the previous ended is clipped.
    build = result("a", [("extract", 100.0, 101.0), ("get_requires", 100.9, 102.0), ("admission", 102.0, 105.0),
                         ("backend", 105.0, 109.0), ("publish", 109.0, 109.5)])
    segments = build_segments(build, origin=100.0)
    assert [(s.category, s.start, s.end) for s in segments] == [
        ("preparing", 0.0, 1.0), ("preparing", 1.0, 2.0), ("waiting", 2.0, 5.0), ("building", 5.0, 9.0),
        ("publishing", 9.0, 9.5)]


def test_a_worker_that_died_without_spans_is_one_building_bar() -> None:
    crashed = result("c", [], status=Status.FAILED, started=110.0, finished=112.5)
    (segment,) = build_segments(crashed, origin=100.0)
    assert (segment.category, segment.start, segment.end) == ("building", 10.0, 12.5)


def test_builds_that_never_ran_have_no_bar() -> None:
    never = BuildResult(name="n", version="1.0", source="n.tar.gz", status=Status.NOT_STARTED, wheel=None,
                        started_at=None, finished_at=None, phases={}, peak_rss_bytes=0, cpu_s=0.0, log=None,
                        error="the run was stopped")
    skipped = BuildResult(name="s", version="1.0", source="s.tar.gz", status=Status.SKIPPED, wheel="s.whl",
                          started_at=105.0, finished_at=105.0, phases={}, peak_rss_bytes=0, cpu_s=0.0, log=None,
                          error=None)
    ran = result("r", [("backend", 101.0, 102.0)])
    assert [bar.name for bar in bars([never, skipped, ran], [], [], origin=100.0)] == ["r"]


phase_names = st.sampled_from(["extract", "create_env", "install_requires", "get_requires", "admission", "backend",
                               "publish"])
made_up_builds = st.lists(
    st.tuples(st.floats(0, 100), st.lists(st.tuples(phase_names, st.floats(0, 5)), min_size=1, max_size=7),
              st.sampled_from([Status.BUILT, Status.FAILED, Status.STOPPED])),
    min_size=1, max_size=40)


@settings(max_examples=50, deadline=None)
@given(made_up_builds)
def test_trace_never_overlaps_on_a_lane_and_names_every_lane(builds: list[Any]) -> None:
    report = RunReport(started_at=1000.0, finished_at=1300.0)
    for index, (start, phases, status) in enumerate(builds):
        spans, at = [], 1000.0 + start
        for phase, seconds in phases:
            spans.append((phase, at, at + seconds))
            at += seconds
        report.builds.append(result(f"b{index}", spans, status=status))
    events = trace_events(report)
    complete = [event for event in events if event["ph"] == "X"]
    assert {event["args"]["name"] for event in complete} >= {f"b{index}" for index, (_, phases, _) in
                                                           enumerate(builds) if any(s for _, s in phases)}
    named = {(event["pid"], event["tid"]) for event in events if event["ph"] == "M" and event["name"] == "thread_name"}
    by_lane: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for event in complete:
        assert event["dur"] >= 0 and event["ts"] >= 0
        by_lane[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
    assert set(by_lane) <= named
    for placed in by_lane.values():
        placed.sort()
        for (_, end), (start, _) in zip(placed, placed[1:], strict=False):
            assert start >= end


def sample(at: float, **values: Any) -> Sample:
    fields = {"running": 0, "waiting": 0, "preparing": 0, "rss": 0, "reserved": 0, "available_memory": 8 * G,
              "cpu_busy": 1.0, "cpu_count": 4}
    return Sample(at=at, **{**fields, **values})


@given(st.lists(st.tuples(st.floats(0.01, 3), st.integers(0, 10 * G)), min_size=1, max_size=400),
       st.integers(2, 50))
def test_samples_stay_few_far_apart_and_keep_the_peak(steps: list[tuple[float, int]], limit: int) -> None:
    series, at = Samples(interval=0.5, limit=limit), 0.0
    for gap, rss in steps:
        at += gap
        series.add(sample(at, rss=rss, available_memory=16 * G - rss))
    points = series.points
    assert 1 <= len(points) <= limit
    assert all(later.at - earlier.at >= 0.5 for earlier, later in zip(points, points[1:], strict=False))
    assert max(point.rss for point in points) == max(rss for _, rss in steps)
    assert min(point.available_memory for point in points) == 16 * G - max(rss for _, rss in steps)


@pytest.mark.timeout(20)
def test_the_scheduler_records_the_run_as_it_samples() -> None:
    machine, script, clock = FakeMachine(rss={"a-1.0": 300 * M, "b-1.0": 200 * M}), Script(), FakeClock()
    turns = []

    def turn(state: Any) -> None:
        clock.advance(0.6)  # a point per turn
        turns.append(state)
        if len(turns) % 3 == 0:  # each build runs three turns
            for worker in machine.busy():
                worker.finish(0, built=True)

    script.on_update.append(turn)
    limits = Limits(max_builds=1, memory_limit=4 * G, min_free_memory=G, max_load=None)
    builds = BuildScheduler(SchedulerSettings(limits=limits, sample_interval=0.01, grace=0), probe=machine,
                            observer=script, executor=machine, clock=clock)
    builds.add(job("a-1.0"), need=G)
    builds.add(job("b-1.0"), need=G)
    builds.run()
    points = builds.samples.points
    assert points, "no point recorded"
    assert max(point.running for point in points) == 1  # one build at a time: max_builds=1
    assert max(point.waiting for point in points) == 1  # the other one waited
    assert max(point.rss for point in points) == 300 * M  # "a", the larger, was sampled as it ran
    assert max(point.reserved for point in points) == G  # its need, above its RSS
    assert all(point.cpu_count == 4 for point in points)
