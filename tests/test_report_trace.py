"""``--trace``: the Chrome trace of a real run of fake builds (some failing, some waiting for memory),
checked against the Trace Event Format: the events' schema, no two events overlapping on a lane,
every lane named, every build present with its status, the counters sampled."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from conftest import orchestrate
from sdists import make_sdist

COMMON = {"ph": str, "name": str, "pid": int}
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "X": {**COMMON, "cat": str, "tid": int, "ts": int, "dur": int, "args": dict},
    "C": {**COMMON, "ts": int, "args": dict},
    "M": {**COMMON, "tid": int, "args": dict},
}
"""The fields each kind of event must have, and their types."""


def check_schema(event: dict[str, Any]) -> None:
    assert event["ph"] in SCHEMA, event
    for field, kind in SCHEMA[event["ph"]].items():
        assert isinstance(event[field], kind), (field, event)
    if event["ph"] == "X":
        assert event["ts"] >= 0 and event["dur"] >= 0, event
        assert {"status", "peak_rss_mib", "wait_reason", "name"} <= set(event["args"]) or event["cat"] in (
            "download", "install"), event
    if event["ph"] == "C":
        assert event["args"] and all(isinstance(value, int | float) for value in event["args"].values()), event
    if event["ph"] == "M":
        assert event["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index"), event


def test_trace_of_a_real_run(tmp_path: Path) -> None:
    for i in range(5):
        make_sdist(tmp_path / "sdists", f"ok{i}", sleep=0.3 + 0.1 * i, alloc_mb=30)
    make_sdist(tmp_path / "sdists", "bad", sleep=0.2, fail=True)
    trace = tmp_path / "run.trace.json"
    result = orchestrate("build", tmp_path / "sdists", "-w", tmp_path / "wh", "--max-builds", "3",
                         "--memory-limit", "1G", "--memory-per-build", "400M", "--max-cpu", "0",
                         "--trace", trace, "--report-json", tmp_path / "run.json")
    assert result.returncode == 1, result.stderr
    document = json.loads(trace.read_text())
    events = document["traceEvents"]
    for event in events:
        check_schema(event)
    report = json.loads((tmp_path / "run.json").read_text())
    assert any(build["waits"].get("memory_limit") for build in report["builds"])  # some waited for memory

    complete = [event for event in events if event["ph"] == "X"]
    statuses = {event["args"]["name"]: event["args"]["status"] for event in complete}
    assert statuses == {**{f"ok{i}": "built" for i in range(5)}, "bad": "failed"}
    phases = defaultdict(set)
    for event in complete:
        phases[event["args"]["name"]].add(event["cat"])
    assert phases["ok0"] == {"preparing", "waiting", "building", "publishing"}
    assert "building" in phases["bad"] and "publishing" not in phases["bad"]
    waited = [event for event in complete if event["cat"] == "waiting" and event["args"]["wait_reason"]]
    assert waited and all("memory limit" in event["args"]["wait_reason"] for event in waited)

    lanes: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for event in complete:
        lanes[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
    for spans in lanes.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, "two events overlap on one lane"
    names = {(event["pid"], event["tid"]): event["args"]["name"] for event in events
             if event["ph"] == "M" and event["name"] == "thread_name"}
    assert set(lanes) <= set(names)
    assert {event["args"]["name"] for event in events if event["ph"] == "M" and event["name"] == "process_name"} == {
        "builds"}

    counters = defaultdict(list)
    for event in events:
        if event["ph"] == "C":
            counters[event["name"]].append(event["args"])
    assert set(counters) == {"builds", "memory (MiB)", "CPUs"}
    assert max(args["running"] for args in counters["builds"]) == 2  # two 400M builds fit the 1G limit
    assert max(args["builds RSS"] for args in counters["memory (MiB)"]) > 30
