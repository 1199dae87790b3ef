"""A stand-in for a stored report row: the fields build_chain() reads (docs/outcomes.md), without a store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Entry:
    message_pk: int
    seq: int
    control_id: str
    received: datetime
    transport: str
    feed: str
    report_json: str
    findings_json: str
    bucket: str
    raw_kept: bool
