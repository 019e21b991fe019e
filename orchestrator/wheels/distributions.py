"""Build the sets :mod:`orchestrator.wheels.depcheck` checks, and ask a target interpreter for its marker environment.

Two checks use them:

- after a build run, :func:`check_wheels`: the run's wheels are checked; the
  wheelhouse's other wheels are there to satisfy requirements (a requirement
  is met if ANY wheel of that name, from the run or already in the wheelhouse,
  satisfies it);
- after ``orchestrate install``, :func:`check_installed`: every distribution
  installed in the target's site-packages folders is checked against the
  others, as ``pip check`` does (it reads the same ``.dist-info`` folders);
  :func:`check_target` puts what it finds in the run's report.

Both evaluate markers for the TARGET interpreter: :func:`target_environment`
runs it once.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.markers import default_environment
from packaging.utils import NormalizedName, canonicalize_name

from orchestrator.errors import UsageError, WheelError
from orchestrator.wheels.depcheck import Distribution, UnmetRequirement, check
from orchestrator.wheels.wheelfile import identity, read_wheel

if TYPE_CHECKING:
    from orchestrator.install.target import Target
    from orchestrator.report import RunReport

__all__ = [
    "check_installed",
    "check_target",
    "check_wheels",
    "installed_distributions",
    "target_environment",
    "wheel_distributions",
]

logger = logging.getLogger(__name__)

NO_EXTRAS: frozenset[NormalizedName] = frozenset()
"""Shared by every distribution asked for none: an empty frozenset is 216 bytes, and a set check reads thousands."""

Extras = Mapping[str, Iterable[str]]
"""Extras asked of a distribution, by its name (``{"requests": ["socks"]}`` for ``requests[socks]``)."""

# PEP 508's environment markers, computed as the PEP (and packaging.markers.default_environment) do,
# with the standard library only: the target may be any Python 3 and need not have packaging.
_ENVIRONMENT_SNIPPET = """\
import json, os, platform, sys
def full_version(info):
    version = "{0}.{1}.{2}".format(info.major, info.minor, info.micro)
    if info.releaselevel != "final":
        version += info.releaselevel[0] + str(info.serial)
    return version
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": full_version(sys.implementation.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""


