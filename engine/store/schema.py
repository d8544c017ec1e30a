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
    # 3: batch jobs
    """
    CREATE TABLE job_definitions (
        name        TEXT NOT NULL,
        revision    INTEGER NOT NULL,
        status      TEXT NOT NULL DEFAULT 'ACTIVE',
        body        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (name, revision)
    ) WITHOUT ROWID;

    CREATE TABLE compute_environments (
        name        TEXT PRIMARY KEY,
        endpoint    TEXT NOT NULL,
        max_vcpus   REAL NOT NULL,
        max_memory  INTEGER NOT NULL,
        state       TEXT NOT NULL,
        created_at  REAL NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE job_queues (
        name          TEXT PRIMARY KEY,
        priority      INTEGER NOT NULL,
        environments  TEXT NOT NULL,
        state         TEXT NOT NULL,
        created_at    REAL NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE jobs (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        id             TEXT NOT NULL UNIQUE,
        name           TEXT NOT NULL,
        queue          TEXT NOT NULL,
        status         TEXT NOT NULL,
        status_reason  TEXT,
        spec           TEXT NOT NULL,
        parent_id      TEXT,
        array_size     INTEGER,
        array_index    INTEGER,
        attempts       INTEGER NOT NULL DEFAULT 0,
        environment    TEXT,
        exit_code      INTEGER,
        run_id         TEXT,
        step           TEXT,
        created_at     REAL NOT NULL,
        runnable_at    REAL,
        started_at     REAL,
        stopped_at     REAL,
        updated_at     REAL NOT NULL
    );
    CREATE INDEX jobs_status ON jobs (status, queue);
    CREATE INDEX jobs_parent ON jobs (parent_id, array_index);

    CREATE TABLE job_dependencies (
        job_id  TEXT NOT NULL,
        dep_id  TEXT NOT NULL,
        mode    TEXT NOT NULL,
        PRIMARY KEY (job_id, dep_id)
    ) WITHOUT ROWID;
    CREATE INDEX job_dependencies_dep ON job_dependencies (dep_id);

    CREATE TABLE job_attempts (
        job_id        TEXT NOT NULL,
        attempt       INTEGER NOT NULL,
        environment   TEXT,
        container_id  TEXT,
        exit_code     INTEGER,
        reason        TEXT,
        started_at    REAL,
        stopped_at    REAL,
        log_path      TEXT NOT NULL,
        PRIMARY KEY (job_id, attempt)
    ) WITHOUT ROWID;
    """,
    # 4: history pages in creation order (rowid) from the indexes themselves: an index on
    # (workflow) holds (workflow, rowid), so a filtered page walks it backwards and stops at 50
    """
    DROP INDEX runs_workflow;
    CREATE INDEX runs_workflow ON runs (workflow);
    """,
    # 5: compute environments of other types (Slurm), and the Slurm job id of each attempt
    """
    ALTER TABLE compute_environments ADD COLUMN type TEXT NOT NULL DEFAULT 'docker';
    ALTER TABLE compute_environments ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE job_attempts ADD COLUMN slurm_job_id TEXT;
    """,
    # 6: batch scheduling (issue 17): a queue's preemption and scheduling policy, an environment's
    # interruptible capacity and scaling bounds, preempted attempts (the persistent marker that a
    # restart honours), attempts a preemption gave back, fair-share scheduling policies
    """
    ALTER TABLE job_queues ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE compute_environments ADD COLUMN capacity TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE jobs ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE job_attempts ADD COLUMN preempted_by TEXT;
    CREATE INDEX job_attempts_preempted ON job_attempts (preempted_by) WHERE preempted_by IS NOT NULL;

    CREATE TABLE scheduling_policies (
        name        TEXT PRIMARY KEY,
        body        TEXT NOT NULL,
        created_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 7: a trigger's events waiting for their batch (engine/bus/batches.py); a batch's run and the
    # deletion of its rows commit together
    """
    CREATE TABLE batch_items (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow  TEXT NOT NULL,
        trigger   TEXT NOT NULL,
        event_id  TEXT NOT NULL,
        depth     INTEGER NOT NULL DEFAULT 0,
        added_at  REAL NOT NULL,
        UNIQUE (workflow, trigger, event_id)
    );
    CREATE INDEX batch_items_trigger ON batch_items (workflow, trigger, seq);
    """,
    # 8: a function attempt waiting for a worker (status WAITING): when it began to wait; its
    # started_at is when a worker took it
    """
    ALTER TABLE attempts ADD COLUMN queued_at REAL;
    """,
    # 9: the workflow version a run was created with (a hash of its file; engine/reload.py)
    """
    ALTER TABLE runs ADD COLUMN workflow_version TEXT;
    """,
    # 10: the host of its environment an attempt ran on (an environment with several Docker hosts)
    """
    ALTER TABLE job_attempts ADD COLUMN host TEXT;
    """,
]
