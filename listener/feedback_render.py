"""The feedback document as HTML (Jinja2) and PDF (WeasyPrint, from that HTML).

Layer: rendering. Pure apart from reading its template
(``listener/templates/feedback.html.j2``, shipped as package data) and, for
PDF, WeasyPrint's own use of the system's Pango and fonts. Autoescape is on:
report excerpts and notes are text, never markup. The trend chart is an
inline SVG built here from numbers; nothing is fetched (no script, no CDN,
no remote font). docs/outcomes.md, "Feedback to the provider".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["PdfUnavailable", "pdf_engine", "render_html", "render_pdf", "trend_svg"]

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_GRADE_ROWS = (
    ("any", "Any discrepancy (2 or 3)"),
    ("significant", "Likely clinically significant (2b, 3b)"),
    ("2a", "2a"),
    ("3a", "3a"),
    ("2b", "2b"),
    ("3b", "3b"),
)


class PdfUnavailable(RuntimeError):
    """WeasyPrint, or a system library it loads (Pango, GObject, HarfBuzz), is missing."""


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _minutes(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} min"


def _days(value: Any) -> str:
    return f"{float(value):g}"


def _stamp(value: Any) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M %z")
    except ValueError:
        return str(value)


def _day(value: Any) -> str:
    return str(value)[:10] if value else "-"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, minutes=_minutes, days=_days, stamp=_stamp, day=_day)
    return env


def trend_svg(weeks: Sequence[Mapping[str, Any]], *, width: int = 640, height: int = 170) -> str:
    """Bars per week: graded reads (grey), discrepancies (blue) and significant ones (red), as SVG text."""
    left, bottom, top = 34, 34, 14
    plot_h = height - bottom - top
    n = max(1, len(weeks))
    slot = (width - left - 8) / n
    peak = max([int(w.get("graded") or 0) for w in weeks] + [1])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        ' role="img" aria-label="graded reads and discrepancies per week">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 4}" y2="{top + plot_h}" stroke="#333"/>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="9" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="9" text-anchor="end">0</text>',
    ]
    bars = (("graded", "#bbbbbb"), ("any", "#2c5aa0"), ("significant", "#b22222"))
    bar_w = max(2.0, slot * 0.8 / len(bars))
    for i, week in enumerate(weeks):
        x0 = left + i * slot + slot * 0.1
        for j, (key, colour) in enumerate(bars):
            value = week.get(key)
            count = int(value.get("count") or 0) if isinstance(value, Mapping) else int(value or 0)
            h = plot_h * count / peak
            x = x0 + j * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}"'
                f' fill="{colour}"><title>{key}: {count}</title></rect>'
            )
            if count:
                parts.append(
                    f'<text x="{x + (bar_w - 1) / 2:.1f}" y="{top + plot_h - h - 2:.1f}" font-size="8"'
                    f' text-anchor="middle">{count}</text>'
                )
        label = str(week.get("since") or "")[5:10]
        parts.append(
            f'<text x="{left + i * slot + slot / 2:.1f}" y="{top + plot_h + 12}" font-size="9"'
            f' text-anchor="middle">{Markup.escape(label)}</text>'
        )
    legend_y = height - 6
    for j, (label, colour) in enumerate(
        (("graded reads", "#bbbbbb"), ("discrepancies", "#2c5aa0"), ("significant", "#b22222"))
    ):
        x = left + j * 120
        parts.append(f'<rect x="{x}" y="{legend_y - 8}" width="9" height="9" fill="{colour}"/>')
        parts.append(f'<text x="{x + 13}" y="{legend_y}" font-size="9">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(doc: Mapping[str, Any]) -> str:
    """The document as one self-contained HTML page."""
    template = _environment().get_template("feedback.html.j2")
    chart = Markup(trend_svg(doc["trend"]["weeks"]))  # noqa: S704 - built above from numbers and escaped dates
    return template.render(doc=doc, chart=chart, grade_rows=_GRADE_ROWS)


def _refuse(url: str) -> Any:
    raise ValueError(f"the feedback document fetches nothing ({url[:40]})")


def _no_fetching(weasyprint: Any) -> Any:
    """A URL fetcher that refuses every URL: the document is self-contained."""
    fetcher = getattr(getattr(weasyprint, "urls", None), "URLFetcher", None)
    return fetcher(allowed_protocols=(), fail_on_errors=False) if isinstance(fetcher, type) else _refuse


def pdf_engine() -> Any:
    """The ``weasyprint`` module, loaded with its system libraries (check it before long work).

    Raises:
        PdfUnavailable: WeasyPrint is not installed or cannot load a system library; the text names it.
    """
    try:
        import weasyprint
    except (ImportError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PdfUnavailable(
            "PDF output needs WeasyPrint and the Pango text library (Debian/Ubuntu: apt install libpango-1.0-0"
            f" libpangoft2-1.0-0; pip install weasyprint): {detail}"
        ) from exc
    return weasyprint


def render_pdf(doc: Mapping[str, Any]) -> bytes:
    """The document as PDF: the HTML of :func:`render_html` laid out by WeasyPrint.

    Raises:
        PdfUnavailable: WeasyPrint is not installed or cannot load a system library.
    """
    weasyprint = pdf_engine()
    pdf = weasyprint.HTML(
        string=render_html(doc), base_url=str(_TEMPLATES), url_fetcher=_no_fetching(weasyprint)
    ).write_pdf()
    if not isinstance(pdf, bytes):  # pragma: no cover - write_pdf without a target returns bytes
        raise PdfUnavailable("WeasyPrint returned no PDF")
    return pdf
