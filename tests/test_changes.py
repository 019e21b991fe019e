"""The prediction of a new release's build time from the digests of its compiled sources (pure)."""

from __future__ import annotations

import pytest

from orchestrator.policy.changes import (
    SEEN_BUILDS,
    CompileRecord,
    SourceFile,
    missed_share,
    predict_duration,
    seen_in,
    updated_record,
)


def unit(path: str, digest: str, weight: int, *, includes: tuple[str, ...] = (), names: tuple[str, ...] = ()
         ) -> SourceFile:
    return SourceFile(path=path, size=weight, digest=digest, unit=True, weight=weight, includes=frozenset(includes),
                      names=frozenset(names))


def header(path: str, digest: str, *, body: str | None = None, defines: tuple[tuple[str, str], ...] = (),
           includes: tuple[str, ...] = (), names: tuple[str, ...] = ()) -> SourceFile:
    return SourceFile(path=path, size=10, digest=digest, unit=False, body=body or f"body-of-{digest}",
                      defines=defines, includes=frozenset(includes), names=frozenset(names))


# The previous release: three units (weights 600, 300, 100), a header of code, and a version header
# whose define lines are the only thing a release changes.
BIG = unit("src/big.c", "big1", 600, includes=("util.h",))
SMALL = unit("src/small.c", "small1", 300, names=("PKG_VERSION",), includes=("version.h",))
TINY = unit("src/tiny.c", "tiny1", 100, includes=("version.h",))
UTIL = header("src/util.h", "util1")
VERSION = header("src/version.h", "version1", body="version-body", defines=(("PKG_VERSION", "line1"),))
PREVIOUS = [BIG, SMALL, TINY, UTIL, VERSION]
SEEN = (frozenset({"big1", "small1", "tiny1", "util1", "body-of-util1", "version1", "version-body", "line1"}),)


@pytest.mark.parametrize(("files", "share"), [
    pytest.param(PREVIOUS, 0.0, id="nothing-changed"),
    pytest.param([unit("src/big.c", "big2", 600, includes=("util.h",)), SMALL, TINY, UTIL, VERSION], 0.6,
                 id="one-unit-changed"),
    pytest.param([BIG, SMALL, TINY, header("src/util.h", "util2"), VERSION], 0.6,
                 id="a-header-changed:-its-includer-misses"),
    pytest.param([BIG, SMALL, TINY, header("src/util.h", "util2", includes=("deep.h",)), VERSION,
                  header("src/deep.h", "deep2")], 0.6, id="a-new-header-included-through-another"),
    # Only PKG_VERSION's line changed: small.c names it and misses; tiny.c includes the header but
    # preprocesses to the same text, so it hits.
    pytest.param([BIG, SMALL, TINY, UTIL, header("src/version.h", "version2", body="version-body",
                                                 defines=(("PKG_VERSION", "line2"),))], 0.3,
                 id="a-define-only-change:-units-naming-the-macro-miss"),
    # The header's other lines changed as well: every includer misses.
    pytest.param([BIG, SMALL, TINY, UTIL, header("src/version.h", "version2", body="version-body2",
                                                 defines=(("PKG_VERSION", "line2"),))], 0.4,
                 id="a-header-changed-beyond-its-defines"),
    # A header naming the redefined macro in its code changes for its includers (big.c, through util.h).
    pytest.param([BIG, SMALL, TINY, header("src/util.h", "util1", names=("PKG_VERSION",)),
                  header("src/version.h", "version2", body="version-body", defines=(("PKG_VERSION", "line2"),))],
                 0.9, id="a-header-naming-the-redefined-macro"),
    pytest.param([unit("src/new.c", "new1", 400), BIG, SMALL, TINY, UTIL, VERSION], 400 / 1400, id="a-new-unit"),
    pytest.param([BIG, SMALL, UTIL, VERSION], 0.0, id="a-removed-unit-changes-nothing"),
    pytest.param([UTIL, VERSION], 0.0, id="no-unit"),
    # Matched by base name: another folder's util.h changed too, and the compiler may find either.
    pytest.param([*PREVIOUS, header("include/util.h", "other-util")], 0.6, id="a-header-of-the-same-name"),
])
def test_missed_share(files: list[SourceFile], share: float) -> None:
    assert missed_share(files, SEEN) == pytest.approx(share)


