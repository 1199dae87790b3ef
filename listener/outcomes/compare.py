"""Compare a final report with its preliminary: the differences, and a proposed RADPEER grade.

Pure: no I/O, no clock, no logging. Reads only the text layer's public
functions (:mod:`listener.text`) and, when asked, the QA engine's findings.

What is compared (docs/outcomes.md):

- **Concepts.** Every finding mention of the report body (all sections but
  indication, technique, comparison and communication; the whole text when
  there are none) is read with its ConText status. A concept's state in one
  report is ``affirmed`` when any mention affirms it, else ``hedged`` when
  any hedges it, else ``historical`` ("old healed fracture", "history of")
  when any places it in the past, else ``negated``; hypothetical and
  other-experiencer mentions do not count. Absent from a report: ``absent``.
  Its sides are those of the mentions in that state.
- **Impression.** Its sentences, folded (case, punctuation, list numbers,
  the equivalent phrases of policies/outcomes.yaml), compared as a set.
- **Communication statements**, **section kinds**, **QA rule ids**, and the
  folded wording of the whole text.

Interpretive differences are about findings; operational ones about the
report as a document (docs/outcomes.md lists both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from listener.model import Evidence, Finding, Report, Section, SectionKind
from listener.outcomes.rules import KINDS, OutcomeRules, fold_phrase, grade_rank, worst_grade
from listener.text import Mention, Terms, TextCache, find_mentions, lateral_mentions, split_sentences

__all__ = ["Comparison", "Difference", "ConceptState", "compare", "concept_states"]

#: Sections whose mentions are not findings of this study.
_NOT_BODY = frozenset(
    {SectionKind.INDICATION, SectionKind.TECHNIQUE, SectionKind.COMPARISON, SectionKind.COMMUNICATION}
)
#: Kinds in output order (interpretive first, the most telling first).
_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}
#: QA rule ids of laterality defects (docs/qa-rules.md): fixed in the final, they make a side change a typo fix.
_LATERALITY_RULES = "laterality."
#: The longest text excerpt carried by one piece of evidence.
_EXCERPT = 200


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference between the preliminary and the final.

    Attributes:
        kind: one of :data:`listener.outcomes.rules.KINDS`.
        category: ``interpretive`` or ``operational``.
        concept: the finding concept, QA rule id or section kind it is about
            (``""`` for wording).
        severity: ``critical``, ``significant`` or ``other`` (the concept's
            flags; ``other`` for operational kinds without a concept).
        from_state, to_state: the concept's state in prelim and final
            (``affirmed``/``hedged``/``negated``/``absent``; ``""`` when not a
            concept difference).
        prelim, final: evidence spans in each version (offsets into that
            version's text), empty where the version has none.
        detail: a short plain statement ("negated -> affirmed", "right -> left").
        grade: the proposed RADPEER grade of this difference.
        rule: the grading rule that set it (``""``: ``default_grade``).
    """

    kind: str
    category: str
    concept: str
    severity: str = "other"
    from_state: str = ""
    to_state: str = ""
    prelim: tuple[Evidence, ...] = ()
    final: tuple[Evidence, ...] = ()
    detail: str = ""
    grade: str = "1"
    rule: str = ""

    def sort_key(self) -> tuple[int, int, str, int, int]:
        """Interpretive first, then by kind, concept and first offset (deterministic)."""
        first = self.final[0].start if self.final else (self.prelim[0].start if self.prelim else -1)
        return (
            0 if self.category == "interpretive" else 1,
            _KIND_ORDER.get(self.kind, 99),
            self.concept,
            first,
            -grade_rank(self.grade),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (evidence as ``{section, start, end, text}``)."""
        return {
            "kind": self.kind,
            "category": self.category,
            "concept": self.concept,
            "severity": self.severity,
            "from": self.from_state,
            "to": self.to_state,
            "detail": self.detail,
            "grade": self.grade,
            "rule": self.rule,
            "prelim": [_evidence_json(e) for e in self.prelim],
            "final": [_evidence_json(e) for e in self.final],
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every difference of one prelim/final pair and the proposed grade.

    Attributes:
        grade: the most severe difference grade ("1" for none).
        deciding: the differences that set ``grade`` (sorted).
        rules_version: :attr:`OutcomeRules.version` of the rules used.
    """

    prelim_accession: str
    final_accession: str
    grade: str
    differences: tuple[Difference, ...]
    rules_version: str = ""
    deciding: tuple[Difference, ...] = field(default=())

    @property
    def interpretive(self) -> tuple[Difference, ...]:
        """The differences about findings."""
        return tuple(d for d in self.differences if d.category == "interpretive")

    @property
    def operational(self) -> tuple[Difference, ...]:
        """The differences about the report as a document."""
        return tuple(d for d in self.differences if d.category == "operational")

    @property
    def significant(self) -> bool:
        """True for a "b" grade (likely clinically significant)."""
        return self.grade.endswith("b")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; key and list order are deterministic."""
        return {
            "prelim_accession": self.prelim_accession,
            "final_accession": self.final_accession,
            "grade": self.grade,
            "rules_version": self.rules_version,
            "interpretive": len(self.interpretive),
            "operational": len(self.operational),
            "differences": [d.to_json() for d in self.differences],
        }


@dataclass(frozen=True, slots=True)
class ConceptState:
    """Where one concept stands in one report, with the mentions that say so."""

    concept: str
    state: str
    sides: tuple[str, ...]
    mentions: tuple[Mention, ...]
    critical: bool = False
    significant: bool = False
    #: Sides per section kind (for a laterality typo: findings right, impression left).
    sides_by_section: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def severity(self) -> str:
        return "critical" if self.critical else "significant" if self.significant else "other"


def _evidence_json(e: Evidence) -> dict[str, Any]:
    return {"section": e.section, "start": e.start, "end": e.end, "text": e.text}


def _body(report: Report) -> tuple[tuple[int, int, str], ...]:
    """Regions of the report body: (start, end, section kind)."""
    if not report.sections:
        return ((0, len(report.text), SectionKind.OTHER.value),) if report.text.strip() else ()
    return tuple((s.start, s.end, s.kind.value) for s in report.sections if s.kind not in _NOT_BODY)


def _section_at(report: Report, offset: int) -> str:
    for s in report.sections:
        if s.start <= offset <= s.end:
            return s.kind.value
    return ""


def _evidence(report: Report, start: int, end: int) -> Evidence:
    """The text ``[start, end)`` of ``report`` (cut at ``_EXCERPT`` characters)."""
    text = report.text[start:end]
    if len(text) > _EXCERPT:
        text = text[: _EXCERPT - 3] + "..."
    return Evidence(section=_section_at(report, start), start=start, end=end, text=" ".join(text.split()))


def _state_of(m: Mention) -> str:
    if m.hypothetical or m.experiencer != "patient":
        return ""
    if m.negated:
        return "negated"
    if m.uncertain:
        return "hedged"
    if m.historical:
        return "historical"
    return "affirmed"


#: The state a concept takes when its mentions differ: the strongest claim wins.
_STATE_RANK = {"affirmed": 0, "hedged": 1, "historical": 2, "negated": 3}


def concept_states(report: Report, terms: Terms, *, cache: TextCache | None = None) -> dict[str, ConceptState]:
    """Every concept of the report body with its state, sides and mentions.

    ``cache``: the text analysis results of the comparison (:func:`compare`
    makes one), so the other comparisons do not scan the body again.
    """
    by_concept: dict[str, list[tuple[str, str, Mention]]] = {}
    for start, end, kind in _body(report):
        for m in find_mentions(report.text, start, end, terms, cache=cache):
            state = _state_of(m)
            if state:
                by_concept.setdefault(m.concept, []).append((state, kind, m))
    out: dict[str, ConceptState] = {}
    for concept, items in by_concept.items():
        state = min((s for s, _, _ in items), key=_STATE_RANK.__getitem__)
        chosen = [(k, m) for s, k, m in items if s == state]
        sides = tuple(sorted({m.laterality for _, m in chosen if m.laterality}))
        per_section: dict[str, set[str]] = {}
        for k, m in chosen:
            if m.laterality:
                per_section.setdefault(k, set()).add(m.laterality)
        first = chosen[0][1]
        out[concept] = ConceptState(
            concept=concept,
            state=state,
            sides=sides,
            mentions=tuple(m for _, m in chosen),
            critical=first.critical,
            significant=first.significant,
            sides_by_section=tuple(sorted((k, tuple(sorted(v))) for k, v in per_section.items())),
        )
    return out


def _differ(
    concept: str,
    severity: str,
    from_state: str,
    to_state: str,
    prelim: tuple[Evidence, ...],
    final: tuple[Evidence, ...],
) -> Callable[[str, str], Difference]:
    """A maker of one concept's differences: everything but the kind and the detail is fixed."""

    def diff(kind: str, detail: str) -> Difference:
        return Difference(
            kind=kind,
            category=KINDS[kind],
            concept=concept,
            severity=severity,
            from_state=from_state,
            to_state=to_state,
            prelim=prelim,
            final=final,
            detail=detail,
        )

    return diff


def _mention_evidence(report: Report, state: ConceptState | None) -> tuple[Evidence, ...]:
    """The sentences of a concept's mentions (each once, text order)."""
    if state is None:
        return ()
    seen: dict[tuple[int, int], None] = {}
    for m in state.mentions:
        seen.setdefault((m.sentence_start, m.sentence_end), None)
    return tuple(_evidence(report, s, e) for s, e in sorted(seen))


def _concept_differences(prelim: Report, final: Report, terms: Terms, cache: TextCache) -> list[Difference]:
    before = concept_states(prelim, terms, cache=cache)
    after = concept_states(final, terms, cache=cache)
    out: list[Difference] = []
    for concept in sorted(set(before) | set(after)):
        p, f = before.get(concept), after.get(concept)
        ref = f or p
        assert ref is not None
        severity = ref.severity
        p_state = p.state if p else "absent"
        f_state = f.state if f else "absent"
        p_ev, f_ev = _mention_evidence(prelim, p), _mention_evidence(final, f)
        diff = _differ(concept, severity, p_state, f_state, p_ev, f_ev)

        if p_state != f_state:
            if f_state == "affirmed" and ref.critical and p_state in ("absent", "negated"):
                out.append(diff("critical_added", f"{p_state} -> affirmed"))
            elif {p_state, f_state} == {"absent", "negated"}:
                # Only a negative statement said or dropped: "no pneumothorax" in one, silence in the other.
                out.append(
                    diff("statement_added" if p_state == "absent" else "statement_removed", f"{p_state} -> {f_state}")
                )
            elif p_state == "absent":
                out.append(diff("finding_added", f"absent -> {f_state}"))
            elif f_state == "absent":
                out.append(diff("finding_removed", f"{p_state} -> absent"))
            else:
                out.append(diff("assertion_changed", f"{p_state} -> {f_state}"))
            continue
        if p is None or f is None or p_state == "negated":
            continue
        if p.sides and f.sides and p.sides != f.sides:
            detail = f"{'/'.join(p.sides)} -> {'/'.join(f.sides)}"
            if _typo_fixed(p, f):
                out.append(diff("laterality_corrected", detail))
            else:
                out.append(diff("side_changed", detail))
    return out


def _finding_sides(report: Report, terms: Terms, cache: TextCache) -> dict[str, list[tuple[str, int, int, str]]]:
    """Paired anatomy -> (side, sentence start, end, severity) of side words in sentences stating a finding.

    A sentence counts when it affirms, hedges or dates a finding concept
    ("calcified granuloma in the right upper lobe"); a side word in a
    sentence that only negates ("no left effusion") or names anatomy alone
    ("the left costophrenic angle is sharp") does not.
    """
    out: dict[str, list[tuple[str, int, int, str]]] = {}
    for start, end, _ in _body(report):
        stating: dict[tuple[int, int], str] = {}
        for m in find_mentions(report.text, start, end, terms, cache=cache):
            if _state_of(m) in ("affirmed", "hedged", "historical"):
                weight = "critical" if m.critical else "significant" if m.significant else "other"
                key = (m.sentence_start, m.sentence_end)
                current = stating.get(key)
                if current is None or _SEVERITY_RANK[weight] < _SEVERITY_RANK[current]:
                    stating[key] = weight
        if not stating:
            continue
        for lm in lateral_mentions(report.text, start, end, terms, cache=cache):
            key = (lm.sentence_start, lm.sentence_end)
            if lm.anatomy and key in stating and lm.side in ("left", "right"):
                out.setdefault(lm.anatomy, []).append((lm.side, key[0], key[1], stating[key]))
    return out


_SEVERITY_RANK = {"critical": 0, "significant": 1, "other": 2}


def _anatomy_side_differences(prelim: Report, final: Report, terms: Terms, cache: TextCache) -> list[Difference]:
    """Findings whose concept carries no side but whose sentence names a paired anatomy on the other side.

    "Opacities above the right fissure" -> "... left fissure": the side word
    qualifies the anatomy, not the finding concept, and the concept
    comparison sees no side. Per anatomy, the sides stated in finding
    sentences are compared as sets.
    """
    before, after = _finding_sides(prelim, terms, cache), _finding_sides(final, terms, cache)
    out: list[Difference] = []
    for anatomy in sorted(set(before) & set(after)):
        p_sides = {side for side, _, _, _ in before[anatomy]}
        f_sides = {side for side, _, _, _ in after[anatomy]}
        if p_sides == f_sides:
            continue
        severity = min((w for *_, w in before[anatomy] + after[anatomy]), key=_SEVERITY_RANK.__getitem__)
        p_ev = tuple(_evidence(prelim, s, e) for s, e in sorted({(s, e) for _, s, e, _ in before[anatomy]}))
        f_ev = tuple(_evidence(final, s, e) for s, e in sorted({(s, e) for _, s, e, _ in after[anatomy]}))
        out.append(
            Difference(
                kind="side_changed",
                category="interpretive",
                concept=f"anatomy:{anatomy}",
                severity=severity,
                prelim=p_ev,
                final=f_ev,
                detail=f"{'/'.join(sorted(p_sides))} -> {'/'.join(sorted(f_sides))}",
            )
        )
    return out


def _typo_fixed(p: ConceptState, f: ConceptState) -> bool:
    """The prelim's sections disagree on the side and the final keeps one of them throughout.

    Findings "right pneumothorax", impression "left pneumothorax", and a final
    saying right in both: a laterality typo fixed, not a new reading.
    """
    prelim_sides = {sides for _, sides in p.sides_by_section}
    final_sides = {sides for _, sides in f.sides_by_section}
    return len(prelim_sides) > 1 and len(final_sides) == 1 and next(iter(final_sides)) in prelim_sides


def _fold(text: str, rules: OutcomeRules) -> str:
    folded = fold_phrase(text)
    # List numbers ("1 ", "2 ") at a sentence start carry no meaning.
    while folded[:1].isdigit():
        head, _, rest = folded.partition(" ")
        if not head.isdigit() or not rest:
            break
        folded = rest
    if rules.equivalent_re is not None:
        folded = rules.equivalent_re.sub(lambda m: rules.equivalent[m.group()], folded)
    return folded


def _statements(
    report: Report, sections: Sequence[Section], rules: OutcomeRules, cache: TextCache
) -> dict[str, tuple[int, int]]:
    """Folded sentence -> its first span, over ``sections``."""
    out: dict[str, tuple[int, int]] = {}
    for sec in sections:
        for s in split_sentences(report.text, sec.start, sec.end, cache=cache):
            sentence = report.text[s.start : s.end]
            if rules.communication_re is not None and rules.communication_re.search(sentence):
                continue  # a communication statement: compared on its own
            key = _fold(sentence, rules)
            if key:
                out.setdefault(key, (s.start, s.end))
    return out


def _signature(
    report: Report, sections: Sequence[Section], terms: Terms, cache: TextCache
) -> frozenset[tuple[str, str]]:
    """(concept, state) of every mention of ``sections``.

    Sides are left out: a side word attaches to the nearest finding, and
    punctuation alone ("hypertension; Left mid lung atelectasis") moves it;
    side changes are the concept comparison's business.
    """
    sig: set[tuple[str, str]] = set()
    for sec in sections:
        for m in find_mentions(report.text, sec.start, sec.end, terms, cache=cache):
            state = _state_of(m)
            if state:
                sig.add((m.concept, state))
    return frozenset(sig)


def _impression_differences(
    prelim: Report,
    final: Report,
    terms: Terms,
    rules: OutcomeRules,
    covered: Sequence[Difference],
    cache: TextCache,
) -> list[Difference]:
    """The impression's statements, when they differ.

    ``impression_changed`` (interpretive) when the impression states other
    findings, or the same ones otherwise, and no concept difference of the
    whole report already accounts for it; a change explained by operational
    concept differences only (a laterality typo fixed), or none at all
    (rewording), is ``impression_reworded``.
    """
    p_secs = prelim.sections_of(SectionKind.IMPRESSION)
    f_secs = final.sections_of(SectionKind.IMPRESSION)
    if not p_secs and not f_secs:
        return []
    p_st, f_st = _statements(prelim, p_secs, rules, cache), _statements(final, f_secs, rules, cache)
    if set(p_st) == set(f_st):
        return []
    gone = [p_st[k] for k in p_st if k not in f_st]
    new = [f_st[k] for k in f_st if k not in p_st]
    p_ev = tuple(_evidence(prelim, s, e) for s, e in sorted(gone))
    f_ev = tuple(_evidence(final, s, e) for s, e in sorted(new))
    changed = {c for c, _ in _signature(prelim, p_secs, terms, cache) ^ _signature(final, f_secs, terms, cache)}
    by_concept = {d.concept: d.category for d in covered}
    unexplained = any(c not in by_concept for c in changed)
    interpretive = unexplained or any(by_concept[c] == "interpretive" for c in changed)
    kind = "impression_changed" if interpretive else "impression_reworded"
    detail = f"{len(gone)} statement(s) dropped, {len(new)} added"
    return [Difference(kind=kind, category=KINDS[kind], concept="impression", prelim=p_ev, final=f_ev, detail=detail)]


def _communication(report: Report, rules: OutcomeRules) -> tuple[Evidence, ...]:
    if rules.communication_re is None:
        return ()
    spans: dict[tuple[int, int], None] = {}
    text = report.text
    sents = None
    for m in rules.communication_re.finditer(text):
        sents = sents if sents is not None else split_sentences(text, 0, len(text))
        hit = next((s for s in sents if s.start <= m.start() < s.end), None)
        if hit is not None:
            spans.setdefault((hit.start, hit.end), None)
    return tuple(_evidence(report, s, e) for s, e in sorted(spans))


def _communication_differences(prelim: Report, final: Report, rules: OutcomeRules) -> list[Difference]:
    p_ev, f_ev = _communication(prelim, rules), _communication(final, rules)
    p_keys = {_fold(e.text, rules) for e in p_ev}
    f_keys = {_fold(e.text, rules) for e in f_ev}
    out: list[Difference] = []
    added = tuple(e for e in f_ev if _fold(e.text, rules) not in p_keys)
    removed = tuple(e for e in p_ev if _fold(e.text, rules) not in f_keys)
    if added:
        out.append(
            Difference(
                kind="communication_added",
                category="operational",
                concept="communication",
                prelim=p_ev,
                final=added,
                detail=f"{len(added)} statement(s) added",
            )
        )
    if removed:
        out.append(
            Difference(
                kind="communication_removed",
                category="operational",
                concept="communication",
                prelim=removed,
                final=f_ev,
                detail=f"{len(removed)} statement(s) removed",
            )
        )
    return out


def _section_differences(prelim: Report, final: Report) -> list[Difference]:
    p_kinds = {s.kind.value for s in prelim.sections}
    f_kinds = {s.kind.value for s in final.sections}
    out: list[Difference] = []
    for kind in sorted(p_kinds ^ f_kinds):
        in_final = kind in f_kinds
        p_ev = tuple(_evidence(prelim, s.start, s.end) for s in prelim.sections if s.kind.value == kind)
        f_ev = tuple(_evidence(final, s.start, s.end) for s in final.sections if s.kind.value == kind)
        out.append(
            Difference(
                kind="sections_changed",
                category="operational",
                concept=kind,
                prelim=p_ev,
                final=f_ev,
                detail=f"{kind} section {'added' if in_final else 'removed'}",
            )
        )
    return out


def _wording_difference(prelim: Report, final: Report, rules: OutcomeRules) -> list[Difference]:
    """The changed middle of the texts (common prefix and suffix cut, widened to words), when the folded texts differ."""
    if _fold(prelim.text, rules) == _fold(final.text, rules):
        return []
    a, b = prelim.text, final.text
    lo = 0
    limit = min(len(a), len(b))
    while lo < limit and a[lo] == b[lo]:
        lo += 1
    hi = 0
    while hi < limit - lo and a[len(a) - 1 - hi] == b[len(b) - 1 - hi]:
        hi += 1
    # Widen to whole words: "Haert" / "Heart", not "ae" / "ea".
    while lo > 0 and a[lo - 1].isalnum():
        lo -= 1
    a_end, b_end = len(a) - hi, len(b) - hi
    while a_end < len(a) and a[a_end].isalnum():
        a_end += 1
    while b_end < len(b) and b[b_end].isalnum():
        b_end += 1
    p_ev = (_evidence(prelim, lo, a_end),) if a_end > lo else ()
    f_ev = (_evidence(final, lo, b_end),) if b_end > lo else ()
    return [
        Difference(
            kind="wording_changed", category="operational", concept="", prelim=p_ev, final=f_ev, detail="text changed"
        )
    ]


def _qa_differences(
    prelim: Report, final: Report, p_findings: Iterable[Finding], f_findings: Iterable[Finding]
) -> list[Difference]:
    def by_rule(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for f in findings:
            out.setdefault(f.rule, []).append(f)
        return out

    def spans(report: Report, found: list[Finding]) -> tuple[Evidence, ...]:
        return tuple(_evidence(report, e.start, e.end) for f in found for e in f.evidence)

    before, after = by_rule(p_findings), by_rule(f_findings)
    out: list[Difference] = []
    for rule_id in sorted(set(before) - set(after)):
        out.append(
            Difference(
                kind="qa_fixed",
                category="operational",
                concept=rule_id,
                prelim=spans(prelim, before[rule_id]),
                detail=f"{rule_id} fixed",
            )
        )
    for rule_id in sorted(set(after) - set(before)):
        out.append(
            Difference(
                kind="qa_introduced",
                category="operational",
                concept=rule_id,
                final=spans(final, after[rule_id]),
                detail=f"{rule_id} introduced",
            )
        )
    return out


def compare(
    prelim: Report,
    final: Report,
    *,
    terms: Terms,
    rules: OutcomeRules,
    qa_findings: tuple[Sequence[Finding], Sequence[Finding]] | None = None,
) -> Comparison:
    """Compare ``final`` with ``prelim`` and propose a grade.

    Args:
        prelim, final: the two versions (same accession; not checked here).
        terms: the compiled vocabularies (:func:`listener.text.load_terms`).
        rules: the grading rules (:func:`listener.outcomes.load_outcome_rules`).
        qa_findings: the QA findings of prelim and final, when known (the
            store keeps them; :func:`listener.outcomes.qa_findings` runs the
            engine); None: no QA differences.

    Returns:
        The differences (interpretive first, deterministic order) and the grade.
    """
    # One cache for both texts (its keys hold the text): the comparisons below
    # scan the same sections, and the results go with this comparison.
    cache = TextCache()
    found: list[Difference] = []
    found += _concept_differences(prelim, final, terms, cache)
    if not any(d.kind in ("side_changed", "laterality_corrected") for d in found):
        found += _anatomy_side_differences(prelim, final, terms, cache)
    qa = _qa_differences(prelim, final, qa_findings[0], qa_findings[1]) if qa_findings is not None else []
    if any(d.kind == "qa_fixed" and d.concept.startswith(_LATERALITY_RULES) for d in qa):
        # The prelim had a laterality defect the final no longer has: its side changes are that
        # typo fixed, not a new reading (docs/outcomes.md).
        found = [_retyped(d, "laterality_corrected") if d.kind == "side_changed" else d for d in found]
    found += _impression_differences(prelim, final, terms, rules, found, cache)
    found += _communication_differences(prelim, final, rules)
    found += _section_differences(prelim, final)
    found += qa
    if not found:
        # Nothing else explains a change of text: wording only.
        found += _wording_difference(prelim, final, rules)
    graded = [_graded(d, rules) for d in found]
    graded.sort(key=Difference.sort_key)
    grade = worst_grade(d.grade for d in graded)
    deciding = tuple(d for d in graded if d.grade == grade and grade != "1")
    return Comparison(
        prelim_accession=prelim.accession,
        final_accession=final.accession,
        grade=grade,
        differences=tuple(graded),
        rules_version=rules.version,
        deciding=deciding,
    )


def _retyped(d: Difference, kind: str) -> Difference:
    return Difference(
        kind, KINDS[kind], d.concept, d.severity, d.from_state, d.to_state, d.prelim, d.final, d.detail, d.grade, d.rule
    )


def _graded(d: Difference, rules: OutcomeRules) -> Difference:
    grade, rule = rules.grade(d.kind, d.category, d.severity, d.from_state or "absent", d.to_state or "absent")
    return Difference(
        d.kind, d.category, d.concept, d.severity, d.from_state, d.to_state, d.prelim, d.final, d.detail, grade, rule
    )
