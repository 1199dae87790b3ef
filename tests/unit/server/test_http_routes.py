"""Route labels: what the HTTP log lines and metrics say about a path, never the path as sent
(listener/server/http_routes.py, docs/monitoring.md "Logs")."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import defer

from listener.console import ConsoleDeps, build_console
from listener.server.http_routes import ROUTES, UNMATCHED, endpoint_of, method_of, route_of
from listener.store import SQLiteStore

#: A made-up patient (tests/integration/test_http_log_privacy.py uses the same kind of values).
NAME = "Quennell^Avarina"
MRN = "MRN4417093"


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/healthz", "/healthz"),
        ("/fhir", "/fhir"),
        ("/fhir/", "/fhir"),
        ("/fhir/DiagnosticReport", "/fhir/DiagnosticReport"),
        ("/fhir/Diagnostic%52eport", "/fhir/DiagnosticReport"),
        (f"/fhir/DiagnosticReport/{MRN}", f"/fhir/{UNMATCHED}"),
        (f"/fhir//{MRN}", f"/fhir/{UNMATCHED}"),
        ("/api/messages/", "/api/messages"),
        ("/api/messages/12", "/api/messages/{pk}"),
        (f"/api/messages/{MRN}", "/api/messages/{pk}"),
        (f"/api/messages/{MRN}/{NAME}", f"/api/{UNMATCHED}"),
        (f"/api/history/{MRN}", "/api/history/{accession}"),
        (f"/api/{NAME}", f"/api/{UNMATCHED}"),
        ("/console", "/console/"),
        ("/console/", "/console/"),
        (f"/console/messages/{NAME}", "/console/messages/{pk}"),
        ("/console/actions/reprocess/7", "/console/actions/reprocess/{pk}"),
        (f"/console/actions/{MRN}", "/console/actions/{action}"),
        (f"/console/{NAME}", f"/console/{UNMATCHED}"),
        (f"/{MRN}", UNMATCHED),
        (f"/{NAME}/fhir", UNMATCHED),
        ("/", UNMATCHED),
        ("", UNMATCHED),
        (f"http://{MRN}.example/fhir", UNMATCHED),
    ],
)
def test_a_path_is_labelled_by_its_route_never_by_what_the_caller_typed(path: str, route: str) -> None:
    assert route_of(path) == route
    assert MRN not in route and "Quennell" not in route


def test_every_route_template_is_its_own_label_and_keeps_its_metrics_endpoint() -> None:
    for template, endpoint in ROUTES:
        path = template.replace("{", "x").replace("}", "")
        assert route_of(path) == template
        assert endpoint_of(path) == endpoint


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/fhir/DiagnosticReport", "fhir_report"),
        ("/fhir/QuestionnaireResponse", "fhir_score"),
        ("/api/history/ACC1", "api_history"),
        (f"/console/{NAME}/x", "console"),
        (f"/fhir/DiagnosticReport/{MRN}", "other"),
        (f"/{MRN}", "other"),
    ],
)
def test_metrics_endpoint_of_a_path(path: str, endpoint: str) -> None:
    assert endpoint_of(path) == endpoint


def test_a_method_outside_the_standard_ones_is_logged_as_other() -> None:
    assert method_of(b"GET") == "GET"
    assert method_of(b"PATCH") == "PATCH"
    assert method_of(NAME.encode()) == "other"
    assert method_of(b"\xff") == "other"


def test_every_console_page_has_a_route(tmp_path: Path) -> None:
    """A page registered by build_console (and a path below it) is labelled by a template of
    ROUTES, not ``(unmatched)``: a new page without one fails here."""
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    try:
        deps = ConsoleDeps(
            clients=dict,
            bearer=lambda request, permission: ("nobody", frozenset()),
            send=lambda request, answer: None,
            run_in_thread=defer.maybeDeferred,
            clock=lambda: 0.0,
            services={
                "store": store,
                "queries": store.reports,
                "pipeline": lambda: None,
                "outcome_rules": lambda: None,
                "fhir_clients": dict,
            },
        )
        console = build_console(deps)
    finally:
        store.close()
    templates = {template for template, _ in ROUTES}
    assert console.pages
    for name in console.pages:
        page_routes = {t for t in templates if t == f"/console/{name}" or t.startswith(f"/console/{name}/")}
        assert page_routes or name == "", name
        for template in page_routes:
            assert route_of(template.replace("{", "x").replace("}", "")) == template
    assert route_of("/console/") in templates
