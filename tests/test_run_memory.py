"""What a run keeps of each build once its builds have ended: the level its own memory ends the run at.

The run is the real one (``BuildRun``: the sources queued, the scheduler, each result spooled, the wheelhouse's
manifest), in this process, given the sources as the command line gives them (``Collected.take_sources``); its
builds go to fake workers (``fake_executor``), which build each as it starts. Memory is read with tracemalloc as
the run returns, its report and its wheelhouse still held: every build has ended then.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path

import pytest
from fake_executor import FakeMachine
from sdists import make_sdist

from orchestrator import pipeline
from orchestrator.build.sources import Source, collect_sources, sdist_source
from orchestrator.buildstate import RunState
from orchestrator.jobs import Status
from orchestrator.pipeline import BuildRun, BuildSettings
from orchestrator.policy.admission import Limits


class Builder:
    """The observer: builds each source as it starts; keeps nothing of a worker once it is done with."""

    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine

    def event(self, message: str) -> None:
        if ": started" not in message:
            return
        (worker,) = [worker for worker in self.machine.busy() if message.startswith(f"{worker.key}: ")]
        worker.finish(0, built=True)
        self.machine.workers.remove(worker)
        self.machine.staged.clear()

    def update(self, state: RunState) -> None:
        pass


def kept_bytes(folder: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Bytes traced as a run of ``count`` sources returns (its report and wheelhouse held), over those before it."""
    for index in range(count):
        make_sdist(folder / "sdists", f"kept{index:04d}")
    machine = FakeMachine()
    monkeypatch.setattr(pipeline, "compiles", lambda source: False)
    monkeypatch.setattr(pipeline, "check_wheels", lambda *args, **kwargs: ())  # the wheels are not there
    settings = BuildSettings(wheelhouse=folder / "wheelhouse", log_dir=folder / "logs", history_path=None,
                             limits=Limits(max_builds=2, memory_limit=None, min_free_memory=0, max_load=None),
                             memory_per_build=2**30, build_env_dir=folder / "envs")
    run = BuildRun(settings, Builder(machine), executor=machine, probe=machine)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        collected = collect_sources([folder / "sdists"])  # as the command does, then hands them over
        report = run.run(collected.take_sources())
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert report.builds.counts[Status.BUILT.value] == count  # every source was built, its wheel recorded
    assert not collected.sources
    return after - before


def reference_source(source: Source) -> int:
    """Bytes of a plain tuple of what a source is: its file, name, version and digest (each string copied): the
    bound of what a run may keep of each source once its build has ended (its manifest entry among it)."""
    fields = (source.location + "", source.name + "", str(source.version), str(source.sha256))
    return sys.getsizeof(fields) + sum(sys.getsizeof(field) for field in fields)


def test_an_ended_build_leaves_less_than_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the run holds whatever its size (threads, its spool, the report) cancels out between two sizes.
    few = kept_bytes(tmp_path / "few", 100, monkeypatch)
    many = kept_bytes(tmp_path / "many", 400, monkeypatch)
    per_build = (many - few) / 300
    bound = reference_source(sdist_source(tmp_path / "many" / "sdists" / "kept0000-1.0.tar.gz"))
    # The run held each source to its end (the command's list), its key, and a tuple and two strings a manifest
    # entry: about 870 bytes an ended build.
    assert per_build < bound, f"{per_build:.0f} bytes an ended build, over {bound}"
