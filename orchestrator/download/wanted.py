"""What the ``-r`` files ask for: read and checked before the run, then turned into files to fetch.

With dependencies (the default) a resolver pins every distribution: uv's when it is installed
(:mod:`~orchestrator.download.uv_resolve`, seven times faster here), else pip's, which also
chooses each file (:mod:`~orchestrator.download.resolve`); with ``--no-deps`` the pins are taken
as written. Where no file is chosen yet, the download stage's finder chooses it as ``pip wheel``
would (:mod:`~orchestrator.download.index`). Either way the result is a list of
:class:`PinnedRequirement` for the download stage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from packaging.utils import NormalizedName

from orchestrator.build.envs import find_uv
from orchestrator.download.binary import BinaryOption, BinaryPolicy
from orchestrator.download.reqlines import read_text, split_lines
from orchestrator.download.requirements import (
    PinnedRequirement,
    RequirementsFile,
    parse_requirements,
)
from orchestrator.download.resolve import (
    ArtifactKind,
    ResolvedDistribution,
    resolve,
)
from orchestrator.download.uv_resolve import resolve_with_uv, uv_version
from orchestrator.errors import UsageError
from orchestrator.packageconfig import PackageOverrides
from orchestrator.report import RunReport
from orchestrator.settings import IndexSettings

__all__ = ["Requirements", "read_requirements", "resolve_pins"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirements:
    """The ``-r`` files of a run and how to turn them into files to fetch."""

    files: tuple[Path, ...]
    parsed: RequirementsFile
    constraints: tuple[Path, ...] = ()
    """``-c`` files of the command line (those the files name, pip reads itself)."""
    binary: BinaryPolicy = field(default_factory=BinaryPolicy)
    no_deps: bool = False
    """Fetch exactly the pins as written, instead of resolving their dependencies."""
    resolver: Literal["auto", "pip", "uv"] = "auto"
    """``auto``: uv's when uv is installed and the run asks nothing only pip's does, else pip's."""

    def chosen_resolver(self) -> Literal["pip", "uv"]:
        """uv's resolver unless asked for pip's, or uv is missing, or ``--prefer-binary``/``--require-hashes``
        ask what only pip's does, or a file continues a requirement on the next line, which only pip's reads."""
        if self.resolver == "uv" and find_uv() is None:
            raise UsageError("--resolver uv: uv is not installed; pip install uv, or use --resolver pip")
        if self.resolver == "uv" and self.parsed.split:
            raise UsageError(f"{self.parsed.split[0]}: uv's resolver does not read a requirement continued on the "
                             "next line (`\\`); join the lines, or use --resolver pip")
        if self.resolver == "pip" or self.binary.prefer_binary or self.parsed.require_hashes or self.parsed.split:
            return "pip"
        return "uv" if find_uv() is not None else "pip"


def read_requirements(paths: tuple[Path, ...], *, verb: str, require_hashes: bool, constraints: tuple[Path, ...],
                      no_deps: bool, no_binary: tuple[str, ...], only_binary: tuple[str, ...], prefer_binary: bool,
                      resolver: Literal["auto", "pip", "uv"], overrides: Mapping[NormalizedName, PackageOverrides],
                      pre: bool = False) -> Requirements | None:
    """The -r files, read and checked before anything runs: an empty input is a usage error.

    ``verb`` names what the run does with them (``build``, ``download``), for the message.
    """
    if not paths:
        return None
    parsed = parse_requirements(list(paths))
    if parsed.empty:
        why = (f"a marker excludes every line here ({len(parsed.skipped)} skipped)" if parsed.skipped
               else "they list no requirement")
        raise UsageError(f"{', '.join(map(str, paths))}: nothing to {verb}: {why}; check the file and what wrote it")
    if no_deps:
        parsed.pins()  # a line that pins no version is a usage error now, not in the middle of the run
    options: list[tuple[BinaryOption, str]] = [
        *parsed.binary_options, *(("--no-binary", value) for value in no_binary),
        *(("--only-binary", value) for value in only_binary)]
    # click keeps each option's values in order but not the order between the two: :all: and :none: go first,
    # so that names, which beat them, are never cleared by them.
    options.sort(key=lambda pair: pair[1] not in (":all:", ":none:"))
    binary = BinaryPolicy.from_options(
        options, prefer_binary=prefer_binary or parsed.prefer_binary,
        packages={name: override.binary for name, override in overrides.items() if override.binary})
    split = (*parsed.split, *(origin for path in (*parsed.constraints, *constraints) for origin in _split_in(path)))
    return Requirements(files=paths, parsed=replace(parsed, require_hashes=parsed.require_hashes or require_hashes,
                                                    pre=parsed.pre or pre,
                                                    split=split),
                        constraints=constraints, binary=binary, no_deps=no_deps, resolver=resolver)


