"""Every registered QA rule has a positive and a negative example, run through the real engine.

The per-category test modules hold the detailed cases; this table is the
audit that keeps the rule set and its tests in step: a rule added to the
registry without an example here fails ``test_every_registered_rule_has_examples``.
Each negative is a near miss of its positive (same report, one thing fixed)
where that is possible, so it shows what the rule keys on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from listener.model import ResultStatus, TextKind, Times
from listener.qa.engine import Prior, QaConfig, QaContext
from listener.qa.registry import registry
from tests.unit.qa import test_compliance as compliance
from tests.unit.qa import test_turnaround as turnaround
from tests.unit.qa.factory import RECEIVED, findings_for, make_report, pipeline
from tests.unit.qa.test_coding import _directory as coding_directory


@dataclass(frozen=True)
class Example:
    """A report (text + make_report overrides) and, when the rule needs them, a QA config and context."""

    text: str
    kw: dict[str, Any] = field(default_factory=dict)
    qa: Callable[[], QaConfig] | None = None
    context: QaContext | None = None

    def rules(self) -> set[str]:
        report = make_report(self.text, **self.kw)
        found = findings_for(report, qa=self.qa() if self.qa else None, context=self.context)
        return {f.rule for f in found}


def _ex(text: str, **kw: Any) -> Example:
    return Example(text, kw)


FULL_CHEST = (
    "INDICATION:\nCough.\nCOMPARISON:\nNone.\nFINDINGS:\nThe lungs are clear. The heart size is normal.\n"
    "IMPRESSION:\nNo acute cardiopulmonary process."
)
PTX = "INDICATION:\nChest pain.\nCOMPARISON:\nNone.\nFINDINGS:\nLarge right pneumothorax.\nIMPRESSION:\nLarge right pneumothorax."
CALLED = "\nDiscussed with Dr. Rivera by telephone at 02:14."
HEAD = "INDICATION: Headache.\nCOMPARISON: None.\n"
BODY = "FINDINGS: Clear lungs.\nIMPRESSION: Normal."
MAMMO = (
    "INDICATION:\nScreening.\nFINDINGS:\nScattered fibroglandular densities. No suspicious mass.\n"
    "IMPRESSION:\nNo mammographic evidence of malignancy. Annual screening mammography is recommended.\n"
)
WRIST_LT = {"procedure": "73110", "modifiers": ("LT",)}
OBS = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def _stat_prelim(minutes: int) -> dict[str, Any]:
    times = Times(
        observation=OBS, report=OBS + timedelta(minutes=minutes), received=OBS + timedelta(minutes=minutes + 1)
    )
    return {"priority": "stat", "status": ResultStatus.PRELIMINARY, "times": times}


def _pro_site_qa() -> QaConfig:
    """The repository's QA config at a professional-only reading site."""
    base = pipeline().qa
    assert base is not None
    return replace(base, directory=coding_directory(True))


def _priors(*priors: Prior) -> QaContext:
    return QaContext(now=RECEIVED, priors=tuple(priors))


