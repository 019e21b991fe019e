"""What each farm machine does for the builds it runs, on `dask worker --nworkers 2` processes of one machine:
it stops its youngest build under memory pressure (the client requeues it), and it prepares each build
environment once for all its worker processes."""

from __future__ import annotations

import itertools
import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import orchestrate
from fake_executor import FakeClock, FakeMachine, G, Script, job
from sdists import make_sdist, read_events
from test_farm import FAST_CONNECT, Cluster, built_on, client_of
from test_pruning import age
from wheels import write_wheel

from orchestrator.buildstate import RunState
from orchestrator.executors import StoppedForMemory
from orchestrator.executors.dask import scheduler_limits
from orchestrator.jobs import Status
from orchestrator.scheduler import BuildScheduler, SchedulerSettings


@pytest.fixture(scope="module")
def one_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    """`dask scheduler` and `dask worker --nworkers 2 --nthreads 2`: one machine's two worker processes of two
    slots each, and that machine's folder (its TMPDIR and ORCHESTRATE_STATE_DIR are under it)."""
    folder = tmp_path_factory.mktemp("one-host")
    machine = folder / "machine"
    (machine / "tmp").mkdir(parents=True)
    cluster = Cluster(folder)
    try:
        cluster.start_scheduler()
        cluster.start_worker(2, nworkers=2, env={"TMPDIR": str(machine / "tmp"),
                                                 "ORCHESTRATE_STATE_DIR": str(machine / "state")})
        with client_of(cluster.address) as client:
            client.wait_for_workers(2, timeout=60)
        yield cluster, machine
    finally:
        cluster.stop()


def builds_of(report: Path) -> list[dict[str, Any]]:
    return list(json.loads(report.read_text())["builds"])


def test_a_machine_under_memory_pressure_stops_its_youngest_build_and_it_runs_again(
        one_host: tuple[Cluster, Path], tmp_path: Path) -> None:
    cluster, _ = one_host
    events = tmp_path / "events.jsonl"
    for index in range(4):  # two on each worker process; each pair admitted at 100M, then both take 200M more
        make_sdist(tmp_path / "sdists", f"grow{index}", alloc_mb=200, sleep=2, events=str(events),
                   record_parents=True)
    report = tmp_path / "report.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", cluster.address,
                         "--memory-per-build", "100M", "--memory-limit", "400M", "--max-cpu", "0",
                         "--report-json", report, "--no-history", env=FAST_CONNECT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output  # a requeue is no failure
    assert len(list((tmp_path / "wh").glob("*.whl"))) == 4
    records = builds_of(report)
    assert all(record["status"] == "built" and record["attempts"] == 1 for record in records), records
    requeued = {record["name"] for record in records if record["memory_requeues"]}
    assert requeued, output
    # Each stop is the machine's, saying where and why; the client's scheduler stopped none of its own.
    stops = [line for line in output.splitlines() if "stopped under memory pressure" in line]
    assert len(stops) == sum(record["memory_requeues"] for record in records), output
    host = socket.gethostname()
    assert all(f"stopped under memory pressure on {host} at " in line and "of the 400.0 MiB limit); it will run again"
               in line for line in stops), stops
    assert output.count("memory requeue 1, reached ") == len(requeued), output
    # A stopped build ran beside another (on the machine: either worker process), then ran again: never alone.
    # Which was the younger is admission.pick_victim's to say (test_admission).
    starts = [event for event in read_events(events) if event["event"] == "start"]
    ends = {event["pid"]: event["t"] for event in read_events(events) if event["event"] == "end"}
    runs = []  # (name, start, end): a stopped run ended before its build's next start
    for event in starts:
        later = [other["t"] for other in starts if other["name"] == event["name"] and other["t"] > event["t"]]
        runs.append((event["name"], event["t"], ends.get(event["pid"], min(later, default=float("inf")))))
    for record in records:  # a build stopped early in its growth is admitted again with too small a need: twice
        *stopped, _ = [run for run in runs if run[0] == record["name"]]
        assert len(stopped) == record["memory_requeues"], starts
        for _, start, end in stopped:
            assert [run for run in runs if run[0] != record["name"] and run[1] < end and start < run[2]], runs
    assert all(record["peak_rss_bytes"] >= 200 * 1024 * 1024 for record in records)


