//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] takes the schema from version `i` to `i + 1`; they run in order, each in
//! its own transaction. A database whose version is newer than this build knows is refused: an older
//! binary must never write a layout it does not understand.

use rusqlite::Connection;

use errand_core::{Error, Result};

use crate::conn::backend;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: jobs and queues.
    r#"
    CREATE TABLE queues (
        name   TEXT PRIMARY KEY,
        config TEXT,                      -- JSON QueueConfig; NULL: the defaults
        paused INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE jobs (
        id               TEXT PRIMARY KEY, -- ULID: time-sortable, the FIFO tie-breaker and the cursor
        queue            TEXT NOT NULL,
        kind             TEXT NOT NULL,
        payload          TEXT NOT NULL,
        state            TEXT NOT NULL,
        priority         INTEGER NOT NULL,
        run_at           INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL,
        backoff          TEXT NOT NULL,
        timeout_ms       INTEGER NOT NULL,
        heartbeat_ms     INTEGER,
        lease_ms         INTEGER NOT NULL,
        max_stalled      INTEGER NOT NULL,
        stalls           INTEGER NOT NULL DEFAULT 0,
        unique_key       TEXT,
        group_key        TEXT,
        idempotency_key  TEXT NOT NULL,
        progress         TEXT,
        result           TEXT,
        errors           TEXT,             -- JSON array of ErrorRecord; NULL: none
        dead_reason      TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        lease_token      TEXT,             -- kept after the job leaves active (duplicate-ack detection)
        worker_id        TEXT,
        lease_expires_at INTEGER,          -- set only while active
        deadline_at      INTEGER,          -- set only while active
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER
    );
    -- Claiming: the best due job of a queue is the first entry.
    CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, id) WHERE state = 'waiting';
    -- Promotion of due delayed jobs, per queue (claims promote the queues they claim from).
    CREATE INDEX jobs_delayed ON jobs (queue, run_at) WHERE state = 'delayed';
    -- Listing and counting by state; also how the reaper finds the (few) active jobs.
    CREATE INDEX jobs_by_state ON jobs (queue, state, id);
    -- Unique keys.
    CREATE INDEX jobs_unique ON jobs (queue, unique_key) WHERE unique_key IS NOT NULL;
    "#,
    // 2: cron schedules.
    r#"
    CREATE TABLE schedules (
        name        TEXT PRIMARY KEY,
        def         TEXT NOT NULL,        -- JSON ScheduleDef
        paused      INTEGER NOT NULL DEFAULT 0,
        next_run_at INTEGER,              -- the tick it waits for; NULL: never fires again
        last_run_at INTEGER,
        last_job_id TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
    "#,
    // 3: job log lines, deleted with their job.
    r#"
    CREATE TABLE job_logs (
        id      INTEGER PRIMARY KEY,
        job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at      INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        line    TEXT NOT NULL
    );
    CREATE INDEX job_logs_by_job ON job_logs (job_id, id);
    "#,
    // 4: flow control — concurrency keys, fairness between groups, rate-limit buckets.
    r#"
    ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
    ALTER TABLE queues ADD COLUMN fair_cursor TEXT; -- the group the last flow-controlled claim served
    -- The plain claim reads jobs without a group; grouped ones are read group by group.
    DROP INDEX jobs_ready;
    CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, id)
        WHERE state = 'waiting' AND group_key IS NULL;
    CREATE INDEX jobs_ready_grouped ON jobs (queue, group_key, priority, run_at, id)
        WHERE state = 'waiting' AND group_key IS NOT NULL;
    CREATE INDEX jobs_waiting_keyed ON jobs (queue)
        WHERE state = 'waiting' AND concurrency_key IS NOT NULL;
    -- Counting active jobs per group and per concurrency key; jobs without keys cost nothing here.
    CREATE INDEX jobs_active_group ON jobs (queue, group_key)
        WHERE state = 'active' AND group_key IS NOT NULL;
    CREATE INDEX jobs_active_key ON jobs (queue, concurrency_key)
        WHERE state = 'active' AND concurrency_key IS NOT NULL;
    CREATE TABLE buckets (
        queue  TEXT NOT NULL,
        scope  TEXT NOT NULL,            -- 'queue' or 'group'
        key    TEXT NOT NULL,            -- the group key; '' for the queue's bucket
        tokens REAL NOT NULL,
        at     INTEGER NOT NULL,         -- when `tokens` was right
        PRIMARY KEY (queue, scope, key)
    );
    "#,
    // 5: flows — a parent waits in 'waiting_children' for its children.
    r#"
    ALTER TABLE jobs ADD COLUMN parent_id TEXT;
    ALTER TABLE jobs ADD COLUMN parent_on_dead TEXT;       -- 'fail' or 'release'; NULL without a parent
    ALTER TABLE jobs ADD COLUMN pending_children INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN parent_counted INTEGER NOT NULL DEFAULT 0; -- released its parent once
    CREATE INDEX jobs_by_parent ON jobs (parent_id, id) WHERE parent_id IS NOT NULL;
    "#,
    // 6: the audit log of operators' actions (append-only: nothing updates a row; the maintenance
    // pass removes the oldest past the log's retention).
    r#"
    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at     INTEGER NOT NULL,
        key    TEXT NOT NULL,             -- the API key's name
        action TEXT NOT NULL,             -- e.g. 'job.retry', 'queue.pause'
        target TEXT NOT NULL,             -- a job id, a queue, a schedule
        detail TEXT                       -- JSON
    );
    "#,
    // 7: the ledger of unique keys that outlive their jobs: retention moves a completed job's key here
    // while the queue's unique window still holds it (`errand_core::store::JobPrune`); and the cap of a
    // heartbeating worker's leases.
    r#"
    CREATE TABLE unique_keys (
        queue       TEXT NOT NULL,
        unique_key  TEXT NOT NULL,
        job_id      TEXT NOT NULL,        -- the completed job that held it (its row is gone)
        finished_at INTEGER NOT NULL,
        PRIMARY KEY (queue, unique_key)
    ) WITHOUT ROWID;
    CREATE INDEX unique_keys_finished ON unique_keys (queue, finished_at);
    -- The lease a heartbeating worker asked for (`errand_core::store::JobClaim::lease_cap_ms`), kept
    -- with the lease so that each renewal lasts as long as the claim did.
    ALTER TABLE jobs ADD COLUMN lease_cap_ms INTEGER;
    "#,
    // 8: every queue's count of jobs per state, kept by triggers in the transaction that inserts,
    // moves or deletes a job, so that reading the counts (the alerts' pass every 5 s, `/metrics`,
    // `GET /v1/queues`) costs a few rows however many finished jobs are retained. Triggers rather than
    // the store's statements: no path that changes a job can forget its count.
    r#"
    CREATE TABLE job_counts (
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n     INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID;
    INSERT INTO job_counts SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state;
    CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_counts VALUES (NEW.queue, NEW.state, 1)
            ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    END;
    CREATE TRIGGER jobs_counted_update AFTER UPDATE OF queue, state ON jobs
        WHEN OLD.queue IS NOT NEW.queue OR OLD.state IS NOT NEW.state BEGIN
        UPDATE job_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
        INSERT INTO job_counts VALUES (NEW.queue, NEW.state, 1)
            ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
    END;
    "#,
    // 9: a dead job's error fingerprint, stored when it dies (`errand_core::fingerprint`: computed by
    // the engine, so no statement here can make one), and each queue's dead jobs counted per
    // fingerprint by triggers, as `job_counts` counts states: dead-letter groups then read a few rows
    // per group however many dead jobs are retained. The dead jobs already there are fingerprinted
    // by [`fingerprint_dead_jobs`] after this runs, in its transaction, and counted by these
    // triggers as they are.
    r#"
    ALTER TABLE jobs ADD COLUMN fingerprint TEXT;
    CREATE INDEX jobs_dead_groups ON jobs (queue, fingerprint, finished_at, id)
        WHERE state = 'dead';
    CREATE TABLE dead_groups (
        queue       TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        n           INTEGER NOT NULL,
        PRIMARY KEY (queue, fingerprint)
    ) WITHOUT ROWID;
    CREATE TRIGGER jobs_dead_grouped_insert AFTER INSERT ON jobs
        WHEN NEW.state = 'dead' AND NEW.fingerprint IS NOT NULL BEGIN
        INSERT INTO dead_groups VALUES (NEW.queue, NEW.fingerprint, 1)
            ON CONFLICT (queue, fingerprint) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER jobs_dead_grouped_delete AFTER DELETE ON jobs
        WHEN OLD.state = 'dead' AND OLD.fingerprint IS NOT NULL BEGIN
        UPDATE dead_groups SET n = n - 1 WHERE queue = OLD.queue AND fingerprint = OLD.fingerprint;
        DELETE FROM dead_groups WHERE queue = OLD.queue AND fingerprint = OLD.fingerprint AND n <= 0;
    END;
    CREATE TRIGGER jobs_dead_grouped_update AFTER UPDATE OF queue, state, fingerprint ON jobs
        WHEN (OLD.state = 'dead' OR NEW.state = 'dead')
         AND (OLD.queue IS NOT NEW.queue OR OLD.state IS NOT NEW.state
              OR OLD.fingerprint IS NOT NEW.fingerprint) BEGIN
        UPDATE dead_groups SET n = n - 1
            WHERE OLD.state = 'dead' AND queue = OLD.queue AND fingerprint = OLD.fingerprint;
        DELETE FROM dead_groups
            WHERE OLD.state = 'dead' AND queue = OLD.queue AND fingerprint = OLD.fingerprint
              AND n <= 0;
        INSERT INTO dead_groups SELECT NEW.queue, NEW.fingerprint, 1
            WHERE NEW.state = 'dead' AND NEW.fingerprint IS NOT NULL
            ON CONFLICT (queue, fingerprint) DO UPDATE SET n = n + 1;
    END;
    "#,
    // 10: a job's time to live (`expire_after_ms`), and the jobs that have one and have not started,
    // by when they expire: the maintenance pass reads the passed ones from the front of this index,
    // and jobs without one (most) are not in it at all.
    r#"
    ALTER TABLE jobs ADD COLUMN expires_at INTEGER;
    CREATE INDEX jobs_expiring ON jobs (expires_at)
        WHERE expires_at IS NOT NULL AND state IN ('waiting', 'delayed');
    "#,
];

