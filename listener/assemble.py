"""Build the Pipeline from the daemon config: the one place it is assembled.

Loads the feed mappings (:mod:`listener.hl7v2.mapping`, docs/hl7-input.md), the
CPT table, the QA policy and the routing policy named by a
:class:`listener.config.Config` (docs/configuration.md) into a
:class:`listener.pipeline.Pipeline`. The daemon calls it at start and on
reload (SIGHUP), the CLI for ``overread check`` and ``reprocess``.

The loaders here (:func:`load_terms`, :func:`load_qa_config`,
:func:`load_routing_policy`, :func:`load_decider`) are where the policy files
are read (through :mod:`listener.yamlconf`); the QA, text and routing layers
build their frozen values from the parsed documents and read no file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

from listener.config import Config
from listener.errors import ConfigError
from listener.hl7v2.mapping import load_mappings
from listener.manifest import check_required_files, check_terms_loaded
from listener.model import Finding, Report, Route
from listener.pipeline import Pipeline
from listener.procedures import ProcedureTable, load_procedures
from listener.qa.engine import QaConfig, QaContext
from listener.qa.policy import build_qa_config
from listener.resources import defaults_root
from listener.routing import RoutingPolicy, build_policy, routing_decider
from listener.sites import EMPTY_DIRECTORY, Directory, ReaderHistory, load_directory
from listener.text import Terms, build_terms
from listener.yamlconf import read_yaml_dir, read_yaml_file

__all__ = [
    "DEFAULT_TERMS_DIR",
    "build_pipeline",
    "files_version",
    "load_decider",
    "load_qa_config",
    "load_routing_policy",
    "load_terms",
]

#: The vocabularies shipped with the listener (``policies/terms``, packaged or in the checkout).
DEFAULT_TERMS_DIR = defaults_root() / "policies" / "terms"


def build_pipeline(config: Config) -> Pipeline:
    """Load mappings, the CPT table and policies into a Pipeline.

    Every file the policy needs must be there and hold something
    (:mod:`listener.manifest`): the loaders' fallbacks (no qa.yaml: rule
    defaults; no routing.yaml: no routing; no terms directory: the shipped
    vocabularies) are for tests and ``overread check --policy``, never for
    the daemon, whose routing would otherwise shrink without a word.

    Raises:
        ConfigError: naming the file (and line) of the first problem.
    """
    check_required_files(config)
    terms_dir = config.policies_dir / "terms"
    procedures = load_procedures(config.procedures_file)
    directory = load_directory(config.policies_dir)
    qa = load_qa_config(config.policies_dir, procedures=procedures, directory=directory, terms_dir=terms_dir)
    # A file removed between the check and the load must not slip through either.
    check_terms_loaded(qa.terms.sources, terms_dir)
    routing = load_routing_policy(config.policies_dir / "routing.yaml", directory=directory, terms=qa.terms)
    return Pipeline(
        mappings=load_mappings(config.mappings_dir),
        procedures=procedures,
        qa=qa,
        decide_route=routing_decider(routing),
        version=qa.version,
        routing_version=routing.version,
        mapping_version=files_version(config.mappings_dir, config.procedures_file),
        routing=routing,
    )


def files_version(directory: Path, *extra: Path) -> str:
    """A short hash of the YAML files under ``directory`` (names and bytes) and ``extra``.

    Logged as ``version`` of the mappings next to the QA and routing policy
    versions: two lines with the same three values were handled by the same
    configuration.
    """
    digest = hashlib.sha256()
    files = sorted({*(p for p in directory.rglob("*.yaml") if p.is_file()), *(p for p in extra if p.is_file())})
    for file in files:
        try:
            data = file.read_bytes()
        except OSError:
            continue
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:10]


def load_terms(directory: str | Path = DEFAULT_TERMS_DIR) -> Terms:
    """Read every ``*.yaml`` of ``directory`` (``policies/terms``) and compile the vocabularies.

    Raises:
        ConfigError: the directory is missing, or (naming ``file:line``) any
            invalid file, pattern, duplicate concept, unknown key, or a missing
            laterality file.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError("terms directory not found", path=str(folder))
    return build_terms(read_yaml_dir(folder), str(folder))


def load_qa_config(
    policies_dir: str | Path,
    *,
    procedures: ProcedureTable | None,
    directory: Directory = EMPTY_DIRECTORY,
    terms_dir: str | Path | None = None,
) -> QaConfig:
    """Load qa.yaml (optional) and the vocabularies; ConfigError names file:line.

    The vocabularies come from ``terms_dir``, else ``terms/`` beside qa.yaml
    when it is there, else the shipped ones.
    """
    root = Path(policies_dir)
    path = root / "qa.yaml"
    policy = read_yaml_file(path) if path.is_file() else None
    terms = load_terms(terms_dir or (root / "terms" if (root / "terms").is_dir() else DEFAULT_TERMS_DIR))
    return build_qa_config(policy, terms=terms, procedures=procedures, directory=directory)


def load_routing_policy(
    path: str | Path,
    *,
    directory: Directory = EMPTY_DIRECTORY,
    terms: Terms | None = None,
) -> RoutingPolicy:
    """Load and validate a routing policy file.

    Args:
        path: the routing.yaml to read (``overread check --policy F`` passes F).
        directory: sites and readers, to resolve and validate site, client and
            reader names.
        terms: the compiled vocabularies for ``critical_finding`` and
            ``hedge_density``; None loads policies/terms beside the file, else the
            shipped ones.

    Returns:
        The policy; its ``version`` is the file's ``version`` label plus a hash
        of the file, the directory and the vocabularies.

    Raises:
        ConfigError: naming the file, line and key of the first problem.
    """
    file = read_yaml_file(path)
    if terms is None:
        beside = Path(path).resolve().parent / "terms"
        terms = load_terms(beside if beside.is_dir() else DEFAULT_TERMS_DIR)
    return build_policy(file.doc, file.raw, directory=directory, terms=terms)


def load_decider(
    policies_dir: str | Path,
    *,
    directory: Directory = EMPTY_DIRECTORY,
    terms: Terms | None = None,
    policy_file: str | Path | None = None,
    reader_history: Mapping[str, ReaderHistory] | None = None,
) -> Callable[[Report, tuple[Finding, ...], QaContext], Route] | None:
    """Load the routing policy for ``Pipeline.decide_route``.

    Args:
        policies_dir: where routing.yaml lives by default.
        directory, terms: as for :func:`load_routing_policy`.
        policy_file: a policy file to use instead (``overread check --policy F``);
            it must exist.
        reader_history: fresher peer-review figures than readers.yaml, if any.

    Returns:
        The decider, or None when there is no policy_file and policies_dir has
        no routing.yaml (reports are then not routed).

    Raises:
        ConfigError: the file is missing (policy_file) or invalid.
    """
    path = Path(policy_file) if policy_file is not None else Path(policies_dir) / "routing.yaml"
    if policy_file is None and not path.is_file():
        return None
    policy = load_routing_policy(path, directory=directory, terms=terms)
    return routing_decider(policy, reader_history)
