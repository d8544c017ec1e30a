"""The store's schema as an append-only list of migrations (``PRAGMA user_version``).

Never edit a migration that has shipped; append a new one. Times are Unix epoch
seconds (REAL); JSON documents are TEXT.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: events, runs, steps, attempts, trigger state, audit
    """
    CREATE TABLE events (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        source       TEXT NOT NULL,
        detail_type  TEXT NOT NULL,
        time         TEXT NOT NULL,
        received_at  REAL NOT NULL,
        dedupe_key   TEXT UNIQUE,
        replay_name  TEXT,
        origin_id    TEXT,
        body         TEXT NOT NULL
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE INDEX events_source ON events (source, received_at);

    CREATE TABLE runs (
        id             TEXT PRIMARY KEY,
        workflow       TEXT NOT NULL,
        event_id       TEXT NOT NULL,
        origin_id      TEXT NOT NULL,
        trigger        TEXT,
        status         TEXT NOT NULL,
        params         TEXT NOT NULL,
        outputs        TEXT,
        error          TEXT,
        reason         TEXT,
        depth          INTEGER NOT NULL DEFAULT 0,
        created_at     REAL NOT NULL,
        started_at     REAL,
        ended_at       REAL,
        UNIQUE (event_id, workflow)
    );
    CREATE INDEX runs_status ON runs (status);
    CREATE INDEX runs_workflow ON runs (workflow, created_at);
    CREATE INDEX runs_origin ON runs (origin_id, workflow);

    CREATE TABLE steps (
        run_id      TEXT NOT NULL REFERENCES runs (id),
        step        TEXT NOT NULL,
        idx         INTEGER NOT NULL DEFAULT -1,
        status      TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        interrupted INTEGER NOT NULL DEFAULT 0,
        items       INTEGER,
        output      TEXT,
        error       TEXT,
        reason      TEXT,
        started_at  REAL,
        ended_at    REAL,
        wake_at     REAL,
        job_id      TEXT,
        PRIMARY KEY (run_id, step, idx)
    ) WITHOUT ROWID;

    CREATE TABLE attempts (
        run_id      TEXT NOT NULL,
        step        TEXT NOT NULL,
        idx         INTEGER NOT NULL DEFAULT -1,
        attempt     INTEGER NOT NULL,
        status      TEXT NOT NULL,
        started_at  REAL NOT NULL,
        ended_at    REAL,
        error       TEXT,
        log_path    TEXT,
        PRIMARY KEY (run_id, step, idx, attempt)
    ) WITHOUT ROWID;

    CREATE TABLE kv (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL,
        updated_at  REAL NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE audit (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        at       REAL NOT NULL,
        kind     TEXT NOT NULL,
        subject  TEXT NOT NULL,
        detail   TEXT NOT NULL
    );
    CREATE INDEX audit_kind ON audit (kind, at);
    """,
    # 2: notifications outbox, dead letters
    """
    CREATE TABLE outbox (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        subscriber    TEXT NOT NULL,
        url           TEXT NOT NULL,
        event_id      TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at    REAL NOT NULL,
        next_at       REAL NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        status        TEXT NOT NULL DEFAULT 'pending',
        delivered_at  REAL,
        last_status   INTEGER,
        last_error    TEXT
    );
    CREATE INDEX outbox_due ON outbox (subscriber, status, seq);
    CREATE INDEX outbox_delivered ON outbox (status, delivered_at);

    CREATE TABLE dead_letters (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        subscriber   TEXT NOT NULL,
        url          TEXT NOT NULL,
        event_id     TEXT NOT NULL,
        body         TEXT NOT NULL,
        created_at   REAL NOT NULL,
        failed_at    REAL NOT NULL,
        attempts     INTEGER NOT NULL,
        last_status  INTEGER,
        last_error   TEXT
    );
    """,
]
