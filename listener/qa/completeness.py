"""Completeness rules: the report has what a finished report must have.

Pure: no I/O, no clock. Each rule looks at the report's structure (sections
from the decoder, their bodies) or at a few unambiguous text patterns:

- ``no_text``: nothing to read at all; ``document_only``: a PDF/CDA/binary
  report whose text the engine cannot check (informational).
- ``missing_impression`` / ``empty_impression``: no impression, or its
  heading with nothing under it.
- ``required_sections``: the sections a report of this modality must have.
- ``birads_missing`` / ``birads_recommendation``: a mammogram (or breast MRI
  or ultrasound) without a BI-RADS final assessment category, or a category
  the recommendation contradicts.
- ``placeholder``: template placeholders left in ("***", "[ ]", "XXX").
- ``truncated``: a section that stops mid-sentence ("...consistent with the").

When a report has no text, only ``no_text`` / ``document_only`` speak: the
other rules have nothing to look at and stay silent.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from listener.model import Finding, Report, Section, SectionKind, Severity
from listener.qa.engine import Folded, RuleInput, folded, lowered_ascii, rule

__all__ = [
    "DEFAULT_PLACEHOLDERS",
    "DEFAULT_REQUIRED",
    "BiradsCategory",
    "birads_categories",
    "birads_missing",
    "birads_recommendation",
    "breast_imaging_kind",
    "document_only",
    "empty_impression",
    "is_mammography",
    "missing_impression",
    "no_text",
    "placeholder",
    "required_sections",
    "truncated",
]

_DOCUMENT_KINDS = frozenset({"pdf", "cda", "binary"})

#: Sections each modality's report must have, besides the impression (its own
#: rules) and the comparison (``comparison.missing`` owns it). ``default``
#: applies to modalities not listed.
DEFAULT_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "default": ("indication", "findings"),
    "CT": ("indication", "technique", "findings"),
    "MR": ("indication", "technique", "findings"),
    "US": ("indication", "technique", "findings"),
    "NM": ("indication", "technique", "findings"),
}

#: Template placeholders (regular expressions). "XXX" is matched as a whole
#: token of three or more X; ``ignore_tokens`` drops the de-identification
#: token ("XXXX" in the Indiana corpus): live feeds are not de-identified and
#: should set ``ignore_tokens: []``.
DEFAULT_PLACEHOLDERS: tuple[str, ...] = (
    r"\*{3,}",
    r"\[[ \t]*\]",
    r"(?<![A-Za-z0-9])X{3,}(?![A-Za-z0-9])",
    r"_{2,}",
    r"\?{3,}",
    r"<[ \t]*(?:\.{2,}|\u2026|(?!/?(?i:br|p|b|i|u|div|span|li|ul|ol|hr|sup|sub|strong|em|font|table|tr|td)\b)"
    r"[A-Za-z][^<>\n]{0,40})>",
    r"(?i:\[[ \t]*(?:insert|enter|type|add|select|choose|fill|specify|dictate|measurement|size|side|"
    r"laterality|left/right|right/left|date|time|name|number|level|finding|location)\b[^\]\n]{0,40}\])",
)

# Heading-like lines the mapping may not know ("TECHNIQUE AND FINDINGS:"):
# a section named there is present even though the sectionizer missed it.
_HEADING_WORDS: Mapping[str, str] = {
    "indication": r"INDICATIONS?|HISTORY|REASON|CLINICAL",
    "technique": r"TECHNIQUES?|PROCEDURES?|EXAM(?:INATION)?|PROTOCOL|VIEWS|METHODS?",
    "comparison": r"COMPARISONS?|PRIORS?",
    "findings": r"FINDINGS?|REPORT|DISCUSSION|OBSERVATIONS?",
    "impression": r"IMPRESSIONS?|CONCLUSIONS?|SUMMARY|OPINION|ASSESSMENT|DIAGNOS[IE]S",
}


#: A heading line of each section kind in ``_HEADING_WORDS`` ("IMPRESSION:").
_HEADING_LINE_RES: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {
        kind: re.compile(rf"^[ \t,]*(?:[A-Z][A-Z /&,-]*)?\b(?:{words})\b[A-Z /&-]*[ \t,]*:", re.MULTILINE)
        for kind, words in _HEADING_WORDS.items()
    }
)


def _body_sections(report: Report) -> tuple[Section, ...]:
    return tuple(s for s in report.sections if s.kind is not SectionKind.OTHER or s.heading)


def _has_text(report: Report) -> bool:
    return bool(report.text.strip())


# ---------------------------------------------------------------- no text


@rule("completeness", severity=Severity.ERROR)
def no_text(data: RuleInput) -> Iterator[Finding]:
    """The report carries no text at all (and no PDF/CDA document instead)."""
    report = data.report
    if report.text_kind in _DOCUMENT_KINDS or _has_text(report):
        return
    yield data.emit(
        "The report has no text: nothing was dictated or the text did not arrive.",
        suggestion="Resend the report with its text.",
    )


@rule("completeness", severity=Severity.INFO)
def document_only(data: RuleInput) -> Iterator[Finding]:
    """The report is a PDF, CDA or other document: its text could not be checked."""
    report = data.report
    if report.text_kind not in _DOCUMENT_KINDS or _has_text(report):
        return
    yield data.emit(
        f"The report arrived as a {report.text_kind.upper()} document; the text checks did not run.",
    )


# ---------------------------------------------------------------- impression


def _impression_sections(report: Report) -> list[Section]:
    """Impression sections, plus a combined "FINDINGS AND IMPRESSION" one."""
    out = list(report.sections_of(SectionKind.IMPRESSION))
    out.extend(s for s in report.sections if s.kind is not SectionKind.IMPRESSION and "IMPRESSION" in s.heading.upper())
    return out


#: Headings that make a text a structured radiology report: one of them and no impression is a
#: report whose conclusion is missing.
_STRUCTURE_KINDS = (SectionKind.FINDINGS, SectionKind.COMPARISON)
#: Headings that only frame the exam. A report made of nothing but short ones ("INDICATION: cough"
#: and no findings or impression) states no result at all. A long one is a procedure note or a case
#: history whose body the sectioner did not split, and is left alone.
_FRAME_KINDS = (SectionKind.INDICATION, SectionKind.TECHNIQUE)
_FRAME_MAX = 300


def _frame_only(report: Report) -> bool:
    """Every section is a short indication or technique section: the report states no result."""
    return bool(report.sections) and all(
        s.kind in _FRAME_KINDS and len(s.text.strip()) <= _FRAME_MAX for s in report.sections
    )


@rule("completeness", severity=Severity.ERROR, params={"allow_unstructured": True})
def missing_impression(data: RuleInput) -> Iterator[Finding]:
    """The report has no impression (conclusion) section.

    With ``allow_unstructured`` (the default) only reports structured as a
    radiology report (a findings or comparison section, or nothing but short
    indication/technique sections) are checked: free text without headings,
    and notes that are not radiology reports, are left alone.
    """
    report = data.report
    if not _has_text(report) or _impression_sections(report):
        return
    if _HEADING_LINE_RES["impression"].search(report.text):
        return
    structured = any(s.kind in _STRUCTURE_KINDS for s in report.sections) or _frame_only(report)
    if not structured and data.param("allow_unstructured", True):
        return
    yield data.emit(
        "The report has no impression section.",
        suggestion="Add an IMPRESSION that answers the clinical question.",
    )


_CONCLUSION_HEADING_RE = re.compile(r"\b(?:IMPRESSIONS?|CONCLUSIONS?)\b", re.IGNORECASE)


@rule("completeness", severity=Severity.ERROR)
def empty_impression(data: RuleInput) -> Iterator[Finding]:
    """An impression heading is present but nothing is written under it."""
    report = data.report
    sections = _impression_sections(report)
    if not sections:
        return
    empty = [s for s in sections if not s.text.strip(" \t\r\n.,:;-")]
    if len(empty) < len(sections):
        # Another conclusion heading has text ("INTERPRETATION: ..." over the findings). An empty
        # IMPRESSION or CONCLUSION heading after it is still a conclusion never dictated.
        empty = [s for s in empty if _CONCLUSION_HEADING_RE.search(s.heading) and s.start > sections[0].start]
        if not empty:
            return
    sec = empty[0]
    start = max(0, report.text.rfind(sec.heading, 0, sec.start + 1)) if sec.heading else sec.start
    end = start + len(sec.heading) if sec.heading else sec.end
    yield data.emit(
        "The impression heading has no text under it.",
        [data.analysis.evidence(start, end)],
        suggestion="Dictate the impression, or remove the empty heading.",
    )


# ---------------------------------------------------------------- required sections


def _required_for(modality: str, table: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    value = table.get(modality.upper(), table.get("default", ()))
    return tuple(str(v) for v in value)


def _section_present(report: Report, kind: str) -> bool:
    try:
        section_kind = SectionKind(kind)
    except ValueError:
        return True  # an unknown name in the policy cannot be checked; the loader names params only
    if any(s.text.strip() for s in report.sections_of(section_kind)):
        return True
    if section_kind is SectionKind.FINDINGS and any(
        "FINDING" in s.heading.upper() and s.text.strip() for s in report.sections
    ):
        return True
    heading = _HEADING_LINE_RES.get(kind)
    return bool(heading is not None and heading.search(report.text))


@rule(
    "completeness",
    severity=Severity.INFO,
    params={"sections": {k: list(v) for k, v in DEFAULT_REQUIRED.items()}, "indication_from_order": True},
)
def required_sections(data: RuleInput) -> Iterator[Finding]:
    """A section the modality's reports must have is missing or empty.

    ``sections`` maps a modality (CT, MR, US, NM, XR, MG, ...) to its
    required section kinds; ``default`` covers the others. The impression
    has its own rules (missing_impression, empty_impression). With
    ``indication_from_order``, a reason for study sent with the order
    (OBR-31) counts as the indication.
    """
    report = data.report
    if not _has_text(report) or not _body_sections(report):
        return  # free text without headings: missing_impression speaks for it
    table: Mapping[str, Iterable[str]] = data.param("sections", DEFAULT_REQUIRED) or DEFAULT_REQUIRED
    missing: list[str] = []
    for kind in _required_for(report.modality, table):
        if kind == "impression":
            continue
        if kind == "indication" and report.reason.strip() and data.param("indication_from_order", True):
            continue
        if not _section_present(report, kind):
            missing.append(kind)
    if missing:
        modality = report.modality or "this"
        yield data.emit(
            f"Required section(s) missing or empty for a {modality} report: {', '.join(missing)}.",
            suggestion="Add the missing section(s).",
        )


# ---------------------------------------------------------------- BI-RADS

_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_CAT_VALUE = r"(?P<num>[0-6])(?P<sub>[abc])?(?![0-9])|(?P<word>zero|one|two|three|four|five|six)\b"
_BIRADS_RE = folded(
    re.compile(
        r"\b(?:BI-?RADS|ACR)\b(?:[\s\u00ae:#-]*(?:final\s+)?(?:assessment\s+)?(?:category|classification|assessment|cat\.?))?"
        rf"[\s:#=-]*(?:M/|US/|MG/)?(?:{_CAT_VALUE})",
        re.IGNORECASE,
    )
)
_ASSESSMENT_NAMES = (
    r"negative|benign|probably benign|suspicious|highly suggestive|known (?:biopsy[- ]proven )?malignan\w*|"
    r"incomplete|needs? additional"
)
_CATEGORY_RE = folded(
    re.compile(
        rf"\b(?:assessment|category)\s*[:#-]?\s*(?:{_CAT_VALUE})\s*[:(\u2013\u2014-]*\s*(?:{_ASSESSMENT_NAMES})\b",
        re.IGNORECASE,
    )
)
#: Each match of _BIRADS_RE holds "rads" (BI-RADS) or "acr"; each of _CATEGORY_RE "assessment" or "category".
_BIRADS_WORDS = ("rads", "acr", "assessment", "category")
_MAMMO_TITLE_RE = folded(re.compile(r"\bmammogra\w*|\bFFDM\b|\btomosynthesis\b", re.IGNORECASE))

_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|\n\s*\n|\n(?=\s*[A-Z][A-Z /&-]{2,}:)")
_RECOMMEND_RE = folded(
    re.compile(
        r"\b(recommend\w*|advis\w*|suggest(ed)?|should (be|undergo|have)|is (indicated|warranted|suggested|advised)|"
        r"are (indicated|warranted|suggested|advised)|(will be|to be|is being) (scheduled|performed|arranged)|"
        r"consider\w*|follow[- ]?up with|proceed (to|with))\b",
        re.IGNORECASE,
    )
)
_BIOPSY_RE = folded(
    re.compile(
        r"\b(biops(y|ies|ied)|tissue (sampling|diagnosis)|core(-| )needle|fine[- ]needle aspiration|FNA|"
        r"(surgical|excisional) (consultation|excision)|surgical consult\w*)\b",
        re.IGNORECASE,
    )
)
_NOT_BIOPSY_RE = folded(
    re.compile(
        r"\b(post[- ]?biopsy|prior biops|previous biops|biopsy clip|biopsy site|biopsy[- ]proven|"
        r"should not delay|if (a |the )?(clinically|palpable|there is)|status post|s/p|no (need for )?biopsy|"
        r"not (recommended|indicated|necessary))",
        re.IGNORECASE,
    )
)
_ROUTINE_RE = folded(
    re.compile(
        r"\b((routine|annual|yearly|continued|resume) (annual |yearly |routine )?(screening|mammogra\w*|follow[- ]?up|imaging)|"
        r"return to (routine|annual|yearly)|(screening|mammogra\w*) in (1|one) year|in 12 months)\b",
        re.IGNORECASE,
    )
)
_ADDITIONAL_RE = folded(
    re.compile(
        r"\b(additional|further|spot|magnifi\w*|compression|diagnostic|ultras\w*|sonogra\w*|MRI|"
        r"comparison|prior (films|studies|exams|mammogra\w*|images)|outside (films|studies|images)|views?|recall\w*|"
        r"call[- ]?back|work[- ]?up|evaluat\w*|tomosynthesis)\b",
        re.IGNORECASE,
    )
)


@dataclass(frozen=True, slots=True)
class BiradsCategory:
    """One BI-RADS final assessment category stated in the text."""

    value: int
    start: int
    end: int


def birads_categories(text: str) -> tuple[BiradsCategory, ...]:
    """Every BI-RADS category (0-6) stated in ``text``, in text order.

    Recognises "BI-RADS 4A", "BIRADS Classification 2 - Benign", "ACR
    category 1", "BI-RADS category: two" and "Assessment: Category 3 -
    Probably benign". The rules ask through :func:`_report_birads` (once per report).
    """
    low = lowered_ascii(text)
    if low is not None and not any(word in low for word in _BIRADS_WORDS):
        return ()  # every match of the two patterns holds one of these words
    seen: dict[int, BiradsCategory] = {}
    for pattern in (_BIRADS_RE, _CATEGORY_RE):
        for m in pattern.finditer(text):
            raw = m.group("num")
            value = int(raw) if raw is not None else _NUMBER_WORDS[m.group("word").lower()]
            seen.setdefault(m.start(), BiradsCategory(value, m.start(), m.end()))
    return tuple(seen[k] for k in sorted(seen))


#: Key of the report's BI-RADS categories in ``Analysis.shared`` (two rules ask).
_BIRADS_KEY = "completeness.birads_categories"


def _report_birads(data: RuleInput) -> tuple[BiradsCategory, ...]:
    """:func:`birads_categories` of the report's text, computed once per report."""
    found: tuple[BiradsCategory, ...] = data.analysis.shared(_BIRADS_KEY, lambda: birads_categories(data.report.text))
    return found


