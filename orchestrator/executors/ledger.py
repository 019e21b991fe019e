"""The builds of one farm machine across its Dask worker processes, for admission and memory pressure.

With ``dask worker --nworkers N`` a machine runs N worker processes, each with a
:class:`~orchestrator.executors.machine.Machine` of its own. Alone, each would admit over its own
builds' reservations (two processes could promise the same memory to two builds) and relieve
pressure over its own builds only (two builds, each alone in its process, would never be stopped:
the machine could run out of memory). So each process publishes the builds it admitted here, one
small JSON file per build in a folder per run, under the machine's temporary folder (where
``build/envruns.py`` shares the build environments: a machine is the processes that share it), and
reads the others' before each decision; admissions take the ledger's ``flock`` in turn.

Written by hand: a few files and a lock, where a Dask-wide lock or variable would cost a round trip
to the scheduler for each decision and know nothing of which workers share a machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A build admitted by one worker process of the machine, as the others see it."""

    key: str
    owner: int
    """The pid of the worker process that admitted it."""
    need: int
    rss: int
    started_at: float
    """``time.monotonic()`` at its admission: one clock for every process of the machine."""
    cpu: float | None
    stopping: bool


class Ledger:
    """The machine's builds, one folder per run under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def admitting(self) -> Iterator[None]:
        """Held by one admission decision of the machine at a time, across its processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def publish(self, run_id: str, entry: Entry) -> None:
        """Enter ``entry`` (its key's last figures replace the earlier ones)."""
        path = self._path(run_id, entry.owner, entry.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.part")  # never read half-written; no fsync: a reboot ends every build
        partial.write_text(json.dumps(asdict(entry)))
        os.replace(partial, path)

    def withdraw(self, run_id: str, key: str) -> None:
        """Take this process's build ``key`` out: it ended."""
        with contextlib.suppress(FileNotFoundError):
            self._path(run_id, os.getpid(), key).unlink()

    def others(self, run_id: str) -> list[Entry]:
        """The run's builds admitted by the machine's other live processes; a dead process's entries go."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in (self.root / run_id).glob("*.json"):
                owner = int(path.name.split("-", 1)[0])
                if owner == os.getpid():
                    continue
                if not _alive(owner):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
                    found.append(Entry(**json.loads(path.read_text())))
        return found

    def end_run(self, run_id: str) -> None:
        """This process's part of the run is over: its entries go, and the run's folder with the last of them."""
        folder = self.root / run_id
        with contextlib.suppress(FileNotFoundError):
            for path in folder.glob(f"{os.getpid()}-*.json"):
                path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()

    def _path(self, run_id: str, owner: int, key: str) -> Path:
        return self.root / run_id / f"{owner}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
