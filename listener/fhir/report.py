"""One validated DiagnosticReport (JSON) -> one Report.

Pure: no I/O, no clock, no logging. Reads R4, R5 and STU3 spellings
(``imagingStudy``/``study``, ``conclusionCode``/``codedDiagnosis``,
``resultsInterpreter``/STU3 ``performer.actor``, ``reasonCode``/``reason``).
Warnings name FHIRPaths only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from listener.errors import FhirDecodeError
from listener.fhir.narrative import Resolve, build_text
from listener.fhir.peer_review import review_of_results
from listener.fhir.resolve import (
    JSON,
    Index,
    codings,
    concept_text,
    contained_map,
    distinct,
    identifier_of_type,
    obj_of,
    objs,
    str_of,
)
from listener.hl7v2.mapping import Mapping
from listener.model import Patient, Procedure, Reader, Report, ResultStatus, Sender, TextKind, Times
from listener.procedures import ProcedureTable
from listener.text.sections import sectionize

#: DiagnosticReport.status (all releases) -> our status.
STATUS_VALUES: dict[str, ResultStatus] = {
    "registered": ResultStatus.PARTIAL,
    "partial": ResultStatus.PARTIAL,
    "preliminary": ResultStatus.PRELIMINARY,
    "final": ResultStatus.FINAL,
    "amended": ResultStatus.AMENDED,
    "corrected": ResultStatus.CORRECTED,
    "appended": ResultStatus.AMENDED,  # an addendum, as HL7 feeds' ADDENDUM maps
    "cancelled": ResultStatus.CANCELLED,
    "entered-in-error": ResultStatus.CANCELLED,
    "unknown": ResultStatus.UNKNOWN,
}
_NO_TEXT_NEEDED = frozenset({"cancelled", "entered-in-error"})

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT_SYSTEMS = frozenset({"http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12"})
HCPCS_SYSTEMS = frozenset(
    {"urn:oid:2.16.840.1.113883.6.285", "https://www.cms.gov/medicare/coding/hcpcsreleasecodesets"}
)
_V2_0074 = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/v2-0074",
        "http://hl7.org/fhir/v2/0074",  # STU3 and earlier
        "urn:oid:2.16.840.1.113883.12.74",
        "http://terminology.hl7.org/ValueSet/v2-0074",  # a common mistake: the value set URL
    }
)
#: v2-0074 diagnostic service sections that are imaging.
_V2_IMAGING = frozenset({"RAD", "RX", "CT", "NMR", "NMS", "OUS", "VUS"})
#: LOINC parts and SNOMED concepts meaning radiology / imaging.
_RADIOLOGY_CODES = frozenset({(LOINC, "LP29684-5"), (LOINC, "LP7839-6"), (SNOMED, "394914008"), (SNOMED, "363679005")})
_RADIOLOGY_TEXT = re.compile(r"radiolog|imaging|\brad\b", re.I)
_ICD10 = re.compile(r"icd-?10", re.I)
_PRIORITY = {"routine": "routine", "urgent": "asap", "asap": "asap", "stat": "stat"}
_SNOMED_SIDES = {"7771000": "left", "24028007": "right", "51440002": "bilateral"}
_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_SIDES = {"LT": "left", "LEFT": "left", "RT": "right", "RIGHT": "right", "BILAT": "bilateral", "BILATERAL": "bilateral"}


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What every DiagnosticReport of one body is decoded with."""

    version: str
    client_name: str
    facility: str
    feed: str
    mapping: Mapping
    procedures: ProcedureTable | None
    received_at: datetime
    radiology_only: bool = True
    require_accession: bool = False
    warnings: tuple[str, ...] = ()


