"""The tools behind build environments: choosing the installer, creating a bare virtualenv, running the installer."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from packaging.version import Version

from orchestrator.errors import BuildError, BuildKilledError, UsageError
from orchestrator.settings import IndexSettings

logger = logging.getLogger(__name__)

InstallerName = Literal["pip", "uv"]


@functools.cache
def find_uv() -> str | None:
    """The uv binary: the one the ``uv`` package ships, else one on PATH (looked up once per process:
    the lookup reads ``sysconfig`` and costs a no-op build a tenth of its own CPU)."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def choose_installer(requested: str) -> InstallerName:
    """Resolve ``auto`` to uv when it is installed, else pip."""
    if requested == "pip":
        return "pip"
    if requested == "uv":
        if find_uv() is None:
            raise UsageError("--installer uv: uv is not installed; pip install uv, or use --installer pip")
        return "uv"
    return "uv" if find_uv() else "pip"


@functools.cache
def outer_pip_usable() -> bool:
    """Whether our own pip can install into another interpreter (``pip --python``, pip >= 22.3)."""
    try:
        return Version(importlib.metadata.version("pip")) >= Version("22.3")
    except importlib.metadata.PackageNotFoundError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Venv:
    """Where the parts of a freshly created virtualenv are."""

    python: Path
    scripts: Path
    purelib: Path
    platlib: Path


def create_venv(path: Path, *, seed_pip: bool = False) -> Venv:
    """Create a bare virtualenv at ``path``; a failure is a :class:`BuildError`."""
    import virtualenv  # 20-odd ms to import; a build that reuses a prepared environment never needs it

    options = [str(path), "--no-setuptools", "--no-periodic-update", "--activators", ""]
    if not seed_pip:
        options.append("--no-pip")
    try:
        session = virtualenv.cli_run(options, setup_logging=False)
    except Exception as exc:  # virtualenv raises many kinds; all mean the same to the user
        raise BuildError(f"cannot create a virtualenv in {path}: {exc}") from exc
    creator = session.creator
    return Venv(python=Path(creator.exe), scripts=Path(creator.script_dir), purelib=Path(creator.purelib),
                platlib=Path(creator.platlib))


def installer_environ(venv: Path) -> dict[str, str]:
    """The environment for an installer run: nothing of the caller's that would redirect it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["VIRTUAL_ENV"] = str(venv)
    return env


def install_command(installer: InstallerName, python: str, requirements_file: Path, index: IndexSettings, *,
                    pinned: bool = False) -> list[str]:
    """The command that installs ``requirements_file`` into the environment of ``python``.

    ``pinned`` says the file is a complete resolution: install exactly it (no
    dependency resolution).
    """
    if installer == "uv":
        uv = find_uv()
        if uv is None:  # pragma: no cover - checked when the run starts
            raise BuildError("uv is not installed any more; use --installer pip")
        cmd = [uv, "pip", "install", "--python", python, "-r", str(requirements_file)]
        if pinned:
            cmd.append("--no-deps")
    else:
        if outer_pip_usable():
            cmd = [sys.executable, "-m", "pip", "--python", python]
        else:
            cmd = [python, "-Im", "pip"]
        cmd += ["install", "--no-input", "--no-warn-script-location", "--disable-pip-version-check",
                "-r", str(requirements_file)]
        if pinned:
            cmd.append("--no-deps")
        cmd.append("--no-compile")  # where an env needs bytecode, bytecode.py compiles it, once for all envs
    return cmd + index.pip_args()


def run_installer(cmd: list[str], env: Mapping[str, str], log: IO[str], what: str) -> None:
    """Run an installer command (``what`` names it: "installing X with uv") with its output in the build log;
    map its failure to a :class:`BuildError`."""
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    completed = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    if completed.returncode < 0:
        name = signal.Signals(-completed.returncode).name
        raise BuildKilledError(f"{what} was killed by {name}", name)
    if completed.returncode:
        raise BuildError(f"{what} failed; check --index-url/--find-links or the package's build-system.requires")
