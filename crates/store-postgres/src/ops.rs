//! The SQL of each store operation. Writes run inside a transaction that `conn::write` gives them;
//! reads, and writes of a single idempotent statement, on a pooled connection (`conn::run`). Each
//! function does what its `Store` method's contract says and nothing more, exactly as the SQLite store
//! does, so that both pass the same conformance suite.
//!
//! Every statement is prepared once per connection (the pool caches them) with the schema's name written
//! in: [`Sql`] holds the texts, built when the store connects.
//!
//! **Wake-ups.** Whenever jobs become `waiting` (inserted as waiting, promoted, moved back to waiting,
//! revived, or their queue resumed), the same transaction calls `pg_notify('<schema>_due', queue)` once
//! per queue; PostgreSQL delivers the notification when (and only if) the transaction commits.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use errand_core::admission::{self, Bucket, BucketKey, QueueClaim, Rules};
use errand_core::engine::raw_json;
use errand_core::store::{
    Attempts, Claimed, Guard, Inserted, JobClaim, JobDelete, JobList, JobLogAppend, JobPrune,
    JobReplace, JobSpec, LeaseRenew, ParentEffect, ParentMove, Renewed, Transition, Transitioned,
};
use errand_core::{
    DeadReason, Error, ErrorRecord, Job, JobId, JobState, Lease, LogLine, ParentOnDead,
    QueueConfig, QueueInfo, QueueStats, Result, Timestamp,
};

use crate::conn::{db, lock_key, quote_ident};

/// Every column of `jobs`, in the order [`decode_job`] reads them.
macro_rules! job_columns {
    () => {
        "id, queue, kind, payload, state, priority, run_at, attempts, max_attempts, backoff, \
         timeout_ms, heartbeat_ms, lease_ms, max_stalled, stalls, unique_key, group_key, \
         idempotency_key, progress, result, errors, dead_reason, cancel_requested, lease_token, \
         worker_id, lease_expires_at, deadline_at, created_at, started_at, finished_at, \
         concurrency_key, parent_id, parent_on_dead, pending_children"
    };
}

/// What the claim sets on each claimed job: `$2` the lease token, `$3` the worker, `$4` now, `$cap`
/// the lease's cap (`JobClaim::lease_cap_ms`; NULL for none).
macro_rules! claim_set {
    ($cap:literal) => {
        concat!(
            "state = 'active', attempts = attempts + 1, lease_token = $2, worker_id = $3, \
             lease_cap_ms = ",
            $cap,
            "::bigint, \
             lease_expires_at = $4 + LEAST(lease_ms, COALESCE(",
            $cap,
            "::bigint, lease_ms)), \
             deadline_at = $4 + timeout_ms, started_at = $4, cancel_requested = false"
        )
    };
}

/// Deletes up to `$limit` jobs of queue `$1` in state `$2` (oldest first, `$filter` on top; a flow
/// child is kept while its parent is unfinished; a job revived since it was picked stays, as the outer
/// `state` check makes sure: READ COMMITTED re-checks only the outer condition on a changed row), and in the same statement keeps the unique keys of
/// the deleted completed jobs that finished after `$since` in the ledger. Answers how many it deleted.
macro_rules! prune_keeping_keys {
    ($filter:literal, $limit:literal, $since:literal) => {
        concat!(
            "WITH gone AS (DELETE FROM {s}.jobs WHERE id = ANY(ARRAY(SELECT id FROM {s}.jobs AS c \
               WHERE (queue, state, id) > ($1, $2, '') AND queue = $1 AND state = $2 ", $filter, " \
                 AND (c.parent_id IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.jobs AS p \
                      WHERE p.id = c.parent_id \
                      AND p.state IN ('waiting_children', 'waiting', 'delayed', 'active'))) \
               ORDER BY queue, state, id LIMIT ", $limit, ")) \
               AND state = $2 \
             RETURNING queue, state, unique_key, id, finished_at), \
             kept AS (INSERT INTO {s}.unique_keys (queue, unique_key, job_id, finished_at) \
               SELECT DISTINCT ON (queue, unique_key) queue, unique_key, id, finished_at FROM gone \
               WHERE state = 'completed' AND unique_key IS NOT NULL AND finished_at > ", $since, " \
               ORDER BY queue, unique_key, finished_at DESC \
               ON CONFLICT (queue, unique_key) DO UPDATE \
               SET job_id = excluded.job_id, finished_at = excluded.finished_at \
               WHERE excluded.finished_at >= {s}.unique_keys.finished_at) \
             SELECT count(*) FROM gone"
        )
    };
}

/// Declares [`Sql`]: one field per statement, `{s}` replaced by the quoted schema.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $sql:expr;)*) => {
        /// The text of every statement, with the schema's name written in.
        #[derive(Debug)]
        pub(crate) struct Sql {
            $($(#[$doc])* pub(crate) $name: String,)*
        }

        impl Sql {
            pub(crate) fn new(schema: &str) -> Sql {
                let s = quote_ident(schema);
                Sql { $($name: $sql.replace("{s}", &s),)* }
            }
        }
    };
}

