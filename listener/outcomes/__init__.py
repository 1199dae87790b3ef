"""Overread outcomes: compare a final report with its preliminary and propose a RADPEER grade.

Pure: no I/O except :func:`load_outcome_rules` reading policies/outcomes.yaml,
no clock, no store (docs/outcomes.md).

- :func:`compare` (``listener.outcomes.compare``): the differences of a pair,
  interpretive and operational, each with evidence from both versions, and
  the proposed grade.
- :func:`load_outcome_rules` (``listener.outcomes.rules``): the grading rules.
- :func:`qa_findings`: the QA engine's findings for both versions, when the
  caller has not kept them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from listener.model import Finding, Report
from listener.outcomes.compare import Comparison, ConceptState, Difference, compare, concept_states
from listener.outcomes.rules import (
    DEFAULT_OUTCOMES_FILE,
    GRADES,
    KINDS,
    GradeRule,
    OutcomeRules,
    load_outcome_rules,
    worst_grade,
)
from listener.qa.engine import QaConfig, QaContext, run_rules

__all__ = [
    "DEFAULT_OUTCOMES_FILE",
    "GRADES",
    "KINDS",
    "Comparison",
    "ConceptState",
    "Difference",
    "GradeRule",
    "OutcomeRules",
    "compare",
    "concept_states",
    "load_outcome_rules",
    "qa_findings",
    "worst_grade",
]


def qa_findings(
    prelim: Report, final: Report, qa: QaConfig, now: datetime
) -> tuple[Sequence[Finding], Sequence[Finding]]:
    """Run the QA engine on both versions (priors unknown), for :func:`compare`'s ``qa_findings``."""
    context = QaContext(now=now)
    return run_rules(prelim, qa, context), run_rules(final, qa, context)
