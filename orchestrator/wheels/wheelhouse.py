"""The wheelhouse folder: its lock, the manifest that maps each wheel to where it came from, and publishing into it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from orchestrator.atomic import atomic_write
from orchestrator.errors import LockError, UsageError, WheelError

logger = logging.getLogger(__name__)

MANIFEST = ".orchestrate-manifest.json"
LOCK = ".orchestrate.lock"
MANIFEST_WRITE_INTERVAL = 1.0
"""Seconds between writes of the manifest while a run records builds. Each write holds every entry,
so writing after each of N builds would cost O(N^2); what is recorded meanwhile is written when the
run releases the lock. A run killed (-9) in between loses at most that second's records: those
sdists are built again by the next run."""


Entry = str
"""A wheel of the manifest and the sdist it was built from, as the manifest file writes it: the JSON object
``{"source": ..., "wheel": ...}`` (no ``source`` in an entry that names none) as ``json.dumps(indent=1,
sort_keys=True)`` spells it one level deep. One string a wheel: a dict each cost 130 bytes more than a tuple, a
tuple and its two strings 70 more than this, over a wheelhouse of thousands; and each write of the manifest,
every second of a run, no longer encodes every entry again."""


def _entry(wheel: str, source: str | None) -> Entry:
    return json.dumps({"wheel": wheel} if source is None else {"source": source, "wheel": wheel},
                      indent=1, sort_keys=True).replace("\n", "\n ")  # one level deeper


def _wheel(entry: Entry) -> str:
    wheel: str = json.loads(entry)["wheel"]
    return wheel


class Wheelhouse:
    """A wheelhouse folder that one run at a time writes to."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{path}: cannot create the wheelhouse folder: {exc.strerror}") from None
        self._manifest = self._load()
        self._manifest_lock = threading.Lock()
        """Builds are recorded from the scheduler's thread, wheels from the index placed from download threads."""
        self._unsaved = False
        self._saved_at = float("-inf")

    @contextlib.contextmanager
    def locked(self, *, wait: float = 0.0) -> Iterator[None]:
        """Hold the wheelhouse lock; another run holding it is a :class:`LockError` after ``wait`` seconds.
        Hidden partial files are removed as it is taken and as it is let go."""
        lock = filelock.FileLock(str(self.path / LOCK))
        try:
            lock.acquire(timeout=wait)
        except filelock.Timeout:
            raise LockError(
                f"{self.path}: another orchestrate run is writing this wheelhouse; "
                "wait for it, or pass --wait-lock SECONDS"
            ) from None
        try:
            self._remove_partials()
            yield
        finally:
            try:
                self.flush()
            finally:
                # A build stopped as it published (its worker killed by the grace period's end, or by SIGTERM)
                # left its part; every build of this run has ended by now, and no other run writes here yet.
                self._remove_partials()
                lock.release()

    def _remove_partials(self) -> None:
        """Remove temp files a killed run or a stopped build left behind (only ever ours: hidden ``.part`` files)."""
        for partial in self.path.glob(".*.part"):
            with contextlib.suppress(OSError):
                partial.unlink()
                logger.info("removed %s left by an interrupted run", partial.name)

    def _load(self) -> dict[str, Entry]:
        try:
            data = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            logger.warning("%s: unreadable manifest; every source will be built again", self.path / MANIFEST)
            return {}
        if not isinstance(data, dict):
            return {}
        return {sha256: _entry(entry["wheel"], entry.get("source")) for sha256, entry in data.items()
                if isinstance(entry, dict) and isinstance(entry.get("wheel"), str)}

    def built_wheel(self, sha256: str | None) -> str | None:
        """The wheel already built from the sdist with this digest, if it is still here."""
        if sha256 is None:
            return None
        entry = self._manifest.get(sha256)
        if entry is None:
            return None
        wheel = _wheel(entry)
        return wheel if (self.path / wheel).is_file() else None

    def record(self, sha256: str | None, *, wheel: str, source: str) -> None:
        """Remember which sdist a wheel came from; written atomically, at once or by :meth:`flush`
        (see :data:`MANIFEST_WRITE_INTERVAL`)."""
        if sha256 is None:
            return
        with self._manifest_lock:
            self._manifest[sha256] = _entry(wheel, source)
            self._unsaved = True
            if time.monotonic() - self._saved_at >= MANIFEST_WRITE_INTERVAL:
                self._write()

    def flush(self) -> None:
        """Write what was recorded since the manifest was last written; :meth:`locked` does, as it ends."""
        with self._manifest_lock:
            if self._unsaved:
                self._write()

    def forget(self, wheel: str) -> None:
        """Forget the sdist ``wheel`` was built from: another file (the index's wheel) now has its name."""
        with self._manifest_lock:
            named = json.dumps(wheel)  # as it is spelled in the entries that name it (and few others)
            stale = [sha256 for sha256, entry in self._manifest.items() if named in entry and _wheel(entry) == wheel]
            for sha256 in stale:
                del self._manifest[sha256]
            if stale:
                self._write()

    def _write(self) -> None:
        with atomic_write(self.path / MANIFEST) as out:
            # An entry at a time, as json.dumps(indent=1, sort_keys=True) wrote the whole: the manifest of
            # thousands of wheels, written each second of a run, was made whole as dicts, a string and bytes.
            text = io.TextIOWrapper(out, encoding="utf-8")
            text.write("{")
            for index, sha256 in enumerate(sorted(self._manifest)):
                text.write((",\n " if index else "\n ") + json.dumps(sha256) + ": " + self._manifest[sha256])
            text.write("\n}" if self._manifest else "}")
            text.flush()
            text.detach()
        self._unsaved = False
        self._saved_at = time.monotonic()


def publish_wheel(wheel: Path, wheelhouse: Path) -> tuple[Path, str]:
    """Copy ``wheel`` into ``wheelhouse`` atomically (a hidden temp file, fsync, rename); its path there and
    the sha256 of what was copied."""
    final = wheelhouse / wheel.name
    digest = hashlib.sha256()
    try:
        with atomic_write(final) as out, wheel.open("rb") as src:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise WheelError(f"cannot publish {wheel.name} to {wheelhouse}: {exc.strerror or exc}; "
                         "free some space there or choose another wheelhouse") from exc
    return final, digest.hexdigest()
