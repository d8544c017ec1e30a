"""HTTP routes for dead letters and replay (engine/server.py adds the group to ``sluice serve``).

``GET  /api/v1/notifications/dlq``          dead letters, oldest first (``?limit=``)
``POST /api/v1/notifications/dlq/retry``    ``{"ids": [..]}`` or ``{}`` for all: back to the outbox
``POST /api/v1/notifications/dlq/purge``    ``{"ids": [..]}`` or ``{}`` for all: deleted
``POST /api/v1/events/replay``              ``{"since", "until"?, "pattern"?, "workflow"?, "dry_run"?,
                                              "force"?, "name"?}``

Answers never carry a subscriber's secret or headers: rows hold only the key, the URL without
credentials or query, and the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from engine.api.http import ApiError, json_object
from engine.bus import archive
from engine.bus.bus import Bus
from engine.notify import outbox
from engine.notify.sender import NotifyService
from workflows.errors import PatternError


def _ids(data: dict[str, Any]) -> list[int] | None:
    ids = data.get("ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ApiError(
            400, "bad_ids", 'ids must be a list of dead-letter ids (numbers), e.g. {"ids": [3, 4]}'
        )
    return ids


async def _request_ids(request: web.Request) -> list[int] | None:
    """The dead-letter ids of a retry/purge body (None: all of them), or the 400 answer."""
    return _ids(await json_object(request, hint='send a JSON object, e.g. {"ids": [1, 2]}'))


async def _replay(bus: Bus, request: web.Request) -> web.Response:
    """``POST /api/v1/events/replay``: the body's window and filters, answered with the report."""
    data = await json_object(request)
    try:
        since = archive.parse_time(data.get("since"))
        until = archive.parse_time(data.get("until"))
    except ValueError as exc:
        raise ApiError(400, "bad_time", str(exc)) from None
    if since is None:
        raise ApiError(400, "missing_since", 'give since, e.g. {"since": "2026-01-31T12:00:00Z"} or "2h"')
    for flag in ("dry_run", "force"):  # -1 or "no" must not mean "replay for real"
        if not isinstance(data.get(flag, False), bool):
            raise ApiError(400, "bad_body", f"{flag} must be true or false, got {data[flag]!r}")
    workflow, name = data.get("workflow"), data.get("name")
    for key, value in (("workflow", workflow), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "bad_body", f"{key} must be a string, got {value!r}")
    pattern = data.get("pattern")
    if pattern is not None and not isinstance(pattern, dict):
        raise ApiError(400, "bad_pattern", 'pattern must be an event pattern object, e.g. {"source": ["x"]}')
    try:
        report = await archive.replay(
            bus,
            since,
            until,
            pattern,
            workflow,
            dry_run=data.get("dry_run", False),
            force=data.get("force", False),
            name=name,
        )
    except PatternError as exc:
        raise ApiError(400, "bad_pattern", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "bad_replay", str(exc)) from None
    return web.json_response(report)


def routes(bus: Bus, sender: NotifyService | None) -> Callable[[web.Application], None]:
    """The dead-letter and replay route group (``sender`` is woken when dead letters go back)."""
    return lambda app: add_routes(app, bus, sender)


def add_routes(app: web.Application, bus: Bus, sender: NotifyService | None) -> None:
    """Register the dead-letter and replay routes on ``app``."""
    store = bus.store

    async def dlq_list(request: web.Request) -> web.Response:
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            raise ApiError(400, "bad_param", "limit must be a whole number from 1 to 1000") from None
        rows = await store.read(lambda c: outbox.dlq_list(c, limit))
        return web.json_response({"dead_letters": rows})

    async def dlq_retry(request: web.Request) -> web.Response:
        ids = await _request_ids(request)
        count = await store.write(lambda c: outbox.dlq_retry(c, ids, time.time()), heavy=ids is None)
        if sender is not None:
            sender.wake_all()
        return web.json_response({"retried": count})

    async def dlq_purge(request: web.Request) -> web.Response:
        ids = await _request_ids(request)
        count = await store.write(lambda c: outbox.dlq_purge(c, ids), heavy=ids is None)
        return web.json_response({"purged": count})

    app.router.add_get("/api/v1/notifications/dlq", dlq_list)
    app.router.add_post("/api/v1/notifications/dlq/retry", dlq_retry)
    app.router.add_post("/api/v1/notifications/dlq/purge", dlq_purge)

    async def replay(request: web.Request) -> web.Response:
        return await _replay(bus, request)

    app.router.add_post("/api/v1/events/replay", replay)
