"""The fork server: one process per run that imports the build machinery once and forks a worker per build.

A fresh interpreter per build spent about 0.1 CPU-second importing ``build``, ``packaging``
and the rest before it could start: most of what a small build costs. The server imports
them once; each worker is a fork of it, ready at once, and then is exactly the process
``worker.main`` always was: a session of its own (so stopping a build kills its whole tree
and group, never the server), its own stdin and stdout pipes, CPU and memory counted from
zero. A build that crashes or is killed takes only its own fork with it.

Protocol on the control socket (``executors/forks.py`` speaks the other side; the standard
library's forkserver does not fit, as it runs pickled functions, not a worker speaking on
pipes of its own, and reports no exit statuses)::

    request   one byte, with two file descriptors attached (SCM_RIGHTS): the worker's stdin
              (read end) and stdout (write end; its stderr too)
    replies   "pid PID" once forked; "exited PID RETURNCODE" once reaped (negative: a signal)
    end       end of file on the socket (the run is over, or gone): the server kills the
              process group of every worker still running, and exits

A worker watches its parent, the server, as it always watched the run (``worker.main``);
the server dies with the run's socket, so a killed run still leaves no build behind.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import socket
import sys
import traceback


def preload() -> None:
    """Import what every build imports, find uv, ask the jobserver's tools their versions, name the interpreter
    (``envcache.interpreter_id``) and resolve the paths every sandbox binds, once; a failure is reported by each
    worker, as before."""
    import orchestrator.build.worker  # noqa: F401 - what each fork runs

    with contextlib.suppress(Exception):
        import encodings.cp437  # noqa: F401 - what zipfile decodes a wheel's member names with
        import gzip  # noqa: F401 - what tarfile imports as it opens a .tar.gz sdist
        import importlib.readers  # noqa: F401 - what importlib.resources imports as pyproject_hooks finds its script
        import importlib.resources.readers  # noqa: F401 - what pyproject_hooks imports to find its hook script

        import installer.sources  # noqa: F401 - what check_wheel imports to check the built wheel's RECORD
        import installer.utils
        import psutil  # noqa: F401 - what the worker kills an unsandboxed build's leftovers with

        installer.utils.canonicalize_name("a")  # its pattern compiled once here, not in every build's first check

        import orchestrator.build.builder  # noqa: F401
        from orchestrator.build.envcache import interpreter_id
        from orchestrator.build.envs import find_uv
        from orchestrator.build.jobserver import ask_versions
        from orchestrator.build.sandbox import resolve_once

        ask_versions()
        resolve_once()
        find_uv()
        interpreter_id()
        _compile_hook_code()
    # What the server imported lives as long as it does: a worker's collections then never walk it, and never
    # write to its pages, which stay shared with the server instead of each fork copying them.
    gc.freeze()


def _compile_hook_code() -> None:
    """Write the bytecode of the hook server and of pyproject_hooks' hook script where it is missing or stale
    (an install that compiled none, ``uv``'s default, or a changed checkout), unless the user said not to
    (``PYTHONDONTWRITEBYTECODE``). Every build's hook server imports both, in a sandbox that makes their folders
    read-only: without it, each compiled them again, about 4 ms of CPU a build."""
    if sys.dont_write_bytecode:
        return
    import compileall
    import importlib.util

    from orchestrator.build.hooks import HOOK_SERVER

    script = importlib.util.find_spec("pyproject_hooks._in_process._in_process")
    for path in (HOOK_SERVER, script.origin if script is not None else None):
        if path is not None:
            compileall.compile_file(path, quiet=2)  # skips a fresh one; an unwritable folder is left as it is


def serve(control_fd: int) -> int:
    """Fork a worker per request on the socket ``control_fd`` until it closes; see the module docstring."""
    preload()
    control = socket.socket(fileno=control_fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake select() through the fd
    workers: set[int] = set()
    try:
        while True:
            readable, _, _ = select.select([control.fileno(), wake_read], [], [])
            if wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
                _reap(workers, control)
            if control.fileno() in readable:
                data, fds, _, _ = socket.recv_fds(control, 16, 2)
                if not data:
                    return 0
                pid = _fork_worker(fds, close=[control.fileno(), wake_read, wake_write])
                for fd in fds:
                    os.close(fd)
                workers.add(pid)
                control.sendall(f"pid {pid}\n".encode())
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the run is gone
    finally:
        from orchestrator.resources import kill_tree

        for pid in workers:  # each leads its own group; its tree also holds the daemons it adopted, out of the group
            kill_tree(pid, grace=0)


def _reap(workers: set[int], control: socket.socket) -> None:
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        workers.discard(pid)
        control.sendall(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


def _fork_worker(fds: list[int], *, close: list[int]) -> int:
    """Fork a worker on the pipes ``fds`` (stdin, stdout); the child never returns."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        os.setsid()
        stdin, stdout = fds
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stdout, 2)
        os.close(stdin)
        os.close(stdout)
        from orchestrator.build import worker

        code = worker.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:  # noqa: BLE001 - the exit status and the log tell; nothing may unwind into the server
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
