"""The one WHERE clause of Store.messages() both SQL backends run (listener/store/rows.py,
MessageFilters): the same conditions in each placeholder style, the parameters in their order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from listener.store.rows import MessageFilters

SINCE = datetime(2026, 12, 1, tzinfo=UTC)
UNTIL = datetime(2026, 12, 2, tzinfo=UTC)


def test_every_filter_is_one_condition_with_its_parameters_in_order() -> None:
    filters = MessageFilters(
        since=SINCE,
        until=UNTIL,
        state="processed",
        ack_code="AA",
        sender_application="RIS",
        sender_facility="HOSP",
        control_id="C1",
        transport="mllp",
        accession="ACC1",
        patient_id="P1",
        patient_authority="AUTH",
        bucket="review",
    )
    where, params = filters.where("%s", lambda moment: moment.isoformat())
    conditions = where.split(" AND ")
    assert conditions[:2] == ["m.id > %s", "m.id < %s"]
    assert where.count("%s") == 2 + len(params)
    assert params == [
        SINCE.isoformat(),
        UNTIL.isoformat(),
        "processed",
        "AA",
        "RIS",
        "HOSP",
        "C1",
        "mllp",
        "ACC1",
        "P1",
        "AUTH",
        "review",
    ]
    question, same = filters.where("?", lambda moment: moment.isoformat())
    assert question == where.replace("%s", "?") and same == params


def test_no_filter_is_the_cursors_alone() -> None:
    assert MessageFilters().where("?", str) == ("m.id > ? AND m.id < ?", [])


def test_a_patient_without_authority_matches_any_authority() -> None:
    where, params = MessageFilters(patient_id="P1").where("?", str)
    assert "r.patient_id = ?" in where and "patient_authority" not in where and params == ["P1"]


@pytest.mark.parametrize(
    "kwargs",
    [{"since": datetime(2026, 12, 1)}, {"until": datetime(2026, 12, 1)}, {"patient_authority": "AUTH"}],
)
def test_a_naive_time_or_an_authority_alone_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MessageFilters(**kwargs)  # type: ignore[arg-type]
