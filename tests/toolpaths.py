"""A PATH without a tool, as on a machine where it is not installed (``bwrap``, say), all else found as before."""

from __future__ import annotations

import os
from pathlib import Path


def path_without(tool: str, folder: Path) -> str:
    """This process's PATH with each folder holding ``tool`` replaced by a copy, in ``folder``, of links to
    everything else in it."""
    entries = []
    for index, entry in enumerate(os.environ.get("PATH", os.defpath).split(os.pathsep)):
        if not (Path(entry) / tool).exists():
            entries.append(entry)
            continue
        copy = folder / f"bin{index}"
        copy.mkdir(parents=True, exist_ok=True)
        for path in Path(entry).iterdir():
            if path.name != tool and not (copy / path.name).exists():
                (copy / path.name).symlink_to(path)
        entries.append(str(copy))
    return os.pathsep.join(entries)
