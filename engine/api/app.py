"""The HTTP surface: webhooks, the management API under ``/api/v1/`` and the dashboard.

Every answer of ``/api/v1`` and ``/hooks`` is JSON; every error is ``{"error": {"code",
"message"}}`` (engine/api/http.py). Handlers only read through the store's read pool
(engine/store/queries.py) and write through the bus or the orchestrator, like any other
component. Which route groups beyond the core ones an app serves (batch jobs, notifications) is
decided by the composition root, engine/server.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from engine import __version__
from engine.api import attempt_logs
from engine.api.auth import ON_BEHALF_OF, AuthPolicy, add_login, guard
from engine.api.dashboard import add_dashboard
from engine.api.http import (
    MAX_BODY_BYTES,
    ApiError,
    errors_as_json,
    int_param,
    json_body,
    parse_time,
    secrets_hidden,
    time_param,
)
from engine.api.metrics import readiness
from engine.api.next_fires import next_fires
from engine.api.openapi import serve_document
from engine.api.wire import JsonErrorsRunner
from engine.bus.bus import MAX_DEPTH, Target
from engine.engine import Engine
from engine.events import MANUAL_SOURCE, RESERVED_SOURCES, envelope, iso
from engine.runtokens import RUN_TAG
from engine.store import queries, records
from triggers.webhook import RAW_BODIES, WebhookEndpoint
from workflows import jsontext
from workflows.errors import InputError
from workflows.spec import EventTrigger, FileTrigger, ScheduleTrigger, TriggerSpec, WebhookTrigger

log = logging.getLogger(__name__)

ENGINE = web.AppKey("engine", Engine)
HOOKS = web.AppKey("hooks", dict)
MAX_LIMIT = 500
RUN_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
MAX_ENTRIES = 10

#: adds one group of routes (batch jobs, notifications) to the app
Routes = Callable[[web.Application], None]


def build_app(
    engine: Engine, groups: Sequence[Routes] = (), policy: AuthPolicy | None = None
) -> web.Application:
    """The aiohttp app for ``engine``: the core routes and the dashboard, then ``groups``.

    ``policy`` (engine/api/auth.py) defaults to no token on the engine's bound host, which
    refuses anything but loopback. Secrets are hidden outermost, so no answer (an error's
    included) carries one."""
    policy = AuthPolicy(engine.settings.host) if policy is None else policy
    app = web.Application(
        middlewares=[secrets_hidden, errors_as_json, guard(policy)], client_max_size=MAX_BODY_BYTES
    )
    app[ENGINE] = engine
    app[HOOKS] = webhook_endpoints(engine)
    engine.catalog.on_swap(functools.partial(_follow_catalog, engine, app[HOOKS]))
    app.router.add_route("*", "/hooks/{workflow}/{trigger}", hook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/api/v1/openapi.json", serve_document(token=policy.token is not None))
    app.router.add_get("/api/v1/workflows", list_workflows)
    app.router.add_post("/api/v1/workflows/{name}/runs", start_run)
    app.router.add_post("/api/v1/workflows/{name}/triggers/{trigger}/pause", pause_trigger)
    app.router.add_post("/api/v1/workflows/{name}/triggers/{trigger}/resume", pause_trigger)
    app.router.add_get("/api/v1/runs", list_runs)
    app.router.add_get("/api/v1/runs/{id}", get_run)
    app.router.add_post("/api/v1/runs/{id}/cancel", cancel_run)
    app.router.add_post("/api/v1/runs/{id}/retry", retry_run)
    app.router.add_get("/api/v1/runs/{id}/logs", run_logs)
    app.router.add_post("/api/v1/events", put_events)
    app.router.add_get("/api/v1/events", list_events)
    add_login(app, policy)
    add_dashboard(app, engine)
    for add in groups:
        add(app)
    return app


def webhook_endpoints(engine: Engine) -> dict[tuple[str, str], WebhookEndpoint]:
    async def wait(run_id: str, timeout_s: float) -> dict[str, Any] | None:
        try:
            status, end = await engine.orchestrator.wait_end(run_id, timeout_s)
        except TimeoutError:
            return None
        if end is None:  # it ended before, or elsewhere: the store says how
            return await engine.describe_run(run_id)
        # as the store has them (a secret's value becomes its reference), without reading them back
        hidden = records.loads(records.dumps(end))
        return {"run_id": run_id, "status": status, **hidden}

    endpoints = {}
    for wf in engine.catalog.values():
        for spec in wf.triggers:
            if isinstance(spec, WebhookTrigger):
                emit = engine.bus.emitter(wf.name, spec.name)
                paused = functools.partial(engine.pauses.is_paused, wf.name, spec.name)
                endpoints[(wf.name, spec.name)] = WebhookEndpoint(wf.name, spec, emit, wait, paused=paused)
    return endpoints


def _follow_catalog(engine: Engine, hooks: dict[Any, Any], touched: frozenset[str]) -> None:
    """After a hot reload: the webhooks of added and changed workflows are new, removed ones go;
    the others keep their endpoint (and its state)."""
    fresh = webhook_endpoints(engine)
    for key in [k for k in hooks if k not in fresh or k[0] in touched]:
        del hooks[key]
    for key, endpoint in fresh.items():
        hooks.setdefault(key, endpoint)


async def hook(request: web.Request) -> web.StreamResponse:
    wf, trigger = request.match_info["workflow"], request.match_info["trigger"]
    endpoint = request.app[HOOKS].get((wf, trigger))
    if endpoint is None:  # the others are not listed: the caller may be anyone
        raise ApiError(
            404, "unknown_webhook", f"no webhook {wf}/{trigger}; `sluice workflows list` shows the webhooks"
        )
    return await endpoint.handle(request)


# -- reading requests ---------------------------------------------------------------------------


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


async def _summary(request: web.Request) -> dict[str, Any]:
    run_id = request.match_info["id"]
    summary = await _engine(request).describe_run(run_id)
    if summary is None:
        raise ApiError(404, "unknown_run", f"no run {run_id!r}; list runs with GET /api/v1/runs")
    return summary


# -- handlers -----------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Open without the token, so it says nothing more."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 with what is wrong while the store, its writer or a trigger is not well."""
    engine = _engine(request)
    ready, checks = await readiness(engine)
    paused = sorted(f"{w}/{t}" for w, t in engine.pauses.paused)  # by choice: not a failure, but said
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "paused_triggers": paused}
    # a workflow file that failed to reload: the previous versions serve, so still ready, but said
    body["reload_errors"] = list(engine.catalog.errors)
    return web.json_response(body, status=200 if ready else 503)