def is_mammography(data: RuleInput) -> bool:
    """Modality MG, a mammography CPT code, or a mammogram named in the exam title."""
    report = data.report
    modalities = {str(m).upper() for m in data.param("modalities", ("MG",))}
    if report.modality.upper() in modalities:
        return True
    entry = data.procedures.get(report.procedure.code) if data.procedures is not None else None
    if entry is not None and (entry.mammo or entry.tomosynthesis_addon_for or entry.modality.upper() in modalities):
        return True
    if _MAMMO_TITLE_RE.search(report.procedure.text):
        return True
    if not data.param("title_from_text", True):
        return False
    # The exam title dictated at the top ("EXAM: Digital screening mammogram.").
    for sec in report.sections[:2]:
        if sec.kind in (SectionKind.TECHNIQUE, SectionKind.OTHER):
            first_line = sec.text.split("\n", 1)[0][:200]
            if _MAMMO_TITLE_RE.search(first_line) and not re.search(r"\bcorrelat|\bcompar", first_line, re.I):
                return True
    return False


_BREAST_WORD = r"(mri|mr|magnetic resonance( imaging)?|ultrasound|ultrasonography|sonogra\w*|us)"
# "Breast MRI", "MRI of the left breast", "bilateral breast ultrasound", "US breast".
_BREAST_TITLE_RE = folded(
    re.compile(
        rf"\bbreasts? {_BREAST_WORD}\b|\b{_BREAST_WORD} (of )?(the )?(both |bilateral |right |left |rt |lt )?breasts?\b",
        re.IGNORECASE,
    )
)
_BREAST_TITLE_MODALITY = (
    ("MR", re.compile(r"\bmri?\b|magnetic", re.I)),
    ("US", re.compile(r"\bus\b|ultraso|sonogra", re.I)),
)
# Interventional breast procedures report the procedure, not a diagnostic assessment.
_BREAST_PROCEDURE_RE = re.compile(r"\b(biops\w*|guided|guidance|localization|aspiration|drainage|ductogra\w*)\b", re.I)
_BREAST_EXAM_NAME = {"MR": "Breast MRI", "US": "Breast ultrasound"}


