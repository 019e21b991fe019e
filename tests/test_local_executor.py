"""The local executor on its own: real worker processes, the JSON-line protocol, work folders."""

from __future__ import annotations

import os
import queue
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sdists import make_sdist, read_events

from orchestrator.executors import Exited, OutcomeReported, PhaseStarted, WorkerEvent
from orchestrator.executors.local import WORK_PREFIX, LocalExecutor
from orchestrator.jobs import PHASES, BuildJob, Status
from orchestrator.settings import IndexSettings


@pytest.fixture()
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary folder of the test's own, for the executor's work folders."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder


def sdist_job(tmp_path: Path, name: str, **behaviour: object) -> BuildJob:
    sdist = make_sdist(tmp_path / "sdists", name, **behaviour)  # type: ignore[arg-type]
    (tmp_path / "wh").mkdir(exist_ok=True)
    run = tmp_path / "build-envs"  # a run's folder of prepared environments, as run_env_cache makes it
    for folder in ("envs", "resolutions"):
        (run / folder).mkdir(parents=True, exist_ok=True)
    return BuildJob(key=f"{name}-1.0", source=sdist, kind="sdist", name=name, version="1.0", sha256=None,
                    wheelhouse=tmp_path / "wh", log_path=tmp_path / "logs" / f"{name}.log",
                    index=IndexSettings(), installer="pip", env_cache=run)


def events_until_exit(events: queue.Queue[WorkerEvent]) -> list[WorkerEvent]:
    received = [events.get(timeout=120)]
    while not isinstance(received[-1], Exited):
        received.append(events.get(timeout=120))
    return received


def test_a_staged_and_admitted_worker_reports_phases_outcome_and_exit(tmp_path: Path, temp: Path) -> None:
    events: queue.Queue[WorkerEvent] = queue.Queue()
    executor = LocalExecutor()
    executor.start(events.put)
    worker = executor.spawn()
    worker.stage(sdist_job(tmp_path, "fine"))
    worker.admit()

    *phases, outcome, exited = events_until_exit(events)

    assert phases == [PhaseStarted("fine-1.0", phase) for phase in PHASES]  # no extra requirements: each once
    assert isinstance(outcome, OutcomeReported) and outcome.outcome.status is Status.BUILT
    assert outcome.outcome.wheel == "fine-1.0-py3-none-any.whl"
    assert exited == Exited("fine-1.0", 0, None)
    (run_folder,) = temp.iterdir()
    worker.close()
    executor.close()
    assert list(temp.iterdir()) == []
    assert not run_folder.exists()


def test_a_worker_never_admitted_exits_and_its_work_folder_goes(tmp_path: Path, temp: Path) -> None:
    before = {child.pid for child in psutil.Process().children(recursive=True)}  # an earlier test's resource tracker
    events: queue.Queue[WorkerEvent] = queue.Queue()
    executor = LocalExecutor()
    executor.start(events.put)
    worker = executor.spawn()
    worker.stage(sdist_job(tmp_path, "unneeded"))
    (run_folder,) = temp.iterdir()
    assert [path.name.startswith("unneeded-1.0-") for path in run_folder.iterdir()] == [True]

    worker.close()
    executor.close()  # waits for the worker to go

    assert events.empty()  # never admitted: no events
    assert list(temp.iterdir()) == []
    assert not [child for child in psutil.Process().children(recursive=True)
                if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE]


def test_start_sweeps_the_work_folders_of_runs_that_are_gone(temp: Path) -> None:
    dead = temp / f"{WORK_PREFIX}{2**30}-abc"  # above the kernel's largest pid: no such process
    alive = temp / f"{WORK_PREFIX}{os.getpid()}-abc"
    other = temp / "someone-elses"
    for folder in (dead, alive, other):
        folder.mkdir()
    executor = LocalExecutor()
    executor.start(lambda event: None)
    executor.close()
    assert sorted(path.name for path in temp.iterdir()) == sorted([alive.name, other.name])


def test_workers_at_once_each_report_in_order_and_a_stopped_one_exits_once_its_tree_is_gone(
        tmp_path: Path, temp: Path) -> None:
    events: queue.Queue[WorkerEvent] = queue.Queue()
    executor = LocalExecutor()
    executor.start(events.put)
    child_pids = tmp_path / "children"
    jobs = [sdist_job(tmp_path, "first"), sdist_job(tmp_path, "second"),
            sdist_job(tmp_path, "stuck", hang=True, spawn_child=True, ignore_sigterm=True, events=str(child_pids))]
    workers = [executor.spawn() for _ in jobs]
    for worker, job in zip(workers, jobs, strict=True):
        worker.stage(job)
    for worker in workers:
        worker.admit()
    received: dict[str, list[WorkerEvent]] = {job.key: [] for job in jobs}
    stopped = False
    while not all(heard and isinstance(heard[-1], Exited) for heard in received.values()):
        try:
            event = events.get(timeout=60)
        except queue.Empty:
            raise AssertionError(received) from None
        received[event.key].append(event)
        if not stopped and event == PhaseStarted("stuck-1.0", "backend"):
            while not [event for event in read_events(child_pids) if event["event"] == "child"]:
                time.sleep(0.05)
            workers[2].stop(grace=0.2)  # SIGTERM ignored: SIGKILL after the grace
            stopped = True
    # Exited came once the stopper was done: the grandchild, in the tree, is gone (or a zombie) by then.
    (grandchild,) = [event["child"] for event in read_events(child_pids) if event["event"] == "child"]
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    for key in ("first-1.0", "second-1.0"):
        *phases, outcome, exited = received[key]
        assert phases == [PhaseStarted(key, phase) for phase in PHASES]
        assert isinstance(outcome, OutcomeReported) and outcome.outcome.status is Status.BUILT
        assert exited == Exited(key, 0, None)
    last = received["stuck-1.0"][-1]
    assert isinstance(last, Exited) and last.returncode != 0
    for worker in workers:
        worker.close()
    executor.close()
    assert list(temp.iterdir()) == []
