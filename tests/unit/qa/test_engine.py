"""The QA engine contract: registration, policy loading, severities from the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.assemble import load_qa_config
from listener.errors import ConfigError
from listener.model import Severity
from listener.qa.engine import QaContext, run_rules
from listener.qa.registry import registry
from tests.conftest import RECEIVED, REPO


def test_every_registered_rule_id_is_category_dot_name() -> None:
    """Rule ids use the fixed category vocabulary (docs/qa-rules.md)."""
    from listener.model import CATEGORIES

    for rule_id, spec in registry().items():
        category, _, name = rule_id.partition(".")
        assert category in CATEGORIES and name == spec.function.__name__
        assert spec.description, f"{rule_id} needs a docstring"


def test_qa_yaml_unknown_rule_and_param_refused(tmp_path: Path) -> None:
    """qa.yaml naming an unknown rule, or a parameter a rule lacks, is refused with file:line."""
    (tmp_path / "qa.yaml").write_text("version: '7'\nrules:\n  nosuch.rule: {severity: error}\n")
    with pytest.raises(ConfigError) as info:
        load_qa_config(tmp_path, procedures=None)
    assert info.value.line == 3 and "nosuch.rule" in str(info.value)
    specs = registry()
    if specs:
        rule_id = sorted(specs)[0]
        (tmp_path / "qa.yaml").write_text(f"rules:\n  {rule_id}:\n    params: {{bogus_param: 1}}\n")
        with pytest.raises(ConfigError) as info:
            load_qa_config(tmp_path, procedures=None)
        assert info.value.line == 3 and "bogus_param" in str(info.value)


def test_disabled_rules_do_not_run_and_severity_comes_from_policy(tmp_path: Path, pipeline) -> None:  # type: ignore[no-untyped-def]
    """Disabling every rule gives no findings; the version label is recorded."""
    lines = ["version: test-1", "rules:"] + [f"  {rule_id}: {{enabled: false}}" for rule_id in registry()]
    (tmp_path / "qa.yaml").write_text("\n".join(lines) + ("\n" if registry() else " {}\n"))
    config = load_qa_config(tmp_path, procedures=None)
    assert config.version.startswith("test-1+")
    from listener.hl7v2.decode import decode_message
    from tests.unit.hl7v2.test_decode import BASE, _msg

    report = decode_message(_msg(BASE), pipeline.mappings, received_at=RECEIVED).reports[0]
    assert run_rules(report, config, QaContext(now=RECEIVED)) == ()
    assert all(isinstance(s.severity, Severity) for s in config.rules.values())


def test_shipped_qa_yaml_lists_every_rule() -> None:
    """policies/qa.yaml loads and names every registered rule (active or as a commented default)."""
    import re

    from tests.conftest import REPO

    text = (REPO / "policies" / "qa.yaml").read_text()
    listed = set(re.findall(r"^  (?:# )?([a-z]+\.[a-z_]+):", text, re.MULTILINE))
    assert listed == set(registry())
    config = load_qa_config(REPO / "policies", procedures=None)
    assert config.version.startswith("qa-")


def test_registry_lists_every_rule_module() -> None:
    """Every module of listener/qa but the engine, policy and registry holds rules and is listed."""
    import pkgutil

    import listener.qa as package
    from listener.qa.registry import RULE_MODULES

    modules = {info.name for info in pkgutil.iter_modules(package.__path__)} - {"engine", "policy", "registry"}
    assert {m.__name__.rpartition(".")[2] for m in RULE_MODULES} == modules


def test_prepared_params_follow_the_policy(tmp_path: Path) -> None:
    """A rule's prepare function runs on the policy's params when the config is built (not the defaults)."""
    (tmp_path / "qa.yaml").write_text(
        "rules:\n  completeness.truncated:\n    params: {end_words: [Via, THE]}\n"
        "  turnaround.preliminary_late:\n    params: {statuses: [FINAL]}\n"
    )
    config = load_qa_config(tmp_path, procedures=None)
    prepared = {rule_id: settings.prepared for rule_id, _, settings in config.plan}
    assert prepared["completeness.truncated"] == frozenset({"via", "the"})
    assert prepared["turnaround.preliminary_late"] == frozenset({"final"})
    assert prepared["completeness.required_sections"] is None  # no prepare function


def test_plan_follows_rules_on_replace() -> None:
    """The plan is derived from the rules: a replaced rules mapping gives a new plan."""
    import dataclasses
    from types import MappingProxyType

    from listener.qa.engine import RuleSettings

    config = load_qa_config(REPO / "policies", procedures=None)
    assert [s for _, _, s in config.plan] == [config.rules[r] for r in sorted(config.rules) if config.rules[r].enabled]
    off = {r: RuleSettings(False, s.severity, s.params) for r, s in config.rules.items()}
    assert dataclasses.replace(config, rules=MappingProxyType(off)).plan == ()


def test_docs_table_lists_every_registered_rule() -> None:
    """docs/qa-rules.md has one table row per rule or per group of rules of one category
    (`category.name` / `other_name`); the ids it names are exactly the registered ones, which
    are the ids findings carry (``RuleInput.emit`` takes the running rule's registered id)."""
    import re

    from tests.conftest import REPO

    documented: set[str] = set()
    for line in (REPO / "docs" / "qa-rules.md").read_text(encoding="utf-8").splitlines():
        first_cell = line.split("|")[1] if line.startswith("| `") else ""
        names = re.findall(r"`([a-z_.]+)`", first_cell)
        if not names or "." not in names[0]:
            continue
        category = names[0].partition(".")[0]
        documented.update(name if "." in name else f"{category}.{name}" for name in names)
    assert documented == set(registry())


@pytest.mark.parametrize(
    "text",
    [
        "FINDINGS: Right pneumothorax. Possible left lower lobe pneumonia.\n"
        "IMPRESSION: No pneumothorax. Findings may represent atelectasis versus pneumonia.",
        "FINDINGS: Normal uterus. Left knee effusion.\nIMPRESSION: Probable edema. Questionable opacity.",
        "IMPRESSION:",
    ],
)
def test_each_finding_is_its_own_rules(text: str) -> None:
    """run_rules gives what each rule of the plan gives with an input of its own (its settings, its id),
    in plan order: the one RuleInput of a run carries each rule's own settings and id while it runs
    (docs/benchmarks.md, "Worker CPU, round 11")."""
    from listener.qa.engine import Analysis, RuleInput
    from tests.unit.qa.factory import make_report, pipeline

    config = pipeline().qa
    assert config is not None
    report = make_report(text)
    context = QaContext(now=RECEIVED)
    found = run_rules(report, config, context)
    analysis = Analysis(report, config.terms, context.text_cache)
    expected = [
        finding
        for rule_id, function, settings in config.plan
        for finding in function(
            RuleInput(report, analysis, config.terms, config.procedures, config.directory, context, settings, rule_id)
        )
    ]
    assert list(found) == expected
    assert len({f.rule for f in found}) >= 2 or text == "IMPRESSION:"
    assert len({f.severity for f in found}) >= 2 or text == "IMPRESSION:"
