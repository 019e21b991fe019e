"""The run's side of the fork server (``build/forkserver.py``): workers forked ready, and their exit statuses.

The server is started at the first :meth:`ForkServer.fork` of a run, in a session of its
own, and started again if it died. Each fork gets two new pipes, whose far ends travel to
the server over its control socket; the worker it forks is a :class:`ForkedWorker`, as much
of ``subprocess.Popen`` as the local executor uses: its pid, its pipes, and its exit status,
which the server reports since the worker is the server's child, not this process's.
A thread reads the server's replies; if the server dies, the workers it had die too (each
watches its parent) and are reported killed by SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import TextIO

SERVER_EXIT_WAIT = 5.0
"""Seconds the server gets to exit once the run closes its socket, before it is killed."""


class _ExitStatus:
    """A forked worker's return code, once the server has reaped it."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.reported = threading.Event()

    def set(self, returncode: int) -> None:
        if not self.reported.is_set():
            self.returncode = returncode
            self.reported.set()


class ForkedWorker:
    """A worker process the fork server forked: pid, pipes, ``poll`` and ``wait`` as ``subprocess.Popen``'s."""

    def __init__(self, pid: int, stdin: TextIO, stdout: TextIO, status: _ExitStatus) -> None:
        self.pid = pid
        self.stdin: TextIO | None = stdin
        self.stdout: TextIO | None = stdout
        self._status = status

    @property
    def returncode(self) -> int | None:
        return self._status.returncode

    def poll(self) -> int | None:
        return self._status.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._status.reported.wait(timeout):
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        assert self._status.returncode is not None
        return self._status.returncode


class ForkServer:
    """One run's fork server; :meth:`fork` from one thread at a time (the scheduler's)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._replies: queue.SimpleQueue[tuple[int, _ExitStatus] | None] = queue.SimpleQueue()
        self._statuses: dict[int, _ExitStatus] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def fork(self) -> ForkedWorker:
        """A new worker, forked by the server (started first, or again if it died)."""
        for _ in range(2):  # the server may have died since the last fork: once more with a new one
            if self._control is None:
                self._start()
            forked = self._fork()
            if forked is not None:
                return forked
            self._stop()
        raise OSError("the build fork server does not start; run with --debug to see why")

    def close(self) -> None:
        """End the server; it kills whatever worker still runs (none, once every handle is closed)."""
        self._stop()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.build.worker", "--fork-server", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
        self._control = ours
        self._replies = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, args=(ours, self._replies), name="fork-server",
                                        daemon=True)
        self._reader.start()

    def _fork(self) -> ForkedWorker | None:
        assert self._control is not None
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        try:
            socket.send_fds(self._control, [b"F"], [stdin_read, stdout_write])
        except OSError:
            reply = None  # the server died
        else:
            reply = self._replies.get()
        os.close(stdin_read)  # the worker's ends: the server has its own copies
        os.close(stdout_write)
        if reply is None:
            os.close(stdin_write)
            os.close(stdout_read)
            return None
        pid, status = reply
        return ForkedWorker(pid, open(stdin_write, "w"), open(stdout_read, errors="replace"), status)

    def _read(self, control: socket.socket, replies: queue.SimpleQueue[tuple[int, _ExitStatus] | None]) -> None:
        """Hand each fork's pid to :meth:`_fork`, each exit status to its worker; at the end, the rest are dead."""
        with contextlib.suppress(OSError), control.makefile("r") as lines:
            for line in lines:
                kind, pid, *rest = line.split()
                with self._lock:
                    if kind == "pid":
                        status = self._statuses[int(pid)] = _ExitStatus()
                        replies.put((int(pid), status))
                    elif kind == "exited" and int(pid) in self._statuses:
                        self._statuses.pop(int(pid)).set(int(rest[0]))
        with self._lock:  # the server is gone: its workers killed themselves (each watches it)
            for status in self._statuses.values():
                status.set(-signal.SIGKILL)
            self._statuses.clear()
        replies.put(None)

    def _stop(self) -> None:
        control, process, reader = self._control, self._process, self._reader
        self._control = self._process = self._reader = None
        if control is not None:
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)
            control.close()
        if process is not None:
            try:
                process.wait(timeout=SERVER_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if reader is not None:
            reader.join()
