"""The exceptions orchestrator raises; each message says what failed and what to do.

Every class keeps all of its state in ``args`` so that it survives pickling
across process boundaries.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class: a failure with a one-line, actionable message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])

    def __str__(self) -> str:
        return self.message


class UsageError(OrchestratorError):
    """The command line, a requirements file or a config file is wrong (exit 2)."""


class SourceError(OrchestratorError):
    """A source (sdist, folder, source tree) cannot be read or is not a Python project."""


class UnsafeArchiveError(SourceError):
    """An sdist holds a member that would escape its folder or is otherwise hostile."""


class DownloadError(OrchestratorError):
    """A distribution could not be fetched from an index or URL."""


class HashMismatchError(DownloadError):
    """A downloaded file's sha256 is not one the requirement or the index allows."""


class BuildError(OrchestratorError):
    """A build failed: backend error, bad wheel, missing build requirement."""


class BuildKilledError(BuildError):
    """A process of the build died of a signal (the OOM killer, a kill from outside)."""

    def __init__(self, message: str, signal_name: str) -> None:
        Exception.__init__(self, message, signal_name)

    @property
    def signal_name(self) -> str:
        return str(self.args[1])


class WheelError(OrchestratorError):
    """A wheel, or an installed distribution, whose metadata or contents cannot be trusted."""


class InstallError(OrchestratorError):
    """A wheel could not be installed into the target environment."""


class ClusterError(OrchestratorError):
    """The build farm cannot be used: its Dask scheduler is unreachable, or no worker can build."""


class LockError(OrchestratorError):
    """Another run holds the wheelhouse lock."""


class HistoryError(OrchestratorError):
    """The build history has nothing to report: no file, no run, or no build of the package asked for."""


class ResolutionError(OrchestratorError):
    """The requirements cannot be resolved: a conflict, or no distribution allowed for a requirement.

    ``output`` keeps the resolver's whole output for ``--debug``.
    """

    def __init__(self, message: str, output: str = "") -> None:
        Exception.__init__(self, message, output)

    @property
    def output(self) -> str:
        return str(self.args[1])