statements! {
    job_replace = "UPDATE {s}.jobs SET payload = $3, priority = $4, run_at = $5, state = $6 \
        WHERE id = $1 AND state = $2";
    job_log_queue = "SELECT queue FROM {s}.jobs WHERE id = $1";
    job_log_guard = "SELECT state, lease_token, attempts FROM {s}.jobs WHERE id = $1";
    job_log_insert = "INSERT INTO {s}.job_logs (job_id, at, attempt, line) \
        SELECT $1, $2, $3, unnest($4::text[])";
    /// Keeps the latest `$2` lines of a job.
    job_log_trim = "DELETE FROM {s}.job_logs WHERE job_id = $1 AND id <= (SELECT id FROM {s}.job_logs \
        WHERE job_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)";
    job_logs = "SELECT at, attempt, line FROM {s}.job_logs WHERE job_id = $1 ORDER BY id";
    schedule_put = "INSERT INTO {s}.schedules (name, def, paused, next_run_at, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6) \
        ON CONFLICT (name) DO UPDATE SET def = excluded.def, \
            next_run_at = excluded.next_run_at, updated_at = excluded.updated_at";
    schedule_get = "SELECT name, def, paused, next_run_at, last_run_at, last_job_id, created_at, \
        updated_at FROM {s}.schedules WHERE name = $1";
    schedule_list = "SELECT name, def, paused, next_run_at, last_run_at, last_job_id, created_at, \
        updated_at FROM {s}.schedules ORDER BY name";
    schedule_due = "SELECT name, def, paused, next_run_at, last_run_at, last_job_id, created_at, \
        updated_at FROM {s}.schedules WHERE NOT paused AND next_run_at <= $1 \
        ORDER BY next_run_at, name LIMIT $2";
    schedule_delete = "DELETE FROM {s}.schedules WHERE name = $1";
    schedule_set_paused = "UPDATE {s}.schedules SET paused = $2, next_run_at = $3, updated_at = $4 \
        WHERE name = $1";
    /// The compare-and-set that makes a tick fire once across nodes.
    schedule_move = "UPDATE {s}.schedules SET next_run_at = $3, \
        last_run_at = COALESCE($4, last_run_at), updated_at = $5 \
        WHERE name = $1 AND next_run_at = $2 AND NOT paused";
    schedule_last_job = "UPDATE {s}.schedules SET last_job_id = $2 WHERE name = $1";
    register_queues = "INSERT INTO {s}.queues (name) SELECT unnest($1::text[]) \
        ON CONFLICT (name) DO NOTHING";
    /// Takes transaction-scoped advisory locks in the order given (sorted by the caller, so that two
    /// transactions never wait for each other's keys in a cycle).
    lock_keys = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k";
    /// For each `(queue, unique key, finished since)`, by position, the newest job holding the key or
    /// else the ledger's entry (`errand_core::store::UNIQUE_HOLDING_STATES` says who holds a key). One
    /// statement, so one snapshot: a job that retention moves to the ledger meanwhile is seen in one
    /// place or the other.
    find_unique = "SELECT k.n, j.id, j.state \
        FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS k(queue, ukey, since, n) \
        CROSS JOIN LATERAL (SELECT id, state FROM ( \
            (SELECT id, state, 0 AS o FROM {s}.jobs \
              WHERE queue = k.queue AND unique_key = k.ukey \
                AND (state IN ('waiting', 'delayed', 'active', 'waiting_children', 'dead') \
                     OR (state = 'completed' AND finished_at > k.since)) \
              ORDER BY id DESC LIMIT 1) \
            UNION ALL \
            SELECT job_id, 'completed', 1 FROM {s}.unique_keys \
              WHERE queue = k.queue AND unique_key = k.ukey AND finished_at > k.since \
            ORDER BY o LIMIT 1) AS h) AS j";
    insert = "INSERT INTO {s}.jobs (id, queue, kind, payload, state, priority, run_at, \
            max_attempts, backoff, timeout_ms, heartbeat_ms, lease_ms, max_stalled, unique_key, \
            group_key, idempotency_key, created_at, concurrency_key, parent_id, parent_on_dead, \
            pending_children) \
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], \
            $7::bigint[], $8::int[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], \
            $13::int[], $14::text[], $15::text[], $16::text[], $17::bigint[], $18::text[], \
            $19::text[], $20::text[], $21::int[])";
    notify = "SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q";
    /// Due delayed jobs of each queue (at most `$3` per queue) become waiting. Rows another transaction
    /// holds are skipped: it is promoting or changing them itself.
    promote = "UPDATE {s}.jobs SET state = 'waiting' \
        WHERE id = ANY(ARRAY(SELECT d.did FROM unnest($1::text[]) AS q(name) \
              CROSS JOIN LATERAL (SELECT id AS did FROM {s}.jobs \
                  WHERE queue = q.name AND state = 'delayed' AND run_at <= $2 \
                  ORDER BY run_at LIMIT $3 FOR UPDATE SKIP LOCKED) AS d)) \
          AND state = 'delayed' \
        RETURNING id, queue, kind, attempts";
    /// A claim from one queue, in one statement: the best `$5` waiting jobs not locked by another
    /// claimer, unless the queue is paused, or has waiting jobs with a group or concurrency key (those
    /// are claimed under flow control).
    claim_one = concat!(
        "WITH picked AS (SELECT id AS pid FROM {s}.jobs \
             WHERE queue = $1 AND state = 'waiting' AND group_key IS NULL \
               AND NOT EXISTS (SELECT 1 FROM {s}.queues WHERE name = $1 AND paused) \
               AND NOT EXISTS (SELECT 1 FROM {s}.jobs WHERE queue = $1 AND state = 'waiting' \
                   AND group_key IS NOT NULL) \
               AND NOT EXISTS (SELECT 1 FROM {s}.jobs WHERE queue = $1 AND state = 'waiting' \
                   AND concurrency_key IS NOT NULL) \
             ORDER BY priority, run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
         UPDATE {s}.jobs SET ", claim_set!("$6"), " \
         WHERE id = ANY(ARRAY(SELECT pid FROM picked)) AND state = 'waiting' \
         RETURNING ", job_columns!());
    /// The best `$2` unlocked waiting jobs of each unpaused queue, locked: the candidates of a claim
    /// from several queues.
    claim_candidates = "SELECT c.id, c.queue, c.priority, c.run_at FROM unnest($1::text[]) AS q(name) \
        CROSS JOIN LATERAL (SELECT id, queue, priority, run_at FROM {s}.jobs \
            WHERE queue = q.name AND state = 'waiting' AND group_key IS NULL \
              AND concurrency_key IS NULL \
            ORDER BY priority, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) AS c \
        WHERE NOT EXISTS (SELECT 1 FROM {s}.queues WHERE name = q.name AND paused)";
    claim_ids = concat!(
        "UPDATE {s}.jobs SET ", claim_set!("$5"), " WHERE id = ANY($1::text[]) AND state = 'waiting' \
         RETURNING ", job_columns!());
    /// Of the queues `$1`, those with waiting jobs that carry a group or concurrency key.
    keyed_waiting = "SELECT q FROM unnest($1::text[]) AS q \
        WHERE EXISTS (SELECT 1 FROM {s}.jobs WHERE queue = q AND state = 'waiting' \
                      AND group_key IS NOT NULL) \
           OR EXISTS (SELECT 1 FROM {s}.jobs WHERE queue = q AND state = 'waiting' \
                      AND concurrency_key IS NOT NULL)";
    fair_cursor = "SELECT fair_cursor FROM {s}.queues WHERE name = $1";
    /// Group keys of waiting jobs after `$2`, in order, at most `$3`: one index seek each.
    keys_after = "WITH RECURSIVE g(k, n) AS ( \
            SELECT (SELECT group_key FROM {s}.jobs WHERE queue = $1 AND state = 'waiting' \
                    AND group_key COLLATE \"C\" > $2 ORDER BY group_key COLLATE \"C\" LIMIT 1), 1 \
            UNION ALL \
            SELECT (SELECT group_key FROM {s}.jobs WHERE queue = $1 AND state = 'waiting' \
                    AND group_key COLLATE \"C\" > g.k ORDER BY group_key COLLATE \"C\" LIMIT 1), \
                   n + 1 \
            FROM g WHERE g.k IS NOT NULL AND n < $3) \
        SELECT k FROM g WHERE k IS NOT NULL";
    ungrouped_waiting = "SELECT EXISTS (SELECT 1 FROM {s}.jobs WHERE queue = $1 AND state = 'waiting' \
        AND group_key IS NULL)";
    /// The best `$3` waiting jobs without a group whose concurrency key has room below `$2`.
    ungrouped_candidates = "SELECT '' AS k, j.id, j.priority, j.run_at, j.concurrency_key, ka.n \
        FROM {s}.jobs j CROSS JOIN LATERAL (SELECT CASE WHEN j.concurrency_key IS NULL THEN 0 \
            ELSE (SELECT count(*) FROM {s}.jobs a WHERE a.queue = j.queue \
                  AND a.concurrency_key = j.concurrency_key AND a.state = 'active') END AS n) ka \
        WHERE j.queue = $1 AND j.state = 'waiting' AND j.group_key IS NULL AND ka.n < $2 \
        ORDER BY j.priority, j.run_at, j.id LIMIT $3";
    /// The same for each group of `$4`.
    grouped_candidates = "SELECT g.k, c.id, c.priority, c.run_at, c.concurrency_key, c.n \
        FROM unnest($4::text[]) AS g(k) CROSS JOIN LATERAL ( \
            SELECT j.id, j.priority, j.run_at, j.concurrency_key, ka.n \
            FROM {s}.jobs j CROSS JOIN LATERAL (SELECT CASE WHEN j.concurrency_key IS NULL THEN 0 \
                ELSE (SELECT count(*) FROM {s}.jobs a WHERE a.queue = j.queue \
                      AND a.concurrency_key = j.concurrency_key AND a.state = 'active') END AS n) ka \
            WHERE j.queue = $1 AND j.state = 'waiting' AND j.group_key COLLATE \"C\" = g.k \
              AND ka.n < $2 \
            ORDER BY j.priority, j.run_at, j.id LIMIT $3) AS c";
    group_active = "SELECT group_key, count(*) FROM {s}.jobs \
        WHERE queue = $1 AND state = 'active' AND group_key = ANY($2::text[]) GROUP BY group_key";
    buckets = "SELECT scope, key, tokens, at FROM {s}.buckets \
        WHERE queue = $1 AND (scope = 'queue' OR key = ANY($2::text[]))";
    put_buckets = "INSERT INTO {s}.buckets (queue, scope, key, tokens, at) \
        SELECT $1, * FROM unnest($2::text[], $3::text[], $4::float8[], $5::bigint[]) \
        ON CONFLICT (queue, scope, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at";
    put_fair_cursor = "INSERT INTO {s}.queues (name, fair_cursor) VALUES ($1, $2) \
        ON CONFLICT (name) DO UPDATE SET fair_cursor = excluded.fair_cursor";
    renew = "UPDATE {s}.jobs SET lease_expires_at = GREATEST(lease_expires_at, \
            $3 + LEAST(lease_ms, COALESCE(lease_cap_ms, lease_ms))), \
            progress = COALESCE($4::text, progress) \
        WHERE id = $1 AND state = 'active' AND lease_token = $2 AND lease_expires_at > $3 \
        RETURNING lease_expires_at, cancel_requested, queue, worker_id";
    /// Plain completions in one statement. A batch naming one job twice updates it once.
    complete_many = "UPDATE {s}.jobs AS j SET state = 'completed', result = c.c_result, \
            finished_at = c.c_now, lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL \
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) \
            AS c(c_id, c_token, c_result, c_now) \
        WHERE j.id = c.c_id AND j.state = 'active' AND j.lease_token = c.c_token \
        RETURNING j.id, j.lease_token, j.queue, j.kind, j.attempts, j.parent_id, j.started_at";
    /// One guarded transition; see `Transition` for what each parameter does. Error records are
    /// appended as text, without parsing the array (`jsonb` would refuse a `\u0000` in a message).
    transition = "UPDATE {s}.jobs AS j SET \
            state = $4, \
            run_at = COALESCE($5::bigint, run_at), \
            result = COALESCE($6::text, result), \
            errors = CASE WHEN $7::text IS NULL THEN errors \
                     WHEN errors IS NULL OR errors = '[]' THEN '[' || $7::text || ']' \
                     ELSE left(errors, -1) || ',' || $7::text || ']' END, \
            dead_reason = $8::text, \
            attempts = CASE $9::int WHEN 1 THEN GREATEST(attempts - 1, 0) WHEN 2 THEN 0 \
                       ELSE attempts END, \
            stalls = CASE $9::int WHEN 2 THEN 0 ELSE stalls + $10::int END, \
            lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL, \
            cancel_requested = CASE WHEN $11::boolean THEN cancel_requested ELSE false END, \
            finished_at = CASE WHEN $11::boolean THEN $12::bigint ELSE NULL END \
        WHERE id = $1 AND state = $2 AND ($3::text IS NULL OR lease_token = $3::text) \
          AND ($13::boolean IS NULL OR cancel_requested = $13::boolean) \
          AND ($15::bigint IS NULL OR lease_expires_at = $15::bigint) \
          AND ($14::bigint IS NULL OR unique_key IS NULL OR NOT (EXISTS ( \
               SELECT 1 FROM {s}.jobs AS other WHERE other.queue = j.queue \
               AND other.unique_key = j.unique_key AND other.id <> j.id \
               AND (other.state IN ('waiting', 'delayed', 'active', 'waiting_children') \
                    OR (other.state = 'completed' AND other.finished_at > $14::bigint))) \
             OR EXISTS (SELECT 1 FROM {s}.unique_keys AS l WHERE l.queue = j.queue \
               AND l.unique_key = j.unique_key AND l.job_id <> j.id AND l.finished_at > $14::bigint))) \
        RETURNING queue, kind, attempts, parent_id, parent_on_dead, started_at";
    /// A flow child of parent `$1` is done with (completed, or released): one less to wait for; at
    /// none, the parent is due (or delayed until its own run time).
    parent_release = "UPDATE {s}.jobs SET pending_children = pending_children - 1, \
            state = CASE WHEN pending_children > 1 THEN state \
                         WHEN run_at > $2 THEN 'delayed' ELSE 'waiting' END \
        WHERE id = $1 AND state = 'waiting_children' \
        RETURNING state, queue, kind, attempts";
    child_counted = "UPDATE {s}.jobs SET parent_counted = true WHERE id = $1 AND NOT parent_counted";
    /// A flow child of parent `$1` died: the parent dies, with the error record `$3`.
    parent_fail = "UPDATE {s}.jobs SET state = 'dead', dead_reason = 'child_dead', finished_at = $2, \
            errors = CASE WHEN errors IS NULL OR errors = '[]' THEN '[' || $3::text || ']' \
                     ELSE left(errors, -1) || ',' || $3::text || ']' END \
        WHERE id = $1 AND state = 'waiting_children' \
        RETURNING state, queue, kind, attempts";
    children = concat!("SELECT ", job_columns!(), " FROM {s}.jobs WHERE parent_id = $1 \
        ORDER BY id LIMIT $2");
    probe = "SELECT state, lease_token, cancel_requested FROM {s}.jobs WHERE id = $1";
    unique_keys_of = "SELECT DISTINCT queue, unique_key FROM {s}.jobs \
        WHERE id = ANY($1::text[]) AND unique_key IS NOT NULL";
    request_cancel = "UPDATE {s}.jobs SET cancel_requested = true WHERE id = $1 AND state = 'active' \
        RETURNING queue, kind, attempts";
    expired = concat!("SELECT ", job_columns!(), " FROM {s}.jobs WHERE state = 'active' \
        AND (lease_expires_at <= $1 OR deadline_at <= $1) LIMIT $2");
    get = concat!("SELECT ", job_columns!(), " FROM {s}.jobs WHERE id = $1");
    list = concat!("SELECT ", job_columns!(), " FROM {s}.jobs \
        WHERE (queue, state, id) > ($1, $2, $3) AND queue = $1 AND state = $2 \
          AND ($4::text IS NULL OR kind = $4::text) \
        ORDER BY queue, state, id LIMIT $5");
    /// `list` of the jobs holding unique key `$6`: through the unique-key index.
    list_unique = concat!("SELECT ", job_columns!(), " FROM {s}.jobs \
        WHERE queue = $1 AND unique_key = $6 AND state = $2 AND id > $3 \
          AND ($4::text IS NULL OR kind = $4::text) \
        ORDER BY id LIMIT $5");
    /// Retention keeps a flow child while its parent may still read it (the parent is unfinished).
    prune_finished_before = prune_keeping_keys!(
        "AND finished_at < $3", "$4", "$5");
    count_state = "SELECT COUNT(*) FROM {s}.jobs WHERE queue = $1 AND state = $2";
    /// As `prune_finished_before`, for the oldest `$3` (`$4`: the keys' `since`).
    prune_oldest = prune_keeping_keys!("", "$3", "$4");
    /// Ledger entries no longer held (finished at or before `$2`), at most `$3`.
    unique_keys_release = "DELETE FROM {s}.unique_keys WHERE (queue, unique_key) IN ( \
        SELECT queue, unique_key FROM {s}.unique_keys WHERE queue = $1 AND finished_at <= $2 \
        ORDER BY finished_at LIMIT $3)";
    delete = "DELETE FROM {s}.jobs AS j USING unnest($1::text[], $2::text[]) AS d(d_id, d_state) \
        WHERE j.id = d.d_id AND j.state = d.d_state";
    queue_put = "INSERT INTO {s}.queues (name, config) VALUES ($1, $2) \
        ON CONFLICT (name) DO UPDATE SET config = excluded.config";
    queue_set_paused = "INSERT INTO {s}.queues (name, paused) VALUES ($1, $2) \
        ON CONFLICT (name) DO UPDATE SET paused = excluded.paused";
    queue_get = "SELECT name, config, paused FROM {s}.queues WHERE name = $1";
    queue_list = "SELECT name, config, paused FROM {s}.queues ORDER BY name";
    queue_paused = "SELECT paused FROM {s}.queues WHERE name = $1";
    state_counts = "SELECT state, COUNT(*) FROM {s}.jobs WHERE queue = $1 GROUP BY state";
    /// Bounded work even with a million waiting: the earliest due time among the 1,000 longest queued.
    oldest_waiting = "SELECT MIN(run_at) FROM (SELECT run_at FROM {s}.jobs \
        WHERE (queue, state, id) > ($1, 'waiting', '') AND queue = $1 AND state = 'waiting' \
        ORDER BY queue, state, id LIMIT 1000) AS w";
    audit_append = "INSERT INTO {s}.audit (at, key, action, target, detail) \
        VALUES ($1, $2, $3, $4, $5)";
    audit_list = "SELECT id, at, key, action, target, detail FROM {s}.audit WHERE id < $1 \
        ORDER BY id DESC LIMIT $2";
    /// Every queue's counts in one round trip (a lateral count per queue over the state index).
    state_counts_all = "SELECT q.name, q.paused, c.state, c.n FROM {s}.queues AS q \
        LEFT JOIN LATERAL (SELECT state, COUNT(*) AS n FROM {s}.jobs \
            WHERE queue = q.name GROUP BY state) AS c ON true";
    /// `oldest_waiting` of every queue, in one round trip.
    oldest_waiting_all = "SELECT q.name, (SELECT MIN(run_at) FROM (SELECT run_at FROM {s}.jobs \
            WHERE (queue, state, id) > (q.name, 'waiting', '') AND queue = q.name \
            AND state = 'waiting' ORDER BY queue, state, id LIMIT 1000) AS w) FROM {s}.queues AS q";
    /// Takes the lead if nobody holds it, keeps it for its holder, takes it over once it lapsed; the
    /// database's clock decides, so that nodes whose clocks disagree still agree.
    try_lead = "INSERT INTO {s}.leaders AS l (role, holder, expires_at) \
        VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond') \
        ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
        WHERE l.holder = excluded.holder OR l.expires_at < now() \
        RETURNING holder";
}

/// What every operation needs besides its parameters: the schema, the statements, the channel.
#[derive(Debug)]
pub(crate) struct Cx {
    pub(crate) schema: String,
    pub(crate) sql: Sql,
    /// The `LISTEN`/`NOTIFY` channel of due jobs.
    pub(crate) channel: String,
}

impl Cx {
    pub(crate) fn new(schema: &str) -> Cx {
        Cx {
            schema: schema.to_string(),
            sql: Sql::new(schema),
            channel: due_channel(schema),
        }
    }
}

/// The notification channel of `schema`: `<schema>_due`. A channel name must fit in 63 bytes, so a long
/// schema name is shortened and a hash of it keeps the channel its own.
pub fn due_channel(schema: &str) -> String {
    let plain = format!("{schema}_due");
    if plain.len() <= 63 {
        return plain;
    }
    // Schema names are ASCII (checked at connect), so byte slicing is safe.
    let head = &schema[..schema.len().min(40)];
    format!("{head}_{:016x}_due", lock_key(&[schema]) as u64)
}

// ---- helpers --------------------------------------------------------------------------------------

type Params<'a> = [&'a (dyn ToSql + Sync)];

