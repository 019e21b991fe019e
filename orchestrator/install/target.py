"""The target: the Python environment wheels are installed into, as its own interpreter describes it.

The interpreter is asked once, by running ``_probe.py`` (a script, since it
may be another Python without ``orchestrator``), for its ``sysconfig`` scheme,
its ``sys.executable`` (written into script shebangs) and its bytecode cache tag.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InstallError

__all__ = ["Target"]

_SCHEME_KEYS: tuple[str, ...] = ("purelib", "platlib", "headers", "scripts", "data")

_PROBE = Path(__file__).with_name("_probe.py")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A Python environment to install into, as its own interpreter describes it."""

    python: Path
    """The interpreter (its ``sys.executable``); written into script shebangs."""
    scheme: Mapping[str, str]
    """Absolute folders for purelib, platlib, headers, scripts and data.

    ``headers`` is the include folder; each distribution's headers go in a
    sub-folder named after it.
    """
    cache_tag: str | None = None
    """The interpreter's bytecode tag (``cpython-311``): where its ``.pyc`` files go; ``None`` if unknown."""

    @classmethod
    def from_path(cls, path: Path, *, timeout: float = 60.0) -> Target:
        """Ask the interpreter at ``path`` (a virtualenv folder or an interpreter) for its scheme."""
        python = _find_python(path)
        try:
            completed = subprocess.run(
                [os.fspath(python), "-I", os.fspath(_PROBE)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"Target {path} is not a usable Python: running {python} failed ({exc})") from exc
        try:
            facts = json.loads(completed.stdout)
            scheme = {key: os.path.abspath(facts["scheme"][key]) for key in _SCHEME_KEYS}
            return cls(
                python=Path(facts["python"] or python).absolute(),
                scheme=scheme,
                cache_tag=facts["cache_tag"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            stderr = completed.stderr.strip().splitlines()[-1:] or ["no output"]
            raise InstallError(
                f"Target {path} is not a usable Python: {python} exited with {completed.returncode}"
                f" ({stderr[0]}); pass a virtualenv folder or a Python interpreter"
            ) from exc


def _find_python(path: Path) -> Path:
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.is_file():
                return candidate
        raise InstallError(
            f"Target {path} is not a Python environment: no bin/python or Scripts/python.exe in it;"
            " create it with `python -m venv` or pass an interpreter"
        )
    if not path.is_file():
        raise InstallError(f"Target {path} does not exist; create the virtualenv first or pass an interpreter")
    return path
