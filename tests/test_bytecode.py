"""Bytecode compiled once per distribution and shared between prepared build environments."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest
from conftest import orchestrate
from sdists import make_sdist
from wheels import write_wheel

from orchestrator.build.bytecode import SharedBytecode, share
from orchestrator.build.envcache import EnvCache, SubprocessInstaller
from orchestrator.build.sandbox import probe
from orchestrator.settings import IndexSettings

TAG = sys.implementation.cache_tag


def _loaded_from_bytecode(python: str, module: str, path: Path | None = None) -> tuple[list[str], list[str]]:
    """Python's own word (``-v``) on ``import module``: the files it found valid bytecode for, and the sources it
    compiled instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    done = subprocess.run([python, "-B", "-v", "-c", f"import {module}"], capture_output=True, text=True, env=env,
                          check=True)
    matched = [line for line in done.stderr.splitlines() if " matches " in line]
    compiled = [line for line in done.stderr.splitlines() if line.startswith("# code object from") and ".py'" in line
                and ".pyc'" not in line]
    return matched, compiled


def _uv_cache(tmp_path: Path, find_links: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EnvCache, IO[str]]:
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    run_dir = tmp_path / "run"
    (run_dir / "envs").mkdir(parents=True)
    (run_dir / "resolutions").mkdir()
    log = (tmp_path / "build.log").open("w")  # a file: the installer's output goes to it
    index = IndexSettings(no_index=True, find_links=(str(find_links),))
    return EnvCache(run_dir, SubprocessInstaller("uv", index, log), index=index, log=log, compiled=True), log


def test_envs_holding_one_distribution_share_its_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requirement sets with a backend in common: its modules are compiled once, for both envs."""
    find_links = tmp_path / "find-links"
    find_links.mkdir()
    write_wheel(find_links, "tinybackend", "1.0", files={f"tinybackend/m{i}.py": f"X = {i}\n" for i in range(5)})
    write_wheel(find_links, "tinyplugin", "2.0")
    cache, log_file = _uv_cache(tmp_path, find_links, monkeypatch)
    alone = cache.prepare(["tinybackend"])
    both = cache.prepare(["tinybackend", "tinyplugin"])
    assert alone.path != both.path
    for number in range(5):
        first, second = (env.path / env.purelib / "tinybackend" / "__pycache__" / f"m{number}.{TAG}.pyc"
                         for env in (alone, both))
        assert os.path.samefile(first, second)
    log_file.close()
    log = Path(log_file.name).read_text()
    assert "# bytecode: 5 modules compiled, 5 shared" in log
    assert "# bytecode: 1 modules compiled, 6 shared" in log  # tinyplugin's alone
    for env in (alone, both):
        matched, compiled = _loaded_from_bytecode(str(env.path / env.python), "tinybackend.m3")
        assert any("tinybackend/m3.py" in line for line in matched), matched
        assert not compiled, compiled
        caches = env.path / env.purelib / "tinybackend" / "__pycache__"
        assert not caches.stat().st_mode & 0o222  # nothing a build could rewrite for the next one


def _site(root: Path, name: str, modules: dict[str, str], mtime: int) -> Path:
    """A site-packages folder with one distribution's ``modules`` (path to source) and its RECORD."""
    site = root / "site-packages"
    rows = []
    for path, text in modules.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(text)
        os.utime(site / path, (mtime, mtime))
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")
        rows.append(f"{path},sha256={digest},{len(text)}\n")
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    rows.append(f"{info.name}/RECORD,,\n")
    (info / "RECORD").write_text("".join(rows))
    return site


def test_a_source_of_another_time_gets_a_copy_valid_for_it(tmp_path: Path) -> None:
    """An env whose file of a distribution has another modification time (an installer that copied rather than
    linked it) gets the compiled module with its own header, which Python accepts."""
    store = tmp_path / "bytecode"
    one = _site(tmp_path / "one", "pkg", {"pkg/__init__.py": "X = 1\n"}, mtime=1_700_000_000)
    two = _site(tmp_path / "two", "pkg", {"pkg/__init__.py": "X = 1\n"}, mtime=1_700_000_500)
    assert share([one], store).compiled == 1
    assert share([two], store).compiled == 0
    pycs = [site / "pkg" / "__pycache__" / f"__init__.{TAG}.pyc" for site in (one, two)]
    assert not os.path.samefile(*pycs)
    for site in (one, two):
        matched, compiled = _loaded_from_bytecode(sys.executable, "pkg", site)
        assert any("pkg/__init__.py" in line for line in matched), matched
        assert not compiled, compiled


def test_another_source_under_the_same_name_and_version_is_compiled_for_itself(tmp_path: Path) -> None:
    """The same distribution name, version, file time and size, but other contents (their RECORD hashes differ):
    never the other's bytecode."""
    store = tmp_path / "bytecode"
    one = _site(tmp_path / "one", "pkg", {"pkg/__init__.py": "X = 1\n"}, mtime=1_700_000_000)
    two = _site(tmp_path / "two", "pkg", {"pkg/__init__.py": "X = 2\n"}, mtime=1_700_000_000)
    share([one], store)
    assert share([two], store).compiled == 1
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for site, value in ((one, "1"), (two, "2")):
        done = subprocess.run([sys.executable, "-B", "-c", "import pkg; print(pkg.X)"], capture_output=True,
                              text=True, env={**env, "PYTHONPATH": str(site)}, check=True)
        assert done.stdout.strip() == value


def test_a_module_that_does_not_compile_is_left_out_and_a_killed_compilation_removed(tmp_path: Path) -> None:
    store = tmp_path / "bytecode"
    site = _site(tmp_path / "one", "pkg", {"pkg/__init__.py": "X = 1\n", "pkg/py2.py": "print 'old'\n"},
                 mtime=1_700_000_000)
    assert share([site], store) == SharedBytecode(compiled=1, linked=1)
    (entry,) = [path for path in store.iterdir() if path.is_dir()]
    entry.rename(f"{entry}-killed")  # as a preparation killed while compiling leaves its folder
    (site / "pkg" / "__pycache__" / f"__init__.{TAG}.pyc").unlink()
    assert share([site], store) == SharedBytecode(compiled=1, linked=1)
    assert [path.name for path in store.iterdir() if path.is_dir()] == [entry.name]
    assert (site / "pkg" / "__pycache__" / f"__init__.{TAG}.pyc").is_file()
    assert not (site / "pkg" / "__pycache__" / f"py2.{TAG}.pyc").exists()


@pytest.mark.usefixtures("sandboxed")
def test_sandboxed_builds_of_two_requirement_sets_share_one_compilation(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a run: two sdists whose build requirements differ but for a shared one; sandboxed, the envs are
    compiled at preparation, and the shared distribution's bytecode is one file in both."""
    if probe().sandbox.tool == "none":
        pytest.skip(f"no sandbox here: {probe().reason}")
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    find_links = tmp_path / "find-links"
    find_links.mkdir()
    write_wheel(find_links, "tinydep", "1.0")
    write_wheel(find_links, "tinyextra", "2.0")
    make_sdist(tmp_path / "sdists", "alone", build_requires=["tinydep"])
    make_sdist(tmp_path / "sdists", "both", build_requires=["tinydep", "tinyextra"])
    state = tmp_path / "state"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--state-dir", state,
                         "--keep-build-envs", "--no-index", "--find-links", find_links)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "wh").glob("*.whl"))) == 2
    pycs = list((state / "build-envs" / "envs").glob(f"*-*/lib/python*/site-packages/tinydep/__pycache__/*.{TAG}.pyc"))
    assert len(pycs) == 2
    assert os.path.samefile(*pycs)
