"""Conflicts: two distributions of one run that would write the same file.

Checked twice: for a whole batch before anything is written
(:func:`find_conflicts`, what :func:`~orchestrator.install.installer.install_all`
does), and wheel by wheel as they arrive (:class:`Claims`, for a build feeding
installs). Both name a file as ``lib/...`` (purelib and platlib count as one
place, as they are in virtualenvs), ``scripts/...``, ``data/...`` or
``headers/NAME/...``, read only from the archive's member list and entry points.
"""

from __future__ import annotations

import logging
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from installer.utils import parse_entrypoints
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)

from orchestrator.errors import InstallError

__all__ = ["Claims", "Conflict", "find_conflicts", "refuse_conflicts"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """Two wheels of one run that would write the same file."""

    path: str
    """The file, as ``lib/...`` (purelib or platlib), ``scripts/...``, ``data/...``,
    ``headers/...``, or ``distribution NAME`` when one distribution comes twice."""
    distributions: tuple[str, str]
    wheels: tuple[str, str]

    def __str__(self) -> str:
        first, second = self.distributions
        return f"{first} ({self.wheels[0]}) and {second} ({self.wheels[1]}) both install {self.path}"


def find_conflicts(wheels: Sequence[Path]) -> list[Conflict]:
    """Every file that two wheels of ``wheels`` would both write, and every distribution given twice.

    A wheel that cannot be read is left out here; installing it fails on its own.
    """
    owners: dict[str, tuple[str, str]] = {}
    conflicts: list[Conflict] = []
    for wheel in wheels:
        try:
            name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
            with zipfile.ZipFile(wheel) as archive:
                paths = _paths_in(archive, name)
        except (OSError, zipfile.BadZipFile, InvalidWheelFilename, ValueError, KeyError) as exc:
            logger.debug("Not checking %s for conflicts: %s", wheel, exc)
            continue
        # The distribution itself is a path: two wheels of one name clash on it.
        for path in [f"distribution {name}", *paths]:
            owner = owners.setdefault(path, (name, wheel.name))
            if owner[1] != wheel.name:
                conflicts.append(Conflict(path=path, distributions=(owner[0], name), wheels=(owner[1], wheel.name)))
    return conflicts


def refuse_conflicts(wheels: Sequence[Path]) -> None:
    """Raise :class:`InstallError` naming the first conflicts of ``wheels``, if any: nothing is written yet."""
    conflicts = find_conflicts(wheels)
    if conflicts:
        shown = "; ".join(str(conflict) for conflict in conflicts[:3])
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise InstallError(
            f"Nothing installed: wheels of this run conflict: {shown}{more};"
            " drop one of each pair or install them separately"
        )


class Claims:
    """The paths each distribution installed by one installer writes, claimed as its wheels arrive; thread-safe.

    The streaming form of :func:`find_conflicts`: two distributions installed
    by one installer never write the same file. A distribution may claim its
    own paths again (a reinstall, another version).
    """

    def __init__(self) -> None:
        self._owners: dict[str, tuple[str, str]] = {}
        """Path -> (distribution, wheel file name) that claimed it."""
        self._lock = threading.Lock()

    def claim(self, archive: zipfile.ZipFile, wheel_name: str, name: str) -> list[str]:
        """Reserve the paths of ``archive`` for distribution ``name``; the ones claimed for the first time.

        Raises :class:`InstallError`, claiming nothing, if another distribution claimed one.
        """
        paths = _paths_in(archive, name)
        with self._lock:
            clashes = sorted(path for path in paths if self._owners.get(path, (name, ""))[0] != name)
            if clashes:
                other, other_wheel = self._owners[clashes[0]]
                more = f" and {len(clashes) - 1} more files" if len(clashes) > 1 else ""
                raise InstallError(
                    f"{other} ({other_wheel}), being installed or installed earlier in this run, also installs"
                    f" {clashes[0]}{more}; drop one of the two"
                )
            claimed = [path for path in paths if path not in self._owners]
            for path in claimed:
                self._owners[path] = (name, wheel_name)
        return claimed

    def release(self, paths: Sequence[str]) -> None:
        """Give back what :meth:`claim` returned: that wheel failed, another distribution may write these."""
        with self._lock:
            for path in paths:
                del self._owners[path]


def _paths_in(archive: zipfile.ZipFile, name: str) -> set[str]:
    members = [member for member in archive.namelist() if not member.endswith("/")]
    dist_info = {member.split("/", 1)[0] for member in members if member.split("/", 1)[0].endswith(".dist-info")}
    entry_points = [f"{info}/entry_points.txt" for info in dist_info if f"{info}/entry_points.txt" in members]
    scripts = set()
    for member in entry_points:
        text = archive.read(member).decode("utf-8")
        scripts |= {f"scripts/{script}" for script, _, _, _ in parse_entrypoints(text)}
    paths = set(scripts)
    for member in members:
        top, _, rest = member.partition("/")
        if top in dist_info:
            continue  # named after the distribution and version: unique per wheel
        if top.endswith(".data") and rest:
            scheme, _, inner = rest.partition("/")
            if scheme == "headers":
                paths.add(f"headers/{name}/{inner}")
            else:
                paths.add(f"{'lib' if scheme in ('purelib', 'platlib') else scheme}/{inner}")
        else:
            paths.add(f"lib/{member}")
    return paths
