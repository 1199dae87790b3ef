"""The web console under ``/console/`` (docs/console.md).

Layer: reactor glue (:mod:`listener.console.web`) around pages that are plain functions of a
request context, run on a thread against the store. :func:`build_console` registers every page.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from listener.console.messages import MessageServices, action_result, actions_page, messages_page
from listener.console.overread import OverreadPage
from listener.console.overview import OverviewPage
from listener.console.policy import policy_page
from listener.console.web import Console, ConsoleDeps

__all__ = ["Console", "ConsoleDeps", "build_console"]


def build_console(deps: ConsoleDeps) -> Console:
    """The console with all its pages, on what ``deps`` gives."""
    console = Console(deps)
    services = deps.services
    console.page("policy", lambda ctx: policy_page(ctx, services), methods=("GET", "POST"))
    messages = MessageServices(
        store=services["store"],
        pipeline=services["pipeline"],
        destinations=services.get("destinations", tuple),
        live_figures=services.get("live_figures", lambda: None),
        clients=services.get("fhir_clients", dict),
        hash_key=services.get("hash_key", b""),
        secret=secrets.token_bytes(32),
    )
    overview = OverviewPage(
        services["store"],
        result_of=lambda ctx: action_result(ctx, messages.secret),
        destinations=messages.destinations,
    )
    console.page("", overview)
    overread = OverreadPage(services)
    console.page("overread", overread)
    if deps.clients():
        # Only a console someone can sign in to is worth the work (docs/console.md, "Overread").
        overread.warm(datetime.now(UTC))
    console.page("messages", lambda ctx: messages_page(ctx, messages))
    console.page("actions", lambda ctx: actions_page(ctx, messages), methods=("GET", "POST"), needs=("operator",))
    return console
