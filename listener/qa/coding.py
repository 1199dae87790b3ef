"""Coding rules: the billed procedure code vs what the report describes.

Pure: no I/O, no clock. The CPT facts come from mappings/procedures.yaml
(``data.procedures``), the site contract from policies/sites.yaml
(``data.directory``). Every rule here stays silent when the code is unknown to
the table: an unknown code gets no coding checks, rather than guesses.

Strategy: coding findings are read by coders and radiologists who will switch
the tool off if it cries wolf, so each rule looks only where the exam is
described (technique, title lines, and in findings/impression only sentences
that talk about the acquisition), ignores sentences about prior or outside
comparison studies, and needs an explicit statement before it speaks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from listener.model import Evidence, Finding, Section, SectionKind, Severity
from listener.procedures import ProcedureEntry, views_in_range
from listener.qa.comparison import region_phrases, regions_related
from listener.qa.engine import Folded, RuleInput, folded, rule
from listener.text.scope import inside_any

_I = re.IGNORECASE

# --- contrast statements -------------------------------------------------------------------------

_ROUTE_WORD = (
    r"(?:iv|i\.v\.|intravenous(?:ly)?|intravascular|intra-?arterial|intrathecal|intra-?articular|oral|"
    r"enteric|rectal|iodinated|non-?ionic|gadolinium[- ]based|gadolinium|gad)"
)
_ROUTE = rf"(?:{_ROUTE_WORD}\s*(?:(?:and|or|&|/|,|\+)\s*)?){{0,3}}"
_NOUN = r"(?:contrast(?:\s+(?:material|media|medium|agents?))?|gadolinium|gad\b)"
_AGENT = (
    r"(?:omnipaque|isovue|visipaque|optiray|ultravist|iohexol|iopamidol|iodixanol|ioversol|iopromide|"
    r"gadavist|gadobutrol|dotarem|gadoterate|multihance|gadobenate|magnevist|gadopentetate|omniscan|"
    r"gadodiamide|prohance|gadoteridol|eovist|gadoxetate|clariscan|vueway|elucirem|gadopiclenol|"
    r"ablavar|feraheme|definity|lumason|optison)"
)
_ADMIN = r"(?:administration|injection|infusion|bolus)"

_WW = (
    rf"\b(?:with\s+and\s+without|without\s+and\s+with)\s+(?:the\s+)?(?:use\s+of\s+)?{_ROUTE}\s*(?:{_NOUN}|{_AGENT})",
    r"\b(?:w\s*/\s*(?:and|&|\+)?\s*w\s*/\s*o|w\s*/?\s*wo|w\s*(?:&|\+|and)\s*wo|wo\s*/\s*w|w/o\s*(?:and|&|\+)\s*w/?)"
    r"(?=\s*(?:iv\b|contrast|cont\b|con\b|gad|\)|$))",
    rf"\b(?:pre|before)[- ]?\s*(?:and|&|/)\s*(?:post|after)[- ]?\s*(?:the\s+)?{_ROUTE}\s*(?:{_NOUN}|{_AGENT}|{_ADMIN}|contrast)",
    rf"\bprior\s+to\s+and\s+(?:after|following)\s+(?:the\s+)?{_ROUTE}\s*(?:{_ADMIN}|{_NOUN}|{_AGENT})",
)
_WO = (
    rf"\b(?:without|w\s*/\s*o|wo|lack\s+of|absence\s+of)\s+(?:the\s+)?(?:use\s+of\s+|{_ADMIN}\s+of\s+|any\s+)?(?:the\s+)?{_ROUTE}\s*{_NOUN}",
    r"\bnon-?\s?contrast(?:ed)?\b",
    r"\b(?:unenhanced|non-?enhanced)\b",
    r"\bpre-?\s?contrast\b",
    rf"\bno\s+{_ROUTE}\s*{_NOUN}(?=\s*(?:[.;,)]|$|was\b|were\b|is\b|administered|given|used|injected))",
    rf"\b{_NOUN}\s+(?:was|were|is)\s+not\s+(?:administered|given|used|injected|utilized)",
    rf"\bdid\s+not\s+receive\s+(?:any\s+)?{_ROUTE}\s*{_NOUN}",
)
_W = (
    rf"\b(?:with|w\s*/|w)\s+(?:the\s+)?(?:use\s+of\s+|administration\s+of\s+)?{_ROUTE}\s*(?:{_NOUN}|{_AGENT})",
    r"\bcontrast[- ]enhanced\b",
    r"\bpost-?\s?(?:contrast|gadolinium|gad\b|gado\w*)",
    rf"\b(?:after|following|post|with|during)\s+(?:the\s+)?(?:uneventful\s+|rapid\s+|dynamic\s+)?{_ROUTE}\s*{_ADMIN}\s+of\b",
    # "following intravenous contrast", "after IV contrast", "after the administration of gadolinium"
    rf"\b(?:after|following)\s+(?:the\s+)?(?:{_ADMIN}\s+of\s+)?(?:the\s+)?{_ROUTE}\s*(?:{_NOUN}|{_AGENT})",
    rf"\b(?:{_NOUN}|{_AGENT})\s+(?:\w+\s+)?(?:was|were)\s+(?:\w+\s+)?(?:administered|given|injected|infused|utilized|used)",
    rf"\b\d+(?:\.\d+)?\s*(?:ml|cc|mls)\s+(?:of\s+)?{_ROUTE}\s*(?:{_AGENT}|{_NOUN})",
    rf"\b{_AGENT}\b",
    r"\b(?:arterial|portal\s+venous|nephrographic|excretory|pancreatic)\s+phases?\b",
)


def _group(name: str, patterns: tuple[str, ...]) -> str:
    return f"(?P<{name}>" + "|".join(f"(?:{p})" for p in patterns) + ")"


# Alternation order matters: at one position the combined ("with and without")
# statement wins over its halves.
_CONTRAST_RE = folded(
    re.compile(
        "|".join((_group("ww", _WW), _group("wo", _WO), _group("w", _W))),
        _I | re.MULTILINE,
    )
)
# A cheap first look (substring tests run in C; the full pattern is slow to scan): every statement
# above contains one of these, lower-cased.
_CONTRAST_HINTS = (
    "contrast",
    "enhanc",
    "gad",
    "phase",
    "w/o",
    "wo ",
    "w/wo",
    "paque",
    "isovue",
    "ultravist",
    "optiray",
    "iohexol",
    "iopamidol",
    "iodixanol",
    "ioversol",
    "iopromide",
    "dotarem",
    "multihance",
    "gadobenate",
    "magnevist",
    "omniscan",
    "prohance",
    "eovist",
    "clariscan",
    "vueway",
    "elucirem",
    "ablavar",
    "feraheme",
    "definity",
    "lumason",
    "optison",
)


def _mentions_contrast(text: str) -> bool:
    low = text.lower()
    return any(h in low for h in _CONTRAST_HINTS)


_ORAL_RE = folded(
    re.compile(
        r"\b(?:oral(?:ly)?|enteric|rectal|per\s+os|p\.?o\.?|positive\s+bowel|barium|gastrografin|water[- ]soluble)\b",
        _I,
    )
)
_IV_RE = folded(
    re.compile(
        r"\b(?:iv|i\.v\.|intravenous(?:ly)?|intravascular|intra-?arterial|intrathecal|intra-?articular|gadolinium|gad\w*)\b|"
        + _AGENT.replace("(?:", "(?:\\b", 1),
        _I,
    )
)
_NOT_BEFORE_RE = folded(re.compile(r"\b(?:not|no|never)\b[^.;]{0,20}$", _I))
# A sentence about an earlier or outside study, an allergy, or a plan says nothing about this exam.
_OFF_TOPIC_RE = folded(
    re.compile(
        r"\b(?:prior|previous(?:ly)?|compar\w*|outside|earlier|dated|recommend\w*|suggest\w*|consider\w*|"
        r"allerg\w*|could\s+be|would\s+be|if\s+clinically|may\s+be\s+(?:helpful|obtained|performed|of\s+(?:benefit|value|use|further|additional)|beneficial|useful)|follow-?up|"
        r"history\s+of|last\s+(?:week|month|year)|required|needed|should|advised|warranted|when|once|"
        r"revealed|showed|demonstrated\s+(?:a|an)|reportedly)\b",
        _I,
    )
)
# In findings/impression a statement counts only in a sentence about the acquisition.
_ACQ_RE = folded(
    re.compile(
        r"\b(?:obtained|performed|acquired|administered|given|injected|infused|imaging|images?|scans?|"
        r"study|exam(?:ination)?|protocol|technique|sequences?|phases?|CT|MRI?|CTA|MRA|series)\b",
        _I,
    )
)
_ANGIO_RE = folded(re.compile(r"\b(?:CTA|MRA|angiogra\w*|perfusion|venogra\w*)\b", _I))

_CONTRAST_LABELS = {
    "without": "without contrast",
    "with": "with contrast",
    "without_then_with": "without and then with contrast",
}
_DESCRIBING = (
    SectionKind.TECHNIQUE,
    SectionKind.OTHER,
    SectionKind.FINDINGS,
    SectionKind.IMPRESSION,
    SectionKind.ADDENDUM,
)


@dataclass(frozen=True, slots=True)
class Statement:
    """One contrast statement: its kind (ww, wo, w), span and sentence."""

    kind: str
    start: int
    end: int
    sentence_start: int
    sentence_end: int


def _describing_sentences(
    data: RuleInput,
    *,
    needle: Callable[[str], bool] | None = None,
    kinds: tuple[SectionKind, ...] = _DESCRIBING,
    title_only: bool = False,
) -> Iterator[tuple[Section | None, int, int]]:
    """Sentences that describe this exam: technique/title everywhere, body sentences about acquisition.

    ``needle`` skips sections and sentences it does not match (cheap first: most
    reports never mention contrast). ``title_only`` keeps, of the sections before
    the first heading, only a short title (a long one is history or a letter).
    """
    report = data.report
    sections: tuple[Section | None, ...] = report.sections or (None,)
    text = report.text
    for index, sec in enumerate(sections):
        if sec is not None and sec.kind not in kinds:
            continue
        start, end = (sec.start, sec.end) if sec is not None else (0, len(text))
        if title_only and (sec is None or sec.kind is SectionKind.OTHER) and (index > 0 or end - start > _TITLE_MAX):
            continue
        if needle is not None and not needle(text[start:end]):
            continue
        body = sec is not None and sec.kind in (SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.ADDENDUM)
        spans = data.analysis.sentences(start, end)
        if title_only:
            # The exam is named at the start of a technique section; later sentences are detail
            # (or, under an "EXAM:" heading of a clinic note, a physical examination).
            spans = spans[:_TITLE_SENTENCES]
        for span in spans:
            sentence = text[span.start : span.end]
            if needle is not None and not needle(sentence):
                continue
            if _OFF_TOPIC_RE.search(sentence):
                continue
            if body and not _ACQ_RE.search(sentence):
                continue
            yield sec, span.start, span.end


def _oral_only(text: str, match: re.Match[str], start: int, end: int) -> bool:
    """True for a statement about oral/rectal contrast only.

    The route words inside the statement decide ("without oral contrast, with IV
    contrast": two statements, one oral); a statement naming no route takes it
    from its neighbourhood ("oral Omnipaque").
    """
    own = match.group(0)
    if _ORAL_RE.search(own):
        return not _IV_RE.search(own)
    if _IV_RE.search(own):
        return False
    window = text[max(start, match.start() - 30) : min(end, match.end() + 30)]
    return bool(_ORAL_RE.search(window)) and not _IV_RE.search(window)


def contrast_statements(data: RuleInput) -> tuple[Statement, ...]:
    """Every statement about IV (or intrathecal/intra-articular) contrast for this exam.

    Oral/rectal-only statements are dropped: CPT "with contrast" means
    intravascular, intrathecal or intra-articular contrast.
    """
    text = data.report.text
    out: list[Statement] = []
    for technique in data.analysis.sections_of(SectionKind.TECHNIQUE):
        if technique.heading.upper().startswith("CONTRAST") and re.match(r"\s*(?:none|no\b|n/a)", technique.text, _I):
            out.append(
                Statement(
                    "wo", technique.start, min(technique.end, technique.start + 4), technique.start, technique.end
                )
            )
    if not _mentions_contrast(text):
        return tuple(out)
    for _, start, end in _describing_sentences(data, needle=_mentions_contrast):
        for match in _CONTRAST_RE.finditer(text, start, end):
            kind = match.lastgroup or ""
            if _oral_only(text, match, start, end):
                continue
            if kind == "w" and _NOT_BEFORE_RE.search(text[start : match.start()]):
                continue
            out.append(Statement(kind, match.start(), match.end(), start, end))
    return tuple(out)


def _exam_line(data: RuleInput, start: int) -> bool:
    """True when ``start`` is in the report's exam line: a short title before the first heading, or
    the first sentence under an "EXAM:" heading. That line names this exam, never another one."""
    sections = data.report.sections
    if not sections:
        return False
    first = sections[0]
    if first.kind is SectionKind.OTHER and first.start <= start < first.end and first.end - first.start <= _TITLE_MAX:
        return True
    for sec in sections:
        if sec.kind is SectionKind.TECHNIQUE and sec.start <= start < sec.end and _EXAM_HEADING_RE.search(sec.heading):
            spans = data.analysis.sentences(sec.start, sec.end)
            return bool(spans) and spans[0].start <= start < spans[0].end
    return False


def _aside(data: RuleInput, st: Statement, entry: ProcedureEntry) -> bool:
    """True when the statement's sentence is about another exam (angiography, another region).

    An angiography named in the exam line is this exam: its contrast is the exam's contrast.
    """
    sentence = data.report.text[st.sentence_start : st.sentence_end]
    if _ANGIO_RE.search(sentence) and not entry.angiography and not _exam_line(data, st.sentence_start):
        return True
    # A sentence naming another modality and not the code's is about another exam.
    named = {m for m, pattern in _MODALITY_RES.items() if m in _CROSS_SECTIONAL and pattern.search(sentence)}
    if named and entry.modality not in named:
        return True
    # The region nearest the statement is the exam it qualifies ("CT head without contrast and
    # CT chest with contrast": "with contrast" belongs to the chest).
    regions = region_phrases(sentence, offset=st.sentence_start)
    if not regions:
        return False
    nearest = min(regions, key=lambda r: min(abs(r[1] - st.end), abs(st.start - r[2])))
    return not regions_related(nearest[0], entry.body_region)


def _evidence(data: RuleInput, statements: Iterable[Statement]) -> list[Evidence]:
    return [data.analysis.evidence(s.start, s.end) for s in statements][:3]


@rule("coding", severity=Severity.ERROR, params={"check_mr_postcontrast_only": False})
def contrast_mismatch(data: RuleInput) -> Iterable[Finding]:
    """The contrast the report describes differs from the contrast of the billed CPT code."""
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if table is None or entry is None or entry.contrast not in _CONTRAST_LABELS or entry.enteric_contrast:
        return
    statements = contrast_statements(data)
    if not statements:
        return
    ww = [s for s in statements if s.kind == "ww"]
    w = [s for s in statements if s.kind == "w" and not _aside(data, s, entry)]
    wo = [s for s in statements if s.kind == "wo" and not _aside(data, s, entry)]
    stated = ""
    evidence: list[Statement] = []
    code_contrast = entry.contrast
    if code_contrast == "without":
        if ww:
            stated, evidence = "without_then_with", ww
        elif w:
            stated, evidence = ("without_then_with", w + wo) if wo else ("with", w)
    elif code_contrast == "with":
        if not entry.angiography and (ww or (w and wo)):
            stated, evidence = "without_then_with", ww or wo
        elif wo and not w and not ww:
            stated, evidence = "without", wo
    else:  # without_then_with
        if wo and not w and not ww:
            stated, evidence = "without", wo
        elif w and not wo and not ww:
            post_only = entry.modality == "CT" or (
                entry.modality == "MR" and bool(data.param("check_mr_postcontrast_only"))
            )
            if post_only:
                stated, evidence = "with", w
    if not stated:
        return
    better = table.family_code(entry.family, stated) if entry.family else None
    suggestion = (
        f"Bill {better} ({_CONTRAST_LABELS[stated]}) or correct the contrast wording."
        if better
        else "Correct the code or the contrast wording."
    )
    yield data.emit(
        f"Report describes the exam {_CONTRAST_LABELS[stated]}; code {entry.code} is {_CONTRAST_LABELS[code_contrast]}.",
        _evidence(data, evidence),
        suggestion,
    )


# --- modality and body region ----------------------------------------------------------------------

_MODALITY_WORDS = {
    "CT": r"\b(?:CT|CTA|computed\s+tomograph\w*|CAT\s+scan)\b",
    "MR": r"\b(?:(?-i:MRI?|MRA)|magnetic\s+resonance)\b",
    "US": r"\b(?:ultrasound|sonograph\w*|sonogram|duplex|doppler|(?-i:US))\b",
    "XR": r"\b(?:x-?rays?|radiograph\w*|films?|views?\s+of\s+the|plain\s+films?)\b",
    "MG": r"\b(?:mammogra\w*|tomosynthesis)\b",
    "NM": r"\b(?:nuclear|scintigra\w*|SPECT|technetium|Tc-?99m)\b",
    "PT": r"\b(?:(?-i:PET)|positron)\b",
    "FL": r"\b(?:fluoroscop\w*|esophagram|barium|swallow)\b",
    "DXA": r"\b(?:DXA|DEXA|bone\s+densit\w*|densitometry)\b",
}


def _modality_re(source: str) -> Folded | re.Pattern[str]:
    """The modality pattern, folded unless part of it is case-sensitive ("(?-i:US)")."""
    pattern = re.compile(source, re.IGNORECASE)
    return pattern if "(?-i:" in source else folded(pattern)


_MODALITY_RES = {k: _modality_re(v) for k, v in _MODALITY_WORDS.items()}
_CROSS_SECTIONAL = frozenset({"CT", "MR", "US", "PT"})
_TITLE_MAX = 300
_TITLE_SENTENCES = 3
# Modalities that legitimately share a report with the code's modality.
_COMPATIBLE = {
    "PT": {"CT"},
    "NM": {"CT", "XR"},
    "FL": {"XR"},
    "MG": {"US", "MR"},
    "XR": {"FL"},
    "CT": {"PT", "NM"},
    "DXA": {"XR"},
}


def _title_sentences(data: RuleInput) -> list[tuple[int, int]]:
    """Sentences of the technique sections and of a short title before the first heading (once per report)."""
    found: list[tuple[int, int]] = data.analysis.shared(_TITLE_KEY, lambda: _find_title_sentences(data))
    return found


_TITLE_KEY = "coding.title_sentences"


def _find_title_sentences(data: RuleInput) -> list[tuple[int, int]]:
    kinds = (SectionKind.TECHNIQUE, SectionKind.OTHER)
    return [(start, end) for _, start, end in _describing_sentences(data, kinds=kinds, title_only=True)]


# A radiograph's exam line names its projections or view count ("PA and lateral", "2V", "two views",
# "frontal/lateral", "single portable AP"): no CT, MR, ultrasound or nuclear exam is described so.
_RADIOGRAPH_TITLE_RE = folded(
    re.compile(
        r"\b(?:x-?rays?|radiographs?|radiography|plain\s+films?|"
        r"(?:pa|ap)\s*(?:and|&|/|\+)\s*(?:lat(?:eral)?|pa|ap)\b|frontal\s*(?:and|&|/)\s*lateral|"
        r"\w+\s+(?:and|&)\s+lat(?:eral)?(?:\s+views?)?\s*(?=[,.;]|$|on\b|dated\b)|"
        r"(?:\d|one|two|three|four|single)[\s-]*(?:v|vw|views?)\b|portable\s+(?:ap|chest|upright|supine))",
        _I,
    )
)
# Codes of these modalities are never billed for an exam described by its projections.
_NOT_PROJECTION = frozenset({"CT", "MR", "US", "NM", "PT"})
# Exam-line headings: the first sentence under them names the exam itself ("EXAM: Chest PA & Lateral.").
_EXAM_HEADING_RE = re.compile(r"\b(?:EXAM(?:INATION)?|PROCEDURE|STUDY|TITLE)\b", _I)


def _exam_sections(data: RuleInput) -> Callable[[int], bool]:
    """Whether an offset lies in a technique section under an exam-line heading ("EXAM:", "PROCEDURE:").

    The sections are indexed once (their starts sorted, with the furthest end reached so far), so a
    report of many sections and title sentences is not a walk over every section per sentence.
    """
    return inside_any(
        (sec.start, sec.end)
        for sec in data.report.sections
        if sec.kind is SectionKind.TECHNIQUE and _EXAM_HEADING_RE.search(sec.heading)
    )


def _exam_title(data: RuleInput) -> str:
    """The exam name that travels with the report (OBR-4 text, DiagnosticReport.code.text), or ""."""
    return data.report.procedure.text.strip()


def _title_regions(title: str) -> tuple[tuple[str, int, int], ...]:
    """Body regions the exam title names (region_phrases without the exam-word condition)."""
    return tuple(region_phrases(title))


def _title_modality_names(title: str) -> tuple[str, ...]:
    """Modalities the exam title names; "XR" also for projections or a view count."""
    names = [modality for modality, pattern in _MODALITY_RES.items() if pattern.search(title)]
    if "XR" not in names and _RADIOGRAPH_TITLE_RE.search(title):
        names.append("XR")
    return tuple(names)


def _title_modalities(data: RuleInput) -> dict[str, tuple[int, int]]:
    """Modalities the report's own title/technique sentences name, each with its first span."""
    text = data.report.text
    seen: dict[str, tuple[int, int]] = {}
    for start, end in _title_sentences(data):
        for modality, pattern in _MODALITY_RES.items():
            match = pattern.search(text, start, end)
            if match and modality not in seen:
                seen[modality] = (match.start(), match.end())
        if "XR" not in seen:
            match = _RADIOGRAPH_TITLE_RE.search(text, start, end)
            if match:
                seen["XR"] = (match.start(), match.end())
    return seen


def _names_modality(data: RuleInput, modality: str, *, projections_only: bool) -> bool:
    """True when the report names the code's modality for this exam.

    Against a cross-sectional modality named in the report, a mention in any sentence counts that is
    not about a prior, an outside study or a plan. Against a radiograph
    known only by its projections, a mention counts only in a sentence that describes this exam:
    "Recommend CT chest" or "Comparison: CT chest angiography" in a chest radiograph report is about
    another exam. The exam title is not asked: the signed text outranks the name sent with the code.
    """
    pattern = _MODALITY_RES[modality]
    if not projections_only:
        return _names_anywhere(data, pattern)
    return any(True for _ in _describing_sentences(data, needle=lambda t: bool(pattern.search(t))))


def _names_anywhere(data: RuleInput, pattern: Folded | re.Pattern[str]) -> bool:
    """True when a sentence anywhere in the report names ``pattern`` and is not about a prior, an
    outside study or a plan ("correlation with radiographs is recommended" names no exam of today)."""
    text = data.report.text
    if not pattern.search(text):
        return False
    sections: tuple[Section | None, ...] = data.report.sections or (None,)
    for sec in sections:
        start, end = (sec.start, sec.end) if sec is not None else (0, len(text))
        if not pattern.search(text, start, end):
            continue
        for span in data.analysis.sentences(start, end):
            if pattern.search(text, span.start, span.end) and not _OFF_TOPIC_RE.search(text, span.start, span.end):
                return True
    return False


@rule("coding", severity=Severity.WARNING)
def modality_mismatch(data: RuleInput) -> Iterable[Finding]:
    """The technique/title describes a different modality from the billed code (and never the code's).

    The report's own title and technique sentences decide; when they name no modality, the exam name
    that travels with the report (OBR-4 text) does (docs/qa-rules.md, "Modality and body region").
    A radiograph counts as named only by its projections or view count ("PA and lateral", "2 views")
    or "x-ray"/"radiograph", and only against a CT, MR, ultrasound or nuclear code.
    """
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if entry is None or entry.modality not in _MODALITY_RES or entry.consultation:
        return
    seen = _title_modalities(data)
    from_title = False
    if not seen:
        seen = dict.fromkeys(_title_modality_names(_exam_title(data)), (0, 0))
        from_title = True
    if not seen or entry.modality in seen:
        return
    allowed = _COMPATIBLE.get(entry.modality, set())
    # Only the tomographic/cross-sectional modalities are named unambiguously enough to act on, and
    # a radiograph by its projections when the code is for a cross-sectional or nuclear exam.
    strong_names = {"CT", "MR", "US", "MG", "PT", "DXA"}
    if entry.modality in _NOT_PROJECTION:
        strong_names.add("XR")
    strong = {m: span for m, span in seen.items() if m in strong_names and m not in allowed}
    if not strong or _names_modality(data, entry.modality, projections_only=set(strong) == {"XR"}):
        return
    modality, (start, end) = next(iter(strong.items()))
    where = "The exam title describes" if from_title else "Report describes"
    yield data.emit(
        f"{where} a {modality} exam; code {entry.code} is {entry.modality}.",
        [] if from_title else [data.analysis.evidence(start, end)],
        "Check the procedure code against the exam performed.",
    )


@rule("coding", severity=Severity.WARNING)
def body_region_mismatch(data: RuleInput) -> Iterable[Finding]:
    """The exam described in the technique/title covers a body region unrelated to the billed code's."""
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if entry is None or entry.body_region in ("", "any", "whole_body", "skull_base_to_mid_thigh") or entry.consultation:
        return
    text = data.report.text
    found: list[tuple[str, int, int]] = []
    in_exam_section = _exam_sections(data)
    for start, end in _title_sentences(data):
        # The first sentence under an "EXAM:" heading is the exam name itself: every region in it counts.
        found.extend(region_phrases(text[start:end], offset=start, exam_only=not in_exam_section(start)))
    from_title = False
    if not found:
        # The text names no region in a title or technique line: the exam name that travels with the
        # report (OBR-4 text) does, when it names one (docs/qa-rules.md, "Modality and body region").
        found = list(_title_regions(_exam_title(data)))
        from_title = True
    if not found or any(regions_related(region, entry.body_region) for region, _, _ in found):
        return
    region, start, end = found[0]
    where = "The exam title names" if from_title else "Report describes"
    yield data.emit(
        f"{where} an exam of the {region.replace('_', ' ')}; code {entry.code} is for the {entry.body_region.replace('_', ' ')}.",
        [] if from_title else [data.analysis.evidence(start, end)],
        "Check the procedure code against the exam performed.",
    )


# --- mammography ---------------------------------------------------------------------------------------

_NEGATED_AFTER = folded(
    re.compile(r"^[^.;:]{0,25}?\b(?:(?:was|were|is|are)\s+not|not\s+(?:performed|obtained|done|indicated))\b", _I)
)
_NEGATED_BEFORE = folded(
    re.compile(r"\b(?:no|not|denies|deny|denied|without|negative\s+for|absent)\b[^.;:]{0,25}$", _I)
)
_DIAGNOSTIC_CUES = (
    r"palpable",
    r"lumps?",
    r"call-?\s?backs?",
    r"recall(?:ed)?",
    r"additional\s+(?:views|imaging|evaluation)",
    r"diagnostic",
    r"nipple\s+discharge",
    r"nipple\s+(?:retraction|inversion)",
    r"abnormal\s+(?:screening|mammogram)",
    r"short[- ]interval\s+follow-?\s?up",
    r"bi-?rads\s+(?:category\s+)?(?:0|3)\s+(?:on\s+)?(?:prior|previous|screening)",
    r"focal\s+(?:breast\s+)?pain",
    r"(?:breast|skin)\s+(?:thickening|dimpling|retraction)",
)
_SCREENING_CUES = (
    r"screening\s+(?:mammogra\w*|exam\w*|study|tomosynthesis)",
    r"(?:annual|routine)\s+screening",
    r"screening",
)


def _cue_hits(data: RuleInput, patterns: Iterable[str], kinds: tuple[SectionKind, ...]) -> list[tuple[int, int]]:
    """Affirmed (not negated) occurrences of any pattern in sections of ``kinds`` or in the reason for study."""
    regex = re.compile(r"\b(?:" + "|".join(patterns) + r")\b", _I)
    text = data.report.text
    hits: list[tuple[int, int]] = []
    for sec in data.report.sections:
        if sec.kind not in kinds:
            continue
        for span in data.analysis.sentences(sec.start, sec.end):
            for match in regex.finditer(text, span.start, span.end):
                if not _NEGATED_BEFORE.search(text[span.start : match.start()]):
                    hits.append((match.start(), match.end()))
    return hits


def _reason_hit(data: RuleInput, patterns: Iterable[str]) -> bool:
    reason = data.report.reason
    regex = re.compile(r"\b(?:" + "|".join(patterns) + r")\b", _I)
    match = regex.search(reason)
    return bool(match) and not _NEGATED_BEFORE.search(reason[: match.start()] if match else "")


_MAMMO_KINDS = (SectionKind.INDICATION, SectionKind.TECHNIQUE, SectionKind.OTHER)


@rule("coding", severity=Severity.WARNING, params={"diagnostic_cues": list(_DIAGNOSTIC_CUES)})
def mammo_screening_diagnostic(data: RuleInput) -> Iterable[Finding]:
    """A screening mammography code on a diagnostic exam (palpable lump, callback, "diagnostic"), or the reverse."""
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if entry is None or entry.mammo not in ("screening", "diagnostic") or entry.tomosynthesis_addon_for:
        return
    cues = tuple(data.param("diagnostic_cues") or _DIAGNOSTIC_CUES)
    diagnostic = _cue_hits(data, cues, _MAMMO_KINDS)
    if entry.mammo == "screening":
        if diagnostic or _reason_hit(data, cues):
            better = "77065 or 77066"
            yield data.emit(
                f"Report describes a diagnostic mammogram; code {entry.code} is screening.",
                [data.analysis.evidence(s, e) for s, e in diagnostic[:3]],
                f"Bill diagnostic mammography ({better}) or correct the indication.",
            )
        return
    if diagnostic or _reason_hit(data, cues):
        return
    screening = _cue_hits(data, _SCREENING_CUES, _MAMMO_KINDS)
    if screening:
        yield data.emit(
            f"Report describes a screening mammogram with no diagnostic indication; code {entry.code} is diagnostic.",
            [data.analysis.evidence(s, e) for s, e in screening[:3]],
            "Bill screening mammography (77067) or document the diagnostic indication.",
        )


_TOMO_RE = folded(
    re.compile(
        r"\b(?:tomosynthesis|DBT|3-?D\s+mammogra\w*|3-?D\s+(?:images|imaging|views)|C-?View|synthesi[sz]ed\s+2-?D)\b",
        _I,
    )
)
_TOMO_CODES = ("77061", "77062", "77063", "G0279")


def _tomo_mentions(data: RuleInput) -> list[tuple[int, int]]:
    text = data.report.text
    out: list[tuple[int, int]] = []
    for sec in data.report.sections or ():
        if sec.kind in (SectionKind.COMPARISON, SectionKind.INDICATION):
            continue
        for span in data.analysis.sentences(sec.start, sec.end):
            sentence = text[span.start : span.end]
            if _OFF_TOPIC_RE.search(sentence):
                continue
            for match in _TOMO_RE.finditer(text, span.start, span.end):
                if not _NEGATED_BEFORE.search(text[span.start : match.start()]) and not _NEGATED_AFTER.search(
                    text[match.end() : span.end]
                ):
                    out.append((match.start(), match.end()))
    if not data.report.sections:
        out.extend((m.start(), m.end()) for m in _TOMO_RE.finditer(text))
    return out


def _billed_codes(data: RuleInput) -> set[str]:
    proc = data.report.procedure
    return {proc.code.strip().upper(), *(m.strip().upper() for m in proc.modifiers)}


@rule("coding", severity=Severity.INFO)
def tomosynthesis_not_billed(data: RuleInput) -> Iterable[Finding]:
    """Tomosynthesis described on a mammogram billed without a tomosynthesis code (77061/77062/77063/G0279)."""
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if entry is None or entry.mammo not in ("screening", "diagnostic") or entry.tomosynthesis_addon_for:
        return
    if _billed_codes(data) & set(_TOMO_CODES):
        return
    mentions = _tomo_mentions(data)
    if mentions:
        addon = "77063" if entry.mammo == "screening" else "77061/77062 or G0279"
        yield data.emit(
            f"Report describes tomosynthesis; code {entry.code} has no tomosynthesis code with it.",
            [data.analysis.evidence(s, e) for s, e in mentions[:2]],
            f"Add the tomosynthesis code ({addon}) if it was performed.",
        )


@rule("coding", severity=Severity.WARNING)
def tomosynthesis_not_described(data: RuleInput) -> Iterable[Finding]:
    """A tomosynthesis code is billed but the report never describes tomosynthesis."""
    table = data.procedures
    if table is None:
        return
    billed = sorted(c for c in _billed_codes(data) if (e := table.get(c)) is not None and e.tomosynthesis_addon_for)
    if not billed or not data.report.text.strip() or _tomo_mentions(data):
        return
    yield data.emit(
        f"Code {billed[0]} bills tomosynthesis but the report does not describe it.",
        (),
        "Document the tomosynthesis images or remove the code.",
    )


# --- 76140 -------------------------------------------------------------------------------------------

_OUTSIDE_RE = folded(
    re.compile(
        r"\b(?:outside\s+(?:\w+\s+){0,3}(?:study|studies|images?|films?|exams?|examinations?|CT|MRI?|radiographs?|"
        r"ultrasound|mammograms?|facility|institution|hospital)|"
        r"(?:performed|obtained|acquired|done)\s+(?:at|by)\s+(?:an?\s+)?(?:outside|another|other|different|external)\b|"
        r"second\s+opinion|outside\s+(?:read|interpretation)|"
        r"(?:submitted|provided|sent|brought)\s+(?:\w+\s+){0,3}(?:for|to\s+us\s+for)\s+(?:review|interpretation|consultation|a\s+second))",
        _I,
    )
)

_COMPARISON_WORD_RE = folded(re.compile(r"\b(?:compar\w*|prior|previous)\b", _I))


def _outside_mentions(data: RuleInput) -> list[tuple[int, int]]:
    text = data.report.text
    out: list[tuple[int, int]] = []
    if not _OUTSIDE_RE.search(text):
        return out
    for sec in data.report.sections or ():
        if sec.kind not in (SectionKind.TECHNIQUE, SectionKind.OTHER, SectionKind.INDICATION, SectionKind.FINDINGS):
            continue
        for span in data.analysis.sentences(sec.start, sec.end):
            # The outside phrase first: most sentences have none, and the
            # checks below only decide whether its matches count.
            found = [(m.start(), m.end()) for m in _OUTSIDE_RE.finditer(text, span.start, span.end)]
            if not found:
                continue
            sentence = text[span.start : span.end]
            if _COMPARISON_WORD_RE.search(sentence):
                continue
            if sec.kind is SectionKind.FINDINGS and not _ACQ_RE.search(sentence):
                continue
            out.extend(found)
    return out


@rule("coding", severity=Severity.WARNING)
def consultation_in_house(data: RuleInput) -> Iterable[Finding]:
    """76140 (consultation on an outside study) on a report that never says the study was made elsewhere."""
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if entry is None or not entry.consultation or not data.report.text.strip():
        return
    if _outside_mentions(data):
        return
    yield data.emit(
        f"Code {entry.code} is for a study made elsewhere; the report does not say the images came from outside.",
        (),
        "Bill the code of the exam performed here, or document that the study was made elsewhere.",
    )


@rule("coding", severity=Severity.INFO)
def outside_study_hint(data: RuleInput) -> Iterable[Finding]:
    """An outside study reviewed with a written report: 76140 might apply (a hint, never a billing claim)."""
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if entry is not None and entry.consultation:
        return
    mentions = _outside_mentions(data)
    if mentions:
        yield data.emit(
            "Report reviews a study made elsewhere; consultation code 76140 may apply depending on payer rules.",
            [data.analysis.evidence(s, e) for s, e in mentions[:2]],
            "A coder may check whether 76140 applies.",
        )


# --- modifiers ----------------------------------------------------------------------------------------

_LIMITED_RE = folded(
    re.compile(
        r"\b(?P<word>limited|incomplete|partial)\s+(?:\w+\s+){0,3}?(?:exam(?:ination)?|study|ultrasound|sonogram|"
        r"sonograph\w*|series|survey|views?|scan|imaging|evaluation\s+of\s+the\s+(?:\w+\s+){0,2}(?:only))\b"
        r"|\b(?:exam(?:ination)?|study)\s+(?:was|is)\s+(?P<word2>incomplete|terminated|discontinued|aborted)\b",
        _I,
    )
)
_QUALITY_RE = folded(
    re.compile(
        r"\b(?:technically|motion|habitus|artifact\w*|positioning|rotation|quality|due\s+to|secondary\s+to|"
        r"because|by\b|somewhat|slightly|mildly|partially)\b",
        _I,
    )
)
_REDUCED_MODIFIERS = {"52", "53", "73", "74"}


@rule("coding", severity=Severity.WARNING)
def limited_without_modifier(data: RuleInput) -> Iterable[Finding]:
    """A "limited"/"incomplete" exam billed without modifier 52 (unless the code itself is a limited exam)."""
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if entry is None or entry.limited or entry.consultation:
        return
    if {m.strip().upper() for m in data.report.procedure.modifiers} & _REDUCED_MODIFIERS:
        return
    text = data.report.text
    if not _LIMITED_RE.search(text):
        return
    for sec in data.report.sections:
        # In findings and impression "limited" nearly always means image quality ("limited study,
        # low lung volumes"), which is no reduced service: only an explicit "exam was
        # incomplete/terminated" counts there.
        title = sec.kind in (SectionKind.TECHNIQUE, SectionKind.OTHER)
        if not title and sec.kind not in (SectionKind.IMPRESSION, SectionKind.FINDINGS):
            continue
        for span in data.analysis.sentences(sec.start, sec.end):
            sentence = text[span.start : span.end]
            if _QUALITY_RE.search(sentence) or _OFF_TOPIC_RE.search(sentence):
                continue
            match = _LIMITED_RE.search(text, span.start, span.end)
            if match and not title and not match.group("word2"):
                continue
            if match and not _NEGATED_BEFORE.search(text[span.start : match.start()]):
                yield data.emit(
                    f"Report describes a limited or incomplete exam; code {entry.code} has no modifier 52.",
                    [data.analysis.evidence(match.start(), match.end())],
                    "Add modifier 52 (reduced service) or bill the limited code if one exists.",
                )
                return


@rule("coding", severity=Severity.WARNING)
def professional_component_missing(data: RuleInput) -> Iterable[Finding]:
    """A professional-only reading site (policies/sites.yaml) billed without modifier 26."""
    site = data.directory.site_for(data.report)
    if site is None or not site.professional_only:
        return
    code = data.report.procedure.code.strip()
    if not code:
        return
    table = data.procedures
    entry = table.get(code) if table else None
    if entry is not None and entry.consultation:  # 76140 is professional by definition
        return
    if "26" in {m.strip().upper() for m in data.report.procedure.modifiers}:
        return
    yield data.emit(
        f"Site {site.code} bills the professional component only; code {code} has no modifier 26.",
        (),
        "Add modifier 26.",
    )


@rule("coding", severity=Severity.INFO)
def reason_missing(data: RuleInput) -> Iterable[Finding]:
    """No reason for study: no order reason, no ICD-10 code and no indication in the report."""
    report = data.report
    if report.reason.strip() or any(c.strip() for c in report.diagnosis_codes):
        return
    if not report.text.strip() or report.text_kind != "text":
        return
    if any(sec.text.strip() for sec in data.analysis.sections_of(SectionKind.INDICATION)):
        return
    yield data.emit(
        "No reason for study: no order reason, no ICD-10 code and no indication section.",
        (),
        "Document the indication or send the ICD-10 code with the order.",
    )


# --- radiograph views --------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "one": 1,
    "single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
# A bound or a range, not a count: "2-3 views", "2 or 3 views", "minimum of 4 views", "4 or more views".
_AT_LEAST_RE = re.compile(r"(?:\d\s*(?:-|to|or)\s*|minimum\s+of\s+|at\s+least\s+|up\s+to\s+)$", _I)
_OR_MORE_RE = re.compile(r"\s*(?:\+|or\s+more\b|or\s+greater\b)", _I)
# Words that may stand between a number and "views" ("two standard radiographic views").
_VIEW_ADJ = (
    r"(?:standard|routine|radiographic|plain[- ]film|plain|frontal|AP|PA|weight[- ]?bearing|standing|upright|erect|"
    r"portable|supine|orthogonal|dedicated|conventional|additional|further|extra|repeat(?:ed)?|more)"
)
# "two views", "3 views of the left knee", "single view", "2V", "three-view", "minimum of 4 views",
# "single AP view"; on a radiograph code a number of images is a number of views ("2 images.").
_COUNT_RE = folded(
    re.compile(
        rf"(?<![/.:\d-])\b(?P<n>\d{{1,2}}|{'|'.join(_NUMBER_WORDS)})(?:\s*-\s*|\s+)(?:{_VIEW_ADJ}[\s-]+){{0,2}}"
        r"(?:views?|vws?|projections?|radiographs?|x-?rays?|images?)\b|\b(?P<v>\d)\s*(?:v|vw|vws)\b",
        _I,
    )
)
# One named view: optional number/article, side and position words, then the view itself. A bare
# "Y" counts only as "scapular Y" or "Y view".
_VIEW_HEAD = (
    r"(?:right\s+and\s+left\s+obliques?|left\s+and\s+right\s+obliques?|(?:bilateral|both)\s+obliques?|obliques|"
    r"(?:AP|PA)\s+pelvis|apical\s+lordotic|lordotic|frog[- ]?leg(?:\s+lateral)?|cross[- ]table(?:\s+lateral)?|"
    r"(?:(?:left|right)\s+)?lateral\s+decubitus|decubitus|swimmer'?s(?:\s+lateral)?|open[- ]mouth(?:\s+odontoid)?|odontoid|"
    r"scapular\s+Y|Y(?=\s+views?\b)|sunrise|merchant|skyline|tunnel|notch|mortise|axillary|grashey|scaphoid|navicular|"
    r"internal\s+rotation|external\s+rotation|judet|inlet|outlet|flexion|extension|expiratory|inspiratory|"
    r"oblique|lateral|frontal|AP|PA|upright|supine|erect|standing)"
)
_VIEW_MOD = r"(?:(?:portable|upright|erect|supine|standing|semi-?upright|weight[- ]?bearing|bedside|right|left)\s+)"
_VIEW_ITEM = (
    rf"(?:(?:a|an|one|single|two|three|four|[1-4])\s+)?{_VIEW_MOD}{{0,2}}{_VIEW_HEAD}(?:\s+(?:views?|projections?))?"
)
_VIEW_SEP = r"(?:\s*,\s*(?:and\s+|&\s*)?|\s+and\s+|\s*&\s*|\s*/\s*|\s*\+\s*|\s+plus\s+)"
# A list of named views, anchored: followed by "views"/"radiographs"/"chest"/"of the", or (in a
# title or technique line) by the end of the sentence.
_LIST_RE = folded(
    re.compile(
        rf"\b(?P<list>{_VIEW_ITEM}(?:{_VIEW_SEP}{_VIEW_ITEM})*)(?=\b)"
        r"(?P<anchor>\s*(?:views?|projections?|radiographs?|x-?rays?|films?|images?|(?:portable\s+)?(?:chest|cxr)\b|"
        r"of\s+the\b)|\s*[.;:]?\s*$)?",
        _I,
    )
)
# A lone position ("upright chest radiograph") names how one film was taken, not a view count.
_POSITION_ONLY_RE = re.compile(
    rf"(?:(?:a|an|one)\s+)?{_VIEW_MOD}{{0,2}}(?:upright|supine|erect|standing)(?:\s+views?)?", _I
)
_VIEW_NOUN_RE = folded(re.compile(r"(?:views?|projections?|radiographs?|x-?rays?|films?|images?)\b", _I))
_ITEM_RE = folded(re.compile(rf"{_VIEW_ITEM}", _I))
_ENDS_WITH_VIEW_NOUN_RE = re.compile(r"\b(?:views|projections)$", _I)
_TWO_RE = folded(re.compile(r"obliques\b|\b(?:right\s+and\s+left|left\s+and\s+right|bilateral|both)\s", _I))
# A count that is not the whole exam: views added to others, views of each side, an unknown number.
_PARTIAL_RE = folded(
    re.compile(
        r"\b(?:additional|further|extra|also|repeat(?:ed)?|another|more|supplement\w*|in\s+addition|each|both|"
        r"bilateral(?:ly)?|right\s+and\s+left|left\s+and\s+right|multiple|several|series)\b",
        _I,
    )
)
# A cheap first look: every statement above contains one of these (lower-cased).
_VIEW_HINTS = (
    "view",
    "lateral",
    "projection",
    "frontal",
    " ap",
    " pa",
    "oblique",
    "radiograph",
    "x-ray",
    "xray",
    "image",
)
_VIEW_DIGIT_RE = re.compile(r"\d\s*vw?s?\b", _I)
# Anatomy per view family (mappings/procedures.yaml `view_family`): a sentence that names another
# family's anatomy and not the billed one's is about another exam ("two views of the ankle" on a
# knee code is a body-region question, not a view count).
_FAMILY_ANATOMY = {
    "chest": r"chest|lungs?|thorax|cxr",
    "skull": r"skull|cranium|calvari\w*",
    "cervical_spine": r"cervical|c-?spine|neck",
    "lumbosacral_spine": r"lumbar|lumbosacral|l-?spine|sacrum|sacral",
    "pelvis": r"pelvis|pelvic",
    "shoulder": r"shoulders?|scapula|glenohumeral|humer\w*",
    "wrist": r"wrists?|scaphoid|carp\w*",
    "hand": r"hands?|fingers?|thumbs?|metacarp\w*",
    "hip": r"hips?|pelvis|femoral|femur",
    "hips_bilateral": r"hips?|pelvis|femoral|femur",
    "knee": r"knees?|patell\w*",
    "ankle": r"ankles?|mortise",
    "foot": r"foot|feet|toes?|calcane\w*|metatars\w*",
    "abdomen": r"abdomen|abdominal|kub",
}
_ANATOMY_RES = {family: folded(re.compile(rf"\b(?:{words})\b", _I)) for family, words in _FAMILY_ANATOMY.items()}
# Anatomy of no view family: a sentence about it ("2 oblique and one lateral radiograph of the
# sternum" in a chest report that goes on to the sternum) is about another exam.
_OTHER_ANATOMY_RE = folded(
    re.compile(
        r"\b(?:sternum|sternal|ribs?|thoracic\s+spine|t-?spine|dorsal\s+spine|clavicles?|forearms?|elbows?|"
        r"tibia\w*|fibula\w*|legs?|arms?|facial|face|orbits?|sinus\w*|mandible|nasal|soft\s+tissues\s+of\s+the\s+neck|"
        r"sacroiliac|coccyx|scoliosis|bone\s+survey|skeletal\s+survey)\b",
        _I,
    )
)
_VIEW_KINDS = (SectionKind.TECHNIQUE, SectionKind.OTHER, SectionKind.FINDINGS, SectionKind.IMPRESSION)
_TITLE_KINDS = (SectionKind.TECHNIQUE, SectionKind.OTHER)


def _mentions_views(text: str) -> bool:
    low = text.lower()
    return any(h in low for h in _VIEW_HINTS) or bool(_VIEW_DIGIT_RE.search(text))


# Outside a title or technique line a view statement names its noun ("PA and lateral views of the
# chest were obtained"): sentences without one are skipped before any pattern runs.
_VIEW_NOUNS = ("view", "projection", "radiograph", "x-ray", "xray", "film", "image")


def _names_view_noun(text: str) -> bool:
    low = text.lower()
    return any(h in low for h in _VIEW_NOUNS)


def _count_value(match: re.Match[str]) -> int:
    raw = (match.group("n") or match.group("v") or "").lower()
    return int(raw) if raw.isdigit() else _NUMBER_WORDS.get(raw, 0)


def _item_value(item: str) -> int:
    """Views one named item stands for: "2 oblique" 2, "both obliques" 2, "lateral" 1."""
    first = item.split(None, 1)[0].lower()
    if first.isdigit():
        return int(first)
    if first in _NUMBER_WORDS:
        return _NUMBER_WORDS[first]
    return 2 if _TWO_RE.search(item) else 1


def _list_value(items: str) -> int:
    return sum(_item_value(item.group(0)) for item in _ITEM_RE.finditer(items))


@dataclass(frozen=True, slots=True)
class ViewCount:
    """The views one sentence documents for this exam, and where it says so."""

    views: int
    start: int
    end: int
    #: Said as a number of images ("3 images"): a repeated exposure is one more image, not one more view.
    images: bool = False


# A clause break inside what the sentence splitter left as one sentence ("PA and lateral views. stable
# postoperative changes ...": a lower-case start after a period is not split).
_CLAUSE_BREAK_RE = re.compile(r"[.;](?=\s)")


def _clause(text: str, start: int, end: int, first: int, last: int) -> tuple[int, int]:
    """The part of ``text[start:end]`` between the clause breaks around ``first``..``last``.

    Words that make a count partial ("additional", "each", "bilateral") qualify the views only in
    their own clause: "Small bilateral pleural effusions" two clauses on says nothing of the views.
    """
    c_start = start
    for match in _CLAUSE_BREAK_RE.finditer(text, start, first):
        c_start = match.end()
    after = _CLAUSE_BREAK_RE.search(text, last, end)
    return c_start, after.start() if after else end


def _sentence_views(text: str, start: int, end: int, *, title: bool) -> ViewCount | None:
    """The views the sentence ``text[start:end]`` documents, 0 when it states a count it cannot pin down.

    A count ("two views") wins over a list of named views in the same sentence ("Two views, PA and
    lateral"); named views are added up ("AP and lateral views and a sunrise view"). A bare single
    view outside a title or technique line ("On the lateral view, ...") refers to one image of the
    exam, not to the exam, and counts nothing.
    """
    counts = list(_COUNT_RE.finditer(text, start, end))
    if counts:
        values = {_count_value(m) for m in counts}
        bounded = any(
            _AT_LEAST_RE.search(text[max(start, m.start() - 14) : m.start()]) or _OR_MORE_RE.match(text, m.end(), end)
            for m in counts
        )
        c_start, c_end = _clause(text, start, end, counts[0].start(), counts[-1].end())
        if len(values) != 1 or bounded or _PARTIAL_RE.search(text, c_start, c_end):
            return ViewCount(0, counts[0].start(), counts[0].end())
        images = all(m.group(0).lower().endswith(("image", "images")) for m in counts)
        return ViewCount(values.pop(), counts[0].start(), counts[-1].end(), images)
    total, first, last = 0, -1, -1
    rest = text[start:end]
    for match in _LIST_RE.finditer(text, start, end):
        anchor = match.group("anchor") or ""
        items = match.group("list")
        # "PA and lateral views were obtained", "Frontal and lateral views.": the list names its own
        # noun, so it needs no anchor after it.
        named = bool(_ENDS_WITH_VIEW_NOUN_RE.search(items))
        if not named and (match.group("anchor") is None or (not anchor.strip(" .;:") and not title)):
            continue
        value = _list_value(items)
        if value == 1 and (not title or _POSITION_ONLY_RE.fullmatch(items)):
            continue
        total += value
        first = match.start() if first < 0 else first
        last = match.end() if _VIEW_NOUN_RE.match(anchor.strip()) else match.end("list")
        # Words inside the list ("both obliques") are views, not sides of the exam.
        rest = rest[: match.start() - start] + " " * len(match.group(0)) + rest[match.end() - start :]
    if not total:
        return None
    c_start, c_end = _clause(text, start, end, first, last)
    if _PARTIAL_RE.search(rest[c_start - start : c_end - start]):
        return ViewCount(0, first, last)
    return ViewCount(total, first, last)


def documented_views(data: RuleInput, family: str) -> tuple[int, tuple[ViewCount, ...]] | None:
    """The number of views the report documents for this exam, with the statements that say so.

    None when the report states no view count, or when its statements disagree or cannot be
    pinned down (added views, views of each side, "multiple views"). Sentences about comparison
    studies are skipped (``_OFF_TOPIC_RE``), as are findings and impression sentences that do not
    describe the acquisition and do not open with the views.
    """
    found = view_statements(data, family)
    values = {c.views for c in found}
    if len(values) != 1 or 0 in values:
        return None
    return values.pop(), found


def view_statements(data: RuleInput, family: str) -> tuple[ViewCount, ...]:
    """Every statement of this exam's view count in the report, in text order (0: a count it cannot pin down)."""
    text = data.report.text
    if not _mentions_views(text):
        return ()
    own = _ANATOMY_RES.get(family)
    others = [pattern for name, pattern in _ANATOMY_RES.items() if name != family]
    found: list[ViewCount] = []
    sections: tuple[Section | None, ...] = data.report.sections or (None,)
    for sec in sections:
        if sec is not None and sec.kind not in _VIEW_KINDS:
            continue
        start, end = (sec.start, sec.end) if sec is not None else (0, len(text))
        title = sec is None or sec.kind in _TITLE_KINDS
        if not (_mentions_views if title else _names_view_noun)(text[start:end]):
            continue
        for span in data.analysis.sentences(start, end):
            sentence = text[span.start : span.end]
            if not (_mentions_views(sentence) if title else _names_view_noun(sentence)):
                continue
            if _OFF_TOPIC_RE.search(sentence):
                continue
            count = _sentence_views(text, span.start, span.end, title=title)
            if count is None:
                continue
            if not title and not _ACQ_RE.search(sentence) and count.start - span.start > 12:
                continue
            if (
                own is not None
                and not own.search(sentence)
                and (_OTHER_ANATOMY_RE.search(sentence) or any(p.search(sentence) for p in others))
            ):
                continue
            found.append(count)
    return tuple(found)


def _range_label(bounds: tuple[int, int | None]) -> str:
    low, high = bounds
    if high is None:
        return f"{low} or more views"
    if low == high:
        return f"{low} view" + ("s" if low != 1 else "")
    return f"{low}-{high} views"


@rule("coding", severity=Severity.WARNING)
def view_count_mismatch(data: RuleInput) -> Iterable[Finding]:
    """The views the report documents fall outside the billed radiograph code's view range.

    A warning by default: the billed view count often comes from the images the technologist sent,
    and a report that names fewer views than were archived may be the one to correct
    (docs/qa-rules.md, "View counts"). A site that wants the report returned sets it to error.
    """
    table = data.procedures
    entry = table.get(data.report.procedure.code) if table else None
    if table is None or entry is None or entry.views is None or not entry.view_family:
        return
    statements = view_statements(data, entry.view_family)
    values = sorted({c.views for c in statements})
    if not values or values[0] == 0:
        return
    if len(values) > 1:
        # Views stated differently ("Single frontal view" and "frontal and lateral radiographs"), or
        # fewer images than views, cannot both be true. More images than views may hold a repeated
        # exposure ("frontal and lateral radiographs", "3 images"): no count, no finding.
        stated = [c.views for c in statements if not c.images]
        most = max(stated, default=0)
        if len(set(stated)) > 1 or any(c.images and c.views < most for c in statements):
            yield from _views_disagree(data, entry, statements, values)
        return
    views = values[0]
    low = entry.views[0]
    if views_in_range(views, entry.views):
        return
    modifiers = {m.strip().upper() for m in data.report.procedure.modifiers}
    if views < low and modifiers & _REDUCED_MODIFIERS:
        return  # fewer views than the code, billed as a reduced service: what modifier 52 is for
    better = table.view_codes(entry.view_family, views)
    noun = "view" if views == 1 else "views"
    if better:
        labels = " or ".join(f"{code} ({_range_label(table.entries[code].views or (views, views))})" for code in better)
        suggestion = f"Bill {labels}, or correct the views documented."
    else:
        suggestion = "No code of this family covers that many views: check the views documented, or add modifier 52."
    yield data.emit(
        f"Report documents {views} {noun}; code {entry.code} is for {_range_label(entry.views)}.",
        [data.analysis.evidence(s.start, s.end) for s in statements[:3]],
        suggestion,
    )


def _views_disagree(
    data: RuleInput, entry: ProcedureEntry, statements: tuple[ViewCount, ...], values: list[int]
) -> Iterable[Finding]:
    """Statements of different view counts ("Single frontal view" over "frontal and lateral radiographs"):
    the report supports the billed code only if every count falls in its range (docs/qa-rules.md, "View counts")."""
    assert entry.views is not None
    bounds = entry.views
    outside = [c for c in statements if not views_in_range(c.views, bounds)]
    if not outside:
        return
    modifiers = {m.strip().upper() for m in data.report.procedure.modifiers}
    if all(c.views < bounds[0] for c in outside) and modifiers & _REDUCED_MODIFIERS:
        return  # the fewer views are billed as a reduced service
    counts = " and ".join(str(v) for v in values)
    yield data.emit(
        f"Report's view statements disagree ({counts} views); code {entry.code} is for {_range_label(bounds)}.",
        [data.analysis.evidence(s.start, s.end) for s in (outside + [c for c in statements if c not in outside])[:3]],
        "State the views of this exam once and consistently, and bill the code for them.",
    )
