"""Installing wheels into real virtualenvs: what lands, what is skipped or replaced, and what a failure leaves."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from install_helpers import (  # noqa: F401 (fixtures)
    compilers_count_journals,
    fail_on_write,
    install_old_version,
    journals_seen,
    one_file_per_chunk,
    record_hash,
    recorded,
    run_python,
    site_packages,
    slow_writes,
    snapshot,
    target_fixture,
    venv_dir_fixture,
    wheelhouse_fixture,
    write_versioned,
)
from wheels import write_wheel

from orchestrator.errors import UsageError
from orchestrator.install import installer as installer_module
from orchestrator.install.installer import WheelInstaller, install_all
from orchestrator.install.results import InstallResult, InstallStatus
from orchestrator.install.target import Target

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
    assert [(result.name, result.version) for result in results] == [
        ("plain-pkg", "1.2"), ("tool", "0.3"), ("shell-stuff", "1.0")
    ]
    # Before anything imports the modules (an import writes bytecode itself).
    pycs = list((site_packages(target) / "tool" / "__pycache__").glob("*.pyc"))
    assert bool(pycs) == compile_bytecode
    assert run_python(target, "import plain_pkg; print(plain_pkg.VERSION)") == "1.2"
    bin_dir = Path(target.scheme["scripts"])
    assert subprocess.run([bin_dir / "tool-cli"], capture_output=True, text=True, check=True).stdout == "tool says hi\n"
    assert (bin_dir / "tool-cli").read_text().startswith(f"#!{target.python}")
    hello = subprocess.run([bin_dir / "hello.sh"], capture_output=True, text=True, check=True)
    assert hello.stdout == "hello from data\n"
    dist_info = site_packages(target) / "tool-0.3.dist-info"
    assert (dist_info / "INSTALLER").read_text() == "orchestrate\n"
    record = (dist_info / "RECORD").read_text()
    assert "../../../bin/tool-cli" in record
    assert ("__pycache__/__init__." in record) == compile_bytecode


# --- installs at once ------------------------------------------------------


def test_concurrent_installs_into_shared_folders_record_every_file(
    target: Target, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_file_per_chunk(monkeypatch)
    # Every wheel writes into ns/ and ns/__pycache__; the broken ones roll back meanwhile.
    wheels = [
        write_wheel(
            wheelhouse,
            f"part{index}",
            files={
                f"ns/part{index}.py": "", f"ns/part{index}_pkg/__init__.py": "", f"ns/part{index}_pkg/mod.py": "X = 1\n"
            },
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


def _rehash_record(wheel: Path, algorithm: str) -> None:
    """Rewrite ``wheel``'s RECORD with ``algorithm`` hashes of the same members."""
    with zipfile.ZipFile(wheel) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    record = next(name for name in members if name.endswith(".dist-info/RECORD"))
    lines = []
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).decode().rstrip("=")
        lines.append(f"{name},,\n" if name == record else f"{name},{algorithm}={digest},{len(data)}\n")
    members[record] = "".join(lines).encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_record_lists_the_hash_of_each_installed_file(target: Target, wheelhouse: Path, algorithm: str) -> None:
    # sha256 members keep the hash they were checked against; others, and a script whose
    # shebang the install rewrites, are hashed as written.
    wheel = write_wheel(
        wheelhouse, "hashed", files={"hashed/__init__.py": "X = 1\n", "hashed/data.bin": bytes(range(256)) * 99},
        data_files={"scripts/tool": "#!python\nprint('hi')\n"},
    )
    _rehash_record(wheel, algorithm)
    result = WheelInstaller(target, compile_bytecode=False).install(wheel)

    assert result.status is InstallStatus.INSTALLED, result.error
    entries = recorded(target, "hashed-1.0.dist-info")
    script = Path(target.scheme["scripts"]) / "tool"
    assert script.read_text().startswith(f"#!{target.python}")
    assert script in entries
    for path, (digest, size) in entries.items():
        if path.name != "RECORD":
            assert (digest, size) == (record_hash(path), str(path.stat().st_size)), path


