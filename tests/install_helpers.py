"""Helpers for the install stage's tests: what a target holds, what its interpreter loads, compilers that misbehave."""

from __future__ import annotations

import base64
import csv
import glob
import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

import psutil
import pytest
from wheels import write_wheel

from orchestrator.install import bytecode as bytecode_module
from orchestrator.install import rollback as rollback_module
from orchestrator.install.installer import WheelInstaller
from orchestrator.install.results import InstallStatus
from orchestrator.install.target import Target


@pytest.fixture(name="venv_dir")
def venv_dir_fixture(tmp_path: Path) -> Path:
    """A bare virtualenv to install into."""
    path = tmp_path / "venv"
    venv.create(path, with_pip=False, symlinks=os.name != "nt")
    return path


@pytest.fixture(name="target")
def target_fixture(venv_dir: Path) -> Target:
    return Target.from_path(venv_dir)


@pytest.fixture(name="wheelhouse")
def wheelhouse_fixture(tmp_path: Path) -> Path:
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


def compile_server(monkeypatch: pytest.MonkeyPatch, folder: Path, program: str) -> None:
    """Make the bytecode compilers run ``program`` (written into ``folder``) instead of the real server."""
    path = folder / "compile_server.py"
    path.write_text(program)
    monkeypatch.setattr(bytecode_module, "COMPILE_SERVER", path)


def compile_server_that(monkeypatch: pytest.MonkeyPatch, folder: Path, statement: str) -> None:
    """Make the bytecode compilers run ``statement`` on each request, after reading it."""
    real = bytecode_module.COMPILE_SERVER.read_text()
    read = "        request = json.loads(line)\n"
    assert read in real
    compile_server(monkeypatch, folder, real.replace(read, f"{read}        {statement}\n"))


def one_file_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every ``.py`` file to the compilers on its own."""
    monkeypatch.setattr(rollback_module, "_CHUNK_BYTES", 1)


def compiler_processes(target: Target) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children()
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE and os.fspath(target.python) in child.cmdline()
    ]


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


def install_old_version(target: Target, tmp_path: Path, version: str) -> None:
    """Install pkg ``version`` from ``tmp_path/old``; ``tmp_path/new`` is left for the next one."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    assert WheelInstaller(target).install(write_versioned(tmp_path / "old", version)).status is InstallStatus.INSTALLED


def slow_writes(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every file write take ``seconds`` longer."""
    real = rollback_module.copy_member

    def slow_write(source, dest, hash_algorithm):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return real(source, dest, hash_algorithm)

    monkeypatch.setattr(rollback_module, "copy_member", slow_write)


def fail_on_write(monkeypatch: pytest.MonkeyPatch, failing_call: int, error: OSError) -> None:
    """Make the ``failing_call``-th file write (1-based) write a little, then raise ``error``."""
    real = rollback_module.copy_member
    calls = 0

    def write(source, dest, hash_algorithm):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == failing_call:
            dest.write(b"partial")
            raise error
        return real(source, dest, hash_algorithm)

    monkeypatch.setattr(rollback_module, "copy_member", write)


def compilers_count_journals(monkeypatch: pytest.MonkeyPatch, folder: Path, target: Target, *, hold: float) -> Path:
    """Make each compile request note how many installs are under way, then take ``hold`` seconds longer.

    An install holds its journal in site-packages from before it writes until
    it has ended, and asks for bytecode in between: the count, one line per
    request in the file returned, is of real installs, and the hold keeps each
    one under way long enough for the next ones to start if the cap lets them.
    """
    log = folder / "journals-seen"
    count = (
        f"open({os.fspath(log)!r}, 'a').write("
        f"'%d\\n' % len([n for n in os.listdir({os.fspath(site_packages(target))!r}) if n.endswith('.journal')]))"
    )
    compile_server_that(monkeypatch, folder, f"{count}; __import__('time').sleep({hold})")
    return log


def journals_seen(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()]
