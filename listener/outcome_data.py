"""Graded pairs from the store: what ``overread history``, scorecards, feedback and live rates read (shell).

Layer: shell over the store interface; no Twisted, no logging, no CLI. Blocking:
run it in a thread or a command, never on the reactor.

One implementation grades a pair for every reader (docs/outcomes.md,
"Scorecards: where the figures come from"):

- the chain's order and its pairs come from the pure
  :func:`listener.outcomes.history.build_chain`;
- a pair's comparison is read from the store's comparisons cache when its
  key is there, else both versions are decoded again from their stored raw
  bytes through the given pipeline (the way ``overread reprocess`` decodes
  them, :mod:`listener.reprocess`), compared by
  :func:`listener.outcomes.compare`, and the result is cached;
- the key (:func:`comparison_key`) is a digest of both versions' stored
  report and findings JSON, the grading rules' version, the pipeline's QA and
  mapping versions and the program's version, so a reprocessed message, a
  rules change or a configuration change misses the cache instead of reading
  a stale grade;
- an explicit score is placed on its pair by :func:`place_scores`; the
  latest recorded one on a pair is its explicit grade.

:func:`collect` grades every accession with a report received in a window
(:class:`listener.outcomes.graded.AccessionOutcome`), and counts those with a
single version from the store's version summaries
(:class:`listener.outcomes.graded.LoneReads`: no pair, nothing to grade);
:func:`listener.history.history_document` grades one accession for
``overread history``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from listener import __version__
from listener.fhir.decode import DEFAULT_CLIENT, FhirClient
from listener.model import Finding, Report
from listener.outcomes import OutcomeRules, compare
from listener.outcomes.graded import AccessionOutcome, GradedPair, LoneReads
from listener.outcomes.history import Pair, ReadSummary, VersionChain, build_chain, summary_from_text
from listener.outcomes.scorecard import Scorecard, scorecard
from listener.pipeline import Pipeline, process, process_fhir
from listener.sites import Directory
from listener.store.base import HISTORY_LIMIT, CachedComparison, HistoryEntry, Store, StoredScore, require_aware

__all__ = [
    "CHUNK",
    "KEY_VERSION",
    "ChainComparisons",
    "Collected",
    "HistoryContext",
    "PairComparison",
    "collect",
    "compare_chains",
    "comparison_key",
    "graded_pair",
    "place_scores",
]

#: The layout of :func:`comparison_key`'s input and of the cached result; a new value misses every cached row.
KEY_VERSION = 1
_FHIR_MEDIA_TYPE = "application/fhir+json"
RAW_PURGED = "not comparable: raw purged"
NO_QA = "not comparable: no QA vocabularies configured"
#: Accessions :func:`collect` reads and grades at a time.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class HistoryContext:
    """What re-decoding and comparing need: the pipeline, the grading rules, the FHIR clients by name."""

    pipeline: Pipeline
    rules: OutcomeRules
    clients: Mapping[str, FhirClient]


@dataclass(frozen=True, slots=True)
class PairComparison:
    """One pair of a chain compared, or why it could not be.

    Attributes:
        pair: the pair (positions in the chain, kind).
        comparison: ``Comparison.to_json()`` of the pair (None when not comparable).
        reason: why it is not comparable ("" when it is).
        cached: the comparison was read from the cache (not computed by this call).
    """

    pair: Pair
    comparison: dict[str, Any] | None
    reason: str = ""
    cached: bool = False

    @property
    def comparable(self) -> bool:
        """The pair has a comparison."""
        return self.comparison is not None


@dataclass(frozen=True, slots=True)
class ChainComparisons:
    """A chain, the stored rows it was built from, and its pairs compared (``pairs[i]`` is ``chain.pairs[i]``)."""

    chain: VersionChain
    entries: tuple[HistoryEntry, ...]
    pairs: tuple[PairComparison, ...]


def comparison_key(before: HistoryEntry, after: HistoryEntry, ctx: HistoryContext) -> str:
    """The cache key of a pair: sha256 over what its comparison depends on.

    Both versions' stored report and findings JSON (a reprocess writes new
    ones), the grading rules' version (label and file hash), the pipeline's
    QA version (vocabularies and rules) and mapping version (mappings and
    procedures), the program's version (the comparison code) and
    :data:`KEY_VERSION`.
    """
    digest = hashlib.sha256()
    for part in (
        str(KEY_VERSION),
        __version__,
        ctx.rules.version,
        ctx.pipeline.version,
        ctx.pipeline.mapping_version,
        before.transport,
        before.report_json,
        before.findings_json,
        after.transport,
        after.report_json,
        after.findings_json,
    ):
        data = part.encode("utf-8")
        # Each part length-prefixed: no two different lists of parts hash the same bytes.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _decode(entry: HistoryEntry, raw: bytes, ctx: HistoryContext) -> tuple[Report, tuple[Finding, ...]] | str:
    """The entry's report and QA findings decoded again from ``raw``, or why not."""
    if entry.transport == "mllp":
        outcome = process(raw, ctx.pipeline, received_at=entry.received)
    else:
        sender = json.loads(entry.report_json).get("sender") or {}
        name, facility = str(sender.get("application") or ""), str(sender.get("facility") or "")
        known = ctx.clients.get(name)
        client = dataclasses.replace(
            known or DEFAULT_CLIENT,
            name=name or DEFAULT_CLIENT.name,
            facility=facility,
            feed=ctx.pipeline.mappings.for_sender(name, facility).name,
        )
        outcome = process_fhir(
            raw, ctx.pipeline, received_at=entry.received, media_type=_FHIR_MEDIA_TYPE, client=client
        )
    if entry.seq >= len(outcome.reports):
        return "not comparable: the stored body no longer decodes to this report"
    result = outcome.reports[entry.seq]
    stored_accession = str(json.loads(entry.report_json).get("accession") or "")
    if result.report.accession != stored_accession:
        return "not comparable: the stored body decodes to another accession with the current configuration"
    return result.report, result.findings


