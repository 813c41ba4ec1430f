//! Inserting jobs, with the unique keys they hold resolved under advisory locks taken in a fixed order.
//! Ends where the job is stored; who may hold a key afterwards is the transitions' (`lock_unique_keys`
//! is shared with them).

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::GenericClient;

use errand_core::store::{Inserted, JobSpec, over_bound, waiting_bounds};
use errand_core::{JobId, JobState, Result};

use errand_core::store::row::{parse_id, parse_state};

use crate::conn::lock_key;
use crate::sql::Cx;

use super::{execute, get, int4, int8, json_text, notify, query};

/// The advisory lock that serialises everything deciding who holds `(queue, unique_key)`: inserts with
/// that key and revivals of jobs that have it.
fn unique_lock(cx: &Cx, queue: &str, key: &str) -> i64 {
    lock_key(&["errand.unique", &cx.schema, queue, key])
}

/// Refuses the insert when it would take a bounded queue past its `max_waiting`
/// ([`JobSpec::max_waiting`]). Each bounded queue's lock is held to the commit, so that concurrent
/// inserts into it count one after another; taken before any unique key's, in one order.
async fn check_waiting_bounds(c: &impl GenericClient, cx: &Cx, jobs: &[JobSpec]) -> Result<()> {
    let bounds = waiting_bounds(jobs);
    if bounds.is_empty() {
        return Ok(());
    }
    let mut locks: Vec<i64> = bounds
        .iter()
        .map(|(q, ..)| lock_key(&["errand.waiting", &cx.schema, q]))
        .collect();
    locks.sort_unstable();
    locks.dedup();
    query(c, &cx.sql.lock_keys, &[&locks]).await?;
    for (queue, max, adding) in bounds {
        let row = query(c, &cx.sql.waiting_held, &[&queue]).await?;
        let held: i64 = row.first().map(|r| get(r, 0)).transpose()?.unwrap_or(0);
        if let Some(e) = over_bound(queue, max, held.max(0) as u64, adding) {
            return Err(e);
        }
    }
    Ok(())
}

