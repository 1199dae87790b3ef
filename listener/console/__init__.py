"""The web console under ``/console/`` (docs/console.md).

Layer: reactor glue (:mod:`listener.console.web`) around pages that are plain functions of a
request context, run on a thread against the store. :func:`build_console` registers every page.
"""

from __future__ import annotations

from listener.console.overview import overview_page
from listener.console.web import Console, ConsoleDeps

__all__ = ["Console", "ConsoleDeps", "build_console"]


def build_console(deps: ConsoleDeps) -> Console:
    """The console with all its pages, on what ``deps`` gives."""
    console = Console(deps)
    store = deps.services["store"]
    console.page("", lambda ctx: overview_page(ctx, store))
    return console
