"""Tests for the install stage: real virtualenvs, fake wheels from tests/wheels.py."""

from __future__ import annotations

import base64
import csv
import errno
import glob
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

import psutil
import pytest
from wheels import write_wheel

from orchestrator.errors import InstallError, UsageError
from orchestrator.install import installer as install_module
from orchestrator.install.installer import (
    InstallResult,
    InstallStatus,
    Target,
    WheelInstaller,
    find_conflicts,
    install_all,
)


@pytest.fixture
def venv_dir(tmp_path: Path) -> Path:
    path = tmp_path / "venv"
    venv.create(path, with_pip=False, symlinks=os.name != "nt")
    return path


@pytest.fixture
def target(venv_dir: Path) -> Target:
    return Target.from_path(venv_dir)


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    path = tmp_path / "wheelhouse"
    path.mkdir()
    return path


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``, with the contents of regular files (not symlinks)."""
    return {
        os.fspath(path.relative_to(root)): (path.read_bytes() if path.is_file() and not path.is_symlink() else None)
        for path in sorted(root.rglob("*"))
    }


def run_python(target: Target, code: str) -> str:
    completed = subprocess.run([os.fspath(target.python), "-c", code], capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def site_packages(target: Target) -> Path:
    return Path(target.scheme["purelib"])


def recorded(target: Target, dist_info: str) -> dict[Path, tuple[str, str]]:
    """RECORD of ``dist_info`` as absolute path -> (hash, size)."""
    site = site_packages(target)
    with open(site / dist_info / "RECORD", newline="") as record:
        return {Path(os.path.normpath(site / path)): (digest, size) for path, digest, size in csv.reader(record)}


def record_hash(path: Path) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).decode().rstrip("=")


def loaded_from_bytecode(target: Target, module: str) -> set[str]:
    """The code files of site-packages that the target's interpreter loads when importing ``module``.

    ``.pyc`` files it accepted; ``.py`` files it had to compile (the ``.pyc`` was missing or stale).
    """
    completed = subprocess.run(
        [os.fspath(target.python), "-v", "-B", "-c", f"import {module}"], capture_output=True, text=True, check=True
    )
    prefix = "# code object from "
    loaded = {line[len(prefix):].strip("'") for line in completed.stderr.splitlines() if line.startswith(prefix)}
    return {path for path in loaded if path.startswith(os.path.join(site_packages(target), ""))}


def other_pythons() -> list[Path]:
    """Interpreters of other minor versions than this one, oldest and newest, if the machine has any."""
    found: dict[str, Path] = {}
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    for candidate in candidates + [f"/usr/bin/python3.{minor}" for minor in range(6, 15)]:
        try:
            version = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if version != "%d.%d" % sys.version_info[:2]:
            found.setdefault(version, Path(candidate))
    ordered = [found[version] for version in sorted(found, key=lambda v: tuple(map(int, v.split("."))))]
    return ordered[:1] + ordered[-1:] if len(ordered) > 1 else ordered


# --- Target -----------------------------------------------------------------


@pytest.mark.parametrize("given", ["folder", "interpreter"])
def test_target_from_venv_folder_or_interpreter(venv_dir: Path, given: str) -> None:
    path = venv_dir if given == "folder" else venv_dir / "bin" / "python"
    target = Target.from_path(path)
    assert target.python == venv_dir / "bin" / "python"
    for key in ("purelib", "platlib", "headers", "scripts", "data"):
        assert Path(target.scheme[key]).is_relative_to(venv_dir), key
    assert Path(target.scheme["scripts"]) == venv_dir / "bin"
    assert site_packages(target).is_dir()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        # A folder with no interpreter in it.
        ("empty-folder", "is not a Python environment: no bin/python"),
        # Nothing there at all.
        ("missing", "does not exist"),
        # A program that runs but is not Python.
        ("not-python", "is not a usable Python: /bin/false exited with 1"),
        # A file that cannot be executed.
        ("not-executable", "is not a usable Python: running .* failed"),
    ],
)
def test_target_rejects_what_is_not_python(tmp_path: Path, case: str, message: str) -> None:
    paths = {
        "empty-folder": tmp_path,
        "missing": tmp_path / "missing",
        "not-python": Path("/bin/false"),
        "not-executable": tmp_path / "notes.txt",
    }
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InstallError, match=message):
        Target.from_path(paths[case])


# --- installing -------------------------------------------------------------


@pytest.mark.parametrize("compile_bytecode", [True, False])
def test_installed_wheels_import_and_scripts_run(target: Target, wheelhouse: Path, compile_bytecode: bool) -> None:
    wheels = [
        write_wheel(wheelhouse, "plain-pkg", "1.2"),
        write_wheel(
            wheelhouse,
            "tool",
            "0.3",
            files={"tool/__init__.py": "def main():\n    print('tool says hi')\n"},
            console_scripts={"tool-cli": "tool:main"},
        ),
        write_wheel(wheelhouse, "shell-stuff", data_files={"scripts/hello.sh": "#!/bin/sh\necho hello from data\n"}),
    ]
    results = install_all(wheels, WheelInstaller(target, compile_bytecode=compile_bytecode), max_installs=2)

    assert [result.status for result in results] == [InstallStatus.INSTALLED] * 3
    assert [(result.name, result.version) for result in results] == [("plain-pkg", "1.2"), ("tool", "0.3"), ("shell-stuff", "1.0")]
    # Before anything imports the modules (an import writes bytecode itself).
    pycs = list((site_packages(target) / "tool" / "__pycache__").glob("*.pyc"))
    assert bool(pycs) == compile_bytecode
    assert run_python(target, "import plain_pkg; print(plain_pkg.VERSION)") == "1.2"
    bin_dir = Path(target.scheme["scripts"])
    assert subprocess.run([bin_dir / "tool-cli"], capture_output=True, text=True, check=True).stdout == "tool says hi\n"
    assert (bin_dir / "tool-cli").read_text().startswith(f"#!{target.python}")
    assert subprocess.run([bin_dir / "hello.sh"], capture_output=True, text=True, check=True).stdout == "hello from data\n"
    dist_info = site_packages(target) / "tool-0.3.dist-info"
    assert (dist_info / "INSTALLER").read_text() == "orchestrate\n"
    record = (dist_info / "RECORD").read_text()
    assert "../../../bin/tool-cli" in record
    assert ("__pycache__/__init__." in record) == compile_bytecode


def test_bytecode_is_the_target_pythons_and_is_recorded(target: Target, wheelhouse: Path) -> None:
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg", files={"pkg/__init__.py": "", "pkg/bad.py": "def ("}))
    assert result.status is InstallStatus.INSTALLED, result.error
    cache_tag = run_python(target, "import sys; print(sys.implementation.cache_tag)")
    record = (site_packages(target) / "pkg-1.0.dist-info" / "RECORD").read_text()
    assert f"pkg/__pycache__/__init__.{cache_tag}.pyc,sha256=" in record
    # A file that does not compile is installed without bytecode, as pip does.
    assert (site_packages(target) / "pkg" / "bad.py").is_file()
    assert "bad." not in record.replace("pkg/bad.py,", "")


def test_interrupted_compilation_leaves_no_bytecode(
    target: Target, wheelhouse: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compile everything asked for, then die before answering.
    monkeypatch.setattr(
        install_module,
        "_COMPILE_SERVER",
        "import compileall, json, sys\n"
        "for path in json.loads(sys.stdin.readline())['paths']: compileall.compile_file(path, quiet=1)\n"
        "sys.exit(3)\n",
    )
    before = snapshot(venv_dir)
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg"))
    assert result.status is InstallStatus.FAILED
    assert result.error is not None and "compiling bytecode" in result.error and "retry without compiling" in result.error
    assert snapshot(venv_dir) == before


# --- bytecode ---------------------------------------------------------------


def test_bytecode_is_what_py_compile_writes_and_the_target_loads_it(target: Target, wheelhouse: Path) -> None:
    files: dict[str, str | bytes] = {
        "pkg/__init__.py": "from pkg import mod\n",
        "pkg/mod.py": "# -*- coding: latin-1 -*-\nA = 'é'\n".encode("latin-1"),
    }
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "pkg", files=files))
    assert result.status is InstallStatus.INSTALLED, result.error

    record = recorded(target, "pkg-1.0.dist-info")
    sources = [site_packages(target) / name for name in files]
    pycs = [Path(run_python(target, f"import importlib.util; print(importlib.util.cache_from_source({os.fspath(source)!r}))")) for source in sources]
    for source, pyc in zip(sources, pycs):
        expected = wheelhouse / f"{source.name}.expected.pyc"
        run_python(target, f"import py_compile; py_compile.compile({os.fspath(source)!r}, cfile={os.fspath(expected)!r}, dfile={os.fspath(source)!r}, doraise=True)")
        assert pyc.read_bytes() == expected.read_bytes()
        assert record[pyc] == (record_hash(pyc), str(pyc.stat().st_size))
    assert loaded_from_bytecode(target, "pkg") == {os.fspath(pyc) for pyc in pycs}


@pytest.mark.parametrize("python", other_pythons(), ids=lambda path: path.parts[-3])
def test_bytecode_is_the_target_pythons_when_it_is_another_version(python: Path, tmp_path: Path, wheelhouse: Path) -> None:
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


def compile_server_that(monkeypatch: pytest.MonkeyPatch, statement: str) -> None:
    """Make the bytecode compilers run ``statement`` on each request, after reading it."""
    real = install_module._COMPILE_SERVER
    read = "    request = json.loads(line)\n"
    assert read in real
    monkeypatch.setattr(install_module, "_COMPILE_SERVER", real.replace(read, f"{read}    {statement}\n"))


def test_a_compiler_that_dies_fails_its_wheel_and_is_replaced(
    target: Target, wheelhouse: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_server_that(monkeypatch, "if any('poison' in path for path in request['paths']): os._exit(9)")
    wheel_installer = WheelInstaller(target)
    before = snapshot(venv_dir)
    result = wheel_installer.install(write_wheel(wheelhouse, "poison"))
    assert result.status is InstallStatus.FAILED
    assert result.error == (
        f"Installing poison-1.0-py3-none-any.whl failed: compiling bytecode with {target.python} failed (exit 9);"
        " retry without compiling"
    )
    assert snapshot(venv_dir) == before

    results = install_all([write_wheel(wheelhouse, f"fine{index}") for index in range(4)], wheel_installer, max_installs=2)
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
            f"Installing pkg-1.0-py3-none-any.whl failed: compiling bytecode with {target.python} failed (FileExistsError: "
        )
        assert result.error.endswith("; retry without compiling")
        assert snapshot(venv_dir) == before
        assert wheel_installer.install(write_wheel(wheelhouse, "other")).status is InstallStatus.INSTALLED


@pytest.mark.parametrize("compile_bytecode", [True, False])
def test_bad_hash_found_after_other_files_were_written_leaves_nothing(
    target: Target, wheelhouse: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch, compile_bytecode: bool
) -> None:
    # One file per chunk: compilers are busy with this wheel when the bad member turns up.
    monkeypatch.setattr(install_module, "_CHUNK_BYTES", 1)
    files = {f"late/mod{index}.py": f"X = {index}\n" * 50 for index in range(30)}
    wheel = write_wheel(wheelhouse, "late", files=files, corrupt="hash-last", console_scripts={"late": "late:main"})
    before = snapshot(venv_dir)
    result = WheelInstaller(target, compile_bytecode=compile_bytecode).install(wheel)
    assert result.status is InstallStatus.FAILED
    assert result.error == (
        "Installing late-1.0-py3-none-any.whl failed: its RECORD does not match its contents"
        " (hash / size of late/mod29.py didn't match RECORD); rebuild the wheel"
    )
    assert snapshot(venv_dir) == before


def test_concurrent_installs_into_shared_folders_record_every_file(
    target: Target, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install_module, "_CHUNK_BYTES", 1)
    # Every wheel writes into ns/ and ns/__pycache__; the broken ones roll back meanwhile.
    wheels = [
        write_wheel(
            wheelhouse,
            f"part{index}",
            files={f"ns/part{index}.py": "", f"ns/part{index}_pkg/__init__.py": "", f"ns/part{index}_pkg/mod.py": "X = 1\n"},
            corrupt="hash-last" if index % 4 == 3 else None,
        )
        for index in range(12)
    ]
    results = install_all(wheels, WheelInstaller(target), max_installs=4)
    assert [result.status for result in results] == [
        InstallStatus.FAILED if index % 4 == 3 else InstallStatus.INSTALLED for index in range(12)
    ]

    site = site_packages(target)
    listed: dict[Path, tuple[str, str]] = {}
    for dist_info in site.glob("*.dist-info"):
        entries = recorded(target, dist_info.name)
        assert not set(entries) & set(listed), dist_info
        listed.update(entries)
    on_disk = {path for path in site.rglob("*") if path.is_file()}
    assert on_disk == set(listed)
    for path, (digest, size) in listed.items():
        if digest:
            assert (digest, size) == (record_hash(path), str(path.stat().st_size)), path
    assert len([path for path in on_disk if path.suffix == ".pyc"]) == 9 * 3


def compiler_processes(target: Target) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children()
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE and os.fspath(target.python) in child.cmdline()
    ]


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
        "import sys; from pathlib import Path; from orchestrator.install.installer import Target, WheelInstaller\n"
        "installer = WheelInstaller(Target.from_path(Path(sys.argv[1])))\n"
        "print(installer.install(Path(sys.argv[2])).status.value)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, os.fspath(target.python), os.fspath(wheel)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert completed.stdout == "installed\n"


def test_max_installs_is_a_cap_that_is_reached(target: Target, wheelhouse: Path) -> None:
    running = peak = 0
    lock = threading.Lock()

    class SlowCountingInstaller(WheelInstaller):
        def install(self, wheel: Path) -> InstallResult:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.1)
            try:
                return super().install(wheel)
            finally:
                with lock:
                    running -= 1

    wheels = [write_wheel(wheelhouse, f"pkg{index}") for index in range(6)]
    seen: list[str] = []
    results = install_all(
        wheels, SlowCountingInstaller(target), max_installs=2, on_result=lambda result: seen.append(result.name)
    )
    assert peak == 2
    assert sorted(seen) == [f"pkg{index}" for index in range(6)]
    assert all(result.status is InstallStatus.INSTALLED for result in results)


def test_max_installs_below_one_is_a_usage_error(target: Target) -> None:
    with pytest.raises(UsageError, match="at least 1"):
        install_all([], WheelInstaller(target), max_installs=0)


# --- timeout ----------------------------------------------------------------


def test_a_wheel_past_its_timeout_while_compiling_fails_alone_and_its_compiler_is_replaced(
    target: Target, wheelhouse: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_server_that(
        monkeypatch,
        "if any(os.path.basename(p).startswith('slow') for p in request['paths']): __import__('time').sleep(600)",
    )
    monkeypatch.setattr(install_module, "usable_cpu_count", lambda: 2)  # one compiler hangs, the other goes on
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
        assert [result.status for result in results] == [InstallStatus.FAILED, InstallStatus.INSTALLED, InstallStatus.INSTALLED]
        assert results[0].error == (
            f"Installing hangs-1.0-py3-none-any.whl failed: timed out after 2 s compiling bytecode with {target.python};"
            " rolled back; retry with a longer install timeout or without compiling"
        )
        assert {path for path in snapshot(venv_dir) if path not in before and "hangs" in path} == set()
        # The hung compiler is gone; a new one compiles the next wheel.
        assert len(compiler_processes(target)) <= 2
        assert wheel_installer.install(write_wheel(wheelhouse, "later")).status is InstallStatus.INSTALLED
        assert list((site_packages(target) / "later" / "__pycache__").glob("*.pyc"))
    assert compiler_processes(target) == []


def test_a_wheel_past_its_timeout_while_writing_is_rolled_back(
    target: Target, tmp_path: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_old_version(target, tmp_path, "1.0")
    before = snapshot(venv_dir)
    real = install_module.copyfileobj_with_hashing

    def slow_write(source, dest, hash_algorithm):  # type: ignore[no-untyped-def]
        time.sleep(0.4)
        return real(source, dest, hash_algorithm)

    monkeypatch.setattr(install_module, "copyfileobj_with_hashing", slow_write)
    result = WheelInstaller(target, compile_bytecode=False, timeout=1).install(write_versioned(tmp_path / "new", "2.0"))

    assert result.status is InstallStatus.FAILED
    assert result.error == (
        "Installing pkg-2.0-py3-none-any.whl failed: timed out after 1 s writing files; rolled back;"
        " retry with a longer install timeout"
    )
    assert snapshot(venv_dir) == before
    assert run_python(target, "import pkg; print(pkg.VERSION)") == "1.0"


def test_install_timeout_must_be_positive(target: Target) -> None:
    with pytest.raises(UsageError, match="more than 0 seconds"):
        WheelInstaller(target, timeout=0)


# --- conflicts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "path"),
    [
        # The same module file from two distributions.
        ({"files": {"shared/x.py": "a"}}, {"files": {"shared/x.py": "b"}}, "lib/shared/x.py"),
        # Root file against the same file under .data/purelib.
        ({"files": {"shared/x.py": "a"}}, {"files": {}, "data_files": {"purelib/shared/x.py": "b"}}, "lib/shared/x.py"),
        # Two console scripts of one name.
        (
            {"console_scripts": {"run": "one:main"}},
            {"console_scripts": {"run": "two:main"}},
            "scripts/run",
        ),
        # A console script against a .data script of the same name.
        ({"console_scripts": {"run": "one:main"}}, {"data_files": {"scripts/run": "#!/bin/sh\n"}}, "scripts/run"),
        # The same data file.
        ({"data_files": {"data/share/x.txt": "a"}}, {"data_files": {"data/share/x.txt": "b"}}, "data/share/x.txt"),
    ],
)
def test_find_conflicts_names_both_distributions_and_the_path(
    wheelhouse: Path, first: dict[str, object], second: dict[str, object], path: str
) -> None:
    wheels = [write_wheel(wheelhouse, "one", **first), write_wheel(wheelhouse, "two", **second)]  # type: ignore[arg-type]
    (conflict,) = find_conflicts(wheels)
    assert conflict.path == path
    assert conflict.distributions == ("one", "two")
    assert str(conflict) == f"one ({wheels[0].name}) and two ({wheels[1].name}) both install {path}"


@pytest.mark.parametrize(
    "second",
    [
        # Two versions of one distribution in one run.
        ("one", "2.0", {}),
        # Headers are per distribution, so the same header name does not clash.
        ("two", "1.0", {"data_files": {"headers/a.h": "b"}}),
    ],
)
def test_find_conflicts_distribution_twice_and_headers(wheelhouse: Path, second: tuple[str, str, dict[str, object]]) -> None:
    name, version, options = second
    wheels = [
        write_wheel(wheelhouse, "one", data_files={"headers/a.h": "a"}),
        write_wheel(wheelhouse, name, version, **options),  # type: ignore[arg-type]
    ]
    conflicts = find_conflicts(wheels)
    if name == "one":
        assert [conflict.path for conflict in conflicts] == ["distribution one", "lib/one/__init__.py"]
    else:
        assert conflicts == []


def test_find_conflicts_leaves_unreadable_wheels_to_install(wheelhouse: Path) -> None:
    wheels = [write_wheel(wheelhouse, "one"), write_wheel(wheelhouse, "two", corrupt="truncate")]
    assert find_conflicts(wheels) == []


def test_conflicting_batch_writes_nothing(target: Target, wheelhouse: Path, venv_dir: Path) -> None:
    wheels = [
        write_wheel(wheelhouse, "fine"),
        write_wheel(wheelhouse, "one", files={"shared/x.py": "a"}),
        write_wheel(wheelhouse, "two", files={"shared/x.py": "b"}),
    ]
    before = snapshot(venv_dir)
    with pytest.raises(InstallError, match=r"one \(one-1.0-py3-none-any.whl\) and two .* both install lib/shared/x.py"):
        install_all(wheels, WheelInstaller(target), max_installs=2)
    assert snapshot(venv_dir) == before


# --- failures roll back -----------------------------------------------------


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("hash", "its RECORD does not match its contents (hash / size of broken/__init__.py didn't match RECORD)"),
        ("unrecorded", "broken/__init__.py is not mentioned in RECORD"),
        ("truncate", "it is not a readable zip archive"),
    ],
)
def test_corrupt_wheel_fails_alone_with_one_line(
    target: Target, wheelhouse: Path, corrupt: str, message: str
) -> None:
    wheels = [
        write_wheel(wheelhouse, "good-one"),
        write_wheel(wheelhouse, "broken", corrupt=corrupt),  # type: ignore[arg-type]
        write_wheel(wheelhouse, "good-two"),
    ]
    before = snapshot(site_packages(target))
    results = install_all(wheels, WheelInstaller(target), max_installs=2)

    assert [result.status for result in results] == [InstallStatus.INSTALLED, InstallStatus.FAILED, InstallStatus.INSTALLED]
    error = results[1].error
    assert error is not None and "\n" not in error
    assert error.startswith("Installing broken-1.0-py3-none-any.whl failed: ")
    assert message in error
    after = snapshot(site_packages(target))
    assert {path for path in after if path not in before and "broken" in path} == set()
    assert (site_packages(target) / "good_two" / "__init__.py").is_file()


def fail_on_write(monkeypatch: pytest.MonkeyPatch, failing_call: int, error: OSError) -> None:
    """Make the ``failing_call``-th file write (1-based) write a little, then raise ``error``."""
    real = install_module.copyfileobj_with_hashing
    calls = 0

    def write(source, dest, hash_algorithm):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == failing_call:
            dest.write(b"partial")
            raise error
        return real(source, dest, hash_algorithm)

    monkeypatch.setattr(install_module, "copyfileobj_with_hashing", write)


# Writes happen in this order: console script, wheel files, INSTALLER, RECORD.
@pytest.mark.parametrize("failing_call", [1, 3, 6])
@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),
    ],
    ids=["ENOSPC", "EACCES"],
)
def test_write_error_midway_leaves_nothing_behind(
    target: Target, wheelhouse: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int, error: OSError
) -> None:
    wheel = write_wheel(
        wheelhouse,
        "big",
        files={"big/__init__.py": "", "big/a.py": "", "big/sub/b.py": ""},
        console_scripts={"big": "big:main"},
    )
    before = snapshot(venv_dir)
    fail_on_write(monkeypatch, failing_call, error)
    result = WheelInstaller(target).install(wheel)

    assert result.status is InstallStatus.FAILED
    assert result.error is not None and error.strerror in result.error
    assert "free disk space or fix permissions" in result.error
    assert snapshot(venv_dir) == before


def test_existing_file_of_nobody_is_not_overwritten_and_install_rolls_back(target: Target, wheelhouse: Path) -> None:
    squatter = site_packages(target) / "pkg" / "b.py"
    squatter.parent.mkdir()
    squatter.write_text("mine")
    wheel = write_wheel(wheelhouse, "pkg", files={"pkg/a.py": "", "pkg/b.py": "", "pkg/c.py": ""})
    result = WheelInstaller(target).install(wheel)

    assert result.status is InstallStatus.FAILED
    assert result.error is not None and f"{squatter} already exists" in result.error
    assert sorted(path.name for path in squatter.parent.iterdir()) == ["b.py"]
    assert squatter.read_text() == "mine"
    assert not list(site_packages(target).glob("pkg-*.dist-info"))


# --- reinstall and upgrade --------------------------------------------------


def install_old_version(target: Target, tmp_path: Path, version: str) -> None:
    """Install pkg ``version`` from ``tmp_path/old``; ``tmp_path/new`` is left for the next one."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    assert WheelInstaller(target).install(write_versioned(tmp_path / "old", version)).status is InstallStatus.INSTALLED


