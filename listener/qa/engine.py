"""Run the enabled QA rules over one report.

Pure: no I/O, no clock (``QaContext.now`` is passed in), no logging. Findings
are data. Each rule lives in ``listener/qa/<category>.py`` as a function named
for the ``name`` half of its rule id, marked with :func:`rule`;
:mod:`listener.qa.registry` collects the marked functions of those modules into
the registry once, at its import. :class:`QaConfig` computes its plan (the
enabled rules in id order) when it is built.

A rule receives a :class:`RuleInput` (the report, its analysed text, the
compiled vocabularies, the CPT table, sites/readers, priors, the clock and its
own settings from policies/qa.yaml) and yields Findings. It never sets the
severity itself: :func:`emit` does, from the policy.
"""

from __future__ import annotations

import importlib
import re
import string
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from operator import attrgetter
from types import MappingProxyType
from typing import Any

from listener.model import CATEGORIES, Evidence, Finding, Report, Section, SectionKind, Severity
from listener.procedures import ProcedureTable
from listener.sites import Directory, LiveFigures
from listener.text import Mention, Terms, TextCache, find_mentions, split_sentences
from listener.text.casefold import INLINE_FLAGS, lowered_flags, lowered_source
from listener.text.scanner import first_chars
from listener.text.sentences import Span


@dataclass(frozen=True, slots=True)
class Prior:
    """A prior study of the same patient, known to the store (the rule does no I/O)."""

    accession: str
    study_date: date
    modality: str = ""
    body_region: str = ""
    procedure_code: str = ""


@dataclass(frozen=True, slots=True)
class QaContext:
    """What the caller knows beyond the report: the clock and the patient's priors.

    ``priors`` is None when priors are unknown (no lookup was possible), and an
    empty tuple when the store knows there are none.
    """

    now: datetime
    priors: tuple[Prior, ...] | None = None
    #: Asked between two rules; True means the message's time budget is spent
    #: and :func:`run_rules` stops with :class:`QaInterrupted` (docs/hardening.md).
    stop: Callable[[], bool] | None = None
    #: The report's text analysis results, shared with the routing facts of the
    #: same report (:func:`listener.pipeline.check_report` creates one per
    #: report); None: :func:`run_rules` starts an empty one of its own.
    text_cache: TextCache | None = field(default=None, compare=False, repr=False)
    #: Live peer-review figures for the routing policy's discrepancy-rate
    #: conditions (the daemon's cache, docs/routing.md); None: readers.yaml only.
    live_figures: LiveFigures | None = field(default=None, compare=False, repr=False)


class QaInterrupted(Exception):
    """The QA run stopped early because ``QaContext.stop`` said so.

    Attributes:
        findings: what the rules that did run found.
    """

    def __init__(self, findings: tuple[Finding, ...]) -> None:
        super().__init__("QA stopped: time budget spent")
        self.findings = findings


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """One rule's settings from policies/qa.yaml."""

    enabled: bool
    severity: Severity
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: What the rule's ``prepare`` function (:func:`rule`) derives from ``params``, computed once
    #: when the QaConfig is built instead of once per report; None for a rule without one.
    prepared: Any = field(default=None, compare=False, repr=False)


_MISSING = object()


