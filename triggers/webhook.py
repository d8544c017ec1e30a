"""Webhooks: ``POST /hooks/<workflow>/<trigger>`` turns an HTTP request into a committed event.

Like a Lambda function URL, but durable: the answer ``202`` goes out only after
``emit`` returned, i.e. after the event and the run it starts are committed, so a
caller that got ``202`` can forget the request.

Auth (checked before the body is parsed, in constant time):

- ``secret``: HMAC-SHA256 of the raw body, hex, GitHub style, in ``signature_header``
  (``X-Hub-Signature-256: sha256=<hex>``). With ``timestamp_header`` set, the signed
  message is ``"<timestamp>.<raw body>"`` (Stripe/Slack style) and the timestamp (Unix
  seconds) must lie within ``tolerance_s`` of now, which refuses replays of old requests.
- ``token``: ``Authorization: Bearer <token>``.
- both configured: both are required. ``auth: none`` (explicit in the workflow) skips both.

The secret and the token are never logged, echoed or put into the event.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from triggers.base import Emit, EmitResult, Unavailable
from workflows import jsontext
from workflows.spec import WebhookTrigger

log = logging.getLogger(__name__)

SOURCE, DETAIL_TYPE = "sluice.webhook", "Webhook Received"
MAX_WAIT_S = 300.0
MAX_IDEMPOTENCY_KEY = 255
#: request headers copied into the event besides ``X-*`` ones
KEPT_HEADERS = frozenset({"content-type", "user-agent", "x-request-id", "x-github-event"})
#: words that mark a header as a credential: never copied into the event
SECRET_WORDS = ("authorization", "signature", "token", "secret", "api-key", "apikey", "password", "auth")

#: bodies of a known size below this are read in one call (above it, in checked chunks)
_ONE_READ = 1 << 20

Wait = Callable[[str, float], Awaitable[dict[str, Any] | None]]


def json_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """The one error shape of Sluice's HTTP surface: ``{"error": {"code", "message"}}``."""
    return web.json_response(
        {"error": {"code": code, "message": message}, **extra}, status=status, headers=headers
    )


