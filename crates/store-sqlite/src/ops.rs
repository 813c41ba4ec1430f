//! The SQL of each store operation, as plain functions over a connection. Writes run inside the writer's
//! group transaction; reads on a reader connection.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Row, params};

use errand_core::admission::{self, Bucket, BucketKey, QueueClaim, Rules};
use errand_core::engine::raw_json;
use errand_core::store::{
    Attempts, Claimed, Guard, Inserted, JobClaim, JobDelete, JobInsert, JobList, JobLogAppend,
    JobPrune, JobReplace, JobSpec, LeaseRenew, ParentEffect, ParentMove, Renewed, Transition,
    Transitioned, UNIQUE_HOLDING_STATES,
};
use errand_core::{
    DeadReason, Error, ErrorRecord, Job, JobId, JobState, Lease, LogLine, ParentOnDead,
    QueueConfig, QueueInfo, QueueStats, Result, Timestamp,
};

use crate::conn::backend;

/// Every column of `jobs`, in the order [`job_from_row`] reads them.
pub(crate) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, run_at, attempts, \
    max_attempts, backoff, timeout_ms, heartbeat_ms, lease_ms, max_stalled, stalls, unique_key, \
    group_key, idempotency_key, progress, result, errors, dead_reason, cancel_requested, lease_token, \
    worker_id, lease_expires_at, deadline_at, created_at, started_at, finished_at, concurrency_key, \
    parent_id, parent_on_dead, pending_children";

/// A `jobs` row as SQLite gave it: copied out by the writer thread, decoded into a [`Job`] by the caller
/// (off the writer, whose time is the store's throughput).
#[derive(Debug)]
pub(crate) struct JobRow {
    id: String,
    queue: String,
    kind: String,
    payload: String,
    state: String,
    priority: i32,
    run_at: i64,
    attempts: u32,
    max_attempts: u32,
    backoff: String,
    timeout_ms: i64,
    heartbeat_ms: Option<i64>,
    lease_ms: i64,
    max_stalled: u32,
    stalls: u32,
    unique_key: Option<String>,
    group_key: Option<String>,
    idempotency_key: String,
    progress: Option<String>,
    result: Option<String>,
    errors: Option<String>,
    dead_reason: Option<String>,
    cancel_requested: bool,
    lease_token: Option<String>,
    worker_id: Option<String>,
    lease_expires_at: Option<i64>,
    deadline_at: Option<i64>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    concurrency_key: Option<String>,
    parent_id: Option<String>,
    parent_on_dead: Option<String>,
    pending_children: u32,
}

/// Reads a row selected with [`JOB_COLUMNS`].
pub(crate) fn job_row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        queue: r.get(1)?,
        kind: r.get(2)?,
        payload: r.get(3)?,
        state: r.get(4)?,
        priority: r.get(5)?,
        run_at: r.get(6)?,
        attempts: r.get(7)?,
        max_attempts: r.get(8)?,
        backoff: r.get(9)?,
        timeout_ms: r.get(10)?,
        heartbeat_ms: r.get(11)?,
        lease_ms: r.get(12)?,
        max_stalled: r.get(13)?,
        stalls: r.get(14)?,
        unique_key: r.get(15)?,
        group_key: r.get(16)?,
        idempotency_key: r.get(17)?,
        progress: r.get(18)?,
        result: r.get(19)?,
        errors: r.get(20)?,
        dead_reason: r.get(21)?,
        cancel_requested: r.get(22)?,
        lease_token: r.get(23)?,
        worker_id: r.get(24)?,
        lease_expires_at: r.get(25)?,
        deadline_at: r.get(26)?,
        created_at: r.get(27)?,
        started_at: r.get(28)?,
        finished_at: r.get(29)?,
        concurrency_key: r.get(30)?,
        parent_id: r.get(31)?,
        parent_on_dead: r.get(32)?,
        pending_children: r.get(33)?,
    })
}

pub(crate) fn corrupt_field(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Backend(format!("stored {what} is invalid: {detail}").into())
}

