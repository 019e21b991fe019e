"""Resolve requirements files with uv's resolver (``uv pip compile``) into pins, when uv is installed.

uv resolves a set that pip takes 21.5 s over in 3.0 s (55 packages, half of them sdists, on
this project's benchmark index): it reads static sdist metadata (PKG-INFO 2.2+) instead of
building it, and prepares what it must build in parallel. Its output is a requirements file of
exact pins, which :func:`~orchestrator.download.requirements.parse_requirements` reads back;
the file of each pin is then chosen as ``pip wheel`` would choose it for this interpreter, by
:class:`~orchestrator.download.index.Finder` (a compatible wheel, else the sdist, as the binary
policy allows). pip's resolver (:mod:`~orchestrator.download.resolve`) stays for what uv's does
not do alike: ``--prefer-binary``, ``--require-hashes``, and a file that continues a requirement on
the next line (``name \\`` then ``>=1``), which uv 0.13 does not read. A file's ``--pre`` uv accepts
and ignores: it is passed as ``--prerelease allow``.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orchestrator.build.envs import find_uv
from orchestrator.download.binary import BinaryPolicy
from orchestrator.download.requirements import PinnedRequirement, parse_requirements
from orchestrator.download.resolve import run_resolver
from orchestrator.errors import ResolutionError
from orchestrator.settings import IndexSettings

__all__ = ["resolve_with_uv", "uv_version"]

logger = logging.getLogger(__name__)


def uv_version() -> str | None:
    """uv's version, e.g. ``0.13.9``; ``None`` when uv is not installed."""
    uv = find_uv()
    if uv is None:
        return None
    completed = subprocess.run([uv, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return completed.stdout.split()[1] if completed.returncode == 0 and completed.stdout.strip() else None


def resolve_with_uv(requirement_files: Sequence[Path], *, constraint_files: Sequence[Path] = (),
                    binary: BinaryPolicy, index: IndexSettings, python: Path,
                    pre: bool = False) -> tuple[PinnedRequirement, ...]:
    """Pins for ``requirement_files`` and their dependencies, for ``python``; ``pre``: pre-releases allowed
    (uv accepts a file's ``--pre`` and ignores it).

    A failure is a :class:`ResolutionError` whose message is uv's in one line.
    """
    uv = find_uv()
    assert uv is not None, "checked by the caller"
    files = ", ".join(map(str, requirement_files))
    with tempfile.TemporaryDirectory(prefix="orchestrate-resolve-") as folder:
        output = Path(folder) / "resolved.txt"
        command = [uv, "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python", str(python),
                   "--output-file", str(output), *map(str, requirement_files)]
        for path in constraint_files:
            command += ["--constraint", str(path)]
        command += binary.uv_args() + index.pip_args() + (["--prerelease", "allow"] if pre else [])
        logger.debug("resolving: %s", " ".join(command))
        completed = run_resolver(command, merge_stderr=False)
        if completed.returncode != 0:
            raise ResolutionError(f"cannot resolve {files}: {_reason(completed.stderr)}", completed.stderr)
        pins = parse_requirements([output]).pins()
    given = parse_requirements(list(requirement_files))
    # uv writes pins only: the hashes, extras and lines of what the files name come from the files themselves.
    named = {pin.name: pin for pin in given.requirements}
    named.update((loose.name, PinnedRequirement(name=loose.name, version=None, origin=loose.origin,
                                                extras=frozenset(canonicalize_name(extra)
                                                                 for extra in Requirement(loose.text).extras)))
                 for loose in given.loose)
    return tuple(_with_origin(pin, named.get(pin.name), files) for pin in pins)


def _with_origin(pin: PinnedRequirement, given: PinnedRequirement | None, files: str) -> PinnedRequirement:
    if given is None:
        return replace(pin, origin=f"{files} (a dependency)")
    return replace(pin, hashes=given.hashes, extras=given.extras, origin=given.origin)


def _reason(stderr: str) -> str:
    """uv's error in one line: the ``×`` line and the explanation under it, without the drawing."""
    lines = [line.strip().lstrip("×╰─▶│").strip() for line in stderr.splitlines()]
    text = " ".join(line for line in lines if line)
    return text.removeprefix("error: ") or "uv failed and printed nothing"
