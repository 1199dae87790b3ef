"""Where the default mappings/ and policies/ folders are, installed or in a checkout.

Layer: pure (no clock, no network); it only looks at which folder exists.

The top-level ``mappings/`` and ``policies/`` folders of the repository are the source
of truth. A wheel carries copies of them as package data in ``listener/defaults/``
(``setup.py`` copies them at build time), so an installed listener finds its defaults
without a checkout; a checkout (or an editable install) reads the top-level folders.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGED_DEFAULTS", "defaults_root"]

_PACKAGE = Path(__file__).resolve().parent
#: Where a built wheel keeps its copies of mappings/ and policies/.
PACKAGED_DEFAULTS = _PACKAGE / "defaults"


def defaults_root() -> Path:
    """The folder that holds the default ``mappings/`` and ``policies/``.

    Returns:
        ``listener/defaults`` inside an installed package when it is there, else the
        checkout's root (the parent of the ``listener`` package).
    """
    if (PACKAGED_DEFAULTS / "mappings" / "default.yaml").is_file():
        return PACKAGED_DEFAULTS
    return _PACKAGE.parent
