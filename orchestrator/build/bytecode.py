"""Bytecode for prepared build environments, compiled once per distribution and shared between the envs.

When the hooks cannot write bytecode as they import (a sandbox shows them the prepared envs
read-only, or ``PYTHONDONTWRITEBYTECODE``), a prepared env gets all of it at preparation
(``envcache.py``). Most build requirement sets share their backend: a cold corpus run prepares a
dozen envs holding the same setuptools, and an installer's ``--compile-bytecode`` compiles its
300 modules again in each (0.6-0.7 CPU-s a time, in compiler processes of its own). Here each
installed distribution is compiled once, into a store entry keyed by the interpreter's cache tag
and the path and hash of each of its modules (from its ``RECORD``: equal hashes, equal sources),
and every env holding it gets hard links to those files.

Store layout (``<store>`` is the prepared envs' own folder, so it lives and goes with them)::

    bytecode/<key>/             published by renaming, once complete: ``pkg/__pycache__/mod.<tag>.pyc``
    bytecode/<key>-<random>/    being compiled (or left by a preparation that was killed)
    bytecode/<key>.lock         held while <key> is being compiled; shared while an env links from it

A ``.pyc`` file is valid for a source of the same modification time and size (its header), and
Python sets its code's file name to wherever it is imported from, so it can serve every env whose
source file has that time and size: uv hard-links the files of a distribution from its cache, so
every env's copy has the same time. A source whose time or size differs gets a copy of the
compiled file with its own header. Written by hand because ``compileall`` and the installers
compile into one tree only, with no store shared between trees.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import py_compile
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator import lastuse
from orchestrator.build import storelocks

HEADER = 16
"""A ``.pyc`` header: magic number, flags, the source's modification time and size (PEP 552)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedBytecode:
    """What :func:`share` did for one env."""

    compiled: int
    """Modules compiled into the store (their distribution's first env)."""
    linked: int
    """Modules that got the store's compiled file (a hard link or, for a source of another time, a copy)."""


def _sources(site: Path, record: Path) -> dict[str, str]:
    """The ``.py`` files a distribution installed into ``site`` (paths relative to it) and their hashes, from its
    ``RECORD`` (a row without a hash gets one of the file's contents)."""
    with record.open(newline="") as rows:
        found = {row[0]: row[1] if len(row) > 1 else "" for row in csv.reader(rows) if row}
    return {path: digest or f"sha256={hashlib.sha256((site / path).read_bytes()).hexdigest()}"
            for path, digest in found.items()
            if path.endswith(".py") and ".." not in Path(path).parts and (site / path).is_file()}


def _key(record: Path, sources: dict[str, str]) -> str:
    """The store entry of a distribution's modules: its name and version, a digest of the interpreter's cache tag
    and every module's path and hash (not the whole ``RECORD``: its scripts name the env's interpreter)."""
    digest = hashlib.sha256("\n".join([sys.implementation.cache_tag or "", *map(",".join, sorted(sources.items()))])
                            .encode())
    return f"{record.parent.name.removesuffix('.dist-info')}-{digest.hexdigest()[:24]}"


def _compiled_path(source: str) -> str:
    """``pkg/__pycache__/mod.cpython-311.pyc`` for ``pkg/mod.py`` (what ``importlib.util.cache_from_source`` says
    where no ``PYTHONPYCACHEPREFIX`` or ``-O`` of this process changes it: the hooks run with neither)."""
    folder, name = os.path.split(source)
    return os.path.join(folder, "__pycache__", f"{name.removesuffix('.py')}.{sys.implementation.cache_tag}.pyc")


def _compile(site: Path, sources: dict[str, str], entry: Path, store: Path) -> int:
    """Compile ``sources`` (under ``site``) into a new store folder published as ``entry``; how many compiled."""
    for leftover in store.glob(f"{entry.name}-*"):
        shutil.rmtree(leftover)
    partial = Path(tempfile.mkdtemp(dir=store, prefix=f"{entry.name}-"))
    compiled = 0
    for source in sources:
        target = partial / _compiled_path(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            py_compile.compile(str(site / source), cfile=str(target), dfile=source, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
        except py_compile.PyCompileError:
            continue  # not Python this interpreter reads (a template, another version's module): as compileall does
        os.chmod(target, 0o444)
        compiled += 1
    os.rename(partial, entry)
    return compiled


def _place(compiled: Path, source: Path, target: Path) -> None:
    """Give ``source`` the store's ``compiled`` file at ``target``: a hard link if its header fits the source."""
    with compiled.open("rb") as file:
        header = file.read(HEADER)  # the rest is read only if a copy is needed
    status = source.stat()
    fits = (int.from_bytes(header[8:12], "little") == int(status.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == status.st_size & 0xFFFFFFFF)
    target.parent.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    if fits:
        with contextlib.suppress(OSError):  # else (a file system without hard links) a copy, below
            os.link(compiled, target)
            return
    data = bytearray(compiled.read_bytes())
    data[8:12] = (int(status.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    data[12:16] = (status.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    target.write_bytes(data)


def share(sites: list[Path], store: Path) -> SharedBytecode:
    """Give every module installed in ``sites`` (an env's site-packages folders) its bytecode from ``store``,
    compiling into it what no earlier env brought."""
    store.mkdir(exist_ok=True)
    compiled = linked = 0
    for site in dict.fromkeys(sites):
        for record in sorted(site.glob("*.dist-info/RECORD")):
            sources = _sources(site, record)
            if not sources:
                continue
            entry = store / _key(record, sources)
            made: list[int] = []
            # Held shared while linking: the pruner leaves an entry in use (envprune.py).
            in_use, _ = storelocks.shared_once(store / f"{entry.name}.lock", entry.is_dir,
                                               lambda: made.append(_compile(site, sources, entry, store)))
            compiled += sum(made)
            try:
                lastuse.mark_used(entry)
                for source in sources:
                    cached = entry / _compiled_path(source)
                    if cached.is_file():
                        _place(cached, site / source, site / _compiled_path(source))
                        linked += 1
            finally:
                os.close(in_use)
    return SharedBytecode(compiled=compiled, linked=linked)
