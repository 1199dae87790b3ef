"""A month of overnight teleradiology: Nocturna's preliminary reads and LEMC's finals for them.

Deterministic from a seed (``build_month(seed)``): the same seed gives the same
messages, byte for byte, and the same truth. Used by
tests/integration/test_outcomes_month.py (docs/outcomes.md, "A month through the daemon").

What is generated:

- One month (2026-11-01 22:00 to 2026-11-30 12:00, LEMC time, CST ``-0600``) of
  overnight preliminary reads (22:00-07:00 site time) by the external readers
  of Nocturna Teleradiology (policies/readers.yaml: ``NT7741`` and ``NT7802``), and the internal final of each the next morning by an LEMC
  reader (R1042 neuro, R1187 body and ultrasound, R1311 chest).
- Exams: XR chest, CT head, CT abdomen and pelvis, MR brain, US abdomen; the
  report text is ours (templates with variation: indications, incidental
  findings, measurements), sections in the LOINC style of samples/hl7.
- Per accession an intended grade of the prelim-to-final pair: ``1``
  (the final restates the prelim, impression reworded with equivalent phrases),
  ``3b`` (the final adds a critical finding the prelim ruled out), ``2b`` (a
  negation flipped on a significant finding, or the side of a finding changed),
  ``2a`` (a minor finding added).
- A few finals corrected the next day (status ``C``): a wording correction
  (``1``), an addendum (``1``) and a missed effusion (``2b``), graded on the
  final's reader.
- Some finals sent before their prelim (out of order); about one message in
  six as a FHIR DiagnosticReport (HTTP), the rest HL7 ORU^R01 (MLLP). A FHIR
  preliminary names its accession only through its ServiceRequest (``basedOn``),
  a FHIR final or correction also by its own identifier.
- Explicit scores to record with ``overread outcomes score``: each overrides
  its accession's proposal.

The patients are fictional (family names ``ZZ...``, MRNs ``ZZ92nnnnn``).
``Month.truth`` gives per reader the expected reads, overread, graded and
per-grade counts, with the explicit scores applied.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = [
    "CST",
    "GROUP",
    "READERS",
    "SIGNIFICANT",
    "Accession",
    "Message",
    "Month",
    "ReaderTruth",
    "Score",
    "build_month",
    "patient_markers",
    "probe_prelim",
]

GROUP = "Nocturna Teleradiology"
CST = timezone(timedelta(hours=-6))
#: The month: every version's report time is in [WINDOW_START, WINDOW_END).
WINDOW_START = datetime(2026, 11, 1, tzinfo=CST).astimezone(UTC)
WINDOW_END = datetime(2026, 12, 1, tzinfo=CST).astimezone(UTC)
SIGNIFICANT = ("2b", "3b")
GRADES = ("1", "2a", "2b", "3a", "3b")

#: External reader id -> (family, given, number of prelims, intended grades other than "1").
#: NT7741 misses critical findings: a significant-discrepancy rate above routing.yaml's 5% on more
#: than 50 graded reads. NT7802 reads most studies and is clearly below.
READERS: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "NT7741": ("HALVORSEN", "INGRID", 66, ("3b", "3b", "3b", "3b", "2b", "2b", "2b", "2a", "2a")),
    "NT7802": ("OYELARAN", "TOMAS", 140, ("2b", "2a", "2a", "2a")),
}
#: Internal final readers by exam family.
INTERNAL = {
    "R1042": ("ASHWORTH", "MIRIAM"),
    "R1187": ("BRANDT", "KOFI"),
    "R1311": ("DELACROIX", "SAMUEL"),
}
ORDERING = "E2210^OKAFOR^DANIEL^^^^MD"
TRAILER = "Preliminary interpretation by Nocturna Teleradiology. The final interpretation will be issued by the LEMC radiologist."

FAMILIES = ("ZZTEST", "ZZDEMO", "ZZSAMPLE", "ZZMONTH", "ZZNIGHT")
GIVEN = ("ALDOUS", "BRIONY", "CASPIAN", "DELPHINE", "EZRA", "FENELLA", "GIDEON", "HESTER", "IGNATIUS", "JUNO")


# ------------------------------------------------------------------ report texts


@dataclass(frozen=True)
class Text:
    """One version's report: sections as lists of lines."""

    indication: str
    technique: str
    comparison: str
    findings: tuple[str, ...]
    impression: tuple[str, ...]


@dataclass(frozen=True)
class Exam:
    """An exam family: its code, name, modality (OBR-24), internal final reader and reason code."""

    key: str
    code: str
    name: str
    modality: str  # OBR-24
    final_reader: str
    icd: str


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[rng.randrange(len(options))]


