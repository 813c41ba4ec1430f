//! A queue's dead letters by error fingerprint, kept counted by triggers (see the schema's migrations
//! 9 and 10), and each group's latest job found through `jobs_dead_groups`.

use deadpool_postgres::GenericClient;

use errand_core::Result;
use errand_core::store::{DeadGroupRow, DeadGroupRows};

use crate::sql::Cx;

use super::{decode_job, get, query};

/// The largest `limit` groups of queue `name` (most jobs first, then by fingerprint), each with its
/// latest job, and the number of dead jobs in all its groups. A group emptied between the two
/// statements is left out.
pub(crate) async fn dead_groups(
    c: &impl GenericClient,
    cx: &Cx,
    name: &str,
    limit: usize,
) -> Result<DeadGroupRows> {
    let mut counts = Vec::new();
    for row in query(c, &cx.sql.dead_group_counts, &[&name]).await? {
        let n: i64 = get(&row, 1)?;
        counts.push((get::<String>(&row, 0)?, n.max(0) as u64));
    }
    let total = counts.iter().map(|(_, n)| n).sum();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(limit);
    let fingerprints: Vec<&str> = counts.iter().map(|(f, _)| f.as_str()).collect();
    let mut latest = std::collections::HashMap::new();
    for row in query(c, &cx.sql.dead_group_latest, &[&name, &fingerprints]).await? {
        latest.insert(get::<String>(&row, 35)?, decode_job(&row)?);
    }
    let groups = counts
        .into_iter()
        .filter_map(|(fingerprint, count)| {
            latest.remove(&fingerprint).map(|latest| DeadGroupRow {
                fingerprint,
                count,
                latest,
            })
        })
        .collect();
    Ok(DeadGroupRows { groups, total })
}