async def health(request: web.Request) -> web.Response:
    engine = _engine(request)
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "workflows": len(engine.catalog),
            "active_runs": engine.orchestrator.active,
            "held_runs": engine.orchestrator.held,
            "runs_waiting_for_key": engine.orchestrator.keyed.waiting,
            "attempts_waiting_for_key": engine.orchestrator.keys.waiting,  #: a step's keyed concurrency
            "events_accepted": engine.bus.events_accepted,
        }
    )


def _trigger_view(spec: TriggerSpec) -> dict[str, Any]:
    """What a client may know of a trigger: its kind and name, never a credential."""
    match spec:
        case WebhookTrigger():
            # the url is filled in by the caller, which knows the workflow
            return {"kind": "webhook", "name": spec.name, "url": None, "auth": spec.auth}
        case ScheduleTrigger():
            return {"kind": "schedule", "name": spec.name, "expression": spec.expression}
        case FileTrigger():
            return {"kind": "file", "name": spec.name}
        case EventTrigger():
            return {"kind": "event", "name": spec.name}


async def list_workflows(request: web.Request) -> web.Response:
    out = []
    fires = await next_fires(_engine(request))
    for wf in sorted(_engine(request).catalog.values(), key=lambda w: w.name):
        triggers = [_trigger_view(t) for t in wf.triggers]
        for view, spec in zip(triggers, wf.triggers, strict=True):
            if view["kind"] == "webhook":
                view["url"] = f"/hooks/{wf.name}/{view['name']}"
            elif view["kind"] == "schedule":  # Unix seconds; null while paused
                view["next_fire"] = fires.get((wf.name, view["name"]))
            batch = None if isinstance(spec, ScheduleTrigger) else spec.batch
            if batch is not None:
                view["batch"] = {"max": batch.max_events, "window_s": batch.window_s}
            view.update(_engine(request).pauses.view(wf.name, view["name"]))
        params = {
            p.name: {
                "type": p.type,
                "default": p.default,
                "required": p.required,
                "description": p.description,
            }
            for p in wf.params.values()
        }
        levels = [list(level) for level in wf.dag.levels]  # the DAG's layers, as the dashboard shows them
        out.append(
            {
                "name": wf.name,
                "description": wf.description,
                "params": params,
                "triggers": triggers,
                "levels": levels,
            }
        )
        if wf.concurrency is not None:  # the key as written: a template, never a rendered value
            key = getattr(wf.concurrency.key, "source", None)
            out[-1]["concurrency"] = {"limit": wf.concurrency.limit, "key": key}
    return web.json_response({"workflows": out})


