"""Comparison rules: a comparison statement exists and agrees with the exam date and the known priors."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.model import Severity, Times
from listener.qa.comparison import find_dates, region_phrases, regions_related
from listener.qa.engine import Prior, QaContext
from tests.unit.qa.factory import RECEIVED, findings_for, make_report

BODY = "FINDINGS: Clear lungs.\nIMPRESSION: No acute disease."


def rules(report, context=None):  # type: ignore[no-untyped-def]
    return {f.rule: f for f in findings_for(report, rule_prefix="comparison.", context=context)}


def ctx(*priors: Prior) -> QaContext:
    return QaContext(now=RECEIVED, priors=tuple(priors))


# --- missing ---------------------------------------------------------------------------------------------


def test_missing_comparison_is_an_info_finding() -> None:
    """No comparison section and no comparison wording: info finding without evidence."""
    found = rules(make_report("INDICATION: Cough.\n" + BODY))
    assert found["comparison.missing"].severity is Severity.INFO


@pytest.mark.parametrize(
    "text",
    [
        "COMPARISON: None.\n" + BODY,
        "COMPARISON: Chest radiograph 10/01/2026.\n" + BODY,
        "FINDINGS: Compared with the prior study, clear lungs.\nIMPRESSION: Stable.",
        "FINDINGS: Clear lungs, unchanged.\nIMPRESSION: No acute disease.",
    ],
)
def test_comparison_statement_present_is_silent(text: str) -> None:
    """A comparison section (even "None") or a comparison statement in the text satisfies the rule."""
    assert "comparison.missing" not in rules(make_report(text))


def test_empty_comparison_heading_counts_as_missing() -> None:
    """A "COMPARISON:" heading with nothing after it is no statement."""
    assert "comparison.missing" in rules(make_report("INDICATION: Cough.\nCOMPARISON:\n" + BODY))


# --- implied without statement ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "findings",
    [
        "Calcified granuloma, unchanged. Clear lungs.",
        "Healed left rib fractures again noted. Clear lungs.",
        "There has been interval development of a small left effusion.",
        "The previously seen fluid collection has resolved.",
        "Redemonstration of interstitial opacities. No effusion.",
        "No significant change in the right apical scarring.",
        "The nodule has increased in size.",
    ],
)
def test_interval_language_without_a_named_study_is_a_warning(findings: str) -> None:
    """Change over time described, no study named anywhere: a warning, and comparison.missing stays silent."""
    found = rules(make_report(f"INDICATION: Cough.\nFINDINGS: {findings}\nIMPRESSION: No acute disease."))
    finding = found["comparison.implied_without_statement"]
    assert finding.severity is Severity.WARNING
    assert finding.evidence and finding.evidence[0].section == "findings"
    assert "comparison.missing" not in found


@pytest.mark.parametrize(
    "text",
    [
        # A study is named: a comparison section (even "None"), the word comparison, a prior study, a date.
        "COMPARISON: Chest radiograph 10/01/2026.\nFINDINGS: Granuloma, unchanged.\nIMPRESSION: No acute disease.",
        "COMPARISON: None.\nFINDINGS: Granuloma, unchanged.\nIMPRESSION: No acute disease.",
        "FINDINGS: In comparison, the granuloma is unchanged.\nIMPRESSION: No acute disease.",
        "FINDINGS: Granuloma, unchanged from the previous chest x-ray.\nIMPRESSION: No acute disease.",
        "FINDINGS: Granuloma, unchanged from prior.\nIMPRESSION: No acute disease.",
        "FINDINGS: Granuloma, unchanged since 10/01/2026.\nIMPRESSION: No acute disease.",
        "INDICATION: Nodule seen on the prior CT.\nFINDINGS: Nodule, unchanged.\nIMPRESSION: No acute disease.",
        # Words that are no interval statement here.
        "FINDINGS: Stable mediastinal contours. Increased interstitial markings.\nIMPRESSION: No acute disease.",
        "FINDINGS: Tear at the rotator interval. The atlanto-dens interval is normal.\nIMPRESSION: Tear.",
        "FINDINGS: Indeterminate lesion.\nIMPRESSION: Short interval follow-up with MRI is recommended.",
        "FINDINGS: His exam remained unchanged. Blood pressure unchanged at peak stress.\nIMPRESSION: Normal.",
        "INDICATION: Cough, unchanged for weeks.\nFINDINGS: Clear lungs.\nIMPRESSION: No acute disease.",
        # Prior as a word of history names no study, but there is no interval language either.
        "FINDINGS: Changes of prior CABG. Clear lungs.\nIMPRESSION: No acute disease.",
    ],
)
def test_named_study_or_no_interval_language_is_silent(text: str) -> None:
    """A named study, or no interval language in findings/impression: no implied-comparison finding."""
    assert "comparison.implied_without_statement" not in rules(make_report(text))


def test_prior_as_history_names_no_study() -> None:
    """ "Prior CABG" is history, not a comparison study: the interval language still counts."""
    text = "FINDINGS: Changes of prior CABG again noted. Clear lungs.\nIMPRESSION: No acute disease."
    assert "comparison.implied_without_statement" in rules(make_report(text))


# --- dates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("11/21/2026", (2026, 11, 21)),
        ("2026-11-21", (2026, 11, 21)),
        ("Nov 21, 2026", (2026, 11, 21)),
        ("November 21st 2026", (2026, 11, 21)),
        ("21 November 2026", (2026, 11, 21)),
        ("11/21/26", (2026, 11, 21)),
        ("December 2026", (2026, 12, None)),
        ("25/11/2026", (2026, 11, 25)),
    ],
)
def test_find_dates_formats(raw: str, expected: tuple[int, int, int | None]) -> None:
    """US numeric, ISO, month-name and month-year dates parse; an impossible month/day order is swapped."""
    text = f"Comparison: CT {raw}."
    dates = find_dates(text, 0, len(text))
    assert len(dates) == 1
    got = dates[0]
    assert (got.year, got.month, got.day) == expected and text[got.start : got.end] == raw


def test_find_dates_ignores_invalid() -> None:
    """13/45/2026 and bare numbers are not dates."""
    text = "Comparison 13/45/2026, 3.5 cm, 12 mm."
    assert find_dates(text, 0, len(text)) == []


def test_comparison_date_after_exam_is_an_error() -> None:
    """The exam was 2026-11-20; a comparison dated 11/21/2026 is after it: error with the date as evidence."""
    report = make_report("INDICATION: Cough.\nCOMPARISON: Chest radiograph 11/21/2026.\n" + BODY)
    finding = rules(report)["comparison.date_after_exam"]
    assert finding.severity is Severity.ERROR
    assert finding.evidence[0].text == "11/21/2026" and finding.evidence[0].section == "comparison"
    assert "2026" not in finding.message


def test_comparison_date_in_findings_sentence_after_exam() -> None:
    """A dated comparison in a findings sentence ("compared with ... Dec 3, 2026") counts too."""
    report = make_report(
        "INDICATION: Cough.\nFINDINGS: Compared with the radiograph of Dec 3, 2026, clear lungs.\nIMPRESSION: x."
    )
    assert "comparison.date_after_exam" in rules(report)


@pytest.mark.parametrize(
    "text",
    [
        "COMPARISON: Chest radiograph 11/20/2026.\n" + BODY,  # same day: an earlier exam that day
        "COMPARISON: Chest radiograph 2026-10-01.\n" + BODY,
        "COMPARISON: None.\nFINDINGS: Nodule.\nIMPRESSION: Recommend follow-up CT on 12/20/2026.",  # a plan, not a prior
        "COMPARISON: None.\nFINDINGS: Symptoms began 2 weeks prior to 12/01/2026.\nIMPRESSION: x.",
    ],
)
def test_comparison_date_not_after_or_not_a_comparison(text: str) -> None:
    """Same-day and earlier dates, follow-up dates and "prior to <date>" are silent."""
    assert "comparison.date_after_exam" not in rules(make_report(text))


def test_comparison_date_without_exam_time_is_not_judged() -> None:
    """No observation time: no exam date to compare with."""
    report = make_report("COMPARISON: 12/01/2026.\n" + BODY, times=Times(observation=None, received=RECEIVED))
    assert "comparison.date_after_exam" not in rules(report)


def test_aware_observation_uses_one_day_grace_without_site() -> None:
    """An aware UTC exam time with no site time zone: the next calendar day is tolerated (it may be the same local day)."""
    obs = datetime(2026, 11, 20, 23, 30, tzinfo=RECEIVED.tzinfo)
    near = make_report("COMPARISON: 11/21/2026.\n" + BODY, times=Times(observation=obs), site="NOSUCH")
    far = make_report("COMPARISON: 11/23/2026.\n" + BODY, times=Times(observation=obs), site="NOSUCH")
    assert "comparison.date_after_exam" not in rules(near)
    assert "comparison.date_after_exam" in rules(far)


# --- none while priors known -------------------------------------------------------------------------------


def test_none_while_a_relevant_prior_is_known() -> None:
    """ "None" with a prior chest radiograph on record: warning naming counts, modality and region only."""
    prior = Prior("ACC0", date(2026, 5, 1), "XR", "chest", "71046")
    finding = rules(make_report("COMPARISON: None.\n" + BODY), ctx(prior))["comparison.none_with_priors"]
    assert finding.severity is Severity.WARNING
    assert finding.evidence[0].section == "comparison" and "ACC0" not in finding.message


def test_no_prior_phrase_in_text_with_prior_from_procedure_code() -> None:
    """ "No prior studies available" in findings, prior known only by its CPT code: still flagged."""
    prior = Prior("ACC0", date(2025, 5, 1), procedure_code="71045")
    report = make_report("FINDINGS: No prior studies available. Clear lungs.\nIMPRESSION: x.")
    assert "comparison.none_with_priors" in rules(report, ctx(prior))


@pytest.mark.parametrize(
    "prior",
    [
        Prior("ACC0", date(2026, 5, 1), "XR", "head"),  # other region
        Prior("ACC0", date(2026, 5, 1), "CT", "chest"),  # other modality
        Prior("ACC0", date(2026, 12, 1), "XR", "chest"),  # after this exam
        Prior("ACC0", date(2015, 5, 1), "XR", "chest"),  # older than max_age_days
        Prior("ACC1", date(2026, 11, 20), "XR", "chest"),  # this very study
    ],
)
def test_none_with_irrelevant_priors_is_silent(prior: Prior) -> None:
    """Priors of another region or modality, later, too old, or the study itself are not relevant."""
    assert "comparison.none_with_priors" not in rules(make_report("COMPARISON: None.\n" + BODY), ctx(prior))


def test_none_with_unknown_or_empty_priors_is_silent() -> None:
    """Priors unknown (None) or known to be none: nothing to contradict."""
    report = make_report("COMPARISON: None.\n" + BODY)
    assert "comparison.none_with_priors" not in rules(report, QaContext(now=RECEIVED, priors=None))
    assert "comparison.none_with_priors" not in rules(report, ctx())


def test_regions_related() -> None:
    """Abdomen/pelvis covers abdomen; knee joint and leg are related; head and chest are not."""
    assert regions_related("abdomen", "abdomen_pelvis") and regions_related("lower_extremity_joint", "lower_extremity")
    assert not regions_related("head", "chest") and not regions_related("spine_cervical", "spine_lumbar")
    assert [r for r, _, _ in region_phrases("CT of the abdomen and pelvis", exam_only=True)] == ["abdomen_pelvis"]


# --- cited prior not found ----------------------------------------------------------------------------------


def test_cited_prior_not_among_known_priors() -> None:
    """A cited comparison date with no prior on record within a day: warning with the date as evidence."""
    report = make_report("COMPARISON: Chest radiograph 10/01/2026.\n" + BODY)
    finding = rules(report, ctx(Prior("ACC0", date(2026, 5, 1), "XR", "chest")))["comparison.prior_not_found"]
    assert finding.severity is Severity.WARNING and finding.evidence[0].text == "10/01/2026"


def test_cited_prior_found_or_priors_unknown_is_silent() -> None:
    """A matching prior (within a day), unknown priors, or an outside study: silent."""
    report = make_report("COMPARISON: Chest radiograph 10/01/2026.\n" + BODY)
    assert "comparison.prior_not_found" not in rules(report, ctx(Prior("ACC0", date(2026, 10, 2), "XR", "chest")))
    assert "comparison.prior_not_found" not in rules(report, QaContext(now=RECEIVED, priors=None))
    outside = make_report("COMPARISON: Outside chest radiograph 10/01/2026.\n" + BODY)
    assert "comparison.prior_not_found" not in rules(outside, ctx())


def test_date_after_exam_not_also_reported_as_not_found() -> None:
    """A date after the exam is date_after_exam's finding only."""
    report = make_report("COMPARISON: 12/01/2026.\n" + BODY)
    found = rules(report, ctx())
    assert "comparison.date_after_exam" in found and "comparison.prior_not_found" not in found


