"""The feedback document an overread group sends its teleradiology provider.

Layer: shell (it reads the store). :func:`feedback_document` gathers the
group's figures from the store (:func:`listener.outcome_data.collect`, the
pure :func:`listener.outcomes.scorecard.scorecard`) and each discrepancy
case's excerpts (:func:`listener.history.history_document`), then hands them
to the pure :func:`build_feedback`, which returns a JSON-ready dict in a
fixed order: the same store and window always give the same document.
``listener.feedback_render`` turns it into HTML or PDF. docs/outcomes.md,
"Feedback to the provider"; docs/cli.md, "feedback".

Patient data: the document names accessions, exams and reader ids only.
Patient names, identifiers and birth dates never enter it; the excerpts are
the comparison's evidence spans and the QA findings' evidence spans, and any
patient identifier the store keeps for that accession is masked in them.
Runs in a CLI or a thread, never on the reactor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from listener.history import HistoryContext, history_document
from listener.outcome_data import Collected, collect
from listener.outcomes.contracts import ContractTargets
from listener.sites import Directory
from listener.store.base import Store

__all__ = [
    "DOCUMENT_VERSION",
    "PRIVACY_NOTE",
    "PROVIDER_DEFECTS",
    "build_feedback",
    "feedback_document",
    "group_of",
    "weeks_of",
]

#: The version of the feedback document's layout (docs/cli.md, "feedback").
DOCUMENT_VERSION = 1
#: The sentence every rendering of the document carries.
PRIVACY_NOTE = (
    "Patient names and medical record numbers never appear in this document: "
    "cases are identified by accession number and exam only."
)
#: Why the operational defects are listed.
OPERATIONAL_NOTE = (
    "These are operational defects, not differences of medical judgment: a check run when the "
    "preliminary report is submitted could remove them before the final read."
)
#: The operational difference kinds that show a defect of the preliminary itself, in words
#: (docs/outcomes.md, "Differences"): what the final had to add or fix. The other operational
#: kinds (a reworded impression, a statement or QA finding of the final only) are the final
#: reader's doing, not the provider's.
PROVIDER_DEFECTS: Mapping[str, str] = {
    "communication_added": "communication of a finding missing from the preliminary",
    "laterality_corrected": "laterality error in the preliminary",
    "qa_fixed": "QA defect of the preliminary fixed in the final",
    "sections_changed": "report sections missing or extra",
    "statement_added": "pertinent negative statement missing from the preliminary",
    "wording_changed": "wording corrected (typos)",
}
_MASK = "[patient identifier removed]"
_MAX_DIFFERENCES = 12
_TOP_OPERATIONAL = 5


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def weeks_of(since: datetime, until: datetime) -> tuple[tuple[datetime, datetime], ...]:
    """The window cut into 7-day spans from ``since``; the last one ends at ``until`` (it may be shorter)."""
    out = []
    start = since
    while start < until:
        end = min(start + timedelta(days=7), until)
        out.append((start, end))
        start = end
    return tuple(out)


def group_of(directory: Directory, reader_id: str) -> str:
    """The readers.yaml group of a reader id ("" when the directory does not know it)."""
    info = directory.readers.get(reader_id.upper())
    return info.group if info is not None else ""


def _rate_target(name: str, label: str, figure: Mapping[str, Any] | None, target: float | None) -> dict[str, Any]:
    figure = figure or {}
    rate = figure.get("rate")
    status = "no target" if target is None else "too few" if rate is None else "met" if rate <= target else "missed"
    low, high = figure.get("low"), figure.get("high")
    certain = None
    if target is not None and rate is not None and low is not None and high is not None:
        # The Wilson interval lies wholly on one side of the target: the verdict holds at 95%.
        certain = bool(high <= target or low > target)
    return {
        "measure": name,
        "label": label,
        "unit": "rate",
        "value": rate,
        "low": low,
        "high": high,
        "count": figure.get("count", 0),
        "target": target,
        "status": status,
        "certain": certain,
    }


def _time_target(name: str, label: str, value: float | None, target: float | None) -> dict[str, Any]:
    status = "no target" if target is None else "no data" if value is None else "met" if value <= target else "missed"
    return {
        "measure": name,
        "label": label,
        "unit": "minutes",
        "value": value,
        "low": None,
        "high": None,
        "count": None,
        "target": target,
        "status": status,
        "certain": None,
    }


def _targets(row: Mapping[str, Any], contract: ContractTargets | None) -> list[dict[str, Any]]:
    c = contract or ContractTargets(group="")
    turnaround = row.get("turnaround") or {}
    prelim = turnaround.get("prelim_minutes") or {}
    final = turnaround.get("prelim_to_final_minutes") or {}
    discrepancies = row.get("discrepancies") or {}
    return [
        _time_target("prelim_median", "Exam to preliminary, median (minutes)", prelim.get("median"), c.prelim_median),
        _time_target("prelim_p90", "Exam to preliminary, 90th percentile (minutes)", prelim.get("p90"), c.prelim_p90),
        _time_target("final_median", "Preliminary to final, median (minutes)", final.get("median"), c.final_median),
        _time_target("final_p90", "Preliminary to final, 90th percentile (minutes)", final.get("p90"), c.final_p90),
        _rate_target(
            "discrepancy_rate",
            "Discrepancy rate (RADPEER 2 or 3)",
            discrepancies.get("any"),
            c.max_discrepancy_rate,
        ),
        _rate_target(
            "significant_rate",
            "Significant discrepancy rate (2b, 3b)",
            discrepancies.get("significant"),
            c.max_significant_rate,
        ),
    ]


def _empty_row() -> dict[str, Any]:
    return {
        "reads": 0,
        "overread": 0,
        "graded": 0,
        "discrepancies": {},
        "too_few": True,
        "note": "no reads",
        "qa_defects": {},
        "turnaround": {},
    }


def _week(since: datetime, until: datetime, row: Mapping[str, Any] | None) -> dict[str, Any]:
    row = row or _empty_row()
    discrepancies = row.get("discrepancies") or {}
    blank = {"count": 0, "rate": None, "low": None, "high": None}
    return {
        "since": _iso(since),
        "until": _iso(until),
        "reads": row.get("reads", 0),
        "graded": row.get("graded", 0),
        "any": dict(discrepancies.get("any") or blank),
        "significant": dict(discrepancies.get("significant") or blank),
        "too_few": bool(row.get("too_few", True)),
        "note": row.get("note", ""),
    }


def _operational(row: Mapping[str, Any], kinds: Mapping[str, int]) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"source": "comparison", "name": kind, "label": PROVIDER_DEFECTS[kind], "count": n}
        for kind, n in kinds.items()
        if n > 0 and kind in PROVIDER_DEFECTS
    ]
    for category, figure in (row.get("qa_defects") or {}).items():
        count = int((figure or {}).get("count") or 0)
        if count > 0:
            items.append({"source": "qa", "name": category, "label": f"QA: {category}", "count": count})
    items.sort(key=lambda i: (-i["count"], i["source"], i["name"]))
    return {"top": items[:_TOP_OPERATIONAL], "note": OPERATIONAL_NOTE if items else ""}


def build_feedback(
    group: str,
    *,
    since: datetime,
    until: datetime,
    row: Mapping[str, Any] | None,
    weeks: Sequence[tuple[datetime, datetime, Mapping[str, Any] | None]],
    cases: Sequence[Mapping[str, Any]],
    qa_examples: Mapping[str, Mapping[str, Any]],
    contract: ContractTargets | None,
    readers: Sequence[str],
    min_reads: int,
) -> dict[str, Any]:
    """The feedback document from figures already gathered (pure, deterministic).

    Args:
        row: the group's scorecard row (``Scorecard.to_json()["rows"][0]``), None when it read nothing.
        weeks: each 7-day span of the window with the group's row over it (None: nothing read).
        cases: one dict per discrepancy case (see :func:`feedback_document`), any order.
        qa_examples: QA category -> one finding of that category (rule, message, evidence).
        readers: the group's reader ids in readers.yaml.
    """
    figures = dict(row) if row is not None else _empty_row()
    discrepancies = figures.get("discrepancies") or {}
    qa = []
    for category, figure in sorted((figures.get("qa_defects") or {}).items()):
        count = int((figure or {}).get("count") or 0)
        if count:
            qa.append(
                {
                    "category": category,
                    "count": count,
                    "rate": (figure or {}).get("rate"),
                    "example": dict(qa_examples[category]) if category in qa_examples else None,
                }
            )
    qa.sort(key=lambda q: (-q["count"], q["category"]))
    turnaround = figures.get("turnaround") or {}
    empty_time = {"count": 0, "median": None, "p90": None}
    return {
        "document_version": DOCUMENT_VERSION,
        "document": "overread_feedback",
        "group": group,
        "readers": sorted(readers),
        "window": {
            "since": _iso(since),
            "until": _iso(until),
            "days": round((until - since).total_seconds() / 86400, 2),
        },
        "min_reads": min_reads,
        "privacy": PRIVACY_NOTE,
        "contract": None
        if contract is None
        else {"group": contract.group, "description": contract.description, "source": contract.source},
        "volume": {
            "reads": figures.get("reads", 0),
            "prelims": figures.get("prelims", 0),
            "overread": figures.get("overread", 0),
            "graded": figures.get("graded", 0),
            "corrected": figures.get("corrected"),
            "addendum": figures.get("addendum"),
        },
        "turnaround": {
            "prelim_minutes": dict(turnaround.get("prelim_minutes") or empty_time),
            "prelim_to_final_minutes": dict(turnaround.get("prelim_to_final_minutes") or empty_time),
        },
        "targets": _targets(figures, contract),
        "discrepancies": {grade: dict(discrepancies[grade]) for grade in sorted(discrepancies)},
        "too_few": bool(figures.get("too_few", True)),
        "note": figures.get("note", ""),
        "interpretive_share": figures.get("interpretive_share"),
        "operational_share": figures.get("operational_share"),
        "disagreements": figures.get("disagreements", 0),
        "trend": {
            "method": "weekly",
            "description": "the same figures over each 7-day span of the window (the last span may be shorter)",
            "weeks": [_week(s, u, r) for s, u, r in weeks],
        },
        "cases": sorted(
            (dict(c) for c in cases), key=lambda c: (c["accession"], c["prelim"]["position"], c["final"]["position"])
        ),
        "qa_defects": qa,
        "operational": _operational(figures, figures.get("operational_kinds") or {}),
    }


# -- the shell: what the builder reads, gathered from the store ------------------------------------


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return text


def _patient_ids(store: Store, accession: str) -> tuple[str, ...]:
    """The patient identifiers the store keeps with this accession's reports (to mask in excerpts)."""
    ids = set()
    for entry in store.report_history(accession):
        try:
            patient = json.loads(entry.report_json).get("patient") or {}
        except (ValueError, AttributeError):
            continue
        value = str(patient.get("id") or "") if isinstance(patient, dict) else ""
        if len(value) >= 3:
            ids.add(value)
    return tuple(sorted(ids, key=lambda s: (-len(s), s)))


