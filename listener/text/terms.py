"""Term vocabularies (policies/terms/*.yaml) compiled into a few big regexes.

Pure: :func:`build_terms` takes the parsed files (``listener.assemble.load_terms``
reads them). Everything the hot path needs is compiled here, once: one alternation for every finding
concept, one for every ConText trigger (negation, hedges, history, indication,
experiencer, pseudo-triggers, terminators, definite phrases), and three for
laterality. Scanning a report is then a handful of ``finditer`` calls, with no
loop over terms.

Each YAML file says what it holds with ``kind``:

``kind: concepts``
    ``concepts: {name: {synonyms: [regex...], critical: bool, significant: bool,
    sex: female|male, broader: other_concept, in_context: {...}}}``.
    ``in_context: {concept: other, report: [regex...], not_sentence: [regex...]}``
    reads a mention as ``other`` when the report matches one of ``report``
    and the mention's sentence matches none of ``not_sentence`` (bare
    "edema" is pulmonary edema in a report about the lungs, unless its
    sentence names another site).
``kind: modifiers``
    ``category`` (one of :data:`MODIFIER_CATEGORIES`), default ``direction``
    and ``window``, and ``triggers``: regex strings or ``{pattern, direction,
    window}`` mappings.
``kind: laterality``
    ``sides``, ``abbreviations``, ``not_side``, ``non_paired``, ``device``,
    ``paired_anatomy`` and ``window`` (see policies/terms/laterality.yaml).
``kind: attribution``
    licence texts only; ignored.

Patterns are case-insensitive regexes matched as whole words; a space in a
pattern matches any run of whitespace (reports wrap lines anywhere). Named
groups are reserved for the compiler. Every error is a ConfigError naming
``file:line``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from re import _constants as _sre_c  # type: ignore[attr-defined]
from re import _parser as _sre_p  # type: ignore[attr-defined]
from types import MappingProxyType
from typing import Any

from listener.errors import ConfigError
from listener.yamlconf import YamlFile, YamlList, YamlMap

__all__ = [
    "DIRECTIONS",
    "MODIFIER_CATEGORIES",
    "Concept",
    "LateralityTerms",
    "Scanner",
    "Terms",
    "Trigger",
    "build_scanner",
    "build_terms",
    "compile_pattern_list",
]

MODIFIER_CATEGORIES = (
    "negated",
    "uncertain",
    "historical",
    "hypothetical",
    "other_experiencer",
    "pseudo",
    "terminate",
    "definite",
)
DIRECTIONS = ("forward", "backward", "bidirectional")
SEXES = ("female", "male")
SIDES = ("left", "right", "bilateral")

# A whole-word boundary that also works for patterns starting or ending with
# punctuation (";", ": none", "?"): either side of the match is a non-word
# character or the text edge.
_START = r"(?:(?<!\w)|(?!\w))"
_END = r"(?:(?!\w)|(?<!\w))"
_FLAGS = re.IGNORECASE

# Triggers of these categories never decide a mention's status themselves.
_NO_SCOPE = frozenset({"pseudo", "terminate", "definite"})


@dataclass(frozen=True, slots=True)
class Concept:
    """A finding (or sex-specific anatomy) concept.

    Attributes:
        name: snake_case identifier, unique across all concept files.
        critical: ACR-style actionable finding (needs documented communication).
        significant: should reach the impression when affirmed in findings.
        sex: ``"female"``/``"male"`` for sex-specific anatomy, else ``""``.
        broader: name of a more general concept of the same family, or ``""``
            (``tension_pneumothorax`` -> ``pneumothorax``).
        source: ``file:line`` where it is defined.
        context_concept: the concept a mention is read as when the report
            matches ``context_report`` and its sentence does not match
            ``context_not_sentence`` (``""``: no such reading).
    """

    name: str
    critical: bool = False
    significant: bool = False
    sex: str = ""
    broader: str = ""
    source: str = ""
    context_concept: str = ""
    context_report: re.Pattern[str] | None = None
    context_not_sentence: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """How one ConText trigger acts on the findings around it.

    Attributes:
        category: one of :data:`MODIFIER_CATEGORIES`.
        direction: ``forward`` (trigger before the finding), ``backward`` or
            ``bidirectional``.
        window: the largest number of words between trigger and finding.
        source: ``file:line`` of the trigger.
    """

    category: str
    direction: str
    window: int
    source: str = ""


@dataclass(frozen=True, slots=True)
class LateralityTerms:
    """Compiled laterality vocabulary.

    Attributes:
        side_re: side words; group ``x`` is a phrase where the word is not a
            side ("left in place"), groups ``left``/``right``/``bilateral`` are
            sides, ``abbr_left``/``abbr_right`` are L/Lt/R/Rt.
        after_re: matched right after a side word: up to ``window`` words, then
            group ``np`` (non-paired anatomy), ``dev`` (a device) or an anatomy
            group named in ``anatomy_groups``.
        before_re: searched in the text before a side word; an anatomy group
            ending just before it ("knee, left").
        device_after_re: matched after an anatomy: a device follows it
            ("left subclavian catheter").
        anatomy_groups: group name -> canonical anatomy name.
        window: words allowed between side word and anatomy.
        side_scanner: ``side_re``'s alternatives as a :class:`Scanner` (same
            group names), which skips the words that start no side word.
        anatomy_re: the paired-anatomy alternation alone (groups as in
            ``anatomy_groups``), for side words that carry their anatomy
            ("bibasilar": bilateral + ``basilar``).
    """

    side_re: re.Pattern[str]
    after_re: re.Pattern[str]
    before_re: re.Pattern[str]
    device_after_re: re.Pattern[str]
    anatomy_groups: Mapping[str, str]
    window: int
    side_scanner: Scanner | None = None
    anatomy_re: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Terms:
    """Every vocabulary, compiled. Build it with :func:`build_terms`.

    Attributes:
        concepts: concept name -> Concept.
        concept_scanner: every concept synonym; a match's ``lastgroup`` maps
            to a concept through ``concept_groups``.
        concept_groups: regex group name -> Concept.
        concept_patterns: concept name -> its compiled synonym patterns.
        modifier_scanner: every trigger; a match's ``lastgroup`` maps to a
            Trigger through ``modifier_groups``. Pseudo-triggers come first so
            that they consume the trigger word inside them.
        modifier_groups: regex group name -> Trigger.
        modifier_patterns: regex group name -> the trigger's pattern.
        definite_re: phrases that make a sentence a definite statement
            (``kind: modifiers, category: definite``); kept apart so that they
            never compete with the triggers.
        laterality: the compiled laterality vocabulary.
        sources: the files read, in order.
        digest: sha256 of the files' bytes (a version for the Route record).
        max_window: the largest ``window`` of a trigger that sets a flag: no
            trigger reaches a finding more words away than this.
    """

    concepts: Mapping[str, Concept]
    concept_scanner: Scanner
    concept_groups: Mapping[str, Concept]
    concept_patterns: Mapping[str, tuple[str, ...]]
    modifier_scanner: Scanner
    modifier_groups: Mapping[str, Trigger]
    modifier_patterns: Mapping[str, str]
    definite_re: re.Pattern[str]
    laterality: LateralityTerms
    sources: tuple[str, ...]
    digest: str
    max_window: int

    def concept(self, name: str) -> Concept:
        """Return the concept called ``name`` (KeyError if unknown)."""
        return self.concepts[name]


# --------------------------------------------------------------------------
# pattern helpers


def _spaces_to_whitespace(pattern: str) -> str:
    """Turn each literal space outside a character class into ``\\s+``."""
    out: list[str] = []
    in_class = False
    escaped = False
    for i, ch in enumerate(pattern):
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif in_class:
            out.append(ch)
            if ch == "]":
                in_class = False
        elif ch == "[":
            out.append(ch)
            in_class = True
        elif ch == " ":
            if out and out[-1] == r"\s+":
                continue
            # "can ?not": the space carries its own quantifier.
            quantified = i + 1 < len(pattern) and pattern[i + 1] in "?*+{"
            out.append(r"\s" if quantified else r"\s+")
        else:
            out.append(ch)
    return "".join(out)


def _checked(raw: str, where: YamlList, index: int) -> str:
    """Validate one user pattern and return it rewritten for our matcher."""
    pattern = raw.strip()
    if not pattern:
        raise where.error(index, "empty pattern")
    if "(?P" in pattern or "(?<" in pattern.replace("(?<=", "").replace("(?<!", ""):
        raise where.error(index, "named groups are reserved; use (...) or (?:...)")
    rewritten = _spaces_to_whitespace(pattern)
    try:
        compiled = re.compile(rewritten, _FLAGS)
    except re.error as exc:
        raise where.error(index, f"invalid regular expression ({exc.msg})") from None
    if compiled.fullmatch("") is not None:
        raise where.error(index, "pattern matches the empty string")
    return rewritten


def compile_pattern_list(items: YamlList) -> tuple[str, ...]:
    """Validate and rewrite every pattern of a YAML list (strings only)."""
    return tuple(_checked(s, items, i) for i, s in enumerate(items.strings()))


def _alternation(groups: Iterable[tuple[str, Iterable[str]]]) -> str:
    """``(?P<g1>a|b)|(?P<g2>c)...`` for (group name, patterns) pairs."""
    return "|".join(f"(?P<{name}>{'|'.join(pats)})" for name, pats in groups)


def _word_bounded(body: str) -> re.Pattern[str]:
    return re.compile(f"{_START}(?:{body}){_END}", _FLAGS)


def _where(doc: YamlMap | YamlList, key: str | int) -> str:
    line = doc.line_of(key)  # type: ignore[arg-type]
    return f"{doc.path}:{line}" if line is not None else doc.path


_TOKEN = re.compile(r"\w+|[^\w\s]")
#: Characters of text looked at to pick the candidate patterns at a token.
_KEY = 3
#: More possible prefixes than this and a pattern is keyed on its first character only.
_MAX_PREFIXES = 256

_REPEATS = (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT, _sre_c.POSSESSIVE_REPEAT)


#: Characters that ``str.lower`` turns into a string starting with a given ASCII
#: character, besides that character and its upper case (tests/unit/text checks
#: this against every code point).
_LOWER_TO_ASCII = {"i": "\u0130", "k": "\u212a"}


def _cased_class(ch: str) -> str:
    """A character class matching every character whose lower case starts with ASCII ``ch``."""
    chars = {ch, ch.upper(), *_LOWER_TO_ASCII.get(ch, "")}
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


def _key_finder(keys: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern that skips, in C, the tokens where no key applies.

    Matched at a token start, it consumes whitespace and every token (``\\w+``
    or one other character, as ``_TOKEN`` splits them) that does not start
    with a key, compared as ``str.lower`` would, then takes the next token as
    group 1 (absent at the end of the text). The tokens it stops at are a
    superset of those where ``text[p:p+3].lower()`` or its first two or one
    characters are a key; :meth:`Scanner.scan` looks the key up again there.
    None when a key holds anything but ASCII or starts with a space: those
    scanners keep the token loop.
    """
    keys = sorted(set(keys))
    if not keys or not all(k.isascii() and k and not k[0].isspace() for k in keys):
        return None
    trie: dict[str, set[str]] = {}
    for k in keys:
        trie.setdefault(k[0], set()).add(k[1:])
    branches: list[str] = []
    for ch, rests in sorted(trie.items()):
        if "" in rests:
            branches.append(_cased_class(ch))  # the character alone is a key: nothing longer matters
        else:
            alts = "|".join("".join(_cased_class(c) for c in rest) for rest in sorted(rests))
            branches.append(f"{_cased_class(ch)}(?:{alts})")
    key = "|".join(branches)
    return re.compile(rf"(?:\s+|(?!{key})(?:\w+|[^\w\s]))*+(\w+|[^\w\s])?")


