"""What a configuration must hold before the daemon uses it: every policy file, present and not empty.

Layer: configuration (reads the files it checks; no clock, no logging).

Promise: a policy never shrinks silently. The loaders of the pure layers treat
some files as optional (a test or ``overread check --policy`` may run with
fewer), and a missing vocabulary simply matches nothing: without
``policies/terms/negation.yaml`` a normal chest X-ray becomes a selective
overread, and without ``policies/`` every report is routed to no bucket at
all. The daemon and ``overread check`` therefore load a
configuration only after :func:`check_required_files` has found every file
below, each holding what it is for; a missing, empty or mismatched file is a
:class:`ConfigError` naming it (start-up fails; a SIGHUP keeps the old
configuration).

Extra term files are welcome (every ``terms/*.yaml`` is loaded); the ones
listed here are the vocabularies the QA rules and routing conditions read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from listener.errors import ConfigError
from listener.yamlconf import load_yaml

if TYPE_CHECKING:
    from listener.config import Config

__all__ = ["POLICY_FILES", "TERM_FILES", "check_required_files", "check_terms_loaded", "required_files"]

#: Files of the policies directory, each read by the pipeline.
POLICY_FILES = ("qa.yaml", "routing.yaml", "sites.yaml", "readers.yaml")

#: ``policies/terms`` files: name -> (``kind``, ``category`` for modifiers, the key
#: that must hold at least one entry).
TERM_FILES = MappingProxyType(
    {
        "critical_findings.yaml": ("concepts", "", "concepts"),
        "findings.yaml": ("concepts", "", "concepts"),
        "sex_specific.yaml": ("concepts", "", "concepts"),
        "laterality.yaml": ("laterality", "", "sides"),
        "negation.yaml": ("modifiers", "negated", "triggers"),
        "uncertainty.yaml": ("modifiers", "uncertain", "triggers"),
        "historical.yaml": ("modifiers", "historical", "triggers"),
        "indication.yaml": ("modifiers", "hypothetical", "triggers"),
        "experiencer.yaml": ("modifiers", "other_experiencer", "triggers"),
        "pseudo.yaml": ("modifiers", "pseudo", "triggers"),
        "terminators.yaml": ("modifiers", "terminate", "triggers"),
        "definite.yaml": ("modifiers", "definite", "triggers"),
    }
)


def required_files(config: Config) -> tuple[Path, ...]:
    """Every file ``build_pipeline(config)`` (:mod:`listener.assemble`) needs, in the order they are checked."""
    policies = config.policies_dir
    return (
        config.mappings_dir / "default.yaml",
        config.procedures_file,
        *(policies / name for name in POLICY_FILES),
        *(policies / "terms" / name for name in TERM_FILES),
    )


#: libyaml's parser when PyYAML has it: the check reads every file once more
#: before the loaders do, and the pure-Python parser would add half a second to
#: each start and reload. Our line-numbering loader runs only to locate a problem.
_FAST_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_required_files(config: Config) -> None:
    """Refuse a configuration that lacks a file the policy needs.

    Args:
        config: the daemon configuration (its mappings, procedures and policies paths).

    Raises:
        ConfigError: naming the first directory or file that is missing, not a
            file, empty, or (a term file) not the vocabulary it is named for.
    """
    for directory in (config.mappings_dir, config.policies_dir, config.policies_dir / "terms"):
        if not directory.is_dir():
            raise ConfigError("required directory not found", path=str(directory))
    terms_dir = config.policies_dir / "terms"
    for path in required_files(config):
        _check_file(path, TERM_FILES.get(path.name) if path.parent == terms_dir else None)


def _check_file(path: Path, expected: tuple[str, str, str] | None) -> None:
    """One required file: present, a regular file, a non-empty mapping, and (a term file) its vocabulary."""
    if not path.exists():
        raise ConfigError("required file not found", path=str(path))
    if not path.is_file():
        raise ConfigError("required file is not a regular file", path=str(path))
    try:
        doc: Any = yaml.load(path.read_bytes(), Loader=_FAST_LOADER)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError):
        doc = None
    if isinstance(doc, dict) and doc and (expected is None or _term_problem(doc, *expected) is None):
        return
    # Something is wrong: read it again with line numbers, so the error names file:line.
    # load_yaml refuses an unreadable file, invalid YAML, and an empty document.
    full = load_yaml(path)
    if expected is not None:
        problem = _term_problem(full, *expected)
        if problem is not None:
            raise full.error(problem[0], problem[1])


def _term_problem(doc: dict[str, Any], kind: str, category: str, entries: str) -> tuple[str, str] | None:
    """(key, message) when a term file does not hold the vocabulary its name promises, with one entry at least."""
    if doc.get("kind") != kind:
        return "kind", f"this vocabulary must have kind: {kind}"
    if category and doc.get("category") != category:
        return "category", f"this vocabulary must have category: {category}"
    if not doc.get(entries):
        return entries, f"{entries}: at least one entry is needed"
    return None


def check_terms_loaded(sources: Iterable[str], terms_dir: Path) -> None:
    """Refuse compiled vocabularies that lack a required file (it vanished between check and load).

    Args:
        sources: the files the terms loader read (``Terms.sources``).
        terms_dir: the directory it read them from.

    Raises:
        ConfigError: naming the first required term file that was not read.
    """
    read = {Path(p).resolve() for p in sources}
    for name in TERM_FILES:
        path = terms_dir / name
        if path.resolve() not in read:
            raise ConfigError("required file not found", path=str(path))
