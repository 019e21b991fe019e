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
an explicit ``-j``, which makes both ignore the jobserver. The FIFO lives in the build's own
folder, which the sandbox binds writable; the ``make`` script and the ``ninja`` link name no
build's file (the script finds the split in ``MAKEFLAGS`` itself), so one folder of them serves
every build of a run: made once, under the run's folder, which the sandbox binds read-only
(a folder, a script and a link less for each build to make and the run to remove).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path

FIFO_NAME = "jobserver.fifo"
"""The build's FIFO of tokens, in its private folder (created by the run before admission)."""
BIN_NAME = "jobserver-bin"
"""How the folders put first on the hooks' PATH (the ``make`` script, ``ninja``) begin, in the run's folder."""

MAKE_MIN = (4, 4)
"""The first GNU make that reads ``--jobserver-auth=fifo:PATH``."""
NINJA_MIN = (1, 13)
"""The first ninja that is a jobserver client."""

OLD_MAKE_ERROR = b"invalid --jobserver-auth string 'fifo:"
"""What GNU make older than 4.4 says as it aborts on the FIFO form (the builder then builds again without it)."""

_JOBS = re.compile(r"-j\s*(\d+)")
"""The ``-jK`` of a ``MAKEFLAGS``: compiled as the module is imported (in the fork server), not in each build."""
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


@functools.cache
def jobserver_ninja() -> str | None:
    """The PyPI ``ninja`` installed beside this interpreter, if it is a jobserver client (found once a process:
    the fork server's answer is every build's)."""
    found = shutil.which("ninja", path=sysconfig.get_path("scripts"))
    if found is None:
        return None
    version = tool_version(found)
    return found if version is not None and version >= NINJA_MIN else None


def hook_environ(env: Mapping[str, str], *, fifo: Path, bin_root: Path,
                 set_by_run: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a hook that may take tokens from ``fifo`` (named :data:`FIFO_NAME`): ``env`` (what
    it gets without the jobserver, its ``MAKEFLAGS`` the run's ``-jK``) with the jobserver added, and, when it
    needs the ``make`` script or ``ninja``, a folder of them under ``bin_root`` (shared by the hooks that
    need the same: made by the first) first on its PATH. Of the split's caps, only those set by the run
    (in ``set_by_run``; all, if not given) are dropped: one the user set stays."""
    path = env.get("PATH", os.defpath)
    split = env.get("MAKEFLAGS", "")
    jobs = _JOBS.search(split)
    served = f"-j{jobs.group(1) if jobs else 1} --jobserver-auth=fifo:{fifo}"
    result = {name: value for name, value in env.items()
              if name not in _SPLIT_ONLY or (set_by_run is not None and name not in set_by_run)}
    result.update(MAKEFLAGS=served, CARGO_MAKEFLAGS=served)
    make = shutil.which("make", path=path)
    script = (_make_script(make)
              if make is not None and (tool_version(make) or (0,)) < MAKE_MIN else None)
    ninja, ours = shutil.which("ninja", path=path), jobserver_ninja()
    shadow = "NINJA" not in env and ours is not None and (ninja is None or (tool_version(ninja) or (0,)) < NINJA_MIN)
    if script is not None or shadow:
        files = {"make": script, "ninja": ours if shadow else None}
        bin_dir = _shared_folder(bin_root, {name: content for name, content in files.items() if content is not None})
        result["PATH"] = os.pathsep.join([str(bin_dir), path])
    return result


def _shared_folder(root: Path, files: Mapping[str, str]) -> Path:
    """The folder under ``root`` that holds ``files`` (``make``: the script; ``ninja``: the link's target),
    made whole and renamed into place by the first hook that needs it."""
    key = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    folder = root / f"{BIN_NAME}-{key}"
    if folder.is_dir():
        return folder
    draft = Path(tempfile.mkdtemp(dir=root, prefix=f".{BIN_NAME}-"))
    if "make" in files:
        (draft / "make").write_text(files["make"])
        (draft / "make").chmod(0o755)
    if "ninja" in files:
        (draft / "ninja").symlink_to(files["ninja"])
    try:
        os.rename(draft, folder)
    except OSError:  # another build's hook made it first
        shutil.rmtree(draft, ignore_errors=True)
        if not folder.is_dir():
            raise
    return folder


def _make_script(make: str) -> str:
    """A ``make`` that runs ``make`` (older than 4.4) with ``MAKEFLAGS`` back at the split, ``-jK``, when it is
    the jobserver's ``-jK --jobserver-auth=fifo:PATH`` as a run set it (``PATH`` the build's FIFO); any other
    ``MAKEFLAGS`` (a make above it) passes as it is."""
    return (
        "#!/bin/sh\n"
        "# orchestrate: this GNU make aborts on --jobserver-auth=fifo: it gets the build's -j share instead\n"
        'case "$MAKEFLAGS" in\n'
        f'-j[0-9]*" --jobserver-auth=fifo:"*/{FIFO_NAME}) MAKEFLAGS=${{MAKEFLAGS%% --jobserver-auth=fifo:*}}; '
        "export MAKEFLAGS;;\n"
        "esac\n"
        f"exec {shlex.quote(make)} \"$@\"\n"
    )
