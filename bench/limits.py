"""The machine's limits, measured in the same run as everything else.

Sluice's targets are stated as ratios to these figures (issue 6), so a slow or busy machine moves
both sides together. Each one is the cheapest possible version of something Sluice does: accept an
HTTP request, commit a row, hand work to a warm process, notice a closed file, start a container.

Run as ``python -m bench.limits serve|load ...`` it is also the server and the client process of the
HTTP limit: they must be separate processes so the server has a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .core import REPO_DIR, Context, Skip, Workload, latency_metrics, register, tail

DOCKER_SOCK = "/var/run/docker.sock"


# --------------------------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int, db: str | None) -> None:
    """A trivial POST handler; with ``db`` it commits one row per request before answering."""
    from aiohttp import web

    conn: sqlite3.Connection | None = None
    if db:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB)")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if conn is not None:
            # One committed transaction per request: the naive-but-durable webhook intake.
            conn.execute("BEGIN")
            conn.execute("INSERT INTO events (body) VALUES (?)", (body,))
            conn.execute("COMMIT")
        return web.json_response({"ok": True}, status=202)

    app = web.Application()
    app.router.add_post("/hook", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


async def _load(url: str, concurrency: int, duration_s: float, warmup_s: float) -> dict[str, float]:
    """``concurrency`` clients POSTing back to back; counts only requests finished after the warm-up."""
    import aiohttp

    body = json.dumps({"source": "bench", "detail": {"n": 1}}).encode()
    latencies: list[float] = []
    deadline_warm = time.perf_counter() + warmup_s
    deadline = deadline_warm + duration_s
    errors = total = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors, total
        while (now := time.perf_counter()) < deadline:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                total += 1
                if resp.status != 202:
                    errors += 1
            if now >= deadline_warm:
                latencies.append(time.perf_counter() - now)

    connector = aiohttp.TCPConnector(limit=concurrency)
    cpu0 = time.process_time()  # the load alone, not the interpreter's start and imports
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    cpu = time.process_time() - cpu0
    return {
        "req_per_s": len(latencies) / duration_s,
        "errors": errors,
        "total_requests": total,
        "client_cpu_us_per_req": cpu / max(total, 1) * 1e6,
        **latency_metrics("latency", latencies),
    }


def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise Skip(f"HTTP server did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _http_limit(ctx: Context, *, commit: bool) -> dict[str, float]:
    """req/s as the client sees it, plus each side's CPU per request.

    On 2 cores the single client process saturates its core before the server does (measured: client
    ~100 % of a core, server ~60 %), so req/s is client-bound; ``server_cpu_us_per_req`` is the
    server's real cost per request and the figure to compare handlers by.
    """
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    serve = [sys.executable, "-m", "bench.limits", "serve", "--port", str(port)]
    if commit:
        serve += ["--db", str(ctx.tmp / f"http-{ctx.rep}.db")]
    server = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_port(port)
        duration = 1.5 if ctx.quick else 3.0
        load = [sys.executable, "-m", "bench.limits", "load", "--url", f"http://127.0.0.1:{port}/hook"]
        load += ["--concurrency", "16", "--duration", str(duration), "--warmup", "0.5"]
        cpu0 = _cpu_s(server.pid)
        done = subprocess.run(load, env=env, capture_output=True, text=True, timeout=60)
        server_cpu = _cpu_s(server.pid) - cpu0
        if done.returncode != 0:
            raise RuntimeError(f"load client failed: {tail(done.stderr)}")
        out = dict(json.loads(done.stdout.strip().splitlines()[-1]))
        out["server_cpu_us_per_req"] = server_cpu / max(out.pop("total_requests"), 1) * 1e6
        return out
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def http_plain(ctx: Context) -> dict[str, float]:
    """Trivial aiohttp POST handler, 16 concurrent clients in another process."""
    return _http_limit(ctx, commit=False)


def http_commit(ctx: Context) -> dict[str, float]:
    """The same handler committing one SQLite row (WAL, synchronous=NORMAL) before answering."""
    return _http_limit(ctx, commit=True)


# ------------------------------------------------------------------------------------------- SQLite


def _wal(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, run TEXT, state TEXT, body TEXT)")
    return conn


def sqlite_commits(ctx: Context) -> dict[str, float]:
    """Single-row transactions (the naive store) vs. 1,000-row transactions (group commit)."""
    n_single = 2_000 if ctx.quick else 10_000
    n_group, batch = (50_000, 1_000) if ctx.quick else (200_000, 1_000)
    conn = _wal(ctx.tmp / f"sqlite-{ctx.rep}.db")
    row = ("run-0001", "RUNNING", '{"step": "inc", "attempt": 1}')
    start = time.perf_counter()
    for _ in range(n_single):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (run, state, body) VALUES (?, ?, ?)", row)
        conn.execute("COMMIT")
    single = time.perf_counter() - start
    rows = [row] * batch
    start = time.perf_counter()
    for _ in range(n_group // batch):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (run, state, body) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
    group = time.perf_counter() - start
    conn.close()
    return {
        "single_commits_per_s": n_single / single,
        "single_commit_us": single / n_single * 1e6,
        "group_rows_per_s": n_group / group,
    }


# --------------------------------------------------------------------------------------- processes


def _noop(x: int) -> int:
    return x


def process_pool(ctx: Context) -> dict[str, float]:
    """Round trip to an already started ``ProcessPoolExecutor`` worker: the floor for a function step."""
    n = 500 if ctx.quick else 2_000
    with ProcessPoolExecutor(max_workers=1) as pool:
        for i in range(50):  # warm: worker started, function pickled path exercised
            pool.submit(_noop, i).result()
        samples = []
        for i in range(n):
            start = time.perf_counter()
            pool.submit(_noop, i).result()
            samples.append(time.perf_counter() - start)
    return latency_metrics("round_trip", samples)


def interpreter_start(ctx: Context) -> dict[str, float]:
    """A fresh ``python -c pass``: what a step would pay per call without warm workers (and W0's floor)."""
    samples = []
    for _ in range(5 if ctx.quick else 15):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - start)
    return latency_metrics("python_c", samples)


