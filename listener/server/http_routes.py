"""What the HTTP listener's log lines and metrics say about a request's path: a route label.

Layer: pure functions (no Twisted). A request path is whatever the caller typed, and a caller
may type a patient's name, MRN or accession into it (``/fhir/DiagnosticReport/<id>``,
``/console/messages/<anything>``, ``/api/history/<accession>``). Log lines never hold patient
data (docs/monitoring.md, "Logs"), so they carry :func:`route_of` instead: the template of the
route the path matched (``/api/messages/{pk}``), or ``(unmatched)`` after the first segment when
that segment is one of ours (``/fhir/(unmatched)``); never a segment the caller chose, never the
query string. The metrics' ``endpoint`` label (:func:`endpoint_of`) is read from the same table.
"""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["ROUTES", "UNMATCHED", "endpoint_of", "method_of", "route_of"]

#: Every route the listener answers, as (template, metrics ``endpoint`` label); ``{name}`` stands
#: for one path segment the caller chooses. listener/server/http.py builds the resource tree and
#: listener/console/__init__.py registers the console's pages (tests/unit/server/test_http_routes.py
#: checks that every console page has its template here).
ROUTES: tuple[tuple[str, str], ...] = (
    ("/healthz", "healthz"),
    ("/metrics", "metrics"),
    ("/fhir", "fhir_bundle"),
    ("/fhir/DiagnosticReport", "fhir_report"),
    ("/fhir/Observation", "fhir_score"),
    ("/fhir/QuestionnaireResponse", "fhir_score"),
    ("/fhir/Task", "fhir_task"),
    ("/fhir/DetectedIssue", "fhir_detected_issue"),
    ("/api/messages", "api_messages"),
    ("/api/messages/{pk}", "api_messages"),
    ("/api/audit", "api_audit"),
    ("/api/history", "api_history"),
    ("/api/history/{accession}", "api_history"),
    ("/api/scorecard", "api_scorecard"),
    ("/console/", "console"),
    ("/console/login", "console"),
    ("/console/logout", "console"),
    ("/console/static/{file}", "console"),
    ("/console/messages", "console"),
    ("/console/messages/{pk}", "console"),
    ("/console/overread", "console"),
    ("/console/policy", "console"),
    ("/console/policy/run/{job}", "console"),
    ("/console/policy/run/{job}/cancel", "console"),
    ("/console/actions/{action}", "console"),
    ("/console/actions/reprocess/{pk}", "console"),
)

#: The label of a path that matches no route (after ``/<first segment>`` when that one is ours).
UNMATCHED = "(unmatched)"

#: The metrics label of a path that matches no route outside the console.
_OTHER_ENDPOINT = "other"

#: The request methods logged as sent; any other token is logged as ``other``.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


def _segments(template: str) -> tuple[str, ...]:
    return tuple(template.strip("/").split("/"))


_TEMPLATES = tuple((_segments(template), template, endpoint) for template, endpoint in ROUTES)
_FIRST_SEGMENTS = frozenset(segments[0] for segments, _, _ in _TEMPLATES)


def _match(path: str) -> tuple[str, str] | None:
    """The (template, endpoint) ``path`` matches, or None."""
    if not path.startswith("/"):
        return None  # an absolute-form target (http://host/...) or nothing: never ours by name
    parts = path[1:].split("/")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # one trailing slash: /fhir/ is /fhir, as the resource tree answers it
    # Twisted percent-decodes each segment before walking the tree: match what it walks.
    segments = tuple(unquote(p) for p in parts)
    for wanted, template, endpoint in _TEMPLATES:
        if len(wanted) == len(segments) and all(
            (w.startswith("{") and s != "") or w == s for w, s in zip(wanted, segments, strict=True)
        ):
            return template, endpoint
    return None


def _first(path: str) -> str | None:
    """The path's first segment when it is the first segment of one of our routes."""
    if not path.startswith("/"):
        return None
    first = unquote(path[1:].split("/", 1)[0])
    return first if first in _FIRST_SEGMENTS else None


def route_of(path: str) -> str:
    """The route label of a request path (its query string already cut off): the matched
    template, ``/<first>/(unmatched)`` below one of our first segments, else ``(unmatched)``.
    Never holds text of the path other than our own route names."""
    found = _match(path)
    if found is not None:
        return found[0]
    first = _first(path)
    return f"/{first}/{UNMATCHED}" if first is not None else UNMATCHED


def endpoint_of(path: str) -> str:
    """The ``endpoint`` label of ``overread_http_requests_total`` for a request path: the matched
    route's, ``console`` for any other path below ``/console``, else ``other``."""
    found = _match(path)
    if found is not None:
        return found[1]
    return "console" if _first(path) == "console" else _OTHER_ENDPOINT


def method_of(method: bytes) -> str:
    """The request method as logged: a standard method's name, else ``other`` (the method token is
    the caller's to choose too)."""
    text = method.decode("ascii", "replace")
    return text if text in _METHODS else "other"
