"""A decoded report's prior studies, looked up in the store for the comparison rules.

Layer: shell. The pipeline calls :class:`PriorLookup` once per decoded report
(``priors_for``, listener/pipeline.py) on the worker thread that runs it, never
on the reactor: :meth:`listener.store.base.Store.prior_studies` is a blocking
read, and the store's reader connection is shared under a lock, so any thread
may use it. What counts as a prior is the store's rule (same identifier and
assigning authority, another accession, received earlier, its latest report);
which priors are relevant (body region, modality, age) is the comparison
rules' (listener/qa/comparison.py, docs/qa-rules.md).

A report with no patient identifier has unknown priors (None), and so has a
patient the store holds no earlier study of: the store cannot tell "no
prior exists" from "the prior was done before this daemon saw the patient",
and a report citing such a prior is not a defect. A failed look-up is
unknown priors too: the message is still checked and answered,
and ``failed`` hears the exception's type (never its text), for the
``prior_lookup_failed`` log line (docs/monitoring.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from listener.model import Report
from listener.qa.engine import Prior
from listener.store.base import PriorStudy

__all__ = ["PRIOR_LIMIT", "PriorKey", "PriorLookup", "PriorSource", "prior_key"]

#: The most prior studies looked up for one report (the newest stored): the
#: comparison rules need the recent ones of the same body region, and the
#: bound keeps a patient with a long history from slowing every message.
PRIOR_LIMIT = 100


#: What a look-up reads of a report: patient id, assigning authority, receive
#: time, accession. A worker process sends this over its pipe, not the whole
#: Report (docs/hardening.md, "Worker processes").
PriorKey = tuple[str, str, "datetime | None", str]


def prior_key(report: Report) -> PriorKey:
    """The part of ``report`` its prior look-up depends on."""
    return (report.patient.id, report.patient.id_authority, report.times.received, report.accession)


class PriorSource(Protocol):
    """What a look-up reads from: the store (:meth:`listener.store.base.Store.prior_studies`), or a
    worker process's own reader (:class:`~listener.store.sqlite.PriorReader`,
    :class:`~listener.store.postgresql.PriorReader`)."""

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]: ...


class PriorLookup:
    """``priors_for`` for the pipeline: a report -> its patient's prior studies, or None.

    Args:
        store: the durable store (or a worker process's own reader, SQLite's or PostgreSQL's ``PriorReader``).
        failed: called (on the worker thread) with the exception's type name
            when a look-up fails; the daemon hands it to the reactor to log.
        limit: at most this many priors per report.
    """

    def __init__(
        self, store: PriorSource, *, failed: Callable[[str], object] = lambda _: None, limit: int = PRIOR_LIMIT
    ) -> None:
        self.store = store
        self.failed = failed
        self.limit = limit

    def __call__(self, report: Report) -> tuple[Prior, ...] | None:
        return self.lookup(prior_key(report))

    def lookup(self, key: PriorKey) -> tuple[Prior, ...] | None:
        """The look-up of :meth:`__call__`, from a report's :func:`prior_key`."""
        patient_id, authority, received, accession = key
        if not patient_id.strip():
            return None
        # Only what was received before this message.
        before = received or datetime.now(UTC)
        try:
            studies = self.store.prior_studies(
                patient_id, authority, before=before, exclude_accession=accession, limit=self.limit
            )
        except Exception as exc:  # noqa: BLE001 - priors are optional: unknown, never a refused message
            self.failed(type(exc).__name__)
            return None
        if not studies:
            return None  # nothing on record: unknown, not "none" (see the module docstring)
        return tuple(Prior(s.accession, s.study_date, s.modality, s.body_region, s.procedure_code) for s in studies)
