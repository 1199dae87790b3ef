"""Prelim/final pairs built by editing real corpus reports, each with the grade class it should get.

Nothing here imports ``listener``: the pairs must not know how the comparator
works. Bases are the corpus documents of tests/qa/inject.py (read from
../shared/corpus at run time, never copied); edits are plain text rules
written here, natural text a second reader could write. Each pair has an
``expected`` class:

* ``b``: a significant change, the grade must end in "b":
  - ``critical_added``: the final appends "There is a large right
    pneumothorax." to findings and impression;
  - ``negation_flipped``: "No pneumothorax" -> "Small pneumothorax" (or a
    pleural effusion, a consolidation) in the final;
  - ``affirmation_negated``: the reverse (the prelim affirmed, the final negates);
  - ``side_swapped``: every left/right of findings and impression swapped,
    in reports that affirm a finding on one side only.
* ``1``: an equivalent version, the grade must be "1":
  - ``impression_reordered``, ``impression_synonyms``, ``impression_punctuation``;
  - ``typo_fixed``: the prelim misspells one plain word of the findings;
  - ``laterality_typo_fixed``: the prelim's impression names the other
    side than its findings (tests/qa/inject.py's laterality swap); the final
    is the original.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tests.qa.inject import (
    _FINDINGS_HEADS,
    _IMPRESSION_HEADS,
    SEED,
    Doc,
    _parts_named,
    _swap_side,
    inject_laterality,
    sentences,
)

#: Edit -> expected grade class ("b": significant, "1": equivalent).
EDITS: dict[str, str] = {
    "critical_added": "b",
    "negation_flipped": "b",
    "affirmation_negated": "b",
    "side_swapped": "b",
    "impression_reordered": "1",
    "impression_synonyms": "1",
    "impression_punctuation": "1",
    "typo_fixed": "1",
    "laterality_typo_fixed": "1",
}


@dataclass(frozen=True, slots=True)
class Pair:
    """One labeled pair: the base document, the two texts and the edit that made them differ."""

    id: str
    edit: str
    expected: str
    base: Doc
    prelim: str
    final: str


_NEGATION = re.compile(r"\b(?:no|not|without|negative|free of|resolved|clear)\b", re.I)
_FINDING_WORDS = re.compile(
    r"\b(?:opacit(?:y|ies)|effusions?|consolidation|atelectasis|nodules?|mass|pneumothorax|fractures?|infiltrates?"
    r"|airspace disease|pneumonia|granulomas?|scarring|calcifications?|lesions?)\b",
    re.I,
)


def _one_impression(doc: Doc) -> tuple[int, int] | None:
    imps = _parts_named(doc.text, _IMPRESSION_HEADS)
    if len(imps) != 1 or imps[0].end <= imps[0].start:
        return None
    return imps[0].start, imps[0].end


def _pair(doc: Doc, edit: str, prelim: str, final: str) -> Pair | None:
    if prelim == final:
        return None
    return Pair(f"{doc.id}/{edit}", edit, EDITS[edit], doc, prelim, final)


def _with_sentence(text: str, end: int, sentence: str) -> tuple[str, int]:
    """``text`` with ``sentence`` inserted at ``end`` (after a period), and the growth."""
    head = text[:end]
    insert = ("" if head.rstrip().endswith(".") else ".") + " " + sentence
    return head + insert + text[end:], len(insert)


def critical_added(doc: Doc, rng: random.Random) -> Pair | None:
    """The final appends a large right pneumothorax to findings and impression."""
    finds = _parts_named(doc.text, _FINDINGS_HEADS)
    imp = _one_impression(doc)
    if not finds or imp is None or finds[-1].end > imp[0]:
        return None
    if re.search(r"pneumothora|tension|chest tube", doc.text, re.I):
        return None
    sentence = "There is a large right pneumothorax."
    text, grow = _with_sentence(doc.text, finds[-1].end, sentence)
    text, _ = _with_sentence(text, imp[1] + grow, sentence)
    return _pair(doc, "critical_added", doc.text, text)


_FLIPS = (
    (re.compile(r"\b[Nn]o (?:evidence of )?(?P<f>pneumothorax)\b"), "Small pneumothorax"),
    (re.compile(r"\b[Nn]o (?:evidence of )?(?P<f>pleural effusions?)\b"), "Small pleural effusion"),
    (re.compile(r"\b[Nn]o (?:evidence of )?(?:focal )?(?P<f>(?:airspace )?consolidation)\b"), "Focal consolidation"),
)


def _flipped(doc: Doc, rng: random.Random) -> str | None:
    """``doc.text`` with one "No <finding>" of its body rewritten as a small positive finding."""
    body = _parts_named(doc.text, _FINDINGS_HEADS | _IMPRESSION_HEADS)
    if not body:
        return None
    options = []
    for pattern, positive in _FLIPS:
        for part in body:
            m = pattern.search(doc.text, part.start, part.end)
            if m:
                options.append((m, positive))
                break
    if not options:
        return None
    m, positive = rng.choice(options)
    return doc.text[: m.start()] + positive + doc.text[m.end() :]


def negation_flipped(doc: Doc, rng: random.Random) -> Pair | None:
    text = _flipped(doc, rng)
    return _pair(doc, "negation_flipped", doc.text, text) if text else None


def affirmation_negated(doc: Doc, rng: random.Random) -> Pair | None:
    text = _flipped(doc, rng)
    return _pair(doc, "affirmation_negated", text, doc.text) if text else None


_SIDE = re.compile(r"\b(?:left|right)\b", re.I)


def side_swapped(doc: Doc, rng: random.Random) -> Pair | None:
    """Every side word of findings and impression swapped, when they affirm a finding on one side only."""
    body = _parts_named(doc.text, _FINDINGS_HEADS | _IMPRESSION_HEADS)
    if not body:
        return None
    body_text = " ".join(doc.text[p.start : p.end] for p in body)
    if re.search(r"\b(?:bilateral\w*|both|bibasilar|biapical)\b", body_text, re.I):
        return None
    if len({s.lower() for s in _SIDE.findall(body_text)}) != 1:
        return None
    affirmed = any(
        _SIDE.search(doc.text, s, e) and _FINDING_WORDS.search(doc.text, s, e) and not _NEGATION.search(doc.text, s, e)
        for p in body
        for s, e in sentences(doc.text, p.start, p.end)
    )
    if not affirmed:
        return None
    text = doc.text
    for p in sorted(body, key=lambda p: -p.start):
        part = _SIDE.sub(lambda m: _swap_side(m.group()), text[p.start : p.end])
        text = text[: p.start] + part + text[p.end :]
    return _pair(doc, "side_swapped", doc.text, text)


def impression_reordered(doc: Doc, rng: random.Random) -> Pair | None:
    """The impression's sentences in reverse order (the final)."""
    imp = _one_impression(doc)
    if imp is None:
        return None
    sents = sentences(doc.text, *imp)
    if len(sents) < 2 or re.search(r"^\s*\d+[.)]", doc.text[imp[0] : imp[1]], re.M):
        return None
    pieces = [doc.text[s:e].rstrip(".") + "." for s, e in sents]
    new = " ".join(reversed(pieces))
    return _pair(doc, "impression_reordered", doc.text, doc.text[: imp[0]] + new + doc.text[imp[1] :])


