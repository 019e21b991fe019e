"""The hook server: one interpreter per build, in the build's environment and sandbox, that forks each PEP 517 hook.

A hook used to start an interpreter of its own, which imported what pyproject_hooks' hook script
(``_in_process.py``) and every common backend import before the backend's own work began, and tore its
modules down at the end: about 12 ms of CPU per hook here, as much as a no-op backend's whole hook. The
server starts and imports once per build and forks a process per hook: a fresh process, as PEP 517 asks,
with those imports done and the backend not yet imported, that runs the hook script's own ``main``
exactly as ``python _in_process.py HOOK CONTROL_DIR`` would (same ``sys.argv``, ``sys.path``, working
folder and environment), and ends as an interpreter ends, less the teardown of its modules (``_end``).
Nothing a hook does reaches the next one.

Run in the build environment's interpreter (``build/hooks.py`` starts it), so it imports only the
standard library and takes its own folder off ``sys.path`` before any hook runs. In a sandbox (a PID
namespace of the build's own) it also stops, once each hook has ended, every process the hook left:
as before, when each hook's sandbox ended with it.

Protocol, on two pipes named by their descriptors (``serve``'s arguments)::

    reply     "ready", once the imports are done
    request   one line of JSON: {"argv": [HOOK, CONTROL_DIR], "cwd": PATH, "set": {NAME: VALUE}, "unset": [NAME]}:
              the hook's environment as changes to the one the server was started in (what the interpreter's
              start added, a ``.pth`` file's variable, stays, as in a hook started on its own)
    reply     the hook's exit status, negative for the signal that ended it
    end       end of file on the request pipe: the server exits
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

PRELOAD = ("ast", "base64", "collections", "contextlib", "copy", "datetime", "enum", "functools", "hashlib",
           "importlib.util", "inspect", "ipaddress", "itertools", "operator", "pathlib", "random", "re", "string",
           "tempfile", "threading", "typing", "urllib.parse", "warnings", "zipfile")
"""What setuptools, flit_core, hatchling, pdm-backend and poetry-core each import already in
``get_requires_for_build_wheel``, all five (the hook script's own imports come with it), so that each hook of
a build would import it again: imported once here instead (hashlib, zipfile and base64 alone, which every wheel
needs for its RECORD, cost a hook 7 ms of CPU). Modules with state of their own re-seed it in each fork
(``random``, ``tempfile``'s names), as Python's own fork handlers do."""


def serve(script: str, requests: int, replies: int, *, own_namespace: bool) -> NoReturn:
    """Serve hooks of pyproject_hooks' hook ``script`` until the request pipe ends, then exit as a hook does (its
    modules are not torn down: the server ran no hook); in a forked hook, end the process as the script would.
    ``own_namespace``: the server is in a PID namespace of its build's own, where every process but itself and
    the namespace's init belongs to the hook that just ended."""
    sys.path[0] = os.path.dirname(script)  # as for `python SCRIPT`; the script takes it off again
    hook_script = importlib.import_module(os.path.splitext(os.path.basename(script))[0])
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # a hook's collections then leave what it inherited alone (and its pages shared)
    os.write(replies, b"ready\n")
    with os.fdopen(requests, "rb") as pipe:
        for line in pipe:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                pipe.close()
                os.close(replies)
                _become(script, request)
                _end(_run(hook_script.main))
            _, status = os.waitpid(pid, 0)
            if own_namespace and os.getppid() == 1:  # the namespace's init above it: never the host's processes
                _stop_leftovers()
            os.write(replies, f"{os.waitstatus_to_exitcode(status)}\n".encode())
    _end(0)


def _become(script: str, request: dict[str, Any]) -> None:
    """Make this fork the process ``python SCRIPT HOOK CONTROL_DIR`` would have been, in ``request``'s folder
    and environment."""
    os.chdir(request["cwd"])
    for name in request["unset"]:
        os.environ.pop(name, None)
    os.environ.update(request["set"])
    sys.argv[:] = [script, *request["argv"]]
    sys.modules.pop(__name__, None)


def _run(main: Callable[[], object]) -> int:
    """Call ``main`` as the interpreter runs a script: its exit status, an uncaught exception reported."""
    try:
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - reported as the interpreter would, through sys.excepthook
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _end(code: int) -> NoReturn:
    """End a hook (or the server, once its hooks are done) as an interpreter ends, less the teardown of its
    modules: non-daemon threads joined,
    ``atexit`` handlers run, the standard streams flushed. The teardown of a fork frees every object it
    inherited, each page copied first: about 7 ms of CPU per hook here. Python's own multiprocessing ends
    its forked processes the same way (it runs no ``atexit`` handler at all)."""
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # closed or replaced by the backend
    os._exit(code)


def _stop_leftovers() -> None:
    """Kill every process of the namespace but this one and its init: what the hook that ended left behind."""
    keep = {1, os.getpid()}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in keep:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass  # gone already
