"""Resolve requirements files with their dependencies into the exact artifacts to fetch.

pip's resolver does the work: ``python -m pip install --dry-run --ignore-installed
--report FILE -r REQ -c CON`` with the binary policy and the index options, for the
interpreter orchestrate runs under or, through ``pip --python``, another target. Its
installation report (format version 1) names, per distribution, the file pip would
install for that interpreter: a wheel from the index, an sdist, a direct URL or a
local path, with its hash. :func:`resolve` turns it into :class:`ResolvedDistribution`
records and pip's failures into one-line :class:`ResolutionError` messages.

Why pip's resolver rather than uv's: pip is present wherever orchestrate is (uv is
optional); its report gives the artifact ``pip wheel`` would take for this very
interpreter, where ``uv pip compile`` gives version pins and leaves the choice of file
to a second step; and its binary policy (``--no-binary``, ``--only-binary``,
``--prefer-binary``) and configuration are the ones users already know.
What it costs: pip reads the metadata of every candidate it considers. From an index
that serves PEP 658 ``.metadata`` files (PyPI does) that is a small download per wheel;
otherwise it downloads the wheel, and for an sdist it builds the metadata through the
project's backend in an isolated environment, which can take seconds per sdist.

``--quiet`` is not passed: pip prints "The conflict is caused by:" at its info level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from orchestrator.download.binary import BinaryPolicy
from orchestrator.errors import ResolutionError, UsageError
from orchestrator.settings import IndexSettings

__all__ = ["ArtifactKind", "Resolution", "ResolvedDistribution", "resolve"]

logger = logging.getLogger(__name__)

_NOT_FOUND = re.compile(
    r"Could not find a (?:final )?version that satisfies the requirement (.+) \(from versions: (.*)\)"
)
_POINTER = re.compile(r"^(\[\d+ lines? of output\]|See above)")
_YANKED = re.compile(  # pip's warning for each yanked file it takes; its report says only "is_yanked"
    r"yanked version: '([^'\[]+)(?:\[[^']*\])?' candidate \(version (\S+) at .*\)\n"
    r"Reason for being yanked: (.*)"
)
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")


class ArtifactKind(Enum):
    """What pip would install a distribution from."""

    WHEEL = "wheel"
    SDIST = "sdist"
    TREE = "tree"
    """A local source folder."""
    VCS = "vcs"
    """A version-control checkout (``git+https://...``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedDistribution:
    """One distribution of the resolution, and the artifact pip chose for it."""

    name: NormalizedName
    """The project name, canonicalised."""
    version: str
    """The version pip resolved, as its metadata says it."""
    kind: ArtifactKind
    """A wheel, an sdist, a source folder or a VCS checkout."""
    url: str
    """Where the artifact is: an index or direct URL, or a ``file://`` URL."""
    path: Path | None
    """The local file or folder when ``url`` is a ``file://`` URL (never for a VCS checkout)."""
    sha256: str | None
    """The artifact's sha256 as the index, the requirement or pip's download knows it."""
    requested: bool
    """Named by a requirements file (rather than pulled in as a dependency)."""
    is_direct: bool
    """Given as a URL or path rather than found on an index."""
    requires_dist: tuple[str, ...]
    """The distribution's ``Requires-Dist`` requirements, markers unevaluated."""
    extras: frozenset[str] = frozenset()
    """The extras the requirements files ask of it (``requests[socks]``)."""
    yanked: str | None = None
    """The index's reason for yanking the file (``""`` if it gives none), taken as a pin names it; ``None``: not
    yanked."""

    @property
    def filename(self) -> str:
        """The last segment of ``url``: the file name of a wheel or an sdist."""
        return unquote(urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1])


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """Everything pip would install for the target, in the report's order."""

    distributions: tuple[ResolvedDistribution, ...]
    """One record per distribution, requested ones and dependencies."""
    environment: Mapping[str, str]
    """The marker environment pip resolved for (``python_version``, ``sys_platform``, ...)."""
    pip_version: str
    """The version of the pip that resolved."""


