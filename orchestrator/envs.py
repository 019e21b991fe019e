"""Isolated build environments: create a virtualenv, install build requirements into it."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, Literal

import virtualenv
from packaging.version import Version

from orchestrator.errors import BuildError, BuildKilledError, UsageError
from orchestrator.settings import IndexSettings

logger = logging.getLogger(__name__)

InstallerName = Literal["pip", "uv"]


def find_uv() -> str | None:
    """The uv binary: the one the ``uv`` package ships, else one on PATH."""
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


class BuildEnv:
    """A virtualenv for one build; satisfies ``build.env.IsolatedEnv``."""

    def __init__(self, path: Path, *, installer: InstallerName, index: IndexSettings, log: IO[str]) -> None:
        self.path = path
        self._installer = installer
        self._index = index
        self._log = log
        seed_pip = installer == "pip" and not outer_pip_usable()
        options = [str(path), "--no-setuptools", "--no-wheel", "--no-periodic-update", "--activators", ""]
        if not seed_pip:
            options.append("--no-pip")
        try:
            session = virtualenv.cli_run(options, setup_logging=False)
        except Exception as exc:  # virtualenv raises many kinds; all mean the same to the user
            raise BuildError(f"cannot create a virtualenv in {path}: {exc}") from exc
        self._python = str(session.creator.exe)
        self.scripts = str(session.creator.script_dir)
        self.purelib = Path(session.creator.purelib)

    @property
    def python_executable(self) -> str:
        return self._python

    def make_extra_environ(self) -> Mapping[str, str]:
        path = os.environ.get("PATH")
        return {"PATH": os.pathsep.join([self.scripts, path]) if path else self.scripts}

    def install(self, requirements: Collection[str]) -> None:
        """Install ``requirements`` into the environment; a failure is a :class:`BuildError`."""
        if not requirements:
            return
        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="build-requirements-", delete=False) as file:
            file.write("\n".join(sorted(requirements)))
        try:
            self._run_installer(Path(file.name))
        finally:
            os.unlink(file.name)

    def _run_installer(self, requirements_file: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
        if self._installer == "uv":
            uv = find_uv()
            if uv is None:  # pragma: no cover - checked when the run starts
                raise BuildError("uv is not installed any more; use --installer pip")
            cmd = [uv, "pip", "install", "--python", self._python, "-r", str(requirements_file)]
            env["VIRTUAL_ENV"] = str(self.path)
        else:
            if outer_pip_usable():
                cmd = [sys.executable, "-m", "pip", "--python", self._python]
            else:
                cmd = [self._python, "-Im", "pip"]
            cmd += ["install", "--no-input", "--no-warn-script-location", "--no-compile",
                    "--disable-pip-version-check", "-r", str(requirements_file)]
        cmd += self._index.pip_args()
        requirements = requirements_file.read_text().replace("\n", ", ")
        self._log.write(f"$ {' '.join(cmd)}\n# {requirements}\n")
        self._log.flush()
        completed = subprocess.run(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if completed.returncode < 0:
            name = signal.Signals(-completed.returncode).name
            raise BuildKilledError(f"installing build requirements was killed by {name}", name)
        if completed.returncode:
            raise BuildError(
                f"cannot install build requirements ({requirements}) with {self._installer}; "
                "check --index-url/--find-links or the package's build-system.requires"
            )
