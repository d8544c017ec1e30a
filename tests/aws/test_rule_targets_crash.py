"""An EventBridge rule with a job-queue target, ``kill -9`` of ``sluice serve`` right after
PutEvents answered: after the restart every accepted event has exactly one job.

The compute environment is disabled first, so the jobs stay RUNNABLE and no container runs: what
is checked is the hand-over from a committed event to its job, not the job itself.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support.docker import TEST_IMAGE
from tests.support.serving import free_port, healthy, serve, stop
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.docker

QUEUE_ARN = "arn:aws:batch:us-east-1:000000000000:job-queue/default"
EVENTS, PER_CALL = 60, 10


def client(service: str, base: str) -> Any:
    config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    return boto3.client(service, endpoint_url=base, region_name="us-east-1",
                        aws_access_key_id="sluice", aws_secret_access_key="x", config=config)  # fmt: skip


def jobs_by_event(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT spec FROM jobs WHERE name='from-rule'").fetchall()
    finally:
        conn.close()
    counts: dict[str, int] = {}
    for (spec,) in rows:
        who = json.loads(spec)["parameters"]["who"]
        counts[who] = counts.get(who, 0) + 1
    return counts


def test_every_accepted_event_has_exactly_one_job_after_a_kill_9(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / ".sluice" / "sluice.db"
    proc = serve(tmp_path, port, env={"SLUICE_API_TOKEN": ""})
    try:
        wait_until_sync(lambda: healthy(base), 30, what="the server to start")
        batch, events = client("batch", base), client("events", base)
        batch.update_compute_environment(computeEnvironment="local", state="DISABLED")
        batch.register_job_definition(
            jobDefinitionName="hello", type="container",
            containerProperties={"image": TEST_IMAGE, "command": ["echo", "Ref::who"],
                                 "resourceRequirements": [{"type": "VCPU", "value": "0.25"},
                                                          {"type": "MEMORY", "value": "32"}]},
        )  # fmt: skip
        events.put_rule(Name="to-batch", EventPattern=json.dumps({"source": ["com.shop"]}))
        target = {
            "Id": "job", "Arn": QUEUE_ARN,
            "BatchParameters": {"JobDefinition": "hello", "JobName": "from-rule"},
            "InputTransformer": {"InputPathsMap": {"id": "$.detail.id"},
                                 "InputTemplate": '{"Parameters": {"who": <id>}}'},
        }  # fmt: skip
        assert events.put_targets(Rule="to-batch", Targets=[target])["FailedEntryCount"] == 0
        accepted: list[str] = []
        for call in range(EVENTS // PER_CALL):
            ids = [f"o-{call}-{n}" for n in range(PER_CALL)]
            entries = [
                {"Source": "com.shop", "DetailType": "Order", "Detail": json.dumps({"id": i})} for i in ids
            ]
            out = events.put_events(Entries=entries)
            assert out["FailedEntryCount"] == 0
            accepted.extend(ids)
        proc.send_signal(signal.SIGKILL)  # at once: the last events' jobs are not yet written
        proc.wait(10)
        before = jobs_by_event(db)
        proc = serve(tmp_path, port, env={"SLUICE_API_TOKEN": ""})
        wait_until_sync(lambda: healthy(base), 30, what="the server to start again")
        wait_until_sync(lambda: len(jobs_by_event(db)) == len(accepted), 30,
                        what=f"a job for each of the {len(accepted)} accepted events")  # fmt: skip
        time.sleep(1.0)  # nothing more comes
        counts = jobs_by_event(db)
        assert sorted(counts) == sorted(accepted)
        twice = {who: n for who, n in counts.items() if n > 1}
        assert twice == {}, f"events with more than one job: {twice}"
        print(f"{len(accepted) - len(before)} of {len(accepted)} jobs were submitted after the restart")
    finally:
        stop(proc)
