"""The OpenAPI 3.1 document of the HTTP surface, served at ``/api/v1/openapi.json``.

Written out here rather than derived from handlers: the document is a promise to clients, so
changing it is a visible edit. tests/api/test_openapi.py fails when a served route is missing
from it, so it cannot fall behind the router.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine import __version__

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/Error"}
OBJ: dict[str, Any] = {"type": "object"}


def _answer(description: str, schema: dict[str, Any] | None = None, media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or OBJ}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    status: str = "200",
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("400", "404"),
    open_route: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: ok}}
    for code in errors:
        op["responses"][code] = _answer("an error: what is wrong and what to do", ERROR)
    op["responses"]["401"] = _answer("the server has a token and none (or another) was sent", ERROR)
    if body is not None:
        op["requestBody"] = {"required": False, "content": {JSON: {"schema": body}}}
    if params:
        op["parameters"] = params
    if open_route:
        op["security"] = []
        del op["responses"]["401"]
    return op


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(
    name: str, kind: str = "string", description: str = "", *, low: int | None = None, high: int | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON object with these fields (others allowed: each route says what it does with them)."""
    return {"type": "object", "required": required, "properties": properties}


RUN_ID = _path("id", "a run id (r-...)")
JOB_ID = _path("id", "a job id (j-...)")
NAME = _path("name", "a name")
LIMIT = _query("limit", "integer", "1 to 500", low=1, high=500)
PAGE = [LIMIT, _query("before", description="the 'next' of the last page")]
TEXT: dict[str, Any] = {"type": "string"}
WHEN: dict[str, Any] = {"type": ["string", "number"], "description": "Unix seconds, ISO 8601 or an age (2h)"}


