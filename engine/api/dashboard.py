"""The dashboard: server-rendered HTML at ``/`` (recent runs) and ``/runs/<id>`` (steps, attempts, logs).

No JavaScript: a meta refresh every 5 s keeps it current. jinja2 autoescapes every value, so a
workflow name, an error message or a log line can never inject markup.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from engine.events import iso
from engine.store import records

TAIL_LINES = 40
TAIL_BYTES = 64 * 1024

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>{% block title %}Sluice{% endblock %}</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
.SUCCEEDED{color:#17803d}.FAILED{color:#b42318}.RUNNING{color:#1d4ed8}.CANCELLED,.SKIPPED{color:#777}
pre{background:#f6f6f6;padding:.6em;max-height:25em;overflow:auto}
</style></head><body><h1><a href="/">Sluice</a></h1>{% block body %}{% endblock %}</body></html>
"""

_INDEX = """{% extends "base" %}{% block body %}
<p>{{ workflows }} workflows loaded · {{ active }} runs active · updated {{ now }}</p>
<table><tr><th>run</th><th>workflow</th><th>status</th><th>created</th><th>duration</th><th>reason</th></tr>
{% for r in runs %}<tr><td><a href="/runs/{{ r.run_id }}">{{ r.run_id }}</a></td><td>{{ r.workflow }}</td>
<td class="{{ r.status }}">{{ r.status }}</td><td>{{ r.created }}</td>
<td>{{ r.duration_s if r.duration_s is not none else "" }}{{ "s" if r.duration_s is not none }}</td>
<td>{{ r.reason or "" }}</td></tr>
{% else %}<tr><td colspan="6">No runs yet.</td></tr>{% endfor %}</table>
{% endblock %}"""

_RUN = """{% extends "base" %}{% block title %}{{ run.run_id }} · Sluice{% endblock %}{% block body %}
<h2>{{ run.workflow }} · {{ run.run_id }} · <span class="{{ run.status }}">{{ run.status }}</span></h2>
<p>trigger: {{ run.trigger or "manual" }} · event {{ run.event_id }}
{% if run.reason %} · {{ run.reason }}{% endif %}</p>
<h3>Params</h3><pre>{{ run.params | tojson(indent=2) }}</pre>
{% if run.outputs is not none %}<h3>Outputs</h3><pre>{{ run.outputs | tojson(indent=2) }}</pre>{% endif %}
{% if run.error %}<h3>Error</h3><pre>{{ run.error | tojson(indent=2) }}</pre>{% endif %}
<h3>Steps</h3>
<table><tr><th>level</th><th>step</th><th>status</th><th>attempts</th><th>reason</th></tr>
{% for level, name in steps %}{% set s = run.steps[name] %}<tr><td>{{ level }}</td><td>{{ name }}</td>
<td class="{{ s.status }}">{{ s.status }}</td><td>{{ s.attempts }}</td><td>{{ s.reason or "" }}</td></tr>
{% endfor %}</table>
<h3>Attempts</h3>
{% for a in attempts %}<h4>{{ a.step }}{% if a.index is not none %}[{{ a.index }}]{% endif %}
attempt {{ a.attempt }} · <span class="{{ a.status }}">{{ a.status }}</span></h4>
{% if a.error %}<pre>{{ a.error | tojson(indent=2) }}</pre>{% endif %}
{% if a.tail %}<pre>{{ a.tail }}</pre>{% endif %}
{% else %}<p>No attempts yet.</p>{% endfor %}
{% endblock %}"""

_env = jinja2.Environment(
    loader=jinja2.DictLoader({"base": _BASE, "index": _INDEX, "run": _RUN}),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def add_dashboard(app: web.Application, engine: Any) -> None:
    """Add ``GET /`` and ``GET /runs/{id}`` for ``engine`` to ``app``."""

    async def index(request: web.Request) -> web.Response:
        runs = await engine.store.read(lambda c: records.list_runs(c, limit=50)) or []
        for run in runs:
            run["created"] = iso(run["created_at"])
        html = _env.get_template("index").render(
            runs=runs, workflows=len(engine.catalog), active=engine.orchestrator.active, now=iso(time.time())
        )
        return web.Response(text=html, content_type="text/html")

    async def run_page(request: web.Request) -> web.Response:
        run_id = request.match_info["id"]
        run = await engine.describe_run(run_id)
        if run is None:
            raise web.HTTPNotFound(text=f"no run {run_id}", content_type="text/plain")
        attempts = await engine.store.read(lambda c: records.run_attempts(c, run_id))
        tails = await asyncio.to_thread(
            _tails, engine.settings.data_dir, [a.pop("log_path") for a in attempts]
        )
        for att, tail in zip(attempts, tails, strict=True):
            att["tail"] = tail
        steps = _by_level(engine.catalog.get(run["workflow"]), run["steps"])
        html = _env.get_template("run").render(run=run, attempts=attempts, steps=steps)
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", index)
    app.router.add_get("/runs/{id}", run_page)


def _by_level(workflow: Any, steps: dict[str, Any]) -> list[tuple[int | str, str]]:
    """``(level, step)`` in the DAG's topological generations; the recorded order if it is gone."""
    if workflow is None:
        return [("", name) for name in steps]
    placed = [(i, name) for i, level in enumerate(workflow.dag.levels) for name in level if name in steps]
    seen = {name for _, name in placed}
    return [*placed, *(("", name) for name in steps if name not in seen)]


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
