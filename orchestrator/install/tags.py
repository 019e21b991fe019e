"""The wheel tags the target's interpreter supports, best first, as ``packaging.tags`` computes them inside it.

Why inside the target: which tags an interpreter supports depends on its
version, implementation and ABI flags and on the platform as it sees it (the
glibc version behind ``manylinux_2_28``, musl, the macOS version), which only
that interpreter can tell. ``packaging.tags.sys_tags()`` is the list pip ranks
wheels by (it vendors packaging), so the same list, from the same code, is asked
of the target here.

The target may be another Python without ``packaging``, so our own copy is
loaded into it from its folder, by file location: nothing else of our
environment goes on the target's ``sys.path``, and ``-I`` keeps the target's
environment variables and user site out. A target too old for our packaging
(or broken) is one clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import packaging

from orchestrator.errors import UsageError

__all__ = ["supported_tags"]

_PACKAGING = Path(packaging.__file__).parent

# Standard library only until our packaging is loaded: it runs in the target.
_SNIPPET = """\
import importlib.util, json, sys
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    "packaging", folder + "/__init__.py", submodule_search_locations=[folder])
module = importlib.util.module_from_spec(spec)
sys.modules["packaging"] = module
spec.loader.exec_module(module)
from packaging import tags
print(json.dumps([str(tag) for tag in tags.sys_tags()]))
"""


def supported_tags(python: Path, *, timeout: float = 60.0) -> tuple[str, ...]:
    """The tags ``python`` supports (``cp311-cp311-manylinux_2_35_x86_64``, ...), best first.

    :raises UsageError: the interpreter cannot run the probe; names it and what to do instead.
    """
    try:
        completed = subprocess.run(
            [os.fspath(python), "-I", "-c", _SNIPPET, os.fspath(_PACKAGING)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        tags = json.loads(completed.stdout) if completed.returncode == 0 else None
        if not isinstance(tags, list) or not tags or not all(isinstance(tag, str) for tag in tags):
            last = completed.stderr.strip().splitlines()[-1:] or [f"exit code {completed.returncode}"]
            raise ValueError(last[0])
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise UsageError(
            f"{python}: cannot tell which wheel tags it supports: running packaging.tags in it failed ({exc});"
            " give the wheels to install by path instead of -r"
        ) from None
    return tuple(tags)
