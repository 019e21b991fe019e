"""What a run keeps of each queued build: the queue of a run of thousands must cost little a source.

The run is the real one (``BuildRun``: the sources queued, their estimates, the scheduler's plan), in this process;
its builds go to fake workers (``fake_executor``), which end each as it starts. Memory is read with tracemalloc
when the first build starts: every source is queued then, none has ended, and no estimate has been made yet (they
wait for that moment: looking into thousands of sdists takes longer than queueing them).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import pytest
from fake_executor import FakeMachine
from packaging.utils import canonicalize_name
from sdists import make_sdist

from orchestrator import pipeline
from orchestrator.build.sources import Source, collect_sources, compiles, sdist_source
from orchestrator.buildstate import RunState
from orchestrator.jobs import Status
from orchestrator.pipeline import BuildRun, BuildSettings
from orchestrator.policy.admission import Limits, QueuedBuild
from orchestrator.queued import JobMaker, QueuedSource
from orchestrator.scheduler import BuildScheduler, SchedulerSettings


class FirstStart:
    """The observer: reads memory as the first build starts, then ends each build (failed) as it starts."""

    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine
        self.traced: int | None = None
        self.peak: int | None = None
        """The most traced at once until then: the queue's ordering among it."""
        self.started = threading.Event()

    def event(self, message: str) -> None:
        if ": started" not in message:
            return
        if self.traced is None:
            gc.collect()
            self.traced, self.peak = tracemalloc.get_traced_memory()
            self.started.set()
        (worker,) = [worker for worker in self.machine.busy() if message.startswith(f"{worker.key}: ")]
        worker.finish(1)

    def update(self, state: RunState) -> None:
        pass


def reference_record(source: Source) -> int:
    """Bytes of a plain tuple of what a queued build is: its file, name, version, digest and key (each string
    copied), and its need, size and expected time: the bound a queue entry must stay under."""
    fields = (str(source.path), source.name + "", str(source.version), str(source.sha256), source.key,
              2.0**30, 1000.0, 0.5)
    return sys.getsizeof(fields) + sum(sys.getsizeof(field) for field in fields)


def queued_bytes(folder: Path, count: int, monkeypatch: pytest.MonkeyPatch, *, handed_over: bool = False
                 ) -> tuple[int, Source]:
    """Bytes traced when the first of ``count`` queued sources starts, over those before the run; a source.

    ``handed_over``: the sources are listed in that time too, and handed over as the command does
    (``Collected.take_sources``), the run holding each as it queues it; else the caller holds them all."""
    for index in range(count):
        make_sdist(folder / "sdists", f"queued{index:04d}")
    first = sdist_source(folder / "sdists" / "queued0000-1.0.tar.gz")
    sources: Iterable[Source] = () if handed_over else collect_sources([folder / "sdists"]).sources
    machine = FakeMachine()
    observer = FirstStart(machine)
    monkeypatch.setattr(pipeline, "compiles", lambda source: observer.started.wait(30) and compiles(source))
    settings = BuildSettings(wheelhouse=folder / "wheelhouse", log_dir=folder / "logs", history_path=None,
                             limits=Limits(max_builds=2, memory_limit=None, min_free_memory=0, max_load=None),
                             memory_per_build=2**30, build_env_dir=folder / "envs")
    run = BuildRun(settings, observer, executor=machine, probe=machine)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        if handed_over:
            sources = collect_sources([folder / "sdists"]).take_sources()
        report = run.run(sources)
    finally:
        tracemalloc.stop()
    assert report.builds.counts[Status.FAILED.value] == count  # every source was queued, and started
    assert observer.traced is not None
    return observer.traced - before, first


def test_a_queued_source_costs_less_than_a_tuple_of_its_fields(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # What the run holds whatever its size (threads, its spool, the report) cancels out between two sizes.
    few, _ = queued_bytes(tmp_path / "few", 100, monkeypatch)
    many, source = queued_bytes(tmp_path / "many", 400, monkeypatch)
    per_source = (many - few) / 300
    bound = reference_record(source)
    # A BuildJob (its log path), a future for its estimate and a queue entry were about 3 KB a source.
    assert per_source < bound, f"{per_source:.0f} bytes a queued source, over {bound}"


def reference_source(source: Source) -> int:
    """Bytes of a plain tuple of what a source is: its file, name, version and digest (each string copied)."""
    fields = (source.location + "", source.name + "", str(source.version), str(source.sha256))
    return sys.getsizeof(fields) + sum(sys.getsizeof(field) for field in fields)


def test_a_queued_sdist_costs_less_than_its_source_with_its_queue_entry(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # As the command runs: the sources listed, then handed over one at a time, each held by its queue entry alone.
    few, _ = queued_bytes(tmp_path / "few", 100, monkeypatch, handed_over=True)
    many, source = queued_bytes(tmp_path / "many", 400, monkeypatch, handed_over=True)
    per_source = (many - few) / 300
    bound = reference_source(source) + reference_record(source) // 2
    # Its Source (its name and version among it) was held beside the entry (about 360 bytes, the test above): about
    # 750 bytes a queued sdist. Now its entry alone: less than its fields as strings, and half a tuple of them more.
    assert per_source < bound, f"{per_source:.0f} bytes a queued sdist, over {bound}"



def ordering_bytes(folder: Path, count: int) -> int:
    """The most bytes traced at once from the scheduler's start to its first build's, ``count`` builds queued before
    it (the queue ordered among it, by ``planning``'s longest-first order: no memory limit), over those before."""
    machine = FakeMachine()
    observer = FirstStart(machine)
    settings = BuildSettings(wheelhouse=folder / "wheelhouse", log_dir=folder / "logs", history_path=None,
                             limits=Limits(max_builds=2, memory_limit=None, min_free_memory=0, max_load=None),
                             memory_per_build=2**30, build_env_dir=folder / "envs")
    jobs = JobMaker(settings=settings, wheelhouse=folder / "wheelhouse", env_cache=folder / "envs", environ={})
    scheduler = BuildScheduler(SchedulerSettings(limits=settings.limits), probe=machine, observer=observer,
                               executor=machine)
    for index in range(count):
        source = Source(location=f"{folder}/queued{index:04d}-1.0.tar.gz", kind="sdist",
                        name=canonicalize_name(f"queued{index:04d}"), version="1.0", sha256=f"{index:064x}")
        scheduler.add(QueuedSource.of(source, learned=False, jobs=jobs), need=2**30, size=1000 + index % 7)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        scheduler.run()
    finally:
        tracemalloc.stop()
    assert observer.peak is not None
    return observer.peak - before


def test_ordering_the_queue_makes_no_view_of_each_build(tmp_path: Path) -> None:
    few = ordering_bytes(tmp_path / "few", 100)
    many = ordering_bytes(tmp_path / "many", 400)
    per_build = (many - few) / 300
    # Queued, each build keeps two times (queued at, held since: 48 bytes); ordered, less than a QueuedBuild more.
    times = 2 * sys.getsizeof(time.time())
    bound = times + sys.getsizeof(QueuedBuild(key="queued0000-1.0", need=2**30, expected_duration=None, size=1000))
    # The planner's view (a QueuedBuild each), a rank each and the sort's key tuples were about 350 bytes a build.
    assert per_build < bound, f"{per_build:.0f} bytes a queued build at the first start's peak, over {bound}"
