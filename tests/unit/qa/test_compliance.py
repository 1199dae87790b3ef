"""Compliance rules: reader licensure in the acquisition state, US-based finals for Medicare."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from listener.model import Reader, ResultStatus, Severity
from listener.qa.engine import QaConfig
from listener.sites import Directory, ReaderInfo, Site
from tests.unit.qa.factory import findings_for, make_report, pipeline

TEXT = "INDICATION: Cough.\nCOMPARISON: None.\nFINDINGS: Clear lungs.\nIMPRESSION: Normal."


def site(state: str = "TX", us_final_required: bool = True) -> Site:
    return Site(
        code="GENHOSP",
        name="General",
        state=state,
        country="US",
        timezone=ZoneInfo("America/Chicago"),
        sending_facilities=("GENHOSP",),
        professional_only=False,
        turnaround_minutes=MappingProxyType({}),
        us_final_required=us_final_required,
        medicare_financial_classes=("MC", "MCR"),
        client="",
    )


def reader(rid: str = "RAD1", country: str = "US", licensed: tuple[str, ...] = ("TX", "OK")) -> ReaderInfo:
    return ReaderInfo(
        id=rid, type="external", group="", country=country, state="", licensed_states=licensed, subspecialties=()
    )


def qa(sites: tuple[Site, ...] = (site(),), readers: tuple[ReaderInfo, ...] = (reader(),)) -> QaConfig:
    directory = Directory(
        MappingProxyType({s.code: s for s in sites}),
        MappingProxyType({r.id: r for r in readers}),
        MappingProxyType({"stat": 30}),
    )
    return replace(pipeline().qa, directory=directory)


def rules(report, config: QaConfig):  # type: ignore[no-untyped-def]
    return {f.rule: f for f in findings_for(report, qa=config, rule_prefix="compliance.")}


def test_reader_not_licensed_in_acquisition_state() -> None:
    """A Texas study read by a radiologist licensed only in CA and NY: warning naming reader, state and site."""
    finding = rules(make_report(TEXT), qa(readers=(reader(licensed=("CA", "NY")),)))["compliance.reader_not_licensed"]
    assert finding.severity is Severity.WARNING
    assert "RAD1" in finding.message and "TX" in finding.message


@pytest.mark.parametrize(
    "config",
    [
        qa(),  # licensed in TX
        qa(readers=(reader(licensed=()),)),  # licensure unknown
        qa(sites=(site(state=""),), readers=(reader(licensed=("CA",)),)),  # site outside the US / state unknown
        qa(readers=()),  # reader unknown
        qa(sites=()),  # site unknown
    ],
)
def test_licensure_silent_when_licensed_or_unknown(config: QaConfig) -> None:
    """Licensed, or either side unknown: no finding (an unknown is a routing matter)."""
    assert "compliance.reader_not_licensed" not in rules(make_report(TEXT), config)


def test_site_found_by_sending_facility() -> None:
    """A report whose site code is blank is matched to its site by sending facility."""
    report = make_report(TEXT, site="")
    assert "compliance.reader_not_licensed" in rules(report, qa(readers=(reader(licensed=("CA",)),)))


def test_final_read_outside_us_for_medicare() -> None:
    """A final by a reader located in India for a Medicare patient where US finals are required: warning."""
    config = qa(readers=(reader(country="IN"),))
    finding = rules(make_report(TEXT, financial_class="mc"), config)["compliance.final_read_outside_us"]
    assert finding.severity is Severity.WARNING and "Medicare" in finding.message


@pytest.mark.parametrize(
    ("status", "financial", "country", "required"),
    [
        (ResultStatus.PRELIMINARY, "MC", "IN", True),  # a preliminary read may come from abroad
        (ResultStatus.FINAL, "COMM", "IN", True),  # not Medicare
        (ResultStatus.FINAL, "", "IN", True),  # financial class unknown
        (ResultStatus.FINAL, "MC", "US", True),  # US-based reader
        (ResultStatus.FINAL, "MC", "IN", False),  # site does not require US finals
    ],
)
def test_final_outside_us_silent_cases(status: ResultStatus, financial: str, country: str, required: bool) -> None:
    """Preliminary reads, non-Medicare or unknown payers, US readers and sites without the rule: no finding."""
    config = qa(sites=(site(us_final_required=required),), readers=(reader(country=country),))
    report = make_report(TEXT, status=status, financial_class=financial)
    assert "compliance.final_read_outside_us" not in rules(report, config)


def test_corrected_report_counts_as_final() -> None:
    """A corrected report is a final read too."""
    config = qa(readers=(reader(country="IN"),))
    report = make_report(TEXT, status=ResultStatus.CORRECTED, financial_class="MCR")
    assert "compliance.final_read_outside_us" in rules(report, config)


def test_no_reader_no_finding() -> None:
    """A report without a reader gets no compliance finding."""
    report = make_report(TEXT, reader=None, financial_class="MC")
    assert rules(report, qa(readers=(reader(country="IN", licensed=("CA",)),))) == {}


def test_reader_matched_case_insensitively() -> None:
    """Reader ids are looked up upper-case, as the directory stores them."""
    report = make_report(TEXT, reader=Reader(id="rad1"))
    assert "compliance.reader_not_licensed" in rules(report, qa(readers=(reader(licensed=("CA",)),)))
