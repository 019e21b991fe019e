"""Prepared build environments: isolation, reuse, locking, killed preparations, persistence."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS_BACKENDS, orchestrate
from sdists import make_sdist
from wheels import write_wheel

from orchestrator.build.envcache import ENV_INFO, EnvCache, EnvView, PreparedEnv, compile_at_preparation
from orchestrator.build.envruns import run_env_cache
from orchestrator.build.sandbox import probe
from orchestrator.settings import IndexSettings

EXAMPLES = Path(__file__).parent.parent / "examples" / "sdists"

# A fake installer for the EnvCache unit tests: resolves to the request itself and
# "installs" by writing a module per pin, after an optional pause (to be caught mid-way).
FAKE_INSTALLER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    class FakeInstaller:
        name = "fake"
        seed_pip = False

        def __init__(self, record, pause=0.0):
            self.record, self.pause = Path(record), pause

        def resolve(self, requirements):
            return [r if "==" in r else r + "==1.0" for r in requirements]

        def install(self, venv, python, pins):
            with self.record.open("a") as f:
                f.write(f"{os.getpid()} {venv.name}\\n")
            purelib = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
            (purelib / "half_installed.py").write_text("X = 1\\n")
            time.sleep(self.pause)
            for pin in pins:
                (purelib / (pin.split("==")[0] + ".py")).write_text("X = 1\\n")
    """
)
namespace: dict[str, object] = {}
exec(FAKE_INSTALLER, namespace)  # noqa: S102 - the same class the subprocesses below define
FakeInstaller: Any = namespace["FakeInstaller"]

PREPARE_SCRIPT = FAKE_INSTALLER + textwrap.dedent(
    """
    import io
    from orchestrator.build.envcache import EnvCache
    from orchestrator.settings import IndexSettings

    run_dir, record, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cache = EnvCache(Path(run_dir), FakeInstaller(record, pause), index=IndexSettings(), log=io.StringIO())
    print(cache.prepare(["tinydep"]).path, flush=True)
    """
)


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / "envs").mkdir(parents=True)
    (run_dir / "resolutions").mkdir()
    return run_dir


def _logs(state: Path) -> str:
    return "".join(path.read_text() for path in sorted(state.glob("runs/*/logs/*.log")))


@pytest.fixture
def find_links(tmp_path: Path) -> Path:
    folder = tmp_path / "find-links"
    folder.mkdir()
    write_wheel(folder, "tinydep", "1.0")
    write_wheel(folder, "tinyextra", "2.0")
    return folder


def test_views_share_the_prepared_env_but_not_what_a_build_writes(tmp_path: Path) -> None:
    cache = EnvCache(_run_dir(tmp_path), FakeInstaller(tmp_path / "record"), index=IndexSettings(), log=io.StringIO())
    first = cache.view(tmp_path / "first")
    first.install(["tinydep"])
    second = cache.view(tmp_path / "second")
    second.install(["tinydep"])
    assert first.prepared.path == second.prepared.path
    write = "import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()['purelib'], 'marker.py').write_text('')"
    subprocess.run([first.python_executable, "-c", write], check=True)
    assert (first.purelib / "marker.py").is_file()
    probe = "import tinydep, importlib.util as u; print(u.find_spec('marker') is not None)"
    seen = subprocess.run([second.python_executable, "-c", probe], check=True, capture_output=True, text=True)
    assert seen.stdout.strip() == "False"  # tinydep comes from the prepared env; the marker stayed in `first`
    # The control: in the same view, the marker is visible, so the probe can see one.
    seen = subprocess.run([first.python_executable, "-c", probe], check=True, capture_output=True, text=True)
    assert seen.stdout.strip() == "True"
    assert len((tmp_path / "record").read_text().splitlines()) == 1


def test_a_store_not_made_yet_is_made_with_the_first_lock(tmp_path: Path) -> None:
    """A worker handed a run folder that does not exist yet (a build job run by itself) prepares its env there:
    the key's lock file is made with its folder."""
    run_dir = tmp_path / "run"
    cache = EnvCache(run_dir, FakeInstaller(tmp_path / "record"), index=IndexSettings(), log=io.StringIO())
    prepared = cache.prepare(())  # a build that requires nothing gets the empty env
    assert (prepared.path / "pyvenv.cfg").is_file()
    assert [path.name for path in (run_dir / "envs").glob("*.lock")] == [f"{prepared.key}.lock"]


