"""The report text of one DiagnosticReport, with section hints.

Pure: no I/O, no clock. Sources, in order:

1. ``presentedForm``: text/plain, text/html and XHTML become text; PDF and
   images are recorded as the text kind and never decoded.
2. R5 ``composition``: each section's narrative (or its Observations), hinted
   by the section's LOINC code.
3. ``result`` Observations (when ``presentedForm`` gave no text): valueString,
   valueCodeableConcept text, quantities as ``label: value unit``; LOINC
   section codes (mapping ``obx_sections``) hint the section. A result
   Observation whose code is a peer-review score code (mapping
   ``peer_review_fhir``) is the report's explicit score, not text.
4. The resource narrative (``text.div``), only when nothing above gave text
   and the narrative is authored, or there is no conclusion either (a
   generated narrative repeats the structured data, patient header included).
5. ``conclusion``, then ``conclusionCode`` (STU3 ``codedDiagnosis``) displays,
   as an IMPRESSION section unless the text already holds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from listener.errors import FhirDecodeError
from listener.fhir.peer_review import is_score_code
from listener.fhir.resolve import JSON, codings, concept_text, obj_of, objs, str_of
from listener.fhir.text import attachment_text, html_to_text, normalize_newlines
from listener.hl7v2.mapping import Mapping
from listener.model import TextKind
from listener.text.sections import TEXT_HINT

#: Resolve a Reference (JSON) found at a FHIRPath to a resource in the body, or None.
Resolve = Callable[[JSON, str], "JSON | None"]

_MAX_DEPTH = 4  # hasMember / nested sections


@dataclass(frozen=True, slots=True)
class BuiltText:
    """Report text, section hints (offset, kind), text kind, abnormal flags, warnings."""

    text: str
    hints: tuple[tuple[int, str], ...]
    kind: TextKind
    flags: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(slots=True)
class _Lines:
    lines: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    # An ordered set: a flag is looked up once per interpretation coding, so a list would cost n² for n codes.
    flags: dict[str, None] = field(default_factory=dict)

    def add(self, lines: list[str], hint: str) -> None:
        for line in lines:
            self.lines.append(line.rstrip())
            self.hints.append(hint)

    def text(self) -> str:
        return "\n".join(self.lines)


def build_text(dr: JSON, where: str, version: str, mapping: Mapping, resolve: Resolve) -> BuiltText:
    """Assemble the report text of one DiagnosticReport (see the module docstring).

    Raises:
        FhirDecodeError: (value) a text attachment whose base64 does not decode.
    """
    out = _Lines()
    # Each Observation is read once per report, however often it is referenced (result, hasMember,
    # composition entries): n references to one Observation, or hasMember fanning out level after
    # level, would otherwise make text n times (or n**4 times) the size of the body.
    seen: set[int] = set()
    warnings: list[str] = []
    kind = TextKind.TEXT
    binary_kind: TextKind | None = None
    for i, attachment in enumerate(objs(dr, "presentedForm")):
        text, att_kind = attachment_text(
            str_of(attachment, "contentType"), _data(attachment), bool(str_of(attachment, "url"))
        )
        if att_kind == "invalid":
            raise FhirDecodeError(
                f"{where}.presentedForm[{i}].data is not valid base64",
                issue_code="value",
                expression=f"{where}.presentedForm[{i}].data",
            )
        if att_kind == "text" and text.strip():
            if out.lines:
                out.add([""], TEXT_HINT)
            out.add(text.strip("\n").split("\n"), TEXT_HINT)
        elif att_kind in ("pdf", "binary") and not binary_kind:
            binary_kind = TextKind(att_kind)
    had_form_text = bool(out.lines)

    composition_ref = obj_of(dr, "composition")
    if composition_ref and not had_form_text:
        composition = resolve(composition_ref, f"{where}.composition")
        if composition is not None:
            for section in objs(composition, "section"):
                _section(section, mapping, resolve, out, f"{where}.composition", 0, seen)

    for i, ref in enumerate(objs(dr, "result")):
        obs = resolve(ref, f"{where}.result[{i}]")
        if obs is None or str_of(obs, "resourceType") != "Observation" or not _first_visit(obs, seen):
            continue
        if is_score_code(obj_of(obs, "code"), mapping.peer_review_fhir):
            continue  # the explicit peer-review score: read by the report decoder, not report text
        scratch = _Lines()
        _observation(obs, mapping, resolve, scratch, f"{where}.result[{i}]", 0, seen)
        out.flags.update(scratch.flags)
        if not had_form_text:
            out.add(scratch.lines, "")
            out.hints[len(out.hints) - len(scratch.lines) :] = scratch.hints

    conclusion = normalize_newlines(str_of(dr, "conclusion"))
    coded = [concept_text(c) for c in objs(dr, "conclusionCode") + objs(dr, "codedDiagnosis")]
    coded = [c for c in coded if c]
    narrative = obj_of(dr, "text")
    if not out.lines and str_of(narrative, "div") and (str_of(narrative, "status") != "generated" or not conclusion):
        out.add(html_to_text(str_of(narrative, "div")).split("\n"), TEXT_HINT)

    _impression(out, conclusion.split("\n") if conclusion else coded)

    if not out.lines and binary_kind:
        kind = binary_kind
    elif binary_kind and out.lines:
        kind = TextKind.TEXT
    text = out.text()
    return BuiltText(text, _hint_offsets(out), kind, tuple(out.flags), tuple(warnings))


def _data(attachment: JSON) -> str | None:
    data = attachment.get("data")
    return data if isinstance(data, str) else None


def _impression(out: _Lines, lines: list[str]) -> None:
    lines = [line for line in lines if line.strip()]
    if not lines:
        return
    have = " ".join(out.text().lower().split())
    if _already_in(have, [" ".join(line.lower().split()) for line in lines]):
        return
    if out.lines:
        out.add([""], TEXT_HINT)
    out.add(["IMPRESSION:"], "impression")
    out.add(lines, "impression")


#: Up to this many impression lines are each looked for anywhere in the text; more must appear in order.
_ANYWHERE_LINES = 64


def _already_in(have: str, lines: list[str]) -> bool:
    """True when every line occurs in ``have``.

    A search per line over the whole text costs lines x text: a conclusion of
    100,000 short lines against a text that holds them at its end scans the text
    100,000 times. Up to :data:`_ANYWHERE_LINES` distinct lines (any real
    conclusion) keep that exact test; beyond, each line is looked for after the previous one's
    match, so the text is scanned once (a longer conclusion copied out of order
    is appended again: duplicate text, never lost text).
    """
    lines = list(dict.fromkeys(lines))  # a repeated line is found where its first copy is
    if len(lines) <= _ANYWHERE_LINES:
        return all(line in have for line in lines)
    pos = 0
    for line in lines:
        found = have.find(line, pos)
        if found < 0:
            return False
        pos = found + len(line)
    return True


def _section_hint(concept: JSON, mapping: Mapping) -> str:
    for coding in codings(concept):
        hint = mapping.obx_sections.get(str_of(coding, "code").upper()) or mapping.obx_sections.get(
            str_of(coding, "code")
        )
        if hint:
            return hint
    return TEXT_HINT


def _first_visit(resource: JSON, seen: set[int]) -> bool:
    """True the first time ``resource`` (this very object) is met in one report's walk."""
    key = id(resource)
    if key in seen:
        return False
    seen.add(key)
    return True