impl JobRow {
    /// Decodes the row. A row that does not decode is corruption, reported as a backend error.
    pub(crate) fn decode(self) -> Result<Job> {
        let state =
            JobState::parse(&self.state).ok_or_else(|| corrupt_field("state", &self.state))?;
        let lease = match (state, self.lease_expires_at) {
            (JobState::Active, Some(expires_at)) => Some(Lease {
                token: self.lease_token.clone().unwrap_or_default(),
                worker_id: self.worker_id.unwrap_or_default(),
                expires_at,
                deadline_at: self.deadline_at.unwrap_or(expires_at),
            }),
            _ => None,
        };
        let json = |what: &str, s: String| raw_json(s).map_err(|e| corrupt_field(what, e));
        Ok(Job {
            id: self.id.parse().map_err(|e| corrupt_field("id", e))?,
            queue: self.queue,
            kind: self.kind,
            payload: json("payload", self.payload)?,
            state,
            priority: self.priority,
            run_at: self.run_at,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            backoff: serde_json::from_str(&self.backoff)
                .map_err(|e| corrupt_field("backoff", e))?,
            timeout_ms: self.timeout_ms as u64,
            heartbeat_ms: self.heartbeat_ms.map(|h| h as u64),
            lease_ms: self.lease_ms as u64,
            max_stalled: self.max_stalled,
            stalls: self.stalls,
            unique_key: self.unique_key,
            group_key: self.group_key,
            concurrency_key: self.concurrency_key,
            parent_id: self
                .parent_id
                .map(|p| p.parse().map_err(|e| corrupt_field("parent_id", e)))
                .transpose()?,
            parent_on_dead: ParentOnDead::parse(self.parent_on_dead.as_deref())
                .ok_or_else(|| corrupt_field("parent_on_dead", "unknown value"))?,
            pending_children: self.pending_children,
            idempotency_key: self.idempotency_key,
            progress: self.progress.map(|p| json("progress", p)).transpose()?,
            result: self.result.map(|r| json("result", r)).transpose()?,
            errors: match self.errors {
                Some(e) => serde_json::from_str(&e).map_err(|e| corrupt_field("errors", e))?,
                None => Vec::new(),
            },
            dead_reason: self
                .dead_reason
                .map(|d| DeadReason::parse(&d).ok_or_else(|| corrupt_field("dead_reason", d)))
                .transpose()?,
            cancel_requested: self.cancel_requested,
            lease,
            last_lease_token: self.lease_token,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

/// Decodes rows, keeping the first error.
pub(crate) fn decode_all(rows: Vec<JobRow>) -> Result<Vec<Job>> {
    rows.into_iter().map(JobRow::decode).collect()
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Backend(Box::new(e)))
}

// ---- writes ---------------------------------------------------------------------------------------

/// What a [`JobSpec`](errand_core::store::JobSpec) needs encoded for its row, done by the caller so
/// that the writer thread only binds.
#[derive(Debug)]
pub(crate) struct InsertRow {
    id: String,
    backoff: String,
    timeout_ms: i64,
    heartbeat_ms: Option<i64>,
    lease_ms: i64,
}

/// Encodes the rows of an insert, off the writer thread.
pub(crate) fn insert_rows(p: &JobInsert) -> Result<Vec<InsertRow>> {
    p.jobs
        .iter()
        .map(|j| {
            Ok(InsertRow {
                id: j.id.to_string(),
                backoff: json_text(&j.backoff)?,
                timeout_ms: j.timeout_ms as i64,
                heartbeat_ms: j.heartbeat_ms.map(|h| h as i64),
                lease_ms: j.lease_ms as i64,
            })
        })
        .collect()
}

const INSERT_COLUMNS: &str = "id, queue, kind, payload, state, priority, run_at, max_attempts, \
    backoff, timeout_ms, heartbeat_ms, lease_ms, max_stalled, unique_key, group_key, idempotency_key, \
    created_at, concurrency_key, parent_id, parent_on_dead, pending_children";
const INSERT_ARITY: usize = 21;
/// Rows per multi-row INSERT: fewer statements, while staying far below SQLite's 32,766 parameters.
const INSERT_CHUNK: usize = 64;

/// A job's `parent_id` and `parent_on_dead` columns: both NULL for a job outside a flow.
fn flow_columns(j: &JobSpec) -> (Option<String>, Option<&'static str>) {
    match j.parent_id {
        Some(p) => (Some(p.to_string()), Some(j.parent_on_dead.as_str())),
        None => (None, None),
    }
}

/// `j`, a row of `jobs`, holds its unique key, `since` being the window's parameter
/// ([`UNIQUE_HOLDING_STATES`] says the rule). For a revival, other dead jobs do not count (see
/// [`Transition::unique_free_since`]).
fn holds_key(j: &str, since: &str, dead_counts: bool) -> String {
    let states: Vec<String> = UNIQUE_HOLDING_STATES
        .iter()
        .filter(|s| dead_counts || **s != JobState::Dead)
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "({j}.state IN ({}) OR ({j}.state = 'completed' AND {j}.finished_at > {since}))",
        states.join(", ")
    )
}

/// The `(queue, unique key)` lookup of an insert: the newest job holding it (?1 queue, ?2 key, ?3 since).
static FIND_UNIQUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, state FROM jobs AS j WHERE queue = ?1 AND unique_key = ?2 AND {} \
         ORDER BY id DESC LIMIT 1",
        holds_key("j", "?3", true)
    )
});

/// The revival guard of a transition: another job, or the ledger, holds the key of the row `jobs`
/// (?14 since).
static OTHER_HOLDS_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "EXISTS (SELECT 1 FROM jobs AS other WHERE other.queue = jobs.queue \
           AND other.unique_key = jobs.unique_key AND other.id <> jobs.id AND {}) \
         OR EXISTS (SELECT 1 FROM unique_keys AS l WHERE l.queue = jobs.queue \
           AND l.unique_key = jobs.unique_key AND l.job_id <> jobs.id AND l.finished_at > ?14)",
        holds_key("other", "?14", false)
    )
});

/// A guarded transition of one job (see `job_transition`).
static TRANSITION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE OR FAIL jobs SET \
           state = ?4, \
           run_at = COALESCE(?5, run_at), \
           result = COALESCE(?6, result), \
           errors = CASE WHEN ?7 IS NULL THEN errors \
                    ELSE json_insert(COALESCE(errors, '[]'), '$[#]', json(?7)) END, \
           dead_reason = ?8, \
           attempts = CASE ?9 WHEN 1 THEN MAX(attempts - 1, 0) WHEN 2 THEN 0 ELSE attempts END, \
           stalls = CASE ?9 WHEN 2 THEN 0 ELSE stalls + ?10 END, \
           lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL, \
           cancel_requested = CASE WHEN ?11 THEN cancel_requested ELSE 0 END, \
           finished_at = CASE WHEN ?11 THEN ?12 ELSE NULL END \
         WHERE id = ?1 AND state = ?2 AND (?3 IS NULL OR lease_token = ?3) \
           AND (?13 IS NULL OR cancel_requested = ?13) \
           AND (?15 IS NULL OR lease_expires_at = ?15) \
           AND (?14 IS NULL OR unique_key IS NULL OR NOT ({other_holds_key})) \
         RETURNING queue, kind, attempts, parent_id, parent_on_dead, started_at",
        other_holds_key = *OTHER_HOLDS_KEY
    )
});

