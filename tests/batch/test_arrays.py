"""Big arrays are written in chunks (issue 19): the parent at once, other writes in between, the
``statusSummary`` adding up to the array's size throughout, a cancel reaching children not written
yet, and a restart in the middle of a submission ending the children never stored.

The ``local`` environment is disabled, so no container runs: the submission is what is tested.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from engine.batch import fanout
from engine.batch.arrays import ARRAY_CHUNK, INTERRUPTED
from engine.batch.jobs import STATES
from engine.batch.service import BatchService
from tests.support.batch import MakeBatch, box, job_events, killed_midway
from tests.support.waiting import wait_until as until
from workflows.spec import ContainerSpec, StepSpec
from workflows.templating import compile_value

pytestmark = pytest.mark.docker

SIZE = 20 * ARRAY_CHUNK


async def idle_batch(batch: MakeBatch) -> BatchService:
    svc = await batch()
    await svc.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    return svc


def submit(svc: BatchService, per_child: fanout.PerChild | None = None) -> asyncio.Future[dict[str, Any]]:
    req = {"queue": "default", "array_size": SIZE, "container": box(["true"])}
    if per_child is None:
        return asyncio.ensure_future(svc.submit(req))
    return asyncio.ensure_future(svc.submitter.submit(req, run_step=("r-fe", "fe"), per_child=per_child))


def one_bad_item(bad: int) -> fanout.PerChild:
    """A container for_each of ``SIZE`` items whose item ``bad`` has no ``k`` for ``{{ item.k }}``."""
    items = [{"k": i} for i in range(SIZE)]
    items[bad] = {"other": 1}
    env = {"K": compile_value("{{ item.k }}", "steps.fe.container.env.K")}
    spec = StepSpec(
        "fe", "container", container=ContainerSpec(image="b", env=env), for_each=compile_value(items, "x")
    )
    return fanout.per_child("fe", spec, {}, fanout.render_items("fe", spec, {}))


def no_item_fits() -> fanout.PerChild:
    """A container for_each of ``SIZE`` items none of which has the ``k`` of ``{{ item.k }}``."""
    items = [{"other": i} for i in range(SIZE)]
    env = {"K": compile_value("{{ item.k }}", "steps.fe.container.env.K")}
    spec = StepSpec(
        "fe", "container", container=ContainerSpec(image="b", env=env), for_each=compile_value(items, "x")
    )
    return fanout.per_child("fe", spec, {}, fanout.render_items("fe", spec, {}))


async def parent_of(svc: BatchService) -> str:
    """The parent's id, as soon as it is in the book (committed)."""
    await until(lambda: any(j.is_parent for j in svc.jobs.values()), 10, step_s=0.001)
    return next(j.id for j in svc.jobs.values() if j.is_parent)


def children_stored(parent: str) -> Any:
    return lambda c: c.execute("SELECT count(*) FROM jobs WHERE parent_id=?", (parent,)).fetchone()[0]


async def test_a_big_array_lets_other_writes_in_and_its_summary_always_adds_up(batch: MakeBatch) -> None:
    svc = await idle_batch(batch)
    sub = submit(svc)
    parent = await parent_of(svc)
    # a write queued now commits between two chunks, not after the whole array
    between = await svc.store.write(children_stored(parent))
    summaries = []
    while not sub.done():
        desc = await svc.describe(parent)
        assert desc is not None
        summaries.append(desc["array_status_summary"])
    out = await sub
    assert out["job_id"] == parent and out["status"] == "PENDING"
    assert 0 <= between < SIZE
    assert summaries and all(set(s) == set(STATES) and sum(s.values()) == SIZE for s in summaries)
    assert any(s["SUBMITTED"] > 0 for s in summaries), "every read came after the last chunk"
    final = await svc.describe(parent)
    assert final is not None and final["array_status_summary"]["RUNNABLE"] == SIZE

    def events(conn: Any) -> list[tuple[str, str]]:
        rows = conn.execute("SELECT body FROM events WHERE source='aws.batch' ORDER BY seq").fetchall()
        return [(json.loads(r[0])["detail"]["jobId"], json.loads(r[0])["detail"]["status"]) for r in rows]

    seen = await svc.store.read(events)
    assert [s for j, s in seen if j == parent] == ["SUBMITTED", "PENDING"]
    child = f"{parent}:{SIZE - 1}"
    assert [s for j, s in seen if j == child] == ["SUBMITTED", "PENDING", "RUNNABLE"]
    assert len(seen) == 2 + 3 * SIZE
    assert len(svc.book.index) == SIZE and not svc.book.unwritten


