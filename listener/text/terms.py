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
from types import MappingProxyType

from listener.errors import ConfigError
from listener.text.casefold import lowered_twin
from listener.text.scanner import END as _END
from listener.text.scanner import FLAGS as _FLAGS
from listener.text.scanner import START as _START
from listener.text.scanner import (
    Scanner,
    SharedFinder,
    alternation,
    build_scanner,
    pattern_widths,
    shared_finder,
    word_bounded,
)
from listener.yamlconf import YamlFile, YamlList, YamlMap

__all__ = [
    "DIRECTIONS",
    "MODIFIER_CATEGORIES",
    "Concept",
    "LateralityTerms",
    "Terms",
    "Trigger",
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
        lowered: the case-sensitive twins of ``after_re``, ``before_re``,
            ``device_after_re`` and ``anatomy_re``
            (:func:`listener.text.casefold.lowered_twin`), for an ASCII text
            lower-cased; None when one of them has no twin.
    """

    side_re: re.Pattern[str]
    after_re: re.Pattern[str]
    before_re: re.Pattern[str]
    device_after_re: re.Pattern[str]
    anatomy_groups: Mapping[str, str]
    window: int
    side_scanner: Scanner | None = None
    anatomy_re: re.Pattern[str] | None = None
    lowered: LateralityTwins | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        twins = [lowered_twin(p) for p in (self.after_re, self.before_re, self.device_after_re)]
        anatomy = lowered_twin(self.anatomy_re) if self.anatomy_re is not None else None
        if None in twins or (self.anatomy_re is not None and anatomy is None):
            return
        after, before, device_after = twins
        assert after is not None and before is not None and device_after is not None
        object.__setattr__(self, "lowered", LateralityTwins(after, before, device_after, anatomy))


@dataclass(frozen=True, slots=True)
class LateralityTwins:
    """:class:`LateralityTerms`' patterns for a lower-cased ASCII text (docs/benchmarks.md, "Worker CPU")."""

    after_re: re.Pattern[str]
    before_re: re.Pattern[str]
    device_after_re: re.Pattern[str]
    anatomy_re: re.Pattern[str] | None


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
        shared_finder: one finder for the keys of ``concept_scanner``,
            ``modifier_scanner`` and the side-word scanner, so a section is
            tokenized once for the three (None when one of them has none).
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
    shared_finder: SharedFinder | None = None

    def scan(
        self, scanner: Scanner, text: str, start: int, hi: int, walks: dict[object, object] | None
    ) -> list[re.Match[str]]:
        """``scanner.scan(text, start, hi)``; with a report's ``walks`` memo (``TextCache.walks``) the
        region is walked once for the three scanners (listener/text/scanner.py ``SharedFinder``;
        docs/benchmarks.md, "Round 7b: one walk for the three scanners")."""
        shared = self.shared_finder
        if shared is None or walks is None:
            return scanner.scan(text, start, hi)
        return shared.scan(scanner, text, start, hi, walks)

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


def _where(doc: YamlMap | YamlList, key: str | int) -> str:
    line = doc.line_of(key)  # type: ignore[arg-type]
    return f"{doc.path}:{line}" if line is not None else doc.path


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
            context_report = word_bounded("|".join(report))
            not_sentence = compile_pattern_list(ctx.get_list("not_sentence"))
            context_not_sentence = word_bounded("|".join(not_sentence)) if not_sentence else None
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
    after = re.compile(rf"[\s-]*(?:[\w'/.]+[\s-]+){{0,{window}}}?{_START}(?:{alternation(heads)}){_END}", _FLAGS)
    before = re.compile(
        rf"{_START}(?:{alternation(anatomy_alts)}){_END}[\s,:()-]*"
        r"(?:(?:on|of|in|at|to|the|is|are|side|joint|region)[\s,:-]+){0,3}$",
        _FLAGS,
    )
    device_after = re.compile(rf"[\s-]+(?:[\w'/]+[\s-]+){{0,2}}?(?:{'|'.join(device) or '(?!)'}){_END}", _FLAGS)
    b.laterality = LateralityTerms(
        side_re=word_bounded(alternation(side_groups)),
        after_re=after,
        before_re=before,
        device_after_re=device_after,
        anatomy_groups=MappingProxyType(anatomy_groups),
        window=window,
        side_scanner=build_scanner(side_groups),
        anatomy_re=re.compile(f"(?:{alternation(anatomy_alts)})", _FLAGS),
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
                raise ConfigError(
                    f"{concept.name}: {what} concept {other!r} is not defined",
                    path=concept.source.rsplit(":", 1)[0],
                    line=int(concept.source.rsplit(":", 1)[1]),
                )

    # Concepts: where two synonyms match at the same position the first
    # alternative wins, so critical concepts first, then the synonym with the
    # longest shortest match. Each synonym is ranked on its own, so a
    # qualified phrase of one concept ("edema of the subcutaneous fat",
    # "effusion in the knee joint") beats a bare one of another ("edema",
    # "effusion") wherever both start at the same word.
    synonyms = [(c, p) for c in b.concepts.values() for p in b.concept_patterns[c.name]]
    ranked = sorted(
        range(len(synonyms)),
        key=lambda i: (not synonyms[i][0].critical, -pattern_widths(synonyms[i][1])[0], i),
    )
    concept_groups = {f"c{n}": synonyms[i][0] for n, i in enumerate(ranked)}
    concept_scanner = build_scanner([(f"c{n}", (synonyms[i][1],)) for n, i in enumerate(ranked)])

    # Triggers: pseudo-triggers first (they must consume "no" in "no change"),
    # then the longest possible match first, so "not excluded" beats "not"
    # and "negative for" beats "negative".
    definite = [p for p, t in b.triggers if t.category == "definite"]
    b.triggers = [(p, t) for p, t in b.triggers if t.category != "definite"]
    widths = [pattern_widths(p) for p, _ in b.triggers]
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
        definite_re=word_bounded("|".join(definite) or "(?!)"),
        laterality=b.laterality,
        sources=tuple(str(f.path) for f in files),
        digest=digest.hexdigest(),
        max_window=max((t.window for _, t in b.triggers if t.category not in _NO_SCOPE), default=0),
        shared_finder=(
            shared_finder((concept_scanner, modifier_scanner, b.laterality.side_scanner))
            if b.laterality.side_scanner is not None
            else None
        ),
    )
