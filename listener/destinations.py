"""Per-destination settings for routing messages: where, how, and how to retry.

Pure values plus a loader: :func:`load_destinations` reads one YAML file
(``mappings/destinations.yaml``) and returns frozen settings; every mistake (an
unknown key, a bad value, a combination HL7 does not allow) is a
:class:`~listener.errors.ConfigError` naming ``file:line``. Nothing here opens
a connection: the endpoint is checked for shape only, the outbound worker
builds it with Twisted's ``clientFromString``.

See ``mappings/destinations.yaml`` for the documented schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from listener.yamlconf import YamlList, YamlMap, load_yaml, parse_yaml

__all__ = [
    "CARRIERS",
    "CHARSETS",
    "MESSAGE_TYPES",
    "VERSIONS",
    "DestinationSettings",
    "FhirSettings",
    "MessageSettings",
    "RetrySettings",
    "TlsSettings",
    "load_destinations",
    "parse_destinations",
]

#: Routing message types we build.
MESSAGE_TYPES = ("ORM^O01", "OMI^O23")
#: HL7 versions we build.
VERSIONS = ("2.5.1", "2.3.1")
#: Where the routing decision is written: ORC-25, the ZRT segment, OBX rows, the NTE summary.
CARRIERS = ("orc25", "zrt", "obx", "nte")
#: Output character sets (Python codec names) and their MSH-18 value.
CHARSETS = {"utf-8": "UNICODE UTF-8", "latin-1": "8859/1", "ascii": ""}
#: What to do with an AR answer.
ON_REJECT = ("dead_letter", "retry")
#: Twisted client endpoint types we accept.
_ENDPOINT_TYPES = ("tcp", "ssl", "tls")

_TOP_KEYS = frozenset({"version", "destinations"})
_DEST_KEYS = frozenset({"endpoint", "tls", "message", "retry", "enabled", "fhir"})
_FHIR_KEYS = frozenset({"base", "version"})
# A FHIR base path: absolute, URL-safe characters only (it goes into the request line).
_FHIR_BASE = re.compile(r"^/[A-Za-z0-9._~/-]{0,200}$")
_TLS_KEYS = frozenset({"certificate", "private_key", "ca"})
_MESSAGE_KEYS = frozenset(
    {
        "type",
        "version",
        "sending_application",
        "sending_facility",
        "receiving_application",
        "receiving_facility",
        "processing_id",
        "charset",
        "carriers",
        "send_release",
        "child_order",
    }
)
_RETRY_KEYS = frozenset(
    {"max_attempts", "backoff_base_seconds", "backoff_max_seconds", "ack_timeout_seconds", "on_reject"}
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# An HD namespace id we write into MSH-3..6: printable, no HL7 delimiters.
_HD_VALUE = re.compile(r"^[^|^~\\&\x00-\x1f\x7f]{0,180}$")


@dataclass(frozen=True, slots=True)
class MessageSettings:
    """How routing messages for one destination are built (see ``encode.py``).

    Attributes:
        message_type: ``ORM^O01`` or ``OMI^O23`` (OMI is 2.5.1 only; a report
            without an accession falls back to ORM, since IPC needs one).
        version: MSH-12, ``2.5.1`` or ``2.3.1`` (2.3.1 has no ORC-25).
        sending_application: MSH-3 (us).
        sending_facility: MSH-4 (us).
        receiving_application: MSH-5 (the RIS); empty: the report's MSH-3.
        receiving_facility: MSH-6 (the RIS); empty: the report's MSH-4.
        processing_id: MSH-11, P, T or D.
        charset: output codec, ``utf-8``, ``latin-1`` or ``ascii`` (MSH-18 from it).
        carriers: which of ORC-25, ZRT, OBX rows and the NTE summary are written.
        send_release: False means RELEASE decisions are not sent at all.
        child_order: also send an ``NW`` child order for OVERREAD and FINAL.
    """

    message_type: str = "ORM^O01"
    version: str = "2.5.1"
    sending_application: str = "OVERREAD"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"
    charset: str = "utf-8"
    carriers: frozenset[str] = frozenset(CARRIERS)
    send_release: bool = True
    child_order: bool = False


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How the outbound worker retries one destination.

    Attributes:
        max_attempts: attempts before a row is dead-lettered (>= 1).
        backoff_base_seconds: the first retry delay; it doubles per attempt.
        backoff_max_seconds: the delay never exceeds this.
        ack_timeout_seconds: how long to wait for the RIS's ACK.
        on_reject: ``dead_letter`` (default) or ``retry`` for an AR answer.
    """

    max_attempts: int = 10
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 600.0
    ack_timeout_seconds: float = 30.0
    on_reject: str = "dead_letter"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Client certificate for mutual TLS (paths resolved against the YAML file's folder)."""

    certificate: str
    private_key: str
    ca: str = ""


@dataclass(frozen=True, slots=True)
class FhirSettings:
    """A FHIR server destination: Task and DetectedIssue resources POSTed as a transaction Bundle.

    Attributes:
        base: the server's base path on the endpoint (``/fhir``); the Bundle is POSTed there
            over HTTP (``tcp:``) or HTTPS (``ssl:``/``tls:``).
        version: FHIR version of the resources, ``R4`` or ``R5``.
    """

    base: str = "/fhir"
    version: str = "R4"


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    """One RIS (or engine) that receives routing messages, or a FHIR server (``fhir`` set)."""

    name: str
    endpoint: str
    message: MessageSettings = MessageSettings()
    retry: RetrySettings = RetrySettings()
    tls: TlsSettings | None = None
    enabled: bool = True
    fhir: FhirSettings | None = None


def load_destinations(path: str | Path) -> tuple[DestinationSettings, ...]:
    """Load and validate a destinations file.

    Args:
        path: the YAML file (normally ``mappings/destinations.yaml``).

    Returns:
        Every destination, in file order (disabled ones included, with
        ``enabled=False``).

    Raises:
        ConfigError: naming ``file:line`` for unreadable YAML, an unknown key, a
            bad value, or a TLS file that does not exist.
    """
    return _destinations(load_yaml(path), Path(path).resolve().parent)


def parse_destinations(
    text: str, path: str = "<destinations>", *, base_dir: Path | None = None
) -> tuple[DestinationSettings, ...]:
    """Like :func:`load_destinations`, from YAML text (``path`` names it in errors)."""
    return _destinations(parse_yaml(text, path), base_dir or Path.cwd())


# -- validation --------------------------------------------------------------


def _destinations(doc: YamlMap, base_dir: Path) -> tuple[DestinationSettings, ...]:
    doc.reject_unknown(_TOP_KEYS)
    if "version" in doc and doc.get("version") != 1:
        raise doc.error("version", "'version' must be 1")
    section = doc.get_map("destinations", required=True)
    out: list[DestinationSettings] = []
    for name, node in section.items():
        if not _NAME.match(name):
            raise section.error(name, f"destination name {name!r} must be lower case letters, digits, '-' or '_'")
        if not isinstance(node, YamlMap):
            raise section.error(name, f"destination {name!r} must be a mapping")
        if not str(node.get("endpoint") or "").strip():
            raise section.error(name, f"destination {name!r}: missing required key 'endpoint'")
        out.append(_destination(name, node, base_dir))
    if not out:
        raise section.error(None, "'destinations' must name at least one destination")
    return tuple(out)


def _destination(name: str, node: YamlMap, base_dir: Path) -> DestinationSettings:
    where = f"destination {name!r}"
    node.reject_unknown(_DEST_KEYS, where)
    endpoint = node.get_str("endpoint").strip()
    kind = _check_endpoint(endpoint, node)
    tls = _tls(node.get_map("tls"), where, base_dir) if "tls" in node else None
    if tls is not None and kind == "tcp":
        raise node.error("tls", f"{where}: 'tls' needs an ssl: or tls: endpoint, not tcp:")
    return DestinationSettings(
        name=name,
        endpoint=endpoint,
        message=_message(node.get_map("message"), where),
        retry=_retry(node.get_map("retry"), where),
        tls=tls,
        enabled=node.get_bool("enabled", True),
        fhir=_fhir(node.get_map("fhir"), where) if "fhir" in node else None,
    )


def _fhir(node: YamlMap, where: str) -> FhirSettings:
    node.reject_unknown(_FHIR_KEYS, f"{where} fhir")
    base = node.get_str("base", "/fhir").strip().rstrip("/") or "/"
    if not _FHIR_BASE.match(base):
        raise node.error("base", f"{where} fhir: 'base' must be a path starting with '/', e.g. /fhir")
    version = node.get_str("version", "R4").strip().upper()
    if version not in ("R4", "R5"):
        raise node.error("version", f"{where} fhir: 'version' must be R4 or R5")
    return FhirSettings(base=base, version=version)


def _check_endpoint(endpoint: str, node: YamlMap) -> str:
    """Check a Twisted client endpoint string's shape; return its type."""
    # Twisted's syntax: type:arg:key=value..., with "\:" escaping a colon.
    parts = re.split(r"(?<!\\):", endpoint)
    kind = parts[0]
    if kind not in _ENDPOINT_TYPES:
        raise node.error(
            "endpoint", f"'endpoint' must be a Twisted client endpoint of type {', '.join(_ENDPOINT_TYPES)}"
        )
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    unknown = sorted(set(keywords) - {"host", "port"})
    if unknown or len(positional) > 2:
        extra = ", ".join(unknown) if unknown else ":".join(positional[2:])
        raise node.error(
            "endpoint",
            f"'endpoint' takes a host and a port only (the connect timeout is retry.ack_timeout_seconds), not {extra}",
        )
    host = keywords.get("host", positional[0] if positional else "")
    port = keywords.get("port", positional[1] if len(positional) > 1 else "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise node.error(
            "endpoint", "'endpoint' must name a host and a port from 1 to 65535, e.g. tcp:host=ris.example:port=6661"
        )
    return kind


def _tls(node: YamlMap, where: str, base_dir: Path) -> TlsSettings:
    node.reject_unknown(_TLS_KEYS, f"{where} tls")
    for key in ("certificate", "private_key"):
        if key not in node:
            raise node.error(None, f"{where} tls: missing required key {key!r}")
    paths: dict[str, str] = {}
    for key in ("certificate", "private_key", "ca"):
        if key not in node:
            continue
        raw = node.get_str(key).strip()
        path = Path(raw) if Path(raw).is_absolute() else base_dir / raw
        if not raw or not path.is_file():
            raise node.error(key, f"{where} tls: {key!r} file not found")
        paths[key] = str(path)
    return TlsSettings(certificate=paths["certificate"], private_key=paths["private_key"], ca=paths.get("ca", ""))


def _message(node: YamlMap, where: str) -> MessageSettings:
    node.reject_unknown(_MESSAGE_KEYS, f"{where} message")
    defaults = MessageSettings()
    version = node.get_choice("version", VERSIONS, defaults.version)
    message_type = node.get_choice("type", MESSAGE_TYPES, defaults.message_type)
    if message_type == "OMI^O23" and version != "2.5.1":
        raise node.error("type", f"{where} message: OMI^O23 needs version 2.5.1 (OMI does not exist in 2.3.1)")
    hd = {}
    for key in ("sending_application", "sending_facility", "receiving_application", "receiving_facility"):
        value = node.get_str(key, getattr(defaults, key)).strip()
        if not _HD_VALUE.match(value):
            raise node.error(key, f"{where} message: {key!r} must be plain text without HL7 delimiters")
        hd[key] = value
    if not hd["sending_application"]:
        raise node.error("sending_application", f"{where} message: 'sending_application' must not be empty")
    carriers = _carriers(node, where, version)
    return MessageSettings(
        message_type=message_type,
        version=version,
        processing_id=node.get_choice("processing_id", ("P", "T", "D"), defaults.processing_id),
        charset=node.get_choice("charset", tuple(CHARSETS), defaults.charset),
        carriers=carriers,
        send_release=node.get_bool("send_release", defaults.send_release),
        child_order=node.get_bool("child_order", defaults.child_order),
        **hd,
    )


def _carriers(node: YamlMap, where: str, version: str) -> frozenset[str]:
    if "carriers" not in node:
        # ORC-25 first appears in 2.4: 2.3.1 destinations carry the bucket elsewhere.
        return frozenset(CARRIERS) - ({"orc25"} if version == "2.3.1" else set())
    items: YamlList = node.get_list("carriers")
    names = items.strings()
    for i, name in enumerate(names):
        if name not in CARRIERS:
            raise items.error(i, f"{where} message: unknown carrier {name!r} (expected one of: {', '.join(CARRIERS)})")
        if name == "orc25" and version == "2.3.1":
            raise items.error(i, f"{where} message: ORC-25 does not exist in 2.3.1; use zrt or obx")
    chosen = frozenset(names)
    if not chosen & {"orc25", "zrt", "obx"}:
        raise node.error(
            "carriers", f"{where} message: 'carriers' must include orc25, zrt or obx (or the bucket is never sent)"
        )
    return chosen


def _retry(node: YamlMap, where: str) -> RetrySettings:
    node.reject_unknown(_RETRY_KEYS, f"{where} retry")
    defaults = RetrySettings()
    attempts = node.get_number("max_attempts", defaults.max_attempts, minimum=1)
    if attempts != int(attempts):
        raise node.error("max_attempts", f"{where} retry: 'max_attempts' must be a whole number")
    base = node.get_number("backoff_base_seconds", defaults.backoff_base_seconds, minimum=0.1)
    cap = node.get_number("backoff_max_seconds", defaults.backoff_max_seconds, minimum=0.1)
    if cap < base:
        raise node.error(
            "backoff_max_seconds", f"{where} retry: 'backoff_max_seconds' must be at least 'backoff_base_seconds'"
        )
    return RetrySettings(
        max_attempts=int(attempts),
        backoff_base_seconds=base,
        backoff_max_seconds=cap,
        ack_timeout_seconds=node.get_number("ack_timeout_seconds", defaults.ack_timeout_seconds, minimum=0.1),
        on_reject=node.get_choice("on_reject", ON_REJECT, defaults.on_reject),
    )
