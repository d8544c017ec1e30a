"""Lambda-style destinations: a run's invocation record, sent on success or on failure.

A workflow's ``on_success:`` / ``on_failure:`` names a URL (delivered through the
notification outbox, signed like any subscriber) or another workflow (started by
the bus in the same transaction as the run's final state). The record follows
Lambda's asynchronous-invocation record, so receivers written for Lambda
destinations read it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.events import RUN_DETAIL_TYPE, RUN_SOURCE, envelope

SOURCE, DETAIL_TYPE = "sluice.destination", "Invocation Record"
CONDITIONS = {"SUCCEEDED": "Success", "FAILED": "RetriesExhausted"}
KEYS = {"SUCCEEDED": "on_success", "FAILED": "on_failure"}


def final_status(env: Mapping[str, Any]) -> str | None:
    """SUCCEEDED/FAILED of a run's final state-change event, else None."""
    if env.get("source") != RUN_SOURCE or env.get("detail-type") != RUN_DETAIL_TYPE:
        return None
    detail = env.get("detail")
    status = detail.get("status") if isinstance(detail, Mapping) else None
    return status if status in CONDITIONS else None


def invocation_record(env: Mapping[str, Any]) -> dict[str, Any]:
    """Lambda's record: requestContext, requestPayload, responseContext, responsePayload."""
    detail = env["detail"]
    ok = detail["status"] == "SUCCEEDED"
    response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if not ok:
        response_context["functionError"] = "Unhandled"
    return {
        "version": "1.0",
        "timestamp": detail.get("ended_at") or env.get("time"),
        "requestContext": {
            "requestId": detail["run_id"],
            "functionArn": f"sluice:workflow:{detail['workflow']}",
            "condition": CONDITIONS[detail["status"]],
            "approximateInvokeCount": detail.get("attempts", 1),
        },
        "requestPayload": detail.get("event"),  # Lambda: the event the function was invoked with
        "responseContext": response_context,
        "responsePayload": detail.get("outputs") if ok else detail.get("error"),
    }


def workflow_targets(catalog: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """``(workflow, final status) -> workflow to start`` for every workflow destination."""
    targets = {}
    for wf in catalog.values():
        for status, key in KEYS.items():
            dest = getattr(wf, key, None)
            if dest is not None and dest.workflow is not None:
                targets[(wf.name, status)] = dest.workflow
    return targets


def record_event(env: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The event that starts a destination workflow; its detail is the invocation record."""
    detail = env["detail"]
    return envelope(
        SOURCE,
        DETAIL_TYPE,
        invocation_record(env),
        resources=[f"run/{detail['run_id']}", f"workflow/{target}"],
    )