@dataclass(frozen=True, slots=True)
class Scanner:
    """An alternation of many patterns, dispatched on the first characters.

    Python's ``re`` tries every alternative at every position; with a few
    hundred triggers that costs milliseconds per report. A Scanner works out,
    from each pattern's parse tree, the literal text it must start with (up
    to three characters, lower-cased: ``effusions?`` -> ``eff``,
    ``(broncho)?pneumonia`` -> ``bro``/``pne``, ``no`` -> ``no``), and keeps
    one compiled alternation per such key holding only the patterns that can
    start there. At each token start it looks up the text's next three
    characters, then two, then one, and tries that small alternation, or
    nothing. Semantics are those of ``finditer`` over the whole alternation
    at token starts: leftmost match, first alternative wins, no overlaps.

    When every pattern has a known start (no ``default``), the token starts
    worth a look are found by one compiled pattern (``_finder``: a token start
    followed by some key, case-insensitively), so the Python loop visits only
    those instead of every word; the lookup there is the same as before.

    Attributes:
        table: lower-case key of one to three characters -> alternation of
            the patterns (in priority order) that can start with it, plus
            those whose start is unknown. A longer key is tried first.
        default: alternation of the patterns whose start is unknown, for
            every other position (None if there are none).
    """

    table: Mapping[str, re.Pattern[str]]
    default: re.Pattern[str] | None
    _finder: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        finder = _key_finder(self.table) if self.default is None else None
        object.__setattr__(self, "_finder", finder)

    def scan(self, text: str, start: int = 0, end: int | None = None) -> list[re.Match[str]]:
        """Non-overlapping matches in ``text[start:end]``, in order."""
        finder = self._finder
        if finder is None:
            return self.scan_tokens(text, start, end)
        hi = len(text) if end is None else end
        # The finder tokenizes up to two characters past ``hi`` so that its key
        # test sees the same three characters as the lookup below.
        stop = hi + _KEY - 1
        get = self.table.get
        out: list[re.Match[str]] = []
        floor = start
        # Every match but the last (empty, at ``stop``) ends with a token in group 1.
        for cand in finder.finditer(text, start, stop):
            p = cand.start(1)
            if p < 0 or p >= hi:
                break
            if p < floor:
                continue
            key = text[p : p + _KEY].lower()
            rx = get(key) or get(key[:2]) or get(key[:1])
            if rx is None:
                continue
            m = rx.match(text, p, hi)
            if m is not None:
                out.append(m)
                floor = m.end()
        return out


    def scan_tokens(self, text: str, start: int = 0, end: int | None = None) -> list[re.Match[str]]:
        """:meth:`scan` by visiting every token start (the reference; used when there is a ``default``)."""
        hi = len(text) if end is None else end
        get = self.table.get
        default = self.default
        out: list[re.Match[str]] = []
        floor = start
        for tok in _TOKEN.finditer(text, start, hi):
            p = tok.start()
            if p < floor:
                continue
            key = text[p : p + _KEY].lower()
            rx = get(key) or get(key[:2]) or get(key[:1], default)
            if rx is None:
                continue
            m = rx.match(text, p, hi)
            if m is not None:
                out.append(m)
                floor = m.end()
        return out


