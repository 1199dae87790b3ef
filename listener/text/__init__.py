"""Report text analysis shared by the QA rules.

Pure: no I/O, no clock, no logging. Offsets are always into the full report text.

- :mod:`~listener.text.sentences`: ``split_sentences(text, start, end)``.
- :mod:`~listener.text.context`: ``find_mentions(text, start, end, terms)``
  with ConText status (negated, uncertain, historical, hypothetical,
  experiencer) and laterality; ``hedge_density``; ``has_definite_statement``.
- :mod:`~listener.text.laterality`: ``lateral_mentions(text, start, end, terms)``.
- :mod:`~listener.text.cache`: ``TextCache``, one report's shared results
  (the ``cache=`` argument of the functions above).
- :mod:`~listener.text.terms`: ``build_terms(files, folder)`` -> compiled ``Terms``
  (``listener.assemble.load_terms`` reads the files).
"""

from listener.text.cache import TextCache
from listener.text.context import (
    Cue,
    Mention,
    definite_statements,
    find_mentions,
    has_definite_statement,
    hedge_count,
    hedge_density,
)
from listener.text.laterality import LateralMention, lateral_mentions, sides_in
from listener.text.sentences import Span, split_sentences
from listener.text.terms import Concept, Terms, Trigger, build_terms

__all__ = [
    "Concept",
    "Cue",
    "LateralMention",
    "Mention",
    "Span",
    "Terms",
    "TextCache",
    "Trigger",
    "definite_statements",
    "find_mentions",
    "has_definite_statement",
    "hedge_count",
    "hedge_density",
    "lateral_mentions",
    "build_terms",
    "sides_in",
    "split_sentences",
]
