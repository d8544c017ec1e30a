"""A container step's ``for_each``: one Batch array job, child *i* running with item *i*.

Real containers (busybox on the local dockerd) through a real engine: the items come from a
function step, reach each child as data (``SLUICE_ITEM``, ``{{ item.x }}`` in ``env``), and the
step's output is each child's, in item order, for the steps downstream.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.batch import fanout
from engine.batch.arrays import ARRAY_CHUNK
from engine.batch.jobs import JobSpec
from engine.executors.docker_api import DockerClient
from tests.support.batch import box, job_events, killed_midway
from tests.support.docker import TEST_LABEL
from tests.support.engines import MakeEngine, write_flow
from tests.support.http import Serve
from tests.support.slurm import MakeSlurmBatch
from tests.support.waiting import wait_until as until
from workflows.errors import SluiceError
from workflows.spec import ContainerSpec, StepSpec
from workflows.templating import compile_value

pytestmark = pytest.mark.docker

HANDLERS = """
import json

def items(event, context):
    return event["items"]

def codes(event, context):
    return [child["exit_code"] for child in event]
"""

#: the items a function step gives, quotes and shell syntax among them: all of it stays data
ITEMS: list[Any] = [
    {"name": "ada"},
    {"name": "$(touch /tmp/x)"},
    {"name": 'it\'s "quoted"; echo pwned `id`'},
    {"name": "b c", "flaky": True},
    {"name": "e"},
]

FLOW = """\
name: fan
params:
  items: {type: array}
steps:
  list:
    function: handlers:items
    input: {items: "{{ params.items }}"}
  each:
    needs: [list]
    for_each: "{{ steps.list.output }}"
    container:
      image: busybox:1.36
      command:
        - sh
        - -c
        - |
          printf '%s|%s|%s|%s\\n' "$SLUICE_ARRAY_INDEX" "$POS" "$NAME" "$SLUICE_ITEM"
          [ -e /tmp/x ] && echo TOUCHED
          [ "$FLAKY" = true ] && [ "$AWS_BATCH_JOB_ATTEMPT" = 1 ] && exit 3
          exit 0
      env: {NAME: "{{ item.name }}", POS: "{{ index }}", FLAKY: "{{ item.flaky | default(false) }}"}
      vcpus: 0.25
      memory: 32MiB
      network: none
    retry:
      attempts: 2
      evaluate_on_exit: [{on_exit_code: "3", action: retry}, {on_reason: "*", action: exit}]
    timeout: 30s
  after:
    needs: [each]
    function: handlers:codes
    input: "{{ steps.each.output }}"
