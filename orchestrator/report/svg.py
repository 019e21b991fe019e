"""The run report's drawings, as inline SVG written from Python: the timeline and the charts under it.

Hand-written rather than a charting library: the drawings are rectangles, step lines and text
on one shared time axis; a few hundred lines make them, where a library would add a
dependency and hundreds of kilobytes of script to every report, and would need network or
bundling to stay offline. Every string that reaches the SVG passes through :func:`esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from orchestrator.report.timeline import GROUPS, Bar, Category, Layout
from orchestrator.samples import Sample
from orchestrator.units import format_size

WIDTH = 1200
GUTTER = 118
"""Room left of the plots for lane and axis labels."""
RIGHT = 16
ROW = 24
"""Height of a lane."""
BAR = 18
CHART = 72
"""Height of a chart's plot."""

COLOURS: dict[Category, str] = {
    "preparing": "#a8c5e2",
    "waiting": "#f1c75b",
    "building": "#2b6cb0",
    "publishing": "#38a169",
    "download": "#8c6bc8",
    "install": "#2c9c91",
}
FAILED = "#d62728"
STOPPED = "#555"
SERIES = {"running": "#2b6cb0", "preparing": "#7fa7d3", "waiting": "#e0a100", "rss": "#2b6cb0", "reserved": "#9f7aea",
          "limit": FAILED, "free": "#38a169", "floor": "#dd6b20", "busy": "#805ad5", "usable": "#222"}
GROUP_TITLES = {"build": "builds", "download": "downloads", "install": "installs"}


def esc(text: object) -> str:
    """``text`` safe in HTML and SVG text and attribute values."""
    return html.escape(str(text), quote=True)


