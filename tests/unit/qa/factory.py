"""Build Reports from plain report text for rule tests (no HL7 needed).

    report = make_report("FINDINGS:\\nSmall right pneumothorax.\\nIMPRESSION:\\nNo pneumothorax.",
                         procedure="71046", modality="XR")

Sections come from the default mapping's heading rules, as the decoder would
find them; every other field has a plain default and can be overridden.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from listener.assemble import build_pipeline
from listener.config import load_config
from listener.model import Patient, Procedure, Reader, Report, ResultStatus, Sender, Times
from listener.pipeline import Pipeline
from listener.qa.engine import QaConfig, QaContext, run_rules
from listener.text.sections import sectionize

RECEIVED = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
_PIPELINE: Pipeline | None = None


def pipeline() -> Pipeline:
    """The repository's pipeline (mappings, CPT table, QA policy), loaded once."""
    global _PIPELINE
    if _PIPELINE is None:
        _PIPELINE = build_pipeline(load_config(None))
    return _PIPELINE


def make_report(
    text: str,
    *,
    procedure: str = "71046",
    procedure_text: str = "",
    modifiers: tuple[str, ...] = (),
    sex: str = "F",
    birth_date: date | None = date(1970, 1, 2),
    status: ResultStatus = ResultStatus.FINAL,
    **overrides: Any,
) -> Report:
    """A Report whose text is ``text``, sectioned like the decoder does."""
    pipe = pipeline()
    entry = pipe.procedures.get(procedure) if pipe.procedures else None
    sections = sectionize(text, pipe.mappings.default.heading_rules) if text.strip() else ()
    report = Report(
        message_id="TEST0001",
        message_type="ORU^R01",
        version="2.5.1",
        sender=Sender("RISX", "GENHOSP", "default"),
        accession="ACC1",
        patient=Patient(id="MRN1", sex=sex, birth_date=birth_date),
        procedure=Procedure(
            code=procedure,
            coding_system="CPT",
            text=procedure_text or (entry.description if entry else ""),
            modifiers=modifiers,
        ),
        status=status,
        times=Times(observation=RECEIVED.replace(hour=7), report=RECEIVED.replace(hour=8), received=RECEIVED),
        text=text,
        sections=sections,
        modality=entry.modality if entry else "",
        body_region=entry.body_region if entry else "",
        comparison_text=next((s.text for s in sections if s.kind.value == "comparison"), ""),
        reader=Reader(id="RAD1", name="Test Reader"),
        site="GENHOSP",
    )
    return replace(report, **overrides) if overrides else report


def findings_for(
    report: Report, *, qa: QaConfig | None = None, context: QaContext | None = None, rule_prefix: str = ""
) -> list[Any]:
    """Run the real QA engine; optionally keep only rules starting with ``rule_prefix``."""
    config = qa or pipeline().qa
    assert config is not None
    found = run_rules(report, config, context or QaContext(now=RECEIVED))
    return [f for f in found if f.rule.startswith(rule_prefix)]
