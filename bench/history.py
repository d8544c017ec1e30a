"""The API's history pages as the store grows (issue 19): ``python -m bench.history [--runs N]``.

Fills a real store with N finished runs (plain SQL, in the store's own schema: the fixture, not
the thing measured), then times through the store's read pool (aiosqlite, engine/store/queries.py)
what ``GET /api/v1/runs`` and the dashboard ask: the first page, a page filtered by status and
by workflow, the tenth page by cursor; a ``/metrics`` scrape (it must not grow with the history);
and how long a one-row read waits while another client's long read is running (reads must not
queue behind one another).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.api.dashboard import status_counts
from engine.ids import event_id, ordered_id
from engine.store import queries
from engine.store.store import Store

WORKFLOWS = [f"wf{i}" for i in range(10)]


def fill(path: Path, runs: int) -> None:
    conn = sqlite3.connect(path)
    t0 = time.time() - runs * 0.01
    rows = []
    for i in range(runs):
        status = "FAILED" if i % 97 == 0 else "SUCCEEDED"
        at = t0 + i * 0.01
        rows.append(
            (ordered_id("r-"), WORKFLOWS[i % 10], event_id(), f"o{i}", "manual", status, "{}", at, at, at)
        )
        if len(rows) == 50_000 or i == runs - 1:
            conn.executemany(
                "INSERT INTO runs (id, workflow, event_id, origin_id, trigger, status, params, "
                "created_at, started_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            conn.commit()
            rows.clear()
    conn.close()


async def full_count(db: Any) -> Any:
    """What the dashboard asked before: every state counted over the whole history."""
    return await db.execute_fetchall("SELECT status, COUNT(*) FROM runs GROUP BY status")


async def timed(store: Store, fn: Any, reps: int = 20) -> float:
    """Median milliseconds of ``await fn(db)`` on a pooled read connection, borrowing included."""
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        async with store.reader() as db:
            await fn(db)
        samples.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(samples), 3)


async def page(store: Store, **kw: Any) -> Any:
    async with store.reader() as db:
        return await queries.list_runs(db, limit=50, **kw)


async def one_row(store: Store) -> None:
    async with store.reader() as db:
        await db.execute_fetchall("SELECT 1")


async def measure(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sluice.db"
        store = Store(path)
        await store.open()  # the schema, by the store's own migrations
        await store.close()
        t0 = time.perf_counter()
        fill(path, runs)
        filled_s = time.perf_counter() - t0
        store = Store(path)
        await store.open()
        try:
            found = await page(store)
            cursor = found[-1]["run_id"] if found else None
            for _ in range(8):
                found = await page(store, before=cursor)
                cursor = found[-1]["run_id"]
            out: dict[str, Any] = {
                "runs": runs,
                "fill_s": round(filled_s, 1),
                "first_page_ms": await timed(store, lambda db: queries.list_runs(db, limit=50)),
                "status_page_ms": await timed(
                    store, lambda db: queries.list_runs(db, status="FAILED", limit=50)
                ),
                "workflow_page_ms": await timed(
                    store, lambda db: queries.list_runs(db, workflow="wf3", limit=50)
                ),
                "tenth_page_ms": await timed(
                    store, lambda db: queries.list_runs(db, limit=50, before=cursor)
                ),
                "dashboard_counts_ms": await timed(store, status_counts),
                "full_count_ms": await timed(store, full_count, reps=3),
            }
            # a long read (another client's full scan) and a one-row read sent just after it
            slow = asyncio.ensure_future(
                timed(
                    store,
                    lambda db: db.execute_fetchall("SELECT count(*) FROM runs WHERE params LIKE '%x%'"),
                    reps=1,
                )
            )
            await asyncio.sleep(0.005)
            t0 = time.perf_counter()
            await one_row(store)
            out["small_read_beside_long_read_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            t0 = time.perf_counter()
            await slow
            out["long_read_ms"] = round(
                (time.perf_counter() - t0) * 1000 + out["small_read_beside_long_read_ms"], 1
            )
        finally:
            await store.close()
        out["metrics_scrape_ms"] = await scrape_ms(Path(tmp))
        return out


async def scrape_ms(data_dir: Path, reps: int = 7) -> float:
    """Median milliseconds of a ``/metrics`` scrape (``metrics.scrape``) of an engine on this store."""
    from engine.api import metrics
    from engine.engine import Engine, Settings

    samples = []
    async with Engine(Settings(data_dir=data_dir, workers=1, grace_s=1, port=0), {}) as engine:
        for _ in range(reps):
            t0 = time.perf_counter()
            await metrics.scrape(engine, None)
            samples.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    for n in args.runs:
        print(json.dumps(asyncio.run(measure(n))))


if __name__ == "__main__":
    main()
