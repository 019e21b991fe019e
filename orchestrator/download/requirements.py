"""Read pip-style requirements files: pins for ``--no-deps``, anything pip reads for the resolver.

With dependencies (the default), pip's resolver reads the files itself
(:mod:`~orchestrator.download.resolve`); this module still reads them first, to find
the index and binary options, the lines a marker excludes, and an empty input. With
``--no-deps`` every requirement must name exactly one version, a direct URL to an
sdist or a wheel, or a local sdist, wheel or source folder
(:meth:`RequirementsFile.pins`). The subset of pip's syntax understood here:

* ``name==version`` (extras are kept, for the checks of the set), with environment markers;
  lines whose marker is false for the running interpreter are skipped, and listed;
* any other PEP 508 requirement (``requests``, ``foo>=1``), for the resolver only;
* ``--hash=sha256:<hex>`` after a requirement, any number of times;
* ``name @ https://.../name-1.0.tar.gz`` and plain ``https://.../name-1.0.tar.gz``
  (or a ``.whl``); a ``#sha256=`` fragment counts as a hash;
* local paths (``./dist/name-1.0.tar.gz``, ``./src/name``, ``name @ file:///...``),
  relative to the folder of the file that names them;
* ``-r``/``--requirement`` includes (relative to the including file; a file is
  read once, so include cycles are harmless), and ``-c``/``--constraint`` files,
  which the resolver reads;
* ``-i``/``--index-url``, ``--extra-index-url``, ``-f``/``--find-links``,
  ``--no-index``, ``--require-hashes``, ``--no-binary``, ``--only-binary``,
  ``--prefer-binary``, ``--pre``; ``--trusted-host`` is accepted and ignored;
* comments (``#`` at the start of a line or after whitespace) and ``\\`` line
  continuations.

Anything else is a :class:`~orchestrator.errors.UsageError` naming ``file:line``.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from orchestrator.build.sources import SDIST_SUFFIXES, parse_sdist_name, static_project
from orchestrator.download.binary import BinaryOption
from orchestrator.download.reqlines import (
    SHA256,
    hashes_from_options,
    logical_lines,
    read_text,
    split_lines,
    split_options,
)
from orchestrator.errors import UsageError
from orchestrator.settings import IndexSettings, check_index_url

__all__ = ["LooseRequirement", "PinnedRequirement", "RequirementsFile", "parse_requirements"]

logger = logging.getLogger(__name__)

_NOT_A_LOCK = (
    "with --no-deps every line must pin one version; "
    "pin it with `uv pip compile` or `pip-compile`, or drop --no-deps"
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NAMED_URL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*@")
_FILE_OPTIONS = {"--requirement": "-r", "--constraint": "-c"}
"""The options that name another file, as a message spells them."""
# Options start at the first whitespace-separated token beginning with "-", as in pip.
_OPTIONS_START = re.compile(r"\s-")


@dataclass(frozen=True, slots=True, kw_only=True)
class PinnedRequirement:
    """One package pinned to one source."""

    name: NormalizedName
    """The project name, canonicalised."""
    version: str | None
    """The pinned version as written; ``None`` only when it cannot be known before
    building (a source folder without a static version, or a URL whose file name
    carries none)."""
    url: str | None = None
    """A direct URL to the sdist or wheel, if the requirement gives one."""
    path: Path | None = None
    """An absolute path to a local sdist, wheel or source folder, if any."""
    hashes: frozenset[str] = frozenset()
    """The sha256 hex digests the downloaded file may have; empty means any."""
    origin: str
    """Where the requirement was written, as ``file:line``, for messages."""
    extras: frozenset[str] = frozenset()
    """The extras asked of it (``requests[socks]==2.31``), canonicalised."""
    yanked: str | None = None
    """Why the index yanked ``url`` (``""``: no reason given), when a resolver chose that file and said so;
    ``None`` otherwise (the download stage reads it from the index when it looks the file up)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LooseRequirement:
    """A requirement that names no single version (``requests``, ``foo>=1``): for the resolver."""

    name: NormalizedName
    text: str
    """The requirement as written, without its options."""
    origin: str
    """``file:line``, for messages."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequirementsFile:
    """What one or more requirements files say, includes followed."""

    requirements: tuple[PinnedRequirement, ...]
    """The pins whose markers hold, in file order, duplicates merged."""
    loose: tuple[LooseRequirement, ...] = ()
    """The requirements whose markers hold and that pin no single version."""
    skipped: tuple[str, ...] = ()
    """The lines a marker excludes here, as ``file:line: text``."""
    constraints: tuple[Path, ...] = ()
    """Constraints files (``-c``) the files name, for the resolver."""
    index: IndexSettings
    """The index options found in the files."""
    binary_options: tuple[tuple[BinaryOption, str], ...] = ()
    """``--no-binary`` / ``--only-binary`` lines, in order."""
    prefer_binary: bool = False
    pre: bool = False
    """``--pre``: the resolver may take pre-releases (pip's reads it from the files, uv's must be told)."""
    require_hashes: bool
    """True when any requirement carries a ``--hash`` or ``--require-hashes`` is given:
    then every requirement must carry one (pip's hash-checking mode; a URL's ``#sha256=`` does not turn it on)."""
    split: tuple[str, ...] = ()
    """``file:line`` of each line continued into anything but an option (``name \\`` then ``>=1``), which
    uv's resolver does not read; :func:`~orchestrator.download.wanted.read_requirements` adds the constraints
    files' own."""

    @property
    def empty(self) -> bool:
        """No requirement holds here: the files are empty, or a marker excludes every line."""
        return not self.requirements and not self.loose

    def pins(self) -> tuple[PinnedRequirement, ...]:
        """The requirements, each pinned to one version (``--no-deps``); else a :class:`UsageError`."""
        for loose in self.loose:
            raise UsageError(f"{loose.origin}: {loose.text} does not pin exactly one version; {_NOT_A_LOCK}")
        return self.requirements


def parse_requirements(paths: Sequence[Path], *, environment: Mapping[str, str] | None = None) -> RequirementsFile:
    """Parse requirements files and the files they include.

    :raises UsageError: a line cannot be parsed, or two lines pin one package differently.
    """
    parser = _Parser(environment=environment)
    for path in paths:
        parser.read_file(Path(path), included_from=None)
    return RequirementsFile(
        requirements=tuple(parser.requirements.values()),
        loose=tuple(parser.loose),
        skipped=tuple(parser.skipped),
        constraints=tuple(parser.constraints),
        binary_options=tuple(parser.binary_options),
        prefer_binary=parser.prefer_binary,
        pre=parser.pre,
        index=IndexSettings(
            index_url=parser.index_url,
            extra_index_urls=tuple(parser.extra_index_urls),
            find_links=tuple(parser.find_links),
            no_index=parser.no_index,
        ),
        require_hashes=parser.require_hashes,
        split=tuple(parser.split),
    )


@dataclass(slots=True)
class _Parser:
    """The state gathered while reading files; never leaves this module."""

    requirements: dict[NormalizedName, PinnedRequirement] = field(default_factory=dict)
    loose: list[LooseRequirement] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    constraints: list[Path] = field(default_factory=list)
    binary_options: list[tuple[BinaryOption, str]] = field(default_factory=list)
    prefer_binary: bool = False
    pre: bool = False
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    require_hashes: bool = False
    split: list[str] = field(default_factory=list)
    seen_files: set[Path] = field(default_factory=set)
    environment: Mapping[str, str] | None = None
    """The marker environment lines are read for (another interpreter's); ``None``: this one's."""

    def read_file(self, path: Path, *, included_from: str | None) -> None:
        resolved = path.resolve()
        if resolved in self.seen_files:
            logger.debug("%s is already read; not reading it again", path)
            return
        self.seen_files.add(resolved)
        try:
            text = read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            where = f"{included_from}: " if included_from else ""
            raise UsageError(
                f"{where}cannot read requirements file {path}: {_one_line(exc)}"
            ) from exc
        self.split.extend(f"{path}:{lineno}" for lineno in split_lines(text))
        for lineno, line in logical_lines(text):
            self.read_line(line, path=path, origin=f"{path}:{lineno}")

    def read_line(self, line: str, *, path: Path, origin: str) -> None:
        if line.startswith("-"):
            self.read_options(line, path=path, origin=origin)
            return
        match = _OPTIONS_START.search(line)
        spec, options = (line[: match.start()], line[match.start() :]) if match else (line, "")
        hashes = hashes_from_options(options, origin)
        requirement = _parse_requirement(spec.strip(), path=path, origin=origin, environment=self.environment)
        if requirement is None:
            self.skipped.append(f"{origin}: {spec.strip()}")
            return
        if isinstance(requirement, LooseRequirement):
            self.loose.append(requirement)
            return
        if hashes:  # as in pip, a --hash turns on hash-checking for every line; a URL's #sha256= only checks its file
            requirement = replace(requirement, hashes=requirement.hashes | hashes)
            self.require_hashes = True
        self.add(requirement)

    def read_options(self, line: str, *, path: Path, origin: str) -> None:
        for option, value in split_options(line, origin):
            if option in _FILE_OPTIONS and _URL.match(value):  # pip would fetch it
                raise UsageError(f"{origin}: {_FILE_OPTIONS[option]} {value}: requirements files are read from disk "
                                 "only; download it and give its path")
            if option == "--requirement":
                self.read_file(path.parent / value, included_from=origin)
            elif option == "--index-url":
                self.index_url = _index_url(value, option, origin)
            elif option == "--extra-index-url":
                self.extra_index_urls.append(_index_url(value, option, origin))
            elif option == "--find-links":
                self.find_links.append(_find_link(value, path))
            elif option == "--no-index":
                self.no_index = True
            elif option == "--require-hashes":
                self.require_hashes = True
            elif option == "--constraint":
                self.constraints.append(path.parent / value)
            elif option == "--no-binary":
                self.binary_options.append(("--no-binary", value))
            elif option == "--only-binary":
                self.binary_options.append(("--only-binary", value))
            elif option == "--pre":
                self.pre = True
            elif option == "--prefer-binary":
                self.prefer_binary = True
            elif option == "--trusted-host":
                logger.debug("%s: ignoring --trusted-host %s", origin, value)
            else:
                raise UsageError(f"{origin}: {option} must follow a requirement on its line")

    def add(self, requirement: PinnedRequirement) -> None:
        earlier = self.requirements.get(requirement.name)
        if earlier is None:
            self.requirements[requirement.name] = requirement
            return
        if _pin(earlier) != _pin(requirement):
            raise UsageError(
                f"{requirement.origin}: {requirement.name} is pinned to {_describe(requirement)}"
                f" but {earlier.origin} pins {_describe(earlier)}; keep one pin per package"
            )
        self.requirements[requirement.name] = replace(
            earlier, hashes=earlier.hashes | requirement.hashes, extras=earlier.extras | requirement.extras
        )


def _index_url(value: str, option: str, origin: str) -> str:
    try:
        return check_index_url(value)
    except UsageError as exc:
        raise UsageError(f"{origin}: {option} {exc.message}") from None


def _find_link(value: str, path: Path) -> str:
    """A find-links URL, or a local path made absolute relative to the file."""
    if _URL.match(value):
        return value
    return str((path.parent / os.path.expanduser(value)).resolve())


def _parse_requirement(
    text: str, *, path: Path, origin: str, environment: Mapping[str, str] | None
) -> PinnedRequirement | LooseRequirement | None:
    """One requirement, or ``None`` when its marker is false in ``environment`` (default: this interpreter)."""
    if _URL.match(text) or (not _NAMED_URL.match(text) and _looks_like_path(text)):
        location, _, marker_text = _split_marker(text)
        if marker_text and not _marker_holds(marker_text, origin, environment):
            return None
        if _URL.match(location):
            return _from_url(None, location, origin=origin)
        return _from_path(None, path.parent / os.path.expanduser(location), origin=origin)
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise UsageError(f"{origin}: cannot parse {text!r}: {_one_line(exc)}") from exc
    if requirement.marker is not None and not requirement.marker.evaluate(dict(environment or {})):
        logger.debug("%s: skipping %s: marker is false here", origin, text)
        return None
    name = canonicalize_name(requirement.name)
    extras = frozenset(canonicalize_name(extra) for extra in requirement.extras)
    if requirement.url:
        return replace(_from_url(name, requirement.url, origin=origin), extras=extras)
    specifiers = list(requirement.specifier)
    if len(specifiers) != 1 or specifiers[0].operator not in ("==", "===") or (
        specifiers[0].version.endswith(".*")
    ):
        return LooseRequirement(name=name, text=text, origin=origin)
    return PinnedRequirement(name=name, version=specifiers[0].version, origin=origin, extras=extras)


def _split_marker(text: str) -> tuple[str, str, str]:
    """Split ``location ; marker``: the ``;`` needs whitespace on one side, as in pip."""
    match = re.search(r"\s;|;\s", text)
    if match is None:
        return text, "", ""
    return text[: match.start()].strip(), ";", text[match.end() :].strip()


def _marker_holds(text: str, origin: str, environment: Mapping[str, str] | None) -> bool:
    try:
        return Marker(text).evaluate(dict(environment or {}))
    except InvalidMarker as exc:
        raise UsageError(f"{origin}: cannot parse marker {text!r}: {_one_line(exc)}") from exc


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or "/" in text
        or os.sep in text
        or text.endswith((*SDIST_SUFFIXES, ".whl"))
    )


