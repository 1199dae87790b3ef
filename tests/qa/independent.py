"""A second, independent labeled set: defects written from the issues' definitions alone.

This injector was written from the defect definitions of issues 4 and 14 and
from nothing else: not the rules, their vocabularies, the text engine, or the
first injector's ``inject_*`` functions (docs/qa-evaluation.md says why: a rule
set tuned against its own injector overstates itself). It reuses only the
plain ``Doc``/``Case`` records and ``load_corpus`` of ``inject.py``, and, like
that module, imports nothing from ``listener``.

Every injection edits one real corpus report the way a radiologist or a speech
recogniser would get it wrong, with its own word lists and its own phrasings
(several per defect, picked with ``random.Random(seed)``), and adds no marker.
Each Case keeps the defect's form in ``variant``; a base changed first so that
the defect becomes possible is recorded in ``prepared``.

laterality
  * ``impression_side_swap``: a side word (left/right) that the findings and the
    impression both put before the same word ("right lower lobe", "left pleural
    effusion") is turned to the other side in one of the two sections (never a
    side of unpaired anatomy such as "left ventricle", nor "right greater than left").
  * ``located_side_added``: a finding placed in a lung zone, base, lobe or apex
    on one side in the findings and named without a side in the impression gets
    the other side's location in the impression ("Right basilar atelectasis").
  * ``order_side_swap``: the order's procedure text names the other side than
    the one the report describes (right knee ordered, left knee reported).

contradiction
  * ``negation_dropped``: a finding denied in two places loses the denial in one
    of them ("No pneumothorax." -> "Pneumothorax." / "Small pneumothorax."), as
    a dropped "no" or a misheard word leaves it. Only a denial of one finding is
    flipped ("No pneumothorax or effusion." would turn into a list of positives).
  * ``impression_denies_affirmed``: an impression that affirms a finding gets
    another item denying the same finding ("No pleural effusion.").
  * ``plural_denied``: a plural or bilateral finding of the findings section
    ("bilateral pleural effusions", "nodules") is denied in the impression.
  * ``normal_impression``: the impression over an affirmed significant finding
    is replaced by a normal one ("No acute cardiopulmonary abnormality.").

completeness
  * ``impression_removed``: the impression section is deleted, or its heading is
    left with nothing under it.
  * ``placeholder_left``: a template blank is left in: a measurement dictated
    as "___ cm" / "*** mm" / "[ ] cm" / "<size> cm", or a comparison left as
    "***" / "___" / "<date>".
  * ``dictation_cut``: the report ends mid-sentence, after a word that cannot
    end a sentence ("... there is mild thickening of the").
  * ``birads_dropped``: a mammogram loses its BI-RADS category.

communication
  * ``communication_missing``: a report whose findings or impression affirm a new
    critical finding (not a stable, residual or expected one). The base is
    prepared with a complete communication statement (who, when, how); the
    injected copy has none (the corpus text itself) or an incomplete one.
  * ``impression_hedged``: the impression is rewritten so that nothing in it is
    definite ("Possible ..., cannot be excluded ...").

comparison
  * ``comparison_after_exam``: the base is prepared to cite a prior dated
    before the exam (in one of three date styles); the copy dates it after.
  * ``comparison_removed``: the comparison section is deleted.

coding
  * ``contrast_mismatch``: the CPT code is replaced by the family's code for
    another contrast, or every contrast statement of the text is rewritten to
    another contrast while the code stays.
  * ``view_count_mismatch``: a chest radiograph's base is prepared with a
    technique line documenting the views its code implies (71045-71048 for
    1/2/3/4+ views); the copy bills another view count's code, or documents
    another number of views under the same code.
  * ``region_code_mismatch``: the code of another body region (same modality)
    or of another modality (same region) is billed.

consistency
  * ``sex_organ_mismatch``: the patient sex is flipped on a report describing
    sex-specific organs, or a templated sentence about the other sex's organs
    is left in the findings of an abdomen/pelvis study.

alignment
  * ``finding_left_out``: the impression sentence naming a significant affirmed
    finding of the findings section is deleted while others remain (a numbered
    item goes with its number; later items are renumbered).
  * ``impression_only_finding``: an abnormal impression (chest, abdomen or pelvis)
    gets a finding of the same region that the report never mentions ("Small
    hiatal hernia.", "Old healed left rib fracture."). Not after a normal
    impression, where it would also be a contradiction.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tests.qa.inject import Case, Doc

SEED = 20261206

#: The rule families of issue 4: every label must be one of them.
CATEGORIES = frozenset(
    {
        "laterality",
        "contradiction",
        "completeness",
        "alignment",
        "communication",
        "comparison",
        "coding",
        "compliance",
        "turnaround",
        "consistency",
    }
)

#: injection -> category (issue 4 and issue 14 definitions).
INJECTIONS: dict[str, str] = {
    "impression_side_swap": "laterality",
    "located_side_added": "laterality",
    "order_side_swap": "laterality",
    "negation_dropped": "contradiction",
    "impression_denies_affirmed": "contradiction",
    "plural_denied": "contradiction",
    "normal_impression": "contradiction",
    "impression_removed": "completeness",
    "placeholder_left": "completeness",
    "dictation_cut": "completeness",
    "birads_dropped": "completeness",
    "communication_missing": "communication",
    "impression_hedged": "communication",
    "comparison_after_exam": "comparison",
    "comparison_removed": "comparison",
    "contrast_mismatch": "coding",
    "view_count_mismatch": "coding",
    "region_code_mismatch": "coding",
    "sex_organ_mismatch": "consistency",
    "finding_left_out": "alignment",
    "impression_only_finding": "alignment",
}

# --------------------------------------------------------------------------- text helpers

_HEADING = re.compile(r"(?:^|(?<=[\n,.]))[ \t]*([A-Z][A-Z /&()-]*[A-Z]):", re.MULTILINE)
_IMPRESSION_NAMES = {"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "OPINION"}
_SENTENCE = re.compile(r"(?:[^.!?\n]|\.(?=\d))+[.!?]*")
_NEGATION = re.compile(
    r"\b(no|not|without|negative|free of|resolved|resolution|absence|absent|rule out|r/o|exclude|excluded|clear|"
    r"removed|normal|unremarkable)\b",
    re.IGNORECASE,
)
_HEDGE_OR_PAST = re.compile(
    r"\b(may|might|could|possible|possibly|probable|probably|likely|suspicious|suspected|suggest\w*|question\w*|"
    r"cannot|versus|vs|consider\w*|concern\w*|differential|or|history|prior|previous|previously|old|healed|"
    r"chronic|post|s/p|status|evaluate|evaluation|assess\w*|follow|recommend\w*|if)\b",
    re.IGNORECASE,
)
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
# After a side word: unpaired anatomy, and comparisons ("right greater than left") whose swap reads as nonsense.
_NOT_PAIRED = re.compile(
    r"^\W*(ventric\w*|atri\w*|heart|hemidiaphragm\w*|-?sided|side|upper quadrant|lower quadrant|greater|larger|"
    r"more|less|than|to|and|or|xxxx)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Section:
    """One headed section: heading start, body start and end offsets in the report text."""

    name: str
    start: int
    body: int
    end: int


def sections(text: str) -> list[Section]:
    """Upper-case headings followed by a colon, at a line start or after "," or "." (the corpus writes both)."""
    heads = list(_HEADING.finditer(text))
    out = []
    for i, match in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out.append(Section(match.group(1).strip(), match.start(), match.end(), end))
    return out


def impression(text: str) -> Section | None:
    """The last impression-like section with some body text."""
    found = [s for s in sections(text) if s.name in _IMPRESSION_NAMES and text[s.body : s.end].strip(" ,\n")]
    return found[-1] if found else None


def findings(text: str) -> Section | None:
    """The first section whose heading names findings."""
    for s in sections(text):
        if "FINDING" in s.name or s.name == "INTERPRETATION":
            return s if text[s.body : s.end].strip(" ,\n") else None
    return None


def sentence_spans(text: str, section: Section) -> list[tuple[int, int]]:
    """(start, end) of each sentence with letters in the section body."""
    spans = []
    for m in _SENTENCE.finditer(text, section.body, section.end):
        chunk = m.group(0)
        if not re.search(r"[A-Za-z]{2}", chunk):
            continue
        lead = len(chunk) - len(chunk.lstrip(" ,\t"))
        spans.append((m.start() + lead, m.end()))
    return spans


def affirmed(sentence: str, term: str) -> bool:
    """The term is stated as present: no denial, hedge or history anywhere in the sentence (conservative)."""
    return (
        re.search(rf"\b{term}\b", sentence, re.IGNORECASE) is not None
        and not _NEGATION.search(sentence)
        and not _HEDGE_OR_PAST.search(sentence)
    )


def mentions(text: str, term: str) -> bool:
    """The term occurs as words."""
    return re.search(rf"\b{term}\b", text, re.IGNORECASE) is not None


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _other_side(word: str) -> str:
    return _match_case("right" if word.lower() == "left" else "left", word)


def _splice(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


# Findings the selection logic looks for (written here from the issues' examples).
SIGNIFICANT = (
    "pneumothorax",
    "pleural effusions?",
    "consolidation",
    "pulmonary edema",
    "pneumonia",
    "infiltrates?",
    "nodules?",
    "mass",
    "fractures?",
    "cardiomegaly",
    "atelectasis",
    "hydronephrosis",
    "hemorrhage",
    "lymphadenopathy",
    "hernia",
    "opacity",
    "opacities",
    "granulomas?",
    "scoliosis",
)
CRITICAL = (
    "pneumothorax",
    "pneumoperitoneum",
    "free air",
    "subdural hematoma",
    "epidural hematoma",
    "intracranial hemorrhage",
    "subarachnoid hemorrhage",
    "pulmonary embolism",
    "pulmonary emboli",
    "aortic dissection",
    "torsion",
    "ectopic pregnancy",
    "cord compression",
    "acute infarct",
    "appendicitis",
)


def _singular(term: str) -> str:
    """A term pattern's singular reading ("pleural effusions?" -> "pleural effusion")."""
    word = term.replace("?", "")
    if term.endswith("s?"):
        return word[:-1]
    if word == "opacities":
        return "opacity"
    return word