def _section(
    section: JSON, mapping: Mapping, resolve: Resolve, out: _Lines, where: str, depth: int, seen: set[int]
) -> None:
    if depth > _MAX_DEPTH:
        return
    hint = _section_hint(obj_of(section, "code"), mapping)
    title = str_of(section, "title")
    div = str_of(obj_of(section, "text"), "div")
    body: list[str] = []
    if div:
        body = [line for line in html_to_text(div).split("\n") if line.strip()]
    if title and hint == TEXT_HINT:
        out.add([f"{title.upper()}:"], TEXT_HINT)
    if body:
        out.add(body, hint)
    else:
        for i, ref in enumerate(objs(section, "entry")):
            found = resolve(ref, f"{where}.section.entry[{i}]")
            if found is not None and str_of(found, "resourceType") == "Observation" and _first_visit(found, seen):
                scratch = _Lines()
                _observation(found, mapping, resolve, scratch, f"{where}.section.entry[{i}]", depth + 1, seen)
                out.add(scratch.lines, hint if hint != TEXT_HINT else "")
                if hint == TEXT_HINT:
                    out.hints[len(out.hints) - len(scratch.lines) :] = scratch.hints
                out.flags.update(scratch.flags)
    for sub in objs(section, "section"):
        _section(sub, mapping, resolve, out, where, depth + 1, seen)


def _observation(
    obs: JSON, mapping: Mapping, resolve: Resolve, out: _Lines, where: str, depth: int, seen: set[int]
) -> None:
    if depth > _MAX_DEPTH:
        return
    code = obj_of(obs, "code")
    hint = _section_hint(code, mapping)
    label = concept_text(code)
    for interp in objs(obs, "interpretation"):
        for coding in codings(interp):
            flag = str_of(coding, "code").upper()
            if flag:
                out.flags[flag] = None
    out.add(_value_lines(obs, label, hint), hint)
    for component in objs(obs, "component"):
        out.add(_value_lines(component, concept_text(obj_of(component, "code")), TEXT_HINT), hint)
    for i, ref in enumerate(objs(obs, "hasMember")):
        member = resolve(ref, f"{where}.hasMember[{i}]")
        if member is not None and str_of(member, "resourceType") == "Observation" and _first_visit(member, seen):
            _observation(member, mapping, resolve, out, f"{where}.hasMember[{i}]", depth + 1, seen)


def _value_lines(element: JSON, label: str, hint: str) -> list[str]:
    """Lines for one value[x]: free text as is, everything else as ``label: value``."""
    text = str_of(element, "valueString")
    if text:
        return normalize_newlines(text).split("\n")
    concept = obj_of(element, "valueCodeableConcept")
    if concept:
        value = concept_text(concept)
        return [value if hint != TEXT_HINT or not label else f"{label}: {value}"] if value else []
    quantity = obj_of(element, "valueQuantity")
    if quantity:
        value = str_of(quantity, "value")
        unit = str_of(quantity, "unit") or str_of(quantity, "code")
        return [f"{label}: {value} {unit}".rstrip()] if value else []
    for key in ("valueInteger", "valueBoolean", "valueDateTime", "valueTime", "valueDecimal"):
        raw = element.get(key)
        if raw is not None and not isinstance(raw, (dict, list)):
            return [f"{label}: {str(raw).lower() if isinstance(raw, bool) else raw}"]
    return []


def _hint_offsets(out: _Lines) -> tuple[tuple[int, str], ...]:
    offsets: list[tuple[int, str]] = []
    pos = 0
    for line, hint in zip(out.lines, out.hints, strict=False):
        if not offsets or offsets[-1][1] != hint:
            offsets.append((pos, hint or TEXT_HINT))
        pos += len(line) + 1
    return tuple(offsets)
