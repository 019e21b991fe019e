"""The ``orchestrate`` command: :mod:`.app` holds what the commands share, :mod:`.run` what the commands that run
share; each command is a module of its own, which imports what it runs with only when it runs."""

from orchestrator.cli import build, download, install, report  # noqa: F401 - each adds its command to main
from orchestrator.cli.app import main

__all__ = ["main"]
