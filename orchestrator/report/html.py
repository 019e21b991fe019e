"""The run report as one self-contained HTML file (``--report-html``): no script, style or font from
elsewhere, readable offline.

Header (what ran, where, under which limits, what came of it), the timeline and the charts under
it on one time axis (``svg.py``), a table of builds sortable by any column (a few lines of inline
script), and the failures with the last lines of their logs. Every string from the run (package
names, errors, log lines) is escaped. The page is written piece by piece, a bar or a row at a
time, from the results on disk (``records``): it never exists whole in memory.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from orchestrator.atomic import atomic_write
from orchestrator.jobs import BuildResult
from orchestrator.report import RunReport
from orchestrator.report.logtail import log_tail
from orchestrator.report.svg import (
    COLOURS,
    FAILED,
    STOPPED,
    Axis,
    Line,
    chart,
    clock,
    esc,
    timeline,
)
from orchestrator.report.timeline import Layout, lay_out
from orchestrator.units import format_size

LOG_LINES = 25
"""Lines of a failed build's log the report shows."""
WAIT_NAMES = {"queue": "behind others", "builds": "build cap", "memory_limit": "memory limit",
              "free_memory": "free memory", "cpu": "CPU cap", "load": "load cap"}
"""What held a build back (``BuildResult.waits``), in the table's words."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;]*[A-Za-z]")

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:18px 24px;color:#1a202c;max-width:1240px}
h1{font-size:20px;margin:0 0 6px}h2{font-size:16px;margin:22px 0 6px}h3{font-size:14px;margin:14px 0 4px}
dl{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:2px 14px;margin:8px 0}
dt{color:#4a5568}dd{margin:0}dd.wide{grid-column:span 3}
code{font-size:12px}.chips span{display:inline-block;padding:1px 9px;border-radius:10px;margin-right:6px;
font-weight:600;background:#edf2f7}.chips .failed{background:#fed7d7;color:#9b2c2c}.chips .built{background:#c6f6d5}
.legend-row{margin:4px 0 2px;font-size:12px}.legend-row span{margin-right:14px;white-space:nowrap}
.legend-row i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:-1px}
svg{display:block}svg text{font:11px system-ui,sans-serif;fill:#2d3748}svg .group{font-weight:600;font-size:12px}
svg .ctitle{font-weight:600}svg .grid{stroke:#e2e8f0}svg .stripe{fill:#f7fafc}svg .plot{fill:#fff;stroke:#cbd5e0}
svg .track{fill:#e2e8f0}svg .label{fill:#111;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-opacity:.8}
svg .mark{fill:#d62728;font-weight:700}svg .tick{fill:#718096}svg g.bar:hover rect{opacity:.8}
table{border-collapse:collapse;font-size:12px;margin-top:4px}th,td{padding:3px 8px;border-bottom:1px solid #e2e8f0;
text-align:left;vertical-align:top}th{cursor:pointer;background:#f7fafc;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.failed td{background:#fff5f5}
tr.failed td.status{color:#c53030;font-weight:700}td.why{max-width:420px;color:#4a5568}
pre{background:#1a202c;color:#e2e8f0;padding:8px 10px;font-size:11px;overflow-x:auto;border-radius:4px}
"""

SORT_SCRIPT = """
for (const th of document.querySelectorAll("table.sortable th")) th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], i = th.cellIndex;
  const dir = th.dataset.dir = th.dataset.dir === "desc" ? "asc" : "desc";
  const key = r => { const c = r.cells[i];
    return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent; };
  const rows = [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    const o = typeof x === "number" ? x - y : String(x).localeCompare(String(y)); return dir === "asc" ? o : -o; });
  body.append(...rows);
});
"""


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _size(value: object) -> str:
    return format_size(value) if isinstance(value, int) and value else "none"