def test_a_view_has_the_skeletons_top_level_links_and_the_folders_through_them(tmp_path: Path) -> None:
    """A prepared env whose platlib lies under a top-level link (``lib64 -> lib``, as virtualenv makes where the
    interpreter's platlib is ``lib64/...``): the view gets the link, the folder through it, and its prefix."""
    cache = EnvCache(_run_dir(tmp_path), FakeInstaller(tmp_path / "record"), index=IndexSettings(), log=io.StringIO())
    empty = cache.prepare(())
    site = f"python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    prepared = tmp_path / "prepared"
    (prepared / "bin").mkdir(parents=True)
    (prepared / "lib" / site).mkdir(parents=True)
    (prepared / "lib64").symlink_to("lib")
    (prepared / "pyvenv.cfg").write_text((empty.path / "pyvenv.cfg").read_text())
    (prepared / "bin" / "python").symlink_to(os.readlink(empty.path / empty.python))
    base = PreparedEnv(key="k", path=prepared, pins=(), python="bin/python", scripts="bin", purelib=f"lib/{site}",
                       platlib=f"lib64/{site}", skeleton=("bin/python", "lib64"))
    view = EnvView(tmp_path / "view", cache, base, log=io.StringIO())
    assert os.readlink(tmp_path / "view" / "lib64") == "lib" and (tmp_path / "view" / "lib64" / site).is_dir()
    prefix = subprocess.run([view.python_executable, "-c", "import sys; print(sys.prefix)"], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert prefix == str(tmp_path / "view")  # its pyvenv.cfg, read through the link to the prepared env's


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_one_prepared_env_serves_every_build_in_isolation(tmp_path: Path, find_links: Path, installer: str) -> None:
    # The writer's sdist is the larger, so longest-first (by size) builds it first.
    make_sdist(tmp_path / "sdists", "writer", build_requires=["tinydep"], write_site=True,
               filler=os.urandom(3000).hex())
    make_sdist(tmp_path / "sdists", "checker", build_requires=["tinydep"], check_site=True, requires=["tinyextra"])
    state = tmp_path / "state"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "-j", "1", "--installer", installer,
                         "--state-dir", state, "--no-index", "--find-links", find_links)
    assert result.returncode == 0, result.stderr
    logs = _logs(state)
    assert logs.count("preparing (tinydep==1.0)") == 1
    # The second build's worker, started ahead, prepares while the first build runs.
    assert logs.count("reused (tinydep==1.0)") + logs.count("prepared by another build (tinydep==1.0)") == 1
    # get_requires_for_build_wheel's extra layers on top as a prepared env of its own.
    assert logs.count("preparing (tinydep==1.0, tinyextra==2.0)") == 1
    assert not list((state / "build-envs" / "runs").iterdir())  # without --keep-build-envs, gone


def test_a_missing_build_requirement_fails_the_build_clearly(tmp_path: Path, find_links: Path) -> None:
    make_sdist(tmp_path / "sdists", "needy", build_requires=["not-there"])
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--state-dir", tmp_path / "state",
                         "--no-index", "--find-links", find_links)
    assert result.returncode == 1
    assert "cannot resolve build requirements (not-there)" in result.stderr


@pytest.mark.parametrize("on_import", [True, False])
def test_bytecode_is_written_on_import_into_the_prepared_env_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_import: bool
) -> None:
    if on_import:
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    else:
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    cache = EnvCache(_run_dir(tmp_path), FakeInstaller(tmp_path / "record"), index=IndexSettings(), log=io.StringIO())
    view = cache.view(tmp_path / "view")
    view.install(["tinydep"])
    prepared = view.prepared
    # A copy of the empty env, not a virtualenv made again: the same pyvenv.cfg.
    empty = cache.prepare(())
    assert (prepared.path / "pyvenv.cfg").read_bytes() == (empty.path / "pyvenv.cfg").read_bytes()
    caches = prepared.path / prepared.purelib / "__pycache__"
    assert caches.is_dir() is on_import
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    probe = "import sys, tinydep; print(sys.prefix)"
    done = subprocess.run([view.python_executable, "-c", probe], check=True, capture_output=True, text=True, env=env)
    assert done.stdout.strip() == str(view.path)
    if on_import:
        assert list(caches.glob("tinydep.*.pyc"))
    # Whatever stays writable, a build still cannot add a module beside the prepared ones.
    with pytest.raises(PermissionError) if os.geteuid() else contextlib.nullcontext():
        (prepared.path / prepared.purelib / "added.py").write_text("")


@pytest.mark.parametrize(("sandboxed", "dont_write", "compiled"), [
    (False, False, False),  # the hooks write bytecode as they import: only what they import is compiled
    (True, False, True),  # the sandbox shows them the envs read-only
    (False, True, True),  # PYTHONDONTWRITEBYTECODE: they would not write it
    (True, True, True),
])
def test_when_bytecode_is_compiled_at_preparation(monkeypatch: pytest.MonkeyPatch, sandboxed: bool,
                                                   dont_write: bool, compiled: bool) -> None:
    if dont_write:
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    else:
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    assert compile_at_preparation(sandboxed=sandboxed) is compiled