def breast_imaging_kind(data: RuleInput) -> str:
    """``"MR"``/``"US"`` for a diagnostic breast MRI or ultrasound (``breast_modalities``), else ``""``.

    Recognised by a breast CPT code of that modality (77046-77049,
    76641/76642), by modality plus body region breast, by the ordered
    procedure's name, or (``title_from_text``) by the exam title dictated at
    the top. Guided biopsies, localizations and aspirations are procedures,
    not diagnostic exams.
    """
    report = data.report
    wanted = {str(m).upper() for m in data.param("breast_modalities", ("MR", "US"))}
    if not wanted:
        return ""
    titles = [report.procedure.text]
    entry = data.procedures.get(report.procedure.code) if data.procedures is not None else None
    if data.param("title_from_text", True):
        for sec in report.sections[:2]:
            if sec.kind in (SectionKind.TECHNIQUE, SectionKind.OTHER):
                titles.append(sec.text.split("\n", 1)[0][:200])
    if any(_BREAST_PROCEDURE_RE.search(t) for t in titles if t):
        return ""
    if entry is not None and entry.body_region == "breast" and entry.modality.upper() in wanted:
        return entry.modality.upper()
    modality = report.modality.upper()
    if report.body_region == "breast" and modality in wanted:
        return modality
    for title in titles:
        named = _BREAST_TITLE_RE.search(title) if title else None
        if named is None or re.search(r"\bcorrelat|\bcompar", title, re.I):
            continue
        for kind, regex in _BREAST_TITLE_MODALITY:
            if kind in wanted and regex.search(named.group(0)):
                return kind
    return ""