/// Inserts a batch (`rows` is [`insert_rows`] of `p`). Jobs without a unique key go in with multi-row
/// statements; jobs with one are checked and inserted one by one after them, so that a key is resolved
/// against everything before it, including earlier jobs of the same batch.
pub(crate) fn job_insert(
    conn: &Connection,
    p: &JobInsert,
    rows: &[InsertRow],
) -> Result<Vec<Inserted>> {
    let mut register = conn
        .prepare_cached("INSERT OR IGNORE INTO queues (name) VALUES (?1)")
        .map_err(backend)?;
    let mut queues_seen: HashSet<&str> = HashSet::new();
    for job in &p.jobs {
        if queues_seen.insert(job.queue.as_str()) {
            register.execute([&job.queue]).map_err(backend)?;
        }
    }
    let (plain, unique): (Vec<usize>, Vec<usize>) =
        (0..p.jobs.len()).partition(|&i| p.jobs[i].unique_key.is_none());
    for chunk in plain.chunks(INSERT_CHUNK) {
        let payloads: Vec<&str> = chunk.iter().map(|&i| p.jobs[i].payload.get()).collect();
        let states: Vec<&str> = chunk.iter().map(|&i| p.jobs[i].state.as_str()).collect();
        let extra: Vec<(Option<String>, Option<&str>)> =
            chunk.iter().map(|&i| flow_columns(&p.jobs[i])).collect();
        let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * INSERT_ARITY);
        for (k, &i) in chunk.iter().enumerate() {
            let (j, r) = (&p.jobs[i], &rows[i]);
            params.extend([
                &r.id as &dyn rusqlite::ToSql,
                &j.queue,
                &j.kind,
                &payloads[k],
                &states[k],
                &j.priority,
                &j.run_at,
                &j.max_attempts,
                &r.backoff,
                &r.timeout_ms,
                &r.heartbeat_ms,
                &r.lease_ms,
                &j.max_stalled,
                &j.unique_key,
                &j.group_key,
                &j.idempotency_key,
                &j.created_at,
                &j.concurrency_key,
                &extra[k].0,
                &extra[k].1,
                &j.pending_children,
            ]);
        }
        let one = format!("({})", vec!["?"; INSERT_ARITY].join(", "));
        let sql = format!(
            "INSERT OR FAIL INTO jobs ({INSERT_COLUMNS}) VALUES {}",
            vec![one; chunk.len()].join(", ")
        );
        conn.prepare_cached(&sql)
            .map_err(backend)?
            .execute(params.as_slice())
            .map_err(backend)?;
    }
    let mut out = vec![Inserted::New; p.jobs.len()];
    if unique.is_empty() {
        return Ok(out);
    }
    let mut find_unique = conn.prepare_cached(&FIND_UNIQUE).map_err(backend)?;
    let mut find_ledger = conn
        .prepare_cached(
            "SELECT job_id, 'completed' FROM unique_keys \
             WHERE queue = ?1 AND unique_key = ?2 AND finished_at > ?3",
        )
        .map_err(backend)?;
    let mut insert = conn
        .prepare_cached(&format!(
            "INSERT OR FAIL INTO jobs ({INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
             ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
        ))
        .map_err(backend)?;
    for i in unique {
        let (job, r) = (&p.jobs[i], &rows[i]);
        let (parent_id, parent_on_dead) = flow_columns(job);
        let key = params![job.queue, job.unique_key, job.unique_finished_since];
        let read = |row: &rusqlite::Row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?));
        let existing = match find_unique.query_row(key, read).optional() {
            Ok(None) => find_ledger.query_row(key, read).optional(),
            found => found,
        }
        .map_err(backend)?;
        if let Some((id, state)) = existing {
            out[i] = Inserted::Existing {
                id: id.parse().map_err(|e| Error::Backend(Box::new(e)))?,
                state: JobState::parse(&state)
                    .ok_or_else(|| Error::Backend(format!("bad state {state}").into()))?,
            };
            continue;
        }
        insert
            .execute(params![
                r.id,
                job.queue,
                job.kind,
                job.payload.get(),
                job.state.as_str(),
                job.priority,
                job.run_at,
                job.max_attempts,
                r.backoff,
                r.timeout_ms,
                r.heartbeat_ms,
                r.lease_ms,
                job.max_stalled,
                job.unique_key,
                job.group_key,
                job.idempotency_key,
                job.created_at,
                job.concurrency_key,
                parent_id,
                parent_on_dead,
                job.pending_children,
            ])
            .map_err(backend)?;
    }
    Ok(out)
}

pub(crate) fn job_claim(conn: &Connection, p: &JobClaim) -> Result<ClaimedRows> {
    let limit = p.limit;
    let mut promoted = Vec::new();
    for q in &p.queues {
        promoted.extend(job_promote_due(conn, q, p.now, p.promote_limit)?);
    }
    let mut paused = conn
        .prepare_cached("SELECT paused FROM queues WHERE name = ?1")
        .map_err(backend)?;
    let mut candidates = conn
        .prepare_cached(
            "SELECT priority, run_at, id, rowid FROM jobs INDEXED BY jobs_ready \
             WHERE queue = ?1 AND state = 'waiting' AND group_key IS NULL \
             ORDER BY priority, run_at, id LIMIT ?2",
        )
        .map_err(backend)?;
    // Per queue, its candidates in the order it gives them: best first for a plain queue, the plan's
    // order for a flow-controlled one.
    let mut lists: Vec<Vec<(i32, i64, JobId)>> = Vec::new();
    let mut admitted: Vec<Option<QueueClaim>> = Vec::new();
    let mut rowids: HashMap<JobId, i64> = HashMap::new();
    for (q, rules) in p.queues.iter().zip(&p.rules) {
        let is_paused: bool = paused
            .query_row([q], |r| r.get(0))
            .optional()
            .map_err(backend)?
            .unwrap_or(false);
        if is_paused {
            continue;
        }
        if rules.limits_queue() || has_keyed_waiting(conn, q)? {
            let a = admit(conn, q, rules, p.now, limit, &mut rowids)?;
            lists.push(a.ordered());
            admitted.push(Some(a));
            continue;
        }
        let rows = candidates
            .query_map(params![q, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?))
            })
            .map_err(backend)?;
        let mut list = Vec::new();
        for row in rows {
            let (priority, run_at, id, rowid) = row.map_err(backend)?;
            let id: JobId = id.parse().map_err(|e| corrupt_field("id", e))?;
            rowids.insert(id, rowid);
            list.push((priority, run_at, id));
        }
        lists.push(list);
        admitted.push(None);
    }
    let taken = admission::merge(&lists, limit);
    let mut chosen: Vec<i64> = Vec::new();
    let (mut retry_at, mut blocked) = (None::<Timestamp>, false);
    for ((list, n), a) in lists.iter().zip(&taken).zip(admitted) {
        let Some(a) = a else {
            chosen.extend(list[..*n].iter().map(|(_, _, id)| rowids[id]));
            continue;
        };
        let plan = a.kept(*n);
        chosen.extend(plan.jobs.iter().map(|id| rowids[id]));
        store_plan(conn, &a, &plan)?;
        a.add_hints(&mut retry_at, &mut blocked);
    }
    if chosen.is_empty() {
        return Ok(ClaimedRows {
            promoted,
            rows: Vec::new(),
            retry_at,
            blocked,
        });
    }
    // One statement claims them all (per-row statements cost twice as much), named by rowid: a JSON list
    // of integers is the cheapest set to pass. The writer thread is the only writer, so the candidates
    // cannot change between the SELECTs above and this UPDATE.
    let mut list = String::with_capacity(chosen.len() * 8 + 2);
    list.push('[');
    for (i, rowid) in chosen.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(&rowid.to_string());
    }
    list.push(']');
    let mut claim = conn
        .prepare_cached(&format!(
            "UPDATE OR FAIL jobs SET state = 'active', attempts = attempts + 1, \
             lease_token = ?2, worker_id = ?3, lease_cap_ms = ?5, \
             lease_expires_at = ?4 + MIN(lease_ms, COALESCE(?5, lease_ms)), \
             deadline_at = ?4 + timeout_ms, started_at = ?4, cancel_requested = 0 \
             WHERE rowid IN (SELECT value FROM json_each(?1)) AND state = 'waiting' \
             RETURNING {JOB_COLUMNS}"
        ))
        .map_err(backend)?;
    let rows = claim
        .query_map(
            params![
                list,
                p.lease,
                p.worker_id,
                p.now,
                p.lease_cap_ms.map(|c| c.min(i64::MAX as u64) as i64)
            ],
            job_row,
        )
        .map_err(backend)?;
    let rows = rows
        .map(|r| r.map_err(backend))
        .collect::<Result<Vec<JobRow>>>()?;
    Ok(ClaimedRows {
        promoted,
        rows,
        retry_at,
        blocked,
    })
}

