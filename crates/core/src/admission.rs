//! Which waiting jobs a claim may take from a queue with flow control: rate limits (token buckets),
//! concurrency limits (per queue, per group, per concurrency key) and fairness between groups.
//!
//! The rules live here, once; a store only gathers what [`plan`] needs (candidates, counts of active
//! jobs, bucket states) inside its claim transaction, then applies what it answers (which jobs to claim,
//! the new bucket states, where the rotation goes on from). It does all of it under one lock per queue
//! (SQLite: the single writer; PostgreSQL: an advisory lock), so that two claims never both see the
//! same free capacity, on one node or many.
//!
//! **Fairness.** The jobs of a queue fall into groups by their group key (the tenant); jobs without one
//! form a group of their own, keyed `""`. A claim visits the groups that have waiting jobs in key order,
//! starting after the group the previous claim of the queue served last, wrapping around, and takes one
//! job per group per round — the best of the group by priority, then due time, then id. So one tenant's
//! 100,000 waiting jobs delay another tenant's single job by at most one round.
//!
//! **The two keys.** The group key is the tenant: fairness, `group_concurrency`, `group_rate_limit`.
//! The concurrency key is the thing that must not be worked on twice at once (an order, a wallet): at
//! most `key_concurrency` active jobs share one, whatever their groups. Ungrouped jobs are subject to
//! the queue's limits and the key limit, not to the per-group ones.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::JobId;

mod gather;

pub use gather::{GatherStatements, gather};

/// A token bucket: `limit` jobs per `period_ms`, in bursts of up to `burst` (default: `limit`). Each
/// claimed job takes one token; tokens come back continuously, `limit` per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    pub period_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// `limit` jobs per `period_ms`, in bursts of up to `limit`.
    pub fn new(limit: u32, period_ms: u64) -> Self {
        RateLimit {
            limit,
            period_ms,
            burst: None,
        }
    }

    fn capacity(&self) -> f64 {
        f64::from(self.burst.unwrap_or(self.limit))
    }

    /// The tokens in a bucket at `now`; a bucket never used is full.
    pub fn tokens(&self, bucket: Option<Bucket>, now: Timestamp) -> f64 {
        let Some(b) = bucket else {
            return self.capacity();
        };
        // A clock that went back adds nothing (and takes nothing).
        // Multiplied before divided: whole periods give whole tokens, with no rounding of a rate.
        let elapsed = now.saturating_sub(b.at).max(0) as f64;
        let added = elapsed * f64::from(self.limit) / self.period_ms.max(1) as f64;
        (b.tokens + added).min(self.capacity())
    }

    /// When a bucket holding `tokens` at `now` next holds a whole token.
    pub fn next_token_at(&self, tokens: f64, now: Timestamp) -> Timestamp {
        if tokens >= 1.0 {
            return now;
        }
        let per_token = self.period_ms.max(1) as f64 / f64::from(self.limit.max(1));
        now.saturating_add(((1.0 - tokens) * per_token).ceil() as i64)
    }
}

/// A queue's flow control as it stands (`Engine::flow_state`): its limits, what is active, and the
/// tokens its buckets hold now.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowState {
    pub concurrency: Option<u32>,
    pub active: u64,
    pub rate_limit: Option<RateLimit>,
    /// The queue's bucket now; `None` without a rate limit.
    pub bucket: Option<BucketNow>,
    pub group_concurrency: Option<u32>,
    pub group_rate_limit: Option<RateLimit>,
    /// Groups with active jobs or a bucket in use, busiest first (at most [`FLOW_GROUPS`]).
    pub groups: Vec<GroupFlow>,
}

/// The most groups [`FlowState`] lists.
pub const FLOW_GROUPS: usize = 100;

/// A bucket at an instant: the tokens it holds and when it next holds a whole one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketNow {
    pub tokens: f64,
    pub next_token_at: Timestamp,
}

