"""The Scanner: many word-bounded patterns, tried only where they can start.

:func:`build_scanner` compiles (group name, patterns) pairs into a
:class:`Scanner`. It works out, for each pattern, the literal text a match must
start with, from a small parse of the pattern of our own (:func:`parse_pattern`;
public ``re`` API only), and the shortest and longest match
(:func:`pattern_widths`, which orders the vocabularies in
:mod:`listener.text.terms`).

The parse knows the regular-expression syntax of the vocabularies
(docs/qa-rules.md; policies/terms/*.yaml): literals and escapes, character
classes, groups of every kind, lookarounds, alternation and quantifiers. A
construct it does not know makes the pattern's start unknown: the pattern is
then tried at every word, which is slower but finds the same matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "FLAGS",
    "Node",
    "Scanner",
    "SharedFinder",
    "Walk",
    "alternation",
    "build_scanner",
    "first_chars",
    "parse_pattern",
    "pattern_widths",
    "prefixes",
    "shared_finder",
    "word_bounded",
]

# A whole-word boundary that also works for patterns starting or ending with
# punctuation (";", ": none", "?"): either side of the match is a non-word
# character or the text edge.
START = r"(?:(?<!\w)|(?!\w))"
END = r"(?:(?!\w)|(?<!\w))"
FLAGS = re.IGNORECASE

_TOKEN = re.compile(r"\w+|[^\w\s]")
#: What ``\s`` of a str pattern matches among ASCII characters, written for a ``re.ASCII`` class
#: (whose ``\s`` leaves out the separators ``\x1c``-``\x1f``).
_ASCII_SPACE = r"\s\x1c-\x1f"
#: The ASCII characters a str pattern's ``\s`` matches and a ``re.ASCII`` one does not.
_SEPARATORS = ("\x1c", "\x1d", "\x1e", "\x1f")
#: Characters of text :func:`prefixes` keys a pattern on by default.
_KEY = 3
#: Characters of text a Scanner keys its patterns on, where the pattern's start allows (else
#: ``_KEY``): a longer key stops the finder at fewer tokens whose patterns then fail
#: (docs/benchmarks.md, "Worker CPU after round 6").
_SCAN_KEY = 5
#: More possible prefixes than this and a pattern is keyed on its first character only.
_MAX_PREFIXES = 256
#: Widths are capped here (a longer match is "long").
_MAX_WIDTH = 10_000


def alternation(groups: Iterable[tuple[str, Iterable[str]]]) -> str:
    """``(?P<g1>a|b)|(?P<g2>c)...`` for (group name, patterns) pairs."""
    return "|".join(f"(?P<{name}>{'|'.join(pats)})" for name, pats in groups)


def word_bounded(body: str) -> re.Pattern[str]:
    """``body`` compiled case-insensitively, matching whole words only."""
    return re.compile(f"{START}(?:{body}){END}", FLAGS)


# --------------------------------------------------------------------------
# the pattern parse
#
# A parsed pattern is a tuple of nodes.


@dataclass(frozen=True, slots=True)
class Lit:
    """One character."""

    ch: str


@dataclass(frozen=True, slots=True)
class CharSet:
    r"""A character class (or ``\d``, ``\w``, ``\s``...).

    ``chars``: its single characters; ``ranges``: (first, last) code points;
    ``wide``: it holds a category (``\d``, ``\w``, ``\s``...).
    """

    chars: tuple[str, ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()
    wide: bool = False
    negated: bool = False


@dataclass(frozen=True, slots=True)
class AnyChar:
    """``.``: one character of any kind."""


@dataclass(frozen=True, slots=True)
class Zero:
    r"""``^ $ \b \B \A \Z``, a lookaround or a comment: matches no character."""


@dataclass(frozen=True, slots=True)
class Group:
    """A group of any kind (``atomic``: ``(?>...)``)."""

    nodes: tuple[Node, ...]
    atomic: bool = False


@dataclass(frozen=True, slots=True)
class Branch:
    """Alternatives."""

    alternatives: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True, slots=True)
class Repeat:
    """A quantifier (``hi`` None: unbounded)."""

    lo: int
    hi: int | None
    nodes: tuple[Node, ...]


Node = Lit | CharSet | AnyChar | Zero | Group | Branch | Repeat


class _Unknown(Exception):
    """The pattern uses a construct the parse does not know."""


_CATEGORIES = frozenset("dDsSwW")
_ZERO_ESCAPES = frozenset("bBAZ")
_CONTROL = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")
_INLINE_FLAGS = re.compile(r"\(\?([aiLmsux]*)(?:-([imsx]*))?([:)])")


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def parse(self) -> tuple[Node, ...]:
        m = _INLINE_FLAGS.match(self.p)
        if m is not None and m.group(3) == ")":  # global flags at the start: (?i)
            if "x" in m.group(1):
                raise _Unknown("verbose patterns")
            self.i = m.end()
        nodes = self.alternatives()
        if self.i != len(self.p):
            raise _Unknown("unbalanced parenthesis")
        return nodes

    def alternatives(self) -> tuple[Node, ...]:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        if len(branches) == 1:
            return branches[0]
        return (Branch(tuple(branches)),)

    def sequence(self) -> tuple[Node, ...]:
        out: list[Node] = []
        while self.i < len(self.p) and self.peek() not in "|)":
            atom = self.atom()
            out.append(self.quantified(atom))
        return tuple(out)

    def quantified(self, atom: Node) -> Node:
        c = self.peek()
        lo: int
        hi: int | None
        if c == "?":
            lo, hi = 0, 1
            self.i += 1
        elif c == "*":
            lo, hi = 0, None
            self.i += 1
        elif c == "+":
            lo, hi = 1, None
            self.i += 1
        elif c == "{":
            m = _QUANTIFIER.match(self.p, self.i)
            if m is None or not any(m.groups()):
                return atom  # "{" starts no quantifier: a literal, read next
            lo = int(m.group(1) or 0)
            hi = (int(m.group(3)) if m.group(3) else None) if m.group(2) else lo
            self.i = m.end()
        else:
            return atom
        if self.peek() in ("?", "+"):  # lazy or possessive: the same widths and starts
            self.i += 1
        return Repeat(lo, hi, (atom,))

    def atom(self) -> Node:
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            return self.group()
        if c == "[":
            return self.char_class()
        if c == ".":
            return AnyChar()
        if c in "^$":
            return Zero()
        if c == "\\":
            return self.escape()
        if c in "*+?":
            raise _Unknown("nothing to repeat")
        return Lit(c)

    def close(self) -> None:
        if self.peek() != ")":
            raise _Unknown("missing )")
        self.i += 1

    def group(self) -> Node:
        p, i = self.p, self.i
        if not p.startswith("?", i):
            nodes = self.alternatives()
            self.close()
            return Group(nodes)
        for opener in ("?:", "?=", "?!", "?<=", "?<!", "?>"):
            if p.startswith(opener, i):
                self.i = i + len(opener)
                nodes = self.alternatives()
                self.close()
                if opener == "?:":
                    return Group(nodes)
                if opener == "?>":
                    return Group(nodes, atomic=True)
                return Zero()
        if p.startswith("?P<", i):
            end = p.find(">", i)
            if end < 0:
                raise _Unknown("unterminated group name")
            self.i = end + 1
            nodes = self.alternatives()
            self.close()
            return Group(nodes)
        if p.startswith("?#", i):
            end = p.find(")", i)
            if end < 0:
                raise _Unknown("unterminated comment")
            self.i = end + 1
            return Zero()
        m = _INLINE_FLAGS.match(p, i - 1)
        if m is not None and m.group(3) == ":" and "x" not in m.group(1) + (m.group(2) or ""):
            self.i = m.end()
            nodes = self.alternatives()
            self.close()
            return Group(nodes)
        raise _Unknown("a group kind the parse does not know")

    def escape(self) -> Node:
        if self.i >= len(self.p):
            raise _Unknown("a trailing backslash")
        c = self.p[self.i]
        self.i += 1
        if c in _CATEGORIES:
            return CharSet(wide=True)
        if c in _ZERO_ESCAPES:
            return Zero()
        if c.isdigit():
            raise _Unknown("a back reference or octal escape")
        return Lit(self.escaped_char(c))

    def escaped_char(self, c: str) -> str:
        """The character an escape stands for (``c`` follows the backslash)."""
        if c in _CONTROL:
            return _CONTROL[c]
        if c in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.p[self.i : self.i + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise _Unknown("a bad hexadecimal escape")
            self.i += size
            return chr(int(digits, 16))
        if c.isascii() and c.isalnum():
            raise _Unknown("an escape the parse does not know")
        return c

    def char_class(self) -> Node:
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        chars: list[str] = []
        ranges: list[tuple[int, int]] = []
        wide = False
        first = True
        while True:
            if self.i >= len(self.p):
                raise _Unknown("unterminated character class")
            c = self.p[self.i]
            self.i += 1
            if c == "]" and not first:
                break
            first = False
            if c == "\\":
                if self.i >= len(self.p):
                    raise _Unknown("a trailing backslash")
                e = self.p[self.i]
                self.i += 1
                if e in _CATEGORIES:
                    wide = True
                    continue
                if e == "b":
                    lo = "\b"
                elif e.isdigit():
                    raise _Unknown("an octal escape in a class")
                else:
                    lo = self.escaped_char(e)
            else:
                lo = c
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                hc = self.p[self.i]
                self.i += 1
                if hc == "\\":
                    if self.i >= len(self.p):
                        raise _Unknown("a trailing backslash")
                    e = self.p[self.i]
                    self.i += 1
                    if e in _CATEGORIES or e.isdigit():
                        raise _Unknown("a bad range")
                    hc = self.escaped_char(e)
                if ord(hc) < ord(lo):
                    raise _Unknown("a bad range")
                ranges.append((ord(lo), ord(hc)))
            else:
                chars.append(lo)
        return CharSet(tuple(chars), tuple(ranges), wide, negated)


def parse_pattern(pattern: str) -> tuple[Node, ...] | None:
    """The parse of ``pattern`` (see the node kinds above), or None if it uses an unknown construct."""
    try:
        return _Parser(pattern).parse()
    except (_Unknown, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------
# widths


def _nodes_width(nodes: tuple[Node, ...]) -> tuple[int, float]:
    lo, hi = 0, 0.0
    for node in nodes:
        if isinstance(node, (Lit, CharSet, AnyChar)):
            lo, hi = lo + 1, hi + 1
        elif isinstance(node, Group):
            i, j = _nodes_width(node.nodes)
            lo, hi = lo + i, hi + j
        elif isinstance(node, Branch):
            widths = [_nodes_width(alt) for alt in node.alternatives]
            lo += min(w[0] for w in widths)
            hi += max(w[1] for w in widths)
        elif isinstance(node, Repeat):
            i, j = _nodes_width(node.nodes)
            lo += i * node.lo
            if node.hi is None:
                hi = float("inf") if j else hi
            else:
                hi += j * node.hi
    return lo, hi


def pattern_widths(pattern: str) -> tuple[int, int]:
    """(shortest, longest) match length of ``pattern``, capped at 10_000; (0, 0) if unknown."""
    nodes = parse_pattern(pattern)
    if nodes is None:
        return 0, 0
    lo, hi = _nodes_width(nodes)
    return min(lo, _MAX_WIDTH), int(min(hi, _MAX_WIDTH))


# --------------------------------------------------------------------------
# literal starts

_State = tuple[str, bool]  # (literal prefix so far, whether it may still grow)


def _class_chars(node: CharSet, widest: int) -> set[str] | None:
    """The lower-cased characters a class matches; None if negated, wide, or a range of ``widest`` or more."""
    if node.negated or node.wide:
        return None
    chars = {c.lower() for c in node.chars}
    for first, last in node.ranges:
        if last - first >= widest:
            return None
        chars.update(chr(x).lower() for x in range(first, last + 1))
    return chars


def _grow(nodes: tuple[Node, ...], states: set[_State], length: int) -> set[_State] | None:
    """Extend each open prefix, up to ``length`` characters, through a sequence of nodes; None: too many prefixes."""
    for node in nodes:
        nxt: set[_State] = set()
        for s, is_open in states:
            if not is_open or len(s) >= length:
                nxt.add((s, False))
                continue
            got = _step(node, s, length)
            if got is None:
                return None
            nxt |= got
        if len(nxt) > _MAX_PREFIXES:
            return None
        states = nxt
    return states


def _step(node: Node, s: str, length: int) -> set[_State] | None:
    """The prefixes after one node, from the open prefix ``s``."""
    if isinstance(node, Lit):
        return {(s + node.ch.lower(), True)}
    if isinstance(node, CharSet):
        chars = _class_chars(node, 16)
        if chars is None:
            return {(s, False)}  # a wide class: the literal prefix stops here
        return {(s + c, True) for c in chars}
    if isinstance(node, Group) and not node.atomic:
        return _grow(node.nodes, {(s, True)}, length)
    if isinstance(node, Branch):
        acc: set[_State] = set()
        for alt in node.alternatives:
            got = _grow(alt, {(s, True)}, length)
            if got is None:
                return None
            acc |= got
        return acc
    if isinstance(node, Repeat):
        once = _grow(node.nodes, {(s, True)}, length)
        if once is None:
            return None
        # After one repetition the next item is unknown unless hi == 1:
        # close the prefix there (shorter is always safe).
        acc = once if node.hi == 1 else {(x, False) for x, _ in once}
        if node.lo == 0:
            acc = acc | {(s, True)}
        return acc
    if isinstance(node, Zero):
        return {(s, True)}
    return {(s, False)}  # any character, an atomic group


def _first(nodes: tuple[Node, ...]) -> tuple[set[str] | None, bool]:
    """(possible first characters or None if unknown, whether the nodes can match empty)."""
    acc: set[str] = set()
    for node in nodes:
        sub: set[str] | None
        if isinstance(node, Lit):
            acc.add(node.ch.lower())
            return acc, False
        if isinstance(node, CharSet):
            chars = _class_chars(node, 64)
            if chars is None:
                return None, False
            return acc | chars, False
        if isinstance(node, Group) and not node.atomic:
            sub, nullable = _first(node.nodes)
        elif isinstance(node, Branch):
            sub, nullable = set(), False
            for alt in node.alternatives:
                chars, n = _first(alt)
                if chars is None:
                    return None, False
                sub |= chars
                nullable = nullable or n
        elif isinstance(node, Repeat):
            sub, nullable = _first(node.nodes)
            nullable = nullable or node.lo == 0
        elif isinstance(node, Zero):
            continue
        else:
            return None, False
        if sub is None:
            return None, False
        acc |= sub
        if not nullable:
            return acc, False
    return acc, True


def first_chars(pattern: str) -> frozenset[str] | None:
    """The lower-cased characters a match of ``pattern`` can start with; None if unknown."""
    nodes = parse_pattern(pattern)
    if nodes is None:
        return None
    chars, nullable = _first(nodes)
    return None if chars is None or nullable else frozenset(chars)


def prefixes(pattern: str, length: int = _KEY) -> frozenset[str] | None:
    """The literal starts (1 to ``length`` chars, lower case) a match of ``pattern`` must have; None if unknown.

    When the starts of ``length`` characters are too many, those of ``_KEY``
    (when shorter), else the first characters.
    """
    nodes = parse_pattern(pattern)
    if nodes is None:
        return None
    for n in sorted({length, min(length, _KEY)}, reverse=True):
        states = _grow(nodes, {("", True)}, n)
        if states is not None:
            out = frozenset(s for s, _ in states)
            return None if "" in out else out
    return first_chars(pattern)  # too many combinations: key on the first character


# --------------------------------------------------------------------------
# the scanner


#: Characters that ``str.lower`` turns into a string starting with a given ASCII
#: character, besides that character and its upper case (tests/unit/text checks
#: this against every code point).
LOWER_TO_ASCII = {"i": "\u0130", "k": "\u212a"}


def cased_class(ch: str) -> str:
    """A character class matching every character whose lower case starts with ASCII ``ch``."""
    chars = {ch, ch.upper(), *LOWER_TO_ASCII.get(ch, "")}
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


def key_finder(keys: Iterable[str], *, lowered: bool = False) -> re.Pattern[str] | None:
    """A pattern that skips, in C, the tokens where no key applies.

    Matched at a token start, it consumes whitespace and every token (``\\w+``
    or one other character, as ``_TOKEN`` splits them) that does not start
    with a key, compared as ``str.lower`` would, then stops at the next token,
    which starts group 1 (absent at the end of the text). The tokens it stops
    at are a superset of those where ``text[p:p+n].lower()`` is a key for some
    ``n``; :meth:`Scanner.scan` looks the key up again there.
    None when a key holds anything but ASCII or starts with a space: those
    scanners keep the token loop.

    ``lowered``: the pattern is for an ASCII text already lower-cased, so it
    compares each key character as itself instead of through a class of its
    cased forms. ``re`` then tries a key alternative only where its first
    character is the text's (its branch test for a plain character), which
    makes the skip about twice as fast (docs/benchmarks.md, "Worker CPU").
    Group 1 is then the longest key the token starts with (the key
    :meth:`Scanner.scan` looks up, with no slicing and no retries), and the
    token follows it.
    """
    keys = sorted(set(keys))
    if not keys or not all(k.isascii() and k and not k[0].isspace() for k in keys):
        return None
    if lowered:
        # The text is ASCII: ``re.ASCII`` tests a character's class with a table where a str pattern
        # asks the Unicode database (four calls for a character that is no letter). Unicode's ``\s``
        # also holds for ``\x1c``-``\x1f``, which ASCII's does not: ``_ASCII_SPACE`` adds them back,
        # so the tokens are the same (docs/benchmarks.md, "Worker CPU, round 7").
        # One turn of the loop per token (with the spaces after it), and the keys as a trie: ``re``
        # tests an alternation's branches one by one, so a flat list of the keys after their first
        # character cost a test per key at every token (docs/benchmarks.md, "Worker CPU, round 8").
        sp = _ASCII_SPACE
        some_key, longest = _trie(keys, longest=False), _trie(keys, longest=True)
        return re.compile(
            rf"[{sp}]*+(?:(?!{some_key})(?:\w+|[^\w{sp}])[{sp}]*+)*+(?:(?=({longest}))(?:\w+|[^\w{sp}]))?",
            re.ASCII,
        )
    key = _trie(keys, longest=False, char=cased_class)
    return re.compile(rf"(?:\s+|(?!{key})(?:\w+|[^\w\s]))*+(\w+|[^\w\s])?")


def _trie(keys: Iterable[str], *, longest: bool, char: Callable[[str], str] = re.escape) -> str:
    """An alternation of ``keys`` nested by their characters (each written by ``char``: escaped
    lower case, or :func:`cased_class` for either case); an empty key ends one there.

    ``longest``: it matches the longest key the text starts with (at each character the longer
    keys are tried before the key that ends there); otherwise the first it meets, the shortest,
    which is enough to know that one applies.
    """
    children: dict[str, list[str]] = {}
    ends_here = False
    for k in keys:
        if k:
            children.setdefault(k[0], []).append(k[1:])
        else:
            ends_here = True
    if ends_here and not longest:
        return ""
    branches = [char(ch) + _trie(rests, longest=longest, char=char) for ch, rests in sorted(children.items())]
    if ends_here:
        branches.append("")
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


@dataclass(frozen=True, slots=True)
class Scanner:
    """An alternation of many patterns, dispatched on the first characters.

    Python's ``re`` tries every alternative at every position; with a few
    hundred triggers that costs milliseconds per report. A Scanner works out
    the literal text each pattern must start with (up to ``_SCAN_KEY`` = five
    characters, lower-cased: ``effusions?`` -> ``effus``,
    ``(broncho)?pneumonia`` -> ``bronc``/``pneum``, ``no`` -> ``no``; three
    where five would give too many), and keeps one compiled alternation per
    such key holding only the patterns that can start there. At each token
    start it looks up the longest key the text's next characters start
    with, and tries that small alternation, or nothing. Semantics are those of
    ``finditer`` over the whole alternation at token starts: leftmost match,
    first alternative wins, no overlaps.

    When every pattern has a known start (no ``default``), the token starts
    worth a look are found by one compiled pattern (``_finder``: a token start
    followed by some key, case-insensitively), so the Python loop visits only
    those instead of every word; at each of them the lookup is the one above.
    An ASCII region (a report's usual case) is lower-cased once and searched
    with ``_lower_finder``, the same pattern with plain lower-case keys: on
    ASCII text ``str.lower`` changes only ``A-Z``, so both stop at the same
    tokens and the lookup reads its key from the lowered copy.

    Attributes:
        table: lower-case key of one to five characters -> alternation of
            the patterns (in priority order) that can start with it, plus
            those whose start is unknown. A longer key is tried first.
        default: alternation of the patterns whose start is unknown, for
            every other position (None if there are none).
    """

    table: Mapping[str, re.Pattern[str]]
    default: re.Pattern[str] | None
    _finder: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    #: ``_finder`` for an ASCII region already lower-cased (None exactly when ``_finder`` is).
    _lower_finder: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    #: ``table`` as a plain dict: the scans look keys up hundreds of times per
    #: report, and a read-only proxy's ``get`` costs more than a dict's.
    _lookup: dict[str, re.Pattern[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: ``table``'s patterns in ``re.ASCII`` form, compiled at their first use (:meth:`_ascii_form`).
    _ascii: dict[str, re.Pattern[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: A :class:`SharedFinder`'s key -> the longest of this scanner's keys it starts with ("" for
    #: none), worked out at its first use (:meth:`_own_key`).
    _own: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        finder = key_finder(self.table) if self.default is None else None
        object.__setattr__(self, "_finder", finder)
        lower_finder = key_finder(self.table, lowered=True) if finder is not None else None
        object.__setattr__(self, "_lower_finder", lower_finder)
        object.__setattr__(self, "_lookup", dict(self.table))

    def scan(
        self, text: str, start: int = 0, end: int | None = None, *, walked: Walk | None = None
    ) -> list[re.Match[str]]:
        """Non-overlapping matches in ``text[start:end]``, in order.

        ``walked``: the region's candidates from a :class:`SharedFinder` that holds this scanner's
        keys (:meth:`SharedFinder.walk` of the same ``text``, ``start`` and ``end``), used in place
        of this scanner's own finder; the same matches.
        """
        finder = self._finder
        if finder is None:
            return self.scan_tokens(text, start, end)
        hi = len(text) if end is None else end
        # The finder tokenizes up to _SCAN_KEY - 1 characters past ``hi`` so that
        # its key test sees the same characters as the lookup below.
        stop = hi + _SCAN_KEY - 1
        get: Callable[[str], re.Pattern[str] | None] = self._lookup.get
        out: list[re.Match[str]] = []
        floor = start
        region = text[start:stop]
        lower_finder = self._lower_finder
        if walked is not None and lower_finder is not None:
            return self._scan_walked(text, hi, walked)
        if lower_finder is not None and start >= 0 and region.isascii():
            # The lowered copy of the region only: a scan of one section costs
            # the section's length, not the report's (docs/hardening.md,
            # "Linear text analysis"). Its offsets are ``start`` less than the text's;
            # group 1 of its candidates is the longest key of their token (key_finder).
            lowered, shift, candidates = True, start, lower_finder.finditer(region.lower())
            if _ascii_forms_apply(text):
                get = self._ascii_form
        else:
            lowered, shift, candidates = False, 0, finder.finditer(text, start, stop)
        # Every match but the last (empty, at the end) starts a token at group 1.
        for cand in candidates:
            q = cand.start(1)
            p = q + shift
            if q < 0 or p >= hi:
                break
            if p < floor:
                continue
            rx = get(cand.group(1)) if lowered else _longest_key(get, text[p : p + _SCAN_KEY].lower())
            if rx is None:
                continue
            m = rx.match(text, p, hi)
            if m is not None:
                out.append(m)
                floor = m.end()
        return out

    def _scan_walked(self, text: str, hi: int, walked: Walk) -> list[re.Match[str]]:
        """:meth:`scan` over a shared finder's candidates: each one's key is the longest of this
        scanner's keys that the shared key starts with (both are starts of the token's text).

        Its own loop, not :meth:`scan`'s fed through a generator: that one cost 0.45 M more
        instructions per message (docs/benchmarks.md, "Round 7b: one walk for the three scanners").
        """
        get: Callable[[str], re.Pattern[str] | None] = self._lookup.get
        if walked.ascii_form:
            get = self._ascii_form
        own = self._own
        out: list[re.Match[str]] = []
        floor = walked.start
        for p, shared_key in walked.candidates:
            if p >= hi:
                break
            if p < floor:
                continue
            key = own.get(shared_key)
            if key is None:
                key = self._own_key(shared_key)
            if not key:
                continue
            rx = get(key)
            if rx is None:
                continue
            m = rx.match(text, p, hi)
            if m is not None:
                out.append(m)
                floor = m.end()
        return out

    def _own_key(self, shared_key: str) -> str:
        """The longest start of ``shared_key`` that is one of this scanner's keys ("" for none), kept."""
        lookup = self._lookup
        found = next((shared_key[:n] for n in range(len(shared_key), 0, -1) if shared_key[:n] in lookup), "")
        self._own[shared_key] = found
        return found

    def _ascii_form(self, key: str) -> re.Pattern[str] | None:
        """``table[key]`` compiled with ``re.ASCII`` (once per scanner and key), or None for no key."""
        found = self._ascii.get(key)
        if found is None:
            base = self._lookup.get(key)
            if base is None:
                return None
            found = self._ascii[key] = re.compile(base.pattern, (base.flags & ~re.UNICODE) | re.ASCII)
        return found

    def scan_tokens(self, text: str, start: int = 0, end: int | None = None) -> list[re.Match[str]]:
        """:meth:`scan` by visiting every token start (the reference; used when there is a ``default``)."""
        hi = len(text) if end is None else end
        get = self._lookup.get
        default = self.default
        out: list[re.Match[str]] = []
        floor = start
        for tok in _TOKEN.finditer(text, start, hi):
            p = tok.start()
            if p < floor:
                continue
            rx = _longest_key(get, text[p : p + _SCAN_KEY].lower()) or default
            if rx is None:
                continue
            m = rx.match(text, p, hi)
            if m is not None:
                out.append(m)
                floor = m.end()
        return out