async def pause_trigger(request: web.Request) -> web.Response:
    """``.../pause`` and ``.../resume``: idempotent; ``changed`` says whether this call changed it."""
    engine, name, trigger = _engine(request), request.match_info["name"], request.match_info["trigger"]
    wf = engine.catalog.get(name)
    if wf is None:
        raise ApiError(404, "unknown_workflow", f"no workflow {name!r}; list them with GET /api/v1/workflows")
    spec = next((t for t in wf.triggers if t.name == trigger), None)
    if spec is None:
        known = ", ".join(t.name for t in wf.triggers) or "none"
        raise ApiError(
            404, "unknown_trigger", f"workflow {name!r} has no trigger {trigger!r} (it has: {known})"
        )
    if not isinstance(await json_body(request, default={}), dict):  # no fields; if sent, an object
        raise ApiError(400, "bad_body", "send {} or no body")
    if request.path.endswith("/pause"):
        changed = await engine.pauses.pause(name, trigger)
    else:
        changed = await engine.pauses.resume(name, trigger)
    view = {"workflow": name, "trigger": trigger, "kind": _trigger_view(spec)["kind"]}
    return web.json_response({**view, **engine.pauses.view(name, trigger), "changed": changed})


async def start_run(request: web.Request) -> web.Response:
    engine, name = _engine(request), request.match_info["name"]
    if name not in engine.catalog:
        raise ApiError(404, "unknown_workflow", f"no workflow {name!r}; list them with GET /api/v1/workflows")
    params = await json_body(request, default={})
    if not isinstance(params, dict):
        raise ApiError(400, "bad_body", 'the body must be a JSON object of params, e.g. {"size": 128}')
    depth = 0
    parent = request.get(ON_BEHALF_OF)
    if parent is not None:  # a function's context.sluice: one step deeper in a chain of runs
        depth = engine.orchestrator.depth_of(parent) + 1
        if depth > MAX_DEPTH:
            raise ApiError(
                409,
                "chain_too_deep",
                f"run {parent} is {depth - 1} runs deep in runs starting runs; the limit is {MAX_DEPTH} "
                "(check for a workflow that starts itself)",
            )
    try:
        run_id = await engine.start_run(name, params, depth=depth, started_by=parent)
    except InputError as exc:
        raise ApiError(400, "bad_input", str(exc)) from None
    return web.json_response({"run_id": run_id, "status_url": f"/api/v1/runs/{run_id}"}, status=201)


async def list_runs(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 50, 1, MAX_LIMIT) or 50
    q = request.query
    if q.get("status") and q["status"] not in RUN_STATES:
        raise ApiError(
            400, "bad_param", f"status must be one of {', '.join(RUN_STATES)}, got {q['status']!r}"
        )

    since, until = time_param(request, "since"), time_param(request, "until")

    async with _engine(request).store.reader() as db:
        runs = await queries.list_runs(
            db,
            workflow=q.get("workflow"),
            status=q.get("status"),
            limit=limit,
            before=q.get("before"),
            trigger=q.get("trigger"),
            since=since,
            until=until,
        )
    if runs is None:
        raise ApiError(400, "bad_cursor", f"before={q.get('before')!r} is not a run id; use the 'next' value")
    nxt = runs[-1]["run_id"] if len(runs) == limit else None
    return web.json_response({"runs": runs, "next": nxt})


async def get_run(request: web.Request) -> web.Response:
    summary = await _summary(request)
    run_id = summary["run_id"]
    async with _engine(request).store.reader() as db:
        attempts = await queries.run_attempts(db, run_id)
    by_step: dict[str, list[dict[str, Any]]] = {}
    for att in attempts:
        att.pop("log_path", None)
        by_step.setdefault(att["step"], []).append(att)
    summary["attempts"] = by_step
    return web.json_response(summary)


