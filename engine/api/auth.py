"""Who may talk to the HTTP surface: the API token, the Host allow-list and the CSRF rule.

Three holes close here, in one middleware, before any handler runs:

- **No token off loopback.** ``sluice serve --host 0.0.0.0`` without ``SLUICE_API_TOKEN`` refuses
  to start (:class:`AuthConfigError`). With a token, every route needs it (``Authorization:
  Bearer``, or the dashboard's login cookie) except ``/healthz`` and the webhooks, which carry
  their own auth (a secret, an HMAC or a token per trigger).
- **DNS rebinding.** A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 reaches the
  server with ``Host: evil.example``; only the bound address, loopback names (when bound to
  loopback) and the configured ``allowed_hosts`` are served. A wildcard bind (``0.0.0.0``) also
  serves any IP literal: rebinding needs a name, never an IP.
- **CSRF.** A web page can make the browser send a form or ``text/plain`` body (no preflight);
  it cannot send ``application/json`` or an ``Authorization`` header cross-origin. So a
  state-changing request must carry a JSON content type or the bearer token, and one with a
  foreign ``Origin`` is refused outright. The login form (``/login``) is the one form route: it
  only sets a cookie, and only for the right token.

The dashboard cookie holds an HMAC of the token, never the token itself, so a cookie seen in a
proxy log does not give API access with a bearer header.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from engine.api.http import Handler
from engine.config import ConfigError
from engine.runtokens import PREFIX as RUN_TOKEN_PREFIX
from engine.runtokens import RunTokens
from triggers.webhook import json_error
from workflows.secrets import register as register_secret

TOKEN_ENV = "SLUICE_API_TOKEN"
TOKEN_FILE_ENV = "SLUICE_API_TOKEN_FILE"
HOSTS_ENV = "SLUICE_ALLOWED_HOSTS"
COOKIE = "sluice_session"
#: the shortest token accepted: 128 bits of `sluice token`'s urlsafe base64 is 22 characters
MIN_TOKEN_CHARS = 16
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: the methods a page's script may send (fetch); TRACE and CONNECT it cannot, and no route takes
#: them, so they go on to the router's 405 rather than a content-type error
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: paths open without the token: liveness, the login form and its assets; webhooks have their own auth
OPEN_PATHS = frozenset({"/healthz", "/login", "/logout"})
OPEN_PREFIXES = ("/hooks/", "/static/")
#: browser pages: an unauthenticated GET is sent to the login form rather than answered 401
PAGE_PREFIXES = ("/api/", "/hooks/", "/metrics", "/readyz")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class AuthConfigError(ConfigError):
    """The server cannot start with this auth setup; the message says what to set."""


def new_token() -> str:
    """A fresh API token (``sluice token``): 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_name(header: str) -> str:
    """The name in a Host (or Origin authority) value, without the port, lower case, no brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """What the middleware enforces for one bound address."""

    bound_host: str = "127.0.0.1"
    token: str | None = field(default=None, repr=False)
    allowed_hosts: frozenset[str] = frozenset()
    #: the function handlers' run-scoped tokens (engine/runtokens.py); None: refused like any wrong token
    run_tokens: RunTokens | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise AuthConfigError(
                f"{TOKEN_ENV} is too short ({len(self.token)} characters); "
                f"use at least {MIN_TOKEN_CHARS}, e.g. one made by `sluice token`"
            )
        if self.token is None and not is_loopback(self.bound_host):
            raise AuthConfigError(
                f"refusing to serve on {self.bound_host} without an API token: anyone who can reach it "
                f"could start runs. Set {TOKEN_ENV} (make one with `sluice token`), or serve on 127.0.0.1"
            )

    @classmethod
    def from_env(cls, bound_host: str, allowed_hosts: Iterable[str] = ()) -> AuthPolicy:
        """The token from ``$SLUICE_API_TOKEN`` (or the file ``$SLUICE_API_TOKEN_FILE`` names, as
        systemd credentials and Docker secrets give it); extra names from ``$SLUICE_ALLOWED_HOSTS``
        (comma-separated) and ``allowed_hosts`` (the server config)."""
        token = os.environ.get(TOKEN_ENV) or None
        path = os.environ.get(TOKEN_FILE_ENV)
        if token is None and path:
            try:
                token = Path(path).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise AuthConfigError(f"{TOKEN_FILE_ENV}={path}: cannot read it: {exc.strerror}") from None
        if token is not None:  # hidden like a workflow's ${env:...}; function workers never see it
            register_secret({TOKEN_ENV: token})
        names = [n for n in os.environ.get(HOSTS_ENV, "").split(",") if n.strip()]
        return cls(bound_host, token, frozenset(host_name(n) for n in [*names, *allowed_hosts]))

    # -- the checks ----------------------------------------------------------------------------

    def host_allowed(self, name: str) -> bool:
        if name in self.allowed_hosts:
            return True
        bound = host_name(self.bound_host)
        if _is_wildcard(bound):
            return _is_ip(name) or name == "localhost"
        if is_loopback(bound):
            return name in LOOPBACK_NAMES or name == bound
        return name == bound

    def token_ok(self, request: web.Request) -> bool:
        """The bearer header or the dashboard cookie carries the token."""
        if self.bearer_ok(request):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session_value().encode())

    def bearer_ok(self, request: web.Request) -> bool:
        if self.token is None:
            return False
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def session_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"sluice dashboard session", hashlib.sha256).hexdigest()


def _needs_token(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def _is_json(content_type: str) -> bool:
    """JSON, which no web page can send cross-origin without a preflight (AWS's JSON 1.x too)."""
    return (
        content_type == "application/json"
        or content_type.endswith("+json")
        or content_type.startswith("application/x-amz-json-")
    )


#: the AWS-compatible routes (engine/aws/): they check their own SigV4 signature against the token
AWS_PATHS = ("/v1/",)


def _signed_for_aws(request: web.Request) -> bool:
    """A SigV4-signed request to an AWS route; that route verifies the signature itself."""
    signed = request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 ")
    return signed and (
        request.path.startswith(AWS_PATHS) or (request.path == "/" and request.method == "POST")
    )


def guard(policy: AuthPolicy) -> Middleware:
    """The middleware for ``policy``; it sits inside ``errors_as_json``."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = host_name(request.headers.get("Host", "")) if "Host" in request.headers else ""
        if name and not policy.host_allowed(name):
            return json_error(
                403,
                "host_not_allowed",
                f"Host {name!r} is not served here; add it to allowed_hosts in the server config "
                f"(or {HOSTS_ENV}) if this server really has that name",
            )
        state_changing = request.method not in SAFE_METHODS
        origin = request.headers.get("Origin")
        if (
            state_changing
            and origin
            and origin != "null"
            and not policy.host_allowed(host_name(origin.split("://", 1)[-1].split("/", 1)[0]))
        ):
            return json_error(403, "cross_origin", f"requests from the web page {origin} are refused")
        bearer = _bearer(request)
        if bearer is not None and bearer.startswith(RUN_TOKEN_PREFIX):
            return await _as_run(policy, bearer, request, handler)
        if (
            policy.token is not None
            and _needs_token(request.path)
            and not policy.token_ok(request)
            and not _signed_for_aws(request)
        ):
            if request.method == "GET" and not request.path.startswith(PAGE_PREFIXES):
                return _see_other("/login?next=" + quote(request.path_qs, safe="/"))
            return json_error(
                401,
                "unauthorized",
                "this server needs its API token: send Authorization: Bearer <token> "
                f"(the CLI reads ${TOKEN_ENV})",
                headers={"WWW-Authenticate": 'Bearer realm="sluice"'},
            )
        if (
            request.method in BODY_METHODS
            and not isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed)  # a 405 it is
            and request.path not in OPEN_PATHS
            and not request.path.startswith("/hooks/")
            and not _is_json(request.content_type)
            and not policy.bearer_ok(request)
            and not _signed_for_aws(request)  # a page cannot send an Authorization header either
        ):
            return json_error(
                415,
                "json_required",
                f"send Content-Type: application/json (got {request.content_type or 'none'}); "
                "state-changing requests are JSON so a web page cannot forge them",
            )
        return await handler(request)

    return check


# -- run-scoped tokens (a function handler's context.sluice) -------------------------------------

#: what a run's token may do: (method, path pattern, what the path's id must be: "own" = the run
#: itself or a job/run it made, None = anything); every other route is refused
_RUN_ROUTES: tuple[tuple[str, re.Pattern[str], str | None], ...] = (
    ("POST", re.compile(r"/api/v1/jobs"), None),
    ("GET", re.compile(r"/api/v1/jobs/(?P<id>[^/]+)(?:/logs)?"), "own"),
    ("POST", re.compile(r"/api/v1/jobs/(?P<id>[^/]+)/(?:cancel|terminate)"), "own"),
    ("POST", re.compile(r"/api/v1/events"), None),
    ("POST", re.compile(r"/api/v1/workflows/[^/]+/runs"), None),
    ("GET", re.compile(r"/api/v1/runs/(?P<id>[^/]+)(?:/logs)?"), "own"),
    ("POST", re.compile(r"/api/v1/runs/(?P<id>[^/]+)/cancel"), "own"),
)


#: the request key holding the run a run token speaks for (engine/api/batch.py, app.py read it)
ON_BEHALF_OF = web.RequestKey("sluice_run", str)


def _bearer(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


async def _as_run(
    policy: AuthPolicy, token: str, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """A request on behalf of one run: only its own run and the jobs and runs it made."""
    run_id = None if policy.run_tokens is None else policy.run_tokens.run_of(token)
    if run_id is None or policy.run_tokens is None:
        return json_error(
            401,
            "run_token_expired",
            "this run token is void: its run has ended, or the engine restarted since it was made "
            "(a run's token works only while that run is running)",
            headers={"WWW-Authenticate": 'Bearer realm="sluice"'},
        )
    tokens = policy.run_tokens
    for method, pattern, scope in _RUN_ROUTES:
        match = pattern.fullmatch(request.path)
        if request.method != method or match is None:
            continue
        thing = match.groupdict().get("id")
        if scope == "own" and thing is not None and not await tokens.owns(run_id, thing):
            return json_error(
                403,
                "not_this_runs",
                f"{thing} was not made by run {run_id}; a run's token reaches only "
                "its own run and the jobs and runs it submitted",
            )
        request[ON_BEHALF_OF] = run_id  # the jobs it submits are tagged with it, its events name it
        response = await handler(request)
        if method == "POST" and response.status == 201 and isinstance(response, web.Response):
            made = json.loads(response.body or b"{}") if isinstance(response.body, bytes) else {}
            for key in ("job_id", "run_id"):
                if isinstance(made.get(key), str):
                    tokens.own(run_id, made[key])
        return response
    return json_error(
        403,
        "not_for_run_tokens",
        f"{request.method} {request.path} is not open to a run's token; it may "
        "submit, describe, wait for and cancel jobs, put events, and start and describe runs",
    )


# -- the dashboard's login form -----------------------------------------------------------------

_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · Sluice</title>
<link rel="stylesheet" href="/static/sluice.css"></head><body class="login"><main>
<h1>Sluice</h1><form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label>API token <input type="password" name="token" autofocus autocomplete="current-password"></label>
<button type="submit">Sign in</button>{error}</form>
<p class="hint">The token is the server's ${env}; make one with <code>sluice token</code>.</p>
</main></body></html>
"""


def _safe_next(value: str | None) -> str:
    """Only a path on this server: ``//evil.example`` and ``https://...`` go to ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def add_login(app: web.Application, policy: AuthPolicy) -> None:
    """``/login`` (a form that sets the session cookie for the right token) and ``/logout``."""

    def page(next_path: str, error: str = "", status: int = 200) -> web.Response:
        from html import escape

        html = _LOGIN.format(next=escape(next_path), error=error, env=TOKEN_ENV)
        return web.Response(text=html, content_type="text/html", status=status)

    async def login_form(request: web.Request) -> web.StreamResponse:
        if policy.token is None:
            return _see_other("/")
        return page(_safe_next(request.query.get("next")))

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        next_path = _safe_next(str(form.get("next") or "/"))
        if policy.token is None:
            return _see_other(next_path)
        given = str(form.get("token") or "")
        if not hmac.compare_digest(given.encode(), policy.token.encode()):
            return page(next_path, '<p class="error">That is not the token.</p>', status=401)
        response = _see_other(next_path)
        response.set_cookie(COOKIE, policy.session_value(), httponly=True, samesite="Strict", path="/")
        return response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = _see_other("/login" if policy.token else "/")
        response.del_cookie(COOKIE, path="/")
        return response

    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
