"""Report text from FHIR attachments and narratives.

Pure: no I/O, no clock. ``presentedForm`` attachments with text/plain, text/html
or XHTML content become plain text (one line per block element); PDF and images
are recorded by kind and never decoded; a URL-only attachment is never fetched.
"""

from __future__ import annotations

import base64
import binascii
from html.parser import HTMLParser

# Block-level elements: each starts a new line of report text.
_BLOCKS = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "table",
        "ul",
        "ol",
        "dt",
        "dd",
        "blockquote",
        "section",
        "article",
        "header",
        "footer",
        "hr",
    }
)
_SKIP = frozenset({"head", "title", "script", "style"})
_CELLS = frozenset({"td", "th"})

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/xhtml", "text/xhtml"})
_TEXT_TYPES = frozenset({"text/plain", ""})


class _TextExtractor(HTMLParser):
    """Collects the text of an (X)HTML document, one line per block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0

    def _break(self) -> None:
        line = " ".join("".join(self.current).split())
        if line:
            self.lines.append(line)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.rsplit(":", 1)[-1].lower()
        if tag in _SKIP:
            self.skip_depth += 1
        elif tag in _BLOCKS:
            self._break()
            if tag == "pre":
                self.pre_depth += 1
        elif tag in _CELLS and self.current:
            self.current.append("  ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag.rsplit(":", 1)[-1].lower() in _BLOCKS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        tag = tag.rsplit(":", 1)[-1].lower()
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _BLOCKS:
            self._break()
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth and "\n" in data:
            # Preformatted text keeps its own line breaks.
            parts = data.split("\n")
            for part in parts[:-1]:
                self.current.append(part)
                self._break()
            self.current.append(parts[-1])
        else:
            self.current.append(data)


def html_to_text(markup: str) -> str:
    """Reduce (X)HTML to plain report text: block elements become lines, markup goes."""
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except (AssertionError, ValueError):  # malformed markup: keep what was read
        pass
    parser._break()
    return "\n".join(parser.lines)


def normalize_newlines(text: str) -> str:
    """CRLF and CR to LF (our text model)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def attachment_text(content_type: str, data: str | None, has_url: bool) -> tuple[str, str]:
    """Text and kind of one Attachment.

    Args:
        content_type: ``Attachment.contentType`` (parameters allowed).
        data: the base64 ``data`` element, or None.
        has_url: whether the attachment points at its content by ``url``.

    Returns:
        (text, kind) where kind is "text", "pdf", "binary", "none" (nothing usable) or
        "invalid" (text content whose base64 does not decode).
        Text is "" unless kind is "text".
    """
    essence, _, params = content_type.partition(";")
    essence = essence.strip().lower()
    charset = "utf-8"
    for part in params.split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip().lower() == "charset":
            charset = value.strip().strip('"') or "utf-8"
    if essence == "application/pdf":
        return "", "pdf"
    if essence not in _TEXT_TYPES and essence not in _HTML_TYPES:
        return "", "binary" if (data or has_url) else "none"
    if data is None:
        return "", "binary" if has_url else "none"
    try:
        # FHIR base64Binary may carry whitespace (line-wrapped encoders).
        blob = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return "", "invalid"
    if blob.startswith(b"%PDF"):
        return "", "pdf"
    try:
        decoded = blob.decode(charset, errors="replace")
    except LookupError:
        decoded = blob.decode("utf-8", errors="replace")
    decoded = decoded.lstrip("\ufeff")
    if essence in _HTML_TYPES or decoded.lstrip().startswith("<"):
        return html_to_text(decoded), "text"
    return normalize_newlines(decoded), "text"
