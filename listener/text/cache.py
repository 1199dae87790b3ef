"""One report's text analysis results, shared by everything that reads the report.

The QA rules and the routing facts of one report ask for the same sections'
sentences, concept mentions, side words and modifier scans. The caller
(:func:`listener.pipeline.check_report`) creates one :class:`TextCache` per
report and hands it to both; the text functions that take a ``cache`` look
their result up there first. The cache is dropped with the report, so nothing
outlives the message that filled it. Without a cache a text function just
computes its result.
"""

from __future__ import annotations

__all__ = ["TextCache"]


class TextCache:
    """Results of the text layer's pure functions for one report, by key.

    Keys hold the text itself (its hash is cached by ``str``), so a hit is
    always the same text even when one cache serves two texts (a preliminary
    and its final). One table per function keeps the keys of different
    functions apart.
    """

    __slots__ = ("sentences", "mentions", "sides", "modifiers", "lowered", "walks")

    def __init__(self) -> None:
        #: :func:`listener.text.sentences.split_sentences`.
        self.sentences: dict[object, object] = {}
        #: :func:`listener.text.context.find_mentions`.
        self.mentions: dict[object, object] = {}
        #: :func:`listener.text.laterality.lateral_mentions`.
        self.sides: dict[object, object] = {}
        #: :func:`listener.text.context.modifier_matches`.
        self.modifiers: dict[object, object] = {}
        #: :func:`listener.text.casefold.lowered_text` (text -> lowered text, or None when not ASCII).
        self.lowered: dict[str, str | None] = {}
        #: :meth:`listener.text.scanner.SharedFinder.scan` (a region's tokens walked once, and matched
        #: in one pass, for the concept, trigger and side-word scanners).
        self.walks: dict[object, object] = {}
