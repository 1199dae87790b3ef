"""Build the Pipeline from the daemon config: the one place it is assembled.

Loads the feed mappings (:mod:`listener.hl7v2.mapping`, docs/hl7-input.md), the
CPT table, the QA policy and the routing policy named by a
:class:`listener.config.Config` (docs/configuration.md) into a
:class:`listener.pipeline.Pipeline`. The daemon calls it at start and on
reload (SIGHUP), the CLI for ``overread check`` and ``reprocess``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from listener.config import Config
from listener.hl7v2.mapping import load_mappings
from listener.manifest import check_required_files, check_terms_loaded
from listener.pipeline import Pipeline
from listener.procedures import load_procedures
from listener.qa.policy import load_qa_config
from listener.routing import load_routing_policy, routing_decider
from listener.sites import load_directory

__all__ = ["build_pipeline", "files_version"]


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
    return Pipeline(mappings=load_mappings(config.mappings_dir), procedures=procedures, qa=qa,
                    decide_route=routing_decider(routing), version=qa.version, routing_version=routing.version,
                    mapping_version=files_version(config.mappings_dir, config.procedures_file))


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