def asyncio_queue(ctx: Context) -> dict[str, float]:
    """asyncio.Queue put → consumer: shows that in-memory routing is never the bottleneck."""
    n = 50_000 if ctx.quick else 200_000

    async def main() -> float:
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        got = 0

        async def consumer() -> None:
            nonlocal got
            while await queue.get() is not None:
                got += 1

        task = asyncio.create_task(consumer())
        start = time.perf_counter()
        for i in range(n):
            queue.put_nowait(i)
            if i % 256 == 0:
                await asyncio.sleep(0)
        queue.put_nowait(None)
        await task
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    return {"msgs_per_s": n / elapsed, "per_msg_us": elapsed / n * 1e6}


# ---------------------------------------------------------------------------------------- watchdog


def watchdog_latency(ctx: Context) -> dict[str, float]:
    """File created / closed-after-write → callback on the asyncio loop (via call_soon_threadsafe)."""
    try:
        from watchdog.events import FileClosedEvent, FileCreatedEvent, FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError as exc:  # pragma: no cover - watchdog is a project dependency
        raise Skip(f"watchdog not importable: {exc}") from exc
    n = 200
    folder = ctx.tmp / f"watch-{ctx.rep}"
    folder.mkdir()

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        created: dict[str, float] = {}
        closed: dict[str, float] = {}
        waiters: dict[str, asyncio.Future[None]] = {}

        def on_loop(kind: str, path: str) -> None:
            (created if kind == "created" else closed).setdefault(path, time.perf_counter())
            fut = waiters.get(path)
            if kind == "closed" and fut is not None and not fut.done():
                fut.set_result(None)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                if isinstance(event, FileCreatedEvent):
                    loop.call_soon_threadsafe(on_loop, "created", str(event.src_path))
                elif isinstance(event, FileClosedEvent):
                    loop.call_soon_threadsafe(on_loop, "closed", str(event.src_path))

        observer = Observer()
        observer.schedule(Handler(), str(folder), recursive=False)
        observer.start()
        await asyncio.sleep(0.2)
        c_lat, w_lat, missed = [], [], 0
        try:
            for i in range(n):
                path = str(folder / f"f{i:04d}.bin")
                waiters[path] = loop.create_future()
                t_open = time.perf_counter()
                # Blocking on purpose: the write is the event under test and takes microseconds.
                with open(path, "wb") as fh:  # noqa: ASYNC230
                    fh.write(b"x" * 1024)
                t_close = time.perf_counter()
                try:
                    await asyncio.wait_for(waiters[path], 2.0)
                except TimeoutError:
                    missed += 1
                    continue
                w_lat.append(closed[path] - t_close)
                if path in created:
                    c_lat.append(created[path] - t_open)
        finally:
            observer.stop()
            await asyncio.to_thread(observer.join, 5)
        if not w_lat:
            raise Skip("watchdog delivered no close-write events (not inotify?)")
        out = {**latency_metrics("closed", w_lat), "missed": float(missed)}
        if c_lat:
            out.update(latency_metrics("created", c_lat))
        return out

    return asyncio.run(main())


