"""Finding the sdist a pin names on the indexes and find-links the run was given.

Index pages (PEP 503 HTML, PEP 691 JSON) and find-links folders or pages are read by
``unearth``; this module owns the HTTP client it reads them with (which also trusts the
plain-HTTP origins the user named) and the choice of the one file to fetch: the first sdist,
in the order unearth ranks them, whose format the build stage reads (pip's list of formats).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version
from unearth import Link, PackageFinder
from unearth.fetchers.sync import PyPIClient

from orchestrator.build.sources import SDIST_FORMATS, SDIST_SUFFIXES
from orchestrator.download.requirements import PinnedRequirement
from orchestrator.errors import DownloadError
from orchestrator.settings import IndexSettings

__all__ = ["IndexClient", "SdistFinder", "index_urls"]

_PYPI_SIMPLE = "https://pypi.org/simple/"


def index_urls(index: IndexSettings) -> list[str]:
    """The index URLs to look in, in order: none with ``--no-index``, PyPI unless another is given."""
    if index.no_index:
        return []
    return [index.index_url or _PYPI_SIMPLE, *index.extra_index_urls]


class IndexClient(PyPIClient):
    """unearth's HTTP client, also trusting the plain-HTTP indexes the user named."""

    def __init__(self, *, http_origins: Iterable[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http_origins = [
            ("http", parts.hostname or "", str(parts.port or "*"))
            for parts in map(urlsplit, http_origins)
            if parts.scheme == "http"
        ]

    def iter_secure_origins(self) -> Iterable[tuple[str, str, str]]:
        yield from super().iter_secure_origins()
        yield from self._http_origins


class SdistFinder:
    """Looks pins up on the indexes and find-links of ``index`` through ``client``."""

    def __init__(self, index: IndexSettings, client: IndexClient) -> None:
        urls = index_urls(index)
        self.where = ", ".join([*urls, *index.find_links]) or "no index"
        """The places looked in, for messages."""
        self._finder: PackageFinder | None = None
        if urls or index.find_links:
            self._finder = PackageFinder(
                # unearth's own client does not match the types of its Fetcher protocol.
                session=client,  # type: ignore[arg-type]
                index_urls=urls,
                find_links=index.find_links,
                # The lock decides what to fetch; the build stage judges compatibility.
                ignore_compatibility=True,
            )

    def find(self, requirement: PinnedRequirement, label: str) -> Link:
        """The link of the sdist of ``requirement``'s pinned version, or a :class:`DownloadError`.

        Network errors are left to the caller, which retries the transient ones.
        """
        if self._finder is None:
            raise DownloadError(
                f"{label}: --no-index is set and no --find-links is given; "
                "there is nowhere to download from"
            )
        version = requirement.version
        assert version is not None
        operator = "==" if _is_pep440(version) else "==="
        packages = list(
            self._finder.find_matches(f"{requirement.name}{operator}{version}", allow_yanked=True)
        )
        sdists = [package.link for package in packages if not package.link.is_wheel]
        for link in sdists:
            if link.filename.endswith(SDIST_SUFFIXES):
                return link
        if sdists:
            found = ", ".join(link.filename for link in sdists[:3])
            raise DownloadError(
                f"no sdist of {label} on {self.where} in a format this tool reads ({SDIST_FORMATS}); "
                f"only {found}; pin a URL to one it reads"
            )
        if packages:
            wheels = ", ".join(package.link.filename for package in packages[:3])
            raise DownloadError(
                f"no sdist of {label} on {self.where}; only wheels ({wheels}); "
                "this tool builds from sdists: publish one or pin a URL to it"
            )
        raise DownloadError(
            f"{label} not found on {self.where}; check the pin and the index options"
        )


def _is_pep440(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True
