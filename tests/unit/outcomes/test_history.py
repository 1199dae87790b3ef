"""build_chain(): clinical order of an accession's versions and the pairs to compare (docs/outcomes.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from listener.outcomes.history import Pair, build_chain, stage_of
from tests.unit.outcomes.stored import Entry

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def entry(
    pk: int,
    status: str,
    *,
    received_min: int,
    report_min: int | None = None,
    reader: str = "R1",
    transport: str = "mllp",
) -> Entry:
    doc = {
        "accession": "A1",
        "status": status,
        "reader": {"id": reader, "name": "Dr Reader", "type": "external"},
        "procedure": {"code": "71250", "text": "CT chest"},
        "modality": "CT",
        "patient": {"id": "MRN-SECRET"},
        "times": {"report": (T0 + timedelta(minutes=report_min)).isoformat() if report_min is not None else None},
    }
    return Entry(
        pk,
        0,
        f"C{pk}",
        T0 + timedelta(minutes=received_min),
        transport,
        "default",
        json.dumps(doc),
        json.dumps([{"rule": "structure.no_impression"}]),
        "release",
        True,
    )


def test_in_order_prelim_final_correction() -> None:
    chain = build_chain(
        "A1",
        [
            entry(1, "preliminary", received_min=0, report_min=0),
            entry(2, "final", received_min=60, report_min=60),
            entry(3, "corrected", received_min=120, report_min=120),
        ],
    )
    assert [v.status for v in chain.versions] == ["preliminary", "final", "corrected"]
    assert chain.pairs == (Pair("prelim_to_final", 0, 1), Pair("correction", 1, 2))
    assert not any(v.out_of_order for v in chain.versions)
    first = chain.versions[0].to_json()
    assert first["reader"] == {"id": "R1", "name": "Dr Reader", "type": "external"}
    assert first["exam"] == {"code": "71250", "text": "CT chest", "modality": "CT"}
    assert first["findings"] == ["structure.no_impression"]
    assert "MRN-SECRET" not in json.dumps(first)


def test_final_received_before_its_prelim() -> None:
    """Arrival order does not decide: the prelim comes first and the late one is marked."""
    chain = build_chain(
        "A1",
        [entry(1, "final", received_min=10, report_min=60), entry(2, "preliminary", received_min=30, report_min=0)],
    )
    assert [(v.message_pk, v.status, v.out_of_order) for v in chain.versions] == [
        (2, "preliminary", False),
        (1, "final", True),
    ]
    assert chain.pairs == (Pair("prelim_to_final", 0, 1),)


def test_two_prelims_the_latest_is_compared() -> None:
    """Both prelims are listed; the later report time is the one compared, whatever their arrival."""
    chain = build_chain(
        "A1",
        [
            entry(1, "preliminary", received_min=20, report_min=20, reader="R2"),
            entry(2, "preliminary", received_min=5, report_min=0),
            entry(3, "final", received_min=90, report_min=90),
        ],
    )
    assert [v.message_pk for v in chain.versions] == [2, 1, 3]
    assert chain.pairs == (Pair("prelim_to_final", 1, 2),)


def test_correction_compares_against_the_final_it_replaces() -> None:
    chain = build_chain(
        "A1",
        [
            entry(3, "corrected", received_min=5, report_min=200),
            entry(1, "preliminary", received_min=0, report_min=0),
            entry(2, "final", received_min=100, report_min=100),
            entry(4, "amended", received_min=300, report_min=300),
        ],
    )
    assert [v.status for v in chain.versions] == ["preliminary", "final", "corrected", "amended"]
    assert chain.pairs == (Pair("prelim_to_final", 0, 1), Pair("correction", 1, 2), Pair("correction", 2, 3))
    assert chain.versions[1].out_of_order is False and chain.versions[2].out_of_order is True


def test_no_report_time_falls_back_to_receipt_and_lone_versions() -> None:
    chain = build_chain("A1", [entry(2, "final", received_min=60), entry(1, "final", received_min=30)])
    assert [v.message_pk for v in chain.versions] == [1, 2]
    assert chain.pairs == (Pair("final_again", 0, 1),)
    assert build_chain("A1", [entry(1, "preliminary", received_min=0)]).pairs == ()
    assert build_chain(
        "A1", [entry(1, "corrected", received_min=0), entry(2, "preliminary", received_min=9)]
    ).pairs == (Pair("correction", 0, 1),)
    assert build_chain("A1", []).versions == ()


def test_stages_and_cancelled_last() -> None:
    assert [stage_of(s) for s in ("partial", "preliminary", "final", "corrected", "amended", "x", "cancelled")] == [
        0,
        0,
        1,
        2,
        2,
        3,
        4,
    ]
    chain = build_chain("A1", [entry(1, "cancelled", received_min=0), entry(2, "preliminary", received_min=5)])
    assert [v.status for v in chain.versions] == ["preliminary", "cancelled"] and chain.pairs == ()
