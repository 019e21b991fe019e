"""Which wheel files ``orchestrate install`` takes: the wheels it is given, and one wheel per pin of its -r locks.

The rules, as ``pip install --no-index --find-links DIR -r lock.txt`` applies them:

- A lock line must pin one version (``foo==2.0``, ``foo[bar]==2.0``); a loose
  one is a usage error naming ``file:line``. A pin that is a local wheel path
  is taken as it is; an sdist or a source folder is a usage error.
- A direct URL (``foo @ https://.../foo-2.0.tar.gz``) is a pin of the version
  its file name carries, met from the folders, where ``build -r`` put its wheel:
  an sdist's by the rules below, a wheel's by that very file. One whose file
  name carries no version is a usage error.
- A pin by name takes, among the ``*.whl`` files of the ``--find-links`` folders
  (and the local ones the locks name), those of that name whose version is the
  pinned one (PEP 440 equality: ``2.0`` is ``2.0.0``) and that carry a tag the
  TARGET interpreter supports (:mod:`.tags`); of these, the one pip takes: the
  highest version, then the tag the target ranks first, then the highest build
  tag. Wheels of other versions in the folders are not looked at, so an
  accumulating wheelhouse is fine.
- A pin with no such wheel refuses the whole set before anything is written,
  as pip's resolver does: one message naming each pin, the folders and the
  wheels of that name they hold. A pin the target already has at that version
  is met (unless ``--reinstall``), as pip says "already satisfied".
- The hashes of a lock are those of the files a build downloaded (sdists,
  index wheels), not of wheels built from them: they are not checked here.
- A wheel given on the command line is taken as it is, as before. Given with a
  pin of the same distribution, it meets the pin if its version is the
  pinned one; another version is a usage error: both versions are asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.specifiers import InvalidSpecifier, Specifier
from packaging.utils import (
    BuildTag,
    InvalidWheelFilename,
    NormalizedName,
    parse_wheel_filename,
)
from packaging.version import Version

from orchestrator.download.requirements import PinnedRequirement, parse_requirements
from orchestrator.errors import InstallError, UsageError
from orchestrator.install.tags import supported_tags
from orchestrator.wheels.distributions import installed_distributions

__all__ = ["InstallSet", "WheelFile", "choose", "select_wheels", "wheel_files"]

logger = logging.getLogger(__name__)

_SHOWN = 6
"""Wheels named in a message about a missing pin; the rest are counted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WheelFile:
    """A wheel file of a --find-links folder, its name parsed."""

    path: Path
    name: NormalizedName
    version: Version
    build: BuildTag
    tags: frozenset[str]

    @classmethod
    def parse(cls, path: Path) -> WheelFile | None:
        """The wheel at ``path``; ``None`` if its name is not a wheel's (pip ignores such files too)."""
        try:
            name, version, build, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            logger.debug("Ignoring %s: not a wheel file name", path)
            return None
        return cls(path=path, name=name, version=version, build=build, tags=frozenset(map(str, tags)))


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSet:
    """What one ``orchestrate install`` installs, and what it asks of them."""

    wheels: tuple[Path, ...]
    """The wheel files, given ones first, then one per pin in lock order."""
    extras: Mapping[str, frozenset[str]]
    """The extras the locks ask of each distribution, for the check of the environment."""
    notes: tuple[str, ...] = ()
    """What was left out and why (pins already installed, --find-links URLs of the locks), one line each."""


def wheel_files(paths: Sequence[Path]) -> list[Path]:
    """The wheels given on the command line: files as they are, folders by their ``*.whl``."""
    files = [path for named in paths for path in (sorted(named.glob("*.whl")) if named.is_dir() else [named])]
    if paths and not files:
        raise UsageError("nothing to install: the folders hold no *.whl")
    return files


