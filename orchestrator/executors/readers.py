"""One thread that reads the output of every admitted local worker: their lines, then their end.

A thread per worker cost each build a thread's start and end in the run's process (about 0.1 ms of
CPU, and the scheduler waited about 1 ms for each new thread to run) for a handful of short lines.
Here one thread waits on every worker's stdout at once (``selectors``: epoll on Linux) and hands
each complete line, then the end of the output, to the callbacks the worker registered. A pipe
wakes it when a worker is added or the run ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

CHUNK = 65536
"""Bytes read at once from a worker's output."""


@dataclass(slots=True)
class _Output:
    on_line: Callable[[str], None]
    """Called with each complete line, its newline kept (the last line of the output may have none)."""
    on_end: Callable[[], None]
    """Called once, after the last line, when every writer has closed the pipe."""
    partial: bytes = field(default=b"")


class OutputReaders:
    """Reads the pipes given to :meth:`add` until each ends, in one thread, from :meth:`start` to :meth:`stop`.

    A pipe is read by this thread only, until its end has been said; its owner closes it after that.
    """

    def __init__(self) -> None:
        self._selector: selectors.BaseSelector | None = None
        self._wake_read = self._wake_write = -1
        self._lock = threading.Lock()
        self._added: list[tuple[int, _Output]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, args=(self._selector,), name="read-workers", daemon=True)
        self._thread.start()

    def add(self, fd: int, on_line: Callable[[str], None], on_end: Callable[[], None]) -> None:
        """Read pipe ``fd`` from now on: each line to ``on_line``, then its end to ``on_end`` (on this thread)."""
        with self._lock:
            self._added.append((fd, _Output(on_line, on_end)))
        self._wake()

    def stop(self) -> None:
        """End the thread; pipes still open are no longer read (the run has ended: their workers are gone)."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        if self._selector is not None:
            self._selector.close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._thread, self._selector, self._wake_read, self._wake_write = None, None, -1, -1

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: it will wake anyway
            os.write(self._wake_write, b"\0")

    def _loop(self, selector: selectors.BaseSelector) -> None:
        while True:
            for key, _ in selector.select():
                if key.fd == self._wake_read:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, CHUNK)
                    with self._lock:
                        added, self._added = self._added, []
                        if self._stopping:
                            return
                    for fd, output in added:
                        selector.register(fd, selectors.EVENT_READ, output)
                else:
                    self._read(selector, key.fd, key.data)

    @staticmethod
    def _read(selector: selectors.BaseSelector, fd: int, output: _Output) -> None:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        if data:
            *lines, output.partial = (output.partial + data).split(b"\n")
            for line in lines:
                _deliver(output, line + b"\n")
            return
        selector.unregister(fd)  # every writer closed it: the last line, unended, then the end
        if output.partial:
            _deliver(output, output.partial)
        try:
            output.on_end()
        except Exception:  # noqa: BLE001 - as below
            logger.exception("the end of a worker's output could not be handled")


def _deliver(output: _Output, line: bytes) -> None:
    text = line.decode(errors="replace")
    try:
        output.on_line(text)
    except Exception:  # noqa: BLE001 - one worker's bad line must not stop the reading of every other worker
        logger.exception("a worker's output line could not be read: %r", text)
