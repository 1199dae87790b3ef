"""Load and validate mappings (and, later, daemon config and policies).

Reads YAML files once, at start-up or reload; everything it returns is a frozen
value, so the pure layers can share it between threads and a reload swaps it
atomically. Every error is a ConfigError naming file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping as MappingT

if TYPE_CHECKING:
    from listener.pipeline import Pipeline

from listener.errors import ConfigError
from listener.model import ResultStatus, SectionKind
from listener.text.sections import HeadingRules, compile_heading_rules
from listener.yamlconf import YamlList, YamlMap, load_yaml

_PATH_RE = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?$")

#: The keys of a mapping's `fields:` section, and what each feeds in the Report.
FIELD_KEYS = (
    "accession",
    "placer_order",
    "filler_order",
    "patient_id",
    "patient_id_authority",
    "patient_sex",
    "patient_birth_date",
    "procedure",
    "procedure_modifiers",
    "modality",
    "status",
    "priority",
    "observation_time",
    "report_time",
    "reader",
    "reason",
    "diagnosis_codes",
    "site",
    "financial_class",
)

_MAPPING_KEYS = frozenset(
    {
        "version",
        "match",
        "messages",
        "validation",
        "charset_fallback",
        "split_inline_segments",
        "fields",
        "cpt_coding_systems",
        "cpt_from_local_code",
        "local_codes",
        "status_values",
        "priority_values",
        "obx_sections",
        "obx_skip",
        "obx_skip_types",
        "headings",
    }
)

_PRIORITIES = ("stat", "asap", "routine")


@dataclass(frozen=True, slots=True)
class FieldPath:
    """One HL7 location: ``OBR-4.1`` is segment OBR, field 4, component 1."""

    segment: str
    field: int
    component: int = 0  # 0: the whole field
    subcomponent: int = 0

    def __str__(self) -> str:
        text = f"{self.segment}-{self.field}"
        if self.component:
            text += f".{self.component}"
        if self.subcomponent:
            text += f".{self.subcomponent}"
        return text


def parse_field_path(text: str) -> FieldPath:
    """Parse ``SEG-f[.c[.s]]``; raise ValueError when malformed."""
    match = _PATH_RE.match(text.strip())
    if not match:
        raise ValueError(text)
    seg, fld, comp, sub = match.groups()
    if int(fld) < 1 or (comp is not None and int(comp) < 1) or (sub is not None and int(sub) < 1):
        raise ValueError(text)
    return FieldPath(seg, int(fld), int(comp or 0), int(sub or 0))


@dataclass(frozen=True, slots=True)
class FeedMatch:
    """Which senders a feed mapping applies to (empty tuple: any)."""

    sending_application: tuple[str, ...] = ()
    sending_facility: tuple[str, ...] = ()

    def matches(self, application: str, facility: str) -> bool:
        app_ok = not self.sending_application or application.upper() in self.sending_application
        fac_ok = not self.sending_facility or facility.upper() in self.sending_facility
        return app_ok and fac_ok

    @property
    def specificity(self) -> int:
        return bool(self.sending_application) + bool(self.sending_facility)


@dataclass(frozen=True, slots=True)
class Mapping:
    """Where one feed keeps each field, and how to read its values."""

    name: str
    source: str
    match: FeedMatch
    accept: tuple[str, ...]
    ignore: tuple[str, ...]
    validation: str
    charset_fallback: str
    split_inline_segments: tuple[str, ...]
    fields: MappingT[str, tuple[FieldPath, ...]]
    cpt_coding_systems: frozenset[str]
    cpt_from_local_code: re.Pattern[str] | None
    local_codes: MappingT[str, str]
    status_values: MappingT[str, ResultStatus]
    priority_values: MappingT[str, str]
    obx_sections: MappingT[str, str]  # code -> SectionKind value or "text"
    obx_skip: frozenset[str]
    obx_skip_types: frozenset[str]
    headings: MappingT[str, SectionKind]  # upper-case heading -> kind
    heading_rules: HeadingRules = field(compare=False)

    @property
    def needed_segments(self) -> frozenset[str]:
        """Segments the decoder must read fields from for this mapping."""
        return frozenset(self.read_fields)

    @property
    def read_fields(self) -> MappingT[str, frozenset[int]]:
        """Per needed segment, the field numbers the mapping reads."""
        read: dict[str, set[int]] = {"MSH": set(range(1, 13)), "OBR": {2, 3, 4}, "ORC": {2, 3}}
        for paths in self.fields.values():
            for path in paths:
                read.setdefault(path.segment, set()).add(path.field)
        return {name: frozenset(fields) for name, fields in read.items()}


@dataclass(frozen=True, slots=True)
class MappingSet:
    """The default mapping and every feed override; picks one per sender."""

    default: Mapping
    feeds: tuple[Mapping, ...] = ()

    def for_sender(self, application: str, facility: str) -> Mapping:
        """Return the most specific feed whose `match:` fits, else the default."""
        best: Mapping | None = None
        for feed in self.feeds:
            if feed.match.matches(application, facility):
                if best is None or feed.match.specificity > best.match.specificity:
                    best = feed
        return best or self.default


def _strings(node: YamlMap, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    if key not in node:
        return default
    return node.get_list(key).strings()


def _field_paths(node: YamlList, key: str) -> tuple[FieldPath, ...]:
    out = []
    for i, text in enumerate(node.strings()):
        try:
            out.append(parse_field_path(text))
        except ValueError:
            raise node.error(i, f"fields.{key}: {text!r} is not an HL7 location like OBR-4.1") from None
    return tuple(out)


def _build_mapping(doc: YamlMap, name: str, base: Mapping | None) -> Mapping:
    doc.reject_unknown(_MAPPING_KEYS)
    if "version" in doc and doc.get("version") != 1:
        raise doc.error("version", "only mapping version 1 is known")

    def pick(key: str) -> bool:
        return key in doc or base is None

    match = FeedMatch()
    if "match" in doc:
        node = doc.get_map("match")
        node.reject_unknown({"sending_application", "sending_facility"}, "match")
        match = FeedMatch(
            tuple(s.upper() for s in _strings(node, "sending_application")),
            tuple(s.upper() for s in _strings(node, "sending_facility")),
        )
        if not match.specificity:
            raise doc.error("match", "match: needs sending_application and/or sending_facility")
    elif base is not None:
        raise doc.error(None, "a feed mapping needs a match: section")

    if pick("messages"):
        node = doc.get_map("messages")
        node.reject_unknown({"accept", "ignore"}, "messages")
        accept = tuple(s.upper() for s in _strings(node, "accept", ("ORU^R01",)))
        ignore = tuple(s.upper() for s in _strings(node, "ignore"))
        for kind in accept + ignore:
            if not re.fullmatch(r"[A-Z0-9]{3}(\^[A-Z0-9]{3})?", kind):
                raise node.error("accept" if kind in accept else "ignore", f"{kind!r} is not a message type like ORU^R01")
    else:
        assert base is not None
        accept, ignore = base.accept, base.ignore

    validation = doc.get_choice("validation", ("lenient", "strict"), "lenient") if pick("validation") else base.validation  # type: ignore[union-attr]
    if pick("charset_fallback"):
        fallback = doc.get_str("charset_fallback", "cp1252")
        try:
            "".encode(fallback)
        except LookupError:
            raise doc.error("charset_fallback", f"unknown character set {fallback!r}") from None
    else:
        fallback = base.charset_fallback  # type: ignore[union-attr]
    inline = _strings(doc, "split_inline_segments", base.split_inline_segments if base else ())

    fields: dict[str, tuple[FieldPath, ...]] = dict(base.fields) if base else {}
    if "fields" in doc:
        node = doc.get_map("fields")
        node.reject_unknown(set(FIELD_KEYS), "fields")
        for key in node:
            fields[key] = _field_paths(node.get_list(key), key)
    missing = [k for k in FIELD_KEYS if k not in fields]
    if missing:
        raise doc.error("fields", f"fields: missing {', '.join(missing)}")

    cpt_systems = (
        frozenset(s.upper() for s in _strings(doc, "cpt_coding_systems")) if pick("cpt_coding_systems") else base.cpt_coding_systems  # type: ignore[union-attr]
    )
    if pick("cpt_from_local_code"):
        pattern_text = doc.get_str("cpt_from_local_code", "")
        try:
            cpt_pattern = re.compile(pattern_text) if pattern_text else None
        except re.error:
            raise doc.error("cpt_from_local_code", "not a valid regular expression") from None
        if cpt_pattern is not None and cpt_pattern.groups != 1:
            raise doc.error("cpt_from_local_code", "the pattern needs exactly one group (the CPT code)")
    else:
        cpt_pattern = base.cpt_from_local_code  # type: ignore[union-attr]

    local_codes = _str_map(doc, "local_codes", base.local_codes if base else {})
    for code, cpt in local_codes.items():
        if not re.fullmatch(r"\d{4}[0-9A-Z]", cpt):
            raise doc.get_map("local_codes").error(code, f"local_codes: {cpt!r} is not a CPT code")

    status_values: dict[str, ResultStatus] = dict(base.status_values) if base else {}
    if "status_values" in doc:
        node = doc.get_map("status_values")
        for key in node:
            value = node.get_str(key)
            try:
                status_values[key.upper()] = ResultStatus(value)
            except ValueError:
                raise node.error(key, f"status_values: {value!r} is not one of {', '.join(s.value for s in ResultStatus)}") from None

    priority_values: dict[str, str] = dict(base.priority_values) if base else {}
    if "priority_values" in doc:
        node = doc.get_map("priority_values")
        for key in node:
            priority_values[key.upper()] = node.get_choice(key, _PRIORITIES)

    kinds = tuple(k.value for k in SectionKind)
    obx_sections: dict[str, str] = dict(base.obx_sections) if base else {}
    if "obx_sections" in doc:
        node = doc.get_map("obx_sections")
        for key in node:
            obx_sections[key.upper()] = node.get_choice(key, kinds + ("text",))

    obx_skip = frozenset(s.upper() for s in _strings(doc, "obx_skip")) if pick("obx_skip") else base.obx_skip  # type: ignore[union-attr]
    skip_types = frozenset(s.upper() for s in _strings(doc, "obx_skip_types")) if pick("obx_skip_types") else base.obx_skip_types  # type: ignore[union-attr]

    headings: dict[str, SectionKind] = dict(base.headings) if base else {}
    if "headings" in doc:
        node = doc.get_map("headings")
        for key in node:
            try:
                kind = SectionKind(key)
            except ValueError:
                raise node.error(key, f"headings: {key!r} is not a section ({', '.join(kinds)})") from None
            for word in node.get_list(key).strings():
                headings[" ".join(word.upper().split())] = kind
    if not headings:
        raise doc.error("headings", "headings: at least one heading is needed")

    return Mapping(
        name=name,
        source=doc.path,
        match=match,
        accept=accept,
        ignore=ignore,
        validation=validation,
        charset_fallback=fallback,
        split_inline_segments=tuple(s.upper() for s in inline),
        fields=MappingProxyType(fields),
        cpt_coding_systems=cpt_systems,
        cpt_from_local_code=cpt_pattern,
        local_codes=MappingProxyType(local_codes),
        status_values=MappingProxyType(status_values),
        priority_values=MappingProxyType(priority_values),
        obx_sections=MappingProxyType(obx_sections),
        obx_skip=obx_skip,
        obx_skip_types=skip_types,
        headings=MappingProxyType(headings),
        heading_rules=compile_heading_rules(headings),
    )


def _str_map(doc: YamlMap, key: str, base: MappingT[str, str]) -> dict[str, str]:
    out = dict(base)
    if key in doc:
        node = doc.get_map(key)
        for k in node:
            out[k.upper()] = node.get_str(k)
    return out


def load_mappings(directory: str | Path) -> MappingSet:
    """Load ``default.yaml`` and every ``feeds/*.yaml`` from a mappings directory.

    Raises:
        ConfigError: naming the file and line of the first problem found.
    """
    root = Path(directory)
    default = _build_mapping(load_yaml(root / "default.yaml"), "default", None)
    feeds = []
    for path in sorted((root / "feeds").glob("*.yaml")):
        feeds.append(_build_mapping(load_yaml(path), path.stem, default))
    return MappingSet(default=default, feeds=tuple(feeds))


def default_mappings_dir() -> Path:
    """The default mappings/ directory: packaged in the wheel, or the checkout's (listener.resources)."""
    from listener.resources import defaults_root

    return defaults_root() / "mappings"


def require_file(path: str | Path) -> Path:
    """Return ``path`` if it is a readable file, else a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("file not found", path=str(p))
    return p


_CONFIG_KEYS = frozenset(
    {
        "mappings",
        "procedures",
        "policies",
        "state_dir",
        "mllp",
        "http",
        "max_frame_size",
        "idle_timeout",
        "max_connections",
        "max_connections_per_peer",
        "pipeline_workers",
        "pipeline_budget",
        "health_probe_interval",
        "synchronous",
        "raw_retention_days",
        "tls_certificate",
        "tls_private_key",
        "tls_client_ca",
        "tls_allowed_subjects",
        "destinations",
        "http_clients",
        "http_max_body_size",
        "http_max_connections",
        "http_max_connections_per_peer",
    }
)
_PATH_KEYS = ("mappings", "procedures", "policies")

#: Daemon defaults (docs/configuration.md): loopback MLLP, the store under ./var.
DEFAULT_MLLP_ENDPOINT = "tcp:2575:interface=127.0.0.1"
#: FHIR, health and metrics (docs/http-api.md); ``off`` (or "") turns HTTP off.
DEFAULT_HTTP_ENDPOINT = "tcp:8080:interface=127.0.0.1"
DEFAULT_HTTP_MAX_BODY_SIZE = 4 * 1024 * 1024
#: Concurrent HTTP connections, in total and from one peer host (behind a
#: reverse proxy every request comes from the proxy: raise the per-peer cap).
DEFAULT_HTTP_MAX_CONNECTIONS = 200
DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER = 32
DEFAULT_STATE_DIR = "var"
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTIONS = 200
#: One peer address may hold this many of them (docs/hardening.md).
DEFAULT_MAX_CONNECTIONS_PER_PEER = 50
#: Pipeline worker threads, and one message's QA budget in seconds.
DEFAULT_PIPELINE_WORKERS = 2
DEFAULT_PIPELINE_BUDGET = 2.0
#: Seconds between write probes of the store.
DEFAULT_HEALTH_PROBE_INTERVAL = 10.0
SYNCHRONOUS_MODES = ("FULL", "EXTRA", "NORMAL")
#: What an HTTP client may do: POST reports (``submit``), GET Task/DetectedIssue (``read``).
HTTP_PERMISSIONS = ("submit", "read", "operator")
#: What a client may do when its entry has no ``allow:``. ``operator`` (the ``/api`` message
#: browser: raw bodies, report text, patients of every sender) is only ever given by name.
DEFAULT_HTTP_PERMISSIONS = ("submit", "read")
_HTTP_CLIENT_KEYS = frozenset(
    {"token_sha256", "token_file", "fhir_version", "accept_extra_fields", "facility", "allow"}
)
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class HttpClient:
    """One HTTP client allowed to call the FHIR API (``http_clients:`` in the config).

    Attributes:
        name: the client id; stored as the sender application of its messages.
        token_sha256: hex SHA-256 of its bearer token (the token itself is never kept).
        fhir_version: the FHIR version it always sends ("R4", "R5", "STU3"), or None
            to let the ``fhirVersion`` media-type parameter or ``meta.profile`` say.
        accept_extra_fields: strip elements its FHIR version does not define
            (vendor fields) instead of refusing the body.
        facility: its site, stored as the sender facility.
        allow: what it may do (see :data:`HTTP_PERMISSIONS`).
    """

    name: str
    token_sha256: str
    fhir_version: str | None = None
    accept_extra_fields: bool = False
    facility: str = ""
    allow: tuple[str, ...] = DEFAULT_HTTP_PERMISSIONS


@dataclass(frozen=True, slots=True)
class Config:
    """The daemon's configuration file, resolved to absolute paths.

    Attributes:
        source: the file it came from, or ``(defaults)``.
        mappings_dir, procedures_file, policies_dir: what the pipeline loads.
        state_dir: where the store (and the log hash key) live; relative to the
            working directory unless the file gave it (then relative to the file).
        mllp_endpoint: Twisted server endpoint string for MLLP.
        http_endpoint: endpoint for HTTP (FHIR, health, metrics), "" when off.
        http_clients: clients of the FHIR API with their bearer tokens; empty:
            no authentication (the loopback default).
        http_max_body_size: largest HTTP request body accepted, in bytes (413 above).
        http_max_connections, http_max_connections_per_peer: concurrent HTTP
            connections accepted in total and from one peer host; more get 503.
        max_frame_size: largest MLLP payload accepted, in bytes.
        idle_timeout: seconds without bytes before a connection is closed.
        max_connections: concurrent MLLP connections accepted; more are closed.
        max_connections_per_peer: of those, from one peer address (one host
            cannot take every slot).
        pipeline_workers: worker threads that run decode, QA and routing.
        pipeline_budget: seconds one message's QA may take; past it the report
            is stored unchecked (``qa.timeout``) and routed by the policy's
            ``unchecked`` block (docs/hardening.md).
        health_probe_interval: seconds between the store's write probes (the
            health endpoint and ``overread_store_up`` report their result).
        synchronous: SQLite ``synchronous`` mode (FULL is the durable default).
        raw_retention_days: days raw bodies are kept (0: forever).
        tls_certificate, tls_private_key: our PEM certificate (chain) and key,
            for an ``ssl:`` endpoint.
        tls_client_ca: PEM file of the CAs client certificates must chain to
            (mutual TLS: a client without such a certificate is refused).
        tls_allowed_subjects: if not empty, the client certificate's subject
            CN must be one of these.
        destinations_file: ``destinations.yaml`` naming where routing messages
            go (see ``listener.destinations``); None: none are sent.
    """

    source: str
    mappings_dir: Path
    procedures_file: Path
    policies_dir: Path
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    mllp_endpoint: str = DEFAULT_MLLP_ENDPOINT
    http_endpoint: str = DEFAULT_HTTP_ENDPOINT
    http_clients: tuple[HttpClient, ...] = ()
    http_max_body_size: int = DEFAULT_HTTP_MAX_BODY_SIZE
    http_max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS
    http_max_connections_per_peer: int = DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    pipeline_workers: int = DEFAULT_PIPELINE_WORKERS
    pipeline_budget: float = DEFAULT_PIPELINE_BUDGET
    health_probe_interval: float = DEFAULT_HEALTH_PROBE_INTERVAL
    synchronous: str = "FULL"
    raw_retention_days: int = 0
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_allowed_subjects: tuple[str, ...] = ()
    destinations_file: Path | None = None

    @property
    def tls(self) -> bool:
        """True when the MLLP endpoint is ``ssl:`` (mutual TLS)."""
        return self.mllp_endpoint.startswith("ssl:")

    def pipeline(self) -> "Pipeline":
        """Load mappings, the CPT table and policies into a Pipeline.

        Every file the policy needs must be there and hold something
        (:mod:`listener.manifest`): the loaders' fallbacks (no qa.yaml: rule
        defaults; no routing.yaml: no routing; no terms directory: the shipped
        vocabularies) are for tests and ``overread check --policy``, never for
        the daemon, whose routing would otherwise shrink without a word.

        Raises:
            ConfigError: naming the file (and line) of the first problem.
        """
        from listener.manifest import check_required_files, check_terms_loaded
        from listener.pipeline import Pipeline
        from listener.procedures import load_procedures
        from listener.qa.policy import load_qa_config
        from listener.routing import load_decider
        from listener.sites import load_directory

        check_required_files(self)
        terms_dir = self.policies_dir / "terms"
        procedures = load_procedures(self.procedures_file)
        directory = load_directory(self.policies_dir)
        qa = load_qa_config(self.policies_dir, procedures=procedures, directory=directory, terms_dir=terms_dir)
        # A file removed between the check and the load must not slip through either.
        check_terms_loaded(qa.terms.sources, terms_dir)
        from listener.routing import load_routing_policy, routing_decider

        routing = load_routing_policy(self.policies_dir / "routing.yaml", directory=directory, terms=qa.terms)
        return Pipeline(mappings=load_mappings(self.mappings_dir), procedures=procedures, qa=qa,
                        decide_route=routing_decider(routing), version=qa.version, routing_version=routing.version,
                        mapping_version=files_version(self.mappings_dir, self.procedures_file))


def files_version(directory: Path, *extra: Path) -> str:
    """A short hash of the YAML files under ``directory`` (names and bytes) and ``extra``.

    Logged as ``version`` of the mappings next to the QA and routing policy
    versions: two lines with the same three values were handled by the same
    configuration.
    """
    import hashlib

    digest = hashlib.sha256()
    files = sorted({*(p for p in directory.rglob("*.yaml") if p.is_file()), *(p for p in extra if p.is_file())})
    for file in files:
        try:
            data = file.read_bytes()
        except OSError:
            continue
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:10]


#: Server endpoint types the daemon listens on (Twisted endpoint string prefixes).
ENDPOINT_TYPES = ("tcp", "tcp6", "ssl", "unix", "systemd")


def endpoint_problem(text: str) -> str | None:
    """What is wrong with a listen endpoint string, or None when it looks usable.

    Checks the shape Twisted's parsers need (type, port number, known options)
    without a reactor, so a typo is reported with its file:line at start-up and
    on SIGHUP, not as a listen failure later.
    """
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ENDPOINT_TYPES:
        return f"not a Twisted endpoint string like tcp:2575:interface=127.0.0.1 (types: {', '.join(ENDPOINT_TYPES)})"
    positional: list[str] = []
    options: dict[str, str] = {}
    for part in rest.split(":") if rest else []:
        name, eq, value = part.partition("=")
        if eq:
            options[name] = value
        else:
            positional.append(part)
    if kind in ("tcp", "tcp6", "ssl"):
        port = options.pop("port", positional[0] if positional else "")
        if not port.isdigit() or int(port) > 65535:
            return f"{kind}: needs a port number from 0 to 65535 ({kind}:PORT[:interface=ADDR])"
        unknown = set(options) - {"interface", "backlog"}
        if unknown:
            return f"{kind}: unknown option {sorted(unknown)[0]!r} (interface, backlog)"
        if "backlog" in options and not options["backlog"].isdigit():
            return f"{kind}: backlog must be a whole number"
    elif kind == "unix":
        if not (options.get("address") or positional):
            return "unix: needs a socket path (unix:/run/overread/mllp.sock)"
    elif kind == "systemd":
        if "domain" not in options or not ("name" in options or "index" in options):
            return "systemd: needs domain= and name= (systemd:domain=INET:name=mllp)"
    return None


def _endpoint(doc: YamlMap, key: str) -> str:
    value = doc.get_str(key).strip()
    if value:
        problem = endpoint_problem(value)
        if problem is not None:
            raise doc.error(key, f"{key}: {problem}")
    return value


def _http_clients(node: YamlMap, base: Path) -> tuple[HttpClient, ...]:
    """``http_clients:``: client id -> token (hash or file), FHIR version, extras, facility, allow."""
    import hashlib

    from listener.errors import FhirDecodeError
    from listener.fhir.models import normalize_version

    clients = []
    for name in node:
        if not _CLIENT_ID_RE.match(name):
            raise node.error(name, f"http_clients: {name!r} is not a client id (letters, digits, . _ -)")
        entry = node.get_map(name)
        entry.reject_unknown(_HTTP_CLIENT_KEYS, f"http_clients.{name}")
        if ("token_sha256" in entry) == ("token_file" in entry):
            raise node.error(name, f"http_clients.{name}: give exactly one of token_sha256, token_file")
        if "token_sha256" in entry:
            digest = entry.get_str("token_sha256").strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise entry.error("token_sha256", "token_sha256: not 64 hex digits (sha256sum of the token)")
        else:
            file = (base / entry.get_str("token_file")).resolve()
            try:
                token = file.read_bytes().strip()
            except OSError:
                raise entry.error("token_file", "token_file: file not found or unreadable") from None
            if len(token) < 16:
                raise entry.error("token_file", "token_file: the token must be at least 16 characters")
            digest = hashlib.sha256(token).hexdigest()
        version: str | None = None
        if "fhir_version" in entry:
            try:
                version = normalize_version(entry.get_str("fhir_version"))
            except FhirDecodeError:
                raise entry.error("fhir_version", "fhir_version: must be R4, R5 or STU3") from None
        allow = entry.get_list("allow").strings() if "allow" in entry else DEFAULT_HTTP_PERMISSIONS
        for i, permission in enumerate(allow):
            if permission not in HTTP_PERMISSIONS:
                raise entry.get_list("allow").error(i, f"allow: {permission!r} is not one of {', '.join(HTTP_PERMISSIONS)}")
        clients.append(
            HttpClient(
                name=name,
                token_sha256=digest,
                fhir_version=version,
                accept_extra_fields=entry.get_bool("accept_extra_fields", False),
                facility=entry.get_str("facility", ""),
                allow=tuple(allow),
            )
        )
    if len({c.token_sha256 for c in clients}) != len(clients):
        raise node.error(None, "http_clients: two clients share one token")
    return tuple(clients)


def load_config(path: str | Path | None, *, mappings_dir: str | Path | None = None) -> Config:
    """Load the daemon config (or the embedded defaults when ``path`` is None).

    Relative paths in the file are resolved against the file's directory.

    Raises:
        ConfigError: naming the file and line of the first problem found.
    """
    root = default_mappings_dir().parent
    values: dict[str, Path] = {
        "mappings": root / "mappings",
        "procedures": root / "mappings" / "procedures.yaml",
        "policies": root / "policies",
    }
    daemon: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        doc = load_yaml(path)
        source = str(path)
        doc.reject_unknown(_CONFIG_KEYS)
        base = Path(path).resolve().parent
        for key in _PATH_KEYS:
            if key in doc:
                values[key] = (base / doc.get_str(key)).resolve()
        if "mappings" in doc and "procedures" not in doc:
            values["procedures"] = values["mappings"] / "procedures.yaml"
        if "state_dir" in doc:
            daemon["state_dir"] = (base / doc.get_str("state_dir")).resolve()
        if "mllp" in doc:
            daemon["mllp_endpoint"] = _endpoint(doc, "mllp")
            if not daemon["mllp_endpoint"]:
                raise doc.error("mllp", "mllp: an endpoint is required")
        if "http" in doc:
            # YAML reads a bare `off` as false.
            http = "" if doc.get("http") is False else doc.get_str("http").strip()
            daemon["http_endpoint"] = "" if http.lower() in ("", "off") else _endpoint(doc, "http")
        if "http_clients" in doc:
            daemon["http_clients"] = _http_clients(doc.get_map("http_clients"), base)
        if "http_max_body_size" in doc:
            number = doc.get_number("http_max_body_size", minimum=1024)
            if number != int(number):
                raise doc.error("http_max_body_size", "'http_max_body_size' must be a whole number")
            daemon["http_max_body_size"] = int(number)
        for key, minimum in (("max_frame_size", 1024), ("max_connections", 1), ("raw_retention_days", 0),
                             ("max_connections_per_peer", 1), ("pipeline_workers", 1),
                             ("http_max_connections", 1), ("http_max_connections_per_peer", 1)):
            if key in doc:
                number = doc.get_number(key, minimum=minimum)
                if number != int(number):
                    raise doc.error(key, f"{key!r} must be a whole number")
                daemon[key] = int(number)
        if "idle_timeout" in doc:
            daemon["idle_timeout"] = doc.get_number("idle_timeout", minimum=0.1)
        if "pipeline_budget" in doc:
            daemon["pipeline_budget"] = doc.get_number("pipeline_budget", minimum=0.05)
        if "health_probe_interval" in doc:
            daemon["health_probe_interval"] = doc.get_number("health_probe_interval", minimum=0.1)
        if "synchronous" in doc:
            daemon["synchronous"] = doc.get_choice("synchronous", SYNCHRONOUS_MODES)
        for key in ("tls_certificate", "tls_private_key", "tls_client_ca"):
            if key in doc:
                file = (base / doc.get_str(key)).resolve()
                if not file.is_file():
                    raise doc.error(key, f"{key}: file not found")
                daemon[key] = file
        if "destinations" in doc:
            file = (base / doc.get_str("destinations")).resolve()
            if not file.is_file():
                raise doc.error("destinations", "destinations: file not found")
            daemon["destinations_file"] = file
        if "tls_allowed_subjects" in doc:
            daemon["tls_allowed_subjects"] = doc.get_list("tls_allowed_subjects").strings()
        if str(daemon.get("http_endpoint", "")).startswith("ssl:"):
            missing = [k for k in ("tls_certificate", "tls_private_key", "tls_client_ca") if k not in daemon]
            if missing:
                raise doc.error("http", f"an ssl: endpoint needs {', '.join(missing)}")
        if str(daemon.get("mllp_endpoint", "")).startswith("ssl:"):
            missing = [k for k in ("tls_certificate", "tls_private_key", "tls_client_ca") if k not in daemon]
            if missing:
                raise doc.error("mllp", f"an ssl: endpoint needs {', '.join(missing)}")
    if mappings_dir is not None:
        values["mappings"] = Path(mappings_dir).resolve()
    if not (values["mappings"] / "default.yaml").is_file():
        raise ConfigError("mappings directory has no default.yaml", path=str(values["mappings"]))
    return Config(source, values["mappings"], values["procedures"], values["policies"], **daemon)