@rule(
    "completeness",
    severity=Severity.ERROR,
    params={"modalities": ["MG"], "breast_modalities": ["MR", "US"], "title_from_text": True},
)
def birads_missing(data: RuleInput) -> Iterator[Finding]:
    """A mammography, breast MRI or breast ultrasound report states no BI-RADS final assessment category (0-6).

    The ACR BI-RADS atlas asks for a final assessment on every diagnostic
    breast imaging report (mammography, ultrasound, MRI). Mammography is
    recognised by modality (``modalities``), by a mammography CPT code, or,
    with ``title_from_text``, by the exam title dictated at the top of the
    report; breast MRI and ultrasound (``breast_modalities``; empty turns
    them off) by their CPT codes (77046-77049, 76641/76642), by modality
    with body region breast, or by the exam title. Guided breast procedures
    (biopsy, localization, aspiration) are not checked.
    """
    report = data.report
    if not _has_text(report):
        return
    if is_mammography(data):
        exam = "Mammography"
        suggestion = "State the BI-RADS category in the impression (MQSA requires a final assessment)."
    else:
        kind = breast_imaging_kind(data)
        if not kind:
            return
        exam = _BREAST_EXAM_NAME[kind]
        suggestion = "State the BI-RADS category in the impression (the ACR BI-RADS atlas requires a final assessment)."
    if _report_birads(data):
        return
    yield data.emit(
        f"{exam} report without a BI-RADS final assessment category (0-6).",
        suggestion=suggestion,
    )


