"""A queued source gives back the very source it was made of, whether the queue kept it whole or made it again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sdists import make_sdist

from orchestrator.build.sources import Source, sdist_source, tree_source
from orchestrator.pipeline import BuildSettings
from orchestrator.policy.admission import Limits
from orchestrator.queued import JobMaker, QueuedSource


@pytest.fixture
def jobs(tmp_path: Path) -> JobMaker:
    settings = BuildSettings(wheelhouse=tmp_path / "wheelhouse", log_dir=tmp_path / "logs", history_path=None,
                             limits=Limits(max_builds=2, memory_limit=None, min_free_memory=0, max_load=None),
                             memory_per_build=2**30, build_env_dir=tmp_path / "envs")
    return JobMaker(settings=settings, wheelhouse=tmp_path / "wheelhouse", env_cache=tmp_path / "envs", environ={})


def linked(tmp_path: Path, name: str) -> Path:
    """A link named ``name`` to an sdist of another name: the source is named by the link, its file by the target."""
    link = tmp_path / "links" / name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(make_sdist(tmp_path / "store", "target"))
    return link


def tree(tmp_path: Path) -> Path:
    folder = tmp_path / "tree"
    folder.mkdir()
    (folder / "pyproject.toml").write_text('[project]\nname = "Tree"\nversion = "3.0"\n')
    return folder


@pytest.mark.parametrize(("make", "kept_whole"), [
    (lambda tmp_path: sdist_source(make_sdist(tmp_path, "plain")), False),
    (lambda tmp_path: sdist_source(make_sdist(tmp_path, "Mixed_Case.Name")), False),  # its file name not canonical
    # The link's name says what it is, its target (the source's location) another thing: kept whole.
    (lambda tmp_path: sdist_source(linked(tmp_path, "other-2.0.tar.gz")), True),
    (lambda tmp_path: tree_source(tree(tmp_path)), True),  # its pyproject.toml may change while it waits
    (lambda tmp_path: dataclasses.replace(sdist_source(make_sdist(tmp_path, "upper")), sha256="AB" * 32), True),
])
def test_the_queued_source_is_the_source(tmp_path: Path, jobs: JobMaker, make: object, kept_whole: bool) -> None:
    assert callable(make)
    source: Source = make(tmp_path)
    queued = QueuedSource.of(source, learned=False, jobs=jobs)
    assert queued.source() == source
    assert (queued.whole is not None) == kept_whole
    assert queued.key == source.key and queued.sha256 == source.sha256
    job = queued.build_job(2**30)
    assert (job.key, job.source, job.name, job.version, job.sha256) == (
        source.key, source.path, source.name, source.version, source.sha256)