def document() -> dict[str, Any]:
    run = {"$ref": "#/components/schemas/Run"}
    paths: dict[str, dict[str, Any]] = {
        "/healthz": {
            "get": _op("liveness: the process answers", _answer("alive"), errors=(), open_route=True)
        },
        "/readyz": {
            "get": _op("readiness: store, writer, disk and triggers", _answer("ready"), errors=("503",))
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics", _answer("the text format", {"type": "string"}, "text/plain"), errors=()
            )
        },
        "/hooks/{workflow}/{trigger}": {
            "post": _op(
                "a webhook trigger (its own auth: secret, HMAC or token)",
                _answer("the event is committed", {"$ref": "#/components/schemas/Accepted"}),
                status="202",
                params=[_path("workflow", "workflow name"), _path("trigger", "trigger name")],
                errors=("400", "401", "403", "404", "413", "415", "429", "503"),  # 503: paused, disk full
                open_route=True,
            )
        },
        "/api/v1/health": {"get": _op("engine counters", _answer("counters"), errors=())},
        "/api/v1/openapi.json": {"get": _op("this document", _answer("OpenAPI 3.1"), errors=())},
        "/api/v1/workflows": {
            "get": _op("loaded workflows, their params and triggers", _answer("workflows"), errors=())
        },
        "/api/v1/workflows/{name}/runs": {
            "post": _op(
                "start a run with these params",
                _answer("started", {"$ref": "#/components/schemas/Started"}),
                status="201",
                body=OBJ,
                params=[NAME],
                errors=("400", "404", "415"),
            )
        },
        **{
            f"/api/v1/workflows/{{name}}/triggers/{{trigger}}/{verb}": {
                "post": _op(
                    f"{verb} one of the workflow's triggers (idempotent; kept across restarts)",
                    _answer("the trigger's pause state", {"$ref": "#/components/schemas/TriggerPause"}),
                    body=OBJ,
                    params=[NAME, _path("trigger", "trigger name")],
                    errors=("400", "404", "415"),
                )
            }
            for verb in ("pause", "resume")
        },
        "/api/v1/runs": {
            "get": _op(
                "runs, newest first",
                _answer("a page of runs", {"$ref": "#/components/schemas/RunPage"}),
                params=[
                    _query("workflow"),
                    _query("status"),
                    _query("trigger", description="a trigger name, or manual"),
                    _query("since", description="Unix seconds or ISO 8601"),
                    _query("until", description="Unix seconds or ISO 8601"),
                    *PAGE,
                ],
                errors=("400",),
            )
        },
        "/api/v1/runs/{id}": {
            "get": _op("one run with its steps and attempts", _answer("the run", run), params=[RUN_ID])
        },
        "/api/v1/runs/{id}/cancel": {
            "post": _op(
                "cancel a running run",
                _answer("cancelled"),
                body=OBJ,
                params=[RUN_ID],
                errors=("400", "404", "409", "415"),
            )
        },
        "/api/v1/runs/{id}/retry": {
            "post": _op(
                "run again with the same params",
                _answer("started"),
                status="201",
                body=OBJ,
                params=[RUN_ID],
                errors=("404", "409", "415"),
            )
        },
        "/api/v1/runs/{id}/logs": {
            "get": _op(
                "the logs of a run's attempts",
                _answer("text; the Sluice-Log-Cursor header reads on", {"type": "string"}, "text/plain"),
                params=[
                    RUN_ID,
                    _query("step"),
                    _query("attempt", "integer", low=1, high=1_000_000),
                    _query("tail", "integer", low=1, high=1_000_000),
                    _query("after"),
                ],
            )
        },
        "/api/v1/events": {
            "get": _op(
                "stored events, newest first",
                _answer("events"),
                params=[
                    _query("source"),
                    _query("detail_type"),
                    _query("since"),
                    _query("until"),
                    LIMIT,
                ],
                errors=("400",),
            ),
            "post": _op(
                "PutEvents: up to 10 entries",
                _answer("per-entry results"),
                body=_body(["Entries"], {"Entries": {"type": "array", "minItems": 1, "maxItems": 10}}),
                errors=("400", "415"),
            ),
        },
        "/api/v1/events/replay": {
            "post": _op(
                "replay archived events (dry_run first)",
                _answer("replayed"),
                body=_body(
                    ["since"],
                    {
                        "since": WHEN,
                        "until": WHEN,
                        "dry_run": {"type": "boolean"},
                        "force": {"type": "boolean"},
                        "workflow": TEXT,
                        "name": TEXT,
                        "pattern": OBJ,
                    },
                ),
                errors=("400", "415"),
            )
        },
        "/api/v1/notifications/dlq": {
            "get": _op("dead-lettered notifications", _answer("dead letters"), errors=("400",))
        },
        "/api/v1/notifications/dlq/retry": {
            "post": _op("retry dead letters", _answer("retried"), body=OBJ, errors=("400", "415"))
        },
        "/api/v1/notifications/dlq/purge": {
            "post": _op("purge dead letters", _answer("purged"), body=OBJ, errors=("400", "415"))
        },
        "/api/v1/jobs": {
            "get": _op(
                "batch jobs",
                _answer("jobs"),
                params=[
                    _query("queue"),
                    _query("status"),
                    _query("parent"),
                    _query("limit", "integer", "1 to 1000; a value outside is clamped to it"),
                ],
                errors=("400", "503"),
            ),
            "post": _op(
                "submit a batch job",
                _answer("submitted"),
                status="201",
                body={"anyOf": [_body(["definition"], {"definition": TEXT}), _body(["container"], {})]},
                errors=("400", "404", "415", "503"),
            ),
        },
        "/api/v1/jobs/{id}": {
            "get": _op("one job", _answer("the job"), params=[JOB_ID], errors=("404", "503"))
        },
        "/api/v1/jobs/{id}/cancel": {
            "post": _op(
                "cancel a job not yet running",
                _answer("cancelled"),
                body=OBJ,
                params=[JOB_ID],
                errors=("400", "404", "409", "415", "503"),
            )
        },
        "/api/v1/jobs/{id}/terminate": {
            "post": _op(
                "terminate a job",
                _answer("terminated"),
                body=OBJ,
                params=[JOB_ID],
                errors=("400", "404", "409", "415", "503"),
            )
        },
        "/api/v1/jobs/{id}/logs": {
            "get": _op(
                "a job's logs",
                _answer("text", {"type": "string"}, "text/plain"),
                params=[JOB_ID],
                errors=("404", "503"),
            )
        },
    }
    creates = {
        "definitions": _body(["name"], {"name": TEXT}),
        "queues": _body(["name", "environments"], {"name": TEXT, "environments": {"type": "array"}}),
        "environments": _body(["name", "max_vcpus", "max_memory"], {"name": TEXT}),
    }
    for kind, body in creates.items():
        paths[f"/api/v1/{kind}"] = {
            "get": _op(f"list {kind}", _answer(kind), errors=("503",)),
            "post": _op(
                f"create one of the {kind}",
                _answer("created"),
                status="201",
                body=body,
                errors=("400", "409", "415", "503"),
            ),
        }
    for kind in ("queues", "environments"):
        paths[f"/api/v1/{kind}/{{name}}"] = {
            "patch": _op(
                f"update one of the {kind}",
                _answer("updated"),
                body=OBJ,
                params=[NAME],
                errors=("400", "404", "415", "503"),
            )
        }
    paths["/api/v1/scheduling-policies"] = {
        "get": _op("list fair-share scheduling policies", _answer("scheduling_policies"), errors=("503",)),
        "post": _op(
            "create a fair-share scheduling policy",
            _answer("created"),
            status="201",
            body=_body(["name"], {"name": TEXT}),
            errors=("400", "409", "415", "503"),
        ),
    }
    paths["/api/v1/scheduling-policies/{name}"] = {
        "patch": _op(
            "change a scheduling policy (only what the body names)",
            _answer("updated"),
            body=OBJ,
            params=[NAME],
            errors=("400", "404", "415", "503"),
        ),
        "delete": _op(
            "delete a scheduling policy no queue uses",
            _answer("deleted"),
            params=[NAME],
            errors=("400", "404", "409", "503"),
        ),
    }
    paths["/api/v1/queues/{name}/shares"] = {
        "get": _op(
            "a fair-share queue's shares: weight, running, usage",
            _answer("shares"),
            params=[NAME],
            errors=("404", "503"),
        )
    }
    paths["/api/v1/environments/{name}/reclaim"] = {
        "post": _op(
            "take an interruptible environment's capacity back (its jobs fail as Spot's do)",
            _answer("reclaimed"),
            params=[NAME],
            errors=("400", "404", "409", "503"),
        )
    }
    for path, ops in paths.items():  # the CSRF rule (engine/api/auth.py) may answer any of these 415
        for method, op in ops.items():
            if method in ("post", "put", "patch", "delete") and not path.startswith("/hooks/"):
                op["responses"].setdefault("415", _answer("an error: what is wrong and what to do", ERROR))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice",
            "version": __version__,
            "description": 'The management API of `sluice serve`. Errors are {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "$SLUICE_API_TOKEN, or a function's run-scoped token (context.sluice: "
                    "its own run and the jobs and runs it made; docs/clients.md)",
                }
            },
            "schemas": _schemas(),
        },
    }


