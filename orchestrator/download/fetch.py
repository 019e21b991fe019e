"""The download stage: fetch the files that pinned requirements name.

A file is a wheel the index already has or an sdist to build, as the binary policy
allows. Finding the file is :mod:`~orchestrator.download.index`'s job, keeping it :mod:`~orchestrator.download.cache`'s,
and the results and their event lines are :mod:`~orchestrator.download.results`'s; this module
owns streaming, hash checks, retries and stalls, and :func:`download_all` (the stage of
:mod:`orchestrator.stages` as a library call). One :meth:`Downloader.fetch`::

    requirement ── path set ──────────────────────────▶ checked in place    "local"
        │
        ├── hashes given: cache lookup by hash ── hit ─▶ copy to dest_dir    "cached"
        ▼
    find the wheel or sdist (unearth, retried)
        │
        ├── dest_dir holds that file, with the expected sha256 ──────▶   "present"
        ├── no hashes given, index lists a sha256: cache lookup ── hit ─▶   "cached"
        ▼
    stream GET into dest_dir/.name.part, hashing (retried)
        ─▶ check hashes ─▶ fsync, os.replace ─▶ copy into the cache   "downloaded"

Two rules end a download that stopped moving: no byte for ``timeout`` seconds (the
per-read timeout), and under ``min_speed`` for ``timeout`` seconds (a stall: a server
trickling a byte a second never trips the first). Both are retried like other
transient errors. The stall rule is curl's ``--speed-limit``/``--speed-time``, with
the window tied to the timeout as cargo ties ``http.low-speed-limit`` to ``http.timeout``.

A file whose hash does not match is never given its final name: its temporary file
is deleted.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx2
from unearth import Link
from unearth.auth import MultiDomainBasicAuth

from orchestrator.download.binary import BinaryPolicy
from orchestrator.download.cache import CHUNK_SIZE, Cache, saving
from orchestrator.download.index import Finder, IndexClient, index_urls
from orchestrator.download.requirements import PinnedRequirement
from orchestrator.download.results import DOWNLOADS, DownloadResult, DownloadStatus
from orchestrator.errors import (
    DownloadError,
    HashMismatchError,
    OrchestratorError,
    UsageError,
)
from orchestrator.settings import IndexSettings
from orchestrator.stages import StageProgress, run_all
from orchestrator.units import format_size

__all__ = ["DownloadResult", "DownloadSettings", "DownloadStatus", "Downloader", "download_all"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadSettings:
    """How the download stage reaches indexes and where it keeps files."""

    index: IndexSettings
    """Where sdists are looked up."""
    cache_dir: Path | None
    """The content-addressed cache; ``None`` disables it."""
    retries: int = 3
    """Further attempts after a timeout, a stall, a connection error or an HTTP 5xx."""
    timeout: float = 60.0
    """Seconds allowed for each network operation (connect, each read, each write),
    and the window of the stall rule (see ``min_speed``)."""
    require_hashes: bool = False
    """Refuse requirements that carry no ``--hash`` (pip's hash-checking mode)."""
    binary: BinaryPolicy = field(default_factory=BinaryPolicy)
    """Which packages may come as wheels and which as sdists."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled for each further one, with jitter."""
    min_speed: int = 1024
    """Bytes per second a download must average over the last ``timeout`` seconds, or it
    has stalled and is cut; 0 turns the rule off. 1 KiB/s is below any usable link."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fetched:
    status: DownloadStatus
    path: Path
    sha256: str | None
    size: int
    url: str | None
    yanked: str | None = None


class _ServerError(Exception):
    """An HTTP 5xx answer: transient, so retried."""


class _Stalled(Exception):
    """A download stayed under the speed floor for a whole window: transient, so retried."""


_TRANSIENT = (
    httpx2.TimeoutException,
    httpx2.NetworkError,
    httpx2.RemoteProtocolError,
    _ServerError,
    _Stalled,
)


class _StallWatch:
    """Raises :class:`_Stalled` once a transfer averages under ``min_speed`` over ``window`` seconds.

    It keeps a sample of the byte count every ``window / 8`` seconds, so the average is
    taken over at least ``window`` seconds (an eighth more while bytes keep arriving), in
    constant memory. It is only consulted as bytes arrive; the per-read timeout bounds
    the wait for the next ones.
    """

    def __init__(self, min_speed: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._min_speed = min_speed
        self._window = window
        self._clock = clock
        self._received = 0
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])
        """``(time, bytes received by then)``, oldest first."""

    def received(self, size: int) -> None:
        """Count ``size`` more bytes; raise :class:`_Stalled` if the last window was too slow."""
        now = self._clock()
        self._received += size
        if now - self._samples[-1][0] >= self._window / 8:
            self._samples.append((now, self._received))
        # The oldest sample kept is the newest one at least a window old.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        since, received_then = self._samples[0]
        elapsed = now - since
        if elapsed >= self._window and self._received - received_then < self._min_speed * elapsed:
            raise _Stalled(f"stalled under {format_size(self._min_speed)}/s for {self._window:g} s")


class Downloader:
    """Fetches wheels and sdists into ``dest_dir``; :meth:`fetch` is safe to call from many threads.

    All threads share one HTTP client (and its connection pool); :meth:`close` it,
    or use the downloader as a context manager, once every fetch has returned.
    """

    def __init__(self, settings: DownloadSettings, dest_dir: Path) -> None:
        self._settings = settings
        self._dest_dir = Path(dest_dir)
        self._dest_dir.mkdir(parents=True, exist_ok=True)
        self._cache = Cache(settings.cache_dir)
        index = settings.index
        urls = index_urls(index)
        self._client = IndexClient(
            http_origins=[*urls, *index.find_links],
            timeout=settings.timeout,
            follow_redirects=True,
            # Callers bound concurrency with their threads; the pool must never make
            # a thread wait (a pool wait would count against the timeout).
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=64),
            event_hooks={"response": [_raise_for_server_error]},
        )
        self._client.auth = MultiDomainBasicAuth(prompting=False, index_urls=urls)
        self._finder = Finder(index, self._client, settings.binary)
        self._closed = False

    def close(self) -> None:
        """Close the HTTP client's connections, ending the fetches in flight (they are not retried)."""
        self._closed = True
        self._client.interrupt()
        self._client.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def fetch(self, requirement: PinnedRequirement) -> DownloadResult:
        """Fetch one requirement's sdist; never raises, a failure is a result.

        A fetch the closing of the client ended (the run was stopped), or that starts after it, is ``STOPPED``.
        """
        started_at = time.time()
        label = _label(requirement)
        status, error = DownloadStatus.FAILED, None
        try:
            fetched = self._fetch(requirement, label)
        except Exception as exc:
            if self._closed:  # whatever the closed client made it raise
                logger.debug("%s: stopped: %s", label, _describe(exc))
                status = DownloadStatus.STOPPED
            elif isinstance(exc, OrchestratorError):
                # The result carries the message; the caller shows it (once, not also here).
                logger.info("%s", exc)
                error = exc.message
            else:  # a worker never raises into the scheduler
                logger.exception("%s: unexpected error", label)
                error = f"{label}: unexpected {type(exc).__name__}: {_one_line(exc)}"
        else:
            logger.info("%s: %s %s", label, fetched.status.value, fetched.path)
            return DownloadResult(
                name=requirement.name,
                version=requirement.version,
                url=fetched.url,
                sha256=fetched.sha256,
                bytes=fetched.size,
                started_at=started_at,
                finished_at=time.time(),
                status=fetched.status,
                error=None,
                path=fetched.path,
                yanked=fetched.yanked,
            )
        return DownloadResult(
            name=requirement.name,
            version=requirement.version,
            url=requirement.url,
            sha256=None,
            bytes=0,
            started_at=started_at,
            finished_at=time.time(),
            status=status,
            error=error,
            path=None,
        )

    def _fetch(self, requirement: PinnedRequirement, label: str) -> _Fetched:
        if requirement.path is not None:
            return self._use_local(requirement, label)
        if requirement.version is None and requirement.url is None:
            raise UsageError(
                f"{requirement.origin}: {requirement.name} is not pinned to a version; "
                "this tool builds what a lock file pins (`uv pip compile`, `pip-compile`)"
            )
        self._check_hashes_given(requirement, label)
        for digest in sorted(requirement.hashes):
            cached = self._cache.copy_out(digest, self._dest_dir, label)
            if cached is not None:
                return _Fetched(
                    status=DownloadStatus.CACHED,
                    path=cached[0],
                    sha256=digest,
                    size=cached[1],
                    url=requirement.url and Link(requirement.url).redacted,
                    yanked=requirement.yanked,
                )
        if requirement.url is not None:
            link = Link(requirement.url, yank_reason=requirement.yanked)
        else:
            link = self._retrying(
                label,
                f"looking it up on {self._finder.where}",
                lambda: self._finder.find(requirement, label),
            )
        index_sha256 = (link.hash_option or {}).get("sha256", [None])[0]
        expected = requirement.hashes or ({index_sha256.lower()} if index_sha256 else set())
        present = self._present(link.filename, expected)
        if present is not None:
            self._cache.store(present[0], present[1])
            return _Fetched(status=DownloadStatus.PRESENT, path=present[0], sha256=present[1], size=present[2],
                            url=link.redacted, yanked=link.yank_reason)
        if index_sha256 and not requirement.hashes:
            cached = self._cache.copy_out(index_sha256.lower(), self._dest_dir, label)
            if cached is not None:
                return _Fetched(
                    status=DownloadStatus.CACHED,
                    path=cached[0],
                    sha256=index_sha256.lower(),
                    size=cached[1],
                    url=link.redacted,
                    yanked=link.yank_reason,
                )
        path, sha256, size = self._retrying(
            label, f"downloading {link.redacted}", lambda: self._download(requirement, link, label)
        )
        self._cache.store(path, sha256)
        return _Fetched(
            status=DownloadStatus.DOWNLOADED, path=path, sha256=sha256, size=size, url=link.redacted,
            yanked=link.yank_reason,
        )

    def _present(self, filename: str, expected: set[str] | frozenset[str]) -> tuple[Path, str, int] | None:
        """The file of that name ``dest_dir`` already holds, its sha256 and size, when that sha256 is expected."""
        path = self._dest_dir / filename
        if not expected or os.sep in filename or not path.is_file():
            return None
        try:
            with path.open("rb") as held:
                digest = hashlib.file_digest(held, "sha256").hexdigest()
        except OSError:
            return None  # fetched again, over it
        return (path, digest, path.stat().st_size) if digest in expected else None

    def _use_local(self, requirement: PinnedRequirement, label: str) -> _Fetched:
        path = requirement.path
        assert path is not None
        if path.is_dir():
            if self._settings.require_hashes:
                raise DownloadError(
                    f"{label}: {path} is a folder, which cannot be hash-checked, and hashes "
                    f"are required ({requirement.origin}); give an sdist with --hash instead"
                )
            return _Fetched(status=DownloadStatus.LOCAL, path=path, sha256=None, size=0, url=None)
        self._check_hashes_given(requirement, label)
        try:
            with path.open("rb") as source:
                hasher = hashlib.sha256()
                size = 0
                while chunk := source.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    size += len(chunk)
            digest = hasher.hexdigest()
        except OSError as exc:
            raise DownloadError(
                f"{label}: cannot read {path} ({requirement.origin}): {exc.strerror or exc}"
            ) from exc
        _check_hashes(requirement, path.name, {"sha256": digest}, {}, label)
        return _Fetched(status=DownloadStatus.LOCAL, path=path, sha256=digest, size=size, url=None)

    def _check_hashes_given(self, requirement: PinnedRequirement, label: str) -> None:
        if self._settings.require_hashes and not requirement.hashes:
            raise DownloadError(
                f"{label}: hashes are required but {requirement.origin} gives none; add "
                "--hash=sha256:... (`uv pip compile --generate-hashes`) or drop the hashes"
            )

    def _download(
        self, requirement: PinnedRequirement, link: Link, label: str
    ) -> tuple[Path, str, int]:
        filename = link.filename
        if filename in ("", ".", "..") or os.sep in filename or "/" in filename:
            raise DownloadError(f"{label}: {link.redacted} does not end in a file name")
        target = self._dest_dir / filename
        index_hashes = {
            name: values[0].lower()
            for name, values in (link.hash_option or {}).items()
            if name in hashlib.algorithms_guaranteed
        }
        hashers = {name: hashlib.new(name) for name in {"sha256", *index_hashes}}
        size = 0
        # identity: a server's Content-Encoding must not alter the bytes we hash.
        headers = {"Accept-Encoding": "identity"}
        with self._client.stream("GET", link.url_without_fragment, headers=headers) as response:
            if response.status_code >= 400:  # 5xx was raised by the response hook
                raise DownloadError(
                    f"{label}: {link.redacted} answered {response.status_code} "
                    f"{response.reason_phrase}; check the pin and the index"
                )
            watch = _StallWatch(self._settings.min_speed, self._settings.timeout)
            with saving(target, label) as out:
                # Each read as it arrives: a chunk size would buffer a trickle out of sight.
                for chunk in response.iter_raw():
                    watch.received(len(chunk))
                    out.write(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    size += len(chunk)
                digests = {name: hasher.hexdigest() for name, hasher in hashers.items()}
                _check_hashes(requirement, filename, digests, index_hashes, label)
        return target, digests["sha256"], size

    def _retrying(self, label: str, what: str, attempt: Callable[[], _T]) -> _T:
        retries = max(0, self._settings.retries)
        for number in itertools.count():
            try:
                return attempt()
            except _TRANSIENT as exc:
                if number >= retries or self._closed:
                    if isinstance(exc, _Stalled):
                        raise DownloadError(
                            f"{label}: {what} failed {number + 1} time(s), last {exc}; "
                            "check the index or raise --download-timeout"
                        ) from exc
                    raise DownloadError(
                        f"{label}: {what} failed {number + 1} time(s), last with "
                        f"{_describe(exc)}; check the index, or raise the timeout or retries"
                    ) from exc
                delay = self._settings.backoff * 2**number * random.uniform(0.5, 1.0)
                logger.info(
                    "%s: %s failed (%s); retry %d of %d in %.2f s",
                    label, what, _describe(exc), number + 1, retries, delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def download_all(
    requirements: Iterable[PinnedRequirement],
    settings: DownloadSettings,
    dest_dir: Path,
    *,
    max_downloads: int,
    on_result: Callable[[DownloadResult], None] | None = None,
    on_progress: Callable[[StageProgress], None] | None = None,
) -> list[DownloadResult]:
    """Fetch every requirement, at most ``max_downloads`` at once; results in input order.

    ``on_result`` is called in the calling thread as each fetch finishes. ``on_progress``
    gets the counts, from the download threads, as the fetches are queued, start and end.
    Interrupted, it starts no more fetches and closes the client to end those in flight.
    """
    if max_downloads < 1:
        raise UsageError(f"max_downloads must be at least 1, not {max_downloads}")
    with Downloader(settings, dest_dir) as downloader:
        return run_all(DOWNLOADS, downloader.fetch, list(requirements), max_workers=max_downloads,
                       on_result=on_result, on_progress=on_progress, stop=downloader.close)


def _raise_for_server_error(response: httpx2.Response) -> None:
    if response.status_code >= 500:
        raise _ServerError(
            f"HTTP {response.status_code} {response.reason_phrase} from {response.request.url}"
        )


def _check_hashes(
    requirement: PinnedRequirement,
    filename: str,
    digests: dict[str, str],
    index_hashes: dict[str, str],
    label: str,
) -> None:
    """Raise unless the file matches the requirement's hashes and the index's."""
    actual = digests["sha256"]
    if requirement.hashes and actual not in requirement.hashes:
        raise HashMismatchError(
            f"{label}: {filename} has sha256 {actual} but {requirement.origin} expects "
            f"{' or '.join(sorted(requirement.hashes))}; the file was not kept; "
            "check the pin or the source"
        )
    for name, expected in index_hashes.items():
        if digests[name] != expected:
            raise HashMismatchError(
                f"{label}: {filename} has {name} {digests[name]} but the index lists "
                f"{expected}; the file was not kept; the index or the transfer is corrupt"
            )


def _label(requirement: PinnedRequirement) -> str:
    if requirement.version is None:
        return requirement.name
    return f"{requirement.name} {requirement.version}"


def _describe(exc: BaseException) -> str:
    text = _one_line(exc)
    name = type(exc).__name__
    return name if text == name else f"{name}: {text}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
