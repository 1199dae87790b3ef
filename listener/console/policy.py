"""The policy page: the live routing policy in words, and the what-if of a candidate policy
(docs/console.md, "Policy and what-if").

Layer: a page function (runs on a thread) over pure rendering helpers. The what-if is
``overread simulate`` itself, run as a background job in a child process over the whole window
(:mod:`listener.console.whatif`); the page checks the candidate first (a broken one is answered
at once, no job), sends the caller to the job's page, and lays the command's JSON document out
when it is done. Nothing is stored or changed.

A pasted candidate is parsed with :func:`listener.yamlconf.parse_untrusted_yaml` (size, anchors
and aliases, nesting refused first) and validated by the routing loader's own
:func:`listener.routing.build_policy`, so its errors name line (and column) as for the file.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from listener.console.charts import Chart, bars
from listener.console.web import Ctx, Reply
from listener.console.whatif import WhatIfJobs
from listener.errors import ConfigError
from listener.model import BUCKETS
from listener.routing.conditions import (
    Condition,
    CoverageWindow,
    CriticalFinding,
    GroupDiscrepancyRate,
    HedgeDensity,
    OneOf,
    PatientAge,
    QaFinding,
    ReaderDiscrepancyRate,
    ReaderLacksSubspecialty,
    Sample,
)
from listener.routing.policy import RoutingPolicy, Rule

__all__ = [
    "MAX_PASTE_BYTES",
    "PASTED",
    "RETRY_SECONDS",
    "WINDOWS",
    "candidate_files",
    "compare_rows",
    "condition_text",
    "describe_policy",
    "lay_out",
    "policy_page",
    "rule_sentence",
]

#: A pasted policy larger than this is refused before it is parsed (the shipped one is 12 KiB).
MAX_PASTE_BYTES = 256 * 1024
#: The windows a what-if may cover, by form value.
WINDOWS: Mapping[str, int] = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_WINDOW = "30d"
#: The name a pasted policy's errors and figures carry.
PASTED = "(pasted policy)"
#: Where the sample candidates live in a checkout (beside policies/).
SAMPLES = Path("samples") / "policies"

_BUCKET_WORDS = {
    "always_final": "a full internal final read (always_final)",
    "selective_overread": "a selective overread (selective_overread)",
    "process_check": "a return to the author (process_check)",
    "release": "release (release)",
}
_FIELD_WORDS = {
    "site": "the site is",
    "client": "the contract holder is",
    "modality": "the modality is",
    "body_region": "the body region is",
    "procedure_code": "the procedure code is",
    "priority": "the priority is",
    "status": "the result status is",
    "reader_type": "the reader type is",
    "reader": "the reader is",
}
#: Conditions whose lists name readers or contracts (shown together on the page).
_LIST_KEYS = ("reader", "client", "site")
_ROUTING_MARKS = (re.compile(r"^pools:", re.MULTILINE), re.compile(r"^rules:", re.MULTILINE))


# --------------------------------------------------------------------------
# the policy in words (pure)


def _either(values: Sequence[str]) -> str:
    if len(values) == 1:
        return values[0]
    if len(values) <= 3:
        return ", ".join(values[:-1]) + " or " + values[-1]
    return "one of " + ", ".join(values)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def condition_text(condition: Condition) -> str:
    """One condition of a rule's ``when:`` as a phrase ("the modality is CT or MR")."""
    c: Any = condition
    if isinstance(c, OneOf):
        return f"{_FIELD_WORDS.get(c.key, c.key)} {_either(c.values)}"
    if isinstance(c, PatientAge):
        if c.minimum is not None and c.maximum is not None:
            return f"the patient is {c.minimum} to {c.maximum} years old"
        if c.maximum is not None:
            return f"the patient is at most {c.maximum} years old"
        return f"the patient is at least {c.minimum} years old"
    if isinstance(c, CoverageWindow):
        days = f" on {', '.join(c.days)}" if c.days else ""
        return f"the {c.time} time is between {_hhmm(c.start)} and {_hhmm(c.end)} site time{days}"
    if isinstance(c, CriticalFinding):
        what = f"a critical finding ({', '.join(c.concepts)})" if c.concepts else "a critical finding"
        return f"{what} is stated as present"
    if isinstance(c, HedgeDensity):
        return f"the {c.section.value} has more than {c.above:g} hedging phrases per sentence"
    if isinstance(c, QaFinding):
        extra = "".join(
            f"; {label}: {', '.join(items)}"
            for label, items in (("rules", c.rules), ("categories", c.categories))
            if items
        )
        return f"QA found a problem of severity {c.min_severity.value} or worse{extra}"
    if isinstance(c, ReaderLacksSubspecialty):
        return f"the reader has none of the subspecialties {', '.join(c.subspecialties)}"
    if isinstance(c, ReaderDiscrepancyRate):
        return (
            f"the reader's significant-discrepancy rate is above {c.above:.1%} on at least {c.min_reads} graded reads"
        )
    if isinstance(c, GroupDiscrepancyRate):
        return (
            f"the reader's group's significant-discrepancy rate is above {c.above:.1%} "
            f"on at least {c.min_reads} graded reads"
        )
    if isinstance(c, Sample):
        return f"the report is drawn in a stable {c.rate:.1%} sample per reader (salt {c.salt!r})"
    return str(getattr(c, "key", type(c).__name__))