impl BucketNow {
    /// `bucket` of `rate` at `now`.
    pub fn of(rate: &RateLimit, bucket: Option<Bucket>, now: Timestamp) -> BucketNow {
        let tokens = rate.tokens(bucket, now);
        BucketNow {
            tokens,
            next_token_at: rate.next_token_at(tokens, now),
        }
    }
}

/// One group's part of a [`FlowState`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupFlow {
    pub key: String,
    pub active: u64,
    /// `None` without a group rate limit.
    pub bucket: Option<BucketNow>,
}

/// A bucket's state as stored: `tokens` as they were at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub at: Timestamp,
}

/// Which bucket: the queue's, or one group's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BucketKey {
    Queue,
    Group(String),
}

impl BucketKey {
    /// `(scope, key)` as stores keep them: `("queue", "")` or `("group", <group key>)`.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            BucketKey::Queue => ("queue", ""),
            BucketKey::Group(g) => ("group", g),
        }
    }

    /// The inverse of [`BucketKey::parts`].
    pub fn from_parts(scope: &str, key: &str) -> Option<BucketKey> {
        match scope {
            "queue" => Some(BucketKey::Queue),
            "group" => Some(BucketKey::Group(key.to_string())),
            _ => None,
        }
    }
}

/// A queue's flow-control rules, from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// At most this many active jobs in the queue.
    pub concurrency: Option<u32>,
    /// At most this many active jobs per group.
    pub group_concurrency: Option<u32>,
    /// At most this many active jobs per concurrency key.
    pub key_concurrency: u32,
    /// Claims from the queue, all groups together.
    pub rate_limit: Option<RateLimit>,
    /// Claims per group.
    pub group_rate_limit: Option<RateLimit>,
}

impl Rules {
    /// Whether a queue with these rules needs the flow-controlled claim even when no job carries a
    /// group or concurrency key.
    pub fn limits_queue(&self) -> bool {
        self.concurrency.is_some() || self.rate_limit.is_some()
    }
}

/// One waiting job a claim may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: JobId,
    pub priority: i32,
    pub run_at: Timestamp,
    pub concurrency_key: Option<String>,
    /// Active jobs holding its concurrency key (0 without one).
    pub key_active: u64,
}

/// A group's waiting candidates (best first) and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `""`: the jobs without a group key.
    pub key: String,
    /// Its active jobs (0 when `group_concurrency` is unset: not counted).
    pub active: u64,
    /// Its bucket (`None`: never used, full; also when `group_rate_limit` is unset).
    pub bucket: Option<Bucket>,
    pub jobs: Vec<Candidate>,
}

/// What a store gathered for one queue's claim.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub rules: Rules,
    pub now: Timestamp,
    /// The queue's active jobs (0 when `concurrency` is unset: not counted).
    pub queue_active: u64,
    pub queue_bucket: Option<Bucket>,
    /// The groups with waiting jobs, in rotation order: starting after the group served last.
    pub groups: Vec<Group>,
}

/// What a claim takes from the queue, and what to write back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The jobs to claim, in the order taken.
    pub jobs: Vec<JobId>,
    /// Bucket states to store.
    pub buckets: Vec<(BucketKey, Bucket)>,
    /// The group the rotation goes on after, if it moved.
    pub cursor: Option<String>,
    /// Waiting candidates were held back by a rate limit: no token before this instant.
    pub retry_at: Option<Timestamp>,
    /// Waiting candidates were held back by a concurrency limit: a job leaving `active` may free one.
    pub blocked_by_concurrency: bool,
}

impl Gathered {
    /// The planned jobs with their priority and due time, for [`merge`].
    pub fn ordered(&self, plan: &Plan) -> Vec<(i32, Timestamp, JobId)> {
        let by_id: HashMap<JobId, &Candidate> = self
            .groups
            .iter()
            .flat_map(|g| g.jobs.iter().map(|c| (c.id, c)))
            .collect();
        plan.jobs
            .iter()
            .filter_map(|id| by_id.get(id).map(|c| (c.priority, c.run_at, *id)))
            .collect()
    }
}

