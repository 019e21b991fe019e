"""What the download stage reports: each fetch's result, and the running counts for progress lines.

Plain data shared by the downloader, the pipeline, the display and the report; nothing here
does I/O.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = ["DownloadProgress", "DownloadResult", "DownloadStatus", "DownloadTally"]


class DownloadStatus(Enum):
    """How a requirement's file was obtained."""

    DOWNLOADED = "downloaded"
    """Fetched from an index or URL."""
    CACHED = "cached"
    """Copied out of the cache without downloading."""
    LOCAL = "local"
    """A local sdist or source folder, used where it is (not copied)."""
    FAILED = "failed"
    """See ``error``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    """The outcome of fetching one requirement."""

    name: str
    """The canonical project name."""
    version: str | None
    """The pinned version, if known."""
    url: str | None
    """Where the file came from (credentials redacted), if it was looked up or fetched."""
    sha256: str | None
    """The file's sha256; ``None`` for folders and failures."""
    bytes: int
    """The file's size; 0 for folders and failures."""
    started_at: float
    """Epoch seconds."""
    finished_at: float
    """Epoch seconds."""
    status: DownloadStatus
    """What happened."""
    error: str | None
    """One line saying what failed and what to do, when ``status`` is ``FAILED``."""
    path: Path | None
    """The sdist (in ``dest_dir``, or the local path) or source folder; ``None`` on failure."""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "version": self.version,
            "url": self.url,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status.value,
            "error": self.error,
            "path": None if self.path is None else str(self.path),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadProgress:
    """A snapshot of a download stage, for the live display and progress lines."""

    total: int
    """Requirements the stage was given."""
    in_flight: int
    """Fetches running now."""
    done: int
    """Requirements whose file is on disk (downloaded, cached or local)."""
    failed: int
    """Requirements that failed."""
    bytes_done: int
    """Size of the files on disk so far."""

    @property
    def finished(self) -> bool:
        """Every requirement has a result."""
        return self.done + self.failed >= self.total


class DownloadTally:
    """Counts a download stage's fetches as they start and end; safe to call from many threads."""

    def __init__(self, total: int) -> None:
        self._lock = threading.Lock()
        self._total = total
        self._in_flight = 0
        self._done = 0
        self._failed = 0
        self._bytes_done = 0

    def started(self) -> DownloadProgress:
        """One fetch began; the new snapshot."""
        with self._lock:
            self._in_flight += 1
            return self._snapshot()

    def finished(self, result: DownloadResult) -> DownloadProgress:
        """One fetch ended with ``result``; the new snapshot."""
        with self._lock:
            self._in_flight -= 1
            if result.status is DownloadStatus.FAILED:
                self._failed += 1
            else:
                self._done += 1
                self._bytes_done += result.bytes
            return self._snapshot()

    def snapshot(self) -> DownloadProgress:
        """The counts now."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> DownloadProgress:
        return DownloadProgress(total=self._total, in_flight=self._in_flight, done=self._done,
                                failed=self._failed, bytes_done=self._bytes_done)
