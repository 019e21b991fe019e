"""A PATH without a tool, as on a machine where it is not installed (``bwrap``, say), all else found as before."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def path_without(tool: str) -> Iterator[str]:
    """This process's PATH with each folder holding ``tool`` replaced by a folder of links to everything else
    in it. The copies live in ``/var/tmp``, which no sandbox hides (as ``/tmp`` and the home are), so that
    the build tools stay on PATH inside one."""
    folder = Path(tempfile.mkdtemp(prefix="orchestrate-path-", dir="/var/tmp"))
    try:
        entries = []
        for index, entry in enumerate(os.environ.get("PATH", os.defpath).split(os.pathsep)):
            if not (Path(entry) / tool).exists():
                entries.append(entry)
                continue
            copy = folder / f"bin{index}"
            copy.mkdir()
            for path in Path(entry).iterdir():
                if path.name != tool:
                    (copy / path.name).symlink_to(path)
            entries.append(str(copy))
        yield os.pathsep.join(entries)
    finally:
        shutil.rmtree(folder)
