"""AWS-compatible faces of Sluice: the Batch REST-JSON API and the EventBridge JSON 1.1 API.

boto3, the AWS CLI and any AWS SDK drive Sluice's own queues, jobs, definitions, rules and bus
through them (docs/aws.md): ``protocol`` (errors, the SigV4 gate, members, paging), ``sigv4``
(signature checking), ``batch`` and ``batch_config`` (Batch), ``events`` and ``rules``
(EventBridge). engine/server.py mounts them with :func:`routes`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from aiohttp import web

from engine.aws.rules import EventRules
from engine.engine import Engine


def routes(engine: Engine, rules: EventRules, token: str | None = None) -> Callable[[web.Application], None]:
    """The AWS route group: ``POST /v1/<op>`` (Batch) and ``POST /`` with ``X-Amz-Target`` (EventBridge).

    ``rules`` is the engine's EventRules service (compose it in before the engine starts).
    ``token`` defaults to ``SLUICE_API_TOKEN``: clients then sign with access key ``sluice`` and
    the token as the secret key; without one, loopback callers are let in unchecked."""
    from engine.aws import batch, events

    secret = token if token is not None else os.environ.get("SLUICE_API_TOKEN") or None

    def add(app: web.Application) -> None:
        batch.add_routes(app, engine, secret)
        events.add_routes(app, rules, secret)

    return add


__all__ = ["EventRules", "routes"]