@pytest.mark.usefixtures("sandboxed")
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_sandboxed_builds_get_bytecode_compiled_at_preparation(
    tmp_path: Path, find_links: Path, monkeypatch: pytest.MonkeyPatch, installer: str
) -> None:
    """A sandboxed hook sees the prepared envs read-only, so it cannot cache the bytecode of what it imports:
    without bytecode compiled when the env is prepared, every hook compiles its backend's modules again."""
    if probe().sandbox.tool == "none":
        pytest.skip(f"no sandbox here: {probe().reason}")
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    make_sdist(tmp_path / "sdists", "needy", build_requires=["tinydep"])
    state = tmp_path / "state"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--installer", installer,
                         "--state-dir", state, "--keep-build-envs", "--no-index", "--find-links", find_links)
    assert result.returncode == 0, result.stderr
    (module,) = (state / "build-envs" / "envs").glob("*-*/lib/python*/site-packages/tinydep/__init__.py")
    caches = module.parent / "__pycache__"
    assert list(caches.glob("__init__.*.pyc"))
    assert not caches.stat().st_mode & 0o222  # nothing a build could rewrite for the next one


def test_concurrent_preparations_of_one_key_prepare_it_once(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    record = tmp_path / "record"
    processes = [
        subprocess.Popen([sys.executable, "-c", PREPARE_SCRIPT, str(run_dir), str(record), "1.0"],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    paths = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(paths) == 1
    assert len(record.read_text().splitlines()) == 1


def test_a_killed_preparation_is_never_used(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    record = tmp_path / "record"
    victim = subprocess.Popen([sys.executable, "-c", PREPARE_SCRIPT, str(run_dir), str(record), "60"])
    deadline = time.monotonic() + 30
    while not (record.exists() and record.read_text()):
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.05)
    victim.kill()  # SIGKILL, mid-installation
    victim.wait()
    store = run_dir / "envs"
    # The empty env the half-made one was copied from is published; the half-made one is not.
    (empty,) = [entry.resolve() for entry in store.iterdir() if entry.is_symlink()]
    (half,) = [entry for entry in store.iterdir() if entry.is_dir() and not entry.is_symlink() and entry != empty]
    assert (half / "lib").exists() and not (half / ENV_INFO).exists()

    cache = EnvCache(run_dir, FakeInstaller(record), index=IndexSettings(), log=io.StringIO())
    prepared = cache.prepare(["tinydep"])
    assert prepared.path != half and not half.exists()  # the leftover was removed, not reused
    assert (prepared.path / ENV_INFO).is_file()
    assert (prepared.path / prepared.purelib / "tinydep.py").is_file()


def test_keep_build_envs_persists_across_runs(tmp_path: Path, find_links: Path) -> None:
    make_sdist(tmp_path / "sdists", "kept", build_requires=["tinydep"])
    state = tmp_path / "state"
    args = ("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--state-dir", state, "--force",
            "--installer", "uv", "--no-index", "--find-links", find_links)
    assert orchestrate(*args).returncode == 0
    assert not (state / "build-envs" / "envs").exists()  # without the option nothing stays
    assert orchestrate(*args, "--keep-build-envs").returncode == 0
    assert orchestrate(*args, "--keep-build-envs").returncode == 0
    logs = _logs(state)
    assert logs.count("preparing (tinydep==1.0)") == 2  # the first run's env went away with it
    assert logs.count("reused (tinydep==1.0)") == 1
    # Resolved from a local folder only: the kept resolution serves the third run too.
    assert logs.count("uv pip compile") == 2
    assert [entry.name for entry in (state / "build-envs" / "envs").iterdir() if entry.is_symlink()]
    assert not list((state / "build-envs" / "runs").iterdir())


def test_a_dead_runs_folder_is_removed_by_the_next_run(tmp_path: Path) -> None:
    root = tmp_path / "build-envs"
    (root / "runs" / "run-dead" / "envs").mkdir(parents=True)
    (root / "runs" / "run-dead.lock").touch()
    with run_env_cache(root, keep=False) as run_dir:
        assert run_dir.is_dir()
        assert not (root / "runs" / "run-dead").exists()
    assert not run_dir.exists()


@pytest.mark.real_backend
@pytest.mark.skipif(not CORPUS_BACKENDS.is_dir(), reason="needs the offline corpus backends")
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_real_flit_core_env_is_prepared_once(tmp_path: Path, installer: str) -> None:
    (flit,) = EXAMPLES.glob("hello_flit-*")
    state = tmp_path / "state"
    args = ("build", flit, "-w", tmp_path / "wh", "--installer", installer,
            "--state-dir", state, "--keep-build-envs", "--no-index", "--find-links", CORPUS_BACKENDS)
    assert orchestrate(*args).returncode == 0
    result = orchestrate(*args, "--force")
    assert result.returncode == 0, result.stderr
    logs = _logs(state)
    assert logs.count("preparing (flit-core==") == 1
    assert logs.count("reused (flit-core==") == 1
    assert list((tmp_path / "wh").glob("hello_flit-*.whl"))
