"""Charts for the console: SVG drawn server-side by pygal, shown as ``data:`` images.

Layer: plain Python (pages call it on their thread). pygal draws bar and line charts as SVG
with no script when ``js=[]``; the console embeds each one as an ``<img src="data:image/svg+xml;
base64,...">``, so the SVG's own style sheet applies inside the image while the page's
Content-Security-Policy still forbids inline styles and scripts (docs/console.md, "Security").
Every chart is paired with a table of the same numbers on the page (screen readers, copying).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pygal
from pygal.style import Style

__all__ = ["Chart", "bars", "lines"]

#: Colours that stay apart for the common kinds of colour blindness (Okabe-Ito), in series order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")

_UNWANTED = re.compile(r"<script\b[^>]*>.*?</script>|<!--.*?-->", re.DOTALL)

_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#1d2733",
    foreground_strong="#1d2733",
    foreground_subtle="#5b6673",
    colors=PALETTE,
    font_family="system-ui, 'Liberation Sans', sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=14,
)


@dataclass(frozen=True, slots=True)
class Chart:
    """A rendered chart: its ``data:`` URI for an ``<img>`` and the text alternative."""

    uri: str
    alt: str


#: Legend entries per row under a chart.
_LEGEND_COLUMNS = 4


def _config(title: str, width: int, height: int, labels: Sequence[str], every: int, series: int) -> dict[str, object]:
    # pygal does not keep room for a legend at the bottom: each row of it gets its own margin, or an
    # <img> cuts it off. Labels are written whole (only every n-th is shown, so they fit).
    rows = -(-series // _LEGEND_COLUMNS)
    return {
        "title": title,
        "width": width,
        "height": height,
        "style": _STYLE,
        "js": [],
        "disable_xml_declaration": True,
        "pretty_print": False,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": _LEGEND_COLUMNS,
        "truncate_label": -1,
        "x_label_rotation": 0,
        "show_minor_x_labels": False,
        "x_labels_major_every": max(1, every),
        "truncate_legend": 30,
        "print_values": False,
        "margin": 8,
        "margin_bottom": 8 + 20 * rows,
    }


def _finish(chart: Any, labels: Sequence[str], series: Mapping[str, Sequence[float | None]], alt: str) -> Chart:
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    # pygal always writes its tooltip configuration as a <script>, which an <img> never runs;
    # it is dropped so the image holds no script at all, with pygal's credit comments.
    svg = _UNWANTED.sub("", chart.render(is_unicode=True))
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return Chart(f"data:image/svg+xml;base64,{data}", alt)


def bars(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    stacked: bool = True,
    width: int = 900,
    height: int = 300,
    every: int = 1,
) -> Chart:
    """Bars per label, one colour per series (stacked by default); ``every``: label every n-th bar."""
    kind = pygal.StackedBar if stacked else pygal.Bar
    chart = kind(**_config(title, width, height, labels, every, len(series)))
    alt = f"{title}: bar chart of {', '.join(series) or 'no series'} over {len(labels)} periods"
    return _finish(chart, labels, series, alt)


def lines(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    width: int = 900,
    height: int = 300,
    every: int = 1,
) -> Chart:
    """A line per series over the labels (``None`` leaves a gap)."""
    chart = pygal.Line(
        **_config(title, width, height, labels, every, len(series)), allow_interruptions=True, dots_size=2
    )
    alt = f"{title}: line chart of {', '.join(series) or 'no series'} over {len(labels)} periods"
    return _finish(chart, labels, series, alt)
