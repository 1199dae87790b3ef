"""decode -> QA -> route: the one pipeline the daemon and `overread check` share.

Pure orchestration: bytes and frozen configuration in, an Outcome out. No I/O,
no clock (``received_at`` is passed in), no logging. The daemon stores the
Outcome and answers from it; the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from listener.errors import APPLICATION_INTERNAL_ERROR, DecodeError
from listener.hl7v2.decode import decode_message
from listener.hl7v2.mapping import Mapping, MappingSet
from listener.hl7v2.segments import MessageHeader, read_header
from listener.model import Disposition, Finding, Report, Route, Severity
from listener.procedures import ProcedureTable
from listener.qa.engine import Prior, QaConfig, QaContext, QaInterrupted, run_rules
from listener.sites import LiveFigures
from listener.text import TextCache

if TYPE_CHECKING:
    from listener.fhir.decode import FhirClient
    from listener.routing import RoutingPolicy

#: A routing policy: report + findings + context -> route (listener.routing supplies it).
RouteDecider = Callable[[Report, tuple[Finding, ...], QaContext], Route]

#: The caller's look-up of a decoded report's prior studies (the daemon asks its
#: store, ``overread check`` reads the files given with ``--prior``): None when
#: they cannot be known. It never raises; a failed look-up is None, and the
#: caller reports it. The pipeline calls it once per report, after decoding.
PriorsFor = Callable[[Report], "tuple[Prior, ...] | None"]


#: The rule id of the finding that marks a report whose QA did not finish
#: within the message's time budget (docs/hardening.md). It is not a QA rule:
#: the pipeline adds it, and the routing policy's ``unchecked`` block routes it.
QA_TIMEOUT = "qa.timeout"

TIMEOUT_FINDING = Finding(
    rule=QA_TIMEOUT,
    severity=Severity.WARNING,
    message="QA incomplete: the message exceeded its processing time budget; the report was not fully checked",
)


#: Findings the pipeline adds when the directory (policies/sites.yaml,
#: policies/readers.yaml) does not know a report's site or reader: the
#: policies then fall back (the routing policy's ``default_timezone``, reader
#: type "unknown"), and an operator should hear of it rather than find out.
SITE_UNKNOWN = "directory.site_unknown"
READER_UNKNOWN = "directory.reader_unknown"
#: rule id -> the ``kind`` label of ``overread_directory_unknown``.
DIRECTORY_UNKNOWN_RULES = {SITE_UNKNOWN: "site", READER_UNKNOWN: "reader"}

SITE_UNKNOWN_FINDING = Finding(
    rule=SITE_UNKNOWN,
    severity=Severity.WARNING,
    message="site unknown: default time zone used (the report's site and sending facility are not in sites.yaml)",
    suggestion="add the site (or its sending facility) to policies/sites.yaml and reload (SIGHUP)",
)
READER_UNKNOWN_FINDING = Finding(
    rule=READER_UNKNOWN,
    severity=Severity.WARNING,
    message="reader unknown: not in readers.yaml; routed as reader type unknown",
    suggestion="add the reader to policies/readers.yaml and reload (SIGHUP)",
)


def directory_findings(report: Report, qa: QaConfig | None) -> tuple[Finding, ...]:
    """Warnings for a site or reader the directory does not know (none without a directory)."""
    if qa is None:
        return ()
    directory = qa.directory
    found: list[Finding] = []
    if directory.sites and directory.site_for(report) is None:
        found.append(SITE_UNKNOWN_FINDING)
    if (
        directory.readers
        and report.reader is not None
        and report.reader.id.strip()
        and directory.reader_info(report.reader) is None
    ):
        found.append(READER_UNKNOWN_FINDING)
    return tuple(found)


class Interrupt:
    """The caller's way to stop a running pipeline between two QA rules.

    The daemon runs the pipeline on a worker thread and gives it a deadline:
    :meth:`requested` becomes True once it has passed (or :meth:`request` was
    called). The pipeline also leaves the decoded reports here
    (:attr:`decoded`) before QA starts, so the caller can still store and
    route the message if the worker does not come back in time.

    The clock is the caller's (``clock``), so the pipeline itself reads none.
    """

    __slots__ = ("_clock", "_deadline", "_requested", "decoded")

    def __init__(self, clock: Callable[[], float] | None = None, deadline: float | None = None) -> None:
        self._clock = clock
        self._deadline = deadline
        self._requested = False
        #: (decoded reports, feed name, charset, header, disposition) once decoding finished.
        self.decoded: Decoded | None = None

    def start(self, clock: Callable[[], float], budget: float) -> None:
        """Start the budget now: :meth:`requested` turns True ``budget`` seconds from now."""
        self._clock = clock
        self._deadline = clock() + budget

    def request(self) -> None:
        """Ask the pipeline to stop at its next check (thread-safe: one bool store)."""
        self._requested = True

    def requested(self) -> bool:
        """True when the pipeline should stop checking and finish."""
        if self._requested:
            return True
        if self._deadline is not None and self._clock is not None and self._clock() >= self._deadline:
            self._requested = True
        return self._requested


@dataclass(frozen=True, slots=True)
class Decoded:
    """What decoding produced, kept on the :class:`Interrupt` for a late caller."""

    header: MessageHeader | None
    disposition: Disposition
    reports: tuple[Report, ...]
    feed: str
    charset: str


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Everything the pipeline needs, loaded once and swapped whole on reload."""

    mappings: MappingSet
    procedures: ProcedureTable | None = None
    qa: QaConfig | None = None
    decide_route: RouteDecider | None = None
    version: str = ""
    #: The routing policy's version (label + hash), and a hash of the mappings
    #: and procedures files: with ``version`` (QA's) in every ``message_processed`` line.
    routing_version: str = ""
    mapping_version: str = ""
    #: The loaded routing policy ``decide_route`` decides with (None: not routed): the
    #: console shows its rules and replays it (docs/console.md, "Policy and what-if").
    routing: RoutingPolicy | None = None


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """One report with what the checks and the policy made of it."""

    report: Report
    findings: tuple[Finding, ...] = ()
    route: Route | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one message.

    ``disposition``: "accepted" (reports decoded), "ignored" (a type the feed
    acknowledges without processing) or "rejected" (``error`` says why).
    """

    header: MessageHeader | None
    disposition: Disposition
    reports: tuple[ReportOutcome, ...] = ()
    error: DecodeError | None = None
    feed: str = "default"
    charset: str = ""
    error_type: str = field(default="")  # class name of an unexpected failure, for the log


def process(
    raw: bytes,
    pipeline: Pipeline,
    *,
    received_at: datetime,
    priors: tuple[Prior, ...] | None = None,
    priors_for: PriorsFor | None = None,
    interrupt: Interrupt | None = None,
    live_figures: LiveFigures | None = None,
) -> Outcome:
    """Run one HL7 v2 message through decode, QA and routing.

    Args:
        raw: the message bytes.
        pipeline: the loaded configuration.
        received_at: when it arrived (aware UTC); the rules' clock.
        priors: the patient's prior studies when the caller could look them up.
        priors_for: looks up each decoded report's priors (its patient is
            known only now); when given, it replaces ``priors``.
        interrupt: lets the caller stop QA early (a time budget); an
            interrupted report carries the ``qa.timeout`` finding and the
            policy's route for unchecked reports.
        live_figures: the peer-review figures the caller computed from its
            store, for the routing policy's discrepancy-rate conditions
            (docs/routing.md); None: readers.yaml's snapshot.

    Never raises: a decode failure or an unexpected bug becomes a rejected
    Outcome whose ``error`` carries the HL7 code and location for the NACK.
    """
    try:
        decoded = decode_message(raw, pipeline.mappings, received_at=received_at, procedures=pipeline.procedures)
    except DecodeError as exc:
        header = read_header(raw)
        feed = (
            pipeline.mappings.for_sender(header.sending_application, header.sending_facility).name
            if header
            else "default"
        )
        return Outcome(header, Disposition.REJECTED, error=exc, feed=feed)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must still produce an AE, never a dropped message
        return _internal_error(raw, pipeline, exc)
    if interrupt is not None:
        interrupt.decoded = Decoded(
            decoded.header, decoded.disposition, decoded.reports, decoded.mapping.name, decoded.charset
        )
    try:
        results = tuple(
            check_report(report, pipeline, _context(report, received_at, priors, priors_for, interrupt, live_figures))
            for report in decoded.reports
        )
    except Exception as exc:  # noqa: BLE001 - a rule bug: AE 207, logged by type only
        return _internal_error(raw, pipeline, exc)
    return Outcome(decoded.header, decoded.disposition, results, feed=decoded.mapping.name, charset=decoded.charset)


def decode_only(raw: bytes, pipeline: Pipeline, *, received_at: datetime) -> Decoded | None:
    """Decode ``raw`` as :func:`process` does, without QA; None when it does not decode.

    For the daemon's answer to a message whose worker process overran: the
    reports the worker decoded are in that process, so they are decoded again
    here (decoding is linear in the frame, whose size is capped).
    """
    try:
        decoded = decode_message(raw, pipeline.mappings, received_at=received_at, procedures=pipeline.procedures)
    except Exception:  # noqa: BLE001 - no reports to answer with: the caller keeps waiting
        return None
    return Decoded(decoded.header, decoded.disposition, decoded.reports, decoded.mapping.name, decoded.charset)


def unchecked_outcome(decoded: Decoded, pipeline: Pipeline, *, received_at: datetime) -> Outcome:
    """The Outcome of a message whose QA never came back: every report unchecked.

    Each report carries only the ``qa.timeout`` finding and the routing
    policy's route for unchecked reports (the decider sees the finding and
    does not evaluate the rules, so this is cheap whatever the text).
    """
    context = QaContext(now=received_at)
    results = tuple(
        _unchecked(report, directory_findings(report, pipeline.qa), pipeline, context) for report in decoded.reports
    )
    return Outcome(decoded.header, decoded.disposition, results, feed=decoded.feed, charset=decoded.charset)


def _unchecked(report: Report, findings: tuple[Finding, ...], pipeline: Pipeline, context: QaContext) -> ReportOutcome:
    findings = findings + (TIMEOUT_FINDING,)
    route = pipeline.decide_route(report, findings, context) if pipeline.decide_route else None
    return ReportOutcome(report, findings, route)


def process_fhir(
    body: bytes,
    pipeline: Pipeline,
    *,
    received_at: datetime,
    media_type: str | None = None,
    client: FhirClient | None = None,
    priors: tuple[Prior, ...] | None = None,
    priors_for: PriorsFor | None = None,
    interrupt: Interrupt | None = None,
    live_figures: LiveFigures | None = None,
) -> Outcome:
    """Run one FHIR body (DiagnosticReport or Bundle) through decode, QA and routing.

    The same promise as :func:`process`: never raises; ``error`` is a
    FhirDecodeError (issue code and FHIRPath) for an OperationOutcome.
    """
    fhir_client, mapping = _fhir_mapping(pipeline, client)
    try:
        decoded = _decode_fhir(body, pipeline, mapping, fhir_client, received_at=received_at, media_type=media_type)
    except DecodeError as exc:
        return Outcome(None, Disposition.REJECTED, error=exc, feed=mapping.name)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must still produce an answer
        error = DecodeError("internal error while processing the resource", hl7_code=APPLICATION_INTERNAL_ERROR)
        return Outcome(None, Disposition.REJECTED, error=error, feed=mapping.name, error_type=type(exc).__name__)
    if interrupt is not None:
        interrupt.decoded = decoded
    try:
        results = tuple(
            check_report(report, pipeline, _context(report, received_at, priors, priors_for, interrupt, live_figures))
            for report in decoded.reports
        )
    except Exception as exc:  # noqa: BLE001 - a rule bug: a 500 OperationOutcome, logged by type only
        error = DecodeError("internal error while processing the resource", hl7_code=APPLICATION_INTERNAL_ERROR)
        return Outcome(None, Disposition.REJECTED, error=error, feed=mapping.name, error_type=type(exc).__name__)
    return Outcome(None, Disposition.ACCEPTED, results, feed=mapping.name, charset="utf-8")


def _fhir_mapping(pipeline: Pipeline, client: FhirClient | None) -> tuple[FhirClient, Mapping]:
    from listener.fhir.decode import DEFAULT_CLIENT

    fhir_client = client or DEFAULT_CLIENT
    return fhir_client, pipeline.mappings.for_sender(fhir_client.name, fhir_client.facility)


def _decode_fhir(
    body: bytes,
    pipeline: Pipeline,
    mapping: Mapping,
    client: FhirClient,
    *,
    received_at: datetime,
    media_type: str | None,
) -> Decoded:
    """The body's reports, as :func:`process_fhir` decodes them (raises what the decoder raises)."""
    from listener.fhir.decode import decode_fhir

    reports = decode_fhir(
        body,
        mapping=mapping,
        received_at=received_at,
        media_type=media_type,
        client=client,
        procedures=pipeline.procedures,
    )
    return Decoded(None, Disposition.ACCEPTED, tuple(reports), mapping.name, "utf-8")


