"""fhir.resources behind a small typed wall: FHIR versions, media types, validation.

Pure: no I/O, no clock, no logging. The only module that imports fhir.resources
for decoding; everything it lets out is plain JSON data or our own errors.

Strategy: the version is *chosen* (client setting, then the ``fhirVersion``
media-type parameter, then ``meta.profile``, then the client's default) and the
body is validated against that version only. Validating against one version and
falling back to another on failure would accept anything some version accepts
and make the error the sender sees depend on the order of attempts.

pydantic's ValidationError (and the KeyError/ValueError fhir.resources raises
for resource types a version does not have) are translated here, at the
boundary, into :class:`FhirDecodeError` whose expression is a FHIRPath built
from the error location; pydantic's own messages can quote input values and are
dropped.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from listener.errors import FhirDecodeError, FhirUnsupportedMediaType

#: Our version names -> fhir.resources package.
PACKAGES: MappingProxyType[str, str] = MappingProxyType(
    {"R4": "fhir.resources.R4B", "R5": "fhir.resources", "STU3": "fhir.resources.STU3"}
)

#: Spellings a client setting, a media-type parameter or a canonical version may use.
_VERSION_ALIASES = {
    "R4": "R4",
    "R4B": "R4",
    "4.0": "R4",
    "4.0.0": "R4",
    "4.0.1": "R4",
    "4.3": "R4",
    "4.3.0": "R4",
    "R5": "R5",
    "5.0": "R5",
    "5.0.0": "R5",
    "STU3": "STU3",
    "R3": "STU3",
    "3.0": "STU3",
    "3.0.1": "STU3",
    "3.0.2": "STU3",
}

#: Profile URL prefixes whose FHIR version is known (implementation guides built on one release).
PROFILE_VERSIONS: tuple[tuple[str, str], ...] = (
    ("http://hl7.org/fhir/us/core/", "R4"),
    ("http://hl7.org/fhir/uv/ips/", "R4"),
    ("http://hl7.org/fhir/3.0/", "STU3"),
    ("http://hl7.org/fhir/4.0/", "R4"),
    ("http://hl7.org/fhir/R4/", "R4"),
    ("http://hl7.org/fhir/5.0/", "R5"),
    ("http://hl7.org/fhir/R5/", "R5"),
    ("http://hl7.eu/fhir/imaging-r4/", "R4"),
    ("http://hl7.eu/fhir/imaging-r5/", "R5"),
)

#: Media types taken as FHIR JSON (the last is the DSTU2/STU3-era spelling).
JSON_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})

#: Resource types primed at start-up: what a radiology DiagnosticReport brings along, and the posted scores.
PRIMED_TYPES = (
    "Bundle",
    "DiagnosticReport",
    "Patient",
    "ServiceRequest",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "ImagingStudy",
    "Observation",
    "QuestionnaireResponse",
    "Composition",
    "Encounter",
    "OperationOutcome",
    "Task",
    "DetectedIssue",
)

# FHIR element names (JSON property names, with "_" for primitive extensions). A key of
# any other shape is not echoed: a sender's unknown key could itself be data.
_IDENT = re.compile(r"^_?[a-z][A-Za-z0-9]{0,63}$")
_MAX_ISSUES = 20


def normalize_version(name: str) -> str:
    """Return "R4", "R5" or "STU3" for any accepted spelling.

    Raises:
        FhirDecodeError: (not-supported) for an unknown version.
    """
    version = _VERSION_ALIASES.get(name.strip().upper()) or _VERSION_ALIASES.get(name.strip())
    if version is None:
        raise FhirDecodeError("FHIR version is not supported", issue_code="not-supported")
    return version


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed Content-Type: ``essence`` lower-cased, parameters by lower-cased name."""

    essence: str
    params: MappingProxyType[str, str]

    @property
    def fhir_version(self) -> str | None:
        """The ``fhirVersion`` parameter, normalised, or None."""
        raw = self.params.get("fhirversion")
        return normalize_version(raw) if raw else None

    @property
    def charset(self) -> str:
        """The ``charset`` parameter, or "utf-8"."""
        return self.params.get("charset", "utf-8").lower()


def parse_media_type(header: str | None) -> MediaType:
    """Parse a Content-Type header and check that it is FHIR JSON.

    Args:
        header: the header value; None means the caller already knows it is FHIR JSON
            (files given to ``overread check``).

    Raises:
        FhirUnsupportedMediaType: not a JSON media type, or not UTF-8 (FHIR requires UTF-8).
    """
    if header is None:
        return MediaType("application/fhir+json", MappingProxyType({}))
    essence, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            params[key.strip().lower()] = value.strip().strip('"')
    media = MediaType(essence.strip().lower(), MappingProxyType(params))
    if media.essence not in JSON_MEDIA_TYPES:
        raise FhirUnsupportedMediaType("content type must be application/fhir+json")
    if media.charset.replace("-", "").replace("_", "") not in ("utf8",):
        raise FhirUnsupportedMediaType("FHIR JSON must be UTF-8")
    return media


def version_from_profiles(profiles: Iterable[str]) -> str | None:
    """The FHIR version implied by ``meta.profile`` canonicals, or None when they do not say.

    A canonical's ``|version`` suffix counts only when it is a FHIR release
    number; an IG version (``|9.0.0``) says nothing about FHIR, the IG prefix does.
    """
    found: set[str] = set()
    for profile in profiles:
        url = profile.partition("|")[0]
        for prefix, version in PROFILE_VERSIONS:
            if url.startswith(prefix):
                found.add(version)
    if len(found) > 1:
        raise FhirDecodeError(
            "meta.profile names profiles of different FHIR versions", issue_code="invariant", expression="meta.profile"
        )
    return found.pop() if found else None


