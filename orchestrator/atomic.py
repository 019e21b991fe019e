"""Files that appear complete or not at all: written beside their target, synced, renamed into place."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()
"""What ``open()`` would have given a new file (``mkstemp`` gives 0600)."""


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """Write ``target`` through a hidden ``.part`` file beside it; on any failure the partial file goes."""
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fchmod(out.fileno(), _MODE)
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def atomic_write_json(target: Path, document: Any, *, indent: int | None = None) -> None:
    """Write ``document`` as JSON (and a newline) to ``target`` atomically, encoded as it is written: a run's
    report of thousands of builds never exists whole as a string (16 KB a build, twice: text and bytes)."""
    with atomic_write(target) as out:
        text = io.TextIOWrapper(out, encoding="utf-8")
        json.dump(document, text, indent=indent, default=str)
        text.write("\n")
        text.flush()
        text.detach()
