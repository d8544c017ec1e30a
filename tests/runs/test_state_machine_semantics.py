"""A run ends as a Step Functions execution does, and its destinations carry Lambda's record.

- without ``outputs:`` a run's output is its terminal step's (one sink), or a mapping of each
  sink step to its output (several), as an execution's output is its last state's;
- every Run State Change event carries ``outputs`` (null when there are none yet), so a
  template or pattern on it never fails on a missing key;
- a destination's ``requestPayload`` is the invocation's event, as Lambda's record has it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.engines import MakeEngine, write_flow
from tests.support.waiting import wait_until

HANDLERS = """
def inc(event, context):
    return {"n": event["n"] + 1}

def echo(event, context):
    return event
"""


async def run_events(engine: Any, run_id: str) -> list[dict[str, Any]]:
    rows = await engine.store.read(
        lambda c: c.execute("SELECT body FROM events WHERE source='sluice.run' ORDER BY seq").fetchall()
    )
    details = [json.loads(r[0])["detail"] for r in rows]
    return [d for d in details if d["run_id"] == run_id]


async def test_without_outputs_a_chain_ends_with_its_last_steps_output(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    write_flow(
        tmp_path / "flows",
        """
        name: chain
        steps:
          a: {function: handlers:inc, input: {n: 1}}
          b: {function: handlers:inc, needs: [a], input: "{{ steps.a.output }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(tmp_path / "flows")
    summary = await engine.run_to_end("chain", timeout_s=20)
    assert summary["status"] == "SUCCEEDED" and summary["outputs"] == {"n": 3}
    events = await run_events(engine, summary["run_id"])
    assert [e["status"] for e in events] == ["RUNNING", "SUCCEEDED"]
    assert all("outputs" in e for e in events)
    assert events[0]["outputs"] is None and events[1]["outputs"] == {"n": 3}


async def test_without_outputs_several_sinks_give_a_mapping(make_engine: MakeEngine, tmp_path: Path) -> None:
    write_flow(
        tmp_path / "flows",
        """
        name: fork
        steps:
          a: {function: handlers:inc, input: {n: 1}}
          left: {function: handlers:inc, needs: [a], input: "{{ steps.a.output }}"}
          right: {function: handlers:echo, needs: [a], input: {side: right}}
        """,
        HANDLERS,
    )
    engine = await make_engine(tmp_path / "flows")
    summary = await engine.run_to_end("fork", timeout_s=20)
    assert summary["outputs"] == {"left": {"n": 3}, "right": {"side": "right"}}


async def test_a_destinations_request_payload_is_the_invocations_event(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    write_flow(
        flows,
        """
        name: main
        on_success: {workflow: after}
        params: {msg: {type: string}}
        steps:
          a: {function: handlers:echo, input: {n: 1}}
        """,
        HANDLERS,
    )
    write_flow(
        flows,
        """
        name: after
        steps:
          got: {function: handlers:echo, input: "{{ event.detail }}"}
        """,
        name="after.yaml",
    )
    engine = await make_engine(flows)
    done = await engine.run_to_end("main", {"msg": "m"}, timeout_s=20)

    async def follow_up() -> Any:
        rows = await engine.store.read(
            lambda c: c.execute(
                "SELECT id FROM runs WHERE workflow='after' AND status='SUCCEEDED'"
            ).fetchall()
        )
        return rows and (await engine.describe_run(rows[0][0]))

    after = await wait_until(follow_up, 20, what="the destination run")
    record = after["outputs"]
    assert record["requestContext"]["requestId"] == done["run_id"]
    payload = record["requestPayload"]
    assert payload["source"] == "sluice.manual" and payload["detail"] == {"msg": "m"}
    assert payload["id"] == done["event_id"]
