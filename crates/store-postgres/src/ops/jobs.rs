//! Jobs as a whole: one job, a flow's children, pages of a queue's jobs, expired leases, log lines, and
//! retention (pruning finished jobs while keeping the unique keys they still hold).

use deadpool_postgres::GenericClient;

use errand_core::store::{JobDelete, JobList, JobLogAppend, JobPrune};
use errand_core::{Job, JobId, LogLine, Result, Timestamp};

use crate::sql::Cx;

use super::{Params, count, decode_all, decode_job, execute, get, query, query_opt};

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

pub(crate) async fn job_children(
    c: &impl GenericClient,
    cx: &Cx,
    parent: JobId,
    limit: usize,
) -> Result<Vec<Job>> {
    let rows = query(c, &cx.sql.children, &[&parent.to_string(), &(limit as i64)]).await?;
    decode_all(&rows)
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

pub(crate) async fn job_expired(
    c: &impl GenericClient,
    cx: &Cx,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Job>> {
    decode_all(&query(c, &cx.sql.expired, &[&now, &(limit as i64)]).await?)
}

pub(crate) async fn job_ttl_passed(
    c: &impl GenericClient,
    cx: &Cx,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Job>> {
    decode_all(&query(c, &cx.sql.ttl_passed, &[&now, &(limit as i64)]).await?)
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
