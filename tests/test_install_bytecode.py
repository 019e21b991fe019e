"""Bytecode: the target's own interpreter compiles, in long-lived processes; one that fails fails only its wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from install_helpers import (  # noqa: F401 (fixtures)
    compile_server,
    compile_server_that,
    compiler_processes,
    loaded_from_bytecode,
    other_pythons,
    record_hash,
    recorded,
    run_python,
    site_packages,
    snapshot,
    target_fixture,
    venv_dir_fixture,
    wheelhouse_fixture,
)
from wheels import write_wheel

from orchestrator.install import installer as installer_module
from orchestrator.install.installer import WheelInstaller, install_all
from orchestrator.install.results import InstallStatus
from orchestrator.install.target import Target


def test_bytecode_is_the_target_pythons_and_is_recorded(target: Target, wheelhouse: Path) -> None:
    wheel = write_wheel(wheelhouse, "pkg", files={"pkg/__init__.py": "", "pkg/bad.py": "def ("})
    result = WheelInstaller(target).install(wheel)
    assert result.status is InstallStatus.INSTALLED, result.error
    cache_tag = run_python(target, "import sys; print(sys.implementation.cache_tag)")
    record = (site_packages(target) / "pkg-1.0.dist-info" / "RECORD").read_text()
    assert f"pkg/__pycache__/__init__.{cache_tag}.pyc,sha256=" in record
    # A file that does not compile is installed without bytecode, as pip does.
    assert (site_packages(target) / "pkg" / "bad.py").is_file()
    assert "bad." not in record.replace("pkg/bad.py,", "")


def test_interrupted_compilation_leaves_no_bytecode(
    target: Target, wheelhouse: Path, venv_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compile everything asked for, then die before answering.
    compile_server(
        monkeypatch,
        tmp_path,
        "import compileall, json, sys\n"
        "for path in json.loads(sys.stdin.readline())['paths']: compileall.compile_file(path, quiet=1)\n"
        "sys.exit(3)\n",
    )
    before = snapshot(venv_dir)
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg"))
    assert result.status is InstallStatus.FAILED
    assert result.error is not None
    assert "compiling bytecode" in result.error and "retry without compiling" in result.error
    assert snapshot(venv_dir) == before


# --- what the compilers write ------------------------------------------------


def test_bytecode_is_what_py_compile_writes_and_the_target_loads_it(target: Target, wheelhouse: Path) -> None:
    files: dict[str, str | bytes] = {
        "pkg/__init__.py": "from pkg import mod\n",
        "pkg/mod.py": "# -*- coding: latin-1 -*-\nA = 'é'\n".encode("latin-1"),
    }
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg", files=files))
    assert result.status is InstallStatus.INSTALLED, result.error

    record = recorded(target, "pkg-1.0.dist-info")
    sources = [site_packages(target) / name for name in files]
    cache_from_source = "import importlib.util; print(importlib.util.cache_from_source({!r}))"
    pycs = [Path(run_python(target, cache_from_source.format(os.fspath(source)))) for source in sources]
    for source, pyc in zip(sources, pycs):
        expected = wheelhouse / f"{source.name}.expected.pyc"
        run_python(target, f"import py_compile; py_compile.compile({os.fspath(source)!r},"
                           f" cfile={os.fspath(expected)!r}, dfile={os.fspath(source)!r}, doraise=True)")
        assert pyc.read_bytes() == expected.read_bytes()
        assert record[pyc] == (record_hash(pyc), str(pyc.stat().st_size))
    assert loaded_from_bytecode(target, "pkg") == {os.fspath(pyc) for pyc in pycs}


@pytest.mark.parametrize("python", other_pythons(), ids=lambda path: path.parts[-3])
def test_bytecode_is_the_target_pythons_when_it_is_another_version(
    python: Path, tmp_path: Path, wheelhouse: Path
) -> None:
    # The oldest one found may predate PEP 552 headers (3.6): py_compile writes those.
    subprocess.run([os.fspath(python), "-m", "venv", "--without-pip", os.fspath(tmp_path / "other")], check=True)
    target = Target.from_path(tmp_path / "other")
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg", files={"pkg/__init__.py": "X = 1\n"}))
    assert result.status is InstallStatus.INSTALLED, result.error

    cache_tag = run_python(target, "import sys; print(sys.implementation.cache_tag)")
    assert cache_tag != sys.implementation.cache_tag
    pyc = site_packages(target) / "pkg" / "__pycache__" / f"__init__.{cache_tag}.pyc"
    assert os.listdir(pyc.parent) == [pyc.name]
    assert recorded(target, "pkg-1.0.dist-info")[pyc] == (record_hash(pyc), str(pyc.stat().st_size))
    assert loaded_from_bytecode(target, "pkg") == {os.fspath(pyc)}


def test_source_date_epoch_gives_hash_based_bytecode_as_py_compile_does(
    target: Target, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "315532800")
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg"))
    assert result.status is InstallStatus.INSTALLED, result.error
    (pyc,) = (site_packages(target) / "pkg" / "__pycache__").iterdir()
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b11  # checked hash-based
    assert loaded_from_bytecode(target, "pkg") == {os.fspath(pyc)}


def test_stale_bytecode_of_nobody_is_replaced(target: Target, wheelhouse: Path) -> None:
    cache_tag = run_python(target, "import sys; print(sys.implementation.cache_tag)")
    stale = site_packages(target) / "pkg" / "__pycache__" / f"__init__.{cache_tag}.pyc"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not bytecode")
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg"))
    assert result.status is InstallStatus.INSTALLED, result.error
    assert recorded(target, "pkg-1.0.dist-info")[stale] == (record_hash(stale), str(stale.stat().st_size))
    assert loaded_from_bytecode(target, "pkg") == {os.fspath(stale)}


# --- compilers that fail, stop or hang -----------------------------------------


def test_a_compiler_that_dies_fails_its_wheel_and_is_replaced(
    target: Target, wheelhouse: Path, venv_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_server_that(monkeypatch, tmp_path, "if any('poison' in path for path in request['paths']): os._exit(9)")
    wheel_installer = WheelInstaller(target)
    before = snapshot(venv_dir)
    result = wheel_installer.install(write_wheel(wheelhouse, "poison"))
    assert result.status is InstallStatus.FAILED
    assert result.error == (
        f"Installing poison-1.0-py3-none-any.whl failed: compiling bytecode with {target.python} failed (exit 9);"
        " retry without compiling"
    )
    assert snapshot(venv_dir) == before

    fine = [write_wheel(wheelhouse, f"fine{index}") for index in range(4)]
    results = install_all(fine, wheel_installer, max_installs=2)
    assert {result.status for result in results} == {InstallStatus.INSTALLED}
    assert all(list((site_packages(target) / f"fine{index}" / "__pycache__").glob("*.pyc")) for index in range(4))


def test_a_compiler_that_cannot_write_fails_its_wheel(target: Target, wheelhouse: Path, venv_dir: Path) -> None:
    # A file where the __pycache__ folder should be: the compiler answers with an error and lives on.
    blocker = site_packages(target) / "pkg" / "__pycache__"
    blocker.parent.mkdir()
    blocker.write_text("not a folder")
    before = snapshot(venv_dir)
    with WheelInstaller(target) as wheel_installer:
        result = wheel_installer.install(write_wheel(wheelhouse, "pkg"))
        assert result.status is InstallStatus.FAILED
        assert result.error is not None
        assert result.error.startswith(
            f"Installing pkg-1.0-py3-none-any.whl failed: compiling bytecode with {target.python} failed"
            " (FileExistsError: "
        )
        assert result.error.endswith("; retry without compiling")
        assert snapshot(venv_dir) == before
        assert wheel_installer.install(write_wheel(wheelhouse, "other")).status is InstallStatus.INSTALLED


def test_close_stops_the_compilers(target: Target, wheelhouse: Path) -> None:
    with WheelInstaller(target) as wheel_installer:
        assert wheel_installer.install(write_wheel(wheelhouse, "pkg")).status is InstallStatus.INSTALLED
        assert 1 <= len(compiler_processes(target)) <= os.cpu_count()  # type: ignore[operator]
    assert compiler_processes(target) == []
    # Installing after close starts new ones.
    assert wheel_installer.install(write_wheel(wheelhouse, "other")).status is InstallStatus.INSTALLED
    wheel_installer.close()
    assert compiler_processes(target) == []


def test_an_installer_never_closed_does_not_hold_up_exit(target: Target, wheelhouse: Path) -> None:
    wheel = write_wheel(wheelhouse, "pkg")
    script = (
        "import sys; from pathlib import Path; from orchestrator.install.target import Target\n"
        "from orchestrator.install.installer import WheelInstaller\n"
        "installer = WheelInstaller(Target.from_path(Path(sys.argv[1])))\n"
        "print(installer.install(Path(sys.argv[2])).status.value)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, os.fspath(target.python), os.fspath(wheel)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert completed.stdout == "installed\n"


def test_a_wheel_past_its_timeout_while_compiling_fails_alone_and_its_compiler_is_replaced(
    target: Target, wheelhouse: Path, venv_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_server_that(
        monkeypatch,
        tmp_path,
        "if any(os.path.basename(p).startswith('slow') for p in request['paths']): __import__('time').sleep(600)",
    )
    monkeypatch.setattr(installer_module, "usable_cpu_count", lambda: 2)  # one compiler hangs, the other goes on
    wheels = [
        write_wheel(wheelhouse, "hangs", files={"hangs/__init__.py": "", "hangs/slow_module.py": "X = 1\n"}),
        write_wheel(wheelhouse, "fast-one"),
        write_wheel(wheelhouse, "fast-two"),
    ]
    before = snapshot(venv_dir)
    with WheelInstaller(target, timeout=2) as wheel_installer:
        started = time.monotonic()
        results = install_all(wheels, wheel_installer, max_installs=3)
        assert time.monotonic() - started < 10
        assert [result.status for result in results] == [
            InstallStatus.FAILED, InstallStatus.INSTALLED, InstallStatus.INSTALLED
        ]
        assert results[0].error == (
            "Installing hangs-1.0-py3-none-any.whl failed: timed out after 2 s compiling bytecode with"
            f" {target.python};"
            " rolled back; retry with a longer install timeout or without compiling"
        )
        assert {path for path in snapshot(venv_dir) if path not in before and "hangs" in path} == set()
        # The hung compiler is gone; a new one compiles the next wheel.
        assert len(compiler_processes(target)) <= 2
        assert wheel_installer.install(write_wheel(wheelhouse, "later")).status is InstallStatus.INSTALLED
        assert list((site_packages(target) / "later" / "__pycache__").glob("*.pyc"))
    assert compiler_processes(target) == []
