"""Requests that never reach a handler: what aiohttp's HTTP parser refuses, answered our way.

A malformed request line, a bad ``Content-Length`` or a header past the limits is refused by
aiohttp before routing, with a ``text/plain`` 400 and a logged traceback (490 of them in one
hostile-input run). Those are the client's fault: they get the JSON error shape every other
answer has, and one log line at INFO without the stack. A real server bug still logs its stack.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from triggers.webhook import json_error

#: the logger handed to aiohttp's connection handlers, with the filter below
wire_log = logging.getLogger("engine.api.wire")


class ClientFaults(logging.Filter):
    """Turns a parser refusal's record into one INFO line; everything else passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "%s refused: %s %s"
            record.args = (_peer(record.args), exc.code, _one_line(exc.message))
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


wire_log.addFilter(ClientFaults())


def _peer(args: Any) -> str:
    if isinstance(args, tuple) and args:
        return f"a request from {args[0]}"
    return "a request"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


class JsonErrorsHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler with its pre-routing errors as ``{"error": {...}}``."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs (through the filter)
        if status >= 500:
            answer = json_error(status, "internal_error", "the server failed on this request; see its log")
        else:
            reason = message or (exc.message if isinstance(exc, HttpProcessingError) else "") or "bad request"
            answer = json_error(status, "bad_request", f"the HTTP request is malformed: {_one_line(reason)}")
        answer.force_close()
        del plain
        return answer


class JsonErrorsServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return JsonErrorsHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorsRunner(web.AppRunner):
    """An AppRunner whose connections use :class:`JsonErrorsHandler` and :data:`wire_log`."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, logger=wire_log, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorsServer  # the same object, only its handler factory differs
        return server
