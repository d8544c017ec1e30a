"""HTTP routes for batch jobs, definitions, queues and compute environments (``/api/v1``).

Served by ``sluice serve`` (engine/server.py adds the group)::

    POST /api/v1/jobs                      submit: {"queue", "definition" | "container", "array_size"?,
                                           "depends_on"?, "parameters"?, "timeout"?, "attempts"?, "name"?}
    GET  /api/v1/jobs?queue=&status=&parent=&limit=
    GET  /api/v1/jobs/{id}                 the job, its attempts and dependencies
    POST /api/v1/jobs/{id}/cancel          {"reason"?}; 409 for a job already STARTING/RUNNING
    POST /api/v1/jobs/{id}/terminate       {"reason"?}
    GET  /api/v1/jobs/{id}/logs?attempt=&offset=   text from ``offset`` (default: the latest attempt);
                                           headers X-Sluice-Offset (next), -Attempt, -Done, -Job-Status
    GET|POST /api/v1/definitions
    GET|POST /api/v1/queues,  PATCH /api/v1/queues/{name}
    GET|POST /api/v1/environments,  PATCH /api/v1/environments/{name}
    POST /api/v1/environments/{name}/reclaim   take an interruptible environment's capacity back
    GET|POST /api/v1/scheduling-policies,  PATCH|DELETE /api/v1/scheduling-policies/{name}
    GET  /api/v1/queues/{name}/shares      a fair-share queue's shares: weight, running, usage

Errors are ``{"error": {"code", "message"}}``; without a Docker engine every route answers 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from engine.api.auth import ON_BEHALF_OF
from engine.api.http import ApiError, json_object
from engine.batch.jobs import DONE, JobError
from engine.batch.service import BatchService
from engine.engine import Engine
from engine.runtokens import RUN_TAG

MAX_LOG_CHUNK = 1 << 20


BatchHandler = Callable[[BatchService, web.Request], Awaitable[web.StreamResponse]]


def _batch(engine: Engine) -> BatchService:
    if engine.batch is None:
        raise ApiError(
            503, "no_container_runtime", "batch jobs need a Docker engine; start dockerd and restart"
        )
    return engine.batch


def _int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name} must be an integer, got {raw!r}") from None


def _route(engine: Engine, fn: BatchHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a handler: it gets the batch service; a JobError (bad input) becomes its 4xx."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(_batch(engine), request)
        except JobError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None

    return handler


async def submit(batch: BatchService, request: web.Request) -> web.Response:
    body = await json_object(request)
    run_id = request.get(ON_BEHALF_OF)
    if run_id is not None:  # submitted by a function through context.sluice: say which run
        tags = body.get("tags")
        body["tags"] = {**(tags if isinstance(tags, dict) else {}), RUN_TAG: run_id}
    out = await batch.submit(body)
    return web.json_response(out, status=201)


async def list_jobs(batch: BatchService, request: web.Request) -> web.Response:
    q = request.query
    limit = max(1, min(_int(request, "limit", 100) or 100, 1000))
    rows = await batch.list_jobs(q.get("queue"), q.get("status"), limit, q.get("parent"))
    return web.json_response({"jobs": rows})


async def describe(batch: BatchService, request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    out = await batch.describe(job_id)
    if out is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r}; list jobs with GET /api/v1/jobs")
    return web.json_response(out)


async def cancel(batch: BatchService, request: web.Request) -> web.Response:
    reason = (await json_object(request)).get("reason")
    return web.json_response(await batch.cancel(request.match_info["id"], reason))


async def terminate(batch: BatchService, request: web.Request) -> web.Response:
    reason = (await json_object(request)).get("reason")
    return web.json_response(await batch.terminate(request.match_info["id"], reason))


async def logs(batch: BatchService, request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    desc = await batch.describe(job_id)
    if desc is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r}")
    if desc.get("array_status_summary") is not None:
        raise ApiError(
            400, "array_parent", f"{job_id} is an array job; ask for a child's logs ({job_id}:0 ...)"
        )
    attempts = desc["attempts"]
    number = _int(request, "attempt", len(attempts))
    offset = max(0, _int(request, "offset", 0) or 0)
    headers = {"X-Sluice-Job-Status": desc["status"], "X-Sluice-Offset": str(offset)}
    if not attempts:
        return web.Response(text="", content_type="text/plain", headers=headers)
    if number is None or not 1 <= number <= len(attempts):
        raise ApiError(404, "no_attempt", f"{job_id} has attempts 1..{len(attempts)}")
    chunk = await asyncio.to_thread(_read_from, batch.data_dir, attempts[number - 1]["log_path"], offset)
    if chunk is None:
        raise ApiError(403, "log_outside_data_dir", "the log path is outside the data dir")
    headers["X-Sluice-Offset"] = str(offset + len(chunk))
    headers["X-Sluice-Attempt"] = str(number)
    # this attempt will write no more: a later one exists, or the job has ended
    headers["X-Sluice-Done"] = "1" if number < len(attempts) or desc["status"] in DONE else "0"
    return web.Response(body=chunk, content_type="text/plain", charset="utf-8", headers=headers)


def _read_from(data_dir: Path, log_path: str, offset: int) -> bytes | None:
    """Up to 1 MiB of the log from ``offset``; None for a path outside the data dir."""
    path = Path(log_path).resolve()
    if data_dir.resolve() not in path.parents:
        return None
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(MAX_LOG_CHUNK)
    except FileNotFoundError:
        return b""


async def definitions(batch: BatchService, request: web.Request) -> web.Response:
    if request.method == "POST":
        return web.json_response(await batch.register_definition(await json_object(request)), status=201)
    return web.json_response({"definitions": batch.list_definitions()})


async def queues(batch: BatchService, request: web.Request) -> web.Response:
    if request.method == "GET":
        return web.json_response({"queues": [q.public() for q in batch.queues.values()]})
    body = await json_object(request)
    if "name" in request.match_info:
        body["name"] = request.match_info["name"]
    out = await batch.put_queue(body, create=request.method == "POST")
    return web.json_response(out, status=201 if request.method == "POST" else 200)


async def environments(batch: BatchService, request: web.Request) -> web.Response:
    if request.method == "GET":
        return web.json_response({"environments": [e.public() for e in batch.envs.values()]})
    body = await json_object(request)
    if "name" in request.match_info:
        body["name"] = request.match_info["name"]
    out = await batch.put_environment(body, create=request.method == "POST")
    return web.json_response(out, status=201 if request.method == "POST" else 200)


async def reclaim(batch: BatchService, request: web.Request) -> web.Response:
    return web.json_response(await batch.reclaim(request.match_info["name"]))


async def policies(batch: BatchService, request: web.Request) -> web.Response:
    if request.method == "GET":
        return web.json_response({"scheduling_policies": batch.policies.list()})
    if request.method == "DELETE":
        await batch.policies.delete(request.match_info["name"])
        return web.json_response({"deleted": request.match_info["name"]})
    body = await json_object(request)
    if "name" in request.match_info:
        body["name"] = request.match_info["name"]
    out = await batch.policies.put(body, create=request.method == "POST")
    return web.json_response(out, status=201 if request.method == "POST" else 200)


async def shares(batch: BatchService, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in batch.queues:
        raise ApiError(404, "unknown_queue", f"no job queue {name!r}")
    return web.json_response({"queue": name, "shares": batch.share_usage(name)})


def routes(engine: Engine) -> Callable[[web.Application], None]:
    """The batch route group for ``engine``'s app (503 while no Docker engine is attached)."""
    return lambda app: add_routes(app, engine)


