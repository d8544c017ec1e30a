"""Where a WAL checkpoint should run, modelled with plain sqlite3: ``python -m bench.wal_model MODE``.

A one-client chain commits every ~0.3 ms. ``writer``: the committing connection checkpoints
itself every 100 commits (the store before issue 19: queued commits wait for it). ``beside``: a
second connection checkpoints (PASSIVE) on its own thread every 100 commits, and the committing
one checkpoints itself only once the WAL passes ``--restart-pages`` (the store now). Each
commit's latency is measured from its arrival time, so a stall shows up in every commit that
arrived during it.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import threading
import time


def measure(
    mode: str, restart_pages: int, commits: int = 8_000, interval_s: float = 300e-6
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.db")
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE INDEX t_v ON t (v)")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        state = {"busy": False, "restart": False}

        def beside() -> None:
            _busy, pages, _copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            state["restart"] = pages >= restart_pages
            state["busy"] = False

        latencies = []
        start = time.perf_counter()
        for i in range(commits):
            arrival = start + i * interval_s
            wait = arrival - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, os.urandom(400).hex()))
            conn.execute("COMMIT")
            latencies.append((time.perf_counter() - arrival) * 1e6)
            if i % 100 == 99:
                if mode == "writer":
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                elif not state["busy"]:
                    state["busy"] = True
                    threading.Thread(target=beside).start()
            if state["restart"]:
                state["restart"] = False
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        while state["busy"]:
            time.sleep(0.001)
        wal_mb = os.path.getsize(path + "-wal") / 1e6
        other.close()
        conn.close()
    latencies.sort()
    n = len(latencies)
    return {
        "p50_us": round(latencies[n // 2]),
        "p90_us": round(latencies[int(n * 0.9)]),
        "p99_us": round(latencies[int(n * 0.99)]),
        "max_us": round(latencies[-1]),
        "wal_mb": round(wal_mb, 1),
        "loadavg": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["writer", "beside"])
    parser.add_argument("--restart-pages", type=int, default=8_192)
    args = parser.parse_args()
    print(json.dumps({"mode": args.mode, **measure(args.mode, args.restart_pages)}))


if __name__ == "__main__":
    main()