def _cached(text: str | None) -> dict[str, Any] | None:
    """A cached result when it is one this code wrote (anything else is computed again)."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("grade"), str)
        or not isinstance(doc.get("differences"), list)
    ):
        return None
    return doc


class _Versions:
    """One chain's versions decoded again on demand, each at most once (a version may be in two pairs)."""

    def __init__(self, store: Store, chain: VersionChain, entries: Sequence[HistoryEntry], ctx: HistoryContext) -> None:
        self._store, self._chain, self._ctx = store, chain, ctx
        self._by_key = {(e.message_pk, e.seq): e for e in entries}
        self._decoded: dict[int, tuple[Report, tuple[Finding, ...]] | str] = {}

    def entry(self, position: int) -> HistoryEntry:
        v = self._chain.versions[position]
        return self._by_key[(v.message_pk, v.seq)]

    def decoded(self, position: int) -> tuple[Report, tuple[Finding, ...]] | str:
        if position not in self._decoded:
            v = self._chain.versions[position]
            raw = self._store.message_raw(v.message_pk) if v.raw_kept else None
            self._decoded[position] = RAW_PURGED if raw is None else _decode(self.entry(position), raw, self._ctx)
        return self._decoded[position]


def compare_chains(
    store: Store,
    chains: Sequence[tuple[VersionChain, Sequence[HistoryEntry]]],
    ctx: HistoryContext,
    *,
    now: datetime | None = None,
) -> tuple[ChainComparisons, ...]:
    """Compare every pair of the given chains: from the cache when it holds the pair's key, else computed
    (raw bytes decoded again, compared) and written to the cache in one transaction.

    ``chains`` pairs each chain with the stored rows it was built from. A
    version whose raw bytes are purged is decoded only on a cache miss; a
    pair not comparable is not cached (its reason may change).

    Raises:
        StoreError: the store cannot be read or written.
    """
    computed_at = now or datetime.now(UTC)
    require_aware(computed_at, "now")
    prepared: list[tuple[VersionChain, tuple[HistoryEntry, ...], _Versions | None, list[str]]] = []
    for chain, entries in chains:
        if not chain.pairs:
            # A chain with one version, or none of final stage: nothing to compare or decode.
            prepared.append((chain, tuple(entries), None, []))
            continue
        versions = _Versions(store, chain, entries, ctx)
        keys = [comparison_key(versions.entry(p.before), versions.entry(p.after), ctx) for p in chain.pairs]
        prepared.append((chain, tuple(entries), versions, keys))
    found = store.cached_comparisons([k for *_, keys in prepared for k in keys])
    out: list[ChainComparisons] = []
    fresh: list[CachedComparison] = []
    qa = ctx.pipeline.qa
    for chain, entries, maybe_versions, keys in prepared:
        if maybe_versions is None:
            out.append(ChainComparisons(chain, entries, ()))
            continue
        versions = maybe_versions
        pairs: list[PairComparison] = []
        for pair, key in zip(chain.pairs, keys, strict=True):
            hit = _cached(found.get(key))
            if hit is not None:
                pairs.append(PairComparison(pair, hit, cached=True))
                continue
            before, after = versions.decoded(pair.before), versions.decoded(pair.after)
            if isinstance(before, str) or isinstance(after, str):
                pairs.append(PairComparison(pair, None, before if isinstance(before, str) else str(after)))
                continue
            if qa is None:
                pairs.append(PairComparison(pair, None, NO_QA))
                continue
            result = compare(before[0], after[0], terms=qa.terms, rules=ctx.rules, qa_findings=(before[1], after[1]))
            doc = result.to_json()
            pairs.append(PairComparison(pair, doc))
            fresh.append(CachedComparison(key, chain.accession, computed_at, json.dumps(doc, ensure_ascii=False)))
        out.append(ChainComparisons(chain, entries, tuple(pairs)))
    store.cache_comparisons(fresh)
    return tuple(out)


