"""Live peer-review figures for routing, computed from the store (shell).

Layer: shell over the store interface; no Twisted, no logging. Each reader's
and each readers.yaml group's graded reads and significant discrepancies
over a window ending at ``until``: the accessions come from
:func:`listener.outcome_data.collect`, the counts from the pure
:func:`listener.outcomes.scorecard.scorecard` (a row's ``graded`` reads and
its ``significant`` discrepancy count, grades 2b and 3b). The daemon's cache
(:mod:`listener.server.live_rates`) and ``overread reprocess`` call it, on a
thread or in the CLI, never on the reactor; the routing policy reads the
result as an input (docs/routing.md, "Discrepancy rates: live figures and the
readers.yaml fallback").

The figures hold reader ids, group names and counts: no patient data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from listener.outcome_data import HistoryContext, collect
from listener.outcomes.graded import AccessionOutcome, LoneReads
from listener.outcomes.scorecard import NO_GROUP, NO_READER, NOT_IN_DIRECTORY, Scorecard, scorecard
from listener.sites import EMPTY_DIRECTORY, Directory, LiveFigures, ReaderHistory
from listener.store.base import Store

__all__ = ["compute_live_figures", "figures_of", "window_label"]


def window_label(window_days: int, until: datetime) -> str:
    """The figures' source in words, as explanations quote it: ``store 90 d to 2026-12-06T10:00Z``."""
    return f"store {window_days} d to {until.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def compute_live_figures(store: Store, ctx: HistoryContext, *, until: datetime, window_days: int) -> LiveFigures:
    """Per-reader and per-group graded reads and significant discrepancies over ``window_days`` to ``until``.

    The group of a reader is its readers.yaml group in ``ctx.pipeline``'s
    directory; a reader readers.yaml does not list has figures but no group.

    Raises:
        StoreError: the store cannot be read.
    """
    since = until - timedelta(days=window_days)
    found = collect(store, ctx, since=since, until=until)
    qa = ctx.pipeline.qa
    directory = qa.directory if qa is not None else EMPTY_DIRECTORY
    label = window_label(window_days, until)
    return figures_of(
        found.outcomes, directory, since=since, until=until, label=label, lone=found.lone_in(since, until)
    )


def figures_of(
    outcomes: Sequence[AccessionOutcome],
    directory: Directory,
    *,
    since: datetime,
    until: datetime,
    label: str,
    lone: Sequence[LoneReads] = (),
) -> LiveFigures:
    """Per-reader and per-group figures of already graded accessions (``overread simulate`` reads
    its window's this way, without grading them twice) and of lone versions counted over
    ``[since, until)`` (:meth:`listener.outcome_data.Collected.lone_in`); ``label`` names their source."""
    by_reader = scorecard(outcomes, by="reader", directory=directory, since=since, until=until, min_reads=1, lone=lone)
    by_group = scorecard(outcomes, by="group", directory=directory, since=since, until=until, min_reads=1, lone=lone)
    readers = _histories(by_reader, str.upper, {NO_READER})
    groups = _histories(by_group, str, {NOT_IN_DIRECTORY, NO_GROUP})
    return LiveFigures(readers, groups, label)


def _histories(card: Scorecard, key: Callable[[str], str], unnamed: set[str]) -> Mapping[str, ReaderHistory]:
    """Scorecard rows -> key -> ReaderHistory(graded reads, significant discrepancies)."""
    out: dict[str, ReaderHistory] = {}
    for row in card.rows:
        if row.key in unnamed or not row.graded:
            continue
        out[key(row.key)] = ReaderHistory(row.graded, row.discrepancies["significant"].count)
    return MappingProxyType(out)
