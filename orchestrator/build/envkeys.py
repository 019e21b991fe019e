"""What a prepared build environment's key is made of (``envcache.py``): requirement sets spelt one way, pins
spelt one way, and what local ``--find-links`` folders hold.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from orchestrator.errors import BuildError
from orchestrator.settings import IndexSettings


def digest(*parts: object) -> str:
    """A key of ``parts`` (JSON-encodable): 24 hex digits of their sha256."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def normalise_requirements(requirements: Collection[str]) -> list[str]:
    """Sorted, de-duplicated, canonical spellings; an invalid one is a :class:`BuildError`."""
    normalised = set()
    for text in requirements:
        try:
            normalised.add(str(Requirement(text)))
        except InvalidRequirement as exc:
            raise BuildError(f"invalid build requirement '{text}': {exc}") from None
    return sorted(normalised)


def local_sources_fingerprint(index: IndexSettings) -> str | None:
    """What the local ``--find-links`` folders hold (names, sizes, times), when they are the only source."""
    if not index.no_index or not index.find_links:
        return None
    listing = []
    for link in index.find_links:
        folder = Path(link)
        if "://" in link or not folder.is_dir():
            return None
        with os.scandir(folder) as entries:
            listing.append([str(folder.resolve()), sorted(
                (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in entries if entry.is_file()
            )])
    return digest(listing)


def canonical_pin(pin: str) -> str:
    """``Flit_Core==3.12`` as ``flit-core==3.12``: pip and uv spell names differently."""
    name, sep, rest = (part.strip() for part in pin.partition("=="))
    if not sep or not name or not all(c.isalnum() or c in "-_." for c in name):
        return pin  # a URL, extras or a marker: keep it as the installer wrote it
    return f"{canonicalize_name(name)}=={rest}"