def _header(report: RunReport, makespan: float) -> str:
    context, settings, machine = report.context, report.settings, report.machine
    limits = [f"{settings['max_builds']} builds at once" if settings.get("max_builds") else None,
              f"memory limit {_size(settings.get('memory_limit'))}" if "memory_limit" in settings else None,
              f"free-memory floor {_size(settings.get('min_free_memory'))}" if "min_free_memory" in settings else None,
              f"{_size(settings.get('memory_per_build'))} per new build" if "memory_per_build" in settings else None,
              f"CPU cap {settings['max_cpu'] * 100:g}%" if settings.get("max_cpu") else None,
              f"load cap {settings['max_load']:g}" if settings.get("max_load") else None,
              f"{settings['max_downloads']} downloads" if settings.get("max_downloads") else None,
              f"{settings['max_installs']} installs" if settings.get("max_installs") else None]
    rows = [("Command", f"<code>{esc(context.get('command_line', ''))}</code>"),
            ("Limits", esc(", ".join(limit for limit in limits if limit) or "none")),
            ("Interpreter", esc(context.get("interpreter", ""))),
            *([("Sandbox", esc(settings["sandbox"]))] if settings.get("sandbox") else []),
            ("Started", esc(_utc(report.started_at))),
            ("Makespan", esc(f"{makespan:.1f} s" + (f", interrupted ({report.interrupted})"
                                                    if report.interrupted else ""))),
            ("Machine", esc(f"{machine.get('cpus', '?')} CPUs ({machine.get('usable_cpus', '?')} usable), "
                            f"{format_size(machine.get('total_memory', 0))} memory")),
            ("Platform", esc(context.get("platform", ""))),
            ("Tool", esc(f"orchestrate {context.get('tool_version', '?')}"))]
    counts = report.builds.counts
    chips = "".join(f'<span class="{esc(status.split()[0])}">{count} {esc(status)}</span>'
                    for status, count in sorted(counts.items(), key=lambda item: -item[1]))
    extra = [f"{len(items)} {noun}" for items, noun in ((report.downloads, "downloads"), (report.installs, "installs"))
             if items]
    verdict = "succeeded" if report.ok else "FAILED"
    wide = {"Command", "Limits", "Interpreter", "Sandbox"}
    return (f"<h1>orchestrate run {esc(verdict)}</h1>"
            f'<div class="chips">{chips}{esc(", ".join(extra))}</div>'
            "<dl>" + "".join(f"<dt>{name}</dt><dd{' class=wide' if name in wide else ''}>{value}</dd>"
                             for name, value in rows) + "</dl>")


def _legend() -> str:
    items = [f'<span><i style="background:{colour}"></i>{esc(category)}</span>' for category, colour in COLOURS.items()]
    items.append('<span><i style="background:#e2e8f0"></i>worker starting or ending</span>')
    items.append(f'<span><i style="border:2px solid {FAILED};box-sizing:border-box"></i>failed ✕</span>')
    items.append(f'<span><i style="border:2px dashed {STOPPED};box-sizing:border-box"></i>stopped</span>')
    return f'<div class="legend-row">{"".join(items)}</div>'


def _charts(report: RunReport, axis: Axis) -> str:
    samples = report.samples.points
    if not samples:
        return "<p>No samples: no build ran.</p>"
    limit, floor = report.settings.get("memory_limit"), report.settings.get("min_free_memory")
    builds = [Line("running", "running", lambda s: s.running, fill=True),
              Line("preparing", "preparing ahead", lambda s: s.preparing),
              Line("waiting", "waiting", lambda s: s.waiting)]
    used = [Line("rss", "builds' RSS, summed", lambda s: s.rss, fill=True),
            Line("reserved", "reserved (need or RSS)", lambda s: s.reserved)]
    if isinstance(limit, int) and limit:
        used.append(Line("limit", "memory limit", lambda s: limit, limit=True))
    free = [Line("free", "free memory", lambda s: s.available_memory, fill=True)]
    if isinstance(floor, int) and floor:
        free.append(Line("floor", "free-memory floor", lambda s: floor, limit=True))
    cpus = [Line("busy", "CPUs busy", lambda s: s.cpu_busy, fill=True),
            Line("usable", "usable CPUs", lambda s: s.cpu_count, limit=True)]
    return "".join((
        chart("Builds", samples, report.started_at, axis, builds, lambda value: f"{value:.0f}", integer=True),
        chart("Builds' memory", samples, report.started_at, axis, used, lambda value: format_size(int(value))),
        chart("Free memory", samples, report.started_at, axis, free, lambda value: format_size(int(value))),
        chart("CPU", samples, report.started_at, axis, cpus, lambda value: f"{value:.1f}"),
    ))


def _cell(text: str, value: float | None = None, css: str = "") -> str:
    sort = f' data-v="{value:.3f}"' if value is not None else ""
    klass = f' class="{css}"' if css else ""
    return f"<td{klass}{sort}>{text}</td>"