def test_max_installs_is_a_cap_that_is_reached(
    target: Target, wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = compilers_count_journals(monkeypatch, tmp_path, target, hold=1.0)
    monkeypatch.setattr(installer_module, "usable_cpu_count", lambda: 6)  # a compiler per wheel: only the cap waits
    wheels = [write_wheel(wheelhouse, f"pkg{index}") for index in range(6)]
    seen: list[str] = []
    results = install_all(wheels, WheelInstaller(target), max_installs=2, on_result=lambda r: seen.append(r.name))

    assert [result.status for result in results] == [InstallStatus.INSTALLED] * 6
    assert sorted(seen) == [f"pkg{index}" for index in range(6)]
    # One request per wheel (one small module each), each seeing the installs under way.
    counts = journals_seen(log)
    assert len(counts) == 6
    assert max(counts) == 2


def test_an_interrupt_lets_the_installs_under_way_finish_and_starts_no_more(
    target: Target, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_writes(monkeypatch, 0.1)  # both first installs are under way when the first ends
    wheels = [write_wheel(wheelhouse, f"pkg{index}") for index in range(6)]
    handed: list[InstallResult] = []

    def interrupt(result: InstallResult) -> None:
        handed.append(result)
        if len(handed) == 1:
            raise KeyboardInterrupt  # as Ctrl-C would, in the calling thread

    with pytest.raises(KeyboardInterrupt):
        install_all(wheels, WheelInstaller(target, compile_bytecode=False), max_installs=2, on_result=interrupt)
    # The other install under way, and the next one the freed thread may have taken; not the rest.
    assert 2 <= len(handed) <= 3
    assert {result.status for result in handed} == {InstallStatus.INSTALLED}
    # Every install that started finished whole and was handed over.
    site = site_packages(target)
    assert sorted(path.name for path in site.glob("*.dist-info")) == sorted(
        f"{result.name}-1.0.dist-info" for result in handed)
    for result in handed:
        assert (site / result.name / "__init__.py").is_file()
        assert all(path.is_file() for path in recorded(target, f"{result.name}-1.0.dist-info"))


def test_max_installs_below_one_is_a_usage_error(target: Target) -> None:
    with pytest.raises(UsageError, match="at least 1"):
        install_all([], WheelInstaller(target), max_installs=0)


# --- timeout ----------------------------------------------------------------


def test_a_wheel_past_its_timeout_while_writing_is_rolled_back(
    target: Target, tmp_path: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_old_version(target, tmp_path, "1.0")
    before = snapshot(venv_dir)
    slow_writes(monkeypatch, 0.4)
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

    assert [result.status for result in results] == [
        InstallStatus.INSTALLED, InstallStatus.FAILED, InstallStatus.INSTALLED
    ]
    error = results[1].error
    assert error is not None and "\n" not in error
    assert error.startswith("Installing broken-1.0-py3-none-any.whl failed: ")
    assert message in error
    after = snapshot(site_packages(target))
    assert {path for path in after if path not in before and "broken" in path} == set()
    assert (site_packages(target) / "good_two" / "__init__.py").is_file()


@pytest.mark.parametrize("compile_bytecode", [True, False])
def test_bad_hash_found_after_other_files_were_written_leaves_nothing(
    target: Target, wheelhouse: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch, compile_bytecode: bool
) -> None:
    # One file per chunk: compilers are busy with this wheel when the bad member turns up.
    one_file_per_chunk(monkeypatch)
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
    assert result.error is not None and error.strerror is not None and error.strerror in result.error
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


def test_skipping_writes_nothing_not_even_a_journal(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = write_versioned(tmp_path, "1.0")
    assert WheelInstaller(target).install(wheel).status is InstallStatus.INSTALLED

    def no_journal(*args: object) -> None:
        raise AssertionError("a skipped install took a journal")

    monkeypatch.setattr("orchestrator.install.journal.Journal.acquire", no_journal)
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
    assert result.error is not None
    assert result.error.startswith("Installing not-a-wheel.zip failed: not a wheel file name")
