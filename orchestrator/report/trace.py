"""The run as Chrome trace events (``--trace``), for Perfetto and chrome://tracing.

The format is the Trace Event Format's JSON object form: ``X`` (complete) events, one per
phase of each bar of :mod:`orchestrator.report.timeline`, on a ``tid`` per lane (never two
overlapping on one), grouped in a process per stage (builds, downloads, installs); ``C``
(counter) events for the sampled series; ``M`` (metadata) events naming each process and lane.
Times are microseconds from the run's start. Written by hand: it is a few dictionaries, and the
trace libraries on PyPI record a live program rather than convert a finished run. The events are
made as they are written, a bar at a time, from the results on disk (``records``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.atomic import atomic_write_json
from orchestrator.report import RunReport
from orchestrator.report.records import JsonArray
from orchestrator.report.timeline import GROUPS, Bar, Layout, lay_out

PIDS = {"build": 1, "download": 2, "install": 3}
"""The trace's process of each stage; the counters go in the builds' process."""
PROCESS_NAMES = {"build": "builds", "download": "downloads", "install": "installs"}
MiB = 1024 * 1024


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _args(bar: Bar) -> dict[str, Any]:
    record = bar.record
    args: dict[str, Any] = {"name": bar.name, "version": bar.version, "status": bar.status}
    if bar.group == "build":
        args.update(peak_rss_mib=round(record.peak_rss_bytes / MiB, 1),
                    predicted_rss_mib=round(record.predicted_rss_bytes / MiB, 1)
                    if record.predicted_rss_bytes is not None else None,
                    cpu_s=round(record.cpu_s, 2), waited_s=round(record.waited_s, 2),
                    wait_reason=record.wait_reason, attempts=record.attempts,
                    memory_requeues=record.memory_requeues)
    if getattr(record, "error", None):
        args["error"] = record.error
    return args


def trace_events(report: RunReport) -> list[dict[str, Any]]:
    """Every event of the run's trace: made again at each iteration, never all held (see ``JsonArray``)."""
    layout = lay_out(report.builds, report.downloads, report.installs, report.started_at)
    return JsonArray(lambda: _events(report, layout))


def _events(report: RunReport, layout: Layout) -> Iterator[dict[str, Any]]:
    origin = report.started_at
    for group in GROUPS:
        lanes = range(layout.counts[group])
        if not lanes and group != "build":
            continue
        pid = PIDS[group]
        yield {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": PROCESS_NAMES[group]}}
        yield {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}}
        for lane in lanes:
            yield {"ph": "M", "name": "thread_name", "pid": pid, "tid": lane + 1,
                   "args": {"name": f"{group} slot {lane + 1}"}}
            yield {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": lane + 1,
                   "args": {"sort_index": lane + 1}}
    for bar in layout.bars():
        args = _args(bar)
        for segment in bar.segments:
            yield {"ph": "X", "name": f"{bar.label}: {segment.phase}", "cat": segment.category,
                   "pid": PIDS[bar.group], "tid": bar.lane + 1, "ts": _us(segment.start),
                   "dur": _us(segment.end) - _us(segment.start), "args": args}
    for sample in report.samples.points:
        ts = _us(sample.at - origin)
        pid = PIDS["build"]
        yield {"ph": "C", "name": "builds", "pid": pid, "ts": ts,
               "args": {"running": sample.running, "waiting": sample.waiting, "preparing": sample.preparing}}
        yield {"ph": "C", "name": "memory (MiB)", "pid": pid, "ts": ts,
               "args": {"builds RSS": round(sample.rss / MiB, 1), "reserved": round(sample.reserved / MiB, 1),
                        "free": round(sample.available_memory / MiB, 1)}}
        if sample.cpu_busy is not None:
            yield {"ph": "C", "name": "CPUs", "pid": pid, "ts": ts,
                   "args": {"busy": round(sample.cpu_busy, 2), "usable": sample.cpu_count}}


def write_trace(report: RunReport, path: Path) -> None:
    """Write the run's trace atomically, its events made as they are written."""
    document = {"traceEvents": trace_events(report), "displayTimeUnit": "ms",
                "otherData": {**report.context, "started_at": report.started_at}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, document)
