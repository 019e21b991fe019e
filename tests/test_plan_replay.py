"""benchmarks/plan_replay.py's replay of the scheduler's model, on schedules worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

from plan_replay import replay  # noqa: E402

from orchestrator.policy.admission import Limits  # noqa: E402

GIB = 2**30
LIMITS = Limits(max_builds=2, memory_limit=8 * GIB, min_free_memory=0, max_load=None)
NEEDS = {"p": 4 * GIB, "q": 4 * GIB, "r": 4 * GIB}
TRUTH = {"p": 6.0, "q": 6.0, "r": 12.0}


def test_planned_on_the_truth_the_longest_build_starts_first() -> None:
    # Two slots: r (12 s) in one, p then q (6 + 6 s) in the other.
    assert replay(TRUTH, TRUTH, NEEDS, LIMITS) == 12.0


def test_planned_on_a_wrong_estimate_the_longest_build_ends_alone() -> None:
    # r expected to take 1 s: p and q start first (0-6 s), then r alone (6-18 s).
    assert replay(TRUTH, {**TRUTH, "r": 1.0}, NEEDS, LIMITS) == 18.0


def test_needs_that_do_not_fit_together_run_one_after_another() -> None:
    # 5 GiB each under 8 GiB: one at a time, whatever the count cap: 6 + 6 + 12 s.
    assert replay(TRUTH, TRUTH, {name: 5 * GIB for name in TRUTH}, LIMITS) == 24.0
