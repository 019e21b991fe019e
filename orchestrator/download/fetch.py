"""The download stage: fetch the sdists that pinned requirements name.

Sources are sdists only (pip's ``--no-binary :all:``). Index pages (PEP 503 HTML,
PEP 691 JSON) and find-links folders or pages are read by ``unearth``; this module
owns streaming, hash checks, retries and the cache. One :meth:`Downloader.fetch`::

    requirement ── path set ──────────────────────────▶ checked in place    "local"
        │
        ├── hashes given: cache lookup by hash ── hit ─▶ copy to dest_dir    "cached"
        ▼
    find the sdist link (unearth, retried)
        │
        ├── no hashes given, index lists a sha256: cache lookup ── hit ─▶   "cached"
        ▼
    stream GET into dest_dir/.name.part, hashing (retried)
        ─▶ check hashes ─▶ fsync, os.replace ─▶ copy into the cache   "downloaded"

Two rules end a download that stopped moving: no byte for ``timeout`` seconds (the
per-read timeout), and under ``min_speed`` for ``timeout`` seconds (a stall: a server
trickling a byte a second never trips the first). Both are retried like other
transient errors. The stall rule is curl's ``--speed-limit``/``--speed-time``, with
the window tied to the timeout as cargo ties ``http.low-speed-limit`` to ``http.timeout``.

The cache is content-addressed: ``cache_dir/sha256/<2 hex>/<64 hex>/<filename>``.
Every copy out of it is re-hashed, and a corrupt entry is deleted and fetched again.
A file whose hash does not match is never given its final name: its temporary file
is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import httpx2
from packaging.version import InvalidVersion, Version
from unearth import Link, PackageFinder
from unearth.auth import MultiDomainBasicAuth
from unearth.fetchers.sync import PyPIClient

from orchestrator.atomic import atomic_write
from orchestrator.download.requirements import PinnedRequirement
from orchestrator.errors import (
    DownloadError,
    HashMismatchError,
    OrchestratorError,
    UsageError,
)
from orchestrator.settings import IndexSettings
from orchestrator.units import format_size

__all__ = [
    "DownloadProgress",
    "DownloadResult",
    "DownloadSettings",
    "DownloadStatus",
    "DownloadTally",
    "Downloader",
    "download_all",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_CHUNK_SIZE = 256 * 1024
_PYPI_SIMPLE = "https://pypi.org/simple/"


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
    backoff: float = 0.5
    """Seconds before the first retry; doubled for each further one, with jitter."""
    min_speed: int = 1024
    """Bytes per second a download must average over the last ``timeout`` seconds, or it
    has stalled and is cut; 0 turns the rule off. 1 KiB/s is below any usable link."""


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
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> DownloadProgress:
        return DownloadProgress(total=self._total, in_flight=self._in_flight, done=self._done,
                                failed=self._failed, bytes_done=self._bytes_done)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fetched:
    status: DownloadStatus
    path: Path
    sha256: str | None
    size: int
    url: str | None


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
    """Fetches sdists into ``dest_dir``; :meth:`fetch` is safe to call from many threads.

    All threads share one HTTP client (and its connection pool); :meth:`close` it,
    or use the downloader as a context manager, once every fetch has returned.
    """

    def __init__(self, settings: DownloadSettings, dest_dir: Path) -> None:
        self._settings = settings
        self._dest_dir = Path(dest_dir)
        self._dest_dir.mkdir(parents=True, exist_ok=True)
        index = settings.index
        index_urls = (
            [] if index.no_index else [index.index_url or _PYPI_SIMPLE, *index.extra_index_urls]
        )
        self._where = ", ".join([*index_urls, *index.find_links]) or "no index"
        self._client = _Client(
            http_origins=[*index_urls, *index.find_links],
            timeout=settings.timeout,
            follow_redirects=True,
            # Callers bound concurrency with their threads; the pool must never make
            # a thread wait (a pool wait would count against the timeout).
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=64),
            event_hooks={"response": [_raise_for_server_error]},
        )
        self._client.auth = MultiDomainBasicAuth(prompting=False, index_urls=index_urls)
        self._finder: PackageFinder | None = None
        if index_urls or index.find_links:
            self._finder = PackageFinder(
                # unearth's own client does not match the types of its Fetcher protocol.
                session=self._client,  # type: ignore[arg-type]
                index_urls=index_urls,
                find_links=index.find_links,
                # The lock decides what to fetch; the build stage judges compatibility.
                ignore_compatibility=True,
            )

    def close(self) -> None:
        """Close the HTTP client's connections."""
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
        """Fetch one requirement's sdist; never raises, a failure is a result."""
        started_at = time.time()
        label = _label(requirement)
        try:
            fetched = self._fetch(requirement, label)
        except OrchestratorError as exc:
            # The result carries the message; the caller shows it (once, not also here).
            logger.info("%s", exc)
            error = exc.message
        except Exception as exc:  # a worker never raises into the scheduler
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
            )
        return DownloadResult(
            name=requirement.name,
            version=requirement.version,
            url=requirement.url,
            sha256=None,
            bytes=0,
            started_at=started_at,
            finished_at=time.time(),
            status=DownloadStatus.FAILED,
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
            cached = self._from_cache(digest, label)
            if cached is not None:
                return _Fetched(
                    status=DownloadStatus.CACHED,
                    path=cached[0],
                    sha256=digest,
                    size=cached[1],
                    url=requirement.url and Link(requirement.url).redacted,
                )
        if requirement.url is not None:
            link = Link(requirement.url)
        else:
            link = self._retrying(
                label,
                f"looking it up on {self._where}",
                lambda: self._find_sdist(requirement, label),
            )
        index_sha256 = (link.hash_option or {}).get("sha256", [None])[0]
        if index_sha256 and not requirement.hashes:
            cached = self._from_cache(index_sha256.lower(), label)
            if cached is not None:
                return _Fetched(
                    status=DownloadStatus.CACHED,
                    path=cached[0],
                    sha256=index_sha256.lower(),
                    size=cached[1],
                    url=link.redacted,
                )
        path, sha256, size = self._retrying(
            label, f"downloading {link.redacted}", lambda: self._download(requirement, link, label)
        )
        self._store_in_cache(path, sha256)
        return _Fetched(
            status=DownloadStatus.DOWNLOADED, path=path, sha256=sha256, size=size, url=link.redacted
        )

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
                while chunk := source.read(_CHUNK_SIZE):
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

    def _find_sdist(self, requirement: PinnedRequirement, label: str) -> Link:
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
        for package in packages:
            if not package.link.is_wheel:
                return package.link
        if packages:
            wheels = ", ".join(package.link.filename for package in packages[:3])
            raise DownloadError(
                f"no sdist of {label} on {self._where}; only wheels ({wheels}); "
                "this tool builds from sdists: publish one or pin a URL to it"
            )
        raise DownloadError(
            f"{label} not found on {self._where}; check the pin and the index options"
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
            with _saving(target, label) as out:
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
                if number >= retries:
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

    def _cache_folder(self, sha256: str) -> Path | None:
        if self._settings.cache_dir is None:
            return None
        return self._settings.cache_dir / "sha256" / sha256[:2] / sha256

    def _from_cache(self, sha256: str, label: str) -> tuple[Path, int] | None:
        """Copy a cached file with this hash into ``dest_dir``: ``(path, size)`` or ``None``."""
        folder = self._cache_folder(sha256)
        if folder is None or not folder.is_dir():
            return None
        for cached in sorted(folder.iterdir()):
            if cached.name.startswith("."):  # another thread's temporary file
                continue
            target = self._dest_dir / cached.name
            try:
                with contextlib.closing(_cache_chunks(cached)) as chunks, _saving(target, label) as out:
                    hasher = hashlib.sha256()
                    size = 0
                    for chunk in chunks:
                        out.write(chunk)
                        hasher.update(chunk)
                        size += len(chunk)
                    if hasher.hexdigest() != sha256:
                        raise HashMismatchError(f"cached {cached} has sha256 {hasher.hexdigest()}")
            except HashMismatchError:
                logger.warning("%s: deleting corrupt cache entry %s", label, cached)
                cached.unlink(missing_ok=True)
                continue
            except _UnreadableCacheEntry as exc:
                if not isinstance(exc.__cause__, FileNotFoundError):  # else removed meanwhile
                    logger.warning("%s: cannot read the cache entry %s (%s); fetching it instead", label, cached, exc)
                continue
            logger.debug("%s: cache hit %s", label, cached)
            return target, size
        return None

    def _store_in_cache(self, path: Path, sha256: str) -> None:
        folder = self._cache_folder(sha256)
        if folder is None or (folder / path.name).exists():
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as source, atomic_write(folder / path.name) as out:
                while chunk := source.read(_CHUNK_SIZE):
                    out.write(chunk)
        except OSError as exc:  # the cache only saves time; the download itself succeeded
            logger.warning("cannot store %s in the cache %s: %s", path.name, folder, exc)


def download_all(
    requirements: Iterable[PinnedRequirement],
    settings: DownloadSettings,
    dest_dir: Path,
    *,
    max_downloads: int,
    on_result: Callable[[DownloadResult], None] | None = None,
    on_progress: Callable[[DownloadProgress], None] | None = None,
) -> list[DownloadResult]:
    """Fetch every requirement, at most ``max_downloads`` at once; results in input order.

    ``on_result`` is called in the calling thread as each fetch finishes, then
    ``on_progress`` with the counts that include it. ``on_progress`` is also called,
    from the download threads, as each fetch starts.
    """
    if max_downloads < 1:
        raise UsageError(f"max_downloads must be at least 1, not {max_downloads}")
    requirements = list(requirements)
    results: list[DownloadResult | None] = [None] * len(requirements)
    tally = DownloadTally(len(requirements))
    report = on_progress or (lambda progress: None)
    report(tally.snapshot())

    def fetch(downloader: Downloader, requirement: PinnedRequirement) -> DownloadResult:
        report(tally.started())
        result = downloader.fetch(requirement)
        # Counted here, before this thread can start the next fetch, so that
        # "in flight" never exceeds max_downloads; reported from the calling thread.
        tally.finished(result)
        return result

    with Downloader(settings, dest_dir) as downloader:
        pool = ThreadPoolExecutor(max_workers=max_downloads, thread_name_prefix="download")
        try:
            futures = {
                pool.submit(fetch, downloader, requirement): position
                for position, requirement in enumerate(requirements)
            }
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                if on_result is not None:
                    on_result(result)
                report(tally.snapshot())
        except BaseException:
            # Interrupted: queued fetches never start, and closing the client ends those in flight.
            pool.shutdown(wait=False, cancel_futures=True)
            downloader.close()
            pool.shutdown(wait=True)
            raise
        pool.shutdown(wait=True)
    return [result for result in results if result is not None]


class _Client(PyPIClient):
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


class _UnreadableCacheEntry(Exception):
    """Reading a cache entry failed; unlike a failure to save, the fetch goes on without it."""


def _cache_chunks(path: Path) -> Generator[bytes, None, None]:
    """A cache file's content in chunks; a failure to open or read it raises :class:`_UnreadableCacheEntry`."""
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK_SIZE):
                yield chunk
    except OSError as exc:
        raise _UnreadableCacheEntry(exc.strerror or str(exc)) from exc


@contextlib.contextmanager
def _saving(target: Path, label: str) -> Iterator[BinaryIO]:
    """:func:`atomic_write`, a failure to write (disk full, permissions) becoming a :class:`DownloadError`."""
    try:
        with atomic_write(target) as out:
            yield out
    except OSError as exc:
        raise DownloadError(
            f"{label}: cannot save {target.name} in {target.parent}: {exc.strerror or exc}; "
            "free some space there or choose another folder"
        ) from exc


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


def _is_pep440(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _describe(exc: BaseException) -> str:
    text = _one_line(exc)
    name = type(exc).__name__
    return name if text == name else f"{name}: {text}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
