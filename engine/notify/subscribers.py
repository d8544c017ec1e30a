"""Who is told about which events, and how: subscribers, input transformers, signatures.

Parsed from a workflow's ``notify:``/destinations and from the server config; engine/notify.py
delivers what these select. Kept apart because it is configuration and pure functions (no I/O):
the CLI, the API and the tests use it without the sender. Secrets live only in memory: the
dataclasses hide them from ``repr``; see docs/events.md for the receiver's side of a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.bus.destinations import KEYS, invocation_record
from engine.events import RUN_DETAIL_TYPE, RUN_SOURCE
from engine.store.records import dumps
from workflows.patterns import compile_pattern
from workflows.secrets import hide, hide_json

#: defaults (docs/events.md explains the choice)
MAX_AGE_S = 24 * 3600.0  #: like EventBridge: a notification older than a day is dead-lettered
MAX_ATTEMPTS = 100  #: with the 10 min backoff cap this spans ~8 h of a receiver being down
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 600.0  #: a recovered receiver is noticed within 10 minutes
#: a subscriber's undelivered notifications at most, before it is paused
MAX_BACKLOG = 10_000
TIMEOUT_S = 10.0  #: one attempt, connect to last byte of the answer
CONCURRENCY = 4


class TransformError(ValueError):
    """A subscriber's input transformer that cannot work; the message names the fix."""


# --- input transformer (EventBridge InputTransformer) --------------------------------------------------

_PATH_STEP = re.compile(r"\.([A-Za-z0-9_$@-]+)|\[(\d+)\]|\['([^']*)'\]")
_TEMPLATE_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|<([A-Za-z0-9_.$-]+)>')


def _compile_path(path: str) -> list[str | int]:
    if not isinstance(path, str) or not path.startswith("$"):
        raise TransformError(f"path {path!r} must start with $ (write e.g. $.detail.run_id)")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_STEP.match(path, pos)
        if m is None:
            raise TransformError(f"path {path!r}: cannot read {path[pos:]!r} (write $.a.b[0])")
        steps.append(int(m.group(2)) if m.group(2) is not None else (m.group(1) or m.group(3) or ""))
        pos = m.end()
    return steps


def _walk(value: Any, steps: list[str | int]) -> Any:
    for step in steps:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


@dataclass(frozen=True, slots=True)
class Transform:
    """``paths`` pick values out of the event; ``template`` is JSON text with ``<name>`` holes.

    A hole outside quotes becomes the value as JSON; inside a JSON string it becomes the value's
    text, escaped. Values are data: they are JSON-encoded, never rendered as templates.
    Without a template the body is the object of the picked values.
    """

    paths: Mapping[str, list[str | int]]
    template: str | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Transform:
        paths_raw = raw.get("paths") or {}
        if not isinstance(paths_raw, Mapping):
            raise TransformError('transform.paths must map names to paths, e.g. {id: "$.detail.run_id"}')
        paths = {str(k): _compile_path(v) for k, v in paths_raw.items()}
        template = raw.get("template")
        if template is not None:
            if not isinstance(template, str):
                raise TransformError("transform.template must be a string of JSON with <name> holes")
            for m in _TEMPLATE_TOKEN.finditer(template):
                if m.group(1) is not None and m.group(1) not in paths:
                    raise TransformError(f"transform.template uses <{m.group(1)}>, which is not in paths")
            try:
                json.loads(_TEMPLATE_TOKEN.sub(lambda m: "null" if m.group(1) else m.group(0), template))
            except json.JSONDecodeError as exc:
                raise TransformError(f"transform.template is not JSON once holes are filled: {exc}") from None
        return cls(paths, template)

    def render(self, event: Mapping[str, Any]) -> str:
        values = {name: _walk(event, steps) for name, steps in self.paths.items()}
        if self.template is None:
            return dumps(values)

        def fill(m: re.Match[str]) -> str:
            if m.group(1) is not None:
                return dumps(values[m.group(1)])
            return re.sub(r"<([A-Za-z0-9_.$-]+)>", lambda h: _inside(values, h), m.group(0))

        return _TEMPLATE_TOKEN.sub(fill, self.template)


def _inside(values: Mapping[str, Any], hole: re.Match[str]) -> str:
    if hole.group(1) not in values:
        return hole.group(0)
    value = values[hole.group(1)]
    text = value if isinstance(value, str) else dumps(value)
    return dumps(text)[1:-1]


