"""Conflicts: two distributions of one run never write the same file, whether they come as a batch or one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
from install_helpers import (  # noqa: F401 (fixtures)
    site_packages,
    snapshot,
    target_fixture,
    venv_dir_fixture,
    wheelhouse_fixture,
)
from wheels import write_wheel

from orchestrator.errors import InstallError
from orchestrator.install.conflicts import find_conflicts
from orchestrator.install.installer import WheelInstaller, install_all
from orchestrator.install.results import InstallStatus
from orchestrator.install.target import Target


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
def test_find_conflicts_distribution_twice_and_headers(
    wheelhouse: Path, second: tuple[str, str, dict[str, object]]
) -> None:
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
    replacing = write_wheel(tmp_path / "c", "second", "2.0", files={"shared/x.py": "c"})
    assert wheel_installer.install(replacing).reason == "replaced 1.0"

    before = snapshot(site_packages(target))
    late = write_wheel(tmp_path / "c", "third", files={"third.py": "", "shared/x.py": "d"})
    result = wheel_installer.install(late)
    assert result.status is InstallStatus.FAILED
    assert result.error == (
        "Installing third-1.0-py3-none-any.whl failed: second (second-1.0-py3-none-any.whl), being installed or"
        " installed earlier in this run, also installs lib/shared/x.py; drop one of the two"
    )
    assert snapshot(site_packages(target)) == before
