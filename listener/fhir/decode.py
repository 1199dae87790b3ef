"""FHIR DiagnosticReport / Bundle bytes -> Reports.

Pure: no I/O, no clock (the receive time is an argument), no logging, no
network (a reference to a resource outside the body is noted, never fetched).

Steps: media type -> JSON -> its shape (nesting depth, no control characters:
:mod:`listener.fhir.shape`) -> what is in it (DiagnosticReport, or a Bundle of an
accepted type holding at least one) -> the FHIR version (chosen, never guessed
by trial) -> vendor extra elements stripped when the client allows them ->
fhir.resources validation -> our own checks (status, category, report text)
-> one Report per DiagnosticReport, with contained or bundled Patient,
ServiceRequest, Practitioner(Role), ImagingStudy, Observation and Composition
resolved by reference.

A Bundle is all or nothing: the first DiagnosticReport that fails our checks
fails the body, with an expression naming its entry. Every failure is a
:class:`FhirDecodeError` whose message names a FHIRPath, never a value.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from listener.errors import FhirDecodeError
from listener.fhir import models
from listener.fhir.report import ReportContext, report_from_diagnostic_report
from listener.fhir.resolve import JSON, Index, obj_of, objs, str_of, strs, walk_entries
from listener.fhir.shape import check_shape
from listener.hl7v2.mapping import Mapping
from listener.model import MAX_REPORTS_PER_MESSAGE, Report
from listener.procedures import ProcedureTable

#: Bundle types that may carry reports to us.
BUNDLE_TYPES = frozenset({"batch", "transaction", "collection", "document"})

#: Decoded bodies above this many DiagnosticReports are refused (one POST is one study's worth).
MAX_REPORTS = MAX_REPORTS_PER_MESSAGE


@dataclass(frozen=True, slots=True)
class FhirClient:
    """Per-client FHIR settings (from the daemon config; the CLI uses the defaults).

    Attributes:
        name: our name for the client; becomes ``Sender.application``.
        facility: the client's site; ``Sender.facility`` and ``Report.site``.
        feed: the mapping feed name recorded on its Reports.
        version: the client's fixed FHIR version ("R4", "R5", "STU3"); None lets the
            ``fhirVersion`` media-type parameter or ``meta.profile`` say.
        default_version: used when nothing says.
        versions: versions this client may send (STU3 only when listed).
        accept_extra_fields: strip elements the FHIR version does not define
            (vendor fields) with a warning, instead of refusing the body.
        radiology_only: refuse a DiagnosticReport whose category says it is not radiology.
        require_accession: refuse a report without an accession number.
    """

    name: str = "fhir"
    facility: str = ""
    feed: str = "default"
    version: str | None = None
    default_version: str = "R4"
    versions: tuple[str, ...] = ("R4", "R5")
    accept_extra_fields: bool = False
    radiology_only: bool = True
    require_accession: bool = False


DEFAULT_CLIENT = FhirClient()


def decode_fhir(
    body: bytes,
    *,
    mapping: Mapping,
    received_at: datetime,
    media_type: str | None = None,
    client: FhirClient = DEFAULT_CLIENT,
    procedures: ProcedureTable | None = None,
) -> tuple[Report, ...]:
    """Decode one FHIR JSON body (a DiagnosticReport, or a Bundle holding some).

    Args:
        body: the request body.
        mapping: the feed mapping: heading vocabulary and LOINC section codes
            (``obx_sections``), CPT coding-system names, priority words.
        received_at: when it arrived (aware, UTC).
        media_type: the Content-Type header; None for files (``overread check``).
        client: the client's settings.
        procedures: the CPT table, for modality and body region.

    Returns:
        One Report per DiagnosticReport, in body order.

    Raises:
        FhirDecodeError: with ``issue_code`` and ``expression``; never another exception.
    """
    media = models.parse_media_type(media_type)
    doc = _parse_json(body)
    root = str_of(doc, "resourceType")
    if not root:
        raise FhirDecodeError("resourceType is missing", issue_code="required", expression="resourceType")
    if root not in ("DiagnosticReport", "Bundle"):
        raise FhirDecodeError("only a DiagnosticReport or a Bundle is accepted", issue_code="not-supported")
    # Before anything walks the body recursively (fhir.resources does): depth and control characters.
    check_shape(doc, root)
    dr_entries = _precheck_bundle(doc) if root == "Bundle" else []

    profiles = strs(obj_of(doc, "meta"), "profile")
    for _, _, resource in dr_entries:
        profiles += strs(obj_of(resource, "meta"), "profile")
    version = models.choose_version(
        configured=client.version,
        media=media,
        profiles=profiles,
        default=client.default_version,
        allowed=client.versions,
    )
    warnings: list[str] = []
    if client.accept_extra_fields:
        warnings += _strip_extras(version, doc)
    models.validate(version, doc)

    ctx = ReportContext(
        version=version,
        client_name=client.name,
        facility=client.facility,
        feed=client.feed,
        mapping=mapping,
        procedures=procedures,
        received_at=received_at,
        radiology_only=client.radiology_only,
        require_accession=client.require_accession,
        warnings=tuple(warnings),
    )
    index = Index()
    if root == "DiagnosticReport":
        return (report_from_diagnostic_report(doc, "DiagnosticReport", index, ctx),)
    for _, full_url, resource in walk_entries(doc):
        index.add(resource, full_url)
    message_time = str_of(doc, "timestamp")
    reports = []
    for i, full_url, resource in dr_entries:
        where = f"Bundle.entry[{i}].resource"
        reports.append(
            report_from_diagnostic_report(
                resource, where, index, ctx, full_url=full_url, message_time=message_time, bundle_id=str_of(doc, "id")
            )
        )
    return tuple(reports)


def _parse_json(body: bytes) -> JSON:
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FhirDecodeError("the body is not UTF-8", issue_code="structure") from None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        # json's message quotes a position only, but we keep to our own words.
        raise FhirDecodeError("the body is not valid JSON", issue_code="structure") from None
    except ValueError:
        # An integer of more digits than int() converts (sys.get_int_max_str_digits(), 4300
        # by default): a 400 like any unreadable body, never a 500 that tells the sender to
        # resend (docs/http-api.md).
        limit = sys.get_int_max_str_digits()
        raise FhirDecodeError(
            f"the body holds a JSON number of more than {limit} digits", issue_code="structure"
        ) from None
    if not isinstance(doc, dict):
        raise FhirDecodeError("the body is not a JSON object (a FHIR resource)", issue_code="structure")
    return doc


def _precheck_bundle(doc: JSON) -> list[tuple[int, str, JSON]]:
    """Bundle type and DiagnosticReport presence, before (costly) validation."""
    kind = str_of(doc, "type")
    if not kind:
        raise FhirDecodeError("Bundle.type is missing", issue_code="required", expression="Bundle.type")
    if kind not in BUNDLE_TYPES:
        raise FhirDecodeError(
            "Bundle.type must be batch, transaction, collection or document",
            issue_code="not-supported",
            expression="Bundle.type",
        )
    if kind in ("transaction", "batch"):
        _check_requests(doc)
    found = [(i, url, r) for i, url, r in walk_entries(doc) if str_of(r, "resourceType") == "DiagnosticReport"]
    if not found:
        raise FhirDecodeError(
            "the Bundle holds no DiagnosticReport",
            issue_code="required",
            expression="Bundle.entry.resource.ofType(DiagnosticReport)",
        )
    if len(found) > MAX_REPORTS:
        raise FhirDecodeError(
            f"the Bundle holds more than {MAX_REPORTS} DiagnosticReports",
            issue_code="too-costly",
            expression="Bundle.entry",
        )
    return found


#: Bundle.entry.request.method values we carry out in a transaction or batch: creates and updates.
REQUEST_METHODS = frozenset({"POST", "PUT"})


def _check_requests(doc: JSON) -> None:
    """Transaction and batch entries carry a request (bdl-3), and only creates or updates.

    A read, delete or patch asks for something this server does not do; refusing
    the Bundle says so, where silently skipping the entry would not.
    """
    for i, entry in enumerate(objs(doc, "entry")):
        request = obj_of(entry, "request")
        if not request:
            raise FhirDecodeError(
                f"Bundle.entry[{i}].request is required in a {str_of(doc, 'type')} Bundle",
                issue_code="required",
                expression=f"Bundle.entry[{i}].request",
            )
        method = str_of(request, "method").upper()
        if not method:
            raise FhirDecodeError(
                f"Bundle.entry[{i}].request.method is required",
                issue_code="required",
                expression=f"Bundle.entry[{i}].request.method",
            )
        if method not in REQUEST_METHODS:
            raise FhirDecodeError(
                f"Bundle.entry[{i}].request.method must be POST or PUT: this server only takes reports in",
                issue_code="not-supported",
                expression=f"Bundle.entry[{i}].request.method",
            )
        if not obj_of(entry, "resource"):
            raise FhirDecodeError(
                f"Bundle.entry[{i}].resource is required for a {method}",
                issue_code="required",
                expression=f"Bundle.entry[{i}].resource",
            )


def _strip_extras(version: str, doc: JSON) -> list[str]:
    """Remove elements the version does not define; return one warning per removal."""
    root = str_of(doc, "resourceType")
    warnings: list[str] = []
    for _ in range(3):  # removing an element never uncovers more than a pass or two
        paths = models.extra_field_paths(version, doc)
        if not paths:
            break
        for path in paths:
            if _delete(doc, path):
                warnings.append(f"{models.fhirpath(root, path)}: element not defined in FHIR {version}; ignored")
    return warnings


def _delete(doc: JSON, path: Sequence[str | int]) -> bool:
    node: object = doc
    for part in path[:-1]:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    last = path[-1] if path else None
    if isinstance(node, dict) and isinstance(last, str) and last in node:
        del node[last]
        return True
    return False


__all__ = ["BUNDLE_TYPES", "DEFAULT_CLIENT", "FhirClient", "decode_fhir"]
