"""The dashboard: server-rendered pages for runs, a run's DAG, workflows, batch and events.

Pages are jinja2 templates (engine/api/templates/, autoescaped: a workflow name, an error or a
log line can never inject markup) with one small script (static/sluice.js) and no front-end
library: the DAG is an SVG laid out from the workflow's levels here, and "live" is server-sent
events. ``/dashboard/stream`` says "something changed" (at most every ``PUSH_EVERY_S``) whenever
the orchestrator reports progress; a page then re-fetches its own live part (``?fragment=1``)
and swaps it in, so there is one renderer, the server's, and no page reload.

Actions (cancel, retry, run again, start a run) are the API's routes, called by the script with
JSON bodies, so they pass the same auth and CSRF checks as any client (engine/api/auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import aiosqlite
import jinja2
from aiohttp import web

from engine.api.next_fires import next_fires
from engine.events import iso
from engine.notify import outbox
from engine.store import queries
from workflows.spec import Workflow

TAIL_LINES = 200
TAIL_BYTES = 64 * 1024
PAGE = 50
PUSH_EVERY_S = 0.3
KEEPALIVE_S = 15.0
RUN_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
#: the runs list's time ranges: hours back from now, and their labels
SPANS = {"1": "last hour", "24": "last day", "168": "last week"}
STATIC = Path(__file__).with_name("static")

#: DAG drawing: node box and gaps, in SVG user units
NODE_W, NODE_H, GAP_X, GAP_Y = 150, 36, 60, 18


def _duration(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    seconds = (end or time.time()) - start
    return f"{seconds:.2f}s" if seconds < 60 else f"{seconds / 60:.1f}m"


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("engine.api", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["when"] = lambda ts: "" if ts is None else iso(ts)[:19].replace("T", " ")
_env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
_env.globals["duration"] = _duration


#: the runs list counts each state up to here, then shows "10000+": a count of a long history
#: is a scan of it, and the page is read every few seconds
COUNT_CAP = 10_000


async def status_counts(db: aiosqlite.Connection) -> dict[str, int]:
    """Runs per state, each counted up to ``COUNT_CAP + 1`` (an index walk that stops there).

    One statement for all the states: one hop to the reader's thread, not one per state."""
    one = "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE status = ? LIMIT ?)"
    sql = "SELECT " + ", ".join(f"({one})" for _ in RUN_STATES)
    args = [a for s in RUN_STATES for a in (s, COUNT_CAP + 1)]
    row = next(iter(await db.execute_fetchall(sql, args)))
    return {s: int(n) for s, n in zip(RUN_STATES, row, strict=True)}


def dag_layout(wf: Workflow, states: dict[str, Any]) -> dict[str, Any]:
    """Boxes and edges of the SVG: one column per level of the workflow's DAG, left to right."""
    steps, cols = wf.steps, wf.dag.levels
    tallest = max((len(c) for c in cols), default=0)
    height = max(1, tallest) * (NODE_H + GAP_Y) + GAP_Y
    nodes: dict[str, dict[str, Any]] = {}
    for x, col in enumerate(cols):
        top = (height - len(col) * (NODE_H + GAP_Y) + GAP_Y) / 2
        for y, name in enumerate(col):
            state = states.get(name) or {}
            nodes[name] = {
                "name": name,
                "x": GAP_X / 2 + x * (NODE_W + GAP_X),
                "y": top + y * (NODE_H + GAP_Y),
                "status": state.get("status", "PENDING"),
                "label": (name if len(name) <= 18 else name[:17] + "…")
                + (f" {state['progress']}" if state.get("progress") else ""),
                "kind": steps[name].kind,
            }
    edges = [
        {
            "x1": nodes[n]["x"] + NODE_W,
            "y1": nodes[n]["y"] + NODE_H / 2,
            "x2": node["x"],
            "y2": node["y"] + NODE_H / 2,
        }
        for node in nodes.values()
        for n in steps[node["name"]].needs
        if n in nodes
    ]
    width = GAP_X + len(cols) * (NODE_W + GAP_X) - GAP_X
    return {
        "nodes": list(nodes.values()),
        "edges": edges,
        "width": width,
        "height": height,
        "w": NODE_W,
        "h": NODE_H,
    }