def _comparison(rng: random.Random, what: str) -> str:
    if rng.random() < 0.3:
        return "None."
    year = rng.choice((2023, 2024, 2025))
    return f"{what} {year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}."


# XR chest ---------------------------------------------------------------------

_XR_INCIDENTAL = (
    "Mild degenerative change of the thoracic spine.",
    "Stable mild tortuosity of the thoracic aorta.",
    "Healed left seventh rib fracture, unchanged.",
)
_XR_NORMAL_IMP = ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.")


def _xr(rng: random.Random, kind: str) -> tuple[Text, Text]:
    indication = _pick(rng, ("Shortness of breath.", "Cough and fever.", "Chest pain.", "Fall, chest wall pain."))
    comparison = _comparison(rng, "Chest radiograph")
    extra = (rng.choice(_XR_INCIDENTAL),) if rng.random() < 0.4 else ()
    heart = "The cardiomediastinal silhouette is normal in size and contour."
    clear = "The lungs are clear. No focal consolidation, pleural effusion or pneumothorax."
    imp = rng.choice(_XR_NORMAL_IMP)
    other_imp = _XR_NORMAL_IMP[1 - _XR_NORMAL_IMP.index(imp)]
    prelim_f: tuple[str, ...] = (clear, heart, *extra)
    prelim_i: tuple[str, ...] = (imp,)
    final_f, final_i = prelim_f, (other_imp,)
    size = _pick(rng, ("small", "moderate"))
    side = _pick(rng, ("right", "left"))
    other = "left" if side == "right" else "right"
    if kind == "3b":
        final_f = (
            f"There is a {size} {side} apical pneumothorax. No focal consolidation or pleural effusion.",
            heart,
            *extra,
        )
        final_i = (f"{size.capitalize()} {side} apical pneumothorax.",)
    elif kind == "2b-flip":
        final_f = (f"There is a {size} {side} pleural effusion. No focal consolidation or pneumothorax.", heart, *extra)
        final_i = (f"{size.capitalize()} {side} pleural effusion.",)
    elif kind == "2b-side":
        prelim_f = (
            f"Patchy consolidation in the {side} lower lobe. No pleural effusion or pneumothorax.",
            heart,
            *extra,
        )
        prelim_i = (
            f"{side.capitalize()} lower lobe consolidation, compatible with pneumonia in the clinical setting.",
        )
        final_f = (
            f"Patchy consolidation in the {other} lower lobe. No pleural effusion or pneumothorax.",
            heart,
            *extra,
        )
        final_i = (
            f"{other.capitalize()} lower lobe consolidation, compatible with pneumonia in the clinical setting.",
        )
    elif kind == "2a":
        final_f = (clear, heart, *extra, f"Calcified granuloma in the {side} upper lobe.")
    return (
        Text(indication, "PA and lateral views of the chest.", comparison, prelim_f, prelim_i),
        Text(indication, "PA and lateral views of the chest.", comparison, final_f, final_i),
    )


# CT head ----------------------------------------------------------------------


def _ct_head(rng: random.Random, kind: str) -> tuple[Text, Text]:
    indication = _pick(
        rng,
        (
            "Fall from standing, on anticoagulation. Evaluate for intracranial hemorrhage.",
            "Headache and dizziness.",
            "Altered mental status.",
            "Syncope, struck head.",
        ),
    )
    comparison = _comparison(rng, "CT head")
    chronic = _pick(
        rng,
        (
            "Mild periventricular white matter hypoattenuation compatible with chronic small vessel ischemic change.",
            "Age-appropriate parenchymal volume.",
        ),
    )
    parenchyma = f"Brain parenchyma: No intraparenchymal hemorrhage. {chronic}"
    extra_axial = "Extra-axial spaces: No extra-axial fluid collection."
    ventricles = "Ventricles and cisterns: Normal in size and configuration. No midline shift."
    calvarium = "Calvarium and scalp: No acute fracture."
    sinuses = "Paranasal sinuses and mastoids: Clear."
    imp_a = "No acute intracranial abnormality."
    imp_b = "No acute intracranial process."
    prelim_f: tuple[str, ...] = (parenchyma, extra_axial, ventricles, calvarium, sinuses)
    prelim_i: tuple[str, ...] = (imp_a,)
    final_f, final_i = prelim_f, (imp_b,)
    side = _pick(rng, ("right", "left"))
    mm = rng.randint(3, 6)
    if kind == "3b":
        final_f = (
            parenchyma,
            f"Extra-axial spaces: Acute {side} subdural hematoma along the convexity measuring {mm} mm in thickness.",
            ventricles,
            calvarium,
            sinuses,
        )
        final_i = (f"Acute {side} subdural hematoma measuring {mm} mm, without midline shift.",)
    elif kind == "2b-flip":
        final_f = (
            parenchyma,
            extra_axial,
            ventricles,
            f"Calvarium and scalp: Nondisplaced fracture of the {side} occipital bone.",
            sinuses,
        )
        final_i = (f"Nondisplaced {side} occipital bone fracture. No intracranial hemorrhage.",)
    elif kind == "2a":
        final_f = (*prelim_f[:4], f"Paranasal sinuses and mastoids: Small {side} mastoid effusion.")
    return (
        Text(indication, "Axial CT images of the head without intravenous contrast.", comparison, prelim_f, prelim_i),
        Text(indication, "Axial CT images of the head without intravenous contrast.", comparison, final_f, final_i),
    )