/// Whether waiting jobs of `queue` carry a group or a concurrency key: then the plain claim, which
/// reads only jobs without a group and checks no key, does not apply.
///
/// Two probes of partial indexes that hold only such jobs, named: left to itself the planner may prefer
/// `jobs_by_state` (two equalities) and walk every waiting job — it did, and drains ran 8 times slower.
fn has_keyed_waiting(conn: &Connection, queue: &str) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready_grouped \
                        WHERE queue = ?1 AND state = 'waiting' AND group_key IS NOT NULL) \
             OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_waiting_keyed \
                        WHERE queue = ?1 AND state = 'waiting' AND concurrency_key IS NOT NULL)",
    )
    .map_err(backend)?
    .query_row([queue], |r| r.get(0))
    .map_err(backend)
}

/// Stores a plan's bucket states and rotation cursor.
fn store_plan(conn: &Connection, a: &QueueClaim, plan: &admission::Plan) -> Result<()> {
    let mut put = conn
        .prepare_cached(
            "INSERT INTO buckets (queue, scope, key, tokens, at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (queue, scope, key) DO UPDATE SET tokens = excluded.tokens, \
                 at = excluded.at",
        )
        .map_err(backend)?;
    for (key, b) in &plan.buckets {
        let (scope, k) = key.parts();
        put.execute(params![a.queue, scope, k, b.tokens, b.at])
            .map_err(backend)?;
    }
    if let Some(cursor) = a.moved_cursor(plan) {
        conn.prepare_cached(
            "INSERT INTO queues (name, fair_cursor) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET fair_cursor = excluded.fair_cursor",
        )
        .map_err(backend)?
        .execute(params![a.queue, cursor])
        .map_err(backend)?;
    }
    Ok(())
}

