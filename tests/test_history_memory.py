"""What the build history's connection keeps in memory: a run of thousands of builds must not grow SQLite's page cache
with each.

SQLite allocates outside Python (tracemalloc does not see it): its own count of the bytes it holds,
``sqlite3_memory_used``, is read from the library the ``sqlite3`` module links to.
"""

from __future__ import annotations

import _sqlite3
import ctypes
from pathlib import Path

from orchestrator.policy.history import SUCCESS, BuildRecord, History

PY = "cpython-3.11"


def sqlite_memory_used() -> int:
    """Bytes SQLite holds in this process, all connections together."""
    used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    used.restype = ctypes.c_int64
    return int(used())


def test_the_page_cache_stays_small_however_long_the_history(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    before = sqlite_memory_used()
    with History(path) as history:
        for index in range(12000):  # as a run records its builds and reads each next source's
            name = f"package{index:05d}"
            history.record(BuildRecord(name=name, version="1.0", sdist_sha256=f"{index:064x}", python=PY,
                                       peak_rss_bytes=2**20 + index, wall_s=0.5, cpu_s=0.4, status=SUCCESS,
                                       started_at=1000.0 + index, finished_at=1000.5 + index))
            assert history.recent_peaks(name, python=PY) == [2**20 + index]
        held = sqlite_memory_used() - before
        size = path.stat().st_size + (path.parent / f"{path.name}-wal").stat().st_size
    assert size > 2 * 2**20  # larger than SQLite's default cache of 2,000 KiB, which would then hold most of it
    # The cache held about as much as the file (2.2 MiB) before it was capped: now at most a quarter of it.
    assert held < 2**20, f"SQLite held {held / 2**20:.2f} MiB of a {size / 2**20:.1f} MiB history"