_State = tuple[str, bool]  # (literal prefix so far, whether it may still grow)


def _grow(items: Any, states: set[_State]) -> set[_State] | None:
    """Extend each open prefix through a sequence of parsed regex items."""
    for op, av in items:
        nxt: set[_State] = set()
        for s, is_open in states:
            if not is_open or len(s) >= _KEY:
                nxt.add((s, False))
                continue
            got = _step(op, av, s)
            if got is None:
                return None
            nxt |= got
        if len(nxt) > _MAX_PREFIXES:
            return None
        states = nxt
    return states


def _step(op: Any, av: Any, s: str) -> set[_State] | None:
    """The prefixes after one parsed item, from the open prefix ``s``."""
    if op is _sre_c.LITERAL:
        return {(s + chr(av).lower(), True)}
    if op is _sre_c.IN:
        chars: set[str] = set()
        for kind, val in av:
            if kind is _sre_c.LITERAL:
                chars.add(chr(val).lower())
            elif kind is _sre_c.RANGE and val[1] - val[0] < 16:
                chars.update(chr(x).lower() for x in range(val[0], val[1] + 1))
            else:
                return {(s, False)}  # a wide class: the literal prefix stops here
        return {(s + c, True) for c in chars}
    if op is _sre_c.SUBPATTERN:
        return _grow(av[3], {(s, True)})
    if op is _sre_c.BRANCH:
        acc: set[_State] = set()
        for alt in av[1]:
            got = _grow(alt, {(s, True)})
            if got is None:
                return None
            acc |= got
        return acc
    if op in _REPEATS:
        lo, hi, sub = av
        once = _grow(sub, {(s, True)})
        if once is None:
            return None
        # After one repetition the next item is unknown unless hi == 1:
        # close the prefix there (shorter is always safe).
        acc = once if hi == 1 else {(x, False) for x, _ in once}
        if lo == 0:
            acc = acc | {(s, True)}
        return acc
    if op in (_sre_c.AT, _sre_c.ASSERT, _sre_c.ASSERT_NOT):
        return {(s, True)}  # zero-width
    return {(s, False)}


