"""Each build's scratch folder on a tmpfs: its environment's view and pyproject_hooks' control folders off the disk.

Through the real path: ``orchestrate build`` with the fake backend, sandboxed and not, and the local executor with
real workers, its scratch folders where the test can look at them while a build runs.
"""

from __future__ import annotations

import json
import os
import queue
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import orchestrate
from sdists import make_sdist, read_events
from test_local_executor import sdist_job, temp  # noqa: F401 - the temp fixture

from orchestrator.build.jobserver import FIFO_NAME
from orchestrator.build.sandbox import probe
from orchestrator.executors import Exited, OutcomeReported, WorkerEvent
from orchestrator.executors.local import SCRATCH_TMPFS, WORK_PREFIX, LocalExecutor, tmpfs_folder
from orchestrator.executors.tokens import TokenPool
from orchestrator.jobs import Status

SHOW_PREFIX = ["python", "-c", "import os, sys; print(sys.prefix); print(os.path.realpath(sys.prefix))"]
"""What the fake backend runs in ``build_wheel`` (``run``): the build environment's path, and where it really is
(``python``: the first on the hook's PATH, the build environment's)."""


def _recorded(wheelhouse: Path, name: str, file: str) -> Any:
    wheel = next(wheelhouse.glob(f"{name}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        return json.loads(archive.read(f"{name}/{file}"))


def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("on_scratch", [True, False], ids=["scratch", "no-scratch"])
def test_a_builds_view_and_control_folders_are_in_its_scratch_folder_linked_from_its_work_folder(
        tmp_path: Path, temp: Path, on_scratch: bool) -> None:  # noqa: F811 - the fixture
    scratch, gate, events_file = tmp_path / "scratch", tmp_path / "gate", tmp_path / "events"
    scratch.mkdir()
    events: queue.Queue[WorkerEvent] = queue.Queue()
    executor = LocalExecutor(TokenPool(usable=2, share=0), scratch=scratch if on_scratch else None)
    executor.start(events.put)
    worker = executor.spawn()
    worker.stage(sdist_job(tmp_path, "gated", until=str(gate), events=str(events_file), write_site=True))
    worker.admit()
    try:
        _until(lambda: any(event["event"] == "start" for event in read_events(events_file)), "build_wheel started")
        (run_folder,) = temp.iterdir()
        (work,) = run_folder.iterdir()
        if on_scratch:
            (scratch_run,) = scratch.iterdir()
            assert scratch_run.name.startswith(f"{WORK_PREFIX}{os.getpid()}-")
            (own,) = scratch_run.iterdir()
            assert own.name.startswith("gated-1.0-")
            assert (work / "env").is_symlink() and os.readlink(work / "env") == str(own / "env")
            # What the build writes into its environment (write_site, after its start event) is in its scratch folder.
            _until(lambda: list((own / "env").rglob("orchestrate_marker.py")), "the marker written")
            # build_wheel's control folder (get_requires_for_build_wheel's is gone), nothing of it in the build's tmp.
            controls = sorted(path for path in own.iterdir() if path.is_dir() and path.name != "env")
            assert [sorted(entry.name for entry in folder.iterdir()) for folder in controls] == [["input.json"]]
            assert list((work / "tmp").iterdir()) == []
            # The jobserver's FIFO, made by the run at admission, is there too.
            assert (own / FIFO_NAME).is_fifo() and not (work / FIFO_NAME).exists()
        else:
            assert list(scratch.iterdir()) == []
            assert (work / "env").is_dir() and not (work / "env").is_symlink()
            assert [sorted(entry.name for entry in folder.iterdir()) for folder in (work / "tmp").iterdir()] == [
                ["input.json"]]
            assert (work / FIFO_NAME).is_fifo()
    finally:
        gate.touch()  # build_wheel goes on and ends
        received = [events.get(timeout=120)]
        while not isinstance(received[-1], Exited):
            received.append(events.get(timeout=120))
        worker.close()
        executor.close()
    outcome = received[-2]
    assert isinstance(outcome, OutcomeReported) and outcome.outcome.status is Status.BUILT, outcome
    assert list(temp.iterdir()) == [] and list(scratch.iterdir()) == []  # both folders go with the run


def test_start_sweeps_the_scratch_folders_of_runs_that_are_gone(tmp_path: Path, temp: Path) -> None:  # noqa: F811
    scratch = tmp_path / "scratch"
    dead = scratch / f"{WORK_PREFIX}{2**30}-abc" / "gone-1.0-x" / "env"  # above the kernel's largest pid
    alive = scratch / f"{WORK_PREFIX}{os.getpid()}-abc"
    for folder in (dead, alive):
        folder.mkdir(parents=True)
    executor = LocalExecutor(scratch=scratch)
    executor.start(lambda event: None)
    (own,) = [path for path in scratch.iterdir() if path != alive]
    executor.close()
    assert not own.exists()
    assert list(scratch.iterdir()) == [alive]


def _mounts() -> dict[str, tuple[str, list[str]]]:
    """Each mount point's file system type and mount options, the last mount at a point winning."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return {line.split()[4]: (line.split(" - ", 1)[1].split()[0], line.split()[5].split(",")) for line in lines}


def test_only_a_writable_executable_tmpfs_mount_is_taken_for_scratch(tmp_path: Path) -> None:
    assert tmpfs_folder(tmp_path) is None  # no mount point of its own: whatever holds it, not a tmpfs mount
    assert tmpfs_folder(Path("/proc")) is None  # a mount point, not a tmpfs
    mounts = _mounts()
    noexec = [point for point, (kind, options) in mounts.items() if kind == "tmpfs" and "noexec" in options]
    if noexec:
        assert tmpfs_folder(Path(noexec[0])) is None
    kind, options = mounts.get(str(SCRATCH_TMPFS), ("", []))
    if kind != "tmpfs" or "noexec" in options:
        pytest.skip(f"{SCRATCH_TMPFS} is no tmpfs, or one mounted noexec, here")
    assert tmpfs_folder(SCRATCH_TMPFS) == SCRATCH_TMPFS


SANDBOXES = ["no-sandbox", "sandbox"]


@pytest.mark.parametrize("mode", SANDBOXES)
def test_orchestrate_build_keeps_the_view_on_the_tmpfs_under_the_builds_own_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    if tmpfs_folder() is None:
        pytest.skip(f"{SCRATCH_TMPFS} is no writable tmpfs here")
    if mode == "sandbox":
        monkeypatch.delenv("ORCHESTRATE_SANDBOX")
        if probe().sandbox.tool == "none":
            pytest.skip("no sandbox here")
    make_sdist(tmp_path / "sdists", "where", run=[SHOW_PREFIX], write_site=True)
    make_sdist(tmp_path / "sdists", "after", run=[SHOW_PREFIX], check_site=True)
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("where", "after"):
        ((prefix, real),) = [out.splitlines() for out in _recorded(tmp_path / "wh", name, "run.json")]
        # The path the build sees is its own work folder's (the compiler cache maps that folder away) ...
        assert Path(prefix).name == "env" and Path(prefix).parent.name.startswith(f"{name}-1.0-")
        assert Path(prefix).parent.parent.name.startswith(WORK_PREFIX)
        assert not prefix.startswith(str(SCRATCH_TMPFS))
        # ... and what it is, on the tmpfs: a folder of the run's own there, gone once the run is.
        assert real.startswith(f"{SCRATCH_TMPFS}/{WORK_PREFIX}") and real.endswith("/env")
        assert not Path(real).parent.parent.exists()