def report_from_diagnostic_report(
    dr: JSON,
    where: str,
    index: Index,
    ctx: ReportContext,
    *,
    full_url: str = "",
    message_time: str = "",
    bundle_id: str = "",
) -> Report:
    """Build a Report from one validated DiagnosticReport.

    Args:
        dr: the DiagnosticReport JSON (validated by fhir.resources).
        where: its FHIRPath (``DiagnosticReport`` or ``Bundle.entry[3].resource``).
        index: the body's resources, for references.
        ctx: settings shared by the body.
        full_url, message_time, bundle_id: from the Bundle entry, when there is one.

    Raises:
        FhirDecodeError: status, category or report text fail our checks.
    """
    warnings = list(ctx.warnings)
    contained = contained_map(dr)

    def resolve(ref: JSON, path: str) -> JSON | None:
        found, irregular = index.resolve(ref, contained)
        if irregular:
            warnings.append(f"{path}: reference has an irregular form; read as Type/id")
        if found is None and str_of(ref, "reference"):
            warnings.append(f"{path}: referenced resource is not in the body; not fetched")
        return found

    status_raw = str_of(dr, "status")
    if not status_raw:
        raise FhirDecodeError(f"{where}.status is required", issue_code="required", expression=f"{where}.status")
    status = STATUS_VALUES.get(status_raw)
    if status is None:
        raise FhirDecodeError(
            f"{where}.status is not a DiagnosticReport status code",
            issue_code="code-invalid",
            expression=f"{where}.status",
        )
    _check_category(dr, where, ctx, warnings)

    # Each resource once, however often it is referenced: everything below walks requests x their elements.
    requests = distinct(r for i, ref in enumerate(objs(dr, "basedOn")) if (r := resolve(ref, f"{where}.basedOn[{i}]")))
    study_key = "study" if ctx.version == "R5" else "imagingStudy"
    studies = distinct(
        r
        for i, ref in enumerate(objs(dr, study_key))
        if (r := resolve(ref, f"{where}.{study_key}[{i}]")) and str_of(r, "resourceType") == "ImagingStudy"
    )

    built = build_text(dr, where, ctx.version, ctx.mapping, resolve)
    warnings.extend(built.warnings)
    if (
        not built.text.strip()
        and built.kind not in (TextKind.PDF, TextKind.BINARY)
        and status_raw not in _NO_TEXT_NEEDED
    ):
        raise FhirDecodeError(
            f"{where} has no report text (presentedForm, conclusion, conclusionCode or result Observations)",
            issue_code="required",
            expression=f"{where}.presentedForm",
        )
    sections = sectionize(built.text, ctx.mapping.heading_rules, built.hints) if built.text.strip() else ()

    accession, placer, filler = _orders(dr, requests, studies)
    if not accession:
        if ctx.require_accession:
            raise FhirDecodeError(
                f"{where} has no accession number (identifier of type ACSN or FILL)",
                issue_code="required",
                expression=f"{where}.identifier",
            )
        warnings.append(f"{where}.identifier: no accession number")

    patient = _patient(dr, where, resolve, warnings)
    procedure = _procedure(dr, requests, ctx.mapping)
    entry = (
        ctx.procedures.get(procedure.code) if ctx.procedures is not None and procedure.coding_system == "CPT" else None
    )
    modality_raw = _study_modality(studies)
    if entry is not None:
        modality = entry.modality
    elif ctx.procedures is not None:
        modality = ctx.procedures.modality_for(modality_raw, procedure.text)
    else:
        modality = modality_raw.upper()
    reason, diagnoses = _reasons(requests)
    effective = str_of(dr, "effectiveDateTime") or str_of(obj_of(dr, "effectivePeriod"), "start")
    times = Times(
        observation=_datetime(effective, f"{where}.effective", warnings),
        report=_datetime(str_of(dr, "issued"), f"{where}.issued", warnings),
        received=ctx.received_at,
        message=_datetime(message_time, "Bundle.timestamp", warnings),
    )
    # The text builder has warned about these references already.
    peer_review = review_of_results(
        dr, where, lambda ref, _path: index.resolve(ref, contained)[0], ctx.mapping.peer_review_fhir, warnings
    )
    comparison = next((sec.text for sec in sections if sec.kind.value == "comparison"), "")
    priority = next((_PRIORITY[p] for r in requests if (p := str_of(r, "priority")) in _PRIORITY), "routine")

    return Report(
        message_id=str_of(dr, "id") or full_url or (f"{bundle_id}:{where}" if bundle_id else ""),
        message_type="DiagnosticReport",
        version=ctx.version,
        sender=Sender(ctx.client_name, ctx.facility, ctx.feed),
        accession=accession,
        patient=patient,
        procedure=procedure,
        status=status,
        status_raw=status_raw,
        times=times,
        text=built.text,
        sections=sections,
        placer_order=placer,
        filler_order=filler,
        modality=modality,
        body_region=entry.body_region if entry else "",
        order_laterality=_order_laterality(procedure.text, entry.laterality if entry else "", requests),
        priority=priority,
        reader=_reader(dr, where, resolve),
        site=ctx.facility,
        reason=reason,
        diagnosis_codes=diagnoses,
        comparison_text=comparison,
        text_kind=built.kind if built.text.strip() or built.kind is not TextKind.TEXT else TextKind.NONE,
        charset="utf-8",
        abnormal_flags=built.flags,
        warnings=tuple(warnings),
        peer_review=peer_review,
    )


