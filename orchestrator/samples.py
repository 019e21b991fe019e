"""The run's time series: what the scheduler saw of the machine and its builds, kept small.

The scheduler samples every 0.2 s; a report needs far fewer points. :class:`Samples` keeps at
most one point per ``interval`` (the samples in between fold into it, peaks kept), and once it
holds ``limit`` points, merges them in pairs and doubles the interval, so a run of any length
ends with at most ``limit`` evenly spaced points. Plain data, no I/O: the scheduler feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """The run at one moment (or the peaks of a short stretch of it, once merged)."""

    at: float
    """Epoch seconds."""
    running: int
    """Builds admitted and not yet ended."""
    waiting: int
    """Builds queued for admission, whether or not a worker prepares them."""
    preparing: int
    """Workers started ahead, preparing (or holding prepared) a queued build."""
    rss: int
    """The running builds' process trees' resident memory, summed, in bytes."""
    reserved: int
    """What the running builds hold against the memory limit: each the larger of its need and its RSS, summed."""
    available_memory: int
    """The machine's available memory, in bytes."""
    cpu_busy: float | None
    """CPUs busy on the machine, whoever keeps them busy; ``None``: not measured."""
    cpu_count: int
    """CPUs this run may use."""

    def merge(self, other: Sample) -> Sample:
        """One point for both: the earlier time, the higher use, the lower free memory."""
        busy = [value for value in (self.cpu_busy, other.cpu_busy) if value is not None]
        return Sample(at=min(self.at, other.at), running=max(self.running, other.running),
                      waiting=max(self.waiting, other.waiting), preparing=max(self.preparing, other.preparing),
                      rss=max(self.rss, other.rss), reserved=max(self.reserved, other.reserved),
                      available_memory=min(self.available_memory, other.available_memory),
                      cpu_busy=max(busy) if busy else None, cpu_count=min(self.cpu_count, other.cpu_count))

    def to_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "running": self.running, "waiting": self.waiting,
                "preparing": self.preparing, "rss": self.rss, "reserved": self.reserved,
                "available_memory": self.available_memory,
                "cpu_busy": None if self.cpu_busy is None else round(self.cpu_busy, 2), "cpu_count": self.cpu_count}


class Samples:
    """At most ``limit`` points, at least ``interval`` seconds apart; see the module docstring."""

    def __init__(self, *, interval: float = 0.5, limit: int = 2000) -> None:
        if limit < 2:
            raise ValueError("limit must be at least 2")
        self._interval = interval
        self._limit = limit
        self._points: list[Sample] = []

    @property
    def points(self) -> tuple[Sample, ...]:
        return tuple(self._points)

    @property
    def interval(self) -> float:
        """Seconds between kept points now (doubled at each thinning)."""
        return self._interval

    def add(self, sample: Sample) -> None:
        if self._points and sample.at - self._points[-1].at < self._interval:
            self._points[-1] = self._points[-1].merge(sample)
            return
        self._points.append(sample)
        if len(self._points) > self._limit:
            pairs = zip(self._points[0::2], self._points[1::2], strict=False)
            merged = [first.merge(second) for first, second in pairs]
            if len(self._points) % 2:
                merged.append(self._points[-1])
            self._points = merged
            self._interval *= 2