/// Gathers what [`admission::plan`] needs for a claim of `want` from `queue`, and plans.
fn admit(
    conn: &Connection,
    queue: &str,
    rules: &Rules,
    now: Timestamp,
    want: usize,
    rowids: &mut HashMap<JobId, i64>,
) -> Result<QueueClaim> {
    let cursor: String = conn
        .prepare_cached("SELECT fair_cursor FROM queues WHERE name = ?1")
        .map_err(backend)?
        .query_row([queue], |r| r.get::<_, Option<String>>(0))
        .optional()
        .map_err(backend)?
        .flatten()
        .unwrap_or_default();
    // Group keys after `?2`, in order, one index seek each.
    let mut keys_after = conn
        .prepare_cached(
            "WITH RECURSIVE g(k, n) AS ( \
                 SELECT (SELECT group_key FROM jobs WHERE queue = ?1 AND state = 'waiting' \
                         AND group_key > ?2 ORDER BY group_key LIMIT 1), 1 \
                 UNION ALL \
                 SELECT (SELECT group_key FROM jobs WHERE queue = ?1 AND state = 'waiting' \
                         AND group_key > g.k ORDER BY group_key LIMIT 1), n + 1 \
                 FROM g WHERE g.k IS NOT NULL AND n < ?3) \
             SELECT k FROM g WHERE k IS NOT NULL",
        )
        .map_err(backend)?;
    let mut read_keys = |after: &str, n: usize| -> Result<Vec<String>> {
        let rows = keys_after
            .query_map(params![queue, after, n as i64], |r| r.get(0))
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)).collect()
    };
    let max = admission::MAX_GROUPS_PER_CLAIM;
    let after = read_keys(&cursor, max)?;
    let upto = if cursor.is_empty() || after.len() >= max {
        Vec::new()
    } else {
        read_keys("", max - after.len())?
    };
    let ungrouped: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready \
             WHERE queue = ?1 AND state = 'waiting' AND group_key IS NULL)",
        )
        .map_err(backend)?
        .query_row([queue], |r| r.get(0))
        .map_err(backend)?;
    let mut keys = admission::rotation(&cursor, after, ungrouped, upto);
    keys.truncate(max);

    // The best candidates of each group, leaving out jobs whose concurrency key is full.
    let per_group = admission::candidates_per_group(want, keys.len()) as i64;
    let key_active = "CASE WHEN j.concurrency_key IS NULL THEN 0 ELSE (SELECT count(*) FROM jobs a \
        WHERE a.queue = j.queue AND a.concurrency_key = j.concurrency_key AND a.state = 'active') END";
    let select = format!(
        "SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.rowid, {key_active} FROM jobs j \
         WHERE j.queue = ?1 AND j.state = 'waiting' AND {{group}} AND {key_active} < ?2 \
         ORDER BY j.priority, j.run_at, j.id LIMIT ?3"
    );
    let mut ungrouped_jobs = conn
        .prepare_cached(&select.replace("{group}", "j.group_key IS NULL"))
        .map_err(backend)?;
    let mut grouped_jobs = conn
        .prepare_cached(&select.replace("{group}", "j.group_key = ?4"))
        .map_err(backend)?;
    let mut group_active = conn
        .prepare_cached(
            "SELECT count(*) FROM jobs WHERE queue = ?1 AND group_key = ?2 AND state = 'active'",
        )
        .map_err(backend)?;
    let mut bucket = conn
        .prepare_cached(
            "SELECT tokens, at FROM buckets WHERE queue = ?1 AND scope = ?2 AND key = ?3",
        )
        .map_err(backend)?;
    let mut read_bucket = |key: BucketKey| -> Result<Option<Bucket>> {
        let (scope, k) = key.parts();
        bucket
            .query_row(params![queue, scope, k], |r| {
                Ok(Bucket {
                    tokens: r.get(0)?,
                    at: r.get(1)?,
                })
            })
            .optional()
            .map_err(backend)
    };
    let key_limit = i64::from(rules.key_concurrency);
    let mut groups = Vec::with_capacity(keys.len());
    for key in keys {
        let map = |r: &Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        };
        let rows = if key.is_empty() {
            ungrouped_jobs.query_map(params![queue, key_limit, per_group], map)
        } else {
            grouped_jobs.query_map(params![queue, key_limit, per_group, key], map)
        }
        .map_err(backend)?;
        let mut jobs = Vec::new();
        for row in rows {
            let (id, priority, run_at, concurrency_key, rowid, active) = row.map_err(backend)?;
            let id: JobId = id.parse().map_err(|e| corrupt_field("id", e))?;
            rowids.insert(id, rowid);
            jobs.push(admission::Candidate {
                id,
                priority,
                run_at,
                concurrency_key,
                key_active: active as u64,
            });
        }
        let grouped = !key.is_empty();
        let active: i64 = if grouped && rules.group_concurrency.is_some() {
            group_active
                .query_row(params![queue, key], |r| r.get(0))
                .map_err(backend)?
        } else {
            0
        };
        let bucket = if grouped && rules.group_rate_limit.is_some() {
            read_bucket(BucketKey::Group(key.clone()))?
        } else {
            None
        };
        groups.push(admission::Group {
            key,
            active: active as u64,
            bucket,
            jobs,
        });
    }
    let queue_active: i64 = if rules.concurrency.is_some() {
        conn.prepare_cached("SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'active'")
            .map_err(backend)?
            .query_row([queue], |r| r.get(0))
            .map_err(backend)?
    } else {
        0
    };
    let queue_bucket = if rules.rate_limit.is_some() {
        read_bucket(BucketKey::Queue)?
    } else {
        None
    };
    let gathered = admission::Gathered {
        rules: rules.clone(),
        now,
        queue_active: queue_active as u64,
        queue_bucket,
        groups,
    };
    Ok(QueueClaim::new(queue, cursor, gathered, want))
}

/// A claim as the writer returns it; [`ClaimedRows::decode`] makes it a [`Claimed`].
#[derive(Debug)]
pub(crate) struct ClaimedRows {
    promoted: Vec<(JobId, Transitioned)>,
    rows: Vec<JobRow>,
    retry_at: Option<Timestamp>,
    blocked: bool,
}

impl ClaimedRows {
    pub(crate) fn decode(self) -> Result<Claimed> {
        let mut jobs = decode_all(self.rows)?;
        // RETURNING has no order: restore best-first.
        jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
        Ok(Claimed {
            promoted: self.promoted,
            jobs,
            retry_at: self.retry_at,
            blocked: self.blocked,
        })
    }
}

pub(crate) fn lease_renew(conn: &Connection, p: &LeaseRenew) -> Result<Renewed> {
    let mut renew = conn
        .prepare_cached(
            "UPDATE OR FAIL jobs SET progress = COALESCE(?4, progress), lease_expires_at = \
             MAX(lease_expires_at, ?3 + MIN(lease_ms, COALESCE(lease_cap_ms, lease_ms))) \
             WHERE id = ?1 AND state = 'active' AND lease_token = ?2 AND lease_expires_at > ?3 \
             RETURNING lease_expires_at, cancel_requested, queue, worker_id",
        )
        .map_err(backend)?;
    renew
        .query_row(
            params![
                p.id.to_string(),
                p.token,
                p.now,
                p.progress.as_ref().map(|r| r.get())
            ],
            |r| {
                Ok(Renewed {
                    lease_expires_at: r.get(0)?,
                    cancel_requested: r.get(1)?,
                    queue: r.get(2)?,
                    worker_id: r.get(3)?,
                })
            },
        )
        .optional()
        .map_err(backend)?
        .ok_or(Error::LeaseLost)
}

/// Encodes the plain completions among `ts` as `[[id, token, result?], ...]` for [`job_transition`]'s
/// one-statement fast path. Done by the caller, off the writer thread. Results are copied as the text
/// they are, never parsed again: a parse and re-print could change a float's digits.
pub(crate) fn completions_json(ts: &[Transition]) -> Result<String> {
    let mut out = String::from("[");
    for t in ts.iter().filter(|t| t.is_plain_completion()) {
        let Guard::Lease(token) = &t.guard else {
            continue;
        };
        if out.len() > 1 {
            out.push(',');
        }
        let row = match &t.result {
            Some(r) => serde_json::to_string(&(t.id.to_string(), token, r.as_ref())),
            None => serde_json::to_string(&(t.id.to_string(), token)),
        };
        out.push_str(&row.map_err(|e| Error::Backend(Box::new(e)))?);
    }
    out.push(']');
    Ok(out)
}

/// A plain completion's job, keyed by `(id, lease token)`: queue, kind, attempts, parent.
type Completed = (String, String, u32, Option<String>, Option<Timestamp>);

