"""The compiler cache through the real path: real setuptools C extensions built by ``orchestrate build``.

Each build extracts its sdist into a new private folder; the wheels' extensions are imported and
called in a fresh interpreter, so a wrong object taken from the cache would show as a wrong value.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import backend_index_args, orchestrate
from wheels import write_wheel

from orchestrator.build.compilercache import CompilerCache, CompilerStats, read_stats, trim

pytestmark = [pytest.mark.real_backend]

SETUP_PY = """\
import os
import shutil
from setuptools import Extension, setup

where = {where}  # CMake and meson name every source and include folder by its absolute path
setup(ext_modules=[Extension("ccprobe._value", [os.path.join(where, "value.c")], include_dirs=[where],
                             define_macros=[("OFFSET", "{offset}")])])
"""

VALUE_C = """\
#include <Python.h>
#include "value.h"

static PyObject *value(PyObject *self, PyObject *args) {{ return PyLong_FromLong(BASE + OFFSET); }}
static PyMethodDef methods[] = {{{{"value", value, METH_NOARGS, NULL}}, {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "_value", NULL, -1, methods}};
PyMODINIT_FUNC PyInit__value(void) {{ return PyModule_Create(&module); }}
/* {padding} */
"""

NUMBER_C = """\
#include <Python.h>

static PyObject *number(PyObject *self, PyObject *args) {{ return PyLong_FromLong({number}); }}
static PyMethodDef methods[] = {{{{"number", number, METH_NOARGS, NULL}}, {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "_{name}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit__{name}(void) {{ return PyModule_Create(&module); }}
"""


def c_extension_sdist(folder: Path, *, base: int = 1, offset: int = 0, padding: str = "",
                      absolute: bool = False) -> Path:
    """A setuptools sdist whose extension returns ``BASE`` (from the header ``value.h``) plus ``OFFSET``
    (a define on the compiler's command line); ``padding`` changes the source without changing the code;
    ``absolute`` names the source and include folder by absolute paths (inside the build's private folder)."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
                          '\n[project]\nname = "ccprobe"\nversion = "1.0"\n',
        "setup.py": SETUP_PY.format(offset=offset, where='os.path.abspath("src")' if absolute else '"src"'),
        "src/value.h": f"#define BASE {base}\n",
        "src/value.c": VALUE_C.format(padding=padding),
        "ccprobe/__init__.py": "",
        "PKG-INFO": "Metadata-Version: 2.1\nName: ccprobe\nVersion: 1.0\n",
    }
    return _write_sdist(folder, "ccprobe-1.0", files)


def two_extension_sdist(folder: Path, version: str, *, first: int, second: int) -> Path:
    """A setuptools sdist ``ccpair-VERSION`` of two extensions, ``_first`` and ``_second``, each returning its
    number: a release that changes one leaves the other's source as it was."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
                          f'\n[project]\nname = "ccpair"\nversion = "{version}"\n',
        "setup.py": 'from setuptools import Extension, setup\n'
                    'setup(ext_modules=[Extension(f"ccpair._{name}", [f"src/{name}.c"])\n'
                    '                   for name in ("first", "second")])\n',
        "src/first.c": NUMBER_C.format(name="first", number=first),
        "src/second.c": NUMBER_C.format(name="second", number=second),
        "ccpair/__init__.py": "",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: ccpair\nVersion: {version}\n",
    }
    return _write_sdist(folder, f"ccpair-{version}", files)


def header_requirement_sdist(folder: Path, wheels: Path) -> Path:
    """An sdist whose extension includes a header shipped by its build requirement ``cchdr`` (found through
    ``cchdr.get_include()``, as numpy, pybind11 or cppy headers are), and the wheel of ``cchdr`` in ``wheels``."""
    wheels.mkdir(parents=True, exist_ok=True)
    write_wheel(wheels, "cchdr", "1.0", files={
        "cchdr/__init__.py": "import os\n\ndef get_include():\n"
                             "    return os.path.join(os.path.dirname(__file__), 'include')\n",
        "cchdr/include/cchdr.h": "#define BASE 9\n"})
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64", "cchdr"]\n'
                          'build-backend = "setuptools.build_meta"\n\n[project]\nname = "ccprobe"\nversion = "1.0"\n',
        "setup.py": "import cchdr\nfrom setuptools import Extension, setup\n"
                    'setup(ext_modules=[Extension("ccprobe._value", ["src/value.c"], define_macros=[("OFFSET", "0")],\n'
                    '                             include_dirs=[cchdr.get_include()])])\n',
        "src/value.c": VALUE_C.format(padding="").replace('"value.h"', "<cchdr.h>"),
        "ccprobe/__init__.py": "",
        "PKG-INFO": "Metadata-Version: 2.1\nName: ccprobe\nVersion: 1.0\n",
    }
    return _write_sdist(folder, "ccprobe-1.0", files)


def _write_sdist(folder: Path, base: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def build(tmp_path: Path, sdist: Path, name: str, *extra: str, env: dict[str, str] | None = None,
          expect: int = 0) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Build ``sdist`` into a wheelhouse of its own (the state folder, so the cache, is the test's);
    return its report record and the finished command."""
    report = tmp_path / f"{name}.json"
    result = orchestrate("build", sdist, "-w", tmp_path / name, "--report-json", report, *backend_index_args(),
                         *extra, env=env)
    assert result.returncode == expect, result.stderr
    if expect:
        return {}, result
    (record,) = json.loads(report.read_text())["builds"]
    assert record["status"] == "built", record
    return record, result


def extension_value(tmp_path: Path, wheelhouse: str, call: str = "ccprobe._value.value") -> int:
    """Unpack the wheel of ``wheelhouse`` and call the function ``call`` of its extension in a fresh interpreter."""
    (wheel,) = (tmp_path / wheelhouse).glob("*.whl")
    unpacked = tmp_path / f"{wheelhouse}-unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    module, function = call.rsplit(".", 1)
    done = subprocess.run([sys.executable, "-c", f"import {module} as m; print(m.{function}())"],
                          cwd=unpacked, capture_output=True, text=True, check=True)
    return int(done.stdout)


def stats(record: dict[str, Any]) -> tuple[int, int, int]:
    return record["compiler_calls"], record["compiler_hits"], record["compiler_misses"]


@pytest.mark.usefixtures("sandboxed")
@pytest.mark.parametrize("absolute", [False, True], ids=["relative-paths", "absolute-paths"])
def test_a_second_build_from_a_fresh_extraction_hits(tmp_path: Path, absolute: bool) -> None:
    sdist = c_extension_sdist(tmp_path / "sdists", absolute=absolute)
    first, _ = build(tmp_path, sdist, "first")
    second, result = build(tmp_path, sdist, "second", "--force")
    calls, hits, misses = stats(first)
    assert hits == 0 and misses >= 1 and calls >= misses  # the link goes through it too, uncached
    assert stats(second) == (calls, misses, 0)  # every compilation the first ran is a hit
    assert extension_value(tmp_path, "first") == extension_value(tmp_path, "second") == 1
    assert f"compiler cache: {misses} of {misses} cacheable compilations hit (100%)" in result.stderr
    assert (tmp_path / "state" / "compiler-cache" / "packages" / "ccprobe").is_dir()  # under --state-dir
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "history.sqlite3")) as history:
        rows = history.execute("SELECT compiler_calls, compiler_hits, compiler_misses FROM builds ORDER BY finished_at")
        assert rows.fetchall() == [stats(first), stats(second)]  # the history keeps them too


@pytest.mark.usefixtures("sandboxed")
def test_an_upgrade_recompiles_only_the_changed_file(tmp_path: Path) -> None:
    """Version 1.0, then 2.0 with one of its two sources changed (extracted into another folder, named by
    the new version): the unchanged source is a hit, the changed one compiles, both wheels are right."""
    first, _ = build(tmp_path, two_extension_sdist(tmp_path / "sdists", "1.0", first=1, second=2), "v1")
    second, _ = build(tmp_path, two_extension_sdist(tmp_path / "sdists", "2.0", first=1, second=20), "v2")
    assert first["compiler_hits"] == 0 and first["compiler_misses"] == 2
    assert (second["compiler_hits"], second["compiler_misses"]) == (1, 1)
    assert [extension_value(tmp_path, wheelhouse, f"ccpair._{name}.number")
            for wheelhouse in ("v1", "v2") for name in ("first", "second")] == [1, 2, 1, 20]


@pytest.mark.usefixtures("sandboxed")
def test_headers_of_a_build_requirement_hit_in_the_next_run(tmp_path: Path) -> None:
    """Without --keep-build-envs each run prepares its build environments in new folders; a header found
    through a build requirement (numpy's, pybind11's, cppy's) must not make the next run's compilations miss."""
    wheels = tmp_path / "wheels"
    sdist = header_requirement_sdist(tmp_path / "sdists", wheels)
    first, _ = build(tmp_path, sdist, "first", "--find-links", str(wheels))
    second, _ = build(tmp_path, sdist, "second", "--find-links", str(wheels), "--force")
    calls, hits, misses = stats(first)
    assert hits == 0 and misses >= 1
    assert stats(second) == (calls, misses, 0)
    assert extension_value(tmp_path, "first") == extension_value(tmp_path, "second") == 9


@pytest.mark.parametrize(("changed", "expected"), [({"base": 2}, 2), ({"offset": 10}, 11)], ids=["header", "define"])
def test_a_changed_header_or_define_recompiles(tmp_path: Path, changed: dict[str, int], expected: int) -> None:
    build(tmp_path, c_extension_sdist(tmp_path / "before"), "before")
    after, _ = build(tmp_path, c_extension_sdist(tmp_path / "after", base=changed.get("base", 1),
                                                 offset=changed.get("offset", 0)), "after")
    assert after["compiler_hits"] == 0 and after["compiler_misses"] >= 1
    assert extension_value(tmp_path, "before") == 1
    assert extension_value(tmp_path, "after") == expected


def test_the_key_is_the_preprocessed_source(tmp_path: Path) -> None:
    """A comment changed in the .c still hits (its preprocessed text is the same); a header changed under the
    same .c does not."""
    build(tmp_path, c_extension_sdist(tmp_path / "a", base=5, padding="a"), "a")
    comment, _ = build(tmp_path, c_extension_sdist(tmp_path / "b", base=5, padding="b"), "b")
    header, _ = build(tmp_path, c_extension_sdist(tmp_path / "c", base=7, padding="a"), "c")
    assert comment["compiler_hits"] >= 1 and comment["compiler_misses"] == 0
    assert header["compiler_hits"] == 0 and header["compiler_misses"] >= 1
    assert [extension_value(tmp_path, name) for name in ("a", "b", "c")] == [5, 5, 7]


def test_a_full_cache_only_slows_builds(tmp_path: Path) -> None:
    """A cap no object fits under: every build compiles, none fails, every wheel is right."""
    for base in (1, 2):
        record, _ = build(tmp_path, c_extension_sdist(tmp_path / f"s{base}", base=base), f"wh{base}", "--force",
                          "--compiler-cache-size", "1K")
        assert extension_value(tmp_path, f"wh{base}") == base
        assert record["compiler_calls"] >= 1


def test_a_cache_folder_that_cannot_be_written_is_left_out_with_a_note(tmp_path: Path) -> None:
    """ccache fails every compilation when its folder is unusable: the run finds out first, and builds without."""
    cache_dir = tmp_path / "state" / "compiler-cache" / "packages"
    cache_dir.parent.mkdir(parents=True)
    cache_dir.write_text("not a folder\n")
    record, result = build(tmp_path, c_extension_sdist(tmp_path / "sdists", base=3), "wh")
    assert "no compiler cache:" in result.stderr and "File exists" in result.stderr
    assert record["compiler_calls"] is None
    assert extension_value(tmp_path, "wh") == 3
    _, refused = build(tmp_path, c_extension_sdist(tmp_path / "sdists", base=3), "wh2", "--compiler-cache", "ccache",
                       expect=2)
    assert refused.stderr.count("\n") == 1 and "--compiler-cache ccache:" in refused.stderr


def test_a_broken_ccache_on_path_is_left_out_with_a_note(tmp_path: Path) -> None:
    broken = tmp_path / "broken-bin"
    broken.mkdir()
    script = broken / "ccache"
    script.write_text("#!/bin/sh\necho 'ccache: error: broken on purpose' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{broken}{os.pathsep}{os.environ['PATH']}"}
    record, result = build(tmp_path, c_extension_sdist(tmp_path / "sdists", base=4), "wh", env=env)
    note = [line for line in result.stderr.splitlines() if "no compiler cache" in line]
    assert len(note) == 1 and str(script) in note[0] and "broken on purpose" in note[0]
    assert record["compiler_calls"] is None
    assert extension_value(tmp_path, "wh") == 4


def test_off_and_not_installed(tmp_path: Path) -> None:
    sdist = c_extension_sdist(tmp_path / "sdists")
    record, result = build(tmp_path, sdist, "off", env={"ORCHESTRATE_COMPILER_CACHE": "off"})
    assert record["compiler_calls"] is None and "compiler cache" not in result.stderr
    assert not (tmp_path / "state" / "compiler-cache").exists()
    report = tmp_path / "missing.json"
    missing = orchestrate("build", sdist, "-w", tmp_path / "missing", "--report-json", report, *backend_index_args(),
                          prelude="import orchestrator.build.compilercache as c; c.find_ccache = lambda: None")
    assert missing.returncode == 0, missing.stderr
    assert "no compiler cache: ccache is not installed" in missing.stderr
    assert json.loads(report.read_text())["settings"]["compiler_cache"] == "none"


STATS_LOG = """\
# /tmp/b/src/a.c
direct_cache_hit
local_storage_hit
local_storage_read_hit
# /tmp/b/src/b.c
preprocessed_cache_hit
direct_cache_miss
# src/c.c
cache_miss
direct_cache_miss
preprocessed_cache_miss
local_storage_write
# /tmp/b/build/a.o
called_for_link
# conftest.c
compile_failed
# d.c
direct_cache_hit
remote_storage_hit
remote_storage_read_hit
"""


@pytest.mark.parametrize(("log", "expected"), [
    (STATS_LOG, CompilerStats(calls=6, hits=3, misses=1)),  # a link and a failed compile: calls, neither;
    # a remote hit counts once
    ("", CompilerStats(calls=0, hits=0, misses=0)),  # ccache ran for nothing
    (None, None),  # no file: ccache never ran
])
def test_read_stats(tmp_path: Path, log: str | None, expected: CompilerStats | None) -> None:
    if log is not None:
        (tmp_path / "compiler-cache.log").write_text(log)
    assert read_stats(tmp_path) == expected


@pytest.mark.parametrize(("size", "expected"), [(5 * 1024**3, "5242880Ki"), (1024, "1Ki"), (0, "1Ki")])
def test_the_hooks_environment(tmp_path: Path, size: int, expected: str) -> None:
    cache = CompilerCache(executable="/usr/bin/ccache", cache_dir=tmp_path / "c", wrapper_dir=tmp_path / "bin",
                          max_size_bytes=size)
    env = cache.environ({"PATH": "/usr/bin:/bin"}, build_dir=tmp_path / "build", package="Zope.Interface")
    assert env == {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "CCACHE_DIR": str(tmp_path / "c" / "zope-interface"),
                   "CCACHE_BASEDIR": str(tmp_path / "build"), "CCACHE_NOHASHDIR": "1",
                   "CCACHE_STATSLOG": str(tmp_path / "build" / "compiler-cache.log"), "CCACHE_MAXSIZE": expected}
    assert CompilerCache.from_json(json.loads(json.dumps(cache.to_json()))) == cache


@pytest.mark.usefixtures("sandboxed")
def test_a_ccache_on_path_wins_and_is_seen_in_the_sandbox(tmp_path: Path) -> None:
    """A ccache installed under a folder the sandbox hides (/tmp here, as a home folder would be) is bound in;
    else the compilers' symlinks dangle there and every build compiles without a cache, silently."""
    from orchestrator.build.compilercache import find_ccache

    packaged = find_ccache()
    if packaged is None:
        pytest.skip("no ccache to copy")
    own = tmp_path / "own-bin"
    own.mkdir()
    shutil.copy2(packaged, own / "ccache")
    report = tmp_path / "report.json"
    result = orchestrate("build", c_extension_sdist(tmp_path / "sdists", base=6), "-w", tmp_path / "wh",
                         "--report-json", report, *backend_index_args(),
                         env={"PATH": f"{own}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    (record,) = data["builds"]
    assert data["settings"]["compiler_cache"].startswith(f"ccache {own / 'ccache'},")
    assert record["compiler_misses"] >= 1
    assert extension_value(tmp_path, "wh") == 6


@pytest.mark.usefixtures("sandboxed")
def test_a_ccache_that_fails_during_the_run_only_slows_the_build(tmp_path: Path) -> None:
    """A ccache that passes the run's test compile, then fails every compilation of the build (as it does
    when its cache turns unusable): the backend runs once more without it, and the wheel is right."""
    own = tmp_path / "own-bin"
    own.mkdir()
    script = own / "ccache"
    # Called as a compiler through the wrappers: the test file compiles (with the next compiler on PATH)...
    script.write_text('#!/bin/sh\ncase "$*" in *probe.c*) PATH="${PATH#*:}" exec "$(basename "$0")" "$@";; esac\n'
                      # ...every other compilation fails, as ccache does with an unusable cache
                      'echo "ccache: error: failing on purpose" >&2\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    record, result = build(tmp_path, c_extension_sdist(tmp_path / "sdists", base=8), "wh",
                           env={"PATH": f"{own}{os.pathsep}{os.environ['PATH']}"})
    assert "no compiler cache" not in result.stderr  # it passed the test compile
    log = Path(record["log"]).read_text()
    assert "ccache: error: failing on purpose" in log and "building again without the compiler cache" in log
    assert extension_value(tmp_path, "wh") == 8


def _package_cache(root: Path, name: str, kib: int, written: float) -> None:
    folder = root / name / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "entry").write_bytes(b"x" * kib * 1024)
    for path in (folder / "entry", folder, folder.parent, root / name):
        os.utime(path, (written, written))


@pytest.mark.parametrize(("ages_h", "cap_kib", "kept"), [
    ({"a": 3, "b": 5, "c": 4}, 9, {"a", "c"}),  # the least recently written goes first, until the sum fits
    ({"a": 3, "b": 5, "c": 4}, 12, {"a", "b", "c"}),  # the sum fits already
    ({"a": 3, "b": 5, "c": 4}, 1, set()),
    ({"a": 0.5, "b": 5, "c": 0.2}, 1, {"a", "c"}),  # written within the hour: maybe compiling now
], ids=["oldest-first", "fits", "all-old", "in-use"])
def test_trim_keeps_the_package_caches_under_the_cap(tmp_path: Path, ages_h: dict[str, float], cap_kib: int,
                                                     kept: set[str]) -> None:
    now = 1_000_000_000.0
    cache = CompilerCache(executable="/usr/bin/ccache", cache_dir=tmp_path / "compiler-cache" / "packages",
                          wrapper_dir=tmp_path / "compiler-cache" / "bin", max_size_bytes=cap_kib * 1024)
    for name, hours in ages_h.items():
        _package_cache(cache.cache_dir, name, 4, now - hours * 3600)
    legacy = tmp_path / "compiler-cache" / "ccache" / "0"  # the one cache shared by every package, before
    legacy.mkdir(parents=True)
    removed = trim(cache, now=now)
    assert {path.name for path in cache.cache_dir.iterdir()} == kept
    assert sorted(removed, key=lambda name: -ages_h[name]) == removed  # oldest first
    assert set(removed) == set(ages_h) - kept
    assert not legacy.parent.exists()


def test_runs_trim_the_caches_at_most_hourly(tmp_path: Path) -> None:
    """Trimming reads every file's size; a run does it only if no run did in the last hour."""
    from orchestrator.build.compilercache import for_run

    state, hour = tmp_path / "state", 3600
    packages = state / "compiler-cache" / "packages"
    _package_cache(packages, "old", 4, time.time() - 5 * hour)
    cache, note = for_run(state_dir=state, max_size_bytes=1024)
    assert cache is not None and note is None
    assert not (packages / "old").exists()  # the first run trims
    _package_cache(packages, "older", 4, time.time() - 6 * hour)
    for_run(state_dir=state, max_size_bytes=1024)
    assert (packages / "older").exists()  # the next one, within the hour, does not walk the cache again
    os.utime(packages / ".trimmed", (time.time() - 2 * hour,) * 2)
    for_run(state_dir=state, max_size_bytes=1024)
    assert not (packages / "older").exists()