def _turnaround(rule: Rule) -> str:
    if rule.turnaround_minutes is None:
        return ""
    if rule.turnaround_minutes == -1:
        return "the site's contract turnaround"
    return f"{rule.turnaround_minutes} min"


def rule_sentence(rule: Rule) -> str:
    """A rule as one sentence: "When A and B: a selective overread in pool P, priority stat, within 60 min." """
    when = " and ".join(condition_text(c) for c in rule.conditions) or "always"
    parts = [f"{_BUCKET_WORDS.get(rule.bucket, rule.bucket)} in pool {rule.pool}"]
    if rule.priority:
        parts.append(f"priority {rule.priority}")
    if rule.turnaround_minutes is not None:
        parts.append(f"due within {_turnaround(rule)}")
    return f"When {when}: {', '.join(parts)}."


def describe_policy(policy: RoutingPolicy) -> dict[str, Any]:
    """The template values of a loaded policy: its rules in words, sampling rates and named lists."""
    rules = []
    samples = []
    lists = []
    for rule in policy.rules:
        rules.append(
            {
                "name": rule.name,
                "bucket": rule.bucket,
                "pool": rule.pool,
                "priority": rule.priority or "the report's own",
                "turnaround": _turnaround(rule) or "-",
                "enabled": rule.enabled,
                "line": rule.line,
                "sentence": rule_sentence(rule),
                "why": rule.description,
            }
        )
        for c in rule.conditions:
            if isinstance(c, Sample):
                samples.append({"rule": rule.name, "rate": f"{c.rate:.1%}", "salt": c.salt, "pool": rule.pool})
            elif isinstance(c, OneOf) and c.key in _LIST_KEYS:
                lists.append({"rule": rule.name, "key": c.key, "listed": ", ".join(c.values)})
    precedence = {b: i for i, b in enumerate(BUCKETS)}
    rules.sort(key=lambda r: precedence.get(str(r["bucket"]), len(BUCKETS)))
    return {
        "label": policy.label,
        "version": policy.version,
        "source": policy.source,
        "timezone": str(policy.default_timezone),
        "pools": policy.pools,
        "release_pool": policy.release_pool or "-",
        "corrections": policy.corrections_min_severity.value,
        "unchecked": f"{policy.unchecked_bucket} in pool {policy.unchecked_pool or '-'}",
        "rules": rules,
        "samples": samples,
        "lists": lists,
    }


# --------------------------------------------------------------------------
# the what-if laid out (pure)


def _signed(value: float, digits: int = 0) -> str:
    text = f"{value:+.{digits}f}" if digits else f"{int(value):+d}"
    return "0" if float(text) == 0 else text


