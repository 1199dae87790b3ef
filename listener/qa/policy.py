"""Build a QaConfig from policies/qa.yaml (rules on/off, severities, parameters).

Pure: :func:`build_qa_config` takes the parsed file (``listener.assemble.load_qa_config``
reads it) and the compiled vocabularies.

Every rule registered in listener/qa/ runs with its defaults unless qa.yaml
says otherwise. qa.yaml may only name registered rules and only set parameters
a rule declares, with values of the declared type: a typo is refused at
start-up (and on SIGHUP) with file:line, never silently ignored.
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any

from listener.model import Severity
from listener.procedures import ProcedureTable
from listener.qa.engine import QaConfig, RuleSettings
from listener.qa.registry import registry
from listener.sites import EMPTY_DIRECTORY, Directory
from listener.text import Terms
from listener.yamlconf import YamlFile, YamlList, YamlMap

_SEVERITIES = tuple(s.value for s in Severity)


def _plain(value: Any) -> Any:
    if isinstance(value, YamlMap):
        return MappingProxyType({k: _plain(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, list)
    if isinstance(default, dict) or hasattr(default, "items"):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def build_qa_config(
    policy: YamlFile | None,
    *,
    terms: Terms,
    procedures: ProcedureTable | None,
    directory: Directory = EMPTY_DIRECTORY,
) -> QaConfig:
    """The QaConfig of qa.yaml (None: every rule with its defaults); ConfigError names file:line."""
    specs = registry()
    settings: dict[str, RuleSettings] = {
        rule_id: RuleSettings(True, spec.default_severity, spec.default_params) for rule_id, spec in specs.items()
    }
    digest = hashlib.sha256()
    label = "defaults"
    if policy is not None:
        digest.update(policy.raw)
        doc = policy.doc
        doc.reject_unknown({"version", "rules"})
        label = doc.get_str("version", "1")
        rules = doc.get_map("rules")
        for rule_id in rules:
            spec = specs.get(rule_id)
            if spec is None:
                raise rules.error(rule_id, f"unknown rule {rule_id!r} (see `overread rules` for the list)")
            node = rules.get_map(rule_id)
            node.reject_unknown({"enabled", "severity", "params"}, rule_id)
            params = dict(spec.default_params)
            if "params" in node:
                pnode = node.get_map("params")
                for key in pnode:
                    if key not in spec.default_params:
                        known = ", ".join(sorted(spec.default_params)) or "none"
                        raise pnode.error(key, f"{rule_id}: unknown parameter {key!r} (known: {known})")
                    value = pnode[key]
                    if not _same_type(spec.default_params[key], value):
                        raise pnode.error(key, f"{rule_id}: parameter {key!r} has the wrong type")
                    params[key] = _plain(value) if isinstance(value, (YamlMap, YamlList, list)) else value
            settings[rule_id] = RuleSettings(
                enabled=node.get_bool("enabled", True),
                severity=Severity(node.get_choice("severity", _SEVERITIES, spec.default_severity.value)),
                params=MappingProxyType(params),
            )
    digest.update(terms.digest.encode())
    return QaConfig(
        rules=MappingProxyType(settings),
        terms=terms,
        procedures=procedures,
        directory=directory,
        version=f"{label}+{digest.hexdigest()[:10]}",
        specs=specs,
    )
