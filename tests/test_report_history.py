"""The history analysis behind ``orchestrate report``: pure functions over records, no I/O."""

from __future__ import annotations

import pytest

from orchestrator.policy.history import SUCCESS, BuildRecord, RunRecord
from orchestrator.report.history import analyse, tail
from orchestrator.report.history_html import sparkline_svg
from orchestrator.report.history_text import sparkline

M = 1024**2
PY = "cpython-3.11"


def run(run_id: int) -> RunRecord:
    return RunRecord(id=run_id, started_at=run_id * 1000.0, finished_at=run_id * 1000.0 + 60, command_line="x",
                     tool_version="1", python=PY, built=1)


def build(name: str, run_id: int | None, *, wall: float = 10.0, peak: int | None = 100 * M, ok: bool = True,
          start: float = 0.0, predicted: int | None = None, python: str = PY, outcome: str | None = None,
          order: float = 0.0) -> BuildRecord:
    started = (run_id or 0) * 1000.0 + start + order
    return BuildRecord(name=name, version="1.0", sdist_sha256=None, python=python, peak_rss_bytes=peak, wall_s=wall,
                       cpu_s=None, status=SUCCESS if ok else "backend failed: boom", started_at=started,
                       finished_at=started + wall, outcome=outcome or ("built" if ok else "failed"), run_id=run_id,
                       predicted_rss_bytes=predicted)


def regressions_of(walls: list[float], peaks: list[int], *, python: list[str] | None = None) -> list[tuple[str, float]]:
    builds = [build("pkg", index + 1, wall=wall, peak=peak, python=(python or [PY] * len(walls))[index])
              for index, (wall, peak) in enumerate(zip(walls, peaks))]
    report = analyse([run(index + 1) for index in range(len(walls))], builds)
    return [(found.metric, round(found.ratio, 2)) for found in report.regressions]


@pytest.mark.parametrize(
    ("walls", "peaks", "expected"),
    [
        # 1.5x the median wall of the three before: flagged
        ([10, 11, 9, 15], [100 * M] * 4, [("wall", 1.5)]),
        # exactly 1.25x: not over the ratio
        ([10, 10, 10, 12.5], [100 * M] * 4, []),
        # only two builds before: no baseline yet
        ([10, 10, 20], [100 * M] * 3, []),
        # 2x, but half a second more: under the floor for tiny builds
        ([0.5, 0.5, 0.5, 1.0], [100 * M] * 4, []),
        # the median, not the mean: one slow build before does not hide the regression
        ([10, 50, 10, 10, 14], [100 * M] * 5, [("wall", 1.4)]),
        # only the last five before count: the old slow ones have left the baseline
        ([40, 40, 40, 10, 10, 10, 10, 10, 14], [100 * M] * 9, [("wall", 1.4)]),
        # peak memory 2x, 100 MiB more: flagged; both at once
        ([10, 10, 10, 10], [100 * M, 100 * M, 100 * M, 200 * M], [("peak", 2.0)]),
        ([10, 10, 10, 20], [100 * M, 100 * M, 100 * M, 200 * M], [("wall", 2.0), ("peak", 2.0)]),
        # 1.5x the peak but 15 MiB more: under the floor
        ([10] * 4, [30 * M, 30 * M, 30 * M, 45 * M], []),
        # faster and smaller is not a regression
        ([10, 10, 10, 5], [100 * M, 100 * M, 100 * M, 50 * M], []),
    ],
)
def test_regression_rule(walls: list[float], peaks: list[int], expected: list[tuple[str, float]]) -> None:
    assert regressions_of(walls, peaks) == expected


def test_regressions_compare_the_same_interpreter_only() -> None:
    pythons = [PY] * 3 + ["cpython-3.12"] * 3 + [PY]
    # Three slow builds for this interpreter, then three fast ones for another: the slow ones are the baseline.
    assert regressions_of([20, 20, 20, 5, 5, 5, 22], [100 * M] * 7, python=pythons) == []
    # Mixed, the fast ones would have made it a regression.
    assert regressions_of([20, 20, 20, 5, 5, 5, 22], [100 * M] * 7, python=[PY] * 7) == [("wall", 4.4)]


def test_the_judged_build_is_the_latest_success_and_baselines_reach_before_the_shown_runs() -> None:
    builds = [build("pkg", None, wall=10, order=i) for i in range(3)]  # schema 1 builds: no run
    builds += [build("pkg", 1, wall=20), build("pkg", 2, wall=30, ok=False)]
    report = analyse([run(1), run(2)], builds)
    assert [(r.metric, r.value, r.median, r.baseline, r.run_id) for r in report.regressions] == [
        ("wall", 20, 10, 3, 1)]


@pytest.mark.parametrize(
    ("outcomes", "state", "flips"),
    [
        (["built", "built", "failed"], "newly failing", 1),
        (["failed", "failed", "built"], "fixed", 1),
        (["built", "failed", "failed"], "failing", 1),
        (["failed"], "failing", 0),
        (["built", "failed", "built", "built"], "ok", 2),  # shown: it flipped
        (["failed", "built", "failed"], "newly failing", 2),
        # stopped builds and runs without the package say nothing
        (["built", "stopped", None, "failed"], "newly failing", 1),
        (["built", "built", "stopped"], None, 0),
        (["built", "built"], None, 0),
    ],
)
def test_status_changes(outcomes: list[str | None], state: str | None, flips: int) -> None:
    builds = [build("pkg", index + 1, ok=outcome == "built", outcome=outcome)
              for index, outcome in enumerate(outcomes) if outcome is not None]
    changes = analyse([run(index + 1) for index in range(len(outcomes))], builds).changes
    assert [(change.state, change.flips) for change in changes] == ([] if state is None else [(state, flips)])
    if state is not None:
        assert changes[0].outcomes == tuple(outcomes)
        assert changes[0].flipping is (flips >= 2)
        assert (changes[0].error is not None) is state.endswith("failing")


