"""The console's twisted.web resource: sign-in, sessions, CSRF, headers, page dispatch.

Layer: reactor code. Pages are plain functions run on a thread (they read the store and render a
Jinja2 template there); this module does everything that touches the request. See
docs/console.md for what users see and the security promises:

* Every page needs the ``console`` permission; a caller shows it with a bearer token (like
  ``/api``) or with a session cookie from ``/console/login``. A page may need more (``operator``
  for the operator actions); patient identifiers need ``phi`` (the pages ask :attr:`Caller.phi`).
* A POST authenticated by the session cookie carries the session's CSRF token in a ``csrf``
  form field, or it is refused (403) before the page runs. The sign-in form has its own token,
  bound to a short-lived cookie.
* Every answer has a strict Content-Security-Policy (no script at all, styles and images from
  the daemon only, charts as ``data:`` SVG images), ``Cache-Control: no-store``,
  ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``.
* Without ``http_clients`` nobody can sign in: the console shows patient data, so it is never
  served to anonymous callers.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import jinja2
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from listener.cli_common import terminal_safe
from listener.console.session import Session, Sessions, tokens_match
from listener.errors import StoreError
from listener.hl7v2.keys import shown_key
from listener.logs import get_logger
from listener.server.http_intake import HttpAnswer
from listener.server.http_routes import route_of

__all__ = [
    "CSP",
    "Caller",
    "Console",
    "ConsoleDeps",
    "Ctx",
    "Reply",
    "SESSION_COOKIE",
]

#: The session cookie's name; its value is a random id whose SHA-256 the daemon keeps.
SESSION_COOKIE = "overread_session"
#: The sign-in form's CSRF cookie (double submit: the form carries the same random value).
LOGIN_COOKIE = "overread_login"
#: No script anywhere; styles and images only from the daemon (charts are data: SVG images).
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HTML = "text/html; charset=utf-8"
_FORM = "application/x-www-form-urlencoded"
_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "console"
#: The pages in the navigation bar, in order: (page name, label).
NAV = (("", "Overview"), ("messages", "Messages"), ("overread", "Overread"), ("policy", "Policy"))


def _log() -> Any:
    return get_logger("listener.console")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a client of ``http_clients`` and what it may do.

    Attributes:
        via: ``session`` (signed in through the form) or ``bearer`` (an ``Authorization`` header).
        csrf: the session's CSRF token for the forms of the page ("" for bearer callers, whose
            POSTs need none: a bearer token is never sent by a browser on its own).
    """

    name: str
    allow: frozenset[str]
    via: str
    csrf: str = ""

    @property
    def phi(self) -> bool:
        """Whether patient identifiers, report text and raw bodies may be shown."""
        return "phi" in self.allow

    def may(self, permission: str) -> bool:
        """Whether the client's ``allow:`` includes ``permission``."""
        return permission in self.allow


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a page gets: the caller, the path below the page's name, the query and the form."""

    caller: Caller
    method: str
    rest: tuple[str, ...]
    params: Mapping[str, str]
    form: Mapping[str, str]
    now: datetime
    secure: bool = False

    def param(self, name: str, default: str = "") -> str:
        """A query parameter, stripped ("" when absent)."""
        return self.params.get(name, default).strip()


@dataclass(frozen=True, slots=True)
class Reply:
    """A page's answer: a template and its values, a redirect (``location``), or a body as is."""

    template: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    status: int = 200
    location: str = ""
    body: bytes = b""
    content_type: str = _HTML
    headers: tuple[tuple[str, str], ...] = ()


#: A page: called on a thread with the request's context; returns its reply.
Page = Callable[[Ctx], Reply]


@dataclass(slots=True)
class ConsoleDeps:
    """What the console uses of the daemon (built by listener/server/http.py).

    Attributes:
        clients: the live ``http_clients`` as token SHA-256 -> (client name, its ``allow``);
            read on every request, so a reload (SIGHUP) that removes a client or a permission
            takes effect on open sessions at once.
        bearer: checks an ``Authorization: Bearer`` request for a permission: the client's
            (name, allow), or the HttpAnswer (400/401/403) to send.
        send: writes an HttpAnswer, logs ``http_request`` and counts it.
        run_in_thread: runs a blocking call off the reactor.
        clock: the reactor's seconds (session expiry).
        services: what pages read beyond the request (the store, the pipeline, ...), by name.
    """

    clients: Callable[[], Mapping[str, tuple[str, frozenset[str]]]]
    bearer: Callable[[Any, str], tuple[str, frozenset[str]] | HttpAnswer]
    send: Callable[[Any, HttpAnswer], None]
    run_in_thread: Callable[..., defer.Deferred[Any]]
    clock: Callable[[], float]
    services: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Registered:
    page: Page
    methods: tuple[str, ...]
    needs: tuple[str, ...]


