"""Finding the file a pin names on the indexes and find-links the run was given.

Index pages (PEP 503 HTML, PEP 691 JSON) and find-links folders or pages are read by
``unearth``; this module owns the HTTP client it reads them with (which also trusts the
plain-HTTP origins the user named) and the choice of the one file to fetch, as ``pip wheel``
chooses it: the wheel whose tags this interpreter ranks highest, else the first sdist, in the
order unearth ranks them, whose format the build stage reads (pip's list of formats); the
binary policy may forbid either.

Closing the client must also end a request whose server never answers: a thread blocked
reading a socket is not woken by closing it, only by shutting it down. httpx2 offers no way
to reach the sockets of requests in flight, so the client sets its direct connection pools'
network backend (an httpcore2 ``SyncBackend`` that remembers the sockets it opens; the pool's
attribute is private, httpx2 is pinned below 3 and a test of Ctrl-C against a mute server
proves it still works); :meth:`IndexClient.interrupt` shuts them down.
"""

from __future__ import annotations

import functools
import socket
import threading
import weakref
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore2
from packaging.tags import Tag, sys_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version
from unearth import Link, PackageFinder
from unearth.fetchers.sync import PyPIClient

from orchestrator.build.sources import SDIST_FORMATS, SDIST_SUFFIXES
from orchestrator.download.binary import BinaryPolicy
from orchestrator.download.requirements import PinnedRequirement
from orchestrator.errors import DownloadError
from orchestrator.settings import IndexSettings

__all__ = ["Finder", "IndexClient", "index_urls"]

_PYPI_SIMPLE = "https://pypi.org/simple/"


def index_urls(index: IndexSettings) -> list[str]:
    """The index URLs to look in, in order: none with ``--no-index``, PyPI unless another is given."""
    if index.no_index:
        return []
    return [index.index_url or _PYPI_SIMPLE, *index.extra_index_urls]


class _Sockets(httpcore2.SyncBackend):
    """httpcore2's own backend, remembering each socket it opens until it is collected."""

    def __init__(self) -> None:
        self._open: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._shut = False

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        stream = super().connect_tcp(*args, **kwargs)
        sock = stream.get_extra_info("socket")
        with self._lock:
            self._open.add(sock)
            shut = self._shut
        if shut:  # connected while the client was being shut down: this one too
            _shut_down(sock)
        return stream

    def shut_down(self) -> None:
        """Shut every open socket down, and each opened from now on: a read blocked on one ends at once."""
        with self._lock:
            self._shut = True
            sockets = list(self._open)
        for sock in sockets:
            _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed meanwhile
        pass


class IndexClient(PyPIClient):
    """unearth's HTTP client, also trusting the plain-HTTP indexes the user named."""

    def __init__(self, *, http_origins: Iterable[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http_origins = [
            ("http", parts.hostname or "", str(parts.port or "*"))
            for parts in map(urlsplit, http_origins)
            if parts.scheme == "http"
        ]
        self._sockets = _Sockets()
        for transport in [self._transport, *self._mounts.values()]:
            pool = getattr(transport, "_pool", None)
            if isinstance(pool, httpcore2.ConnectionPool):  # the direct pools; a proxy's keeps its own
                pool._network_backend = self._sockets

    def interrupt(self) -> None:
        """End the requests in flight: each fails at once with a network error."""
        self._sockets.shut_down()

    def iter_secure_origins(self) -> Iterable[tuple[str, str, str]]:
        yield from super().iter_secure_origins()
        yield from self._http_origins


class Finder:
    """Looks pins up on the indexes and find-links of ``index`` through ``client``.

    Of a pinned version's files it takes, as ``pip wheel`` does, the wheel whose tags
    this interpreter ranks highest, else the sdist; ``binary`` may forbid either.
    """

    def __init__(self, index: IndexSettings, client: IndexClient, binary: BinaryPolicy | None = None) -> None:
        urls = index_urls(index)
        self.where = ", ".join([*urls, *index.find_links]) or "no index"
        """The places looked in, for messages."""
        self._binary = binary or BinaryPolicy()
        self._finder: PackageFinder | None = None
        if urls or index.find_links:
            self._finder = PackageFinder(
                # unearth's own client does not match the types of its Fetcher protocol.
                session=client,  # type: ignore[arg-type]
                index_urls=urls,
                find_links=index.find_links,
                # Every file of the pinned version, so that a refusal can say what there was.
                ignore_compatibility=True,
            )

    def find(self, requirement: PinnedRequirement, label: str) -> Link:
        """The link of the file to fetch for ``requirement``'s pinned version, or a :class:`DownloadError`.

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
        links = _allowed_by_hashes([
            package.link
            for package in self._finder.find_matches(f"{requirement.name}{operator}{version}", allow_yanked=True)
        ], requirement.hashes)
        wheels = [link for link in links if link.is_wheel]
        sdists = [link for link in links if not link.is_wheel]
        readable = [link for link in sdists if link.filename.endswith(SDIST_SUFFIXES)]
        name = requirement.name
        wheel = _best_wheel(wheels)
        if wheel is not None and self._binary.allows_wheel(name):
            return wheel
        if readable and self._binary.allows_sdist(name):
            return readable[0]
        if not links:
            raise DownloadError(f"{label} not found on {self.where}; check the pin and the index options")
        why = self._binary.describe(name)
        if wheel is not None or (readable and why):
            # A usable file that the policy forbids.
            raise DownloadError(f"{label}: {why}, and {self.where} has {_some(links)}; change the policy for it")
        if wheels and not sdists:
            raise DownloadError(
                f"no wheel of {label} on {self.where} fits this interpreter ({_some(wheels)}) and there is "
                "no sdist to build; publish one or pin a URL to one"
            )
        if sdists and not readable:
            raise DownloadError(
                f"no sdist of {label} on {self.where} in a format this tool reads ({SDIST_FORMATS}); "
                f"only {_some(sdists)}; pin a URL to one it reads"
            )
        raise DownloadError(f"{label}: {why}, and {self.where} has only {_some(links)}")


def _allowed_by_hashes(links: list[Link], hashes: frozenset[str]) -> list[Link]:
    """As pip does: once the index lists a file with a hash the pin gives, files it lists with other hashes go.

    A lock that hashes only the sdist (its wheel was uploaded later) builds the sdist, as with
    ``pip wheel``, instead of failing on the wheel's hash.
    """
    def advertised(link: Link) -> str | None:
        digest = (link.hash_option or {}).get("sha256", [None])[0]
        return digest.lower() if digest else None

    if not any(advertised(link) in hashes for link in links):
        return links
    return [link for link in links if advertised(link) is None or advertised(link) in hashes]


def _best_wheel(wheels: list[Link]) -> Link | None:
    """The wheel whose best tag this interpreter ranks highest, as pip ranks them; ``None`` if none fits."""
    ranks = _tag_ranks()
    best: tuple[int, Link] | None = None
    for link in wheels:
        try:
            tags = parse_wheel_filename(link.filename)[3]
        except (InvalidWheelFilename, InvalidVersion):
            continue
        rank = min((ranks[tag] for tag in tags if tag in ranks), default=None)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, link)
    return best[1] if best else None


@functools.cache
def _tag_ranks() -> dict[Tag, int]:
    return {tag: rank for rank, tag in enumerate(sys_tags())}


def _some(links: list[Link]) -> str:
    shown = ", ".join(link.filename for link in links[:3])
    return shown + (f" and {len(links) - 3} more" if len(links) > 3 else "")


def _is_pep440(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True