def _from_url(name: NormalizedName | None, url: str, *, origin: str) -> PinnedRequirement:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return _from_path(name, Path(url2pathname(parts.path)), origin=origin)
    if "+" in parts.scheme:
        raise UsageError(
            f"{origin}: version-control URLs are not supported ({url}); pin a released sdist"
        )
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{origin}: unsupported URL scheme {parts.scheme!r} in {url}")
    hashes: frozenset[str] = frozenset()
    algorithm, _, digest = parts.fragment.partition("=")
    if algorithm == "sha256" and SHA256.match(digest.lower()):
        hashes = frozenset({digest.lower()})
    filename = unquote(parts.path.rsplit("/", 1)[-1])
    name, version = _name_and_version(name, filename, origin=origin, what=url)
    return PinnedRequirement(name=name, version=version, url=url, hashes=hashes, origin=origin)


def _from_path(name: NormalizedName | None, path: Path, *, origin: str) -> PinnedRequirement:
    try:
        path = path.resolve()
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL
        raise UsageError(f"{origin}: cannot use path {str(path)!r}: {_one_line(exc)}") from exc
    if is_dir:
        return _from_folder(name, path, origin=origin)
    if not is_file:
        raise UsageError(f"{origin}: {path} does not exist; give an sdist file or a source folder")
    name, version = _name_and_version(name, path.name, origin=origin, what=str(path))
    return PinnedRequirement(name=name, version=version, path=path, origin=origin)


