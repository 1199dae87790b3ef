"""The ``overread`` command: check (offline pipeline), and the daemon's tools.

This is the only place besides ``server/`` that does I/O for users: it reads
files, prints results and sets the exit status (docs/cli.md):
0 clean, 1 a finding of severity error, 2 a message that could not be decoded
(or a usage/config error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from listener import __version__
from listener.cli_common import terminal_output
from listener.config import WORKERS_HINT, Config, load_config, workers_count
from listener.errors import ConfigError, StoreError
from listener.hl7v2.segments import decode_text, read_header, split_messages
from listener.model import Disposition, Report, ResultStatus, Severity
from listener.pipeline import Outcome, Pipeline, PriorsFor, process, process_fhir
from listener.qa.engine import Prior
from listener.serialize import error_dict, finding_dict, report_dict, route_dict

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

_INPUT_SUFFIXES = {".hl7", ".er7", ".msg", ".txt", ".json", ".ndjson"}


@dataclass(frozen=True, slots=True)
class InputMessage:
    """One message found in an input file."""

    source: str  # "path#n"
    line: int  # 1-based line of its first segment in the file
    raw: bytes
    kind: str  # "hl7" or "fhir"


def iter_input_files(paths: Sequence[str]) -> Iterator[Path]:
    """Files named, and files with a known suffix under named directories, sorted."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in _INPUT_SUFFIXES:
                    yield child
        else:
            yield path


def split_file(path: Path, data: bytes) -> list[InputMessage]:
    """Split a file's bytes into messages; content decides HL7 v2 or FHIR JSON.

    HL7 v2: one or more messages; CR, LF or CRLF; MLLP framing bytes and a BOM
    tolerated; FHS/BHS/BTS/FTS envelope segments dropped. Segments before the
    first MSH (a batch whose message lost its MSH) form a message of their own
    so it is reported rather than merged into the next one.
    """
    body = data.lstrip(b"\xef\xbb\xbf \t\r\n\x0b\x1c")
    if body[:1] in (b"{", b"["):
        return [InputMessage(f"{path}#1", 1, data, "fhir")]
    text = data.decode("latin-1")  # byte-preserving; the decoder picks the real charset
    messages = split_messages(text)
    if not messages:
        return [InputMessage(f"{path}#1", 1, data, "hl7")]
    return [
        InputMessage(f"{path}#{n}", line, "\r".join(segs).encode("latin-1") + b"\r", "hl7")
        for n, (line, segs) in enumerate(messages, start=1)
    ]


def feed_file(pipeline: Pipeline, feed: str) -> str:
    """The mapping file of the feed named ``feed`` ("" when there is none by that name)."""
    mappings = pipeline.mappings
    for mapping in (*mappings.feeds, mappings.default):
        if mapping.name == feed:
            return str(mapping.source)
    return ""


def result_objects(msg: InputMessage, outcome: Outcome, pipeline: Pipeline | None = None) -> list[dict[str, Any]]:
    """The JSON Lines objects for one message (one per report; docs/cli.md).

    With ``pipeline``, each object names the feed mapping that matched the
    message and its file (``feed``, ``feed_file``).
    """
    header = outcome.header
    base: dict[str, Any] = {
        "source": msg.source,
        "line": msg.line,
        "message_type": header.message_type if header else ("FHIR" if msg.kind == "fhir" else ""),
        "message_id": header.control_id if header else "",
    }
    if pipeline is not None:
        base["feed"] = outcome.feed
        base["feed_file"] = feed_file(pipeline, outcome.feed)
    if outcome.error is not None:
        return [
            {
                **base,
                "accession": "",
                "status": "",
                "disposition": Disposition.REJECTED,
                "findings": [],
                "route": None,
                "error": error_dict(outcome.error),
            }
        ]
    if not outcome.reports:
        return [
            {
                **base,
                "accession": "",
                "status": "",
                "disposition": outcome.disposition,
                "findings": [],
                "route": None,
                "error": None,
            }
        ]
    out = []
    for result in outcome.reports:
        report = result.report
        out.append(
            {
                **base,
                "message_id": base["message_id"] or report.message_id,
                "accession": report.accession,
                "status": report.status.value,
                "disposition": outcome.disposition,
                "findings": [finding_dict(f) for f in result.findings],
                "route": route_dict(result.route),
                "error": None,
                "report": report_dict(report),
            }
        )
    return out