/// Applies transitions. Completions — the bulk of the traffic — go through one set-based statement
/// (`completions` is [`completions_json`] of `ts`): a per-row statement costs about twice as much.
/// Everything else (failures, stalls, replays: the rare paths) goes row by row. Items whose guard
/// failed are then looked at one by one to say why.
pub(crate) fn job_transition(
    conn: &Connection,
    ts: &[Transition],
    completions: &str,
) -> Result<Vec<Result<Transitioned>>> {
    // Keyed by id and token: a batch may name one job twice, with a stale token and the current one.
    let mut completed: HashMap<(String, String), Completed> = HashMap::new();
    if ts.iter().any(Transition::is_plain_completion) {
        let mut complete = conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET state = 'completed', result = c.c_result, finished_at = ?2, \
                 lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL \
                 FROM (SELECT value ->> 0 AS c_id, value ->> 1 AS c_token, value -> 2 AS c_result \
                       FROM json_each(?1)) AS c \
                 WHERE jobs.id = c.c_id AND jobs.state = 'active' AND jobs.lease_token = c.c_token \
                 RETURNING id, lease_token, queue, kind, attempts, parent_id, started_at",
            )
            .map_err(backend)?;
        let rows = complete
            .query_map(params![completions, ts[0].now], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?),
                    (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?),
                ))
            })
            .map_err(backend)?;
        for row in rows {
            let (id, rest) = row.map_err(backend)?;
            completed.insert(id, rest);
        }
    }
    let mut update = conn.prepare_cached(&TRANSITION).map_err(backend)?;
    let mut probe = conn
        .prepare_cached("SELECT state, lease_token, cancel_requested FROM jobs WHERE id = ?1")
        .map_err(backend)?;
    let mut out = Vec::with_capacity(ts.len());
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
            let attempts = match t.attempts {
                Attempts::Keep => 0,
                Attempts::GiveBack => 1,
                Attempts::Reset => 2,
            };
            update
                .query_row(
                    params![
                        id,
                        from.as_str(),
                        token,
                        t.to.as_str(),
                        t.run_at,
                        t.result.as_ref().map(|r| r.get()),
                        error,
                        t.dead_reason.map(DeadReason::as_str),
                        attempts,
                        t.stalled as i64,
                        t.to.is_final(),
                        t.now,
                        t.expect_cancel_requested,
                        t.unique_free_since,
                        t.expect_lease_expires_at,
                    ],
                    |r| {
                        Ok((
                            Transitioned {
                                started_at: r.get(5)?,
                                ..Transitioned::new(r.get(0)?, r.get(1)?, from, r.get(2)?)
                            },
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?
        };
        out.push(match applied {
            Some((mut moved, parent, on_dead)) => {
                if let Some(parent) = parent {
                    moved.parent = parent_effect(conn, &id, &parent, on_dead, t.to, t.now)?;
                }
                Ok(moved)
            }
            None => {
                let current: Option<(String, Option<String>, bool)> = probe
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(backend)?;
                Err(t.guard_failure(&id, current))
            }
        });
    }
    Ok(out)
}

/// What a flow child entering `to` does to its parent, in the transaction of the child's change (see
/// `Store::job_transition`): the parent's move, if it moved.
fn parent_effect(
    conn: &Connection,
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
    if effect == ParentEffect::Release
        && conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET parent_counted = 1 WHERE id = ?1 AND parent_counted = 0",
            )
            .map_err(backend)?
            .execute([child])
            .map_err(backend)?
            == 0
    {
        return Ok(None);
    }
    let row = match effect {
        ParentEffect::Release => conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET pending_children = pending_children - 1, \
                   state = CASE WHEN pending_children > 1 THEN state \
                                WHEN run_at > ?2 THEN 'delayed' ELSE 'waiting' END \
                 WHERE id = ?1 AND state = 'waiting_children' \
                 RETURNING state, queue, kind, attempts",
            )
            .map_err(backend)?
            .query_row(params![parent, now], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(backend)?,
        ParentEffect::Fail(error) => conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET state = 'dead', dead_reason = 'child_dead', \
                   finished_at = ?2, errors = json_insert(COALESCE(errors, '[]'), '$[#]', json(?3)) \
                 WHERE id = ?1 AND state = 'waiting_children' \
                 RETURNING state, queue, kind, attempts",
            )
            .map_err(backend)?
            .query_row(params![parent, now, json_text(&error)?], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(backend)?,
    };
    let Some((state, queue, kind, attempts)) = row else {
        return Ok(None);
    };
    let state = JobState::parse(&state).ok_or_else(|| corrupt_field("state", &state))?;
    if state == JobState::WaitingChildren {
        return Ok(None);
    }
    let id = parent.parse().map_err(|e| corrupt_field("parent_id", e))?;
    let moved = Transitioned::new(queue, kind, JobState::WaitingChildren, attempts);
    Ok(Some(Box::new((id, state, moved))))
}

pub(crate) fn job_children(conn: &Connection, parent: JobId, limit: usize) -> Result<Vec<JobRow>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE parent_id = ?1 ORDER BY id LIMIT ?2"
        ))
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![parent.to_string(), limit as i64], job_row)
        .map_err(backend)?;
    rows.map(|r| r.map_err(backend)).collect()
}

pub(crate) fn job_request_cancel(conn: &Connection, id: JobId) -> Result<Transitioned> {
    conn.prepare_cached(
        "UPDATE OR FAIL jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'active' \
         RETURNING queue, kind, attempts",
    )
    .map_err(backend)?
    .query_row([id.to_string()], |r| {
        Ok(Transitioned::new(
            r.get(0)?,
            r.get(1)?,
            JobState::Active,
            r.get(2)?,
        ))
    })
    .optional()
    .map_err(backend)?
    .ok_or_else(|| Error::Conflict(format!("job {id} is not active")))
}

pub(crate) fn job_promote_due(
    conn: &Connection,
    queue: &str,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(JobId, Transitioned)>> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE OR FAIL jobs SET state = 'waiting' WHERE id IN \
               (SELECT id FROM jobs WHERE queue = ?1 AND state = 'delayed' AND run_at <= ?2 \
                ORDER BY run_at LIMIT ?3) \
             RETURNING id, queue, kind, attempts",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![queue, now, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Transitioned::new(r.get(1)?, r.get(2)?, JobState::Delayed, r.get(3)?),
            ))
        })
        .map_err(backend)?;
    rows.map(|r| {
        let (id, t) = r.map_err(backend)?;
        Ok((id.parse().map_err(|e| Error::Backend(Box::new(e)))?, t))
    })
    .collect()
}

