"""The download stage: requirements files read, sdists fetched from an index, hash-checked and cached.

Modules: ``requirements`` (pip-style lock files), ``index`` (finding a file through unearth),
``cache`` (the content-addressed cache), ``fetch`` (streaming, hashes, retries, and
:func:`download_all`), ``results`` (what the stage reports).
"""

from orchestrator.download.fetch import Downloader, DownloadSettings, download_all
from orchestrator.download.requirements import (
    PinnedRequirement,
    RequirementsFile,
    parse_requirements,
)
from orchestrator.download.results import DownloadResult, DownloadStatus

__all__ = [
    "DownloadResult",
    "DownloadSettings",
    "DownloadStatus",
    "Downloader",
    "PinnedRequirement",
    "RequirementsFile",
    "download_all",
    "parse_requirements",
]