def _split_in(constraints: Path) -> list[str]:
    """The lines of a constraints file uv's resolver would not read (which the resolver reads, not this tool)."""
    try:
        text = read_text(constraints)
    except (OSError, UnicodeDecodeError):
        return []  # the resolver says what is wrong with it, naming it
    return [f"{constraints}:{lineno}" for lineno in split_lines(text)]


def resolve_pins(requirements: Requirements, index: IndexSettings, report: RunReport,
                 event: Callable[[str], None]) -> tuple[tuple[PinnedRequirement, ...], Mapping[str, str] | None]:
    """What to fetch: the pins as written (``--no-deps``), else a resolution of the files, said in events.

    Also the marker environment the resolver resolved for, when it says (pip's does).
    """
    for line in requirements.parsed.skipped:
        event(f"skipped {line} (its marker is false here)")
    if requirements.no_deps:
        return requirements.parsed.pins(), None
    started = time.monotonic()
    environment: Mapping[str, str] | None = None
    if requirements.chosen_resolver() == "uv":
        resolver = f"uv {uv_version()}"
        pins = resolve_with_uv(requirements.files, constraint_files=requirements.constraints,
                               binary=requirements.binary, index=index, python=Path(sys.executable),
                               pre=requirements.parsed.pre)
        what = "each file chosen as it is fetched"
    else:
        resolution = resolve(requirements.files, constraint_files=requirements.constraints,
                             binary=requirements.binary, index=index, require_hashes=requirements.parsed.require_hashes,
                             pre=requirements.parsed.pre)
        resolver, environment = f"pip {resolution.pip_version}", resolution.environment
        pins = tuple(_pin(distribution, requirements.files) for distribution in resolution.distributions)
        wheels = sum(distribution.kind is ArtifactKind.WHEEL for distribution in resolution.distributions)
        what = f"{wheels} wheels to download, {len(pins) - wheels} to build"
    seconds = time.monotonic() - started
    event(f"resolved {len(pins)} distributions with {resolver} in {seconds:.1f} s: {what}")
    report.resolution = {"resolver": resolver, "distributions": len(pins), "seconds": round(seconds, 3)}
    return pins, environment


def _pin(distribution: ResolvedDistribution, files: Sequence[Path]) -> PinnedRequirement:
    """The file the resolver chose for ``distribution``, as a pin the download stage fetches and checks."""
    origin = f"{', '.join(map(str, files))} ({'requested' if distribution.requested else 'a dependency'})"
    if distribution.kind is ArtifactKind.VCS:
        raise UsageError(f"{distribution.name} resolves to a version-control checkout ({distribution.url}), which "
                         "orchestrate does not build; pin a released sdist or wheel")
    return PinnedRequirement(
        name=distribution.name, version=distribution.version, origin=origin,
        url=None if distribution.path is not None else distribution.url, path=distribution.path,
        hashes=frozenset({distribution.sha256}) if distribution.sha256 else frozenset(),
        extras=frozenset(distribution.extras), yanked=distribution.yanked)
