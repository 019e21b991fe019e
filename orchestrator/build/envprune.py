"""Pruning the kept build environments' folder (``<state>/build-envs``): the prepared envs, their kept
resolutions and shared bytecode, and the learned preload lists that no run used for the state folder's age.

Every entry of the three keyed stores (``envs/``, ``envs/resolutions/``, ``envs/bytecode/``) was made
under its key's lock file (``storelocks``), so the pruner goes through the lock files: for each key whose
entry (a prepared env's published link, a resolution, a bytecode folder) was last used
(``lastuse``) before the cut, or whose lock is that old with no entry (what a killed preparation
left), it *tries* the lock exclusive. A key whose lock another process holds is in use (a build holds
its env's lock shared for as long as it runs, a preparation or a compile holds it exclusive) and is
skipped, whatever its age; so is one used again meanwhile. Otherwise the entry is unpublished first (its
link unlinked, its folder renamed aside), then its folders removed, then its lock file: a prune killed
half way leaves only what no run would use, folders the next preparation of that key (or the next
prune) removes. A bytecode entry's files are hard links in the envs that hold them: removing the entry
breaks no env (and frees nothing until those envs go too).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import lastuse
from orchestrator.build import preload, storelocks
from orchestrator.build.envcache import remove_tree


@dataclass(frozen=True, slots=True, kw_only=True)
class PrunedEnvs:
    """What :func:`prune` removed."""

    envs: int = 0
    """Prepared environments."""
    bytecode: int = 0
    """Shared bytecode entries (a distribution's modules)."""
    resolutions: int = 0
    """Kept resolutions (of local ``--find-links`` folders)."""
    preload_lists: int = 0
    bytes_freed: int = 0


def prune(root: Path, *, unused_since: float) -> PrunedEnvs:
    """Remove what no run used since ``unused_since`` (a time) under ``root`` (``<state>/build-envs``)."""
    store = root / "envs"
    envs, env_bytes = _prune_keyed(store, unused_since, entry=lambda key: store / key, unpublish=_unlink_link)
    bytecode, bytecode_bytes = _prune_keyed(store / "bytecode", unused_since,
                                            entry=lambda key: store / "bytecode" / key, unpublish=_rename_aside)
    resolutions, resolution_bytes = _prune_keyed(store / "resolutions", unused_since,
                                                 entry=lambda key: store / "resolutions" / f"{key}.txt",
                                                 unpublish=_unlink_file)
    lists, list_bytes = lastuse.prune_files(root / preload.FOLDER, unused_since)
    return PrunedEnvs(envs=envs, bytecode=bytecode, resolutions=resolutions, preload_lists=lists,
                      bytes_freed=env_bytes + bytecode_bytes + resolution_bytes + list_bytes)


def _prune_keyed(folder: Path, unused_since: float, *, entry: Callable[[str], Path],
                 unpublish: Callable[[Path], int]) -> tuple[int, int]:
    """Prune the keyed store ``folder`` (see the module docstring): the entries removed, the bytes freed."""
    removed = freed = 0
    try:
        locks = [name for name in os.listdir(folder) if name.endswith(".lock")]
    except OSError:
        return 0, 0
    for name in locks:
        key, lock = name.removesuffix(".lock"), folder / name
        if not _unused(entry(key), lock, unused_since):
            continue
        held = storelocks.try_exclusive(lock)
        if held is None:
            continue  # in use: an env a build runs in, a preparation, a compile
        try:
            if not _unused(entry(key), lock, unused_since):
                continue  # used as we looked
            with contextlib.suppress(FileNotFoundError):
                freed += unpublish(entry(key))
                removed += 1
            for leftover in [*folder.glob(f"{key}-*"), *folder.glob(f".{key}.*")]:
                freed += lastuse.bytes_freed(leftover)
                if leftover.is_dir() and not leftover.is_symlink():
                    remove_tree(leftover)
                else:
                    leftover.unlink(missing_ok=True)
            lock.unlink()  # while held: a process waiting for it takes the new one (storelocks)
        finally:
            os.close(held)
    return removed, freed


def _unused(entry: Path, lock: Path, unused_since: float) -> bool:
    """Whether the entry was last used before ``unused_since``; without one, whether its lock is that old."""
    try:
        return os.lstat(entry).st_mtime < unused_since
    except FileNotFoundError:
        pass
    try:
        return os.lstat(lock).st_mtime < unused_since
    except FileNotFoundError:
        return False


def _unlink_link(link: Path) -> int:
    """Unpublish a prepared env (its folder, ``<key>-<random>``, then goes as a leftover of its key)."""
    link.unlink()
    return 0


def _rename_aside(folder: Path) -> int:
    """Unpublish a bytecode entry: renamed to a leftover's name of its key, removed with them."""
    folder.rename(folder.with_name(f"{folder.name}-pruned"))
    return 0


def _unlink_file(path: Path) -> int:
    """Unpublish a resolution (a reader that misses it resolves again): the bytes freed."""
    size = lastuse.bytes_freed(path)
    path.unlink()
    return size
