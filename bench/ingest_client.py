"""W4's load client: a fixed number of webhook POSTs from N concurrent loopback clients.

Runs in its own process (``python -m bench.ingest_client --url URL --events 10000 --concurrency 16``)
so the engine under test keeps a core to itself; prints one JSON line. Unlike ``bench.limits._load``
(duration-based, for the limits) it sends an exact count, because W4 is defined as 10,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from .core import latency_metrics


async def load(url: str, events: int, concurrency: int) -> dict[str, float]:
    """Send ``events`` POSTs through ``concurrency`` keep-alive clients; count 202s and time each."""
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    left = events

    async def client(session: aiohttp.ClientSession, me: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            body = json.dumps({"client": me, "n": left}).encode()
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
            latencies.append(time.perf_counter() - t0)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    cpu0 = time.process_time()  # not the interpreter's start and imports: ~30 us per request at 10,000
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session, i) for i in range(concurrency)))
        wall = time.perf_counter() - start
    accepted = statuses.get(202, 0)
    return {
        "accepted": accepted,
        "rejected": sum(statuses.values()) - accepted,
        "wall_s": wall,
        "accepted_per_s": accepted / wall,
        "client_cpu_us_per_req": (time.process_time() - cpu0) / max(events, 1) * 1e6,
        **latency_metrics("latency", latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(load(args.url, args.events, args.concurrency))))


if __name__ == "__main__":
    main()