/// Decides which of the gathered candidates a claim of up to `want` jobs takes: round-robin between
/// groups, one job per group per round, each within every limit. Deterministic, and greedy: planning
/// for fewer jobs gives a prefix of the plan for more, so a claim from several queues can plan each for
/// the whole claim, merge, and plan again for what it kept.
pub fn plan(input: &Gathered, want: usize) -> Plan {
    let rules = &input.rules;
    let now = input.now;
    let mut out = Plan::default();
    if want == 0 {
        return out;
    }
    let mut queue_tokens = rules.rate_limit.map(|r| r.tokens(input.queue_bucket, now));
    let mut queue_free = rules
        .concurrency
        .map(|c| u64::from(c).saturating_sub(input.queue_active));
    // Per group: the next candidate to look at, active count, tokens.
    let mut next = vec![0usize; input.groups.len()];
    let mut group_active: Vec<u64> = input.groups.iter().map(|g| g.active).collect();
    let mut group_tokens: Vec<Option<f64>> = input
        .groups
        .iter()
        .map(|g| {
            rules
                .group_rate_limit
                .filter(|_| !g.key.is_empty())
                .map(|r| r.tokens(g.bucket, now))
        })
        .collect();
    let mut key_taken: HashMap<&str, u64> = HashMap::new();
    let mut group_taken = vec![0u64; input.groups.len()];
    let mut retry_at: Option<Timestamp> = None;
    let mut note_rate = |r: &RateLimit, tokens: f64| {
        let at = r.next_token_at(tokens, now);
        retry_at = Some(retry_at.map_or(at, |t: Timestamp| t.min(at)));
    };

    // The last group a claim that takes nothing got to look at (past the queue-wide limits).
    let mut looked_at: Option<usize> = None;
    'rounds: loop {
        let mut took_this_round = false;
        for (gi, g) in input.groups.iter().enumerate() {
            if out.jobs.len() >= want {
                break 'rounds;
            }
            // Only a group with candidates left can be held back (else a hint would wake a fetch
            // for nothing). A group gathered with waiting jobs but no candidate has them all held
            // by full concurrency keys: a job leaving `active` may free one.
            if next[gi] >= g.jobs.len() {
                if g.jobs.is_empty() {
                    out.blocked_by_concurrency = true;
                }
                continue;
            }
            if queue_free == Some(0) {
                out.blocked_by_concurrency = true;
                break 'rounds;
            }
            if let (Some(r), Some(t)) = (rules.rate_limit, queue_tokens)
                && t < 1.0
            {
                note_rate(&r, t);
                break 'rounds;
            }
            looked_at = Some(gi);
            let grouped = !g.key.is_empty();
            if grouped
                && rules
                    .group_concurrency
                    .is_some_and(|c| group_active[gi] >= u64::from(c))
            {
                out.blocked_by_concurrency = true;
                continue;
            }
            if let (Some(r), Some(t)) = (rules.group_rate_limit, group_tokens[gi])
                && t < 1.0
            {
                note_rate(&r, t);
                continue;
            }
            // The group's best candidate whose concurrency key has room.
            let mut picked = None;
            while next[gi] < g.jobs.len() {
                let c = &g.jobs[next[gi]];
                next[gi] += 1;
                let room = match c.concurrency_key.as_deref() {
                    None => true,
                    Some(k) => {
                        c.key_active + key_taken.get(k).copied().unwrap_or(0)
                            < u64::from(rules.key_concurrency)
                    }
                };
                if room {
                    picked = Some(c);
                    break;
                }
                out.blocked_by_concurrency = true;
            }
            let Some(c) = picked else { continue };
            if let Some(k) = c.concurrency_key.as_deref() {
                *key_taken.entry(k).or_default() += 1;
            }
            out.jobs.push(c.id);
            out.cursor = Some(g.key.clone());
            took_this_round = true;
            group_active[gi] += 1;
            group_taken[gi] += 1;
            if let Some(f) = queue_free.as_mut() {
                *f -= 1;
            }
            if let Some(t) = queue_tokens.as_mut() {
                *t -= 1.0;
            }
            if let Some(t) = group_tokens[gi].as_mut() {
                *t -= 1.0;
            }
        }
        if !took_this_round {
            break;
        }
    }
    // A claim that took nothing moves the rotation past the groups it looked at (held back by their
    // own limits), so that groups beyond the ones a claim can look at are reached by the next ones.
    // One stopped by a queue-wide limit looked at none: the rotation stays, and the next group in
    // turn gets the next free place.
    if out.jobs.is_empty() {
        out.cursor = looked_at.map(|gi| input.groups[gi].key.clone());
    }
    // A bucket's time never goes back: a node whose clock is behind another's would otherwise be
    // credited the gap again by the next claim of the node ahead (tokens from nothing). Nor is it
    // kept more than MAX_CLOCK_SKEW_MS ahead: a node whose clock ran ahead would freeze the bucket
    // for everyone else until their clocks caught up.
    let at = |b: Option<Bucket>| {
        b.map_or(now, |b| {
            b.at.max(now).min(now.saturating_add(MAX_CLOCK_SKEW_MS))
        })
    };
    // An empty claim changes no bucket: nothing to write.
    if let (Some(_), Some(t), false) = (rules.rate_limit, queue_tokens, out.jobs.is_empty()) {
        out.buckets.push((
            BucketKey::Queue,
            Bucket {
                tokens: t,
                at: at(input.queue_bucket),
            },
        ));
    }
    for (gi, g) in input.groups.iter().enumerate() {
        if let (Some(t), true) = (group_tokens[gi], group_taken[gi] > 0) {
            out.buckets.push((
                BucketKey::Group(g.key.clone()),
                Bucket {
                    tokens: t,
                    at: at(g.bucket),
                },
            ));
        }
    }
    out.retry_at = retry_at;
    out
}

