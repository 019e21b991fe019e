"""The one check a wheel passes before the wheelhouse (`wheels/wheelfile.check_wheel`), on wheels broken on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.version import Version
from wheels import Corruption, write_wheel

from orchestrator.errors import WheelError
from orchestrator.wheels.wheelfile import check_wheel


@pytest.mark.parametrize(
    ("fault", "name", "version", "message"),
    [
        (None, "app", "1.0", None),
        (None, "app", None, None),  # any version
        ("hash", "app", "1.0", "the wheel app-1.0-py3-none-any.whl is corrupt: "),  # a file is not what RECORD says
        ("hash-last", "app", "1.0", "the wheel app-1.0-py3-none-any.whl is corrupt: "),
        ("unrecorded", "app", "1.0", "the wheel app-1.0-py3-none-any.whl is corrupt: "),  # a file RECORD lacks
        ("truncate", "app", "1.0", "cannot read the wheel"),
        (None, "other", "1.0", "the wheel app-1.0-py3-none-any.whl is of project 'app', not 'other'"),
        (None, "app", "2.0", "the wheel app-1.0-py3-none-any.whl has version 1.0, but 2.0 was expected"),
    ],
)
def test_check_wheel_reads_the_metadata_and_checks_every_file_against_record(
        tmp_path: Path, fault: Corruption | None, name: str, version: str | None, message: str | None) -> None:
    path = write_wheel(tmp_path, "app", "1.0", files={"app/__init__.py": "", "app/core.py": "X = 1\n"},
                       corrupt=fault, requires_dist=["idna"])
    if message is None:
        wheel = check_wheel(path, name=name, version=version)
        assert (wheel.name, wheel.version, wheel.requires_dist) == ("app", Version("1.0"), ("idna",))
        return
    with pytest.raises(WheelError) as caught:
        check_wheel(path, name=name, version=version)
    assert message in str(caught.value)
