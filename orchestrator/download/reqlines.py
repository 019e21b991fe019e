"""The lexical layer of a requirements file: its text, logical lines, and the options on them, as pip spells them.

Hand-written because pip's own parser (``pip._internal.req.req_file``) is not a public API;
it reads only what :mod:`~orchestrator.download.requirements` then interprets.
"""

from __future__ import annotations

import codecs
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import UsageError

__all__ = ["SHA256", "hashes_from_options", "logical_lines", "read_text", "split_lines", "split_options"]

_COMMENT = re.compile(r"(^|\s+)#.*$")
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)\}")
"""``${NAME}``, the one form of environment variable pip expands in requirements files."""
SHA256 = re.compile(r"^[0-9a-f]{64}$")
"""A sha256 digest in hex, as ``--hash=sha256:`` and ``#sha256=`` give it."""


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),  # before UTF-16's: they start alike
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"), (codecs.BOM_UTF8, "utf-8-sig"),
)


def read_text(path: Path) -> str:
    """A requirements file's text: decoded as its byte order mark says, as pip does (Windows PowerShell's
    ``pip freeze >`` writes UTF-16), else UTF-8.

    :raises OSError: it cannot be read.
    :raises UnicodeDecodeError: it is not text in that encoding.
    """
    data = path.read_bytes()
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    return data.decode(encoding)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(first line number, text)`` with continuations joined, comments removed, variables expanded.

    As in pip, a comment line ending in ``\\`` continues nothing (it ends a continued line), and each
    ``${NAME}`` is replaced by that environment variable (one that is not set stays as written).
    """
    pending: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = lineno
        if raw.endswith("\\") and not _COMMENT.match(raw):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        line = _COMMENT.sub("", " ".join(pending)).strip()
        pending = []
        if line:
            yield start, _expand(line)
    if pending:
        line = _COMMENT.sub("", " ".join(pending)).strip()
        if line:
            yield start, _expand(line)


def _expand(line: str) -> str:
    return _VARIABLE.sub(lambda match: os.environ.get(match[1], match[0]), line)


def split_lines(text: str) -> Iterator[int]:
    """The numbers of the lines a ``\\`` continues into anything but an option (``name \\`` then ``>=1``).

    pip joins them all; uv's resolver (0.13) reads a continuation only before an option (``--hash``).
    """
    lines = text.splitlines()
    for lineno, (line, following) in enumerate(zip(lines, lines[1:]), start=1):
        if line.endswith("\\") and not _COMMENT.match(line) and not following.lstrip().startswith("-"):
            yield lineno


# Option spellings -> (canonical name, takes a value).
_OPTIONS: dict[str, tuple[str, bool]] = {
    "-r": ("--requirement", True),
    "--requirement": ("--requirement", True),
    "-i": ("--index-url", True),
    "--index-url": ("--index-url", True),
    "--extra-index-url": ("--extra-index-url", True),
    "-f": ("--find-links", True),
    "--find-links": ("--find-links", True),
    "--no-index": ("--no-index", False),
    "--require-hashes": ("--require-hashes", False),
    "--trusted-host": ("--trusted-host", True),
    "--hash": ("--hash", True),
    "-c": ("--constraint", True),
    "--constraint": ("--constraint", True),
    "--no-binary": ("--no-binary", True),
    "--only-binary": ("--only-binary", True),
    "--prefer-binary": ("--prefer-binary", False),
    "--pre": ("--pre", False),
}
_REFUSED_OPTIONS = {
    "-e": "editable requirements are not built; name the folder without -e",
    "--editable": "editable requirements are not built; name the folder without -e",
}


def split_options(text: str, origin: str) -> Iterator[tuple[str, str]]:
    """Yield ``(canonical option, value)`` pairs; ``value`` is ``""`` for flags."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{origin}: cannot split options {text!r}: {exc}") from exc
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        spelling, has_equals, value = token.partition("=")
        if not spelling.startswith("--") and len(spelling) > 2 and spelling[:2] in _OPTIONS:
            # Short option glued to its value: "-rother.txt".
            spelling, has_equals, value = spelling[:2], "=", token[2:]
        if spelling in _REFUSED_OPTIONS:
            raise UsageError(f"{origin}: {_REFUSED_OPTIONS[spelling]}")
        if spelling not in _OPTIONS:
            raise UsageError(
                f"{origin}: unsupported option {spelling}; this tool reads -r, -c, --index-url, "
                "--extra-index-url, --find-links, --no-index, --no-binary, --only-binary, "
                "--prefer-binary, --pre, --require-hashes and --hash"
            )
        name, takes_value = _OPTIONS[spelling]
        if not takes_value:
            if has_equals:
                raise UsageError(f"{origin}: {spelling} takes no value")
            yield name, ""
            continue
        if not has_equals:
            if position == len(tokens):
                raise UsageError(f"{origin}: {spelling} needs a value")
            value = tokens[position]
            position += 1
        yield name, value


def hashes_from_options(text: str, origin: str) -> frozenset[str]:
    hashes = set()
    for option, value in split_options(text, origin):
        if option != "--hash":
            raise UsageError(
                f"{origin}: {option} must be on a line of its own, not after a requirement"
            )
        algorithm, _, digest = value.partition(":")
        if algorithm != "sha256":
            raise UsageError(
                f"{origin}: unsupported hash {value!r}; use --hash=sha256:<64 hex digits>"
            )
        if not SHA256.match(digest.lower()):
            raise UsageError(
                f"{origin}: {value!r} is not a sha256 digest; use --hash=sha256:<64 hex digits>"
            )
        hashes.add(digest.lower())
    return frozenset(hashes)
