"""The install target: a virtualenv folder or an interpreter, described by its own interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest
from install_helpers import (
    site_packages,
    venv_dir_fixture,  # noqa: F401 (fixtures)
)

from orchestrator.errors import InstallError
from orchestrator.install.target import Target


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
