"""Pure HTML helpers of the message page: titled HL7 v2 fields, highlighted evidence, FHIR JSON.

Layer: pure functions, text in and :class:`markupsafe.Markup` out. Every piece of stored text is
escaped here (the output is marked safe for the templates), so a value holding ``<``, ``&`` or
quotes shows as text (docs/console.md, "Message browser").
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from hl7apy import load_reference
from hl7apy.exceptions import ChildNotFound, UnsupportedVersion
from markupsafe import Markup, escape

__all__ = ["DEFAULT_VERSION", "field_names", "highlight", "hl7_segments", "message_version", "pretty_json"]

#: The HL7 v2 version whose field names are shown when MSH-12 names none that hl7apy knows.
DEFAULT_VERSION = "2.5"


def _lines(text: str) -> list[str]:
    return [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line]


def message_version(text: str) -> str:
    """MSH-12's version id (its first component), or "" when there is no readable MSH."""
    for line in _lines(text):
        if line.startswith("MSH") and len(line) > 3:
            sep = line[3]
            fields = line.split(sep)
            # fields[1] is MSH-2, so MSH-n is fields[n - 1].
            if len(fields) > 11:
                component = fields[1][:1] or "^"
                return fields[11].split(component)[0].strip()
            return ""
    return ""


def field_names(segment: str, version: str) -> dict[int, str]:
    """hl7apy's long names of ``segment``'s fields in ``version`` (falling back to the default
    version), by field number, as words: ``{3: "Patient Identifier List", ...}``; {} when unknown."""
    for candidate in (version, DEFAULT_VERSION):
        try:
            reference = load_reference(segment, "Segment", candidate)
        except (ChildNotFound, UnsupportedVersion, KeyError, ValueError):
            continue
        names = {}
        for child in reference[1]:
            name, spec = child[0], child[1]
            prefix, _, number = name.rpartition("_")
            if prefix == segment and number.isdigit() and len(spec) > 3 and isinstance(spec[3], str):
                names[int(number)] = spec[3].replace("_", " ").title()
        return names
    return {}


def hl7_segments(text: str, version: str | None = None) -> Markup:
    """An HL7 v2 body one segment per line, each field in a ``<span title="PID-3 Patient Identifier
    List">``; field separators as they were. ``version``: MSH-12's (read from ``text`` when None)."""
    version = message_version(text) if version is None else version
    known: dict[str, dict[int, str]] = {}
    out = []
    for line in _lines(text):
        name = line[:3]
        sep = line[3] if name == "MSH" and len(line) > 3 else "|"
        fields = line.split(sep)
        if name not in known:
            known[name] = field_names(name, version) if name.isalnum() else {}
        names = known[name]
        pieces = [Markup('<span class="seg">{}</span>').format(fields[0])]
        for index, value in enumerate(fields[1:], start=1):
            # MSH-1 is the separator itself, so the text after it is MSH-2.
            number = index + 1 if name == "MSH" else index
            title = f"{name}-{number}" + (f" {names[number]}" if number in names else "")
            pieces.append(Markup('<span title="{}">{}</span>').format(title, value))
        out.append(escape(sep).join(pieces))
    return Markup("\n").join(out)


def highlight(text: str, spans: Iterable[tuple[int, int, str]]) -> Markup:
    """``text`` with each span (start, end, title) in ``<mark title="...">``; overlapping or touching
    spans are merged into one mark naming all of them; spans outside the text are clipped."""
    cut: list[tuple[int, int, list[str]]] = []
    for start, end, title in sorted((max(0, s), min(len(text), e), t) for s, e, t in spans):
        if start >= end:
            continue
        if cut and start <= cut[-1][1]:
            last = cut[-1]
            titles = last[2] if title in last[2] else [*last[2], title]
            cut[-1] = (last[0], max(last[1], end), titles)
        else:
            cut.append((start, end, [title]))
    out = []
    at = 0
    for start, end, titles in cut:
        out.append(escape(text[at:start]))
        out.append(Markup('<mark title="{}">{}</mark>').format("; ".join(titles), text[start:end]))
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def pretty_json(text: str) -> str:
    """A JSON body indented for reading; JSON lines (an HTTP answer as stored: its status and
    headers, then its body) each indented; text that is not JSON as it was. The template escapes it."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    try:
        return "\n".join(json.dumps(json.loads(line), indent=2, ensure_ascii=False) for line in text.splitlines())
    except ValueError:
        return text
