//! Claiming: what admission needs gathered for each queue (groups in rotation, their best candidates,
//! active counts, rate buckets), the plan `errand_core::admission` makes of it applied, and the leases
//! renewed. Ends where a job is active with a lease; what happens to it next is `transition`'s.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::GenericClient;

use errand_core::admission::{self, Bucket, BucketKey, QueueClaim, Rules};
use errand_core::store::{Claimed, JobClaim, LeaseRenew, Renewed};
use errand_core::{Error, JobId, Result, Timestamp};

use errand_core::store::row::parse_id;

use crate::conn::lock_key;
use crate::sql::Cx;

use super::transition::promote;
use super::{decode_all, execute, get, int8, notify, query, query_opt};

/// Promotes the queues' due jobs, then claims the best waiting ones. Candidates are locked with
/// `FOR UPDATE SKIP LOCKED`: concurrent claimers (on any node) pass over each other's rows instead of
/// waiting for them, and no job is claimed twice.
pub(crate) async fn job_claim(c: &impl GenericClient, cx: &Cx, p: &JobClaim) -> Result<Claimed> {
    // A queue named twice would lock (and count) its candidates twice.
    let mut queues: Vec<(&str, &Rules)> = Vec::with_capacity(p.queues.len());
    for (q, rules) in p.queues.iter().zip(&p.rules) {
        if !queues.iter().any(|(seen, _)| *seen == q.as_str()) {
            queues.push((q, rules));
        }
    }
    let mut out = Claimed {
        promoted: Vec::new(),
        jobs: Vec::new(),
        retry_at: None,
        blocked: false,
    };
    if queues.is_empty() || p.limit == 0 {
        return Ok(out);
    }
    let names: Vec<&str> = queues.iter().map(|(q, _)| *q).collect();
    out.promoted = promote(c, cx, &names, p.now, p.promote_limit).await?;
    let limit = p.limit as i64;
    let cap = p
        .lease_cap_ms
        .map(|c| int8(c, "lease_cap_ms"))
        .transpose()?;
    let mut keyed: BTreeSet<String> = BTreeSet::new();
    if let [(queue, rules)] = queues[..]
        && !rules.limits_queue()
    {
        let rows = query(
            c,
            &cx.sql.claim_one,
            &[&queue, &p.lease, &p.worker_id, &p.now, &limit, &cap],
        )
        .await?;
        if !rows.is_empty() {
            out.jobs = decode_all(&rows)?;
            // RETURNING has no order: restore best-first.
            out.jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
            return Ok(out);
        }
    }
    // Queues without rules of their own that hold keyed jobs are claimed under flow control too.
    let unruled: Vec<&str> = queues
        .iter()
        .filter(|(_, r)| !r.limits_queue())
        .map(|(q, _)| *q)
        .collect();
    if !unruled.is_empty() {
        for row in query(c, &cx.sql.keyed_waiting, &[&unruled]).await? {
            keyed.insert(get(&row, 0)?);
        }
    }
    let controlled = |q: &str, r: &Rules| r.limits_queue() || keyed.contains(q);
    let plain: Vec<&str> = queues
        .iter()
        .filter(|(q, r)| !controlled(q, r))
        .map(|(q, _)| *q)
        .collect();
    let mut flow: Vec<(&str, &Rules)> = queues
        .iter()
        .filter(|(q, r)| controlled(q, r))
        .copied()
        .collect();
    // One lock per flow-controlled queue, held to the commit, taken in one order by every claim.
    let mut keys: Vec<i64> = flow
        .iter()
        .map(|(q, _)| lock_key(&[&cx.schema, "errand.admit", q]))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if !keys.is_empty() {
        query(c, &cx.sql.lock_keys, &[&keys]).await?;
    }
    let mut paused_flow = Vec::new();
    for (q, _) in &flow {
        let paused = query_opt(c, &cx.sql.queue_paused, &[q]).await?;
        if paused
            .map(|r| get::<bool>(&r, 0))
            .transpose()?
            .unwrap_or(false)
        {
            paused_flow.push(*q);
        }
    }
    flow.retain(|(q, _)| !paused_flow.contains(q));

    // Per queue, its candidates in the order it gives them: best first for a plain queue (the best
    // `limit` of each, locked), the plan's order for a flow-controlled one.
    let mut lists: Vec<Vec<(i32, i64, JobId)>> = Vec::new();
    let mut admitted: Vec<Option<QueueClaim>> = Vec::new();
    if !plain.is_empty() {
        let mut by_queue: HashMap<String, Vec<(i32, i64, JobId)>> = HashMap::new();
        for row in query(c, &cx.sql.claim_candidates, &[&plain, &limit]).await? {
            let id = parse_id(get(&row, 0)?)?;
            by_queue
                .entry(get(&row, 1)?)
                .or_default()
                .push((get(&row, 2)?, get(&row, 3)?, id));
        }
        for mut list in by_queue.into_values() {
            list.sort();
            lists.push(list);
            admitted.push(None);
        }
    }
    for (q, rules) in &flow {
        let a = admit(c, cx, q, rules, p.now, p.limit).await?;
        lists.push(a.ordered());
        admitted.push(Some(a));
    }
    let taken = admission::merge(&lists, p.limit);
    let mut chosen: Vec<String> = Vec::new();
    let mut left: Vec<String> = Vec::new();
    for ((list, n), a) in lists.iter().zip(&taken).zip(admitted) {
        let Some(a) = a else {
            chosen.extend(list[..*n].iter().map(|(_, _, id)| id.to_string()));
            left.extend(list[*n..].iter().map(|(_, _, id)| id.to_string()));
            continue;
        };
        let plan = a.kept(*n);
        chosen.extend(plan.jobs.iter().map(|id| id.to_string()));
        store_plan(c, cx, &a, &plan).await?;
        a.add_hints(&mut out.retry_at, &mut out.blocked);
    }
    // Rows locked but not taken were invisible to other claimers until this commits: tell them.
    if !left.is_empty() {
        notify(c, cx, plain.iter().copied()).await?;
    }
    if !chosen.is_empty() {
        let rows = query(
            c,
            &cx.sql.claim_ids,
            &[&chosen, &p.lease, &p.worker_id, &p.now, &cap],
        )
        .await?;
        out.jobs = decode_all(&rows)?;
        out.jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
    }
    Ok(out)
}

