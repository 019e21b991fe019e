"""Memory admission end to end: real workers whose fake backends hold real memory.

Each fake build here allocates (and touches) ``alloc_mb`` megabytes for ``sleep``
seconds, so the scheduler's RSS sampling, reservations, requeues and the history
see real numbers. The backend's own start/end events tell how many ran at once.
The CPU rule's tests, at the end, use backends that sleep (idle) or spin (busy).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import orchestrate, pinned_to
from sdists import BACKEND, make_sdist, max_concurrency, read_events

from orchestrator.policy.history import SUCCESS, BuildRecord, History
from orchestrator.resources import CPU_WINDOW, cgroup_cpu_quota
from orchestrator.units import format_size

MiB = 1024**2
GiB = 1024**3


def report_builds(path: Path) -> dict[str, dict[str, Any]]:
    return {record["name"]: record for record in json.loads(path.read_text())["builds"]}


def test_memory_limit_caps_concurrency_below_max_builds(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    for i in range(5):
        make_sdist(tmp_path / "sdists", f"big{i}", alloc_mb=300, sleep=1, events=str(events))
    report = tmp_path / "report.json"
    # The CPU rule is off: filling the memory keeps a CPU busy, and other load on the machine would count too.
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--memory-limit", "1G",
                         "--memory-per-build", "400M", "--max-builds", "5", "--max-cpu", "0", "--report-json", report)
    assert result.returncode == 0, result.stderr
    # 2 x 400M fits in 1G, a third does not: the count cap of 5 never binds. Two builds' trees (300 MiB each,
    # and their processes' own 50-80 MiB) stay well under the limit: none is stopped.
    assert max_concurrency(read_events(events)) == 2
    records = report_builds(report)
    assert sorted(records) == [f"big{i}" for i in range(5)]
    for record in records.values():
        assert record["status"] == "built"
        assert record["predicted_rss_bytes"] == 400 * MiB
        assert record["peak_rss_bytes"] > 300 * MiB
        assert record["memory_requeues"] == 0
    waits = [line for line in result.stderr.splitlines() if "memory limit reserved, needs 400.0 MiB" in line]
    assert waits
    assert len(waits) <= 3  # announced once per waiting build, not once per sample
    # The report says how long each build waited, and why: the third waited for one of the
    # first two to end; of the last two, at least one waited for memory as the next in line.
    held = [record for record in records.values() if "memory_limit" in record["waits"]]
    assert len(held) >= 2
    for record in held:
        assert record["waits"]["memory_limit"] > 0
        assert record["waited_s"] >= record["waits"]["memory_limit"]
        assert "memory limit reserved, needs 400.0 MiB" in record["wait_reason"]


def test_too_low_need_is_requeued_then_learned_from_history(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    for i in range(4):
        make_sdist(tmp_path / "sdists", f"grow{i}", alloc_mb=400, sleep=1.5, events=str(events))
    report = tmp_path / "report.json"
    # The CPU rule is off: the builds must overlap for the cold run to feel memory pressure, whatever else runs.
    args = ("build", tmp_path / "sdists", "-w", tmp_path / "wh",
            "--memory-per-build", "200M", "--max-builds", "5", "--max-cpu", "0", "--report-json", report)

    # All four start (4 x 200M fits in 1G), then use some 1.8 GiB: builds are stopped until two are left.
    cold = orchestrate(*args, "--memory-limit", "1G")
    assert cold.returncode == 0, cold.stderr  # requeues are not failures, and not --retries (0)
    records = report_builds(report)
    assert [record["status"] for record in records.values()] == ["built"] * 4
    assert sum(record["memory_requeues"] for record in records.values()) >= 1
    assert all(record["attempts"] == 1 for record in records.values())
    assert "stopped under memory pressure" in cold.stderr
    assert "memory requeue 1" in cold.stderr

    with sqlite3.connect(tmp_path / "state" / "history.sqlite3") as db:
        peaks = dict(db.execute("SELECT name, peak_rss_bytes FROM builds WHERE status = 'success'").fetchall())
    assert sorted(peaks) == [f"grow{i}" for i in range(4)]
    assert all(peak > 400 * MiB for peak in peaks.values())

    cold_events = len(read_events(events))
    # Learned needs are about 550 MiB (a peak of 400 MiB and the processes' own 50-80 MiB, plus 20%). Under
    # 1400M exactly two fit for any peak from 389 to 583 MiB, whatever the worker's own overhead.
    warm = orchestrate(*args, "--memory-limit", "1400M", "--force")
    assert warm.returncode == 0, warm.stderr
    records = report_builds(report)
    for name, record in records.items():
        assert record["predicted_rss_bytes"] == math.ceil(peaks[name] * 1.2)
        assert record["memory_requeues"] == 0
    assert "stopped under memory pressure" not in warm.stderr
    assert max_concurrency(read_events(events)[cold_events:]) == 2  # with 200M needs all 4 would start


def test_predictions_come_from_builds_for_the_same_interpreter(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "same-python")
    make_sdist(tmp_path / "sdists", "other-python")
    this_python = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"
    with History(tmp_path / "state" / "history.sqlite3") as history:
        for name, python in (("same-python", this_python), ("other-python", "cpython-2.7")):
            history.record(BuildRecord(name=name, version="1.0", sdist_sha256=None, python=python,
                                       peak_rss_bytes=GiB, wall_s=1.0, cpu_s=1.0, status=SUCCESS,
                                       started_at=0.0, finished_at=1.0))
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--memory-per-build", "300M",
                         "--max-builds", "1", "--report-json", report)
    assert result.returncode == 0, result.stderr
    records = report_builds(report)
    assert records["same-python"]["predicted_rss_bytes"] == math.ceil(GiB * 1.2)  # one peak plus 20%
    assert records["other-python"]["predicted_rss_bytes"] == 300 * MiB  # another interpreter's peak is no guide


def test_package_override_sets_the_predicted_need(tmp_path: Path) -> None:
    make_sdist(tmp_path / "sdists", "pinned")
    make_sdist(tmp_path / "sdists", "other")
    config = tmp_path / "orchestrate.toml"
    config.write_text('[packages.Pinned]\nmemory = "3G"\n')
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--memory-per-build", "300M",
                         "--config", config, "--report-json", report)
    assert result.returncode == 0, result.stderr
    records = report_builds(report)
    assert records["pinned"]["predicted_rss_bytes"] == 3 * GiB
    assert records["other"]["predicted_rss_bytes"] == 300 * MiB
    assert "pinned-1.0: started (needs about 3.0 GiB)" in result.stderr


def test_builds_above_the_limit_run_alone_and_are_never_stopped(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    for name in ("huge-a", "huge-b"):
        make_sdist(tmp_path / "sdists", name, alloc_mb=600, sleep=1, events=str(events))
    report = tmp_path / "report.json"
    # The config, not --memory-per-build, puts them above the limit: a limit below that is a usage error.
    config = tmp_path / "orchestrate.toml"
    config.write_text('[packages.huge-a]\nmemory = "1G"\n[packages.huge-b]\nmemory = "1G"\n')
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--memory-limit", "400M",
                         "--memory-per-build", "300M", "--config", config, "--max-builds", "2", "--report-json", report)
    assert result.returncode == 0, result.stderr
    assert max_concurrency(read_events(events)) == 1
    assert result.stderr.count("more than the memory limit of 400.0 MiB; starting it alone") == 2
    assert "stopped under memory pressure" not in result.stderr
    for record in report_builds(report).values():
        assert record["peak_rss_bytes"] > 600 * MiB  # over the limit, alone, and left to finish


@contextlib.contextmanager
def usable_cpus(cpus: int) -> Iterator[None]:
    """Give the processes this thread starts exactly ``cpus`` usable CPUs (skip where there are fewer)."""
    quota = cgroup_cpu_quota()
    if quota is not None and math.ceil(quota) < cpus:
        pytest.skip(f"needs {cpus} CPUs, the cgroup quota allows {quota:g}")
    with pinned_to(cpus):
        yield


NESTED_JOBS = ("MAKEFLAGS", "CMAKE_BUILD_PARALLEL_LEVEL", "MAX_JOBS", "NPY_NUM_BUILD_JOBS")


def nested_jobs(jobs: int) -> dict[str, str]:
    return {"MAKEFLAGS": f"-j{jobs}", "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs), "MAX_JOBS": str(jobs),
            "NPY_NUM_BUILD_JOBS": str(jobs)}


@pytest.mark.parametrize(
    ("cpus", "max_builds", "user_env", "seen"),
    [
        (1, 1, {}, nested_jobs(1)),
        (2, 1, {}, nested_jobs(2)),  # one build gets every CPU
        (2, 2, {}, nested_jobs(1)),  # two share them
        (1, 2, {}, nested_jobs(1)),  # never less than one job
        (4, 2, {}, nested_jobs(2)),
        (4, 3, {}, nested_jobs(1)),  # rounded down: never oversubscribe
        # What the user set is passed through untouched, and only that.
        (2, 1, {"MAKEFLAGS": "-j7"}, {**nested_jobs(2), "MAKEFLAGS": "-j7"}),
        (2, 2, {"MAX_JOBS": "3", "NPY_NUM_BUILD_JOBS": "5"},
         {"MAKEFLAGS": "-j1", "CMAKE_BUILD_PARALLEL_LEVEL": "1", "MAX_JOBS": "3", "NPY_NUM_BUILD_JOBS": "5"}),
    ],
)
def test_builds_see_nested_parallelism_caps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int, max_builds: int, user_env: dict[str, str],
    seen: dict[str, str],
) -> None:
    for name in NESTED_JOBS:
        monkeypatch.delenv(name, raising=False)
    events = tmp_path / "events.log"
    make_sdist(tmp_path / "sdists", "nested", events=str(events), record_env=list(NESTED_JOBS))
    with usable_cpus(cpus):  # the split alone: with the jobserver, tests/test_jobserver.py
        result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", str(max_builds),
                             "--jobserver", "off", env=user_env)
    assert result.returncode == 0, result.stderr
    (start,) = [event for event in read_events(events) if event["event"] == "start"]
    assert start["env"] == seen


TOTAL_MEMORY = psutil.virtual_memory().total


@pytest.mark.parametrize(
    ("env", "held_by", "waiting", "warning"),
    [
        # 300M + 300M do not fit under 500M: one at a time.
        ({"ORCHESTRATE_MEMORY_LIMIT": "500M", "ORCHESTRATE_MEMORY_PER_BUILD": "300M"}, "memory_limit",
         "waiting: 300.0 MiB of the 500.0 MiB memory limit reserved, needs 300.0 MiB", None),
        # No build can leave all of RAM free: each runs alone, with a warning, and none waits forever.
        ({"ORCHESTRATE_MEMORY_LIMIT": "64G", "ORCHESTRATE_MIN_FREE_MEMORY": "100%",
          "ORCHESTRATE_MEMORY_PER_BUILD": "300M"}, "free_memory",
         f"needs 300.0 MiB and {format_size(TOTAL_MEMORY)} kept free",
         f"less than the {format_size(TOTAL_MEMORY)} to keep; starting it alone"),
    ],
)
def test_memory_settings_from_the_environment(
    tmp_path: Path, env: dict[str, str], held_by: str, waiting: str, warning: str | None
) -> None:
    events = tmp_path / "events.log"
    for name in ("env-a", "env-b", "env-c"):
        make_sdist(tmp_path / "sdists", name, sleep=0.5, events=str(events))
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "3",
                         "--report-json", report, env=env)
    assert result.returncode == 0, result.stderr
    assert max_concurrency(read_events(events)) == 1
    assert waiting in result.stderr
    if warning:
        assert result.stderr.count(warning) == 3
    data = json.loads(report.read_text())
    limit = 500 * MiB if env["ORCHESTRATE_MEMORY_LIMIT"] == "500M" else 64 * GiB
    assert data["settings"]["memory_limit"] == limit
    assert data["settings"]["memory_per_build"] == 300 * MiB
    if "ORCHESTRATE_MIN_FREE_MEMORY" in env:
        assert data["settings"]["min_free_memory"] == TOTAL_MEMORY
    records = data["builds"]
    assert [record["status"] for record in records] == ["built"] * 3
    assert all(record["predicted_rss_bytes"] == 300 * MiB for record in records)
    held = [record for record in records if held_by in record["waits"]]
    assert len(held) == 2  # all but the first waited for the one before
    assert all(waiting in record["wait_reason"] for record in held)


def raise_load(at_least: float, timeout: float = 30.0) -> None:
    """Keep a CPU busy until the 1-minute load average reads at least ``at_least``.

    Linux updates the average every 5 s and decays it over a minute: once it is up,
    it stays above zero for the few seconds a test runs, even on an idle machine.
    """
    if not hasattr(os, "getloadavg"):
        pytest.skip("no load average on this platform")
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    deadline = time.monotonic() + timeout
    try:
        while os.getloadavg()[0] < at_least:
            assert time.monotonic() < deadline, "the load average never rose"
            time.sleep(0.5)
    finally:
        done.set()
        spinner.join()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_max_load_holds_builds_back_but_never_stalls_the_queue(tmp_path: Path, how: str) -> None:
    events = tmp_path / "events.log"
    for name in ("load-a", "load-b"):
        make_sdist(tmp_path / "sdists", name, sleep=0.5, events=str(events))
    report = tmp_path / "report.json"
    # Any load above zero is over a cap this small; nothing running, a build still starts.
    raise_load(0.05)
    option = ["--max-load", "0.0001"] if how == "option" else []
    env = {"ORCHESTRATE_MAX_LOAD": "0.0001"} if how == "environment" else {}
    # The CPU rule, checked before the load, is off: on a busy machine it would hold the second build instead.
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "2", "--max-cpu", "0",
                         "--report-json", report, *option, env=env)
    assert result.returncode == 0, result.stderr
    assert max_concurrency(read_events(events)) == 1
    assert "per CPU > 0.0001" in result.stderr
    data = json.loads(report.read_text())
    assert data["settings"]["max_load"] == 0.0001
    assert [record["status"] for record in data["builds"]] == ["built"] * 2
    (held,) = [record for record in data["builds"] if "load" in record["waits"]]
    assert held["wait_reason"].startswith("waiting: load ")


# -- the CPU rule: --max-cpu / ORCHESTRATE_MAX_CPU ---------------------------------------

# Whatever else runs on the machine, no memory rule holds these small builds back.
NO_MEMORY_RULES = ("--memory-limit", "1G", "--memory-per-build", "100M", "--min-free-memory", "0")


def cpu_waits(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {name: record["waits"]["cpu"] for name, record in records.items() if "cpu" in record["waits"]}


@pytest.mark.parametrize("how", ["option", "environment"])
def test_max_cpu_counts_a_build_not_yet_measured_as_one_busy_cpu(tmp_path: Path, how: str) -> None:
    for name in ("cpu-a", "cpu-b", "cpu-c"):
        make_sdist(tmp_path / "sdists", name, sleep=0.5)
    report = tmp_path / "report.json"
    # Under a cap of 1% of 2 CPUs, one busy CPU is over it, whatever else runs. Every
    # build counts as one until it has run CPU_WINDOW, so each build after the first waits
    # at least that long for the one before; and with nothing running the next one starts.
    option = ["--max-cpu", "1"] if how == "option" else []
    env = {"ORCHESTRATE_MAX_CPU": "1"} if how == "environment" else {}
    with usable_cpus(2):
        result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "3",
                             *NO_MEMORY_RULES, "--report-json", report, *option, env=env)
    assert result.returncode == 0, result.stderr
    cap = r"limit 0\.02 \(1% of 2 usable CPUs\)"
    assert re.search(rf"waiting: CPUs busy [\d.]+, {cap}; 1 just started, counted as one busy CPU each", result.stderr)
    assert result.stderr.count("(1% of 2 usable CPUs)") == 2  # once per held build, not per sample
    data = json.loads(report.read_text())
    assert data["settings"]["max_cpu"] == 0.01
    records = {record["name"]: record for record in data["builds"]}
    assert [record["status"] for record in records.values()] == ["built"] * 3
    held = cpu_waits(records)
    assert len(held) == 2
    assert all(seconds >= CPU_WINDOW for seconds in held.values())
    for name in held:
        assert records[name]["wait_reason"].startswith("waiting: ")
        assert re.search(rf"CPUs busy [\d.]+, {cap}", records[name]["wait_reason"])


# The fake backend, but spinning for ``busy`` CPU seconds (counted from the spin, not from
# its start-up), then writing a ``spun`` event, before it sleeps.
_SLEEP = 'time.sleep(CONFIG.get("sleep", 0))'
assert _SLEEP in BACKEND
BUSY_BACKEND = BACKEND.replace(_SLEEP, (
    "spin_from = time.process_time()\n"
    '    while time.process_time() - spin_from < CONFIG.get("busy", 0):\n'
    "        pass\n"
    '    _event("spun")\n'
    f"    {_SLEEP}"
))


def test_max_cpu_holds_builds_back_while_a_backend_keeps_a_cpu_busy(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    busy = 1.0
    for name in ("spin-a", "spin-b"):
        make_sdist(tmp_path / "sdists", name, busy=busy, events=str(events),
                   extra_files={"_fakebackend.py": BUSY_BACKEND.encode()})
    report = tmp_path / "report.json"
    # The backend runs in a grandchild of orchestrate (worker, then the hook process): the
    # measurement must sum the whole tree to see the spinning build as busy past CPU_WINDOW.
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "2",
                         *NO_MEMORY_RULES, "--max-cpu", "1", "--report-json", report)
    assert result.returncode == 0, result.stderr
    log = read_events(events)
    starts = {event["name"]: event["t"] for event in log if event["event"] == "start"}
    spun = {event["name"]: event["t"] for event in log if event["event"] == "spun"}
    first, second = sorted(starts, key=starts.__getitem__)
    assert starts[second] > spun[first]  # the second did not start while the first spun
    records = report_builds(report)
    assert [record["status"] for record in records.values()] == ["built"] * 2
    assert cpu_waits(records).keys() == {second}
    assert records[second]["waits"]["cpu"] >= busy
    assert records[first]["cpu_s"] >= busy


@pytest.mark.parametrize("how", ["option", "environment"])
def test_max_cpu_zero_turns_the_rule_off(tmp_path: Path, how: str) -> None:
    events = tmp_path / "events.log"
    for name in ("off-a", "off-b", "off-c"):  # each ends once all three have started (or 30 s later)
        make_sdist(tmp_path / "sdists", name, until_starts=3, events=str(events))
    report = tmp_path / "report.json"
    option = ["--max-cpu", "0"] if how == "option" else []
    env = {"ORCHESTRATE_MAX_CPU": "0"} if how == "environment" else {}
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "3",
                         *NO_MEMORY_RULES, "--report-json", report, *option, env=env)
    assert result.returncode == 0, result.stderr
    # All three start at once. On 2 CPUs the default rule would hold the third back at first.
    assert max_concurrency(read_events(events)) == 3
    assert "CPUs busy" not in result.stderr  # never held by the CPU rule
    data = json.loads(report.read_text())
    assert data["settings"]["max_cpu"] is None
    records = {record["name"]: record for record in data["builds"]}
    assert [record["status"] for record in records.values()] == ["built"] * 3
    assert cpu_waits(records) == {}


# The machine's busy CPUs count whatever else runs on it. This runs orchestrate with the probe it
# uses under a cgroup CPU quota, which leaves the machine unmeasured: the rule then counts the
# builds' own CPU, still measured for real, and other load on the machine changes nothing.
BUILDS_ONLY_PROBE = """
import dataclasses
import orchestrator.pipeline
from orchestrator.resources import SystemProbe

