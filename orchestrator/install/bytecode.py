"""Bytecode compilers: long-lived processes of the target's own interpreter, shared by every install thread.

The target's own interpreter compiles (``_compile_server.py``, run by path):
its magic number and cache tag, whatever Python runs this module::

    install threads                      feeder threads (one per usable CPU)
    write .py files; every ~32 KB:       take the next chunk
    Chunk(paths, Future) --> queue -->   JSON line {hash, paths} --> stdin  compiler process
                                                                            (target python -I -S,
    finalize: wait for the wheel's       set the Future's result <-- stdout  writes the .pyc files)
    Futures, list the .pyc in RECORD     [source, pyc, hash, size] per file that compiled

Chunks of every wheel being installed share one queue, so all compilers stay
busy while any install has files left, and compiling overlaps writing even
with one install at a time. The compilers start on first use and live until
:meth:`Compilers.close`, their owner's collection or interpreter exit; one
that dies fails the wheel whose chunk it had (that wheel waits for all its
chunks, then rolls back) and is replaced. This replaced one interpreter per
wheel, whose start-up cost more than the compiling, and which kept one core
idle when one wheel was installed at a time.

A wheel past its timeout stops its own chunks (:meth:`Compilers.stop`): those
not yet started are withdrawn, the compilers working on the others are killed
(and replaced for the next chunk); other wheels' chunks are not touched.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import weakref
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InstallError

__all__ = ["COMPILE_SERVER", "Compiled", "Compilers"]

COMPILE_SERVER = Path(__file__).with_name("_compile_server.py")
"""The compiler's program, run by path by the target's interpreter."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """One ``.py`` file a compiler wrote bytecode for."""

    source: str
    pyc: str
    digest: str
    """urlsafe base64 of the ``.pyc`` hash, as RECORD writes it."""
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chunk:
    """Files of one wheel to compile, and where their answer goes."""

    paths: list[str]
    hash_algorithm: str
    future: Future[list[Compiled]]


class Compilers:
    """Bytecode compilers of one interpreter; :meth:`submit` is thread-safe.

    Installs submit chunks of files to one queue; one feeder thread per
    process takes the next chunk, sends it and waits for the answer, so every
    process stays busy while any install has files to compile. A process that
    dies fails the chunk it had (its wheel rolls back) and is started again
    for the next; so does one killed by :meth:`stop`, for a wheel past its timeout.
    """

    def __init__(self, python: str, *, max_processes: int) -> None:
        self.python = python
        self.max_processes = max_processes
        self._chunks: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
        self._feeders: list[threading.Thread] = []
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._working = _Working()
        self._start_lock = threading.Lock()
        # Feeders hold no reference to self, so an installer dropped without
        # close() is still collected, and this stops them then or at exit.
        self._finalizer = weakref.finalize(self, _stop_feeders, self._chunks, self._feeders, self._processes)

    def submit(self, paths: list[str], hash_algorithm: str) -> Future[list[Compiled]]:
        """Compile ``paths``; the future holds the files that compiled, or an :class:`InstallError`."""
        with self._start_lock:
            if not self._finalizer.alive:
                raise InstallError("compilers were closed; create a new WheelInstaller")
            while len(self._feeders) < self.max_processes:
                feeder = threading.Thread(
                    target=_feed,
                    args=(self.python, self._chunks, self._processes, self._working),
                    name=f"compile-{len(self._feeders)}",
                    daemon=True,  # never holds up interpreter exit; its process sees EOF then
                )
                feeder.start()
                self._feeders.append(feeder)
        future: Future[list[Compiled]] = Future()
        self._chunks.put(_Chunk(paths=paths, hash_algorithm=hash_algorithm, future=future))
        return future

    def stop(self, futures: Iterable[Future[list[Compiled]]]) -> None:
        """End these chunks now: withdraw those not started, kill the compilers of the others.

        Each future ends with an :class:`InstallError` soon after; other
        wheels' chunks are not touched.
        """
        self._working.stop(futures)

    def close(self) -> None:
        """Let the feeders finish their chunks, then stop them and their processes."""
        self._finalizer()


class _Working:
    """Which compiler process has which chunk, so that a wheel past its deadline stops its own chunks only.

    A chunk's future is settled under the same lock as :meth:`stop` looks, and
    a process is killed only while registered (so not yet reaped, its process
    id not reused).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: dict[Future[list[Compiled]], subprocess.Popen[bytes]] = {}
        self._stopped: set[Future[list[Compiled]]] = set()

    def stop(self, futures: Iterable[Future[list[Compiled]]]) -> None:
        with self._lock:
            for future in futures:
                if future.cancel() or future.done():
                    continue
                self._stopped.add(future)  # started: its feeder sees this
                process = self._processes.get(future)
                if process is not None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)  # it leads its own session
                    except ProcessLookupError:
                        pass

    def begin(self, future: Future[list[Compiled]], process: subprocess.Popen[bytes]) -> bool:
        """Register ``process`` as compiling ``future``'s chunk; False if the chunk was stopped already."""
        with self._lock:
            if future in self._stopped:
                return False
            self._processes[future] = process
            return True

    def release(self, future: Future[list[Compiled]]) -> None:
        """The process has answered or died: it is no longer ``stop``'s to kill."""
        with self._lock:
            self._processes.pop(future, None)

    def settle(self, future: Future[list[Compiled]], result: list[Compiled] | None, error: BaseException | None,
               *, python: str) -> bool:
        """Set the chunk's outcome; True (and an error saying so) if it was stopped."""
        with self._lock:
            stopped = future in self._stopped
            self._stopped.discard(future)
            if stopped:
                future.set_exception(InstallError(f"compiling bytecode with {python} was stopped: its wheel timed out"))
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or [])
            return stopped