def timeline(run: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
    """Each attempt's bar: where it starts and how long it runs, in % of the run's span so far."""
    starts = [a["started_at"] for a in attempts if a["started_at"] is not None]
    if not starts:
        return
    t0 = min([run.get("started_at") or starts[0], *starts])
    t1 = max([run.get("ended_at") or time.time(), *(a["ended_at"] or time.time() for a in attempts)])
    span = max(t1 - t0, 1e-6)
    for a in attempts:
        if a["started_at"] is None:
            continue
        end = a["ended_at"] or time.time()
        a["bar"] = {
            "left": 100 * (a["started_at"] - t0) / span,
            "width": max(0.5, 100 * (end - a["started_at"]) / span),
        }


class Changes:
    """A counter the orchestrator's progress bumps; each stream waits for it to move."""

    def __init__(self) -> None:
        self.version = 0
        self._moved = asyncio.Event()

    def __call__(self, *_: Any) -> None:
        self.version += 1
        self._moved.set()

    async def wait(self, seen: int, timeout_s: float) -> int:
        if self.version == seen:
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), timeout_s)
        return self.version


def add_dashboard(app: web.Application, engine: Any) -> None:
    """The pages of ``engine``'s dashboard, its event stream and its static files."""
    pages = Pages(engine)
    engine.orchestrator.listeners.append(pages.changes)
    app.router.add_get("/", pages.runs)
    app.router.add_get("/runs/{id}", pages.run_page)
    app.router.add_get("/workflows", pages.workflows)
    app.router.add_get("/batch", pages.batch)
    app.router.add_get("/events", pages.events)
    app.router.add_get("/dashboard/stream", pages.stream)
    app.router.add_static("/static/", STATIC, append_version=False)