def place_scores(
    scores: Sequence[StoredScore], chain: VersionChain
) -> tuple[tuple[tuple[StoredScore, ...], ...], tuple[StoredScore, ...]]:
    """Each explicit score put on the pair it grades; returns the scores of each pair (``[i]`` for
    ``chain.pairs[i]``, in recorded order: the last one is the pair's explicit grade) and those no pair fits.

    A score grades the pair whose later version its message carried, else
    the first ``prelim_to_final`` pair, else the only pair; none fits an
    accession with no pair.
    """
    placed: list[list[StoredScore]] = [[] for _ in chain.pairs]
    unplaced: list[StoredScore] = []
    after_pks = [chain.versions[p.after].message_pk for p in chain.pairs]
    first = next((i for i, p in enumerate(chain.pairs) if p.kind == "prelim_to_final"), None)
    if first is None and len(chain.pairs) == 1:
        first = 0
    for stored in scores:
        index = first
        if stored.message_pk is not None and stored.message_pk in after_pks:
            index = after_pks.index(stored.message_pk)
        if index is None:
            unplaced.append(stored)
        else:
            placed[index].append(stored)
    return tuple(tuple(p) for p in placed), tuple(unplaced)


def graded_pair(compared: PairComparison, scores: Sequence[StoredScore]) -> GradedPair:
    """A compared pair with its explicit grade (the last of ``scores``, the pair's placed scores)."""
    explicit = scores[-1].score.grade if scores else None
    doc = compared.comparison
    if doc is None:
        return GradedPair(compared.pair, False, compared.reason, None, explicit)
    differences = [d for d in doc.get("differences", ()) if isinstance(d, dict)]
    operational = [d for d in differences if d.get("category") == "operational"]
    return GradedPair(
        compared.pair,
        True,
        "",
        str(doc["grade"]),
        explicit,
        interpretive=sum(1 for d in differences if d.get("category") == "interpretive"),
        operational=len(operational),
        operational_kinds=tuple(sorted({str(d.get("kind") or "") for d in operational} - {""})),
    )


