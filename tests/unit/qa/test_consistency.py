"""Consistency rules: the report fits the registered patient's sex and age."""

from __future__ import annotations

from datetime import date

import pytest

from listener.model import Severity
from listener.qa.consistency import age_years
from tests.unit.qa.factory import findings_for, make_report


def _rules(text: str, **kw: object) -> list[str]:
    return [f.rule for f in findings_for(make_report(text, **kw), rule_prefix="consistency.")]


@pytest.mark.parametrize(
    ("text", "sex"),
    [
        ("FINDINGS:\nThe prostate is enlarged, measuring 5 cm.\nIMPRESSION:\nProstatomegaly.", "F"),
        ("FINDINGS:\nThe uterus is anteverted and normal in size.\nIMPRESSION:\nNormal pelvis.", "M"),
        ("FINDINGS:\nSimple right ovarian cyst.\nIMPRESSION:\nOvarian cyst.", "M"),
        ("FINDINGS:\nLeft testicular mass.\nIMPRESSION:\nTesticular mass.", "F"),
        # a template's normal organ is still an organ
        ("FINDINGS:\nThe prostate is normal in size.\nIMPRESSION:\nNo acute findings.", "F"),
        # looked for and not seen, nothing removed: a template written for the other sex
        ("FINDINGS:\nThe ovaries are not visualized.\nIMPRESSION:\nNo acute findings.", "M"),
        # the indication and technique speak about this patient too
        ("INDICATION:\nHistory of prostate cancer.\nFINDINGS:\nNo bone lesion.\nIMPRESSION:\nNormal.", "F"),
        ("TECHNIQUE:\nTransvaginal images of the uterus.\nFINDINGS:\nNo mass.\nIMPRESSION:\nNormal.", "M"),
    ],
)
def test_sex_specific_anatomy_on_wrong_sex(text: str, sex: str) -> None:
    """Anatomy of the other sex described as present is an error naming the concept, never the text."""
    found = findings_for(make_report(text, sex=sex), rule_prefix="consistency.sex_anatomy")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert found[0].evidence
    assert "registered as" in found[0].message


@pytest.mark.parametrize(
    ("text", "sex"),
    [
        # same sex
        ("FINDINGS:\nThe prostate is enlarged.\nIMPRESSION:\nProstatomegaly.", "M"),
        # unknown / other / empty sex never fires
        ("FINDINGS:\nThe prostate is enlarged.\nIMPRESSION:\nProstatomegaly.", "U"),
        ("FINDINGS:\nThe prostate is enlarged.\nIMPRESSION:\nProstatomegaly.", ""),
        ("FINDINGS:\nThe prostate is enlarged.\nIMPRESSION:\nProstatomegaly.", "O"),
        # surgically absent / history (e.g. a transgender man after hysterectomy)
        ("FINDINGS:\nThe uterus is surgically absent.\nIMPRESSION:\nNo acute findings.", "M"),
        ("FINDINGS:\nStatus post hysterectomy. Bladder normal.\nIMPRESSION:\nNo acute findings.", "M"),
        ("FINDINGS:\nPost-hysterectomy pelvis. Bladder normal.\nIMPRESSION:\nNo acute findings.", "M"),
        # looked for and not seen, but the report says it was removed
        ("FINDINGS:\nStatus post hysterectomy. The ovaries are not visualized.\nIMPRESSION:\nNo acute findings.", "M"),
        # negated
        ("FINDINGS:\nNo adnexal or ovarian mass.\nIMPRESSION:\nNormal.", "M"),
        # indication only (the question)
        ("INDICATION:\nRule out ovarian torsion.\nFINDINGS:\nNormal bowel.\nIMPRESSION:\nNormal.", "M"),
        # leiomyoma occurs outside the uterus
        ("FINDINGS:\nEsophageal leiomyoma, 2 cm.\nIMPRESSION:\nLeiomyoma.", "M"),
    ],
)
def test_sex_anatomy_negatives(text: str, sex: str) -> None:
    """Matching, unknown sex, absent, historical, negated and ambiguous mentions do not fire."""
    assert "consistency.sex_anatomy" not in _rules(text, sex=sex)


def test_age_years() -> None:
    """Whole years, counting the birthday itself."""
    assert age_years(date(2000, 11, 20), date(2026, 11, 20)) == 26
    assert age_years(date(2000, 11, 21), date(2026, 11, 20)) == 25


@pytest.mark.parametrize(
    ("text", "birth"),
    [
        ("INDICATION:\nPostmenopausal bleeding.\nFINDINGS:\nThin endometrium.\nIMPRESSION:\nNormal.", date(2004, 1, 1)),
        ("FINDINGS:\nThe growth plates are open. No fracture.\nIMPRESSION:\nNo fracture.", date(1950, 1, 1)),
        ("FINDINGS:\nSingle live intrauterine pregnancy.\nIMPRESSION:\nLive IUP.", date(1950, 1, 1)),
        ("FINDINGS:\nThe anterior fontanelle is open.\nIMPRESSION:\nNormal.", date(1980, 1, 1)),
    ],
)
def test_age_implausible(text: str, birth: date) -> None:
    """A statement that cannot be true at the computed age is a warning."""
    found = findings_for(make_report(text, birth_date=birth), rule_prefix="consistency.age_implausible")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert str(birth.year) not in found[0].message


@pytest.mark.parametrize(
    ("text", "birth"),
    [
        ("INDICATION:\nPostmenopausal bleeding.\nFINDINGS:\nThin endometrium.\nIMPRESSION:\nNormal.", date(1960, 1, 1)),
        ("FINDINGS:\nThe growth plates are open. No fracture.\nIMPRESSION:\nNo fracture.", date(2014, 1, 1)),
        ("FINDINGS:\nThe growth plates are closed. No fracture.\nIMPRESSION:\nNo fracture.", date(1950, 1, 1)),
        ("FINDINGS:\nSingle live intrauterine pregnancy.\nIMPRESSION:\nLive IUP.", date(1995, 1, 1)),
        ("FINDINGS:\nNo evidence of pregnancy.\nIMPRESSION:\nNormal.", date(1950, 1, 1)),
        # near the margin: not a clear case
        ("INDICATION:\nPostmenopausal.\nFINDINGS:\nNormal.\nIMPRESSION:\nNormal.", date(1992, 1, 1)),
        # no birth date: silent
        ("INDICATION:\nPostmenopausal bleeding.\nFINDINGS:\nNormal.\nIMPRESSION:\nNormal.", None),
    ],
)
def test_age_plausible(text: str, birth: date | None) -> None:
    """Plausible ages, closed plates, negated pregnancy, margins and unknown ages never fire."""
    assert "consistency.age_implausible" not in _rules(text, birth_date=birth)


@pytest.mark.parametrize(
    "text",
    [
        "INDICATION: History of testicular cancer status post bone marrow transplant\nFINDINGS: Lungs are clear.",
        "INDICATION: XXXX-year-old with scrotal edema, dyspnea\nFINDINGS: Mild cardiomegaly.",
    ],
)
def test_male_anatomy_in_the_indication_of_a_female_patient(text: str) -> None:
    """'status post' an unrelated treatment is no removal, and 'scrotal edema' names the scrotum: both are male anatomy."""
    assert "consistency.sex_anatomy" in _rules(text, sex="F")
    assert "consistency.sex_anatomy" not in _rules(text, sex="M")
