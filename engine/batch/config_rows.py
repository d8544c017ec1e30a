"""The SQL of the Batch configuration tables: job_definitions, job_queues, compute_environments.
This module is the one writer of those tables (the jobs' own are engine/batch/rows.py's).

Every function takes a ``sqlite3.Connection`` and runs inside a store transaction; none awaits.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from engine.batch import hosts as hosting
from engine.batch.queues import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_QUEUE,
    NO_PREEMPTION,
    Environment,
    Preemption,
    Queue,
)
from engine.store.records import dumps


def ensure_defaults(conn: sqlite3.Connection, info: dict[str, Any]) -> None:
    """The local environment (this machine's cores and memory) and the default queue, once."""
    now = time.time()
    cpus = float(info.get("NCPU") or 1)
    memory = int(info.get("MemTotal") or 1 << 30)
    conn.execute(
        "INSERT OR IGNORE INTO compute_environments "
        "(name, endpoint, max_vcpus, max_memory, state, created_at) VALUES (?,?,?,?,?,?)",
        (DEFAULT_ENVIRONMENT, "local", cpus, memory, "ENABLED", now),
    )
    conn.execute(
        "INSERT OR IGNORE INTO job_queues (name, priority, environments, state, created_at) "
        "VALUES (?,?,?,?,?)",
        (DEFAULT_QUEUE, 1, json.dumps([DEFAULT_ENVIRONMENT]), "ENABLED", now),
    )


def load_config(conn: sqlite3.Connection) -> tuple[dict[str, Environment], dict[str, Queue], dict[str, Any]]:
    envs = {}
    for r in conn.execute("SELECT * FROM compute_environments"):
        capacity = json.loads(r["capacity"])
        envs[r["name"]] = Environment(
            r["name"],
            r["max_vcpus"],
            r["max_memory"],
            r["state"],
            r["endpoint"],
            type=r["type"],
            config=json.loads(r["config"]),
            interruptible=bool(capacity.get("interruptible", False)),
            reclaimed_at=capacity.get("reclaimed_at"),
            min_vcpus=float(capacity.get("min_vcpus", 0.0)),
            hosts=hosting.from_config(json.loads(r["config"]), capacity.get("hosts") or {}),
            scale_in_cooldown_s=capacity.get("scale_in_cooldown_s"),
        )
    queues = {}
    for r in conn.execute("SELECT * FROM job_queues"):
        config = json.loads(r["config"])
        preemption = Preemption(**config["preemption"]) if "preemption" in config else NO_PREEMPTION
        queues[r["name"]] = Queue(
            r["name"],
            r["priority"],
            tuple(json.loads(r["environments"])),
            r["state"],
            preemption,
            config.get("scheduling_policy"),
        )
    defs: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
    for r in conn.execute("SELECT * FROM job_definitions ORDER BY name, revision"):
        defs.setdefault(r["name"], {})[r["revision"]] = (r["status"], json.loads(r["body"]))
    return envs, queues, defs


def insert_definition(
    conn: sqlite3.Connection, name: str, revision: int, body: dict[str, Any], at: float
) -> None:
    conn.execute(
        "INSERT INTO job_definitions (name, revision, status, body, created_at) VALUES (?,?,?,?,?)",
        (name, revision, "ACTIVE", json.dumps(body), at),
    )


def save_environment(conn: sqlite3.Connection, env: Environment, at: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO compute_environments (name, endpoint, max_vcpus, max_memory, state, "
        "created_at, type, config, capacity) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            env.name,
            env.endpoint,
            env.max_vcpus,
            env.max_memory,
            env.state,
            at,
            env.type,
            dumps(env.config),
            dumps(env.capacity()),
        ),
    )


def save_capacity(conn: sqlite3.Connection, name: str, capacity: dict[str, Any]) -> None:
    """An environment's scaling state only (which hosts are in service), as the scaler changes it."""
    conn.execute("UPDATE compute_environments SET capacity=? WHERE name=?", (dumps(capacity), name))


def save_queue(conn: sqlite3.Connection, queue: Queue, at: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO job_queues (name, priority, environments, state, created_at, config) "
        "VALUES (?,?,?,?,?,?)",
        (
            queue.name,
            queue.priority,
            json.dumps(list(queue.environments)),
            queue.state,
            at,
            dumps(queue.config()),
        ),
    )


def set_definition_status(conn: sqlite3.Connection, name: str, revision: int, status: str) -> None:
    conn.execute("UPDATE job_definitions SET status=? WHERE name=? AND revision=?", (status, name, revision))


def delete_environment(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM compute_environments WHERE name=?", (name,))


def delete_queue(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM job_queues WHERE name=?", (name,))