/// The groups of a queue in rotation order, given the keys after `cursor` (ascending), whether jobs
/// without a group wait, and the keys up to and including `cursor` (ascending): after the cursor, then
/// around. The group without a key (`""`) sorts before every key.
pub fn rotation(
    cursor: &str,
    after: Vec<String>,
    ungrouped: bool,
    upto: Vec<String>,
) -> Vec<String> {
    let mut out = after;
    if ungrouped {
        out.push(String::new());
    }
    if !cursor.is_empty() {
        out.extend(
            upto.into_iter()
                .filter(|k| !k.is_empty() && k.as_str() <= cursor),
        );
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|k| seen.insert(k.clone()));
    out
}

/// How far ahead of a node's clock a bucket's time may be kept (see [`plan`]).
pub const MAX_CLOCK_SKEW_MS: i64 = 10_000;

/// At most this many groups are looked at per claim, and this many candidates per group: bounded work
/// per claim whatever the number of tenants. Groups beyond are reached by the following claims.
pub const MAX_GROUPS_PER_CLAIM: usize = 256;

/// How many candidates to read per group, for a claim of `want` over `groups` groups: enough for the
/// group's share of the claim, with room for candidates a concurrency key holds back.
pub fn candidates_per_group(want: usize, groups: usize) -> usize {
    let share = want.div_ceil(groups.max(1));
    (share * 2).clamp(4, want.max(4))
}

/// One flow-controlled queue's part in a claim: what the store gathered, the cursor it read, and the
/// plan for the whole claim. The store claims [`QueueClaim::kept`] and writes back its buckets and
/// [`QueueClaim::moved_cursor`].
#[derive(Debug, Clone)]
pub struct QueueClaim {
    pub queue: String,
    pub cursor: String,
    pub gathered: Gathered,
    pub plan: Plan,
}

impl QueueClaim {
    /// Plans a claim of up to `want` jobs over what was gathered.
    pub fn new(queue: &str, cursor: String, gathered: Gathered, want: usize) -> Self {
        QueueClaim {
            queue: queue.to_string(),
            cursor,
            plan: plan(&gathered, want),
            gathered,
        }
    }

