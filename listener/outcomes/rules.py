"""The grading rules: policies/outcomes.yaml -> OutcomeRules, and the grade of a difference.

Pure apart from :func:`load_outcome_rules` reading the file it is given. The
rules, not the code, decide each grade (docs/outcomes.md): every difference
takes the grade of the first rule whose ``when:`` holds; the pair takes the
most severe of those grades.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from listener.errors import ConfigError
from listener.outcomes.contracts import build_contracts
from listener.resources import defaults_root
from listener.yamlconf import YamlList, YamlMap, load_yaml

__all__ = [
    "CATEGORIES",
    "DEFAULT_OUTCOMES_FILE",
    "GRADES",
    "KINDS",
    "SEVERITIES",
    "STATES",
    "GradeRule",
    "OutcomeRules",
    "build_outcome_rules",
    "grade_rank",
    "load_outcome_rules",
    "worst_grade",
]

#: The shipped rules (``policies/outcomes.yaml``, packaged or in the checkout).
DEFAULT_OUTCOMES_FILE = defaults_root() / "policies" / "outcomes.yaml"

#: RADPEER grades, least severe first: clinical significance ("b") ranks above
#: the number, so a 2b outranks a 3a.
GRADES: tuple[str, ...] = ("1", "2a", "3a", "2b", "3b")
#: Where a concept stands in one report.
STATES: tuple[str, ...] = ("affirmed", "hedged", "historical", "negated", "absent")
#: A concept's weight, from its flags in policies/terms/*.yaml.
SEVERITIES: tuple[str, ...] = ("critical", "significant", "other")
CATEGORIES: tuple[str, ...] = ("interpretive", "operational")
#: Every difference kind :func:`listener.outcomes.compare.compare` emits, with its category.
KINDS: Mapping[str, str] = {
    "critical_added": "interpretive",
    "finding_added": "interpretive",
    "finding_removed": "interpretive",
    "assertion_changed": "interpretive",
    "side_changed": "interpretive",
    "impression_changed": "interpretive",
    "laterality_corrected": "operational",
    "impression_reworded": "operational",
    "statement_added": "operational",
    "statement_removed": "operational",
    "communication_added": "operational",
    "communication_removed": "operational",
    "sections_changed": "operational",
    "wording_changed": "operational",
    "qa_fixed": "operational",
    "qa_introduced": "operational",
}

_TOP_KEYS = frozenset({"version", "default_grade", "rules", "equivalent_phrases", "communication", "contracts"})
_RULE_KEYS = frozenset({"when", "grade", "description"})
_WHEN_KEYS = frozenset({"kind", "category", "severity", "from", "to"})
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class GradeRule:
    """One named grading rule; an empty condition tuple means "any".

    Attributes:
        line: where the rule starts in its file (for explanations).
    """

    name: str
    grade: str
    kinds: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    from_states: frozenset[str] = frozenset()
    to_states: frozenset[str] = frozenset()
    line: int | None = None

    def matches(self, kind: str, category: str, severity: str, from_state: str, to_state: str) -> bool:
        """True when every condition of the rule holds for these values."""
        return (
            (not self.kinds or kind in self.kinds)
            and (not self.categories or category in self.categories)
            and (not self.severities or severity in self.severities)
            and (not self.from_states or from_state in self.from_states)
            and (not self.to_states or to_state in self.to_states)
        )


@dataclass(frozen=True, slots=True)
class OutcomeRules:
    """The loaded grading rules and comparison vocabularies (swap whole on reload).

    Attributes:
        version: the file's ``version`` label plus a hash of its bytes.
        equivalent: folded phrase (lower case, single spaces) -> the phrase
            of its group it stands for.
        equivalent_re: every phrase of ``equivalent``, longest first, whole words.
        communication_re: communication statements; None when none are listed.
    """

    version: str
    source: str
    default_grade: str
    rules: tuple[GradeRule, ...]
    equivalent: Mapping[str, str]
    equivalent_re: re.Pattern[str] | None
    communication_re: re.Pattern[str] | None

    def grade(self, kind: str, category: str, severity: str, from_state: str, to_state: str) -> tuple[str, str]:
        """The grade of one difference and the name of the rule that set it (``""``: the default)."""
        for rule in self.rules:
            if rule.matches(kind, category, severity, from_state, to_state):
                return rule.grade, rule.name
        return self.default_grade, ""


def grade_rank(grade: str) -> int:
    """0 for "1" up to 4 for "3b" (ValueError for anything else)."""
    return GRADES.index(grade)


def worst_grade(grades: Iterable[str]) -> str:
    """The most severe of ``grades``; "1" for none."""
    return max(grades, key=grade_rank, default="1")


def load_outcome_rules(path: str | Path = DEFAULT_OUTCOMES_FILE) -> OutcomeRules:
    """Load and validate policies/outcomes.yaml.

    Raises:
        ConfigError: naming the file, line and key of the first problem.
    """
    doc = load_yaml(path)
    return build_outcome_rules(doc, Path(path).read_bytes())


def build_outcome_rules(doc: YamlMap, raw: bytes) -> OutcomeRules:
    """Build OutcomeRules from a parsed document (``raw``: its bytes, for the version hash)."""
    doc.reject_unknown(_TOP_KEYS)
    label = doc.get_str("version", "unversioned")
    default_grade = _grade(doc, "default_grade", "default_grade", "1")
    rules_node = doc.get_map("rules", required=True)
    rules = tuple(_rule(rules_node, name) for name in rules_node)
    if not rules:
        raise doc.error("rules", "rules: at least one rule is needed")
    equivalent = _equivalent(doc.get_list("equivalent_phrases"))
    phrases = sorted(equivalent, key=lambda p: (-len(p), p))
    equivalent_re = (
        re.compile(r"\b(?:" + "|".join(re.escape(p).replace(r"\ ", " ") for p in phrases) + r")\b") if phrases else None
    )
    communication_re = _patterns(doc.get_list("communication"), "communication")
    # The contract targets are read by the feedback document (listener.outcomes.contracts); a bad
    # section is refused here too, so the file is whole or refused wherever it is loaded.
    build_contracts(doc.get_map("contracts"))
    return OutcomeRules(
        version=f"{label}+{hashlib.sha256(raw).hexdigest()[:10]}",
        source=doc.path,
        default_grade=default_grade,
        rules=rules,
        equivalent=equivalent,
        equivalent_re=equivalent_re,
        communication_re=communication_re,
    )


def _grade(node: YamlMap, key: str, where: str, default: str | None = None) -> str:
    value = node.get_str(key, default)
    if value not in GRADES:
        raise node.error(key, f'{where}: grade {value!r} must be one of: {", ".join(GRADES)} (quote "1")')
    return value


def _rule(rules_node: YamlMap, name: str) -> GradeRule:
    where = f"rules.{name}"
    if not _NAME_RE.match(name):
        raise rules_node.error(name, f"{where}: rule names are snake_case like critical_added")
    node = rules_node.get_map(name, required=True)
    if not isinstance(rules_node.get(name), YamlMap):
        raise rules_node.error(name, f"{where} must be a mapping with when: and grade:")
    node.reject_unknown(_RULE_KEYS, where)
    grade = _grade(node, "grade", f"{where}.grade")
    when = node.get_map("when", required=True)
    when.reject_unknown(_WHEN_KEYS, f"{where}.when")
    return GradeRule(
        name=name,
        grade=grade,
        kinds=_choices(when, "kind", tuple(KINDS), where),
        categories=_choices(when, "category", CATEGORIES, where),
        severities=_choices(when, "severity", SEVERITIES, where),
        from_states=_choices(when, "from", STATES, where),
        to_states=_choices(when, "to", STATES, where),
        line=rules_node.line_of(name),
    )


def _choices(when: YamlMap, key: str, allowed: tuple[str, ...], where: str) -> frozenset[str]:
    if key not in when:
        return frozenset()
    items = when.get_list(key)
    values = items.strings()
    if not values:
        raise when.error(key, f"{where}.when.{key}: an empty list matches nothing; leave the key out for 'any'")
    for i, value in enumerate(values):
        if value not in allowed:
            raise items.error(i, f"{where}.when.{key}: unknown value {value!r} (expected one of: {', '.join(allowed)})")
    return frozenset(values)


def fold_phrase(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space, trimmed (how phrases and sentences compare)."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _equivalent(groups: YamlList) -> dict[str, str]:
    out: dict[str, str] = {}
    group_of: dict[str, int] = {}
    for i, group in enumerate(groups):
        if not isinstance(group, list):
            raise groups.error(i, "equivalent_phrases: each item must be a list of phrases")
        phrases = [fold_phrase(str(p)) for p in group if not isinstance(p, (dict, list)) and p is not None]
        if len(phrases) != len(group) or len(phrases) < 2 or not all(phrases):
            raise groups.error(i, "equivalent_phrases: each group lists at least two non-empty phrases")
        for phrase in phrases:
            if group_of.get(phrase, i) != i:
                raise groups.error(i, f"equivalent_phrases: {phrase!r} is already in another group")
            group_of[phrase] = i
            out[phrase] = phrases[0]
    return out


def _patterns(items: YamlList, where: str) -> re.Pattern[str] | None:
    patterns = items.strings()
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise items.error(i, f"{where}: invalid regex {pattern!r} ({exc.msg})") from None
    if not patterns:
        return None
    body = "|".join("(?:" + p.replace(" ", r"\s+") + ")" for p in patterns)
    try:
        return re.compile(rf"\b(?:{body})\b", re.IGNORECASE)
    except re.error as exc:  # pragma: no cover - each part compiled above
        raise ConfigError(f"{where}: {exc.msg}", path=items.path, line=items.line) from None