EXAMPLES: dict[str, tuple[Example, Example]] = {
    # --- laterality
    "laterality.order_vs_report": (
        _ex(
            "FINDINGS:\nNondisplaced fracture of the right distal radius.\nIMPRESSION:\nRight distal radius fracture.",
            **WRIST_LT,
        ),
        _ex(
            "FINDINGS:\nNondisplaced fracture of the left distal radius.\nIMPRESSION:\nLeft distal radius fracture.",
            **WRIST_LT,
        ),
    ),
    "laterality.impression_vs_findings": (
        _ex("FINDINGS:\nSmall left apical pneumothorax.\nIMPRESSION:\nSmall right pneumothorax." + CALLED),
        _ex("FINDINGS:\nSmall left apical pneumothorax.\nIMPRESSION:\nSmall left pneumothorax." + CALLED),
    ),
    "laterality.impression_vs_order": (
        _ex(
            "FINDINGS:\nNondisplaced fracture of the left distal radius.\nIMPRESSION:\nFracture of the right distal radius.",
            **WRIST_LT,
        ),
        _ex(
            "FINDINGS:\nNondisplaced fracture of the left distal radius.\nIMPRESSION:\nFracture of the left distal radius.",
            **WRIST_LT,
        ),
    ),
    "laterality.impression_side_vs_findings_anatomy": (
        _ex("FINDINGS:\nThe left lower lobe is collapsed.\nIMPRESSION:\nRight lower lobe collapse."),
        _ex("FINDINGS:\nThe left lower lobe is collapsed.\nIMPRESSION:\nLeft lower lobe collapse."),
    ),
    "laterality.located_finding_side_mismatch": (
        _ex(
            "FINDINGS:\nConsolidation in the right lower lobe. Small left pleural effusion.\n"
            "IMPRESSION:\n1. Left lower lobe pneumonia.\n2. Small left pleural effusion."
        ),
        _ex(
            "FINDINGS:\nConsolidation in the right lower lobe. Small left pleural effusion.\n"
            "IMPRESSION:\n1. Right lower lobe pneumonia.\n2. Small left pleural effusion."
        ),
    ),
    # --- contradiction
    "contradiction.affirmed_and_negated": (
        _ex("FINDINGS:\nThere is a small right apical pneumothorax.\nIMPRESSION:\nNo pneumothorax."),
        _ex("FINDINGS:\nThere is a small right apical pneumothorax.\nIMPRESSION:\nNo new pneumothorax."),
    ),
    "contradiction.normal_impression": (
        _ex("FINDINGS:\nThere is a right pneumothorax.\nIMPRESSION:\nNo acute cardiopulmonary abnormality."),
        _ex(
            "FINDINGS:\nThere is left base streaky opacity due to scarring.\nIMPRESSION:\nNo acute cardiopulmonary abnormality."
        ),
    ),
    "contradiction.normal_over_findings": (
        _ex("FINDINGS:\nSmall right pleural effusion.\nIMPRESSION:\nNo acute cardiopulmonary process."),
        _ex("FINDINGS:\nStable small right pleural effusion.\nIMPRESSION:\nNo acute cardiopulmonary process."),
    ),
    # --- alignment
    "alignment.finding_missing_from_impression": (
        _ex(
            "FINDINGS:\nThere is a 9 mm nodule in the right upper lobe.\nIMPRESSION:\nNo acute cardiopulmonary process."
        ),
        _ex("FINDINGS:\nThere is a 9 mm nodule in the right upper lobe.\nIMPRESSION:\n9 mm right upper lobe nodule."),
    ),
    "alignment.impression_not_in_findings": (
        _ex(
            "FINDINGS:\nThe heart size is normal. The lungs are clear. The mediastinal contours are normal. "
            "The osseous structures are intact.\nIMPRESSION:\nRight lower lobe pneumonia."
        ),
        _ex(
            "FINDINGS:\nThe heart size is normal. There is a right lower lobe opacity. The mediastinal contours are "
            "normal. The osseous structures are intact.\nIMPRESSION:\nRight lower lobe pneumonia."
        ),
    ),
    # --- completeness
    "completeness.no_text": (Example("", {"text_kind": TextKind.NONE}), _ex(FULL_CHEST)),
    "completeness.document_only": (Example("", {"text_kind": TextKind.PDF}), _ex(FULL_CHEST)),
    "completeness.missing_impression": (
        _ex("INDICATION:\nCough.\nFINDINGS:\nThe lungs are clear."),
        _ex("INDICATION:\nCough.\nFINDINGS:\nThe lungs are clear.\nCONCLUSION:\nNormal chest."),
    ),
    "completeness.empty_impression": (
        _ex("FINDINGS:\nThe lungs are clear.\nIMPRESSION:\n"),
        _ex("FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNormal chest."),
    ),
    "completeness.required_sections": (
        _ex("INDICATION:\nPain.\nFINDINGS:\nNo hemorrhage.\nIMPRESSION:\nNormal head CT.", procedure="70450"),
        _ex(
            "INDICATION:\nPain.\nTECHNIQUE:\nAxial images without contrast.\nCOMPARISON:\nNone.\nFINDINGS:\nNo hemorrhage.\n"
            "IMPRESSION:\nNormal head CT.",
            procedure="70450",
        ),
    ),
    "completeness.birads_missing": (
        _ex(MAMMO, procedure="77067"),
        _ex(MAMMO + "BI-RADS 1: Negative.", procedure="77067"),
    ),
    "completeness.birads_recommendation": (
        _ex(
            MAMMO.replace("Annual screening mammography is recommended.", "")
            + "BI-RADS 2: Benign. Ultrasound-guided biopsy is recommended.",
            procedure="77066",
        ),
        _ex(MAMMO + "BI-RADS 2: Benign.", procedure="77066"),
    ),
    "completeness.placeholder": (
        _ex(FULL_CHEST.replace("The heart size is normal.", "The heart size is ***.")),
        _ex(FULL_CHEST),
    ),
    "completeness.truncated": (
        _ex(FULL_CHEST + " Findings are consistent with the"),
        _ex(FULL_CHEST + " Findings are consistent with atelectasis."),
    ),
    # --- communication
    "communication.critical_not_communicated": (_ex(PTX), _ex(PTX + CALLED)),
    "communication.suspected_critical_not_communicated": (
        _ex(
            "FINDINGS:\nFindings are suspicious for acute appendicitis.\nIMPRESSION:\nSuspicious for acute appendicitis."
        ),
        _ex(
            "FINDINGS:\nFindings are suspicious for acute appendicitis.\nIMPRESSION:\nSuspicious for acute appendicitis."
            + CALLED
        ),
    ),
    "communication.incomplete_communication": (
        _ex(PTX + "\nFindings discussed with Dr. Rivera."),
        _ex(PTX + CALLED),
    ),
    "communication.impression_hedging": (
        _ex(
            "FINDINGS:\nBasilar opacity.\nIMPRESSION:\nPossible atelectasis versus possible pneumonia, cannot exclude aspiration."
        ),
        _ex("FINDINGS:\nBasilar opacity.\nIMPRESSION:\nLeft basilar atelectasis, possibly pneumonia."),
    ),
    "communication.impression_no_definite": (
        _ex("FINDINGS:\nBasilar opacity.\nIMPRESSION:\n1. Possible atelectasis. 2. Possible small effusion."),
        _ex(
            "FINDINGS:\nBasilar opacity.\nIMPRESSION:\n1. Basilar opacity, possibly atelectasis. 2. Possible small effusion."
        ),
    ),
    # --- comparison
    "comparison.missing": (_ex("INDICATION: Cough.\n" + BODY), _ex("INDICATION: Cough.\nCOMPARISON: None.\n" + BODY)),
    "comparison.implied_without_statement": (
        _ex(
            "INDICATION: Cough.\nFINDINGS: Calcified granuloma, unchanged. Clear lungs.\nIMPRESSION: No acute disease."
        ),
        _ex(
            "INDICATION: Cough.\nFINDINGS: Calcified granuloma, unchanged from the prior radiograph. Clear lungs.\n"
            "IMPRESSION: No acute disease."
        ),
    ),
    "comparison.date_after_exam": (
        _ex("INDICATION: Cough.\nCOMPARISON: Chest radiograph 11/21/2026.\n" + BODY),
        _ex("INDICATION: Cough.\nCOMPARISON: Chest radiograph 11/19/2026.\n" + BODY),
    ),
    "comparison.none_with_priors": (
        Example(
            "INDICATION: Cough.\nCOMPARISON: None.\n" + BODY,
            context=_priors(Prior("ACC0", date(2026, 5, 1), "XR", "chest")),
        ),
        Example(
            "INDICATION: Cough.\nCOMPARISON: None.\n" + BODY,
            context=_priors(Prior("ACC0", date(2026, 5, 1), "XR", "head")),
        ),
    ),
    "comparison.prior_not_found": (
        Example(
            "INDICATION: Cough.\nCOMPARISON: Chest radiograph 10/01/2026.\n" + BODY,
            context=_priors(Prior("ACC0", date(2026, 5, 1), "XR", "chest")),
        ),
        Example(
            "INDICATION: Cough.\nCOMPARISON: Chest radiograph 10/01/2026.\n" + BODY,
            context=_priors(Prior("ACC0", date(2026, 10, 1), "XR", "chest")),
        ),
    ),
    # --- coding
    "coding.contrast_mismatch": (
        _ex(HEAD + "TECHNIQUE: CT of the head with contrast.\n" + BODY, procedure="70450"),
        _ex(HEAD + "TECHNIQUE: CT of the head without contrast.\n" + BODY, procedure="70450"),
    ),
    "coding.modality_mismatch": (
        _ex(HEAD + "TECHNIQUE: MRI of the brain.\nFINDINGS: Normal.", procedure="70450"),
        _ex(HEAD + "TECHNIQUE: CT of the head.\nFINDINGS: Normal.", procedure="70450"),
    ),
    "coding.body_region_mismatch": (
        _ex(HEAD + "TECHNIQUE: CT of the chest without contrast.\nFINDINGS: x.", procedure="70450"),
        _ex(HEAD + "TECHNIQUE: CT of the head without contrast.\nFINDINGS: x.", procedure="70450"),
    ),
    "coding.mammo_screening_diagnostic": (
        _ex(
            "INDICATION: Palpable lump in the left breast.\nFINDINGS: Scattered density.\nIMPRESSION: BI-RADS 1.",
            procedure="77067",
        ),
        _ex("INDICATION: Screening. No palpable abnormality.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1.", procedure="77067"),
    ),
    "coding.tomosynthesis_not_billed": (
        _ex(
            "INDICATION: Screening.\nTECHNIQUE: Bilateral 2D and tomosynthesis images.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1.",
            procedure="77067",
        ),
        _ex(
            "INDICATION: Screening.\nTECHNIQUE: Bilateral 2D and tomosynthesis images.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1.",
            procedure="77067",
            modifiers=("77063",),
        ),
    ),
    "coding.tomosynthesis_not_described": (
        _ex(
            "INDICATION: Screening.\nTECHNIQUE: CC and MLO views.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1.",
            procedure="77067",
            modifiers=("77063",),
        ),
        _ex(
            "INDICATION: Screening.\nTECHNIQUE: CC and MLO views with tomosynthesis.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1.",
            procedure="77067",
            modifiers=("77063",),
        ),
    ),
    "coding.consultation_in_house": (
        _ex("INDICATION: Cough.\nFINDINGS: Clear lungs.\nIMPRESSION: Normal.", procedure="76140"),
        _ex(
            "INDICATION: Cough. Outside images submitted for review.\nFINDINGS: Clear lungs.\nIMPRESSION: Normal.",
            procedure="76140",
        ),
    ),
    "coding.outside_study_hint": (
        _ex(
            "INDICATION: Knee pain. Received for second opinion.\nFINDINGS: Intact ligaments.\nIMPRESSION: Normal.",
            procedure="73721",
        ),
        _ex(
            "INDICATION: Knee pain.\nCOMPARISON: Outside radiographs from 2025.\nFINDINGS: x.\nIMPRESSION: Normal.",
            procedure="73721",
        ),
    ),
    "coding.limited_without_modifier": (
        _ex(
            "INDICATION: Pain.\nTECHNIQUE: Limited ultrasound of the abdomen.\nFINDINGS: x.\nIMPRESSION: Normal.",
            procedure="76700",
        ),
        _ex(
            "INDICATION: Pain.\nTECHNIQUE: Limited ultrasound of the abdomen.\nFINDINGS: x.\nIMPRESSION: Normal.",
            procedure="76700",
            modifiers=("52",),
        ),
    ),
    "coding.professional_component_missing": (
        Example("INDICATION: Cough.\nFINDINGS: Clear.\nIMPRESSION: Normal.", qa=_pro_site_qa),
        Example("INDICATION: Cough.\nFINDINGS: Clear.\nIMPRESSION: Normal.", {"modifiers": ("26",)}, qa=_pro_site_qa),
    ),
    "coding.reason_missing": (
        _ex("FINDINGS: Clear lungs.\nIMPRESSION: Normal."),
        _ex("FINDINGS: Clear lungs.\nIMPRESSION: Normal.", reason="Cough"),
    ),
    # "Two views" billed as one view; the same views billed as two (71046) are clean. A comparison
    # study's "prior two views" never counts (tests/unit/qa/test_coding.py has that near miss).
    "coding.view_count_mismatch": (
        _ex("INDICATION: Cough.\nTECHNIQUE: Two views of the chest.\n" + BODY, procedure="71045"),
        _ex("INDICATION: Cough.\nTECHNIQUE: Two views of the chest.\n" + BODY, procedure="71046"),
    ),
    # --- compliance
    "compliance.reader_not_licensed": (
        Example(compliance.TEXT, qa=lambda: compliance.qa(readers=(compliance.reader(licensed=("CA", "NY")),))),
        Example(compliance.TEXT, qa=lambda: compliance.qa(readers=(compliance.reader(licensed=("TX",)),))),
    ),
    "compliance.final_read_outside_us": (
        Example(
            compliance.TEXT,
            {"financial_class": "MC"},
            qa=lambda: compliance.qa(readers=(compliance.reader(country="IN", licensed=("TX",)),)),
        ),
        Example(
            compliance.TEXT,
            {"financial_class": "MC"},
            qa=lambda: compliance.qa(readers=(compliance.reader(country="US", licensed=("TX",)),)),
        ),
    ),
    # --- turnaround
    "turnaround.preliminary_late": (
        Example(turnaround.TEXT, _stat_prelim(45), qa=lambda: turnaround.qa()),
        Example(turnaround.TEXT, _stat_prelim(20), qa=lambda: turnaround.qa()),
    ),
    # --- consistency
    "consistency.sex_anatomy": (
        _ex("FINDINGS:\nThe prostate is enlarged.\nIMPRESSION:\nProstatomegaly.", sex="F", procedure="74176"),
        _ex("FINDINGS:\nThe prostate is enlarged.\nIMPRESSION:\nProstatomegaly.", sex="M", procedure="74176"),
    ),
    "consistency.age_implausible": (
        _ex(
            "FINDINGS:\nIntrauterine pregnancy.\nIMPRESSION:\nSingle live intrauterine pregnancy.",
            birth_date=date(2024, 1, 1),
        ),
        _ex(
            "FINDINGS:\nIntrauterine pregnancy.\nIMPRESSION:\nSingle live intrauterine pregnancy.",
            birth_date=date(1996, 1, 1),
        ),
    ),
}


