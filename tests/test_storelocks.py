"""The kept stores' locks (``build/storelocks.py``): a maker never waits behind a build that holds its entry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.build import storelocks

HOLD_SHARED = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(600)
"""


def test_a_maker_does_not_wait_for_the_lock_exclusive_behind_a_build_holding_the_entry(tmp_path: Path) -> None:
    """The hang it prevents: a build's worker saw its env missing, and as it went for the lock exclusive another
    build made the env and went on holding it shared while waiting for its admission, which waited for the
    first build. The first must find the env made, and hold it shared too, without making it again."""
    lock, entry = tmp_path / "key.lock", tmp_path / "key"
    holders: list[subprocess.Popen[str]] = []
    looks = 0

    def ready() -> bool:
        nonlocal looks
        looks += 1
        if looks == 1:  # as this build looks, another makes the entry and holds it shared from then on
            entry.mkdir()
            holder = subprocess.Popen([sys.executable, "-c", HOLD_SHARED, str(lock)], stdout=subprocess.PIPE,
                                      text=True)
            holders.append(holder)
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            return False
        return entry.is_dir()

    def make() -> None:
        pytest.fail("made again")

    got: list[tuple[int, str]] = []
    thread = threading.Thread(target=lambda: got.append(storelocks.shared_once(lock, ready, make)), daemon=True)
    try:
        thread.start()
        thread.join(timeout=20)
        assert not thread.is_alive(), "waited for the lock exclusive behind a build that holds it shared"
        (fd, how), = got
        assert how == "made by another"
        # Held shared: the pruner's try fails while the build holds it, and succeeds once it let go.
        stop(holders[0])
        assert storelocks.try_exclusive(lock) is None
        os.close(fd)
        taken = storelocks.try_exclusive(lock)
        assert taken is not None
        os.close(taken)
    finally:
        for holder in holders:
            stop(holder)


def stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def test_the_first_maker_makes_and_holds_the_entry_shared(tmp_path: Path) -> None:
    lock, entry = tmp_path / "key.lock", tmp_path / "key"
    fd, how = storelocks.shared_once(lock, entry.is_dir, entry.mkdir)
    assert (how, entry.is_dir()) == ("made", True)
    assert storelocks.try_exclusive(lock) is None
    os.close(fd)
    fd, how = storelocks.shared_once(lock, entry.is_dir, entry.mkdir)
    assert how == "found"
    os.close(fd)