def check_messages(
    messages: Sequence[InputMessage], pipeline: Pipeline, now: datetime, priors_for: PriorsFor | None = None
) -> Iterator[tuple[InputMessage, Outcome]]:
    """Run each input message through the pipeline its format needs."""
    for msg in messages:
        if msg.kind == "fhir":
            yield msg, process_fhir(msg.raw, pipeline, received_at=now, priors_for=priors_for)
        else:
            yield msg, process(msg.raw, pipeline, received_at=now, priors_for=priors_for)


class PriorFileError(Exception):
    """A ``--prior`` file that cannot serve as a prior study; the text names the file."""


def _study_date(report: Report) -> date | None:
    """The exam's date as the sender gave it (observation time, else report time), as the store reads it."""
    when = report.times.observation or report.times.report
    return when.date() if when is not None else None


class PriorFiles:
    """``check --prior FILE``: reports read from files stand for the patient's prior studies.

    The files go through the same decoders as the checked ones (HL7 v2 or FHIR
    JSON), without QA or routing. As in the daemon's store look-up
    (listener/server/priors.py), an accession's last report given speaks for
    it, a cancelled one is no study, and the checked report's own accession
    is left out. Every prior must be the checked report's patient (identifier
    and assigning authority): :meth:`__call__` records the first one that is
    not, and :attr:`mismatch` names it for the command to refuse.
    """

    def __init__(self, pipeline: Pipeline, paths: Sequence[str], now: datetime) -> None:
        decode_only = dataclasses.replace(pipeline, qa=None, decide_route=None)
        #: accession -> (file, report, exam date), in the order given (a later report of an accession replaces it).
        self.reports: dict[str, tuple[str, Report, date]] = {}
        for path in iter_input_files(paths):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PriorFileError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
            for msg, outcome in check_messages(split_file(path, data), decode_only, now):
                if outcome.error is not None:
                    where = f" at {outcome.error.location}" if outcome.error.location else ""
                    raise PriorFileError(f"{msg.source}: cannot be decoded: {outcome.error.message}{where}")
                for result in outcome.reports:
                    report = result.report
                    if not report.patient.id.strip():
                        raise PriorFileError(f"{msg.source}: the prior has no patient identifier")
                    if not report.accession:
                        raise PriorFileError(f"{msg.source}: the prior has no accession number")
                    study_date = _study_date(report)
                    if study_date is None:
                        raise PriorFileError(f"{msg.source}: the prior has no exam date (observation or report time)")
                    self.reports.pop(report.accession, None)
                    self.reports[report.accession] = (msg.source, report, study_date)
        #: The source (``file#n``) of the first prior found to be another patient's than a checked report.
        self.mismatch: str | None = None

    def __call__(self, report: Report) -> tuple[Prior, ...] | None:
        patient = (report.patient.id, report.patient.id_authority)
        priors = []
        for source, prior, study_date in self.reports.values():
            if (prior.patient.id, prior.patient.id_authority) != patient:
                if self.mismatch is None:
                    self.mismatch = source
                return None
            if prior.accession == report.accession or prior.status is ResultStatus.CANCELLED:
                continue
            priors.append(Prior(prior.accession, study_date, prior.modality, prior.body_region, prior.procedure.code))
        return tuple(priors)


class _Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text


_SEVERITY_COLOUR = {"error": "31;1", "warning": "33", "info": "36"}


def print_text(obj: dict[str, Any], report_text: str, out: TextIO, style: _Style) -> None:
    """Readable output: one block per report, evidence shown in context."""
    head = f"{obj['source']} (line {obj['line']})  {obj['message_type'] or '?'}  {obj['message_id']}"
    if obj.get("feed_file"):
        head += f"  feed {obj['feed']} ({obj['feed_file']})"
    if obj["error"]:
        err = obj["error"]
        where = f" at {err['location']}" if err["location"] else ""
        out.write(
            f"{style(head, '1')}\n  {style('rejected', '31;1')}: {err['message']}{where} (HL7 {err['code']} {err['name']})\n"
        )
        return
    if obj.get("report") is None:
        out.write(f"{style(head, '1')}\n  {obj['disposition']}\n")
        return
    rep = obj["report"]
    proc = rep["procedure"]
    out.write(
        f"{style(head, '1')}\n  accession {obj['accession']}  {obj['status']}  {rep['modality'] or '?'} "
        f"{proc['code']} {proc['text']}\n"
    )
    sections = ", ".join(s["kind"] for s in rep["sections"]) or "(none)"
    out.write(f"  sections: {sections}   text: {rep['text_kind']}, {rep['text_length']} chars\n")
    for warning in rep["warnings"]:
        out.write(f"  {style('note', '36')}: {warning}\n")
    for finding in obj["findings"]:
        sev = finding["severity"]
        out.write(f"  {style(sev, _SEVERITY_COLOUR.get(sev, '0'))} {finding['rule']}: {finding['message']}\n")
        for ev in finding["evidence"]:
            lo, hi = max(0, ev["start"] - 40), min(len(report_text), ev["end"] + 40)
            context = (
                report_text[lo : ev["start"]]
                + style(report_text[ev["start"] : ev["end"]], "4")
                + report_text[ev["end"] : hi]
            ).replace("\n", " ")
            out.write(f"      {ev['section']}: ...{context}...\n")
        if finding.get("suggestion"):
            out.write(f"      suggestion: {finding['suggestion']}\n")
    route = obj["route"]
    if route:
        out.write(
            f"  route: {style(route['bucket'], '1')} -> {route['pool']} ({route['priority']}); reasons: {', '.join(route['reasons']) or '-'}\n"
        )