Injector = Callable[[Doc, random.Random], tuple[Doc, Doc, str, str] | None]


# --------------------------------------------------------------------------- laterality


def impression_side_swap(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """Swap the side of a finding the findings and impression both place on one side."""
    text = doc.text
    imp, fnd = impression(text), findings(text)
    if imp is None or fnd is None:
        return None
    pairs = []
    for m in _SIDE.finditer(text, imp.body, imp.end):
        nxt = re.match(r"[\s-]*([a-z]+)", text[m.end() : m.end() + 30], re.IGNORECASE)
        if nxt is None or _NOT_PAIRED.match(text[m.end() : m.end() + 30]):
            continue
        word = nxt.group(1).lower()
        same = rf"\b{m.group(1)}[\s-]+{word}\b"
        other = rf"\b{_other_side(m.group(1))}[\s-]+{word}\b"
        in_findings = list(re.finditer(same, text[fnd.body : fnd.end], re.IGNORECASE))
        if in_findings and not re.search(other, text, re.IGNORECASE) and not mentions(text, "bilateral"):
            pairs.append((m, fnd.body + in_findings[0].start(), word))
    if not pairs:
        return None
    m, at_findings, word = rng.choice(pairs)
    if rng.random() < 0.7:
        new = _splice(text, m.start(), m.end(), _other_side(m.group(1)))
        variant = f"impression:{word}"
    else:
        side = text[at_findings : at_findings + len(m.group(1))]
        new = _splice(text, at_findings, at_findings + len(side), _other_side(side))
        variant = f"findings:{word}"
    return doc, replace(doc, text=new), variant, ""


_LOCATION = re.compile(
    r"\b(left|right)\s+(?:lung\s+)?(lower lobe|upper lobe|base|basilar|apex|apical|lung base|hemithorax|"
    r"costophrenic angle|perihilar|midlung)\b",
    re.IGNORECASE,
)
_LOCATED = (
    "atelectasis",
    "opacity",
    "opacities",
    "consolidation",
    "airspace disease",
    "infiltrate",
    "scarring",
    "volume loss",
    "pneumonia",
    "effusion",
)


_PLACE_WORD = re.compile(
    r"\b(lobes?|bases?|basilar|bibasilar|apex|apices|apical|lingula\w*|hemithora\w*|perihilar|midlung|zones?|"
    r"bilateral|lungs)\b",
    re.IGNORECASE,
)


def located_side_added(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """Name in the impression, on the other side, a located finding the findings place on one side."""
    text = doc.text
    imp, fnd = impression(text), findings(text)
    if imp is None or fnd is None or mentions(text, "bilateral"):
        return None
    for start, end in sentence_spans(text, fnd):
        sentence = text[start:end]
        loc = _LOCATION.search(sentence)
        if loc is None or _NEGATION.search(sentence):
            continue
        side = loc.group(1)
        if re.search(rf"\b{_other_side(side)}\b", sentence + text[imp.body : imp.end], re.IGNORECASE):
            continue
        for term in _LOCATED:
            if not mentions(sentence, term):
                continue
            for istart, iend in sentence_spans(text, imp):
                isentence = text[istart:iend]
                hit = re.search(rf"\b{term}\b", isentence, re.IGNORECASE)
                if hit is None or _SIDE.search(isentence) or _PLACE_WORD.search(isentence):
                    continue
                if _NEGATION.search(isentence[: hit.start()]):
                    continue
                place = loc.group(2).lower()
                adjective = {"base": "basilar", "lung base": "basilar", "apex": "apical"}.get(place, place)
                other = _other_side(side).lower()
                if place in ("lower lobe", "upper lobe", "hemithorax", "costophrenic angle") and rng.random() < 0.5:
                    phrase = f" in the {other} {place}"
                    at = istart + hit.end()
                    variant = f"after:{place}"
                else:
                    words = f"{other} {adjective} "
                    at = istart + hit.start()
                    # Before a leading adjective ("Mild atelectasis" -> "Mild right basilar atelectasis").
                    phrase = words
                    variant = f"before:{adjective}"
                    if at == istart:
                        phrase = _match_case(words, isentence)
                        return doc, replace(doc, text=_splice(text, at, at + 1, phrase + text[at].lower())), variant, ""
                return doc, replace(doc, text=_splice(text, at, at, phrase)), variant, ""
            # The impression already places it: its side word turns to the other side.
            for istart, iend in sentence_spans(text, imp):
                isentence = text[istart:iend]
                iloc = _LOCATION.search(isentence)
                if iloc is None or iloc.group(1).lower() != side.lower() or not mentions(isentence, term):
                    continue
                at = istart + iloc.start(1)
                return doc, replace(doc, text=_splice(text, at, at + len(side), _other_side(iloc.group(1)))), "swap", ""
    return None


_ORDER_SIDE = re.compile(
    r"\b(?:left|right)\s+(?:\w+\s+)?(?:knee|ankle|hip|shoulder|wrist|elbow|foot|hand|breast|kidney|leg|arm|"
    r"femur|humerus|thigh|forearm|ovary|testicle|extremity)\b",
    re.IGNORECASE,
)


def order_side_swap(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The order's procedure text names the side the report does not describe."""
    if doc.body_region == "chest" or not _ORDER_SIDE.search(doc.procedure_text):
        return None
    sides = _SIDE.findall(doc.procedure_text)
    if len({s.lower() for s in sides}) != 1 or mentions(doc.procedure_text, "bilateral"):
        return None
    side = sides[0]
    if not mentions(doc.text, side) or mentions(doc.text, _other_side(side)) or mentions(doc.text, "bilateral"):
        return None
    new = _SIDE.sub(lambda m: _other_side(m.group(1)), doc.procedure_text)
    return doc, replace(doc, procedure_text=new), "procedure_text", ""


# --------------------------------------------------------------------------- contradiction

_DENIAL = re.compile(
    r"\b(?P<no>[Nn]o)\s+(?P<mid>(?:evidence of |signs of |definite |focal |acute |visible |significant |"
    r"large |obvious |displaced )*)(?P<term>{term})\b"
)


def _single_item(text: str, at: int) -> bool:
    """The denial names one finding: the rest of its sentence lists nothing else ("No pneumothorax." not "No pneumothorax or effusion.")."""
    tail = re.match(r"[^.;]*", text[at:])
    return tail is not None and not re.search(r",|\bor\b|\band\b|/|\bnor\b", tail.group(0))


_MASS_NOUNS = {
    "edema",
    "atelectasis",
    "cardiomegaly",
    "hydronephrosis",
    "consolidation",
    "lymphadenopathy",
    "scoliosis",
}


def negation_dropped(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """A finding denied twice: one denial loses its "no" (dropped word) or turns into a small positive."""
    text = doc.text
    said = _SENTENCE.findall(text)  # once: the same for every term
    for term in rng.sample(SIGNIFICANT, len(SIGNIFICANT)):
        pattern = re.compile(_DENIAL.pattern.format(term=term))
        denials = [m for m in pattern.finditer(text) if _single_item(text, m.end())]
        if not denials:
            continue
        denying = [x for x in said if re.search(rf"\b(no|without)\b[^;]*\b{term}\b", x, re.I)]
        if len(denying) < 2 or any(affirmed(x, term) for x in said):
            continue
        m = rng.choice(denials)
        form = rng.choice(("drop", "positive"))
        if form == "positive":
            form = "mild" if _singular(term).split()[-1] in _MASS_NOUNS else "small"
        start_of_sentence = m.start() == 0 or text[: m.start()].rstrip(" ,\t")[-1:] in ("", ".", ":", "\n")
        if form == "drop":
            if start_of_sentence:
                replacement = _match_case(m.group("mid") + m.group("term"), "X")
                replacement = replacement[:1].upper() + replacement[1:]
            else:
                replacement = m.group("mid") + m.group("term")
        else:
            found = m.group("term").lower()
            plural = found.endswith("s") and not found.endswith(("sis", "ax", "ss"))
            article = "" if plural or form == "mild" else "a "
            lead = f"{article}{form} "
            replacement = lead + m.group("term")
            if start_of_sentence:
                replacement = replacement[:1].upper() + replacement[1:]
        new = _splice(text, m.start(), m.end(), replacement)
        return doc, replace(doc, text=new), f"{form}:{_singular(term)}", ""
    return None


def _append_to_section(text: str, section: Section, sentence: str) -> str:
    """Add a sentence (or numbered item) at the end of a section's body, in the section's own style."""
    body = text[section.body : section.end]
    stripped = body.rstrip(" ,\n\t")
    numbers = [int(n) for n in re.findall(r"(?:^|[\s,])(\d{1,2})\.\s+[A-Za-z]", body)]
    joiner = "\n" if "\n" in stripped else (" " if not body.lstrip().startswith(",") else ",")
    if numbers:
        item = f"{max(numbers) + 1}. {sentence}"
        addition = (joiner if joiner != " " else " ") + item
    else:
        addition = " " + sentence
    if stripped and stripped[-1] not in ".!?":
        addition = "." + addition
    cut = section.body + len(stripped)
    return text[:cut] + addition + text[cut:]


_DENY_FORMS = ("No {t}.", "No evidence of {t}.", "{T} is not seen.", "Negative for {t}.", "There is no {t}.")


def impression_denies_affirmed(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The impression affirms a finding and another item of it denies the same finding."""
    text = doc.text
    imp = impression(text)
    if imp is None:
        return None
    body = text[imp.body : imp.end]
    for term in rng.sample(SIGNIFICANT, len(SIGNIFICANT)):
        if not any(affirmed(s, term) for s in _SENTENCE.findall(body)):
            continue
        if re.search(rf"\b(no|without)\b[^.]*\b{term}\b", text, re.IGNORECASE):
            continue
        word = _singular(term)
        form = rng.choice(_DENY_FORMS)
        sentence = form.format(t=word, T=word[:1].upper() + word[1:])
        return doc, replace(doc, text=_append_to_section(text, imp, sentence)), f"{form[:12]}:{word}", ""
    return None


_PLURAL = re.compile(
    r"\b(?:bilateral\s+(?:\w+\s+)?(?P<bi>pleural effusions?|effusions?|opacities|infiltrates?|nodules?|"
    r"atelectasis|consolidation|airspace disease|hydronephrosis|hernias?)|(?P<pl>pleural effusions|"
    r"nodules|opacities|infiltrates|fractures))\b",
    re.IGNORECASE,
)


def plural_denied(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """A plural or bilateral finding of the findings section is denied in the impression."""
    text = doc.text
    imp, fnd = impression(text), findings(text)
    if imp is None or fnd is None:
        return None
    for start, end in sentence_spans(text, fnd):
        sentence = text[start:end]
        m = _PLURAL.search(sentence)
        if m is None or _NEGATION.search(sentence) or _HEDGE_OR_PAST.search(sentence):
            continue
        found = (m.group("bi") or m.group("pl")).lower()
        word = found[:-1] if found.endswith("s") and not found.endswith(("sis", "ss")) else found
        word = "opacity" if word == "opacitie" else word
        if re.search(rf"\b(no|without)\b[^.]*\b{word}", text, re.IGNORECASE):
            continue
        plural = {"opacity": "opacities", "atelectasis": "atelectasis", "consolidation": "consolidation"}.get(
            word, word if word in ("airspace disease", "hydronephrosis") else word + "s"
        )
        forms = ["No {t}.", "No {p}.", "No evidence of {t}."] + (["No bilateral {p}."] if m.group("bi") else [])
        form = rng.choice(forms)
        sentence_new = form.format(t=word, p=plural)
        return doc, replace(doc, text=_append_to_section(text, imp, sentence_new)), f"{form[:10]}:{word}", ""
    return None


_NORMAL_IMPRESSIONS = {
    "chest": (
        "No acute cardiopulmonary abnormality.",
        "Normal chest radiograph.",
        "No acute cardiopulmonary process.",
        "Negative chest.",
    ),
    "": ("Unremarkable examination.", "Normal study.", "No acute abnormality.", "Negative examination."),
}


def normal_impression(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The impression over an affirmed significant finding is replaced by a normal one."""
    text = doc.text
    imp, fnd = impression(text), findings(text)
    if imp is None or fnd is None:
        return None
    strong = (
        "pneumothorax",
        "pleural effusions?",
        "consolidation",
        "pneumonia",
        "mass",
        "fractures?",
        "cardiomegaly",
        "pulmonary edema",
        "hydronephrosis",
        "hemorrhage",
        "lymphadenopathy",
    )
    found = [t for t in strong for s in _SENTENCE.findall(text[fnd.body : fnd.end]) if affirmed(s, t)]
    if not found:
        return None
    choices = _NORMAL_IMPRESSIONS["chest" if doc.body_region == "chest" else ""]
    normal = rng.choice(choices)
    body = text[imp.body : imp.end]
    lead = body[: len(body) - len(body.lstrip(" ,\n\t"))]
    tail = body[len(body.rstrip(" ,\n\t")) :]
    new = text[: imp.body] + lead + normal + tail + text[imp.end :]
    return doc, replace(doc, text=new), f"{normal[:20]}:{_singular(found[0])}", ""


# --------------------------------------------------------------------------- completeness


def impression_removed(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """Delete the impression section, or leave its heading with nothing under it."""
    text = doc.text
    imp = impression(text)
    if imp is None or len(text[: imp.start].strip()) < 40:
        return None
    if any(s.name in _IMPRESSION_NAMES and s is not imp and s.start != imp.start for s in sections(text)):
        return None
    if rng.random() < 0.6:
        new = text[: imp.start].rstrip(" ,\n\t") + text[imp.end :]
        return doc, replace(doc, text=new), "deleted", ""
    body = text[imp.body : imp.end]
    trailing = body[len(body.rstrip(" ,\n\t")) :]  # the separator before the next heading stays
    new = text[: imp.body] + trailing + text[imp.end :]
    return doc, replace(doc, text=new), "empty", ""


_MEASURE = re.compile(r"\b\d+(?:\.\d+)?(?=\s*(?:cm|mm)\b)")
_BLANKS = ("___", "***", "[ ]", "<size>", "__")


def placeholder_left(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """A measurement or the comparison left as a template blank."""
    text = doc.text
    options: list[tuple[int, int, str, str]] = []
    for m in _MEASURE.finditer(text):
        options.append((m.start(), m.end(), rng.choice(_BLANKS), "measurement"))
    for s in sections(text):
        if s.name.startswith("COMPARISON"):
            body = text[s.body : s.end]
            lead = len(body) - len(body.lstrip(" ,\t"))
            core = body.strip(" ,\n\t")
            if core:
                start = s.body + lead
                options.append((start, start + len(core), rng.choice(("***", "___", "<date>", "[ ]")), "comparison"))
    if not options:
        return None
    start, end, blank, where = rng.choice(options)
    return doc, replace(doc, text=_splice(text, start, end, blank)), f"{where}:{blank}", ""


_CUT_AFTER = ("of", "the", "and", "with", "to", "in", "for", "a", "is", "are", "at", "which", "measuring")


def dictation_cut(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The report ends mid-sentence, after a word no sentence ends with."""
    text = doc.text.rstrip()
    last = list(_SENTENCE.finditer(text))
    if not last:
        return None
    sentence = last[-1]
    if sentence.end() != len(text):
        return None
    words = list(re.finditer(r"[A-Za-z]+", sentence.group(0)))
    cuts = [w for w in words[2:-1] if w.group(0).lower() in _CUT_AFTER]
    if not cuts or len(words) < 5:
        return None
    w = rng.choice(cuts)
    new = text[: sentence.start() + w.end()]
    return doc, replace(doc, text=new), f"after:{w.group(0).lower()}", ""


_BIRADS = re.compile(
    r"[ ,(]*\b(?:ACR\s+)?BI-?RADS\b(?:\s+(?:assessment|category|classification))*\s*[:=-]?\s*(?:category\s*)?"
    r"[0-6][a-c]?\)?(?:\s*[-:,]\s*(?:negative|benign|probably benign|suspicious|highly suggestive of malignancy|"
    r"incomplete|known malignancy)(?:\s+findings?)?)?",
    re.IGNORECASE,
)


def birads_dropped(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """A mammogram loses every BI-RADS category statement."""
    if doc.modality != "MG" and not mentions(doc.text, "mammogra\\w*"):
        return None
    if not _BIRADS.search(doc.text):
        return None
    new = _BIRADS.sub("", doc.text)
    if re.search(r"BI-?RADS|category\s*[0-6]", new, re.IGNORECASE):
        return None
    return doc, replace(doc, text=new), "removed", ""


# --------------------------------------------------------------------------- communication

_COMMUNICATED = re.compile(
    r"\b(discussed|communicated|called|notified|paged|informed|telephoned|spoke|conveyed|relayed)\b", re.IGNORECASE
)
#: A critical finding already known (stable, residual, expected after surgery) is not a new result to call.
_KNOWN = re.compile(
    r"\b(stable|residual|unchanged|known|again|persistent|persists|no change|attributed|postoperative|"
    r"expected|decreas\w*|improv\w*|smaller|resolving)\b",
    re.IGNORECASE,
)
_WHO = ("Dr. Alvarez", "the ordering physician, Dr. Chen", "Dr. Okafor of the emergency department", "Dr. Lindqvist")
_HOW = ("by telephone", "in person", "by phone", "via telephone")


def communication_missing(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """A critical finding with a complete communication statement in the base; none or an incomplete one injected."""
    text = doc.text
    if _COMMUNICATED.search(text):
        return None
    reported = "".join(text[s.body : s.end] for s in (findings(text), impression(text)) if s is not None)
    said = _SENTENCE.findall(reported)
    critical = [t for t in CRITICAL for s in said if affirmed(s, t) and not _KNOWN.search(s)]
    if not critical:
        return None
    when = (doc.exam_at + timedelta(minutes=rng.randint(20, 50))).strftime("%H:%M")
    statement = rng.choice(
        (
            "Findings were discussed with {who} {how} at {when}.",
            "These results were communicated {how} to {who} at {when}.",
            "Critical result called to {who} at {when} {how}, who acknowledged receipt.",
        )
    ).format(who=rng.choice(_WHO), how=rng.choice(_HOW), when=when)
    imp = impression(text) or findings(text)
    base_text = _append_to_section(text, imp, statement) if imp else text.rstrip() + " " + statement
    base = replace(doc, text=base_text)
    if rng.random() < 0.6:
        return base, doc, f"none:{critical[0]}", "communication statement appended"
    incomplete = rng.choice(
        (
            "Findings were discussed with the clinical team.",
            "Results will be communicated.",
            "Dr. Alvarez was notified.",
        )
    )
    injected = _append_to_section(text, imp, incomplete) if imp else text.rstrip() + " " + incomplete
    return base, replace(doc, text=injected), f"incomplete:{critical[0]}", "communication statement appended"


_HEDGED = (
    "Possible {t}, although this may be artifactual. Clinical correlation may be helpful.",
    "Findings could represent {t}; other etiologies cannot be excluded.",
    "Questionable {t}, possibly related to technique.",
    "Cannot exclude {t}. This may possibly represent a normal variant.",
)


def impression_hedged(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The impression's definite statement about a finding becomes hedged throughout."""
    text = doc.text
    imp = impression(text)
    if imp is None:
        return None
    body = text[imp.body : imp.end]
    for term in SIGNIFICANT:
        if any(affirmed(s, term) for s in _SENTENCE.findall(body)):
            word = re.search(rf"\b{term}\b", body, re.IGNORECASE)
            assert word is not None
            form = rng.choice(_HEDGED)
            hedged = form.format(t=word.group(0).lower())
            lead = body[: len(body) - len(body.lstrip(" ,\n\t"))]
            tail = body[len(body.rstrip(" ,\n\t")) :]
            new = text[: imp.body] + lead + hedged + tail + text[imp.end :]
            return doc, replace(doc, text=new), f"{form[:16]}:{word.group(0).lower()}", ""
    return None


# --------------------------------------------------------------------------- comparison

_DATE_FORMATS = ("%m/%d/%Y", "%B %d, %Y", "%Y-%m-%d")
_PRIOR = ("Chest radiograph dated {d}.", "Prior study from {d}.", "{d}.", "Previous examination of {d}.")


def _date(when: datetime, form: str) -> str:
    return when.strftime(form).replace(" 0", " ")


def comparison_after_exam(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The base cites a prior dated before the exam; the copy dates it after the exam."""
    text = doc.text
    comparison = next((s for s in sections(text) if s.name.startswith("COMPARISON")), None)
    form = rng.choice(_DATE_FORMATS)
    prior = _PRIOR[0] if doc.body_region == "chest" and rng.random() < 0.5 else rng.choice(_PRIOR[1:])
    before = prior.format(d=_date(doc.exam_at - timedelta(days=rng.randint(30, 900)), form))
    after = prior.format(d=_date(doc.exam_at + timedelta(days=rng.randint(2, 200)), form))
    if comparison is not None:
        body = text[comparison.body : comparison.end]
        lead = body[: len(body) - len(body.lstrip(" ,\t"))] or " "
        tail = body[len(body.rstrip(" ,\n\t")) :]

        def make(line: str) -> str:
            return text[: comparison.body] + lead + line + tail + text[comparison.end :]

        how = "comparison rewritten with an earlier date"
    else:
        fnd = findings(text)
        if fnd is None:
            return None
        sep = "\n" if "\n" in text else " "

        def make(line: str) -> str:
            return text[: fnd.start] + f"COMPARISON: {line}{sep}" + text[fnd.start :].lstrip(" ,")

        how = "comparison inserted with an earlier date"
    return replace(doc, text=make(before)), replace(doc, text=make(after)), f"{form}", how


def comparison_removed(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The comparison section is deleted."""
    text = doc.text
    comparison = next((s for s in sections(text) if s.name.startswith("COMPARISON")), None)
    if comparison is None or comparison.start == 0:
        return None
    new = (
        text[: comparison.start] + text[comparison.end :].lstrip(" ,")
        if text[comparison.start - 1 : comparison.start] == "\n"
        else text[: comparison.start] + text[comparison.end :]
    )
    return doc, replace(doc, text=new), "deleted", ""


# --------------------------------------------------------------------------- coding

_CONTRAST_PHRASES = {
    "without": ("without intravenous contrast", "without contrast"),
    "with": ("with intravenous contrast", "with contrast", "with IV contrast", "following intravenous contrast"),
    "adjective": ("contrast-enhanced", "contrast enhanced", "IV contrast-enhanced"),
}
_CONTRAST_FIND = re.compile(
    r"\b(without (?:the use of )?(?:intravenous |IV |oral and intravenous )?contrast|non-?contrast(?:ed)?|"
    r"with(?: and without)? (?:intravenous |IV |oral and intravenous )?contrast)\b",
    re.IGNORECASE,
)


def contrast_mismatch(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """Bill the family's code for another contrast, or state another contrast under the same code."""
    if doc.contrast not in ("without", "with", "without_then_with") or not doc.procedure_code:
        return None
    others = [code for contrast, code in doc.contrast_codes if contrast != doc.contrast and code]
    mentions_found = list(_CONTRAST_FIND.finditer(doc.text))
    if others and (rng.random() < 0.5 or not mentions_found or doc.contrast == "without_then_with"):
        code = rng.choice(others)
        return doc, replace(doc, procedure_code=code), f"code:{doc.procedure_code}->{code}", ""
    if not mentions_found or doc.contrast == "without_then_with":
        return None
    target = "with" if doc.contrast == "without" else "without"
    phrase = rng.choice(_CONTRAST_PHRASES[target])
    adjective = rng.choice(_CONTRAST_PHRASES["adjective"])

    def swap(m: re.Match[str]) -> str:
        found = m.group(0)
        return _match_case(adjective if found.lower().startswith("non") else phrase, found)

    new = _CONTRAST_FIND.sub(swap, doc.text)
    return doc, replace(doc, text=new), f"text:{target}", ""


#: Chest radiograph codes by view count (issue 14): code -> views.
CHEST_VIEWS = {"71045": 1, "71046": 2, "71047": 3, "71048": 4}
_VIEW_TEXT = {
    1: ("Single frontal view of the chest.", "Portable AP view of the chest.", "One view of the chest (AP upright)."),
    2: ("PA and lateral views of the chest.", "Frontal and lateral views of the chest.", "Two views of the chest."),
    3: ("PA, lateral and apical lordotic views of the chest.", "Three views of the chest."),
    4: ("Four views of the chest.", "PA, lateral and bilateral oblique views of the chest."),
}


def view_count_mismatch(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The base documents the views its chest code implies; the copy bills or documents another count."""
    views = CHEST_VIEWS.get(doc.procedure_code)
    if views is None or re.search(r"\bTECHNIQUE\b|\bviews?\b", doc.text, re.IGNORECASE):
        return None
    sep = "\n" if "\n" in doc.text else " "
    fnd = findings(doc.text)
    at = fnd.start if fnd is not None else 0

    def with_technique(line: str) -> str:
        return doc.text[:at] + f"TECHNIQUE: {line}{sep}" + doc.text[at:]

    base = replace(doc, text=with_technique(rng.choice(_VIEW_TEXT[views])))
    other = rng.choice([n for n in _VIEW_TEXT if n != views and abs(n - views) <= 2])
    if rng.random() < 0.5:
        code = next(c for c, n in CHEST_VIEWS.items() if n == other)
        return base, replace(base, procedure_code=code), f"code:{views}->{other}", "technique line added"
    injected = replace(doc, text=with_technique(rng.choice(_VIEW_TEXT[other])))
    return base, injected, f"text:{views}->{other}", "technique line added"


#: A few diagnostic CPT codes by (modality, body region): the wrong codes a coder could pick.
REGION_CODES = {
    ("CT", "head"): "70450",
    ("CT", "chest"): "71250",
    ("CT", "abdomen_pelvis"): "74176",
    ("CT", "spine_cervical"): "72125",
    ("CT", "spine_lumbar"): "72131",
    ("MR", "head"): "70551",
    ("MR", "spine_cervical"): "72141",
    ("MR", "spine_lumbar"): "72148",
    ("MR", "lower_extremity_joint"): "73721",
    ("US", "abdomen"): "76700",
    ("US", "scrotum"): "76870",
    ("XR", "chest"): "71046",
    ("XR", "lower_extremity_joint"): "73560",
}


def region_code_mismatch(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """Bill another region's code of the same modality, or another modality's code for the same region."""
    if not doc.procedure_code or not doc.modality or not doc.body_region:
        return None
    same_modality = [c for (m, r), c in REGION_CODES.items() if m == doc.modality and r != doc.body_region]
    same_region = [c for (m, r), c in REGION_CODES.items() if r == doc.body_region and m != doc.modality]
    options = [("region", c) for c in same_modality] + [("modality", c) for c in same_region]
    if not options:
        return None
    kind, code = rng.choice(options)
    return doc, replace(doc, procedure_code=code), f"{kind}:{doc.procedure_code}->{code}", ""


# --------------------------------------------------------------------------- consistency

_FEMALE = r"uter(?:us|ine)|ovar(?:y|ies|ian)|endometri\w*|adnexa\w*|cervix"
_MALE = r"prostat\w*|testic\w*|test(?:is|es)|scrot\w*|seminal vesicles?|epididym\w*"
_TEMPLATE_ORGAN = {
    "F": ("The prostate gland is normal in size.", "The prostate and seminal vesicles are unremarkable."),
    "M": ("The uterus and ovaries are unremarkable.", "The uterus is normal in size."),
}


def sex_organ_mismatch(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """Flip the sex on a report describing one sex's organs, or leave the other sex's template sentence in."""
    text = doc.text
    female, male = re.search(rf"\b({_FEMALE})", text, re.I), re.search(rf"\b({_MALE})", text, re.I)
    if doc.sex_from == "text" and doc.sex in ("F", "M") and bool(female) != bool(male):
        organ = (female or male).group(1).lower()  # type: ignore[union-attr]
        if (doc.sex == "F") == bool(female) and not re.search(r"hysterectom|orchiectom|oophorectom", text, re.I):
            flipped = "M" if doc.sex == "F" else "F"
            return doc, replace(doc, sex=flipped), f"sex:{organ}", ""
    if doc.sex in ("F", "M") and doc.body_region in ("abdomen_pelvis", "pelvis") and not (female or male):
        fnd = findings(text)
        if fnd is None:
            return None
        sentence = rng.choice(_TEMPLATE_ORGAN[doc.sex])
        return doc, replace(doc, text=_append_to_section(text, fnd, sentence)), f"organ:{doc.sex}", ""
    return None


# --------------------------------------------------------------------------- alignment


def _renumber(removed: int) -> Callable[[re.Match[str]], str]:
    """A re.sub callback moving items numbered after ``removed`` up by one."""

    def renumber(m: re.Match[str]) -> str:
        number = int(m.group(1))
        return f"{number - 1}." if number > removed else m.group(0)

    return renumber


def finding_left_out(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """Delete the one impression sentence naming a significant finding the findings affirm."""
    text = doc.text
    imp, fnd = impression(text), findings(text)
    if imp is None or fnd is None:
        return None
    spans = sentence_spans(text, imp)
    if len(spans) < 2:
        return None
    for term in (
        "nodules?",
        "mass",
        "fractures?",
        "pneumothorax",
        "pleural effusions?",
        "consolidation",
        "pneumonia",
        "hydronephrosis",
        "hernia",
        "lymphadenopathy",
    ):
        if not any(affirmed(s, term) for s in _SENTENCE.findall(text[fnd.body : fnd.end])):
            continue
        naming = [(a, b) for a, b in spans if mentions(text[a:b], term)]
        if len(naming) != 1 or not affirmed(text[naming[0][0] : naming[0][1]], term):
            continue
        a, b = naming[0]
        remainder = text[imp.body : a] + text[b : imp.end]
        if not re.search(r"[A-Za-z]{3}", remainder):
            continue
        number = re.search(r"(\d{1,2})\.\s*$", text[imp.body : a])
        if number is not None:
            # A numbered item goes whole (its number too); later items move up one, as an editor renumbers.
            removed = int(number.group(1))
            a = imp.body + number.start()
            after = re.sub(r"(?<![\d.])(\d{1,2})\.(?=\s*[A-Za-z])", _renumber(removed), text[b : imp.end])
            rest = after.lstrip(" ") + text[imp.end :]
        else:
            rest = text[b:].lstrip(" ")
        if text[:a].endswith(","):
            rest = rest.lstrip(",")
        new = (text[:a] + rest) if rest.strip() else text[:a].rstrip()
        return doc, replace(doc, text=new), f"dropped:{_singular(term)}", ""
    return None


#: Impression-only findings and the words whose presence anywhere in the report means it already speaks of them.
_NEW_FINDINGS = {
    "chest": (
        ("Small hiatal hernia.", "hernia|hiatal|retrocardiac|esophag"),
        ("Old healed left rib fracture.", "rib|fracture|osseous|bon[ey]|skelet|thora(?:x|cic) cage"),
        ("Right upper lobe nodule.", "nodul|granulom|mass|lungs? (?:are |is )?(?:clear|normal)|opacit|lobe"),
    ),
    "": (
        ("Small hiatal hernia.", "hernia|hiatal|esophag|stomach|gastr"),
        ("Mild right hydronephrosis.", "hydronephrosis|kidney|renal|collecting|urin"),
        ("A 6 mm nodule in the right lung base.", "nodul|lung|thora|chest|pulmonar"),
    ),
}
_NORMAL_STATEMENT = re.compile(
    r"\b(normal|unremarkable|negative|no acute|without acute|no active|clear|stable|no evidence)\b", re.I
)


def impression_only_finding(doc: Doc, rng: random.Random) -> tuple[Doc, Doc, str, str] | None:
    """The impression names a finding the findings section never mentions."""
    text = doc.text
    imp, fnd = impression(text), findings(text)
    if imp is None or fnd is None:
        return None
    if _NORMAL_STATEMENT.search(text[imp.body : imp.end]):
        return None  # a new finding after "no acute disease" would also be a contradiction, a second defect
    if doc.body_region not in ("chest", "abdomen", "abdomen_pelvis"):
        return None  # a finding of another region would be out of place, not merely missing from the findings
    choices = _NEW_FINDINGS["chest" if doc.body_region == "chest" else ""]
    sentence, key = rng.choice(choices)
    if re.search(rf"\b({key})", text, re.IGNORECASE):
        return None
    return doc, replace(doc, text=_append_to_section(text, imp, sentence)), sentence[:24], ""


# --------------------------------------------------------------------------- the set

INJECTORS: dict[str, Injector] = {
    "impression_side_swap": impression_side_swap,
    "located_side_added": located_side_added,
    "order_side_swap": order_side_swap,
    "negation_dropped": negation_dropped,
    "impression_denies_affirmed": impression_denies_affirmed,
    "plural_denied": plural_denied,
    "normal_impression": normal_impression,
    "impression_removed": impression_removed,
    "placeholder_left": placeholder_left,
    "dictation_cut": dictation_cut,
    "birads_dropped": birads_dropped,
    "communication_missing": communication_missing,
    "impression_hedged": impression_hedged,
    "comparison_after_exam": comparison_after_exam,
    "comparison_removed": comparison_removed,
    "contrast_mismatch": contrast_mismatch,
    "view_count_mismatch": view_count_mismatch,
    "region_code_mismatch": region_code_mismatch,
    "sex_organ_mismatch": sex_organ_mismatch,
    "finding_left_out": finding_left_out,
    "impression_only_finding": impression_only_finding,
}


def _interleaved(docs: Sequence[Doc], rng: random.Random) -> Iterator[Doc]:
    """MTSamples first in a shuffled order (they are few and multi-modality), then the shuffled chest X-rays."""
    other = [d for d in docs if d.source != "indiana"]
    chest = [d for d in docs if d.source == "indiana"]
    rng.shuffle(other)
    rng.shuffle(chest)
    # Take MTSamples at one in four so that chest X-rays do not crowd them out of small per-injection sets.
    i = j = 0
    while i < len(other) or j < len(chest):
        if i < len(other) and (j >= len(chest) or (i + j) % 4 == 0):
            yield other[i]
            i += 1
        else:
            yield chest[j]
            j += 1


def build_independent_cases(docs: Sequence[Doc], *, per_injection: int = 300, seed: int = SEED) -> list[Case]:
    """Up to ``per_injection`` labeled cases per injection; the same docs and seed give the same set."""
    cases: list[Case] = []
    for injection, inject in INJECTORS.items():
        rng = random.Random(f"{seed}:{injection}")
        made = 0
        for doc in _interleaved(docs, rng):
            if made >= per_injection:
                break
            result = inject(doc, rng)
            if result is None:
                continue
            base, injected, variant, prepared = result
            if (base.text, base.sex, base.procedure_code, base.procedure_text) == (
                injected.text,
                injected.sex,
                injected.procedure_code,
                injected.procedure_text,
            ):
                continue
            cases.append(
                Case(
                    id=f"ind:{injection}:{doc.id}",
                    injection=injection,
                    category=INJECTIONS[injection],
                    base=base,
                    injected=injected,
                    variant=variant,
                    prepared=prepared,
                )
            )
            made += 1
    return cases
