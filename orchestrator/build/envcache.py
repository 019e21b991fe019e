"""Prepared build environments: made once per requirement set, shared by builds through cheap views.

Layout under ``<state>/build-envs`` (``BuildJob.env_cache`` is one run's folder)::

    envs/                        the store; kept across runs with --keep-build-envs
      <key> -> <key>-<random>    published: a symlink, created atomically once the env is complete
      <key>-<random>/            a prepared virtualenv (its folders read-only)
      <key>.lock                 held while <key> is prepared (or pruned); shared by each build using it
      resolutions/<rkey>.txt     resolutions from local --find-links folders only (keyed by their contents)
      bytecode/                  compiled modules shared by the envs that hold the same distribution (bytecode.py)
    runs/<run>/                  one per run, removed when the run ends (envruns.py)
      envs                       a symlink to ../../envs (--keep-build-envs), else a store of its own
      resolutions/<rkey>.txt     the pins a requested requirement set resolved to, once per run
    runs/<run>.lock              held by the run while it lives; a free one marks a dead run
    runs/run-farm-<id>/          a farm run's, shared by the worker processes of one machine (envruns.py)

A prepared env is keyed by (interpreter, resolved pins, index options). It is made in a
folder of its own (a copy of the empty env's few files, then the pins installed) and
published by renaming a symlink onto ``<key>``, so an env whose preparation was killed half
way is never seen: only its leftover folder, removed by the next preparer of that key (who
holds the key's lock, so the owner is gone).

Each build gets a *view*: a fresh virtualenv skeleton (its folders, the interpreter links and
``pyvenv.cfg``, a link to the prepared env's: ten entries, one call each) whose site-packages
holds, once it needs one, a ``.pth`` file that adds the prepared env's site-packages through a
symlink in the view (``prepared``). A build
requirement's files then have paths inside the build's own folder (``numpy.get_include()``
says ``<build>/env/prepared/...``), whatever folder the env was prepared in: the compiler
cache maps the build's folder away (``CCACHE_BASEDIR``), so a header found there still hits
in the next run, which prepares its envs in new folders unless ``--keep-build-envs``.
Whatever a build installs or writes into its environment lands in the view, which goes away
with the build; the prepared env's folders are read-only, so no build changes what the next
one sees. Only their ``__pycache__`` folders stay writable: bytecode is compiled when a
build first imports a module, not for every module at preparation (most of a backend is
never imported); unless the hooks cannot write it (``PYTHONDONTWRITEBYTECODE``, or a sandbox
showing them the envs read-only), as every hook would then compile what it imports again
(0.15 CPU-s for setuptools' ``get_requires_for_build_wheel`` alone): then it is all compiled at
preparation, each distribution once for all the envs that hold it (``bytecode.py``), and no folder
stays writable. Requirements that ``get_requires_for_build_wheel`` adds and the prepared env lacks
make a prepared env of their own (base plus extras), cached the same way, and the view is pointed at it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from orchestrator import lastuse
from orchestrator.atomic import atomic_write
from orchestrator.build import bytecode, storelocks
from orchestrator.build.envkeys import canonical_pin, digest, local_sources_fingerprint, normalise_requirements
from orchestrator.build.envs import (
    InstallerName,
    Venv,
    create_venv,
    find_uv,
    install_command,
    installer_environ,
    outer_pip_usable,
    run_installer,
)
from orchestrator.errors import BuildError
from orchestrator.settings import IndexSettings

logger = logging.getLogger(__name__)

ENV_INFO = "orchestrate-env.json"
"""Written into a prepared env last before it is published: where its parts are."""
PTH_NAME = "_orchestrate_build_env.pth"
PREPARED_LINK = "prepared"
"""In a view: the symlink to the prepared env it sees, through which its ``.pth`` adds that env's site-packages."""


@functools.cache
def interpreter_id() -> str:
    """What makes one interpreter's environments unusable by another (asked once per process: the fork server
    asks before it forks the builds' workers)."""
    return "|".join([sys.implementation.cache_tag or "", sys.version, os.path.realpath(sys.executable),
                     sysconfig.get_platform()])