async def cancel_run(request: web.Request) -> web.Response:
    summary = await _summary(request)
    body = await json_body(request, default={})
    reason = body.get("reason") if isinstance(body, dict) else None
    if reason is not None and not isinstance(reason, str):
        raise ApiError(400, "bad_body", "reason must be a string")
    run_id = summary["run_id"]
    cancelled = await _engine(request).orchestrator.cancel(run_id, reason or "cancelled by user (API)")
    if not cancelled:
        raise ApiError(
            409, "not_running", f"run {run_id} is {summary['status']}, not running; nothing to cancel"
        )
    after = await _engine(request).describe_run(run_id)
    return web.json_response({"run_id": run_id, "status": (after or summary)["status"]})


async def retry_run(request: web.Request) -> web.Response:
    engine, summary = _engine(request), await _summary(request)
    old, workflow = summary["run_id"], summary["workflow"]
    if workflow not in engine.catalog:
        raise ApiError(409, "workflow_gone", f"workflow {workflow!r} of run {old} is no longer loaded")
    params = summary["params"] or {}
    body = await json_body(request, default={})
    start = body.get("from") if isinstance(body, dict) else None
    if start not in (None, "start", "failed"):
        raise ApiError(400, "bad_body", 'from must be "failed" (redrive: keep what succeeded) or "start"')
    keep: dict[str, Any] = {}
    if start == "failed":
        keep = _kept_steps(engine.catalog[workflow], summary)
    detail = {"retry_of": old, "params": params, "from": start or "start"}
    event = envelope(MANUAL_SOURCE, "Retry Run", detail, resources=[f"workflow/{workflow}"])
    result = await engine.bus.put(event, target=Target(workflow, None, params, keep=keep, kept_from=old))
    run_id = result.run_ids[0]
    answer = {"run_id": run_id, "retry_of": old, "status_url": f"/api/v1/runs/{run_id}"}
    if start == "failed":
        answer["kept"] = sorted(keep)
    return web.json_response(answer, status=201)