def _check_category(dr: JSON, where: str, ctx: ReportContext, warnings: list[str]) -> None:
    categories = objs(dr, "category")  # a single object in STU3
    if not categories:
        warnings.append(f"{where}.category: absent; taken as radiology")
        return
    for category in categories:
        for coding in codings(category):
            system, code = str_of(coding, "system"), str_of(coding, "code")
            if (system, code) in _RADIOLOGY_CODES or (system in _V2_0074 and code.upper() in _V2_IMAGING):
                return
        if not codings(category) and _RADIOLOGY_TEXT.search(str_of(category, "text")):
            return
    if ctx.radiology_only:
        raise FhirDecodeError(
            f"{where}.category does not say radiology (LOINC LP29684-5 or v2-0074 RAD)",
            issue_code="not-supported",
            expression=f"{where}.category",
        )
    warnings.append(f"{where}.category: not radiology; accepted by client setting")


def _orders(dr: JSON, requests: list[JSON], studies: list[JSON]) -> tuple[str, str, str]:
    """(accession, placer order, filler order) from identifiers, ours before the order's."""
    own = objs(dr, "identifier")
    request_ids = [i for r in requests for i in objs(r, "identifier")]
    study_ids = [i for st in studies for i in objs(st, "identifier")]
    accession = ""
    for idents in (own, request_ids, study_ids):
        found = identifier_of_type(idents, "ACSN")
        if found is not None:
            accession = str_of(found, "value")
            break
    placer = identifier_of_type(own + request_ids, "PLAC")
    filler = identifier_of_type(own + request_ids, "FILL")
    filler_value = str_of(filler, "value") if filler else ""
    # HL7 feeds carry the accession in the filler order number (OBR-3); do the same.
    return accession or filler_value, str_of(placer, "value") if placer else "", filler_value


def _patient(dr: JSON, where: str, resolve: Resolve, warnings: list[str]) -> Patient:
    subject = obj_of(dr, "subject")
    resource = resolve(subject, f"{where}.subject") if subject else None
    if resource is not None and str_of(resource, "resourceType") != "Patient":
        resource = None
    idents = objs(resource, "identifier") if resource else []
    ident = identifier_of_type(idents, "MR") or next((i for i in idents if str_of(i, "value")), None)
    if ident is None and str_of(obj_of(subject, "identifier"), "value"):
        ident = obj_of(subject, "identifier")
    if ident is None:
        warnings.append(f"{where}.subject: no patient identifier")
        return Patient(id="")
    authority = str_of(obj_of(ident, "assigner"), "display") or str_of(ident, "system")
    sex = _GENDER.get(str_of(resource, "gender"), "") if resource else ""
    birth = None
    if resource and str_of(resource, "birthDate"):
        birth = _date(str_of(resource, "birthDate"))
    return Patient(id=str_of(ident, "value"), id_authority=authority, sex=sex, birth_date=birth)


def _procedure(dr: JSON, requests: list[JSON], mapping: Mapping) -> Procedure:
    code = obj_of(dr, "code")
    own = codings(code)
    ordered = [c for r in requests for c in codings(obj_of(r, "code"))]
    text = concept_text(code)
    local = next((c for c in own if str_of(c, "code")), None)
    cpt_names = {n.upper() for n in mapping.cpt_coding_systems}

    def is_cpt(coding: JSON) -> bool:
        system = str_of(coding, "system")
        return system.lower() in CPT_SYSTEMS | HCPCS_SYSTEMS or system.upper() in cpt_names

    for source in (own, ordered):
        cpt = next((c for c in source if is_cpt(c) and str_of(c, "code")), None)
        if cpt is not None:
            local_code = str_of(local, "code") if source is ordered and local is not None else ""
            return Procedure(
                code=str_of(cpt, "code"),
                coding_system="CPT",
                text=text or str_of(cpt, "display"),
                local_code=local_code,
            )
    for coding in own:
        if str_of(coding, "code"):
            system = str_of(coding, "system")
            name = {LOINC: "LN", SNOMED: "SCT"}.get(system, system)
            return Procedure(code=str_of(coding, "code"), coding_system=name, text=text or str_of(coding, "display"))
    return Procedure(code="", text=text)


