"""The message browser's order and paging on a real SQLite store (docs/console.md, "Message browser").

125 messages, one a minute, each with one report; every fifth one's report in the selective_overread bucket,
the others in release. Newest first is the default; "Older messages" and "Newer messages" walk
the store by message number; ``order=oldest`` is the former listing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.console.messages import PAGE_SIZE, MessageServices, messages_page
from listener.console.web import NAV, Caller, Ctx, Reply, environment
from listener.store import SQLiteStore
from tests.unit.store.records import record, report

COUNT = 125
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
ANALYST = Caller("analyst", frozenset({"console", "phi"}), "bearer")


@pytest.fixture(name="setup", scope="module")
def fixture_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MessageServices, list[int]]]:
    """The page's services over the filled store, and the message_pks oldest first."""
    store = SQLiteStore.in_state_dir(Path(tmp_path_factory.mktemp("browser")))
    pks = []
    for i in range(COUNT):
        bucket = "selective_overread" if i % 5 == 0 else "release"
        rec = record(
            f"C{i:03d}", received=NOW - timedelta(minutes=COUNT - i), reports=(replace(report(f"A{i}"), bucket=bucket),)
        )
        pks.append(store.save(rec).message_pk)
    yield browsing_services(store), pks
    store.close()


def browsing_services(store: SQLiteStore) -> MessageServices:
    """The services of the browsing pages (search and one message) over ``store``: no pipeline,
    destinations or clients (only the actions use them); fixed keys (also bench/console_messages.py)."""
    return MessageServices(
        store=store,
        pipeline=lambda: None,  # type: ignore[arg-type,return-value]
        destinations=tuple,
        live_figures=lambda: None,
        clients=dict,
        hash_key=b"k" * 32,
        secret=b"s" * 32,
    )


def _get(services: MessageServices, path: str) -> tuple[Reply, str]:
    """The page for ``path`` (``/console/messages?...``) and its rendered HTML."""
    _, _, query = path.partition("?")
    params = dict(pair.split("=", 1) for pair in html.unescape(query).split("&") if pair)
    params = {k: v.replace("+", " ").replace("%3A", ":") for k, v in params.items()}
    reply = messages_page(Ctx(ANALYST, "GET", (), params, {}, NOW), services)
    page = (
        environment()
        .get_template(reply.template)
        .render({"caller": ANALYST, "csrf": "", "nav": NAV, "page": "messages", **reply.context})
    )
    return reply, page


def _listed(page: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<a href="/console/messages/(\d+)">message \d+</a>', page)]


def _link(page: str, text: str) -> str:
    found = re.findall(rf'<a href="([^"]+)" rel="\w+">{text}</a>', page)
    return html.unescape(found[0]) if found else ""


def test_newest_first_by_default_and_older_pages_reach_every_message_once(
    setup: tuple[MessageServices, list[int]],
) -> None:
    services, pks = setup
    reply, page = _get(services, "/console/messages")
    assert reply.status == 200
    assert _listed(page)[:2] == [pks[-1], pks[-2]]
    assert "newest first" in page and _link(page, "Newer messages") == ""
    seen: list[int] = []
    pages = 0
    while True:
        listed = _listed(page)
        assert len(listed) <= PAGE_SIZE
        seen.extend(listed)
        pages += 1
        older = _link(page, "Older messages")
        if not older:
            assert "No older messages." in page
            break
        assert "before=" in older and "since=24h" in older
        _, page = _get(services, older)
    assert seen == pks[::-1]
    assert pages == 3


def test_newer_goes_back_up_to_the_newest_without_repeats_or_gaps(setup: tuple[MessageServices, list[int]]) -> None:
    services, pks = setup
    _, page = _get(services, f"/console/messages?before={pks[10]}")
    assert _listed(page) == pks[:10][::-1]
    seen = _listed(page)
    while newer := _link(page, "Newer messages"):
        assert "after=" in newer
        _, page = _get(services, newer)
        seen = _listed(page) + seen
    assert seen == pks[::-1]
    assert _listed(page)[0] == pks[-1]


def test_the_filters_and_buckets_follow_the_pages(setup: tuple[MessageServices, list[int]]) -> None:
    services, pks = setup
    reviewed = pks[::5]
    _, page = _get(services, "/console/messages?bucket=selective_overread")
    assert _listed(page) == reviewed[::-1]
    assert page.count('<span class="tag">selective_overread</span>') == len(reviewed)
    assert "release</span>" not in page
    _, page = _get(services, "/console/messages?since=24h")
    assert page.count('<span class="tag">release</span>') == PAGE_SIZE - PAGE_SIZE // 5


def test_oldest_first_keeps_the_former_listing(setup: tuple[MessageServices, list[int]]) -> None:
    services, pks = setup
    _, page = _get(services, "/console/messages?order=oldest")
    assert _listed(page) == pks[:PAGE_SIZE]
    newer = _link(page, "Newer messages")
    assert f"after={pks[PAGE_SIZE - 1]}" in newer and "order=oldest" in newer
    _, page = _get(services, newer)
    assert _listed(page) == pks[PAGE_SIZE : 2 * PAGE_SIZE]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("order=sideways", "Order must be one of newest, oldest."),
        ("before=x", "The page cursor (before) must be a message number."),
        ("after=1&before=5", "Give one page cursor (after or before), not both."),
        ("order=oldest&before=5", "Oldest first pages on with after= only."),
    ],
)
def test_bad_order_or_cursors_are_refused(setup: tuple[MessageServices, list[int]], query: str, error: str) -> None:
    services, _ = setup
    reply, page = _get(services, f"/console/messages?{query}")
    assert reply.status == 400
    context: dict[str, Any] = dict(reply.context)
    assert error in context["errors"]
    assert html.escape(error, quote=True) in page