def _evidence(spans: Sequence[Mapping[str, Any]], secrets: Sequence[str]) -> list[dict[str, Any]]:
    return [{"section": s.get("section") or "", "text": _mask(str(s.get("text") or ""), secrets)} for s in spans]


def _version_json(v: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "position": v["position"],
        "status": v["status"],
        "reader": v["reader"]["id"],
        "report_time": v["report_time"],
        "received": v["received"],
        "transport": v["transport"],
    }


def _case(doc: Mapping[str, Any], item: Mapping[str, Any], secrets: Sequence[str]) -> dict[str, Any]:
    """One discrepancy case of the document from its accession's history document and compared pair."""
    before = doc["versions"][item["before"]]
    after = doc["versions"][item["after"]]
    differences = []
    comparison = item.get("comparison") or {}
    every = comparison.get("differences") or []
    # The differences that made the grade; when none did (an explicit score on a concordant
    # proposal), all of them, so the reader sees what changed.
    listed = [d for d in every if d.get("grade") not in (None, "1")] or list(every)
    others = sorted({str(d["kind"]) for d in every if d not in listed})
    for d in listed[:_MAX_DIFFERENCES]:
        differences.append(
            {
                "kind": d["kind"],
                "category": d["category"],
                "concept": d.get("concept") or "",
                "grade": d.get("grade"),
                "detail": _mask(str(d.get("detail") or ""), secrets),
                "prelim": _evidence(d.get("prelim") or [], secrets),
                "final": _evidence(d.get("final") or [], secrets),
            }
        )
    return {
        "accession": doc["accession"],
        "exam": dict(before["exam"]),
        "kind": item["kind"],
        "grade": item["grade"],
        "proposed_grade": item["proposed_grade"],
        "explicit_grade": item["explicit_grade"],
        "disagreement": item["disagreement"],
        "comparable": item["comparable"],
        "reason": item["reason"],
        "prelim": _version_json(before),
        "final": _version_json(after),
        "interpretive": comparison.get("interpretive", 0),
        "operational": comparison.get("operational", 0),
        "differences": differences,
        "more_differences": max(0, len(listed) - _MAX_DIFFERENCES),
        "other_kinds": others,
        "notes": [
            {"grade": s["grade"], "source": s["source"], "scorer": s["scorer"], "note": _mask(s["note"], secrets)}
            for s in item["scores"]
        ],
    }