def _sentences(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for m in _SENTENCE_END_RE.finditer(text):
        yield start, m.end()
        start = m.end()
    if start < len(text):
        yield start, len(text)


def _recommendations(text: str, want: Folded) -> list[tuple[int, int]]:
    """Spans of sentences that recommend something ``want`` matches."""
    out: list[tuple[int, int]] = []
    for s, e in _sentences(text):
        if want.search(text, s, e) is None:
            continue
        if want is _BIOPSY_RE:
            if _RECOMMEND_RE.search(text, s, e) is None or _NOT_BIOPSY_RE.search(text, s, e) is not None:
                continue
        elif (
            want is _ADDITIONAL_RE
            and _RECOMMEND_RE.search(text, s, e) is None
            and not re.search(r"\b(needed|necessary|required|requested|obtain\w*|will be|to follow)\b", text[s:e], re.I)
        ):
            continue
        out.append((s, e))
    return out


@rule("completeness", severity=Severity.WARNING)
def birads_recommendation(data: RuleInput) -> Iterator[Finding]:
    """The BI-RADS category contradicts the recommendation.

    BI-RADS 1/2 with a biopsy recommended; BI-RADS 4/5 with routine
    screening and no biopsy recommended; BI-RADS 0 with no additional
    imaging (or prior films) asked for. Checked wherever a category is
    stated (mammography, breast ultrasound or MRI).
    """
    text = data.report.text
    cats = _report_birads(data)
    if not cats:
        return
    values = {c.value for c in cats}
    biopsy = _recommendations(text, _BIOPSY_RE)
    ev = data.analysis.evidence
    if values <= {1, 2} and biopsy:
        s, e = biopsy[0]
        yield data.emit(
            f"BI-RADS {max(values)} (negative/benign) but a biopsy is recommended.",
            [ev(cats[0].start, cats[0].end), ev(s, e)],
            suggestion="Use BI-RADS 4 or 5 when tissue sampling is recommended, or revise the recommendation.",
        )
        return
    high = [c for c in cats if c.value in (4, 5)]
    if high and not biopsy:
        routine = _recommendations(text, _ROUTINE_RE)
        if routine:
            s, e = routine[0]
            yield data.emit(
                f"BI-RADS {high[0].value} (suspicious) with routine screening and no biopsy recommended.",
                [ev(high[0].start, high[0].end), ev(s, e)],
                suggestion="BI-RADS 4 and 5 call for tissue diagnosis.",
            )
            return
    zero = [c for c in cats if c.value == 0]
    if zero and not _recommendations(text, _ADDITIONAL_RE):
        yield data.emit(
            "BI-RADS 0 (incomplete) without a recommendation for additional imaging or prior films.",
            [ev(zero[0].start, zero[0].end)],
            suggestion="Say which additional views, ultrasound or prior films are needed.",
        )


# ---------------------------------------------------------------- placeholders


def _valid(pattern: str) -> str:
    """``pattern``, or its literal text when it is not a valid regular expression."""
    try:
        re.compile(pattern)
    except re.error:
        return re.escape(pattern)
    return pattern


_BANNER_RE = re.compile(r"^[ \t]*([*_=~-])\1{2,}[^\n]*?\1{3,}[ \t]*$|^[ \t]*([*_=~-])\2{2,}[ \t]*$")


def _decoration(text: str) -> Callable[[int, int], bool]:
    """A test of ``text[start:end]``: True for a run of '*' or '_' that decorates rather than holds a place.

    Real feeds frame status banners ("********FINAL REPORT********") and draw
    separator or signature lines ("__________"); a placeholder stands inside a
    sentence ("measuring *** cm"). The test reads the lines around the run, from the
    line feed before ``start`` to the one at or after ``end``. The line feeds are
    found once and bisected, and each line is matched once: a long line of many
    placeholders was searched back and forth, and copied, for each of them.
    """
    newlines: list[int] = []
    seen: dict[tuple[int, int], bool] = {}

    def test(start: int, end: int) -> bool:
        if not newlines:
            newlines.extend(m.start() for m in _LINE_FEED_RE.finditer(text))
            newlines.append(len(text))  # the end of the last line (a text with none: a sentinel)
        i = bisect_left(newlines, start)
        line_start = newlines[i - 1] + 1 if i > 0 else 0
        line_end = newlines[bisect_left(newlines, end)] if end <= len(text) else len(text)
        key = (line_start, line_end)
        found = seen.get(key)
        if found is None:
            found = seen[key] = bool(_BANNER_RE.match(text[line_start:line_end]))
        return found

    return test


_LINE_FEED_RE = re.compile("\n")


def _placeholder_re(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{_valid(p)})" for p in patterns) or "(?!)")


#: Every match of a DEFAULT_PLACEHOLDERS pattern starts with one of these
#: characters and none is empty: the default patterns are tried only there.
_DEFAULT_FIRST_CHARS = re.compile(r"[*\[X_?<]")


def _placeholders(pattern: re.Pattern[str], text: str, default: bool) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)``; with the default patterns, matched only where one can start.

    The combined pattern tries eight alternatives (one behind a lookbehind)
    at every character; the default ones all begin with a character of
    ``_DEFAULT_FIRST_CHARS``, so skipping to those characters and matching
    there finds the same non-overlapping leftmost matches, several times faster.
    """
    if not default:
        yield from pattern.finditer(text)
        return
    pos = 0
    while True:
        first = _DEFAULT_FIRST_CHARS.search(text, pos)
        if first is None:
            return
        start = first.start()
        m = pattern.match(text, start)
        if m is None:
            pos = start + 1
        else:
            yield m
            pos = m.end()


@dataclass(frozen=True, slots=True)
class _PlaceholderSettings:
    """The placeholder rule's params, compiled once per QaConfig."""

    pattern: re.Pattern[str]
    default: bool  # the default patterns: searched only where one can start (_placeholders)
    ignore: frozenset[str]


