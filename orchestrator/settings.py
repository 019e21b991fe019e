"""Frozen settings shared by the stages: where packages come from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexSettings:
    """Where distributions are looked up, as pip's index options say it."""

    index_url: str | None = None
    """The primary simple index; ``None`` means the installer's default (PyPI)."""
    extra_index_urls: tuple[str, ...] = ()
    """Further simple indexes, searched as well as the primary one."""
    find_links: tuple[str, ...] = ()
    """Folders or HTML pages listing distribution files."""
    no_index: bool = False
    """Ignore every index; only ``find_links`` is searched."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IndexSettings:
        """The inverse of ``dataclasses.asdict``."""
        return cls(
            index_url=data["index_url"],
            extra_index_urls=tuple(data["extra_index_urls"]),
            find_links=tuple(data["find_links"]),
            no_index=bool(data["no_index"]),
        )

    def pip_args(self) -> list[str]:
        """The same options as command-line arguments for ``pip install`` or ``uv pip install``."""
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        else:
            if self.index_url:
                args += ["--index-url", self.index_url]
            for url in self.extra_index_urls:
                args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def check_index_url(url: str) -> str:
    """``url`` as given, if it is a URL or a folder (pip's rule for an index); else a :class:`UsageError`.

    Without this, ``pypi.org/simple`` reached the index reader as a path, failing every look-up with a traceback.
    """
    if "://" not in url and not Path(url).is_dir():
        raise UsageError(f"{url} is neither a URL nor a folder; give its scheme (https://{url})")
    return url
