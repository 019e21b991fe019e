"""Keeping the state folder bounded: at a run's start, what no run used for ``--prune-unused-after`` days goes.

The state folder keeps, across runs, prepared build environments with their resolutions and shared
bytecode (``--keep-build-envs``), learned preload lists, the download cache, the build history and the records
of compiled sources. Each entry of the folders notes when a run last used it (``lastuse``: its time, moved
forward at most once a day); each store prunes itself (``build/envprune.py``, ``download/cache.py``,
``predict.py``), never removing what a live run uses. The history keeps what predictions and reports read of the
packages still built (``policy/history_prune.py``). The compiler cache has its own cap
(``--compiler-cache-size``) and the run folders theirs (``report/runs.py``).

The check lists every entry of the stores (the download cache's two levels of folders) and reads the whole
history, so it runs at most once an hour per state folder (:data:`EVERY_S`, the time of ``<state>/.pruned``),
like the compiler cache's trim: a farm's thousands of small runs pay nothing for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.units import format_size

if TYPE_CHECKING:
    from orchestrator.build.envprune import PrunedEnvs
    from orchestrator.policy.history_prune import PrunedHistory

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 40
"""The default age: beyond a month, so that a job run monthly (or weekly, a run or two skipped) keeps what it
uses, while what a nightly farm stopped using (envs pinning last month's setuptools) goes within six weeks."""

EVERY_S = 3600.0
"""A state folder is checked at most this often."""

STAMP = ".pruned"
"""In the state folder: its time is when a run last checked it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pruned:
    """What one check of the state folder removed."""

    days: int
    envs: PrunedEnvs
    downloads: int = 0
    history: PrunedHistory
    compiled_sources: int = 0
    """Records of compiled sources (``predict.py``)."""
    bytes_freed: int = 0
    """By all of them."""

    def line(self) -> str | None:
        """``pruned 3 build environments, 2 bytecode entries and 41 downloads unused for 40 days (1.2 GiB)``;
        ``None`` when nothing was."""
        envs, history = self.envs, self.history
        parts = [f"{count} {noun if count == 1 else plural}" for count, noun, plural in (
            (envs.envs, "build environment", "build environments"),
            (envs.bytecode, "bytecode entry", "bytecode entries"),
            (envs.resolutions, "resolution", "resolutions"),
            (envs.preload_lists, "preload list", "preload lists"),
            (self.downloads, "download", "downloads"),
            (history.builds, "build in the history", "builds in the history"),
            (history.runs, "run in the history", "runs in the history"),
            (self.compiled_sources, "compiled-sources record", "compiled-sources records"),
        ) if count]
        if not parts:
            return None
        listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        return f"pruned {listed} unused for {self.days} days ({format_size(self.bytes_freed)})"


def prune_state(state: Path, *, days: int | None, downloads: Path | None, history: Path | None,
                now: float) -> Pruned | None:
    """Prune ``state`` (the download cache ``downloads`` and the history file ``history``, wherever they are, and the
    records of compiled sources beside it) of what no run used for ``days``; ``None`` when ``days`` is ``None``
    (never), a run checked in the last :data:`EVERY_S` seconds, there is no such folder, or it cannot be written
    (a warning)."""
    if days is None or not state.is_dir():
        return None
    stamp = state / STAMP
    with contextlib.suppress(FileNotFoundError):
        if 0 <= now - stamp.stat().st_mtime < EVERY_S:
            return None
    from orchestrator.build import envprune  # only when the check is due
    from orchestrator.download import cache
    from orchestrator.policy.history_prune import PrunedHistory

    unused_since = now - days * 86400.0
    try:
        stamp.touch()
        os.utime(stamp, (now, now))
        envs = envprune.prune(state / "build-envs", unused_since=unused_since)
        fetched, fetched_bytes = cache.prune(downloads, unused_since=unused_since) if downloads else (0, 0)
        kept, records, records_bytes = _prune_history(history, unused_since) if history else (PrunedHistory(), 0, 0)
    except OSError as exc:  # housekeeping: never a reason to fail a run
        logger.warning("cannot prune %s: %s", state, exc)
        return None
    return Pruned(days=days, envs=envs, downloads=fetched, history=kept, compiled_sources=records,
                  bytes_freed=envs.bytes_freed + fetched_bytes + kept.bytes_freed + records_bytes)


def _prune_history(path: Path, unused_since: float) -> tuple[PrunedHistory, int, int]:
    """Prune the history file ``path``, if there is one, and the records beside it: what went of the history, the
    records removed and their bytes."""
    from orchestrator.policy.history import History, PrunedHistory
    from orchestrator.predict import RECORDS_FOLDER, prune_records

    records, records_bytes = prune_records(path.parent / RECORDS_FOLDER, unused_since=unused_since)
    if not path.is_file():
        return PrunedHistory(), records, records_bytes
    with History(path) as history:
        return history.prune(unused_since=unused_since), records, records_bytes
