"""The web console's pages over 100,000 stored messages: server time of each page, rendered.

Run by hand: ``.venv/bin/python bench/console_pages.py [--messages 100000] [--runs 10]
[--computed-runs 10] [--dir DIR] [--store postgresql://...]``.

The store is filled as bench/console_queries.py fills it (its :func:`filled_sqlite`: the
daemon's own records of four message files, each saved with a new control id and accession,
received evenly over the 7 days before now, from one of five senders). ``--store`` with a
PostgreSQL URL (``eval "$(bash .ci/postgres.sh start)"`` prints one as ``OVERREAD_TEST_PG_DSN``)
fills a new schema on that server instead (:func:`filled_postgresql`: VACUUM ANALYZEd after the
fill, as autovacuum would, and dropped afterwards). Then each page function
runs ``--runs`` times with a :class:`listener.console.web.Ctx`, as the console calls it on its
thread, and its template is rendered (:meth:`listener.console.web.Console.render`); the median
and the maximum wall time and the median CPU time (``time.process_time``: the machine is shared,
so CPU is the figure to compare) are printed, in ms. Each page is timed twice: with a new page object each
run (the overview counts every bin, the overread page computes its document, by reader for
each window and by group and site over 90 days; ``--computed-runs`` of those) and with the console's own page object (the overview's closed bins and the overread
document kept from the run before). The policy page is timed showing the live rules, and running
the what-if of samples/policies/stricter.yaml (at most 2,000 accessions of the window replayed).
Last, ``listener.outcome_data.collect`` alone over 90 days, as the overread page calls it.
docs/benchmarks.md, "Console pages".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.console_queries import filled_postgresql, filled_sqlite  # noqa: E402
from bench.store_size import templates  # noqa: E402
from listener.assemble import build_pipeline  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.console import ConsoleDeps, build_console  # noqa: E402
from listener.console.overread import OverreadPage  # noqa: E402
from listener.console.overview import OverviewPage  # noqa: E402
from listener.console.web import Caller, Console, Ctx, Page  # noqa: E402
from listener.outcome_data import HistoryContext, collect  # noqa: E402
from listener.outcomes import DEFAULT_OUTCOMES_FILE, load_outcome_rules  # noqa: E402

#: A caller with every permission but ``phi`` (the pages show no patient data either way).
CALLER = Caller("bench", frozenset({"console", "operator"}), "bearer")


def ctx(params: Mapping[str, str]) -> Ctx:
    """A GET of a page with these query parameters, now."""
    return Ctx(CALLER, "GET", (), dict(params), {}, datetime.now(UTC))


def once(call: Callable[[], object]) -> tuple[float, float]:
    """The ms one call of ``call`` takes: wall time, and this process's CPU time (both threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000


def timed(runs: int, call: Callable[[], object]) -> tuple[float, float, float]:
    """(median, max) wall ms and median CPU ms of ``runs`` calls of ``call``."""
    times = [once(call) for _ in range(runs)]
    walls = [wall for wall, _ in times]
    return statistics.median(walls), max(walls), statistics.median(cpu for _, cpu in times)


def services(store: Any) -> dict[str, Any]:
    """What listener/server/http.py ``_console()`` gives the pages, built the daemon's way."""
    pipeline = build_pipeline(load_config(None))
    rules = load_outcome_rules(DEFAULT_OUTCOMES_FILE)
    return {
        "store": store,
        "pipeline": lambda: pipeline,
        "queries": store.reports,
        "outcome_rules": lambda: rules,
        "fhir_clients": dict,
        "hash_key": b"\x00" * 32,
    }


def console_on(found: dict[str, Any]) -> Console:
    """The console with every page on ``found`` (the reactor-side parts are never called here)."""

    def unused(*_args: Any) -> Any:
        raise AssertionError("the bench calls pages directly")

    deps = ConsoleDeps(
        clients=dict, bearer=unused, send=unused, run_in_thread=unused, clock=time.monotonic, services=found
    )
    return build_console(deps)


def measure(store: Any, runs: int, computed_runs: int) -> None:
    """Time each page and print one line each."""
    found = services(store)
    console = console_on(found)

    def page(name: str, params: Mapping[str, str]) -> Callable[[], object]:
        registered = console.pages[name]
        return lambda: console.render(registered.page(ctx(params)), CALLER, name)

    def fresh(make: Callable[[], Page], name: str, params: Mapping[str, str]) -> Callable[[], object]:
        return lambda: console.render(make()(ctx(params)), CALLER, name)

    cases: list[tuple[str, int, Callable[[], object]]] = []
    for window in ("24h", "7d"):
        overview = fresh(lambda: OverviewPage(store), "", {"window": window})
        cases.append((f"overview {window}, all bins counted", runs, overview))
        cases.append((f"overview {window}, closed bins kept", runs, page("", {"window": window})))
    for window in ("7d", "30d", "90d"):
        cases.append(
            (
                f"overread {window} by reader, computed",
                computed_runs,
                fresh(lambda: OverreadPage(found), "overread", {"window": window}),
            )
        )
    for by in ("group", "site"):
        cases.append(
            (
                f"overread 90d by {by}, computed",
                computed_runs,
                fresh(lambda: OverreadPage(found), "overread", {"window": "90d", "by": by}),
            )
        )
    cases.append(("overread 90d by reader, kept", runs, page("overread", {"window": "90d"})))
    cases.append(("policy, the live rules", runs, page("policy", {})))
    for window in ("7d", "90d"):
        stricter = {"candidate": "samples/policies/stricter.yaml", "since": window}
        cases.append((f"policy what-if stricter {window}, capped", computed_runs, page("policy", stricter)))
    window = {"since": datetime.now(UTC) - timedelta(days=90), "until": datetime.now(UTC)}
    context = HistoryContext(found["pipeline"](), found["outcome_rules"](), {})
    cases.append(("collect() alone, 90 days", computed_runs, lambda: collect(store, context, **window)))
    for label, n, call in cases:
        median, most, cpu = timed(n, call)
        print(
            f"{label:<40} {n:>2} runs  median {median:>9.1f} ms  max {most:>9.1f} ms  CPU median {cpu:>9.1f} ms",
            flush=True,
        )


def main() -> None:
    """Fill a new store (SQLite, or a schema on the ``--store`` PostgreSQL server), print the figures, remove it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--computed-runs", type=int, default=10, help="runs of the overread page computed afresh")
    parser.add_argument("--dir", default="var", help="where the SQLite store is made")
    parser.add_argument(
        "--store", default="sqlite", metavar="sqlite|URL", help="sqlite (default), or a postgresql:// server to fill"
    )
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    if args.store == "sqlite":
        filled = filled_sqlite(args.dir, templates(), args.messages, now)
    elif args.store.startswith(("postgresql://", "postgres://")):
        filled = filled_postgresql(args.store, templates(), args.messages, now)
    else:
        parser.error("--store: sqlite or a postgresql:// URL")
    with filled as store:
        measure(store, args.runs, args.computed_runs)


if __name__ == "__main__":
    main()
