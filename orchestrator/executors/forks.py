"""The run's side of the fork server (``build/forkserver.py``): workers forked ready, and their exit statuses.

The server is started when the run starts (:meth:`ForkServer.start`: it imports the build
machinery while the run downloads and resolves), in a session of its own, and started again at
the next fork if it died. One that never forked is killed when the run ends, not waited for: a
run with nothing to build would otherwise wait for its imports (0.2 s). Each fork gets two new
pipes, whose far ends travel to the server over its control socket. :meth:`ForkServer.fork`
returns at once, without waiting for the server: the worker is a :class:`ForkedWorker`, as much
of ``subprocess.Popen`` as the local executor uses. Its pipes are usable at once (what is
written waits in the pipe); its pid arrives with the server's reply, and its exit status once
the server has reaped it, since the worker is the server's child, not this process's. A thread
reads the replies. If the server dies, the workers it had die too (each watches its parent) and
are reported killed by SIGKILL; a fork it never answered has no pid and is reported the same
way.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TextIO

SERVER_EXIT_WAIT = 5.0
"""Seconds the server gets to exit once the run closes its socket, before it is killed."""


class _Fork:
    """What the server says of one fork: its pid, then its return code."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.answered = threading.Event()
        """Set once the pid is known, or known never to come."""
        self.returncode: int | None = None
        self.reaped = threading.Event()
        self._lock = threading.Lock()
        self._on_exit: list[Callable[[int], None]] = []

    def started(self, pid: int) -> None:
        self.pid = pid
        self.answered.set()

    def ended(self, returncode: int) -> None:
        """Reaped with ``returncode`` (the first one said counts); the callbacks waiting for it are called."""
        with self._lock:
            if not self.reaped.is_set():
                self.returncode = returncode
                self.reaped.set()
            reaped_with = self.returncode if self.returncode is not None else returncode
            callbacks, self._on_exit = self._on_exit, []
        self.answered.set()
        for callback in callbacks:
            callback(reaped_with)

    def when_reaped(self, callback: Callable[[int], None]) -> None:
        """Call ``callback`` with the return code once reaped: now if it is, else on the thread that hears it."""
        with self._lock:
            if not self.reaped.is_set():
                self._on_exit.append(callback)
                return
        assert self.returncode is not None
        callback(self.returncode)


class ForkedWorker:
    """A worker process the fork server forked: pid, pipes, ``poll`` and ``wait`` as ``subprocess.Popen``'s."""

    def __init__(self, stdin: TextIO, stdout: TextIO, fork: _Fork) -> None:
        self.stdin: TextIO | None = stdin
        self.stdout: TextIO | None = stdout
        self._fork = fork

    @property
    def pid(self) -> int | None:
        """Its process id, once the server has answered; ``None`` if the server died first."""
        self._fork.answered.wait()
        return self._fork.pid

    @property
    def returncode(self) -> int | None:
        return self._fork.returncode

    def poll(self) -> int | None:
        return self._fork.returncode

    def when_exited(self, callback: Callable[[int], None]) -> None:
        """Call ``callback`` with its return code once the server has reaped it (at once if it has), without
        a thread waiting for it: on the thread that reads the server's replies."""
        self._fork.when_reaped(callback)

    def wait(self, timeout: float | None = None) -> int:
        if not self._fork.reaped.wait(timeout):
            raise subprocess.TimeoutExpired("a forked build worker", timeout or 0.0)
        assert self._fork.returncode is not None
        return self._fork.returncode


class ForkServer:
    """One run's fork server; :meth:`start` and :meth:`fork` from one thread at a time (the scheduler's)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unanswered: collections.deque[_Fork] = collections.deque()
        """Forks asked of the server, oldest first, whose pid has not come: it answers in order."""
        self._running: dict[int, _Fork] = {}
        self._gone = False
        """The server's socket has closed: it answers nothing more."""
        self._asked = False
        """A fork was asked of the running server: it is stopped by closing its socket, not killed."""

    def start(self) -> None:
        """Start the server, unless it runs; returns at once, while it imports the build machinery."""
        if self._control is not None:
            return
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.build.worker", "--fork-server", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
        self._control, self._gone, self._asked = ours, False, False
        self._reader = threading.Thread(target=self._read, args=(ours,), name="fork-server", daemon=True)
        self._reader.start()

    def fork(self) -> ForkedWorker:
        """A new worker, asked of the server (started first, or again if it died); returns at once."""
        for _ in range(2):  # the server may have died since the last fork: once more with a new one
            self.start()
            forked = self._fork()
            if forked is not None:
                return forked
            self._stop()
        raise OSError("the build fork server does not start; run with --debug to see why")

    def close(self) -> None:
        """End the server; it kills whatever worker still runs (none, once every handle is closed)."""
        self._stop()

    def _fork(self) -> ForkedWorker | None:
        assert self._control is not None
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        fork = _Fork()
        try:
            with self._lock:  # queued before it is sent, so that the reply finds it
                if self._gone:
                    raise ConnectionResetError
                self._unanswered.append(fork)
                self._asked = True
                socket.send_fds(self._control, [b"F"], [stdin_read, stdout_write])
        except OSError:  # the server is gone
            with self._lock:
                with contextlib.suppress(ValueError):
                    self._unanswered.remove(fork)
            for fd in (stdin_read, stdin_write, stdout_read, stdout_write):
                os.close(fd)
            return None
        os.close(stdin_read)  # the worker's ends: the server has its own copies now
        os.close(stdout_write)
        return ForkedWorker(open(stdin_write, "w"), open(stdout_read, errors="replace"), fork)

    def _read(self, control: socket.socket) -> None:
        """Give each fork its pid, then its return code; once the server is gone, the rest are dead."""
        with contextlib.suppress(OSError), control.makefile("r") as lines:
            for line in lines:
                kind, pid, *rest = line.split()
                with self._lock:
                    if kind == "pid" and self._unanswered:
                        fork = self._unanswered.popleft()
                        self._running[int(pid)] = fork
                        fork.started(int(pid))
                    elif kind == "exited" and int(pid) in self._running:
                        self._running.pop(int(pid)).ended(int(rest[0]))
        with self._lock:  # the server is gone: its workers killed themselves (each watches it)
            for fork in [*self._unanswered, *self._running.values()]:
                fork.ended(-signal.SIGKILL)
            self._unanswered.clear()
            self._running.clear()
            self._gone = True

    def _stop(self) -> None:
        control, process, reader = self._control, self._process, self._reader
        self._control = self._process = self._reader = None
        if control is not None:
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)
            control.close()
        if process is not None:
            if not self._asked:  # no worker of its to end; it may still be importing the build machinery
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGKILL)
            try:
                process.wait(timeout=SERVER_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if reader is not None:
            reader.join()