def environment() -> jinja2.Environment:
    """The console's Jinja2 environment: autoescaping on, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["stamp"] = _stamp
    env.filters["key"] = _key
    env.filters["visible"] = terminal_safe
    return env


def _key(stored: str) -> str:
    """A stored MSH key (control id, sender) as the sender wrote it, its control characters as
    ``\\xNN`` as on a terminal (docs/console.md, "Message browser")."""
    return terminal_safe(shown_key(stored))


def _stamp(value: Any) -> str:
    """A time as ``2026-12-06 07:30 UTC`` (an aware datetime or ISO text; "-" for none)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _static_files() -> dict[bytes, tuple[bytes, str]]:
    folder = resources.files("listener.console") / "static"
    kinds = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
    out = {}
    for item in folder.iterdir():
        suffix = Path(item.name).suffix
        if suffix in kinds:
            out[item.name.encode("ascii")] = (item.read_bytes(), kinds[suffix])
    return out


def safe_next(target: str) -> str:
    """Where to go after signing in (or after an action): a path of the console, never another
    site nor another path of the daemon.

    Refused (the overview instead): a scheme or host, a path outside ``/console/``, an empty,
    ``.`` or ``..`` segment (a browser resolves ``/console/../fhir`` to ``/fhir``), and a
    backslash or control character; each also when percent-encoded (docs/console.md, "Security").
    """
    parts = urlsplit(target)
    decoded = unquote(parts.path)
    segments = decoded.split("/")[2:]
    if (
        parts.scheme
        or parts.netloc
        or not parts.path.startswith("/console/")
        or "//" in decoded
        or any(s in (".", "..") for s in segments)
        or any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in target + unquote(target))
    ):
        return "/console/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Console:
    """The console: its pages, sessions and templates (one per HTTP site)."""

    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        self.sessions = Sessions(deps.clock)
        self.env = environment()
        self.static = _static_files()
        self.pages: dict[str, _Registered] = {}

    def page(self, name: str, page: Page, *, methods: Iterable[str] = ("GET",), needs: Iterable[str] = ()) -> None:
        """Serve ``page`` at ``/console/<name>`` (and below it); ``""`` is the overview."""
        self.pages[name] = _Registered(page, tuple(methods), tuple(needs))

    def resource(self) -> Resource:
        """The twisted.web resource to mount at ``/console``."""
        return _ConsoleResource(self)

    # ------------------------------------------------------------ rendering

    def render(self, reply: Reply, caller: Caller | None, page: str) -> HttpAnswer:
        """The HttpAnswer of a reply (templates rendered with the page frame's values)."""
        headers = list(_SECURITY_HEADERS) + list(reply.headers)
        if reply.location:
            headers.append(("Location", reply.location))
            return HttpAnswer(reply.status, b"", tuple(headers), _HTML)
        if not reply.template:
            return HttpAnswer(reply.status, reply.body, tuple(headers), reply.content_type)
        values = {"caller": caller, "csrf": caller.csrf if caller else "", "nav": NAV, "page": page}
        values.update(reply.context)
        body = self.env.get_template(reply.template).render(values).encode("utf-8")
        return HttpAnswer(reply.status, body, tuple(headers), _HTML)

    def problem(self, status: int, title: str, text: str, caller: Caller | None = None) -> HttpAnswer:
        """An HTML error page (never quoting the request)."""
        reply = Reply("problem.html.j2", {"title": title, "text": text}, status=status)
        return self.render(reply, caller, "problem")


_SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


def _cookie(name: str, value: str, *, secure: bool, max_age: int | None = None) -> tuple[str, str]:
    attrs = [f"{name}={value}", "Path=/console/", "HttpOnly", "SameSite=Strict"]
    if secure:
        attrs.append("Secure")
    if max_age is not None:
        attrs.append(f"Max-Age={max_age}")
    return ("Set-Cookie", "; ".join(attrs))


def _decode_pairs(raw: Iterable[tuple[bytes, Iterable[bytes]]]) -> dict[str, str] | None:
    out = {}
    try:
        for key, values in raw:
            for value in values:
                out[key.decode("utf-8")] = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return out