# CT abdomen and pelvis ----------------------------------------------------------


def _ct_abd(rng: random.Random, kind: str) -> tuple[Text, Text]:
    indication = _pick(
        rng, ("Right lower quadrant pain.", "Abdominal pain and vomiting.", "Flank pain.", "Fever, abdominal pain.")
    )
    comparison = _comparison(rng, "CT abdomen and pelvis")
    solid = "Liver, gallbladder, spleen, pancreas and adrenal glands: Unremarkable."
    kidneys = "Kidneys: No hydronephrosis."
    bowel = "Bowel: The appendix is normal. No bowel obstruction."
    peritoneum = "Peritoneum: No free air. No ascites."
    bones = _pick(rng, ("Bones: Mild degenerative change of the lumbar spine.", "Bones: No aggressive osseous lesion."))
    imp_a = "No acute abnormality in the abdomen or pelvis."
    imp_b = "No acute process in the abdomen or pelvis."
    prelim_f: tuple[str, ...] = (solid, kidneys, bowel, peritoneum, bones)
    prelim_i: tuple[str, ...] = (imp_a,)
    final_f, final_i = prelim_f, (imp_b,)
    side = _pick(rng, ("right", "left"))
    other = "left" if side == "right" else "right"
    if kind == "3b":
        mm = rng.randint(10, 14)
        final_f = (
            solid,
            kidneys,
            f"Bowel: The appendix is dilated to {mm} mm with periappendiceal fat stranding. No bowel obstruction.",
            peritoneum,
            bones,
        )
        final_i = (f"Acute appendicitis, appendix {mm} mm. No free air.",)
    elif kind == "2b-flip":
        final_f = (
            solid,
            f"Kidneys: Moderate {side} hydronephrosis to the level of the ureterovesical junction.",
            bowel,
            peritoneum,
            bones,
        )
        final_i = (f"Moderate {side} hydronephrosis.",)
    elif kind == "2b-side":
        prelim_f = (solid, f"Kidneys: Mild {side} hydronephrosis.", bowel, peritoneum, bones)
        prelim_i = (f"Mild {side} hydronephrosis.",)
        final_f = (solid, f"Kidneys: Mild {other} hydronephrosis.", bowel, peritoneum, bones)
        final_i = (f"Mild {other} hydronephrosis.",)
    elif kind == "2a":
        final_f = (*prelim_f, "Small fat-containing umbilical hernia.")
    return (
        Text(indication, "CT of the abdomen and pelvis after intravenous contrast.", comparison, prelim_f, prelim_i),
        Text(indication, "CT of the abdomen and pelvis after intravenous contrast.", comparison, final_f, final_i),
    )


# MR brain ---------------------------------------------------------------------


def _mr_brain(rng: random.Random, kind: str) -> tuple[Text, Text]:
    indication = _pick(rng, ("Dizziness.", "New headache.", "Transient visual disturbance."))
    comparison = _comparison(rng, "MR brain")
    parenchyma = "Brain: No restricted diffusion. No intracranial hemorrhage. No mass."
    white = _pick(
        rng,
        ("A few scattered nonspecific white matter T2 hyperintensities.", "Normal gray-white matter differentiation."),
    )
    ventricles = "Ventricles: Normal in size."
    imp_a = "No acute intracranial abnormality."
    imp_b = "No acute intracranial process."
    prelim_f: tuple[str, ...] = (parenchyma, white, ventricles)
    final_f = prelim_f
    final_i: tuple[str, ...] = (imp_b,)
    side = _pick(rng, ("right", "left"))
    if kind == "3b":
        final_f = (
            f"Brain: Restricted diffusion in the {side} insular cortex compatible with acute infarct. No intracranial hemorrhage. No mass.",
            white,
            ventricles,
        )
        final_i = (f"Acute {side} insular infarct.",)
    elif kind == "2a":
        final_f = (*prelim_f, f"Small {side} mastoid effusion.")
    return (
        Text(
            indication,
            "Multiplanar multisequence MR images of the brain without contrast.",
            comparison,
            prelim_f,
            (imp_a,),
        ),
        Text(
            indication,
            "Multiplanar multisequence MR images of the brain without contrast.",
            comparison,
            final_f,
            final_i,
        ),
    )


