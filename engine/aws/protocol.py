"""What the AWS faces share: errors in AWS's shape, the SigV4 gate, reading members, paging, ARNs.

Errors are rendered as botocore parses them into ``ClientError``: the code in ``__type`` (and,
for REST-JSON, the ``x-amzn-ErrorType`` header), the text in ``message``. Bad input is the
caller's fault (400, ``ClientException`` for Batch); anything unexpected is logged and answered
500 (``ServerException`` / ``InternalException``) without a stack trace.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from engine.aws.sigv4 import SignatureError, verify
from engine.batch.jobs import JobError
from triggers.base import Unavailable

log = logging.getLogger(__name__)

#: the largest request body the AWS faces read
MAX_BODY_BYTES = 1 << 20

Body = dict[str, Any]
Operation = Callable[[Body], Awaitable[Body]]


class AwsError(Exception):
    """An answer in AWS's error shape: ``code`` is what ``ClientError.response["Error"]["Code"]`` says."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class Face:
    """One AWS protocol: how its errors look and what its content type is."""

    def __init__(self, content_type: str, client_error: str, server_error: str, header: bool) -> None:
        self.content_type, self.client_error, self.server_error = content_type, client_error, server_error
        self.header = header  #: REST-JSON also names the error in ``x-amzn-ErrorType``

    def answer(self, body: Body, status: int = 200) -> web.Response:
        return web.Response(
            body=json.dumps(body, separators=(",", ":")).encode(),
            status=status,
            content_type=self.content_type,
        )

    def error(self, code: str, message: str, status: int) -> web.Response:
        resp = self.answer({"__type": code, "message": message}, status)
        if self.header:
            resp.headers["x-amzn-ErrorType"] = code
        return resp


REST_JSON = Face("application/json", "ClientException", "ServerException", header=True)
JSON_11 = Face("application/x-amz-json-1.1", "ValidationException", "InternalException", header=False)


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def check_auth(request: web.Request, body: bytes, token: str | None) -> None:
    """No token: loopback callers only, signature unchecked. A token: a valid SigV4 signature."""
    if token is None:
        if is_loopback(request.remote):
            return
        raise AwsError(
            "AccessDeniedException",
            "set SLUICE_API_TOKEN on the server to accept AWS clients off loopback",
            403,
        )
    url = request.rel_url
    try:
        verify(token, request.method, url.raw_path, url.raw_query_string, request.headers, body, time.time())
    except SignatureError as exc:
        raise AwsError(exc.code, exc.message, 403) from None


async def read_json(request: web.Request, face: Face) -> tuple[bytes, Body]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise AwsError(face.client_error, f"the request body is larger than {MAX_BODY_BYTES} bytes", 413)
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise AwsError(face.client_error, f"the request body is larger than {MAX_BODY_BYTES} bytes", 413)
    if not raw.strip():
        return raw, {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AwsError("SerializationException", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise AwsError("SerializationException", "the body must be a JSON object of the operation's members")
    return raw, body


async def serve(
    request: web.Request, face: Face, token: str | None, find: Callable[[], Operation]
) -> web.Response:
    """Authenticate, read, run the operation ``find()`` names; every failure in AWS's shape."""
    try:
        raw, body = await read_json(request, face)
        check_auth(request, raw, token)
        return face.answer(await find()(body))
    except AwsError as exc:
        return face.error(exc.code, exc.message, exc.status)
    except JobError as exc:  # Batch's one client error: not found, conflicts and bad input alike
        return face.error(face.client_error, str(exc), 400)
    except Unavailable as exc:
        return face.error(face.server_error, str(exc), 503)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return face.error(face.server_error, "the server failed on this request; see the server log", 500)


# -- reading members ----------------------------------------------------------------------------


def member(
    body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = False
) -> Any:
    """``body[name]`` if it has the type; None when absent; a ClientException naming it otherwise."""
    value = body.get(name)
    if value is None:
        if required:
            raise AwsError("ClientException", f"{name} is required")
        return None
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else ()):
        raise AwsError("ClientException", f"{name} must be {_kind(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise AwsError("ClientException", f"{name} must be {_kind(kind)}, got {json.dumps(value)[:80]}")
    return value


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "a boolean"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def page(token: Any, code: str = "ClientException") -> int | None:
    """A ``nextToken`` back to the position it stands for (None: from the start)."""
    if token is None:
        return None
    try:
        return int(base64.urlsafe_b64decode(str(token).encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AwsError(code, "the next token is not one this server gave; start without it") from None


def next_token(position: int) -> str:
    return base64.urlsafe_b64encode(str(position).encode()).decode()


def max_results(body: Mapping[str, Any], default: int = 100, high: int = 1000) -> int:
    value = member(body, "maxResults", int)
    if value is None:
        return default
    if not 1 <= value <= high:
        raise AwsError("ClientException", f"maxResults must be 1 to {high}, got {value}")
    return int(value)


def resource_name(value: str, kind: str) -> str:
    """``arn:aws:batch:R:A:<kind>/<name>`` or a plain name -> the name."""
    if value.startswith("arn:"):
        parts = value.split(":", 5)
        resource = parts[5] if len(parts) == 6 else ""
        prefix = f"{kind}/"
        if not resource.startswith(prefix) or len(resource) == len(prefix):
            raise AwsError(
                "ClientException", f"{value!r} is not a {kind} ARN (arn:aws:batch:REGION:ACCOUNT:{kind}/NAME)"
            )
        return resource[len(prefix) :]
    return value
