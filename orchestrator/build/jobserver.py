"""A build's side of the run's jobserver: which of its tools can take tokens, and the environment that lets them.

The run lends each build tokens through a FIFO of its own in the build's private folder
(``executors/tokens.py`` owns the pool, this module what a build's hooks see). GNU make
>= 4.4, ninja >= 1.13 and cargo (the ``jobserver`` crate) read ``--jobserver-auth=fifo:PATH``
from ``MAKEFLAGS``; GNU make 4.3 and older abort on that form ("invalid --jobserver-auth
string"), and ninja before 1.13 ignores it. So, just before ``build_wheel``, the worker looks
at the tools on the hooks' PATH:

* ``make``: none, or >= 4.4, reads the FIFO. An older one (Debian 12's 4.3) must never see it:
  a ``make`` script first on the hooks' PATH runs it with ``MAKEFLAGS`` as the build had it
  without the jobserver (``-jK``, today's split), unless a make above it changed ``MAKEFLAGS``
  (a make 4.3 of the build passing its own pipe jobserver to a sub-make, which is kept).
* ``ninja``: the first on PATH is what meson-python, CMake and scikit-build-core run. One older
  than 1.13 (Debian 12's 1.11) is shadowed by the PyPI ``ninja`` this tool depends on, a
  symlink next to the ``make`` script; meson-python takes a ``ninja`` >= 1.8.2 from PATH, so it
  runs this one. A ``NINJA`` the user set is left alone.

With the jobserver, ``MAKEFLAGS`` and ``CARGO_MAKEFLAGS`` are ``-jK --jobserver-auth=fifo:PATH``:
a tool that honours ``-jK`` over the FIFO still gets today's share, never less, and
``CMAKE_BUILD_PARALLEL_LEVEL`` is dropped, since ``cmake --build`` passes it to ninja and make as
an explicit ``-j``, which makes both ignore the jobserver. Both files live in the build's own
folder, which the sandbox binds writable: the FIFO and the scripts are reachable inside it.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
from collections.abc import Mapping
from pathlib import Path

FIFO_NAME = "jobserver.fifo"
"""The build's FIFO of tokens, in its private folder (created by the run before admission)."""
BIN_NAME = "jobserver-bin"
"""The folder, in the build's private folder, put first on the hooks' PATH (the ``make`` script, ``ninja``)."""

MAKE_MIN = (4, 4)
"""The first GNU make that reads ``--jobserver-auth=fifo:PATH``."""
NINJA_MIN = (1, 13)
"""The first ninja that is a jobserver client."""

OLD_MAKE_ERROR = b"invalid --jobserver-auth string 'fifo:"
"""What GNU make older than 4.4 says as it aborts on the FIFO form (the builder then builds again without it)."""

_SPLIT_ONLY = ("CMAKE_BUILD_PARALLEL_LEVEL",)
"""Parallelism caps a tool turns into an explicit ``-j`` (which overrides the jobserver): not set with it."""


@functools.cache
def tool_version(executable: str) -> tuple[int, ...] | None:
    """The version ``executable --version`` prints first (``GNU Make 4.3``, ``1.13.2``), or ``None``."""
    try:
        done = subprocess.run([executable, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout)
    return tuple(int(part) for part in found.groups() if part is not None) if found else None


def ask_versions() -> None:
    """Ask the ``make`` and ``ninja`` on PATH, and ours, their versions now: a fork server does, once per run,
    so that the builds it forks (whose hooks find the same tools) start with the answers."""
    for name in ("make", "ninja"):
        found = shutil.which(name)
        if found is not None:
            tool_version(found)
    jobserver_ninja()


def jobserver_ninja() -> str | None:
    """The PyPI ``ninja`` installed beside this interpreter, if it is a jobserver client."""
    found = shutil.which("ninja", path=sysconfig.get_path("scripts"))
    if found is None:
        return None
    version = tool_version(found)
    return found if version is not None and version >= NINJA_MIN else None


def hook_environ(env: Mapping[str, str], *, fifo: Path, bin_dir: Path,
                 set_by_run: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a hook that may take tokens from ``fifo``: ``env`` (what it gets without the
    jobserver, its ``MAKEFLAGS`` today's ``-jK``) with the jobserver added, and ``bin_dir`` made and put
    first on its PATH when it needs the ``make`` script or ``ninja``. Of the split's caps, only those set
    by the run (in ``set_by_run``; all, if not given) are dropped: one the user set stays."""
    path = env.get("PATH", os.defpath)
    split = env.get("MAKEFLAGS", "")
    jobs = re.search(r"-j\s*(\d+)", split)
    served = f"-j{jobs.group(1) if jobs else 1} --jobserver-auth=fifo:{fifo}"
    result = {name: value for name, value in env.items()
              if name not in _SPLIT_ONLY or (set_by_run is not None and name not in set_by_run)}
    result.update(MAKEFLAGS=served, CARGO_MAKEFLAGS=served)
    make = shutil.which("make", path=path)
    script = (_make_script(make, served=served, split=split)
              if make is not None and (tool_version(make) or (0,)) < MAKE_MIN else None)
    ninja, ours = shutil.which("ninja", path=path), jobserver_ninja()
    shadow = "NINJA" not in env and ours is not None and (ninja is None or (tool_version(ninja) or (0,)) < NINJA_MIN)
    if script is not None or shadow:
        bin_dir.mkdir(exist_ok=True)
        # Made for the build's first hook that got here; the next ones find them.
        if script is not None and not os.path.lexists(bin_dir / "make"):
            (bin_dir / "make").write_text(script)
            (bin_dir / "make").chmod(0o755)
        if shadow and ours is not None and not os.path.lexists(bin_dir / "ninja"):
            (bin_dir / "ninja").symlink_to(ours)
        result["PATH"] = os.pathsep.join([str(bin_dir), path])
    return result


def _make_script(make: str, *, served: str, split: str) -> str:
    """A ``make`` that runs ``make`` (older than 4.4) with ``MAKEFLAGS`` back at ``split`` when it is the
    jobserver's ``served`` as this run set it; any other ``MAKEFLAGS`` (a make above it) passes as it is."""
    return (
        "#!/bin/sh\n"
        "# orchestrate: this GNU make aborts on --jobserver-auth=fifo: it gets the build's -j share instead\n"
        f"if [ \"$MAKEFLAGS\" = {shlex.quote(served)} ]; then MAKEFLAGS={shlex.quote(split)}; export MAKEFLAGS; fi\n"
        f"exec {shlex.quote(make)} \"$@\"\n"
    )