def _n(value: float) -> str:
    """A coordinate, short."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True, slots=True)
class Axis:
    """Seconds from the run's start to x pixels, shared by the timeline and every chart."""

    span: float

    def x(self, seconds: float) -> float:
        plot = WIDTH - GUTTER - RIGHT
        return GUTTER + max(0.0, min(seconds, self.span)) / self.span * plot

    def ticks(self) -> list[float]:
        """Round times about 100 px apart."""
        step = nice_step(self.span / max(1, (WIDTH - GUTTER - RIGHT) // 100))
        return [step * index for index in range(int(self.span / step) + 1)]


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5, 10, 15, 30 x a power of ten (seconds), or minutes/hours, that is ``>= raw``."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if step >= raw:
            return step
    return 3600 * math.ceil(raw / 3600)


def clock(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3:05``, ``1:02:00``: a time on the axis."""
    if seconds < 60:
        return f"{seconds:.1f}".removesuffix(".0") + " s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _grid(axis: Axis, top: float, bottom: float, labels: bool) -> list[str]:
    parts = []
    for tick in axis.ticks():
        x = _n(axis.x(tick))
        parts.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{_n(top)}" y2="{_n(bottom)}"/>')
        if labels:
            parts.append(f'<text class="tick" x="{x}" y="{_n(top - 4)}" text-anchor="middle">{esc(clock(tick))}</text>')
    return parts


def _bar_title(bar: Bar) -> str:
    lines = [f"{bar.label}: {bar.status}",
             f"{clock(bar.start)} to {clock(bar.end)} ({bar.end - bar.start:.1f} s)"]
    spent: dict[str, float] = {}
    for segment in bar.segments:
        spent[segment.category] = spent.get(segment.category, 0.0) + segment.end - segment.start
    if len(spent) > 1:
        lines.append(", ".join(f"{category} {seconds:.1f} s" for category, seconds in spent.items()))
    record = bar.record
    if bar.group == "build":
        predicted = format_size(record.predicted_rss_bytes) if record.predicted_rss_bytes else "?"
        lines.append(f"peak {format_size(record.peak_rss_bytes)}, predicted {predicted}, CPU {record.cpu_s:.1f} s")
        if record.waited_s:
            waits = ", ".join(f"{held_by} {seconds:.1f} s" for held_by, seconds in record.waits.items())
            lines.append(f"waited {record.waited_s:.1f} s ({waits})")
        if record.wait_reason:
            lines.append(f"why: {record.wait_reason}")
        if record.memory_requeues:
            lines.append(f"memory requeues: {record.memory_requeues}")
    if getattr(record, "error", None):
        lines.append(f"error: {record.error}")
    return "\n".join(lines)


def timeline(layout: Layout, axis: Axis) -> Iterator[str]:
    """A lane per slot, builds first, then downloads and installs; each bar split by category: the drawing
    piece by piece, a bar at a time."""
    groups = [(group, layout.counts[group]) for group in GROUPS if layout.counts[group]]
    top = 22
    offsets: dict[str, float] = {}
    y = top
    for group, lanes in groups:
        offsets[group] = y + 16  # room for the group's title
        y += 16 + lanes * ROW + 6
    height = y + 4
    parts = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {_n(height)}" width="{WIDTH}" height="{_n(height)}"'
             ' xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline">']
    parts += _grid(axis, top, height - 4, labels=True)
    for group, lanes in groups:
        base = offsets[group]
        parts.append(f'<text class="group" x="4" y="{_n(base - 4)}">{esc(GROUP_TITLES[group])}</text>')
        for lane in range(lanes):
            row = base + lane * ROW
            parts.append(f'<text class="lane" x="{GUTTER - 6}" y="{_n(row + BAR - 5)}" text-anchor="end">'
                         f'{esc(group)} {lane + 1}</text>')
            if lane % 2 == 0:
                parts.append(f'<rect class="stripe" x="{GUTTER}" y="{_n(row - (ROW - BAR) / 2)}"'
                             f' width="{WIDTH - GUTTER - RIGHT}" height="{ROW}"/>')
    yield "".join(parts)
    for bar in layout.bars():
        yield _bar(bar, axis, offsets[bar.group] + bar.lane * ROW)
    yield "</svg>"


def _bar(bar: Bar, axis: Axis, y: float) -> str:
    x0, x1 = axis.x(bar.start), axis.x(bar.end)
    width = max(x1 - x0, 1.0)
    status_class = "failed" if bar.failed else "stopped" if bar.status in ("stopped", "not started") else "ok"
    parts = [f'<g class="bar {status_class}" data-group="{bar.group}" data-name="{esc(bar.name)}"'
             f' data-status="{esc(bar.status)}">'
             f"<title>{esc(_bar_title(bar))}</title>",
             f'<rect class="track" x="{_n(x0)}" y="{_n(y)}" width="{_n(width)}" height="{BAR}"/>']
    for segment in bar.segments:
        sx0, sx1 = axis.x(segment.start), axis.x(segment.end)
        if sx1 - sx0 < 0.3:
            continue
        parts.append(f'<rect x="{_n(sx0)}" y="{_n(y)}" width="{_n(sx1 - sx0)}" height="{BAR}"'
                     f' fill="{COLOURS[segment.category]}"/>')
    if bar.failed or status_class == "stopped":
        colour = FAILED if bar.failed else STOPPED
        dash = "" if bar.failed else ' stroke-dasharray="3 2"'
        parts.append(f'<rect x="{_n(x0)}" y="{_n(y)}" width="{_n(width)}" height="{BAR}" fill="none"'
                     f' stroke="{colour}" stroke-width="2"{dash}/>')
        if bar.failed:
            parts.append(f'<text class="mark" x="{_n(x0 + width + 2)}" y="{_n(y + BAR - 4)}">✕</text>')
    if width > 7 * len(bar.label) + 8:
        parts.append(f'<text class="label" x="{_n(x0 + 4)}" y="{_n(y + BAR - 5)}">{esc(bar.label)}</text>')
    parts.append("</g>")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Line:
    """One series of a chart."""

    key: str
    label: str
    value: Callable[[Sample], float | None]
    fill: bool = False
    limit: bool = False
    """A limit, not a measure: dashed, and only named in the legend when far above every measure
    (drawn, it would flatten them into the floor of the chart)."""


def chart(title: str, samples: Sequence[Sample], origin: float, axis: Axis, lines: Sequence[Line],
          fmt: Callable[[float], str], *, integer: bool = False) -> str:
    """A step chart of ``lines`` over the samples, on the timeline's axis; its legend says what each is.

    ``integer``: the values are counts, and so are the marks on the value axis.
    """
    top, height = 8, CHART + 8 + 18

    def values(line: Line) -> list[float]:
        return [value for sample in samples if (value := line.value(sample)) is not None]

    most = max((value for line in lines if not line.limit for value in values(line)), default=0.0)
    # A limit far above what was measured is named, not drawn.
    off_scale = {line.key for line in lines if line.limit and most and max(values(line), default=0) > 4 * most}
    most = max([most, *(value for line in lines if line.limit and line.key not in off_scale for value in values(line))])
    if integer:
        most = max(math.ceil(most), 1)
    peak = most * 1.08 or 1.0
    marks = sorted({most, most // 2} if integer else {most, most / 2})
    bottom = top + CHART

    def y(value: float) -> float:
        return bottom - value / peak * CHART

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}"'
             f' xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}">',
             f'<rect class="plot" x="{GUTTER}" y="{top}" width="{WIDTH - GUTTER - RIGHT}" height="{CHART}"/>']
    parts += _grid(axis, top, bottom, labels=False)
    for mark in marks:
        if mark:
            parts.append(f'<text class="tick" x="{GUTTER - 6}" y="{_n(y(mark) + 4)}" text-anchor="end">'
                         f"{esc(fmt(mark))}</text>")
    for line in lines:
        points = [(axis.x(sample.at - origin), value) for sample in samples
                  if (value := line.value(sample)) is not None]
        if not points or line.key in off_scale:
            continue
        steps = [f"{_n(points[0][0])} {_n(y(points[0][1]))}"]
        last = points[0][1]
        for x, value in points[1:]:
            if value != last:  # a step only where the value changes
                steps.append(f"H{_n(x)}V{_n(y(value))}")
                last = value
        steps.append(f"H{_n(axis.x(axis.span))}")
        path = "M" + "".join(steps)
        colour = SERIES[line.key]
        if line.fill:
            area = f"M{_n(points[0][0])} {_n(bottom)}L" + "".join(steps) + f"V{_n(bottom)}Z"
            parts.append(f'<path class="area" d="{area}" fill="{colour}" fill-opacity="0.22"/>')
        dash = ' stroke-dasharray="6 4"' if line.limit else ""
        parts.append(f'<path class="series" data-series="{esc(line.key)}" d="{path}" fill="none" stroke="{colour}"'
                     f' stroke-width="1.6"{dash}><title>{esc(line.label)}</title></path>')
    parts.append(f'<text class="ctitle" x="{GUTTER - 6}" y="{bottom + 14}" text-anchor="end">{esc(title)}</text>')
    x = GUTTER + 4
    for line in lines:
        colour = SERIES[line.key]
        label = line.label
        if line.key in off_scale:
            label += f" {fmt(max(values(line)))}, off the chart"
        parts.append(f'<rect x="{x}" y="{bottom + 8}" width="12" height="4" fill="{colour}"/>'
                     f'<text class="legend" x="{x + 16}" y="{bottom + 14}">{esc(label)}</text>')
        x += 24 + 6 * len(label)
    parts.append("</svg>")
    return "".join(parts)