@dataclass(frozen=True, slots=True)
class Walk:
    """A region's candidate tokens from a :class:`SharedFinder`.

    Attributes:
        start: the region's start in the text.
        candidates: (offset in the text, the longest shared key the text there starts with) of each
            token where some scanner's key applies, in order.
        ascii_form: the text is ASCII without the separators ``\x1c``-``\x1f``, so the scanners
            match with their patterns' ``re.ASCII`` forms (:meth:`Scanner.scan`).
    """

    start: int
    candidates: tuple[tuple[int, str], ...]
    ascii_form: bool


#: The first item of a ``walks`` memo key whose entry is the walk that reaches farthest from a start
#: (``SharedFinder._walk_from``).
_WIDEST_WALK = "widest walk"

#: What one candidate of a :class:`Walk` is matched with: (the index of a scanner in
#: ``SharedFinder.scanners``, the pattern of its longest key that the candidate's key starts with).
_Tries = tuple[tuple[int, re.Pattern[str]], ...]


@dataclass(frozen=True, slots=True, eq=False)
class SharedFinder:
    """One lowered finder for the keys of several scanners, so a region is tokenized once for all.

    The concept, trigger and side-word scanners scan the same sections of a report; each walking
    the section's tokens with its own finder walked them three times. A :class:`Walk` from this
    finder stops at every token where one of them has a key, with the longest such key, and each
    scanner then takes the longest of its own keys that key starts with: its own finder would
    have stopped at that token with that key, and it skips the others, so the matches are the
    same (docs/benchmarks.md, "Round 7b: one walk for the three scanners").

    Attributes:
        finder: the lowered key finder over every scanner's keys.
        scanners: the scanners whose keys it holds; :meth:`scan` matches all of them in one pass
            over a walk (docs/benchmarks.md, "Worker CPU, round 9").
    """

    finder: re.Pattern[str]
    scanners: tuple[Scanner, ...] = ()
    #: A walk's key -> what its candidates are matched with (``_Tries``), worked out at a key's first
    #: use; one table for the scanners' patterns, one for their ``re.ASCII`` forms.
    _tries: tuple[dict[str, _Tries], dict[str, _Tries]] = field(
        default_factory=lambda: ({}, {}), init=False, repr=False, compare=False
    )

    def walk(self, text: str, start: int, end: int | None = None, forms: bool | None = None) -> Walk | None:
        """The candidates of ``text[start:end]`` (as :meth:`Scanner.scan` reads it); None unless ASCII.

        ``forms``: ``_ascii_forms_apply(text)`` when the caller knows it (it reads the whole text).
        """
        hi = len(text) if end is None else end
        region = text[start : hi + _SCAN_KEY - 1]
        if start < 0 or not region.isascii():
            return None
        candidates = tuple(
            (m.start(1) + start, m.group(1)) for m in self.finder.finditer(region.lower()) if m.start(1) >= 0
        )
        return Walk(start, candidates, _ascii_forms_apply(text) if forms is None else forms)

    def scan(
        self, scanner: Scanner, text: str, start: int, hi: int, walks: dict[object, object]
    ) -> list[re.Match[str]]:
        """``scanner.scan(text, start, hi)``, with the region walked once per ``walks`` (a report's memo).

        The first scan of a region walks it and matches every one of ``scanners`` in that one pass
        over the candidates (:meth:`scan_all`); the others read their matches from the memo.
        """
        key = (self, text, start, hi)
        entry: tuple[Walk | None, tuple[tuple[re.Match[str], ...], ...]] | None = walks.get(key)  # type: ignore[assignment]
        if entry is None:
            # Whether the ASCII forms apply reads the whole text: once per text, not once per
            # region walked (a report of many sections read its whole text for each of them).
            forms_key = (_ascii_forms_apply, text)
            forms = walks.get(forms_key)
            if forms is None:
                forms = walks[forms_key] = _ascii_forms_apply(text)
            walked = self._walk_from(text, start, hi, forms, walks)  # type: ignore[arg-type]
            entry = walks[key] = (walked, self.scan_all(text, hi, walked) if walked is not None else ())
        walked, found = entry
        for i, known in enumerate(self.scanners):
            if known is scanner and walked is not None:
                return list(found[i])
        return scanner.scan(text, start, hi, walked=walked)

    def _walk_from(self, text: str, start: int, hi: int, forms: bool, walks: dict[object, object]) -> Walk | None:
        """:meth:`walk` of ``text[start:hi]``, or the walk of a region with the same start that reaches as far.

        A region's scan reads only the candidates before its end (``scan_all`` and ``_scan_walked`` stop
        at ``hi``), and those are the same in every walk from ``start`` that reaches ``hi``: the finder
        goes token by token from ``start``, each token and the key at it read at most ``_SCAN_KEY``
        characters, and the walked region runs ``_SCAN_KEY - 1`` past its end. So a sentence that opens
        a section (a rule's scan of the impression's first sentence) reads the section's walk, not a
        walk of its own (docs/benchmarks.md, "Worker CPU, round 11").
        """
        widest_key = (_WIDEST_WALK, self, text, start)
        widest: tuple[int, Walk] | None = walks.get(widest_key)  # type: ignore[assignment]
        if widest is not None and widest[0] >= hi:
            return widest[1]
        walked = self.walk(text, start, hi, forms)
        if walked is not None:
            walks[widest_key] = (hi, walked)
        return walked

    def scan_all(self, text: str, hi: int, walked: Walk) -> tuple[tuple[re.Match[str], ...], ...]:
        """:meth:`Scanner.scan` of each of ``scanners`` over one walk (``walked``, up to ``hi``), in one loop.

        Each candidate costs one look-up of its key, which gives the patterns of the scanners that
        have a key there (``_Tries``), where three scanners each looked up their own key and its
        pattern; each scanner keeps its own floor, so its matches are those of its own
        :meth:`Scanner.scan`.
        """
        tries = self._tries[walked.ascii_form]
        found: list[list[re.Match[str]]] = [[] for _ in self.scanners]
        floors = [walked.start] * len(self.scanners)
        for p, shared_key in walked.candidates:
            if p >= hi:
                break
            here = tries.get(shared_key)
            if here is None:
                here = self._tries_for(shared_key, walked.ascii_form)
            for i, rx in here:
                if p < floors[i]:
                    continue
                m = rx.match(text, p, hi)
                if m is not None:
                    found[i].append(m)
                    floors[i] = m.end()
        return tuple(map(tuple, found))

    def _tries_for(self, shared_key: str, ascii_form: bool) -> _Tries:
        """What a candidate with ``shared_key`` is matched with (``_Tries``), kept."""
        out: list[tuple[int, re.Pattern[str]]] = []
        for i, scanner in enumerate(self.scanners):
            own = scanner._own.get(shared_key)
            if own is None:
                own = scanner._own_key(shared_key)
            rx = (scanner._ascii_form(own) if ascii_form else scanner._lookup.get(own)) if own else None
            if rx is not None:
                out.append((i, rx))
        here = self._tries[ascii_form][shared_key] = tuple(out)
        return here


