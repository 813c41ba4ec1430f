//! A queue's dead letters by error fingerprint, kept counted in `dead_groups` by triggers (see the
//! schema's migration 9), and each group's latest job found through `jobs_dead_groups`.

use rusqlite::{Connection, OptionalExtension};

use errand_core::Result;
use errand_core::store::{DeadGroupRow, DeadGroupRows};

use crate::conn::backend;

use super::{JOB_COLUMNS, job_row};

/// The largest `limit` groups of queue `name` (most jobs first, then by fingerprint), each with its
/// latest job, and the number of dead jobs in all its groups.
pub(crate) fn dead_groups(conn: &Connection, name: &str, limit: usize) -> Result<DeadGroupRows> {
    // One snapshot for the counts and the jobs: a group counted has a job. Rolled back on drop.
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let conn = &*tx;
    let mut counts: Vec<(String, u64)> = conn
        .prepare_cached("SELECT fingerprint, n FROM dead_groups WHERE queue = ?1 AND n > 0")
        .map_err(backend)?
        .query_map([name], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)?;
    let total = counts.iter().map(|(_, n)| n).sum();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(limit);
    let mut latest = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_dead_groups \
             WHERE queue = ?1 AND state = 'dead' AND fingerprint = ?2 \
             ORDER BY finished_at DESC, id DESC LIMIT 1"
        ))
        .map_err(backend)?;
    let mut groups = Vec::with_capacity(counts.len());
    for (fingerprint, n) in counts {
        if let Some(row) = latest
            .query_row(rusqlite::params![name, fingerprint], job_row)
            .optional()
            .map_err(backend)?
        {
            groups.push(DeadGroupRow {
                fingerprint,
                count: n,
                latest: row.decode()?,
            });
        }
    }
    Ok(DeadGroupRows { groups, total })
}
