"""The labeled evaluation set: real reports from ../shared/corpus and copies with one defect each.

Nothing here imports ``listener``: the injector must not know how the rules
work. It reads the corpus at run time (the texts are never copied into the
repository), selects base reports by plain text rules written here, and
injects each defect as natural text a radiologist or a speech recogniser
could have produced (a swapped side word, a negation rewritten as a positive
sentence, a deleted section, a moved date, a template blank left in). No
marker, tag or unusual character is added, so no rule can find an artifact
of the injector instead of the defect.

Where a defect needs something the corpus rarely has, the base is *prepared*
first and the preparation is recorded in ``Case.prepared`` (and counted in
the bench output):

* communication: the corpus has almost no reports with both an affirmed
  critical finding and a radiologist's communication statement. A report
  with an affirmed critical finding and no such statement gets one appended
  (who, when, how); the injected copy is the report without it, that is the
  real report as the corpus has it.
* comparison: corpus dates are de-identified ("XXXX") or absent. The prepared
  base cites the prior with a date before the exam; the injected copy moves
  that date after the exam.
* coding: the corpus has no procedure codes. The base gets the CPT code that
  matches the contrast its own wording states (the caller supplies the code
  lookup from mappings/procedures.yaml); the injected copy rewrites every
  contrast statement to another contrast in the same grammatical role,
  keeping the code, or keeps the text and bills the family's code for
  another contrast.
* view count: the corpus has no procedure codes, and an Indiana row's code
  comes from its archived image count, which need not be what the report
  states. A radiograph whose report states its views ("Frontal and lateral
  views of the chest", "Three views of the right ankle") gets the code of its
  view family for the stated count (the caller supplies the family's codes
  and view ranges from mappings/procedures.yaml); the injected copy bills
  another code of the family, or restates the views as another count and
  keeps the code.

Everything random uses ``random.Random(seed)``: the same seed gives the same set.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

SEED = 20261120

#: Categories the injections are labeled with (a subset of docs/qa-rules.md).
INJECTIONS: dict[str, str] = {
    "laterality_swap": "laterality",
    "negation_flip": "contradiction",
    "impression_deleted": "completeness",
    "communication_removed": "communication",
    "birads_removed": "completeness",
    "contrast_changed": "coding",
    "view_count_changed": "coding",
    "comparison_after_exam": "comparison",
    "wrong_sex_organ": "consistency",
    "placeholder": "completeness",
}

#: (modality, body region, contrast, views) -> a CPT code, or "" when none fits.
CodeLookup = Callable[[str, str, str, int | None], str]
#: A radiograph code and its view range: (code, least views, most views or None for "or more").
ViewCode = tuple[str, int, int | None]
#: view family (mappings/procedures.yaml ``view_family``: "chest", "knee", ...) -> the family's codes.
ViewCodes = Callable[[str], tuple[ViewCode, ...]]


@dataclass(frozen=True, slots=True)
class Doc:
    """One report as plain data: what evaluate.py needs to build a Report."""

    id: str  # "indiana:123", "mtsamples:1486" (corpus row ids, no patient data)
    source: str
    text: str
    procedure_code: str = ""
    procedure_text: str = ""
    modality: str = ""
    body_region: str = ""
    contrast: str = ""  # what the report's exam line states: without | with | without_then_with | ""
    #: CPT codes of the same modality and region for each contrast (CT/MR only): the code a coder could have picked.
    contrast_codes: tuple[tuple[str, str], ...] = ()
    #: The radiograph view family the exam belongs to ("chest", "ankle", ...; XR only) and its codes.
    view_family: str = ""
    view_codes: tuple[ViewCode, ...] = ()
    sex: str = ""  # "F" or "M"
    sex_from: str = ""  # "text" (demographics or anatomy in the report) or "random"
    exam_at: datetime = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Case:
    """One labeled injection: the base it was made from and the defective copy."""

    id: str
    injection: str  # a key of INJECTIONS
    category: str
    base: Doc
    injected: Doc
    variant: str = ""  # which form of the injection was used
    prepared: str = ""  # how the base was prepared, if at all ("" = the corpus text as is)


# --------------------------------------------------------------------------- corpus


def load_corpus(
    corpus: Path, code_for: CodeLookup, *, seed: int = SEED, view_codes: ViewCodes | None = None
) -> list[Doc]:
    """Every usable report of the shared corpus as a Doc (Indiana chest X-rays, then MTSamples).

    Args:
        corpus: ../shared/corpus (the directory holding ``reports/``).
        code_for: CPT lookup (modality, region, contrast, views) -> code or "".
        seed: the seed for exam times and for the sex of patients whose report does not say.
        view_codes: radiograph codes per view family; without it no Doc gets a view family.
    """
    rng = random.Random(seed)
    docs = list(_indiana(corpus / "reports" / "indiana-openi", code_for, rng))
    docs.extend(_mtsamples(corpus / "reports" / "mtsamples-radiology" / "mtsamples_radiology.csv", code_for, rng))
    if view_codes is not None:
        docs = [_with_view_family(doc, view_codes) for doc in docs]
    return docs


def _exam_time(rng: random.Random) -> datetime:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return start + timedelta(days=rng.randrange(0, 1050), minutes=rng.randrange(0, 24 * 60))


def _indiana(folder: Path, code_for: CodeLookup, rng: random.Random) -> Iterator[Doc]:
    images: Counter[str] = Counter()
    with open(folder / "indiana_projections.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            images[row["uid"]] += 1
    with open(folder / "indiana_reports.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parts = [
                f"{heading}: {row[column].strip()}"
                for heading, column in (
                    ("INDICATION", "indication"),
                    ("COMPARISON", "comparison"),
                    ("FINDINGS", "findings"),
                    ("IMPRESSION", "impression"),
                )
                if row[column].strip()
            ]
            text = "\n".join(parts)
            if not text:
                continue  # 25 rows hold no text at all: an export gap, not a report anyone signed
            views = images.get(row["uid"]) or None
            sex, sex_from = _sex_of(text, rng)
            yield Doc(
                id=f"indiana:{row['uid']}",
                source="indiana",
                text=text,
                procedure_code=code_for("XR", "chest", "none", views),
                procedure_text=row["image"].strip(),
                modality="XR",
                body_region="chest",
                sex=sex,
                sex_from=sex_from,
                exam_at=_exam_time(rng),
            )


#: sample_name / exam-line words -> our modality (first match wins).
_MODALITY = (
    (re.compile(r"\bPET\b", re.I), "PT"),
    (re.compile(r"mammogra|FFDM", re.I), "MG"),
    (re.compile(r"\bMRI?\b|\bMRA\b|magnetic", re.I), "MR"),
    (re.compile(r"\bCTA?\b|computed tomograph|CT-guided", re.I), "CT"),
    (re.compile(r"ultrasound|sonogra|duplex|doppler|echocardiogra", re.I), "US"),
    (re.compile(r"nuclear|radionuclide|myoview|thallium|scintig|bone scan", re.I), "NM"),
    (re.compile(r"barium|swallow|fluoro|urogram|esophagram", re.I), "FL"),
    (re.compile(r"x-ray|radiograph|\bviews?\b|series|chest PA|skull", re.I), "XR"),
)

#: exam words -> body region (first match wins; order matters: "abdomen and pelvis" before "abdomen").
_REGION = (
    (re.compile(r"abdomen (?:and|&) pelvis|abdomen[^.]{0,40}pelvis|\bKUB\b|stone protocol", re.I), "abdomen_pelvis"),
    (re.compile(r"breast|mammogra", re.I), "breast"),
    (re.compile(r"scrot|testic", re.I), "scrotum"),
    (re.compile(r"cervical spine|c-spine|spinal cord cervical", re.I), "spine_cervical"),
    (re.compile(r"thoracic spine|t-spine", re.I), "spine_thoracic"),
    (re.compile(r"lumbar|l-spine|lumbosacral", re.I), "spine_lumbar"),
    (re.compile(r"orbit/face/neck", re.I), "face_neck"),
    (re.compile(r"facial|maxillofacial", re.I), "face"),
    (re.compile(r"\bhead\b|brain", re.I), "head"),
    (re.compile(r"neck", re.I), "neck"),
    (re.compile(r"chest|thorax|pulmonary angio", re.I), "chest"),
    (re.compile(r"abdom|kidney|renal|liver", re.I), "abdomen"),
    (re.compile(r"pelvi", re.I), "pelvis"),
    (re.compile(r"knee|ankle|hip\b", re.I), "lower_extremity_joint"),
    (re.compile(r"foot|low ex", re.I), "lower_extremity"),
    (re.compile(r"shoulder|wrist|elbow|up ext joint", re.I), "upper_extremity_joint"),
)

_W_WO = re.compile(r"with and without|without and with|w\s*&\s*wo|w/wo|pre- and post-?contrast", re.I)
_WITHOUT = re.compile(
    r"without (?:iv |intravenous )?(?:contrast|gadolinium)|w/o contrast|non-?contrast|unenhanced", re.I
)
_WITH = re.compile(r"with (?:iv |intravenous )?contrast|contrast-enhanced|post-?contrast|with gadolinium", re.I)


def exam_contrast(exam: str) -> str:
    """What an exam line says about IV contrast: without | with | without_then_with | ""."""
    if _W_WO.search(exam):
        return "without_then_with"
    without, with_ = bool(_WITHOUT.search(exam)), bool(_WITH.search(exam))
    if without and with_:
        return ""  # "CT abdomen with contrast and CT pelvis without": two exams, no single code
    return "without" if without else "with" if with_ else ""


#: Neurology case histories ("CC: ..., HX: ...") cite several studies: no single exam, no code.
_CASE_HISTORY = re.compile(r"^\s*(?:CC|HX|HPI)\s*:", re.I)


def _text_contrast(text: str) -> str:
    """The contrast every contrast statement of a report agrees on, or "" (none, or they disagree)."""
    kinds = {kind for kind, _, _ in _contrast_spans(text)}
    return kinds.pop() if len(kinds) == 1 else ""


def _mtsamples(path: Path, code_for: CodeLookup, rng: random.Random) -> Iterator[Doc]:
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            text = row["transcription"].strip()
            if not text:
                continue
            exam = _exam_line(text)
            label = f"{row['sample_name']} {exam}"
            modality = next((m for pattern, m in _MODALITY if pattern.search(label)), "")
            region = next((r for pattern, r in _REGION if pattern.search(label)), "")
            contrast = exam_contrast(exam) if modality in ("CT", "MR") else ""
            if modality in ("CT", "MR") and not contrast and not _CASE_HISTORY.match(text):
                contrast = _text_contrast(text)  # no exam line: the technique says it ("obtained without contrast")
            code = ""
            contrast_codes: tuple[tuple[str, str], ...] = ()
            if modality in ("CT", "MR") and contrast:
                code = code_for(modality, region, contrast, None)
                contrast_codes = tuple(
                    (kind, c)
                    for kind in ("without", "with", "without_then_with")
                    if (c := code_for(modality, region, kind, None))
                )
            elif modality in ("XR", "MG", "US") and region:
                code = code_for(modality, region, "none", None)
            sex, sex_from = _sex_of(text, rng)
            yield Doc(
                id=f"mtsamples:{row['note_id']}",
                source="mtsamples",
                text=text,
                procedure_code=code,
                procedure_text=row["sample_name"].strip(),
                modality=modality,
                body_region=region,
                contrast=contrast,
                contrast_codes=contrast_codes,
                sex=sex,
                sex_from=sex_from,
                exam_at=_exam_time(rng),
            )


_EXAM_HEADING = re.compile(
    r"^\s*(?:EXAM(?:INATION)?|PROCEDURE)\s*:[\s,]*(?P<exam>[^,]*(?:,[^,:]{0,40}(?=,[A-Z ]+:))?)", re.I
)


def _exam_line(text: str) -> str:
    """The exam description at the top of an MTSamples report (its EXAM heading or first line)."""
    match = _EXAM_HEADING.match(text)
    if match:
        return match.group("exam")
    first = re.split(r",[A-Z][A-Z /]+:", text, maxsplit=1)[0]
    return first[:200]


# --------------------------------------------------------------------------- sex

_FEMALE_WORDS = re.compile(r"\b(?:female|woman|girl|lady|she|her|RHF|LHF|mrs|ms)\b", re.I)
_MALE_WORDS = re.compile(r"\b(?:male|man|boy|gentleman|he|his|him|RHM|LHM|mr)\b", re.I)
#: Sex-specific anatomy (ours, for choosing bases; breast is not sex-specific).
MALE_ORGANS = re.compile(
    r"\b(?:prostate|prostatic|testis|testes|testicles?|testicular|scrot(?:um|al)|seminal vesicles?|epididym(?:is|al)|penile|penis)\b",
    re.I,
)
FEMALE_ORGANS = re.compile(
    r"\b(?:uterus|uterine|ovary|ovaries|ovarian|endometri(?:um|al)|fallopian|vagina|vaginal|placenta|placental|myometri(?:um|al))\b",
    re.I,
)


def _sex_of(text: str, rng: random.Random) -> tuple[str, str]:
    """The patient's sex as the report shows it, else a seeded coin (real patients have one)."""
    male_organs, female_organs = len(MALE_ORGANS.findall(text)), len(FEMALE_ORGANS.findall(text))
    if male_organs and not female_organs:
        return "M", "text"
    if female_organs and not male_organs:
        return "F", "text"
    female, male = len(_FEMALE_WORDS.findall(text)), len(_MALE_WORDS.findall(text))
    if female > male:
        return "F", "text"
    if male > female:
        return "M", "text"
    return rng.choice("FM"), "random"


