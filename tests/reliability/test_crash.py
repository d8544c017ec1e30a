"""Crash: ``sluice serve`` under a mixed workload, ``kill -9`` at seeded random moments, restarted.

The workload: webhooks with and without an Idempotency-Key, files written in place and renamed
in, a schedule firing every second, three-step DAGs whose steps log their side effects, container
steps that log each container start, and a signed subscriber. After every kill the store passes
SQLite's integrity check; after the last restart everything settles and the promises are checked:

- every acknowledged event (a 202, a file moved to done/, a recorded cron fire) has exactly one run;
- no step ran again after its SUCCEEDED was committed (side effects carry their time);
- every run ends; no container attempt started twice; no container and no worker outlives it;
- every notification owed was delivered at least once (the duplicate rate is reported).

``SLUICE_CRASH_SEED`` picks the seed (printed), ``SLUICE_CRASH_KILLS`` the number of kills (30).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engines import write_flow
from tests.support.serving import free_port, healthy, serve
from tests.support.waiting import wait_until_sync

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

SECRET = "crash-secret"
HANDLERS = """
import json, time
from pathlib import Path

EFFECTS = Path(__file__).with_name("effects.log")


def effect(event, context):
    with EFFECTS.open("a") as f:
        f.write(json.dumps({"run": context.run_id, "step": context.step, "at": time.time()}) + "\\n")
    time.sleep(0.05)
    return {"step": context.step}
"""

HOOKS = """
name: hooked
triggers:
  - webhook: {name: in, auth: none}
notify:
  - {url: "SUBSCRIBER", on: [SUCCEEDED, FAILED], secret: "SECRET"}
steps:
  a: {function: handlers:effect}
  b: {function: handlers:effect, needs: [a]}
  c: {function: handlers:effect, needs: [b]}
"""
FILES = """
name: dropped
triggers:
  - files: {path: drop, suffix: .dat, after: "move:done"}
steps:
  seen: {function: handlers:effect}
"""
TICK = """
name: ticking
triggers:
  - schedule: rate(1 second)
    catchup: all
steps:
  tick: {function: handlers:effect}
"""
BOX = """
name: boxed
triggers:
  - webhook: {name: box, auth: none}
steps:
  box:
    container:
      image: busybox:1.36
      command: [sh, -c, 'echo "$AWS_BATCH_JOB_ID $AWS_BATCH_JOB_ATTEMPT" >> /out/starts; sleep 0.3']
      memory: 32MiB
      vcpus: 0.25
      network: none
      volumes: ["BOXDIR:/out"]
"""


class Receiver(http.server.ThreadingHTTPServer):
    """The signed subscriber: records every verified delivery's event id."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.got: list[str] = []
        self.forged = 0


