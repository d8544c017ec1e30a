"""The HTTP surface's one error style and its request readers.

Handlers raise :class:`ApiError` (or let a bug raise anything); one middleware renders every
error as ``{"error": {"code", "message"}}`` with a status that says whose fault it was, and turns
anything unexpected into a JSON 500 that is logged: clients never see a stack trace or an HTML
page.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from triggers.base import Unavailable
from triggers.webhook import WebhookRefused, json_error, read_body
from workflows import jsontext, secrets
from workflows.units import parse_instant

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: the largest request body the API reads (decoded)
MAX_BODY_BYTES = 16 * 1024 * 1024


class ApiError(Exception):
    """A 4xx (or 409/503) answer: ``code`` is stable for programs, ``message`` is for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        if exc.status == 404 and _wants_page(request):
            return web.Response(status=404, text=NOT_FOUND_PAGE, content_type="text/html")
        message = (
            "no such route; see /api/v1/openapi.json and the README" if exc.status == 404 else exc.reason
        )
        return json_error(
            exc.status, code, message, headers={k: v for k, v in exc.headers.items() if k == "Allow"}
        )
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:  # the client hung up mid-request: nobody to answer, nothing broke
        log.info("%s %s: the client closed the connection before the request was read", request.method,
                 request.path)  # fmt: skip
        return json_error(400, "client_closed", "the connection closed before the request body arrived")
    except Unavailable as exc:  # a full disk: nothing was stored, the caller may retry
        log.warning("%s %s: %s", request.method, request.path, exc)
        return json_error(503, "unavailable", str(exc), headers={"Retry-After": "1"})
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal_error", "the server failed on this request; see the server log")


@web.middleware
async def secrets_hidden(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No answer shows a value from ``${env:...}`` (workflows/secrets.py): its reference instead.

    By value, on the finished body, so it holds for every route and the dashboard, whatever
    path the value took into the data (a param default, a rendered env, a step's output)."""
    resp = await handler(request)
    if isinstance(resp, web.Response) and isinstance(resp.body, bytes) and secrets.registered():
        text = resp.body.decode(resp.charset or "utf-8", errors="surrogateescape")
        json_answer = resp.content_type == "application/json"  # hidden inside its strings: valid JSON
        hidden = secrets.hide_json(text) if json_answer else secrets.hide_html(text)
        if hidden != text:
            resp.body = hidden.encode(resp.charset or "utf-8", errors="surrogateescape")
    return resp


#: what a browser gets for a page that does not exist (the API and webhooks answer JSON)
NOT_FOUND_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Not found · Sluice</title><link rel="stylesheet" href="/static/sluice.css"></head>
<body><main><h1>Not found</h1>
<p>There is no page here.</p><p><a href="/">back to the runs</a></p></main></body></html>"""


def _wants_page(request: web.Request) -> bool:
    path = request.path
    api = path.startswith(("/api/", "/hooks/")) or path in ("/metrics", "/healthz", "/readyz")
    return not api and "text/html" in request.headers.get("Accept", "")


async def json_body(request: web.Request, *, default: Any = None) -> Any:
    try:
        raw = await read_body(request, MAX_BODY_BYTES, "the API's")
    except WebhookRefused as refused:
        raise ApiError(refused.status, refused.code, refused.message) from None
    if not raw.strip():
        if default is None:
            raise ApiError(400, "bad_body", "send a JSON body")
        return default
    try:
        return jsontext.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None


async def json_object(request: web.Request, *, hint: str = "send a JSON object") -> dict[str, Any]:
    """A body that must be a JSON object (empty: ``{}``); else ApiError 400. The API extensions use it."""
    body = await json_body(request, default={})
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", hint)
    return body


def int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:  # an empty value is not a number either: say so rather than quietly use the default
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, "bad_param", f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return value


def time_param(request: web.Request, name: str) -> float | None:
    """Unix seconds or ISO 8601 (``2026-01-31T12:00:00Z``)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise ApiError(
            400,
            "bad_param",
            f"{name} must be Unix seconds or ISO 8601 like 2026-01-31T12:00:00Z, got {raw!r}",
        ) from None


def parse_time(value: Any) -> float:
    """Unix seconds (number or numeric string) or ISO 8601; naive times are UTC. ValueError otherwise."""
    return parse_instant(value, naive_utc=True)