def shared_finder(scanners: Iterable[Scanner]) -> SharedFinder | None:
    """A :class:`SharedFinder` for ``scanners``' keys; None unless each of them has a lowered finder."""
    scanners = tuple(scanners)
    keys: set[str] = set()
    for sc in scanners:
        if sc._lower_finder is None:
            return None
        keys.update(sc.table)
    finder = key_finder(keys, lowered=True)
    return None if finder is None else SharedFinder(finder, scanners)


def _ascii_forms_apply(text: str) -> bool:
    r"""Whether the patterns' ``re.ASCII`` forms match in ``text`` exactly where they do: ASCII
    without the separators ``\x1c``-``\x1f`` (there their ``\w``, ``\b``, ``\d`` and ``\s``
    agree, and case folds only A-Z), testing a character's class with a table instead of the
    Unicode database (docs/benchmarks.md, "Worker CPU, round 7")."""
    return text.isascii() and not any(sep in text for sep in _SEPARATORS)


def _longest_key(get: Callable[[str], re.Pattern[str] | None], key: str) -> re.Pattern[str] | None:
    """The alternation of the longest start of ``key`` (the text at a token, lowered) that is a key."""
    for n in range(len(key), 0, -1):
        rx = get(key[:n])
        if rx is not None:
            return rx
    return None


def build_scanner(groups: list[tuple[str, tuple[str, ...]]]) -> Scanner:
    """Compile (group name, patterns) pairs, in priority order, into a Scanner."""
    entries = [(name, pat, prefixes(pat, _SCAN_KEY)) for name, pats in groups for pat in pats]
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
            compiled[chosen] = word_bounded(alternation(parts))
        return compiled[chosen]

    table = {}
    for key in sorted(keys):
        rx = alternation_for(key)
        if rx is not None:
            table[key] = rx
    return Scanner(MappingProxyType(table), alternation_for(None))