# US abdomen -------------------------------------------------------------------


def _us(rng: random.Random, kind: str) -> tuple[Text, Text]:
    indication = _pick(rng, ("Right upper quadrant pain.", "Elevated liver enzymes.", "Epigastric pain after meals."))
    comparison = _comparison(rng, "US abdomen")
    liver = f"Liver: Normal echotexture, {rng.randint(13, 17)} cm."
    gallbladder = "Gallbladder: No gallstones. No wall thickening. No pericholecystic fluid."
    ducts = f"Common bile duct: {rng.randint(3, 5)} mm."
    kidneys = "Kidneys: No hydronephrosis."
    imp_a = "Normal abdominal ultrasound."
    imp_b = "Unremarkable abdominal ultrasound."
    prelim_f: tuple[str, ...] = (liver, gallbladder, ducts, kidneys)
    final_f = prelim_f
    final_i: tuple[str, ...] = (imp_b,)
    side = _pick(rng, ("right", "left"))
    if kind == "2b-flip":
        final_f = (liver, gallbladder, ducts, f"Kidneys: Mild {side} hydronephrosis.")
        final_i = (f"Mild {side} hydronephrosis.",)
    elif kind == "2a":
        final_f = (*prelim_f, "Small umbilical hernia.")
    return (
        Text(
            indication,
            "Real-time grayscale and color Doppler ultrasound of the abdomen.",
            comparison,
            prelim_f,
            (imp_a,),
        ),
        Text(
            indication, "Real-time grayscale and color Doppler ultrasound of the abdomen.", comparison, final_f, final_i
        ),
    )


EXAMS = {
    "xr_chest": Exam("xr_chest", "71046", "XR CHEST 2 VIEWS", "CR", "R1311", "R06.02^Shortness of breath^I10"),
    "ct_head": Exam("ct_head", "70450", "CT HEAD WO CONTRAST", "CT", "R1042", "R51.9^Headache, unspecified^I10"),
    "ct_abd": Exam(
        "ct_abd", "74177", "CT ABD AND PELVIS W CONTRAST", "CT", "R1187", "R10.31^Right lower quadrant pain^I10"
    ),
    "mr_brain": Exam("mr_brain", "70551", "MRI BRAIN WO CONTRAST", "MR", "R1042", "R42^Dizziness and giddiness^I10"),
    "us_abd": Exam("us_abd", "76700", "US ABDOMEN COMPLETE", "US", "R1187", "R10.11^Right upper quadrant pain^I10"),
}
_WRITERS: dict[str, Callable[[random.Random, str], tuple[Text, Text]]] = {
    "xr_chest": _xr,
    "ct_head": _ct_head,
    "ct_abd": _ct_abd,
    "mr_brain": _mr_brain,
    "us_abd": _us,
}
#: Which exams can carry which discrepancy kind.
_KINDS = {
    "3b": ("xr_chest", "ct_head", "ct_abd", "mr_brain"),
    "2b-flip": ("xr_chest", "ct_head", "ct_abd", "us_abd"),
    "2b-side": ("xr_chest", "ct_abd"),
    "2a": ("xr_chest", "ct_head", "ct_abd", "mr_brain", "us_abd"),
    "1": ("xr_chest", "xr_chest", "ct_head", "ct_head", "ct_abd", "ct_abd", "mr_brain", "us_abd"),
}


# ------------------------------------------------------------------ the month


@dataclass(frozen=True)
class Message:
    """One message to send: HL7 bytes over MLLP, or a FHIR DiagnosticReport over HTTP."""

    transport: str  # "mllp" | "http"
    body: bytes
    control_id: str  # MSH-10, or the DiagnosticReport id
    accession: str
    status: str  # preliminary | final | corrected
    sender: str  # the HTTP client that posts it (http only): "nocturna" or "ris"


@dataclass(frozen=True)
class Accession:
    """One study and what the test expects of its history."""

    accession: str
    exam: str  # EXAMS key
    code: str
    prelim_reader: str
    final_reader: str
    kind: str  # "1", "3b", "2b-flip", "2b-side", "2a"
    grade: str  # intended grade of the prelim_to_final pair
    exam_time: datetime
    prelim_time: datetime
    final_time: datetime
    out_of_order: bool  # the final is sent before the prelim
    correction: str | None  # None, or the intended grade of the correction pair
    correction_kind: str  # "", "wording", "addendum", "missed_effusion"
    correction_time: datetime | None
    transports: tuple[str, ...]  # per version in clinical order: "mllp" | "http"
    mrn: str
    patient: str  # "FAMILY^GIVEN": must never appear in outputs

    @property
    def significant(self) -> bool:
        return self.grade in SIGNIFICANT


