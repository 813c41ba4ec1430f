//! Counts of a queue's jobs per state (kept by triggers: see the schema's migration 8), and the age of
//! its oldest waiting job.

use deadpool_postgres::GenericClient;

use errand_core::admission::Bucket;
use errand_core::store::{FlowRows, GroupFlowRow, StoreObject, busy_then_lowest};
use errand_core::{JobState, QueueStats, Result, Timestamp};

use crate::sql::Cx;

use super::{execute, get, query, query_opt};

pub(crate) async fn queue_stats_all(
    c: &impl GenericClient,
    cx: &Cx,
    now: Timestamp,
) -> Result<Vec<QueueStats>> {
    // Every node's alert pass comes here every 5 s: it keeps the deltas few, of the counts and of
    // the dead-letter groups. (Folding writes, so a read of the counts is not read-only; it stays
    // short, and the folds of two nodes queue up.)
    execute(c, &cx.sql.fold_counts, &[]).await?;
    execute(c, &cx.sql.fold_dead_groups, &[]).await?;
    execute(c, &cx.sql.drop_empty_dead_groups, &[]).await?;
    let mut all: std::collections::BTreeMap<String, QueueStats> = Default::default();
    for row in query(c, &cx.sql.state_counts_all, &[]).await? {
        let name: String = get(&row, 0)?;
        let stats = all.entry(name.clone()).or_insert_with(|| QueueStats {
            queue: name,
            ..QueueStats::default()
        });
        stats.paused = get(&row, 1)?;
        let state: Option<String> = get(&row, 2)?;
        let n: Option<i64> = get(&row, 3)?;
        if let (Some(s), Some(n)) = (state.as_deref().and_then(JobState::parse), n) {
            stats.set_count(s, n.max(0) as u64);
        }
    }
    for row in query(c, &cx.sql.oldest_waiting_all, &[]).await? {
        let name: String = get(&row, 0)?;
        let oldest: Option<i64> = get(&row, 1)?;
        if let Some(stats) = all.get_mut(&name) {
            stats.oldest_waiting_age_ms = oldest.map_or(0, |t| (now - t).max(0) as u64);
        }
    }
    Ok(all.into_values().collect())
}

pub(crate) async fn queue_stats(
    c: &impl GenericClient,
    cx: &Cx,
    name: &str,
    now: Timestamp,
) -> Result<QueueStats> {
    execute(c, &cx.sql.fold_counts, &[]).await?;
    let mut stats = QueueStats {
        queue: name.to_string(),
        ..QueueStats::default()
    };
    stats.paused = match query_opt(c, &cx.sql.queue_paused, &[&name]).await? {
        Some(r) => get(&r, 0)?,
        None => false,
    };
    for row in query(c, &cx.sql.state_counts, &[&name]).await? {
        let state: String = get(&row, 0)?;
        let n: i64 = get(&row, 1)?;
        if let Some(s) = JobState::parse(&state) {
            stats.set_count(s, n.max(0) as u64);
        }
    }
    let oldest: Option<i64> = match query_opt(c, &cx.sql.oldest_waiting, &[&name]).await? {
        Some(r) => get(&r, 0)?,
        None => None,
    };
    stats.oldest_waiting_age_ms = oldest.map_or(0, |t| (now - t).max(0) as u64);
    Ok(stats)
}

/// Each table of the schema and its indexes, in bytes.
pub(crate) async fn footprint(c: &impl GenericClient, cx: &Cx) -> Result<Vec<StoreObject>> {
    let mut out = Vec::new();
    for row in query(c, &cx.sql.footprint, &[&cx.schema]).await? {
        let name: String = get(&row, 0)?;
        let (table, indexes): (i64, i64) = (get(&row, 1)?, get(&row, 2)?);
        out.push(StoreObject {
            name: name.clone(),
            kind: "table",
            bytes: table.max(0) as u64,
        });
        out.push(StoreObject {
            name,
            kind: "indexes",
            bytes: indexes.max(0) as u64,
        });
    }
    Ok(out)
}

/// The flow-control state of `queue` ([`errand_core::Store::flow_state`]).
pub(crate) async fn flow_state(
    c: &impl GenericClient,
    cx: &Cx,
    queue: &str,
    limit: usize,
) -> Result<FlowRows> {
    let active: i64 = match query_opt(c, &cx.sql.flow_active, &[&queue]).await? {
        Some(r) => get(&r, 0)?,
        None => 0,
    };
    let mut queue_bucket = None;
    let mut drained = Vec::new();
    for r in query(c, &cx.sql.flow_buckets, &[&queue, &(limit as i64)]).await? {
        let scope: String = get(&r, 0)?;
        let bucket = Bucket {
            tokens: get(&r, 2)?,
            at: get(&r, 3)?,
        };
        if scope == "queue" {
            queue_bucket = Some(bucket);
        } else {
            drained.push((get::<String>(&r, 1)?, bucket));
        }
    }
    let busy: Vec<(String, i64)> = query(c, &cx.sql.flow_groups, &[&queue, &(limit as i64)])
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
        .collect::<Result<_>>()?;
    // The busy groups' buckets not among the lowest: one statement for all of them.
    let missing: Vec<&str> = busy
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !drained.iter().any(|(d, _)| d == k))
        .collect();
    let mut more = Vec::new();
    if !missing.is_empty() {
        for r in query(c, &cx.sql.flow_group_buckets, &[&queue, &missing]).await? {
            let key: String = get(&r, 0)?;
            more.push((
                key,
                Bucket {
                    tokens: get(&r, 1)?,
                    at: get(&r, 2)?,
                },
            ));
        }
    }
    let mut groups = Vec::with_capacity(limit);
    for (key, n) in busy {
        let bucket = drained
            .iter()
            .chain(&more)
            .find(|(k, _)| *k == key)
            .map(|(_, b)| *b);
        groups.push(GroupFlowRow {
            key,
            active: n.max(0) as u64,
            bucket,
        });
    }
    Ok(FlowRows {
        active: active.max(0) as u64,
        queue_bucket,
        groups: busy_then_lowest(groups, drained, limit),
    })
}
