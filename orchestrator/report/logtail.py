"""The end of a build's log, as the failure summaries show it: on the terminal, on the HTML page, in JUnit XML.

Only the file's last :data:`TAIL_BYTES` are read, however long the log grew. Lines are split at newlines
only: ``str.splitlines`` also breaks at form feeds and the other separators a build's output may hold.
Each caller cleans the lines for where they go (terminal colours, XML, HTML).
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["TAIL_BYTES", "log_tail"]

TAIL_BYTES: Final = 64 * 1024


def log_tail(log: str | os.PathLike[str] | None, lines: int) -> list[str]:
    """The last ``lines`` lines of the log at ``log``; none without a log or when it cannot be read."""
    if not log:
        return []
    try:
        with open(log, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(size - TAIL_BYTES, 0))
            data = file.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    return text.split("\n")[-lines:] if text else []