_SYNONYMS = (
    (r"\bacute cardiopulmonary abnormality\b", "acute cardiopulmonary process"),
    (r"\bacute cardiopulmonary process\b", "acute cardiopulmonary abnormality"),
    (r"\bacute cardiopulmonary disease\b", "acute cardiopulmonary findings"),
    (r"\bacute cardiopulmonary findings?\b", "acute cardiopulmonary disease"),
    (r"\bacute pulmonary (?:findings|disease)\b", "acute cardiopulmonary abnormality"),
    (r"\bacute disease\b", "acute cardiopulmonary process"),
    (r"^Normal chest(?: x-?\w+| radiographs?)?\.?", "No acute cardiopulmonary abnormality."),
    (r"\bwithin normal limits\b", "normal"),
    (r"\bunremarkable\b", "normal"),
    (r"\bis normal\b", "is within normal limits"),
    (r"\bNo evidence of\b", "No"),
    (r"\bidentified\b", "seen"),
    (r"\bnoted\b", "seen"),
)


def impression_synonyms(doc: Doc, rng: random.Random) -> Pair | None:
    """One equivalent phrase of the impression replaced by another (the final)."""
    imp = _one_impression(doc)
    if imp is None:
        return None
    text = doc.text[imp[0] : imp[1]]
    options = [(p, r) for p, r in _SYNONYMS if re.search(p, text, re.I | re.M)]
    if not options:
        return None
    pattern, repl = rng.choice(options)
    new = re.sub(pattern, repl, text, count=1, flags=re.I | re.M)
    return _pair(doc, "impression_synonyms", doc.text, doc.text[: imp[0]] + new + doc.text[imp[1] :])


