"""orchestrator: build a wheelhouse from sdists with capped, resource-aware parallelism."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