def _prefixes(pattern: str) -> frozenset[str] | None:
    """The literal starts (1-3 chars, lower case) a match of ``pattern`` must have; None if unknown."""
    try:
        states = _grow(_sre_p.parse(pattern, _FLAGS), {("", True)})
    except Exception:  # noqa: BLE001 - a private parser: any surprise means "unknown"
        return None
    if states is None:
        first = _first_chars(pattern)
        return first  # too many combinations: key on the first character
    out = frozenset(s for s, _ in states)
    return None if "" in out else out


def _first(items: Any) -> tuple[set[str] | None, bool]:
    """(possible first characters or None if unknown, whether it can match empty)."""
    acc: set[str] = set()
    for op, av in items:
        if op is _sre_c.LITERAL:
            acc.add(chr(av).lower())
            return acc, False
        if op is _sre_c.IN:
            for kind, val in av:
                if kind is _sre_c.LITERAL:
                    acc.add(chr(val).lower())
                elif kind is _sre_c.RANGE and val[1] - val[0] < 64:
                    acc.update(chr(x).lower() for x in range(val[0], val[1] + 1))
                else:
                    return None, False
            return acc, False
        if op is _sre_c.SUBPATTERN:
            sub, nullable = _first(av[3])
        elif op is _sre_c.BRANCH:
            sub, nullable = set(), False
            for alt in av[1]:
                chars, n = _first(alt)
                if chars is None:
                    return None, False
                sub |= chars
                nullable = nullable or n
        elif op in _REPEATS:
            sub, nullable = _first(av[2])
            nullable = nullable or av[0] == 0
        elif op in (_sre_c.AT, _sre_c.ASSERT, _sre_c.ASSERT_NOT):
            continue
        else:
            return None, False
        if sub is None:
            return None, False
        acc |= sub
        if not nullable:
            return acc, False
    return acc, True