class BuildsOnlyProbe(SystemProbe):
    def read(self):
        return dataclasses.replace(super().read(), cpu_busy=None)

orchestrator.pipeline.SystemProbe = BuildsOnlyProbe
"""


def test_max_cpu_lets_idle_builds_overlap_by_default(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    builds = 4
    for i in range(builds):  # idle, each until all four have started (or 30 s later)
        make_sdist(tmp_path / "sdists", f"idle{i}", until_starts=builds, events=str(events))
    report = tmp_path / "report.json"
    with usable_cpus(2):
        result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", str(builds),
                             *NO_MEMORY_RULES, "--report-json", report, prelude=BUILDS_ONLY_PROBE)
    assert result.returncode == 0, result.stderr
    # Sleeping builds are measured as idle once they have run CPU_WINDOW: all four overlap.
    assert max_concurrency(read_events(events)) == builds
    data = json.loads(report.read_text())
    assert data["settings"]["max_cpu"] == 1.0  # the default, 100%
    records = {record["name"]: record for record in data["builds"]}
    assert [record["status"] for record in records.values()] == ["built"] * builds
    # Not measured yet, the first builds count as one CPU each: on 2 CPUs the third waits, briefly.
    assert re.search(r"waiting: CPUs busy with builds [\d.]+, limit 2\.00 \(100% of 2 usable CPUs\);"
                     r" \d+ just started, counted as one busy CPU each", result.stderr)
    assert cpu_waits(records)