async def test_a_cancel_during_the_submission_reaches_the_children_not_written_yet(
    batch: MakeBatch,
) -> None:
    svc = await idle_batch(batch)
    sub = submit(svc)
    parent = await parent_of(svc)
    assert svc.book.unwritten, "the whole array was written before the cancel"
    await svc.cancel(parent, "not today")
    await sub
    assert await svc.wait(parent, 10) == "FAILED"
    desc = await svc.describe(parent)
    assert desc is not None and desc["array_status_summary"]["FAILED"] == SIZE
    last = await svc.describe(f"{parent}:{SIZE - 1}")
    assert last is not None and (last["status"], last["status_reason"]) == ("FAILED", "not today")
    assert svc.jobs == {} and len(svc.book.index) == 0 and not svc.book.unwritten


async def test_a_restart_in_the_middle_of_a_submission_fails_the_children_never_stored(
    batch: MakeBatch,
) -> None:
    svc = await idle_batch(batch)
    sub = submit(svc)
    parent = await parent_of(svc)
    await svc.aclose()  # the engine stops: the chunk being written lands, the rest never does
    await svc.store.close()
    with pytest.raises(asyncio.CancelledError):
        await sub
    again = await batch()
    await again.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    desc = await again.describe(parent)
    assert desc is not None
    counts = desc["array_status_summary"]
    assert sum(counts.values()) == SIZE and counts["SUBMITTED"] == 0
    assert counts["FAILED"] > 0 and counts["RUNNABLE"] + counts["FAILED"] == SIZE
    lost = await again.describe(f"{parent}:{SIZE - 1}")
    assert lost is not None and (lost["status"], lost["status_reason"]) == ("FAILED", INTERRUPTED)
    await again.cancel(parent)
    assert await again.wait(parent, 10) == "FAILED"
    assert again.jobs == {} and again.book.array_left == {}


async def test_a_child_not_stored_yet_is_described_as_submitted_not_unknown(batch: MakeBatch) -> None:
    """AWS answers DescribeJobs for ``parent:N`` as soon as SubmitJob returns; a script that polls
    the last child right away must not be told there is no such job while its chunk is queued."""
    svc = await idle_batch(batch)
    sub = submit(svc)
    parent = await parent_of(svc)
    last = f"{parent}:{SIZE - 1}"
    seen = []
    while not sub.done():
        desc = await svc.describe(last)
        assert desc is not None, "the last child is unknown while its chunk waits to be written"
        seen.append(desc["status"])
        assert desc["job_id"] == last and desc["parent_id"] == parent and desc["array_index"] == SIZE - 1
        assert desc["spec"]["image"] == "busybox:1.36" and desc["attempts"] == []
    await sub
    assert "SUBMITTED" in seen, "every read came after the last chunk"
    assert (await svc.describe(last) or {})["status"] == "RUNNABLE"
    assert await svc.describe(f"{parent}:{SIZE}") is None  # past the array's end


async def test_a_restart_mid_submission_keeps_a_bad_items_child_failed_for_its_own_reason(
    batch: MakeBatch,
) -> None:
    """The last child (its item does not fit the template) would be in the last chunk; it is
    written FAILED with the parent, so the restart neither loses its reason nor writes it twice."""
    svc = await idle_batch(batch)
    sub = submit(svc, one_bad_item(SIZE - 1))
    parent = await parent_of(svc)
    assert svc.book.unwritten, "the whole array was written before the stop"
    await svc.aclose()
    await svc.store.close()
    with pytest.raises(asyncio.CancelledError):
        await sub
    again = await batch()
    await again.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    bad = await again.describe(f"{parent}:{SIZE - 1}")
    assert bad is not None and bad["status"] == "FAILED", bad
    assert bad["status_reason"].startswith(f"item {SIZE - 1}: steps.fe.container.env.K: cannot render")
    assert bad["attempts"] == []
    second = await again.describe(f"{parent}:{SIZE - 2}")
    assert second is not None and (second["status"], second["status_reason"]) == ("FAILED", INTERRUPTED)
    ids = await again.store.read(
        lambda c: [r[0] for r in c.execute("SELECT id FROM jobs WHERE parent_id=?", (parent,))]
    )
    assert len(ids) == len(set(ids)) == SIZE
    await again.cancel(parent)
    assert await again.wait(parent, 10) == "FAILED"
    desc = await again.describe(parent)
    assert desc is not None and desc["array_status_summary"]["FAILED"] == SIZE
    first = f"{SIZE} of {SIZE} child jobs failed; first: {parent}:{SIZE - 1}"
    assert desc["status_reason"] == first  # counted once, as the first to fail