def _prepare_placeholder(params: Mapping[str, Any]) -> _PlaceholderSettings:
    patterns: Any = params.get("patterns", DEFAULT_PLACEHOLDERS) or ()
    sources = tuple(str(p) for p in patterns)
    ignore = frozenset(str(t) for t in (params.get("ignore_tokens", ("XXXX",)) or ()))
    return _PlaceholderSettings(_placeholder_re(sources), sources == DEFAULT_PLACEHOLDERS, ignore)


@rule(
    "completeness",
    severity=Severity.ERROR,
    params={"patterns": list(DEFAULT_PLACEHOLDERS), "ignore_tokens": ["XXXX"]},
    prepare=_prepare_placeholder,
)
def placeholder(data: RuleInput) -> Iterator[Finding]:
    """A template placeholder was left in the report ("***", "[ ]", "XXX", "__", "<...>").

    ``patterns`` are regular expressions; ``ignore_tokens`` are exact
    matches to skip (the corpus de-identification token "XXXX"; set it to
    ``[]`` for live feeds, which are not de-identified).
    """
    text = data.report.text
    if not text:
        return
    prepared: _PlaceholderSettings = data.prepared
    ignore = prepared.ignore
    decoration = _decoration(text)
    hits = [
        m
        for m in _placeholders(prepared.pattern, text, prepared.default)
        if m.group().strip("<>[]{} \t") not in ignore and not decoration(m.start(), m.end())
    ]
    if not hits:
        return
    yield data.emit(
        f"Template placeholder left in the report ({len(hits)} occurrence{'s' if len(hits) > 1 else ''}).",
        [data.analysis.evidence(m.start(), m.end()) for m in hits[:5]],
        suggestion="Replace each placeholder with the dictated value, or delete it.",
    )