def _feed(python: str, chunks: queue.SimpleQueue[_Chunk | None], processes: set[subprocess.Popen[bytes]],
          working: _Working) -> None:
    """One feeder thread: its own compiler process, chunk after chunk, until ``None``."""
    process: subprocess.Popen[bytes] | None = None
    try:
        while True:
            chunk = chunks.get()
            if chunk is None:
                break
            if chunk.future.set_running_or_notify_cancel():
                process = _compile_chunk(python, chunk, process, processes, working)
            # Holding a finished chunk while waiting would keep its future's error, and
            # through the error's traceback the installer, alive.
            del chunk
    finally:
        if process is not None:
            processes.discard(process)
            _stop_process(process)


def _compile_chunk(
    python: str,
    chunk: _Chunk,
    process: subprocess.Popen[bytes] | None,
    processes: set[subprocess.Popen[bytes]],
    working: _Working,
) -> subprocess.Popen[bytes] | None:
    """Settle ``chunk``'s future with ``process`` (started if ``None``); the process for the next chunk."""
    if process is None:
        try:
            process = subprocess.Popen(
                [python, "-I", "-S", os.fspath(COMPILE_SERVER), str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the installer, which stops them
            )
        except OSError as exc:
            message = f"compiling bytecode with {python} failed: it did not start ({exc}); retry without compiling"
            working.settle(chunk.future, None, InstallError(message), python=python)
            return None
        processes.add(process)
    if not working.begin(chunk.future, process):
        working.settle(chunk.future, None, None, python=python)
        return process
    result: list[Compiled] | None = None
    error: BaseException | None = None
    alive = True
    try:
        result = _ask(python, process, chunk)
    except InstallError as exc:  # it answered with an error: still in step
        error = exc
    except BaseException as exc:  # noqa: BLE001 - the install thread waiting on the future reports it
        error, alive = exc, False
    working.release(chunk.future)
    if not alive:
        processes.discard(process)
        _stop_process(process)
        if isinstance(error, _CompilerDied):
            error = InstallError(
                f"compiling bytecode with {python} failed (exit {process.returncode}); retry without compiling"
            )
    if working.settle(chunk.future, result, error, python=python) and alive:
        processes.discard(process)  # killed, though it may have answered first
        _stop_process(process)
        alive = False
    return process if alive else None


class _CompilerDied(Exception):
    """A compiler process exited or closed its output mid-request."""


def _ask(python: str, process: subprocess.Popen[bytes], chunk: _Chunk) -> list[Compiled]:
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(json.dumps({"hash": chunk.hash_algorithm, "paths": chunk.paths}).encode() + b"\n")
        process.stdin.flush()
    except BrokenPipeError:
        raise _CompilerDied from None
    answer = process.stdout.readline()
    if not answer.endswith(b"\n"):
        raise _CompilerDied
    reply = json.loads(answer)
    if "error" in reply:
        raise InstallError(f"compiling bytecode with {python} failed ({reply['error']}); retry without compiling")
    return [Compiled(source=source, pyc=pyc, digest=digest, size=size)
            for source, pyc, digest, size in reply["compiled"]]


def _stop_feeders(
    chunks: queue.SimpleQueue[_Chunk | None], feeders: list[threading.Thread], processes: set[subprocess.Popen[bytes]]
) -> None:
    for _ in feeders:
        chunks.put(None)
    for feeder in feeders:
        feeder.join(timeout=5)
    for process in list(processes):  # a feeder stuck on a huge file
        _stop_process(process)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Close its pipes (it exits at end of input); kill it if it has not exited within a second."""
    for pipe in (process.stdin, process.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass
    try:
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
