"""``overread simulate``: what a candidate routing policy would have done with the stored reports.

Layer: CLI (I/O for users). The stored reports, their recorded QA findings
and the graded prelim/final pairs are read by :mod:`listener.simulate_data`
(shared with the console's policy page); the routing and the figures are the
pure :func:`listener.simulate.simulate`. See docs/simulate.md and docs/cli.md
("simulate").

Patient names and identifiers are never printed: accessions, control ids,
reader ids and keyed hashes only.

Exit status: 0 shown; 2 usage error, a policy file that does not validate
(the message names file and line) or no store.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from listener.cli_common import parse_window
from listener.config import Config
from listener.errors import ConfigError, StoreError
from listener.simulate import Workload, render_table
from listener.simulate_data import WORKLOAD_FILE, load_workload, run_simulation
from listener.store.base import Store

if TYPE_CHECKING:
    from listener.outcome_data import HistoryContext
    from listener.routing import RoutingPolicy
    from listener.sites import Directory

__all__ = ["DEFAULT_SINCE", "add_simulate_parser", "cmd_simulate"]

_EXIT_OK, _EXIT_ERROR = 0, 2
#: The window's start when ``--since`` is not given.
DEFAULT_SINCE = "90d"


def add_simulate_parser(sub: Any) -> None:
    """Add ``simulate`` to the top-level subparsers."""
    p = sub.add_parser(
        "simulate",
        help="replay stored reports through a candidate routing policy and compare it with the current one",
        description="Route every stored report of the window again under a baseline policy (default: the "
        "current policies/routing.yaml) and a candidate one, with the QA findings the daemon stored, and print "
        "side by side: buckets overall and per site, modality and reader group, overread workload in reads "
        "and radiologist minutes (policies/workload.yaml), second reads waiting for daytime reading hours, "
        "and the recorded discrepancies each policy sends to a second read or releases unseen, by case. "
        "Patient data is never printed. docs/simulate.md",
        epilog="exit status: 0 shown; 2 usage error, invalid policy file (file:line) or no store",
    )
    p.add_argument("--config", metavar="F", help="daemon config file (its state_dir and policies are used)")
    p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")
    p.add_argument("--mappings", metavar="DIR", help="mappings directory (overrides the config)")
    p.add_argument("--policy", metavar="FILE", required=True, help="the candidate routing policy (routing.yaml form)")
    p.add_argument(
        "--baseline",
        metavar="current|FILE",
        default="current",
        help="the policy to compare with (default current: the policies directory's routing.yaml)",
    )
    p.add_argument(
        "--workload",
        metavar="FILE",
        help=f"minutes per modality and reading hours (default the policies directory's {WORKLOAD_FILE})",
    )
    p.add_argument(
        "--since", metavar="TIME", default=DEFAULT_SINCE, help=f"window start, ISO 8601 or Nd (default {DEFAULT_SINCE})"
    )
    p.add_argument("--until", metavar="TIME", help="window end, excluded (default now)")
    p.add_argument(
        "--name", metavar="LABEL", default="candidate", help="the candidate's name in the figures (default candidate)"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--progress",
        action="store_true",
        help="write 'progress READ TOTAL' lines (accessions of the window read) to stderr as the replay goes",
    )


def cmd_simulate(args: argparse.Namespace, config: Config, out: TextIO, now: datetime | None = None) -> int:
    """Print the what-if of ``--policy`` against ``--baseline`` over the window."""
    from listener.assemble import load_routing_policy
    from listener.history_cli import history_context
    from listener.logs import HASH_KEY_FILE
    from listener.sites import EMPTY_DIRECTORY
    from listener.store import open_store

    def fail(text: str) -> int:
        sys.stderr.write(f"overread simulate: {text}\n")
        return _EXIT_ERROR

    now = now or datetime.now(UTC)
    window = parse_window(args, now)
    if isinstance(window, str):
        return fail(window)
    since, until = window["since"], window.get("until", now)
    if since >= until:
        return fail(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    candidate_path = Path(args.policy)
    if not candidate_path.is_file():
        return fail(f"--policy: no such file {args.policy}")
    baseline_path = config.policies_dir / "routing.yaml" if args.baseline == "current" else Path(args.baseline)
    if not baseline_path.is_file():
        return fail(f"--baseline: no such file {baseline_path}")
    workload_path = Path(args.workload) if args.workload else config.policies_dir / WORKLOAD_FILE
    if args.workload and not workload_path.is_file():
        return fail(f"--workload: no such file {args.workload}")
    try:
        ctx = history_context(config)
        qa = ctx.pipeline.qa
        directory = qa.directory if qa is not None else EMPTY_DIRECTORY
        terms = qa.terms if qa is not None else None
        candidate = load_routing_policy(candidate_path, directory=directory, terms=terms)
        baseline = load_routing_policy(baseline_path, directory=directory, terms=terms)
        workload = load_workload(workload_path if workload_path.is_file() else None)
    except ConfigError as exc:
        return fail(str(exc))
    hash_key: bytes | None = None
    try:
        hash_key = (Path(config.state_dir) / HASH_KEY_FILE).read_bytes() or None
    except OSError:
        hash_key = None
    try:
        store = open_store(config, create=False)
    except StoreError as exc:
        return fail(str(exc))
    # The cases of a long window are many small objects that all live to the end: the cyclic
    # garbage collector would walk them again and again as they pile up (it frees nothing
    # here), so it is paused while they are read and routed (docs/simulate.md, "Speed").
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(args, out, store, ctx, directory, baseline, candidate, workload, since, until, hash_key, fail)
    finally:
        if gc_was_enabled:
            gc.enable()


def _progress(done: int, total: int) -> None:
    """One ``--progress`` line (the console's what-if reads them: docs/console.md)."""
    sys.stderr.write(f"progress {done} {total}\n")
    sys.stderr.flush()


def _run(
    args: argparse.Namespace,
    out: TextIO,
    store: Store,
    ctx: HistoryContext,
    directory: Directory,
    baseline: RoutingPolicy,
    candidate: RoutingPolicy,
    workload: Workload,
    since: datetime,
    until: datetime,
    hash_key: bytes | None,
    fail: Callable[[str], int],
) -> int:
    """Read the cases, route them under both policies and print the result."""
    try:
        result = run_simulation(
            store,
            ctx,
            directory,
            baseline=("baseline" if args.baseline != "current" else "current", baseline),
            candidate=(args.name, candidate),
            workload=workload,
            since=since,
            until=until,
            hash_key=hash_key,
            progress=_progress if args.progress else None,
        )
    except StoreError as exc:
        return fail(str(exc))
    finally:
        store.close()
    doc = result.to_json()
    if args.format == "json":
        out.write(json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    else:
        out.write(render_table(doc))
    return _EXIT_OK