class WebhookRefused(Exception):
    """A request we answer with a 4xx; ``code`` and ``message`` tell the caller what to fix."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> web.Response:
        return json_error(self.status, self.code, self.message, headers=self.headers)


class WebhookEndpoint:
    """One webhook trigger of one workflow. ``await endpoint.handle(request)`` answers it.

    ``emit`` commits the event (see triggers/base.py); ``wait(run_id, timeout_s)`` returns the
    run's summary once it ended, or ``None`` if it did not end in time (used by ``?wait=``).
    ``max_inflight`` bounds the requests between arrival and commit; past it we answer ``429``.
    """

    def __init__(
        self,
        workflow: str,
        spec: WebhookTrigger,
        emit: Emit,
        wait: Wait | None,
        max_inflight: int = 1024,
        *,
        clock: Callable[[], float] = time.time,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.workflow = workflow
        self.paused = paused  #: an operator paused this trigger: authenticated callers get 503
        self.spec = spec
        self.emit = emit
        self.wait = wait
        self.max_inflight = max_inflight
        self.clock = clock
        self.inflight = 0
        self.resource = f"webhook/{workflow}/{spec.name}"
        self._validator: Any = None
        if spec.schema is not None:
            import jsonschema  # only for webhooks with a schema: it costs ~3 MB and 30 ms to import

            cls = jsonschema.validators.validator_for(spec.schema)
            self._validator = cls(spec.schema)

    def __repr__(self) -> str:
        return f"<WebhookEndpoint {self.resource} auth={self.spec.auth} inflight={self.inflight}>"

    async def handle(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return json_error(
                405,
                "method_not_allowed",
                f"{request.method} is not accepted here; send the event with POST",
                headers={"Allow": "POST"},
            )
        if self.inflight >= self.max_inflight:
            return json_error(
                429,
                "too_many_requests",
                f"{self.inflight} webhook requests are being stored; retry after a second",
                headers={"Retry-After": "1"},
            )
        self.inflight += 1
        try:
            wait_s = _wait_param(request)
            key = _idempotency_key(request)
            raw = await self._read_body(request)
            self._authenticate(request, raw)
            if self.paused():  # after auth: an anonymous caller learns nothing about the trigger
                raise WebhookRefused(
                    503,
                    "trigger_paused",
                    f"the trigger {self.workflow}/{self.spec.name} is paused; nothing was stored, "
                    "send it again once it is resumed",
                    headers={"Retry-After": "60"},
                )
            body = _parse_body(request, raw)
            self._check_schema(body)
            result = await self._emit(self._event(request, body), key)
        except WebhookRefused as refused:
            return refused.response()
        finally:
            self.inflight -= 1
        if wait_s is not None and self.wait is not None and result.run_ids:
            return await self._answer_after_wait(result, wait_s)
        return self._accepted(result)

    # -- steps of handle ----------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        return await read_body(request, self.spec.max_body_bytes, "this webhook's")

    def _authenticate(self, request: web.Request, raw: bytes) -> None:
        spec = self.spec
        if spec.auth == "none":
            return
        stamp = self._check_timestamp(request) if spec.timestamp_header else None
        if spec.secret:
            signed = raw if stamp is None else stamp.encode() + b"." + raw
            _check_signature(request.headers.get(spec.signature_header), spec, signed)
        if spec.token:
            _check_token(request.headers.get("Authorization"), spec.token)

    def _check_timestamp(self, request: web.Request) -> str:
        name = self.spec.timestamp_header or ""
        value = request.headers.get(name)
        if value is None:
            raise WebhookRefused(401, "unauthorized", f"missing {name} header (Unix seconds of the request)")
        try:
            at = float(value)
        except ValueError:
            at = math.nan
        if not math.isfinite(at):  # "nan" would never be stale: replay protection off
            raise WebhookRefused(
                401, "unauthorized", f"{name} must be Unix seconds, e.g. {int(self.clock())}"
            )
        skew = abs(self.clock() - at)
        if skew > self.spec.tolerance_s:
            raise WebhookRefused(
                401,
                "stale_timestamp",
                f"{name} is {skew:.0f}s away from the server's clock "
                f"(tolerance {self.spec.tolerance_s:.0f}s); sign a fresh request (replays are refused)",
            )
        return value

    def _check_schema(self, body: Any) -> None:
        if self._validator is None:
            return
        import jsonschema

        error = jsonschema.exceptions.best_match(self._validator.iter_errors(body))
        if error is not None:
            path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise WebhookRefused(
                422, "schema_mismatch", f"body does not match the schema at {path}: {error.message}"
            )

    def _event(self, request: web.Request, body: Any) -> dict[str, Any]:
        detail = {
            "body": body,
            "headers": _kept_headers(request, self.spec),
            "query": _query(request),
            "source_ip": request.remote,
            "webhook": self.spec.name,
        }
        return {
            "version": "0",
            "source": SOURCE,
            "detail-type": DETAIL_TYPE,
            "resources": [self.resource],
            "detail": detail,
        }

    async def _emit(self, event: dict[str, Any], key: str | None) -> EmitResult:
        dedupe = None if key is None else f"webhook:{self.workflow}:{self.spec.name}:{key}"
        try:
            return await self.emit(event, dedupe_key=dedupe, workflow=self.workflow)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, Unavailable):
                log.warning("webhook %s: not stored: %s", self.resource, exc)
            else:
                log.exception("webhook %s: storing the event failed", self.resource)
            raise WebhookRefused(
                503,
                "not_stored",
                "the event could not be stored; nothing was started, retry later",
                headers={"Retry-After": "1"},
            ) from None

    def _accepted(self, result: EmitResult) -> web.Response:
        body = {
            "event_id": result.event_id,
            "run_ids": list(result.run_ids),
            "status_url": f"/api/v1/runs/{result.run_ids[0]}" if result.run_ids else None,
        }
        if result.duplicate:
            return web.json_response(body, status=200, headers={"Idempotent-Replayed": "true"})
        return web.json_response(body, status=202)

    async def _answer_after_wait(self, result: EmitResult, wait_s: float) -> web.Response:
        assert self.wait is not None
        run_id = result.run_ids[0]
        summary = await self.wait(run_id, wait_s)
        headers = {"Idempotent-Replayed": "true"} if result.duplicate else None
        if summary is None:
            return json_error(
                504,
                "run_not_finished",
                f"run {run_id} did not finish within {wait_s:g}s; it keeps running, "
                f"poll /api/v1/runs/{run_id}",
                headers=headers,
                run_id=run_id,
                event_id=result.event_id,
            )
        body = {k: summary.get(k) for k in ("run_id", "status", "outputs", "error")}
        return web.json_response(body, status=200, headers=headers)


# -- reading bodies -----------------------------------------------------------------------------

#: the app's request bodies reach handlers as sent (the server does not decompress them), so
#: :func:`read_body` can bound the decoded size while it decodes; set by the HTTP service
RAW_BODIES = web.AppKey("raw_bodies", bool)
_CHUNK = 64 * 1024


def _decoder(request: web.Request) -> Any:
    """A streaming decoder for the body's Content-Encoding, or None for a plain body."""
    if not request.app.get(RAW_BODIES, False):
        return None  # the server decoded it already (an app served without raw bodies)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise WebhookRefused(
        415,
        "unsupported_encoding",
        f"Content-Encoding {encoding!r} is not accepted; send gzip, deflate or none",
    )


