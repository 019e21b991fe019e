"""The fork server: one process per run imports the build machinery, and every build's worker is a fork of it.

Real processes throughout: the local executor, its fork server, forked workers and the fake
backend's hooks, which record their own pid and their ancestors' (``record_parents``): the build's hook server,
its worker, the fork server.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from sdists import read_events
from test_local_executor import events_until_exit, sdist_job, temp  # noqa: F401 - the temp fixture

from orchestrator.executors import Exited, OutcomeReported, WorkerEvent
from orchestrator.executors.local import LocalExecutor, LocalWorker
from orchestrator.jobs import Status

pytestmark = pytest.mark.usefixtures("temp")  # the executor's work folders in the test's own folder


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def build(executor: LocalExecutor, sink: queue.Queue[WorkerEvent], tmp_path: Path, name: str,
          **behaviour: object) -> tuple[LocalWorker, list[WorkerEvent]]:
    worker = executor.spawn()
    worker.stage(sdist_job(tmp_path, name, **behaviour))
    worker.admit()
    received = events_until_exit(sink)
    worker.close()
    return worker, received


def outcome_of(received: list[WorkerEvent]) -> Status | None:
    return next((event.outcome.status for event in received if isinstance(event, OutcomeReported)), None)


def test_builds_in_turn_are_forks_of_one_server_each_hook_a_process_of_its_own(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    events: queue.Queue[WorkerEvent] = queue.Queue()
    executor = LocalExecutor()
    executor.start(events.put)
    try:
        for name in ("first", "second"):
            _, received = build(executor, events, tmp_path, name, events=str(log), record_parents=True)
            assert outcome_of(received) is Status.BUILT
        hooks = read_events(log)
        server = hooks[0]["parents"][2]
        assert psutil.Process(server).ppid() == os.getpid()  # the server outlives the builds it served
        assert "--fork-server" in psutil.Process(server).cmdline()
    finally:
        executor.close()

    assert [(hook["name"], hook["event"]) for hook in hooks] == [
        ("first", "requires"), ("first", "start"), ("first", "end"),
        ("second", "requires"), ("second", "start"), ("second", "end"),
    ]
    assert len({hook["pid"] for hook in hooks if hook["event"] != "end"}) == 4  # each hook in a fresh process
    first_worker = {hook["parents"][1] for hook in hooks if hook["name"] == "first"}
    second_worker = {hook["parents"][1] for hook in hooks if hook["name"] == "second"}
    assert len(first_worker) == len(second_worker) == 1 and first_worker != second_worker  # a fork per build
    assert {hook["parents"][2] for hook in hooks} == {server}  # both workers forked by the one server
    assert gone(server)  # and it ends with the run


def test_a_killed_build_takes_only_its_own_tree_and_the_next_build_runs(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    events: queue.Queue[WorkerEvent] = queue.Queue()
    executor = LocalExecutor()
    executor.start(events.put)
    try:
        worker = executor.spawn()
        worker.stage(sdist_job(tmp_path, "hangs", hang=True, spawn_child=True, events=str(log), record_parents=True))
        worker.admit()
        wait_for(lambda: any(hook["event"] == "child" for hook in read_events(log)))
        worker.kill()
        *_, exited = events_until_exit(events)
        worker.close()
        assert isinstance(exited, Exited) and exited.returncode < 0  # SIGTERM and SIGKILL at once: either
        (start, child) = [hook for hook in read_events(log) if hook["event"] in ("start", "child")]
        wait_for(lambda: all(gone(pid) for pid in (start["pid"], child["child"], *start["parents"][:2])), timeout=10)

        _, received = build(executor, events, tmp_path, "next", events=str(log), record_parents=True)
        assert outcome_of(received) is Status.BUILT
        (next_start,) = [hook for hook in read_events(log) if hook["name"] == "next" and hook["event"] == "start"]
        assert next_start["parents"][2] == start["parents"][2]  # the same server forked it
    finally:
        executor.close()


def test_a_dead_server_fails_its_running_build_as_killed_and_a_new_one_serves_the_next(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    events: queue.Queue[WorkerEvent] = queue.Queue()
    executor = LocalExecutor()
    executor.start(events.put)
    try:
        worker = executor.spawn()
        worker.stage(sdist_job(tmp_path, "slow", sleep=60, spawn_child=True, events=str(log), record_parents=True))
        worker.admit()
        wait_for(lambda: any(hook["event"] == "child" for hook in read_events(log)))
        (start, child) = [hook for hook in read_events(log) if hook["event"] in ("start", "child")]
        os.kill(start["parents"][2], signal.SIGKILL)  # the server, from outside (an OOM killer)

        *_, exited = events_until_exit(events)
        worker.close()
        assert isinstance(exited, Exited) and exited.killed_by == "SIGKILL"
        # The worker saw its parent go and took its build down: nothing of it is left.
        wait_for(lambda: all(gone(pid) for pid in (start["pid"], child["child"], *start["parents"][:2])), timeout=10)

        _, received = build(executor, events, tmp_path, "next", events=str(log), record_parents=True)
        assert outcome_of(received) is Status.BUILT
        (next_start,) = [hook for hook in read_events(log) if hook["name"] == "next" and hook["event"] == "start"]
        assert next_start["parents"][2] != start["parents"][2]  # forked by a new server
    finally:
        executor.close()


def test_what_the_server_imported_is_frozen_before_any_fork_collects_it() -> None:
    """A worker's collections never walk the build machinery it inherited (nor write to its shared pages)."""
    code = "import gc; from orchestrator.build import forkserver; forkserver.preload(); print(gc.get_freeze_count())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert int(done.stdout) > 10_000, done.stdout  # the imports of build, packaging, installer and the rest


def test_the_paths_every_sandbox_binds_are_resolved_in_the_server_before_any_fork() -> None:
    """A worker's ``sandbox.wrap`` finds the interpreter's folders and the home folder resolved: each is a dozen
    ``lstat`` calls a build in ``os.path.realpath``, the same answer every time."""
    code = ("from orchestrator.build import forkserver, sandbox; forkserver.preload(); "
            "print(sandbox._interpreter_folders.cache_info().currsize, sandbox._home.cache_info().currsize)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    interpreter, homes = map(int, done.stdout.split())
    assert interpreter == 1 and homes >= 1, done.stdout