def _widths(pattern: str) -> tuple[int, int]:
    """(shortest, longest) match length of a pattern, capped at 10_000."""
    try:
        lo, hi = _sre_p.parse(pattern, _FLAGS).getwidth()
    except Exception:  # noqa: BLE001 - a private parser
        return 0, 0
    return min(int(lo), 10_000), min(int(hi), 10_000)


def _first_chars(pattern: str) -> frozenset[str] | None:
    try:
        chars, nullable = _first(_sre_p.parse(pattern, _FLAGS))
    except Exception:  # noqa: BLE001 - a private parser: any surprise means "unknown"
        return None
    return None if chars is None or nullable else frozenset(chars)


def build_scanner(groups: list[tuple[str, tuple[str, ...]]]) -> Scanner:
    """Compile (group name, patterns) pairs, in priority order, into a Scanner."""
    entries = [(name, pat, _prefixes(pat)) for name, pats in groups for pat in pats]
    keys: set[str] = set()
    for _, _, pre in entries:
        if pre is not None:
            keys |= pre
    compiled: dict[tuple[int, ...], re.Pattern[str]] = {}

    def alternation_for(key: str | None) -> re.Pattern[str] | None:
        chosen = tuple(
            i
            for i, (_, _, pre) in enumerate(entries)
            if pre is None or (key is not None and any(key.startswith(q) for q in pre))
        )
        if not chosen:
            return None
        if chosen not in compiled:
            parts: list[tuple[str, list[str]]] = []
            for i in chosen:
                name, pat, _ = entries[i]
                if parts and parts[-1][0] == name:
                    parts[-1][1].append(pat)
                else:
                    parts.append((name, [pat]))
            compiled[chosen] = _word_bounded(_alternation(parts))
        return compiled[chosen]

    table = {}
    for key in sorted(keys):
        rx = alternation_for(key)
        if rx is not None:
            table[key] = rx
    return Scanner(MappingProxyType(table), alternation_for(None))