class _Hook(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        parts = dict(p.split("=", 1) for p in self.headers.get("Sluice-Signature", "").split(","))
        expected = hmac.new(SECRET.encode(), f"{parts.get('t')}.".encode() + body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, parts.get("v1", "")):
            self.server.got.append(self.headers["Sluice-Event-Id"])
        else:
            self.server.forged += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


class Load:
    """Webhooks and files from threads, recording what was acknowledged."""

    def __init__(self, base: str, folder: Path, rng: random.Random) -> None:
        self.base, self.folder, self.rng = base, folder, rng
        self.acked: dict[str, str] = {}  #: event id -> how (webhook, keyed webhook, box)
        self.keys: dict[str, str] = {}  #: idempotency key -> event id
        self.files: list[str] = []
        self.conflicts: list[tuple[str, str, str]] = []  #: a key answered with two event ids
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._hooks, daemon=True),
                        threading.Thread(target=self._files, daemon=True)]  # fmt: skip

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _post(self, path: str, key: str | None) -> str | None:
        req = urllib.request.Request(self.base + path, data=b'{"x": 1}', method="POST")
        req.add_header("Content-Type", "application/json")
        if key is not None:
            req.add_header("Idempotency-Key", key)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 202:
                    return str(json.loads(resp.read())["event_id"])
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return None

    def _hooks(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            kind = self.rng.random()
            if kind < 0.1:
                event = self._post("/hooks/boxed/box", None)
                how = "box"
            elif kind < 0.5:
                key = f"k-{n % 40}"  # keys repeat: a retried request must not start a second run
                event = self._post("/hooks/hooked/in", key)
                if event is not None and self.keys.setdefault(key, event) != event:
                    self.conflicts.append((key, self.keys[key], event))
                how = "keyed"
            else:
                event = self._post("/hooks/hooked/in", None)
                how = "plain"
            if event is not None:
                self.acked[event] = how
            time.sleep(0.03)

    def _files(self) -> None:
        n = 0
        outside = self.folder.parent / "staging"
        outside.mkdir(exist_ok=True)
        while not self.stop.is_set():
            n += 1
            name = f"f{n:05d}.dat"
            if n % 2:
                (self.folder / name).write_bytes(os.urandom(64))
            else:  # renamed in, as an atomic upload does
                tmp = outside / name
                tmp.write_bytes(os.urandom(64))
                os.rename(tmp, self.folder / name)
            self.files.append(name)
            time.sleep(0.1)


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def query(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def leftover_processes(cwd: Path) -> list[str]:
    """Processes still running in the engine's folder (workers, the fork server): none at the end."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(entry / "cwd")) == cwd:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_kill_9_at_random_moments_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("SLUICE_CRASH_SEED") or random.SystemRandom().randrange(1 << 30))
    kills = int(os.environ.get("SLUICE_CRASH_KILLS") or 30)
    print(f"crash harness: seed {seed}, {kills} kills (SLUICE_CRASH_SEED={seed} reproduces the timing)")
    rng = random.Random(seed)
    flows, box = tmp_path / "flows", tmp_path / "box"
    box.mkdir()
    (flows / "drop").mkdir(parents=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / ".sluice" / "sluice.db"
    with receiver() as rec:
        hooks = HOOKS.replace("SUBSCRIBER", f"http://127.0.0.1:{rec.server_address[1]}/hook")
        write_flow(flows, hooks.replace("SECRET", SECRET), HANDLERS, name="hooked.yaml")
        write_flow(flows, FILES, name="dropped.yaml")
        write_flow(flows, TICK, name="ticking.yaml")
        write_flow(flows, BOX.replace("BOXDIR", str(box)), name="boxed.yaml")
        proc = serve(tmp_path, port, grace_s=2, env={"SLUICE_VOLUME_ALLOW": str(box)})
        try:
            wait_until_sync(lambda: healthy(base), 30, what="the first start")
            with Load(base, flows / "drop", random.Random(seed + 1)) as load:
                for k in range(kills):
                    time.sleep(rng.uniform(0.2, 1.5))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    ok = query(db, "PRAGMA integrity_check")
                    assert ok == [("ok",)], f"kill {k}: {ok}"
                    proc = serve(tmp_path, port, grace_s=2, env={"SLUICE_VOLUME_ALLOW": str(box)})
                    wait_until_sync(lambda: healthy(base), 30, what=f"restart {k}")
            settle(db)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        check(db, load, flows, box, rec)
        wait_until_sync(lambda: not leftover_processes(tmp_path), 15, what="workers to be gone")
    cleanup_containers(db)


def settle(db: Path) -> None:
    """Every run ends (the load has stopped; the schedule keeps ticking, so 'all older ones')."""
    cutoff = time.time()

    def done() -> bool:
        rows = query(db, "SELECT COUNT(*) FROM runs WHERE status IN ('PENDING','RUNNING') AND created_at < ?",
                     (cutoff,))  # fmt: skip
        return rows[0][0] == 0

    wait_until_sync(done, 180, what="every run to end")
    wait_until_sync(lambda: not query(db, "SELECT 1 FROM outbox WHERE status='pending' LIMIT 1"), 120,
                    what="every notification owed to be sent")  # fmt: skip


def check(db: Path, load: Load, flows: Path, box: Path, rec: Receiver) -> None:
    assert load.conflicts == [], f"an idempotency key got two events: {load.conflicts[:3]}"
    runs = query(db, "SELECT id, event_id, workflow, status, ended_at FROM runs")
    by_event = Counter(event for _, event, _, _, _ in runs)
    assert load.acked, "no webhook was acknowledged"
    for event, how in load.acked.items():
        assert by_event[event] == 1, f"acknowledged {how} event {event} has {by_event[event]} runs"
    for key, event in load.keys.items():
        assert by_event[event] == 1, f"idempotency key {key}: {by_event[event]} runs"
    done = flows / "drop" / "done"
    moved = {p.name for p in done.iterdir()} if done.exists() else set()
    file_runs = query(
        db, "SELECT e.body FROM runs r JOIN events e ON e.id = r.event_id WHERE r.workflow='dropped'"
    )
    keys = Counter(json.loads(b)["detail"]["Records"][0]["s3"]["object"]["key"].rsplit("/", 1)[-1]
                   for (b,) in file_runs)  # fmt: skip
    for name in moved:
        assert keys[name] == 1, f"file {name} was moved (acknowledged) but has {keys[name]} runs"
    fires = query(db, "SELECT e.time, COUNT(*) FROM runs r JOIN events e ON e.id = r.event_id "
                  "WHERE r.workflow='ticking' GROUP BY e.time HAVING COUNT(*) > 1")  # fmt: skip
    assert fires == [], f"cron fires with more than one run: {fires[:5]}"
    not_ended = [r for r in runs if r[3] in ("PENDING", "RUNNING") and r[2] != "ticking"]
    assert not_ended == [], f"runs that never ended: {not_ended[:5]}"
    ended = {(run, step): at for run, step, at in query(
        db, "SELECT run_id, step, ended_at FROM steps WHERE status='SUCCEEDED' AND idx=-1")}  # fmt: skip
    effects = [json.loads(line) for line in (flows / "effects.log").read_text().splitlines() if line]
    again = [e for e in effects if (e["run"], e["step"]) in ended and e["at"] > ended[(e["run"], e["step"])]]
    assert again == [], f"steps ran again after their SUCCEEDED was committed: {again[:5]}"
    starts = Counter((box / "starts").read_text().split("\n")) if (box / "starts").exists() else Counter()
    starts.pop("", None)
    twice = [line for line, n in starts.items() if n > 1]
    assert twice == [], f"container attempts started twice: {twice[:5]}"
    owed = {event for (event,) in query(db, "SELECT DISTINCT event_id FROM dead_letters")}
    succeeded = query(
        db,
        "SELECT e.id FROM events e WHERE e.source='sluice.run' AND "
        "json_extract(e.body, '$.detail.workflow')='hooked' AND "
        "json_extract(e.body, '$.detail.status') IN ('SUCCEEDED','FAILED')",
    )
    missing = [event for (event,) in succeeded if event not in set(rec.got) and event not in owed]
    assert missing == [], f"{len(missing)} notifications owed were never delivered"
    assert rec.forged == 0
    dupes = len(rec.got) - len(set(rec.got))
    print(f"crash harness: {len(load.acked)} webhooks acked, {len(moved)} files, {len(runs)} runs, "
          f"{len(rec.got)} deliveries ({dupes} duplicates, {dupes / max(1, len(rec.got)):.1%})")  # fmt: skip


def cleanup_containers(db: Path) -> None:
    ids = [j for (j,) in query(db, "SELECT id FROM jobs")]
    fmt = '{{.ID}} {{.Label "sluice.job-id"}}'
    cmd = ["docker", "ps", "-a", "--filter", "label=sluice.managed=true", "--format", fmt]
    out = subprocess.run(cmd, capture_output=True, text=True)
    left = [line.split()[0] for line in out.stdout.splitlines() if line.split()[-1] in ids]
    for cid in left:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    assert left == [], f"containers left behind: {left}"