pub(crate) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&st, params).await.map_err(db)
}

pub(crate) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&st, params).await.map_err(db)
}

pub(crate) async fn execute(c: &impl GenericClient, sql: &str, params: &Params<'_>) -> Result<u64> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&st, params).await.map_err(db)
}

/// Sends one notification per distinct queue of `queues`, delivered when the transaction commits.
async fn notify<'q>(
    c: &impl GenericClient,
    cx: &Cx,
    queues: impl IntoIterator<Item = &'q str>,
) -> Result<()> {
    let queues: Vec<&str> = queues
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !queues.is_empty() {
        query(c, &cx.sql.notify, &[&cx.channel, &queues]).await?;
    }
    Ok(())
}

pub(crate) fn corrupt_field(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Backend(format!("stored {what} is invalid: {detail}").into())
}

pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(db)
}

fn count(v: i32, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt_field(what, v))
}

pub(crate) fn parse_id(s: &str) -> Result<JobId> {
    s.parse().map_err(|e| corrupt_field("id", e))
}

fn parse_state(s: &str) -> Result<JobState> {
    JobState::parse(s).ok_or_else(|| corrupt_field("state", s))
}

fn int4(v: u32, field: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(field, "too large"))
}

fn int8(v: u64, field: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(field, "too large"))
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Backend(Box::new(e)))
}