def impression_punctuation(doc: Doc, rng: random.Random) -> Pair | None:
    """The impression in capitals, or with its sentences joined by semicolons (the final)."""
    imp = _one_impression(doc)
    if imp is None:
        return None
    text = doc.text[imp[0] : imp[1]]
    if rng.random() < 0.5:
        new = text.upper()
    else:
        new = re.sub(r"\.\s+(?=[A-Z])", "; ", text).rstrip(".")
    return _pair(doc, "impression_punctuation", doc.text, doc.text[: imp[0]] + new + doc.text[imp[1] :])


#: Words whose misspelling changes what a sentence says (negation, hedging, findings): never misspelled here.
_MEANINGFUL = re.compile(
    r"^(?:without|normal|negative|possib\w*|probab\w*|suspicious|consistent|concerning|suggest\w*|likely|unlikely"
    r"|cannot|excluded|evidence|history|resolved|previous|prior|interval|unchanged|stable|changes?|clear|absence"
    r"|absent|within|limits|left|right|bilateral|there|which|however|although|except)$",
    re.I,
)


def typo_fixed(doc: Doc, rng: random.Random) -> Pair | None:
    """The prelim swaps two inner letters of one plain findings word; the final is the original."""
    finds = _parts_named(doc.text, _FINDINGS_HEADS)
    if not finds:
        return None
    words = [
        m
        for p in finds
        for m in re.finditer(r"\b[a-z]{6,}\b", doc.text[p.start : p.end])
        if not _MEANINGFUL.match(m.group()) and not _FINDING_WORDS.search(m.group())
    ]
    if not words:
        return None
    m = rng.choice(words)
    offset = next(p.start for p in finds if m.group() in doc.text[p.start : p.end])
    start = doc.text.find(m.group(), offset)
    word = m.group()
    i = rng.randrange(1, len(word) - 2)
    typo = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if typo == word:
        return None
    prelim = doc.text[:start] + typo + doc.text[start + len(word) :]
    return _pair(doc, "typo_fixed", prelim, doc.text)


def laterality_typo_fixed(doc: Doc, rng: random.Random) -> Pair | None:
    case = inject_laterality(doc, rng)
    if case is None:
        return None
    return _pair(doc, "laterality_typo_fixed", case.injected.text, doc.text)


BUILDERS: dict[str, Callable[[Doc, random.Random], Pair | None]] = {
    "critical_added": critical_added,
    "negation_flipped": negation_flipped,
    "affirmation_negated": affirmation_negated,
    "side_swapped": side_swapped,
    "impression_reordered": impression_reordered,
    "impression_synonyms": impression_synonyms,
    "impression_punctuation": impression_punctuation,
    "typo_fixed": typo_fixed,
    "laterality_typo_fixed": laterality_typo_fixed,
}


def build_pairs(docs: Iterable[Doc], *, per_edit: int = 300, seed: int = SEED) -> list[Pair]:
    """Up to ``per_edit`` pairs per edit, from a seeded shuffle of ``docs`` (same seed, same pairs)."""
    pool = list(docs)
    random.Random(seed).shuffle(pool)
    out: list[Pair] = []
    for edit, build in BUILDERS.items():
        rng = random.Random(f"{seed}/{edit}")
        count = 0
        for doc in pool:
            if count >= per_edit:
                break
            pair = build(doc, rng)
            if pair is not None:
                out.append(pair)
                count += 1
    return out