async def test_a_bad_items_child_is_failed_at_once_and_the_rest_are_runnable(batch: MakeBatch) -> None:
    svc = await idle_batch(batch)
    out = await submit(svc, one_bad_item(3))
    parent = out["job_id"]
    bad = await svc.describe(f"{parent}:3")
    assert bad is not None and bad["status"] == "FAILED" and bad["attempt_count"] == 0
    assert bad["status_reason"].startswith("item 3: steps.fe.container.env.K: cannot render")
    desc = await svc.describe(parent)
    assert desc is not None and desc["status"] == "PENDING"
    assert desc["array_status_summary"]["FAILED"] == 1
    assert desc["array_status_summary"]["RUNNABLE"] == SIZE - 1
    assert len(svc.book.index) == SIZE - 1 and svc.book.array_failed == {parent: [f"{parent}:3"]}
    child = await svc.describe(f"{parent}:4")
    assert child is not None and child["spec"]["environment"]["K"] == "4"
    await svc.cancel(parent)
    assert await svc.wait(parent, 10) == "FAILED"
    desc = await svc.describe(parent)
    first = f"{SIZE} of {SIZE} child jobs failed; first: {parent}:3"
    assert desc is not None and desc["status_reason"] == first


async def test_an_array_whose_template_fits_no_item_is_still_written_in_chunks(batch: MakeBatch) -> None:
    """Every child fails at once (a typo in the template): they are not all written with the
    parent in one transaction, which would hold the store as long as the array's one big commit
    did; each ends FAILED for its own reason, and so does the array."""
    svc = await idle_batch(batch)
    before = svc.store.transactions
    out = await submit(svc, no_item_fits())
    parent = out["job_id"]
    assert svc.store.transactions - before >= SIZE // ARRAY_CHUNK, "the children went in one commit"
    assert await svc.wait(parent, 10) == "FAILED"
    for i in (0, SIZE // 2, SIZE - 1):
        child = await svc.describe(f"{parent}:{i}")
        assert child is not None and child["status"] == "FAILED" and child["attempt_count"] == 0
        assert child["status_reason"].startswith(f"item {i}: steps.fe.container.env.K: cannot render")
    desc = await svc.describe(parent)
    assert desc is not None and desc["array_status_summary"]["FAILED"] == SIZE


#: a BatchService that SIGKILLs itself the moment an array is committed whose children all failed
#: at once (their dependency had failed), before the parent's end is: ``Submitter._admit`` wrapped
KILLED_BEFORE_SETTLE = """
import asyncio, json, os, signal, sys
from pathlib import Path
from engine.batch.service import BatchService
from engine.batch.submit import Submitter
from engine.bus.bus import Bus
from engine.executors.docker_api import DockerClient
from engine.store.store import Store

def killed(self, jobs, waiting):
    print(json.dumps({"parent": jobs[0].id}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

async def main():
    data, size, first = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    store = Store(data / "sluice.db")
    await store.open()
    svc = BatchService(store, Bus(store, {}), data, DockerClient())
    await svc.start()
    await svc.put_environment({"name": "local", "state": "DISABLED"}, create=False)
    dep = (await svc.submit(first))["job_id"]
    await svc.cancel(dep, "not wanted")
    Submitter._admit = killed
    await svc.submit({**first, "array_size": size, "depends_on": [dep]})

asyncio.run(main())
"""


@pytest.mark.parametrize("size", [3, 2 * ARRAY_CHUNK])  # one transaction, and a chunked array
async def test_a_kill_before_an_array_of_failed_dependents_settles_is_settled_by_the_restart(
    batch: MakeBatch, tmp_path: Any, size: int
) -> None:
    """Every child fails at once (its dependency failed); the engine dies between that commit and
    the parent's end. The restart ends the parent FAILED with the array's reason, one event."""
    first = {"queue": "default", "container": box(["true"])}
    ids = await killed_midway(KILLED_BEFORE_SETTLE, str(tmp_path / "data"), str(size), json.dumps(first))
    parent = ids["parent"]
    svc = await idle_batch(batch)
    desc = await svc.describe(parent)
    assert desc is not None and desc["status"] == "FAILED", desc
    reason = f"{size} of {size} child jobs failed; first: {parent}:0"
    assert desc["status_reason"] == reason and desc["array_status_summary"]["FAILED"] == size
    child = await svc.describe(f"{parent}:0")
    assert child is not None and child["status_reason"].endswith("failed: not wanted"), child
    events = await svc.store.read(lambda c: job_events(c, parent))
    assert events == [("SUBMITTED", None), ("PENDING", None), ("FAILED", reason)]
    assert await svc.wait(parent, 5) == "FAILED"
    assert svc.jobs == {} and svc.book.array_left == {}