# ------------------------------------------------------------------------------------------ Docker


async def _docker_cycle(session: object, image: str) -> dict[str, float]:
    """create → start → wait → remove of one ``true`` container; returns each phase's seconds."""
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    base = "http://docker/v1.41"
    t0 = time.perf_counter()
    async with session.post(f"{base}/containers/create", json={"Image": image, "Cmd": ["true"]}) as r:
        if r.status != 201:
            raise RuntimeError(f"create: HTTP {r.status} {await r.text()}")
        cid = (await r.json())["Id"]
    t1 = time.perf_counter()
    async with session.post(f"{base}/containers/{cid}/start") as r:
        if r.status not in (204, 304):
            raise RuntimeError(f"start: HTTP {r.status} {await r.text()}")
    t2 = time.perf_counter()
    async with session.post(f"{base}/containers/{cid}/wait") as r:
        await r.read()
    t3 = time.perf_counter()
    async with session.delete(f"{base}/containers/{cid}?force=true") as r:
        await r.read()
    t4 = time.perf_counter()
    return {"total": t4 - t0, "create": t1 - t0, "start": t2 - t1, "wait": t3 - t2, "remove": t4 - t3}


async def _busybox_tag(session: object) -> str:
    """Any local busybox tag: the machines cannot pull from a registry, so use what is there."""
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    filters = json.dumps({"reference": ["busybox"]})
    async with session.get("http://docker/images/json", params={"filters": filters}) as r:
        images = await r.json() if r.status == 200 else []
    tags = sorted(t for img in images for t in (img.get("RepoTags") or []) if t.startswith("busybox:"))
    if not tags:
        raise Skip("no busybox image present locally (no registry access to pull one)")
    return "busybox:latest" if "busybox:latest" in tags else tags[0]


async def _docker_main(ctx: Context) -> dict[str, float]:
    import aiohttp

    connector = aiohttp.UnixConnector(path=DOCKER_SOCK)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            async with session.get("http://docker/_ping", timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status != 200:
                    raise Skip(f"Docker at {DOCKER_SOCK} answered /_ping with HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Skip(f"Docker not answering at {DOCKER_SOCK}: {exc!r}") from exc
        image = await _busybox_tag(session)
        ctx.note(f"image {image}; concurrency run: create+start+wait+remove cycles through a semaphore")
        await _docker_cycle(session, image)  # warm: first create after a while is slower
        cycles = [await _docker_cycle(session, image) for _ in range(3 if ctx.quick else 8)]
        out: dict[str, float] = {}
        for phase in ("total", "create", "start", "wait", "remove"):
            out.update(latency_metrics(phase, [c[phase] for c in cycles]))
        n_conc, conc = (8, 4) if ctx.quick else (24, 8)
        sem = asyncio.Semaphore(conc)

        async def one() -> None:
            async with sem:
                await _docker_cycle(session, image)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n_conc)))
        out[f"containers_per_s_at_{conc}"] = n_conc / (time.perf_counter() - start)
        return out