def test_the_scheduler_requeues_a_build_its_machine_stopped_and_stops_none_itself() -> None:
    """Under a farm's limits nothing is stopped by the scheduler, however full the machine reads; a build its
    machine stopped is requeued as a local one would be."""
    machine = FakeMachine(rss={"a-1.0": 3 * G, "b-1.0": 3 * G}, available={"b-1.0": 0})
    script, turns, starts = Script(), itertools.count(), itertools.count(1)

    def machine_stops_b(state: RunState) -> None:
        if len(state.running) == 2 and next(turns) == 5:  # sampled five times meanwhile, nothing free
            machine.sink(StoppedForMemory("b-1.0", "builder-2", 3 * G, "builds use 6.0 GiB of the 4.0 GiB limit"))
            machine.worker("b-1.0").finish(-signal.SIGTERM)

    def b_started() -> None:
        if next(starts) == 2:
            machine.worker("b-1.0").finish(0, built=True)

    script.on_update.append(machine_stops_b)
    script.on_event["b-1.0: started"] = b_started
    script.on_event["b-1.0: memory requeue 1"] = lambda: machine.worker("a-1.0").finish(0, built=True)
    builds = BuildScheduler(SchedulerSettings(limits=scheduler_limits(2), sample_interval=0.01, grace=0), probe=machine,
                            observer=script, executor=machine, clock=FakeClock())
    builds.add(job("a-1.0"), need=G, expected_duration=600.0)
    builds.add(job("b-1.0"), need=G)

    results = {result.name: result for result in builds.run()}

    assert all(worker.stops == [] for worker in machine.workers)  # the scheduler stopped none
    b = results["b"]
    assert b.status is Status.BUILT and b.memory_requeues == 1 and b.attempts == 1
    assert b.predicted_rss_bytes == int(3 * G * 1.2)
    stops = [event for event in script.events if "stopped under memory pressure" in event]
    assert stops == ["b-1.0: stopped under memory pressure on builder-2 at 3.0 GiB (builds use 6.0 GiB of the"
                     " 4.0 GiB limit); it will run again"]
    assert script.index("b-1.0: memory requeue 1, reached 3.0 GiB; now needs about 3.6 GiB")


@pytest.fixture
def find_links(tmp_path: Path) -> Path:
    folder = tmp_path / "find-links"
    folder.mkdir()
    write_wheel(folder, "tinydep", "1.0")
    return folder


def test_build_environments_are_prepared_once_per_machine(
        one_host: tuple[Cluster, Path], tmp_path: Path, find_links: Path) -> None:
    cluster, machine = one_host
    for index in range(4):
        make_sdist(tmp_path / "sdists", f"envy{index}", build_requires=["tinydep"], sleep=0.5)
    report = tmp_path / "report.json"
    args = ("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", cluster.address, "--no-index",
            "--find-links", find_links, "--max-cpu", "0", "--report-json", report, "--no-history", "--force")

    def run(*more: str) -> str:
        """One run; the logs the farm brought back of its builds, which both worker processes ran."""
        result = orchestrate(*args, *more, env=FAST_CONNECT)
        assert result.returncode == 0, result.stdout + result.stderr
        records = builds_of(report)
        with client_of(cluster.address) as client:
            assert {built_on(record) for record in records} == set(client.scheduler_info(n_workers=-1)["workers"])
        return "".join(Path(record["log"]).read_text() for record in records)

    logs = run()
    assert logs.count("preparing (tinydep==1.0)") == 1, logs
    assert logs.count("preparing (empty)") == 1, logs
    assert logs.count("reused (tinydep==1.0)") + logs.count("prepared by another build (tinydep==1.0)") == 3, logs
    runs = machine / "tmp" / "orchestrate-farm" / "build-envs" / "runs"
    assert runs.is_dir() and not list(runs.iterdir())  # the run's folder went with the run
    assert not (machine / "state" / "build-envs").exists()

    # --keep-build-envs: the machine keeps them in its own state folder, and the next run reuses them.
    assert run("--keep-build-envs").count("preparing (tinydep==1.0)") == 1
    logs = run("--keep-build-envs")
    assert "preparing" not in logs and logs.count("reused (tinydep==1.0)") == 4, logs
    store = machine / "state" / "build-envs"
    assert len([entry for entry in (store / "envs").iterdir() if entry.is_symlink()]) == 2  # empty, tinydep
    assert not list((store / "runs").iterdir())


def test_a_machine_prunes_its_kept_environments_as_a_run_joins(
        one_host: tuple[Cluster, Path], tmp_path: Path, find_links: Path) -> None:
    """--prune-unused-after reaches each farm machine: its kept envs no run used for the age go before the
    run's first build there, unless the run says never."""
    cluster, machine = one_host
    make_sdist(tmp_path / "sdists", "aged", build_requires=["tinydep"])
    report = tmp_path / "report.json"
    args = ("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--cluster", cluster.address, "--no-index",
            "--find-links", find_links, "--report-json", report, "--no-history", "--force", "--keep-build-envs")

    def run(*more: str) -> str:
        result = orchestrate(*args, *more, env=FAST_CONNECT)
        assert result.returncode == 0, result.stdout + result.stderr
        return "".join(Path(record["log"]).read_text() for record in builds_of(report))

    run()
    age(machine / "state", 50)
    logs = run()
    assert logs.count("preparing (tinydep==1.0)") == 1, logs  # the aged one was pruned as the run joined
    age(machine / "state", 50)
    logs = run("--prune-unused-after", "never")
    assert "preparing" not in logs and "reused (tinydep==1.0)" in logs, logs
