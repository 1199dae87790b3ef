"""An accession's chain with each of its pairs graded: what scorecards, feedback and live rates read.

Pure types (docs/outcomes.md, "Scorecards"). The shell fills them from the
store (:mod:`listener.outcome_data`): the chain from the stored report rows,
each pair's proposed grade from :func:`listener.outcomes.compare` (or its
cached result), the explicit grade from the recorded scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from listener.outcomes.history import Pair, Version, VersionChain

__all__ = ["AccessionOutcome", "GradedPair"]


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
