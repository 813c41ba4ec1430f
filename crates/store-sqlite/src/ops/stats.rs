//! Counts of a queue's jobs per state (kept by triggers in `job_counts`: see the schema's migration 8),
//! and the age of its oldest waiting job.

use rusqlite::{Connection, OptionalExtension, params};

use errand_core::admission::Bucket;
use errand_core::store::{FlowRows, GroupFlowRow, busy_then_lowest};
use errand_core::{JobState, QueueStats, Result, Timestamp};

use crate::conn::backend;

use super::queues::queue_list;

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
        .prepare_cached("SELECT state, n FROM job_counts WHERE queue = ?1 AND n <> 0")
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

/// The flow-control state of `queue` ([`errand_core::Store::flow_state`]): active jobs from the kept
/// counts, the buckets from `buckets`, active jobs per group through `jobs_active_group`.
pub(crate) fn flow_state(conn: &Connection, queue: &str, limit: usize) -> Result<FlowRows> {
    let active: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(n), 0) FROM job_counts WHERE queue = ?1 AND state = 'active'",
        )
        .map_err(backend)?
        .query_row([queue], |r| r.get(0))
        .map_err(backend)?;
    let mut bucket = conn
        .prepare_cached(
            "SELECT tokens, at FROM buckets WHERE queue = ?1 AND scope = ?2 AND key = ?3",
        )
        .map_err(backend)?;
    let mut read = |scope: &str, key: &str| -> Result<Option<Bucket>> {
        bucket
            .query_row(params![queue, scope, key], |r| {
                Ok(Bucket {
                    tokens: r.get(0)?,
                    at: r.get(1)?,
                })
            })
            .optional()
            .map_err(backend)
    };
    let queue_bucket = read("queue", "")?;
    let busy: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT group_key, COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'active' \
             AND group_key IS NOT NULL GROUP BY group_key ORDER BY 2 DESC, 1 LIMIT ?2",
        )
        .map_err(backend)?
        .query_map(params![queue, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)?;
    let mut groups = Vec::with_capacity(limit);
    for (key, n) in busy {
        groups.push(GroupFlowRow {
            bucket: read("group", &key)?,
            key,
            active: n.max(0) as u64,
        });
    }
    let drained: Vec<(String, f64, i64)> = conn
        .prepare_cached(
            "SELECT key, tokens, at FROM buckets WHERE queue = ?1 AND scope = 'group' \
             ORDER BY tokens, key LIMIT ?2",
        )
        .map_err(backend)?
        .query_map(params![queue, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)?;
    let lowest = drained
        .into_iter()
        .map(|(key, tokens, at)| (key, Bucket { tokens, at }));
    Ok(FlowRows {
        active: active.max(0) as u64,
        queue_bucket,
        groups: busy_then_lowest(groups, lowest, limit),
    })
}
