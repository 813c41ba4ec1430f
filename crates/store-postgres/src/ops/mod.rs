//! The SQL of each store operation, one module per seam of the engine. Writes run inside a transaction
//! that `conn::write` gives them; reads, and writes of a single idempotent statement, on a pooled
//! connection (`conn::run`). Each function does what its `Store` method's contract says and nothing
//! more, exactly as the SQLite store does, so that both pass the same conformance suite. What a row
//! means (a `Job`, a transition's outcome, a failed guard's error) is decided in the core
//! (`errand_core::store::row`); the statements' texts are in `crate::sql`.
//!
//! - `insert`: new jobs and their unique keys; `claim`: admission and claiming, and lease renewal;
//! - `transition`: guarded state changes, flow parents, promotions, cancels and replaced inputs;
//! - `jobs`: one job, pages of jobs, logs, retention; `queues`: queue config and pause;
//! - `stats`: counts per state; `audit`: the audit log; `lead`: the maintenance lead.
//!
//! **Wake-ups.** Whenever jobs become `waiting` (inserted as waiting, promoted, moved back to waiting,
//! revived, or their queue resumed), the same transaction calls `pg_notify('<schema>_due', queue)` once
//! per queue; PostgreSQL delivers the notification when (and only if) the transaction commits.

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use errand_core::store::Transitioned;
use errand_core::store::row::{JobRow, corrupt_field, parse_id};
use errand_core::{Error, Job, JobId, JobState, Result};

use crate::conn::db;
use crate::sql::Cx;

mod audit;
mod claim;
mod dead;
mod insert;
mod jobs;
mod lead;
mod queues;
mod stats;
mod transition;

pub(crate) use audit::{audit_append, audit_list, audit_prune};
pub(crate) use claim::{job_claim, lease_renew};
pub(crate) use dead::dead_groups;
pub(crate) use insert::job_insert;
pub(crate) use jobs::{
    job_children, job_delete, job_expired, job_get, job_list, job_log_append, job_logs, job_prune,
    job_ttl_passed,
};
pub(crate) use lead::try_lead;
pub(crate) use queues::{queue_get, queue_list, queue_put, queue_set_paused};
pub(crate) use stats::{flow_state, footprint, queue_stats, queue_stats_all};
pub(crate) use transition::{job_promote_due, job_replace, job_request_cancel, job_transition};

pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

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
pub(crate) async fn notify<'q>(
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

pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(db)
}

pub(crate) fn count(v: i32, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt_field(what, v))
}

pub(crate) fn int4(v: u32, field: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(field, "too large"))
}

pub(crate) fn int8(v: u64, field: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(field, "too large"))
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Backend(Box::new(e)))
}

/// Reads a row selected with `job_columns!` (`crate::sql`) into its stored form; the core decodes it.
pub(crate) fn job_row(r: &Row) -> Result<JobRow> {
    Ok(JobRow {
        id: get(r, 0)?,
        queue: get(r, 1)?,
        kind: get(r, 2)?,
        payload: get(r, 3)?,
        state: get(r, 4)?,
        priority: get(r, 5)?,
        run_at: get(r, 6)?,
        attempts: count(get(r, 7)?, "attempts")?,
        max_attempts: count(get(r, 8)?, "max_attempts")?,
        backoff: get(r, 9)?,
        timeout_ms: get(r, 10)?,
        heartbeat_ms: get(r, 11)?,
        lease_ms: get(r, 12)?,
        max_stalled: count(get(r, 13)?, "max_stalled")?,
        stalls: count(get(r, 14)?, "stalls")?,
        unique_key: get(r, 15)?,
        group_key: get(r, 16)?,
        idempotency_key: get(r, 17)?,
        progress: get(r, 18)?,
        result: get(r, 19)?,
        errors: get(r, 20)?,
        dead_reason: get(r, 21)?,
        cancel_requested: get(r, 22)?,
        lease_token: get(r, 23)?,
        worker_id: get(r, 24)?,
        lease_expires_at: get(r, 25)?,
        deadline_at: get(r, 26)?,
        created_at: get(r, 27)?,
        started_at: get(r, 28)?,
        finished_at: get(r, 29)?,
        concurrency_key: get(r, 30)?,
        parent_id: get(r, 31)?,
        parent_on_dead: get(r, 32)?,
        pending_children: count(get(r, 33)?, "pending_children")?,
        expires_at: get(r, 34)?,
    })
}

/// Decodes a row selected with `job_columns!`. A row that does not decode is corruption, reported as a
/// backend error.
pub(crate) fn decode_job(r: &Row) -> Result<Job> {
    job_row(r)?.decode()
}

pub(crate) fn decode_all(rows: &[Row]) -> Result<Vec<Job>> {
    rows.iter().map(decode_job).collect()
}

/// Reads `(id, queue, kind, attempts)` rows as returned by promotions.
pub(crate) fn decode_moved(rows: &[Row], from: JobState) -> Result<Vec<(JobId, Transitioned)>> {
    rows.iter()
        .map(|r| {
            Ok((
                parse_id(get(r, 0)?)?,
                Transitioned::new(get(r, 1)?, get(r, 2)?, from, count(get(r, 3)?, "attempts")?),
            ))
        })
        .collect()
}