/// Retention walks `jobs_by_state` in id (creation) order rather than keeping an index of finish times,
/// which every completion would pay for. Jobs finish roughly in the order they were created, so "the
/// oldest" by id is, for retention, close enough to "the longest finished".
/// Retention keeps a flow child (`c`) while its parent may still read it: the parent is unfinished.
const KEEP_FOR_PARENT: &str = "(c.parent_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS p \
    WHERE p.id = c.parent_id AND p.state IN ('waiting_children', 'waiting', 'delayed', 'active')))";

pub(crate) fn job_prune(conn: &Connection, p: &JobPrune) -> Result<u64> {
    let mut deleted = 0u64;
    for state in &p.states {
        let budget = (p.limit as u64).saturating_sub(deleted);
        if budget == 0 {
            break;
        }
        if let Some(before) = p.finished_before {
            deleted += delete_keeping_keys(
                conn,
                p,
                &format!(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs AS c WHERE queue = ?1 \
                     AND state = ?2 AND finished_at < ?3 AND {KEEP_FOR_PARENT} ORDER BY id LIMIT ?4) \
                     RETURNING state, unique_key, id, finished_at",
                ),
                params![p.queue, state.as_str(), before, budget as i64],
            )?;
        }
        let budget = (p.limit as u64).saturating_sub(deleted);
        if let (Some(keep), true) = (p.keep, budget > 0) {
            // The newest `keep` stay; the oldest beyond them go.
            let count: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = ?2")
                .map_err(backend)?
                .query_row(params![p.queue, state.as_str()], |r| r.get(0))
                .map_err(backend)?;
            let excess = (count as u64).saturating_sub(keep).min(budget);
            if excess > 0 {
                deleted += delete_keeping_keys(
                    conn,
                    p,
                    &format!(
                        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs AS c WHERE queue = ?1 \
                         AND state = ?2 AND {KEEP_FOR_PARENT} ORDER BY id LIMIT ?3) \
                         RETURNING state, unique_key, id, finished_at",
                    ),
                    params![p.queue, state.as_str(), excess as i64],
                )?;
            }
        }
    }
    // Keys no longer held leave the ledger.
    conn.prepare_cached(
        "DELETE FROM unique_keys WHERE queue = ?1 AND unique_key IN (SELECT unique_key \
         FROM unique_keys WHERE queue = ?1 AND finished_at <= ?2 ORDER BY finished_at LIMIT ?3)",
    )
    .map_err(backend)?
    .execute(params![p.queue, p.unique_finished_since, p.limit as i64])
    .map_err(backend)?;
    Ok(deleted)
}

/// Runs `sql`, a `DELETE … RETURNING state, unique_key, id, finished_at` of `p.queue`'s jobs, and keeps
/// the unique keys still held by the completed jobs it deleted in the ledger. Answers how many it deleted.
fn delete_keeping_keys(
    conn: &Connection,
    p: &JobPrune,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<u64> {
    let mut keep = conn
        .prepare_cached(
            "INSERT OR FAIL INTO unique_keys (queue, unique_key, job_id, finished_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (queue, unique_key) DO UPDATE \
             SET job_id = excluded.job_id, finished_at = excluded.finished_at \
             WHERE excluded.finished_at >= unique_keys.finished_at",
        )
        .map_err(backend)?;
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(params).map_err(backend)?;
    let mut n = 0;
    while let Some(row) = rows.next().map_err(backend)? {
        n += 1;
        let state: String = row.get(0).map_err(backend)?;
        let key: Option<String> = row.get(1).map_err(backend)?;
        let finished: Option<i64> = row.get(3).map_err(backend)?;
        if let (true, Some(key), Some(finished)) = (state == "completed", key, finished)
            && finished > p.unique_finished_since
        {
            let id: String = row.get(2).map_err(backend)?;
            keep.execute(params![p.queue, key, id, finished])
                .map_err(backend)?;
        }
    }
    Ok(n)
}

pub(crate) fn job_delete(conn: &Connection, p: &JobDelete) -> Result<u64> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM jobs WHERE id = ?1 AND state = ?2")
        .map_err(backend)?;
    let mut n = 0;
    for (id, state) in &p.ids {
        n += stmt
            .execute(params![id.to_string(), state.as_str()])
            .map_err(backend)? as u64;
    }
    Ok(n)
}

pub(crate) fn queue_put(conn: &Connection, name: &str, config: &QueueConfig) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR FAIL INTO queues (name, config) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config",
    )
    .map_err(backend)?
    .execute(params![name, json_text(config)?])
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn queue_set_paused(conn: &Connection, name: &str, paused: bool) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR FAIL INTO queues (name, paused) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
    )
    .map_err(backend)?
    .execute(params![name, paused])
    .map_err(backend)?;
    Ok(())
}

/// Replaces a job's input if it is still in state `from`.
pub(crate) fn job_replace(conn: &Connection, p: &JobReplace) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE OR FAIL jobs SET payload = ?3, priority = ?4, run_at = ?5, state = ?6 \
             WHERE id = ?1 AND state = ?2",
        )
        .map_err(backend)?
        .execute(params![
            p.id.to_string(),
            p.from.as_str(),
            p.payload.get(),
            p.priority,
            p.run_at,
            p.state.as_str()
        ])
        .map_err(backend)?;
    Ok(n > 0)
}