def resolve(
    requirement_files: Sequence[Path],
    *,
    constraint_files: Sequence[Path] = (),
    binary: BinaryPolicy = BinaryPolicy(),
    index: IndexSettings = IndexSettings(),
    require_hashes: bool = False,
    no_deps: bool = False,
    pre: bool = False,
    python: Path | None = None,
) -> Resolution:
    """Resolve ``requirement_files`` (with ``-c`` ``constraint_files``) for ``python``.

    ``python`` defaults to the running interpreter; ``no_deps`` resolves exactly what
    the files list; ``require_hashes`` makes pip check the hashes the files give; ``pre``
    lets it take pre-releases (as ``--pre`` in a file does).
    Options inside the files (``--index-url``, ``--hash`` ...) and the user's pip
    configuration apply as they do for ``pip wheel``.

    Raises :class:`ResolutionError` (pip's whole output in ``output``) when pip finds
    no solution, and :class:`UsageError` when no requirement applies to the target.
    """
    files = ", ".join(str(path) for path in requirement_files) or "no requirements file"
    with tempfile.TemporaryDirectory(prefix="orchestrate-resolve-") as folder:
        report_path = Path(folder) / "report.json"
        command = _pip_command(
            report_path,
            requirement_files=requirement_files,
            constraint_files=constraint_files,
            binary=binary,
            index=index,
            require_hashes=require_hashes,
            no_deps=no_deps,
            pre=pre,
            python=python,
        )
        logger.debug("resolving: %s", " ".join(command))
        completed = run_resolver(command, merge_stderr=True)  # one stream keeps pip's messages in order
        output = completed.stdout
        if completed.returncode != 0 and "No module named pip" in output:
            raise ResolutionError(
                f"cannot resolve {files}: pip is not installed for {sys.executable}, and orchestrate resolves "
                "with pip's resolver; install pip (23 or newer) into orchestrate's environment",
                output,
            )
        if completed.returncode != 0:
            raise ResolutionError(f"cannot resolve {files}: {_reason(output, binary)}", output)
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError) as exc:
            raise ResolutionError(f"cannot resolve {files}: pip wrote no readable report ({exc})", output) from exc
    resolution = _from_report(report, files=files, output=output)
    if not any(distribution.requested for distribution in resolution.distributions):
        raise UsageError(
            f"nothing to resolve: {files} lists no requirement for this interpreter "
            "(the files are empty or every line's marker is false)"
        )
    return resolution


_RUNNING: set[subprocess.Popen[str]] = set()
"""Resolver processes under way, for :func:`stop_resolvers`."""
_RUNNING_LOCK = threading.Lock()


def run_resolver(command: list[str], *, merge_stderr: bool) -> subprocess.CompletedProcess[str]:
    """Run a resolver's command to its end, its output captured; :func:`stop_resolvers` may end it first.

    The pipeline resolves in a thread of its own while the first builds run, so an
    interrupt of the run does not reach this call: the run ends it through the registry.
    """
    # A session of its own: the backends it runs for metadata go with it when it is stopped.
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                          text=True, errors="replace", start_new_session=True) as process:
        with _RUNNING_LOCK:
            _RUNNING.add(process)
        try:
            stdout, stderr = process.communicate()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(process)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr or "")


