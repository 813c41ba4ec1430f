//! Flow control at claim time: concurrency limits (per queue, per group, per concurrency key), rate
//! limits (per queue, per group), and fairness between groups. The rules are the engine's
//! (`errand_core::admission`); these checks show each store gathers and applies them faithfully.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use errand_core::admission::RateLimit;
use errand_core::{Claim, Clock, JobOptions, NewJob, QueueConfig};

use crate::support::{claim, job, token};
use crate::{Ctx, Fixture};

fn keyed(queue: &str, n: u64, group: Option<&str>, key: Option<&str>) -> NewJob {
    job(queue, n).with_options(JobOptions {
        group_key: group.map(str::to_string),
        concurrency_key: key.map(str::to_string),
        ..Default::default()
    })
}

async fn configure(ctx: &Ctx, queue: &str, config: QueueConfig) {
    ctx.engine.set_queue_config(queue, config).await.unwrap();
}

fn n_of(job: &errand_core::Job) -> u64 {
    crate::support::payload(job)["n"].as_u64().unwrap()
}

pub async fn queue_and_group_concurrency_limits_hold_until_jobs_finish(f: Fixture) {
    let ctx = Ctx::new(f);
    configure(
        &ctx,
        "q",
        QueueConfig {
            concurrency: Some(3),
            group_concurrency: Some(2),
            ..Default::default()
        },
    )
    .await;
    let mut jobs = Vec::new();
    for n in 0..5 {
        jobs.push(keyed("q", n, Some("a"), None));
    }
    for n in 5..10 {
        jobs.push(keyed("q", n, None, None));
    }
    ctx.engine.enqueue_many(jobs).await.unwrap();

    let first = claim(&ctx.engine, "q", "w1", 100).await;
    assert_eq!(first.len(), 3, "the queue allows 3 active");
    let of_a = first
        .iter()
        .filter(|j| j.group_key.as_deref() == Some("a"))
        .count();
    assert!(of_a <= 2, "group a allows 2 active, got {of_a}");
    assert!(claim(&ctx.engine, "q", "w2", 100).await.is_empty());
    let out = ctx
        .engine
        .claim_with_hints(Claim {
            queues: vec!["q".into()],
            worker_id: "w2".into(),
            limit: 10,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    assert!(out.jobs.is_empty() && out.blocked && out.retry_at.is_none());

    // A finished job frees one place, and only one.
    let done = &first[0];
    ctx.engine
        .complete(done.id, token(done), None)
        .await
        .unwrap();
    assert_eq!(claim(&ctx.engine, "q", "w2", 100).await.len(), 1);
    assert!(claim(&ctx.engine, "q", "w2", 100).await.is_empty());

    // Without a queue limit, group a still holds at 2 while ungrouped jobs flow.
    configure(
        &ctx,
        "q2",
        QueueConfig {
            group_concurrency: Some(2),
            ..Default::default()
        },
    )
    .await;
    let mut jobs = Vec::new();
    for n in 0..6 {
        jobs.push(keyed("q2", n, Some("a"), None));
        jobs.push(keyed("q2", 10 + n, None, None));
    }
    ctx.engine.enqueue_many(jobs).await.unwrap();
    let got = claim(&ctx.engine, "q2", "w1", 100).await;
    let of_a = got
        .iter()
        .filter(|j| j.group_key.as_deref() == Some("a"))
        .count();
    assert_eq!((got.len(), of_a), (8, 2));
}

/// A group's limit counts the jobs of the group already active, claimed by earlier claims: a second
/// claim gets nothing of a full group, and a finished job frees exactly its place.
pub async fn group_concurrency_counts_what_earlier_claims_hold(f: Fixture) {
    let ctx = Ctx::new(f);
    configure(
        &ctx,
        "q",
        QueueConfig {
            group_concurrency: Some(2),
            ..Default::default()
        },
    )
    .await;
    let jobs = (0..5).map(|n| keyed("q", n, Some("a"), None)).collect();
    ctx.engine.enqueue_many(jobs).await.unwrap();

    let first = claim(&ctx.engine, "q", "w1", 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        claim(&ctx.engine, "q", "w2", 100).await.len(),
        1,
        "one place was left"
    );
    assert!(
        claim(&ctx.engine, "q", "w3", 100).await.is_empty(),
        "group a holds 2 active from earlier claims"
    );
    ctx.engine
        .complete(first[0].id, token(&first[0]), None)
        .await
        .unwrap();
    assert_eq!(claim(&ctx.engine, "q", "w3", 100).await.len(), 1);
    assert!(claim(&ctx.engine, "q", "w4", 100).await.is_empty());
}

pub async fn a_concurrency_key_is_worked_on_once_at_a_time_and_is_not_a_group(f: Fixture) {
    let ctx = Ctx::new(f);
    // No queue settings at all: key_concurrency defaults to 1.
    ctx.engine
        .enqueue_many(vec![
            keyed("pay", 0, Some("t1"), Some("order-1")),
            keyed("pay", 1, Some("t2"), Some("order-1")),
            keyed("pay", 2, Some("t1"), Some("order-2")),
            keyed("pay", 3, None, Some("order-1")),
            keyed("pay", 4, None, None),
        ])
        .await
        .unwrap();
    let got = claim(&ctx.engine, "pay", "w1", 100).await;
    let mut ns: Vec<u64> = got.iter().map(n_of).collect();
    ns.sort();
    assert_eq!(ns, vec![0, 2, 4], "order-1 once, whatever the group");
    let held = ctx
        .engine
        .claim_with_hints(Claim {
            queues: vec!["pay".into()],
            worker_id: "w1".into(),
            limit: 100,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    assert!(
        held.jobs.is_empty() && held.blocked,
        "held by a full key: a long poll waits for a job to leave active"
    );
    let first = got.iter().find(|j| n_of(j) == 0).unwrap();
    assert_eq!(first.concurrency_key.as_deref(), Some("order-1"));
    ctx.engine
        .complete(first.id, token(first), None)
        .await
        .unwrap();
    let next = claim(&ctx.engine, "pay", "w1", 100).await;
    assert_eq!(
        next.len(),
        1,
        "the next order-1 job once the first finished"
    );
    assert_eq!(next[0].concurrency_key.as_deref(), Some("order-1"));

    // A queue may allow more per key.
    configure(
        &ctx,
        "mint",
        QueueConfig {
            key_concurrency: 2,
            ..Default::default()
        },
    )
    .await;
    let jobs = (0..5)
        .map(|n| keyed("mint", n, None, Some("wallet")))
        .collect();
    ctx.engine.enqueue_many(jobs).await.unwrap();
    assert_eq!(claim(&ctx.engine, "mint", "w1", 100).await.len(), 2);

    // Concurrency keys do not make groups: tenant A's ten orders are one group, so tenant B's job
    // comes second, not eleventh.
    let mut jobs: Vec<NewJob> = (0..10)
        .map(|n| keyed("fair", n, Some("A"), Some(&format!("order-{n}"))))
        .collect();
    jobs.push(keyed("fair", 100, Some("B"), Some("order-b")));
    ctx.engine.enqueue_many(jobs).await.unwrap();
    let two: Vec<u64> = claim(&ctx.engine, "fair", "w1", 2)
        .await
        .iter()
        .map(n_of)
        .collect();
    assert_eq!(two, vec![0, 100]);
}

pub async fn claims_rotate_between_groups_so_a_small_tenant_is_not_starved(f: Fixture) {
    let ctx = Ctx::new(f);
    // Tenant A: 100,000 waiting jobs, enqueued first. Tenant B: one job, enqueued last.
    for batch in 0..10u64 {
        let jobs = (0..10_000u64)
            .map(|i| keyed("t", batch * 10_000 + i, Some("A"), None))
            .collect();
        ctx.engine.enqueue_many(jobs).await.unwrap();
    }
    ctx.engine
        .enqueue(keyed("t", 1_000_000, Some("B"), None))
        .await
        .unwrap();
    let mut started = Vec::new();
    for _ in 0..3 {
        started.extend(claim(&ctx.engine, "t", "w1", 1).await);
    }
    let b_at = started
        .iter()
        .position(|j| j.group_key.as_deref() == Some("B"));
    assert!(
        matches!(b_at, Some(0 | 1)),
        "B's job is among the first two claims, got {b_at:?}"
    );
    // A's jobs still run in their own order.
    let a: Vec<u64> = started
        .iter()
        .filter(|j| j.group_key.as_deref() == Some("A"))
        .map(n_of)
        .collect();
    assert_eq!(a, vec![0, 1]);

    // Three groups take turns, across claims as within one; priority orders jobs within a group.
    let mut jobs = Vec::new();
    for (g, base) in [("x", 0), ("y", 10), ("z", 20)] {
        for i in 0..3u64 {
            let mut j = keyed("r", base + i, Some(g), None);
            j.options.priority = Some(if i == 2 { 0 } else { 10 });
            jobs.push(j);
        }
    }
    ctx.engine.enqueue_many(jobs).await.unwrap();
    let mut order = Vec::new();
    for limit in [2, 1, 3, 3] {
        order.extend(claim(&ctx.engine, "r", "w1", limit).await.iter().map(n_of));
    }
    // Claims return best first, so compare each claim's groups rather than positions within one.
    assert_eq!(order.len(), 9);
    let group_of = |n: &u64| n / 10;
    let first_three: Vec<u64> = order[..3].iter().map(group_of).collect();
    assert_eq!(first_three, vec![0, 1, 2], "x, y, z in turn");
    let firsts: Vec<u64> = order[..3].to_vec();
    assert_eq!(firsts, vec![2, 12, 22], "each group's priority-0 job first");
}

pub async fn rate_limits_hold_per_queue_and_per_group_and_say_when_to_come_back(f: Fixture) {
    let ctx = Ctx::new(f);
    configure(
        &ctx,
        "api",
        QueueConfig {
            rate_limit: Some(RateLimit::new(10, 1_000)),
            ..Default::default()
        },
    )
    .await;
    let jobs = (0..50).map(|n| job("api", n)).collect();
    ctx.engine.enqueue_many(jobs).await.unwrap();
    let hinted = |limit: usize| {
        let e = ctx.engine.clone();
        async move {
            e.claim_with_hints(Claim {
                queues: vec!["api".into()],
                worker_id: "w".into(),
                limit,
                heartbeat_ms: None,
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(hinted(100).await.jobs.len(), 10, "a full bucket: the burst");
    let now = ctx.clock.now();
    let out = hinted(100).await;
    assert!(out.jobs.is_empty());
    assert_eq!(out.retry_at, Some(now + 100), "one token every 100 ms");
    ctx.clock.advance(99);
    assert!(hinted(100).await.jobs.is_empty());
    ctx.clock.advance(1);
    assert_eq!(hinted(100).await.jobs.len(), 1);
    ctx.clock.advance(250);
    assert_eq!(hinted(100).await.jobs.len(), 2, "2.5 tokens: 2 jobs");
    ctx.clock.advance(50);
    assert_eq!(hinted(100).await.jobs.len(), 1, "the half token kept");
    ctx.clock.advance(60_000);
    assert_eq!(
        hinted(100).await.jobs.len(),
        10,
        "refilled up to the burst only"
    );

    // Per group: each tenant 2 per second, the queue itself unlimited.
    configure(
        &ctx,
        "mail",
        QueueConfig {
            group_rate_limit: Some(RateLimit::new(2, 1_000)),
            ..Default::default()
        },
    )
    .await;
    let mut jobs = Vec::new();
    for n in 0..10 {
        jobs.push(keyed("mail", n, Some("a"), None));
        jobs.push(keyed("mail", 100 + n, Some("b"), None));
        jobs.push(keyed("mail", 200 + n, None, None));
    }
    ctx.engine.enqueue_many(jobs).await.unwrap();
    let got = claim(&ctx.engine, "mail", "w", 100).await;
    let count = |g: Option<&str>| got.iter().filter(|j| j.group_key.as_deref() == g).count();
    assert_eq!(
        (count(Some("a")), count(Some("b")), count(None)),
        (2, 2, 10)
    );
    ctx.clock.advance(500);
    let got = claim(&ctx.engine, "mail", "w", 100).await;
    assert_eq!(got.len(), 2, "one more token for each tenant");
}

pub async fn a_claim_from_several_queues_keeps_each_queues_limits(f: Fixture) {
    let ctx = Ctx::new(f);
    configure(
        &ctx,
        "limited",
        QueueConfig {
            concurrency: Some(2),
            ..Default::default()
        },
    )
    .await;
    let mut jobs = Vec::new();
    for n in 0..5 {
        let mut j = job("limited", n);
        j.options.priority = Some(0);
        jobs.push(j);
        jobs.push(job("plain", 10 + n));
    }
    ctx.engine.enqueue_many(jobs).await.unwrap();
    let got = ctx
        .engine
        .claim(Claim {
            queues: vec!["plain".into(), "limited".into()],
            worker_id: "w".into(),
            limit: 4,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    let ns: Vec<u64> = got.iter().map(n_of).collect();
    assert_eq!(
        ns,
        vec![0, 1, 10, 11],
        "best first, 2 from the limited queue"
    );
    let got = ctx
        .engine
        .claim(Claim {
            queues: vec!["limited".into(), "plain".into()],
            worker_id: "w".into(),
            limit: 100,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 3, "the limited queue is full; the rest of plain");
}

pub async fn invalid_flow_settings_name_the_field_and_change_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let field_of = |c: QueueConfig| {
        let e = ctx.engine.clone();
        async move {
            let err = e.set_queue_config("q", c).await.unwrap_err();
            err.field().map(str::to_string)
        }
    };
    let cases = [
        (
            QueueConfig {
                concurrency: Some(0),
                ..Default::default()
            },
            "concurrency",
        ),
        (
            QueueConfig {
                group_concurrency: Some(0),
                ..Default::default()
            },
            "group_concurrency",
        ),
        (
            QueueConfig {
                key_concurrency: 0,
                ..Default::default()
            },
            "key_concurrency",
        ),
        (
            QueueConfig {
                rate_limit: Some(RateLimit::new(10, 0)),
                ..Default::default()
            },
            "rate_limit.period_ms",
        ),
        (
            QueueConfig {
                group_rate_limit: Some(RateLimit::new(0, 1_000)),
                ..Default::default()
            },
            "group_rate_limit.limit",
        ),
        (
            QueueConfig {
                rate_limit: Some(RateLimit {
                    limit: 1,
                    period_ms: 1_000,
                    burst: Some(0),
                }),
                ..Default::default()
            },
            "rate_limit.burst",
        ),
    ];
    for (config, want) in cases {
        assert_eq!(field_of(config).await.as_deref(), Some(want));
    }
    assert_eq!(
        ctx.engine.queue_info("q").await.unwrap().config,
        QueueConfig::default()
    );
    let err = ctx
        .engine
        .enqueue(keyed("q", 0, None, Some(&"k".repeat(300))))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("concurrency_key"));
}

pub async fn concurrent_claimers_never_exceed_the_limits(f: Fixture) {
    let ctx = Ctx::new(f);
    configure(
        &ctx,
        "c",
        QueueConfig {
            concurrency: Some(4),
            group_concurrency: Some(2),
            ..Default::default()
        },
    )
    .await;
    let jobs = (0..120u64)
        .map(|n| {
            let group = ["g1", "g2", "g3"][(n % 3) as usize];
            let key = (n % 4 == 0).then(|| format!("k{}", n % 5));
            keyed("c", n, Some(group), key.as_deref())
        })
        .collect();
    ctx.engine.enqueue_many(jobs).await.unwrap();

    #[derive(Default)]
    struct Seen {
        active: HashMap<String, i64>,
        max: HashMap<String, i64>,
        done: u64,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    // The count must follow the store's: raised once a claim returned, lowered once its completion
    // returned. Lowered before the completion, it was one short while the job was still active and a
    // claim beside it could take one place too many unseen; lowered after, with nothing more, another
    // claimer could take the freed place and count it first, one too many that never was. So claims
    // run together (shared), as the check needs, and a completion runs alone (exclusive): by the time
    // a job is completed every claim made has been counted, and none is made until it is uncounted.
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let bump = |s: &mut Seen, key: String, by: i64| {
        let v = s.active.entry(key.clone()).or_default();
        *v += by;
        let v = *v;
        let m = s.max.entry(key).or_default();
        *m = (*m).max(v);
    };
    let mut tasks = Vec::new();
    for w in 0..4 {
        let e = ctx.engine.clone();
        let seen = Arc::clone(&seen);
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                if seen.lock().unwrap().done >= 120 {
                    return;
                }
                let claiming = gate.read().await;
                let got = claim(&e, "c", &format!("w{w}"), 2).await;
                let names = |j: &errand_core::Job| {
                    let mut v = vec!["queue".to_string(), format!("group:{:?}", j.group_key)];
                    if let Some(k) = &j.concurrency_key {
                        v.push(format!("key:{k}"));
                    }
                    v
                };
                for j in &got {
                    let mut s = seen.lock().unwrap();
                    for n in names(j) {
                        bump(&mut s, n, 1);
                    }
                }
                drop(claiming);
                tokio::task::yield_now().await;
                for j in &got {
                    let _completing = gate.write().await;
                    e.complete(j.id, token(j), None).await.unwrap();
                    let mut s = seen.lock().unwrap();
                    for n in names(j) {
                        bump(&mut s, n, -1);
                    }
                    s.done += 1;
                }
                if got.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = seen.lock().unwrap();
    assert_eq!(s.done, 120);
    for (name, max) in &s.max {
        let limit = match name.as_str() {
            "queue" => 4,
            n if n.starts_with("group:") => 2,
            _ => 1,
        };
        assert!(*max <= limit, "{name}: {max} active, limit {limit}");
    }
    assert!(s.max["queue"] >= 2, "the claimers overlapped");
}

pub async fn a_full_queue_keeps_the_rotation_so_each_freed_place_goes_to_the_next_group(
    f: Fixture,
) {
    let ctx = Ctx::new(f);
    configure(
        &ctx,
        "one",
        QueueConfig {
            concurrency: Some(1),
            ..Default::default()
        },
    )
    .await;
    let mut jobs = Vec::new();
    for (g, base) in [("a", 0), ("b", 100), ("c", 200)] {
        for i in 0..5 {
            jobs.push(keyed("one", base + i, Some(g), None));
        }
    }
    ctx.engine.enqueue_many(jobs).await.unwrap();
    let mut groups = Vec::new();
    for _ in 0..6 {
        let j = claim(&ctx.engine, "one", "w", 1).await.remove(0);
        // Idle workers poll while the queue is full; that must not reset the turn.
        for _ in 0..3 {
            assert!(claim(&ctx.engine, "one", "w2", 1).await.is_empty());
        }
        groups.push(j.group_key.clone().unwrap());
        ctx.engine.complete(j.id, token(&j), None).await.unwrap();
    }
    assert_eq!(groups, vec!["a", "b", "c", "a", "b", "c"]);
}