/// Stores a plan's bucket states and rotation cursor.
async fn store_plan(
    c: &impl GenericClient,
    cx: &Cx,
    a: &QueueClaim,
    plan: &admission::Plan,
) -> Result<()> {
    if !plan.buckets.is_empty() {
        let (mut scopes, mut keys, mut tokens, mut ats) = (vec![], vec![], vec![], vec![]);
        for (key, b) in &plan.buckets {
            let (scope, k) = key.parts();
            scopes.push(scope);
            keys.push(k);
            tokens.push(b.tokens);
            ats.push(b.at);
        }
        execute(
            c,
            &cx.sql.put_buckets,
            &[&a.queue, &scopes, &keys, &tokens, &ats],
        )
        .await?;
    }
    if let Some(cursor) = a.moved_cursor(plan) {
        execute(c, &cx.sql.put_fair_cursor, &[&a.queue, &cursor]).await?;
    }
    Ok(())
}

/// Gathers what [`admission::plan`] needs for a claim of `want` from `queue` (the core's
/// `admission::gather` over [`Gather`]). The caller holds the queue's admission lock.
async fn admit(
    c: &impl GenericClient,
    cx: &Cx,
    queue: &str,
    rules: &Rules,
    now: Timestamp,
    want: usize,
) -> Result<QueueClaim> {
    admission::gather(&mut Gather { c, cx, queue }, queue, rules, now, want).await
}

/// The reads of one queue's admission on PostgreSQL: each one statement for all groups.
struct Gather<'a, C> {
    c: &'a C,
    cx: &'a Cx,
    queue: &'a str,
}