def docker_bare(ctx: Context) -> dict[str, float]:
    """Bare Docker API over the unix socket: the figure Sluice's container overhead is divided by."""
    if not os.path.exists(DOCKER_SOCK):
        raise Skip(f"{DOCKER_SOCK} does not exist (no Docker engine on this machine)")
    return asyncio.run(_docker_main(ctx))


# ------------------------------------------------------------------------------------------ registry

_MS = "ms"
_HTTP_UNITS = {
    "req_per_s": "req/s",
    "latency_p50_ms": _MS,
    "latency_p99_ms": _MS,
    "errors": "n",
    "server_cpu_us_per_req": "µs CPU",
    "client_cpu_us_per_req": "µs CPU",
}
register(
    Workload(
        "limit.http_plain",
        "limits",
        http_plain,
        "aiohttp trivial POST handler, 127.0.0.1, 16 clients (separate process)",
        units=_HTTP_UNITS,
        quick_reps=1,
    )
)
register(
    Workload(
        "limit.http_commit",
        "limits",
        http_commit,
        "same handler, one SQLite WAL commit per request first",
        units=_HTTP_UNITS,
        quick_reps=1,
    )
)
register(
    Workload(
        "limit.sqlite",
        "limits",
        sqlite_commits,
        "plain sqlite3, WAL, synchronous=NORMAL: single-row commits and 1,000-row group commits",
        units={"single_commits_per_s": "commits/s", "single_commit_us": "µs", "group_rows_per_s": "rows/s"},
    )
)
register(
    Workload(
        "limit.process_pool",
        "limits",
        process_pool,
        "warm ProcessPoolExecutor(1) round trip of a no-op",
        units={"round_trip_p50_ms": _MS, "round_trip_p99_ms": _MS},
    )
)
register(
    Workload(
        "limit.python_start",
        "limits",
        interpreter_start,
        "fresh `python -c pass` (the per-call cost warm workers avoid)",
        units={"python_c_p50_ms": _MS, "python_c_p99_ms": _MS},
        quick_reps=1,
    )
)
register(
    Workload(
        "limit.asyncio_queue",
        "limits",
        asyncio_queue,
        "asyncio.Queue put → consumer",
        units={"msgs_per_s": "msg/s", "per_msg_us": "µs"},
    )
)
register(
    Workload(
        "limit.watchdog",
        "limits",
        watchdog_latency,
        "watchdog (inotify) created / closed-after-write → asyncio callback, 200 files",
        units={
            "closed_p50_ms": _MS,
            "closed_p99_ms": _MS,
            "created_p50_ms": _MS,
            "created_p99_ms": _MS,
            "missed": "n",
        },
        quick_reps=1,
    )
)
register(
    Workload(
        "limit.docker",
        "limits",
        docker_bare,
        "bare Docker API create+start+wait+remove of busybox `true` (aiohttp, unix socket)",
        units={"containers_per_s_at_8": "ctr/s", "containers_per_s_at_4": "ctr/s"},
        quick_reps=1,
        timeout_s=240,
    )
)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--port", type=int, required=True)
    p_serve.add_argument("--db")
    p_load = sub.add_parser("load")
    p_load.add_argument("--url", required=True)
    p_load.add_argument("--concurrency", type=int, default=16)
    p_load.add_argument("--duration", type=float, default=3.0)
    p_load.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        _serve(args.port, args.db)
    else:
        result: Mapping[str, float] = asyncio.run(
            _load(args.url, args.concurrency, args.duration, args.warmup)
        )
        print(json.dumps(result))


if __name__ == "__main__":
    _main()