def _shown(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if digits else f"{int(value)}"


def compare_rows(doc: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The tables of a ``Simulation.to_json`` document: buckets, workload, turnaround,
    discrepancies and second reads per site/modality/group, each row baseline, candidate, delta."""
    base, cand = doc["baseline"], doc["candidate"]
    buckets = [
        {
            "label": b,
            "base": base["buckets"][b]["count"],
            "base_share": f"{base['buckets'][b]['share'] * 100:.1f}%",
            "cand": cand["buckets"][b]["count"],
            "cand_share": f"{cand['buckets'][b]['share'] * 100:.1f}%",
            "delta": _signed(cand["buckets"][b]["count"] - base["buckets"][b]["count"]),
        }
        for b in BUCKETS
    ]

    def row(label: str, b: float, c: float, digits: int = 0) -> dict[str, Any]:
        return {"label": label, "base": _shown(b, digits), "cand": _shown(c, digits), "delta": _signed(c - b, digits)}

    workload = [
        row("second reads", base["workload"]["reads"], cand["workload"]["reads"]),
        row("radiologist minutes", base["workload"]["minutes"], cand["workload"]["minutes"], 1),
    ]
    bt, ct = base["turnaround"], cand["turnaround"]
    turnaround = [
        row("second reads waiting for reading hours", bt["queued"], ct["queued"]),
        row("total wait, minutes", bt["wait_minutes"], ct["wait_minutes"], 1),
        row("mean wait, minutes", bt["mean_wait_minutes"], ct["mean_wait_minutes"], 1),
        row("largest queue at one start of the hours", bt["peak_queue"], ct["peak_queue"]),
    ]
    discrepancies = []
    for grade in base["discrepancies"]:
        bd, cd = base["discrepancies"][grade], cand["discrepancies"][grade]
        discrepancies.append(row(f"grade {grade}: sent to a second read", bd["sent"], cd["sent"]))
        discrepancies.append(row(f"grade {grade}: released unseen", bd["unseen"], cd["unseen"]))
    out: dict[str, list[dict[str, Any]]] = {
        "buckets": buckets,
        "workload": workload,
        "turnaround": turnaround,
        "discrepancies": discrepancies,
    }
    second = ("always_final", "selective_overread")
    for dim in ("site", "modality", "group"):
        rows = []
        for key in sorted(set(base["by"][dim]) | set(cand["by"][dim])):
            b_side, c_side = base["by"][dim].get(key, {}), cand["by"][dim].get(key, {})
            reports = sum(x.get("count", 0) for x in b_side.values())
            r = row(key, *(sum(side.get(k, {}).get("count", 0) for k in second) for side in (b_side, c_side)))
            r["reports"] = reports
            rows.append(r)
        out[f"by_{dim}"] = rows
    return out


def bucket_chart(doc: Mapping[str, Any]) -> Chart:
    """Bars per bucket, the current policy beside the candidate."""
    base, cand = doc["baseline"], doc["candidate"]
    return bars(
        "Reports per bucket",
        list(BUCKETS),
        {
            "current": [base["buckets"][b]["count"] for b in BUCKETS],
            "candidate": [cand["buckets"][b]["count"] for b in BUCKETS],
        },
        stacked=False,
        height=340,
    )


def candidate_files(folders: Sequence[tuple[str, Path]]) -> dict[str, Path]:
    """The routing policies among the ``*.yaml`` files of the folders, by label ("samples/policies/x.yaml").

    A file counts when it has top-level ``pools:`` and ``rules:`` keys (a routing policy; the
    other policy files have neither); it is validated only when picked.
    """
    found: dict[str, Path] = {}
    for label, folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if all(mark.search(text) for mark in _ROUTING_MARKS):
                found[f"{label}/{path.name}"] = path
    return found


# --------------------------------------------------------------------------
# the page


@dataclass(frozen=True, slots=True)
class _Problem:
    """A candidate that does not load: where and what, never the pasted text."""

    source: str
    line: int | None
    column: int | None
    message: str


def _folders(policy: RoutingPolicy) -> list[tuple[str, Path]]:
    from listener.resources import defaults_root

    policies = Path(policy.source).resolve().parent
    return [("policies", policies), (str(SAMPLES), defaults_root() / SAMPLES)]


def _load_candidate(
    ctx: Ctx, policy: RoutingPolicy, files: Mapping[str, Path]
) -> tuple[str, RoutingPolicy | None, _Problem | None, str]:
    """(the candidate's name, the policy or None, the problem or None, the pasted text to show again)."""
    from listener.assemble import load_routing_policy
    from listener.routing import build_policy
    from listener.yamlconf import parse_untrusted_yaml

    try:
        if ctx.method == "POST":
            text = ctx.form.get("policy", "").replace("\r\n", "\n")
            if not text.strip():
                return PASTED, None, _Problem(PASTED, None, None, "paste a routing policy (YAML) first"), ""
            size = len(text.encode("utf-8", "replace"))
            if size > MAX_PASTE_BYTES:
                # Refused before parsing, and not offered again: the box would hold it all.
                message = f"{size:,} bytes is more than the {MAX_PASTE_BYTES:,} accepted"
                return PASTED, None, _Problem(PASTED, None, None, message), ""
            doc = parse_untrusted_yaml(text, PASTED, max_bytes=MAX_PASTE_BYTES)
            loaded = build_policy(doc, text.encode("utf-8"), directory=policy.directory, terms=policy.terms)
            return PASTED, loaded, None, text
        name = ctx.param("candidate")
        path = files.get(name)
        if path is None:
            return name, None, _Problem(name, None, None, "pick one of the listed policy files"), ""
        return name, load_routing_policy(path, directory=policy.directory, terms=policy.terms), None, ""
    except ConfigError as exc:
        source = PASTED if ctx.method == "POST" else name
        pasted = ctx.form.get("policy", "") if ctx.method == "POST" else ""
        return source, None, _Problem(source, exc.line, exc.column, exc.message), pasted


def _window(ctx: Ctx) -> str:
    chosen = (ctx.form.get("since", "") if ctx.method == "POST" else ctx.param("since")) or DEFAULT_WINDOW
    return chosen if chosen in WINDOWS else DEFAULT_WINDOW


def policy_page(ctx: Ctx, services: Mapping[str, Any]) -> Reply:
    """``/console/policy``: the live policy; with ``?candidate=`` (GET) or a pasted policy (POST), a
    what-if job is started and the caller sent to its page; ``/console/policy/run/<id>``: that page."""
    if ctx.rest:
        return _run_page(ctx, services.get("whatif"))
    pipeline = services["pipeline"]()
    policy: RoutingPolicy | None = pipeline.routing
    values: dict[str, Any] = {
        "policy": None,
        "routing_version": pipeline.routing_version,
        "files": [],
        "windows": tuple(WINDOWS),
        "since": _window(ctx),
        "chosen": ctx.param("candidate"),
        "pasted": "",
        "problem": None,
        "busy": None,
        "max_paste": MAX_PASTE_BYTES,
    }
    if policy is None:
        return Reply("policy.html.j2", values)
    files = candidate_files(_folders(policy))
    values.update(policy=describe_policy(policy), files=list(files))
    if not (ctx.method == "POST" or ctx.param("candidate")):
        return Reply("policy.html.j2", values)
    name, candidate, problem, pasted = _load_candidate(ctx, policy, files)
    as_json = ctx.method == "GET" and ctx.param("format") == "json"
    values.update(pasted=pasted, problem=problem)
    if candidate is None:
        if as_json and problem is not None:
            where = f"{problem.source}:{problem.line}" if problem.line else problem.source
            return _json({"error": f"{where}: {problem.message}"}, 400)
        return Reply("policy.html.j2", values, status=400)
    jobs: WhatIfJobs | None = services.get("whatif")
    if jobs is None:
        # A console without the daemon's configuration cannot start ``overread simulate``.
        unavailable = "this console runs no what-ifs: run overread simulate on the daemon's host"
        if as_json:
            return _json({"error": unavailable}, 503)
        values["problem"] = _Problem(name, None, None, unavailable)
        return Reply("policy.html.j2", values, status=503)
    # The window ends at the next whole second (a report of this second is in it), as a time the
    # command takes back as it printed it.
    until = ctx.now.replace(microsecond=0) + timedelta(seconds=1 if ctx.now.microsecond else 0)
    since_key = values["since"]
    try:
        job, started = jobs.start(
            client=ctx.caller.name,
            name=name,
            since_key=since_key,
            since=until - timedelta(days=WINDOWS[since_key]),
            until=until,
            policy=None if ctx.method == "POST" else files[name],
            pasted=pasted,
            lay_out=lambda doc: lay_out(doc, since_key, pasted=ctx.method == "POST"),
        )
    except OSError as exc:
        failed = f"the what-if could not start ({type(exc).__name__})"
        if as_json:
            return _json({"error": failed}, 503)
        values["problem"] = _Problem(name, None, None, failed)
        return Reply("policy.html.j2", values, status=503)
    if not started:
        # One what-if at a time per daemon (docs/console.md, "Policy and what-if").
        mine = secrets.compare_digest(job.client.encode(), ctx.caller.name.encode())
        busy = f"a what-if is running, started at {job.started:%H:%M} UTC by {job.client}"
        headers = (("Retry-After", str(RETRY_SECONDS)),)
        if as_json:
            link = {"page": _run_path(job.id, as_json=True)} if mine else {}
            return Reply(
                status=503,
                body=_json_body({"error": busy, **link}),
                content_type="application/json",
                headers=headers,
            )
        values["busy"] = {"text": busy, "page": _run_path(job.id) if mine else ""}
        return Reply("policy.html.j2", values, status=503, headers=headers)
    return Reply(status=303, location=_run_path(job.id, as_json=as_json))


#: The run page refreshes itself every so many seconds while the job runs; a busy answer's Retry-After.
RETRY_SECONDS = 2


def _run_path(job_id: str, *, as_json: bool = False) -> str:
    return f"/console/policy/run/{job_id}" + ("?format=json" if as_json else "")


def _not_found() -> Reply:
    return Reply("problem.html.j2", {"title": "Not found", "text": "There is no such what-if."}, status=404)


def _run_page(ctx: Ctx, jobs: WhatIfJobs | None) -> Reply:
    """``/console/policy/run/<id>`` (GET) and ``.../cancel`` (POST) of the caller's own job."""
    if jobs is None or len(ctx.rest) not in (2, 3) or ctx.rest[0] != "run":
        return _not_found()
    job_id = ctx.rest[1]
    if len(ctx.rest) == 3:
        if ctx.rest[2] != "cancel" or ctx.method != "POST":
            return _not_found()
        cancelled = jobs.cancel(job_id, ctx.caller.name)
        return _not_found() if cancelled is None else Reply(status=303, location=_run_path(job_id))
    if ctx.method != "GET":
        return _not_found()
    job = jobs.find(job_id, ctx.caller.name)
    if job is None:
        return _not_found()
    if ctx.param("format") == "json":
        if job.state == "done" and job.result is not None:
            # The document ``overread simulate --format json`` prints, for the same inputs.
            return _json(job.result["doc"], 200)
        if job.state == "running":
            body = {"state": "running", "read": job.read, "of": job.total, "seconds": round(job.seconds, 1)}
            return Reply(
                status=202,
                body=_json_body(body),
                content_type="application/json",
                headers=(("Retry-After", str(RETRY_SECONDS)),),
            )
        return _json({"state": job.state, "error": job.error or "the what-if was cancelled"}, 409)
    values = {
        "job": job,
        "seconds": f"{job.seconds:.0f}",
        "refresh": RETRY_SECONDS if job.state == "running" else 0,
        "result": job.result,
        "cancel": f"/console/policy/run/{job.id}/cancel",
    }
    return Reply("policy_run.html.j2", values)


def _json_body(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _json(doc: Mapping[str, Any], status: int) -> Reply:
    return Reply(status=status, body=_json_body(doc), content_type="application/json")


def lay_out(doc: dict[str, Any], since_key: str, *, pasted: bool = False) -> dict[str, Any]:
    """The run page's values of ``overread simulate``'s document (computed once, when the job ends)."""
    from listener.simulate import render_table

    if pasted:
        # The child read a private copy, removed since: the figures name the paste instead.
        doc["candidate"]["source"] = PASTED
    cases = doc["discrepancy_cases"]
    return {
        "doc": doc,
        "rows": compare_rows(doc),
        "chart": bucket_chart(doc),
        "table": render_table(doc),
        "sent": [c for c in cases if c["candidate_sends"]],
        "unseen": [c for c in cases if not c["candidate_sends"]],
        "since_key": since_key,
    }
