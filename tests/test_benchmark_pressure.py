"""What benchmarks/memory_pressure.py computes and reads: its schedule arithmetic (benchmarks/_packing.py) on
values worked out by hand; how it finds GNU parallel, reads free memory as parallel does and measures a
tool's process tree (_peers.py), with real processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

from _packing import memfree_setting, optimal_schedule, packing_bound, safe_cap  # noqa: E402
from _peers import gnu_parallel, parallel_free_bytes, run_sampled  # noqa: E402

GIB = 2**30


@pytest.mark.parametrize(("limit", "peaks", "cap"), [
    (8 * GIB, [4 * GIB, 1 * GIB], 2),  # two of the largest fit exactly
    (8 * GIB, [int(3.9 * GIB), GIB], 2),  # three would be 11.7 GiB
    (8 * GIB, [int(4.2 * GIB), GIB], 1),  # two of the largest would be 8.4 GiB: one at a time
    (8 * GIB, [9 * GIB], 1),  # above the limit alone: still one, never none
    (8 * GIB, [GIB] * 3, 8),  # the cap follows the largest peak, not the number of builds
])
def test_safe_cap_is_the_limit_over_the_largest_peak(limit: int, peaks: list[int], cap: int) -> None:
    assert safe_cap(limit, peaks) == cap


@pytest.mark.parametrize(("free", "limit", "largest", "memfree"), [
    (20 * GIB, 8 * GIB, 4 * GIB, 16 * GIB),  # start while the builds use at most 4 GiB
    (20 * GIB, 8 * GIB, 1 * GIB, 13 * GIB),  # at most 7 GiB
    (20 * GIB, 8 * GIB, 8 * GIB, 20 * GIB),  # the largest fills the limit: only while nothing runs
    (20 * GIB, 8 * GIB, 9 * GIB, 20 * GIB),  # above the limit: the same, never more than is free
])
def test_memfree_leaves_room_for_the_largest_build_under_the_limit(free: int, limit: int, largest: int,
                                                                  memfree: int) -> None:
    assert memfree_setting(free, limit, largest) == memfree


def test_packing_bound_parts() -> None:
    # longest 4; memory (3*4 + 2*3 + 2*3 + 1*2) / 4 = 6.5; count (4 + 3 + 3 + 2) / 2 = 6
    assert packing_bound([4, 3, 3, 2], [3 * GIB, 2 * GIB, 2 * GIB, GIB], 4 * GIB, 2) == {
        "longest": 4, "memory": 6.5, "count": 6}


def test_optimal_schedule_when_memory_binds() -> None:
    """A (3 GiB, 4 s) can run beside D (1 GiB, 2 s) only; B and C (2 GiB, 3 s each) run together before or
    after it: 4 + 3 = 7 s, above the packing bound's 6.5 s (test_packing_bound_parts)."""
    pytest.importorskip("ortools", reason="the CP-SAT model needs ortools (pip install ortools)")
    optimum = optimal_schedule([4, 3, 3, 2], [3 * GIB, 2 * GIB, 2 * GIB, GIB], 4 * GIB, 2, seconds=30)
    assert optimum is not None
    assert optimum.makespan_s == 7.0
    assert optimum.proven
    a, b, c, d = optimum.starts_s
    assert b == c  # together, in the 3 s outside A's 4
    assert a >= b + 3 or b >= a + 4  # never beside A
    assert a <= d and d + 2 <= a + 4  # beside A: beside B and C it would make three at once


def test_optimal_schedule_when_the_count_binds() -> None:
    """Three 2 s builds of 1 GiB under 10 GiB, two at a time: 4 s."""
    pytest.importorskip("ortools", reason="the CP-SAT model needs ortools (pip install ortools)")
    optimum = optimal_schedule([2, 2, 2], [GIB] * 3, 10 * GIB, 2, seconds=30)
    assert optimum is not None
    assert (optimum.makespan_s, optimum.proven) == (4.0, True)


def test_a_build_above_the_limit_runs_alone_in_the_optimal_schedule() -> None:
    """6 GiB for 5 s under a 4 GiB limit runs alone, as admission starts it; the 1 GiB build before or after:
    6 s (the model without the clamp had no solution)."""
    pytest.importorskip("ortools", reason="the CP-SAT model needs ortools (pip install ortools)")
    optimum = optimal_schedule([5, 1], [6 * GIB, GIB], 4 * GIB, 2, seconds=30)
    assert optimum is not None
    assert (optimum.makespan_s, optimum.proven) == (6.0, True)
    big, small = optimum.starts_s
    assert small + 1 <= big or small >= big + 5


def test_peaks_round_up_to_a_mebibyte() -> None:
    """Two builds of 2 GiB and one byte cannot share a 4 GiB limit: 2 x 3 s one after the other."""
    pytest.importorskip("ortools", reason="the CP-SAT model needs ortools (pip install ortools)")
    optimum = optimal_schedule([3, 3], [2 * GIB + 1] * 2, 4 * GIB, 2, seconds=30)
    assert optimum is not None
    assert optimum.makespan_s == 6.0


MEMINFO = """\
MemTotal:       24000000 kB
MemFree:         1000000 kB
MemAvailable:    5000000 kB
Buffers:          200000 kB
Cached:           300000 kB
SwapCached:         4000 kB
Active:           999999 kB
Shmem:             77777 kB
"""


