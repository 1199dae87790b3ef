"""The web console's pages over 100,000 stored messages: server time of each page, rendered.

Run by hand: ``.venv/bin/python bench/console_pages.py [--messages 100000] [--runs 10]
[--computed-runs 10] [--dir DIR] [--what-if-only] [--store postgresql://...]``.

The store is filled as bench/console_queries.py fills it (its :func:`filled_sqlite`: the
daemon's own records of four message files, each saved with a new control id and accession,
received evenly over the 7 days before now, from one of five senders). ``--store`` with a
PostgreSQL URL (``eval "$(bash .ci/postgres.sh start)"`` prints one as ``OVERREAD_TEST_PG_DSN``)
fills a new schema on that server instead (:func:`filled_postgresql`: VACUUM ANALYZEd after the
fill, as autovacuum would, and dropped afterwards; the CPU printed is then this process's only,
the server's work shows in the wall time). Then each page function
runs ``--runs`` times with a :class:`listener.console.web.Ctx`, as the console calls it on its
thread, and its template is rendered (:meth:`listener.console.web.Console.render`); the median
and the maximum wall time and the median CPU time (``time.process_time``: the machine is shared,
so CPU is the figure to compare) are printed, in ms. Each page is timed twice: with a new page object each
run (the overview counts every bin, the overread page computes its document, by reader for
each window and by group and site over 90 days; ``--computed-runs`` of those) and with the
console's own page object (the overview's closed bins and the overread document kept from the run
before). The policy page is timed showing the live rules. Then ``listener.outcome_data.collect``
alone over 90 days, as the overread page calls it.

Last (SQLite only), the what-if of samples/policies/stricter.yaml over 90 days, as the console runs it: a
background job (``overread simulate`` in a child process on the store's directory,
listener/console/whatif.py). Timed: the request that starts it (a 303 to the job's page), the job's
page and the other pages while the child runs (each ``--runs`` times, half a second apart), the
whole replay (wall time from the start to the end of the child), and the job's page (HTML and
``?format=json``) once done.
docs/benchmarks.md, "Console pages".
"""

from __future__ import annotations

import argparse
import os
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
from listener.console.whatif import WhatIfJobs  # noqa: E402
from listener.logs import configure_logging  # noqa: E402
from listener.outcome_data import HistoryContext, collect  # noqa: E402
from listener.outcomes import DEFAULT_OUTCOMES_FILE, load_outcome_rules  # noqa: E402

#: A caller with every permission but ``phi`` (the pages show no patient data either way).
CALLER = Caller("bench", frozenset({"console", "operator"}), "bearer")


def ctx(params: Mapping[str, str], rest: tuple[str, ...] = ()) -> Ctx:
    """A GET of a page (``rest``: the path below its name) with these query parameters, now."""
    return Ctx(CALLER, "GET", rest, dict(params), {}, datetime.now(UTC))


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


def measure(store: Any, runs: int, computed_runs: int, *, what_if_only: bool = False) -> None:
    """Time each page and print one line each (``what_if_only``: the what-if's lines only)."""
    found = services(store)
    # The what-if's child runs ``overread simulate`` on the store's directory, as the daemon's does
    # (a SQLite store's: the PostgreSQL run times the other pages only).
    path = getattr(store, "path", None)
    if path is not None:
        state = Path(path).parent
        found["whatif"] = WhatIfJobs(
            lambda: [sys.executable, "-m", "listener", "simulate", "--state-dir", str(state)], state
        )
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
    ninety = {"since": datetime.now(UTC) - timedelta(days=90), "until": datetime.now(UTC)}
    context = HistoryContext(found["pipeline"](), found["outcome_rules"](), {})
    cases.append(("collect() alone, 90 days", computed_runs, lambda: collect(store, context, **ninety)))
    for label, n, call in [] if what_if_only else cases:
        show(label, n, *timed(n, call))
    if path is not None:
        what_if(console, found, runs)