def decode_fhir_only(
    body: bytes,
    pipeline: Pipeline,
    *,
    received_at: datetime,
    media_type: str | None = None,
    client: FhirClient | None = None,
) -> Decoded | None:
    """Decode a FHIR body as :func:`process_fhir` does, without QA; None when it does not decode.

    The FHIR twin of :func:`decode_only`: the answer to a body whose worker process overran.
    """
    fhir_client, mapping = _fhir_mapping(pipeline, client)
    try:
        return _decode_fhir(body, pipeline, mapping, fhir_client, received_at=received_at, media_type=media_type)
    except Exception:  # noqa: BLE001 - no reports to answer with: the caller keeps waiting
        return None


def _context(
    report: Report,
    received_at: datetime,
    priors: tuple[Prior, ...] | None,
    priors_for: PriorsFor | None,
    interrupt: Interrupt | None,
    live_figures: LiveFigures | None = None,
) -> QaContext:
    """One report's context: the clock, its priors, the interrupt's stop check, the live figures."""
    if priors_for is not None:
        priors = priors_for(report)
    return QaContext(
        now=received_at, priors=priors, stop=interrupt.requested if interrupt else None, live_figures=live_figures
    )


def check_report(report: Report, pipeline: Pipeline, context: QaContext) -> ReportOutcome:
    """QA and routing for one decoded report (shared with the FHIR path).

    When ``context.stop`` interrupts QA, the report keeps the findings of the
    rules that ran, gains ``qa.timeout`` and is routed as unchecked.

    QA and routing share one :class:`~listener.text.TextCache` for the report
    (the caller's, when ``context`` has one): the sentences and mentions the
    rules found are not searched again for the routing facts, and the cache
    goes with the report.
    """
    if context.text_cache is None:
        context = replace(context, text_cache=TextCache())
    unknown = directory_findings(report, pipeline.qa)
    try:
        findings = run_rules(report, pipeline.qa, context) if pipeline.qa is not None else ()
    except QaInterrupted as stopped:
        return _unchecked(report, stopped.findings + unknown, pipeline, context)
    findings = findings + unknown
    route = pipeline.decide_route(report, findings, context) if pipeline.decide_route else None
    return ReportOutcome(report, findings, route)


def _internal_error(raw: bytes, pipeline: Pipeline, exc: Exception) -> Outcome:
    header = read_header(raw)
    error = DecodeError("internal error while processing the message", hl7_code=APPLICATION_INTERNAL_ERROR)
    feed = (
        pipeline.mappings.for_sender(header.sending_application, header.sending_facility).name if header else "default"
    )
    return Outcome(header, Disposition.REJECTED, error=error, feed=feed, error_type=type(exc).__name__)


def versions_of(pipeline: Pipeline) -> tuple[str, str, str]:
    """What identifies a pipeline's configuration: its QA, routing and mapping versions."""
    return (pipeline.version, pipeline.routing_version, pipeline.mapping_version)


def version_fields(pipeline: Pipeline) -> dict[str, str]:
    """What configuration handled a message, for its ``message_processed`` line.

    ``policy_version`` is QA's (kept under its old name), ``qa_version`` the
    same, ``routing_version`` the routing policy's (label + hash of
    routing.yaml, sites, readers and terms), ``mapping_version`` a hash of the
    mappings and procedures files.
    """
    return {
        "policy_version": pipeline.version,
        "qa_version": pipeline.version,
        "routing_version": pipeline.routing_version,
        "mapping_version": pipeline.mapping_version,
    }