@dataclass(frozen=True, slots=True)
class Collected:
    """A window's accessions graded (:func:`collect`).

    Attributes:
        outcomes: the chains, each pair graded, of the accessions with another
            stored report row (sorted by accession).
        lone: the other accessions' versions (one each, which pairs with none)
            counted from the store's version summaries, for each clinical window
            asked (``(since, until)`` -> the counts).
    """

    outcomes: tuple[AccessionOutcome, ...]
    lone: Mapping[tuple[datetime, datetime], tuple[LoneReads, ...]]

    def lone_in(self, since: datetime, until: datetime) -> tuple[LoneReads, ...]:
        """The lone versions whose clinical time is in ``[since, until)`` (a window :func:`collect` was asked for).

        Raises:
            ValueError: the window was not asked for.
        """
        try:
            return self.lone[(since, until)]
        except KeyError:
            raise ValueError(f"lone versions were not counted for {since.isoformat()} to {until.isoformat()}") from None

    def scorecard(
        self,
        *,
        by: str,
        directory: Directory,
        since: datetime,
        until: datetime,
        min_reads: int = 30,
        only: str | None = None,
    ) -> Scorecard:
        """The scorecard of the chains and of the lone versions of ``[since, until)``
        (:func:`listener.outcomes.scorecard.scorecard`; the window must be one :func:`collect` was asked for).

        Raises:
            ValueError: the window was not asked for, or a :func:`~listener.outcomes.scorecard.scorecard` refusal.
        """
        lone = self.lone_in(since, until)
        return scorecard(
            self.outcomes,
            by=by,
            directory=directory,
            since=since,
            until=until,
            min_reads=min_reads,
            only=only,
            lone=lone,
        )


def collect(
    store: Store,
    ctx: HistoryContext,
    *,
    since: datetime,
    until: datetime,
    windows: Sequence[tuple[datetime, datetime]] = (),
) -> Collected:
    """Every accession with a stored report received in ``[since, until)``, graded.

    An accession with another stored report row gets its whole chain (also its
    versions outside the window) with each pair graded; the others, whose one
    version pairs with none, are counted from the store's version summaries
    (never decoded) for ``[since, until)`` and each of ``windows`` by clinical
    time (docs/outcomes.md, "Scorecards: where the figures come from"). The
    work is the chains' rows and one read of the window's versions
    (:meth:`~listener.store.base.Store.window_versions`: both sets at once).

    At most :data:`listener.store.base.HISTORY_LIMIT` report rows and
    explicit scores of one accession are read (``overread history``'s bound).
    Accessions are read and graded :data:`CHUNK` at a time, each chunk's new
    comparisons cached in one write: memory holds one chunk's stored rows,
    and an interrupted call keeps the chunks it finished.

    Raises:
        StoreError: the store cannot be read (or the cache written).
        ValueError: a naive time.
    """
    asked = list(dict.fromkeys([(since, until), *windows]))
    versions = store.window_versions(since, until, asked)
    accessions = versions.multi
    out = []
    for start in range(0, len(accessions), CHUNK):
        histories = store.report_histories(accessions[start : start + CHUNK], limit=HISTORY_LIMIT)
        chains = [(build_chain(accession, entries), entries) for accession, entries in sorted(histories.items())]
        # One read of the chunk's scores, for the accessions with a pair to place them on.
        scores = store.scores_of_accessions([c.accession for c, _ in chains if c.pairs], limit=HISTORY_LIMIT)
        for compared in compare_chains(store, chains, ctx):
            chain = compared.chain
            if not chain.pairs:
                out.append(AccessionOutcome(chain, ()))
                continue
            placed, _ = place_scores(scores.get(chain.accession, ()), chain)
            graded = tuple(graded_pair(c, s) for c, s in zip(compared.pairs, placed, strict=True))
            out.append(AccessionOutcome(chain, graded))
    summaries: dict[str, ReadSummary] = {}
    lone: dict[tuple[datetime, datetime], list[LoneReads]] = {window: [] for window in asked}
    for found in versions.lone:
        summary = summaries.get(found.summary)
        if summary is None:
            summary = summaries[found.summary] = summary_from_text(found.summary, None, None)
        lone[asked[found.window]].append(LoneReads(summary, found.prelim_minutes, found.count, found.first_accession))
    for reads in lone.values():
        reads.sort(key=lambda r: (r.first_accession, r.summary.to_text(), r.prelim_minutes or 0.0))
    return Collected(tuple(out), {window: tuple(reads) for window, reads in lone.items()})