# --------------------------------------------------------------------------- sections (our own)

#: A heading: upper-case words and a colon at a line start or after a separator.
_HEADING = re.compile(r"(?:^|(?<=[.,;\n]))[ \t]*(?P<h>[A-Z][A-Z0-9 /&()-]{1,40}?)[ \t]*:", re.M)
_IMPRESSION_HEADS = {"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "OPINION"}
_FINDINGS_HEADS = {"FINDINGS", "FINDING", "INTERPRETATION", "TECHNIQUE AND FINDINGS", "REPORT", "DESCRIPTION"}
_COMPARISON_HEADS = {"COMPARISON", "COMPARISONS", "COMPARISON EXAM", "COMPARISON EXAMINATION", "COMPARISON STUDIES"}


@dataclass(frozen=True, slots=True)
class Part:
    """A headed part of the text: heading start, body start, body end (offsets)."""

    heading: str
    at: int
    start: int
    end: int


def parts(text: str) -> list[Part]:
    """Headed parts of a report, found by upper-case headings (independent of listener.text)."""
    marks = [(m.start("h"), m.end(), m.group("h").strip()) for m in _HEADING.finditer(text)]
    out = []
    for i, (at, body, heading) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        start = body
        while start < end and text[start] in " \t\n,":
            start += 1
        stop = end
        while stop > start and text[stop - 1] in " \t\n,":
            stop -= 1
        out.append(Part(heading, at, start, stop))
    return out


def _parts_named(text: str, names: set[str]) -> list[Part]:
    return [p for p in parts(text) if p.heading.upper() in names]


#: A sentence ends at a period (not in a number or after a title like "Dr."), or a line end.
_SENTENCE_END = re.compile(r"(?<!\bDr)(?<!\bMr)(?<!\bMs)(?<!\bMrs)(?<!\bSt)\.(?!\d)|\n")
#: MTSamples joins lines with "," and no space (",The lungs", ",2.  No effusion"): a break there too.
_JOINED_LINE = re.compile(r",(?=[A-Z0-9])")


def sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of sentences in text[start:end] (our own splitter, not listener.text's)."""
    cuts = [start]
    for pattern in (_SENTENCE_END, _JOINED_LINE):
        for match in pattern.finditer(text, start, end):
            cuts.append(match.end() if match.group(0) == "." else match.start())
    cuts = sorted(set(cuts)) + [end]
    out = []
    for s, e in zip(cuts, cuts[1:], strict=False):
        while s < e and text[s] in " \t\n,":
            s += 1
        while e > s and text[e - 1] in " \t\n,":
            e -= 1
        if e - s > 2:
            out.append((s, e))
    return out


def _body_parts(doc: Doc) -> list[Part]:
    """Findings and impression parts (or the whole text when it has no such heading)."""
    found = _parts_named(doc.text, _FINDINGS_HEADS | _IMPRESSION_HEADS)
    return found or [Part("", 0, 0, len(doc.text))]


# --------------------------------------------------------------------------- injections

_PAIRED = (
    r"lung|lobe|hemithorax|pleural|lung base|base|apex|apical|hilum|hilar|perihilar|costophrenic|hemidiaphragm"
    r"|kidney|renal|ureter|breast|axilla|axillary|hip|knee|shoulder|ankle|foot|wrist|hand|elbow|ovary|adnexa|adnexal"
    r"|testicle|testis|hemiscrotum|clavicle|rib|ribs|humerus|femur|femoral|tibia|fibula|extremity|arm|leg|carotid"
    r"|parotid|vertebral|frontal|parietal|temporal|occipital|hemisphere|thalamus|thalamic|cerebellar|basal ganglia"
    r"|maxillary|orbit|orbital|mastoid|chest|chest wall|upper|middle|lower|midlung|mid lung|neck|inguinal|iliac|acetabul\w*"
)
_SIDE_ANATOMY = re.compile(
    rf"\b(?P<side>left|right)\b(?:[ -]sided)?(?P<gap>(?:\s+\w+){{0,2}}?)\s+(?P<anat>{_PAIRED})\b", re.I
)
_NON_PAIRED_AFTER = re.compile(
    r"^\s*(?:ventric\w*|atri\w*|heart|cardiac|heart border|hepatic|lobe of the liver|colon)", re.I
)


def _swap_side(word: str) -> str:
    other = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return other.upper()
    if word[0].isupper():
        return other.capitalize()
    return other


def inject_laterality(doc: Doc, rng: random.Random) -> Case | None:
    """Swap left/right on one paired-anatomy mention in the impression.

    Base rule: the impression names side S for a paired anatomy, the findings
    name the same anatomy on side S, and neither part mentions the other side
    or "bilateral" (so the swapped copy is wrong for certain, not a second lesion).
    """
    imps = _parts_named(doc.text, _IMPRESSION_HEADS)
    finds = _parts_named(doc.text, _FINDINGS_HEADS)
    if len(imps) != 1 or not finds:
        return None
    imp = imps[0]
    imp_text = doc.text[imp.start : imp.end]
    find_text = " ".join(doc.text[p.start : p.end] for p in finds)
    both = imp_text + " " + find_text
    if re.search(r"\b(?:bilateral\w*|both|bibasilar)\b", both, re.I):
        return None
    sides = {s.lower() for s in re.findall(r"\b(left|right)\b", both, re.I)}
    if len(sides) != 1:
        return None
    candidates = []
    for m in _SIDE_ANATOMY.finditer(imp_text):
        if _NON_PAIRED_AFTER.match(imp_text[m.end("side") :]):
            continue
        anat = m.group("anat").lower()
        if re.search(rf"\b{m.group('side')}\b(?:[ -]sided)?(?:\s+\w+){{0,2}}?\s+{re.escape(anat)}\b", find_text, re.I):
            candidates.append(m)
    if not candidates:
        return None
    m = rng.choice(candidates)
    at = imp.start + m.start("side")
    word = m.group("side")
    text = doc.text[:at] + _swap_side(word) + doc.text[at + len(word) :]
    return _case(doc, "laterality_swap", text, variant=f"{word.lower()}->{_swap_side(word).lower()}")


#: Findings whose negation we flip (ours; common radiology findings).
_FINDINGS = (
    "pneumothorax",
    "pleural effusion",
    "pleural effusions",
    "effusion",
    "effusions",
    "consolidation",
    "focal consolidation",
    "airspace disease",
    "focal airspace disease",
    "airspace consolidation",
    "pulmonary edema",
    "edema",
    "infiltrate",
    "infiltrates",
    "pneumonia",
    "fracture",
    "fractures",
    "acute fracture",
    "displaced fracture",
    "rib fracture",
    "rib fractures",
    "mass",
    "nodule",
    "nodules",
    "pulmonary nodule",
    "cardiomegaly",
    "hemorrhage",
    "intracranial hemorrhage",
    "free air",
    "pneumoperitoneum",
    "hydronephrosis",
    "lymphadenopathy",
    "atelectasis",
    "dislocation",
    "mass effect",
    "midline shift",
    "hydrocephalus",
    "acute infarct",
    "aneurysm",
    "thrombus",
    "deep venous thrombosis",
    "appendicitis",
    "bowel obstruction",
    "ascites",
    "splenomegaly",
    "hepatomegaly",
    "cholelithiasis",
    "gallstones",
    "nephrolithiasis",
    "pericardial effusion",
    "aortic dissection",
    "pulmonary embolism",
    "pulmonary emboli",
    "hiatal hernia",
    "pneumomediastinum",
    "subcutaneous emphysema",
    "emphysema",
    "scoliosis",
    "herniation",
    "disc herniation",
    "stenosis",
    "abscess",
    "cyst",
    "cysts",
)
#: Those a "normal" impression cannot sit over (for bases whose only other statement is a normal impression).
_SIGNIFICANT = {
    "pneumothorax",
    "pleural effusion",
    "pleural effusions",
    "effusion",
    "effusions",
    "consolidation",
    "focal consolidation",
    "airspace disease",
    "focal airspace disease",
    "airspace consolidation",
    "pulmonary edema",
    "pneumonia",
    "fracture",
    "fractures",
    "acute fracture",
    "displaced fracture",
    "rib fracture",
    "rib fractures",
    "mass",
    "nodule",
    "pulmonary nodule",
    "hemorrhage",
    "intracranial hemorrhage",
    "free air",
    "pneumoperitoneum",
    "hydronephrosis",
    "dislocation",
    "midline shift",
    "hydrocephalus",
    "acute infarct",
    "aortic dissection",
    "pulmonary embolism",
    "pulmonary emboli",
    "pneumomediastinum",
    "abscess",
    "bowel obstruction",
    "appendicitis",
    "infiltrate",
}
#: Singular findings a radiologist states with an article ("a pneumothorax", "a large pleural effusion").
_COUNTABLE = {
    "pneumothorax",
    "pleural effusion",
    "effusion",
    "mass",
    "nodule",
    "pulmonary nodule",
    "fracture",
    "acute fracture",
    "displaced fracture",
    "rib fracture",
    "dislocation",
    "cyst",
    "abscess",
    "aneurysm",
    "thrombus",
    "hiatal hernia",
    "pericardial effusion",
    "herniation",
    "disc herniation",
    "midline shift",
    "aortic dissection",
    "pulmonary embolism",
    "bowel obstruction",
    "acute infarct",
    "infiltrate",
}
_FINDING_ALT = "|".join(sorted((re.escape(f) for f in _FINDINGS), key=len, reverse=True))
_NEG_LIST = re.compile(
    r"^(?:there (?:is|are) )?no (?:evidence of |definite |visible |radiographic evidence of )?(?P<mod>(?:acute |large |significant |moderate )?)"
    rf"(?P<list>(?:(?:{_FINDING_ALT})(?:,? (?:or|and) |, |$| (?:is|are) (?:seen|identified|present|noted|demonstrated)$))+)\.?$",
    re.I,
)
_NEG_TRAILING = re.compile(
    rf"^(?P<list>(?:{_FINDING_ALT})) (?:is|are) not (?:seen|identified|present|noted|demonstrated)\.?$", re.I
)
_NORMAL_IMPRESSION = re.compile(
    r"^\s*(?:\d\.\s*)?(?:no acute (?:cardiopulmonary |intrathoracic |pulmonary |chest |radiographic |osseous |intracranial )?"
    r"(?:abnormality|abnormalities|disease|process|findings?|pathology)|no active disease|normal (?:chest|study|exam\w*|radiograph\w*)"
    r"|negative (?:chest|study|exam\w*)|unremarkable)",
    re.I,
)


def _plural(term: str) -> bool:
    return term.endswith("s") and not term.endswith(("sis", "us", "ss", "thorax", "ax", "mass"))


def _negated_items(sentence: str) -> tuple[list[str], str]:
    """The findings a "no X, Y or Z" sentence denies, and the modifier it puts on the first ("large")."""
    s = sentence.strip().rstrip(".").strip()
    m = _NEG_LIST.match(s + ".") or _NEG_LIST.match(s)
    if m is None:
        m = _NEG_TRAILING.match(s)
        return ([m.group("list").lower()] if m else []), ""
    raw = re.sub(
        r" (?:is|are) (?:seen|identified|present|noted|demonstrated)$", "", m.group("list").strip(), flags=re.I
    )
    items = [x.strip().lower() for x in re.split(r",? (?:or|and) |, ", raw) if x.strip()]
    return [x for x in items if x in _FINDINGS], m.group("mod").strip().lower()


def inject_negation(doc: Doc, rng: random.Random) -> Case | None:
    """Rewrite one "no X" sentence as a positive sentence stating X.

    Base rule: X is also negated elsewhere in the report (the copy then both
    affirms and denies X), or the sentence is in the findings and the
    impression is a normal statement and X is a significant finding.
    """
    imps = _parts_named(doc.text, _IMPRESSION_HEADS)
    imp_text = " ".join(doc.text[p.start : p.end] for p in imps)
    negated: list[tuple[int, int, list[str], str, bool]] = []  # start, end, items, modifier, in impression
    for part in _body_parts(doc):
        for s, e in sentences(doc.text, part.start, part.end):
            items, mod = _negated_items(doc.text[s:e])
            if items:
                negated.append((s, e, items, mod, part.heading.upper() in _IMPRESSION_HEADS))
    choices = []
    for i, (s, e, items, mod, in_imp) in enumerate(negated):
        for k, item in enumerate(items):
            # "no large effusion" elsewhere does not deny a small one: only an unqualified denial counts.
            elsewhere = any(item in other[2] and not other[3] for j, other in enumerate(negated) if j != i)
            normal = not in_imp and item in _SIGNIFICANT and bool(_NORMAL_IMPRESSION.match(imp_text))
            if elsewhere or normal:
                choices.append((s, e, items, item, mod if k == 0 else ""))
    if not choices:
        return None
    s, e, items, item, mod = rng.choice(choices)
    verb = "are" if _plural(item) else "is"
    stated = f"{mod} {item}" if mod else item
    if not _plural(item) and item in _COUNTABLE:
        stated = (
            "an " if stated[0] in "aeiou" else "a "
        ) + stated  # "There is a pneumothorax", not "There is pneumothorax"
    positive = rng.choice(
        (
            f"There {verb} {stated}.",
            f"{stated[0].upper()}{stated[1:]} {verb} present.",
            f"{stated[0].upper()}{stated[1:]} {verb} seen.",
        )
    )
    rest = [x for x in items if x != item]
    new = positive + (f" No {_join(rest)}." if rest else "")
    ends_with_period = doc.text[s:e].rstrip().endswith(".")
    if not ends_with_period:
        new = new.rstrip(".")
    text = doc.text[:s] + new + doc.text[e:]
    return _case(doc, "negation_flip", text, variant=f"{item} ({'list' if rest else 'single'})")


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def inject_impression_deleted(doc: Doc, rng: random.Random) -> Case | None:
    """Delete the impression: the whole section (heading too), or only its text."""
    imps = _parts_named(doc.text, _IMPRESSION_HEADS)
    if len(imps) != 1 or len(re.sub(r"\W", "", doc.text[imps[0].start : imps[0].end])) < 3:
        return None
    imp = imps[0]
    if rng.random() < 0.5:
        text = (doc.text[: imp.at].rstrip(" ,\n") + doc.text[imp.end :]).strip()
        variant = "section"
    else:
        text = (doc.text[: imp.start] + doc.text[imp.end :]).rstrip()
        variant = "text"
    return _case(doc, "impression_deleted", text, variant=variant)


#: Critical findings (ours, after the ACR actionable list the issue names).
CRITICAL = re.compile(
    r"\b(?:pneumothorax|tension pneumothorax|intracranial hemorrhage|intraparenchymal hemorrhage|subarachnoid hemorrhage"
    r"|subdural (?:hematoma|hemorrhage)|epidural hematoma|pulmonary embol(?:ism|i|us)|aortic dissection"
    r"|free (?:intraperitoneal )?air|pneumoperitoneum|acute (?:infarct|infarction|stroke)|torsion|ectopic pregnancy"
    r"|cord compression|midline shift|(?:uncal|subfalcine|tonsillar|transtentorial) herniation|tension pneumothorax"
    r"|pneumothoraces|intraventricular hemorrhage|malpositioned (?:[\w-]+ ){0,2}(?:line|tube|catheter)(?: tip)?)\b",
    re.I,
)
_NOT_AFFIRMED = re.compile(
    r"\b(?:no|not|without|negative|free of|clear of|resolved|resolution|rule out|r/o|evaluate|evaluation|exclude\w*|may|might|possibl\w*"
    r"|probabl\w*|suspicious|question\w*|concern\w*|versus|vs|history|prior|previous\w*|status post|s/p|decreas\w*|improv\w*"
    r"|smaller|stable|unchanged|old|chronic|healed|if|or|likely|cannot|suggest\w*|consider\w*|recommend\w*"
    r"|post-?operative|postsurgical|surgery|surgical|attributed|expected|known|again|persistent|residual|persists)\b",
    re.I,
)
_KNOWN = re.compile(
    r"\b(?:known|post-?operative|post-?procedural|postsurgical|recent (?:\w+ )?surgery|residual|stable|unchanged|persistent|chronic|old|remote)\b",
    re.I,
)
COMMUNICATED = re.compile(
    r"\b(?:discussed with|called to|was called|were called|notified|communicated|telephoned|paged|conveyed to|spoke with|spoken to)\b",
    re.I,
)
_RECIPIENTS = (
    "Dr. XXXX",
    "the referring physician, Dr. XXXX,",
    "the emergency department physician, Dr. XXXX,",
    "Dr. XXXX of the ordering service",
)
_TEMPLATES = (
    "These findings were discussed with {who} by telephone at {hhmm} on {date}.",
    "Critical result communicated to {who} by phone at {hhmm} on {date} with read-back.",
    "The findings were called to {who} at {hhmm} on {date} and acknowledged.",
    "{What} was discussed with {who} by telephone at {hhmm} on {date}.",
)


def _affirmed_critical(doc: Doc) -> tuple[int, int, str] | None:
    """The first sentence of the impression (or body) stating a critical finding with no qualifier.

    None when any sentence calls a critical finding known or expected ("pneumoperitoneum,
    postoperative", "consistent with known perforation"): the same finding described
    plainly elsewhere needs no call either, so removing a call would be no defect.
    """
    for s, e in sentences(doc.text, 0, len(doc.text)):
        if CRITICAL.search(doc.text[s:e]) and _KNOWN.search(doc.text[s:e]):
            return None
    for part in _parts_named(doc.text, _IMPRESSION_HEADS) + _parts_named(doc.text, _FINDINGS_HEADS):
        for s, e in sentences(doc.text, part.start, part.end):
            sentence = doc.text[s:e]
            m = CRITICAL.search(sentence)
            if m and not _NOT_AFFIRMED.search(sentence):
                return s, e, m.group(0)
    return None


def inject_communication_removed(doc: Doc, rng: random.Random) -> Case | None:
    """Remove the communication statement from a report with an affirmed critical finding.

    A real statement is removed sentence by sentence; a report without one gets
    a complete statement appended to its base first (``prepared``).
    """
    found = _affirmed_critical(doc)
    if found is None or doc.source == "mtsamples" and not doc.modality:
        return None
    real = [
        (s, e)
        for part in [Part("", 0, 0, len(doc.text))]
        for s, e in sentences(doc.text, 0, len(doc.text))
        if COMMUNICATED.search(doc.text[s:e])
    ]
    real = [(s, e) for s, e in real if not re.search(r"\bpatient\b", doc.text[s:e], re.I)]
    if real:
        text = doc.text
        for s, e in reversed(real):
            text = text[:s].rstrip(" ,") + (" " if text[e:].strip() else "") + text[e:].lstrip(" ,")
        return _case(doc, "communication_removed", text.strip(), variant=f"real:{found[2].lower()}")
    if COMMUNICATED.search(doc.text):
        return None  # a statement about the patient talking, not a result communication: leave it
    when = doc.exam_at + timedelta(minutes=rng.randrange(15, 55))
    template = rng.choice(_TEMPLATES)
    statement = template.format(
        who=rng.choice(_RECIPIENTS),
        hhmm=when.strftime("%H:%M"),
        date=when.strftime("%m/%d/%Y"),
        What=f"The {found[2].lower()}",
    )
    sep = "\n" if doc.text.endswith("\n") else (" " if doc.text.rstrip().endswith(".") else ". ")
    base = replace(doc, text=doc.text.rstrip() + sep + statement)
    return _case(
        base,
        "communication_removed",
        doc.text,
        variant=f"appended:{found[2].lower()}",
        prepared="communication statement appended",
    )


_BIRADS = re.compile(
    r"[^.,\n]*\bBI-?RADS\b[^.,\n]*?(?:category\s*)?(?:[A-Z]/)?[0-6](?:\s*-\s*[A-Za-z ]+)?\.?",
    re.I,
)


def inject_birads_removed(doc: Doc, rng: random.Random) -> Case | None:
    """Delete the BI-RADS assessment statement (the whole line or sentence)."""
    spans = list(_BIRADS.finditer(doc.text))
    if not spans:
        return None
    text = doc.text
    for m in reversed(spans):
        s, e = m.start(), m.end()
        while s > 0 and text[s - 1] in " ,":
            s -= 1
        text = text[:s] + text[e:]
    return _case(doc, "birads_removed", text.strip(" ,"), variant=f"{len(spans)} statement(s)")


#: Contrast statements by what they state. Adjectival forms ("Noncontrast axial images",
#: "post contrast-enhanced images") are listed first: they get adjectival rewrites.
_CONTRAST_PHRASES: tuple[tuple[str, bool, re.Pattern[str]], ...] = (
    (
        "without_then_with",
        False,
        re.compile(
            r"\b(?:with and without|without and with)(?: (?:iv|intravenous))?(?: contrast| gadolinium)?|W&WO(?: contrast)?",
            re.I,
        ),
    ),
    ("without_then_with", True, re.compile(r"\bpre- and post-?contrast\b", re.I)),
    ("with", True, re.compile(r"\bpost[- ]?contrast(?:-enhanced)?\b|\bcontrast-enhanced\b", re.I)),
    ("without", True, re.compile(r"\bnon-?contrast(?:ed)?\b|\bunenhanced\b", re.I)),
    (
        "without",
        False,
        re.compile(r"\bwithout (?:iv |intravenous )?(?:contrast(?: material)?|gadolinium)|\bw/o contrast\b", re.I),
    ),
    ("with", False, re.compile(r"\bwith (?:iv |intravenous )?(?:contrast|gadolinium)\b", re.I)),
)
#: (from, to) -> replacement phrases: (after a noun or verb, as an adjective before a noun).
_REWRITE: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("without", "with"): (("with contrast", "with intravenous contrast"), ("contrast-enhanced", "postcontrast")),
    ("with", "without"): (("without contrast", "without intravenous contrast"), ("noncontrast", "unenhanced")),
    ("without_then_with", "without"): (("without contrast",), ("noncontrast",)),
    ("without_then_with", "with"): (("with contrast",), ("postcontrast",)),
}
_OTHER_CONTRAST = re.compile(r"contrast|gadolinium|omnipaque|isovue|optiray|visipaque|magnevist|enhanc", re.I)
#: Mentions that only confirm contrast was given (a drug, a dose, enhancement): fine next to "with" contrast.
_GIVEN_CONTRAST = re.compile(
    r"omnipaque|isovue|optiray|visipaque|magnevist|gadolinium|enhanc\w*|(?:iv|intravenous|oral)(?: and (?:iv|intravenous|oral))? contrast",
    re.I,
)


def _contrast_spans(text: str) -> list[tuple[str, bool, re.Match[str]]]:
    """Every contrast statement: (what it states, adjectival, match), without overlaps, in text order."""
    out: list[tuple[str, bool, re.Match[str]]] = []
    for kind, adjective, pattern in _CONTRAST_PHRASES:
        for m in pattern.finditer(text):
            if not any(o.start() < m.end() and m.start() < o.end() for _, _, o in out):
                out.append((kind, adjective, m))
    return sorted(out, key=lambda x: x[2].start())


def _same_case(old: str, new: str) -> str:
    if old.isupper():
        return new.upper()
    if old[0].isupper():
        return new[0].upper() + new[1:]
    return new


def inject_contrast_changed(doc: Doc, rng: random.Random) -> Case | None:
    """Make a CT/MR report's contrast wording and its CPT code disagree.

    Base rule: a CT or MR report with a code for the contrast its exam line
    (or, without one, every contrast statement) states, and whose contrast
    statements all agree. Two forms of the defect:

    * ``text``: every contrast statement is rewritten to another contrast, in
      the same grammatical role and case ("Noncontrast axial images" becomes
      "Contrast-enhanced axial images"); the code stays. Only where nothing
      else mentions contrast (a drug, oral contrast, "enhancing"), which would
      be left contradicting the rewrite.
    * ``code``: the text stays; the code is the same family's code for another
      contrast (70450 billed as 70460), the coder's version of the same error.
      Allowed also where a drug or enhancement confirms contrast was given.
    """
    if doc.modality not in ("CT", "MR") or not doc.procedure_code or not doc.contrast:
        return None
    spans = _contrast_spans(doc.text)
    if not spans or {kind for kind, _, _ in spans} != {doc.contrast}:
        return None
    masked = doc.text
    for _, _, m in spans:
        masked = masked[: m.start()] + " " * (m.end() - m.start()) + masked[m.end() :]
    others = [m.group(0) for m in _OTHER_CONTRAST.finditer(masked)]
    forms = []
    if not others:
        forms.append("text")
    other_codes = [
        (kind, code) for kind, code in doc.contrast_codes if kind != doc.contrast and code != doc.procedure_code
    ]
    given_only = all(
        _GIVEN_CONTRAST.search(masked[max(0, i - 25) : i + 25])
        for i in (m.start() for m in _OTHER_CONTRAST.finditer(masked))
    )
    if other_codes and (not others or doc.contrast != "without" and given_only):
        forms.append("code")
    if not forms:
        return None
    form = rng.choice(forms)
    if form == "code":
        target, code = rng.choice(other_codes)
        injected = replace(doc, id=f"{doc.id}/contrast_changed", procedure_code=code)
        return Case(
            f"{doc.id}/contrast_changed",
            "contrast_changed",
            "coding",
            doc,
            injected,
            variant=f"code:{doc.contrast}->{target} ({doc.procedure_code}->{code})",
        )
    targets = [t for (src, t) in _REWRITE if src == doc.contrast]
    target = rng.choice(targets)
    plain, adjectival = _REWRITE[(doc.contrast, target)]
    phrase, adjective = rng.choice(plain), rng.choice(adjectival)
    text = doc.text
    for _, is_adjective, m in reversed(spans):
        new = adjective if is_adjective else phrase
        if "gadolinium" in m.group(0).lower() and not is_adjective:
            new = new.replace("intravenous contrast", "gadolinium").replace("contrast", "gadolinium")
        text = text[: m.start()] + _same_case(m.group(0), new) + text[m.end() :]
    return _case(doc, "contrast_changed", text, variant=f"text:{doc.contrast}->{target}")


#: Anatomy words -> radiograph view family (mappings/procedures.yaml names; first match wins, so
#: "cervical spine" before a bare "neck" and "both hips" before "hip").
_VIEW_FAMILY_WORDS = (
    (re.compile(r"\bcervical spine\b|\bc-spine\b", re.I), "cervical_spine"),
    (re.compile(r"\blumbar spine\b|\blumbosacral spine\b|\bl-spine\b", re.I), "lumbosacral_spine"),
    (re.compile(r"\b(?:both|bilateral) hips\b", re.I), "hips_bilateral"),
    (re.compile(r"\bhip\b", re.I), "hip"),
    (re.compile(r"\bknee\b", re.I), "knee"),
    (re.compile(r"\bankle\b", re.I), "ankle"),
    (re.compile(r"\bfoot\b", re.I), "foot"),
    (re.compile(r"\bwrist\b", re.I), "wrist"),
    (re.compile(r"\bhand\b", re.I), "hand"),
    (re.compile(r"\bshoulder\b", re.I), "shoulder"),
    (re.compile(r"\bpelvis\b", re.I), "pelvis"),
    (re.compile(r"\bskull\b", re.I), "skull"),
    (re.compile(r"\babdomen\b|\bKUB\b", re.I), "abdomen"),
    (re.compile(r"\bchest\b|\bCXR\b", re.I), "chest"),
)


def _family_of(words: str) -> str:
    return next((family for pattern, family in _VIEW_FAMILY_WORDS if pattern.search(words)), "")


def _with_view_family(doc: Doc, view_codes: ViewCodes) -> Doc:
    """A radiograph Doc with its view family (from its exam name) and that family's codes."""
    if doc.modality != "XR":
        return doc
    family = "chest" if doc.source == "indiana" else _family_of(f"{doc.procedure_text} {_exam_line(doc.text)}")
    codes = view_codes(family) if family else ()
    return replace(doc, view_family=family, view_codes=codes) if codes else doc


_COUNT_WORDS = {"single": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_NUMBER_NAMES = {1: "single", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
_NAMED_VIEW = r"(?:frontal|PA|AP|lateral|obliques?)"
_VIEW_NOUN = r"(?P<noun>views?|radiographs?|projections?|images?)"
#: The sentence that states the exam's views, at the start of a sentence: a count ("Three views of the
#: right ankle", "Single frontal view of the chest") or a list of named views ("Frontal and lateral
#: radiographs of the chest", "PA and lateral views were obtained"), with an optional lead-in ("The
#: examination consists of").
_VIEW_STATEMENT = re.compile(
    r"^(?P<lead>(?:the\s+)?(?:XXXX\s+)?(?:examination|exam|study)\s+(?:consists\s+of|includes)\s+)?"
    r"(?:(?P<count>single|one|two|three|four|five|six|[1-6])\s+(?P<adj>(?:frontal|PA|AP|portable|upright)\s+)?"
    rf"|(?P<list>{_NAMED_VIEW}(?:(?:,\s*|\s+and\s+){_NAMED_VIEW})+)\s+(?:chest\s+)?)"
    rf"{_VIEW_NOUN}(?P<of>\s+(?:of\s+)?the\s+(?:(?:right|left)\s+)?(?P<anat>[a-z]+(?:\s+spine)?))?\b"
    # what follows says these views were taken (not "One AP view is expiratory and was repeated")
    r"(?=\s*(?:[.;,]|$|with\b|submitted|obtained|(?:is|are|was|were)\s+(?:obtained|submitted|available|provided|"
    r"performed|evaluated|acquired|taken)|shows?\b|demonstrates?\b|reveals?\b))",
    re.I,
)
#: Any other mention of views outside the comparison: a statement this injection does not rewrite.
_OTHER_VIEW_MENTION = re.compile(
    r"\b(?:views?|projections?|decubitus|lordotic|obliques?)\b|\b(?:\d+|single|one|two|three|four|five|six)\s+images?\b|\b(?:PA|AP|frontal|lateral)\s+(?:images?|radiographs?|films?)\b",
    re.I,
)
#: A sentence that recommends or supposes views ("PA and lateral radiographs may be of benefit")
#: rather than stating the ones taken.
_NOT_DONE = re.compile(
    r"\b(?:recommend\w*|suggest\w*|consider\w*|may|might|could|would|should|if|follow-?up|further|benefit)\b", re.I
)
#: Heads whose text is not about this exam's acquisition.
_NOT_THIS_EXAM_HEADS = _COMPARISON_HEADS | {"INDICATION", "HISTORY", "CLINICAL HISTORY", "REASON FOR EXAM"}
_VERB_NUMBER = (
    ("were", "was"),
    ("show", "shows"),
    ("demonstrate", "demonstrates"),
    ("are", "is"),
    ("reveal", "reveals"),
)


def _statement_views(m: re.Match[str]) -> int:
    if m.group("count"):
        raw = m.group("count").lower()
        return int(raw) if raw.isdigit() else _COUNT_WORDS[raw]
    items = re.findall(_NAMED_VIEW, m.group("list"), re.I)
    return sum(2 if item.lower() == "obliques" else 1 for item in items)


def _view_statements(doc: Doc) -> list[tuple[int, int, re.Match[str]]]:
    """The sentences that state the exam's views, all stating the same count: (start, end, match).

    MTSamples reports often state them in the exam line, the technique and the findings alike.
    Empty when no sentence states them, when two state different counts, or when the text names
    views elsewhere (outside the comparison and the indication) in a way no statement covers.
    """
    skip = [(p.at, p.end) for p in _parts_named(doc.text, _NOT_THIS_EXAM_HEADS)]
    found: list[tuple[int, int, re.Match[str]]] = []
    mentions: list[int] = []
    for part in parts(doc.text) or [Part("", 0, 0, len(doc.text))]:
        if any(a <= part.at < b for a, b in skip):
            continue
        for s, e in sentences(doc.text, part.start, part.end):
            sentence = doc.text[s:e]
            m = _VIEW_STATEMENT.match(sentence)
            if m and not _NOT_DONE.search(sentence):
                found.append((s, e, m))
            mentions.extend(s + x.start() for x in _OTHER_VIEW_MENTION.finditer(sentence))
    if not found or len({_statement_views(m) for _, _, m in found}) != 1:
        return []
    if any(not any(s + m.start() <= at < s + m.end() for s, _, m in found) for at in mentions):
        return []
    return found


def _code_for_views(codes: Iterable[ViewCode], views: int) -> str:
    return next((code for code, low, high in codes if views >= low and (high is None or views <= high)), "")


def _restate(m: re.Match[str], views: int, named: bool) -> str:
    """The view statement ``m`` rewritten to state ``views`` views, in the same words where it can.

    ``named``: three views are named ("PA, lateral and oblique views") where the statement names its
    views, rather than counted ("three views").
    """
    noun = m.group("noun").lower().rstrip("s")
    first = (
        m.group("adj").strip()
        if m.group("count") and m.group("adj")
        else re.findall(_NAMED_VIEW, m.group("list") or "", re.I)[0]
        if m.group("list")
        else ""
    )
    if not first.isupper():
        first = first.lower()  # "Frontal and lateral" -> "single frontal"; "PA" stays
    if views == 1:
        phrase = f"single {first} {noun}" if first else f"single {noun}"
    elif views == 2 and m.group("list"):
        phrase = f"{first} and lateral {noun}s" if first.lower() != "lateral" else f"frontal and lateral {noun}s"
    elif views == 3 and m.group("list") and named:
        phrase = (
            f"{first}, lateral and oblique {noun}s"
            if first.lower() != "lateral"
            else f"frontal, lateral and oblique {noun}s"
        )
    elif m.group("count") and m.group("count").isdigit():
        phrase = f"{views} {noun}s"
    else:
        phrase = f"{_NUMBER_NAMES[views]} {noun}s"
    lead = m.group("lead") or ""
    if lead:
        return lead + ("a " + phrase if views == 1 else phrase)
    old = m.group(0)
    return phrase.upper() if old.isupper() else phrase[0].upper() + phrase[1:] if not old[0].islower() else phrase


def _agree(rest: str, singular: bool) -> str:
    """The sentence's first verb after the statement, in the number of the new statement.

    Up to eight words may stand between ("of the chest with overlying external cardiac monitor
    leads show"); a comma or period ends the search.
    """
    pairs = dict(_VERB_NUMBER) if singular else {b: a for a, b in _VERB_NUMBER}
    m = re.match(rf"^((?:\s+[\w-]+){{0,8}}?\s+)({'|'.join(pairs)})\b", rest)
    if not m:
        return rest
    return m.group(1) + pairs[m.group(2)] + rest[m.end() :]


def inject_view_count_changed(doc: Doc, rng: random.Random) -> Case | None:
    """Make a radiograph report's stated views and its code's view range disagree.

    Base rule: a radiograph of a view family (chest, knee, ankle, ...) whose report states its
    views, outside the comparison and indication, in sentences that agree on the count, and names
    views nowhere else. The prepared base bills the family's code for the stated count (``prepared`` when that
    differs from the code the corpus row gave). Two forms of the defect:

    * ``code``: the text stays; the code is another code of the family whose range excludes the
      stated count (71046 billed as 71045), the coder's version of the error.
    * ``text``: every statement is restated as a count outside the billed code's range ("Frontal and
      lateral views" becomes "Single frontal view", "Three views" becomes "Two views"), keeping the
      code and fixing the verb's number; only counts another code of the family covers.
    """
    if doc.modality != "XR" or not doc.view_codes:
        return None
    found = _view_statements(doc)
    if not found:
        return None
    anatomy = {m.group("anat") for _, _, m in found if m.group("anat")}
    if any(_family_of(a) != doc.view_family for a in anatomy):
        return None  # a statement about another part ("views of the ribs" on a chest code)
    m = found[0][2]
    views = _statement_views(m)
    code = _code_for_views(doc.view_codes, views)
    if not code or views > 6:
        return None
    base = doc
    prepared = ""
    if doc.procedure_code != code:
        base = replace(doc, procedure_code=code)
        prepared = "code for the stated views"
    low, high = next((lo, hi) for c, lo, hi in doc.view_codes if c == code)
    other_codes = [c for c, _, _ in doc.view_codes if c != code]
    # Counts up to the family's largest lower bound (chest 1-4, ankle 1-3): each one some code covers.
    most = max(lo for _, lo, _ in doc.view_codes)
    counts = [
        n
        for n in range(1, most + 1)
        if (n < low or (high is not None and n > high)) and _code_for_views(doc.view_codes, n)
    ]
    forms = (["code"] if other_codes else []) + (["text"] if counts else [])
    if not forms:
        return None
    form = rng.choice(forms)
    if form == "code":
        wrong = rng.choice(other_codes)
        injected = replace(base, id=f"{doc.id}/view_count_changed", procedure_code=wrong)
        return Case(
            f"{doc.id}/view_count_changed",
            "view_count_changed",
            "coding",
            base,
            injected,
            variant=f"code:{views} views ({code}->{wrong})",
            prepared=prepared,
        )
    target = rng.choice(counts)
    named = rng.random() < 0.5
    text = doc.text
    for s, e, m in reversed(found):
        # The anatomy after the noun ("of the chest") stays; the first verb after it takes the new number.
        sentence = text[s:e]
        restated = (
            sentence[: m.start()]
            + _restate(m, target, named)
            + sentence[m.end("noun") : m.end()]
            + _agree(sentence[m.end() :], target == 1)
        )
        text = text[:s] + restated + text[e:]
    return _case(base, "view_count_changed", text, variant=f"text:{views}->{target} views ({code})", prepared=prepared)


_NONE_COMPARISON = re.compile(
    r"^\s*(?:none|no prior|no previous|n/a|not available|there were no|no comparison|this is the patient's baseline)",
    re.I,
)
_DATE_SLOT = re.compile(r"(?<!x-)(?<![\w-])XXXX(?:,? XXXX)*|\b\d{1,2}/\d{1,2}/\d{2,4}\b|\bmm/dd/yy(?:yy)?\b|_{3,}")
_DATE_FORMATS = ("%m/%d/%Y", "%B %d, %Y", "%Y-%m-%d", "%m/%d/%y")


def inject_comparison_after_exam(doc: Doc, rng: random.Random) -> Case | None:
    """Move the cited prior's date after the exam date.

    The base is prepared: the comparison section's de-identified date ("XXXX")
    or its date slot becomes a date 2-900 days before the exam (or one is
    appended); the injected copy has the same text with a date 2-60 days after.
    """
    comps = _parts_named(doc.text, _COMPARISON_HEADS)
    if len(comps) != 1:
        return None
    comp = comps[0]
    body = doc.text[comp.start : comp.end]
    if not body.strip(" .") or _NONE_COMPARISON.match(body):
        return None
    fmt = rng.choice(_DATE_FORMATS)
    exam = doc.exam_at.date()
    before = exam - timedelta(days=rng.randrange(2, 900))
    after = exam + timedelta(days=rng.randrange(2, 60))  # 2+: a day either side can be a time-zone question

    def dated(day: date) -> str:
        slot = _DATE_SLOT.search(body)
        stamp = day.strftime(fmt)
        if slot:
            new_body = body[: slot.start()] + stamp + body[slot.end() :]
        else:
            stripped = body.rstrip(" .")
            new_body = f"{stripped} dated {stamp}" + body[len(stripped) :]
        return doc.text[: comp.start] + new_body + doc.text[comp.end :]

    base = replace(doc, text=dated(before))
    return _case(base, "comparison_after_exam", dated(after), variant=fmt, prepared="prior dated before the exam")


def inject_wrong_sex(doc: Doc, rng: random.Random) -> Case | None:
    """Set the patient's sex opposite to the sex-specific organs the findings/impression describe."""
    if doc.source == "mtsamples" and not doc.modality:
        return None  # case histories and non-imaging notes: not a report the rule is meant for
    # Anywhere in the report: an indication ("prostate cancer"), a technique ("transvaginal") or the
    # findings; organs of one sex only (a report naming both is not sure of either).
    body = doc.text
    male, female = bool(MALE_ORGANS.search(body)), bool(FEMALE_ORGANS.search(body))
    if male == female:
        return None
    right = "M" if male else "F"
    base = doc if doc.sex == right else replace(doc, sex=right, sex_from="text")
    wrong = "F" if right == "M" else "M"
    injected = replace(base, id=f"{doc.id}/wrong_sex_organ", sex=wrong)
    organ = (MALE_ORGANS if male else FEMALE_ORGANS).search(body)
    assert organ is not None
    variant = f"{right}->{wrong} ({organ.group(0).lower()})"
    return Case(f"{doc.id}/wrong_sex_organ", "wrong_sex_organ", "consistency", base, injected, variant=variant)


_NUMBER_UNIT = re.compile(r"\b\d+(?:\.\d+)?(?=\s*(?:x\s*\d|mm|cm|m\b|%|degrees|ml|cc))", re.I)
_SIDE = re.compile(r"\b(?:left|right)\b", re.I)
_LAST_WORD = re.compile(r"\b[a-z]{4,}(?=\.?\s*$)")


def inject_placeholder(doc: Doc, rng: random.Random) -> Case | None:
    """Leave a template blank in one findings/impression sentence (a measurement, a side, or its last word).

    Placeholder forms: "***", "[ ]", "___", "[***]", "<size>"/"<side>"/"<finding>";
    "XXX" only in MTSamples reports, because the Indiana texts are full of
    "XXXX" de-identification tokens and a rule cannot tell them apart.
    """
    choices = [(s, e) for part in _body_parts(doc) for s, e in sentences(doc.text, part.start, part.end)]
    if not choices:
        return None
    s, e = rng.choice(choices)
    sentence = doc.text[s:e]
    for pattern, what in ((_NUMBER_UNIT, "size"), (_SIDE, "side"), (_LAST_WORD, "finding")):  # noqa: B007 - `what` names the placeholder after the loop
        m = pattern.search(sentence)
        if m:
            break
    else:
        return None
    forms = ["***", "[ ]", "___", "[***]", f"<{what}>"]
    if doc.source == "mtsamples":
        forms.append("XXX")
    form = rng.choice(forms)
    text = doc.text[: s + m.start()] + form + doc.text[s + m.end() :]
    return _case(doc, "placeholder", text, variant=f"{what}:{form}")


def _case(base: Doc, injection: str, text: str, *, variant: str = "", prepared: str = "") -> Case | None:
    if text == base.text:
        return None
    injected = replace(base, id=f"{base.id}/{injection}", text=text)
    return Case(f"{base.id}/{injection}", injection, INJECTIONS[injection], base, injected, variant, prepared)


INJECTORS: dict[str, Callable[[Doc, random.Random], Case | None]] = {
    "laterality_swap": inject_laterality,
    "negation_flip": inject_negation,
    "impression_deleted": inject_impression_deleted,
    "communication_removed": inject_communication_removed,
    "birads_removed": inject_birads_removed,
    "contrast_changed": inject_contrast_changed,
    "view_count_changed": inject_view_count_changed,
    "comparison_after_exam": inject_comparison_after_exam,
    "wrong_sex_organ": inject_wrong_sex,
    "placeholder": inject_placeholder,
}


def build_cases(docs: Iterable[Doc], *, per_injection: int = 300, seed: int = SEED) -> list[Case]:
    """Up to ``per_injection`` labeled cases per injection, sampled with a fixed seed.

    Every base that qualifies is tried in a seeded order; bases are shared
    between injections (each case is one base + one defect).
    """
    pool = list(docs)
    cases: list[Case] = []
    for name, injector in INJECTORS.items():
        rng = random.Random(f"{seed}:{name}")
        order = pool[:]
        rng.shuffle(order)
        made = 0
        for doc in order:
            if made >= per_injection:
                break
            case = injector(doc, rng)
            if case is not None:
                cases.append(case)
                made += 1
    return cases


@dataclass(frozen=True, slots=True)
class CaseStats:
    """How many cases each injection produced (and how many from prepared bases)."""

    made: dict[str, int] = field(default_factory=dict)
    prepared: dict[str, int] = field(default_factory=dict)


def case_stats(cases: Iterable[Case]) -> CaseStats:
    """Count cases per injection, and prepared ones."""
    made: Counter[str] = Counter()
    prepared: Counter[str] = Counter()
    for case in cases:
        made[case.injection] += 1
        if case.prepared:
            prepared[case.injection] += 1
    return CaseStats(dict(made), dict(prepared))