/// Appends log lines under the job's lease, then keeps only its latest `keep` lines.
pub(crate) fn job_log_append(conn: &Connection, p: &JobLogAppend) -> Result<()> {
    let id = p.id.to_string();
    let current: Option<(String, Option<String>, u32)> = conn
        .prepare_cached("SELECT state, lease_token, attempts FROM jobs WHERE id = ?1")
        .map_err(backend)?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(backend)?;
    p.check(
        current
            .as_ref()
            .map(|(state, token, _)| (state.as_str(), token.as_deref())),
    )?;
    let attempt = current.map_or(0, |(_, _, attempt)| attempt);
    let mut insert = conn
        .prepare_cached(
            "INSERT OR FAIL INTO job_logs (job_id, at, attempt, line) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(backend)?;
    for line in &p.lines {
        insert
            .execute(params![id, p.now, attempt, line])
            .map_err(backend)?;
    }
    conn.prepare_cached(
        "DELETE FROM job_logs WHERE job_id = ?1 AND id <= (SELECT id FROM job_logs \
         WHERE job_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )
    .map_err(backend)?
    .execute(params![id, p.keep as i64])
    .map_err(backend)?;
    Ok(())
}

// ---- reads ----------------------------------------------------------------------------------------

pub(crate) fn job_logs(conn: &Connection, id: JobId) -> Result<Vec<LogLine>> {
    let mut stmt = conn
        .prepare_cached("SELECT at, attempt, line FROM job_logs WHERE job_id = ?1 ORDER BY id")
        .map_err(backend)?;
    let rows = stmt
        .query_map([id.to_string()], |r| {
            Ok(LogLine {
                at: r.get(0)?,
                attempt: r.get(1)?,
                line: r.get(2)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

/// Active jobs are few (as many as workers run at once), so they are found through `jobs_by_state` for
/// every known queue rather than through an index of their own that every claim and completion would
/// pay for.
pub(crate) fn job_expired(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<JobRow>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE queue IN (SELECT name FROM queues) \
             AND state = 'active' AND (lease_expires_at <= ?1 OR deadline_at <= ?1) LIMIT ?2"
        ))
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![now, limit as i64], job_row)
        .map_err(backend)?;
    rows.map(|r| r.map_err(backend)).collect()
}

pub(crate) fn job_get(conn: &Connection, id: JobId) -> Result<Option<JobRow>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .map_err(backend)?
        .query_row([id.to_string()], job_row)
        .optional()
        .map_err(backend)
}

pub(crate) fn job_list(conn: &Connection, p: &JobList) -> Result<Vec<JobRow>> {
    // A unique key is found through its index; `?6 IS NULL OR ...` would keep the planner on a scan.
    let sql = match p.unique_key {
        None => format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE queue = ?1 AND state = ?2 AND id > ?3 \
             AND (?4 IS NULL OR kind = ?4) AND ?6 IS NULL ORDER BY id LIMIT ?5"
        ),
        Some(_) => format!(
            "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_unique WHERE queue = ?1 \
             AND unique_key = ?6 AND state = ?2 AND id > ?3 AND (?4 IS NULL OR kind = ?4) \
             ORDER BY id LIMIT ?5"
        ),
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let after = p.after.map(|a| a.to_string()).unwrap_or_default();
    let rows = stmt
        .query_map(
            params![
                p.queue,
                p.state.as_str(),
                after,
                p.kind,
                p.limit as i64,
                p.unique_key
            ],
            job_row,
        )
        .map_err(backend)?;
    rows.map(|r| r.map_err(backend)).collect()
}

fn queue_from_row(r: &Row<'_>) -> rusqlite::Result<QueueInfo> {
    let config: Option<String> = r.get(1)?;
    Ok(QueueInfo {
        name: r.get(0)?,
        config: match config {
            Some(c) => serde_json::from_str(&c).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    format!("stored queue config is invalid: {e}").into(),
                )
            })?,
            None => QueueConfig::default(),
        },
        paused: r.get(2)?,
    })
}

pub(crate) fn queue_get(conn: &Connection, name: &str) -> Result<Option<QueueInfo>> {
    conn.prepare_cached("SELECT name, config, paused FROM queues WHERE name = ?1")
        .map_err(backend)?
        .query_row([name], queue_from_row)
        .optional()
        .map_err(backend)
}

pub(crate) fn queue_list(conn: &Connection) -> Result<Vec<QueueInfo>> {
    let mut stmt = conn
        .prepare_cached("SELECT name, config, paused FROM queues ORDER BY name")
        .map_err(backend)?;
    let rows = stmt.query_map([], queue_from_row).map_err(backend)?;
    rows.map(|r| r.map_err(backend)).collect()
}

pub(crate) fn audit_append(conn: &Connection, e: &errand_core::AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, key, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(backend)?
    .execute(params![
        e.at,
        e.key,
        e.action,
        e.target,
        e.detail.as_ref().map(|d| d.get())
    ])
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn audit_list(
    conn: &Connection,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<errand_core::AuditEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, key, action, target, detail FROM audit WHERE id < ?1 \
             ORDER BY id DESC LIMIT ?2",
        )
        .map_err(backend)?;
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let rows = stmt
        .query_map(params![before, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, at, key, action, target, detail) = row.map_err(backend)?;
        out.push(errand_core::AuditEntry {
            id: id as u64,
            at,
            key,
            action,
            target,
            detail: detail.map(raw_json).transpose()?,
        });
    }
    Ok(out)
}

/// In-process statements cost microseconds: one read transaction asking each queue in turn is cheap
/// even for a thousand queues, and reads one snapshot.
pub(crate) fn queue_stats_all(conn: &Connection, now: Timestamp) -> Result<Vec<QueueStats>> {
    queue_list(conn)?
        .iter()
        .map(|q| queue_stats(conn, &q.name, now))
        .collect()
}

pub(crate) fn queue_stats(conn: &Connection, name: &str, now: Timestamp) -> Result<QueueStats> {
    let mut stats = QueueStats {
        queue: name.to_string(),
        ..QueueStats::default()
    };
    stats.paused = conn
        .prepare_cached("SELECT paused FROM queues WHERE name = ?1")
        .map_err(backend)?
        .query_row([name], |r| r.get(0))
        .optional()
        .map_err(backend)?
        .unwrap_or(false);
    let mut counts = conn
        .prepare_cached("SELECT state, COUNT(*) FROM jobs WHERE queue = ?1 GROUP BY state")
        .map_err(backend)?;
    let rows = counts
        .query_map([name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(backend)?;
    for row in rows {
        let (state, n) = row.map_err(backend)?;
        if let Some(s) = JobState::parse(&state) {
            stats.set_count(s, n as u64);
        }
    }
    // Bounded work even with a million waiting: the earliest due time among the 1,000 longest queued.
    let oldest: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(run_at) FROM (SELECT run_at FROM jobs WHERE queue = ?1 AND state = 'waiting' \
             ORDER BY id LIMIT 1000)",
        )
        .map_err(backend)?
        .query_row([name], |r| r.get(0))
        .map_err(backend)?;
    stats.oldest_waiting_age_ms = oldest.map_or(0, |t| (now - t).max(0) as u64);
    Ok(stats)
}
