"""What the download stage reports: each fetch's result, and the event line it makes (:data:`DOWNLOADS`).

Plain data shared by the downloader, the pipeline, the display and the report; nothing here
does I/O but the event line's look at whether a result's path is a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from orchestrator.download.requirements import PinnedRequirement
from orchestrator.stages import Outcome, StageKind
from orchestrator.units import format_size

__all__ = ["DOWNLOADS", "DownloadResult", "DownloadStatus"]


class DownloadStatus(Enum):
    """How a requirement's file was obtained."""

    DOWNLOADED = "downloaded"
    """Fetched from an index or URL."""
    CACHED = "cached"
    """Copied out of the cache without downloading."""
    PRESENT = "present"
    """Already in the destination folder with the expected hash, kept there (pip: "File was already downloaded")."""
    LOCAL = "local"
    """A local sdist or source folder, used where it is (not copied)."""
    FAILED = "failed"
    """See ``error``."""
    STOPPED = "stopped"
    """Under way when the run was stopped (Ctrl-C, SIGTERM): not a failure of its own."""


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
    """One line saying what failed and what to do, when ``status`` is ``FAILED``; else ``None``."""
    path: Path | None
    """The sdist (in ``dest_dir``, or the local path) or source folder; ``None`` on failure."""
    yanked: str | None = None
    """The index's reason for yanking the file taken (PEP 592; ``""`` if it gives none); ``None``: not yanked.
    Taken as pip takes it: the pin names that version."""

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
            "yanked": self.yanked,
        }


def _label(requirement: PinnedRequirement) -> str:
    return f"{requirement.name}-{requirement.version}" if requirement.version else requirement.name


def _outcome(result: DownloadResult) -> Outcome:
    label = f"{result.name}-{result.version}" if result.version else result.name
    if result.status is DownloadStatus.STOPPED:
        return Outcome(line=f"{label}: download stopped: the run was stopped")
    if result.status is DownloadStatus.FAILED or result.path is None:
        return Outcome(line=f"{label}: download FAILED: {result.error}", failed=True)
    size = f" ({format_size(result.bytes)})" if result.path.is_file() else ""
    reason = f": {result.yanked}" if result.yanked else ""
    yanked = "" if result.yanked is None else f"; warning: yanked on the index{reason}"
    return Outcome(line=f"{label}: {result.status.value} {result.path}{size}{yanked}", bytes=result.bytes)


DOWNLOADS: StageKind[PinnedRequirement, DownloadResult] = StageKind(name="download", label=_label, outcome=_outcome)
"""Requirements fetched into sdists (or wheels, or local sources)."""