/// Locks the given unique keys, sorted (so that two transactions never wait on each other in a cycle).
pub(super) async fn lock_unique_keys(
    c: &impl GenericClient,
    cx: &Cx,
    keys: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    let locks: Vec<i64> = keys
        .into_iter()
        .map(|(q, k)| unique_lock(cx, &q, &k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !locks.is_empty() {
        query(c, &cx.sql.lock_keys, &[&locks]).await?;
    }
    Ok(())
}

/// Inserts a batch. Jobs with a unique key are resolved under an advisory lock per `(queue, key)`, held
/// until commit, so that concurrent inserts of one key (from any node) make exactly one job: the first
/// to get the lock inserts, the others then see its job. A key is resolved against everything before
/// it, including earlier jobs of the same batch. Everything new goes in with one statement.
pub(crate) async fn job_insert(
    c: &impl GenericClient,
    cx: &Cx,
    jobs: &[JobSpec],
) -> Result<Vec<Inserted>> {
    let mut out = vec![Inserted::New; jobs.len()];
    if jobs.is_empty() {
        return Ok(out);
    }
    let queues: Vec<&str> = jobs
        .iter()
        .map(|j| j.queue.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Sorted, like every set of locks taken here: concurrent batches register queues in one order.
    query(c, &cx.sql.register_queues, &[&queues]).await?;
    check_waiting_bounds(c, cx, jobs).await?;

    let unique: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].unique_key.is_some())
        .collect();
    if !unique.is_empty() {
        let key = |i: usize| {
            (
                jobs[i].queue.as_str(),
                jobs[i].unique_key.as_deref().unwrap_or(""),
            )
        };
        lock_unique_keys(
            c,
            cx,
            unique.iter().map(|&i| {
                let (q, k) = key(i);
                (q.to_string(), k.to_string())
            }),
        )
        .await?;
        let qs: Vec<&str> = unique.iter().map(|&i| key(i).0).collect();
        let ks: Vec<&str> = unique.iter().map(|&i| key(i).1).collect();
        let since: Vec<i64> = unique
            .iter()
            .map(|&i| jobs[i].unique_finished_since)
            .collect();
        // Position (1-based, in `unique`) → the newest stored job holding that key.
        let mut stored: HashMap<usize, (JobId, JobState)> = HashMap::new();
        for row in query(c, &cx.sql.find_unique, &[&qs, &ks, &since]).await? {
            let n: i64 = get(&row, 0)?;
            let id = parse_id(get(&row, 1)?)?;
            let state = parse_state(get(&row, 2)?)?;
            stored.insert(n as usize, (id, state));
        }
        // The first job of the batch to take a key holds it for the rest of the batch.
        let mut taken: HashMap<(&str, &str), (JobId, JobState)> = HashMap::new();
        for (pos, &i) in unique.iter().enumerate() {
            let earlier = taken.get(&key(i)).copied();
            let holder = match (stored.get(&(pos + 1)).copied(), earlier) {
                // Both hold it: the newer one, as a lookup after inserting the earlier job would find.
                (Some(a), Some(b)) => Some(if a.0 > b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            match holder {
                Some((id, state)) => out[i] = Inserted::Existing { id, state },
                None => {
                    taken.insert(key(i), (jobs[i].id, jobs[i].state));
                }
            }
        }
    }

    let new: Vec<usize> = (0..jobs.len())
        .filter(|&i| out[i] == Inserted::New)
        .collect();
    if new.is_empty() {
        return Ok(out);
    }
    let mut ids = Vec::with_capacity(new.len());
    let mut qs = Vec::with_capacity(new.len());
    let mut kinds = Vec::with_capacity(new.len());
    let mut payloads = Vec::with_capacity(new.len());
    let mut states = Vec::with_capacity(new.len());
    let mut priorities = Vec::with_capacity(new.len());
    let mut run_ats = Vec::with_capacity(new.len());
    let mut max_attempts = Vec::with_capacity(new.len());
    let mut backoffs = Vec::with_capacity(new.len());
    let mut timeouts = Vec::with_capacity(new.len());
    let mut heartbeats = Vec::with_capacity(new.len());
    let mut leases = Vec::with_capacity(new.len());
    let mut max_stalled = Vec::with_capacity(new.len());
    let mut unique_keys = Vec::with_capacity(new.len());
    let mut group_keys = Vec::with_capacity(new.len());
    let mut concurrency_keys = Vec::with_capacity(new.len());
    let mut parent_ids: Vec<Option<String>> = Vec::with_capacity(new.len());
    let mut parent_on_dead: Vec<Option<&str>> = Vec::with_capacity(new.len());
    let mut pending_children = Vec::with_capacity(new.len());
    let mut idempotency_keys = Vec::with_capacity(new.len());
    let mut created = Vec::with_capacity(new.len());
    let mut expires = Vec::with_capacity(new.len());
    for &i in &new {
        let j = &jobs[i];
        ids.push(j.id.to_string());
        qs.push(j.queue.as_str());
        kinds.push(j.kind.as_str());
        payloads.push(j.payload.get());
        states.push(j.state.as_str());
        priorities.push(j.priority);
        run_ats.push(j.run_at);
        max_attempts.push(int4(j.max_attempts, "max_attempts")?);
        backoffs.push(json_text(&j.backoff)?);
        timeouts.push(int8(j.timeout_ms, "timeout_ms")?);
        heartbeats.push(
            j.heartbeat_ms
                .map(|h| int8(h, "heartbeat_ms"))
                .transpose()?,
        );
        leases.push(int8(j.lease_ms, "lease_ms")?);
        max_stalled.push(int4(j.max_stalled, "max_stalled")?);
        unique_keys.push(j.unique_key.as_deref());
        group_keys.push(j.group_key.as_deref());
        concurrency_keys.push(j.concurrency_key.as_deref());
        parent_ids.push(j.parent_id.map(|p| p.to_string()));
        parent_on_dead.push(j.parent_id.map(|_| j.parent_on_dead.as_str()));
        pending_children.push(int4(j.pending_children, "pending_children")?);
        idempotency_keys.push(j.idempotency_key.as_str());
        created.push(j.created_at);
        expires.push(j.expires_at);
    }
    execute(
        c,
        &cx.sql.insert,
        &[
            &ids,
            &qs,
            &kinds,
            &payloads,
            &states,
            &priorities,
            &run_ats,
            &max_attempts,
            &backoffs,
            &timeouts,
            &heartbeats,
            &leases,
            &max_stalled,
            &unique_keys,
            &group_keys,
            &idempotency_keys,
            &created,
            &concurrency_keys,
            &parent_ids,
            &parent_on_dead,
            &pending_children,
            &expires,
        ],
    )
    .await?;
    notify(
        c,
        cx,
        new.iter()
            .filter(|&&i| jobs[i].state == JobState::Waiting)
            .map(|&i| jobs[i].queue.as_str()),
    )
    .await?;
    Ok(out)
}
