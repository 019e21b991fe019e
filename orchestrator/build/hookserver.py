"""The hook server: one interpreter per build, in the build's environment and sandbox, that forks each PEP 517 hook.

A hook used to start an interpreter of its own, which imported what pyproject_hooks' hook script
(``_in_process.py``) and every common backend import before the backend's own work began, and tore its
modules down at the end: about 12 ms of CPU per hook here, as much as a no-op backend's whole hook. The
server starts and imports once per build and forks a process per hook: a fresh process, as PEP 517 asks,
with those imports done and the backend not yet imported, that runs the hook script's own ``main``
exactly as ``python _in_process.py HOOK CONTROL_DIR`` would (same ``sys.argv``, ``sys.path``, working
folder and environment), and ends as an interpreter ends, less the teardown of its modules (``_end``).
Nothing a hook does reaches the next one. What the server imports is what the backend's hooks imported
before, of the standard library only (each hook says so as it ends: ``_Imports``; ``build/preload.py``).

Run in the build environment's interpreter (``build/hooks.py`` starts it), so it imports only the
standard library and takes its own folder off ``sys.path`` before any hook runs. In a sandbox (a PID
namespace of the build's own) it also stops, once each hook has ended, every process the hook left:
as before, when each hook's sandbox ended with it.

Protocol, on two pipes named by their descriptors (``serve``'s arguments)::

    reply     "ready", once the imports are done
    request   one line of JSON: {"argv": [HOOK, CONTROL_DIR], "cwd": PATH, "set": {NAME: VALUE}, "unset": [NAME]}:
              the hook's environment as changes to the one the server was started in (what the interpreter's
              start added, a ``.pth`` file's variable, stays, as in a hook started on its own)
    reply     "imported NAME ...", which the hook wrote (to the server, on a pipe of its own) as it ended, unless
              it was killed: the standard-library modules it imported, or found preloaded and imported by name
              (``build/preload.py`` learns them)
    reply     the hook's exit status, negative for the signal that ended it
    end       end of file on the request pipe: the server exits
"""

from __future__ import annotations

import atexit
import builtins
import gc
import importlib
import json
import os
import signal
import sys
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time: ``typing`` alone was a tenth of the server's start (about 2 ms)
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

PRELOAD = ("ast", "base64", "collections", "contextlib", "copy", "datetime", "enum", "functools", "hashlib",
           "importlib.util", "inspect", "ipaddress", "itertools", "operator", "pathlib", "random", "re", "string",
           "tempfile", "threading", "typing", "urllib.parse", "warnings", "zipfile")
"""What the server imports while nothing is learned of its backend's hooks (``build/preload.py``): what setuptools,
flit_core, hatchling, pdm-backend and poetry-core each import already in ``get_requires_for_build_wheel``, all
five (the hook script's own imports come with it), so that each hook of a build would import it again: imported
once here instead (hashlib, zipfile and base64 alone, which every wheel needs for its RECORD, cost a hook 7 ms
of CPU). Modules with state of their own re-seed it in each fork (``random``, ``tempfile``'s names), as
Python's own fork handlers do; so do those a backend's hooks imported, preloaded once learned."""


_NEVER = frozenset({"__main__", "this", "antigravity"})
"""Standard-library modules never preloaded: no module of its own, or one that acts as it is imported."""
_STDLIB = os.path.dirname(os.path.dirname(json.__file__)) + os.sep
_SITE = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
"""Where this interpreter's standard library lies, less the folders of installed packages inside it."""