@dataclass(frozen=True)
class ReaderTruth:
    """What a reader's scorecard row must say for the month (explicit scores applied)."""

    reader: str
    group: str
    reads: int
    prelims: int
    finals: int
    overread: int
    graded: int
    grades: dict[str, int]
    corrected: int  # finals later corrected
    addenda: int  # reads amended by a correction carrying an addendum (once per addendum)
    prelim_minutes: tuple[float, ...]  # exam to preliminary, per prelim
    prelim_to_final_minutes: tuple[float, ...]  # per prelim_to_final pair

    @property
    def significant(self) -> int:
        return sum(self.grades.get(g, 0) for g in SIGNIFICANT)

    @property
    def any(self) -> int:
        return sum(n for g, n in self.grades.items() if g != "1")


@dataclass(frozen=True)
class Score:
    """An explicit score to record with ``overread outcomes score``."""

    accession: str
    grade: str
    scorer: str
    note: str


@dataclass(frozen=True)
class Month:
    """The messages in send order, the accessions, the explicit scores and the truth."""

    seed: int
    messages: tuple[Message, ...]
    accessions: tuple[Accession, ...]
    scores: tuple[Score, ...]

    def by_accession(self) -> dict[str, Accession]:
        return {a.accession: a for a in self.accessions}

    def effective_grade(self, accession: Accession) -> str:
        """The prelim_to_final grade once the explicit scores are recorded (the latest wins)."""
        grade = accession.grade
        for score in self.scores:
            if score.accession == accession.accession:
                grade = score.grade
        return grade

    def truth(self) -> dict[str, ReaderTruth]:
        """Per reader: reads, overread, graded and per-grade counts of the month (every pair comparable)."""
        reads: Counter[str] = Counter()
        prelims: Counter[str] = Counter()
        finals: Counter[str] = Counter()
        overread: Counter[str] = Counter()
        corrected: Counter[str] = Counter()
        addenda: Counter[str] = Counter()
        grades: dict[str, Counter[str]] = {}
        to_prelim: dict[str, list[float]] = {}
        to_final: dict[str, list[float]] = {}
        for a in self.accessions:
            reads[a.prelim_reader] += 1
            prelims[a.prelim_reader] += 1
            reads[a.final_reader] += 1
            finals[a.final_reader] += 1
            overread[a.prelim_reader] += 1
            grades.setdefault(a.prelim_reader, Counter())[self.effective_grade(a)] += 1
            to_prelim.setdefault(a.prelim_reader, []).append((a.prelim_time - a.exam_time).total_seconds() / 60)
            to_final.setdefault(a.prelim_reader, []).append((a.final_time - a.prelim_time).total_seconds() / 60)
            if a.correction is not None:
                reads[a.final_reader] += 1  # the corrected version is the final reader's too
                overread[a.final_reader] += 1
                corrected[a.final_reader] += 1
                # An addendum counts once, on the final it amends (the final reader's read).
                addenda[a.final_reader] += 1 if a.correction_kind == "addendum" else 0
                grades.setdefault(a.final_reader, Counter())[a.correction] += 1
        out = {}
        for reader in sorted(reads):
            group = GROUP if reader in READERS else "Lakeshore Radiology"
            counted = grades.get(reader, Counter())
            out[reader] = ReaderTruth(
                reader=reader,
                group=group,
                reads=reads[reader],
                prelims=prelims[reader],
                finals=finals[reader],
                overread=overread[reader],
                graded=sum(counted.values()),
                grades=dict(counted),
                corrected=corrected[reader],
                addenda=addenda[reader],
                prelim_minutes=tuple(to_prelim.get(reader, ())),
                prelim_to_final_minutes=tuple(to_final.get(reader, ())),
            )
        return out


def _hl7_time(t: datetime) -> str:
    return t.astimezone(CST).strftime("%Y%m%d%H%M%S-0600")


def _iso(t: datetime) -> str:
    return t.astimezone(CST).isoformat()


def _sections(text: Text, extra_impression: tuple[str, ...] = ()) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        ("18785-6", "Radiology Reason for study (narrative)", (text.indication,)),
        ("55111-9", "Current imaging procedure descriptions Document", (text.technique,)),
        ("18834-2", "Radiology Comparison study (narrative)", (text.comparison,)),
        ("18782-3", "Radiology Study observation (narrative)", text.findings),
        ("19005-8", "Radiology Imaging study [Impression] (narrative)", text.impression + extra_impression),
    ]


