"""The CPU wait of each build: what its processes spent runnable but not running, sampled with its tree.

Real ``orchestrate build`` runs of fake sdists whose backends spend CPU in a child (as a compiler
would), pinned to one CPU so that two builds at once each wait for it about half of the time.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import orchestrate, pinned_to
from fake_executor import FakeMachine, FakeWorker, job
from sdists import make_sdist

from orchestrator.buildstate import Queued, Running
from orchestrator.resources import tree_usages

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the CPU wait is Linux's scheduler statistics")


def test_each_build_s_wait_for_a_cpu_is_reported_and_kept_in_the_history(tmp_path: Path) -> None:
    for name in ("left", "right"):
        make_sdist(tmp_path / "sdists", name, burn_s=1.0)
    report = tmp_path / "report.json"
    # Both at once, whatever the CPU use (--max-cpu 0): on one CPU, each second of CPU takes about two.
    args = ("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "2", "--max-cpu", "0",
            "--report-json", report)
    with pinned_to(1):
        first = orchestrate(*args)
        assert first.returncode == 0, first.stderr
        reported = {build["name"]: build for build in json.loads(report.read_text())["builds"]}
        second = orchestrate(*args, "--max-builds", "1", "--force")  # one at a time
        assert second.returncode == 0, second.stderr
    alone = {build["name"]: build for build in json.loads(report.read_text())["builds"]}
    with sqlite3.connect(tmp_path / "state" / "history.sqlite3") as db:
        rows = db.execute("SELECT name, run_id, wall_s, cpu_wait_s FROM builds ORDER BY id").fetchall()

    assert sorted((run, name) for name, run, *_ in rows) == [(1, "left"), (1, "right"), (2, "left"), (2, "right")]
    for name, run, wall, wait in rows:
        build = (reported if run == 1 else alone)[name]
        assert (wall, wait) == (pytest.approx(build["wall_s"], abs=0.001), build["cpu_wait_s"])  # the report's
    for name in ("left", "right"):
        assert reported[name]["cpu_s"] >= 1.0  # its burn, and the worker's own
        assert reported[name]["cpu_wait_s"] >= 0.3  # beside the other's burn on one CPU, it waited for it
        assert alone[name]["cpu_wait_s"] is not None


SPIN = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass"


def test_a_tree_s_wait_for_a_cpu_is_measured() -> None:
    # A parent and its child each spend a second of CPU on one CPU: together they wait about a second.
    with pinned_to(1):
        parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys\n"
                                   f"child = subprocess.Popen([sys.executable, '-c', {SPIN!r}])\n{SPIN}\nchild.wait()"])
    try:
        most = 0.0
        while parent.poll() is None:
            most = max(most, tree_usages([parent.pid])[parent.pid].cpu_wait_s or 0.0)
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    assert most >= 0.3


def test_a_build_s_wait_counts_what_its_tree_added_since_its_first_sample() -> None:
    item = Queued(job=job("a-1.0"), need=0, expected_duration=None, size=0, timeout=None)
    run = Running(item=item, handle=FakeWorker(FakeMachine()), started_at=0.0, deadline=None)
    run.add_wait(None)  # not measured
    assert run.cpu_wait_s is None
    run.add_wait(5.0)  # the worker waited before admission: the base
    assert run.cpu_wait_s is None
    run.add_wait(5.5)
    run.add_wait(6.5)
    assert run.cpu_wait_s == 1.5
    run.add_wait(0.25)  # a process that had waited 6.5 s exited; a new one has waited 0.25 s: not counted
    run.add_wait(1.25)  # ... but what it waits from then on is
    assert run.cpu_wait_s == 2.5