def stop_resolvers() -> None:
    """Kill the resolver processes under way and what they started (the run is ending), so that none outlives it."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for process in running:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)


def _pip_command(
    report_path: Path,
    *,
    requirement_files: Sequence[Path],
    constraint_files: Sequence[Path],
    binary: BinaryPolicy,
    index: IndexSettings,
    require_hashes: bool,
    no_deps: bool,
    pre: bool,
    python: Path | None,
) -> list[str]:
    command = [sys.executable, "-m", "pip"]
    if python is not None and Path(python).absolute() != Path(sys.executable).absolute():
        command += ["--python", str(python)]  # a general option: it must precede "install"
    command += [
        "install",
        "--dry-run",
        "--ignore-installed",
        "--disable-pip-version-check",
        "--no-input",  # nobody is there to answer a prompt for credentials
        "--progress-bar",
        "off",
        "--report",
        str(report_path),
    ]
    for path in requirement_files:
        command += ["--requirement", str(path)]
    for path in constraint_files:
        command += ["--constraint", str(path)]
    command += binary.pip_args()
    command += index.pip_args()
    if require_hashes:
        command.append("--require-hashes")
    if no_deps:
        command.append("--no-deps")
    if pre:
        command.append("--pre")
    return command


def _from_report(report: Any, *, files: str, output: str) -> Resolution:
    """The typed view of pip's installation report, format version 1."""
    if not isinstance(report, dict) or report.get("version") != "1":
        version = report.get("version") if isinstance(report, dict) else None
        raise ResolutionError(
            f"cannot resolve {files}: pip wrote an installation report of version {version!r}; "
            "orchestrate reads version 1 (pip 23 to 26 write it)",
            output,
        )
    try:
        reasons = {(canonicalize_name(name), version): "" if reason == "<none given>" else reason.strip()
                   for name, version, reason in _YANKED.findall(output)}
        distributions = tuple(_distribution(item, reasons) for item in report["install"])
        environment = {str(key): str(value) for key, value in report["environment"].items()}
        pip_version = str(report["pip_version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ResolutionError(f"cannot resolve {files}: pip's report is not as expected ({exc!r})", output) from exc
    return Resolution(distributions=distributions, environment=environment, pip_version=pip_version)


def _distribution(item: Mapping[str, Any], reasons: Mapping[tuple[NormalizedName, str], str]) -> ResolvedDistribution:
    """One install item of the report; ``reasons``: pip's yank reasons by name and version, from its output."""
    metadata = item["metadata"]
    info = item["download_info"]
    url = str(info["url"])
    local = _local_path(url)
    kind: ArtifactKind
    sha256: str | None = None
    if "dir_info" in info:
        kind = ArtifactKind.TREE
    elif "vcs_info" in info:
        kind = ArtifactKind.VCS
        local = None  # a local repository is not the tree to build: pip checks out a commit
    else:
        archive = info.get("archive_info", {})
        sha256 = archive.get("hashes", {}).get("sha256")
        legacy = str(archive.get("hash", ""))
        if sha256 is None and legacy.startswith("sha256="):
            sha256 = legacy.removeprefix("sha256=")
        filename = unquote(urlsplit(url).path).rsplit("/", 1)[-1].lower()
        if filename.endswith(".whl"):
            kind = ArtifactKind.WHEEL
        elif filename.endswith(_SDIST_SUFFIXES):
            kind = ArtifactKind.SDIST
        else:
            raise ValueError(f"{url} is neither a wheel nor an sdist")
    name = canonicalize_name(metadata["name"])
    return ResolvedDistribution(
        name=name,
        version=str(metadata["version"]),
        kind=kind,
        url=url,
        path=local,
        sha256=sha256,
        requested=bool(item.get("requested", False)),
        is_direct=bool(item.get("is_direct", False)),
        requires_dist=tuple(str(requirement) for requirement in metadata.get("requires_dist", ())),
        extras=frozenset(str(extra) for extra in item.get("requested_extras") or ()),
        yanked=reasons.get((name, str(metadata["version"])), "") if item.get("is_yanked") else None,
    )


def _local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(url2pathname(unquote(parts.path)))


def _reason(output: str, binary: BinaryPolicy) -> str:
    """pip's failure in one or two lines: the conflict, the requirement nothing satisfies, or its last error."""
    lines = output.splitlines()
    stripped = [line.strip() for line in lines]
    if "The conflict is caused by:" in stripped:
        start = stripped.index("The conflict is caused by:") + 1
        causes: list[str] = []
        for line in stripped[start:]:
            if not line:
                break
            causes.append(line)
        return "conflicting requirements: " + "; ".join(causes)
    for line in stripped:
        match = _NOT_FOUND.search(line)
        if match:
            requirement, versions = match.groups()
            reason = f"no distribution satisfies {requirement} (versions found: {versions})"
            name = _requirement_name(requirement)
            hint = binary.describe(name) if name else None
            return f"{reason}; {hint}" if hint else reason
    diagnostic = _diagnostic(lines)
    if diagnostic:
        return diagnostic
    blocks = _error_blocks(lines)
    if not blocks:
        last = [line for line in stripped if line]
        return last[-1] if last else "pip failed and printed nothing"
    head, details = blocks[-1]
    if head.startswith("Hashes are required"):
        missing = ", ".join(detail.split(" --hash", 1)[0] for detail in details)
        return f"hashes are required (--require-hashes, or a --hash on any line) but missing for {missing}"
    if "DO NOT MATCH THE HASHES" in head:
        # "name==1.0 from URL (from -r FILE (line 1)):" then "Expected sha256 X" and "Got Y" lines
        files = [detail.split(" (from ", 1)[0].rstrip(":") for detail in details if " from " in detail]
        return f"a downloaded file does not have the hash the requirements give: {'; '.join(files)}"
    sentence = head.split(". ", 1)[0]
    return f"{sentence}: {'; '.join(details)}" if details else sentence


def _diagnostic(lines: list[str]) -> str | None:
    """pip's last ``error: code`` block, ``× what failed`` and ``╰─> context``, in one line."""
    starts = [number for number, line in enumerate(lines) if line.startswith("error: ")]
    if not starts:
        return None
    what = context = ""
    for line in lines[starts[-1] + 1 :]:
        if line.startswith("×"):
            what = line.removeprefix("×").strip()
        elif line.startswith("╰─>"):
            context = line.removeprefix("╰─>").strip()
    if not what:
        return None
    # "[12 lines of output]" and "See above for output." point at lines kept in ``output``
    if context and not _POINTER.match(context):
        return f"{what.rstrip('.')}: {context}"
    return what


def _error_blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """pip's ``ERROR:`` lines, each with the indented lines that follow it."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("ERROR:"):
            blocks.append((line.removeprefix("ERROR:").strip(), []))
        elif blocks and line[:1].isspace() and line.strip():
            blocks[-1][1].append(line.strip())
    return blocks


def _requirement_name(display: str) -> str | None:
    """The project of pip's requirement display, e.g. ``sonly>=1 (from top)`` -> ``sonly``."""
    try:
        return Requirement(display.split(" (from ", 1)[0]).name
    except InvalidRequirement:
        return None
