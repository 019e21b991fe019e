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
    main()


if __name__ == "__main__":
    run()