def choose_version(
    *,
    configured: str | None,
    media: MediaType,
    profiles: Sequence[str],
    default: str,
    allowed: Iterable[str],
) -> str:
    """Pick the one FHIR version the body is validated against.

    Order: the client's configured version; the media type's ``fhirVersion``
    (which must agree with a configured version); ``meta.profile``; the
    client's default.

    Raises:
        FhirDecodeError: (not-supported) for a version the client may not send, or a
            media type that contradicts the client's configuration.
    """
    from_media = media.fhir_version
    if configured is not None:
        version = normalize_version(configured)
        if from_media is not None and from_media != version:
            raise FhirDecodeError(
                "the fhirVersion media-type parameter does not match this client's FHIR version",
                issue_code="not-supported",
            )
    elif from_media is not None:
        version = from_media
    else:
        version = version_from_profiles(profiles) or normalize_version(default)
    if version not in {normalize_version(a) for a in allowed}:
        raise FhirDecodeError(f"FHIR {version} is not accepted from this client", issue_code="not-supported")
    return version


def model_class(version: str, resource_type: str) -> Callable[..., Any]:
    """The fhir.resources class of ``resource_type`` in ``version`` (ValueError if it has none)."""
    package = importlib.import_module(PACKAGES[version])
    get: Callable[[str], Any] = package.get_fhir_model_class
    cls: Callable[..., Any] = get(resource_type)
    return cls


def prime_models(versions: Iterable[str] = ("R4", "R5")) -> None:
    """Import and build the validators of the resource types we meet, once, at start-up.

    A model class's first validation costs ~17 ms (pydantic builds its schema
    lazily); doing it here keeps that off the first request of each type.
    """
    for version in versions:
        version = normalize_version(version)
        for name in PRIMED_TYPES:
            try:
                cls = model_class(version, name)
            except (ValueError, KeyError):  # a type this version does not have (STU3: ServiceRequest)
                continue
            try:
                cls.model_validate({"resourceType": name})  # type: ignore[attr-defined]
            except ValidationError:
                pass  # the empty resource is invalid; the validators are built now


def validate(version: str, resource: dict[str, Any]) -> None:
    """Validate one resource (DiagnosticReport or Bundle) against ``version``.

    Raises:
        FhirDecodeError: naming every failing element (up to 20) by FHIRPath.
    """
    root = str(resource.get("resourceType", ""))
    try:
        cls = model_class(version, root)
        cls.model_validate(resource)  # type: ignore[attr-defined]
    except ValidationError as exc:
        raise _translate(root, exc.errors(include_input=False, include_url=False)) from None
    except (KeyError, ValueError, TypeError):
        # fhir.resources meets a resourceType this version does not define
        # (STU3 has no ServiceRequest) and raises KeyError/ValueError quoting it.
        raise FhirDecodeError(
            f"a resource type in the body is not defined in FHIR {version}",
            issue_code="not-supported",
            expression=root,
        ) from None


def extra_field_paths(version: str, resource: dict[str, Any]) -> tuple[tuple[str | int, ...], ...]:
    """Locations of elements the model does not define (``extra_forbidden``), for stripping."""
    root = str(resource.get("resourceType", ""))
    try:
        model_class(version, root).model_validate(resource)  # type: ignore[attr-defined]
    except ValidationError as exc:
        return tuple(
            tuple(p for p in err["loc"] if isinstance(p, (str, int)))
            for err in exc.errors(include_input=False, include_url=False)
            if err["type"] == "extra_forbidden"
        )
    except (KeyError, ValueError, TypeError):
        return ()
    return ()


def fhirpath(root: str, loc: Sequence[object]) -> str:
    """``('entry', 2, 'resource', 'class')`` -> ``Bundle.entry[2].resource.class``.

    JSON property names are kept (``effectiveDateTime``, not ``effective.ofType(dateTime)``);
    pydantic's internal location parts (``root``, validator names) are dropped.
    """
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENT.match(part) and part != "root":
            out += f".{part}"
    return out


def issue_code_for(error_type: str) -> str:
    """OperationOutcome issue type for a pydantic error type."""
    if error_type == "missing" or error_type.endswith(".missing"):
        return "required"
    if error_type in ("extra_forbidden", "json_invalid", "model_validation_format") or error_type.endswith("_type"):
        return "structure"
    if "resource-type" in error_type or "resource_type" in error_type:
        return "invalid"
    return "value"


_DESCRIPTIONS = {
    "required": "is required but missing",
    "structure": "is not allowed here or has the wrong JSON shape",
    "value": "has a value that is not valid for its type",
    "invalid": "is not valid",
}


def _translate(root: str, errors: Sequence[Any]) -> FhirDecodeError:
    issues: list[tuple[str, str, str]] = []
    for err in errors[:_MAX_ISSUES]:
        code = issue_code_for(str(err.get("type", "")))
        where = fhirpath(root, err.get("loc", ()))
        issues.append((code, where, f"{where} {_DESCRIPTIONS.get(code, 'is not valid')}"))
    if not issues:
        issues.append(("invalid", root, f"{root} is not valid"))
    code, where, message = issues[0]
    if len(errors) > 1:
        message += f" ({len(errors)} problems)"
    return FhirDecodeError(message, issue_code=code, expression=where, issues=tuple(issues))