def test_month_year_citation_matches_prior_in_that_month() -> None:
    """ "October 2026" matches a prior of 2026-10-15."""
    report = make_report("COMPARISON: CT chest October 2026.\n" + BODY)
    assert "comparison.prior_not_found" not in rules(report, ctx(Prior("ACC0", date(2026, 10, 15), "CT", "chest")))
    assert "comparison.prior_not_found" in rules(report, ctx(Prior("ACC0", date(2026, 9, 15), "CT", "chest")))


def test_naive_observation_is_site_local() -> None:
    """Naive exam times are the sender's local time and compared as is."""
    report = replace(
        make_report("COMPARISON: 11/21/2026.\n" + BODY), times=Times(observation=datetime(2026, 11, 20, 23, 0))
    )
    assert "comparison.date_after_exam" in rules(report)


_REGION_TEXT = st.lists(
    st.sampled_from(
        [
            "abdomen",
            "and",
            "&",
            "/",
            "pelvis",
            "C-spine",
            "c spine",
            "IACs",
            "knees",
            "lower",
            "extremities",
            "soft",
            "tissues",
            "of the",
            "neck",
            "tibia",
            "fibula",
            "barium",
            "enema",
            "-",
            ".",
            " ",
            "\n",
            "x",
            "ribs",
            "Ovaries",
            "K\u212anee",
        ]
    ),
    max_size=12,
).map(" ".join)


@given(_REGION_TEXT)
@settings(max_examples=300, deadline=None)
def test_region_pattern_matches_its_reference_form(text: str) -> None:
    """The region pattern tests its word boundary once, outside the alternation; the matches (span and
    region) are those of the reference form with the boundary at the start of every branch."""
    import re

    from listener.qa.comparison import _REGION_RE, _REGION_WORDS

    ordered = sorted(_REGION_WORDS.items(), key=lambda kv: -len(kv[0]))
    reference = re.compile("|".join(rf"(?P<{name}>\b(?:{words})\b)" for name, words in ordered), re.IGNORECASE)
    for candidate in (text, text.replace(" ", "")):
        want = [(m.lastgroup, m.span()) for m in reference.finditer(candidate)]
        assert [(m.lastgroup, m.span()) for m in _REGION_RE.finditer(candidate)] == want
