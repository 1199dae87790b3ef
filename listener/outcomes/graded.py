"""An accession's chain with each of its pairs graded: what scorecards, feedback and live rates read.

Pure types (docs/outcomes.md, "Scorecards"). The shell fills them from the
store (:mod:`listener.outcome_data`): the chain from the stored report rows,
each pair's proposed grade from :func:`listener.outcomes.compare` (or its
cached result), the explicit grade from the recorded scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from listener.outcomes.history import Pair, ReadSummary, Version, VersionChain

__all__ = ["AccessionOutcome", "GradedPair", "LoneReads"]


@dataclass(frozen=True, slots=True)
class GradedPair:
    """One compared pair of an accession and its grade.

    Attributes:
        pair: the pair (positions in the chain, kind).
        comparable: False when the versions could not be compared (raw purged,
            no longer decodes...); ``reason`` says why and the counts are 0.
        proposed_grade: the comparison's grade (None when not comparable).
        explicit_grade: the latest explicit score placed on this pair (None: none).
        interpretive: how many interpretive differences the comparison found.
        operational: how many operational differences it found.
        operational_kinds: the kinds of those operational differences (sorted, distinct).
    """

    pair: Pair
    comparable: bool
    reason: str
    proposed_grade: str | None
    explicit_grade: str | None
    interpretive: int = 0
    operational: int = 0
    operational_kinds: tuple[str, ...] = ()

    @property
    def grade(self) -> str | None:
        """The explicit grade when there is one, else the proposed one."""
        return self.explicit_grade if self.explicit_grade is not None else self.proposed_grade

    @property
    def disagreement(self) -> bool:
        """An explicit score differs from the proposal (it tunes the rules)."""
        return (
            self.explicit_grade is not None
            and self.proposed_grade is not None
            and self.explicit_grade != self.proposed_grade
        )


@dataclass(frozen=True, slots=True)
class AccessionOutcome:
    """An accession's versions and its graded pairs (``graded[i]`` grades ``chain.pairs[i]``)."""

    chain: VersionChain
    graded: tuple[GradedPair, ...]

    def before(self, graded: GradedPair) -> Version:
        """The version a pair's later version replaces (the one whose reader is graded)."""
        return self.chain.versions[graded.pair.before]

    def after(self, graded: GradedPair) -> Version:
        """The version that replaces it."""
        return self.chain.versions[graded.pair.after]


@dataclass(frozen=True, slots=True)
class LoneReads:
    """Versions of accessions that have no other version, counted alike (docs/outcomes.md,
    "Scorecards: where the figures come from"): a lone version has no pair, so a scorecard
    counts it from its summary alone.

    Attributes:
        summary: what the versions share (their times aside).
        prelim_minutes: a preliminary's minutes from observation to report
            (:func:`listener.outcomes.history.prelim_minutes`; None: not counted).
        count: how many versions.
        first_accession: the smallest accession among them.
    """

    summary: ReadSummary
    prelim_minutes: float | None
    count: int
    first_accession: str

    @property
    def stage(self) -> int:
        """The versions' stage (:func:`listener.outcomes.history.stage_of`)."""
        return self.summary.stage

    @property
    def reader_id(self) -> str:
        """The versions' reader id ("" when not given)."""
        return self.summary.reader_id

    @property
    def site(self) -> str:
        """The versions' site."""
        return self.summary.site

    @property
    def modality(self) -> str:
        """The versions' modality."""
        return self.summary.modality

    @property
    def body_region(self) -> str:
        """The versions' body region."""
        return self.summary.body_region