# ---------------------------------------------------------------- truncated dictation

#: Words a sentence cannot end on. ``strict`` ones are flagged even with a
#: period after them ("... consistent with the."); the others only when the
#: section stops with no terminal punctuation.
_STRICT_END_WORDS = ("the", "a", "an", "and", "or", "of", "with", "without", "than", "versus", "from", "into")
_LOOSE_END_WORDS = (
    "to",
    "for",
    "at",
    "in",
    "on",
    "is",
    "are",
    "was",
    "were",
    "which",
    "that",
    "but",
    "as",
    "by",
    "no",
    "both",
    "this",
    "these",
    "there",
    "its",
    "their",
    "his",
    "her",
    "measuring",
)
_DEFAULT_END_WORDS = _STRICT_END_WORDS + _LOOSE_END_WORDS
_TRAILING_WORD_RE = re.compile(r"(?<![A-Za-z])[A-Za-z]+\Z")
# Sign-off lines that legitimately end on a preposition ("Dictated by", "Reviewed and approved by",
# "Electronically signed by Dr. A on"): the verb is followed by "by", "on", "at" or a colon.
_SIGNOFF_RE = folded(
    re.compile(
        r"\b(dictated|transcribed|signed|read|reviewed|verified|approved|interpreted|electronically|reported)\b"
        r"(?:\s*\Z|(?:\s+(?:and|&)\s+\w+)?\s*(?:by\b|on\b|at\b|:)[^\n]*\Z)",
        re.IGNORECASE,
    )
)
# A sign-off line (or its last sentence) is short ("Electronically signed by Dr. A. Smith on"); a
# long sentence that happens to contain "reviewed by" or "reported" is dictation.
_SIGNOFF_MAX_WORDS = 12
_LAST_STOP_RE = re.compile(r"[.!?](?=[\s,])|\n")
_TRUNCATION_KINDS = (SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.ADDENDUM, SectionKind.COMMUNICATION)


