"""``python -m orchestrator`` and the ``orchestrate`` script.

The command's modules take a few hundred milliseconds to import; a Ctrl-C then would otherwise end in a
traceback, before :mod:`orchestrator.cli.app` (which maps signals to exit codes) is loaded.
"""

from __future__ import annotations

import sys


def run() -> None:
    """Load the command and run it; interrupted while loading, exit 130 (``EXIT_SIGINT``) with one line."""
    try:
        from orchestrator.cli import main
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
