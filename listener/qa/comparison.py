"""Comparison rules: is there a comparison statement, and does it agree with what we know.

Pure: no I/O, no clock. Priors come in ``data.context.priors`` (None when the
caller could not look them up, an empty tuple when the store knows there are
none); the exam date is ``report.times.observation``.

Also home of the small body-region vocabulary the coding rules share
(:func:`region_phrases`, :func:`regions_related`), since "same body region"
is first a comparison question.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, timedelta

from listener.model import Finding, Report, SectionKind, Severity
from listener.qa.engine import Folded, Prior, RuleInput, folded, rule

_I = re.IGNORECASE

# --- body regions ---------------------------------------------------------------------------------------

# Region names follow mappings/procedures.yaml. Synonyms are the words a title uses for the exam.
_REGION_WORDS: dict[str, str] = {
    "head": r"head|brain|skull|cranial|intracranial|cranium",
    "orbit": r"orbits?|sella|temporal\s+bones?|internal\s+auditory\s+canals?|IACs?|posterior\s+fossa",
    "face": r"face|facial\s+bones|maxillofacial|(?:paranasal\s+)?sinuses|mandible|nasal\s+bones?",
    "neck": r"neck|soft\s+tissues?\s+(?:of\s+the\s+)?neck|thyroid|carotids?|carotid\s+arter(?:y|ies)",
    "chest": r"chest|thorax|lungs?|pulmonary\s+arter(?:y|ies)|ribs?",
    "heart": r"heart|cardiac|myocardi\w*|coronar(?:y|ies)",
    "breast": r"breasts?|mammogra\w*",
    "abdomen": r"abdomen|abdominal|liver|gallbladder|pancreas|spleen|right\s+upper\s+quadrant|RUQ|hepatobiliary",
    "pelvis": r"pelvis|pelvic|uterus|ovar(?:y|ies)|urinary\s+bladder|prostate",
    "abdomen_pelvis": r"abdomen\s+(?:and|&|/)\s+pelvis|abdominopelvic|abd/pelvis",
    "retroperitoneum": r"retroperitone\w*|renal|kidneys?|aorta|abdominal\s+aorta",
    "scrotum": r"scrotum|scrotal|testicles?|testes|testicular",
    "spine_cervical": r"cervical\s+spine|c-?\s?spine",
    "spine_thoracic": r"thoracic\s+spine|t-?\s?spine",
    "spine_lumbar": r"lumbar\s+spine|lumbosacral\s+spine|lumbosacral|l-?\s?spine|sacrum|coccyx",
    "upper_extremity": r"hand|fingers?|thumb|forearm|humerus|upper\s+(?:extremit(?:y|ies)|arm)|arm",
    "upper_extremity_joint": r"shoulders?|elbows?|wrists?",
    "lower_extremity": r"foot|feet|toes?|femur|tibia|fibula|tibia\s+and\s+fibula|lower\s+(?:extremit(?:y|ies)|leg)|leg|calcaneus",
    "lower_extremity_joint": r"hips?|knees?|ankles?",
    "esophagus": r"esophagus|esophageal|esophagram",
    "upper_gi": r"upper\s+GI|stomach|small\s+bowel",
    "colon": r"colon|barium\s+enema",
}
# The word boundary before the names is tested once per position, outside the alternation: every
# branch began with it, and ``re`` tried all of them at every character (docs/benchmarks.md, "QA engine").
_REGION_RE = folded(
    re.compile(
        "\\b(?:"
        + "|".join(
            f"(?P<{name}>(?:{words})\\b)" for name, words in sorted(_REGION_WORDS.items(), key=lambda kv: -len(kv[0]))
        )
        + ")",
        _I,
    )
)
# The abdomen_pelvis pattern must win over abdomen and pelvis at the same offset: longest names first
# puts "abdomen_pelvis" before "abdomen" (alternation tries left to right).

_RELATED: dict[str, frozenset[str]] = {
    "head": frozenset({"orbit", "face", "face_neck"}),
    "orbit": frozenset({"head", "face", "face_neck"}),
    "face": frozenset({"head", "orbit", "face_neck"}),
    "neck": frozenset({"face_neck", "esophagus"}),
    "face_neck": frozenset({"head", "orbit", "face", "neck"}),
    "chest": frozenset({"heart", "esophagus", "spine_thoracic"}),
    "heart": frozenset({"chest"}),
    "abdomen": frozenset({"abdomen_pelvis", "retroperitoneum", "upper_gi", "colon"}),
    "pelvis": frozenset({"abdomen_pelvis", "retroperitoneum", "colon", "lower_extremity_joint", "axial_skeleton"}),
    "abdomen_pelvis": frozenset({"abdomen", "pelvis", "retroperitoneum", "upper_gi", "colon"}),
    "retroperitoneum": frozenset({"abdomen", "pelvis", "abdomen_pelvis"}),
    "esophagus": frozenset({"upper_gi", "chest", "neck"}),
    "upper_gi": frozenset({"esophagus", "abdomen", "abdomen_pelvis"}),
    "colon": frozenset({"abdomen", "pelvis", "abdomen_pelvis"}),
    "upper_extremity": frozenset({"upper_extremity_joint", "extremity_veins", "appendicular_skeleton"}),
    "upper_extremity_joint": frozenset({"upper_extremity", "appendicular_skeleton"}),
    "lower_extremity": frozenset({"lower_extremity_joint", "extremity_veins", "appendicular_skeleton"}),
    "lower_extremity_joint": frozenset({"lower_extremity", "pelvis", "appendicular_skeleton", "axial_skeleton"}),
    "extremity_veins": frozenset({"upper_extremity", "lower_extremity"}),
    "spine_cervical": frozenset({"axial_skeleton"}),
    "spine_thoracic": frozenset({"axial_skeleton", "chest"}),
    "spine_lumbar": frozenset({"axial_skeleton"}),
    "axial_skeleton": frozenset(
        {"spine_cervical", "spine_thoracic", "spine_lumbar", "pelvis", "lower_extremity_joint"}
    ),
    "appendicular_skeleton": frozenset(
        {"upper_extremity", "lower_extremity", "upper_extremity_joint", "lower_extremity_joint"}
    ),
}
_WIDE = frozenset({"", "any", "whole_body", "skull_base_to_mid_thigh"})

_EXAM = (
    r"(?:CT|CTA|MRI?|MRA|ultrasound|sonogra\w*|US|x-?rays?|radiographs?|radiography|views?|films?|series|"
    r"exam(?:ination)?|study|scan|imaging|images|mammogra\w*|duplex|doppler|computed\s+tomography|"
    r"magnetic\s+resonance)"
)
# "CT of the chest", "knee radiographs", and the passive "axial CT images were obtained through the facial bones".
_EXAM_BEFORE_RE = re.compile(
    rf"\b{_EXAM}\s*(?:(?:was|were)\s+(?:\w+\s+)?(?:obtained|acquired|performed)\s+)?"
    rf"(?:(?:of|through|over|for)\s+)?(?:the\s+)?(?:[\w,/-]+\s+){{0,3}}$".replace("US|", "(?-i:US)|"),
    _I,
)
_EXAM_AFTER_RE = re.compile(rf"^\s*(?:[\w-]+\s+)?{_EXAM}\b".replace("US|", "(?-i:US)|"), _I)


def regions_related(a: str, b: str) -> bool:
    """True when two body regions (procedures.yaml names) overlap enough to be "the same region"."""
    if a in _WIDE or b in _WIDE or a == b:
        return True
    return a in _RELATED.get(b, frozenset()) or b in _RELATED.get(a, frozenset())


def region_phrases(text: str, *, offset: int = 0, exam_only: bool = False) -> list[tuple[str, int, int]]:
    """Body regions named in ``text`` as (region, start, end), offsets shifted by ``offset``.

    With ``exam_only`` a region counts only next to an exam word ("CT of the
    chest", "knee radiographs"), which keeps "lung bases" in a CT abdomen
    technique from counting as a chest exam.
    """
    out: list[tuple[str, int, int]] = []
    for match in _REGION_RE.finditer(text):
        region = match.lastgroup or ""
        if exam_only:
            before = text[max(0, match.start() - 60) : match.start()]
            after = text[match.end() : match.end() + 30]
            if not (_EXAM_BEFORE_RE.search(before) or _EXAM_AFTER_RE.search(after)):
                continue
        out.append((region, match.start() + offset, match.end() + offset))
    return out


# --- dates ------------------------------------------------------------------------------------------------

_MONTHS = {
    m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}
_MON = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE_RE = folded(
    re.compile(
        r"\b(?P<iso_y>\d{4})-(?P<iso_m>\d{1,2})-(?P<iso_d>\d{1,2})\b"
        r"|\b(?P<n1>\d{1,2})[/.-](?P<n2>\d{1,2})[/.-](?P<ny>\d{4}|\d{2})\b"
        r"|\b" + _MON.replace("mon>", "mon_a>") + r"\s+(?P<a_d>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<a_y>\d{4})\b"
        r"|\b(?P<b_d>\d{1,2})(?:st|nd|rd|th)?\s+" + _MON.replace("mon>", "mon_b>") + r",?\s+(?P<b_y>\d{4})\b"
        r"|\b" + _MON.replace("mon>", "mon_c>") + r",?\s+(?P<c_y>\d{4})\b",
        _I,
    )
)


class CitedDate:
    """A date found in the text; ``day`` is None for a month-year date."""

    __slots__ = ("year", "month", "day", "start", "end")

    def __init__(self, year: int, month: int, day: int | None, start: int, end: int) -> None:
        self.year, self.month, self.day, self.start, self.end = year, month, day, start, end

    def after(self, when: date, grace_days: int = 0) -> bool:
        if self.day is None:
            return (self.year, self.month) > (when.year, when.month)
        return date(self.year, self.month, self.day) > when + timedelta(days=grace_days)

    def matches(self, when: date, tolerance_days: int) -> bool:
        if self.day is None:
            return (self.year, self.month) == (when.year, when.month)
        return abs((date(self.year, self.month, self.day) - when).days) <= tolerance_days


def _year(raw: str) -> int:
    value = int(raw)
    if len(raw) == 2:
        value += 2000 if value < 70 else 1900
    return value


def _valid(year: int, month: int, day: int | None) -> bool:
    if not (1900 <= year <= 2200 and 1 <= month <= 12):
        return False
    if day is None:
        return True
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def find_dates(text: str, start: int, end: int, *, day_first: bool = False) -> list[CitedDate]:
    """Dates like 11/20/2026, 2026-11-20, Nov 20 2026, 20 November 2026 or Nov 2026 in text[start:end]."""
    out: list[CitedDate] = []
    for m in _DATE_RE.finditer(text, start, end):
        g = m.groupdict()
        day: int | None
        if g["iso_y"]:
            year, month, day = int(g["iso_y"]), int(g["iso_m"]), int(g["iso_d"])
        elif g["n1"]:
            a, b = int(g["n1"]), int(g["n2"])
            month, day = (b, a) if day_first else (a, b)
            if month > 12 and day <= 12:
                month, day = day, month
            year = _year(g["ny"])
        else:
            mon = g["mon_a"] or g["mon_b"] or g["mon_c"]
            month = _MONTHS[mon.lower()[:3]]
            day = int(g["a_d"] or g["b_d"]) if (g["a_d"] or g["b_d"]) else None
            year = int(g["a_y"] or g["b_y"] or g["c_y"])
        if _valid(year, month, day):
            out.append(CitedDate(year, month, day, m.start(), m.end()))
    return out


# The latest UTC offset in use: with no site time zone, the exam's local date is at most this far ahead.
_MAX_UTC_OFFSET = timedelta(hours=14)


def exam_date(data: RuleInput) -> tuple[date, int] | None:
    """The exam date in site-local terms, and a grace in days (always 0 today).

    Naive times are the sender's local time. An aware time goes to the site's
    time zone; with no site known, the latest local date it could be (UTC+14),
    so a prior dated "tomorrow" in UTC but "today" locally is not flagged.
    """
    observed = data.report.times.observation
    if observed is None:
        return None
    if observed.tzinfo is None:
        return observed.date(), 0
    site = data.directory.site_for(data.report)
    if site is not None:
        return observed.astimezone(site.timezone).date(), 0
    return (observed.astimezone(UTC) + _MAX_UTC_OFFSET).date(), 0


# "prior" as a noun or adjective ("the prior exam"), not the preposition ("2 weeks prior to 7/14").
_COMPARISON_CUE_RE = folded(
    re.compile(
        r"\b(?:compar\w*|(?<!days\s)(?<!weeks\s)(?<!months\s)(?<!years\s)(?<!hours\s)prior(?!\s+to\b)|"
        r"previous(?:ly)?|earlier|last\s+(?:study|exam))\b",
        _I,
    )
)
_PLAN_RE = folded(
    re.compile(
        r"\b(?:recommend\w*|follow-?\s?up|suggest\w*|schedul\w*|return|repeat|due|next|LMP|EDD|gestation\w*|born|birth|DOB|surgery|surgical|-?ectomy|-?plasty|injury|accident|fall|fell)\b",
        _I,
    )
)


_DIGIT_RE = re.compile(r"\d")  # every _DATE_RE match holds one (the same \d)
_DATED_SPANS_KEY = "comparison.dated_spans"


def dated_comparison_spans(data: RuleInput) -> tuple[tuple[int, int], ...]:
    """Where the report says what it compares with, in text order (once per report): the
    comparison section(s), and elsewhere sentences with a comparison cue that are not about
    plans or history; only the spans that hold a digit.

    Only these can cite a date (every date pattern has a digit), and testing
    for a digit first spares the cue patterns on most sentences.
    """
    found: tuple[tuple[int, int], ...] = data.analysis.shared(_DATED_SPANS_KEY, lambda: _dated_spans(data))
    return found


def _dated_spans(data: RuleInput) -> tuple[tuple[int, int], ...]:
    report = data.report
    text = report.text
    if _DIGIT_RE.search(text) is None:
        return ()
    digit = _DIGIT_RE.search
    out = [
        (sec.start, sec.end)
        for sec in data.analysis.sections_of(SectionKind.COMPARISON)
        if digit(text, sec.start, sec.end)
    ]
    for sec in report.sections:
        if sec.kind not in (SectionKind.TECHNIQUE, SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.OTHER):
            continue
        if digit(text, sec.start, sec.end) is None:
            continue
        for span in data.analysis.sentences(sec.start, sec.end):
            if digit(text, span.start, span.end) is None:
                continue
            sentence = text[span.start : span.end]
            if _COMPARISON_CUE_RE.search(sentence) and not _PLAN_RE.search(sentence):
                out.append((span.start, span.end))
    return tuple(out)


# --- rules --------------------------------------------------------------------------------------------------

_STATEMENT_RE = folded(
    re.compile(
        r"\b(?:compar\w*|prior|previous(?:ly)?|interval(?:ly)?|unchanged|stable|no\s+(?:significant\s+)?change|"
        r"again\s+(?:seen|noted|demonstrated|identified|visualized)|redemonstrat\w*|old\s+(?:films?|studies|exams?)|"
        r"baseline|since|earlier|recent(?:ly)?|persist\w*|new(?:ly)?|resolved|resolution|improv\w*|worsen\w*)\b",
        _I,
    )
)


# A statement that names the study compared with: the word comparison/compared, or a prior study named as one
# ("the prior radiograph", "previous CT of 3/2/2025", "old films", "unchanged from prior."). "Prior" before a
# history word ("prior CABG", "previous surgery") names no study. A date in the sentence of the interval
# language also names one (implied_comparisons).
_STUDY_NOUN = (
    r"(?:stud(?:y|ies)|exam(?:ination)?s?|films?|radiographs?|x-?rays?|CTs?|CTAs?|MRIs?|MRAs?|scans?|ultrasounds?|"
    r"sonograms?|mammograms?|images?|imaging|series|views?|PET(?:/CT)?|chest)"
)
_EXPLICIT_RE = folded(
    re.compile(
        r"\b(?:compar\w*|"
        r"(?:prior|previous|earlier|old|outside|recent|last|baseline|preceding)\s+(?:[\w-]+\s+){0,3}?"
        + _STUDY_NOUN
        + r"|"
        r"(?:from|to|with|than|since|versus|vs\.?|on)\s+(?:the\s+)?(?:prior|previous|last|baseline)(?=\s*(?:[.,;:)]|$|and\b|or\b)))",
        _I,
    )
)
# Interval language: a statement that only makes sense against an earlier study ("unchanged", "again
# seen", "interval development", "has resolved"), docs/qa-rules.md "Comparison statement". Words
# also used without a comparison ("stable", "increased opacity", "persistent cough", "new") are not
# counted; "interval" counts before a word of change, not in "rotator interval" or "interval follow-up".
_CHANGE = (
    r"(?:increas|decreas|develop|chang|enlarg|resolu|resolv|improv|wors|progress|remov|plac|insert|appear|grow|"
    r"reduc|exchang|advanc|retract|heal|clear|diminish|regress|evolv|migrat|expan)\w*"
)
_IMPLIED_RE = folded(
    re.compile(
        r"\b(?:unchanged|"
        r"no\s+(?:significant\s+|appreciable\s+|definite\s+|interval\s+|substantial\s+)?change(?!\s+(?:during|between|with)\b)|"
        r"again\s+(?:seen|noted|demonstrated|identified|visualized|evident|present|shown)|"
        r"redemonstrat\w*|"
        r"interval(?:ly)?\s+(?:[\w-]+\s+){0,2}?" + _CHANGE + r"|"
        r"in\s+the\s+(?:interim|interval)|"
        r"previously\s+(?:seen|noted|described|demonstrated|identified|visualized|reported|present|evident|shown)|"
        r"(?:seen|noted|described|demonstrated|identified|visualized)\s+previously|"
        r"(?:has|have)\s+(?:\w+\s+)?(?:increased|decreased|resolved|improved|worsened|progressed|enlarged|"
        r"developed|cleared|grown|diminished|changed|regressed|become)|"
        r"(?:increased|decreased|increasing|decreasing)\s+in\s+(?:size|number|extent)|"
        r"new\s+since)\b",
        _I,
    )
)
_PLAN_OR_CLINICAL_RE = folded(
    re.compile(
        r"\b(?:recommend\w*|follow-?\s?up|followup|suggest\w*|advis\w*|(?:re)?assess\w*|should|could|would|"
        r"to\s+(?:ensure|document|confirm|exclude|evaluate)|symptoms?|patient|complain\w*|neurologic\w*|"
        r"he|she|his|her|blood\s+pressure|heart\s+rate|pulse)\b",
        _I,
    )
)
_IMPLIED_KINDS = (SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.OTHER)


def _comparison_given(report: Report) -> bool:
    """True when the report has comparison text or a comparison section with text."""
    if report.comparison_text.strip():
        return True
    return any(sec.text.strip() for sec in report.sections_of(SectionKind.COMPARISON))


def _in_bodies(report: Report, *patterns: Folded) -> bool:
    """True when a pattern matches a section body (an empty "COMPARISON:" heading is no statement), or the
    whole text of a report without sections."""
    bodies = [sec.text for sec in report.sections] if report.sections else [report.text]
    return any(p.search(body) for body in bodies for p in patterns)


def _states_study(report: Report) -> bool:
    """True when the report has comparison text, or names a study it compares with anywhere in its sections."""
    return _comparison_given(report) or _in_bodies(report, _EXPLICIT_RE)


def implied_comparisons(data: RuleInput) -> list[tuple[int, int]]:
    """Interval language in findings/impression sentences that name no date and are no plan or history."""
    report = data.report
    text = report.text
    spans = (
        [(sec.start, sec.end) for sec in report.sections if sec.kind in _IMPLIED_KINDS]
        if report.sections
        else [(0, len(text))]
    )
    out: list[tuple[int, int]] = []
    for start, end in spans:
        if _IMPLIED_RE.search(text, start, end) is None:
            continue
        for span in data.analysis.sentences(start, end):
            match = _IMPLIED_RE.search(text, span.start, span.end)
            if match is None or _PLAN_OR_CLINICAL_RE.search(text, span.start, span.end):
                continue
            if _DIGIT_RE.search(text, span.start, span.end) and find_dates(text, span.start, span.end):
                continue
            out.append((match.start(), match.end()))
    return out


def has_comparison_statement(report: Report) -> bool:
    """True when the report has a comparison section with text, comparison text, or a comparison cue.

    Interval language counts too: comparison.implied_without_statement speaks for a report with only that.
    """
    return _comparison_given(report) or _in_bodies(report, _STATEMENT_RE, _IMPLIED_RE)


@rule("comparison", severity=Severity.INFO)
def missing(data: RuleInput) -> Iterable[Finding]:
    """No comparison: no "Comparison:" section and no comparison statement anywhere in the text."""
    report = data.report
    if report.text_kind != "text" or not report.text.strip() or has_comparison_statement(report):
        return
    yield data.emit(
        "Report does not state a comparison (no comparison section or statement).",
        (),
        'Add "Comparison:" with the prior studies used, or "None".',
    )


@rule("comparison", severity=Severity.WARNING)
def implied_without_statement(data: RuleInput) -> Iterable[Finding]:
    """Interval language ("unchanged", "again seen", "interval development") with no comparison study named."""
    report = data.report
    if report.text_kind != "text" or not report.text.strip() or _states_study(report):
        return
    spans = implied_comparisons(data)
    if not spans:
        return
    yield data.emit(
        "Report describes change over time but names no comparison study.",
        [data.analysis.evidence(s, e) for s, e in spans[:3]],
        'Add "Comparison:" with the prior study and its date.',
    )


@rule("comparison", severity=Severity.ERROR, params={"day_first": False})
def date_after_exam(data: RuleInput) -> Iterable[Finding]:
    """A comparison study dated after the date of this exam."""
    when = exam_date(data)
    if when is None:
        return
    exam_day, grace = when
    text = data.report.text
    late = []
    seen: set[int] = set()
    for start, end in dated_comparison_spans(data):
        for cited in find_dates(text, start, end, day_first=bool(data.param("day_first"))):
            if cited.start not in seen and cited.after(exam_day, grace):
                seen.add(cited.start)
                late.append(cited)
    if late:
        yield data.emit(
            "Comparison study is dated after this exam.",
            [data.analysis.evidence(c.start, c.end) for c in late[:3]],
            "Correct the comparison date.",
        )


_NONE_SECTION_RE = folded(re.compile(r"\W*(?:none\b|no\b|n/?a\b|not\s+available|unavailable|nil\b)", _I))
_NONE_PHRASE_RE = folded(
    re.compile(
        r"\b(?:no\s+(?:prior|previous|old|comparison)(?:\s+(?:studies|study|exams?|examinations?|films?|images?|imaging|radiographs?|comparisons?))?"
        r"(?:\s+(?:is|are|was|were)\s+)?(?:\s*available|\s+for\s+comparison)?|without\s+(?:a\s+)?(?:prior|previous)\s+(?:studies|study|exams?)\s+for\s+comparison)\b",
        _I,
    )
)


def _none_spans(data: RuleInput) -> list[tuple[int, int]]:
    report = data.report
    out: list[tuple[int, int]] = []
    for sec in data.analysis.sections_of(SectionKind.COMPARISON):
        match = _NONE_SECTION_RE.match(report.text, sec.start, sec.end)
        if match:
            out.append((sec.start, min(sec.end, sec.start + max(4, match.end() - sec.start))))
    for match in _NONE_PHRASE_RE.finditer(report.text):
        out.append((match.start(), match.end()))
    return out


def _prior_facts(data: RuleInput, prior: Prior) -> tuple[str, str]:
    modality, region = prior.modality, prior.body_region
    if (not modality or not region) and prior.procedure_code and data.procedures is not None:
        entry = data.procedures.get(prior.procedure_code)
        if entry is not None:
            modality, region = modality or entry.modality, region or entry.body_region
    return modality.upper(), region


def relevant_priors(data: RuleInput) -> list[Prior]:
    """Known priors of the same body region (and modality, unless the policy says otherwise)."""
    priors = data.context.priors
    report = data.report
    if not priors or report.body_region in _WIDE:
        return []
    when = exam_date(data)
    max_age = int(data.param("max_age_days", 0) or 0)
    same_modality = bool(data.param("same_modality", True))
    out = []
    for prior in priors:
        if prior.accession and prior.accession == report.accession:
            continue
        if when is not None:
            if prior.study_date > when[0]:
                continue
            if max_age and (when[0] - prior.study_date).days > max_age:
                continue
        modality, region = _prior_facts(data, prior)
        if not region or region in _WIDE or not regions_related(region, report.body_region):
            continue
        if same_modality and modality and report.modality and modality != report.modality.upper():
            continue
        out.append(prior)
    return out


@rule("comparison", severity=Severity.WARNING, params={"same_modality": True, "max_age_days": 1825})
def none_with_priors(data: RuleInput) -> Iterable[Finding]:
    """The report says there is no comparison while a prior of the same body region and modality is known."""
    if not data.context.priors:
        return
    spans = _none_spans(data)
    if not spans:
        return
    priors = relevant_priors(data)
    if not priors:
        return
    plural = "study" if len(priors) == 1 else "studies"
    region = data.report.body_region.replace("_", " ")
    yield data.emit(
        f"Report states no comparison, but {len(priors)} prior {data.report.modality or ''} {plural} of the {region} are on record.".replace(
            "  ", " "
        ),
        [data.analysis.evidence(s, e) for s, e in spans[:2]],
        "Compare with the relevant prior study, or state why it was not used.",
    )


_OUTSIDE_RE = folded(re.compile(r"\b(?:outside|another\s+(?:facility|institution|hospital)|external|OSH)\b", _I))


@rule("comparison", severity=Severity.WARNING, params={"tolerance_days": 1, "day_first": False})
def prior_not_found(data: RuleInput) -> Iterable[Finding]:
    """A comparison date cited in the report matches no known prior study (only when priors are known)."""
    priors = data.context.priors
    if priors is None:
        return
    when = exam_date(data)
    text = data.report.text
    tolerance = int(data.param("tolerance_days", 1))
    missing_dates = []
    seen: set[int] = set()
    for start, end in dated_comparison_spans(data):
        if _OUTSIDE_RE.search(text, start, end):
            continue
        for cited in find_dates(text, start, end, day_first=bool(data.param("day_first"))):
            if cited.start in seen:
                continue
            seen.add(cited.start)
            if when is not None and cited.after(when[0], when[1]):
                continue  # date_after_exam speaks for that one
            if not any(cited.matches(p.study_date, tolerance) for p in priors):
                missing_dates.append(cited)
    if missing_dates:
        yield data.emit(
            f"{len(missing_dates)} cited comparison date(s) match no prior study on record.",
            [data.analysis.evidence(c.start, c.end) for c in missing_dates[:3]],
            "Check the comparison date, or that the prior was loaded.",
        )
