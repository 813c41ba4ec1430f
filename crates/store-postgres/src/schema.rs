//! Versioned schema migrations, tracked in `<schema>.migrations`.
//!
//! Each entry of `MIGRATIONS` takes the schema from version `i` to `i + 1`. They are applied when a
//! node connects, all in one transaction that holds `pg_advisory_xact_lock(<hash of the schema name>)`,
//! so that two nodes starting together apply each migration once and neither sees half of one.
//!
//! Migrations are **additive** (new tables, columns with defaults, indexes; never a drop or a rename), so
//! that during a rolling upgrade a node one version behind keeps working on the newer schema: a node
//! accepts a schema up to one version newer than it knows ([`SCHEMA_VERSION`] + 1) and refuses anything
//! newer, which may have moved on in ways it cannot see.
//!
//! Every column of time is milliseconds since the epoch (`BIGINT`), from the engine's clock, as in the
//! SQLite store; only the leader lease uses the database's clock (`timestamptz`, `now()`), so that nodes
//! whose clocks disagree still agree on who leads. Payloads, results and progress are `TEXT`: they come
//! back byte for byte as sent (`jsonb` would reorder keys and drop whitespace). Ids, queue names and
//! lease tokens are `COLLATE "C"`: ids are ULIDs, which sort by creation only in byte order.

use deadpool_postgres::Object;

use errand_core::{Error, Result};

use crate::conn::{db, lock_key, quote_ident};

