"""The end of a build's log that the terminal summary, the HTML page and JUnit XML show (``report/logtail.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.report.logtail import TAIL_BYTES, log_tail


@pytest.mark.parametrize(("content", "lines", "expected"), [
    (b"one\ntwo\nthree\n", 2, ["two", "three"]),
    (b"one\ntwo\nthree", 2, ["two", "three"]),  # no newline at the end
    (b"one\ntwo\n", 5, ["one", "two"]),  # fewer lines than asked
    (b"one\n\n\n", 5, ["one"]),  # trailing blank lines are not the tail
    (b"", 5, []),
    (b"page\x0cbreak\r\nnext\n", 5, ["page\x0cbreak\r", "next"]),  # newlines only: form feeds stay in a line
    (b"caf\xe9\nok\n", 5, ["caf\ufffd", "ok"]),  # not UTF-8: replaced, never an error
])
def test_the_tail_is_the_last_lines_split_at_newlines(tmp_path: Path, content: bytes, lines: int,
                                                     expected: list[str]) -> None:
    log = tmp_path / "build.log"
    log.write_bytes(content)
    assert log_tail(log, lines) == expected
    assert log_tail(str(log), lines) == expected


def test_a_long_log_is_read_from_its_end_only(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_bytes(b"x" * (4 * TAIL_BYTES) + b"\nerror: one\nerror: two\n")
    assert log_tail(log, 2) == ["error: one", "error: two"]
    (first,) = log_tail(log, 3)[:1]
    assert first == "x" * (TAIL_BYTES - len(b"\nerror: one\nerror: two\n"))  # the part of the long line read


@pytest.mark.parametrize("log", [None, "", "missing.log"])
def test_no_log_or_an_unreadable_one_gives_no_tail(tmp_path: Path, log: str | None) -> None:
    assert log_tail(tmp_path / log if log else log, 5) == []
