"""The ``overread`` command: check (offline pipeline), and the daemon's tools.

This is the only place besides ``server/`` that does I/O for users: it reads
files, prints results and sets the exit status (DESIGN §7):
0 clean, 1 a finding of severity error, 2 a message that could not be decoded
(or a usage/config error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from listener import __version__
from listener.config import Config, load_config
from listener.errors import ConfigError, DecodeError
from listener.hl7v2.segments import split_messages
from listener.model import Severity
from listener.pipeline import Outcome, Pipeline, process
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


def result_objects(msg: InputMessage, outcome: Outcome) -> list[dict[str, Any]]:
    """The JSON Lines objects for one message (one per report; DESIGN §7)."""
    header = outcome.header
    base: dict[str, Any] = {
        "source": msg.source,
        "line": msg.line,
        "message_type": header.message_type if header else "",
        "message_id": header.control_id if header else "",
    }
    if outcome.error is not None:
        return [{**base, "accession": "", "status": "", "disposition": "rejected", "findings": [], "route": None,
                 "error": error_dict(outcome.error)}]
    if not outcome.reports:
        return [{**base, "accession": "", "status": "", "disposition": outcome.disposition, "findings": [],
                 "route": None, "error": None}]
    out = []
    for result in outcome.reports:
        report = result.report
        out.append(
            {
                **base,
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


def _fhir_outcome(msg: InputMessage) -> Outcome:
    err = DecodeError("FHIR input is not decoded by this version (HL7 v2 only)", location="", hl7_code="200")
    return Outcome(None, "rejected", error=err)


def check_messages(messages: Sequence[InputMessage], pipeline: Pipeline, now: datetime) -> Iterator[tuple[InputMessage, Outcome]]:
    for msg in messages:
        if msg.kind == "fhir":
            yield msg, _fhir_outcome(msg)
        else:
            yield msg, process(msg.raw, pipeline, received_at=now)


class _Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text


_SEVERITY_COLOUR = {"error": "31;1", "warning": "33", "info": "36"}


def print_text(obj: dict[str, Any], report_text: str, out: TextIO, style: _Style) -> None:
    """Readable output: one block per report, evidence shown in context."""
    head = f"{obj['source']} (line {obj['line']})  {obj['message_type'] or '?'}  {obj['message_id']}"
    if obj["error"]:
        err = obj["error"]
        where = f" at {err['location']}" if err["location"] else ""
        out.write(f"{style(head, '1')}\n  {style('rejected', '31;1')}: {err['message']}{where} (HL7 {err['code']} {err['name']})\n")
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
                report_text[lo : ev["start"]] + style(report_text[ev["start"] : ev["end"]], "4") + report_text[ev["end"] : hi]
            ).replace("\n", " ")
            out.write(f"      {ev['section']}: ...{context}...\n")
        if finding.get("suggestion"):
            out.write(f"      suggestion: {finding['suggestion']}\n")
    route = obj["route"]
    if route:
        out.write(f"  route: {style(route['bucket'], '1')} -> {route['pool']} ({route['priority']}); reasons: {', '.join(route['reasons']) or '-'}\n")


def cmd_check(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    pipeline = config.pipeline()
    now = datetime.now(timezone.utc)
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
        for msg, outcome in check_messages(messages, pipeline, now):
            texts = {r.report.accession: r.report.text for r in outcome.reports}
            for obj in result_objects(msg, outcome):
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overread", description="Check and route radiology reports for overread.")
    parser.add_argument("--version", action="version", version=f"overread {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="run the offline pipeline on HL7 v2 files and print the results")
    check.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (HL7 v2 or FHIR JSON)")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--config", metavar="F", help="daemon config file (its mappings/policies are used)")
    check.add_argument("--mappings", metavar="DIR", help="mappings directory (overrides the config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, mappings_dir=getattr(args, "mappings", None))
    except ConfigError as exc:
        sys.stderr.write(f"overread: {exc}\n")
        return EXIT_ERROR
    try:
        if args.command == "check":
            return cmd_check(args, config, sys.stdout)
    except ConfigError as exc:
        sys.stderr.write(f"overread: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_ERROR