def choose(name: NormalizedName, version: str, wheels: Sequence[WheelFile],
           priority: Mapping[str, int]) -> WheelFile | None:
    """The wheel pip takes for ``name==version`` among ``wheels``; ``priority``: each supported tag's rank, 0 best."""
    candidates = []
    for wheel in wheels:
        ranks = [priority[tag] for tag in wheel.tags if tag in priority]
        if wheel.name == name and ranks and _is_pinned(wheel.version, version):
            candidates.append((wheel.version, -min(ranks), wheel.build, wheel))
    return max(candidates, key=lambda candidate: candidate[:3])[3] if candidates else None


def select_wheels(
    *, given: Sequence[Path], requirements: Sequence[Path], find_links: Sequence[str], python: Path,
    site_packages: Sequence[Path], reinstall: bool, tags: Callable[[Path], Sequence[str]] = supported_tags,
    environment: Mapping[str, str] | None = None,
) -> InstallSet:
    """The wheels to install: ``given`` ones, and those the pins of ``requirements`` take; nothing is written.

    ``find_links`` are the command line's (local folders or wheel files);
    ``site_packages`` the target's folders, read for what it has installed,
    and ``tags(python)`` its supported tags, best first: each only when a
    pin needs it. The locks' markers are evaluated in ``environment``, the
    target's (default: this interpreter's).

    :raises UsageError: a lock line that is not a pin of a wheel, a --find-links URL or missing folder.
    :raises InstallError: a pin no wheel meets (every such pin named).
    """
    pins, lock_links, notes = _read_locks(requirements, environment)
    folders = [*(_folder(link, where="--find-links") for link in find_links), *lock_links]
    by_path = [pin for pin in pins if pin.path is not None]
    by_name = _unless_given(given, [pin for pin in pins if pin.path is None])
    if by_name and not folders:
        raise UsageError(f"{by_name[0].origin}: {by_name[0].name}=={by_name[0].version} is pinned by name: "
                         "give --find-links DIR, the folder of wheels to take it from")
    chosen: list[Path] = []
    missing: list[str] = []
    if by_name:
        supported = tags(python)
        priority = {tag: rank for rank, tag in reversed(list(enumerate(supported)))}
        available = [wheel for folder in folders for wheel in _wheels_in(folder)]
        for pin in by_name:
            assert pin.version is not None  # a pin by name has one
            wheel = choose(pin.name, pin.version, _same_file(pin, available), priority)
            if wheel is not None:
                chosen.append(wheel.path)
            elif not reinstall and _is_pinned(_installed_version(site_packages, pin.name), pin.version):
                notes.append(f"{pin.name} {pin.version}: already installed; the folders hold no wheel of it")
            else:
                missing.append(_no_wheel(pin, available, folders, python, supported))
    if missing:
        raise InstallError(f"nothing installed: {'; '.join(missing)}; build the missing wheels into the wheelhouse "
                           "(orchestrate build -r) or fix the pins")
    wheels = dict.fromkeys([*given, *(pin.path for pin in by_path if pin.path is not None), *chosen])
    return InstallSet(wheels=tuple(wheels), extras={pin.name: pin.extras for pin in pins if pin.extras},
                      notes=tuple(notes))


def _read_locks(paths: Sequence[Path], environment: Mapping[str, str] | None,
                ) -> tuple[list[PinnedRequirement], list[Path], list[str]]:
    """The pins of the lock files, the local folders they name, and notes on the rest."""
    if not paths:
        return [], [], []
    parsed = parse_requirements(list(paths), environment=environment)
    if parsed.empty:
        why = (f"a marker excludes every line here ({len(parsed.skipped)} skipped)" if parsed.skipped
               else "they list no requirement")
        raise UsageError(f"{', '.join(map(str, paths))}: nothing to install: {why}; check the file and what wrote it")
    for loose in parsed.loose:
        raise UsageError(f"{loose.origin}: {loose.text} does not pin exactly one version; install -r takes a lock: "
                         "pin it with `uv pip compile` or `pip-compile`")
    pins = list(parsed.pins())
    for pin in pins:
        if pin.url is not None and pin.version is None:
            raise UsageError(f"{pin.origin}: {pin.url}: its file name carries no version, so no wheel of the "
                             f"folders can be matched to it; pin {pin.name}==VERSION, the version the build made")
        if pin.path is not None and not (pin.path.is_file() and pin.path.name.endswith(".whl")):
            raise UsageError(f"{pin.origin}: {pin.path} is not a wheel; build it first (orchestrate build -r) "
                             "and pin its name and version")
    folders, notes = [], []
    for link in parsed.index.find_links:
        if "://" in link or not Path(link).exists():
            notes.append(f"--find-links {link} of {', '.join(map(str, paths))}: not searched, install reads local "
                         "folders only")
        else:
            folders.append(Path(link))
    return pins, folders, notes