class Pages:
    """The dashboard's handlers over one engine (read through its store, like the API)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.changes = Changes()

    @staticmethod
    def page(name: str, status: int = 200, **context: Any) -> web.Response:
        html = _env.get_template(name).render(now=iso(time.time()), **context)
        return web.Response(text=html, content_type="text/html", status=status)

    def not_found(self, what: str, back: str, label: str) -> web.Response:
        return self.page("error.html", status=404, title="Not found", message=what, back=back, label=label)

    async def runs(self, request: web.Request) -> web.Response:
        q = request.query
        search = q.get("q", "").strip()
        if search:
            if await self.engine.describe_run(search) is not None:
                raise web.HTTPSeeOther(f"/runs/{search}")
            return self.not_found(f"no run {search}", "/", "back to the runs")
        status = q.get("status") or None
        status = status if status in RUN_STATES else None
        workflow = q.get("workflow") or None
        before = q.get("before") or None
        trigger = q.get("trigger") or None
        hours = q.get("hours") or ""
        since = time.time() - float(hours) * 3600 if hours in SPANS else None

        async with self.engine.store.reader() as db:
            found = await queries.list_runs(
                db,
                workflow=workflow,
                status=status,
                limit=PAGE,
                before=before,
                trigger=trigger,
                since=since,
            )
            counts = await status_counts(db)
        found = found or []
        context = {
            "runs": found,
            "counts": counts,
            "cap": COUNT_CAP,
            "states": RUN_STATES,
            "workflows": sorted(self.engine.catalog),
            "filters": {
                "workflow": workflow or "",
                "status": status or "",
                "trigger": trigger or "",
                "hours": hours,
            },
            "triggers": sorted(
                {t.name for wf in self.engine.catalog.values() for t in wf.triggers} | {"manual"}
            ),
            "spans": SPANS,
            "next": found[-1]["run_id"] if len(found) == PAGE else None,
            "active": self.engine.orchestrator.active,
        }
        return self.page("_runs.html" if q.get("fragment") else "runs.html", **context)

    async def run_page(self, request: web.Request) -> web.Response:
        run_id = request.match_info["id"]
        run = await self.engine.describe_run(run_id)
        if run is None:
            return self.not_found(f"no run {run_id}", "/", "back to the runs")
        async with self.engine.store.reader() as db:
            attempts = await queries.run_attempts(db, run_id)
            done = await _children_done(db, run_id)
        for name, step in run["steps"].items():  # fan-outs and arrays: "37/120" children ended
            step["progress"] = f"{done.get(name, 0)}/{step['items']}" if step.get("items") else ""
        paths = [a.pop("log_path") for a in attempts]
        live = {p: out for p in paths if p and (out := self.engine.functions.live_output(p)) is not None}
        tails = await asyncio.to_thread(_tails, self.engine.settings.data_dir, paths)
        for att, path, tail in zip(attempts, paths, tails, strict=True):
            att["tail"] = live.get(path or "", tail) if att["status"] == "RUNNING" else tail
        wf = self.engine.catalog.get(run["workflow"])
        if wf is not None and run.get("workflow_version") not in (None, wf.version):
            wf = None  # made with a version replaced since (a hot reload): not drawn from the new one
        dag = dag_layout(wf, run["steps"]) if wf is not None else None
        if wf is not None:  # the steps table in the DAG's order, not the store's
            rank = {n: i for i, n in enumerate(n for level in wf.dag.levels for n in level)}
            run["steps"] = {
                n: run["steps"][n] for n in sorted(run["steps"], key=lambda n: (rank.get(n, len(rank)), n))
            }
        timeline(run, attempts)
        context = {"run": run, "attempts": attempts, "dag": dag, "error_text": _error_text(run.get("error"))}
        return self.page("_run.html" if request.query.get("fragment") else "run.html", **context)

    async def workflows(self, request: web.Request) -> web.Response:
        async with self.engine.store.reader() as db:
            last = await _last_runs(db)
        fires = await next_fires(self.engine)
        flows = []
        for wf in sorted(self.engine.catalog.values(), key=lambda w: w.name):
            flows.append(
                {
                    "name": wf.name,
                    "description": wf.description,
                    "params": wf.params,
                    "triggers": [
                        {
                            **_trigger_line(wf.name, t),
                            **self.engine.pauses.view(wf.name, t.name),
                            "next_fire": fires.get((wf.name, t.name)),
                        }
                        for t in wf.triggers
                    ],
                    "last": last.get(wf.name),
                    "yaml": _read_text(Path(wf.file)),
                    "steps": len(wf.steps),
                    "version": wf.version,
                }
            )
        return self.page("workflows.html", workflows=flows, reload_errors=self.engine.catalog.errors)

    async def batch(self, request: web.Request) -> web.Response:
        service = self.engine.batch
        if service is None:
            return self.page(
                "batch.html", attached=False, queues=[], environments=[], jobs=[], preemptions=[]
            )
        status = request.query.get("status") or None
        queue = request.query.get("queue") or None
        jobs = await service.list_jobs(queue, status, 100)
        queues = sorted((q.public() for q in service.queues.values()), key=lambda q: -int(q["priority"]))
        counts: dict[str, dict[str, int]] = {}
        for job in await service.list_jobs(None, None, 1000):
            counts.setdefault(job.get("queue", ""), {}).setdefault(job["status"], 0)
            counts[job.get("queue", "")][job["status"]] += 1
        for q in queues:
            q["counts"] = counts.get(str(q["name"]), {})
        envs = [e.public() for e in service.envs.values()]
        preemptions = await service.recent_preemptions(queue)
        shares = service.share_usage(queue) if queue else {}
        return self.page(
            "batch.html",
            attached=True,
            queues=queues,
            environments=envs,
            jobs=jobs,
            preemptions=preemptions,
            queue=queue,
            shares=shares,
        )

    async def events(self, request: web.Request) -> web.Response:
        source = request.query.get("source") or None
        async with self.engine.store.reader() as db:
            found = await queries.list_events(db, source=source, limit=PAGE)
            started = await _runs_of_events(db, [e["id"] for e in found])
        for event in found:
            event["_runs"] = started.get(event["id"], [])
        dead = await self.engine.store.read(lambda c: outbox.dlq_list(c, PAGE))
        return self.page("events.html", events=found, dead=dead, source=source or "")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the tab was closed: nothing to tell
            await self._push(response)
        return response

    async def _push(self, response: web.StreamResponse) -> None:
        seen = self.changes.version
        await response.write(b"retry: 2000\n\n")
        while True:
            now = await self.changes.wait(seen, KEEPALIVE_S)
            if now == seen:
                await response.write(b": keepalive\n\n")
                continue
            seen = now
            await response.write(f"data: {now}\n\n".encode())
            await asyncio.sleep(PUSH_EVERY_S)  # a burst of progress is one refresh, not hundreds


async def _runs_of_events(db: aiosqlite.Connection, ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """The runs each event started (the rules it matched, as runs)."""
    out: dict[str, list[dict[str, str]]] = {}
    if not ids:
        return out
    marks = ",".join("?" * len(ids))
    sql = f"SELECT event_id, id, workflow, status FROM runs WHERE event_id IN ({marks}) ORDER BY rowid"
    for event_id, run_id, workflow, status in await db.execute_fetchall(sql, ids):
        out.setdefault(event_id, []).append({"run_id": run_id, "workflow": workflow, "status": status})
    return out


async def _children_done(db: aiosqlite.Connection, run_id: str) -> dict[str, int]:
    """Per step, the fan-out items that ended: a function's in ``steps``, an array's (``array:``
    or a container's ``for_each``) as its child jobs."""
    rows = await db.execute_fetchall(
        "SELECT step, COUNT(*) FROM steps WHERE run_id=? AND idx>=0"
        " AND status IN ('SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED') GROUP BY step"
        " UNION ALL SELECT s.step, COUNT(*) FROM steps s JOIN jobs j ON j.parent_id = s.job_id"
        " WHERE s.run_id=? AND s.idx=-1 AND s.items IS NOT NULL AND j.status IN ('SUCCEEDED', 'FAILED')"
        " GROUP BY s.step",
        (run_id, run_id),
    )
    done: dict[str, int] = {}
    for step, count in rows:
        done[step] = done.get(step, 0) + count
    return done


async def _last_runs(db: aiosqlite.Connection) -> dict[str, dict[str, Any]]:
    """Each workflow's last run and the event that started it (what kind of event, and when)."""
    rows = await db.execute_fetchall(
        "SELECT r.workflow, r.id, r.status, r.created_at, r.trigger, e.id, e.source, e.detail_type"
        " FROM runs r LEFT JOIN events e ON e.id = r.event_id"
        " WHERE r.rowid IN (SELECT MAX(rowid) FROM runs GROUP BY workflow)"
    )
    return {
        r[0]: {
            "run_id": r[1],
            "status": r[2],
            "created_at": r[3],
            "trigger": r[4] or "manual",
            "event": None if r[5] is None else {"id": r[5], "source": r[6], "detail_type": r[7]},
        }
        for r in rows
    }


def _trigger_line(workflow: str, spec: Any) -> dict[str, str]:
    """What the page shows of a trigger: kind, name and where it listens; never a credential."""
    kind = type(spec).__name__.removesuffix("Trigger").lower()
    detail = ""
    if kind == "webhook":
        detail = f"POST /hooks/{workflow}/{spec.name}"
    elif kind == "schedule":
        detail = f"{spec.expression} ({getattr(spec, 'timezone', None) or 'UTC'})"
    elif kind == "file":
        detail = str(getattr(spec, "path", ""))
    return {"kind": kind, "name": spec.name, "detail": detail}


def _error_text(error: Any) -> str:
    """A run or attempt error for people: the message, then the traceback as lines."""
    if not error:
        return ""
    if isinstance(error, dict):
        head = f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
        trace = error.get("stackTrace") or []
        lines = trace if isinstance(trace, list) else [str(trace)]
        return "\n".join([head, *(str(line).rstrip("\n") for line in lines)])
    return str(error)


_env.filters["error_text"] = _error_text


#: a credential written straight into a workflow file is not shown (``${env:...}`` references are)
_SECRET_LINE = re.compile(
    r"""((?:secret|token|password|api[-_]?key)["']?\s*:\s*)(?!["']?\$\{env:)[^,}\n]+""", re.I
)


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    return _SECRET_LINE.sub(r"\1*****", text)


def _tails(data_dir: Path, paths: list[str | None]) -> list[str]:
    root = Path(data_dir).resolve()
    return [_tail(root, p) for p in paths]


def _tail(root: Path, log_path: str | None) -> str:
    if not log_path:
        return ""
    path = Path(log_path).resolve()
    if not path.is_relative_to(root):
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - TAIL_BYTES))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "".join(text.splitlines(keepends=True)[-TAIL_LINES:])