def _kept_steps(wf: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """A redrive keeps each step that SUCCEEDED and is not downstream of one that did not."""
    if summary["status"] not in ("FAILED", "CANCELLED"):
        raise ApiError(
            409,
            "not_failed",
            f"run {summary['run_id']} is {summary['status']}: only a FAILED or CANCELLED run is retried "
            'from its failed steps (a retry without "from" starts it over)',
        )
    steps = summary["steps"]
    ok = {name for name in wf.steps if steps.get(name, {}).get("status") == "SUCCEEDED"}
    rerun = set(wf.dag.rerun_from(name for name in wf.steps if name not in ok))
    return {name: steps[name]["output"] for name in wf.dag.order if name in ok and name not in rerun}


async def run_logs(request: web.Request) -> web.Response:
    engine, summary = _engine(request), await _summary(request)
    step = request.query.get("step") or None
    attempt = int_param(request, "attempt", None, 1, 1_000_000)
    tail = int_param(request, "tail", None, 1, 1_000_000)
    try:  # ?after=: only what was written since the answer that gave this cursor (`logs --follow`)
        after = attempt_logs.decode_cursor(request.query["after"]) if "after" in request.query else None
    except attempt_logs.BadCursor as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from None
    run_id = summary["run_id"]
    async with engine.store.reader() as db:
        attempts = await queries.run_attempts(db, run_id, step, attempt)
    if step is not None and not attempts:
        raise ApiError(
            404, "no_attempts", f"run {run_id} has no attempts of step {step!r} (attempt {attempt})"
        )
    live = {  # a running function attempt's log file is written when it ends: read its worker's now
        att["log_path"]: out
        for att in attempts
        if att["status"] == "RUNNING" and att["log_path"]
        and (out := engine.functions.live_output(att["log_path"])) is not None
    }  # fmt: skip
    text, cursor = await asyncio.to_thread(
        attempt_logs.read_logs,
        engine.settings.data_dir,
        attempts,
        tail=tail,
        single=step is not None,
        live=live,
        after=after,
    )
    return web.Response(
        text=text,
        content_type="text/plain",
        headers={"Sluice-Log-Cursor": attempt_logs.encode_cursor(cursor)},
    )


class ReservedSource(ValueError):
    """An entry whose source is the engine's own (EventBridge refuses ``aws.*`` the same way)."""


def _entry_event(entry: Any) -> dict[str, Any]:
    """One PutEvents entry as an envelope; raises ValueError with the reason."""
    if not isinstance(entry, dict):
        raise ValueError("an entry must be an object with Source, DetailType and Detail")
    source, detail_type = entry.get("Source"), entry.get("DetailType")
    if not isinstance(source, str) or not source:
        raise ValueError("Source is required (a non-empty string, e.g. com.example.orders)")
    if source.startswith(RESERVED_SOURCES):
        raise ReservedSource(f"Source {source} is reserved (aws.* and sluice.* events come from the engine); "
                             "use your own, e.g. com.example.orders")  # fmt: skip
    if not isinstance(detail_type, str) or not detail_type:
        raise ValueError("DetailType is required (a non-empty string, e.g. Order Placed)")
    detail = entry.get("Detail", {})
    if isinstance(detail, str):
        try:
            detail = jsontext.loads(detail)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Detail is not valid JSON: {exc}") from None
    if not isinstance(detail, dict):
        raise ValueError("Detail must be a JSON object")
    resources = entry.get("Resources", [])
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise ValueError("Resources must be a list of strings")
    event = envelope(source, detail_type, detail, resources=resources)
    if entry.get("Time") is not None:
        try:
            event["time"] = iso(parse_time(entry["Time"]))
        except ValueError:
            raise ValueError("Time must be ISO 8601 (2026-01-31T12:00:00Z) or Unix seconds") from None
    return event


async def put_events(request: web.Request) -> web.Response:
    body = await json_body(request)
    entries = body.get("Entries") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ENTRIES:
        raise ApiError(400, "bad_body", f'send {{"Entries": [...]}} with 1 to {MAX_ENTRIES} entries')
    answers: list[dict[str, Any]] = []
    good: list[tuple[int, dict[str, Any]]] = []
    run_id = request.get(ON_BEHALF_OF)  # put by a function through context.sluice: name its run
    for i, entry in enumerate(entries):
        try:
            event = _entry_event(entry)
            if run_id is not None:
                event["resources"] = [*event["resources"], f"{RUN_TAG}/{run_id}"]
            good.append((i, event))
            answers.append({})
        except ValueError as exc:
            code = "NotAuthorizedForSource" if isinstance(exc, ReservedSource) else "InvalidArgument"
            answers.append({"ErrorCode": code, "ErrorMessage": str(exc)})
    if good:
        depth = 0 if run_id is None else _engine(request).orchestrator.depth_of(run_id)
        results = await _engine(request).bus.put_many([(ev, None, None) for _, ev in good], depth=depth)
        for (i, _), result in zip(good, results, strict=True):
            answers[i] = {"EventId": result.event_id}
    failed = sum(1 for a in answers if "ErrorCode" in a)
    return web.json_response({"FailedEntryCount": failed, "Entries": answers})


async def list_events(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 50, 1, MAX_LIMIT) or 50
    since, until = time_param(request, "since"), time_param(request, "until")
    q = request.query

    async with _engine(request).store.reader() as db:
        found = await queries.list_events(
            db,
            source=q.get("source"),
            detail_type=q.get("detail_type"),
            since=since,
            until=until,
            limit=limit,
        )
    return web.json_response({"events": found})


def worker_url(host: str, port: int) -> str:
    """Where this engine's function workers (on the same machine) reach the API bound to ``host``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class HttpService:
    """The HTTP server as an Engine service: bound when ``start`` returns, closed when cancelled."""

    name = "http"

    def __init__(
        self, engine: Engine, groups: Sequence[Routes] = (), *, auth: AuthPolicy | None = None
    ) -> None:
        self.engine = engine
        self.groups = tuple(groups)
        #: checked here, before anything starts: off loopback without a token refuses to start
        self.auth = AuthPolicy(engine.settings.host) if auth is None else auth
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        return f"<HttpService {self.engine.settings.host}:{self.port}>"

    def _app(self) -> web.Application:
        auth = dataclasses.replace(self.auth, run_tokens=self.engine.orchestrator.tokens)
        app = build_app(self.engine, self.groups, auth)
        app[RAW_BODIES] = True  # bodies are decoded by us, within their limits (triggers/webhook.py)
        return app

    async def start(self) -> None:
        settings = self.engine.settings
        self.runner = JsonErrorsRunner(
            self._app(), handle_signals=False, access_log=None, shutdown_timeout=5.0, auto_decompress=False
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, settings.host, settings.port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        self.engine.orchestrator.set_api_url(worker_url(settings.host, self.port))
        log.info("HTTP API on http://%s:%d (webhooks under /hooks/)", settings.host, self.port)

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            # stop accepting before the engine drains; shielded so a second cancel cannot cut it short
            await asyncio.shield(self.aclose())

    async def aclose(self) -> None:
        """Stop the listener and close open connections (idempotent)."""
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("HTTP server stopped")