def target_environment(python: str | os.PathLike[str] | None = None, *, timeout: float = 60.0) -> dict[str, str]:
    """The PEP 508 marker environment of ``python`` (a path to an interpreter); of this one if ``None``."""
    if python is None:
        return {key: str(value) for key, value in default_environment().items()}
    try:
        completed = subprocess.run(
            [os.fspath(python), "-I", "-c", _ENVIRONMENT_SNIPPET],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        environment = json.loads(completed.stdout)
        if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
            raise ValueError(f"not a marker environment: {completed.stdout[:80]!r}")
        return environment
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise UsageError(
            f"{python}: cannot read its marker environment ({exc}); pass a working Python interpreter"
        ) from None


def wheel_distributions(wheels: Iterable[Path], *, extras: Extras | None = None) -> tuple[Distribution, ...]:
    """The distributions of ``wheels``; a wheel that cannot be read is a :class:`WheelError`."""
    return tuple(_read_distributions(wheels, extras))


def _read_distributions(wheels: Iterable[Path], extras: Extras | None) -> Iterator[Distribution]:
    """:func:`wheel_distributions`, each as it is read."""
    asked = _canonical_extras(extras)
    for path in wheels:
        wheel = read_wheel(path)
        yield Distribution(name=wheel.name, version=wheel.version, requires_dist=wheel.requires_dist,
                           extras=asked.get(canonicalize_name(wheel.name), NO_EXTRAS))


def installed_distributions(
    site_packages: Iterable[Path], *, extras: Extras | None = None
) -> tuple[Distribution, ...]:
    """The distributions installed in ``site_packages`` (purelib and platlib), as ``pip check`` sees them.

    Reads ``*.dist-info`` (and legacy ``*.egg-info``) folders with
    :mod:`importlib.metadata`, which turns an egg-info's ``requires.txt`` into
    ``Requires-Dist`` lines. Where two folders hold one name, the first on the
    path wins, as it does for ``import``.
    """
    asked = _canonical_extras(extras)
    seen: dict[NormalizedName, Path] = {}
    found = []
    for folder in dict.fromkeys(path.resolve() for path in site_packages):
        if not folder.is_dir():
            continue
        for info in sorted(folder.iterdir()):
            if info.suffix not in (".dist-info", ".egg-info") or not info.is_dir():
                continue
            dist = importlib.metadata.PathDistribution(info)
            metadata = dist.metadata
            # Asked with `in` first: a missing field is a DeprecationWarning from Python 3.12, later a KeyError.
            name, version = identity(
                metadata["Name"] if "Name" in metadata else None,
                metadata["Version"] if "Version" in metadata else None,
                str(info), "reinstall that distribution or remove the folder",
            )
            key = canonicalize_name(name)
            if key in seen:
                logger.warning("%s is shadowed by %s; not checking it", info, seen[key])
                continue
            seen[key] = info
            found.append(Distribution(
                name=name, version=version, requires_dist=tuple(dist.requires or ()),
                extras=asked.get(key, NO_EXTRAS),
            ))
    return tuple(found)


def check_wheels(
    wheels: Iterable[Path],
    environment: Mapping[str, str],
    *,
    wheelhouse: Path | None = None,
    extras: Extras | None = None,
) -> tuple[UnmetRequirement, ...]:
    """Check a run's ``wheels``; the other wheels of ``wheelhouse`` may satisfy their requirements.

    Each wheel is read once: the run's wheels are in the wheelhouse too, and are not read again as its others.
    ``wheels`` is gone through once, then the wheelhouse's others (a run's thousands are not listed first), each
    read as the check takes it (:func:`~orchestrator.wheels.depcheck.check` keeps of most only a name and version);
    of those in ``wheelhouse``, the file's name is kept.
    """
    ours: set[str] = set()

    def noted(paths: Iterable[Path]) -> Iterator[Path]:
        for path in paths:
            if path.parent == wheelhouse:
                # Not path.name: Path interns its parts, that very string, and the interpreter's table of interned
                # strings, grown to hold thousands at once, never shrinks.
                ours.add(os.path.basename(path))
            yield path

    def others(folder: Path) -> Iterator[Path]:
        # Listed once the run's wheels are all noted, each entry looked at as it is read: glob() lists them all
        # first (a DirEntry, a Path and their strings each).
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries if entry.name.endswith(".whl")
                           and not entry.name.startswith(".") and entry.name not in ours)
        for name in names:
            yield folder / name

    run = _read_distributions(noted(wheels), extras)
    if wheelhouse is None:
        return check(run, environment)
    return check(run, environment, available=_read_distributions(others(wheelhouse), None))


def check_installed(
    site_packages: Iterable[Path], environment: Mapping[str, str], *, extras: Extras | None = None
) -> tuple[UnmetRequirement, ...]:
    """Check every distribution installed in ``site_packages`` against the others, as ``pip check`` does."""
    return check(installed_distributions(site_packages, extras=extras), environment)


def check_target(target: Target, environment: Mapping[str, str], report: RunReport, event: Callable[[str], None],
                 *, extras: Extras | None = None) -> None:
    """Check what ``target`` holds as ``pip check`` does, after installing; the installs stay whatever it finds."""
    site_packages = [Path(target.scheme["purelib"]), Path(target.scheme["platlib"])]
    try:
        unmet = [str(requirement) for requirement in check_installed(site_packages, environment, extras=extras)]
    except WheelError as exc:
        unmet = [f"cannot check the environment: {exc.message}"]
    report.target_unmet = unmet
    for line in unmet:
        event(f"the environment is incomplete: {line}")


def _canonical_extras(extras: Extras | None) -> dict[NormalizedName, frozenset[NormalizedName]]:
    asked: dict[NormalizedName, frozenset[NormalizedName]] = {}
    for name, names in (extras or {}).items():
        key = canonicalize_name(name)
        asked[key] = asked.get(key, frozenset()) | {canonicalize_name(extra) for extra in names}
    return asked