"""


def _step_status(data: Path, run_id: str, step: str) -> str:
    with contextlib.closing(sqlite3.connect(data / "sluice.db")) as conn:
        sql = "SELECT status FROM steps WHERE run_id=? AND step=? AND idx=-1"
        return str(conn.execute(sql, (run_id, step)).fetchone()[0])


def _read(path: str) -> str:
    return Path(path).read_text()


async def _engine(make_engine: MakeEngine, tmp_path: Path, flow: str, label: str) -> Any:
    engine = await make_engine(write_flow(tmp_path / "flows", flow, HANDLERS).parent)
    engine.batch.labels[TEST_LABEL] = label
    return engine


async def _step(engine: Any, run_id: str, step: str) -> dict[str, Any]:
    def read(conn: Any) -> dict[str, Any]:
        row = conn.execute(
            "SELECT status, output, error, items, job_id FROM steps WHERE run_id=? AND step=? AND idx=-1",
            (run_id, step),
        ).fetchone()
        status, output, error, items, job_id = tuple(row)
        return {
            "status": status,
            "output": None if output is None else json.loads(output),
            "error": None if error is None else json.loads(error),
            "items": items,
            "job_id": job_id,
        }

    return await engine.store.read(read)


async def test_each_item_runs_as_one_child_of_one_array_job_and_stays_data(
    serve: Serve,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    docker_client: DockerClient,
    docker_test_label: str,
) -> None:
    served = await serve(write_flow(tmp_path / "flows", FLOW, HANDLERS).parent)
    engine = served.engine
    engine.batch.labels[TEST_LABEL] = docker_test_label
    seen: list[tuple[str, str | None, str, dict[str, Any]]] = []
    engine.orchestrator.listeners.append(
        lambda kind, run, step, status, info: seen.append((kind, step, status, info))
    )
    summary = await engine.run_to_end("fan", {"items": ITEMS}, timeout_s=90)
    assert summary["status"] == "SUCCEEDED", summary
    each = await _step(engine, summary["run_id"], "each")
    parent = await engine.batch.describe(each["job_id"])
    assert parent is not None and parent["array_size"] == 5  # one array job, a child per item
    assert parent["array_status_summary"]["SUCCEEDED"] == 5
    assert "SLUICE_ITEM" not in parent["spec"]["environment"]  # the items are in the children's rows
    output = each["output"]
    assert [o["index"] for o in output] == [0, 1, 2, 3, 4]
    assert [o["job_id"] for o in output] == [f"{each['job_id']}:{i}" for i in range(5)]
    assert [o["attempts"] for o in output] == [1, 1, 1, 2, 1]  # the flaky child retried once
    assert {o["status"] for o in output} == {"SUCCEEDED"} and each["items"] == 5
    for i, (item, child) in enumerate(zip(ITEMS, output, strict=True)):
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        log = _read(child["log_path"])
        assert log == f"{i}|{i}|{item['name']}|{text}\n", log  # no TOUCHED, no pwned, no uid
    ended = await _step(engine, summary["run_id"], "after")
    assert ended["output"] == [0, 0, 0, 0, 0]  # downstream reads the list like a function for_each's
    counts = [info["done"] for kind, step, _, info in seen if kind == "item" and step == "each"]
    assert sorted(counts) == [1, 2, 3, 4, 5]  # the live view's `each 3/5`
    started = [
        info for kind, step, status, info in seen if (kind, step, status) == ("step", "each", "RUNNING")
    ]
    assert started and started[0]["items"] == 5


FAILING = """\
name: fails
steps:
  each:
    for_each: [0, 1, 2]
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo "item $SLUICE_ITEM"; [ "$SLUICE_ITEM" = 1 ] && exit 4; exit 0']
      vcpus: 0.25
      memory: 32MiB
      network: none
"""


async def test_a_child_failing_for_good_fails_the_step_naming_the_item(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    engine = await _engine(make_engine, tmp_path, FAILING, docker_test_label)
    summary = await engine.run_to_end("fails", timeout_s=60)
    assert summary["status"] == "FAILED"
    each = await _step(engine, summary["run_id"], "each")
    assert each["status"] == "FAILED" and each["output"] is None
    message = each["error"]["errorMessage"]
    assert message.startswith(f"1 of 3 items failed; item 1: job {each['job_id']}:1: "), message
    assert "exit code 4" in message
    parent = await engine.batch.describe(each["job_id"])
    assert parent is not None and parent["array_status_summary"]["FAILED"] == 1


EDGES = """\
name: edges
params:
  box: {type: object, default: {items: []}}
steps:
  list:
    function: handlers:items
    input: "{{ params.box }}"
  each:
    needs: [list]
    for_each: "{{ steps.list.output }}"
    container: {image: "busybox:1.36", command: [echo, hi], vcpus: 0.25, memory: 32MiB}
  after:
    needs: [each]
    function: handlers:items
    input: {items: "{{ steps.each.output }}"}
"""


async def test_an_empty_list_succeeds_with_no_job_and_a_bad_one_fails_clearly(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = await make_engine(write_flow(tmp_path / "flows", EDGES, HANDLERS).parent)
    empty = await engine.run_to_end("edges", timeout_s=30)
    assert empty["status"] == "SUCCEEDED", empty
    each = await _step(engine, empty["run_id"], "each")
    assert (each["status"], each["output"], each["items"], each["job_id"]) == ("SUCCEEDED", [], 0, None)
    assert (await _step(engine, empty["run_id"], "after"))["output"] == []  # as a Map state over []

    bad = await engine.run_to_end("edges", {"box": {"items": {"not": "a list"}}}, timeout_s=30)
    assert bad["status"] == "FAILED"
    error = (await _step(engine, bad["run_id"], "each"))["error"]
    assert error["errorType"] == "Sluice.TemplateError"
    assert error["errorMessage"].startswith("steps.each.for_each must render to a list, got dict")

    many = await engine.run_to_end("edges", {"box": {"items": list(range(10_001))}}, timeout_s=30)
    assert many["status"] == "FAILED"
    error = (await _step(engine, many["run_id"], "each"))["error"]
    assert "gave 10001 items; a container step runs at most 10000" in error["errorMessage"]

    big = await engine.run_to_end("edges", {"box": {"items": ["x" * 40_000]}}, timeout_s=30)
    error = (await _step(engine, big["run_id"], "each"))["error"]
    assert "item 0 is 40002 bytes as JSON; a container's item is at most 32768" in error["errorMessage"]
    jobs = await engine.store.read(lambda c: c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    assert jobs == 0  # nothing was submitted for any of them


LONG = """\
name: long
params:
  items: {type: array, default: [a]}
