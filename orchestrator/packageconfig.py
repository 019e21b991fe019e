"""Per-package overrides: a memory need, a timeout or a binary policy the user knows better.

They live in a ``pyproject.toml`` as ``[tool.orchestrate.packages.NAME]`` tables, or
in an ``orchestrate.toml`` either that way or, shorter, as ``[packages.NAME]``, with
the same keys::

    [packages.scipy]
    memory = "6G"     # reserve this much, whatever history says
    timeout = 3600    # seconds before the build is stopped
    binary = "source" # always build the sdist ("binary": only a wheel from the index)
    build_network = false  # its build hooks see only loopback (true: the network, despite --no-build-network)

An ``orchestrate.toml`` is ours alone, so anything else at its top level is a
mistake and an error; a ``pyproject.toml`` belongs to its project and other tools.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.utils import InvalidName, NormalizedName, canonicalize_name

from orchestrator.errors import UsageError
from orchestrator.units import parse_size

__all__ = ["PackageOverrides", "find_config", "load_package_config"]

ORCHESTRATE_TOML = "orchestrate.toml"
PYPROJECT_TOML = "pyproject.toml"


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageOverrides:
    """What the user set for one package; ``None`` leaves the default in force."""

    memory: int | None = None
    """Bytes to reserve for the build instead of the predicted need."""
    timeout: float | None = None
    """Seconds the build may run before it is stopped."""
    binary: Literal["binary", "source"] | None = None
    """``binary``: take only a wheel from the index; ``source``: always build the sdist."""
    build_network: bool | None = None
    """Whether the sandboxed build hooks may reach the network, whatever ``--build-network`` says."""


def find_config(start: Path) -> Path | None:
    """The config file in folder ``start``: ``orchestrate.toml``, else a ``pyproject.toml``
    with a ``[tool.orchestrate]`` table, else ``None``."""
    candidate = start / ORCHESTRATE_TOML
    if candidate.is_file():
        return candidate
    pyproject = start / PYPROJECT_TOML
    if pyproject.is_file():
        tool = _read(pyproject).get("tool")
        if isinstance(tool, Mapping) and "orchestrate" in tool:
            return pyproject
    return None


def load_package_config(path: Path) -> dict[NormalizedName, PackageOverrides]:
    """The per-package overrides in ``path``, by canonical project name.

    A file named ``pyproject.toml`` is read under ``[tool.orchestrate]`` only; any
    other file is read like ``orchestrate.toml``: ``[packages]`` and
    ``[tool.orchestrate.packages]`` both, and nothing else at the top level.
    """
    document = _read(path)
    places: list[tuple[str, ...]]
    if path.name == PYPROJECT_TOML:
        places = [("tool", "orchestrate", "packages")]
    else:
        _check_top_level(document, path)
        places = [("packages",), ("tool", "orchestrate", "packages")]

    overrides: dict[NormalizedName, PackageOverrides] = {}
    spelled: dict[NormalizedName, str] = {}
    for keys in places:
        packages: Mapping[str, Any] = document
        for depth, key in enumerate(keys, start=1):
            packages = _table(packages.get(key, {}), path, ".".join(keys[:depth]))
        prefix = ".".join(keys)
        for raw_name, settings in packages.items():
            where = f"[{prefix}.{raw_name}]"
            try:
                name = canonicalize_name(raw_name, validate=True)
            except InvalidName as exc:
                raise UsageError(f"{path}: {where} does not name a valid project") from exc
            if name in spelled:
                raise UsageError(f"{path}: {spelled[name]} and {where} name the same project; keep one")
            spelled[name] = where
            overrides[name] = _overrides(_table(settings, path, f"{prefix}.{raw_name}"), path, where)
    return overrides


def _check_top_level(document: Mapping[str, Any], path: Path) -> None:
    """Reject what an ``orchestrate.toml`` cannot mean: a misspelt table would otherwise be ignored."""
    expected = "it holds [packages.NAME] or [tool.orchestrate.packages.NAME] tables"
    for key in document:
        if key not in ("packages", "tool"):
            raise UsageError(f"{path}: unknown top-level key {key!r}; {expected}")
    for key in _table(document.get("tool", {}), path, "tool"):
        if key != "orchestrate":
            raise UsageError(f"{path}: unknown key 'tool.{key}'; {expected}")


def _overrides(settings: Mapping[str, Any], path: Path, where: str) -> PackageOverrides:
    unknown = sorted(set(settings) - {"memory", "timeout", "binary", "build_network"})
    if unknown:
        raise UsageError(
            f"{path}: unknown key {unknown[0]!r} in {where}; the keys are memory, timeout, binary and build_network"
        )
    memory = settings.get("memory")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, (str, int)):
            raise UsageError(f'{path}: {where} memory must be a size such as "4G"')
        try:
            memory = parse_size(str(memory))
        except UsageError as exc:
            raise UsageError(f"{path}: {where} memory: {exc}") from exc
    timeout = settings.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise UsageError(f"{path}: {where} timeout must be a number of seconds above 0")
        timeout = float(timeout)
    binary = settings.get("binary")
    if binary not in (None, "binary", "source"):
        raise UsageError(f'{path}: {where} binary must be "binary" (a wheel only) or "source" (build the sdist)')
    build_network = settings.get("build_network")
    if build_network is not None and not isinstance(build_network, bool):
        raise UsageError(f"{path}: {where} build_network must be true or false")
    return PackageOverrides(memory=memory, timeout=timeout, binary=binary, build_network=build_network)


def _table(value: object, path: Path, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UsageError(f"{path}: {key} must be a table")
    return value


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            document: dict[str, Any] = tomllib.load(file)
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from exc
    return document