def write_versioned(folder: Path, version: str) -> Path:
    """pkg at ``version``, with a module and a script only that version has."""
    tag = version.replace(".", "_")
    return write_wheel(
        folder,
        "pkg",
        version,
        files={"pkg/__init__.py": f"VERSION = {version!r}\n", f"pkg/only_{tag}.py": "", f"only_{tag}/x.py": ""},
        console_scripts={f"pkg-{tag}": "pkg:main"},
    )


def test_skipping_writes_nothing_not_even_a_journal(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = write_versioned(tmp_path, "1.0")
    assert WheelInstaller(target).install(wheel).status is InstallStatus.INSTALLED

    def no_journal(*args: object) -> None:
        raise AssertionError("a skipped install took a journal")

    monkeypatch.setattr("orchestrator.install.installer.Journal.acquire", no_journal)
    result = WheelInstaller(target).install(wheel)
    assert (result.status, result.reason) == (InstallStatus.SKIPPED, "already installed")


@pytest.mark.parametrize(
    ("installed", "wheel", "reinstall", "status", "reason", "final"),
    [
        # Same version: skipped, as pip says "Requirement already satisfied".
        ("1.0", "1.0", False, InstallStatus.SKIPPED, "already installed", "1.0"),
        # Same version, normalised differently: still the same version.
        ("1.0", "1.0.0", False, InstallStatus.SKIPPED, "already installed", "1.0"),
        # Same version with reinstall: replaced, like --force-reinstall.
        ("1.0", "1.0", True, InstallStatus.INSTALLED, "reinstalled", "1.0"),
        # Upgrade.
        ("1.0", "2.0", False, InstallStatus.INSTALLED, "replaced 1.0", "2.0"),
        # Downgrade, as pip does when given a specific wheel file.
        ("2.0", "1.0", False, InstallStatus.INSTALLED, "replaced 2.0", "1.0"),
    ],
)
def test_reinstall_and_upgrade(
    target: Target,
    tmp_path: Path,
    installed: str,
    wheel: str,
    reinstall: bool,
    status: InstallStatus,
    reason: str,
    final: str,
) -> None:
    install_old_version(target, tmp_path, installed)
    result = WheelInstaller(target, reinstall=reinstall).install(write_versioned(tmp_path / "new", wheel))

    assert (result.status, result.reason, result.error) == (status, reason, None)
    assert run_python(target, "import pkg; print(pkg.VERSION)") == final
    site = site_packages(target)
    assert [path.name for path in site.glob("pkg-*.dist-info")] == [f"pkg-{final}.dist-info"]
    gone = {installed, wheel} - {final}
    for version in gone:
        tag = version.replace(".", "_")
        # The old version's files, its bytecode, script and now-empty folder are removed.
        assert not (site / "pkg" / f"only_{tag}.py").exists()
        assert not list((site / "pkg" / "__pycache__").glob(f"only_{tag}.*"))
        assert not (site / f"only_{tag}").exists()
        assert not (Path(target.scheme["scripts"]) / f"pkg-{tag}").exists()
    assert not [path for path in site.iterdir() if path.name.startswith(".orchestrate")]


def test_failed_upgrade_restores_the_old_version(
    target: Target, tmp_path: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_old_version(target, tmp_path, "1.0")
    before = snapshot(venv_dir)
    fail_on_write(monkeypatch, 4, OSError(errno.ENOSPC, "No space left on device"))
    result = WheelInstaller(target).install(write_versioned(tmp_path / "new", "2.0"))

    assert result.status is InstallStatus.FAILED
    assert snapshot(venv_dir) == before
    assert run_python(target, "import pkg; print(pkg.VERSION)") == "1.0"


def test_uninstall_keeps_files_outside_the_target(target: Target, tmp_path: Path, wheelhouse: Path) -> None:
    assert WheelInstaller(target).install(write_wheel(wheelhouse, "pkg", "1.0")).status is InstallStatus.INSTALLED
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    record = site_packages(target) / "pkg-1.0.dist-info" / "RECORD"
    relative = os.path.relpath(outside, record.parent.parent)
    record.write_text(record.read_text() + f"{relative},,\n{outside},,\n")
    (tmp_path / "new").mkdir()
    result = WheelInstaller(target).install(write_wheel(tmp_path / "new", "pkg", "2.0"))

    assert (result.status, result.reason) == (InstallStatus.INSTALLED, "replaced 1.0")
    assert outside.read_text() == "keep me"


def test_installed_without_record_is_not_replaced(target: Target, tmp_path: Path, wheelhouse: Path) -> None:
    assert WheelInstaller(target).install(write_wheel(wheelhouse, "pkg", "1.0")).status is InstallStatus.INSTALLED
    (site_packages(target) / "pkg-1.0.dist-info" / "RECORD").unlink()
    (tmp_path / "new").mkdir()
    result = WheelInstaller(target).install(write_wheel(tmp_path / "new", "pkg", "2.0"))

    assert result.status is InstallStatus.FAILED
    assert result.error is not None and "has no RECORD" in result.error
    assert run_python(target, "import pkg; print(pkg.VERSION)") == "1.0"


# --- results ----------------------------------------------------------------


def test_result_to_json(target: Target, wheelhouse: Path) -> None:
    result = WheelInstaller(target).install(write_wheel(wheelhouse, "Some.Pkg", "3.0"))
    data = json.loads(json.dumps(result.to_json()))
    assert data["name"] == "some-pkg"
    assert data["version"] == "3.0"
    assert data["status"] == "installed"
    assert data["wheel"] == str(wheelhouse / "some_pkg-3.0-py3-none-any.whl")
    assert data["started_at"] <= data["finished_at"]
    assert (data["reason"], data["error"]) == (None, None)


def test_bad_wheel_file_name_is_a_failed_result(target: Target, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-wheel.zip"
    bogus.write_bytes(b"")
    result = WheelInstaller(target).install(bogus)
    assert (result.status, result.name) == (InstallStatus.FAILED, "not-a-wheel.zip")
    assert result.error is not None and result.error.startswith("Installing not-a-wheel.zip failed: not a wheel file name")


def test_wheels_arriving_one_by_one_are_checked_for_conflicts(target: Target, tmp_path: Path) -> None:
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    wheel_installer = WheelInstaller(target)
    failing = write_wheel(tmp_path / "a", "first", files={"shared/x.py": "a", "first.py": ""}, corrupt="hash")
    assert wheel_installer.install(failing).status is InstallStatus.FAILED
    # A failed wheel's files are not claimed: another distribution may install them.
    owner = write_wheel(tmp_path / "b", "second", files={"shared/x.py": "b"})
    assert wheel_installer.install(owner).status is InstallStatus.INSTALLED
    # The same distribution may replace its own files.
    assert wheel_installer.install(write_wheel(tmp_path / "c", "second", "2.0", files={"shared/x.py": "c"})).reason == "replaced 1.0"

    before = snapshot(site_packages(target))
    late = write_wheel(tmp_path / "c", "third", files={"third.py": "", "shared/x.py": "d"})
    result = wheel_installer.install(late)
    assert result.status is InstallStatus.FAILED
    assert result.error == (
        "Installing third-1.0-py3-none-any.whl failed: second (second-1.0-py3-none-any.whl), being installed or"
        " installed earlier in this run, also installs lib/shared/x.py; drop one of the two"
    )
    assert snapshot(site_packages(target)) == before
