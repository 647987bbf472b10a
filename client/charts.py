"""Small inline SVG charts for the HTML report: plain functions, strings out.

Every chart is a self-contained `<svg>` element (no scripts, no fonts or images
fetched), so a page that embeds it renders the same offline, in any browser.
Bars are drawn to scale against the largest value; every bar also carries its
number as text, so nothing is read off the axis alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Colours the report uses. Each chart's bars have a colour of their own, so a
# screenshot test can find each chart by colour (tests/test_report.py).
OVERLAP = "#0b7285"
PRESENT = "#3c9d5d"
MISSING = "#b8b8b8"
INVALID = "#d1495b"
SCORES = "#7b5ea7"

_LABEL_WIDTH = 170
_BAR_WIDTH = 520
_ROW = 30
_FONT = 'font-family="sans-serif" font-size="13"'


@dataclass(frozen=True)
class Segment:
    """One part of a stacked bar: a value, its colour and its name in the legend."""

    value: int
    colour: str
    name: str


def bar_chart(bars: Sequence[tuple[str, int]], *, colour: str, title: str) -> str:
    """Horizontal bars, one a label, each with its value written beside it."""
    return stacked_bar_chart(
        [(label, [Segment(value, colour, "")]) for label, value in bars], title=title
    )


def stacked_bar_chart(bars: Sequence[tuple[str, Sequence[Segment]]], *, title: str) -> str:
    """Horizontal bars made of segments (e.g. present, missing, invalid), with a legend
    when the segments are named."""
    top = 28
    named = [s for _, segs in bars[:1] for s in segs if s.name]
    height = top + _ROW * max(len(bars), 1) + (26 if named else 8)
    most = max((sum(s.value for s in segs) for _, segs in bars), default=0) or 1
    parts = [
        f'<svg role="img" width="{_LABEL_WIDTH + _BAR_WIDTH + 90}"'
        f' height="{height}" aria-label="{escape(title)}">',
        f'<text x="0" y="16" {_FONT} font-weight="bold">{escape(title)}</text>',
    ]
    for i, (label, segments) in enumerate(bars):
        y = top + i * _ROW
        parts.append(
            f'<text x="{_LABEL_WIDTH - 8}" y="{y + 16}" {_FONT} text-anchor="end">'
            f"{escape(label)}</text>"
        )
        x = float(_LABEL_WIDTH)
        for seg in segments:
            width = _BAR_WIDTH * seg.value / most
            if width > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y + 2}" width="{width:.1f}" height="{_ROW - 8}" '
                    f'fill="{seg.colour}"><title>{escape(seg.name or label)}: {seg.value}</title>'
                    "</rect>"
                )
            x += width
        total = " / ".join(str(s.value) for s in segments)
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 16}" {_FONT}>{total}</text>')
    parts.append(_legend(named, height - 8))
    parts.append("</svg>")
    return "".join(parts)


def _legend(segments: Sequence[Segment], y: int) -> str:
    items, x = [], _LABEL_WIDTH
    for seg in segments:
        items.append(
            f'<rect x="{x}" y="{y - 11}" width="12" height="12" fill="{seg.colour}"/>'
            f'<text x="{x + 16}" y="{y}" {_FONT}>{escape(seg.name)}</text>'
        )
        x += 30 + 8 * len(seg.name)
    return "".join(items)


def histogram(values: Sequence[float], *, bins: int, lo: float, hi: float, title: str) -> str:
    """Vertical bars counting `values` in `bins` equal steps from `lo` to `hi`."""
    counts = [0] * bins
    step = (hi - lo) / bins if hi > lo else 1.0
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / step)))] += 1
    width, plot_h, top, left = 600, 160, 28, 40
    most = max(counts, default=0) or 1
    bar_w = width / bins
    parts = [
        f'<svg role="img" width="{left + width + 20}" '
        f'height="{top + plot_h + 40}" aria-label="{escape(title)}">',
        f'<text x="0" y="16" {_FONT} font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + width}" y2="{top + plot_h}" '
        'stroke="#444"/>',
    ]
    for i, n in enumerate(counts):
        h = plot_h * n / most
        if n:
            parts.append(
                f'<rect x="{left + i * bar_w + 1:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{SCORES}">'
                f"<title>{lo + i * step:.3f} to {lo + (i + 1) * step:.3f}: {n}</title></rect>"
            )
    for frac in (0.0, 0.5, 1.0):
        x = left + width * frac
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 18}" {_FONT} text-anchor="middle">'
            f"{lo + (hi - lo) * frac:.3f}</text>"
        )
    parts.append(
        f'<text x="{left - 6}" y="{top + 12}" {_FONT} text-anchor="end">{most}</text>'
        f'<text x="{left + width / 2:.0f}" y="{top + plot_h + 36}" {_FONT} '
        'text-anchor="middle">score</text></svg>'
    )
    return "".join(parts)