def _pipeline_with_policy(config: Config, policy_file: str | None) -> Pipeline:
    """The configured pipeline, with ``--policy F`` replacing the routing policy."""
    from listener.assemble import build_pipeline

    pipeline = build_pipeline(config)
    if policy_file is None:
        return pipeline
    from listener.assemble import load_decider, load_terms
    from listener.sites import load_directory

    qa = pipeline.qa
    directory = qa.directory if qa is not None else load_directory(config.policies_dir)
    terms = qa.terms if qa is not None else load_terms()
    decider = load_decider(config.policies_dir, directory=directory, terms=terms, policy_file=policy_file)
    return dataclasses.replace(pipeline, decide_route=decider)


def cmd_check(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    pipeline = _pipeline_with_policy(config, args.policy)
    now = datetime.now(UTC)
    priors: PriorFiles | None = None
    if args.prior:
        try:
            priors = PriorFiles(pipeline, args.prior, now)
        except PriorFileError as exc:
            sys.stderr.write(f"overread check: --prior {exc}\n")
            return EXIT_ERROR
    status = EXIT_OK
    style = _Style(args.format == "text" and out.isatty() and not os.environ.get("NO_COLOR"))
    found_any = False
    for path in iter_input_files(args.paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            sys.stderr.write(f"overread check: {path}: cannot read ({exc.strerror or type(exc).__name__})\n")
            status = EXIT_ERROR
            continue
        found_any = True
        messages = split_file(path, data)
        for msg, outcome in check_messages(messages, pipeline, now, priors):
            if priors is not None and priors.mismatch is not None:
                sys.stderr.write(
                    f"overread check: --prior {priors.mismatch}: another patient than {msg.source}"
                    " (a prior must be the checked report's patient: identifier and assigning authority)\n"
                )
                return EXIT_ERROR
            texts = {r.report.accession: r.report.text for r in outcome.reports}
            for obj in result_objects(msg, outcome, pipeline):
                if obj["error"]:
                    status = EXIT_ERROR
                elif any(f["severity"] == Severity.ERROR.value for f in obj["findings"]) and status == EXIT_OK:
                    status = EXIT_FINDINGS
                if args.format == "json":
                    out.write(json.dumps(obj, ensure_ascii=False, sort_keys=False) + "\n")
                else:
                    print_text(obj, texts.get(obj["accession"], ""), out, style)
    if not found_any:
        sys.stderr.write("overread check: no input files found\n")
        return EXIT_ERROR
    return status


def cmd_explain(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """Print, for each report in the files, why each routing rule did or did not match."""
    from listener.assemble import build_pipeline, load_routing_policy
    from listener.routing import RoutingContext, explain_lines

    pipeline = build_pipeline(config)
    qa = pipeline.qa
    if qa is None:
        raise ConfigError("no QA configuration to explain with", path=str(config.policies_dir))
    policy_path = Path(args.policy) if args.policy else config.policies_dir / "routing.yaml"
    policy = load_routing_policy(policy_path, directory=qa.directory, terms=qa.terms)
    now = datetime.now(UTC)
    status = EXIT_OK
    for path in iter_input_files(args.paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            sys.stderr.write(f"overread explain: {path}: cannot read ({exc.strerror or type(exc).__name__})\n")
            status = EXIT_ERROR
            continue
        for msg, outcome in check_messages(split_file(path, data), pipeline, now):
            if outcome.error is not None:
                err = outcome.error
                out.write(f"{msg.source}: rejected: {err.message} (HL7 {err.hl7_code} at {err.location or '-'})\n")
                status = EXIT_ERROR
                continue
            for result in outcome.reports:
                out.write(f"{msg.source}  accession {result.report.accession}\n")
                lines = explain_lines(result.report, result.findings, RoutingContext(now=now), policy)
                out.write("".join(f"  {line}\n" for line in lines))
    return status


def daemon_config(args: argparse.Namespace, config: Config) -> Config:
    """Apply the serve/messages flags over the config file (flags win)."""
    changes: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        changes["state_dir"] = Path(args.state_dir)
    if getattr(args, "mllp", None):
        changes["mllp_endpoint"] = args.mllp
    if getattr(args, "http", None):
        changes["http_endpoint"] = args.http
    if getattr(args, "workers", None) is not None:
        changes["workers"] = args.workers
    return dataclasses.replace(config, **changes) if changes else config


def workers_flag(value: str) -> int:
    """``serve --workers``: what the config's ``workers`` takes (:func:`workers_count`), a number as text."""
    count = workers_count(int(value) if value.strip().isdigit() else value)
    if count is None:
        raise argparse.ArgumentTypeError(f"{value!r}: {WORKERS_HINT}")
    return count


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Run the daemon until SIGTERM (exit 0) or a start-up failure (non-zero)."""
    from listener.logs import configure_logging, get_logger
    from listener.server.daemon import serve

    configure_logging(args.log_format)

    def reload_config() -> Config:
        # SIGHUP re-reads the same file, with the same command-line overrides.
        return daemon_config(args, load_config(getattr(args, "config", None)))

    try:
        return serve(daemon_config(args, config), reload_config)
    except ConfigError as exc:
        # The journal gets the event too (main() also says it on stderr, exit 2):
        # a unit that fails to start shows why in `journalctl -u overread`.
        get_logger("listener.cli").error(
            "config_invalid", path=exc.path or "", line=exc.line or 0, detail=exc.message, reason="start_refused"
        )
        raise
    except StoreError as exc:
        sys.stderr.write(f"overread serve: {exc}\n")
        return EXIT_ERROR


def check_config_files(config: Config) -> list[str]:
    """Load every file the daemon would load (nothing is created); the problems as ``file:line: message``.

    The config file itself was loaded by the caller (its own errors never get
    here). Then: mappings, procedures and policies (the Pipeline), the
    destinations file, and the TLS certificate, key and client CAs when an
    ``ssl:`` endpoint uses them. The store is not opened.
    """
    problems: list[str] = []

    def attempt(load: Any) -> None:
        try:
            load()
        except ConfigError as exc:
            problems.append(str(exc))

    from listener.assemble import build_pipeline

    attempt(lambda: build_pipeline(config))
    if config.destinations_file is not None:
        from listener.destinations import load_destinations

        attempt(lambda: load_destinations(config.destinations_file))
    if config.tls or config.http_endpoint.startswith("ssl:"):
        from listener.server.daemon import tls_options

        attempt(lambda: tls_options(config))
    return problems


def cmd_config_check(args: argparse.Namespace, out: TextIO) -> int:
    """``overread config check``: exit 0 when every file loads, else 2 with each problem as file:line."""
    try:
        config = daemon_config(args, load_config(args.config))
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_ERROR
    problems = check_config_files(config)
    for problem in problems:
        sys.stderr.write(f"{problem}\n")
    if problems:
        return EXIT_ERROR
    where = config.source if config.source != "(defaults)" else "built-in defaults"
    out.write(
        f"config ok: {where}; mappings {config.mappings_dir}; policies {config.policies_dir}"
        f"{'; destinations ' + str(config.destinations_file) if config.destinations_file else ''}\n"
    )
    return EXIT_OK


def _ack_text(ack: bytes) -> str:
    """An ACK as text: decoded as the daemon decodes a message (UTF-8 when valid, else its MSH-18,
    else latin-1), so the control id it echoes reads as sent (docs/operations.md, "Finding one message")."""
    header = read_header(ack)
    return decode_text(ack, header.charset if header is not None else "", fallback="latin-1")[0]


def _ack_fields(ack: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-2 of an ACK (separators from its MSH)."""
    import re

    text = ack.decode("latin-1")
    sep = text[3:4] or "|"
    for segment in re.split(r"\r\n|\r|\n", text):
        if segment.startswith("MSA"):
            fields = segment.split(sep)
            return (fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else "")
    return "", ""


def cmd_send(target: str, files: Sequence[str], *, timeout: float, out: TextIO) -> int:
    """MLLP client: send each message of each file, wait for its ACK, print it.

    Returns 0 when every answer is AA/CA, 1 on any AE/AR/CE/CR, 2 on a timeout,
    a closed connection or a usage error. A blocking socket is enough here: one
    message in flight at a time, in file order.
    """
    import socket

    from listener.hl7v2.mllp import MllpFramer, frame

    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit():
        sys.stderr.write("overread send: --to must be HOST:PORT\n")
        return EXIT_ERROR
    status = EXIT_OK
    try:
        sock = socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout)
    except OSError as exc:
        sys.stderr.write(
            f"overread send: cannot connect to {target} ({exc.strerror or type(exc).__name__}):"
            " is the daemon running and listening there? (make run; overread serve --mllp)\n"
        )
        return EXIT_ERROR
    framer = MllpFramer()
    pending: list[bytes] = []
    with sock:
        for path in iter_input_files(files):
            try:
                data = path.read_bytes()
            except OSError as exc:
                sys.stderr.write(f"overread send: {path}: cannot read ({exc.strerror or type(exc).__name__})\n")
                status = EXIT_ERROR
                continue
            for msg in split_file(path, data):
                header = read_header(msg.raw)
                expected = header.control_id if header else None
                try:
                    sock.sendall(frame(msg.raw.replace(b"\x1c", b"").replace(b"\x0b", b"")))
                    if header is not None and header.accept_ack_type == "NE":
                        out.write(f"# {msg.source}: no ACK requested (MSH-15 NE)\n")
                        continue
                    ack = _wait_ack(sock, framer, pending, expected)
                except (OSError, TimeoutError) as exc:
                    sys.stderr.write(f"overread send: {msg.source}: no ACK ({type(exc).__name__})\n")
                    return EXIT_ERROR
                if ack is None:
                    sys.stderr.write(f"overread send: {msg.source}: connection closed before the ACK\n")
                    return EXIT_ERROR
                code, _ = _ack_fields(ack)
                out.write(f"# {msg.source}\n" + _ack_text(ack).replace("\r", "\n"))
                out.flush()
                if code not in ("AA", "CA"):
                    status = max(status, EXIT_FINDINGS)
    return status


def _wait_ack(sock: Any, framer: Any, pending: list[bytes], expected: str | None) -> bytes | None:
    """Read frames until one whose MSA-2 is ``expected`` (any, when None)."""
    while True:
        while pending:
            ack = pending.pop(0)
            if expected is None or _ack_fields(ack)[1] == expected:
                return ack
        data = sock.recv(65536)
        if not data:
            return None
        pending.extend(framer.feed(data))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overread", description="Check and route radiology reports for overread.")
    parser.add_argument("--version", action="version", version=f"overread {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="run the offline pipeline on HL7 v2 or FHIR files and print the results")
    check.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (HL7 v2 or FHIR JSON)")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--config", metavar="F", help="daemon config file (its mappings/policies are used)")
    check.add_argument("--mappings", metavar="DIR", help="mappings directory (overrides the config)")
    check.add_argument(
        "--policy", metavar="F", help="routing policy file to decide with instead of policies/routing.yaml"
    )
    check.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="FILE",
        help="a report file (HL7 v2 or FHIR JSON) of the same patient's prior study; repeatable",
    )

    explain = sub.add_parser("explain", help="show why each routing rule did or did not match, per report")
    explain.add_argument("paths", nargs="+", metavar="FILE")
    explain.add_argument("--config", metavar="F", help="daemon config file (its mappings/policies are used)")
    explain.add_argument("--mappings", metavar="DIR", help="mappings directory (overrides the config)")
    explain.add_argument("--policy", metavar="F", help="routing policy file (default: policies/routing.yaml)")

    serve = sub.add_parser("serve", help="run the daemon: MLLP and HTTP (FHIR, console, health, metrics) listeners")
    serve.add_argument("--config", metavar="F", help="daemon config file (YAML)")
    serve.add_argument("--mllp", metavar="ENDPOINT", help="MLLP listen endpoint, e.g. tcp:2575:interface=127.0.0.1")
    serve.add_argument(
        "--http",
        metavar="ENDPOINT",
        help="HTTP endpoint for FHIR, /healthz and /metrics (default tcp:8080:interface=127.0.0.1; off to disable)",
    )
    serve.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var)")
    serve.add_argument(
        "--workers",
        metavar="N",
        type=workers_flag,
        help="worker processes: auto (one per usable core, the default) or a whole number (0: threads only);"
        " wins over the config file's workers",
    )
    serve.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")

    config_cmd = sub.add_parser("config", help="configuration tools")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True)
    config_check = config_sub.add_parser(
        "check",
        help="load every file the daemon would load (destinations and TLS files too), create nothing; exit 0 or 2",
    )
    config_check.add_argument("--config", metavar="F", help="daemon config file (YAML); default: the built-in defaults")

    send = sub.add_parser("send", help="send HL7 v2 files over MLLP and print each ACK")
    send.add_argument("--to", required=True, metavar="HOST:PORT")
    send.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for each ACK")
    send.add_argument("files", nargs="+", metavar="FILE")

    from listener.messages_cli import add_messages_parser

    add_messages_parser(sub)

    from listener.outbox_cli import add_outbox_parser

    add_outbox_parser(sub)

    from listener.operate_cli import add_operate_parsers

    add_operate_parsers(sub)

    from listener.history_cli import add_history_parser

    add_history_parser(sub)

    from listener.scorecard_cli import add_scorecard_parser

    add_scorecard_parser(sub)

    from listener.simulate_cli import add_simulate_parser

    add_simulate_parser(sub)

    from listener.feedback_cli import add_feedback_parser

    add_feedback_parser(sub)

    from listener.scores_cli import add_outcomes_parser

    add_outcomes_parser(sub)

    from listener.store_cli import add_store_parser

    add_store_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "config":
        return cmd_config_check(args, sys.stdout)
    try:
        config = load_config(getattr(args, "config", None), mappings_dir=getattr(args, "mappings", None))
    except ConfigError as exc:
        sys.stderr.write(f"overread: {exc}\n")
        if args.command == "serve":
            # The daemon's own config file is bad: say so in the journal too, with its file:line.
            from listener.logs import configure_logging, get_logger

            configure_logging(args.log_format)
            get_logger("listener.cli").error(
                "config_invalid", path=exc.path or "", line=exc.line or 0, detail=exc.message, reason="start_refused"
            )
        return EXIT_ERROR
    # What the commands on the store print comes from senders; on a terminal its control
    # characters are shown, never acted on (docs/cli.md, "Output on a terminal"). check and
    # explain read the files the user names, and colour their own output.
    out = terminal_output(sys.stdout)
    try:
        if args.command == "check":
            return cmd_check(args, config, sys.stdout)
        if args.command == "explain":
            return cmd_explain(args, config, sys.stdout)
        if args.command == "serve":
            return cmd_serve(args, config)
        if args.command == "send":
            return cmd_send(args.to, args.files, timeout=args.timeout, out=out)
        if args.command == "messages":
            from listener.messages_cli import cmd_messages

            return cmd_messages(args, daemon_config(args, config), out)
        if args.command == "outbox":
            from listener.outbox_cli import cmd_outbox

            daemon = daemon_config(args, config)
            return cmd_outbox(args, daemon, out, destinations_file=daemon.destinations_file)
        if args.command in ("show", "hash", "reprocess", "audit"):
            from listener import operate_cli

            command = {
                "show": operate_cli.cmd_show,
                "hash": operate_cli.cmd_hash,
                "reprocess": operate_cli.cmd_reprocess,
                "audit": operate_cli.cmd_audit,
            }[args.command]
            return command(args, daemon_config(args, config), out)
        if args.command == "history":
            from listener.history_cli import cmd_history

            return cmd_history(args, daemon_config(args, config), out)
        if args.command == "scorecard":
            from listener.scorecard_cli import cmd_scorecard

            return cmd_scorecard(args, daemon_config(args, config), out)
        if args.command == "simulate":
            from listener.simulate_cli import cmd_simulate

            return cmd_simulate(args, daemon_config(args, config), out)
        if args.command == "feedback":
            from listener.feedback_cli import cmd_feedback

            return cmd_feedback(args, daemon_config(args, config), out)
        if args.command == "outcomes":
            from listener.scores_cli import cmd_outcomes

            return cmd_outcomes(args, daemon_config(args, config), out)
        if args.command == "store":
            from listener.store_cli import cmd_store

            settings = daemon_config(args, config)
            return cmd_store(
                args,
                settings.state_dir,
                out,
                store_url=settings.store_url,
                password_file=settings.store_password_file,
            )
    except ConfigError as exc:
        sys.stderr.write(f"overread: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_ERROR