def remove_tree(path: Path) -> None:
    """Remove ``path`` even where a prepared env made its folders read-only."""
    if path.is_symlink() or not path.exists():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    for folder, dirs, _ in os.walk(path):
        for name in dirs:
            child = os.path.join(folder, name)
            if not os.path.islink(child):
                os.chmod(child, 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)


def bytecode_on_import() -> bool:
    """Whether Python writes bytecode as it imports (``PYTHONDONTWRITEBYTECODE`` is unset)."""
    return not os.environ.get("PYTHONDONTWRITEBYTECODE")


def compile_at_preparation(*, sandboxed: bool) -> bool:
    """Whether prepared envs get their bytecode when they are made: when the hooks cannot write it as they
    import, because Python is told not to or because a sandbox shows them the envs read-only."""
    return sandboxed or not bytecode_on_import()


def _make_read_only(path: Path, *, bytecode_folders: bool) -> None:
    """Take write permission off every folder: files can be neither added, removed nor renamed.

    With ``bytecode_folders``, every folder holding a ``.py`` file gets a ``__pycache__``
    that stays writable, for Python to cache bytecode in as builds import. Files keep
    their mode: uv hardlinks them from its cache, and changing their mode would change
    the cache's.
    """
    for folder, dirs, files in os.walk(path, topdown=False):
        if bytecode_folders and os.path.basename(folder) != "__pycache__" and any(f.endswith(".py") for f in files):
            os.makedirs(os.path.join(folder, "__pycache__"), exist_ok=True)
            dirs.append("__pycache__")
        for name in dirs:
            child = os.path.join(folder, name)
            if not os.path.islink(child) and not (bytecode_folders and name == "__pycache__"):
                os.chmod(child, os.stat(child).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _clone(empty: PreparedEnv, target: Path) -> Venv:
    """A new virtualenv in the existing folder ``target``: a copy of the ``empty`` env's files and links.

    About a millisecond, where creating one with virtualenv takes a third of a second.
    """
    for folder, dirs, files in os.walk(empty.path):
        relative = Path(folder).relative_to(empty.path)
        for name in [*dirs, *files]:
            source, copy = Path(folder, name), target / relative / name
            if name in (ENV_INFO, "__pycache__"):
                continue
            if source.is_symlink():
                os.symlink(os.readlink(source), copy)
            elif source.is_dir():
                copy.mkdir()
            else:
                shutil.copy2(source, copy)
        dirs[:] = [name for name in dirs if name != "__pycache__" and not Path(folder, name).is_symlink()]
    return Venv(python=target / empty.python, scripts=target / empty.scripts, purelib=target / empty.purelib,
                platlib=target / empty.platlib)


class EnvInstaller(Protocol):
    """Resolves requirement sets and installs pins into a prepared env (uv, pip, or a fake in tests), without
    compiling bytecode (:mod:`orchestrator.build.bytecode` does, where the env needs it)."""

    @property
    def name(self) -> str: ...

    @property
    def seed_pip(self) -> bool:
        """Whether a new virtualenv needs pip inside for :meth:`install` to work."""

    def resolve(self, requirements: Sequence[str]) -> list[str]: ...

    def install(self, venv: Path, python: Path, pins: Sequence[str]) -> None: ...


class SubprocessInstaller:
    """uv or pip as subprocesses, their output in the build log."""

    def __init__(self, name: InstallerName, index: IndexSettings, log: IO[str]) -> None:
        self.name = name
        self.seed_pip = name == "pip" and not outer_pip_usable()
        self._index = index
        self._log = log

    def resolve(self, requirements: Sequence[str]) -> list[str]:
        """The complete set of pins (``name==version``) that ``requirements`` resolve to."""
        with tempfile.TemporaryDirectory(prefix="orchestrate-resolve-") as tmp:
            infile = Path(tmp) / "requirements.in"
            infile.write_text("\n".join(requirements) + "\n")
            if self.name == "uv":
                uv = find_uv()
                if uv is None:  # pragma: no cover - checked when the run starts
                    raise BuildError("uv is not installed any more; use --installer pip")
                cmd = [uv, "pip", "compile", "--python", sys.executable, "--no-header", "--no-annotate",
                       "--quiet", str(infile)]
            elif outer_pip_usable():
                cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                       "--no-input", "--disable-pip-version-check", "--report", "-", "-r", str(infile)]
            else:  # pip too old for --dry-run --report: the requested set stands for itself
                return list(requirements)
            cmd += self._index.pip_args()
            self._log.write(f"$ {' '.join(cmd)}\n# {', '.join(requirements)}\n")
            self._log.flush()
            env = installer_environ(Path(tmp))
            del env["VIRTUAL_ENV"]
            completed = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
            self._log.write(completed.stderr)
            if completed.returncode:
                raise BuildError(
                    f"cannot resolve build requirements ({', '.join(requirements)}) with {self.name}; "
                    "check --index-url/--find-links or the package's build-system.requires"
                )
        if self.name == "uv":
            return [line.strip() for line in completed.stdout.splitlines()
                    if line.strip() and not line.lstrip().startswith(("#", "-"))]
        report = json.loads(completed.stdout)
        return [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in report["install"]]

    def install(self, venv: Path, python: Path, pins: Sequence[str]) -> None:
        pins_file = venv / "orchestrate-pins.txt"
        pins_file.write_text("\n".join(pins) + "\n")
        run_installer(install_command(self.name, str(python), pins_file, self._index, pinned=True),
                      installer_environ(venv), self._log,
                      f"installing build requirements ({', '.join(pins)}) with {self.name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedEnv:
    """A complete, published, read-only environment holding one resolved requirement set."""

    key: str
    path: Path
    """The env's own folder (the symlink's target)."""
    pins: tuple[str, ...]
    python: str
    """The interpreter, relative to ``path``."""
    scripts: str
    purelib: str
    platlib: str
    skeleton: tuple[str, ...]
    """What a view copies (relative paths): the interpreter links and top-level symlinks such as ``lib64``."""

    @classmethod
    def load(cls, key: str, path: Path) -> PreparedEnv:
        info = json.loads((path / ENV_INFO).read_text())
        return cls(key=key, path=path, pins=tuple(info["pins"]), python=info["python"], scripts=info["scripts"],
                   purelib=info["purelib"], platlib=info["platlib"], skeleton=tuple(info["skeleton"]))

    def versions(self) -> dict[NormalizedName, str]:
        """Pinned versions by canonical name."""
        found: dict[NormalizedName, str] = {}
        for pin in self.pins:
            name, sep, version = pin.partition("==")
            if sep:
                found[canonicalize_name(name.strip())] = version.split(";")[0].strip()
        return found


class EnvCache:
    """The prepared environments of one run; see the module docstring."""

    def __init__(self, run_dir: Path, installer: EnvInstaller, *, index: IndexSettings, log: IO[str],
                 compiled: bool | None = None) -> None:
        """``compiled``: bytecode is compiled at preparation (:func:`compile_at_preparation`;
        default: when ``PYTHONDONTWRITEBYTECODE`` is set); else the envs keep writable ``__pycache__`` folders."""
        self.run_dir = run_dir
        self._compiled = not bytecode_on_import() if compiled is None else compiled
        self.store = (run_dir / "envs").resolve()
        self._installer = installer
        self._index_args = index.pip_args()
        self._log = log
        self._index = index

    @functools.cached_property
    def _sources(self) -> str | None:
        """What the local ``--find-links`` folders hold, read only when a set is resolved (every file of them is
        listed: a build that needs nothing, or a published env, does not)."""
        return local_sources_fingerprint(self._index)

    @functools.cached_property
    def _resolutions(self) -> Path:
        """Resolving from local folders only depends on what they hold: such resolutions are kept with the envs.
        Anything from an index is resolved again each run."""
        return self.store / "resolutions" if self._sources else self.run_dir / "resolutions"

    def pins(self, requirements: Collection[str]) -> tuple[str, ...]:
        """What ``requirements`` resolve to: resolved once per run (once per folder contents for local-only sources)."""
        requested = normalise_requirements(requirements)
        if not requested:
            return ()
        rkey = digest("resolution", interpreter_id(), self._installer.name, self._index_args, self._sources,
                       requested)
        path = self._resolutions / f"{rkey}.txt"
        try:
            text = path.read_text()
        except FileNotFoundError:  # not resolved yet (or pruned as we looked)
            self._resolutions.mkdir(exist_ok=True)
            with storelocks.exclusive(self._resolutions / f"{rkey}.lock"):
                if not path.is_file():
                    pins = sorted(canonical_pin(pin) for pin in self._installer.resolve(requested))
                    with atomic_write(path) as out:
                        out.write(("\n".join(pins) + "\n").encode())
                text = path.read_text()
        else:
            if self._sources:  # kept with the envs
                lastuse.mark_used(path)
        return tuple(line for line in text.splitlines() if line.strip())

    def prepare(self, requirements: Collection[str]) -> PreparedEnv:
        """The prepared env holding ``requirements``: reused when published, else made under the key's lock.

        The key's lock is then held shared until this process ends (a build's worker builds once): the pruner
        (``envprune.py``) never removes an env in use. A run's use moves the link's time forward (``lastuse``)."""
        pins = self.pins(requirements)
        key = digest("env", interpreter_id(), self._index_args, sorted(pins), self._compiled)
        link = self.store / key

        def make() -> None:
            self._log.write(f"# build environment {key}: preparing ({', '.join(pins) or 'empty'})\n")
            self._log.flush()
            self._remove_leftovers(key)
            self._prepare(key, pins)

        # Held shared until this process ends, never closed: a build's worker builds once.
        _, how = storelocks.shared_once(self.store / f"{key}.lock", link.exists, make)
        lastuse.mark_used(link)
        if how != "made":
            found = "reused" if how == "found" else "prepared by another build"
            self._log.write(f"# build environment {key}: {found} ({', '.join(pins) or 'empty'})\n")
        return PreparedEnv.load(key, link.resolve())

    def _remove_leftovers(self, key: str) -> None:
        """Folders of ``key`` that were never published belong to killed preparations (we hold the lock)."""
        for entry in self.store.glob(f"{key}-*"):
            self._log.write(f"# removing {entry.name}, left by a preparation that did not finish\n")
            remove_tree(entry)
        for entry in self.store.glob(f".{key}.*.link"):
            entry.unlink()

    def _prepare(self, key: str, pins: tuple[str, ...]) -> None:
        target = Path(tempfile.mkdtemp(dir=self.store, prefix=f"{key}-"))
        if pins and not self._installer.seed_pip:
            venv = _clone(self.prepare(()), target)
        else:
            venv = create_venv(target, seed_pip=self._installer.seed_pip)
        skeleton = [str(entry.relative_to(target)) for entry in venv.scripts.iterdir()
                    if entry.name.startswith("python")]
        skeleton += [entry.name for entry in target.iterdir() if entry.is_symlink()]
        if pins:
            self._installer.install(target, venv.python, pins)
            if self._compiled:
                shared = bytecode.share([venv.purelib, venv.platlib], self.store / "bytecode")
                self._log.write(f"# bytecode: {shared.compiled} modules compiled, {shared.linked} shared\n")
        info = {
            "pins": list(pins),
            "python": str(venv.python.relative_to(target)),
            "scripts": str(venv.scripts.relative_to(target)),
            "purelib": str(venv.purelib.relative_to(target)),
            "platlib": str(venv.platlib.relative_to(target)),
            "skeleton": sorted(skeleton),
        }
        (target / ENV_INFO).write_text(json.dumps(info, indent=1))
        _make_read_only(target, bytecode_folders=not self._compiled)
        # Publish: a symlink under a private name, renamed onto the key (atomic on POSIX).
        partial = self.store / f".{key}.{os.getpid()}.link"
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        os.symlink(target.name, partial)
        os.replace(partial, self.store / key)

    def view(self, path: Path, *, at: Path | None = None) -> EnvView:
        """A fresh, empty environment for one build, ready to be pointed at prepared envs; made in ``at`` (a new
        folder's path) and linked from ``path``, if given."""
        return EnvView(path, self, self.prepare(()), log=self._log, at=at)


def _ancestors(relative: str) -> list[str]:
    """``a/b/c`` and the folders above it inside its root: ``a``, ``a/b``, ``a/b/c`` (none for ``""``)."""
    parts = Path(relative).parts
    return [os.path.join(*parts[:depth]) for depth in range(1, len(parts) + 1)]


class EnvView:
    """One build's environment: its own skeleton, a prepared env's packages; satisfies ``IsolatedEnv``."""

    def __init__(self, path: Path, cache: EnvCache, base: PreparedEnv, *, log: IO[str],
                 at: Path | None = None) -> None:
        self.path = path
        self._cache = cache
        self._log = log
        self._prepared = base
        self._requested: list[str] = []
        # Each folder made once, parents first, and pyvenv.cfg read through the link to the prepared env (whose
        # home and version it shares): each entry a build's folder gets is one call of the file system, on
        # every build; a copy of the file, or a mkdir that finds its folder there already, took several.
        # Made in ``at`` (the build's scratch folder, on a tmpfs: ``executors/local.py``), its ten entries cost
        # the kernel a few microseconds each, where this disk took 40-350 (ext4's inode allocator, busy);
        # ``path``, a link to it, keeps the build's own folder in every path the build sees.
        root = at or path
        root.mkdir()
        if at is not None:
            os.symlink(at, path, target_is_directory=True)
        folders = {base.purelib, base.platlib, base.scripts, *(os.path.dirname(entry) for entry in base.skeleton)}
        # A folder under a top-level link of the skeleton (lib64 -> lib, where platlib is lib64/...) is the link's.
        linked = {folder for folder in folders if Path(folder).parts[:1] and Path(folder).parts[0] in base.skeleton}
        for folder in sorted({ancestor for folder in folders - linked for ancestor in _ancestors(folder)}, key=len):
            os.mkdir(root / folder)
        os.symlink(os.path.join(PREPARED_LINK, "pyvenv.cfg"), root / "pyvenv.cfg")
        for relative in base.skeleton:
            source, copy = base.path / relative, root / relative
            if source.is_symlink():
                os.symlink(os.readlink(source), copy)
            else:
                shutil.copy2(source, copy)
        for folder in linked:
            os.makedirs(root / folder, exist_ok=True)
        os.symlink(base.path, root / PREPARED_LINK, target_is_directory=True)
        self.purelib = self.path / base.purelib
        self._python = str(self.path / base.python)

    @property
    def prepared(self) -> PreparedEnv:
        return self._prepared

    @property
    def python_executable(self) -> str:
        return self._python

    def make_extra_environ(self) -> Mapping[str, str]:
        scripts = [str(self.path / self._prepared.scripts), str(self.path / PREPARED_LINK / self._prepared.scripts)]
        path = os.environ.get("PATH")
        return {"PATH": os.pathsep.join([*scripts, path] if path else scripts)}

    def install(self, requirements: Collection[str]) -> None:
        """Make ``requirements`` importable: point the view at a prepared env that holds them and what it had."""
        missing = [text for text in requirements if not self._satisfied(text)]
        if not missing:
            if requirements:
                self._log.write(f"# already in the build environment: {', '.join(sorted(requirements))}\n")
            return
        self._requested += requirements
        self._point_at(self._cache.prepare(self._requested))

    def _satisfied(self, text: str) -> bool:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise BuildError(f"invalid build requirement '{text}': {exc}") from None
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            return True
        if requirement.url or requirement.extras:
            return False
        version = self._prepared.versions().get(canonicalize_name(requirement.name))
        return version is not None and requirement.specifier.contains(version, prereleases=True)

    def _point_at(self, prepared: PreparedEnv) -> None:
        link, partial = self.path / PREPARED_LINK, self.path / f".{PREPARED_LINK}.link"
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        os.symlink(prepared.path, partial, target_is_directory=True)
        os.replace(partial, link)
        sites = dict.fromkeys([str(link / prepared.purelib), str(link / prepared.platlib)])
        lines = "".join(f"import site; site.addsitedir({site!r})\n" for site in sites)
        with atomic_write(self.purelib / PTH_NAME) as out:
            out.write(lines.encode())
        self._prepared = prepared