def test_a_file_any_recent_build_compiled_is_in_the_cache() -> None:
    """A release that goes back to the text of two builds ago hits: the cache still holds it."""
    older = frozenset({"big0"})
    assert missed_share([unit("src/big.c", "big0", 600), SMALL], (frozenset({"small1"}), older)) == 0.0
    assert missed_share([unit("src/big.c", "big0", 600), SMALL], (frozenset({"small1"}),)) == pytest.approx(2 / 3)


RECORD = CompileRecord(version="1.0", other_s=1.5, compile_s=20.0, seen=SEEN)


@pytest.mark.parametrize(("record", "files", "expected"), [
    pytest.param(RECORD, PREVIOUS, 1.5, id="nothing-changed:-the-time-outside-compiling"),
    pytest.param(RECORD, [unit("src/big.c", "big2", 600, includes=("util.h",)), SMALL, TINY, UTIL, VERSION],
                 1.5 + 20.0 * 0.6, id="the-changed-share-of-the-full-compile"),
    pytest.param(None, PREVIOUS, None, id="no-record"),
    pytest.param(CompileRecord(version="1.0", other_s=1.5, compile_s=None, seen=SEEN), PREVIOUS, None,
                 id="no-build-missed-yet"),
])
def test_predict_duration(record: CompileRecord | None, files: list[SourceFile], expected: float | None) -> None:
    assert predict_duration(record, files) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("wall_s", "backend_s", "hits", "misses", "other_s", "compile_s"), [
    # Cold: 10 s of build_wheel, 0.4 s of it the backend's own; 9.6 s compiling all 4; 2 s before and after.
    pytest.param(12.0, 10.0, 0, 4, 2.4, 9.6, id="every-compilation-missed"),
    # One of four missed: its 2.6 s stand for a quarter of the full compile.
    pytest.param(4.0, 3.0, 3, 1, 1.4, 10.4, id="one-of-four-missed"),
    # Nothing missed: the time outside compiling is all of it; the full-compile time stays the last one's.
    pytest.param(1.0, 0.5, 4, 0, 1.0, 7.0, id="nothing-missed"),
    pytest.param(0.5, 0.3, 0, 1, 0.5, 0.0, id="build_wheel-shorter-than-the-floor"),
])
def test_updated_record(wall_s: float, backend_s: float, hits: int, misses: int, other_s: float,
                        compile_s: float) -> None:
    before = CompileRecord(version="0.9", other_s=9.0, compile_s=7.0, seen=(frozenset({"old"}),))
    after = updated_record(before, version="1.0", seen=seen_in(PREVIOUS), wall_s=wall_s, backend_s=backend_s, hits=hits,
                           misses=misses)
    assert after.version == "1.0"
    assert after.other_s == pytest.approx(other_s) and after.compile_s == pytest.approx(compile_s)
    assert after.seen == (SEEN[0], frozenset({"old"}))  # this build's files first: their texts, bodies, define lines


def test_a_first_record_that_missed_nothing_has_no_compile_time() -> None:
    record = updated_record(None, version="1.0", seen=seen_in(PREVIOUS), wall_s=1.0, backend_s=0.5, hits=4, misses=0)
    assert record.compile_s is None and predict_duration(record, PREVIOUS) is None


def test_the_record_keeps_the_last_builds_only() -> None:
    record = None
    for number in range(SEEN_BUILDS + 2):
        record = updated_record(record, version=str(number), seen=seen_in([unit("a.c", f"a{number}", 1)]), wall_s=1.0,
                                backend_s=1.0, hits=0, misses=1)
    assert record is not None
    assert record.seen == tuple(frozenset({f"a{number}"}) for number in (4, 3, 2))
