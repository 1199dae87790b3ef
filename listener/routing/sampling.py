"""Deterministic peer-review sampling.

Pure: no I/O, no clock, no random state. A report is drawn when
``draw(salt, reader, accession) < rate``. The draw is a hash, so:

- the same accession gets the same answer on every replay, on every instance
  of the daemon, and after a restart (no counter to persist or share);
- the draws of one reader's reports are spread evenly over [0, 1), so each
  reader is sampled at the configured rate, not only the group as a whole;
- changing the salt (e.g. each quarter) picks a fresh, independent sample.
"""

from __future__ import annotations

import hashlib

__all__ = ["draw"]

_SCALE = float(1 << 64)


def draw(salt: str, reader: str, accession: str) -> float:
    """A number in [0, 1) fixed by (salt, reader, accession).

    Args:
        salt: the policy's sampling salt.
        reader: the reader id (upper case; "" when unknown).
        accession: the study's accession number.

    Returns:
        The first 64 bits of SHA-256 over the three values, scaled to [0, 1).
    """
    # A unit separator between fields: ("AB", "C") and ("A", "BC") differ.
    key = "\x1f".join((salt, reader, accession)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / _SCALE