steps:
  each:
    for_each: "{{ params.items }}"
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo "got $SLUICE_ITEM"; sleep "$NAP"']
      env: {NAP: "{{ 30 if index > 0 else 0 }}"}
      vcpus: 0.25
      memory: 32MiB
      network: none
"""


async def test_one_item_is_an_array_of_one_and_a_cancel_terminates_every_child(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    engine = await _engine(make_engine, tmp_path, LONG, docker_test_label)
    engine.batch.stop_grace_s = 1.0
    solo = await engine.run_to_end("long", timeout_s=60)  # AWS refuses an array of 1; a Map has one
    assert solo["status"] == "SUCCEEDED", solo
    (child,) = (await _step(engine, solo["run_id"], "each"))["output"]
    assert child["index"] == 0 and _read(child["log_path"]) == 'got "a"\n'

    run_id = await engine.start_run("long", {"items": ["a", "b", "c"]})
    # child 0 has ended (the book lets go of ended jobs), the two sleeping ones run
    children = lambda: sorted((j.array_index, j.status) for j in engine.batch.jobs.values() if j.parent_id)  # noqa: E731
    await until(lambda: children() == [(1, "RUNNING"), (2, "RUNNING")], 60)
    await engine.orchestrator.cancel(run_id, "enough")
    await engine.orchestrator.wait(run_id, 30)
    each = await _step(engine, run_id, "each")
    parent = await engine.batch.describe(each["job_id"])
    assert parent is not None and parent["status"] == "FAILED"
    summary = parent["array_status_summary"]
    assert (summary["SUCCEEDED"], summary["FAILED"]) == (1, 2)  # the sleeping ones, terminated
    assert await docker_client.list({TEST_LABEL: docker_test_label}) == []


ARRAY = """\
name: arr
steps:
  each:
    array: 3
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo "$I $N $SLUICE_ARRAY_INDEX ${SLUICE_ITEM-none}"']
      env: {I: "{{ index * 10 }}", N: 7}
      vcpus: 0.25
      memory: 32MiB
      network: none
"""


async def test_an_array_step_renders_index_per_child(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    """The loader let ``{{ index }}`` into an ``array: N`` step's env, which then failed every run."""
    engine = await _engine(make_engine, tmp_path, ARRAY, docker_test_label)
    summary = await engine.run_to_end("arr", timeout_s=60)
    assert summary["status"] == "SUCCEEDED", summary
    each = await _step(engine, summary["run_id"], "each")
    assert each["output"]["array_size"] == 3  # an array step's output, as before
    for i in range(3):
        child = await engine.batch.describe(f"{each['job_id']}:{i}")
        assert child is not None and _read(child["attempts"][0]["log_path"]) == f"{i * 10} 7 {i} none\n"


NAPS = """\
name: naps
steps:
  each:
    for_each: ["x", "y", "z"]
    container:
      image: busybox:1.36
      command: [sh, -c, 'sleep 1.5; echo "done $SLUICE_ITEM"']
      vcpus: 0.25
      memory: 32MiB
      network: none
"""