# --- subscribers ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One destination. ``key`` names its queue in the outbox (stable across restarts)."""

    key: str
    url: str = field(repr=False)  #: may carry a token in its query; logs and answers use safe_url
    on: tuple[str, ...] = ("SUCCEEDED", "FAILED")
    pattern: Any = None  #: a compiled Pattern; when set it replaces ``on``
    workflow: str | None = None  #: a workflow's own ``notify:``: only that workflow's events
    secret: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    transform: Transform | None = None
    concurrency: int = CONCURRENCY
    rate_per_s: float | None = None
    ordered: bool = False
    max_attempts: int = MAX_ATTEMPTS
    max_age_s: float = MAX_AGE_S
    timeout_s: float = TIMEOUT_S
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S
    #: undelivered notifications kept at most; past it the subscriber is paused (engine/notify/outbox.py)
    max_backlog: int = MAX_BACKLOG
    #: builds the body instead of the event (Lambda-style destinations send an invocation record)
    render: Callable[[Mapping[str, Any]], str] | None = field(default=None, repr=False)

    def matches(self, env: Mapping[str, Any]) -> bool:
        detail = env.get("detail")
        if self.workflow is not None and not (
            isinstance(detail, dict) and detail.get("workflow") == self.workflow
        ):
            return False
        if self.pattern is not None:
            return bool(self.pattern.matches(env))
        return (
            env.get("source") == RUN_SOURCE
            and env.get("detail-type") == RUN_DETAIL_TYPE
            and isinstance(detail, dict)
            and detail.get("status") in self.on
        )

    def body(self, env: Mapping[str, Any]) -> str:
        if self.render is not None:
            return self.render(env)
        if self.transform is None:
            return dumps(dict(env))
        return hide_json(hide(str(self.transform.render(env))))  # dumps hid the rest already


def safe_url(url: str) -> str:
    """The URL without credentials or query (they may hold tokens): what logs and the API show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def subscribers_from_catalog(catalog: Mapping[str, Any]) -> list[Subscriber]:
    """Every workflow's ``notify:`` entries, keyed ``<workflow>#<n>``."""
    subs = []
    for wf in catalog.values():
        for i, spec in enumerate(getattr(wf, "notify", ()) or ()):
            subs.append(
                Subscriber(
                    key=f"{wf.name}#{i}",
                    url=spec.url,
                    on=tuple(spec.on),
                    pattern=None if spec.pattern is None else compile_pattern(spec.pattern),
                    workflow=wf.name,
                    secret=spec.secret,
                    headers=dict(spec.headers),
                )
            )
    return subs


def subscribers_from_config(entries: Iterable[Mapping[str, Any]]) -> list[Subscriber]:
    """Global subscribers from the server config (``subscribers:``), keyed ``global#<n>`` or ``name``.

    Raises ValueError naming the entry and the fix.
    """
    from workflows.units import parse_duration

    subs = []
    allowed = {"name", "url", "on", "pattern", "secret", "headers", "transform", "concurrency", "rate",
               "ordered", "max_attempts", "max_age", "timeout", "backoff_base", "backoff_cap",
               "max_backlog"}  # fmt: skip
    for i, raw in enumerate(entries):
        where = f"subscribers[{i}]"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("url"), str):
            raise ValueError(f'{where}: needs a url (write e.g. - url: "http://127.0.0.1:9000/hook")')
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r} (use {', '.join(sorted(allowed))})")
        if not raw["url"].startswith(("http://", "https://")):
            raise ValueError(f"{where}.url: must be an http:// or https:// URL")
        try:
            transform = None if raw.get("transform") is None else Transform.parse(raw["transform"])
        except TransformError as exc:
            raise ValueError(f"{where}: {exc}") from None
        subs.append(
            Subscriber(
                key=str(raw.get("name") or f"global#{i}"),
                url=raw["url"],
                on=tuple(raw.get("on") or ("SUCCEEDED", "FAILED")),
                pattern=None if raw.get("pattern") is None else compile_pattern(raw["pattern"]),
                secret=raw.get("secret"),
                headers={str(k): str(v) for k, v in (raw.get("headers") or {}).items()},
                transform=transform,
                concurrency=int(raw.get("concurrency", CONCURRENCY)),
                rate_per_s=None if raw.get("rate") is None else float(raw["rate"]),
                ordered=bool(raw.get("ordered", False)),
                max_attempts=int(raw.get("max_attempts", MAX_ATTEMPTS)),
                max_age_s=parse_duration(raw.get("max_age", MAX_AGE_S)),
                timeout_s=parse_duration(raw.get("timeout", TIMEOUT_S)),
                backoff_base_s=parse_duration(raw.get("backoff_base", BACKOFF_BASE_S)),
                backoff_cap_s=parse_duration(raw.get("backoff_cap", BACKOFF_CAP_S)),
                max_backlog=_positive_int(raw.get("max_backlog", MAX_BACKLOG), f"{where}.max_backlog"),
            )
        )
    return subs


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
        raise ValueError(f"{where}: a whole number from 1 to 10000000, got {value!r}")
    return value


def url_subscribers(catalog: Mapping[str, Any]) -> list[Any]:
    """URL destinations as notification subscribers whose body is the invocation record."""

    def render(env: Mapping[str, Any]) -> str:
        return dumps(invocation_record(env))

    subs = []
    for wf in catalog.values():
        for status, key in KEYS.items():
            dest = getattr(wf, key, None)
            if dest is None or dest.url is None:
                continue
            subs.append(
                Subscriber(
                    key=f"{wf.name}#{key}",
                    url=dest.url,
                    on=(status,),
                    workflow=wf.name,
                    secret=dest.secret,
                    headers=dict(dest.headers),
                    render=render,
                )
            )
    return subs


def sign(secret: str, body: bytes, t: int) -> str:
    """The ``Sluice-Signature`` header value for ``body`` at unix time ``t``."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """The receiver's check (docs/events.md): the MAC matches and ``t`` is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