def _name_and_version(
    name: NormalizedName | None, filename: str, *, origin: str, what: str
) -> tuple[NormalizedName, str | None]:
    """Name and version from a wheel's or an sdist's file name, checked against ``name`` if given."""
    try:
        if filename.endswith(".whl"):
            parsed_name, version = parse_wheel_filename(filename)[:2]
        else:
            parsed_name, version = parse_sdist_name(filename)
    except (InvalidSdistFilename, InvalidWheelFilename, InvalidVersion) as exc:
        if name is not None:
            return name, None
        raise UsageError(
            f"{origin}: cannot tell name and version from {what}: {_one_line(exc)}; "
            "write `name @ URL` or use an sdist named name-version.tar.gz"
        ) from exc
    if name is not None and parsed_name != name:
        kind = "a wheel" if filename.endswith(".whl") else "an sdist"
        raise UsageError(f"{origin}: {what} is {kind} of {parsed_name}, not {name}")
    return parsed_name, str(version)


def _from_folder(name: NormalizedName | None, folder: Path, *, origin: str) -> PinnedRequirement:
    """A source folder: name and version from ``pyproject.toml`` when static."""
    try:
        static_name, version = static_project(folder)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{origin}: cannot read {folder / 'pyproject.toml'}: {_one_line(exc)}") from exc
    if name is None:
        if static_name is None:
            raise UsageError(
                f"{origin}: cannot tell the project name of {folder} (no [project] name in "
                f"pyproject.toml); write `name @ {folder.as_uri()}`"
            )
        name = canonicalize_name(static_name)
    elif static_name is not None and canonicalize_name(static_name) != name:
        raise UsageError(f"{origin}: {folder} holds project {static_name}, not {name}")
    return PinnedRequirement(name=name, version=version, path=folder, origin=origin)


def _pin(requirement: PinnedRequirement) -> tuple[object, str | None, Path | None]:
    """What two lines must agree on to name the same pin."""
    version: object = requirement.version
    if requirement.version is not None:
        try:
            version = Version(requirement.version)
        except InvalidVersion:
            pass
    return version, requirement.url, requirement.path


def _describe(requirement: PinnedRequirement) -> str:
    where = requirement.url or requirement.path
    if where is None:
        return f"=={requirement.version}"
    return f"{requirement.version or 'an unknown version'} at {where}"


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message (packaging adds caret lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