def _table(report: RunReport, layout: Layout) -> Iterator[str]:
    lanes = layout.lanes["build"]
    yield ('<table class="sortable builds"><thead><tr><th>name</th><th>version</th><th>status</th><th>slot</th>'
           "<th>start</th><th>wall</th><th>CPU</th><th>peak</th><th>predicted</th><th>waited</th>"
           "<th>why it waited</th></tr></thead><tbody>")
    for index, result in report.builds.longest_first():
        slot = lanes[index] + 1 if lanes[index] >= 0 else None
        start = result.started_at - report.started_at if result.started_at else None
        waits = ", ".join(f"{WAIT_NAMES.get(held_by, held_by)} {seconds:.1f} s"
                          for held_by, seconds in result.waits.items() if seconds >= 0.05)
        why = "; ".join(part for part in (waits, result.wait_reason or "") if part)
        css = result.status.value.split()[0]
        yield (
            f'<tr class="{esc(css)}" data-name="{esc(result.name)}">' + "".join((
                _cell(esc(result.name)), _cell(esc(result.version or "")),
                _cell(esc(result.status.value), css="status"),
                _cell(str(slot or ""), slot or 0, "num"),
                _cell(clock(start) if start is not None else "", start if start is not None else -1, "num"),
                _cell(f"{result.wall_s:.1f} s", result.wall_s, "num"),
                _cell(f"{result.cpu_s:.1f} s", result.cpu_s, "num"),
                _cell(format_size(result.peak_rss_bytes) if result.peak_rss_bytes else "", result.peak_rss_bytes,
                      "num"),
                _cell(format_size(result.predicted_rss_bytes) if result.predicted_rss_bytes else "",
                      result.predicted_rss_bytes or 0, "num"),
                _cell(f"{result.waited_s:.1f} s" if result.waited_s else "", result.waited_s, "num"),
                _cell(esc(why), css="why"))) + "</tr>")
    yield "</tbody></table>"


def _failure(result: BuildResult) -> str:
    parts = [f'<div class="failure" data-name="{esc(result.name)}">'
             f"<h3>{esc(result.name)} {esc(result.version or '')}</h3><p>{esc(result.error or 'failed')}</p>"]
    if result.log:
        path = Path(result.log)
        tail = [_CONTROL.sub("", line) for line in log_tail(path, LOG_LINES)]  # control characters, colours
        if tail:
            parts.append(f"<pre>{esc(chr(10).join(tail))}</pre>")
        parts.append(f'<p>Log: <a href="{esc(path.absolute().as_uri())}">{esc(path)}</a></p>')
    parts.append("</div>")
    return "".join(parts)


def _failures(report: RunReport) -> Iterator[str]:
    others = [(kind, records) for kind, records in (("download", report.downloads), ("install", report.installs))
              if records.counts["failed"]]
    if not report.builds.counts["failed"] and not others and not report.errors:
        return
    yield "<h2>Failures</h2>"
    for result in report.failed:
        yield _failure(result)
    if others or report.errors:
        yield "<ul>"
        for kind, records in others:
            for item in records.failed():
                yield f"<li>{esc(kind)} {esc(item.name)}: {esc(item.error or 'failed')}</li>"
        for error in report.errors:
            yield f"<li>{esc(error.to_json())}</li>"
        yield "</ul>"


def write_page(report: RunReport, out: TextIO) -> None:
    """Write the whole report, as one HTML document, to ``out``."""
    finished = report.finished_at or time.time()
    layout = lay_out(report.builds, report.downloads, report.installs, report.started_at)
    makespan = max(finished - report.started_at, layout.end)
    axis = Axis(max(makespan, 0.001))
    out.write('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
              '<meta name="viewport" content="width=device-width">'
              f"<title>orchestrate run {esc(_utc(report.started_at))}</title><style>{STYLE}</style></head><body>")
    out.write(_header(report, makespan))
    out.write("<h2>Timeline</h2>")
    out.write(_legend())
    if any(layout.counts.values()):
        out.writelines(timeline(layout, axis))
    else:
        out.write("<p>Nothing ran.</p>")
    out.write(_charts(report, axis))
    out.write("<h2>Builds</h2><p>Click a column to sort.</p>")
    out.writelines(_table(report, layout))
    out.writelines(_failures(report))
    out.write(f"<script>{SORT_SCRIPT}</script></body></html>\n")


def write_html(report: RunReport, path: Path) -> None:
    """Write the HTML report atomically, piece by piece."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as binary:
        out = io.TextIOWrapper(binary, encoding="utf-8")
        write_page(report, out)
        out.flush()
        out.detach()