class Analysis:
    """Lazily computed text analysis shared by all rules of one run.

    Mentions are computed once per section and cached, so ten rules asking for
    the impression's mentions cost one scan. ``text_cache`` holds the text
    layer's results for the report (given by the caller to share them beyond
    QA, else a new one).
    """

    def __init__(self, report: Report, terms: Terms, text_cache: TextCache | None = None) -> None:
        self.report = report
        self.terms = terms
        self.text_cache = text_cache if text_cache is not None else TextCache()
        self._mentions: dict[tuple[int, int], tuple[Mention, ...]] = {}
        self._sentences: dict[tuple[int, int], tuple[Span, ...]] = {}
        self._by_kind: dict[SectionKind, tuple[Mention, ...]] = {}
        self._sections_of: dict[SectionKind, tuple[Section, ...]] = {}
        self._shared: dict[object, object] = {}
        self._sentence_hits: dict[tuple[int, int, int], bool] = {}

    def shared(self, key: object, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per report: results several rules derive the same way.

        ``key`` names the result (a module-level constant of the rule module
        that owns it, plus any arguments); the value must depend only on the
        report and the rule's settings that are part of ``key``.
        """
        value = self._shared.get(key, _MISSING)
        if value is _MISSING:
            value = self._shared[key] = compute()
        return value

    def in_sentence(self, pattern: Any, m: Mention) -> bool:
        """``pattern.search(text, m.sentence_start, m.sentence_end) is not None``, once per sentence.

        A sentence with many mentions (a list) would otherwise be searched
        once per mention: the cost of such a test grows with the number of
        mentions times the sentence's length (docs/hardening.md, "Linear
        text analysis"). ``pattern`` is a compiled pattern or a
        :class:`Folded` one, kept alive by its module.
        """
        key = (id(pattern), m.sentence_start, m.sentence_end)
        hit = self._sentence_hits.get(key)
        if hit is None:
            hit = self._sentence_hits[key] = (
                pattern.search(self.report.text, m.sentence_start, m.sentence_end) is not None
            )
        return hit

    def sentences(self, start: int, end: int) -> tuple[Span, ...]:
        key = (start, end)
        if key not in self._sentences:
            self._sentences[key] = split_sentences(self.report.text, start, end, cache=self.text_cache)
        return self._sentences[key]

    def next_sentence(self, m: Mention) -> Span | None:
        """The sentence after the one ``m`` is in, in ``m``'s section, or None.

        Bisected by start offset: walking the section's sentences from its
        first made a long report cost the square of its sentences
        (docs/hardening.md, "Linear text analysis").
        """
        sec = self.section_at(m.start)
        if sec is None:
            return None
        spans = self.sentences(sec.start, sec.end)
        k = bisect_left(spans, m.sentence_end, key=attrgetter("start"))
        return spans[k] if k < len(spans) else None

    def mentions(self, start: int, end: int) -> tuple[Mention, ...]:
        key = (start, end)
        if key not in self._mentions:
            self._mentions[key] = find_mentions(
                self.report.text,
                start,
                end,
                self.terms,
                sentences=self.sentences(start, end),
                cache=self.text_cache,
            )
        return self._mentions[key]

    def sections_of(self, kind: SectionKind) -> tuple[Section, ...]:
        """``report.sections_of(kind)``, found once per report (the rules ask about twenty times)."""
        found = self._sections_of.get(kind)
        if found is None:
            found = self._sections_of[kind] = self.report.sections_of(kind)
        return found

    def section_mentions(self, kind: SectionKind) -> tuple[Mention, ...]:
        """Mentions in every section of ``kind``, in text order."""
        cached = self._by_kind.get(kind)
        if cached is not None:
            return cached
        out: list[Mention] = []
        for sec in self.sections_of(kind):
            out.extend(self.mentions(sec.start, sec.end))
        found = self._by_kind[kind] = tuple(out)
        return found

    def section_at(self, offset: int) -> Section | None:
        for sec in self.report.sections:
            if sec.start <= offset <= sec.end:
                return sec
        return None

    def evidence(self, start: int, end: int) -> Evidence:
        """An evidence span with the name of the section it falls in."""
        sec = self.section_at(start)
        name = sec.kind.value if sec is not None else "text"
        return Evidence(section=name, start=start, end=end, text=self.report.text[start:end])


# ---------------------------------------------------------------- case folding


class _Run:
    """What one QA run (:func:`run_rules`) learns about the texts its rules search.

    ``lowered``: the lower-cased texts, by text (the rules of one report all
    search the same text). ``present``: for a :class:`Folded` pattern, the
    lowered text it last searched and whether that text holds one of the
    literals every match of the pattern needs (:func:`_needed_literals`).
    ``first``: a :class:`Folded` pattern's first match in a kept text between
    two offsets (or None), by pattern, text and offsets: rules of one report
    search the same sentence for the same words (docs/benchmarks.md, "Worker
    CPU, round 10").
    All are dropped when the run ends; outside a run nothing is kept.
    """

    __slots__ = ("first", "lowered", "present")

    def __init__(self) -> None:
        self.lowered: dict[str, str] = {}
        self.present: dict[Folded, tuple[str, bool]] = {}
        self.first: dict[tuple[Folded, str, int, int], re.Match[str] | None] = {}


#: The QA run in progress: :func:`run_rules` sets a fresh :class:`_Run` for its run.
_RUN: ContextVar[_Run | None] = ContextVar("qa_run", default=None)
_RUN_LOWERED_SIZE = 16
_SHORT = 256  # below this, lower() costs less than the lookup is worth


def lowered_ascii(text: str) -> str | None:
    """``text.lower()`` when ``text`` is ASCII (same length, same offsets), else None.

    Inside :func:`run_rules`, a long text is lowered once per run.
    """
    if not text.isascii():
        return None
    if len(text) < _SHORT:
        return text.lower()
    run = _RUN.get()
    if run is None:
        return text.lower()
    memo = run.lowered
    low = memo.get(text)
    if low is None:
        if len(memo) >= _RUN_LOWERED_SIZE:
            del memo[next(iter(memo))]
        low = memo[text] = text.lower()
    return low


# ``re``'s own parser and prefix finder (no public API; typeshed has no stubs for them), to tell
# which patterns ``re`` can skip through once their leading ``\b`` is gone. They are internal to
# CPython 3.11: where they are missing or differ, every pattern keeps its ``\b`` (slower, same
# matches).
try:
    re_parser: Any = importlib.import_module("re._parser")
    re_compiler: Any = importlib.import_module("re._compiler")
    re_constants: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - CPython 3.11 has them
    re_parser = re_compiler = re_constants = None
_WORD_ASCII = frozenset(string.ascii_letters + string.digits + "_")


def _unbounded_body(source: str, flags: int) -> re.Pattern[str] | None:
    """``source`` without its leading ``\\b``, compiled, when that lets ``re`` skip ahead; else None.

    ``re`` tries a pattern that starts with ``\\b`` at every position of the
    text. Without it, a pattern whose matches start with known characters
    (a literal, a class, an alternation of literals: ``opacit``, ``[lr]``) is
    searched in C up to the next such character. Only when the ``\\b``
    applies to the whole pattern (no top-level ``|``) and what follows has
    such a start.
    """
    if not source.startswith("\\b") or re_parser is None:
        return None
    try:
        whole = re_parser.parse(source, flags)
        body = re_parser.parse(source[2:], flags)
        if not whole.data or whole.data[0] != (re_constants.AT, re_constants.AT_BOUNDARY):
            return None
        known = (
            re_compiler._get_literal_prefix(body, flags)[0] or re_compiler._get_charset_prefix(body, flags) is not None
        )
        # No start ``re`` knows: our own parse may know one of word characters only (``may|might|...``
        # inside a group), and then _led_by_non_word searches it from the character before.
        if not known and (flags & re.VERBOSE or _word_start_codes(source[2:]) is None):
            return None
    except (re.error, AttributeError, TypeError, ValueError, IndexError):
        # A pattern ``re`` refuses, or internals unlike 3.11's: the pattern keeps its ``\b``.
        return None
    return re.compile(source[2:], flags)


_WORD_CODES = frozenset(map(ord, _WORD_ASCII))


def _word_start_codes(source: str) -> frozenset[int] | None:
    """The characters (code points) a match of the lower-case pattern ``source`` can start with, when our
    own parse (:func:`listener.text.scanner.first_chars`) knows them and all are ASCII word characters."""
    chars = first_chars(source)
    if chars is None:
        return None
    codes = frozenset(map(ord, chars))
    return codes if codes and codes <= _WORD_CODES else None


def _led_by_non_word(body: re.Pattern[str]) -> re.Pattern[str] | None:
    """``[^a-z0-9_](?:body)``, when every match of ``body`` starts with an ASCII word character and
    ``body`` has no literal start; else None.

    In a lower-cased ASCII text the ``\\b`` before such a match holds
    exactly where the character before it is no word character (or there is
    none, at offset 0), so one search of this pattern finds the next match
    with its boundary: ``re`` skips in C to the non-word characters, where
    the body alone stops at every occurrence of its first characters ("l" and
    "r" of ``(left|right)``, inside words too) for a boundary test in Python.
    Known only through ``re``'s internal parser (CPython 3.11); without it,
    None and the boundary is tested in Python as before.
    """
    if re_parser is None or body.flags & re.VERBOSE:
        return None  # (a verbose body's trailing comment would swallow the closing parenthesis)
    try:
        parsed = re_parser.parse(body.pattern, body.flags)
        if re_compiler._get_literal_prefix(parsed, body.flags)[0]:
            # A body with a literal start ("opacit", "left", "no") is searched on its own: ``re`` skips
            # to that literal in C, several times faster than it tests every character against
            # ``[^a-z0-9_]`` and enters the body after each non-word character, and the few hits
            # inside a word are passed over in Python (docs/benchmarks.md, "Worker CPU, round 7").
            return None
        charset = re_compiler._get_charset_prefix(parsed, body.flags)
        if not charset:
            known = _word_start_codes(body.pattern)
            return None if known is None else re.compile(f"[^a-z0-9_](?:{body.pattern})", body.flags)
        firsts = []
        for op, av in charset:
            if op is re_constants.LITERAL:
                firsts.append(av)
            elif op is re_constants.RANGE and av[1] - av[0] < 64:
                firsts.extend(range(av[0], av[1] + 1))
            else:
                return None
    except (re.error, AttributeError, TypeError, ValueError, IndexError):
        return None
    if not all(isinstance(c, int) and c in _WORD_CODES for c in firsts):
        return None
    return re.compile(f"[^a-z0-9_](?:{body.pattern})", body.flags)


#: A :class:`Folded` pattern's needed literals before they are worked out: the empty string, which
#: every text holds.
_NOT_YET = frozenset(("",))
#: The shortest literal :func:`_needed_literals` keeps: a shorter one ("c", "th") is in nearly every
#: report, and testing for it would cost more than it saves.
_MIN_NEEDED = 3


def _needed_literals(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Literals of the case-sensitive ``pattern`` one of which every match contains, or None if unknown.

    Read from ``re``'s parse (CPython 3.11's internal parser, as
    :func:`_unbounded_body`): a run of plain characters in sequence is
    needed; an alternation needs one of its branches' needs; a group, or a
    repeat of at least one, needs what its contents need. Of the needs of
    one sequence the most selective is kept (the longest shortest literal,
    then the fewest). None when no literal of ``_MIN_NEEDED`` characters
    or more is known: look-arounds, classes and optional parts count for
    nothing. A text that holds none of the literals holds no match, so
    :class:`Folded` answers without searching it (docs/benchmarks.md,
    "Worker CPU after round 6").
    """
    if re_parser is None:
        return None
    try:
        found = _needed_in(re_parser.parse(pattern.pattern, pattern.flags))
    except (re.error, AttributeError, TypeError, ValueError, IndexError):
        return None
    if found is None or not found or min(map(len, found)) < _MIN_NEEDED:
        return None
    return found


def _needed_in(items: Any) -> frozenset[str] | None:
    """:func:`_needed_literals` of one parsed sequence (``re._parser.SubPattern`` items)."""
    c = re_constants
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT)
    options: list[frozenset[str]] = []
    run: list[str] = []
    for op, av in items:
        if op is c.LITERAL:
            run.append(chr(av))
            continue
        if run:
            options.append(frozenset(("".join(run),)))
            run = []
        sub: frozenset[str] | None = None
        if op is c.SUBPATTERN:
            sub = _needed_in(av[3])
        elif op is c.ATOMIC_GROUP:
            sub = _needed_in(av)
        elif op is c.BRANCH:
            branches = [_needed_in(alt) for alt in av[1]]
            if all(b is not None for b in branches):
                sub = frozenset().union(*(b for b in branches if b is not None))
        elif op in repeats and av[0] >= 1:
            sub = _needed_in(av[2])
        if sub:
            options.append(sub)
    if run:
        options.append(frozenset(("".join(run),)))
    if not options:
        return None
    return max(options, key=lambda o: (min(map(len, o)), -len(o)))


def _at_boundary(low: str, at: int, endpos: int) -> bool:
    """``\\b`` at ``at`` of an ASCII ``low`` searched up to ``endpos``, as ``re`` decides it."""
    before = at > 0 and low[at - 1] in _WORD_ASCII
    after = at < endpos and at < len(low) and low[at] in _WORD_ASCII
    return before != after


class Folded:
    """A case-insensitive pattern, run case-sensitively over the lower-cased text.

    ``re.IGNORECASE`` makes every character comparison fold case and is
    several times slower than an exact search. On an ASCII text, a match of
    the pattern (its letters lower-cased) in ``text.lower()`` starts exactly
    where a case-insensitive match in ``text`` does, so the lower-case search
    finds the position and the original pattern, anchored there, gives the
    Match (its groups read the original text). A non-ASCII text uses the
    original pattern (Unicode case folding does not always keep lengths).
    The methods take the arguments of :class:`re.Pattern`'s.
    """

    __slots__ = ("pattern", "_exact", "_body", "_led", "_needed")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        if not pattern.flags & re.IGNORECASE:
            raise ValueError(f"pattern is not case-insensitive: {pattern.pattern!r}")
        if INLINE_FLAGS.search(pattern.pattern):
            raise ValueError(f"pattern has inline flags: {pattern.pattern!r}")
        source = lowered_source(pattern.pattern)
        self.pattern = pattern
        flags = lowered_flags(source, pattern.flags)
        self._exact = re.compile(source, flags)
        #: ``_exact`` less its leading word boundary, which :meth:`search` then checks itself.
        self._body = _unbounded_body(source, flags)
        #: ``_body`` after one non-word character (:func:`_led_by_non_word`), or None.
        self._led = _led_by_non_word(self._body) if self._body is not None else None
        #: Literals one of which every match holds (:func:`_needed_literals`), or None; ``_NOT_YET``
        #: until the first search inside a QA run works them out, so a process that imports the
        #: rules without running them never parses the patterns for it.
        self._needed: frozenset[str] | None = _NOT_YET

    def search(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        # The run's memo first: the rules search the report's text some fifty times per report, and
        # a hit there (only ASCII texts are kept) saves the call to lowered_ascii.
        run = _RUN.get()
        low = run.lowered.get(text) if run is not None else None
        if low is None:
            low = lowered_ascii(text)
            if low is None:
                return self.pattern.search(text, pos, endpos)
            return self._first_match(run, text, low, pos, endpos)
        return self._first(run, text, low, pos, endpos)  # type: ignore[arg-type]

    def _first_match(self, run: _Run | None, text: str, low: str, pos: int, endpos: int) -> re.Match[str] | None:
        """The first match in ``text[pos:endpos]``, found in ``low``, its lowered copy."""
        if run is not None and self._needed is not None and not self._present(run, low):
            return None
        span = self._search_lowered(low, pos, endpos)
        return None if span is None else self.pattern.match(text, span[0], endpos)

    def _first(self, run: _Run, text: str, low: str, pos: int, endpos: int) -> re.Match[str] | None:
        """:meth:`search` of a text the run keeps (``low`` its lowered copy), asked once per run.

        A search of the same text between the same offsets is answered from ``run.first``
        (:class:`_Run`); :meth:`finditer`'s first match is this search's.
        """
        key = (self, text, pos, endpos)
        found = run.first.get(key, _MISSING)
        if found is _MISSING:
            found = run.first[key] = self._first_match(run, text, low, pos, endpos)
        return found  # type: ignore[return-value]

    def _present(self, run: _Run, low: str) -> bool:
        """Whether ``low`` holds one of the literals every match needs; once per run and text.

        The run keeps the answer for the last text by identity: the rules of
        a run search the one lowered report text (kept by ``_Run.lowered``).
        A text shorter than ``_SHORT`` (new each time, not kept there) is
        searched without the test, which would cost as much as the search.
        """
        needed = self._needed
        if needed is _NOT_YET:
            # (Two threads may both work it out: the same answer.)
            needed = self._needed = _needed_literals(self._exact)
        if needed is None or len(low) < _SHORT:
            return True
        seen = run.present.get(self)
        if seen is None or seen[0] is not low:
            seen = run.present[self] = (low, any(lit in low for lit in needed))
        return seen[1]

    def _search_lowered(self, low: str, pos: int, endpos: int) -> tuple[int, int] | None:
        """The span of the first match of the lower-case pattern in ``low[pos:endpos]``."""
        body = self._body
        if body is None:
            m = self._exact.search(low, pos, endpos)
            return None if m is None else m.span()
        led = self._led
        if led is not None:
            pos = max(pos, 0)
            if pos == 0:
                # Offset 0 has no character before it: the boundary holds there (the match starts with a word character).
                m = body.match(low, 0, endpos)
                if m is not None:
                    return m.span()
                m = led.search(low, 0, endpos)
            else:
                m = led.search(low, pos - 1, endpos)
            return None if m is None else (m.start() + 1, m.end())
        m = body.search(low, pos, endpos)
        while m is not None and not _at_boundary(low, m.start(), endpos):
            m = body.search(low, m.start() + 1, endpos)
        return None if m is None else m.span()

    def match(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        low = lowered_ascii(text)
        if low is None:
            return self.pattern.match(text, pos, endpos)
        m = self._exact.match(low, pos, endpos)
        return None if m is None else self.pattern.match(text, pos, endpos)

    def finditer(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> Iterator[re.Match[str]]:
        run = _RUN.get()  # as in search
        kept = run.lowered.get(text) if run is not None else None
        low = kept if kept is not None else lowered_ascii(text)
        if low is None:
            yield from self.pattern.finditer(text, pos, endpos)
            return
        if self._body is not None:
            # A pattern with a body never matches empty (its matches start with a known character), so
            # each search goes on from where the last match ended, as finditer does. The first match
            # in a kept text is the search's, kept by the run (:meth:`_first`).
            if kept is not None:
                found = self._first(run, text, low, pos, endpos)  # type: ignore[arg-type]
            else:
                found = self._first_match(run, text, low, pos, endpos)
            while found is not None:
                yield found
                hit = self._search_lowered(low, found.end(), endpos)
                found = None if hit is None else self.pattern.match(text, hit[0], endpos)
                assert hit is None or (found is not None and found.span() == hit)
            return
        if run is not None and self._needed is not None and not self._present(run, low):
            return
        for m in self._exact.finditer(low, pos, endpos):
            found = self.pattern.match(text, m.start(), endpos)
            assert found is not None and found.span() == m.span()
            yield found


def folded(pattern: re.Pattern[str]) -> Folded:
    """:class:`Folded` over ``pattern`` (a compiled ``re.IGNORECASE`` pattern)."""
    return Folded(pattern)


@dataclass(slots=True)
class RuleInput:
    """Everything a rule may look at, and the id the running rule is registered under.

    Read-only by convention, not frozen: a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) costs about five times a plain one's
    (docs/benchmarks.md, "QA engine"). Rules never assign to it, nor keep it
    past their own run: :func:`run_rules` builds one per report and sets
    ``settings`` and ``rule_id`` before each rule (docs/benchmarks.md,
    "Worker CPU, round 11").
    """

    report: Report
    analysis: Analysis
    terms: Terms
    procedures: ProcedureTable | None
    directory: Directory
    context: QaContext
    settings: RuleSettings
    rule_id: str

    def param(self, name: str, default: Any = None) -> Any:
        return self.settings.params.get(name, default)

    @property
    def prepared(self) -> Any:
        """What the rule's ``prepare`` function derived from its params when the config was built."""
        return self.settings.prepared

    def emit(self, message: str, evidence: Iterable[Evidence] = (), suggestion: str = "") -> Finding:
        """Build a Finding of the running rule (its registered id) with the policy's severity for it."""
        return Finding(
            rule=self.rule_id,
            severity=self.settings.severity,
            message=message,
            evidence=tuple(evidence),
            suggestion=suggestion,
        )


RuleFunction = Callable[[RuleInput], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A registered rule: its id, function and defaults."""

    id: str
    function: RuleFunction
    default_severity: Severity
    description: str
    default_params: Mapping[str, Any]
    #: Derives what the rule needs from its params (sets, compiled patterns) once per QaConfig.
    prepare: Callable[[Mapping[str, Any]], Any] | None = None


@dataclass(frozen=True, slots=True)
class MarkedRule:
    """A rule function as :func:`rule` leaves it in its module: called as the function, holding its RuleSpec.

    Not an attribute set on the function: a function compiled by mypyc takes none
    (docs/development.md, "Compiled modules"). The engine calls ``spec.function`` itself.
    """

    spec: RuleSpec

    def __call__(self, data: RuleInput) -> Iterable[Finding]:
        return self.spec.function(data)


def rule(
    category: str,
    *,
    severity: Severity = Severity.WARNING,
    params: Mapping[str, Any] | None = None,
    prepare: Callable[[Mapping[str, Any]], Any] | None = None,
) -> Callable[[RuleFunction], RuleFunction]:
    """Mark a rule function as ``category.<function name>``.

    ``params`` are the rule's default settings (overridable in policies/qa.yaml);
    ``prepare(params)``, when given, derives what the rule would otherwise
    rebuild from them for every report (a set of lower-cased words, a compiled
    pattern): :class:`QaConfig` calls it once and the rule reads the result
    as ``data.prepared``.
    the function's docstring first line is its description in README and
    ``overread rules`` (a compiled function has none: :mod:`listener.qa.registry`
    reads it from the module's source). Its module keeps it as a MarkedRule with its RuleSpec (:func:`rule_spec`);
    :mod:`listener.qa.registry` collects them.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown finding category {category!r}")

    def register(func: RuleFunction) -> RuleFunction:
        doc = (func.__doc__ or "").strip().splitlines()
        spec = RuleSpec(
            f"{category}.{func.__name__}",
            func,
            severity,
            doc[0] if doc else "",
            MappingProxyType(dict(params or {})),
            prepare,
        )
        return MarkedRule(spec)

    return register


def rule_spec(value: object) -> RuleSpec | None:
    """The RuleSpec :func:`rule` put on ``value``, or None for anything else."""
    return value.spec if isinstance(value, MarkedRule) else None


#: The rules one QaConfig runs, in rule-id order: (id, function, settings).
Plan = tuple[tuple[str, RuleFunction, RuleSettings], ...]


@dataclass(frozen=True, slots=True)
class QaConfig:
    """Everything loaded once for the QA engine: policy, vocabularies, tables."""

    rules: Mapping[str, RuleSettings]
    terms: Terms
    procedures: ProcedureTable | None
    directory: Directory
    version: str
    #: Every registered rule by id (:func:`listener.qa.registry.registry`).
    specs: Mapping[str, RuleSpec] = field(repr=False, compare=False)
    #: The enabled, registered rules in rule-id order with their settings,
    #: derived from ``rules`` and ``specs`` when the config is built.
    plan: Plan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = []
        for rule_id in sorted(self.rules):
            settings = self.rules[rule_id]
            spec = self.specs.get(rule_id)
            if spec is not None and settings.enabled:
                if spec.prepare is not None:
                    settings = replace(settings, prepared=spec.prepare(settings.params))
                plan.append((rule_id, spec.function, settings))
        object.__setattr__(self, "plan", tuple(plan))


def run_rules(report: Report, config: QaConfig, context: QaContext) -> tuple[Finding, ...]:
    """Run every enabled rule over ``report``; findings in rule-id order.

    A report without text (PDF, empty) still runs: completeness says so.

    Raises:
        QaInterrupted: ``context.stop`` returned True before a rule.
    """
    analysis = Analysis(report, config.terms, context.text_cache)
    findings: list[Finding] = []
    terms, procedures, directory = config.terms, config.procedures, config.directory
    stop = context.stop
    token = _RUN.set(_Run())
    # One RuleInput for the run, its settings and rule id set before each rule: a rule's findings are
    # all made (its generator run out by ``extend``) before the next rule's are set
    # (docs/benchmarks.md, "Worker CPU, round 11").
    data: RuleInput | None = None
    try:
        for rule_id, function, settings in config.plan:
            if stop is not None and stop():
                raise QaInterrupted(tuple(findings))
            if data is None:
                data = RuleInput(report, analysis, terms, procedures, directory, context, settings, rule_id)
            else:
                data.settings = settings
                data.rule_id = rule_id
            findings.extend(function(data))
    finally:
        _RUN.reset(token)
    return tuple(findings)


__all__ = [
    "Analysis",
    "Folded",
    "Prior",
    "QaConfig",
    "QaContext",
    "QaInterrupted",
    "Plan",
    "RuleInput",
    "RuleSettings",
    "RuleSpec",
    "folded",
    "lowered_ascii",
    "rule",
    "rule_spec",
    "run_rules",
]