    /// The planned jobs, as [`merge`] takes them.
    pub fn ordered(&self) -> Vec<(i32, Timestamp, JobId)> {
        self.gathered.ordered(&self.plan)
    }

    /// The plan for the first `n` jobs, those the merge kept: a prefix of the plan for the claim.
    pub fn kept(&self, n: usize) -> Plan {
        if n == self.plan.jobs.len() {
            self.plan.clone()
        } else {
            plan(&self.gathered, n)
        }
    }

    /// The cursor `plan` leaves, if it differs from the one read: idle long polls claim often, and an
    /// unchanged cursor is not written.
    pub fn moved_cursor<'a>(&self, plan: &'a Plan) -> Option<&'a str> {
        plan.cursor.as_deref().filter(|c| *c != self.cursor)
    }

    /// Folds this queue's hints into a claim's: the earliest token, and whether any limit held jobs.
    pub fn add_hints(&self, retry_at: &mut Option<Timestamp>, blocked: &mut bool) {
        if let Some(at) = self.plan.retry_at {
            *retry_at = Some(retry_at.map_or(at, |t| t.min(at)));
        }
        *blocked |= self.plan.blocked_by_concurrency;
    }
}

/// How many jobs a claim of `limit` takes from the front of each queue's list, merging the lists best
/// first (priority, then due time, then id) by their heads: each list keeps its own order (a
/// flow-controlled queue's is its rotation, not best first).
pub fn merge(lists: &[Vec<(i32, Timestamp, JobId)>], limit: usize) -> Vec<usize> {
    let mut taken = vec![0usize; lists.len()];
    for _ in 0..limit {
        let best = (0..lists.len())
            .filter_map(|i| lists[i].get(taken[i]).map(|head| (head, i)))
            .min();
        match best {
            Some((_, i)) => taken[i] += 1,
            None => break,
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rules() -> Rules {
        Rules {
            concurrency: None,
            group_concurrency: None,
            key_concurrency: 1,
            rate_limit: None,
            group_rate_limit: None,
        }
    }

    fn cand(n: u64, key: Option<&str>, key_active: u64) -> Candidate {
        Candidate {
            id: JobId::from_u128(u128::from(n)),
            priority: 500,
            run_at: 0,
            concurrency_key: key.map(str::to_string),
            key_active,
        }
    }

    fn group(key: &str, ids: std::ops::Range<u64>) -> Group {
        Group {
            key: key.into(),
            active: 0,
            bucket: None,
            jobs: ids.map(|n| cand(n, None, 0)).collect(),
        }
    }

    /// What a store gathers at time 0 for a queue with nothing active and fresh buckets.
    fn idle(rules: Rules, groups: Vec<Group>) -> Gathered {
        Gathered {
            rules,
            now: 0,
            queue_active: 0,
            queue_bucket: None,
            groups,
        }
    }

    fn ids(p: &Plan) -> Vec<u128> {
        p.jobs.iter().map(|id| id.to_u128()).collect()
    }

    #[test]
    fn groups_take_turns_one_job_a_round() {
        let r = rules();
        let input = Gathered {
            rules: r,
            now: 0,
            queue_active: 0,
            queue_bucket: None,
            groups: vec![
                group("a", 0..100),
                group("b", 100..101),
                group("c", 200..202),
            ],
        };
        let p = plan(&input, 5);
        assert_eq!(ids(&p), vec![0, 100, 200, 1, 201]);
        assert_eq!(p.cursor.as_deref(), Some("c"));
        // Planning for fewer gives a prefix.
        let fewer = plan(&input, 2);
        assert_eq!(ids(&fewer), vec![0, 100]);
        assert_eq!(fewer.cursor.as_deref(), Some("b"));
    }

    #[test]
    fn queue_and_group_concurrency_hold() {
        let r = Rules {
            concurrency: Some(3),
            group_concurrency: Some(1),
            ..rules()
        };
        let mut a = group("a", 0..10);
        a.active = 1;
        let input = Gathered {
            rules: r,
            now: 0,
            queue_active: 1,
            queue_bucket: None,
            groups: vec![a, group("b", 10..20), group("c", 20..30), group("", 30..40)],
        };
        let p = plan(&input, 10);
        // a is full; b and c take one each; the queue is then full (1 + 2 = 3).
        assert_eq!(ids(&p), vec![10, 20]);
        assert!(p.blocked_by_concurrency);
        // Ungrouped jobs are not limited per group.
        let r = Rules {
            group_concurrency: Some(1),
            ..rules()
        };
        let p = plan(&idle(r, vec![group("", 0..10)]), 3);
        assert_eq!(ids(&p), vec![0, 1, 2]);
    }

    #[test]
    fn a_concurrency_key_holds_across_groups_and_within_a_claim() {
        let r = Rules {
            key_concurrency: 1,
            ..rules()
        };
        let g1 = Group {
            key: "t1".into(),
            active: 0,
            bucket: None,
            jobs: vec![cand(0, Some("order-1"), 0), cand(1, Some("order-2"), 0)],
        };
        let g2 = Group {
            key: "t2".into(),
            active: 0,
            bucket: None,
            jobs: vec![
                cand(2, Some("order-1"), 0),
                cand(3, Some("order-3"), 1),
                cand(4, None, 0),
            ],
        };
        let p = plan(&idle(r, vec![g1, g2]), 10);
        // order-1 once; order-3 is already active elsewhere.
        assert_eq!(ids(&p), vec![0, 4, 1]);
        assert!(p.blocked_by_concurrency);
    }

    #[test]
    fn token_buckets_refill_at_their_rate_and_say_when() {
        let rl = RateLimit::new(10, 1_000);
        assert_eq!(rl.tokens(None, 5), 10.0);
        let b = Bucket { tokens: 0.0, at: 0 };
        assert_eq!(rl.tokens(Some(b), 250), 2.5);
        assert_eq!(rl.tokens(Some(b), 60_000), 10.0, "capped at the burst");
        assert_eq!(
            rl.tokens(Some(b), -5),
            0.0,
            "a clock going back adds nothing"
        );
        assert_eq!(rl.next_token_at(0.5, 1_000), 1_050);

        let r = Rules {
            rate_limit: Some(RateLimit::new(4, 1_000)),
            group_rate_limit: Some(RateLimit::new(1, 1_000)),
            ..rules()
        };
        let p = plan(
            &idle(
                r,
                vec![group("a", 0..10), group("b", 10..20), group("", 20..30)],
            ),
            10,
        );
        // One per tenant (the group limit), the ungrouped jobs up to the queue's 4.
        assert_eq!(ids(&p), vec![0, 10, 20, 21]);
        assert_eq!(p.retry_at, Some(250));
        let queue = p
            .buckets
            .iter()
            .find(|(k, _)| *k == BucketKey::Queue)
            .unwrap();
        assert_eq!(queue.1, Bucket { tokens: 0.0, at: 0 });
        assert!(
            p.buckets
                .contains(&(BucketKey::Group("a".into()), Bucket { tokens: 0.0, at: 0 }))
        );
    }

    #[test]
    fn a_clock_behind_another_nodes_mints_no_tokens() {
        let r = Rules {
            rate_limit: Some(RateLimit::new(10, 1_000)),
            ..rules()
        };
        // Node A (at 1,000) emptied the bucket; node B's clock is 500 ms behind.
        let mut bucket = Some(Bucket {
            tokens: 0.0,
            at: 1_000,
        });
        let mut taken = 0;
        for node_now in [500, 1_000, 500, 1_000] {
            let p = plan(
                &Gathered {
                    rules: r.clone(),
                    now: node_now,
                    queue_active: 0,
                    queue_bucket: bucket,
                    groups: vec![group("", 0..100)],
                },
                10,
            );
            taken += p.jobs.len();
            if let Some((_, b)) = p.buckets.first() {
                bucket = Some(*b);
            }
        }
        assert_eq!(taken, 0, "no time passed on either clock");
        assert_eq!(bucket.unwrap().at, 1_000);

        // A node whose clock raced an hour ahead holds the bucket back for at most the skew: the
        // next claim with a correct clock keeps the bucket's time no further ahead than that.
        let ahead = Bucket {
            tokens: 5.0,
            at: 3_600_000,
        };
        let p = plan(
            &Gathered {
                rules: r.clone(),
                now: 0,
                queue_active: 0,
                queue_bucket: Some(ahead),
                groups: vec![group("", 0..100)],
            },
            10,
        );
        assert_eq!(p.jobs.len(), 5);
        assert_eq!(p.buckets[0].1.at, MAX_CLOCK_SKEW_MS);
    }

    #[test]
    fn a_queue_wide_limit_keeps_the_rotation_where_it_was() {
        let r = Rules {
            concurrency: Some(2),
            ..rules()
        };
        // Full: nothing looked at, the cursor does not move (the next free place goes to the next
        // group in turn, not always the first).
        let full = plan(
            &Gathered {
                rules: r.clone(),
                now: 0,
                queue_active: 2,
                queue_bucket: None,
                groups: vec![group("b", 10..20), group("c", 20..30), group("a", 0..10)],
            },
            5,
        );
        assert!(full.jobs.is_empty() && full.blocked_by_concurrency);
        assert_eq!(full.cursor, None);
        // Groups whose candidates are all held by full keys say so.
        let held = plan(
            &idle(
                rules(),
                vec![Group {
                    key: "a".into(),
                    active: 0,
                    bucket: None,
                    jobs: vec![],
                }],
            ),
            5,
        );
        assert!(held.jobs.is_empty() && held.blocked_by_concurrency);
    }

    #[test]
    fn no_hint_when_nothing_is_left_to_hold_back() {
        let r = Rules {
            concurrency: Some(3),
            rate_limit: Some(RateLimit::new(3, 1_000)),
            ..rules()
        };
        let p = plan(&idle(r, vec![group("", 0..3)]), 5);
        assert_eq!(p.jobs.len(), 3);
        assert!(!p.blocked_by_concurrency && p.retry_at.is_none(), "{p:?}");
    }

    #[test]
    fn an_empty_claim_moves_the_rotation_past_what_it_looked_at() {
        let r = Rules {
            group_concurrency: Some(1),
            ..rules()
        };
        let mut a = group("a", 0..3);
        a.active = 1;
        let p = plan(&idle(r, vec![a]), 1);
        assert!(p.jobs.is_empty());
        assert_eq!(p.cursor.as_deref(), Some("a"));
    }

    #[test]
    fn lists_merge_by_their_heads_each_keeping_its_order() {
        let id = |n: u128| JobId::from_u128(n);
        let plain = vec![(1, 0, id(1)), (5, 0, id(2))];
        let fair = vec![(3, 0, id(3)), (0, 0, id(4)), (9, 0, id(5))];
        assert_eq!(merge(&[plain.clone(), fair.clone()], 3), vec![1, 2]);
        assert_eq!(merge(&[plain, fair], 10), vec![2, 3]);
        assert_eq!(merge(&[], 10), Vec::<usize>::new());
    }

    #[test]
    fn rotation_goes_on_after_the_cursor_and_around() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rotation("b", v(&["c", "d"]), true, v(&["a", "b"])),
            v(&["c", "d", "", "a", "b"])
        );
        assert_eq!(
            rotation("", v(&["a", "b"]), true, vec![]),
            v(&["a", "b", ""])
        );
        assert_eq!(candidates_per_group(100, 1), 100);
        assert_eq!(candidates_per_group(100, 50), 4);
        assert_eq!(candidates_per_group(1, 3), 4);
    }
}
