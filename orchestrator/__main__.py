"""``python -m orchestrator`` and the ``orchestrate`` script.

The command's modules take a few hundred milliseconds to import. A Ctrl-C then would otherwise end in a
traceback, before :mod:`orchestrator.cli.app` (which maps signals to exit codes) is loaded; or, raised inside
a callback (importlib's own weakref callbacks run as modules load), be reported as ignored and lost, leaving
the import lock held: a later import of any thread then waits forever. So SIGINT is held until they have
loaded, and delivered then.
"""

from __future__ import annotations

import sys

try:
    import signal
    from collections.abc import Callable
except KeyboardInterrupt:  # even this early: the same line and exit as while the command loads
    print("interrupted: nothing was started", file=sys.stderr)
    sys.exit(130)


def _load() -> Callable[[], object]:
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        from orchestrator.cli import main
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a Ctrl-C that came meanwhile is raised now
    return main


def run() -> None:
    """Load the command and run it; interrupted while loading, exit 130 (``EXIT_SIGINT``) with one line."""
    try:
        main = _load()
    except KeyboardInterrupt:
        print("interrupted: nothing was started", file=sys.stderr)
        sys.exit(130)
    try:
        main()
    finally:
        # CPython (3.8 on) remembers a KeyboardInterrupt that left an exec() or eval() of a string (dataclasses and
        # typing.NamedTuple make methods so, as modules load) even once the command has handled it, and then ends
        # `python -m` by SIGINT whatever its exit code (the script's exit takes another path); an exec() of a string
        # that completes forgets it.
        exec("")


if __name__ == "__main__":
    run()
