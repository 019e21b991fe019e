"""One wheel's clock and its turn to write: what an install waits for, and when it must give up.

A wheel's clock starts when its install does; waiting for a turn to write,
for another install of the same name or for a compiler busy with another
wheel counts. Writing is checked between files: a thread blocked in a system
call (a write to a hung network filesystem) cannot be interrupted, and its
wheel fails only once the call returns.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from orchestrator.errors import InstallError

__all__ = ["Deadline", "Turn"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """When one wheel's install must have ended (``time.monotonic``); ``seconds=None``: never."""

    seconds: float | None
    at: float = math.inf

    @classmethod
    def start(cls, seconds: float | None) -> Deadline:
        return cls(seconds, math.inf if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        """Seconds left (0 once past), or ``None`` without a timeout: what ``wait`` and ``acquire`` take."""
        return None if self.seconds is None else max(0.0, self.at - time.monotonic())

    def check(self, doing: str) -> None:
        """Raise :meth:`error` if the deadline has passed."""
        if time.monotonic() >= self.at:
            raise self.error(doing)

    def error(self, doing: str, hint: str = "") -> InstallError:
        """The error of a wheel that ran out of time while ``doing``; ``hint``: what else to retry with."""
        return InstallError(
            f"timed out after {self.seconds:g} s {doing}; rolled back; retry with a longer install timeout {hint}"
            .rstrip()
        )


class Turn:
    """A turn taken from a semaphore on entering, before the deadline, which can be given up early, once."""

    def __init__(self, semaphore: threading.BoundedSemaphore, deadline: Deadline) -> None:
        self._semaphore = semaphore
        self._deadline = deadline
        self._held = False

    def __enter__(self) -> None:
        if not self._semaphore.acquire(timeout=self._deadline.remaining()):
            raise self._deadline.error("waiting for another install to finish writing")
        self._held = True

    def __exit__(self, *exc_info: object) -> None:
        self.give_up()

    def give_up(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()