#: Further forms of a rule, each with its near miss: what a rule was extended to
#: catch keeps its own example (rule id, positive, negative).
MORE_EXAMPLES: tuple[tuple[str, Example, Example], ...] = (
    # interval language of another form; "interval" before a plan is no comparison
    (
        "comparison.implied_without_statement",
        _ex("INDICATION: Cough.\nFINDINGS: Interval development of a small left effusion.\nIMPRESSION: Effusion."),
        _ex(
            "INDICATION: Cough.\nFINDINGS: Small left effusion.\n"
            "IMPRESSION: Effusion. Short interval follow-up is recommended."
        ),
    ),
    # a technique line and a findings sentence that state different views, one outside the code's range;
    # the near miss states the same views twice
    (
        "coding.view_count_mismatch",
        _ex(
            "INDICATION: Cough.\nTECHNIQUE: Single frontal view of the chest.\n"
            "FINDINGS: The examination consists of frontal and lateral radiographs of the chest. Clear lungs.\n"
            "IMPRESSION: Normal.",
            procedure="71046",
        ),
        _ex(
            "INDICATION: Cough.\nTECHNIQUE: PA and lateral views of the chest.\n"
            "FINDINGS: The examination consists of frontal and lateral radiographs of the chest. Clear lungs.\n"
            "IMPRESSION: Normal.",
            procedure="71046",
        ),
    ),
    # contrast stated as "following intravenous contrast"; the near miss is oral contrast only
    (
        "coding.contrast_mismatch",
        _ex(
            "INDICATION: Pain.\nTECHNIQUE: CT abdomen and pelvis following intravenous contrast.\n" + BODY,
            procedure="74176",
        ),
        _ex("INDICATION: Pain.\nTECHNIQUE: CT abdomen and pelvis following oral contrast.\n" + BODY, procedure="74176"),
    ),
    # the region of a passive technique sentence ("images were obtained through the facial bones")
    (
        "coding.body_region_mismatch",
        _ex("TECHNIQUE: Axial CT images were obtained through the facial bones.\n" + BODY, procedure="72131"),
        _ex("TECHNIQUE: Axial CT images were obtained through the facial bones.\n" + BODY, procedure="70486"),
    ),
    # an MRI billed as a radiograph: radiographs named only in a plan do not cover the code
    (
        "coding.modality_mismatch",
        _ex(
            "EXAM: MRI right knee.\nFINDINGS: Possible Segond fracture; correlation with radiographs is recommended.",
            procedure="73560",
        ),
        _ex("EXAM: MRI right knee.\nFINDINGS: Radiographs obtained today show a Segond fracture.", procedure="73560"),
    ),
    # fewer images than the views stated cannot both be true; more images may hold a repeated exposure
    (
        "coding.view_count_mismatch",
        _ex(
            "INDICATION: Cough.\nTECHNIQUE: Three views of the chest.\nFINDINGS: 2 images. Clear lungs.",
            procedure="71046",
        ),
        _ex(
            "INDICATION: Cough.\nTECHNIQUE: Two views of the chest.\nFINDINGS: 3 images. Clear lungs.",
            procedure="71046",
        ),
    ),
    # an impression that affirms a finding in one numbered item and denies it in another
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nLeft lower lobe airspace opacity.\nIMPRESSION:\n1. Left lower lobe pneumonia.\n2. No pneumonia."
        ),
        _ex(
            "FINDINGS:\nLeft lower lobe airspace opacity.\nIMPRESSION:\n1. Left lower lobe pneumonia.\n"
            "2. No pneumothorax."
        ),
    ),
    # a bilateral finding in the findings denied in the impression
    (
        "contradiction.affirmed_and_negated",
        _ex("FINDINGS:\nSmall bilateral pleural effusions. Mild cardiomegaly.\nIMPRESSION:\nNo pleural effusion."),
        _ex("FINDINGS:\nSmall bilateral pleural effusions. Mild cardiomegaly.\nIMPRESSION:\nNo new pleural effusion."),
    ),
    # a non-significant finding (volume loss) affirmed and denied
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nVolume loss in the left lower lobe.\nIMPRESSION:\n1. Left lower lobe volume loss.\n2. No volume loss."
        ),
        _ex(
            "FINDINGS:\nVolume loss in the left lower lobe.\nIMPRESSION:\n1. Left lower lobe volume loss.\n"
            "2. No right lower lobe volume loss."
        ),
    ),
    # a site-variable finding (nodule) denied in a numbered item
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nAn 8 mm nodule in the right upper lobe.\nIMPRESSION:\n1. 8 mm right upper lobe nodule.\n2. No pulmonary nodule."
        ),
        _ex(
            "FINDINGS:\nAn 8 mm nodule in the right upper lobe.\nIMPRESSION:\n1. 8 mm right upper lobe nodule.\n"
            "2. No other pulmonary nodule."
        ),
    ),
    # a denial with a qualifier contradicts an affirmation with the same qualifier
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nThe lungs are hypoventilated. There is focal consolidation.\nIMPRESSION:\nNo focal consolidation."
        ),
        _ex(
            "FINDINGS:\nThe lungs are hypoventilated. There is patchy consolidation.\nIMPRESSION:\nNo focal consolidation."
        ),
    ),
    # a denial list whose "no" was dropped affirms its findings
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nThe lungs are clear. Pleural effusion or pneumothorax.\nIMPRESSION:\n"
            "No acute cardiopulmonary abnormality. Specifically, no pneumothorax."
        ),
        _ex(
            "FINDINGS:\nLeft basilar opacity, atelectasis or pneumonia.\nIMPRESSION:\n"
            "Left basilar opacity. No pneumothorax."
        ),
    ),
    # a benign-looking finding affirmed and denied bare in the impression
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nHeart size normal.\nIMPRESSION:\nCalcified right lower lung nodule as before. No evidence of nodule."
        ),
        _ex(
            "FINDINGS:\nHeart size normal.\nIMPRESSION:\nCalcified right lower lung nodule as before. No suspicious nodule."
        ),
    ),
    # a bare "no opacity" against an affirmed airspace opacity
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nMinimal streaky airspace opacities in the lower lobes.\nIMPRESSION:\n1. Cardiomegaly.\n2. No opacities."
        ),
        _ex(
            "FINDINGS:\nMinimal streaky airspace opacities in the lower lobes.\nIMPRESSION:\n1. Cardiomegaly.\n"
            "2. No new opacities."
        ),
    ),
    # an outright denial ("2. No atelectasis.") against a hedged statement of the same finding
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nStreaky left basilar opacity.\nIMPRESSION:\n1. Probable left basilar atelectasis.\n"
            "2. No atelectasis."
        ),
        _ex(
            "FINDINGS:\nStreaky left basilar opacity.\nIMPRESSION:\n1. Probable left basilar atelectasis.\n"
            "2. No definite atelectasis."
        ),
    ),
    # ... but not against one of alternatives, which the denial may settle
    (
        "contradiction.affirmed_and_negated",
        _ex("FINDINGS:\nRetrocardiac density, likely a hiatal hernia.\nIMPRESSION:\nNegative for hernia."),
        _ex("FINDINGS:\nRetrocardiac density, a hiatal hernia or a lung mass.\nIMPRESSION:\nNegative for hernia."),
    ),
    # ... except inside the impression, where a differential then flatly denied contradicts itself
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nLeft basilar linear opacity.\nIMPRESSION:\n1. Left basilar atelectasis or scarring.\n"
            "2. No atelectasis."
        ),
        _ex(
            "FINDINGS:\nLeft basilar linear opacity, atelectasis or scarring.\nIMPRESSION:\n1. Left basilar "
            "scarring.\n2. No atelectasis."
        ),
    ),
    # words before an earlier item of a denial list narrow that item only
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nThere is no air space infiltrate, pleural effusion or pneumothorax.\nIMPRESSION:\n"
            "There is a small pneumothorax."
        ),
        _ex(
            "FINDINGS:\nThere is no air space infiltrate, pleural effusion or large pneumothorax.\nIMPRESSION:\n"
            "There is a small pneumothorax."
        ),
    ),
    # an outright denial may name the side ("No bilateral effusions.")
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nModerate interstitial edema with probable bilateral effusions.\nIMPRESSION:\nNo bilateral effusions."
        ),
        _ex(
            "FINDINGS:\nModerate interstitial edema with probable bilateral effusions.\nIMPRESSION:\nNo large effusions."
        ),
    ),
    # scoliosis is a finding of the vocabulary (policies/terms/findings.yaml)
    (
        "contradiction.affirmed_and_negated",
        _ex("FINDINGS:\nStable dextroscoliosis. The lungs are clear.\nIMPRESSION:\n1. Clear lungs.\n2. No scoliosis."),
        _ex("FINDINGS:\nStable dextroscoliosis. The lungs are clear.\nIMPRESSION:\n1. Clear lungs.\n2. No kyphosis."),
    ),
    # "negative for opacity" is a bare denial of any opacity
    (
        "contradiction.affirmed_and_negated",
        _ex("FINDINGS:\nBandlike opacities are present in the right base.\nIMPRESSION:\nNegative for opacity."),
        _ex("FINDINGS:\nBandlike opacities are present in the right base.\nIMPRESSION:\nNegative for new opacity."),
    ),
    # an impression made only of "no acute ..." over stable cardiomegaly it does not name
    (
        "contradiction.normal_over_findings",
        _ex("FINDINGS:\nStable mild cardiomegaly. Lungs are clear.\nIMPRESSION:\nNo acute cardiopulmonary process."),
        _ex(
            "FINDINGS:\nStable mild cardiomegaly. Lungs are clear.\nIMPRESSION:\n"
            "Stable cardiomegaly. No acute cardiopulmonary process."
        ),
    ),
    # ... but a borderline heart is no cardiomegaly to name
    (
        "contradiction.normal_over_findings",
        _ex("FINDINGS:\nModerate cardiomegaly. Lungs are clear.\nIMPRESSION:\nNo acute cardiopulmonary process."),
        _ex("FINDINGS:\nBorderline cardiomegaly. Lungs are clear.\nIMPRESSION:\nNo acute cardiopulmonary process."),
    ),
    # a plain normal impression over a finding of any size or age on the images
    (
        "contradiction.normal_over_findings",
        _ex(
            "FINDINGS:\nLungs are clear. Healing fracture of the left posterolateral 7th rib.\nIMPRESSION:\nNegative chest."
        ),
        _ex("FINDINGS:\nLungs are clear. History of left 7th rib fracture.\nIMPRESSION:\nNegative chest."),
    ),
    (
        "contradiction.normal_over_findings",
        _ex(
            "FINDINGS:\nThere is minimal right pleural effusion. Heart is normal.\nIMPRESSION:\nNormal chest radiograph."
        ),
        _ex(
            "FINDINGS:\nThere is possibly minimal right pleural effusion. Heart is normal.\nIMPRESSION:\n"
            "Normal chest radiograph."
        ),
    ),
    # an age-indeterminate fracture is a fracture on the images, only its age is uncertain
    (
        "contradiction.normal_over_findings",
        _ex("FINDINGS:\nLungs are clear. Several age-indeterminate left rib fractures.\nIMPRESSION:\nNegative chest."),
        _ex(
            "FINDINGS:\nLungs are clear. Indeterminate lucency, possibly left rib fractures.\nIMPRESSION:\nNegative chest."
        ),
    ),
    # airspace disease is not a normal chest, however minimal
    (
        "contradiction.normal_over_findings",
        _ex("FINDINGS:\nHeart normal. Minimal retrocardiac airspace disease.\nIMPRESSION:\nNegative chest."),
        _ex("FINDINGS:\nHeart normal. No retrocardiac airspace disease.\nIMPRESSION:\nNegative chest."),
    ),
    # signs are not diagnoses: a midline shift is not herniation, its own denial contradicts it
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nAcute right subdural hematoma with 6 mm of leftward midline shift.\nIMPRESSION:\nNo midline shift."
        ),
        _ex(
            "FINDINGS:\nAcute right subdural hematoma with 6 mm of leftward midline shift.\nIMPRESSION:\nNo uncal herniation."
        ),
    ),
    # findings that name both sides of the chest: the side compared per place word
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nPatchy left lower lobe airspace disease. Right mid lung subsegmental atelectasis.\n"
            "IMPRESSION:\n1. Patchy right lower lobe airspace disease.\n2. Right mid lung atelectasis."
        ),
        _ex(
            "FINDINGS:\nPatchy airspace disease in both lower lobes. Right mid lung subsegmental atelectasis.\n"
            "IMPRESSION:\n1. Patchy right lower lobe airspace disease.\n2. Right mid lung atelectasis."
        ),
    ),
    # a sentence naming both sides: each side word read with the place right after it
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nLeft midlung airspace opacity. There is left basilar opacity as well.\n"
            "IMPRESSION:\nProbable left midlung and right basilar atelectasis."
        ),
        _ex(
            "FINDINGS:\nLeft midlung airspace opacity. There is left basilar opacity as well.\n"
            "IMPRESSION:\nProbable left midlung and left basilar atelectasis, left greater than right."
        ),
    ),
    # a device's side ("right internal jugular catheter"), which names no paired anatomy
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nRight internal jugular central venous catheter tip in the right atrium. Stable right upper "
            "lung lucency.\nIMPRESSION:\n1. Left internal jugular catheter tip in the right atrium.\n"
            "2. Stable right upper lung lucency."
        ),
        _ex(
            "FINDINGS:\nRight internal jugular central venous catheter tip in the right atrium. Stable right upper "
            "lung lucency.\nIMPRESSION:\n1. Left internal jugular catheter placed since the prior study.\n"
            "2. Stable right upper lung lucency."
        ),
    ),
    # a measured nodule that "overlies" a rib is placed there, not explained away
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nA 9 mm pulmonary nodule is seen partially overlying the posterior right 6th rib. Lungs otherwise "
            "clear.\nIMPRESSION:\nNo acute abnormality."
        ),
        _ex(
            "FINDINGS:\nA pulmonary nodule is seen partially overlying the posterior right 6th rib. Lungs otherwise "
            "clear.\nIMPRESSION:\nNo acute abnormality."
        ),
    ),
    # the located rule against a one-sided order
    (
        "laterality.located_finding_side_mismatch",
        _ex(
            "FINDINGS:\nLeft wrist: soft tissue swelling. Nondisplaced fracture of the right distal radius.\n"
            "IMPRESSION:\nLeft wrist soft tissue swelling. Nondisplaced fracture of the right distal radius.",
            **WRIST_LT,
        ),
        _ex(
            "FINDINGS:\nLeft wrist: soft tissue swelling. Nondisplaced fracture of the left distal radius.\n"
            "IMPRESSION:\nLeft wrist soft tissue swelling. Nondisplaced fracture of the left distal radius.",
            **WRIST_LT,
        ),
    ),
    # "no focal" / "no acute" deny a plainly stated consolidation or infiltrate
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nThe lungs are hypoventilated. There is mild consolidation.\nIMPRESSION:\nNo focal consolidation."
        ),
        _ex(
            "FINDINGS:\nThe lungs are hypoventilated. There is patchy bibasilar consolidation.\nIMPRESSION:\n"
            "No focal consolidation."
        ),
    ),
    (
        "contradiction.affirmed_and_negated",
        _ex("FINDINGS:\nNo acute infiltrate or pleural effusion.\nIMPRESSION:\nA small right basilar infiltrate."),
        _ex(
            "FINDINGS:\nNo acute infiltrate or pleural effusion.\nIMPRESSION:\n"
            "Chronic right basilar infiltrate, unchanged."
        ),
    ),
    # a healing fracture is on the images: an outright "No fracture." denies it; "no acute fracture" does not
    (
        "contradiction.affirmed_and_negated",
        _ex("FINDINGS:\nThe lungs are clear. Healing left 7th rib fracture.\nIMPRESSION:\nNo fracture."),
        _ex("FINDINGS:\nThe lungs are clear. Healing left 7th rib fracture.\nIMPRESSION:\nNo acute fracture."),
    ),
    # a denial dated by a device event ("following removal of the chest tube")
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nInterval removal of the left chest tube. There is a pneumothorax.\nIMPRESSION:\n"
            "No pneumothorax following removal of the left chest tube."
        ),
        _ex(
            "FINDINGS:\nInterval removal of the left chest tube. There is a small right apical pneumothorax.\n"
            "IMPRESSION:\nNo pneumothorax following removal of the left chest tube."
        ),
    ),
    # a next sentence about another finding does not explain a measured nodule or a fracture away
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nThere is a 1 cm nodule in the left lung base. There is a calcified right hilar lymph node "
            "and a right granuloma. Heart size is normal.\nIMPRESSION:\nNo acute cardiopulmonary process."
        ),
        _ex(
            "FINDINGS:\nThere is a 1 cm nodule in the left lung base. This is most consistent with a calcified "
            "granuloma. Heart size is normal.\nIMPRESSION:\nNo acute cardiopulmonary process."
        ),
    ),
    # a small pleural effusion belongs in the impression; a trace one does not
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nMarked enlargement of the cardiac silhouette. A small right pleural effusion is present. "
            "No pneumothorax.\nIMPRESSION:\nLarge pericardial effusion."
        ),
        _ex(
            "FINDINGS:\nMarked enlargement of the cardiac silhouette. A trace right pleural effusion is present. "
            "No pneumothorax.\nIMPRESSION:\nLarge pericardial effusion."
        ),
    ),
    # "projecting" after a hernia places it; before it, it places the shadow the hernia is offered for
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nThere is a hiatal hernia with soft tissue projecting behind the mediastinum. The lungs are "
            "clear.\nIMPRESSION:\nNo acute cardiopulmonary finding."
        ),
        _ex(
            "FINDINGS:\nRadiodensity projecting over the cardiac silhouette, representing a hiatal hernia. The lungs "
            "are clear.\nIMPRESSION:\nNo acute cardiopulmonary finding."
        ),
    ),
    # "there appears to be" states a finding; "appears to represent" offers what it may be
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nThe lungs are clear. There appears to be a mildly displaced fracture of the mid right "
            "clavicle.\nIMPRESSION:\nNo acute pulmonary findings."
        ),
        _ex(
            "FINDINGS:\nThe lungs are clear. A lucency of the mid right clavicle appears to represent a mildly "
            "displaced fracture.\nIMPRESSION:\nNo acute pulmonary findings."
        ),
    ),
    # a de-identified word elsewhere in the sentence does not soften the finding; one that may qualify it does
    (
        "contradiction.normal_over_findings",
        _ex(
            "FINDINGS:\nBlunting of the left costophrenic XXXX consistent with a small left pleural effusion. "
            "The right lung is clear.\nIMPRESSION:\nNo acute cardiopulmonary process."
        ),
        _ex(
            "FINDINGS:\nSmall left pleural effusion, which is XXXX. The right lung is clear.\nIMPRESSION:\n"
            "No acute cardiopulmonary process."
        ),
    ),
    # round 5: a short findings section that describes the chest is compared; a line naming the views is not
    (
        "alignment.impression_not_in_findings",
        _ex(
            "FINDINGS:\nCardiomegaly. No pneumothorax or pleural effusion. Clear lungs.\nIMPRESSION:\n1. Cardiomegaly. 2. Small hiatal hernia."
        ),
        _ex("FINDINGS:\nPA and lateral views of the chest.\nIMPRESSION:\n1. Cardiomegaly. 2. Small hiatal hernia."),
    ),
    # round 5: lucent lungs are no sign of a fracture; a lucency through a rib is
    (
        "alignment.impression_not_in_findings",
        _ex(
            "FINDINGS:\nThe lungs are hyperinflated, with upper lobe areas of lung lucency suggesting emphysema. "
            "No pleural effusion or pneumothorax. Heart size is normal.\nIMPRESSION:\nEmphysema. Old healed left "
            "rib fracture."
        ),
        _ex(
            "FINDINGS:\nThe lungs are hyperinflated, with upper lobe areas of lung lucency suggesting emphysema. "
            "There is a lucency through the lateral left 6th rib. Heart size is normal.\nIMPRESSION:\nEmphysema. "
            "Old healed left rib fracture."
        ),
    ),
    # round 5: interstitial opacities at the bases are no sign of an effusion; basilar opacities are
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nThe heart is enlarged. Coarse interstitial opacities are seen in both lungs. There are "
            "small bilateral pleural effusions.\nIMPRESSION:\nCardiomegaly with coarse lower lobe interstitial "
            "opacities."
        ),
        _ex(
            "FINDINGS:\nThe heart is enlarged. Coarse interstitial opacities are seen in both lungs. There are "
            "small bilateral pleural effusions.\nIMPRESSION:\nCardiomegaly with bibasilar opacities."
        ),
    ),
    # round 5: a hedge about a measured nodule's make-up does not explain the nodule away; a benign cause does
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nThe lungs are clear otherwise. In the left mid lung there is a 1.5 cm nodule. This appears "
            "dense and may contain calcium.\nIMPRESSION:\nComparison with old films would be useful."
        ),
        _ex(
            "FINDINGS:\nThe lungs are clear otherwise. In the left mid lung there is a 1.5 cm nodule. This may be "
            "a nipple shadow.\nIMPRESSION:\nComparison with old films would be useful."
        ),
    ),
    # round 5: "there appears to be" states a finding under "no acute"; "appears to represent" offers one
    (
        "contradiction.normal_over_findings",
        _ex(
            "FINDINGS:\nThe heart is normal. There appears to be a mildly displaced fracture of the mid right "
            "clavicle.\nIMPRESSION:\nNo acute cardiopulmonary abnormality."
        ),
        _ex(
            "FINDINGS:\nThe heart is normal. A lucency of the mid right clavicle appears to represent a mildly "
            "displaced fracture.\nIMPRESSION:\nNo acute cardiopulmonary abnormality."
        ),
    ),
    # round 5: "compared with the prior study" and a differential ("atelectasis versus infiltrate") set no sides
    # against each other; "more ... in the right lung base than in the left" does
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nCompared with the prior study, there is mildly increased streaky airspace disease in the "
            "right lung base. No pneumothorax.\nIMPRESSION:\nElevation of the right hemidiaphragm with mildly "
            "increased left basilar airspace disease, atelectasis versus infiltrate."
        ),
        _ex(
            "FINDINGS:\nThere is more streaky airspace disease in the right lung base than in the left. No "
            "pneumothorax.\nIMPRESSION:\nElevation of the right hemidiaphragm with mildly increased left basilar "
            "airspace disease, atelectasis versus infiltrate."
        ),
    ),
    # round 5: calcified nodules are nodules to a bare "No nodules."; "No suspicious nodules." leaves them alone
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nThe heart is normal. Scattered bilateral calcified pulmonary nodules.\nIMPRESSION:\n"
            "No acute cardiopulmonary process. No nodules."
        ),
        _ex(
            "FINDINGS:\nThe heart is normal. Scattered bilateral calcified pulmonary nodules.\nIMPRESSION:\n"
            "No acute cardiopulmonary process. No suspicious nodules."
        ),
    ),
    # round 5: a denial of any opacity may name a side; the affirmed opacity must be on it
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nThere are bilateral opacities most prominent in the lower lobes. No pneumothorax.\n"
            "IMPRESSION:\nNo bilateral opacities."
        ),
        _ex("FINDINGS:\nThere are opacities in the right lower lobe. No pneumothorax.\nIMPRESSION:\nNo left opacity."),
    ),
    # round 5: a fracture's sign in the impression counts at the fracture's bone, not at other bones
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nMild cardiomegaly. Wedge deformity of T12 and L1, unchanged. Fracture of the right proximal "
            "humerus, incompletely evaluated.\nIMPRESSION:\n1. No acute abnormality of the chest. 2. Wedge "
            "deformities of T12 and L1, unchanged."
        ),
        _ex(
            "FINDINGS:\nMild cardiomegaly. Wedge deformity of T12 and L1, unchanged. Fracture of the right proximal "
            "humerus, incompletely evaluated.\nIMPRESSION:\n1. No acute abnormality of the chest. 2. Cortical "
            "irregularity of the right proximal humerus."
        ),
    ),
    # round 5: a related finding named only as a condition does not name the nodule; one offered as likely does
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nThere is a discrete 1.4 cm nodule in the right lower lobe. Heart size is normal.\n"
            "IMPRESSION:\nNegative for acute cardiopulmonary disease. If the patient is at high risk for "
            "malignancy, consider CT."
        ),
        _ex(
            "FINDINGS:\nThere is a discrete 1.4 cm nodule in the right lower lobe. Heart size is normal.\n"
            "IMPRESSION:\nNegative for acute cardiopulmonary disease. Possible malignancy; consider CT."
        ),
    ),
    # round 5: an INTERPRETATION before an IMPRESSION is the findings; alone, it is the impression
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "EXAM: , Chest PA and lateral.,INTERPRETATION: , There is a 1.5 cm nodule in the right lower lobe.  "
            "The heart is normal.,IMPRESSION:, No acute cardiopulmonary abnormality."
        ),
        _ex(
            "EXAM: , Chest PA and lateral.,INTERPRETATION: , There is a 1.5 cm nodule in the right lower lobe.  "
            "The heart is normal."
        ),
    ),
    # round 5: "minimal" grades a fracture's displacement, it does not soften the fracture; a hedge does
    (
        "contradiction.normal_over_findings",
        _ex(
            "FINDINGS:\nThere is a fracture of the frontal process of the maxilla with angulation to the right and "
            "very minimal displacement of the distal fragments. The orbits are normal.\nIMPRESSION:\nNo acute "
            "abnormality."
        ),
        _ex(
            "FINDINGS:\nThere is possibly a fracture of the frontal process of the maxilla with angulation to the "
            "right and very minimal displacement of the distal fragments. The orbits are normal.\nIMPRESSION:\nNo "
            "acute abnormality."
        ),
    ),
    # round 5: a measurement between the side word and the finding does not count toward the reach
    (
        "laterality.located_finding_side_mismatch",
        _ex(
            "FINDINGS:\nThe right ovary is normal in size. The left ovary is enlarged, containing a 6.0 x 3.5 x 3.7 "
            "cm complex cystic mass with thick septations.\nIMPRESSION:\nComplex cystic right ovarian mass."
        ),
        _ex(
            "FINDINGS:\nThe right ovary is normal in size. The left ovary is enlarged, containing a 6.0 x 3.5 x 3.7 "
            "cm complex cystic mass with thick septations.\nIMPRESSION:\nComplex cystic left ovarian mass."
        ),
    ),
    # round 5: a denied sign ("negative for ... density") describes no nodule; a stated one does
    (
        "alignment.impression_not_in_findings",
        _ex(
            "FINDINGS:\nThe heart is normal. Biapical pleural thickening. Negative for retrosternal density. No "
            "pneumothorax.\nIMPRESSION:\nRight upper lobe nodule."
        ),
        _ex(
            "FINDINGS:\nThe heart is normal. Biapical pleural thickening. There is a rounded density in the right "
            "upper lung. No pneumothorax.\nIMPRESSION:\nRight upper lobe nodule."
        ),
    ),
    # round 5: a next sentence hedging what a finding may cause leaves it standing; one hedging what it is does not
    (
        "alignment.finding_missing_from_impression",
        _ex(
            "FINDINGS:\nThere is a right inguinal hernia containing a loop of small bowel. This may produce a partial "
            "obstruction. The bladder is normal.\nIMPRESSION:\nDiverticulosis without diverticulitis."
        ),
        _ex(
            "FINDINGS:\nThere is a right inguinal hernia containing a loop of small bowel. This may be a fat-containing "
            "hernia only. The bladder is normal.\nIMPRESSION:\nDiverticulosis without diverticulitis."
        ),
    ),
    # round 5: an impression that places an opacity ("projecting over") and then denies any contradicts itself;
    # the findings' placed opacity may be a shadow the impression settles
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nThere is an opacity projecting over the left midlung. No effusion.\nIMPRESSION:\nOpacity "
            "projecting over the left midlung. Comparison films would be useful. There is no opacity."
        ),
        _ex(
            "FINDINGS:\nThere is an opacity projecting over the left midlung. No effusion.\nIMPRESSION:\nComparison "
            "films would be useful. There is no opacity."
        ),
    ),
    # round 5: in a multi-site impression, a denial that is a numbered item of its own denies at every site;
    # one under a site heading ("3. Right humerus. 1. No fracture.") denies at that site only
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nChest. A minimally displaced fracture of the right 4th rib. Right shoulder. The alignment is "
            "normal. Right humerus. The cortex is intact.\nIMPRESSION:\n1. Chest. Right 4th rib fracture. 2. Right "
            "shoulder negative. 3. Right humerus negative. 4. No fracture."
        ),
        _ex(
            "FINDINGS:\nChest. A minimally displaced fracture of the right 4th rib. Right shoulder. The alignment is "
            "normal. Right humerus. The cortex is intact.\nIMPRESSION:\n1. Chest. Right 4th rib fracture. 2. Right "
            "shoulder negative. 3. Right humerus. 1. No fracture."
        ),
    ),
    # round 5: "no prior scans for comparison" is no sentence about the past; "on the prior scan" is
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nThere is abnormal activity in the posterior left paraspinal region. There is a hypermetabolic "
            "mass in the region of the right hilum with an SUV of 18.\nIMPRESSION:\nNo prior PET scans for "
            "comparison, there is a large lesion in the area of the left hilum with an SUV of 18."
        ),
        _ex(
            "FINDINGS:\nThere is abnormal activity in the posterior left paraspinal region. There is a hypermetabolic "
            "mass in the region of the right hilum with an SUV of 18.\nIMPRESSION:\nOn the prior PET scan, there "
            "was a large lesion in the area of the left hilum."
        ),
    ),
    # round 5: "versus" between two places ("left midlung ... versus ... right major fissure") sets no sides
    # against each other; between the same place on both sides it does
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nThe heart is normal. Minimal atelectasis in the left midlung zone versus scarring in the "
            "right major fissure.\nIMPRESSION:\nMinimal atelectasis in the right midlung zone."
        ),
        _ex(
            "FINDINGS:\nThe heart is normal. Minimal atelectasis in the left midlung zone versus the right midlung "
            "zone.\nIMPRESSION:\nMinimal atelectasis in the right midlung zone."
        ),
    ),
    # round 6: "3. Left knee. Joint effusion. 4. No fracture.": the item before opens with its own site heading,
    # so the short sentence after it is that item's content and "4." denies at every site; a site heading
    # right before the denial ("3. Joint effusion. Left knee. 4. No fracture.") still keeps it to that site
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nChest. The lungs are clear. Right shoulder. Fracture of the right scapula. Left knee. Small "
            "joint effusion.\nIMPRESSION:\n1. Chest. Clear lungs. 2. Right shoulder. Scapular fracture. 3. Left "
            "knee. Joint effusion. 4. No fracture."
        ),
        _ex(
            "FINDINGS:\nChest. The lungs are clear. Right shoulder. Fracture of the right scapula. Left knee. Small "
            "joint effusion.\nIMPRESSION:\n1. Chest. Clear lungs. 2. Right shoulder. Scapular fracture. 3. Joint "
            "effusion. Left knee. 4. No fracture."
        ),
    ),
    # round 6: the left lung has no middle lobe; with a right middle lobe in the findings, the impression's
    # "left middle lobe" is a wrong side even when the findings place something else on the left
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nCalcified granuloma in the left upper lobe. A nodule is seen in the right middle lobe which "
            "corresponds with one of the nodules on the previous CT scan.\nIMPRESSION:\n1. Left middle lobe lung "
            "nodule."
        ),
        _ex(
            "FINDINGS:\nCalcified granuloma in the left upper lobe. A nodule is seen in the right middle lobe which "
            "corresponds with one of the nodules on the previous CT scan.\nIMPRESSION:\n1. Right middle lobe lung "
            "nodule."
        ),
    ),
    # round 6: a numbered rib is one place: the findings name ribs on both sides, but the 8th only on the left
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nThere is a moderate right pneumothorax. There is a minimally displaced left lateral 8th rib "
            "fracture and a nondisplaced right lateral 7th rib fracture.\nIMPRESSION:\n1. Moderate right "
            "pneumothorax. 2. Minimally displaced right lateral 8th rib fracture. Nondisplaced right 7th rib fracture."
        ),
        _ex(
            "FINDINGS:\nThere is a moderate right pneumothorax. There is a minimally displaced left lateral 8th rib "
            "fracture and a nondisplaced right lateral 7th rib fracture.\nIMPRESSION:\n1. Moderate right "
            "pneumothorax. 2. Minimally displaced left lateral 8th rib fracture. Nondisplaced right 7th rib fracture."
        ),
    ),
    # round 6: "adjacent to the mass" refers back to the mass the findings placed before; the side word of
    # that sentence places the hematoma, not the mass (a second mass named there is placed by it)
    (
        "laterality.located_finding_side_mismatch",
        _ex(
            "FINDINGS:\nThere is a 2.1 cm cortical mass in the inferior pole of the left kidney. After the biopsy "
            "there is a small hematoma posterior to the right kidney in its inferior pole adjacent to the mass.\nIMPRESSION:\n1. Biopsy "
            "of the inferior pole right renal mass. 2. Small hematoma."
        ),
        _ex(
            "FINDINGS:\nThere is a 2.1 cm cortical mass in the inferior pole of the left kidney. After the biopsy "
            "there is a small hematoma posterior to the right kidney in its inferior pole adjacent to a second mass.\nIMPRESSION:\n1. "
            "Biopsy of the inferior pole right renal mass. 2. Small hematoma."
        ),
    ),
    # round 6: "left greater than left" sets a side against itself: one of its side words is wrong
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nThe cardiac silhouette is enlarged. There are bibasilar airspace opacities left greater than "
            "right with a small right pleural effusion.\nIMPRESSION:\nBibasilar airspace disease left greater than "
            "left with small effusions."
        ),
        _ex(
            "FINDINGS:\nThe cardiac silhouette is enlarged. There are bibasilar airspace opacities left greater than "
            "right with a small right pleural effusion.\nIMPRESSION:\nBibasilar airspace disease left greater than "
            "right with small effusions."
        ),
    ),
    # round 6: "versus ... the right XXXX fissure": a de-identified word before a place still names that place,
    # so the sentence offers two places and its left midlung is compared with the findings' midlung
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nThe heart is normal. Curvilinear density in the right midlung zone, scarring or thickening "
            "of the right XXXX fissure.\nIMPRESSION:\nMinimal atelectasis in the left midlung zone versus pleural "
            "scarring in the right XXXX fissure."
        ),
        _ex(
            "FINDINGS:\nThe heart is normal. Curvilinear density in the left midlung zone, scarring or thickening "
            "of the right XXXX fissure.\nIMPRESSION:\nMinimal atelectasis in the left midlung zone versus pleural "
            "scarring in the right XXXX fissure."
        ),
    ),
    # round 6: "both on PA and lateral views" counts views, not sides; a past event after "with" belongs to its
    # own clause (the rib), so the right upper lobe is compared; "after partial resection" dates the lobe's
    # own clause, which is then compared only with findings about the past
    (
        "laterality.impression_side_vs_findings_anatomy",
        _ex(
            "FINDINGS:\nHeart size is normal. Irregular 1.2 cm opacity in the left upper lung is identified both on "
            "PA and lateral views and likely represents chronic scarring. There is partial resection of the "
            "posterior fourth rib.\nIMPRESSION:\nPleural plaque in the right upper lobe with partial resection of "
            "the posterior fourth rib. No acute findings."
        ),
        _ex(
            "FINDINGS:\nHeart size is normal. Irregular 1.2 cm opacity in the left upper lung is identified both on "
            "PA and lateral views and likely represents chronic scarring. There is partial resection of the "
            "posterior fourth rib.\nIMPRESSION:\nPleural plaque in the right upper lobe after partial resection of "
            "the posterior fourth rib. No acute findings."
        ),
    ),
    # round 7: a side word before a finding keeps its side though non-paired anatomy follows the finding
    # ("bilateral effusion consistent with ... cardiac failure"), so a denial of bilateral effusions meets it;
    # the near miss puts the effusion on one side, which the bilateral denial does not deny
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nMild interstitial edema, with cardiomegaly and bilateral effusion consistent with "
            "congestive heart failure. No pneumothorax.\nIMPRESSION:\nCongestive heart failure. No bilateral "
            "effusions."
        ),
        _ex(
            "FINDINGS:\nMild interstitial edema, with cardiomegaly and left effusion consistent with "
            "congestive heart failure. No pneumothorax.\nIMPRESSION:\nCongestive heart failure. No bilateral "
            "effusions."
        ),
    ),
    # round 7: the removal of a device denies no finding after it, and a device in another clause of the
    # sentence does not soften the finding: the impression's pneumothorax meets the findings' denial
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nInterval removal of right chest tube. No focal consolidation or pneumothorax.\nIMPRESSION:\n"
            "1. Right basilar atelectasis. 2. Removal of the right chest tube, small apical pneumothorax."
        ),
        _ex(
            "FINDINGS:\nInterval removal of right chest tube. No focal consolidation or pneumothorax.\nIMPRESSION:\n"
            "1. Right basilar atelectasis. 2. Removal of the right chest tube, no apical pneumothorax."
        ),
    ),
    # round 7: a dictated " ." ends its item, so "3." after it is an item of its own whose denial meets the
    # atelectasis of item 2; the near miss denies another finding there
    (
        "contradiction.affirmed_and_negated",
        _ex(
            "FINDINGS:\nLow lung volumes. No pneumothorax.\nIMPRESSION:\n1. No acute disease. "
            "2. Low lung volumes with bibasilar atelectasis . 3. Atelectasis is not seen."
        ),
        _ex(
            "FINDINGS:\nLow lung volumes. No pneumothorax.\nIMPRESSION:\n1. No acute disease. "
            "2. Low lung volumes with bibasilar atelectasis . 3. Pneumothorax is not seen."
        ),
    ),
    # round 7: "There is left basilar opacity" states a side ("is left" after "there" is no verb), so an
    # impression that puts the opacity on the right disagrees with it; the near miss keeps the left
    (
        "laterality.impression_vs_findings",
        _ex(
            "FINDINGS:\nThe heart is normal. There is left basilar opacity. No pleural effusion.\nIMPRESSION:\n"
            "Right basilar opacity, likely atelectasis."
        ),
        _ex(
            "FINDINGS:\nThe heart is normal. There is left basilar opacity. No pleural effusion.\nIMPRESSION:\n"
            "Left basilar opacity, likely atelectasis."
        ),
    ),
    # round 7: a "vague" opacity is an airspace opacity as a hazy or ill-defined one is, so its side is compared;
    # the near miss keeps the side of the findings
    (
        "laterality.located_finding_side_mismatch",
        _ex(
            "FINDINGS:\nThe heart is normal in size. Vague opacities in the left upper lobe. The right lung is "
            "clear.\nIMPRESSION:\n1. Ill-defined right upper lung opacities, possibly scarring."
        ),
        _ex(
            "FINDINGS:\nThe heart is normal in size. Vague opacities in the left upper lobe. The right lung is "
            "clear.\nIMPRESSION:\n1. Ill-defined left upper lung opacities, possibly scarring."
        ),
    ),
    # "low bone mass" is not a mass
    (
        "alignment.impression_not_in_findings",
        _ex(
            "FINDINGS:\nLumbar spine T-score -1.8. Left femoral neck T-score -2.1. Total hip T-score -1.6. "
            "The lowest T-score is at the left femoral neck.\nIMPRESSION:\n1. Osteopenia. 2. Soft tissue mass "
            "of the left hip.",
            procedure="77080",
        ),
        _ex(
            "FINDINGS:\nLumbar spine T-score -1.8. Left femoral neck T-score -2.1. Total hip T-score -1.6. "
            "The lowest T-score is at the left femoral neck.\nIMPRESSION:\n1. Osteopenia (low bone mass) by WHO "
            "criteria.",
            procedure="77080",
        ),
    ),
)


def test_every_registered_rule_has_examples() -> None:
    """The example table names exactly the registered rules: a new rule needs a positive and a negative example."""
    assert set(EXAMPLES) == set(registry())


@pytest.mark.parametrize("rule_id", sorted(EXAMPLES))
def test_rule_fires_on_positive_and_not_on_negative(rule_id: str) -> None:
    """The rule fires on its positive example and stays silent on its near-miss negative."""
    positive, negative = EXAMPLES[rule_id]
    assert rule_id in positive.rules()
    assert rule_id not in negative.rules()


@pytest.mark.parametrize(
    ("rule_id", "positive", "negative"), MORE_EXAMPLES, ids=lambda v: v if isinstance(v, str) else ""
)
def test_further_forms_fire_on_positive_and_not_on_negative(rule_id: str, positive: Example, negative: Example) -> None:
    """Each further form of a rule fires on its positive example and stays silent on its near miss."""
    assert rule_id in positive.rules()
    assert rule_id not in negative.rules()
