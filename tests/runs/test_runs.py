"""Runs through real engines: DAG semantics, data passing, retries, failures, fan-out, waits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from engine.states import Status
from tests.support.engines import MakeEngine, write_flow
from workflows.errors import InputError

HANDLERS = """
import os, time, json

def inc(event, context):
    return (event or {}).get("n", 0) + 1

def echo(event, context):
    return event

def boom(event, context):
    raise ValueError("bad value: " + str(event))

def flaky(event, context):
    if context.attempt <= event["fail"]:
        raise ConnectionError(f"down on attempt {context.attempt}")
    return {"attempt": context.attempt, "at": time.time()}

def status_of(event, context):
    return event

def spin(event, context):
    while True:
        pass

def hog(event, context):
    blob = bytearray(600 * 1024 * 1024)
    return len(blob)

def die(event, context):
    os._exit(1)

def segfault(event, context):
    import ctypes
    ctypes.string_at(0)

def square(event, context):
    if event["x"] == event.get("bad"):
        raise KeyError(event["x"])
    return event["x"] * event["x"]

def total(event, context):
    return sum(event["values"])

def count_call(event, context):
    with open(event["path"], "a") as f:
        f.write("x\\n")
    return True
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    return tmp_path / "flows"


async def test_chain_passes_outputs_along(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: chain
        steps:
          a: {function: handlers:inc, input: {n: 0}}
          b: {function: handlers:inc, needs: [a], input: {n: "{{ steps.a.output }}"}}
          c: {function: handlers:inc, needs: [b], input: {n: "{{ steps.b.output }}"}}
        outputs: {result: "{{ steps.c.output }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("chain", timeout_s=20)
    assert run["status"] == Status.SUCCEEDED
    assert run["outputs"] == {"result": 3}
    assert [s["status"] for s in run["steps"].values()] == ["SUCCEEDED"] * 3
    assert run["steps"]["b"]["started_at"] >= run["steps"]["a"]["ended_at"]


async def test_diamond_runs_branches_in_parallel_and_joins(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: diamond
        steps:
          top: {function: handlers:echo, input: {n: 1}}
          left: {function: handlers:inc, needs: [top], input: {n: "{{ steps.top.output.n }}"}}
          right: {function: handlers:inc, needs: [top], input: {n: 10}}
          join:
            function: handlers:echo
            needs: [left, right]
            input: {sum: "{{ steps.left.output + steps.right.output }}"}
        outputs: {sum: "{{ steps.join.output.sum }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("diamond", timeout_s=20)
    assert run["outputs"] == {"sum": 13}
    join = run["steps"]["join"]
    assert join["started_at"] >= max(run["steps"]["left"]["ended_at"], run["steps"]["right"]["ended_at"])


async def test_upstream_failure_skips_dependents_but_not_other_branches(
    make_engine: MakeEngine, flows: Path
) -> None:
    write_flow(
        flows,
        """
        name: fanin
        steps:
          bad: {function: handlers:boom, input: x}
          good: {function: handlers:inc}
          after-bad: {function: handlers:inc, needs: [bad]}
          join: {function: handlers:inc, needs: [after-bad, good]}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("fanin", timeout_s=20)
    steps = run["steps"]
    assert run["status"] == Status.FAILED
    assert steps["bad"]["status"] == "FAILED"
    assert steps["bad"]["error"]["errorType"] == "ValueError"
    assert steps["bad"]["error"]["errorMessage"] == "bad value: x"
    assert steps["good"]["status"] == "SUCCEEDED"
    assert steps["after-bad"]["status"] == "SKIPPED"
    assert "bad" in steps["after-bad"]["reason"]
    assert steps["join"]["status"] == "SKIPPED"
    assert run["reason"].startswith("step bad failed: ValueError")


async def test_on_failure_continue_lets_dependents_see_the_failure(
    make_engine: MakeEngine, flows: Path
) -> None:
    write_flow(
        flows,
        """
        name: tolerant
        steps:
          bad: {function: handlers:boom, input: y, on_failure: continue}
          report:
            function: handlers:status_of
            needs: [bad]
            input: {status: "{{ steps.bad.status }}", error: "{{ steps.bad.error.errorType }}"}
        outputs: {seen: "{{ steps.report.output }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("tolerant", timeout_s=20)
    assert run["status"] == Status.SUCCEEDED
    assert run["outputs"] == {"seen": {"status": "FAILED", "error": "ValueError"}}


async def test_when_false_skips_the_step_and_its_dependents(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: gated
        params: {big: {type: boolean, default: false}}
        steps:
          check: {function: handlers:inc, input: {n: 1}}
          resize:
            function: handlers:inc
            needs: [check]
            when: "{{ params.big and steps.check.output > 1 }}"
          store: {function: handlers:inc, needs: [resize]}
          always: {function: handlers:inc, needs: [check]}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("gated", timeout_s=20)
    assert run["status"] == Status.SUCCEEDED
    assert run["steps"]["resize"]["status"] == "SKIPPED"
    assert run["steps"]["resize"]["reason"] == "when is false"
    assert run["steps"]["store"]["status"] == "SKIPPED"
    assert run["steps"]["always"]["status"] == "SUCCEEDED"
    run = await engine.run_to_end("gated", {"big": True}, timeout_s=20)
    assert run["steps"]["resize"]["status"] == "SUCCEEDED"
    assert run["steps"]["store"]["status"] == "SUCCEEDED"


async def test_retries_back_off_between_attempts(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: retrying
        steps:
          call:
            function: handlers:flaky
            input: {fail: 2}
            retry: {attempts: 3, interval: 200ms, backoff_rate: 2, jitter: none, errors: [ConnectionError]}
        outputs: {attempt: "{{ steps.call.output.attempt }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("retrying", timeout_s=20)
    assert run["status"] == Status.SUCCEEDED
    assert run["outputs"] == {"attempt": 3}
    attempts = await engine.store.read(
        lambda c: c.execute(
            "SELECT attempt, status, started_at, ended_at, error FROM attempts "
            "WHERE run_id=? ORDER BY attempt",
            (run["run_id"],),
        ).fetchall()
    )
    assert [(a[0], a[1]) for a in attempts] == [(1, "FAILED"), (2, "FAILED"), (3, "SUCCEEDED")]
    assert "ConnectionError" in attempts[0][4]
    first_gap = attempts[1][2] - attempts[0][3]
    second_gap = attempts[2][2] - attempts[1][3]
    assert 0.19 <= first_gap < 1.5
    assert 0.39 <= second_gap < 2.0


async def test_errors_not_listed_in_retry_fail_at_once(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: picky
        steps:
          call:
            function: handlers:boom
            retry: {attempts: 5, interval: 100ms, errors: [ConnectionError]}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("picky", timeout_s=20)
    assert run["status"] == Status.FAILED
    assert run["steps"]["call"]["attempts"] == 1


@pytest.mark.parametrize(
    ("handler", "extra", "error_type"),
    [
        ("spin", "timeout: 1s", "Sluice.Timeout"),
        ("hog", "memory: 128MiB", "Sluice.OutOfMemory"),
        ("die", "", "Sluice.WorkerCrashed"),
        ("segfault", "", "Sluice.WorkerCrashed"),
    ],
)
async def test_misbehaving_handlers_fail_the_step_not_the_engine(
    make_engine: MakeEngine, flows: Path, handler: str, extra: str, error_type: str
) -> None:
    write_flow(
        flows,
        f"""
        name: bad-handler
        steps:
          call:
            function: handlers:{handler}
            {extra}
          after: {{function: handlers:inc, needs: [call]}}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    t0 = time.monotonic()
    run = await engine.run_to_end("bad-handler", timeout_s=30)
    assert run["status"] == Status.FAILED
    assert run["steps"]["call"]["error"]["errorType"] == error_type
    assert run["steps"]["after"]["status"] == "SKIPPED"
    assert time.monotonic() - t0 < 15
    # the pool recovered: the same run fails the same clear way, the engine is still alive
    again = await engine.run_to_end("bad-handler", timeout_s=30)
    assert again["status"] == Status.FAILED  # same behaviour, same clear error, engine alive


async def test_two_hundred_concurrent_runs_all_complete(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: chain
        params: {start: {type: integer, default: 0}}
        steps:
          a: {function: handlers:inc, input: {n: "{{ params.start }}"}}
          b: {function: handlers:inc, needs: [a], input: {n: "{{ steps.a.output }}"}}
          c: {function: handlers:inc, needs: [b], input: {n: "{{ steps.b.output }}"}}
        outputs: {result: "{{ steps.c.output }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run_ids = await asyncio.gather(*(engine.start_run("chain", {"start": i}) for i in range(200)))
    statuses = await asyncio.gather(*(engine.orchestrator.wait(r, 60) for r in run_ids))
    assert statuses == ["SUCCEEDED"] * 200
    results = await asyncio.gather(*(engine.describe_run(r) for r in run_ids))
    assert [r["outputs"]["result"] for r in results] == [i + 3 for i in range(200)]


async def test_wait_and_fail_steps(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: waits
        params: {fail: {type: boolean, default: false}}
        steps:
          pause: {wait: 300ms}
          after: {function: handlers:inc, needs: [pause]}
          stop:
            needs: [after]
            when: "{{ params.fail }}"
            fail: {error: Quota.Exceeded, cause: "limit hit after {{ steps.after.output }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    t0 = time.monotonic()
    run = await engine.run_to_end("waits", timeout_s=20)
    assert run["status"] == Status.SUCCEEDED
    assert time.monotonic() - t0 >= 0.3
    pause = run["steps"]["pause"]
    assert pause["ended_at"] - pause["started_at"] >= 0.29
    run = await engine.run_to_end("waits", {"fail": True}, timeout_s=20)
    assert run["status"] == Status.FAILED
    assert run["steps"]["stop"]["error"] == {
        "errorType": "Quota.Exceeded",
        "errorMessage": "limit hit after 1",
    }


async def test_event_data_is_never_rendered_as_a_template(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: literal
        params: {text: {type: string}}
        steps:
          a: {function: handlers:echo, input: {text: "{{ params.text }}", fixed: "{{ 7*7 }}"}}
        outputs: {a: "{{ steps.a.output }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("literal", {"text": "{{ 7*7 }} {% raw %}"}, timeout_s=20)
    assert run["outputs"] == {"a": {"text": "{{ 7*7 }} {% raw %}", "fixed": 49}}


async def test_bad_input_is_refused_and_stores_nothing(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: typed
        params: {size: {type: integer, required: true}}
        steps:
          a: {function: handlers:inc}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    with pytest.raises(InputError, match="size"):
        await engine.start_run("typed", {"size": "big"})
    with pytest.raises(InputError, match="size"):
        await engine.start_run("typed", {})
    count = await engine.store.read(lambda c: c.execute("SELECT count(*) FROM runs").fetchone()[0])
    assert count == 0


async def test_history_survives_an_engine_restart(
    make_engine: MakeEngine, flows: Path, tmp_path: Path
) -> None:
    write_flow(
        flows,
        """
        name: chain
        steps:
          a: {function: handlers:inc}
          b: {function: handlers:boom, needs: [a]}
        """,
        HANDLERS,
    )
    data = tmp_path / "persist"
    engine = await make_engine(flows, data_dir=data)
    first = await engine.run_to_end("chain", timeout_s=20)
    await engine.stop()
    again = await make_engine(flows, data_dir=data)
    kept = await again.describe_run(first["run_id"])
    assert kept == first
    events = await again.store.read(
        lambda c: [r[0] for r in c.execute("SELECT detail_type FROM events ORDER BY seq")]
    )
    assert events[0] == "Manual Run"
    assert "Run State Change" in events and "Step State Change" in events
    statuses = await again.store.read(
        lambda c: [
            (r[0], json.loads(r[1])["detail"].get("step"), json.loads(r[1])["detail"]["status"])
            for r in c.execute("SELECT detail_type, body FROM events WHERE detail_type LIKE '%State Change'")
        ]
    )
    # the last step's end and the run's end share one transaction, in this order
    assert statuses[-2:] == [("Step State Change", "b", "FAILED"), ("Run State Change", None, "FAILED")]


async def test_state_changes_are_events_that_start_other_workflows(
    make_engine: MakeEngine, flows: Path
) -> None:
    write_flow(
        flows,
        """
        name: upstream
        steps:
          a: {function: handlers:inc, input: {n: 41}}
        outputs: {answer: "{{ steps.a.output }}"}
        """,
        HANDLERS,
    )
    write_flow(
        flows,
        """
        name: downstream
        triggers:
          - event:
              pattern:
                source: [sluice.run]
                detail-type: [Run State Change]
                detail: {workflow: [upstream], status: [SUCCEEDED]}
            input: {got: "{{ event.detail.outputs.answer }}"}
        params: {got: {type: integer}}
        steps:
          b: {function: handlers:echo, input: {got: "{{ params.got }}"}}
        outputs: {got: "{{ steps.b.output.got }}"}
        """,
        name="downstream.yaml",
    )
    engine = await make_engine(flows)
    await engine.run_to_end("upstream", timeout_s=20)
    for _ in range(200):
        rows = await engine.store.read(
            lambda c: c.execute("SELECT id, status FROM runs WHERE workflow='downstream'").fetchall()
        )
        if rows and rows[0][1] in ("SUCCEEDED", "FAILED"):
            break
        await asyncio.sleep(0.05)
    run = await engine.describe_run(rows[0][0])
    assert run is not None and run["status"] == "SUCCEEDED"
    assert run["outputs"] == {"got": 42}


async def test_input_that_is_not_json_fails_the_step_clearly(make_engine: MakeEngine, flows: Path) -> None:
    write_flow(
        flows,
        """
        name: nonjson
        steps:
          a: {function: handlers:echo, input: "{{ range(3) }}"}
        """,
        HANDLERS,
    )
    engine = await make_engine(flows)
    run = await engine.run_to_end("nonjson", timeout_s=20)
    assert run["status"] == Status.FAILED
    assert run["steps"]["a"]["error"]["errorType"] == "Sluice.InvalidInput"
    assert "not JSON" in run["steps"]["a"]["error"]["errorMessage"]


async def test_destinations_start_a_workflow_with_the_invocation_record(
    make_engine: MakeEngine, flows: Path
) -> None:
    write_flow(
        flows,
        """
        name: main
        params: {fail: {type: boolean, default: false}}
        on_success: {workflow: celebrate}
        on_failure: {workflow: cleanup}
        steps:
          a: {function: handlers:inc, input: {n: 1}}
          b: {function: handlers:boom, needs: [a], when: "{{ params.fail }}"}
        outputs: {a: "{{ steps.a.output }}"}
        """,
        HANDLERS,
    )
    for name in ("celebrate", "cleanup"):
        write_flow(
            flows,
            f"""
            name: {name}
            steps:
              got: {{function: handlers:echo, input: "{{{{ event.detail }}}}"}}
            outputs: {{record: "{{{{ steps.got.output }}}}"}}
            """,
            name=f"{name}.yaml",
        )
    engine = await make_engine(flows)

    async def follow_up(workflow: str) -> dict:
        for _ in range(500):
            rows = await engine.store.read(
                lambda c: c.execute(
                    "SELECT id FROM runs WHERE workflow=? AND status='SUCCEEDED'", (workflow,)
                ).fetchall()
            )
            if rows:
                summary = await engine.describe_run(rows[-1][0])
                assert summary is not None
                return summary["outputs"]["record"]
            await asyncio.sleep(0.02)
        raise AssertionError(f"{workflow} never ran")

    ok = await engine.run_to_end("main", timeout_s=20)
    record = await follow_up("celebrate")
    assert record["requestContext"]["requestId"] == ok["run_id"]
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestPayload"]["detail-type"] == "Manual Run"  # the invocation's event (Lambda)
    assert record["requestPayload"]["id"] == ok["event_id"]
    assert record["responsePayload"] == {"a": 2}
    failed = await engine.run_to_end("main", {"fail": True}, timeout_s=20)
    record = await follow_up("cleanup")
    assert record["requestContext"]["requestId"] == failed["run_id"]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"


CONTAINER_FLOW = """
name: boxed
steps:
  box: {container: {image: "busybox:1.36", command: ["true"]}}
"""


async def test_a_container_step_waits_for_docker_to_attach_rather_than_failing(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    """The engine attaches Docker in the background; a container step started meanwhile waits."""
    write_flow(tmp_path / "flows", CONTAINER_FLOW)
    engine = await make_engine(tmp_path / "flows")
    engine.orchestrator.containers = None
    attaching: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    engine.orchestrator.containers_attaching = attaching
    run_id = await engine.start_run("boxed")
    await asyncio.sleep(0.3)
    # waiting, not failed (its RUNNING rides on the step's first commit, still to come)
    status = await engine.store.read(lambda c: c.execute("SELECT status FROM runs").fetchone()[0])
    assert status == Status.PENDING and engine.orchestrator.active == 1
    attaching.set_result(None)  # the attach ended without a Docker engine
    assert await engine.orchestrator.wait(run_id, timeout_s=10) == Status.FAILED
    error = (await engine.describe_run(run_id))["steps"]["box"]["error"]
    assert error["errorType"] == "Sluice.NoContainerRuntime"


async def test_the_stores_wal_restarts_between_runs_not_during_them(
    make_engine: MakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The orchestrator tells the store when its last run has ended, so a due WAL restart (a few
    ms of fsyncs) falls between runs instead of stalling a run's commit; the patience is set far
    beyond the test, so every restart here came from such a moment."""
    from engine.store import store as store_module

    monkeypatch.setattr(store_module, "WAL_RESTART_PAGES", 40)
    monkeypatch.setattr(store_module, "CHECKPOINT_AFTER", 10)
    monkeypatch.setattr(store_module, "RESTART_PATIENCE_S", 600)
    flows = tmp_path / "flows"
    write_flow(flows, """
name: chain
steps:
  a: {function: handlers:inc, input: {n: 0}}
  b: {function: handlers:inc, needs: [a], input: {n: "{{ steps.a.output }}"}}
outputs: {n: "{{ steps.b.output }}"}
""", HANDLERS)  # fmt: skip
    engine = await make_engine(flows)
    in_flight: list[int] = []  # runs driving when each restart was started
    restart = store_module.Store._restart

    def counted(store: store_module.Store) -> None:
        in_flight.append(engine.orchestrator.active)
        restart(store)

    monkeypatch.setattr(store_module.Store, "_restart", counted)
    for _ in range(60):
        assert (await engine.run_to_end("chain", timeout_s=20))["outputs"] == {"n": 2}
    assert in_flight and set(in_flight) == {0}, (in_flight, repr(engine.store))