/// Decodes a row selected with [`job_columns!`]. A row that does not decode is corruption, reported as a
/// backend error.
fn decode_job(r: &Row) -> Result<Job> {
    let state = parse_state(get(r, 4)?)?;
    let lease_token: Option<String> = get(r, 23)?;
    let worker_id: Option<String> = get(r, 24)?;
    let lease_expires_at: Option<i64> = get(r, 25)?;
    let deadline_at: Option<i64> = get(r, 26)?;
    let lease = match (state, lease_expires_at) {
        (JobState::Active, Some(expires_at)) => Some(Lease {
            token: lease_token.clone().unwrap_or_default(),
            worker_id: worker_id.unwrap_or_default(),
            expires_at,
            deadline_at: deadline_at.unwrap_or(expires_at),
        }),
        _ => None,
    };
    let json = |what: &str, s: String| raw_json(s).map_err(|e| corrupt_field(what, e));
    let backoff: String = get(r, 9)?;
    let errors: Option<String> = get(r, 20)?;
    let dead_reason: Option<String> = get(r, 21)?;
    Ok(Job {
        id: parse_id(get(r, 0)?)?,
        queue: get(r, 1)?,
        kind: get(r, 2)?,
        payload: json("payload", get(r, 3)?)?,
        state,
        priority: get(r, 5)?,
        run_at: get(r, 6)?,
        attempts: count(get(r, 7)?, "attempts")?,
        max_attempts: count(get(r, 8)?, "max_attempts")?,
        backoff: serde_json::from_str(&backoff).map_err(|e| corrupt_field("backoff", e))?,
        timeout_ms: get::<i64>(r, 10)? as u64,
        heartbeat_ms: get::<Option<i64>>(r, 11)?.map(|h| h as u64),
        lease_ms: get::<i64>(r, 12)? as u64,
        max_stalled: count(get(r, 13)?, "max_stalled")?,
        stalls: count(get(r, 14)?, "stalls")?,
        unique_key: get(r, 15)?,
        group_key: get(r, 16)?,
        concurrency_key: get(r, 30)?,
        parent_id: get::<Option<&str>>(r, 31)?.map(parse_id).transpose()?,
        parent_on_dead: ParentOnDead::parse(get(r, 32)?)
            .ok_or_else(|| corrupt_field("parent_on_dead", "unknown value"))?,
        pending_children: count(get(r, 33)?, "pending_children")?,
        idempotency_key: get(r, 17)?,
        progress: get::<Option<String>>(r, 18)?
            .map(|p| json("progress", p))
            .transpose()?,
        result: get::<Option<String>>(r, 19)?
            .map(|p| json("result", p))
            .transpose()?,
        errors: match errors {
            Some(e) => serde_json::from_str(&e).map_err(|e| corrupt_field("errors", e))?,
            None => Vec::new(),
        },
        dead_reason: dead_reason
            .map(|d| DeadReason::parse(&d).ok_or_else(|| corrupt_field("dead_reason", d)))
            .transpose()?,
        cancel_requested: get(r, 22)?,
        lease,
        last_lease_token: lease_token,
        created_at: get(r, 27)?,
        started_at: get(r, 28)?,
        finished_at: get(r, 29)?,
    })
}

fn decode_all(rows: &[Row]) -> Result<Vec<Job>> {
    rows.iter().map(decode_job).collect()
}

/// Reads `(id, queue, kind, attempts)` rows as returned by promotions.
fn decode_moved(rows: &[Row], from: JobState) -> Result<Vec<(JobId, Transitioned)>> {
    rows.iter()
        .map(|r| {
            Ok((
                parse_id(get(r, 0)?)?,
                Transitioned::new(get(r, 1)?, get(r, 2)?, from, count(get(r, 3)?, "attempts")?),
            ))
        })
        .collect()
}

// ---- writes ---------------------------------------------------------------------------------------

/// The advisory lock that serialises everything deciding who holds `(queue, unique_key)`: inserts with
/// that key and revivals of jobs that have it.
fn unique_lock(cx: &Cx, queue: &str, key: &str) -> i64 {
    lock_key(&["errand.unique", &cx.schema, queue, key])
}