def _folder(link: str, *, where: str) -> Path:
    if "://" in link:
        raise UsageError(f"{where} {link}: install reads wheels from local folders only; download them into a "
                         "folder first (orchestrate build -r FILE -w DIR)")
    path = Path(link)
    if not path.is_dir() and not (path.is_file() and path.name.endswith(".whl")):
        raise UsageError(f"{where} {link}: no such folder; give the folder of wheels to install from")
    return path


def _unless_given(given: Sequence[Path], pins: list[PinnedRequirement]) -> list[PinnedRequirement]:
    """The pins a given wheel does not meet; a given wheel of another version than its pin is a usage error."""
    wanted = {pin.name: pin for pin in pins}
    for path in given:
        wheel = WheelFile.parse(path)
        pin = wanted.get(wheel.name) if wheel else None
        if wheel is None or pin is None:
            continue
        assert pin.version is not None  # a pin by name has one
        if not _is_pinned(wheel.version, pin.version):
            raise UsageError(f"{pin.origin}: {pin.name}=={pin.version} and {path} ask for two versions of "
                             f"{pin.name}; drop one")
        del wanted[wheel.name]
    return list(wanted.values())


def _same_file(pin: PinnedRequirement, available: Sequence[WheelFile]) -> Sequence[WheelFile]:
    """What may meet ``pin``: for a URL of a wheel, that very file; else any wheel."""
    if pin.url is None:
        return available
    filename = unquote(urlsplit(pin.url).path.rsplit("/", 1)[-1])
    return [wheel for wheel in available if wheel.path.name == filename] if filename.endswith(".whl") else available


def _installed_version(site_packages: Sequence[Path], name: NormalizedName) -> Version | None:
    found = [dist.version for dist in installed_distributions(site_packages) if dist.key == name]
    return found[0] if found else None


def _wheels_in(folder: Path) -> list[WheelFile]:
    paths = sorted(folder.glob("*.whl")) if folder.is_dir() else [folder]
    return [wheel for wheel in map(WheelFile.parse, paths) if wheel is not None]


def _is_pinned(version: Version | None, pinned: str) -> bool:
    """Whether ``version`` is the one ``==pinned`` names (PEP 440: ``2.0`` is ``2.0.0``)."""
    if version is None:
        return False
    try:
        return Specifier(f"=={pinned}").contains(version, prereleases=True)
    except InvalidSpecifier:  # an `===` pin of a version PEP 440 cannot parse
        return str(version) == pinned


def _no_wheel(pin: PinnedRequirement, available: Sequence[WheelFile], folders: Sequence[Path], python: Path,
              supported: Sequence[str]) -> str:
    """One line: the pin, the folders, and the wheels of that name they hold."""
    names = sorted(wheel.path.name for wheel in available if wheel.name == pin.name)
    held = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
    where = ", ".join(f"{folder}/" if folder.is_dir() else str(folder) for folder in folders)
    interpreter = supported[0].split("-")[0] if supported else "?"
    return (f"{pin.origin}: no wheel of {pin.name} {pin.version} for the target ({python}, {interpreter}) in "
            f"{where}: {'only ' + held if names else 'none of ' + pin.name}")
