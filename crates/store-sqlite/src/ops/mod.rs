//! The SQL of each store operation, as plain functions over a connection, one module per seam of the
//! engine. Writes run inside the writer's group transaction; reads on a reader connection. What a row
//! means (a `Job`, a transition's outcome, a failed guard's error) is decided in the core
//! (`errand_core::store::row`): this module and its children map columns and run statements.
//!
//! - `insert`: new jobs and their unique keys;
//! - `claim`: admission (rules, groups, rate buckets) and claiming, and lease renewal;
//! - `transition`: guarded state changes, flow parents, promotions, cancels and replaced inputs;
//! - `jobs`: one job, pages of jobs, logs, retention;
//! - `queues`: queue config and pause; `stats`: counts per state; `audit`: the audit log.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rusqlite::Row;

use errand_core::{Error, Result};

mod audit;
mod claim;
mod dead;
mod insert;
mod jobs;
mod queues;
mod stats;
mod transition;

pub(crate) use audit::{audit_append, audit_list, audit_prune};
pub(crate) use claim::{job_claim, lease_renew};
pub(crate) use dead::dead_groups;
pub(crate) use errand_core::store::row::{JobRow, corrupt_field, decode_all};
pub(crate) use insert::{InsertRow, insert_rows, job_insert};
pub(crate) use jobs::{
    job_children, job_delete, job_expired, job_get, job_list, job_log_append, job_logs, job_prune,
    job_ttl_passed,
};
pub(crate) use queues::{queue_get, queue_list, queue_put, queue_set_paused};
pub(crate) use stats::{flow_state, queue_stats, queue_stats_all};
pub(crate) use transition::{
    completions_json, job_promote_due, job_replace, job_request_cancel, job_transition,
};

/// Every column of `jobs`, in the order [`job_row`] reads them.
pub(crate) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, run_at, attempts, \
    max_attempts, backoff, timeout_ms, heartbeat_ms, lease_ms, max_stalled, stalls, unique_key, \
    group_key, idempotency_key, progress, result, errors, dead_reason, cancel_requested, lease_token, \
    worker_id, lease_expires_at, deadline_at, created_at, started_at, finished_at, concurrency_key, \
    parent_id, parent_on_dead, pending_children, expires_at";

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
        expires_at: r.get(34)?,
    })
}

/// Runs a future that never waits (every SQLite statement here is synchronous) to its end, in one
/// poll on the calling thread — the writer's, which must not block on a runtime.
pub(crate) fn run_ready<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(Error::Backend(
            "a SQLite statement future waited; they never should".into(),
        )),
    }
}

/// A value as the JSON text a column stores.
pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Backend(Box::new(e)))
}