def _schemas() -> dict[str, Any]:
    text, num = {"type": "string"}, {"type": "number"}
    maybe = lambda t: {"type": [t, "null"]}  # noqa: E731
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": text, "message": text},
                }
            },
        },
        "Started": {
            "type": "object",
            "required": ["run_id"],
            "properties": {"run_id": text, "status_url": text},
        },
        "Accepted": {
            "type": "object",
            "properties": {"event_id": text, "run_ids": {"type": "array", "items": text}},
        },
        "Run": {
            "type": "object",
            "required": ["run_id", "workflow", "status", "steps"],
            "properties": {
                "run_id": text,
                "workflow": text,
                "status": {"enum": ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]},
                "trigger": maybe("string"),
                "workflow_version": maybe("string"),
                "created_at": num,
                "started_at": maybe("number"),
                "ended_at": maybe("number"),
                "reason": maybe("string"),
                "steps": {"type": "object"},
                "attempts": {"type": "object"},
            },
        },
        "TriggerPause": {
            "type": "object",
            "required": ["workflow", "trigger", "kind", "paused", "paused_at", "changed"],
            "properties": {
                "workflow": text,
                "trigger": text,
                "kind": {"enum": ["webhook", "schedule", "file", "event"]},
                "paused": {"type": "boolean"},
                "paused_at": maybe("number"),
                "changed": {"type": "boolean"},
            },
        },
        "RunPage": {
            "type": "object",
            "required": ["runs", "next"],
            "properties": {"runs": {"type": "array", "items": {"type": "object"}}, "next": maybe("string")},
        },
    }


def serve_document(*, token: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of ``/api/v1/openapi.json`` for a server with (``token``) or without a token.

    A server on loopback without a token serves every route to anyone: its document says so
    (no ``security``), so a client generated from it sends no credentials it does not need."""
    doc = document()
    if not token:
        doc["security"] = []
        for ops in doc["paths"].values():
            for op in ops.values():
                op.get("responses", {}).pop("401", None)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(doc)

    return handler
