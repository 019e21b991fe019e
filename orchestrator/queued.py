"""A source as it waits in the build queue (:class:`QueuedSource`), and the job made from it as it is staged.

A run queues every source at once (the planner orders the whole queue), and thousands wait:
each is held as a small record naming its source, whose :class:`~orchestrator.jobs.BuildJob`
(its log path, its sandbox, its memory ceiling) :class:`JobMaker` makes only when a worker
takes it. A job each, held from the start, was about 500 bytes a queued source. Nor is the
:class:`~orchestrator.build.sources.Source` of an sdist held: its file's name says its name and
version, and it is made again from the record (its file and digest) as it is used (about 180
bytes a queued sdist: the ``Source``, its name and version).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.build.sources import Source, parse_sdist_name
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
        settings, source = self.settings, queued.source()
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
    is staged with its job; made by :meth:`of`."""

    key: str
    location: str
    """The source's :attr:`~orchestrator.build.sources.Source.location`."""
    digest: bytes | None
    """Its sha256, 32 bytes (48 fewer than its hex string, :attr:`sha256`); ``None``: :attr:`whole` holds it."""
    learned: bool
    """Its memory need was learned (history or the package's config): its build gets a memory ceiling, where the
    run has a cgroup."""
    jobs: JobMaker
    whole: Source | None
    """The source itself, where its file's name does not say what it is (a source tree, whose ``pyproject.toml``
    may change meanwhile; an sdist linked to under another name); ``None``: made again from :attr:`location`."""

    @classmethod
    def of(cls, source: Source, *, learned: bool, jobs: JobMaker) -> QueuedSource:
        """``source`` as the queue keeps it."""
        if source.kind == "sdist" and source.sha256 is not None:
            name, version = parse_sdist_name(os.path.basename(source.location))
            digest = bytes.fromhex(source.sha256)
            if name == source.name and str(version) == source.version and digest.hex() == source.sha256:
                return cls(source.key, source.location, digest, learned, jobs, None)
        return cls(source.key, source.location, None, learned, jobs, source)

    @property
    def sha256(self) -> str | None:
        """The source's digest, as its ``Source`` spells it."""
        return self.whole.sha256 if self.whole is not None else self.digest.hex() if self.digest is not None else None

    def source(self) -> Source:
        """The source, equal to the one queued."""
        if self.whole is not None:
            return self.whole
        name, version = parse_sdist_name(os.path.basename(self.location))
        return Source(location=self.location, kind="sdist", name=name, version=str(version), sha256=self.sha256)

    def build_job(self, need: int) -> BuildJob:
        return self.jobs.make(self, need)
