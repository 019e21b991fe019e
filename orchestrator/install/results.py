"""What the install stage reports: each wheel's result, and the event line it makes (:data:`INSTALLS`).

Plain data shared by the installer, the pipeline, the display and the report, apart from
``installer`` so that they need not import pypa ``installer`` to read a result.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from orchestrator.stages import Outcome, StageKind

__all__ = ["INSTALLS", "InstallResult", "InstallStatus"]


class InstallStatus(str, enum.Enum):
    """How one wheel's install ended."""

    INSTALLED = "installed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallResult:
    """The outcome of installing one wheel; never an exception."""

    name: str
    """Canonical distribution name (the file name if it is not a valid wheel name)."""
    version: str
    """Version from the wheel file name (empty if it is not a valid wheel name)."""
    wheel: str
    """Path of the wheel file."""
    started_at: float
    """Epoch seconds."""
    finished_at: float
    """Epoch seconds."""
    status: InstallStatus
    reason: str | None = None
    """Why a wheel was skipped, or which version an install replaced."""
    error: str | None = None
    """One line naming the wheel, what failed and what to do; only when failed."""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (``status`` as its string value)."""
        return {
            "name": self.name,
            "version": self.version,
            "wheel": self.wheel,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status.value,
            "reason": self.reason,
            "error": self.error,
        }


def _outcome(result: InstallResult) -> Outcome:
    label = f"{result.name}-{result.version}"
    if result.status is InstallStatus.FAILED:
        return Outcome(line=f"{label}: install FAILED: {result.error}", failed=True)
    return Outcome(line=f"{label}: {result.status.value} {result.reason or ''}".rstrip())


INSTALLS: StageKind[Path, InstallResult] = StageKind(name="install", label=lambda wheel: wheel.name, outcome=_outcome)
"""Wheel files installed into a target environment."""
