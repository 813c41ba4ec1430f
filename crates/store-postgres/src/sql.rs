//! The text of every statement the PostgreSQL store runs, with the schema's name written in, and the
//! context each operation gets ([`Cx`]: the schema, the statements, the wake-up channel). The table of
//! statements reads best flat, one after another, so it stays in one file. Ends at the text: running a
//! statement is `ops`'s, connections and transactions `conn`'s.
//!
//! Every statement is prepared once per connection (the pool caches them) with the schema's name written
//! in: [`Sql`] holds the texts, built when the store connects.
//!
//! **A job found by its id is checked for its state through a sub-select** (`state = (SELECT
//! 'active')`). Written plainly, the state lets the planner answer from a partial index on that state
//! (`jobs_active`), and with statistics taken while few jobs were active — a table of millions of
//! finished jobs — it prefers scanning every active job to the primary key: a heartbeat or an
//! acknowledgement then read every active job, and a drain on a store of 10,000,000 finished jobs ran
//! at 1,400 jobs/s instead of 20,000. A sub-select's value is not known when the plan is made, so only
//! the primary key can serve.

use crate::conn::{lock_key, quote_ident};

/// Every column of `jobs`, in the order `ops::job_row` reads them.
macro_rules! job_columns {
    () => {
        "id, queue, kind, payload, state, priority, run_at, attempts, max_attempts, backoff, \
         timeout_ms, heartbeat_ms, lease_ms, max_stalled, stalls, unique_key, group_key, \
         idempotency_key, progress, result, errors, dead_reason, cancel_requested, lease_token, \
         worker_id, lease_expires_at, deadline_at, created_at, started_at, finished_at, \
         concurrency_key, parent_id, parent_on_dead, pending_children, expires_at"
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
    job_replace = "UPDATE {s}.jobs SET payload = $3, priority = $4, run_at = $5, state = $6, \
        expires_at = $7 WHERE id = $1 AND state = $2";
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
            pending_children, expires_at) \
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], \
            $7::bigint[], $8::int[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], \
            $13::int[], $14::text[], $15::text[], $16::text[], $17::bigint[], $18::text[], \
            $19::text[], $20::text[], $21::int[], $22::bigint[])";
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
        WHERE id = $1 AND state = (SELECT 'active') AND lease_token = $2 AND lease_expires_at > $3 \
        RETURNING lease_expires_at, cancel_requested, queue, worker_id";
    /// Plain completions in one statement. A batch naming one job twice updates it once.
    complete_many = "UPDATE {s}.jobs AS j SET state = 'completed', result = c.c_result, \
            finished_at = c.c_now, lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL \
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) \
            AS c(c_id, c_token, c_result, c_now) \
        WHERE j.id = c.c_id AND j.state = (SELECT 'active') AND j.lease_token = c.c_token \
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
            dead_reason = $8::text, fingerprint = $16::text, \
            attempts = CASE $9::int WHEN 1 THEN GREATEST(attempts - 1, 0) WHEN 2 THEN 0 \
                       ELSE attempts END, \
            stalls = CASE $9::int WHEN 2 THEN 0 ELSE stalls + $10::int END, \
            lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL, \
            cancel_requested = CASE WHEN $11::boolean THEN cancel_requested ELSE false END, \
            finished_at = CASE WHEN $11::boolean THEN $12::bigint ELSE NULL END \
        WHERE id = $1 AND state = (SELECT $2::text) AND ($3::text IS NULL OR lease_token = $3::text) \
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
    /// Sets dead job `$1`'s error fingerprint (a parent `parent_fail` killed).
    fingerprint_dead = "UPDATE {s}.jobs SET fingerprint = $2 WHERE id = $1 AND state = (SELECT 'dead')";
    children = concat!("SELECT ", job_columns!(), " FROM {s}.jobs WHERE parent_id = $1 \
        ORDER BY id LIMIT $2");
    probe = "SELECT state, lease_token, cancel_requested FROM {s}.jobs WHERE id = $1";
    unique_keys_of = "SELECT DISTINCT queue, unique_key FROM {s}.jobs \
        WHERE id = ANY($1::text[]) AND unique_key IS NOT NULL";
    request_cancel = "UPDATE {s}.jobs SET cancel_requested = true \
        WHERE id = $1 AND state = (SELECT 'active') \
        RETURNING queue, kind, attempts";
    expired = concat!("SELECT ", job_columns!(), " FROM {s}.jobs WHERE state = 'active' \
        AND (lease_expires_at <= $1 OR deadline_at <= $1) LIMIT $2");
    get = concat!("SELECT ", job_columns!(), " FROM {s}.jobs WHERE id = $1");
    /// Not started, past their time to live: the front of the partial index `jobs_expiring`.
    ttl_passed = concat!("SELECT ", job_columns!(), " FROM {s}.jobs \
        WHERE expires_at <= $1 AND expires_at IS NOT NULL AND state IN ('waiting', 'delayed') \
        ORDER BY expires_at LIMIT $2");
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
    /// Kept by triggers (migration 8): the folded counts plus the deltas not yet folded.
    state_counts = "SELECT state, SUM(n)::BIGINT FROM (\
        SELECT state, n FROM {s}.job_counts WHERE queue = $1 \
        UNION ALL SELECT state, n FROM {s}.job_count_deltas WHERE queue = $1) AS c GROUP BY state";
    /// Queue `$1`'s active jobs: its folded count plus the deltas not yet folded.
    flow_active = "SELECT COALESCE(SUM(n), 0)::BIGINT FROM (\
        SELECT n FROM {s}.job_counts WHERE queue = $1 AND state = 'active' \
        UNION ALL SELECT n FROM {s}.job_count_deltas WHERE queue = $1 AND state = 'active') AS c";
    /// Queue `$1`'s busiest groups (at most `$2`), by active jobs.
    flow_groups = "SELECT group_key, COUNT(*)::BIGINT FROM {s}.jobs \
        WHERE queue = $1 AND state = 'active' AND group_key IS NOT NULL \
        GROUP BY group_key ORDER BY 2 DESC, 1 LIMIT $2";
    /// Queue `$1`'s buckets: its own (key '') and its groups' lowest first, at most `$2` + 1.
    flow_buckets = "(SELECT scope, key, tokens, at FROM {s}.buckets WHERE queue = $1 AND scope = 'queue') \
        UNION ALL (SELECT scope, key, tokens, at FROM {s}.buckets WHERE queue = $1 AND scope = 'group' \
        ORDER BY tokens, key LIMIT $2)";
    /// The buckets of queue `$1`'s groups `$2`.
    flow_group_buckets = "SELECT key, tokens, at FROM {s}.buckets \
        WHERE queue = $1 AND scope = 'group' AND key = ANY($2::text[])";
    /// Each table of the schema `$1` with the bytes of its data (TOAST included) and of its indexes.
    footprint = "SELECT c.relname::TEXT, pg_table_size(c.oid)::BIGINT, pg_indexes_size(c.oid)::BIGINT \
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace \
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname";
    /// Queue `$1`'s jobs not yet started, for its `max_waiting` (the insert holds the queue's lock).
    waiting_held = "SELECT COALESCE(SUM(n), 0)::BIGINT FROM (\
        SELECT n FROM {s}.job_counts WHERE queue = $1 AND state IN ('waiting', 'delayed') \
        UNION ALL SELECT n FROM {s}.job_count_deltas \
        WHERE queue = $1 AND state IN ('waiting', 'delayed')) AS c";
    /// Bounded work even with a million waiting: the earliest due time among the 1,000 longest queued.
    oldest_waiting = "SELECT MIN(run_at) FROM (SELECT run_at FROM {s}.jobs \
        WHERE (queue, state, id) > ($1, 'waiting', '') AND queue = $1 AND state = 'waiting' \
        ORDER BY queue, state, id LIMIT 1000) AS w";
    audit_append = "INSERT INTO {s}.audit (at, key, action, target, detail) \
        VALUES ($1, $2, $3, $4, $5)";
    audit_list = "SELECT id, at, key, action, target, detail FROM {s}.audit WHERE id < $1 \
        ORDER BY id DESC LIMIT $2";
    audit_prune = "DELETE FROM {s}.audit WHERE id IN \
        (SELECT id FROM (SELECT id, at FROM {s}.audit ORDER BY id LIMIT $2) AS o WHERE at < $1)";
    /// Every queue's counts in one round trip, as `state_counts`.
    state_counts_all = "SELECT q.name, q.paused, c.state, c.n FROM {s}.queues AS q \
        LEFT JOIN (SELECT queue, state, SUM(n)::BIGINT AS n FROM (\
            SELECT queue, state, n FROM {s}.job_counts \
            UNION ALL SELECT queue, state, n FROM {s}.job_count_deltas) AS u \
            GROUP BY queue, state) AS c ON c.queue = q.name";
    /// Moves the deltas the triggers appended into `job_counts`, in one statement: a reader sees them
    /// either as deltas or as counts. In (queue, state) order, so that two nodes folding at once wait
    /// for one another rather than deadlock.
    fold_counts = "WITH d AS (DELETE FROM {s}.job_count_deltas RETURNING queue, state, n) \
        INSERT INTO {s}.job_counts AS c (queue, state, n) \
        SELECT queue, state, SUM(n) FROM d GROUP BY queue, state ORDER BY queue, state \
        ON CONFLICT (queue, state) DO UPDATE SET n = c.n + excluded.n";
    /// Queue `$1`'s dead-letter groups, kept by triggers (migrations 9 and 10): the folded counts plus the
    /// deltas not yet folded.
    dead_group_counts = "SELECT fingerprint, SUM(n)::BIGINT FROM (\
        SELECT fingerprint, n FROM {s}.dead_groups WHERE queue = $1 \
        UNION ALL SELECT fingerprint, n FROM {s}.dead_group_deltas WHERE queue = $1) AS g \
        GROUP BY fingerprint HAVING SUM(n) > 0";
    /// The latest dead job of each fingerprint `$2` of queue `$1` (and the fingerprint, after the
    /// job's columns): one index seek each.
    dead_group_latest = concat!("SELECT ", job_columns!(), ", f.fp FROM unnest($2::text[]) AS f(fp) \
        CROSS JOIN LATERAL (SELECT * FROM {s}.jobs WHERE queue = $1 AND state = 'dead' \
            AND fingerprint = f.fp ORDER BY finished_at DESC, id DESC LIMIT 1) AS j");
    /// As `fold_counts`, for the dead-letter groups; a group left empty goes.
    fold_dead_groups = "WITH d AS (DELETE FROM {s}.dead_group_deltas RETURNING queue, fingerprint, n) \
        INSERT INTO {s}.dead_groups AS g (queue, fingerprint, n) \
        SELECT queue, fingerprint, SUM(n) FROM d GROUP BY queue, fingerprint \
        ORDER BY queue, fingerprint \
        ON CONFLICT (queue, fingerprint) DO UPDATE SET n = g.n + excluded.n";
    drop_empty_dead_groups = "DELETE FROM {s}.dead_groups WHERE n <= 0";
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
