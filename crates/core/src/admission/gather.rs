//! Gathering what [`plan`](super::plan) needs for one queue's claim, written once for both stores: which
//! groups are next in rotation after the queue's cursor, the best candidates of each, the active counts
//! and the rate buckets the rules look at. A store supplies the reads ([`GatherStatements`]) and runs
//! them in its claim transaction, under its lock for the queue; which reads run, with what, and how
//! their answers become a [`QueueClaim`] is decided here.

use std::collections::HashMap;

use crate::clock::Timestamp;
use crate::error::Result;

use super::{
    Bucket, Candidate, Gathered, Group, MAX_GROUPS_PER_CLAIM, QueueClaim, Rules,
    candidates_per_group, rotation,
};

/// The reads of one queue's admission, as a store runs them. The SQLite store answers per group (an
/// index seek each costs little in-process); the PostgreSQL store answers each in one statement for all
/// groups (a round trip each costs more than the work).
///
/// No `Send` bound is asked of the futures: each store calls [`gather`] with its own concrete type.
#[allow(async_fn_in_trait)]
pub trait GatherStatements {
    /// The queue's rotation cursor: the group key claimed from last (empty: none yet).
    async fn cursor(&mut self) -> Result<String>;

    /// Up to `n` group keys with waiting jobs after `after`, in order.
    async fn group_keys_after(&mut self, after: &str, n: usize) -> Result<Vec<String>>;

    /// Whether the queue has a waiting job outside every group.
    async fn has_ungrouped(&mut self) -> Result<bool>;

    /// The best `per_group` waiting jobs of each of `keys` (`""` is the jobs outside every group),
    /// best first, leaving out jobs whose concurrency key has `key_limit` jobs active.
    async fn candidates(
        &mut self,
        keys: &[String],
        key_limit: i64,
        per_group: i64,
    ) -> Result<HashMap<String, Vec<Candidate>>>;

    /// The active jobs of each of the `groups` (keys not answered have none).
    async fn group_active(&mut self, groups: &[&str]) -> Result<HashMap<String, u64>>;

    /// The queue's rate bucket (if `queue`) and those of `groups` (if `per_group`), as stored.
    async fn buckets(
        &mut self,
        groups: &[&str],
        queue: bool,
        per_group: bool,
    ) -> Result<(Option<Bucket>, HashMap<String, Bucket>)>;

    /// The queue's active jobs.
    async fn queue_active(&mut self) -> Result<u64>;
}

/// Gathers what the plan of a claim of `want` from `queue` under `rules` needs, at `now`.
pub async fn gather<S: GatherStatements>(
    s: &mut S,
    queue: &str,
    rules: &Rules,
    now: Timestamp,
    want: usize,
) -> Result<QueueClaim> {
    let cursor = s.cursor().await?;
    let max = MAX_GROUPS_PER_CLAIM;
    let after = s.group_keys_after(&cursor, max).await?;
    let upto = if cursor.is_empty() || after.len() >= max {
        Vec::new()
    } else {
        s.group_keys_after("", max - after.len()).await?
    };
    let ungrouped = s.has_ungrouped().await?;
    let mut keys = rotation(&cursor, after, ungrouped, upto);
    keys.truncate(max);

    let per_group = candidates_per_group(want, keys.len()) as i64;
    let key_limit = i64::from(rules.key_concurrency);
    let mut jobs_of = s.candidates(&keys, key_limit, per_group).await?;
    let grouped: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| !k.is_empty())
        .collect();
    let active_of = if rules.group_concurrency.is_some() && !grouped.is_empty() {
        s.group_active(&grouped).await?
    } else {
        HashMap::new()
    };
    let (queue_rate, group_rate) = (rules.rate_limit.is_some(), rules.group_rate_limit.is_some());
    let (queue_bucket, bucket_of) = if queue_rate || (group_rate && !grouped.is_empty()) {
        s.buckets(&grouped, queue_rate, group_rate).await?
    } else {
        (None, HashMap::new())
    };
    let queue_active = if rules.concurrency.is_some() {
        s.queue_active().await?
    } else {
        0
    };
    let groups = keys
        .into_iter()
        .map(|key| Group {
            active: active_of.get(&key).copied().unwrap_or(0),
            bucket: if group_rate {
                bucket_of.get(&key).copied()
            } else {
                None
            },
            jobs: jobs_of.remove(&key).unwrap_or_default(),
            key,
        })
        .collect();
    let gathered = Gathered {
        rules: rules.clone(),
        now,
        queue_active,
        queue_bucket: if queue_rate { queue_bucket } else { None },
        groups,
    };
    Ok(QueueClaim::new(queue, cursor, gathered, want))
}
