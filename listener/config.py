"""Load and validate the daemon config (``overread.yaml``, docs/configuration.md).

Where the mappings, procedures and policies are, the state directory, the
listen endpoints and their limits, TLS and HTTP clients. The feed mappings
themselves are :mod:`listener.hl7v2.mapping`; :mod:`listener.assemble` loads
them with the rest into a Pipeline.

Reads YAML files once, at start-up or reload; everything it returns is a frozen
value, so a reload swaps it atomically. Every error is a ConfigError naming
file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from listener.errors import ConfigError
from listener.yamlconf import YamlMap, load_yaml


def default_mappings_dir() -> Path:
    """The default mappings/ directory: packaged in the wheel, or the checkout's (listener.resources)."""
    from listener.resources import defaults_root

    return defaults_root() / "mappings"


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
        "workers",
        "workers_inline",
        "worker_affinity",
        "health_probe_interval",
        "synchronous",
        "store",
        "store_password_file",
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
        "outcomes",
        "outbox",
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
#: Live discrepancy figures for routing (``outcomes:``, docs/routing.md): seconds between
#: refreshes (0: no live figures, readers.yaml only) and the window in days.
DEFAULT_OUTCOMES_REFRESH_SECONDS = 300.0
DEFAULT_OUTCOMES_WINDOW_DAYS = 90
_OUTCOMES_KEYS = frozenset({"refresh_seconds", "window_days"})
#: Seconds an outbound worker's claim on an outbox row lasts unless renewed (``outbox.lease_seconds``,
#: docs/outbound.md, "Leases"): another daemon takes a dead one's rows over after this long.
DEFAULT_OUTBOX_LEASE_SECONDS = 30.0
_OUTBOX_KEYS = frozenset({"lease_seconds"})
SYNCHRONOUS_MODES = ("FULL", "EXTRA", "NORMAL")
#: What an HTTP client may do: POST reports (``submit``), GET Task/DetectedIssue (``read``), the
#: ``/api`` queries and the console's operator actions (``operator``), POST peer-review scores as
#: Observation or QuestionnaireResponse (``score``), the web console (``console``) and, in it,
#: patient identifiers, report text and raw bodies (``phi``; docs/console.md).
HTTP_PERMISSIONS = ("submit", "read", "operator", "score", "console", "phi")
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


def usable_cpus() -> tuple[int, ...]:
    """The numbers of the CPUs this process may run on (its affinity), in order; empty where the
    platform does not tell (not Linux)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return ()


def usable_cores() -> int:
    """The cores this process may run on (``workers: auto``; docs/configuration.md)."""
    return len(usable_cpus()) or os.cpu_count() or 1


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
        workers: worker processes that run decode, QA and routing of HL7 v2
            messages; the default (``auto`` in the file) is one per core the
            process may use (:func:`usable_cores`); 0 or 1 (what a 1-core host
            gets from ``auto``): no processes, the pipeline runs on
            ``pipeline_workers`` threads in the daemon's own process
            (docs/configuration.md, "workers"; docs/hardening.md, "Worker processes").
        workers_inline: with worker processes, a message that arrives while no
            other is being checked runs on a thread in the daemon instead of
            crossing to a process (docs/configuration.md, "workers"); False:
            every HL7 v2 message runs on a process.
        worker_affinity: each worker process is bound to one of the CPUs the daemon may run on,
            in turn (docs/configuration.md, "worker_affinity"); False: they run on any of them.
        pipeline_budget: seconds one message's QA may take; past it the report
            is stored unchecked (``qa.timeout``) and routed by the policy's
            ``unchecked`` block (docs/hardening.md).
        health_probe_interval: seconds between the store's write probes (the
            health endpoint and ``overread_store_up`` report their result).
        synchronous: SQLite ``synchronous`` mode (FULL is the durable default).
        store_url: ``""`` for the SQLite store in ``state_dir`` (the default), or
            a ``postgresql://user@host:port/dbname`` URL (docs/store.md); never
            with a password in it.
        store_password_file: the file holding the PostgreSQL password (read
            when the store is opened), or None (libpq's ``PGPASSWORD`` or
            ``~/.pgpass`` then apply).
        raw_retention_days: days raw bodies are kept (0: forever).
        tls_certificate, tls_private_key: our PEM certificate (chain) and key,
            for an ``ssl:`` endpoint.
        tls_client_ca: PEM file of the CAs client certificates must chain to
            (mutual TLS: a client without such a certificate is refused).
        tls_allowed_subjects: if not empty, the client certificate's subject
            CN must be one of these.
        destinations_file: ``destinations.yaml`` naming where routing messages
            go (see ``listener.destinations``); None: none are sent.
        outcomes_refresh_seconds: seconds between refreshes of the live
            discrepancy figures the routing policy reads (``outcomes.refresh_seconds``;
            0: none, readers.yaml's snapshot only).
        outcomes_window_days: the days those figures cover, up to the refresh
            (``outcomes.window_days``).
        outbox_lease_seconds: how long a worker's claim on an outbox row lasts
            unless renewed (``outbox.lease_seconds``; docs/outbound.md, "Leases").
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
    workers: int = field(default_factory=usable_cores)
    workers_inline: bool = True
    worker_affinity: bool = True
    health_probe_interval: float = DEFAULT_HEALTH_PROBE_INTERVAL
    synchronous: str = "FULL"
    store_url: str = ""
    store_password_file: Path | None = None
    raw_retention_days: int = 0
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_allowed_subjects: tuple[str, ...] = ()
    destinations_file: Path | None = None
    outcomes_refresh_seconds: float = DEFAULT_OUTCOMES_REFRESH_SECONDS
    outcomes_window_days: int = DEFAULT_OUTCOMES_WINDOW_DAYS
    outbox_lease_seconds: float = DEFAULT_OUTBOX_LEASE_SECONDS

    @property
    def tls(self) -> bool:
        """True when the MLLP endpoint is ``ssl:`` (mutual TLS)."""
        return self.mllp_endpoint.startswith("ssl:")


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
    elif kind == "systemd" and ("domain" not in options or not ("name" in options or "index" in options)):
        return "systemd: needs domain= and name= (systemd:domain=INET:name=mllp)"
    return None


#: What ``workers`` (the file's key, ``overread serve --workers``) takes.
WORKERS_HINT = "'auto' or a whole number of processes (0 or 1: none, threads only)"


def workers_count(value: object) -> int | None:
    """``workers``: ``auto`` (one per usable core) or a whole number >= 0; None for anything else."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return usable_cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _workers(doc: YamlMap) -> int:
    """The file's ``workers`` (:func:`workers_count`)."""
    count = workers_count(doc.get("workers"))
    if count is None:
        raise doc.error("workers", f"workers: {WORKERS_HINT}")
    return count


