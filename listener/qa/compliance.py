"""Compliance rules: who may read this study (policies/sites.yaml, policies/readers.yaml).

Pure: no I/O, no clock. Both rules speak only when the directory knows the
site and the reader; an unknown site or reader is a routing matter, not a
compliance finding (a rule that guesses would flag every new hire).
"""

from __future__ import annotations

from collections.abc import Iterable

from listener.model import Finding, ResultStatus, Severity
from listener.qa.engine import RuleInput, rule

_FINAL = (ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.AMENDED)


@rule("compliance", severity=Severity.WARNING)
def reader_not_licensed(data: RuleInput) -> Iterable[Finding]:
    """The reader holds no licence in the state where the images were acquired."""
    report = data.report
    if report.status is ResultStatus.CANCELLED:
        return
    site = data.directory.site_for(report)
    reader = data.directory.reader_info(report.reader)
    if site is None or reader is None or not site.state or not reader.licensed_states:
        return
    if site.state.upper() in reader.licensed_states:
        return
    yield data.emit(
        f"Reader {reader.id} is not licensed in {site.state}, where site {site.code} acquired the images.",
        (),
        "Have a radiologist licensed in that state read or co-sign the study.",
    )


@rule("compliance", severity=Severity.WARNING)
def final_read_outside_us(data: RuleInput) -> Iterable[Finding]:
    """A final read by a reader located outside the US for a Medicare patient where the site requires US finals."""
    report = data.report
    if report.status not in _FINAL:
        return
    site = data.directory.site_for(report)
    reader = data.directory.reader_info(report.reader)
    if site is None or reader is None or not site.us_final_required or not reader.country:
        return
    if reader.country.upper() in ("US", "USA"):
        return
    financial = report.financial_class.strip().upper()
    if not financial or financial not in site.medicare_financial_classes:
        return
    yield data.emit(
        f"Final read by reader {reader.id} located outside the US for a Medicare patient; site {site.code} requires US-based finals.",
        (),
        "Route the final read to a US-based radiologist licensed in the site's state.",
    )
