"""Server-side SVG charts for the dashboard: no JavaScript, no chart library.

``throughput_chart`` draws tasks finished per minute over a window (the last hour on the
overview): every finished task (whatever its outcome) as bars, the failures among them as a line
over the bars, with both axes labelled (the x axis at round clock times, UTC). Every
text that goes into the SVG is escaped, and the result is returned as ``markupsafe.Markup`` so
Jinja2 inserts it as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape

from markupsafe import Markup

__all__ = ["Minute", "nice_ceiling", "throughput_chart"]

# Drawing area, in SVG user units (the chart scales to its container through the viewBox): as
# wide as the overview's card at a desktop width, so the plot fills the card at about 1:1.
_WIDTH, _HEIGHT = 1200, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 12, 18, 40
# The x axis is labelled at round clock times: every this many minutes.
TICK_MINUTES = 10


@dataclass(frozen=True, slots=True)
class Minute:
    """One bucket of the chart: tasks that finished in the minute starting at ``at`` (in any
    final state), and how many of them failed."""

    at: datetime
    finished: int
    failed: int


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def throughput_chart(
    minutes: Sequence[Minute], *, element_id: str = "throughput-chart", title: str = ""
) -> Markup:
    """An SVG of ``minutes`` (oldest first): finished per minute as bars, failed as a line."""
    count = max(len(minutes), 1)
    peak = nice_ceiling(max([m.finished for m in minutes] + [m.failed for m in minutes] + [0]))
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / count
    bottom = _TOP + plot_h

    def y(value: int) -> float:
        return bottom - plot_h * value / peak

    total_finished = sum(m.finished for m in minutes)
    total_failed = sum(m.failed for m in minutes)
    label = title or (
        f"Tasks finished per minute over the last {len(minutes)} minutes: "
        f"{total_finished} finished, {total_failed} of them failed"
    )
    parts = [
        f'<svg id="{escape(element_id)}" class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}"'
        f' role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"'
        f' data-finished="{total_finished}" data-failed="{total_failed}">',
        f"<title>{escape(label)}</title>",
    ]
    # Horizontal grid lines and the y axis labels: 0, half, peak.
    for value in sorted({0, peak // 2, peak}):
        gy = y(value)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{_fmt(gy)}" x2="{_WIDTH - _RIGHT}"'
            f' y2="{_fmt(gy)}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{_fmt(gy + 4)}"'
            f' text-anchor="end">{value}</text>'
        )
    parts.append(
        f'<text class="axis-title" x="12" y="{_fmt(_TOP + plot_h / 2)}" text-anchor="middle"'
        f' transform="rotate(-90 12 {_fmt(_TOP + plot_h / 2)})">tasks / min</text>'
    )
    # Bars: one per minute, every finished task.
    for index, minute in enumerate(minutes):
        x = _LEFT + index * slot
        top = y(minute.finished)
        tip = f"{minute.at:%H:%M}: {minute.finished} finished, {minute.failed} failed"
        parts.append(
            f'<rect class="bar ok" x="{_fmt(x + slot * 0.12)}" y="{_fmt(top)}"'
            f' width="{_fmt(slot * 0.76)}" height="{_fmt(bottom - top)}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    # The failures line, drawn over the bars.
    if minutes:
        points = " ".join(
            f"{_fmt(_LEFT + (i + 0.5) * slot)},{_fmt(y(m.failed))}" for i, m in enumerate(minutes)
        )
        parts.append(f'<polyline class="line failed" points="{points}"/>')
    # The x axis, with a label every quarter of the window and at its ends.
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{_WIDTH - _RIGHT}" y2="{bottom}"/>'
    )
    for index, minute in enumerate(minutes):
        at = minute.at.astimezone(timezone.utc) if minute.at.tzinfo else minute.at
        # Round clock times only (12:00, 12:10...), so the labels do not drift with "now".
        if (at.hour * 60 + at.minute) % TICK_MINUTES:
            continue
        x = _LEFT + (index + 0.5) * slot
        parts.append(
            f'<line class="tick-mark" x1="{_fmt(x)}" y1="{bottom}" x2="{_fmt(x)}"'
            f' y2="{bottom + 4}"/>'
            f'<text class="tick" x="{_fmt(x)}" y="{bottom + 16}" text-anchor="middle">'
            f"{at:%H:%M}</text>"
        )
    parts.append(
        f'<text class="axis-title" x="{_LEFT + plot_w / 2:.0f}" y="{_HEIGHT - 4}"'
        ' text-anchor="middle">time (UTC)</text>'
    )
    # Legend.
    lx = _WIDTH - _RIGHT - 190
    parts.append(
        f'<rect class="bar ok" x="{lx}" y="2" width="10" height="10"/>'
        f'<text class="legend" x="{lx + 14}" y="11">finished</text>'
        f'<line class="line failed" x1="{lx + 90}" y1="7" x2="{lx + 104}" y2="7"/>'
        f'<text class="legend" x="{lx + 108}" y="11">failed</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
