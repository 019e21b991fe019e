"""Files that appear complete or not at all: written beside their target, synced, renamed into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


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