# --------------------------------------------------------------------------
# loaders per kind


@dataclass(slots=True)
class _Builder:
    concepts: dict[str, Concept]
    concept_patterns: dict[str, tuple[str, ...]]
    triggers: list[tuple[str, Trigger]]
    laterality: LateralityTerms | None


def _load_concepts(doc: YamlMap, b: _Builder) -> None:
    doc.reject_unknown({"kind", "concepts"})
    concepts = doc.get_map("concepts", required=True)
    for name in concepts:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise concepts.error(name, f"concept name {name!r} must be snake_case")
        if name in b.concepts:
            raise concepts.error(name, f"concept {name!r} already defined at {b.concepts[name].source}")
        entry = concepts.get_map(name, required=True)
        entry.reject_unknown({"synonyms", "critical", "significant", "sex", "broader", "in_context"}, where=name)
        sex = entry.get("sex")
        if sex is not None:
            sex = entry.get_choice("sex", SEXES)
        context_concept = ""
        context_report: re.Pattern[str] | None = None
        context_not_sentence: re.Pattern[str] | None = None
        if "in_context" in entry:
            ctx = entry.get_map("in_context", required=True)
            ctx.reject_unknown({"concept", "report", "not_sentence"}, where=f"{name}.in_context")
            context_concept = ctx.get_str("concept")
            report = compile_pattern_list(ctx.get_list("report", required=True))
            if not report:
                raise ctx.error("report", f"{name}.in_context: report must not be empty")
            context_report = _word_bounded("|".join(report))
            not_sentence = compile_pattern_list(ctx.get_list("not_sentence"))
            context_not_sentence = _word_bounded("|".join(not_sentence)) if not_sentence else None
        b.concepts[name] = Concept(
            name=name,
            critical=entry.get_bool("critical", False),
            significant=entry.get_bool("significant", False),
            sex=sex or "",
            broader=entry.get_str("broader", "") if "broader" in entry else "",
            source=_where(concepts, name),
            context_concept=context_concept,
            context_report=context_report,
            context_not_sentence=context_not_sentence,
        )
        synonyms = entry.get_list("synonyms", required=True)
        if not synonyms:
            raise entry.error("synonyms", f"{name}: synonyms must not be empty")
        b.concept_patterns[name] = compile_pattern_list(synonyms)


