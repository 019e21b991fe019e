"""A source as it waits in the build queue (:class:`QueuedSource`), and the job made from it as it is staged.

A run queues every source at once (the planner orders the whole queue), and thousands wait:
each is held as a small record naming its source, whose :class:`~orchestrator.jobs.BuildJob`
(its log path, its sandbox, its memory ceiling) :class:`JobMaker` makes only when a worker
takes it. A job each, held from the start, was about 500 bytes a queued source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.build.sources import Source
from orchestrator.jobs import BuildJob

if TYPE_CHECKING:
    from orchestrator.pipeline import BuildSettings

__all__ = ["JobMaker", "QueuedSource"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMaker:
    """Makes each queued source's :class:`BuildJob` as its build is staged: what is the same for every job of the
    run, held once."""

    settings: BuildSettings
    wheelhouse: Path
    env_cache: Path
    environ: dict[str, str]

    def make(self, queued: QueuedSource, need: int) -> BuildJob:
        settings, source = self.settings, queued.source
        override = settings.overrides.get(source.name)
        sandbox = settings.sandbox
        if override is not None and override.build_network is not None:
            sandbox = replace(sandbox, network=override.build_network)
        return BuildJob(
            key=queued.key,
            source=source.path,
            kind=source.kind,
            name=source.name,
            version=source.version,
            sha256=source.sha256,
            wheelhouse=self.wheelhouse,
            log_path=settings.log_dir / f"{queued.key}.log",
            index=settings.index,
            installer=settings.installer,
            env_cache=self.env_cache,
            environ=self.environ,
            sandbox=sandbox,
            memory_ceiling=settings.cgroup.ceiling(need) if settings.cgroup is not None and queued.learned else None,
            compiler_cache=settings.compiler_cache,
            nice=settings.nice,
            jobserver=settings.jobserver,
        )


@dataclass(frozen=True, slots=True)
class QueuedSource:
    """A source in the build queue as the scheduler keeps it (a :class:`~orchestrator.jobs.JobSpec`) until a worker
    is staged with its job."""

    key: str
    source: Source
    learned: bool
    """Its memory need was learned (history or the package's config): its build gets a memory ceiling, where the
    run has a cgroup."""
    jobs: JobMaker

    def build_job(self, need: int) -> BuildJob:
        return self.jobs.make(self, need)
