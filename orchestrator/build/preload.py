"""What a build's hook server preloads: the standard-library modules its backend's hooks imported last time.

The hook server (``build/hookserver.py``) imports, before it forks each hook, what those hooks
would each import again. A fixed list fits no backend exactly: the five common ones share about
60 modules, a backend that needs few of them pays their import at every build's start, and
setuptools imports many more. So each hook reports, as it ends, the standard-library modules it
imported (``imported`` on the server's reply pipe), and they are kept per backend (its
``build-backend`` and the names in its ``build-system.requires``) in a small
file of the build environments' folder, beside its runs, which outlives them: the next build of
that backend preloads them. With nothing learned yet (or a file that cannot be read) the server
preloads :data:`hookserver.PRELOAD`, and its hooks note each module they import by name, those
they found preloaded included, so that one build learns what the backend uses of it.

Only standard-library modules are ever learned or preloaded: the hook server checks where each
module came from as the hook ends, and each name again before it imports it. The backend and
what it installed are imported by each hook, afresh, as PEP 517 asks. A learned list only grows
(a later build of the backend may import more), and is written only when it did.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from orchestrator import lastuse
from orchestrator.atomic import atomic_write_json

FOLDER = "preload"
"""The folder of learned lists, beside the runs' folders of the build environments' store (``build/envruns.py``)."""


def learned_path(env_cache: Path, backend: str, requires: Iterable[str]) -> Path:
    """The file of what hooks of ``backend`` (with ``requires``) imported, for a build whose run's folder is
    ``env_cache`` (``ROOT/runs/RUN``: the file is under ``ROOT``). An in-tree backend's folder is no part of
    the key: it is the source's, and projects that name their in-tree backends alike share what they learn."""
    names: set[str] = set()
    for requirement in requires:
        try:
            names.add(canonicalize_name(Requirement(requirement).name))
        except InvalidRequirement:
            names.add(requirement)
    key = json.dumps([backend, sorted(names)])
    return env_cache.parent.parent / FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def load(path: Path) -> tuple[str, ...] | None:
    """The modules learned in ``path``; ``None`` if nothing is (no file, or one that is not such a list)."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    lastuse.mark_used(path)  # the pruner (build/envprune.py) removes a list no build read for its age
    modules = document.get("modules") if isinstance(document, dict) else None
    if not isinstance(modules, list) or not all(isinstance(name, str) for name in modules):
        return None
    return tuple(modules)


def save(path: Path, learned: tuple[str, ...] | None, imported: Iterable[str]) -> tuple[str, ...] | None:
    """Add what hooks ``imported`` to what ``path`` held (``learned``), if they imported more (atomically);
    what it holds now."""
    merged = tuple(dict.fromkeys([*(learned or ()), *imported]))
    if not merged or (learned is not None and len(merged) == len(learned)):
        return learned
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"modules": list(merged)})
    return merged
