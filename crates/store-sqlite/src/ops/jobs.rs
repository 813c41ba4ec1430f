//! Jobs as a whole: one job, a flow's children, pages of a queue's jobs, expired leases, log lines, and
//! retention (pruning finished jobs while keeping the unique keys they still hold).

use rusqlite::{Connection, OptionalExtension, params};

use errand_core::store::{JobDelete, JobList, JobLogAppend, JobPrune};
use errand_core::{JobId, LogLine, Result, Timestamp};

use crate::conn::backend;

use super::{JOB_COLUMNS, JobRow, job_row};

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

/// Jobs not started (`waiting` or `delayed`) whose `expires_at` passed at `now`, at most `limit`,
/// through the partial index `jobs_expiring` (only jobs with a time to live are in it).
pub(crate) fn job_ttl_passed(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<JobRow>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_expiring \
             WHERE expires_at <= ?1 AND state IN ('waiting', 'delayed') \
             ORDER BY expires_at LIMIT ?2"
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