/// The migration after which the dead jobs already stored are fingerprinted (in Rust, as the engine
/// does it), in the migration's transaction.
const FINGERPRINTS_FROM: usize = 9;

/// Gives every dead job without a fingerprint the one [`errand_core::Job::error_fingerprint`] gives:
/// of its kind and its latest error's message. A page of rows at a time, by rowid, so that the rows
/// (with their stack traces) are never all in memory.
fn fingerprint_dead_jobs(tx: &Connection) -> Result<u64> {
    let mut page = tx
        .prepare(
            "SELECT rowid, kind, errors FROM jobs WHERE rowid > ?1 AND state = 'dead' \
             AND fingerprint IS NULL ORDER BY rowid LIMIT 5000",
        )
        .map_err(backend)?;
    let mut set = tx
        .prepare("UPDATE jobs SET fingerprint = ?2 WHERE rowid = ?1")
        .map_err(backend)?;
    let (mut after, mut done) = (0i64, 0u64);
    loop {
        let rows: Vec<(i64, String)> = page
            .query_map([after], |r| {
                let (kind, errors): (String, Option<String>) = (r.get(1)?, r.get(2)?);
                Ok((
                    r.get(0)?,
                    errand_core::fingerprint::of_stored(&kind, errors.as_deref()),
                ))
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?;
        let Some(&(last, _)) = rows.last() else {
            return Ok(done);
        };
        for (rowid, fingerprint) in &rows {
            set.execute(rusqlite::params![rowid, fingerprint])
                .map_err(backend)?;
        }
        after = last;
        done += rows.len() as u64;
    }
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(backend)?;
    if current > SCHEMA_VERSION {
        return Err(Error::Unavailable(format!(
            "the database has schema version {current}, newer than this Errand understands \
             ({SCHEMA_VERSION}); run a newer Errand release on it"
        )));
    }
    for (v, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        if v + 1 == FINGERPRINTS_FROM {
            let n = fingerprint_dead_jobs(&tx)?;
            tracing::info!(dead_jobs = n, "fingerprinted the dead jobs already stored");
        }
        tx.pragma_update(None, "user_version", (v + 1) as i64)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version = v + 1, "applied schema migration");
    }
    Ok(())
}