async def read_body(request: web.Request, limit: int, whose: str = "the") -> bytes:
    """The body, decoded, refused with 413 as soon as it (or its decoded form) passes ``limit``.

    The limit holds for the decoded bytes while they are decoded, so a small compressed body
    cannot grow into a large event (or a large allocation); a body that claims an encoding it
    does not have is a 400, never a 500.
    """
    too_big = WebhookRefused(
        413, "body_too_large", f"the body is over {whose} limit of {limit} bytes; send less"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    decoder = _decoder(request)
    if decoder is None and request.content_length is not None and request.content_length < _ONE_READ:
        return await request.read()  # the common case: one read of a known, small size
    chunks, size = [], 0
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            if decoder is not None:
                chunk = decoder.decompress(chunk, limit + 1 - size)
            size += len(chunk)
            if size > limit:  # a chunked body, a lying Content-Length, or a compression bomb
                raise too_big
            chunks.append(chunk)
        if decoder is not None:
            tail = decoder.flush(limit + 1 - size)
            if size + len(tail) > limit or decoder.unconsumed_tail:
                raise too_big
            if not decoder.eof:
                raise WebhookRefused(400, "bad_encoding", "the compressed body ends early; send all of it")
            chunks.append(tail)
    except zlib.error as exc:
        name = request.headers.get("Content-Encoding", "")
        raise WebhookRefused(
            400,
            "bad_encoding",
            f"the body is not valid {name} ({exc}); send it compressed or drop the header",
        ) from None
    return b"".join(chunks)


# -- pure helpers -----------------------------------------------------------------------------


def _wait_param(request: web.Request) -> float | None:
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_WAIT_S:
        raise WebhookRefused(
            400, "bad_wait", f"wait must be seconds between 0 and {MAX_WAIT_S:g}, got {raw!r}"
        )
    return value


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and (not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or _text(key) != key):
        raise WebhookRefused(
            400,
            "bad_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters of UTF-8 text",
        )
    return key


def _text(value: str) -> str:
    """A header value as text the store can keep: bytes that are not UTF-8 become U+FFFD.

    aiohttp hands them over as lone surrogates (``surrogateescape``), which no JSON or SQLite
    text can hold: stored as they are, they made the event unstorable (a 503 "retry later").
    """
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _check_signature(header: str | None, spec: WebhookTrigger, signed: bytes) -> None:
    name = spec.signature_header
    if not header:
        raise WebhookRefused(401, "unauthorized", f"missing {name} header (sha256=<hex HMAC of the body>)")
    scheme, _, given = header.partition("=")
    if scheme.strip().lower() != "sha256" or not given:
        raise WebhookRefused(401, "unauthorized", f"{name} must look like sha256=<hex>")
    assert spec.secret is not None
    expected = hmac.new(spec.secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.strip().lower()):
        what = "the timestamp, a dot and the raw body" if spec.timestamp_header else "the raw body"
        raise WebhookRefused(
            401, "bad_signature", f"{name} does not match: sign {what} with the shared secret (HMAC-SHA256)"
        )


def _check_token(header: str | None, token: str) -> None:
    if not header:
        raise WebhookRefused(401, "unauthorized", "missing Authorization header (Bearer <token>)")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise WebhookRefused(
            401, "bad_token", "the bearer token is not accepted; send Authorization: Bearer <token>"
        )


def _parse_body(request: web.Request, raw: bytes) -> Any:
    mime = request.content_type.lower()  # aiohttp gives application/octet-stream when absent
    if not raw and not request.headers.get("Content-Type"):
        return None
    if mime.endswith("/json") or mime.endswith("+json"):
        return _parse_json(raw)
    if mime == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise WebhookRefused(422, "bad_form", "the form body is not UTF-8") from None
        return {k: v[0] if len(v) == 1 else v for k, v in pairs.items()}
    raise WebhookRefused(
        415,
        "unsupported_media_type",
        f"Content-Type {mime!r} is not accepted; send application/json or application/x-www-form-urlencoded",
    )


def _parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRefused(422, "bad_json", f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return jsontext.loads(text)
    except json.JSONDecodeError as exc:
        raise WebhookRefused(
            422,
            "bad_json",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
        ) from None


@functools.lru_cache(maxsize=1024)
def _keeps(name: str, signature_header: str) -> str | None:
    """The lower-case name to keep a header under, or None to drop it (cached: names repeat)."""
    low = name.lower()
    if low in (signature_header, "authorization", "cookie", "idempotency-key"):
        return None
    if any(word in low for word in SECRET_WORDS):
        return None
    return low if low in KEPT_HEADERS or low.startswith("x-") else None


def _kept_headers(request: web.Request, spec: WebhookTrigger) -> dict[str, str]:
    """Useful headers for the workflow; never a credential (signature, token, authorization)."""
    signature = spec.signature_header.lower()
    kept: dict[str, str] = {}
    for name, value in request.headers.items():
        low = _keeps(name, signature)
        if low is not None:
            kept[_text(low)] = _text(value)
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        kept["idempotency-key"] = key
    return kept


def _query(request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in request.query:
        values = request.query.getall(name)
        out[name] = values[0] if len(values) == 1 else values
    return out