@dataclass(frozen=True)
class _Version:
    accession: str
    exam: Exam
    status: str  # P F C
    reader: str
    reader_name: tuple[str, str]
    external: bool
    report_time: datetime
    exam_time: datetime
    text: Text
    extra_impression: tuple[str, ...]
    mrn: str
    patient: tuple[str, str]
    birth: str
    sex: str
    control_id: str
    priority: str  # S or R


def _hl7(v: _Version) -> bytes:
    app, facility = ("NOCTURNA_RAD", "NOCTURNA TELERAD") if v.external else ("HALCYON_RIS", "LEMC")
    sent = v.report_time + timedelta(seconds=47)
    reader_xcn = f"{v.reader}^{v.reader_name[0]}^{v.reader_name[1]}^^^^MD"
    reader_ndl = f"{v.reader}&{v.reader_name[0]}&{v.reader_name[1]}&&&&MD" + ("^^^^^^NOCTURNA" if v.external else "")
    placer = "PL" + v.accession[1:]
    msh = f"MSH|^~\\&|{app}|{facility}|OVERREAD|LEMC|{_hl7_time(sent)}||ORU^R01^ORU_R01|{v.control_id}|P|2.5.1|||AL|NE"
    pid = f"PID|1||{v.mrn}^^^LEMC^MR||{v.patient[0]}^{v.patient[1]}^^^^^L||{v.birth}|{v.sex}"
    pv1 = f"PV1|1|E|ED^ED12^01^LEMC||||{ORDERING}|{ORDERING}||RAD|||||||||V{v.accession[1:]}^^^LEMC^VN"
    orc = f"ORC|RE|{placer}^LEMC_EHR|{v.accession}^HALCYON_RIS||{'A' if v.status == 'P' else 'CM'}||||{_hl7_time(sent)}|||{ORDERING}"
    obr = [""] * 46
    obr[0], obr[1], obr[2], obr[3] = "OBR", "1", f"{placer}^LEMC_EHR", f"{v.accession}^HALCYON_RIS"
    obr[4] = f"{v.exam.code}^{v.exam.name}^C4"
    obr[7] = _hl7_time(v.exam_time)
    obr[16] = ORDERING
    obr[18], obr[19] = v.accession, f"RP{v.exam.code}"
    obr[22] = _hl7_time(v.report_time)
    obr[24], obr[25] = v.exam.modality, v.status
    obr[31] = v.exam.icd
    obr[32] = reader_ndl
    obr[45] = "26^Professional component^C4"
    tq1 = f"TQ1|1||||||||{v.priority}^{'Stat' if v.priority == 'S' else 'Routine'}^HL70485"
    segments = [msh, pid, pv1, orc, "|".join(obr), tq1]
    for i, (code, display, lines) in enumerate(_sections(v.text, v.extra_impression), start=1):
        value = "~".join(lines)
        segments.append(
            f"OBX|{i}|TX|{code}^{display}^LN||{value}||||||{v.status}|||{_hl7_time(v.report_time)}||{reader_xcn}"
        )
    return ("\r".join(segments) + "\r").encode("ascii")


_FHIR_STATUS = {"P": "preliminary", "F": "final", "C": "corrected"}


def _fhir(v: _Version) -> bytes:
    status = _FHIR_STATUS[v.status]
    contained: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": "pat",
            "identifier": [
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                    "system": "urn:oid:2.16.840.1.113883.3.9999.2",
                    "value": v.mrn,
                }
            ],
            "name": [{"family": v.patient[0], "given": [v.patient[1]]}],
            "gender": "female" if v.sex == "F" else "male",
            "birthDate": f"{v.birth[:4]}-{v.birth[4:6]}-{v.birth[6:]}",
        },
        {
            "resourceType": "ServiceRequest",
            "id": "order",
            "status": "completed",
            "intent": "order",
            "identifier": [
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                    "system": "urn:oid:2.16.840.1.113883.3.9999.1",
                    "value": v.accession,
                }
            ],
            "priority": "stat" if v.priority == "S" else "routine",
            "code": {
                "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": v.exam.code, "display": v.exam.name}],
                "text": v.exam.name,
            },
            "subject": {"reference": "#pat"},
        },
        {
            "resourceType": "Practitioner",
            "id": "reader",
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.9999.3", "value": v.reader}],
            "name": [{"family": v.reader_name[0].capitalize(), "given": [v.reader_name[1].capitalize()]}],
        },
    ]
    results = []
    for i, (code, display, lines) in enumerate(_sections(v.text, v.extra_impression), start=1):
        contained.append(
            {
                "resourceType": "Observation",
                "id": f"sec{i}",
                "status": status,
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "subject": {"reference": "#pat"},
                "valueString": "\n".join(lines),
            }
        )
        results.append({"reference": f"#sec{i}"})
    doc: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": v.control_id,
        "identifier": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "system": "urn:oid:2.16.840.1.113883.3.9999.1",
                "value": v.accession,
            }
        ],
        "status": status,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}]}],
        "code": {
            "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": v.exam.code, "display": v.exam.name}],
            "text": v.exam.name,
        },
        "subject": {"reference": "#pat"},
        "effectiveDateTime": _iso(v.exam_time),
        "issued": _iso(v.report_time),
        "contained": contained,
        "basedOn": [{"reference": "#order"}],
        "resultsInterpreter": [{"reference": "#reader"}],
        "result": results,
    }
    if v.external:
        # Nocturna's FHIR reports name the accession only through their order (basedOn).
        del doc["identifier"]
    return json.dumps(doc, indent=1).encode("utf-8")


