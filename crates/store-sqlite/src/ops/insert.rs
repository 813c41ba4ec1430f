//! Inserting jobs: rows encoded off the writer, multi-row statements for jobs without a unique key, and
//! one by one for those with one, each resolved against everything before it. Ends where the job is
//! stored; who may hold a key afterwards is the transitions' (`OTHER_HOLDS_KEY` is shared with them).

use std::collections::HashSet;
use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, params};

use errand_core::store::{
    Inserted, JobInsert, JobSpec, UNIQUE_HOLDING_STATES, over_bound, waiting_bounds,
};
use errand_core::{Error, JobState, Result};

use crate::conn::backend;

use super::json_text;

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
    created_at, concurrency_key, parent_id, parent_on_dead, pending_children, expires_at";

const INSERT_ARITY: usize = 22;

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
pub(super) static OTHER_HOLDS_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "EXISTS (SELECT 1 FROM jobs AS other WHERE other.queue = jobs.queue \
           AND other.unique_key = jobs.unique_key AND other.id <> jobs.id AND {}) \
         OR EXISTS (SELECT 1 FROM unique_keys AS l WHERE l.queue = jobs.queue \
           AND l.unique_key = jobs.unique_key AND l.job_id <> jobs.id AND l.finished_at > ?14)",
        holds_key("other", "?14", false)
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
    // Before anything is written: a refusal then leaves the writer's group untouched.
    for (queue, max, adding) in waiting_bounds(&p.jobs) {
        let held: i64 = conn
            .prepare_cached(
                "SELECT coalesce(sum(n), 0) FROM job_counts \
                 WHERE queue = ?1 AND state IN ('waiting', 'delayed')",
            )
            .and_then(|mut st| st.query_row([queue], |r| r.get(0)))
            .map_err(backend)?;
        if let Some(e) = over_bound(queue, max, held.max(0) as u64, adding) {
            return Err(e);
        }
    }
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
                &j.expires_at,
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
             ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
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
                job.expires_at,
            ])
            .map_err(backend)?;
    }
    Ok(out)
}
