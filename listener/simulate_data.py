"""The store side of the policy what-if: the window's stored reports and graded pairs, replayed.

Layer: shell over the store (reads it, never writes), shared by ``overread simulate``
(:mod:`listener.simulate_cli`) and the console's policy page (:mod:`listener.console.policy`).
The routing and the figures are the pure :func:`listener.simulate.simulate`. docs/simulate.md

Patient names and identifiers never leave here: the cases carry accessions, control ids,
reader ids and keyed hashes of patient ids (the report objects stay inside the run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from listener.simulate import Case, GradedCase, Simulation, Workload, build_workload, simulate, stored_case
from listener.store.base import HISTORY_LIMIT, Store

if TYPE_CHECKING:
    from listener.outcome_data import HistoryContext
    from listener.routing import RoutingPolicy
    from listener.sites import Directory

__all__ = ["CHUNK", "WORKLOAD_FILE", "Loaded", "load_cases", "load_workload", "run_simulation"]

#: The workload policy's name in the policies directory.
WORKLOAD_FILE = "workload.yaml"
#: Accessions read and graded at a time (as :func:`listener.outcome_data.collect` does).
CHUNK = 500


def load_workload(path: Path | None) -> Workload:
    """The workload policy at ``path``; the built-in defaults when ``path`` is None.

    Raises:
        ConfigError: the file is missing or does not validate (file and line named).
    """
    from listener.yamlconf import parse_yaml, read_yaml_file

    if path is None:
        return build_workload(parse_yaml('version: "built-in"\n', "(built-in workload defaults)"))
    return build_workload(read_yaml_file(path).doc)


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the store gave: the cases, the graded pairs and the accessions' outcomes."""

    cases: tuple[Case, ...]
    graded: tuple[GradedCase, ...]
    outcomes: tuple[Any, ...]


def load_cases(
    store: Store,
    ctx: HistoryContext,
    *,
    since: datetime,
    until: datetime,
    hash_key: bytes | None,
    progress: Callable[[int, int], None] | None = None,
) -> Loaded:
    """Every stored report of the accessions with a report received in ``[since, until)``, and their graded pairs.

    The pairs are graded as ``overread scorecard`` grades them
    (:func:`listener.outcome_data.compare_chains`: from the comparisons cache,
    else compared and cached). Accessions are read :data:`CHUNK` at a time.
    ``progress``: called with (accessions read, accessions of the window) before
    the first chunk and after each one (``overread simulate --progress``, which
    the console's what-if reads: docs/console.md).

    Raises:
        StoreError: the store cannot be read.
    """
    from listener.logs import keyed_hash
    from listener.outcome_data import compare_chains, graded_pair, place_scores
    from listener.outcomes.graded import AccessionOutcome
    from listener.outcomes.history import build_chain

    hasher = (lambda value: keyed_hash(value, hash_key)) if hash_key else None
    cases: list[Case] = []
    graded: list[GradedCase] = []
    outcomes: list[AccessionOutcome] = []
    accessions = store.accessions_received(since, until)
    if progress is not None:
        progress(0, len(accessions))
    for start in range(0, len(accessions), CHUNK):
        histories = store.report_histories(accessions[start : start + CHUNK], limit=HISTORY_LIMIT)
        chains = [(build_chain(accession, entries), entries) for accession, entries in sorted(histories.items())]
        scores_of = store.scores_of_accessions([c.accession for c, _ in chains if c.pairs], limit=HISTORY_LIMIT)
        for compared in compare_chains(store, chains, ctx):
            chain = compared.chain
            for e in compared.entries:
                cases.append(
                    stored_case(
                        message_pk=e.message_pk,
                        seq=e.seq,
                        control_id=e.control_id,
                        received=e.received,
                        report_json=e.report_json,
                        findings_json=e.findings_json,
                        in_window=since <= e.received < until,
                        hasher=hasher,
                    )
                )
            placed, _ = place_scores(scores_of.get(chain.accession, ()), chain)
            pairs = tuple(graded_pair(c, s) for c, s in zip(compared.pairs, placed, strict=True))
            outcomes.append(AccessionOutcome(chain, pairs))
            for gp in pairs:
                if gp.grade is None:
                    continue
                before = chain.versions[gp.pair.before]
                graded.append(GradedCase(chain.accession, (before.message_pk, before.seq), gp.grade, gp.pair.kind))
        if progress is not None:
            progress(min(start + CHUNK, len(accessions)), len(accessions))
    return Loaded(tuple(cases), tuple(graded), tuple(outcomes))


def run_simulation(
    store: Store,
    ctx: HistoryContext,
    directory: Directory,
    *,
    baseline: tuple[str, RoutingPolicy],
    candidate: tuple[str, RoutingPolicy],
    workload: Workload,
    since: datetime,
    until: datetime,
    hash_key: bytes | None,
    progress: Callable[[int, int], None] | None = None,
) -> Simulation:
    """Read the window's cases and route them under both policies (the CLI's and the console's run).

    The discrepancy-rate conditions of both policies read the live figures of
    the cases read (:func:`listener.live_figures.figures_of`), as docs/simulate.md
    says. ``progress``: see :func:`load_cases`.

    Raises:
        StoreError: the store cannot be read.
    """
    from listener.live_figures import figures_of

    loaded = load_cases(store, ctx, since=since, until=until, hash_key=hash_key, progress=progress)
    label = f"store {since.astimezone(UTC):%Y-%m-%dT%H:%MZ} to {until.astimezone(UTC):%Y-%m-%dT%H:%MZ}"
    live = figures_of(loaded.outcomes, directory, since=since, until=until, label=label)
    return simulate(
        loaded.cases,
        loaded.graded,
        baseline=baseline,
        candidate=candidate,
        workload=workload,
        since=since,
        until=until,
        reader_history=live.readers,
        group_history=live.groups,
        history_source=live.source,
    )