async def test_a_restart_mid_fan_out_resumes_the_array_and_ends_the_step_with_every_output(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    flows, data = write_flow(tmp_path / "flows", NAPS).parent, tmp_path / "data"
    first = await make_engine(flows, data_dir=data)
    first.batch.labels[TEST_LABEL] = docker_test_label
    run_id = await first.start_run("naps")
    await until(lambda: sum(j.status == "RUNNING" for j in first.batch.jobs.values() if j.parent_id) == 3)
    await first.stop(grace_s=0)  # the containers run on; the step resumes by waiting on its job
    assert _step_status(data, run_id, "each") == "RUNNING"
    again = await make_engine(flows, data_dir=data)
    again.batch.labels[TEST_LABEL] = docker_test_label
    await again.orchestrator.wait(run_id, 60)
    summary = await again.describe_run(run_id)
    assert summary is not None and summary["status"] == "SUCCEEDED", summary
    each = await _step(again, run_id, "each")
    assert [o["index"] for o in each["output"]] == [0, 1, 2] and each["items"] == 3
    assert [_read(o["log_path"]) for o in each["output"]] == ['done "x"\n', 'done "y"\n', 'done "z"\n']


SECRET = """\
name: sealed
steps:
  each:
    for_each: [a, b]
    container:
      image: busybox:1.36
      command: [sh, -c, '[ "${#TOKEN}" = 13 ] && [ "${TOKEN#s3cret}" = -cfe-42 ] && echo "ok $TAG"']
      env: {TOKEN: "${env:SLUICE_CFE_TOKEN}", TAG: "{{ item }}-{{ index }}"}
      vcpus: 0.25
      memory: 32MiB
      network: none
"""


async def test_a_secret_in_a_fan_out_env_stays_sealed_in_every_child(
    make_engine: MakeEngine,
    tmp_path: Path,
    docker_client: DockerClient,
    docker_test_label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_CFE_TOKEN", "s3cret-cfe-42")
    engine = await _engine(make_engine, tmp_path, SECRET, docker_test_label)
    summary = await engine.run_to_end("sealed", timeout_s=60)
    assert summary["status"] == "SUCCEEDED", summary
    each = await _step(engine, summary["run_id"], "each")
    assert [_read(o["log_path"]) for o in each["output"]] == ["ok a-0\n", "ok b-1\n"]
    for i in range(2):
        child = await engine.batch.describe(f"{each['job_id']}:{i}")
        assert child is not None and "TOKEN" in child["spec"]["secrets"]
        assert "s3cret-cfe-42" not in json.dumps(child["spec"]["secrets"])
        assert "TOKEN" not in child["spec"]["environment"]


@pytest.mark.slurm
@pytest.mark.timeout(180)
async def test_through_slurm_each_child_of_one_sbatch_array_gets_its_own_item(
    slurm_batch: MakeSlurmBatch,
) -> None:
    """On Slurm the children one decision placed go out as one ``sbatch --array``; each child's
    item still reaches it alone (every child has its own request file on the shared dir)."""
    svc = await slurm_batch()
    items = [{"k": "a b"}, {"k": "$(touch /x)"}, {"k": "c"}]
    env = {"K": compile_value("{{ item.k }}", "env")}
    container = ContainerSpec(image="busybox:1.36", env=env)
    spec = StepSpec("fe", "container", container=container, for_each=compile_value(items, "for_each"))
    fan = fanout.per_child("fe", spec, {}, fanout.render_items("fe", spec, {}))
    cmd = ["sh", "-c", 'echo "$SLUICE_ARRAY_INDEX $K $SLUICE_ITEM"']
    req = {"queue": "hpc", "name": "fe", "container": box(cmd), "array_size": 3}
    out = await svc.submitter.submit(req, run_step=("r-slurm", "fe"), per_child=fan)
    assert await svc.wait(out["job_id"], 150) == "SUCCEEDED"
    handles = set()
    for i, item in enumerate(items):
        child = await svc.describe(f"{out['job_id']}:{i}")
        assert child is not None
        text = json.dumps(item, separators=(",", ":"))
        assert _read(child["attempts"][0]["log_path"]) == f"{i} {item['k']} {text}\n"
        handles.add(child["attempts"][0]["slurm_job_id"].split("_")[0])
    assert len(handles) == 1  # one sbatch --array for the three


def test_a_template_that_does_not_fit_one_item_names_it() -> None:
    items = [{"key": "a"}, {"other": 1}]
    env = {"K": compile_value("{{ item.key }}", "steps.fe.container.env.K")}
    spec = StepSpec(
        "fe", "container", container=ContainerSpec(image="b", env=env), for_each=compile_value(items, "x")
    )
    fan = fanout.per_child("fe", spec, {}, fanout.render_items("fe", spec, {}))
    assert fan(JobSpec(image="b"), 0).environment == {"K": "a", "SLUICE_ITEM": '{"key":"a"}'}
    with pytest.raises(SluiceError, match=r"^item 1: steps\.fe\.container\.env\.K: cannot render"):
        fan(JobSpec(image="b"), 1)


BAD_ITEMS = """\
name: bad
params:
  items: {type: array}
  tag: {type: object, default: {v: t}}
steps:
  each:
    for_each: "{{ params.items }}"
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo "hi $NAME"']
      env: {NAME: "{{ item.name }}", TAG: "{{ params.tag.v }}"}
      vcpus: 0.25
      memory: 32MiB
      network: none
"""


async def test_an_item_that_does_not_fit_a_template_fails_its_child_alone(
    make_engine: MakeEngine, tmp_path: Path, docker_client: DockerClient, docker_test_label: str
) -> None:
    """As a function for_each's bad item: child 1 (no ``name``) and child 3 (a NUL in it) end
    FAILED at once, with no container and no attempt; 0 and 2 run; the step names item 1."""
    engine = await _engine(make_engine, tmp_path, BAD_ITEMS, docker_test_label)
    seen: list[tuple[str, dict[str, Any]]] = []
    engine.orchestrator.listeners.append(
        lambda kind, run, step, status, info: seen.append((status, info)) if kind == "item" else None
    )
    items = [{"name": "a"}, {"other": 1}, {"name": "c"}, {"name": "d\u0000e"}]
    summary = await engine.run_to_end("bad", {"items": items}, timeout_s=60)
    assert summary["status"] == "FAILED", summary
    each = await _step(engine, summary["run_id"], "each")
    parent_id = each["job_id"]
    assert each["status"] == "FAILED" and each["items"] == 4, each
    assert each["error"]["errorType"] == "Sluice.TemplateError"
    message = each["error"]["errorMessage"]
    assert message.startswith(f"2 of 4 items failed; item 1: job {parent_id}:1: item 1: "), message
    assert "steps.each.container.env.NAME" in message
    parent = await engine.batch.describe(parent_id)
    assert parent is not None and parent["status"] == "FAILED"
    assert parent["array_status_summary"]["SUCCEEDED"] == 2
    assert parent["array_status_summary"]["FAILED"] == 2
    for i, name in ((0, "a"), (2, "c")):
        child = await engine.batch.describe(f"{parent_id}:{i}")
        assert child is not None and child["status"] == "SUCCEEDED"
        assert _read(child["attempts"][0]["log_path"]) == f"hi {name}\n"
    for i, words in ((1, "steps.each.container.env.NAME: cannot render"), (3, "puts a NUL in it")):
        child = await engine.batch.describe(f"{parent_id}:{i}")
        assert child is not None and child["status"] == "FAILED"
        assert child["status_reason"].startswith(f"item {i}: "), child["status_reason"]
        assert words in child["status_reason"]
        assert child["attempts"] == [] and child["attempt_count"] == 0
        events = await engine.store.read(lambda c, j=child["job_id"]: job_events(c, j))
        assert [s for s, _ in events] == ["SUBMITTED", "PENDING", "FAILED"]
        assert events[-1][1] == child["status_reason"]
    assert await docker_client.list({TEST_LABEL: docker_test_label}) == []
    failed = sorted((i["index"], i["error"]["errorType"]) for s, i in seen if s == "FAILED")
    assert failed == [(1, "Sluice.TemplateError"), (3, "Sluice.TemplateError")]  # `sluice run` shows them
    assert sorted(i["index"] for s, i in seen if s == "SUCCEEDED") == [0, 2]
    outputs = {o["index"]: o for o in await engine.store.read(lambda c: fanout.child_outputs(c, parent_id))}
    assert outputs[1]["attempts"] == 0 and outputs[1]["log_path"] is None


async def test_a_template_not_reading_the_item_still_fails_the_step_before_any_job(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    flow = BAD_ITEMS.replace("params.tag.v", "params.tag.missing")
    engine = await make_engine(write_flow(tmp_path / "flows", flow, HANDLERS).parent)
    summary = await engine.run_to_end("bad", {"items": [{"other": 1}, {"name": "b"}]}, timeout_s=30)
    assert summary["status"] == "FAILED"
    each = await _step(engine, summary["run_id"], "each")
    assert each["error"]["errorType"] == "Sluice.TemplateError" and each["job_id"] is None
    assert each["error"]["errorMessage"].startswith("steps.each.container.env.TAG"), each["error"]
    jobs = await engine.store.read(lambda c: c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    assert jobs == 0


#: an engine that starts a big fan-out on a disabled environment and is SIGKILLed (by itself, the
#: moment the parent is committed and chunks are still to come): nothing runs, the writing is tested
KILLED = """
import asyncio, json, os, signal, sys
from pathlib import Path
from engine.engine import Engine, Settings
from workflows.loader import load_dir

async def main():
    engine = Engine(Settings(data_dir=Path(sys.argv[1]), workers=1), load_dir(sys.argv[2]))
    await engine.start()
    batch = engine.batch
    await batch.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    items = [{"name": f"n{i}"} for i in range(int(sys.argv[3]))]
    items[-1] = {"other": 1}
    run_id = await engine.start_run("bad", {"items": items})
    while not batch.book.unwritten:
        await asyncio.sleep(0)
    parent = next(j.id for j in batch.jobs.values() if j.is_parent)
    print(json.dumps({"run_id": run_id, "parent": parent}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_kill_mid_submission_keeps_the_bad_items_child_failed_and_writes_none_twice(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    size = 8 * ARRAY_CHUNK
    flows, data = write_flow(tmp_path / "flows", BAD_ITEMS).parent, tmp_path / "data"
    ids = await killed_midway(KILLED, str(data), str(flows), str(size))
    parent, bad = ids["parent"], f"{ids['parent']}:{size - 1}"
    engine = await make_engine(flows, data_dir=data)
    assert engine.batch is not None
    await engine.batch.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    child = await engine.batch.describe(bad)
    assert child is not None and child["status"] == "FAILED" and child["attempts"] == []
    assert child["status_reason"].startswith(f"item {size - 1}: steps.each.container.env.NAME: cannot render")
    stored = await engine.store.read(
        lambda c: [r[0] for r in c.execute("SELECT id FROM jobs WHERE parent_id=?", (parent,))]
    )
    assert len(stored) == len(set(stored)) == size  # the rest written or ended INTERRUPTED, once each
    events = await engine.store.read(lambda c: job_events(c, bad))
    assert [s for s, _ in events] == ["SUBMITTED", "PENDING", "FAILED"]
    await engine.batch.cancel(parent, "enough")  # the step resumed on its job: it ends with the array
    await engine.orchestrator.wait(ids["run_id"], 30)
    each = await _step(engine, ids["run_id"], "each")
    assert each["status"] == "FAILED" and each["error"]["errorMessage"].startswith(f"{size} of {size} items")


#: an engine that SIGKILLs itself the moment a submission is committed, before what it settles
#: (the array parent, once every child failed at once) is: the test wraps ``Submitter._admit``
KILLED_BEFORE_SETTLE = """
import asyncio, json, os, signal, sys
from pathlib import Path
from engine.batch.submit import Submitter
from engine.engine import Engine, Settings
from workflows.loader import load_dir

def killed(self, jobs, waiting):
    print(json.dumps({"run_id": jobs[0].run_id, "parent": jobs[0].id}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

async def main():
    engine = Engine(Settings(data_dir=Path(sys.argv[1]), workers=1), load_dir(sys.argv[2]))
    await engine.start()
    Submitter._admit = killed
    await engine.start_run("bad", {"items": [{"other": i} for i in range(int(sys.argv[3]))]})
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("size", [3, 2 * ARRAY_CHUNK])  # one transaction, and a chunked array
async def test_a_kill_before_the_parent_settles_leaves_it_settled_by_the_restart(
    make_engine: MakeEngine, tmp_path: Path, size: int
) -> None:
    """Every item misfits, so every child is FAILED in the submission itself; the engine dies
    before the parent's own end is committed. The restart ends it FAILED, once, and the step too."""
    flows, data = write_flow(tmp_path / "flows", BAD_ITEMS).parent, tmp_path / "data"
    ids = await killed_midway(KILLED_BEFORE_SETTLE, str(data), str(flows), str(size))
    run_id, parent = ids["run_id"], ids["parent"]
    assert _step_status(data, run_id, "each") == "RUNNING"
    with contextlib.closing(sqlite3.connect(data / "sluice.db")) as conn:
        assert job_events(conn, parent) == [("SUBMITTED", None), ("PENDING", None)]
    engine = await make_engine(flows, data_dir=data)
    assert engine.batch is not None
    await engine.orchestrator.wait(run_id, 20)
    desc = await engine.batch.describe(parent)
    assert desc is not None and desc["status"] == "FAILED", desc
    reason = f"{size} of {size} child jobs failed; first: {parent}:0"
    assert desc["status_reason"] == reason
    assert desc["array_status_summary"]["FAILED"] == size
    events = await engine.store.read(lambda c: job_events(c, parent))
    assert events == [("SUBMITTED", None), ("PENDING", None), ("FAILED", reason)]
    each = await _step(engine, run_id, "each")
    assert each["status"] == "FAILED" and each["error"]["errorType"] == "Sluice.TemplateError"
    assert each["error"]["errorMessage"].startswith(f"{size} of {size} items failed; item 0: "), each
    assert engine.batch.jobs == {} and engine.batch.book.array_left == {}
