"""What the set check holds of each wheel: a run of thousands of wheels must not hold a ``Distribution`` of each.

The check is the real one (``check_wheels``: each wheel's METADATA read from the zip, the wheelhouse's other wheels
listed, every requirement checked) over real wheel files; memory is read with tracemalloc, at the check's peak.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from packaging.markers import default_environment
from packaging.version import Version
from wheels import write_wheel

from orchestrator.wheels.depcheck import Distribution
from orchestrator.wheels.distributions import check_wheels

ENVIRONMENT = {key: str(value) for key, value in default_environment().items()}


def peak_bytes(folder: Path, count: int) -> int:
    """Bytes traced at the peak of checking a run of ``count`` wheels in a wheelhouse that holds them and 20 others,
    over those before it."""
    folder.mkdir()
    names = [write_wheel(folder, f"run{index:04d}", "1.0").name for index in range(count)]
    write_wheel(folder, "needed", "2.0", requires_dist=["run0000>=1.0"])
    for index in range(19):
        write_wheel(folder, f"other{index:02d}", "1.0")
    wanted = f"needed (>=2); python_version >= '{ENVIRONMENT['python_version']}'"
    names[count // 2] = write_wheel(folder, "needs", "1.0", requires_dist=[wanted, "missing>1"]).name
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        unmet = check_wheels((folder / name for name in names), ENVIRONMENT, wheelhouse=folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The check still reads every wheel, the run's and the wheelhouse's: its one finding is what it must be.
    assert [str(finding) for finding in unmet] == ["needs 1.0 requires missing>1 (missing)"]
    return peak - before


def distribution_bytes() -> float:
    """Bytes of a Distribution of a wheel that requires nothing, its name and Version: the bound of what the check
    may hold of each wheel at its peak."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [Distribution(name=f"run{index:04d}", version=Version("1.0")) for index in range(100)]
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(held) == 100
    return size / 100


def test_the_set_check_holds_less_of_a_wheel_than_its_distribution(tmp_path: Path) -> None:
    # What the check holds whatever the count (the environment, a wheel being read) cancels out between two counts.
    few = peak_bytes(tmp_path / "few", 100)
    many = peak_bytes(tmp_path / "many", 400)
    per_wheel = (many - few) / 300
    bound = distribution_bytes()
    # A Distribution and its Version per wheel, the wheelhouse listed as Paths, were about 800 bytes a wheel.
    assert per_wheel < bound, f"{per_wheel:.0f} bytes a wheel at the check's peak, over {bound:.0f}"