impl<C: GenericClient + Sync> admission::GatherStatements for Gather<'_, C> {
    async fn cursor(&mut self) -> Result<String> {
        Ok(
            match query_opt(self.c, &self.cx.sql.fair_cursor, &[&self.queue]).await? {
                Some(row) => get::<Option<String>>(&row, 0)?.unwrap_or_default(),
                None => String::new(),
            },
        )
    }

    async fn group_keys_after(&mut self, after: &str, n: usize) -> Result<Vec<String>> {
        let n = n as i32;
        let rows = query(self.c, &self.cx.sql.keys_after, &[&self.queue, &after, &n]).await?;
        rows.iter().map(|r| get::<String>(r, 0)).collect()
    }

    async fn has_ungrouped(&mut self) -> Result<bool> {
        match query_opt(self.c, &self.cx.sql.ungrouped_waiting, &[&self.queue]).await? {
            Some(row) => get(&row, 0),
            None => Ok(false),
        }
    }

    async fn candidates(
        &mut self,
        keys: &[String],
        key_limit: i64,
        per_group: i64,
    ) -> Result<HashMap<String, Vec<admission::Candidate>>> {
        let grouped: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.is_empty())
            .collect();
        let (c, sql, queue) = (self.c, &self.cx.sql, self.queue);
        let mut rows = Vec::new();
        if keys.iter().any(String::is_empty) {
            let params = [&queue as _, &key_limit as _, &per_group as _];
            rows.extend(query(c, &sql.ungrouped_candidates, &params).await?);
        }
        if !grouped.is_empty() {
            let params = [&queue as _, &key_limit as _, &per_group as _, &grouped as _];
            rows.extend(query(c, &sql.grouped_candidates, &params).await?);
        }
        let mut jobs_of: HashMap<String, Vec<admission::Candidate>> = HashMap::new();
        for row in &rows {
            jobs_of
                .entry(get(row, 0)?)
                .or_default()
                .push(admission::Candidate {
                    id: parse_id(get(row, 1)?)?,
                    priority: get(row, 2)?,
                    run_at: get(row, 3)?,
                    concurrency_key: get(row, 4)?,
                    key_active: get::<i64>(row, 5)?.max(0) as u64,
                });
        }
        Ok(jobs_of)
    }

    async fn group_active(&mut self, groups: &[&str]) -> Result<HashMap<String, u64>> {
        let mut active_of = HashMap::new();
        for row in query(self.c, &self.cx.sql.group_active, &[&self.queue, &groups]).await? {
            active_of.insert(get(&row, 0)?, get::<i64>(&row, 1)?.max(0) as u64);
        }
        Ok(active_of)
    }

    async fn buckets(
        &mut self,
        groups: &[&str],
        _queue: bool,
        _per_group: bool,
    ) -> Result<(Option<Bucket>, HashMap<String, Bucket>)> {
        // One statement reads the queue's bucket and the groups' together; the core uses what its
        // rules look at.
        let mut queue_bucket = None;
        let mut bucket_of = HashMap::new();
        for row in query(self.c, &self.cx.sql.buckets, &[&self.queue, &groups]).await? {
            let b = Bucket {
                tokens: get(&row, 2)?,
                at: get(&row, 3)?,
            };
            match BucketKey::from_parts(get(&row, 0)?, get(&row, 1)?) {
                Some(BucketKey::Queue) => queue_bucket = Some(b),
                Some(BucketKey::Group(g)) => {
                    bucket_of.insert(g, b);
                }
                None => {}
            }
        }
        Ok((queue_bucket, bucket_of))
    }

    async fn queue_active(&mut self) -> Result<u64> {
        let row = query_opt(self.c, &self.cx.sql.count_state, &[&self.queue, &"active"]).await?;
        let n: i64 = row.map(|r| get(&r, 0)).transpose()?.unwrap_or(0);
        Ok(n.max(0) as u64)
    }
}

pub(crate) async fn lease_renew(
    c: &impl GenericClient,
    cx: &Cx,
    p: &LeaseRenew,
) -> Result<Renewed> {
    let id = p.id.to_string();
    let progress = p.progress.as_ref().map(|r| r.get());
    let row = query_opt(c, &cx.sql.renew, &[&id, &p.token, &p.now, &progress])
        .await?
        .ok_or(Error::LeaseLost)?;
    Ok(Renewed {
        lease_expires_at: get(&row, 0)?,
        cancel_requested: get(&row, 1)?,
        queue: get(&row, 2)?,
        worker_id: get(&row, 3)?,
    })
}