def _qa_example(store: Store, accession: str, message_pk: int, seq: int, category: str) -> dict[str, Any] | None:
    """The first finding of ``category`` the store kept for that report: rule, message, evidence spans."""
    secrets = _patient_ids(store, accession)
    for entry in store.report_history(accession):
        if (entry.message_pk, entry.seq) != (message_pk, seq):
            continue
        try:
            found = json.loads(entry.findings_json)
        except ValueError:
            return None
        for f in found if isinstance(found, list) else ():
            if isinstance(f, dict) and f.get("category") == category:
                return {
                    "accession": accession,
                    "rule": str(f.get("rule") or ""),
                    "severity": str(f.get("severity") or ""),
                    "message": _mask(str(f.get("message") or ""), secrets),
                    "evidence": [
                        _mask(str(e.get("text") or ""), secrets)
                        for e in f.get("evidence") or ()
                        if isinstance(e, dict) and e.get("text")
                    ],
                }
    return None


def _row(
    found: Collected, directory: Directory, since: datetime, until: datetime, **kwargs: Any
) -> dict[str, Any] | None:
    rows = found.scorecard(by="group", directory=directory, since=since, until=until, **kwargs).to_json()["rows"]
    return dict(rows[0]) if rows else None


def feedback_document(
    store: Store,
    ctx: HistoryContext,
    directory: Directory,
    group: str,
    *,
    since: datetime,
    until: datetime,
    contract: ContractTargets | None,
    min_reads: int = 30,
) -> dict[str, Any]:
    """The feedback document of ``group`` over [since, until) from the store (docs/outcomes.md).

    A discrepancy case is a compared pair graded other than 1 whose replaced
    version (the preliminary) was read by one of the group's readers and
    written in the window.

    Raises:
        StoreError: the store cannot be read.
    """
    folded = group.strip().casefold()
    week_windows = weeks_of(since, until)
    found = collect(store, ctx, since=since, until=until, windows=week_windows)
    outcomes = found.outcomes
    row = _row(found, directory, since, until, min_reads=min_reads, only=group)
    weeks = [(s, u, _row(found, directory, s, u, min_reads=min_reads, only=group)) for s, u in week_windows]
    wanted: dict[str, list[tuple[int, int]]] = {}
    examples: dict[str, tuple[str, int, int]] = {}
    # The first accession (in order) with a read of the category: a lone version's
    # accession competes with the chains' (its one row is read below when it wins).
    lone_first: dict[str, str] = {}
    for reads in found.lone_in(since, until):
        if group_of(directory, reads.reader_id).casefold() != folded:
            continue
        for category in reads.summary.categories:
            if category not in lone_first or reads.first_accession < lone_first[category]:
                lone_first[category] = reads.first_accession
    for outcome in outcomes:
        for version in outcome.chain.versions:
            if group_of(directory, version.reader_id).casefold() != folded:
                continue
            if not since <= version.clinical_time < until:
                continue
            for category in version.categories:
                examples.setdefault(category, (outcome.chain.accession, version.message_pk, version.seq))
        for graded in outcome.graded:
            before = outcome.before(graded)
            if group_of(directory, before.reader_id).casefold() != folded:
                continue
            if not since <= before.clinical_time < until:
                continue
            if graded.grade not in (None, "1"):
                pk = (before.message_pk, outcome.after(graded).message_pk)
                wanted.setdefault(outcome.chain.accession, []).append(pk)
    cases = []
    for accession in sorted(wanted):
        doc = history_document(store, accession, ctx)
        secrets = _patient_ids(store, accession)
        for item in doc["comparisons"]:
            if (item["before_message_pk"], item["after_message_pk"]) in wanted[accession] and item["grade"] not in (
                None,
                "1",
            ):
                cases.append(_case(doc, item, secrets))
    for category, accession in lone_first.items():
        if category not in examples or accession < examples[category][0]:
            (entry,) = store.report_history(accession, limit=1) or (None,)
            if entry is not None:
                examples[category] = (accession, entry.message_pk, entry.seq)
    qa_examples = {}
    for category, (accession, message_pk, seq) in sorted(examples.items()):
        example = _qa_example(store, accession, message_pk, seq, category)
        if example is not None:
            qa_examples[category] = example
    readers = [r.id for r in directory.readers.values() if r.group.casefold() == folded]
    return build_feedback(
        group,
        since=since,
        until=until,
        row=row,
        weeks=weeks,
        cases=cases,
        qa_examples=qa_examples,
        contract=contract,
        readers=readers,
        min_reads=min_reads,
    )