def _plan(rng: random.Random) -> list[tuple[str, str]]:
    """(reader, kind) per accession, in a shuffled order."""
    plan: list[tuple[str, str]] = []
    for reader, (_, _, count, grades) in READERS.items():
        kinds = []
        for grade in grades:
            if grade == "2b":
                kinds.append(rng.choice(("2b-flip", "2b-side")))
            else:
                kinds.append(grade)
        kinds += ["1"] * (count - len(kinds))
        plan += [(reader, k) for k in kinds]
    rng.shuffle(plan)
    return plan


def _grade(kind: str) -> str:
    return kind.split("-")[0]


_CORRECTIONS = ("wording", "addendum", "missed_effusion", "wording", "addendum")


def build_month(seed: int = 20261101) -> Month:
    """The month for ``seed``: the same seed gives the same messages and truth."""
    rng = random.Random(seed)
    plan = _plan(rng)
    nights = 29  # nights of Nov 1..29; finals the next morning (Nov 2..30)
    accessions: list[Accession] = []
    versions: list[tuple[datetime, int, _Version, str]] = []  # (send key, order, version, transport)
    scores: list[Score] = []
    # Which concordant accessions get a correction; which finals go out before their prelim.
    concordant = [i for i, (_, k) in enumerate(plan) if k == "1"]
    corrected = dict(zip(sorted(rng.sample(concordant, len(_CORRECTIONS))), _CORRECTIONS, strict=True))
    early = set(rng.sample([i for i in range(len(plan)) if i not in corrected], 6))
    for index, (reader, kind) in enumerate(plan):
        night = index * nights // len(plan)  # spread evenly over the nights, in plan order
        evening = datetime(2026, 11, 1 + night, 22, 0, tzinfo=CST)
        prelim_time = evening + timedelta(minutes=rng.randrange(0, 9 * 60 - 10))
        exam_key = _pick(rng, _KINDS[kind])
        exam = EXAMS[exam_key]
        next_morning = datetime(2026, 11, 2 + night, 7, 30, tzinfo=CST)
        final_time = next_morning + timedelta(minutes=rng.randrange(0, 240))
        exam_time = prelim_time - timedelta(minutes=rng.randrange(12, 75))
        accession = f"N2611{index + 1:04d}"
        mrn = f"ZZ92{rng.randrange(100000):05d}"
        family, given = _pick(rng, FAMILIES), _pick(rng, GIVEN)
        birth = f"{rng.randint(1940, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        sex = rng.choice("FM")
        priority = "S" if exam.modality in ("CT", "CR") or rng.random() < 0.3 else "R"
        prelim_text, final_text = _WRITERS[exam_key](rng, kind)
        correction_kind = corrected.get(index, "")
        common = {
            "accession": accession,
            "exam": exam,
            "mrn": mrn,
            "patient": (family, given),
            "birth": birth,
            "sex": sex,
            "exam_time": exam_time,
            "priority": priority,
        }
        prelim = _Version(
            status="P",
            reader=reader,
            reader_name=READERS[reader][:2],
            external=True,
            report_time=prelim_time,
            text=prelim_text,
            extra_impression=(TRAILER,),
            control_id=f"NOC{accession}P",
            **common,
        )
        final = _Version(
            status="F",
            reader=exam.final_reader,
            reader_name=INTERNAL[exam.final_reader],
            external=False,
            report_time=final_time,
            text=final_text,
            extra_impression=(),
            control_id=f"HAL{accession}F",
            **common,
        )
        # Transports: about one message in six over HTTP.
        prelim_transport = "http" if rng.random() < 0.17 else "mllp"
        final_transport = "http" if rng.random() < 0.17 else "mllp"
        out_of_order = index in early
        versions.append(
            (prelim_time if not out_of_order else final_time + timedelta(minutes=5), 0, prelim, prelim_transport)
        )
        versions.append((final_time, 1, final, final_transport))
        transports = [prelim_transport, final_transport]
        correction_grade: str | None = None
        correction_time: datetime | None = None
        if correction_kind:
            correction_time = final_time + timedelta(hours=rng.randint(20, 30))
            if correction_kind == "wording":
                text = Text(
                    final_text.indication,
                    final_text.technique,
                    final_text.comparison,
                    final_text.findings,
                    (*final_text.impression, "Correlation with clinical findings is suggested."),
                )
                correction_grade = "1"
            elif correction_kind == "addendum":
                text = final_text
                correction_grade = "1"
            else:
                text = Text(
                    final_text.indication,
                    final_text.technique,
                    final_text.comparison,
                    (*final_text.findings, "Small right pleural effusion."),
                    (*final_text.impression, "Small right pleural effusion."),
                )
                correction_grade = "2b"
            extra = (
                ("ADDENDUM: Images reviewed again at the request of the referring clinician. No change.",)
                if correction_kind == "addendum"
                else ()
            )
            corrected_version = _Version(
                status="C",
                reader=exam.final_reader,
                reader_name=INTERNAL[exam.final_reader],
                external=False,
                report_time=correction_time,
                text=text,
                extra_impression=extra,
                control_id=f"HAL{accession}C",
                **common,
            )
            versions.append((correction_time, 2, corrected_version, "mllp"))
            transports.append("mllp")
        accessions.append(
            Accession(
                accession=accession,
                exam=exam_key,
                code=exam.code,
                prelim_reader=reader,
                final_reader=exam.final_reader,
                kind=kind,
                grade=_grade(kind),
                exam_time=exam_time,
                prelim_time=prelim_time,
                final_time=final_time,
                out_of_order=out_of_order,
                correction=correction_grade,
                correction_kind=correction_kind,
                correction_time=correction_time,
                transports=tuple(transports),
                mrn=mrn,
                patient=f"{family}^{given}",
            )
        )
    # Explicit scores: the final readers' own RADPEER scores typed with `overread outcomes score`.
    by_kind: dict[tuple[str, str], list[Accession]] = {}
    for a in accessions:
        by_kind.setdefault((a.prelim_reader, a.grade), []).append(a)
    picks = (
        ("NT7802", "1", "2a", "subtle finding on review; not clinically significant"),
        ("NT7741", "2a", "2b", "missed finding changes follow-up"),
        ("NT7741", "3b", "3b", "critical finding missed"),
        ("NT7802", "2a", "1", "finding not confirmed on review"),
    )
    for reader, grade, explicit, note in picks:
        chosen = by_kind[(reader, grade)][-1]
        scores.append(Score(chosen.accession, explicit, INTERNAL[chosen.final_reader][0].lower(), note))
    versions.sort(key=lambda item: (item[0], item[1]))
    messages = tuple(_message(v, transport) for _, _, v, transport in versions)
    return Month(seed, messages, tuple(accessions), tuple(scores))