def show(label: str, n: int, median: float, most: float, cpu: float) -> None:
    """One line of figures."""
    print(
        f"{label:<44} {n:>2} runs  median {median:>9.1f} ms  max {most:>9.1f} ms  CPU median {cpu:>9.1f} ms",
        flush=True,
    )


def what_if(console: Console, found: dict[str, Any], runs: int) -> None:
    """The 90-day what-if as a background job: its start, pages while it runs, its length, its page done."""
    jobs: WhatIfJobs = found["whatif"]
    policy = console.pages["policy"]
    stricter = {"candidate": "samples/policies/stricter.yaml", "since": "90d"}
    replies = []
    started = time.perf_counter()
    wall, cpu = once(lambda: replies.append(policy.page(ctx(stricter))))
    assert replies[0].status == 303, replies[0]
    show("policy what-if 90d: start (303)", 1, wall, wall, cpu)
    job_id = replies[0].location.rsplit("/", 1)[1]
    run = {"page": lambda: console.render(policy.page(ctx({}, ("run", job_id))), CALLER, "policy")}
    while_running: dict[str, list[tuple[float, float]]] = {}
    others = {
        "run page, running": run["page"],
        "overview 24h, closed bins kept": lambda: console.render(console.pages[""].page(ctx({})), CALLER, ""),
        "messages, first page": lambda: console.render(console.pages["messages"].page(ctx({})), CALLER, "messages"),
        "policy, the live rules": lambda: console.render(policy.page(ctx({})), CALLER, "policy"),
    }
    for _ in range(runs):
        if jobs.running() is None:
            break
        for label, call in others.items():
            while_running.setdefault(label, []).append(once(call))
        time.sleep(0.5)
    for label, times in while_running.items():
        walls = [w for w, _ in times]
        show(
            f"while it runs: {label}",
            len(times),
            statistics.median(walls),
            max(walls),
            statistics.median(c for _, c in times),
        )
    while jobs.running() is not None:
        time.sleep(0.2)
    view = jobs.find(job_id, CALLER.name)
    assert view is not None and view.state == "done", view
    print(
        f"policy what-if 90d: the whole replay {view.seconds:.1f} s wall "
        f"({view.read:,} accessions, {view.result['doc']['baseline']['reports'] if view.result else 0:,} reports); "
        f"{time.perf_counter() - started:.1f} s from the start",
        flush=True,
    )
    show("policy what-if 90d: run page, done", runs, *timed(runs, run["page"]))
    as_json = lambda: policy.page(ctx({"format": "json"}, ("run", job_id)))  # noqa: E731
    show("policy what-if 90d: ?format=json, done", runs, *timed(runs, as_json))


def main() -> None:
    """Fill a new store (SQLite, or a schema on the ``--store`` PostgreSQL server), print the figures, remove it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--computed-runs", type=int, default=10, help="runs of the overread page computed afresh")
    parser.add_argument("--dir", default="var", help="where the SQLite store is made")
    parser.add_argument("--what-if-only", action="store_true", help="time only the what-if job and its pages")
    parser.add_argument(
        "--store", default="sqlite", metavar="sqlite|URL", help="sqlite (default), or a postgresql:// server to fill"
    )
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    records = templates()
    if args.store == "sqlite":
        filled = filled_sqlite(args.dir, records, args.messages, now)
    elif args.store.startswith(("postgresql://", "postgres://")):
        filled = filled_postgresql(args.store, records, args.messages, now)
    else:
        parser.error("--store: sqlite or a postgresql:// URL")
    with open(os.devnull, "w") as devnull, filled as store:
        # The pages' log lines (the what-if's start and end) go nowhere; templates() closed its own sink.
        configure_logging("json", stream=devnull)
        measure(store, args.runs, args.computed_runs, what_if_only=args.what_if_only)


if __name__ == "__main__":
    main()
