//! Counts of a queue's jobs per state (kept by triggers in `job_counts`: see the schema's migration 8),
//! and the age of its oldest waiting job.

use rusqlite::{Connection, OptionalExtension};

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