def _message(v: _Version, transport: str) -> Message:
    status = _FHIR_STATUS[v.status]
    if transport == "http":
        return Message("http", _fhir(v), v.control_id, v.accession, status, "nocturna" if v.external else "ris")
    return Message("mllp", _hl7(v), v.control_id, v.accession, status, "")


def probe_prelim(reader: str, accession: str, when: datetime, seed: int = 1) -> bytes:
    """A new overnight XR chest preliminary by ``reader``, concordant text: what routing sees next."""
    rng = random.Random(seed)
    prelim_text, _ = _xr(rng, "1")
    exam = EXAMS["xr_chest"]
    v = _Version(
        accession=accession,
        exam=exam,
        status="P",
        reader=reader,
        reader_name=READERS[reader][:2],
        external=True,
        report_time=when,
        exam_time=when - timedelta(minutes=20),
        text=prelim_text,
        extra_impression=(TRAILER,),
        mrn="ZZ9299999",
        patient=("ZZPROBE", "ALDOUS"),
        birth="19700101",
        sex="M",
        control_id=f"NOC{accession}P",
        priority="R",
    )
    return _hl7(v)


def patient_markers(month: Month) -> Iterable[str]:
    """Every MRN and patient name of the month: none may appear in an output document or a log line."""
    for a in month.accessions:
        yield a.mrn
    yield from FAMILIES
    yield from GIVEN
