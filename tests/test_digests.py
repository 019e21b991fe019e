"""Reading an sdist's compiled sources for the prediction: digests, weights, includes, bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from sdists import make_sdist, make_tree

from orchestrator.build import digests
from orchestrator.build.digests import source_files
from orchestrator.build.sources import sdist_source, tree_source
from orchestrator.policy.changes import SourceFile

MODULE_C = b'#include <Python.h>\n#include "sub/util.h"\n#include "inline.c"\nint a;\nint b;\nint c;\n'
UTIL_H = b'#ifndef UTIL_H\n#define UTIL_H\n#define PKG_VERSION "1.0"\nint util(int x);\n#endif\n'
FILES = {
    "src/module.c": MODULE_C,
    "src/sub/util.h": UTIL_H,
    "src/inline.c": b"static int inlined;\n",  # included by module.c: not compiled on its own
    "src/fast.pyx": b"from libc.math cimport sqrt\ncimport numpy\ninclude 'shared.pxi'\n\ndef f():\n    pass\n",
    "src/gen.pyx": b"def g(): pass\n",
    "src/gen.c": b"/* Cython's output */ int g;\n",  # the generated C is compiled, and stands for gen.pyx
    "src/_testcapi.c": b"int t;\n",
    "tests/probe.cpp": b"int p;\n",
    "README.rst": b"not compiled\n",
}


def by_path(files: list[SourceFile] | None) -> dict[str, SourceFile]:
    assert files is not None
    return {file.path: file for file in files}


@pytest.mark.parametrize("fmt", ["tar.gz", "zip", "tar.bz2"])
def test_the_compiled_sources_of_an_sdist(tmp_path: Path, fmt: str) -> None:
    sdist = make_sdist(tmp_path, "pkg", "1.0", fmt=fmt, extra_files=FILES)
    files = by_path(source_files(sdist_source(sdist)))
    # Relative to the sdist's top folder; README and the backend's Python files are not compiled sources.
    assert set(files) == {"src/module.c", "src/sub/util.h", "src/inline.c", "src/fast.pyx", "src/gen.pyx",
                          "src/gen.c", "src/_testcapi.c", "tests/probe.cpp"}
    module = files["src/module.c"]
    assert module.unit and module.weight == digests.UNIT_BASE + 3  # three statements
    assert module.includes == {"Python.h", "util.h", "inline.c"}
    assert module.size == len(MODULE_C)
    assert {"a", "b", "c", "int"} <= module.names
    # Cython: each of its six lines counts CYTHON_LINE.
    fast = files["src/fast.pyx"]
    assert fast.unit and fast.weight == digests.UNIT_BASE + 6 * digests.CYTHON_LINE
    assert fast.includes == {"math.pxd", "numpy.pxd", "shared.pxi"}
    assert files["src/gen.c"].unit and "gen.pyx" in files["src/gen.c"].includes
    for not_compiled_alone in ("src/inline.c", "src/gen.pyx", "src/_testcapi.c", "tests/probe.cpp"):
        assert not files[not_compiled_alone].unit and files[not_compiled_alone].weight == 0, not_compiled_alone
    util = files["src/sub/util.h"]
    assert not util.unit and [name for name, _ in util.defines] == ["UTIL_H", "PKG_VERSION"]
    assert "util" in util.names and "PKG_VERSION" not in util.names  # names outside the define lines


def test_the_same_text_has_the_same_digests_whatever_the_archive_or_tree(tmp_path: Path) -> None:
    tar = by_path(source_files(sdist_source(make_sdist(tmp_path / "a", "pkg", "1.0", extra_files=FILES))))
    zipped = by_path(source_files(sdist_source(make_sdist(tmp_path / "b", "pkg", "2.0", fmt="zip",
                                                          extra_files=FILES))))
    tree = make_tree(tmp_path / "tree", "pkg", "1.0")
    for path, data in FILES.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    (tree / ".git").mkdir()
    (tree / ".git" / "hidden.c").write_bytes(b"int hidden;\n")
    from_tree = by_path(source_files(tree_source(tree)))
    assert tar == zipped == from_tree


def test_a_define_only_change_keeps_the_body(tmp_path: Path) -> None:
    bumped = {**FILES, "src/sub/util.h": UTIL_H.replace(b'"1.0"', b'"1.1"')}
    before = by_path(source_files(sdist_source(make_sdist(tmp_path / "a", "pkg", "1.0", extra_files=FILES))))
    after = by_path(source_files(sdist_source(make_sdist(tmp_path / "b", "pkg", "1.1", extra_files=bumped))))
    old, new = before["src/sub/util.h"], after["src/sub/util.h"]
    assert old.digest != new.digest and old.body == new.body
    assert dict(old.defines)["UTIL_H"] == dict(new.defines)["UTIL_H"]
    assert dict(old.defines)["PKG_VERSION"] != dict(new.defines)["PKG_VERSION"]
    assert before["src/module.c"] == after["src/module.c"]


def test_a_pure_python_sdist_has_none(tmp_path: Path) -> None:
    assert source_files(sdist_source(make_sdist(tmp_path, "pure", "1.0"))) == []


def test_past_the_bound_or_damaged_there_is_no_prediction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdist = make_sdist(tmp_path / "big", "pkg", "1.0", extra_files=FILES)
    monkeypatch.setattr(digests, "MAX_READ_BYTES", len(MODULE_C) + len(UTIL_H) - 1)
    assert source_files(sdist_source(sdist)) is None  # read until the bound, not to the end
    monkeypatch.undo()
    damaged = tmp_path / "damaged" / "pkg-1.0.tar.gz"
    damaged.parent.mkdir()
    damaged.write_bytes(sdist.read_bytes()[:200])
    assert source_files(sdist_source(damaged)) is None
