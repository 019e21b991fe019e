"""The download stage's content-addressed cache, and the atomic saving of fetched files.

Layout: ``cache_dir/sha256/<2 hex>/<64 hex>/<filename>``. A file enters the cache only
after its hashes were checked, through a temporary file renamed into place; every copy
out of it is re-hashed, and a corrupt entry is deleted (the caller then fetches the file
again). The cache only saves time: failing to store a file is a warning, and failing to
read an entry makes the caller fetch it instead.

An entry's folder's time is when a run last stored or took it (``lastuse``); :func:`prune` removes
the entries no run used for the state folder's age (``pruning.py``), each renamed out of its place
first: a run that looks for it then misses it and fetches the file again, and one already reading
it reads on (the file is only unlinked).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import BinaryIO

from orchestrator import lastuse
from orchestrator.atomic import atomic_write
from orchestrator.errors import DownloadError, HashMismatchError

__all__ = ["CHUNK_SIZE", "Cache", "prune", "saving"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
"""Bytes read or written at a time when copying files."""


class Cache:
    """The cache under ``cache_dir``; ``None`` disables it (every lookup misses, nothing is stored)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self._cache_dir = cache_dir

    def _folder(self, sha256: str) -> Path | None:
        if self._cache_dir is None:
            return None
        return self._cache_dir / "sha256" / sha256[:2] / sha256

    def copy_out(self, sha256: str, dest_dir: Path, label: str) -> tuple[Path, int] | None:
        """Copy a cached file with this hash into ``dest_dir``: ``(path, size)`` or ``None``."""
        folder = self._folder(sha256)
        if folder is None:
            return None
        try:
            names = sorted(os.listdir(folder))
        except OSError:  # not cached (or pruned as we looked)
            return None
        for name in names:
            if name.startswith("."):  # another thread's temporary file
                continue
            cached = folder / name
            target = dest_dir / cached.name
            try:
                with contextlib.closing(_cache_chunks(cached)) as chunks, saving(target, label) as out:
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
            lastuse.mark_used(folder)
            return target, size
        return None

    def store(self, path: Path, sha256: str) -> None:
        """Copy ``path``, whose hashes were checked, into the cache, unless it is there already."""
        folder = self._folder(sha256)
        if folder is None or (folder / path.name).exists():
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as source, atomic_write(folder / path.name) as out:
                while chunk := source.read(CHUNK_SIZE):
                    out.write(chunk)
        except OSError as exc:  # the cache only saves time; the download itself succeeded
            logger.warning("cannot store %s in the cache %s: %s", path.name, folder, exc)


@contextlib.contextmanager
def saving(target: Path, label: str) -> Iterator[BinaryIO]:
    """:func:`atomic_write`, a failure to write (disk full, permissions) becoming a :class:`DownloadError`."""
    try:
        with atomic_write(target) as out:
            yield out
    except OSError as exc:
        raise DownloadError(
            f"{label}: cannot save {target.name} in {target.parent}: {exc.strerror or exc}; "
            "free some space there or choose another folder"
        ) from exc


class _UnreadableCacheEntry(Exception):
    """Reading a cache entry failed; unlike a failure to save, the fetch goes on without it."""


def _cache_chunks(path: Path) -> Generator[bytes, None, None]:
    """A cache file's content in chunks; a failure to open or read it raises :class:`_UnreadableCacheEntry`."""
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                yield chunk
    except OSError as exc:
        raise _UnreadableCacheEntry(exc.strerror or str(exc)) from exc


def prune(cache_dir: Path, *, unused_since: float) -> tuple[int, int]:
    """Remove the entries under ``cache_dir`` that no run used since ``unused_since`` (a time); how many, and
    the bytes freed. Two levels of folders are listed, their files only in the entries removed."""
    removed = freed = 0
    try:
        shards = [entry.path for entry in os.scandir(cache_dir / "sha256") if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return 0, 0
    for shard in shards:
        with contextlib.suppress(OSError), os.scandir(shard) as entries:
            for entry in entries:
                if entry.name.startswith("."):  # renamed by a prune that was killed before it removed it
                    shutil.rmtree(entry.path, ignore_errors=True)
                    continue
                if entry.stat(follow_symlinks=False).st_mtime >= unused_since:
                    continue
                aside = os.path.join(shard, f".{entry.name}.pruned")
                try:
                    os.rename(entry.path, aside)  # unpublished at once: a lookup misses it from now on
                except OSError:
                    continue  # removed by another prune meanwhile
                freed += lastuse.bytes_freed(aside)
                shutil.rmtree(aside, ignore_errors=True)
                removed += 1
    return removed, freed