/// Migration `i` brings the schema from version `i` to `i + 1`. `{s}` stands for the quoted schema.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, queues and leader leases.
    r#"
    CREATE TABLE {s}.queues (
        name   TEXT COLLATE "C" PRIMARY KEY,
        config TEXT,                          -- JSON QueueConfig; NULL: the defaults
        paused BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE {s}.jobs (
        id               TEXT COLLATE "C" PRIMARY KEY, -- ULID: the FIFO tie-breaker and the cursor
        queue            TEXT COLLATE "C" NOT NULL,
        kind             TEXT NOT NULL,
        payload          TEXT NOT NULL,               -- JSON, exactly as sent
        state            TEXT NOT NULL CHECK (state IN
                             ('waiting', 'delayed', 'active', 'completed', 'cancelled', 'dead')),
        priority         INTEGER NOT NULL,
        run_at           BIGINT NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL,
        backoff          TEXT NOT NULL,               -- JSON Backoff
        timeout_ms       BIGINT NOT NULL,
        heartbeat_ms     BIGINT,
        lease_ms         BIGINT NOT NULL,
        max_stalled      INTEGER NOT NULL,
        stalls           INTEGER NOT NULL DEFAULT 0,
        unique_key       TEXT,
        group_key        TEXT,
        idempotency_key  TEXT NOT NULL,
        progress         TEXT,                        -- JSON, exactly as sent
        result           TEXT,                        -- JSON, exactly as sent
        errors           TEXT,                        -- JSON array of ErrorRecord; NULL: none
        dead_reason      TEXT,
        cancel_requested BOOLEAN NOT NULL DEFAULT false,
        lease_token      TEXT COLLATE "C",            -- kept after the job leaves active
        worker_id        TEXT,
        lease_expires_at BIGINT,                      -- set only while active
        deadline_at      BIGINT,                      -- set only while active
        created_at       BIGINT NOT NULL,
        started_at       BIGINT,
        finished_at      BIGINT
    );
    -- Claiming: the best due job of a queue is the first entry, however many finished rows there are.
    CREATE INDEX jobs_ready ON {s}.jobs (queue, priority, run_at, id) WHERE state = 'waiting';
    -- Promotion of due delayed jobs, per queue.
    CREATE INDEX jobs_delayed ON {s}.jobs (queue, run_at) WHERE state = 'delayed';
    -- Listing and counting by state, retention.
    CREATE INDEX jobs_by_state ON {s}.jobs (queue, state, id);
    -- Unique keys.
    CREATE INDEX jobs_unique ON {s}.jobs (queue, unique_key) WHERE unique_key IS NOT NULL;
    -- The reaper: active jobs are few (as many as run at once), this index holds only them.
    CREATE INDEX jobs_active ON {s}.jobs (lease_expires_at) WHERE state = 'active';
    -- Who leads work that runs on one node at a time (maintenance); times from the database's clock.
    CREATE TABLE {s}.leaders (
        role       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    "#,
    // 2: cron schedules.
    r#"
    CREATE TABLE {s}.schedules (
        name        TEXT COLLATE "C" PRIMARY KEY,
        def         TEXT NOT NULL,                -- JSON ScheduleDef
        paused      BOOLEAN NOT NULL DEFAULT false,
        next_run_at BIGINT,                       -- the tick it waits for; NULL: never fires again
        last_run_at BIGINT,
        last_job_id TEXT COLLATE "C",
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL
    );
    CREATE INDEX schedules_due ON {s}.schedules (next_run_at) WHERE NOT paused;
    "#,
    // 3: job log lines, deleted with their job.
    r#"
    CREATE TABLE {s}.job_logs (
        id      BIGSERIAL PRIMARY KEY,
        job_id  TEXT COLLATE "C" NOT NULL REFERENCES {s}.jobs (id) ON DELETE CASCADE,
        at      BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        line    TEXT NOT NULL
    );
    CREATE INDEX job_logs_by_job ON {s}.job_logs (job_id, id);
    "#,
    // 4: flow control — concurrency keys, fairness between groups, rate-limit buckets. Group keys are
    // ordered bytewise (COLLATE "C"), as the engine orders them.
    r#"
    ALTER TABLE {s}.jobs ADD COLUMN concurrency_key TEXT;
    ALTER TABLE {s}.queues ADD COLUMN fair_cursor TEXT; -- the group the last flow-controlled claim served
    -- The plain claim reads jobs without a group; grouped ones are read group by group.
    DROP INDEX {s}.jobs_ready;
    CREATE INDEX jobs_ready ON {s}.jobs (queue, priority, run_at, id)
        WHERE state = 'waiting' AND group_key IS NULL;
    CREATE INDEX jobs_ready_grouped ON {s}.jobs (queue, group_key COLLATE "C", priority, run_at, id)
        WHERE state = 'waiting' AND group_key IS NOT NULL;
    CREATE INDEX jobs_waiting_keyed ON {s}.jobs (queue)
        WHERE state = 'waiting' AND concurrency_key IS NOT NULL;
    -- Counting active jobs per group and per concurrency key; jobs without keys cost nothing here.
    CREATE INDEX jobs_active_group ON {s}.jobs (queue, group_key)
        WHERE state = 'active' AND group_key IS NOT NULL;
    CREATE INDEX jobs_active_key ON {s}.jobs (queue, concurrency_key)
        WHERE state = 'active' AND concurrency_key IS NOT NULL;
    CREATE TABLE {s}.buckets (
        queue  TEXT COLLATE "C" NOT NULL,
        scope  TEXT NOT NULL,               -- 'queue' or 'group'
        key    TEXT COLLATE "C" NOT NULL,   -- the group key; '' for the queue's bucket
        tokens DOUBLE PRECISION NOT NULL,
        at     BIGINT NOT NULL,             -- when `tokens` was right
        PRIMARY KEY (queue, scope, key)
    );
    "#,
    // 5: flows — a parent waits in 'waiting_children' for its children.
    r#"
    ALTER TABLE {s}.jobs DROP CONSTRAINT jobs_state_check;
    ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
        ('waiting', 'delayed', 'active', 'waiting_children', 'completed', 'cancelled', 'dead'));
    ALTER TABLE {s}.jobs ADD COLUMN parent_id TEXT COLLATE "C";
    ALTER TABLE {s}.jobs ADD COLUMN parent_on_dead TEXT;   -- 'fail' or 'release'; NULL without a parent
    ALTER TABLE {s}.jobs ADD COLUMN pending_children INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE {s}.jobs ADD COLUMN parent_counted BOOLEAN NOT NULL DEFAULT false; -- released its parent
    CREATE INDEX jobs_by_parent ON {s}.jobs (parent_id, id) WHERE parent_id IS NOT NULL;
    "#,
    // 6: the audit log of operators' actions (append-only: nothing updates a row; the maintenance
    // pass removes the oldest past the log's retention).
    r#"
    CREATE TABLE {s}.audit (
        id     BIGSERIAL PRIMARY KEY,
        at     BIGINT NOT NULL,
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
    CREATE TABLE {s}.unique_keys (
        queue       TEXT COLLATE "C" NOT NULL,
        unique_key  TEXT NOT NULL,
        job_id      TEXT COLLATE "C" NOT NULL, -- the completed job that held it (its row is gone)
        finished_at BIGINT NOT NULL,
        PRIMARY KEY (queue, unique_key)
    );
    CREATE INDEX unique_keys_finished ON {s}.unique_keys (queue, finished_at);
    -- The lease a heartbeating worker asked for (`errand_core::store::JobClaim::lease_cap_ms`), kept
    -- with the lease so that each renewal lasts as long as the claim did.
    ALTER TABLE {s}.jobs ADD COLUMN lease_cap_ms BIGINT;
    "#,
    // 8: every queue's count of jobs per state, kept by triggers in the transaction that inserts,
    // moves or deletes jobs, so that reading the counts (every node's alert pass every 5 s,
    // `/metrics`, `GET /v1/queues`) costs a few rows however many finished jobs are retained.
    // Triggers rather than the store's statements: no path that changes a job, nor a node of the
    // previous release, can forget its count. A statement appends its net change per (queue, state)
    // to `job_count_deltas` instead of updating a shared row, so that concurrent claims and
    // acknowledgements never wait on one another's counts; a reader adds the deltas up, and the stats
    // pass folds them into `job_counts` (`fold_counts`). The triggers are created before the counts
    // are taken, under their lock on `jobs`, so that no write falls between the two.
    r#"
    CREATE TABLE {s}.job_counts (
        queue TEXT COLLATE "C" NOT NULL,
        state TEXT NOT NULL,
        n     BIGINT NOT NULL,
        PRIMARY KEY (queue, state)
    );
    CREATE TABLE {s}.job_count_deltas (
        queue TEXT COLLATE "C" NOT NULL,
        state TEXT NOT NULL,
        n     BIGINT NOT NULL
    );
    CREATE FUNCTION {s}.jobs_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.job_count_deltas (queue, state, n)
            SELECT queue, state, COUNT(*) FROM new_rows GROUP BY queue, state;
        RETURN NULL;
    END $$;
    CREATE FUNCTION {s}.jobs_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.job_count_deltas (queue, state, n)
            SELECT queue, state, -COUNT(*) FROM old_rows GROUP BY queue, state;
        RETURN NULL;
    END $$;
    CREATE FUNCTION {s}.jobs_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- Each updated row is once in each table, so a row that kept its queue and state cancels
        -- out: no join of the two (the planner knows nothing of transition tables, and a nested loop
        -- over a claim of a thousand rows each way made drains five times slower).
        INSERT INTO {s}.job_count_deltas (queue, state, n)
            SELECT queue, state, SUM(n) FROM (
                SELECT queue, state, COUNT(*) AS n FROM new_rows GROUP BY queue, state
                UNION ALL
                SELECT queue, state, -COUNT(*) FROM old_rows GROUP BY queue, state
            ) AS moved GROUP BY queue, state HAVING SUM(n) <> 0;
        RETURN NULL;
    END $$;
    CREATE TRIGGER jobs_counted_insert AFTER INSERT ON {s}.jobs
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.jobs_counted_insert();
    CREATE TRIGGER jobs_counted_delete AFTER DELETE ON {s}.jobs
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.jobs_counted_delete();
    CREATE TRIGGER jobs_counted_update AFTER UPDATE ON {s}.jobs
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.jobs_counted_update();
    INSERT INTO {s}.job_counts (queue, state, n)
        SELECT queue, state, COUNT(*) FROM {s}.jobs GROUP BY queue, state;
    "#,
    // 9: a dead job's error fingerprint, stored when it dies (`errand_core::fingerprint`: computed by
    // the engine, so no statement here can make one), and the tables that count each queue's dead
    // jobs per fingerprint, as migration 8 counts states: dead-letter groups then read a few rows per
    // group however many dead jobs are retained. The dead jobs already there are fingerprinted by
    // [`fingerprint_dead_jobs`] after this runs, in its transaction, and counted by migration 10.
    r#"
    ALTER TABLE {s}.jobs ADD COLUMN fingerprint TEXT COLLATE "C";
    CREATE INDEX jobs_dead_groups ON {s}.jobs (queue, fingerprint, finished_at, id)
        WHERE state = 'dead';
    CREATE TABLE {s}.dead_groups (
        queue       TEXT COLLATE "C" NOT NULL,
        fingerprint TEXT COLLATE "C" NOT NULL,
        n           BIGINT NOT NULL,
        PRIMARY KEY (queue, fingerprint)
    );
    CREATE TABLE {s}.dead_group_deltas (
        queue       TEXT COLLATE "C" NOT NULL,
        fingerprint TEXT COLLATE "C" NOT NULL,
        n           BIGINT NOT NULL
    );
    "#,
    // 10: the counts of migration 9, kept by row triggers whose `WHEN` passes only for a dead job
    // that arrives, leaves or changes its fingerprint: the claims and acknowledgements of the hot
    // path queue no event and call no function for them. Each appends its delta, as migration 8's
    // do, so that deaths in concurrent transactions never wait on a shared row; the stats pass folds
    // them into `dead_groups`. Created after the backfill, then the counts taken once.
    r#"
    CREATE FUNCTION {s}.jobs_dead_grouped() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            IF OLD.state = 'dead' AND OLD.fingerprint IS NOT NULL THEN
                INSERT INTO {s}.dead_group_deltas (queue, fingerprint, n)
                    VALUES (OLD.queue, OLD.fingerprint, -1);
            END IF;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            IF NEW.state = 'dead' AND NEW.fingerprint IS NOT NULL THEN
                INSERT INTO {s}.dead_group_deltas (queue, fingerprint, n)
                    VALUES (NEW.queue, NEW.fingerprint, 1);
            END IF;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER jobs_dead_grouped_insert AFTER INSERT ON {s}.jobs
        FOR EACH ROW WHEN (NEW.state = 'dead') EXECUTE FUNCTION {s}.jobs_dead_grouped();
    CREATE TRIGGER jobs_dead_grouped_delete AFTER DELETE ON {s}.jobs
        FOR EACH ROW WHEN (OLD.state = 'dead') EXECUTE FUNCTION {s}.jobs_dead_grouped();
    CREATE TRIGGER jobs_dead_grouped_update AFTER UPDATE ON {s}.jobs
        FOR EACH ROW WHEN ((OLD.state = 'dead' OR NEW.state = 'dead')
            AND (OLD.queue IS DISTINCT FROM NEW.queue OR OLD.state IS DISTINCT FROM NEW.state
                 OR OLD.fingerprint IS DISTINCT FROM NEW.fingerprint))
        EXECUTE FUNCTION {s}.jobs_dead_grouped();
    INSERT INTO {s}.dead_groups (queue, fingerprint, n)
        SELECT queue, fingerprint, COUNT(*) FROM {s}.jobs
        WHERE state = 'dead' AND fingerprint IS NOT NULL GROUP BY queue, fingerprint;
    "#,
    // 11: a job's time to live (`expire_after_ms`), and the jobs that have one and have not started,
    // by when they expire (most jobs have none and are not in the index).
    r#"
    ALTER TABLE {s}.jobs ADD COLUMN expires_at BIGINT;
    CREATE INDEX jobs_expiring ON {s}.jobs (expires_at)
        WHERE expires_at IS NOT NULL AND state IN ('waiting', 'delayed');
    "#,
];

/// The migration after which the dead jobs already stored are fingerprinted (in Rust, as the engine
/// does it), in the migration's transaction.
const FINGERPRINTS_FROM: usize = 9;

/// Gives every dead job without a fingerprint the one [`errand_core::Job::error_fingerprint`] gives:
/// of its kind and its latest error's message. One pass over the table through a portal, a page of
/// rows at a time, each page set in one statement: no page query to plan again, nor all the rows
/// (with their stack traces) in memory at once.
async fn fingerprint_dead_jobs(tx: &deadpool_postgres::Transaction<'_>, s: &str) -> Result<u64> {
    const PAGE: i32 = 5_000;
    let select = tx
        .prepare(&format!(
            "SELECT id, kind, errors FROM {s}.jobs WHERE state = 'dead' AND fingerprint IS NULL"
        ))
        .await
        .map_err(db)?;
    let set = format!(
        "UPDATE {s}.jobs AS j SET fingerprint = f.fp FROM unnest($1::text[], $2::text[]) \
         AS f(fid, fp) WHERE j.id = f.fid"
    );
    let portal = tx.bind(&select, &[]).await.map_err(db)?;
    let mut done = 0u64;
    loop {
        let rows = tx.query_portal(&portal, PAGE).await.map_err(db)?;
        if rows.is_empty() {
            return Ok(done);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut fps = Vec::with_capacity(rows.len());
        for r in &rows {
            let (id, kind, errors): (String, String, Option<String>) =
                (r.get(0), r.get(1), r.get(2));
            fps.push(errand_core::fingerprint::of_stored(
                &kind,
                errors.as_deref(),
            ));
            ids.push(id);
        }
        tx.execute(&set, &[&ids, &fps]).await.map_err(db)?;
        done += ids.len() as u64;
    }
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Whether `name` may name Errand's schema: `[a-z_][a-z0-9_]{0,62}` (a plain PostgreSQL identifier
/// that needs no quoting and fits `NAMEDATALEN`).
pub fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// Creates `schema` if needed and brings it up to [`SCHEMA_VERSION`], or refuses one more than a version
/// newer. One transaction under an advisory lock on the schema's name.
pub(crate) async fn migrate(client: &mut Object, schema: &str) -> Result<()> {
    let s = quote_ident(schema);
    let tx = client.transaction().await.map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(&["errand.migrate", schema])],
    )
    .await
    .map_err(db)?;
    // Looked up rather than `CREATE SCHEMA IF NOT EXISTS`, which needs the CREATE privilege on the
    // database even when the schema exists: a node may run as a role that can only use its schema.
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(db)?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {s}"))
            .await
            .map_err(db)?;
    }
    let has_table: bool = tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{s}.migrations")],
        )
        .await
        .map_err(db)?
        .get(0);
    if !has_table {
        tx.batch_execute(&format!(
            "CREATE TABLE {s}.migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )"
        ))
        .await
        .map_err(db)?;
    }
    let current: i32 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {s}.migrations"),
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    if current > SCHEMA_VERSION + 1 {
        return Err(Error::Unavailable(format!(
            "the PostgreSQL schema \"{schema}\" has version {current}, more than one version newer \
             than this Errand knows ({SCHEMA_VERSION}); run a newer Errand release on it"
        )));
    }
    if current == SCHEMA_VERSION + 1 {
        tracing::warn!(
            schema,
            version = current,
            known = SCHEMA_VERSION,
            "the schema is one version newer than this node knows (a rolling upgrade?); \
             carrying on, as migrations are additive"
        );
    }
    for (v, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let version = v as i32 + 1;
        tx.batch_execute(&sql.replace("{s}", &s))
            .await
            .map_err(db)?;
        if version as usize == FINGERPRINTS_FROM {
            let n = fingerprint_dead_jobs(&tx, &s).await?;
            tracing::info!(
                schema,
                dead_jobs = n,
                "fingerprinted the dead jobs already stored"
            );
        }
        tx.execute(
            &format!("INSERT INTO {s}.migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(db)?;
        tracing::info!(schema, version, "applied schema migration");
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_lowercase_identifiers() {
        for ok in ["errand", "_x", "errand_t_0123abcd", &"a".repeat(63)] {
            assert!(valid_schema_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Errand",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }
}