def add_routes(app: web.Application, engine: Engine) -> None:
    r = app.router
    r.add_post("/api/v1/jobs", _route(engine, submit))
    r.add_get("/api/v1/jobs", _route(engine, list_jobs))
    r.add_get("/api/v1/jobs/{id}", _route(engine, describe))
    r.add_post("/api/v1/jobs/{id}/cancel", _route(engine, cancel))
    r.add_post("/api/v1/jobs/{id}/terminate", _route(engine, terminate))
    r.add_get("/api/v1/jobs/{id}/logs", _route(engine, logs))
    for path, fn in (("definitions", definitions), ("queues", queues), ("environments", environments)):
        r.add_get(f"/api/v1/{path}", _route(engine, fn))
        r.add_post(f"/api/v1/{path}", _route(engine, fn))
    r.add_patch("/api/v1/queues/{name}", _route(engine, queues))
    r.add_patch("/api/v1/environments/{name}", _route(engine, environments))
    r.add_post("/api/v1/environments/{name}/reclaim", _route(engine, reclaim))
    r.add_get("/api/v1/scheduling-policies", _route(engine, policies))
    r.add_post("/api/v1/scheduling-policies", _route(engine, policies))
    r.add_patch("/api/v1/scheduling-policies/{name}", _route(engine, policies))
    r.add_delete("/api/v1/scheduling-policies/{name}", _route(engine, policies))
    r.add_get("/api/v1/queues/{name}/shares", _route(engine, shares))