def test_free_memory_is_counted_as_gnu_parallel_counts_it(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    # MemFree + Buffers + Cached + SwapCached, not MemAvailable
    assert parallel_free_bytes(meminfo) == (1000000 + 200000 + 300000 + 4000) * 1024


def _on_path(monkeypatch: pytest.MonkeyPatch, folder: Path, script: str) -> None:
    folder.mkdir()
    (folder / "parallel").write_text(f"#!/bin/sh\n{script}\n")
    (folder / "parallel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_gnu_parallel_is_told_apart_from_moreutils(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _on_path(monkeypatch, tmp_path / "bin", "echo 'parallel: invalid option -- -'; exit 1")
    path, why = gnu_parallel()
    assert path is None
    assert why == f"{tmp_path / 'bin' / 'parallel'} is not GNU parallel (Debian: apt-get install parallel)"


def test_gnu_parallel_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _on_path(monkeypatch, tmp_path / "bin", "echo 'GNU parallel 20221122'; echo 'Copyright'")
    assert gnu_parallel() == (str(tmp_path / "bin" / "parallel"), "GNU parallel 20221122")


def test_gnu_parallel_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gnu_parallel() == (None, "not installed (Debian: apt-get install parallel)")


HOLD = "import sys, time; data = b'x' * (int(sys.argv[1]) << 20); time.sleep(float(sys.argv[2]))"
"""Holds ``argv[1]`` MiB, touched, for ``argv[2]`` seconds."""


def test_the_sampler_sums_the_rss_of_the_whole_tree() -> None:
    """A parent holding 100 MiB runs a child holding 300 MiB: the peak counts both, and no more than both
    with two interpreters besides."""
    parent = (f"import subprocess, sys; data = b'x' * (100 << 20);"
              f" subprocess.run([sys.executable, '-c', {HOLD!r}, '300', '1.5'], check=True)")
    sampled = run_sampled("tree", [sys.executable, "-c", parent], env=dict(os.environ), interval=0.05, timeout=60)
    assert 400 * 2**20 <= sampled.peak_tree_rss_bytes < 500 * 2**20


def test_a_run_past_its_timeout_is_stopped_with_its_tree(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = (f"import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', {HOLD!r}, '1', '600']);"
              f" open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(600)")
    with pytest.raises(SystemExit, match=r"^slow: still running after 2 s \(--run-timeout\); stopped it$"):
        run_sampled("slow", [sys.executable, "-c", parent], env=dict(os.environ), interval=0.05, timeout=2)
    child = int(pid_file.read_text())
    alive = psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    if alive:  # an orphan now, which the leftover check of conftest cannot see: stop it before failing
        psutil.Process(child).kill()
    assert not alive


def test_a_failed_run_ends_the_benchmark_saying_which(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=rf"^uv-safe: {sys.executable} exited with 3$"):
        run_sampled("uv-safe", [sys.executable, "-c", "print('what it said'); raise SystemExit(3)"],
                    env=dict(os.environ), interval=0.05, timeout=60)
    assert "what it said" in capsys.readouterr().out


def _run(label: str, tool: str, makespan: float, peak_ratio: float = 0.9) -> dict[str, object]:
    return {"run": label, "tool": tool, "makespan_s": makespan, "peak_ratio": peak_ratio}


def test_a_round_judges_every_warm_run_against_uv_at_both_caps() -> None:
    from memory_pressure import round_ratios

    judged = round_ratios([
        _run("cold", "orchestrate", 30.0, peak_ratio=1.05),  # at the limit + 5%: within
        _run("warm1", "orchestrate", 13.0),  # 13 / 20 = 0.65: at the target; 13 / 14 below uv-count
        _run("warm2", "orchestrate", 14.0),  # 14 / 14 = 1.0: not below uv-count
        _run("uv-safe", "uv", 20.0, peak_ratio=0.8),
        _run("uv-count", "uv", 14.0, peak_ratio=1.6),  # a peer's peak is no target of ours
    ])
    assert judged["ratios"] == {"warm1/uv-safe": 0.65, "warm2/uv-safe": 0.7, "warm1/uv-count": 0.929,
                                "warm2/uv-count": 1.0}
    assert judged["met"] == {"peak": True, "uv-safe": False, "uv-count": False}


def test_a_round_without_uv_judges_only_the_peaks() -> None:
    from memory_pressure import round_ratios

    judged = round_ratios([_run("cold", "orchestrate", 30.0, peak_ratio=1.06), _run("warm1", "orchestrate", 20.0)])
    assert judged == {"ratios": {}, "met": {"peak": False, "uv-safe": None, "uv-count": None}}


def test_the_summary_gives_each_round_and_the_median() -> None:
    from memory_pressure import round_ratios, summarize

    rounds = []
    for warm, uv in [(10.0, 20.0), (12.0, 16.0), (9.0, 15.0)]:  # 0.5, 0.75, 0.6 of uv at both caps
        runs = [_run("warm1", "orchestrate", warm), _run("uv-safe", "uv", uv), _run("uv-count", "uv", uv)]
        rounds.append({"solo": _run("solo", "orchestrate", 40.0), "runs": runs, **round_ratios(runs)})
    summary = summarize(rounds)
    assert summary["ratios"]["warm1/uv-safe"] == {"rounds": [0.5, 0.75, 0.6], "median": 0.6}
    assert summary["runs"]["warm1"]["makespan_s"] == [10.0, 12.0, 9.0]
    assert summary["runs"]["warm1"]["median_makespan_s"] == 10.0
    assert summary["met_in_every_round"] == {"peak": True, "uv-safe": False, "uv-count": True}