def _load_modifiers(doc: YamlMap, b: _Builder) -> None:
    doc.reject_unknown({"kind", "category", "direction", "window", "triggers"})
    category = doc.get_choice("category", MODIFIER_CATEGORIES)
    direction = doc.get_choice("direction", DIRECTIONS, "forward")
    window = int(doc.get_number("window", 8, minimum=0))
    triggers = doc.get_list("triggers", required=True)
    for i, item in enumerate(triggers):
        t_dir, t_win = direction, window
        if isinstance(item, YamlMap):
            item.reject_unknown({"pattern", "direction", "window"}, where="trigger")
            raw = item.get_str("pattern")
            t_dir = item.get_choice("direction", DIRECTIONS, direction)
            t_win = int(item.get_number("window", window, minimum=0))
        elif isinstance(item, (list, bool)) or item is None:
            raise triggers.error(i, "a trigger is a pattern string or a {pattern, direction, window} mapping")
        else:
            raw = str(item)
        pattern = _checked(raw, triggers, i)
        b.triggers.append((pattern, Trigger(category, t_dir, t_win, _where(triggers, i))))


def _load_laterality(doc: YamlMap, b: _Builder) -> None:
    doc.reject_unknown(
        {"kind", "window", "sides", "abbreviations", "not_side", "non_paired", "device", "paired_anatomy"}
    )
    if b.laterality is not None:
        raise doc.error("kind", "a second laterality file; keep one")
    window = int(doc.get_number("window", 4, minimum=0))
    sides = doc.get_map("sides", required=True)
    sides.reject_unknown(set(SIDES), where="sides")
    abbreviations = doc.get_map("abbreviations")
    abbreviations.reject_unknown({"left", "right"}, where="abbreviations")
    not_side = compile_pattern_list(doc.get_list("not_side"))
    non_paired = compile_pattern_list(doc.get_list("non_paired"))
    device = compile_pattern_list(doc.get_list("device"))
    anatomy = doc.get_map("paired_anatomy", required=True)

    side_groups: list[tuple[str, tuple[str, ...]]] = []
    if not_side:
        side_groups.append(("x", not_side))
    # bilateral first: "left and right" must not be read as "left".
    for side in ("bilateral", "left", "right"):
        pats = compile_pattern_list(sides.get_list(side))
        if pats:
            side_groups.append((side, pats))
    for side in ("left", "right"):
        pats = compile_pattern_list(abbreviations.get_list(side))
        if pats:
            side_groups.append((f"abbr_{side}", pats))

    anatomy_groups: dict[str, str] = {}
    anatomy_alts: list[tuple[str, tuple[str, ...]]] = []
    for i, name in enumerate(anatomy):
        pats = compile_pattern_list(anatomy.get_list(name, required=True))
        if not pats:
            raise anatomy.error(name, f"{name}: no patterns")
        group = f"a{i}"
        anatomy_groups[group] = name
        anatomy_alts.append((group, pats))

    heads: list[tuple[str, tuple[str, ...]]] = []
    if non_paired:
        heads.append(("np", non_paired))
    if device:
        heads.append(("dev", device))
    heads.extend(anatomy_alts)
    # Strategy: skip as few words as possible (lazy), then take the first
    # anatomy-like phrase of any class; hyphens and spaces only, so the search
    # never crosses a comma or a clause.
    after = re.compile(
        rf"[\s-]*(?:[\w'/.]+[\s-]+){{0,{window}}}?{_START}(?:{_alternation(heads)}){_END}", _FLAGS
    )
    before = re.compile(
        rf"{_START}(?:{_alternation(anatomy_alts)}){_END}[\s,:()-]*"
        r"(?:(?:on|of|in|at|to|the|is|are|side|joint|region)[\s,:-]+){0,3}$",
        _FLAGS,
    )
    device_after = re.compile(rf"[\s-]+(?:[\w'/]+[\s-]+){{0,2}}?(?:{'|'.join(device) or '(?!)'}){_END}", _FLAGS)
    b.laterality = LateralityTerms(
        side_re=_word_bounded(_alternation(side_groups)),
        after_re=after,
        before_re=before,
        device_after_re=device_after,
        anatomy_groups=MappingProxyType(anatomy_groups),
        window=window,
        side_scanner=build_scanner(side_groups),
        anatomy_re=re.compile(f"(?:{_alternation(anatomy_alts)})", _FLAGS),
    )


_LOADERS = {"concepts": _load_concepts, "modifiers": _load_modifiers, "laterality": _load_laterality}