def _endpoint(doc: YamlMap, key: str) -> str:
    value = doc.get_str(key).strip()
    if value:
        problem = endpoint_problem(value)
        if problem is not None:
            raise doc.error(key, f"{key}: {problem}")
    return value


def _store_url(doc: YamlMap) -> str:
    """``store:``: ``sqlite`` (the default: "" here) or a PostgreSQL URL without a password."""
    from listener.store.pgurl import is_postgresql_url, url_has_password

    value = doc.get_str("store").strip()
    if value in ("", "sqlite"):
        return ""
    if not is_postgresql_url(value):
        raise doc.error("store", "store: sqlite (the default) or a postgresql://user@host:port/dbname URL")
    if url_has_password(value):
        # The value itself is never quoted: it holds a secret.
        raise doc.error(
            "store", "store: the URL holds a password; give it in store_password_file or PGPASSWORD instead"
        )
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
                raise entry.get_list("allow").error(
                    i, f"allow: {permission!r} is not one of {', '.join(HTTP_PERMISSIONS)}"
                )
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


def _outcomes(node: YamlMap) -> dict[str, Any]:
    """``outcomes: {refresh_seconds: 300, window_days: 90}`` -> Config fields."""
    node.reject_unknown(_OUTCOMES_KEYS, "outcomes")
    out: dict[str, Any] = {}
    if "refresh_seconds" in node:
        seconds = node.get_number("refresh_seconds", minimum=0)
        if 0 < seconds < 1:
            raise node.error("refresh_seconds", "outcomes.refresh_seconds: 0 (no live figures) or at least 1")
        out["outcomes_refresh_seconds"] = seconds
    if "window_days" in node:
        days = node.get_number("window_days", minimum=1)
        if days != int(days) or days > 3650:
            raise node.error("window_days", "outcomes.window_days: whole days, 1 to 3650")
        out["outcomes_window_days"] = int(days)
    return out


def _outbox(node: YamlMap) -> dict[str, Any]:
    """``outbox: {lease_seconds: 30}`` -> Config fields."""
    node.reject_unknown(_OUTBOX_KEYS, "outbox")
    out: dict[str, Any] = {}
    if "lease_seconds" in node:
        seconds = node.get_number("lease_seconds", minimum=1)
        if seconds > 3600:
            raise node.error("lease_seconds", "outbox.lease_seconds: 1 to 3600")
        out["outbox_lease_seconds"] = float(seconds)
    return out


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
        for key, minimum in (
            ("max_frame_size", 1024),
            ("max_connections", 1),
            ("raw_retention_days", 0),
            ("max_connections_per_peer", 1),
            ("pipeline_workers", 1),
            ("http_max_connections", 1),
            ("http_max_connections_per_peer", 1),
        ):
            if key in doc:
                number = doc.get_number(key, minimum=minimum)
                if number != int(number):
                    raise doc.error(key, f"{key!r} must be a whole number")
                daemon[key] = int(number)
        if "idle_timeout" in doc:
            daemon["idle_timeout"] = doc.get_number("idle_timeout", minimum=0.1)
        if "workers" in doc:
            daemon["workers"] = _workers(doc)
        for key in ("workers_inline", "worker_affinity"):
            if key in doc:
                daemon[key] = doc.get_bool(key)
        if "pipeline_budget" in doc:
            daemon["pipeline_budget"] = doc.get_number("pipeline_budget", minimum=0.05)
        if "health_probe_interval" in doc:
            daemon["health_probe_interval"] = doc.get_number("health_probe_interval", minimum=0.1)
        if "synchronous" in doc:
            daemon["synchronous"] = doc.get_choice("synchronous", SYNCHRONOUS_MODES)
        if "store" in doc:
            daemon["store_url"] = _store_url(doc)
        if "store_password_file" in doc:
            if not daemon.get("store_url"):
                raise doc.error("store_password_file", "store_password_file: only for a postgresql:// store")
            file = (base / doc.get_str("store_password_file")).resolve()
            if not file.is_file():
                raise doc.error("store_password_file", "store_password_file: file not found")
            daemon["store_password_file"] = file
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
        if "outcomes" in doc:
            daemon.update(_outcomes(doc.get_map("outcomes")))
        if "outbox" in doc:
            daemon.update(_outbox(doc.get_map("outbox")))
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
