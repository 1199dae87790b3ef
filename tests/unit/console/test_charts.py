"""Console charts are SVG images with no script and no outside reference (listener/console/charts.py)."""

from __future__ import annotations

import base64

from listener.console.charts import bars, lines


def _svg(uri: str) -> str:
    head, _, data = uri.partition(",")
    assert head == "data:image/svg+xml;base64"
    return base64.b64decode(data).decode("utf-8")


def test_bar_and_line_charts_are_self_contained_svg_with_their_series() -> None:
    labels = [f"{h:02d}:00" for h in range(24)]
    for chart in (
        bars("Messages per hour", labels, {"RIS-A": list(range(24)), "TELE-B": [2] * 24}, every=6),
        lines("NACK ratio", labels, {"RIS-A": [0.1] * 12 + [None] * 12}),
    ):
        svg = _svg(chart.uri)
        assert svg.startswith("<svg") and "RIS-A" in svg
        assert "<script" not in svg and "http://" not in svg.split(">", 1)[1].replace("http://www.w3.org", "")
        assert "over 24 periods" in chart.alt
