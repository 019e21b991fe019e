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
and ignores: it is passed as ``--prerelease allow``. An ``--extra-index-url`` that does not answer
fails uv's resolution where pip's warns and goes on: the message names it and says what to do
(the resolver is not changed behind the user's back).
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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

_FETCH_FAILED = re.compile(r"Failed to fetch: `?([^\s`]+)")


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
            reason, dead = _reason(completed.stderr), _dead_extra_index(completed.stderr, index)
            if dead is not None:  # pip warns about it and goes on
                reason = (f"the extra index {dead} did not answer ({reason}); uv's resolver stops at an index that "
                          "fails: fix or drop that --extra-index-url, or use --resolver pip (and, to build, "
                          "--installer pip), which warn and go on")
            raise ResolutionError(f"cannot resolve {files}: {reason}", completed.stderr)
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


def _dead_extra_index(stderr: str, index: IndexSettings) -> str | None:
    """The ``--extra-index-url`` (the command's or a file's) under a page uv failed to fetch, its password hidden."""
    failed = [_bare(url) for url in _FETCH_FAILED.findall(stderr)]
    for extra in index.extra_index_urls:
        prefix = _bare(extra).rstrip("/") + "/"
        if any(url.startswith(prefix) for url in failed):
            parts = urlsplit(extra)
            if parts.password is None:
                return extra
            return urlunsplit(parts._replace(netloc=f"{parts.username}:****@{parts.netloc.rsplit('@', 1)[1]}"))
    return None


def _bare(url: str) -> str:
    """``url`` without its user and password (uv's messages leave them out)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def _reason(stderr: str) -> str:
    """uv's error in one line: the ``×`` line and the explanation under it, without the drawing."""
    lines = [line.strip().lstrip("×╰─▶│").strip() for line in stderr.splitlines()]
    text = " ".join(line for line in lines if line)
    return text.removeprefix("error: ") or "uv failed and printed nothing"