def test_trends_line_up_with_the_runs_slowest_first() -> None:
    builds = [build("a", 1, wall=5, peak=10 * M), build("a", 3, wall=6, peak=None),
              build("b", 2, wall=50, ok=False), build("b", 3, wall=40, peak=20 * M),
              build("c", 9, wall=99)]  # a run not shown
    report = analyse([run(3), run(1), run(2)], builds)
    assert [r.id for r in report.runs] == [1, 2, 3]
    assert [(t.name, t.walls, t.peaks, t.outcomes) for t in report.trends] == [
        ("b", (None, None, 40), (None, None, 20 * M), (None, "failed", "built")),
        ("a", (5, None, 6), (10 * M, None, None), ("built", None, "built")),
    ]
    assert report.trends[1].last_peak == 10 * M
    assert [t.name for t in analyse([run(1), run(2), run(3)], builds, package="a").trends] == ["a"]


def test_predictions_of_the_last_run_largest_miss_first() -> None:
    builds = [build("a", 1, peak=100 * M, predicted=50 * M),  # an older run: not this one
              build("a", 2, peak=90 * M, predicted=100 * M), build("b", 2, peak=300 * M, predicted=200 * M),
              build("c", 2, peak=None, predicted=100 * M), build("d", 2, peak=10 * M, predicted=None)]
    report = analyse([run(1), run(2), run(3)], builds)  # run 3 built nothing
    assert report.prediction_run == 2
    assert [(p.name, round(p.error, 2)) for p in report.predictions] == [("b", 0.5), ("a", -0.1)]


def test_no_runs_no_report() -> None:
    report = analyse([], [build("a", None)])
    assert (report.trends, report.regressions, report.changes, report.predictions, report.tail) == ((), (), (), (),
                                                                                                    None)


def spans(*intervals: tuple[str, float, float]) -> list[BuildRecord]:
    return [build(name, 1, start=start, wall=end - start) for name, start, end in intervals]


@pytest.mark.parametrize(
    ("intervals", "peak", "starts_at", "in_tail"),
    [
        # two slots: "long" runs on alone once the short ones are done
        ([("long", 0, 10), ("s1", 0, 2), ("s2", 2, 4), ("s3", 4, 6)], 2, 6, [("long", 4)]),
        # one at a time: no tail
        ([("a", 0, 2), ("b", 2, 5)], 1, 5, []),
        # three at once at the start, then two: the tail starts at the first end
        ([("a", 0, 3), ("b", 0, 8), ("c", 0, 9)], 3, 3, [("c", 6), ("b", 5)]),
        # the peak comes back later: the tail starts at its last drop
        ([("a", 0, 2), ("b", 0, 4), ("c", 3, 6), ("d", 5, 7)], 2, 6, [("d", 1)]),
        # builds that touch never ran at once
        ([("a", 0, 2), ("b", 2, 4), ("c", 2, 9)], 2, 4, [("c", 5)]),
    ],
)
def test_tail(intervals: list[tuple[str, float, float]], peak: int, starts_at: float,
              in_tail: list[tuple[str, float]]) -> None:
    found = tail(1, spans(*intervals))
    assert found is not None
    assert (found.peak_concurrency, found.starts_at - 1000.0) == (peak, starts_at)
    assert [(b.name, b.in_tail_s) for b in found.builds] == in_tail
    assert found.span_s == max(end for _, _, end in intervals) - min(start for _, start, _ in intervals)


def test_the_report_is_json_ready() -> None:
    import json

    builds = [build("a", i, wall=10 + 10 * (i == 5), predicted=M, ok=i != 3) for i in range(1, 6)]
    data = json.loads(json.dumps(analyse([run(i) for i in range(1, 6)], builds).to_json()))
    assert [r["id"] for r in data["runs"]] == [1, 2, 3, 4, 5]
    assert data["runs"][0]["makespan_s"] == 60
    assert data["regressions"] == [{"name": "a", "run_id": 5, "metric": "wall", "value": 20, "median": 10,
                                    "baseline": 3, "ratio": 2.0}]
    assert data["changes"] == [{"name": "a", "state": "ok", "flips": 2, "flipping": True,
                                "outcomes": ["built", "built", "failed", "built", "built"], "error": None}]
    assert data["tail"]["run_id"] == 5 and "1.25x" in data["regression_rule"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 4, 8], "▁▂▄█"),  # heights from zero: 8 is eight times 1
        ([None, 0, 5, None], " ▁█ "),  # a run without a value stays blank
        ([0, 0], "▁▁"),
        ([None], " "),
    ],
)
def test_sparkline(values: list[float | None], expected: str) -> None:
    assert sparkline(values) == expected


def test_svg_sparklines_break_at_gaps_and_keep_lone_points() -> None:
    svg = sparkline_svg([1.0, None, 2.0, None, 4.0, 4.0], title="a <b>")
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 3  # 1 and 2 alone; the last point marked
    assert "<title>a &lt;b&gt;</title>" in svg
    assert sparkline_svg([None, None], title="x") == '<span class="none">-</span>'
