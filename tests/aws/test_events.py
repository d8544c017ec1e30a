"""boto3's EventBridge client against a composed ``sluice serve``: PutRule + PutTargets + PutEvents
start real workflow runs and real Batch jobs; rules survive a restart; TestEventPattern agrees
with the bus."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.store import queries
from tests.support.aws import AwsServer, MakeAwsServer, aws
from tests.support.docker import TEST_IMAGE
from tests.support.engines import write_flow
from tests.support.waiting import wait_until

pytestmark = pytest.mark.docker

WORKFLOW_ARN = "arn:aws:states:us-east-1:000000000000:stateMachine:orders"
QUEUE_ARN = "arn:aws:batch:us-east-1:000000000000:job-queue/default"
BIG = {
    "source": ["com.shop"],
    "detail-type": ["Order Placed"],
    "detail": {"total": [{"numeric": [">", 100]}]},
}


def order(order_id: str, total: int, source: str = "com.shop") -> dict[str, Any]:
    detail = json.dumps({"id": order_id, "total": total})
    return {"Source": source, "DetailType": "Order Placed", "Detail": detail}


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    write_flow(
        folder,
        """
        name: orders
        params:
          order: {type: string}
        steps:
          take:
            function: handlers:take
            input: {order: "{{ params.order }}"}
        """,
        "def take(event, context):\n    return {'took': event['order']}\n",
    )
    return folder


async def runs_of(server: AwsServer, workflow: str = "orders") -> list[dict[str, Any]]:
    async with server.engine.store.reader() as db:
        return await queries.list_runs(db, workflow=workflow) or []


async def run_params(server: AwsServer, run_id: str) -> dict[str, Any]:
    summary = await server.engine.describe_run(run_id)
    assert summary is not None
    return summary


async def test_rule_and_targets_start_a_workflow_and_survive_a_restart(
    aws_server: MakeAwsServer, flows: Path
) -> None:
    server = await aws_server(flows)
    events = server.client("events")
    arn = (await aws(events.put_rule, Name="big-orders", EventPattern=json.dumps(BIG), Description="d"))[
        "RuleArn"
    ]
    assert arn == "arn:aws:events:us-east-1:000000000000:rule/big-orders"
    transformer = {"InputPathsMap": {"id": "$.detail.id"}, "InputTemplate": '{"order": <id>}'}
    put = await aws(events.put_targets, Rule="big-orders",
                    Targets=[{"Id": "wf", "Arn": WORKFLOW_ARN, "InputTransformer": transformer}])  # fmt: skip
    assert put["FailedEntryCount"] == 0
    out = await aws(
        events.put_events, Entries=[order("o-1", 150), order("o-2", 5), order("o-3", 9, "aws.batch")]
    )
    assert (
        out["FailedEntryCount"] == 1 and out["Entries"][2]["ErrorCode"] == "NotAuthorizedForSourceException"
    )
    assert all("EventId" in e for e in out["Entries"][:2])
    (run,) = await wait_until(lambda: runs_of(server), 20, what="a run of orders")
    assert run["trigger"] == "rule/big-orders/wf"
    await server.engine.orchestrator.wait(run["run_id"], 30)
    summary = await run_params(server, run["run_id"])
    assert summary["status"] == "SUCCEEDED" and summary["params"] == {"order": "o-1"}
    # TestEventPattern agrees with the bus on the two committed events
    stored = await server.engine.store.read(
        lambda c: [json.loads(r[0]) for r in c.execute("SELECT body FROM events WHERE source='com.shop'")]
    )
    verdicts = [
        (await aws(events.test_event_pattern, EventPattern=json.dumps(BIG), Event=json.dumps(e)))["Result"]
        for e in stored
    ]
    assert sorted(verdicts) == [False, True]
    # described, listed, disabled
    rule = await aws(events.describe_rule, Name="big-orders")
    assert (rule["State"], rule["Arn"], json.loads(rule["EventPattern"])) == ("ENABLED", arn, BIG)
    assert [r["Name"] for r in (await aws(events.list_rules, NamePrefix="big"))["Rules"]] == ["big-orders"]
    assert (await aws(events.list_rules, NamePrefix="zzz"))["Rules"] == []
    assert [t["Id"] for t in (await aws(events.list_targets_by_rule, Rule="big-orders"))["Targets"]] == ["wf"]
    await aws(events.disable_rule, Name="big-orders")
    await aws(events.put_events, Entries=[order("o-4", 500)])
    assert len(await runs_of(server)) == 1
    await aws(events.enable_rule, Name="big-orders")
    # a restart keeps the rule and its target
    await server.engine.stop()
    again = await aws_server(flows)
    await aws(again.client("events").put_events, Entries=[order("o-5", 700)])
    runs = await wait_until(lambda: _two(again), 20, what="a second run after the restart")
    await again.engine.orchestrator.wait(runs[0]["run_id"], 30)
    assert (await run_params(again, runs[0]["run_id"]))["params"] == {"order": "o-5"}


async def _two(server: AwsServer) -> list[dict[str, Any]] | None:
    runs = await runs_of(server)
    return runs if len(runs) == 2 else None


async def test_a_queue_target_submits_a_real_job(aws_server: MakeAwsServer, flows: Path) -> None:
    server = await aws_server(flows)
    events, batch = server.client("events"), server.client("batch")
    await aws(batch.register_job_definition, jobDefinitionName="hello", type="container",
              containerProperties={"image": TEST_IMAGE, "command": ["echo", "Ref::who"],
                                   "resourceRequirements": [{"type": "VCPU", "value": "0.25"},
                                                            {"type": "MEMORY", "value": "32"}]})  # fmt: skip
    await aws(events.put_rule, Name="to-batch", EventPattern=json.dumps(BIG))
    target = {
        "Id": "job", "Arn": QUEUE_ARN,
        "BatchParameters": {"JobDefinition": "hello", "JobName": "from-rule"},
        "InputTransformer": {"InputPathsMap": {"id": "$.detail.id"},
                             "InputTemplate": '{"Parameters": {"who": <id>}}'},
    }  # fmt: skip
    assert (await aws(events.put_targets, Rule="to-batch", Targets=[target]))["FailedEntryCount"] == 0
    await aws(events.put_events, Entries=[order("o-9", 999)])

    async def succeeded() -> list[dict[str, Any]]:
        return (await aws(batch.list_jobs, jobQueue="default", jobStatus="SUCCEEDED"))["jobSummaryList"]

    (job,) = await wait_until(succeeded, 60, what="the rule's job SUCCEEDED", step_s=0.2)
    (detail,) = (await aws(batch.describe_jobs, jobs=[job["jobId"]]))["jobs"]
    assert detail["jobName"] == "from-rule" and detail["container"]["command"] == ["echo", "o-9"]


async def test_bad_requests_get_eventbridges_codes(aws_server: MakeAwsServer, flows: Path) -> None:
    server = await aws_server(flows)
    events = server.client("events")
    await aws(events.put_rule, Name="r1", EventPattern=json.dumps(BIG))
    await aws(events.put_targets, Rule="r1", Targets=[{"Id": "wf", "Arn": WORKFLOW_ARN}])
    for call, kw, code in [
        (events.describe_rule, {"Name": "nope"}, "ResourceNotFoundException"),
        (
            events.put_rule,
            {"Name": "r2", "EventPattern": '{"source": "not-a-list"}'},
            "InvalidEventPatternException",
        ),
        (events.put_rule, {"Name": "r3"}, "ValidationException"),
        (events.delete_rule, {"Name": "r1"}, "ValidationException"),
        (events.test_event_pattern, {"EventPattern": json.dumps(BIG), "Event": "{}"}, "ValidationException"),
    ]:
        with pytest.raises(ClientError) as err:
            await aws(call, **kw)
        assert err.value.response["Error"]["Code"] == code, kw
        assert err.value.response["Error"]["Message"]
    missing = WORKFLOW_ARN.replace(":orders", ":missing")
    bad = await aws(events.put_targets, Rule="r1", Targets=[{"Id": "x", "Arn": missing}])
    assert bad["FailedEntryCount"] == 1 and "no workflow 'missing'" in bad["FailedEntries"][0]["ErrorMessage"]
    await aws(events.remove_targets, Rule="r1", Ids=["wf"])
    await aws(events.delete_rule, Name="r1")
    assert (await aws(events.list_rules))["Rules"] == []


async def test_a_webhook_target_gets_the_transformed_event_through_the_outbox(
    aws_server: MakeAwsServer, flows: Path
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    got: list[tuple[dict[str, Any], str | None]] = []
    template = (
        '{"order": <id>, "total": <total>, "text": "order <id>",'
        ' "rule": <aws.events.rule-name>, "source": "<aws.events.event>"}'
    )

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.json(), request.headers.get("X-Team")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()
    try:
        server = await aws_server(flows)
        events = server.client("events")
        await aws(events.put_rule, Name="hook", EventPattern=json.dumps(BIG))
        target = {
            "Id": "h", "Arn": str(receiver.make_url("/hook")),
            "HttpParameters": {"HeaderParameters": {"X-Team": "shop"}},
            "InputTransformer": {"InputPathsMap": {"id": "$.detail.id", "total": "$.detail.total"},
                                 "InputTemplate": template},
        }  # fmt: skip
        assert (await aws(events.put_targets, Rule="hook", Targets=[target]))["FailedEntryCount"] == 0
        await aws(events.put_events, Entries=[order("o-7", 300), order("o-8", 1)])
        await wait_until(lambda: got, 20, what="the webhook target's POST")
        ((body, team),) = got
        assert team == "shop" and {k: body[k] for k in ("order", "total", "text", "rule")} == {
            "order": "o-7", "total": 300, "text": "order o-7", "rule": "hook"
        }  # fmt: skip
        assert json.loads(body["source"])["detail"] == {"id": "o-7", "total": 300}  # the event, as text
        await aws(events.remove_targets, Rule="hook", Ids=["h"])
        await aws(events.put_events, Entries=[order("o-9", 300)])
        await wait_until(lambda: server.engine.bus.events_accepted >= 3, 5, what="the third event")
        assert len(got) == 1  # removed: not told any more
    finally:
        await receiver.close()


async def test_a_schedule_rule_starts_its_workflow_on_time(aws_server: MakeAwsServer, tmp_path: Path) -> None:
    folder = tmp_path / "sched"
    write_flow(
        folder,
        "name: tick\nsteps:\n  t:\n    function: handlers:t\n",
        "def t(event, context):\n    return 1\n",
    )
    server = await aws_server(folder)
    events = server.client("events")
    with pytest.raises(ClientError) as err:
        await aws(events.put_rule, Name="bad", ScheduleExpression="rate(5 minute)")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "rate(5 minutes)" in err.value.response["Error"]["Message"]  # the hint parses
    await aws(events.put_rule, Name="every-second", ScheduleExpression="rate(1 second)")
    arn = "arn:aws:states:us-east-1:000000000000:stateMachine:tick"
    await aws(events.put_targets, Rule="every-second", Targets=[{"Id": "t", "Arn": arn}])
    assert (await aws(events.describe_rule, Name="every-second"))["ScheduleExpression"] == "rate(1 second)"

    async def runs() -> list[dict[str, Any]]:
        found = await runs_of(server, "tick")
        return found if len(found) >= 2 else []

    fired = await wait_until(runs, 20, what="two scheduled runs")
    query = "SELECT e.body FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id = ?"
    body = await server.engine.store.read(lambda c: c.execute(query, (fired[-1]["run_id"],)).fetchone()[0])
    event = json.loads(body)
    assert (event["source"], event["detail-type"]) == ("aws.events", "Scheduled Event")
    assert event["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/every-second"]
    await aws(events.disable_rule, Name="every-second")
    count = len(await runs_of(server, "tick"))
    await asyncio.sleep(2.5)  # a disabled schedule must stay quiet: nothing to wait for but time
    assert len(await runs_of(server, "tick")) == count
