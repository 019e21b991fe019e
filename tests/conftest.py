from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

CORPUS_BACKENDS = TESTS.parent.parent / "shared" / "corpus" / "backends"


@pytest.fixture(scope="session")
def _uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's own uv cache: nothing uv cached on this machine before (an sdist's metadata, which
    spares running its backend) changes what a test sees."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(autouse=True)
def _hermetic_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _uv_cache: Path) -> None:
    """Every test gets its own history and run folders, no ORCHESTRATE_* from the caller, the session's uv cache."""
    for name in list(os.environ):
        if name.startswith("ORCHESTRATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("UV_CACHE_DIR", str(_uv_cache))
    monkeypatch.setenv("ORCHESTRATE_STATE_DIR", str(tmp_path / "state"))
    # The fake backend reports to the test through files outside its build (events): a sandbox would stop it.
    # Tests of the sandbox itself, and of real backends, use the default (sandboxed) with the `sandboxed` fixture.
    monkeypatch.setenv("ORCHESTRATE_SANDBOX", "0")


@pytest.fixture
def sandboxed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds run with the default ``--sandbox``: sandboxed where bwrap works."""
    monkeypatch.delenv("ORCHESTRATE_SANDBOX")


@pytest.fixture
def hermetic_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pip setting of this machine (PIP_FIND_LINKS, a config file, the cache) reaches pip or the runs."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Fail a test that leaves any process of ours running."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    leftovers = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                leftovers.append(child)
        except psutil.NoSuchProcess:
            pass
    for child in leftovers:
        child.kill()
    assert not leftovers, f"processes left behind: {[p.pid for p in leftovers]}"


def orchestrate(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 240, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run the real ``orchestrate`` command in a subprocess; ``prelude``, Python code run in it first,
    can put a fake at a seam (``orchestrator.pipeline.SystemProbe``, say)."""
    command = ["-m", "orchestrator"] if not prelude else ["-c", f"{prelude}\nfrom orchestrator.cli import main\nmain()"]
    return subprocess.run(
        [sys.executable, *command, *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def backend_index_args() -> list[str]:
    """Index options for real build backends: the offline corpus folder when present, else PyPI."""
    if CORPUS_BACKENDS.is_dir():
        return ["--no-index", "--find-links", str(CORPUS_BACKENDS)]
    return []


@contextlib.contextmanager
def pinned_to(cpus: int) -> Iterator[None]:
    """Run this thread, and the processes it starts, on ``cpus`` of its CPUs only (skip where it has fewer)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    allowed = os.sched_getaffinity(0)
    if len(allowed) < cpus:
        pytest.skip(f"needs {cpus} CPUs")
    os.sched_setaffinity(0, sorted(allowed)[:cpus])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)