def _end_words(params: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(w).lower() for w in (params.get("end_words", _DEFAULT_END_WORDS) or ()))


@rule("completeness", severity=Severity.WARNING, params={"end_words": list(_DEFAULT_END_WORDS)}, prepare=_end_words)
def truncated(data: RuleInput) -> Iterator[Finding]:
    """A findings or impression section stops mid-sentence ("...consistent with the").

    The last sentence of the section ends on a function word from
    ``end_words``; without terminal punctuation any of them counts, with a
    period only words that can never end a sentence (the, a, and, of,
    with...). "a" counts in lower case only ("hepatitis A").
    """
    report = data.report
    end_words: frozenset[str] = data.prepared
    sections = [s for s in report.sections if s.kind in _TRUNCATION_KINDS]
    if not sections:
        sections = [s for s in report.sections if s.kind is SectionKind.OTHER]
    # A dictation cut off ends the whole report mid-sentence, whatever the last heading is
    # ("COURSE:", "PLAN:", "DISCUSSION:" in clinic-style reports): the last section with text is
    # checked too (docs/qa-rules.md, "Completeness").
    last = next((s for s in reversed(report.sections) if s.text.strip()), None)
    if last is not None and last not in sections:
        sections.append(last)
    for sec in sections:
        # Only the tail matters: look at the last characters, never the whole section.
        body = sec.text.rstrip(" \t\r\n,")
        punctuated = body.endswith((".", ";", ":"))
        core = body[:-1].rstrip(" \t") if punctuated else body
        offset = max(0, len(core) - 40)
        m = _TRAILING_WORD_RE.search(core, offset)
        if m is None:
            continue
        word = m.group()
        lowered = word.lower()
        if lowered not in end_words or (lowered == "a" and word != "a"):
            continue
        if punctuated and lowered not in _STRICT_END_WORDS:
            continue
        # The last sentence starts after the last stop (". ", ".," of run-on exports, or a line
        # break); only it can be a sign-off ("Dictated by"): a "reported" or "reviewed" earlier in
        # a one-line report says nothing about how the report ends.
        stops = list(_LAST_STOP_RE.finditer(body, max(0, m.start() - 400), m.start()))
        last_stop = stops[-1].end() - 1 if stops else -1
        line = body[body.rfind("\n", 0, m.start()) + 1 :]
        if any(len(t.split()) <= _SIGNOFF_MAX_WORDS and _SIGNOFF_RE.search(t) for t in (line, body[last_stop + 1 :])):
            continue
        # The sentence needs a word before the function word: a lone "and" or "the" is not a
        # dictation. One word is enough ("IMPRESSION: Negative for", "Findings of"): no complete
        # statement is two words ending on a preposition or article.
        if not body[last_stop + 1 : m.start()].split():
            continue
        start = sec.start + last_stop + 1
        while start < sec.end and report.text[start].isspace():
            start += 1
        yield data.emit(
            f"The {sec.kind.value} section ends mid-sentence, on the function word {lowered!r}.",
            [data.analysis.evidence(start, sec.start + m.end())],
            suggestion="Finish the sentence or remove the fragment.",
        )