/// Locks the given unique keys, sorted (so that two transactions never wait on each other in a cycle).
async fn lock_unique_keys(
    c: &impl GenericClient,
    cx: &Cx,
    keys: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    let locks: Vec<i64> = keys
        .into_iter()
        .map(|(q, k)| unique_lock(cx, &q, &k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !locks.is_empty() {
        query(c, &cx.sql.lock_keys, &[&locks]).await?;
    }
    Ok(())
}

/// Inserts a batch. Jobs with a unique key are resolved under an advisory lock per `(queue, key)`, held
/// until commit, so that concurrent inserts of one key (from any node) make exactly one job: the first
/// to get the lock inserts, the others then see its job. A key is resolved against everything before
/// it, including earlier jobs of the same batch. Everything new goes in with one statement.
pub(crate) async fn job_insert(
    c: &impl GenericClient,
    cx: &Cx,
    jobs: &[JobSpec],
) -> Result<Vec<Inserted>> {
    let mut out = vec![Inserted::New; jobs.len()];
    if jobs.is_empty() {
        return Ok(out);
    }
    let queues: Vec<&str> = jobs
        .iter()
        .map(|j| j.queue.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Sorted, like every set of locks taken here: concurrent batches register queues in one order.
    query(c, &cx.sql.register_queues, &[&queues]).await?;

    let unique: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].unique_key.is_some())
        .collect();
    if !unique.is_empty() {
        let key = |i: usize| {
            (
                jobs[i].queue.as_str(),
                jobs[i].unique_key.as_deref().unwrap_or(""),
            )
        };
        lock_unique_keys(
            c,
            cx,
            unique.iter().map(|&i| {
                let (q, k) = key(i);
                (q.to_string(), k.to_string())
            }),
        )
        .await?;
        let qs: Vec<&str> = unique.iter().map(|&i| key(i).0).collect();
        let ks: Vec<&str> = unique.iter().map(|&i| key(i).1).collect();
        let since: Vec<i64> = unique
            .iter()
            .map(|&i| jobs[i].unique_finished_since)
            .collect();
        // Position (1-based, in `unique`) → the newest stored job holding that key.
        let mut stored: HashMap<usize, (JobId, JobState)> = HashMap::new();
        for row in query(c, &cx.sql.find_unique, &[&qs, &ks, &since]).await? {
            let n: i64 = get(&row, 0)?;
            let id = parse_id(get(&row, 1)?)?;
            let state = parse_state(get(&row, 2)?)?;
            stored.insert(n as usize, (id, state));
        }
        // The first job of the batch to take a key holds it for the rest of the batch.
        let mut taken: HashMap<(&str, &str), (JobId, JobState)> = HashMap::new();
        for (pos, &i) in unique.iter().enumerate() {
            let earlier = taken.get(&key(i)).copied();
            let holder = match (stored.get(&(pos + 1)).copied(), earlier) {
                // Both hold it: the newer one, as a lookup after inserting the earlier job would find.
                (Some(a), Some(b)) => Some(if a.0 > b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            match holder {
                Some((id, state)) => out[i] = Inserted::Existing { id, state },
                None => {
                    taken.insert(key(i), (jobs[i].id, jobs[i].state));
                }
            }
        }
    }

    let new: Vec<usize> = (0..jobs.len())
        .filter(|&i| out[i] == Inserted::New)
        .collect();
    if new.is_empty() {
        return Ok(out);
    }
    let mut ids = Vec::with_capacity(new.len());
    let mut qs = Vec::with_capacity(new.len());
    let mut kinds = Vec::with_capacity(new.len());
    let mut payloads = Vec::with_capacity(new.len());
    let mut states = Vec::with_capacity(new.len());
    let mut priorities = Vec::with_capacity(new.len());
    let mut run_ats = Vec::with_capacity(new.len());
    let mut max_attempts = Vec::with_capacity(new.len());
    let mut backoffs = Vec::with_capacity(new.len());
    let mut timeouts = Vec::with_capacity(new.len());
    let mut heartbeats = Vec::with_capacity(new.len());
    let mut leases = Vec::with_capacity(new.len());
    let mut max_stalled = Vec::with_capacity(new.len());
    let mut unique_keys = Vec::with_capacity(new.len());
    let mut group_keys = Vec::with_capacity(new.len());
    let mut concurrency_keys = Vec::with_capacity(new.len());
    let mut parent_ids: Vec<Option<String>> = Vec::with_capacity(new.len());
    let mut parent_on_dead: Vec<Option<&str>> = Vec::with_capacity(new.len());
    let mut pending_children = Vec::with_capacity(new.len());
    let mut idempotency_keys = Vec::with_capacity(new.len());
    let mut created = Vec::with_capacity(new.len());
    for &i in &new {
        let j = &jobs[i];
        ids.push(j.id.to_string());
        qs.push(j.queue.as_str());
        kinds.push(j.kind.as_str());
        payloads.push(j.payload.get());
        states.push(j.state.as_str());
        priorities.push(j.priority);
        run_ats.push(j.run_at);
        max_attempts.push(int4(j.max_attempts, "max_attempts")?);
        backoffs.push(json_text(&j.backoff)?);
        timeouts.push(int8(j.timeout_ms, "timeout_ms")?);
        heartbeats.push(
            j.heartbeat_ms
                .map(|h| int8(h, "heartbeat_ms"))
                .transpose()?,
        );
        leases.push(int8(j.lease_ms, "lease_ms")?);
        max_stalled.push(int4(j.max_stalled, "max_stalled")?);
        unique_keys.push(j.unique_key.as_deref());
        group_keys.push(j.group_key.as_deref());
        concurrency_keys.push(j.concurrency_key.as_deref());
        parent_ids.push(j.parent_id.map(|p| p.to_string()));
        parent_on_dead.push(j.parent_id.map(|_| j.parent_on_dead.as_str()));
        pending_children.push(int4(j.pending_children, "pending_children")?);
        idempotency_keys.push(j.idempotency_key.as_str());
        created.push(j.created_at);
    }
    execute(
        c,
        &cx.sql.insert,
        &[
            &ids,
            &qs,
            &kinds,
            &payloads,
            &states,
            &priorities,
            &run_ats,
            &max_attempts,
            &backoffs,
            &timeouts,
            &heartbeats,
            &leases,
            &max_stalled,
            &unique_keys,
            &group_keys,
            &idempotency_keys,
            &created,
            &concurrency_keys,
            &parent_ids,
            &parent_on_dead,
            &pending_children,
        ],
    )
    .await?;
    notify(
        c,
        cx,
        new.iter()
            .filter(|&&i| jobs[i].state == JobState::Waiting)
            .map(|&i| jobs[i].queue.as_str()),
    )
    .await?;
    Ok(out)
}

/// Promotes the due delayed jobs of `queues` (at most `limit` per queue) and announces them.
async fn promote(
    c: &impl GenericClient,
    cx: &Cx,
    queues: &[&str],
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(JobId, Transitioned)>> {
    let rows = query(c, &cx.sql.promote, &[&queues, &now, &(limit as i64)]).await?;
    let moved = decode_moved(&rows, JobState::Delayed)?;
    notify(c, cx, moved.iter().map(|(_, t)| t.queue.as_str())).await?;
    Ok(moved)
}

/// Promotes the queues' due jobs, then claims the best waiting ones. Candidates are locked with
/// `FOR UPDATE SKIP LOCKED`: concurrent claimers (on any node) pass over each other's rows instead of
/// waiting for them, and no job is claimed twice.
pub(crate) async fn job_claim(c: &impl GenericClient, cx: &Cx, p: &JobClaim) -> Result<Claimed> {
    // A queue named twice would lock (and count) its candidates twice.
    let mut queues: Vec<(&str, &Rules)> = Vec::with_capacity(p.queues.len());
    for (q, rules) in p.queues.iter().zip(&p.rules) {
        if !queues.iter().any(|(seen, _)| *seen == q.as_str()) {
            queues.push((q, rules));
        }
    }
    let mut out = Claimed {
        promoted: Vec::new(),
        jobs: Vec::new(),
        retry_at: None,
        blocked: false,
    };
    if queues.is_empty() || p.limit == 0 {
        return Ok(out);
    }
    let names: Vec<&str> = queues.iter().map(|(q, _)| *q).collect();
    out.promoted = promote(c, cx, &names, p.now, p.promote_limit).await?;
    let limit = p.limit as i64;
    let cap = p
        .lease_cap_ms
        .map(|c| int8(c, "lease_cap_ms"))
        .transpose()?;
    let mut keyed: BTreeSet<String> = BTreeSet::new();
    if let [(queue, rules)] = queues[..]
        && !rules.limits_queue()
    {
        let rows = query(
            c,
            &cx.sql.claim_one,
            &[&queue, &p.lease, &p.worker_id, &p.now, &limit, &cap],
        )
        .await?;
        if !rows.is_empty() {
            out.jobs = decode_all(&rows)?;
            // RETURNING has no order: restore best-first.
            out.jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
            return Ok(out);
        }
    }
    // Queues without rules of their own that hold keyed jobs are claimed under flow control too.
    let unruled: Vec<&str> = queues
        .iter()
        .filter(|(_, r)| !r.limits_queue())
        .map(|(q, _)| *q)
        .collect();
    if !unruled.is_empty() {
        for row in query(c, &cx.sql.keyed_waiting, &[&unruled]).await? {
            keyed.insert(get(&row, 0)?);
        }
    }
    let controlled = |q: &str, r: &Rules| r.limits_queue() || keyed.contains(q);
    let plain: Vec<&str> = queues
        .iter()
        .filter(|(q, r)| !controlled(q, r))
        .map(|(q, _)| *q)
        .collect();
    let mut flow: Vec<(&str, &Rules)> = queues
        .iter()
        .filter(|(q, r)| controlled(q, r))
        .copied()
        .collect();
    // One lock per flow-controlled queue, held to the commit, taken in one order by every claim.
    let mut keys: Vec<i64> = flow
        .iter()
        .map(|(q, _)| lock_key(&[&cx.schema, "errand.admit", q]))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if !keys.is_empty() {
        query(c, &cx.sql.lock_keys, &[&keys]).await?;
    }
    let mut paused_flow = Vec::new();
    for (q, _) in &flow {
        let paused = query_opt(c, &cx.sql.queue_paused, &[q]).await?;
        if paused
            .map(|r| get::<bool>(&r, 0))
            .transpose()?
            .unwrap_or(false)
        {
            paused_flow.push(*q);
        }
    }
    flow.retain(|(q, _)| !paused_flow.contains(q));

    // Per queue, its candidates in the order it gives them: best first for a plain queue (the best
    // `limit` of each, locked), the plan's order for a flow-controlled one.
    let mut lists: Vec<Vec<(i32, i64, JobId)>> = Vec::new();
    let mut admitted: Vec<Option<QueueClaim>> = Vec::new();
    if !plain.is_empty() {
        let mut by_queue: HashMap<String, Vec<(i32, i64, JobId)>> = HashMap::new();
        for row in query(c, &cx.sql.claim_candidates, &[&plain, &limit]).await? {
            let id = parse_id(get(&row, 0)?)?;
            by_queue
                .entry(get(&row, 1)?)
                .or_default()
                .push((get(&row, 2)?, get(&row, 3)?, id));
        }
        for mut list in by_queue.into_values() {
            list.sort();
            lists.push(list);
            admitted.push(None);
        }
    }
    for (q, rules) in &flow {
        let a = admit(c, cx, q, rules, p.now, p.limit).await?;
        lists.push(a.ordered());
        admitted.push(Some(a));
    }
    let taken = admission::merge(&lists, p.limit);
    let mut chosen: Vec<String> = Vec::new();
    let mut left: Vec<String> = Vec::new();
    for ((list, n), a) in lists.iter().zip(&taken).zip(admitted) {
        let Some(a) = a else {
            chosen.extend(list[..*n].iter().map(|(_, _, id)| id.to_string()));
            left.extend(list[*n..].iter().map(|(_, _, id)| id.to_string()));
            continue;
        };
        let plan = a.kept(*n);
        chosen.extend(plan.jobs.iter().map(|id| id.to_string()));
        store_plan(c, cx, &a, &plan).await?;
        a.add_hints(&mut out.retry_at, &mut out.blocked);
    }
    // Rows locked but not taken were invisible to other claimers until this commits: tell them.
    if !left.is_empty() {
        notify(c, cx, plain.iter().copied()).await?;
    }
    if !chosen.is_empty() {
        let rows = query(
            c,
            &cx.sql.claim_ids,
            &[&chosen, &p.lease, &p.worker_id, &p.now, &cap],
        )
        .await?;
        out.jobs = decode_all(&rows)?;
        out.jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
    }
    Ok(out)
}

/// Stores a plan's bucket states and rotation cursor.
async fn store_plan(
    c: &impl GenericClient,
    cx: &Cx,
    a: &QueueClaim,
    plan: &admission::Plan,
) -> Result<()> {
    if !plan.buckets.is_empty() {
        let (mut scopes, mut keys, mut tokens, mut ats) = (vec![], vec![], vec![], vec![]);
        for (key, b) in &plan.buckets {
            let (scope, k) = key.parts();
            scopes.push(scope);
            keys.push(k);
            tokens.push(b.tokens);
            ats.push(b.at);
        }
        execute(
            c,
            &cx.sql.put_buckets,
            &[&a.queue, &scopes, &keys, &tokens, &ats],
        )
        .await?;
    }
    if let Some(cursor) = a.moved_cursor(plan) {
        execute(c, &cx.sql.put_fair_cursor, &[&a.queue, &cursor]).await?;
    }
    Ok(())
}

/// Gathers what [`admission::plan`] needs for a claim of `want` from `queue`, and plans. The caller
/// holds the queue's admission lock.
async fn admit(
    c: &impl GenericClient,
    cx: &Cx,
    queue: &str,
    rules: &Rules,
    now: Timestamp,
    want: usize,
) -> Result<QueueClaim> {
    let cursor: String = match query_opt(c, &cx.sql.fair_cursor, &[&queue]).await? {
        Some(row) => get::<Option<String>>(&row, 0)?.unwrap_or_default(),
        None => String::new(),
    };
    let max = admission::MAX_GROUPS_PER_CLAIM;
    let read_keys = |after: String, n: usize| async move {
        let n = n as i32;
        let rows = query(c, &cx.sql.keys_after, &[&queue, &after, &n]).await?;
        rows.iter()
            .map(|r| get::<String>(r, 0))
            .collect::<Result<Vec<String>>>()
    };
    let after = read_keys(cursor.clone(), max).await?;
    let upto = if cursor.is_empty() || after.len() >= max {
        Vec::new()
    } else {
        read_keys(String::new(), max - after.len()).await?
    };
    let ungrouped: bool = match query_opt(c, &cx.sql.ungrouped_waiting, &[&queue]).await? {
        Some(row) => get(&row, 0)?,
        None => false,
    };
    let mut keys = admission::rotation(&cursor, after, ungrouped, upto);
    keys.truncate(max);

    let per_group = admission::candidates_per_group(want, keys.len()) as i64;
    let key_limit = i64::from(rules.key_concurrency);
    let grouped: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| !k.is_empty())
        .collect();
    let mut rows = Vec::new();
    if keys.iter().any(String::is_empty) {
        rows.extend(
            query(
                c,
                &cx.sql.ungrouped_candidates,
                &[&queue, &key_limit, &per_group],
            )
            .await?,
        );
    }
    if !grouped.is_empty() {
        rows.extend(
            query(
                c,
                &cx.sql.grouped_candidates,
                &[&queue, &key_limit, &per_group, &grouped],
            )
            .await?,
        );
    }
    let mut jobs_of: HashMap<String, Vec<admission::Candidate>> = HashMap::new();
    for row in &rows {
        jobs_of
            .entry(get(row, 0)?)
            .or_default()
            .push(admission::Candidate {
                id: parse_id(get(row, 1)?)?,
                priority: get(row, 2)?,
                run_at: get(row, 3)?,
                concurrency_key: get(row, 4)?,
                key_active: get::<i64>(row, 5)?.max(0) as u64,
            });
    }
    let mut active_of: HashMap<String, u64> = HashMap::new();
    if rules.group_concurrency.is_some() && !grouped.is_empty() {
        for row in query(c, &cx.sql.group_active, &[&queue, &grouped]).await? {
            active_of.insert(get(&row, 0)?, get::<i64>(&row, 1)?.max(0) as u64);
        }
    }
    let mut queue_bucket = None;
    let mut bucket_of: HashMap<String, Bucket> = HashMap::new();
    if rules.rate_limit.is_some() || rules.group_rate_limit.is_some() {
        for row in query(c, &cx.sql.buckets, &[&queue, &grouped]).await? {
            let b = Bucket {
                tokens: get(&row, 2)?,
                at: get(&row, 3)?,
            };
            match BucketKey::from_parts(get(&row, 0)?, get(&row, 1)?) {
                Some(BucketKey::Queue) => queue_bucket = Some(b),
                Some(BucketKey::Group(g)) => {
                    bucket_of.insert(g, b);
                }
                None => {}
            }
        }
    }
    let queue_active: i64 = if rules.concurrency.is_some() {
        let row = query_opt(c, &cx.sql.count_state, &[&queue, &"active"]).await?;
        row.map(|r| get(&r, 0)).transpose()?.unwrap_or(0)
    } else {
        0
    };
    let groups = keys
        .into_iter()
        .map(|key| admission::Group {
            active: active_of.get(&key).copied().unwrap_or(0),
            bucket: if rules.group_rate_limit.is_some() {
                bucket_of.get(&key).copied()
            } else {
                None
            },
            jobs: jobs_of.remove(&key).unwrap_or_default(),
            key,
        })
        .collect();
    let gathered = admission::Gathered {
        rules: rules.clone(),
        now,
        queue_active: queue_active.max(0) as u64,
        queue_bucket: if rules.rate_limit.is_some() {
            queue_bucket
        } else {
            None
        },
        groups,
    };
    Ok(QueueClaim::new(queue, cursor, gathered, want))
}

pub(crate) async fn lease_renew(
    c: &impl GenericClient,
    cx: &Cx,
    p: &LeaseRenew,
) -> Result<Renewed> {
    let id = p.id.to_string();
    let progress = p.progress.as_ref().map(|r| r.get());
    let row = query_opt(c, &cx.sql.renew, &[&id, &p.token, &p.now, &progress])
        .await?
        .ok_or(Error::LeaseLost)?;
    Ok(Renewed {
        lease_expires_at: get(&row, 0)?,
        cancel_requested: get(&row, 1)?,
        queue: get(&row, 2)?,
        worker_id: get(&row, 3)?,
    })
}

/// A plain completion's job, keyed by `(id, lease token)`: queue, kind, attempts, parent.
type Completed = (String, String, u32, Option<String>, Option<Timestamp>);

/// Applies transitions. Completions — the bulk of the traffic — go through one set-based statement;
/// everything else (failures, stalls, replays: the rare paths) row by row. Items whose guard failed are
/// then looked at one by one to say why.
pub(crate) async fn job_transition(
    c: &impl GenericClient,
    cx: &Cx,
    ts: &[Transition],
) -> Result<Vec<Result<Transitioned>>> {
    // Revivals check that no other job holds their unique key: under the same lock as
    // inserts of that key, taken before any row lock.
    let reviving: Vec<String> = ts
        .iter()
        .filter(|t| t.unique_free_since.is_some())
        .map(|t| t.id.to_string())
        .collect();
    if !reviving.is_empty() {
        let mut keys = Vec::new();
        for row in query(c, &cx.sql.unique_keys_of, &[&reviving]).await? {
            keys.push((get::<String>(&row, 0)?, get::<String>(&row, 1)?));
        }
        lock_unique_keys(c, cx, keys).await?;
    }

    // Keyed by id and token: a batch may name one job twice, with a stale token and the current one.
    let mut completed: HashMap<(String, String), Completed> = HashMap::new();
    let plain: Vec<&Transition> = ts.iter().filter(|t| t.is_plain_completion()).collect();
    if !plain.is_empty() {
        let ids: Vec<String> = plain.iter().map(|t| t.id.to_string()).collect();
        let tokens: Vec<&str> = plain
            .iter()
            .map(|t| match &t.guard {
                Guard::Lease(token) => token.as_str(),
                Guard::State(_) => "",
            })
            .collect();
        // Results are passed as the text they are, never parsed again: a parse and re-print could change
        // a float's digits.
        let results: Vec<Option<&str>> = plain
            .iter()
            .map(|t| t.result.as_ref().map(|r| r.get()))
            .collect();
        // Per item: a batch may join acknowledgements of several requests, each with its own clock.
        let nows: Vec<Timestamp> = plain.iter().map(|t| t.now).collect();
        for row in query(c, &cx.sql.complete_many, &[&ids, &tokens, &results, &nows]).await? {
            completed.insert(
                (get(&row, 0)?, get(&row, 1)?),
                (
                    get(&row, 2)?,
                    get(&row, 3)?,
                    count(get(&row, 4)?, "attempts")?,
                    get(&row, 5)?,
                    get(&row, 6)?,
                ),
            );
        }
    }

    let mut out = Vec::with_capacity(ts.len());
    let mut woken: Vec<String> = Vec::new();
    for t in ts {
        let id = t.id.to_string();
        let (from, token) = match &t.guard {
            Guard::Lease(token) => (JobState::Active, Some(token.as_str())),
            Guard::State(s) => (*s, None),
        };
        let applied = if t.is_plain_completion() {
            // `remove`: if a batch names one lease twice, only the first is told it applied it.
            completed
                .remove(&(id.clone(), token.unwrap_or_default().to_string()))
                .map(|(queue, kind, attempts, parent, started_at)| {
                    let t = Transitioned {
                        started_at,
                        ..Transitioned::new(queue, kind, from, attempts)
                    };
                    (t, parent, None)
                })
        } else {
            let error = t.error.as_ref().map(json_text::<ErrorRecord>).transpose()?;
            let attempts: i32 = match t.attempts {
                Attempts::Keep => 0,
                Attempts::GiveBack => 1,
                Attempts::Reset => 2,
            };
            let row = query_opt(
                c,
                &cx.sql.transition,
                &[
                    &id,
                    &from.as_str(),
                    &token,
                    &t.to.as_str(),
                    &t.run_at,
                    &t.result.as_ref().map(|r| r.get()),
                    &error,
                    &t.dead_reason.map(DeadReason::as_str),
                    &attempts,
                    &(t.stalled as i32),
                    &t.to.is_final(),
                    &t.now,
                    &t.expect_cancel_requested,
                    &t.unique_free_since,
                    &t.expect_lease_expires_at,
                ],
            )
            .await?;
            match row {
                Some(r) => Some((
                    Transitioned {
                        started_at: get(&r, 5)?,
                        ..Transitioned::new(
                            get(&r, 0)?,
                            get(&r, 1)?,
                            from,
                            count(get(&r, 2)?, "attempts")?,
                        )
                    },
                    get::<Option<String>>(&r, 3)?,
                    get::<Option<String>>(&r, 4)?,
                )),
                None => None,
            }
        };
        out.push(match applied {
            Some((mut done, parent, on_dead)) => {
                if t.to == JobState::Waiting {
                    woken.push(done.queue.clone());
                }
                if let Some(parent) = parent {
                    done.parent = parent_effect(c, cx, &id, &parent, on_dead, t.to, t.now).await?;
                    if let Some(p) = &done.parent
                        && p.1 == JobState::Waiting
                    {
                        woken.push(p.2.queue.clone());
                    }
                }
                Ok(done)
            }
            None => {
                let current = match query_opt(c, &cx.sql.probe, &[&id]).await? {
                    Some(r) => Some((
                        get::<String>(&r, 0)?,
                        get::<Option<String>>(&r, 1)?,
                        get::<bool>(&r, 2)?,
                    )),
                    None => None,
                };
                Err(t.guard_failure(&id, current))
            }
        });
    }
    notify(c, cx, woken.iter().map(String::as_str)).await?;
    Ok(out)
}

/// Replaces a job's input if it is still in state `from`; a job made waiting is announced.
pub(crate) async fn job_replace(c: &impl GenericClient, cx: &Cx, p: &JobReplace) -> Result<bool> {
    let n = execute(
        c,
        &cx.sql.job_replace,
        &[
            &p.id.to_string(),
            &p.from.as_str(),
            &p.payload.get(),
            &p.priority,
            &p.run_at,
            &p.state.as_str(),
        ],
    )
    .await?;
    if n > 0 && p.state == JobState::Waiting && p.from != JobState::Waiting {
        let queue: String = get(
            &query_opt(c, &cx.sql.job_log_queue, &[&p.id.to_string()])
                .await?
                .ok_or_else(|| Error::NotFound(format!("job {}", p.id)))?,
            0,
        )?;
        notify(c, cx, [queue.as_str()]).await?;
    }
    Ok(n > 0)
}

/// Appends log lines under the job's lease, then keeps only its latest `keep` lines.
pub(crate) async fn job_log_append(
    c: &impl GenericClient,
    cx: &Cx,
    p: &JobLogAppend,
) -> Result<()> {
    let id = p.id.to_string();
    let current: Option<(String, Option<String>, i32)> =
        match query_opt(c, &cx.sql.job_log_guard, &[&id]).await? {
            Some(r) => Some((get(&r, 0)?, get(&r, 1)?, get(&r, 2)?)),
            None => None,
        };
    p.check(
        current
            .as_ref()
            .map(|(state, token, _)| (state.as_str(), token.as_deref())),
    )?;
    let attempt = current.map_or(0, |(_, _, attempt)| attempt);
    execute(
        c,
        &cx.sql.job_log_insert,
        &[&id, &p.now, &attempt, &p.lines],
    )
    .await?;
    execute(c, &cx.sql.job_log_trim, &[&id, &(p.keep as i64)]).await?;
    Ok(())
}

pub(crate) async fn job_logs(c: &impl GenericClient, cx: &Cx, id: JobId) -> Result<Vec<LogLine>> {
    query(c, &cx.sql.job_logs, &[&id.to_string()])
        .await?
        .iter()
        .map(|r| {
            Ok(LogLine {
                at: get(r, 0)?,
                attempt: count(get(r, 1)?, "attempt")?,
                line: get(r, 2)?,
            })
        })
        .collect()
}

pub(crate) async fn job_request_cancel(
    c: &impl GenericClient,
    cx: &Cx,
    id: JobId,
) -> Result<Transitioned> {
    let row = query_opt(c, &cx.sql.request_cancel, &[&id.to_string()])
        .await?
        .ok_or_else(|| Error::Conflict(format!("job {id} is not active")))?;
    Ok(Transitioned::new(
        get(&row, 0)?,
        get(&row, 1)?,
        JobState::Active,
        count(get(&row, 2)?, "attempts")?,
    ))
}

/// What a flow child entering `to` does to its parent, in the transaction of the child's change (see
/// `Store::job_transition`): the parent's move, if it moved.
async fn parent_effect(
    c: &impl GenericClient,
    cx: &Cx,
    child: &str,
    parent: &str,
    on_dead: Option<String>,
    to: JobState,
    now: Timestamp,
) -> Result<Option<ParentMove>> {
    let Some(effect) = ParentEffect::of(child, on_dead.as_deref(), to, now)? else {
        return Ok(None);
    };
    // A child counts toward its parent once, even if it is retried and ends again.
    if effect == ParentEffect::Release && execute(c, &cx.sql.child_counted, &[&child]).await? == 0 {
        return Ok(None);
    }
    let row = match effect {
        ParentEffect::Release => query_opt(c, &cx.sql.parent_release, &[&parent, &now]).await?,
        ParentEffect::Fail(error) => {
            let error = json_text(&error)?;
            query_opt(c, &cx.sql.parent_fail, &[&parent, &now, &error]).await?
        }
    };
    let Some(row) = row else { return Ok(None) };
    let state = parse_state(get(&row, 0)?)?;
    if state == JobState::WaitingChildren {
        return Ok(None);
    }
    let moved = Transitioned::new(
        get(&row, 1)?,
        get(&row, 2)?,
        JobState::WaitingChildren,
        count(get(&row, 3)?, "attempts")?,
    );
    Ok(Some(Box::new((parse_id(parent)?, state, moved))))
}

pub(crate) async fn job_children(
    c: &impl GenericClient,
    cx: &Cx,
    parent: JobId,
    limit: usize,
) -> Result<Vec<Job>> {
    let rows = query(c, &cx.sql.children, &[&parent.to_string(), &(limit as i64)]).await?;
    decode_all(&rows)
}

pub(crate) async fn job_promote_due(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, Timestamp, usize),
) -> Result<Vec<(JobId, Transitioned)>> {
    let (queue, now, limit) = p;
    promote(c, cx, &[queue.as_str()], *now, *limit).await
}

/// Retention walks `jobs_by_state` in id (creation) order rather than keeping an index of finish times,
/// which every completion would pay for. Jobs finish roughly in the order they were created, so "the
/// oldest" by id is, for retention, close enough to "the longest finished".
pub(crate) async fn job_prune(c: &impl GenericClient, cx: &Cx, p: &JobPrune) -> Result<u64> {
    let mut deleted = 0u64;
    for state in &p.states {
        let state = state.as_str();
        let budget = (p.limit as u64).saturating_sub(deleted);
        if budget == 0 {
            break;
        }
        if let Some(before) = p.finished_before {
            deleted += count_of(
                c,
                &cx.sql.prune_finished_before,
                &[
                    &p.queue,
                    &state,
                    &before,
                    &(budget as i64),
                    &p.unique_finished_since,
                ],
            )
            .await?;
        }
        let budget = (p.limit as u64).saturating_sub(deleted);
        if let (Some(keep), true) = (p.keep, budget > 0) {
            // The newest `keep` stay; the oldest beyond them go.
            let rows = query(c, &cx.sql.count_state, &[&p.queue, &state]).await?;
            let n: i64 = match rows.first() {
                Some(r) => get(r, 0)?,
                None => 0,
            };
            let excess = (n.max(0) as u64).saturating_sub(keep).min(budget);
            if excess > 0 {
                deleted += count_of(
                    c,
                    &cx.sql.prune_oldest,
                    &[&p.queue, &state, &(excess as i64), &p.unique_finished_since],
                )
                .await?;
            }
        }
    }
    // Keys no longer held leave the ledger.
    execute(
        c,
        &cx.sql.unique_keys_release,
        &[&p.queue, &p.unique_finished_since, &(p.limit as i64)],
    )
    .await?;
    Ok(deleted)
}

/// The count a `SELECT count(*) …` statement answers.
async fn count_of(c: &impl GenericClient, sql: &str, params: &Params<'_>) -> Result<u64> {
    let rows = query(c, sql, params).await?;
    let n: i64 = match rows.first() {
        Some(r) => get(r, 0)?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}

pub(crate) async fn job_delete(c: &impl GenericClient, cx: &Cx, p: &JobDelete) -> Result<u64> {
    if p.ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = p.ids.iter().map(|(id, _)| id.to_string()).collect();
    let states: Vec<&str> = p.ids.iter().map(|(_, s)| s.as_str()).collect();
    execute(c, &cx.sql.delete, &[&ids, &states]).await
}

pub(crate) async fn queue_put(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, QueueConfig),
) -> Result<()> {
    let (name, config) = p;
    execute(c, &cx.sql.queue_put, &[name, &json_text(config)?]).await?;
    Ok(())
}

/// Pauses or resumes a queue. A resumed queue's waiting jobs are claimable again: other nodes' fetches
/// are woken as for new jobs.
pub(crate) async fn queue_set_paused(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, bool),
) -> Result<()> {
    let (name, paused) = p;
    execute(c, &cx.sql.queue_set_paused, &[name, paused]).await?;
    if !paused {
        notify(c, cx, [name.as_str()]).await?;
    }
    Ok(())
}

pub(crate) async fn try_lead(
    c: &impl GenericClient,
    cx: &Cx,
    role: &str,
    holder: &str,
    ttl_ms: u64,
) -> Result<bool> {
    // Capped far beyond any real lease so that the interval arithmetic cannot overflow.
    const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3_600_000;
    let ttl = ttl_ms.min(MAX_TTL_MS) as i64;
    let row = query_opt(c, &cx.sql.try_lead, &[&role, &holder, &ttl]).await?;
    Ok(match row {
        Some(r) => get::<&str>(&r, 0)? == holder,
        None => false,
    })
}

// ---- reads ----------------------------------------------------------------------------------------

pub(crate) async fn job_expired(
    c: &impl GenericClient,
    cx: &Cx,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Job>> {
    decode_all(&query(c, &cx.sql.expired, &[&now, &(limit as i64)]).await?)
}

pub(crate) async fn job_get(c: &impl GenericClient, cx: &Cx, id: JobId) -> Result<Option<Job>> {
    query_opt(c, &cx.sql.get, &[&id.to_string()])
        .await?
        .as_ref()
        .map(decode_job)
        .transpose()
}

pub(crate) async fn job_list(c: &impl GenericClient, cx: &Cx, p: &JobList) -> Result<Vec<Job>> {
    let after = p.after.map(|a| a.to_string()).unwrap_or_default();
    let (queue, state, limit) = (&p.queue, p.state.as_str(), p.limit as i64);
    let rows = match &p.unique_key {
        None => query(c, &cx.sql.list, &[queue, &state, &after, &p.kind, &limit]).await?,
        Some(key) => {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [queue, &state, &after, &p.kind, &limit, key];
            query(c, &cx.sql.list_unique, &params).await?
        }
    };
    decode_all(&rows)
}

fn decode_queue(r: &Row) -> Result<QueueInfo> {
    let config: Option<String> = get(r, 1)?;
    Ok(QueueInfo {
        name: get(r, 0)?,
        config: match config {
            Some(c) => serde_json::from_str(&c).map_err(|e| corrupt_field("queue config", e))?,
            None => QueueConfig::default(),
        },
        paused: get(r, 2)?,
    })
}

pub(crate) async fn queue_get(
    c: &impl GenericClient,
    cx: &Cx,
    name: &str,
) -> Result<Option<QueueInfo>> {
    query_opt(c, &cx.sql.queue_get, &[&name])
        .await?
        .as_ref()
        .map(decode_queue)
        .transpose()
}

pub(crate) async fn queue_list(c: &impl GenericClient, cx: &Cx) -> Result<Vec<QueueInfo>> {
    query(c, &cx.sql.queue_list, &[])
        .await?
        .iter()
        .map(decode_queue)
        .collect()
}

pub(crate) async fn audit_append(
    c: &impl GenericClient,
    cx: &Cx,
    e: &errand_core::AuditEntry,
) -> Result<()> {
    let detail = e.detail.as_ref().map(|d| d.get());
    query(
        c,
        &cx.sql.audit_append,
        &[&e.at, &e.key, &e.action, &e.target, &detail],
    )
    .await?;
    Ok(())
}

pub(crate) async fn audit_list(
    c: &impl GenericClient,
    cx: &Cx,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<errand_core::AuditEntry>> {
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let rows = query(c, &cx.sql.audit_list, &[&before, &(limit as i64)]).await?;
    rows.iter()
        .map(|r| {
            let id: i64 = get(r, 0)?;
            let detail: Option<String> = get(r, 5)?;
            Ok(errand_core::AuditEntry {
                id: id.max(0) as u64,
                at: get(r, 1)?,
                key: get(r, 2)?,
                action: get(r, 3)?,
                target: get(r, 4)?,
                detail: detail.map(raw_json).transpose()?,
            })
        })
        .collect()
}

pub(crate) async fn queue_stats_all(
    c: &impl GenericClient,
    cx: &Cx,
    now: Timestamp,
) -> Result<Vec<QueueStats>> {
    let mut all: std::collections::BTreeMap<String, QueueStats> = Default::default();
    for row in query(c, &cx.sql.state_counts_all, &[]).await? {
        let name: String = get(&row, 0)?;
        let stats = all.entry(name.clone()).or_insert_with(|| QueueStats {
            queue: name,
            ..QueueStats::default()
        });
        stats.paused = get(&row, 1)?;
        let state: Option<String> = get(&row, 2)?;
        let n: Option<i64> = get(&row, 3)?;
        if let (Some(s), Some(n)) = (state.as_deref().and_then(JobState::parse), n) {
            stats.set_count(s, n.max(0) as u64);
        }
    }
    for row in query(c, &cx.sql.oldest_waiting_all, &[]).await? {
        let name: String = get(&row, 0)?;
        let oldest: Option<i64> = get(&row, 1)?;
        if let Some(stats) = all.get_mut(&name) {
            stats.oldest_waiting_age_ms = oldest.map_or(0, |t| (now - t).max(0) as u64);
        }
    }
    Ok(all.into_values().collect())
}

pub(crate) async fn queue_stats(
    c: &impl GenericClient,
    cx: &Cx,
    name: &str,
    now: Timestamp,
) -> Result<QueueStats> {
    let mut stats = QueueStats {
        queue: name.to_string(),
        ..QueueStats::default()
    };
    stats.paused = match query_opt(c, &cx.sql.queue_paused, &[&name]).await? {
        Some(r) => get(&r, 0)?,
        None => false,
    };
    for row in query(c, &cx.sql.state_counts, &[&name]).await? {
        let state: String = get(&row, 0)?;
        let n: i64 = get(&row, 1)?;
        if let Some(s) = JobState::parse(&state) {
            stats.set_count(s, n.max(0) as u64);
        }
    }
    let oldest: Option<i64> = match query_opt(c, &cx.sql.oldest_waiting, &[&name]).await? {
        Some(r) => get(&r, 0)?,
        None => None,
    };
    stats.oldest_waiting_age_ms = oldest.map_or(0, |t| (now - t).max(0) as u64);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_schema_quoted() {
        let sql = Sql::new("errand_x");
        assert!(sql.get.contains("FROM \"errand_x\".jobs"), "{}", sql.get);
        assert!(!sql.claim_one.contains("{s}"));
    }

    #[test]
    fn channels_fit_in_an_identifier_and_stay_distinct() {
        assert_eq!(due_channel("errand"), "errand_due");
        let a = due_channel(&format!("{}a", "x".repeat(62)));
        let b = due_channel(&format!("{}b", "x".repeat(62)));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
    }
}