class _ConsoleResource(Resource):
    """``/console`` and everything below it."""

    isLeaf = True  # noqa: N815 - Twisted API

    def __init__(self, console: Console) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.console = console

    def render(self, request: Any) -> Any:
        d: defer.Deferred[HttpAnswer]
        try:
            result = self._answer(request)
        except Exception:  # noqa: BLE001 - answered as an HTML 500 page by broken() below
            d = defer.fail()
        else:
            d = result if isinstance(result, defer.Deferred) else defer.succeed(result)

        def broken(failure: Any) -> HttpAnswer:
            is_store = failure.check(StoreError) is not None
            _log().error("console_failed", error_type=failure.type.__name__ if failure.type else "")
            if is_store:
                return self.console.problem(503, "Store unavailable", "The message store cannot be read; try again.")
            return self.console.problem(500, "Internal error", "The page failed; the daemon's log names the error.")

        def send(answer: HttpAnswer) -> None:
            self.console.deps.send(request, answer)

        d.addErrback(broken).addCallback(send)
        return NOT_DONE_YET

    # ------------------------------------------------------------------ dispatch

    def _answer(self, request: Any) -> HttpAnswer | defer.Deferred[HttpAnswer]:
        console = self.console
        segments = [p.decode("utf-8", "replace") for p in (request.postpath or [])]
        if request.prepath and not segments:
            # /console without the slash: relative links need the folder form.
            return console.render(Reply(status=308, location="/console/"), None, "")
        name = segments[0] if segments else ""
        rest = tuple(s for s in segments[1:] if s)
        method = request.method.decode("ascii", "replace")
        if method == "HEAD":
            method = "GET"
        if name == "static":
            return self._static(rest)
        if name == "login":
            return self._login(request, method)
        if name == "logout":
            return self._logout(request, method)
        registered = console.pages.get(name)
        caller: Caller | None
        if registered is None or (rest and name == ""):
            return console.problem(404, "Not found", "There is no such console page.", self._caller(request))
        if method not in registered.methods:
            answer = console.problem(405, "Method not allowed", f"Use {', '.join(registered.methods)}.")
            return HttpAnswer(
                answer.status, answer.body, (*answer.headers, ("Allow", ", ".join(registered.methods))), _HTML
            )
        authorization = request.requestHeaders.getRawHeaders(b"authorization")
        if authorization:
            found = console.deps.bearer(request, "console")
            if isinstance(found, HttpAnswer):
                return found
            caller = Caller(found[0], found[1], "bearer")
        else:
            caller = self._caller(request)
            if caller is None:
                if method != "GET":
                    return console.problem(401, "Sign in", "Your session has ended: sign in again.")
                target = quote(request.uri.decode("utf-8", "replace"), safe="/?=&")
                return console.render(Reply(status=303, location=f"/console/login?next={target}"), None, name)
        assert caller is not None
        for permission in ("console", *registered.needs):
            if not caller.may(permission):
                request.ov_client = caller.name
                return console.problem(
                    403, "Not allowed", f"Client {caller.name} may not {permission} (its allow: list).", caller
                )
        request.ov_client = caller.name
        form: dict[str, str] = {}
        if method == "POST":
            parsed = self._form(request)
            if isinstance(parsed, HttpAnswer):
                return parsed
            form = parsed
            if caller.via == "session" and not tokens_match(form.get("csrf", ""), caller.csrf):
                route = route_of(request.path.decode("utf-8", "replace"))
                _log().warning("console_csrf_refused", sender_app=caller.name, route=route)
                return console.problem(
                    403, "Form expired", "The form's CSRF token is missing or wrong: reload the page.", caller
                )
        params = _decode_pairs(request.args.items())
        if params is None:
            return console.problem(400, "Bad request", "Query parameters must be UTF-8.", caller)
        ctx = Ctx(caller, method, rest, params, form, datetime.now(UTC), bool(request.isSecure()))

        def run() -> HttpAnswer:
            return console.render(registered.page(ctx), caller, name)

        return console.deps.run_in_thread(run)

    def _session(self, request: Any) -> tuple[Session, str] | None:
        raw = request.getCookie(SESSION_COOKIE.encode("ascii"))
        session_id = raw.decode("ascii", "replace") if raw else ""
        session = self.console.sessions.find(session_id)
        return (session, session_id) if session is not None else None

    def _caller(self, request: Any) -> Caller | None:
        """The signed-in caller of the session cookie, with the client's permissions as they are now."""
        found = self._session(request)
        if found is None:
            return None
        session, _ = found
        live = dict(self.console.deps.clients().values())
        allow = live.get(session.client)
        if allow is None:
            return None
        return Caller(session.client, allow, "session", session.csrf)

    def _form(self, request: Any) -> dict[str, str] | HttpAnswer:
        kind = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip().lower()
        if kind != _FORM:
            return self.console.problem(415, "Unsupported form", "Forms are sent as application/x-www-form-urlencoded.")
        request.content.seek(0)
        body = request.content.read()
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
        except (UnicodeDecodeError, ValueError):
            return self.console.problem(400, "Bad form", "The form is not UTF-8 or has too many fields.")

    # ---------------------------------------------------------------- static

    def _static(self, rest: tuple[str, ...]) -> HttpAnswer:
        found = self.console.static.get("/".join(rest).encode("utf-8", "replace")) if len(rest) == 1 else None
        if found is None:
            return self.console.problem(404, "Not found", "There is no such file.")
        body, kind = found
        return HttpAnswer(200, body, (("Cache-Control", "max-age=3600"), ("Content-Security-Policy", CSP)), kind)

    # ---------------------------------------------------------------- sign-in

    def _login(self, request: Any, method: str) -> HttpAnswer:
        console = self.console
        secure = bool(request.isSecure())
        params = _decode_pairs(request.args.items()) or {}
        target = safe_next(params.get("next", "/console/"))
        if not console.deps.clients():
            return console.problem(
                403,
                "No clients configured",
                "The console needs http_clients in the configuration, with a client allowed 'console' "
                "(docs/console.md).",
            )
        if method == "GET":
            if self._caller(request) is not None:
                return console.render(Reply(status=303, location=target), None, "login")
            return self._login_form(secure, target, "", 200)
        if method != "POST":
            return console.problem(405, "Method not allowed", "Use GET or POST.")
        form = self._form(request)
        if isinstance(form, HttpAnswer):
            return form
        target = safe_next(form.get("next", target))
        cookie = request.getCookie(LOGIN_COOKIE.encode("ascii"))
        nonce = cookie.decode("ascii", "replace") if cookie else ""
        sent = form.get("csrf", "")
        if not tokens_match(sent, nonce):
            _log().warning("console_login_refused", reason="csrf", peer=_peer(request))
            return self._login_form(secure, target, "The sign-in form expired: try again.", 403)
        token = form.get("token", "").strip()
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        found = console.deps.clients().get(digest) if token else None
        if found is None:
            _log().warning("console_login_refused", reason="unknown_token", peer=_peer(request))
            return self._login_form(secure, target, "That token is not valid.", 401)
        name, allow = found
        if "console" not in allow:
            _log().warning("console_login_refused", reason="not_allowed", sender_app=name, peer=_peer(request))
            return self._login_form(secure, target, f"Client {name} is not allowed the console.", 403)
        session_id, _ = console.sessions.open(name)
        request.ov_client = name
        _log().info("console_login", sender_app=name, peer=_peer(request))
        headers = (
            _cookie(SESSION_COOKIE, session_id, secure=secure),
            _cookie(LOGIN_COOKIE, "", secure=secure, max_age=0),
        )
        return console.render(Reply(status=303, location=target, headers=headers), None, "login")

    def _login_form(self, secure: bool, target: str, error: str, status: int) -> HttpAnswer:
        nonce = secrets.token_urlsafe(24)
        reply = Reply(
            "login.html.j2",
            {"login_csrf": nonce, "next": target, "error": error},
            status=status,
            headers=(_cookie(LOGIN_COOKIE, nonce, secure=secure, max_age=900),),
        )
        return self.console.render(reply, None, "login")

    def _logout(self, request: Any, method: str) -> HttpAnswer:
        console = self.console
        if method != "POST":
            return console.problem(405, "Method not allowed", "Sign out with the button (POST).")
        form = self._form(request)
        if isinstance(form, HttpAnswer):
            return form
        found = self._session(request)
        if found is not None:
            session, session_id = found
            if not session.csrf_ok(form.get("csrf", "")):
                return console.problem(403, "Form expired", "The form's CSRF token is missing or wrong.")
            console.sessions.close(session_id)
            _log().info("console_logout", sender_app=session.client)
        headers = (_cookie(SESSION_COOKIE, "", secure=bool(request.isSecure()), max_age=0),)
        return console.render(Reply(status=303, location="/console/login", headers=headers), None, "logout")


def _peer(request: Any) -> str:
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    return str(host) if host is not None else type(peer).__name__