def _study_modality(studies: list[JSON]) -> str:
    for st in studies:
        for modality in objs(st, "modality"):  # Coding in R4, CodeableConcept in R5
            code = str_of(modality, "code") or next(
                (str_of(c, "code") for c in codings(modality) if str_of(c, "code")), ""
            )
            if code:
                return code
    return ""


def _reasons(requests: list[JSON]) -> tuple[str, tuple[str, ...]]:
    # Ordered sets: a list's ``in`` would cost n² for n reasons.
    texts: dict[str, None] = {}
    codes: dict[str, None] = {}
    for r in requests:
        for concept in objs(r, "reasonCode") + objs(r, "reason"):
            text = concept_text(concept)
            if text:
                texts[text] = None
            for coding in codings(concept):
                if _ICD10.search(str_of(coding, "system")):
                    codes[str_of(coding, "code").upper()] = None
    return "; ".join(texts), tuple(codes)


def _reader(dr: JSON, where: str, resolve: Resolve) -> Reader | None:
    refs = [(f"{where}.resultsInterpreter[{i}]", r) for i, r in enumerate(objs(dr, "resultsInterpreter"))]
    for i, performer in enumerate(objs(dr, "performer")):
        if "actor" in performer:  # STU3: performer.actor
            refs.append((f"{where}.performer[{i}].actor", obj_of(performer, "actor")))
        else:
            refs.append((f"{where}.performer[{i}]", performer))
    for path, ref in refs:
        resource = resolve(ref, path)
        if resource is not None and str_of(resource, "resourceType") == "PractitionerRole":
            role_ref = obj_of(resource, "practitioner")
            resource = resolve(role_ref, f"{path}.practitioner") or None
            ref = role_ref or ref
        if resource is not None and str_of(resource, "resourceType") == "Practitioner":
            idents = objs(resource, "identifier")
            ident = next((i for i in idents if "NPI" in identifier_type_codes_of(i)), None) or next(
                (i for i in idents if str_of(i, "value")), None
            )
            names = objs(resource, "name")
            name = _human_name(names[0]) if names else str_of(ref, "display")
            rid = str_of(ident, "value") if ident else str_of(resource, "id")
            return Reader(id=rid or name, name=name)
        kind = str_of(ref, "reference").split("/")[0]
        if resource is None and str_of(ref, "display") and kind in ("Practitioner", "PractitionerRole", ""):
            return Reader(id=str_of(ref, "display"), name=str_of(ref, "display"))
    return None


def identifier_type_codes_of(ident: JSON) -> set[str]:
    """Type codes of an identifier, plus "NPI" for the US NPI system."""
    codes = {str_of(c, "code").upper() for c in codings(obj_of(ident, "type"))}
    if str_of(ident, "system") == "http://hl7.org/fhir/sid/us-npi":
        codes.add("NPI")
    return codes


def _human_name(name: JSON) -> str:
    text = str_of(name, "text")
    if text:
        return text
    given = name.get("given")
    parts = [g for g in given if isinstance(g, str)] if isinstance(given, list) else []
    return " ".join(parts + [str_of(name, "family")]).strip()


def _order_laterality(procedure_text: str, table_laterality: str, requests: list[JSON]) -> str:
    """Side of the order: CPT table, ServiceRequest.bodySite (SNOMED laterality or words), code text."""
    if table_laterality == "bilateral":
        return "bilateral"
    words = [procedure_text]
    sides: set[str] = set()
    for request in requests:
        for site in objs(request, "bodySite"):
            words.append(concept_text(site))
            for coding in codings(site):
                if str_of(coding, "system") == SNOMED and str_of(coding, "code") in _SNOMED_SIDES:
                    sides.add(_SNOMED_SIDES[str_of(coding, "code")])
    if not sides:
        sides = {_SIDES[w] for text in words for w in re.findall(r"[A-Z]+", text.upper()) if w in _SIDES}
    if len(sides) == 1:
        return sides.pop()
    return "bilateral" if sides else ""


def _datetime(raw: str, path: str, warnings: list[str]) -> datetime | None:
    """A FHIR dateTime/instant; a date alone is midnight, year or month alone is dropped."""
    if not raw:
        return None
    try:
        if len(raw) == 10:
            return datetime.fromisoformat(raw)
        if len(raw) > 10:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        pass
    warnings.append(f"{path}: not a full date; ignored")
    return None


def _date(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if len(raw) == 10 else None
    except ValueError:
        return None