def build_terms(files: Iterable[YamlFile], folder: str) -> Terms:
    """Compile the vocabularies of the term files of one folder.

    Args:
        files: the folder's ``*.yaml`` files, read and parsed, in name order.
        folder: the folder they come from (named in errors about the set).

    Returns:
        The frozen, compiled :class:`Terms`.

    Raises:
        ConfigError: naming ``file:line`` for any invalid file, pattern,
            duplicate concept, unknown key, or a missing laterality file.
    """
    files = tuple(files)
    b = _Builder({}, {}, [], None)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.path.name.encode() + b"\0" + file.raw + b"\0")
        doc = file.doc
        kind = doc.get_choice("kind", ("concepts", "modifiers", "laterality", "attribution"))
        if kind == "attribution":
            continue
        _LOADERS[kind](doc, b)
    if not b.concepts:
        raise ConfigError("no concepts defined (need a file with kind: concepts)", path=folder)
    if b.laterality is None:
        raise ConfigError("no laterality vocabulary (need a file with kind: laterality)", path=folder)
    for concept in b.concepts.values():
        for what, other in (("broader", concept.broader), ("in_context", concept.context_concept)):
            if other and other not in b.concepts:
                raise ConfigError(f"{concept.name}: {what} concept {other!r} is not defined",
                                  path=concept.source.rsplit(":", 1)[0],
                                  line=int(concept.source.rsplit(":", 1)[1]))

    # Concepts: where two synonyms match at the same position the first
    # alternative wins, so critical concepts first, then the synonym with the
    # longest shortest match. Each synonym is ranked on its own, so a
    # qualified phrase of one concept ("edema of the subcutaneous fat",
    # "effusion in the knee joint") beats a bare one of another ("edema",
    # "effusion") wherever both start at the same word.
    synonyms = [(c, p) for c in b.concepts.values() for p in b.concept_patterns[c.name]]
    ranked = sorted(
        range(len(synonyms)),
        key=lambda i: (not synonyms[i][0].critical, -_widths(synonyms[i][1])[0], i),
    )
    concept_groups = {f"c{n}": synonyms[i][0] for n, i in enumerate(ranked)}
    concept_scanner = build_scanner([(f"c{n}", (synonyms[i][1],)) for n, i in enumerate(ranked)])

    # Triggers: pseudo-triggers first (they must consume "no" in "no change"),
    # then the longest possible match first, so "not excluded" beats "not"
    # and "negative for" beats "negative".
    definite = [p for p, t in b.triggers if t.category == "definite"]
    b.triggers = [(p, t) for p, t in b.triggers if t.category != "definite"]
    widths = [_widths(p) for p, _ in b.triggers]
    order = sorted(
        range(len(b.triggers)),
        key=lambda i: (b.triggers[i][1].category != "pseudo", -widths[i][0], -widths[i][1], i),
    )
    modifier_groups = {f"t{n}": b.triggers[i][1] for n, i in enumerate(order)}
    modifier_patterns = {f"t{n}": b.triggers[i][0] for n, i in enumerate(order)}
    modifier_scanner = build_scanner([(g, (p,)) for g, p in modifier_patterns.items()])

    return Terms(
        concepts=MappingProxyType(dict(b.concepts)),
        concept_scanner=concept_scanner,
        concept_groups=MappingProxyType(concept_groups),
        concept_patterns=MappingProxyType(dict(b.concept_patterns)),
        modifier_scanner=modifier_scanner,
        modifier_groups=MappingProxyType(modifier_groups),
        modifier_patterns=MappingProxyType(modifier_patterns),
        definite_re=_word_bounded("|".join(definite) or "(?!)"),
        laterality=b.laterality,
        sources=tuple(str(f.path) for f in files),
        digest=digest.hexdigest(),
        max_window=max((t.window for _, t in b.triggers if scoped_category(t)), default=0),
    )


def scoped_category(trigger: Trigger) -> bool:
    """True when a trigger of this category sets a flag on findings in scope."""
    return trigger.category not in _NO_SCOPE
