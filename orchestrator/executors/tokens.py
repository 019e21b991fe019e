"""The run's jobserver: one pool of CPU tokens lent to the builds of a local run, one FIFO per build.

GNU make's jobserver protocol: a client holds one *implicit* slot and runs one more job for
each byte (token) it reads from the FIFO named in ``MAKEFLAGS``, writing the byte back when
the job ends. Each build owns one implicit slot, as make's children do, so the pool lends
``usable - running builds`` tokens. ``build/jobserver.py`` is the build's side (which tools
may see the FIFO); this module is the run's.

How many CPUs are usable. The admission's CPU rule (``--max-cpu PERCENT``) lets builds start
until that share of the usable CPUs (affinity and cgroup quota applied) is busy, so the
tokens follow the same share: ``usable = max(1, floor(cpus x max_cpu))`` (``--max-cpu 50``:
half the CPUs; 200: twice, as the user chose to oversubscribe; off: all of them). The count
cap (``--max-builds``) only changes how many implicit slots are taken: with more builds than
usable CPUs running, the pool lends nothing and each build runs one job at a time. The pool
is static: like the ``-jK`` split it replaces, it keeps our builds from swamping one another,
while the admission's CPU rule, which measures the whole machine, decides when builds start.

Why a FIFO per build rather than one for the run. Tokens a build has taken are lost when it
is killed (a timeout, memory pressure): its ninja never writes them back, and in one shared
FIFO nobody can tell how many were lost. Here the run alone writes into a build's FIFO and
reads back from it, so it knows what each build was given (``given``) and can count what is
still in its FIFO (``FIONREAD``): a build's tokens are a number in the pool, and when its
build ends, by any death, its FIFO is closed and removed and the number returns whole. The
same count shows who needs more: a build whose FIFO is empty took every token it had.

Balancing, every :data:`TICK` seconds, in a thread of the executor:

* each build is entitled to ``share`` tokens (``-jK`` less its implicit slot, K the split of
  the CPUs by ``--max-builds``): a build never gets less parallelism than before the jobserver,
  once the builds ahead of it give back what they held;
* the rest goes to the builds whose FIFO is empty (they took all they had), in equal parts;
* tokens still in the FIFO of a build that is not using them (above its share) are read back
  for those, and for a build admitted while every token was out.

A token is written only while the tokens lent stay within ``usable - running``. The protocol
has no way to take a token back: a build admitted while all were out waits for them to come
back, and they come back only when they rest in a FIFO at a tick. A ninja that ends a job and
starts the next keeps its token, so busy builds share the spare first come, first served, and a
build's share can wait until the one that took the tokens runs out of parallel work. Tools notice
new tokens at their own pace: make waits on the FIFO, ninja tries again when one of its jobs ends.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import math
import os
import stat
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TICK = 0.1
"""Seconds between two balancings of the pool."""
TOKEN = b"+"
"""What make writes; any byte is a token."""


def usable_cpus(cpu_count: int, max_cpu: float | None) -> int:
    """The CPUs the pool serves: ``cpu_count`` scaled by the ``--max-cpu`` share (``None``: off), at least 1."""
    return max(1, math.floor(cpu_count * max_cpu + 1e-9)) if max_cpu else max(1, cpu_count)


@dataclass(slots=True)
class _Lease:
    """One build's FIFO and what it was given."""

    path: Path
    fd: int
    given: int = 0
    """Tokens written into its FIFO and not read back by the run."""

    def waiting(self) -> int:
        """Tokens in its FIFO, not taken by the build."""
        count = array.array("i", [0])
        fcntl.ioctl(self.fd, termios.FIONREAD, count)
        return count[0]


class TokenPool:
    """The jobserver of one local run: ``usable`` CPUs, each build guaranteed ``share`` tokens.

    :meth:`open` before a build's admission makes its FIFO; :meth:`close` when it ends returns
    whatever it held. :meth:`start` runs the balancing thread until :meth:`stop`.
    """

    def __init__(self, *, usable: int, share: int) -> None:
        self.usable = usable
        self.share = max(0, share)
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop, name="jobserver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for key in list(self._leases):
                self._drop(key)

    def open(self, key: str, path: Path) -> None:
        """Make build ``key``'s FIFO at ``path`` and lend it what it may have now; where no FIFO can be
        made there, the build runs without one (its tools keep the ``-jK`` split)."""
        try:
            os.mkfifo(path, 0o600)
            # Read-write and non-blocking: opening never waits for a reader, and the run both fills and drains it.
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            logger.warning("%s: no jobserver FIFO at %s: %s", key, path, exc.strerror or exc)
            return
        with self._lock:
            self._leases[key] = _Lease(path=path, fd=fd)
            self._rebalance()

    def close(self, key: str) -> None:
        """Build ``key`` ended: its FIFO goes, and every token it was given returns to the pool."""
        with self._lock:
            if key in self._leases:
                self._drop(key)
                self._rebalance()

    def lent(self) -> int:
        """Tokens out in the builds' FIFOs or taken by them."""
        with self._lock:
            return sum(lease.given for lease in self._leases.values())

    def _drop(self, key: str) -> None:
        lease = self._leases.pop(key)
        os.close(lease.fd)
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(os.lstat(lease.path).st_mode):
                os.unlink(lease.path)

    def _loop(self) -> None:
        while not self._stopped.wait(TICK):
            with self._lock:
                self._rebalance()

    def _rebalance(self) -> None:
        """:meth:`_balance`, never raising into the scheduler: a FIFO that fails waits for the next tick."""
        try:
            self._balance()
        except OSError:
            logger.debug("jobserver: balancing failed", exc_info=True)

    def _balance(self) -> None:
        """Move tokens between the pool and the builds' FIFOs (see the module's docstring)."""
        leases = list(self._leases.values())
        if not leases:
            return
        total = max(0, self.usable - len(leases))
        share = min(self.share, total // len(leases))
        waiting = {id(lease): lease.waiting() for lease in leases}
        hungry = [lease for lease in leases if waiting[id(lease)] == 0]
        # What each may keep: its share, or what it has taken if more (taken tokens cannot be read back).
        floor = {id(lease): max(share, lease.given - waiting[id(lease)]) for lease in leases}
        spare = total - sum(floor.values())
        target = dict(floor)
        if hungry and spare > 0:
            for index, lease in enumerate(hungry):
                target[id(lease)] += spare // len(hungry) + (1 if index < spare % len(hungry) else 0)
        if not hungry and spare >= 0:  # nobody short: leave idle tokens where they are
            target = {id(lease): max(floor[id(lease)], lease.given) for lease in leases}
        for lease in leases:  # read back first, so that writing never lends more than the pool has
            if lease.given > target[id(lease)]:
                lease.given -= _take(lease.fd, lease.given - target[id(lease)])
        room = total - sum(lease.given for lease in leases)
        for lease in leases:
            grant = min(room, target[id(lease)] - lease.given)
            if grant > 0:
                lease.given += os.write(lease.fd, TOKEN * grant)
                room -= grant


def _take(fd: int, count: int) -> int:
    """Read up to ``count`` tokens back from a FIFO; how many there were."""
    try:
        return len(os.read(fd, count))
    except BlockingIOError:
        return 0