def serve(script: str, requests: int, replies: int, *, own_namespace: bool,
          preload: Sequence[str] | None = None) -> NoReturn:
    """Serve hooks of pyproject_hooks' hook ``script`` until the request pipe ends, then exit as a hook does (its
    modules are not torn down: the server ran no hook); in a forked hook, end the process as the script would.
    ``own_namespace``: the server is in a PID namespace of its build's own, where every process but itself and
    the namespace's init belongs to the hook that just ended. ``preload``: the standard-library modules this
    build's backend's hooks imported before (``build/preload.py``); ``None``, nothing learned yet: :data:`PRELOAD`,
    and each hook notes every module it imports by name, preloaded or not, so that what it used is learned."""
    sys.path[0] = os.path.dirname(script)  # as for `python SCRIPT`; the script takes it off again
    hook_script = importlib.import_module(os.path.splitext(os.path.basename(script))[0])
    started = frozenset(sys.modules)  # what every hook has anyway: never worth a report
    if preload is None:
        for name in PRELOAD:
            importlib.import_module(name)
    else:
        for name in preload:
            if _may_preload(name):
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - learned under another Python: the hook imports what it needs
                    pass
    gc.freeze()  # a hook's collections then leave what it inherited alone (and its pages shared)
    gc.enable()  # the server's start ran without (``build/hooks.py``): each hook collects as any interpreter does
    os.write(replies, b"ready\n")
    with os.fdopen(requests, "rb") as pipe:
        for line in pipe:
            request = json.loads(line)
            # The hook's imports come on a pipe of its own, read once it has ended: whatever process it leaves
            # holding the pipe never holds up the worker's reading of the replies.
            report_read, report_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                pipe.close()
                os.close(replies)
                os.close(report_read)
                _become(script, request)
                imports = _Imports(report_write, started, by_name=preload is None)
                _end(_run(hook_script.main), report=imports.report)
            os.close(report_write)
            _, status = os.waitpid(pid, 0)
            if own_namespace and os.getppid() == 1:  # the namespace's init above it: never the host's processes
                _stop_leftovers()
            os.write(replies, _written(report_read) + f"{os.waitstatus_to_exitcode(status)}\n".encode())
    _end(0)


def _written(fd: int) -> bytes:
    """The whole lines a hook that ended wrote to ``fd`` (closed): nothing is waited for."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass  # a process the hook left holds the pipe: what is there is all there is
    finally:
        os.close(fd)
    written = b"".join(chunks)
    return written[:written.rfind(b"\n") + 1]


def _may_preload(name: str) -> bool:
    """Whether ``name`` (from a file a run wrote) names a module of this interpreter's standard library."""
    return (name not in _NEVER and all(part.isidentifier() for part in name.split("."))
            and name.partition(".")[0] in sys.stdlib_module_names)


def _is_standard(name: str, module: object) -> bool:
    """Whether ``module``, ``sys.modules[name]``, is of the standard library, found where the standard library
    lies (never one of the same name from the build's environment or the source)."""
    if name in _NEVER or name.partition(".")[0] not in sys.stdlib_module_names or not isinstance(module, ModuleType):
        return False
    origin = getattr(module.__spec__, "origin", None)
    if origin in ("built-in", "frozen"):
        return True
    return isinstance(origin, str) and origin.startswith(_STDLIB) and not any(site in origin for site in _SITE)


class _Imports:
    """What a hook imports: the modules it adds to ``sys.modules``, and with ``by_name`` every module it imports
    by name (an ``import`` statement), those it found already imported included."""

    def __init__(self, report: int, started: frozenset[str], *, by_name: bool) -> None:
        self._report, self._pipe, self._started = report, os.fstat(report).st_ino, started
        self._before = set(sys.modules)
        self._named: set[str] = set()
        if by_name:
            self._watch()

    def _watch(self) -> None:
        original, named = builtins.__import__, self._named

        def watched(name: str, globals: Any = None, locals: Any = None,  # noqa: A002 - __import__'s own names
                    fromlist: Sequence[str] | None = (), level: int = 0) -> ModuleType:
            module = original(name, globals, locals, fromlist, level)
            if level == 0:  # a relative import is of a package something imported by its absolute name
                named.add(name)
                named.update(f"{name}.{item}" for item in fromlist or ())  # submodules among them count
            return module

        builtins.__import__ = watched

    def report(self) -> None:
        """Write the standard-library modules the hook imported as a line on the report pipe (unless the hook
        closed it, or put another file under its number)."""
        names = [name for name, module in list(sys.modules.items())
                 if (name not in self._before or name in self._named) and name not in self._started
                 and _is_standard(name, module)]
        try:
            if os.fstat(self._report).st_ino == self._pipe:
                os.set_blocking(self._report, False)  # a full pipe cuts the line short (not read), never waits
                os.write(self._report, f"imported {' '.join(names)}\n".encode())
        except OSError:
            pass  # the hook closed it


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


def _end(code: int, *, report: Callable[[], None] | None = None) -> NoReturn:
    """End a hook (or the server, once its hooks are done) as an interpreter ends, less the teardown of its
    modules: non-daemon threads joined,
    ``atexit`` handlers run, the standard streams flushed. The teardown of a fork frees every object it
    inherited, each page copied first: about 7 ms of CPU per hook here. Python's own multiprocessing ends
    its forked processes the same way (it runs no ``atexit`` handler at all). ``report`` runs last (a hook's
    imports: what its ``atexit`` handlers imported counts too)."""
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
    if report is not None:
        report()
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
