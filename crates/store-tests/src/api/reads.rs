//! Rule 7, what the engine reports without changing anything: job listings (by state, by unique key,
//! paged by cursor), queue stats, and the audit log. Jobs are made here only to be looked at.

use errand_core::{Clock, Error, Failure, JobId, JobOptions, JobState};

use crate::support::{claim, claim_one, job, token};
use crate::{Ctx, Fixture};

/// The audit log keeps every entry, newest first, paged by id, with its detail as written.
pub async fn audit_log_appends_and_pages_newest_first(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    assert!(e.audit_log(None, 10).await.unwrap().is_empty());
    for i in 0..5 {
        let detail = serde_json::json!({"count": i, "filter": {"kind": "charge"}});
        e.audit("ops", "dead.replay", &format!("q{i}"), Some(&detail))
            .await
            .unwrap();
        ctx.clock.advance(10);
    }
    e.audit("anonymous", "queue.pause", "mail", None)
        .await
        .unwrap();
    let all = e.audit_log(None, 10).await.unwrap();
    let targets: Vec<&str> = all.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["mail", "q4", "q3", "q2", "q1", "q0"]);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all[0].key, "anonymous");
    assert!(all[0].detail.is_none());
    assert_eq!(all[1].action, "dead.replay");
    assert_eq!(all[5].at + 40, all[1].at);
    let detail: serde_json::Value =
        serde_json::from_str(all[1].detail.as_ref().unwrap().get()).unwrap();
    assert_eq!(detail["filter"]["kind"], "charge");
    let page = e.audit_log(Some(all[2].id), 2).await.unwrap();
    let targets: Vec<&str> = page.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["q2", "q1"]);
    assert!(matches!(
        e.audit_log(None, 0).await,
        Err(Error::Invalid { .. })
    ));
}

/// The maintenance pass removes audit entries older than the log's retention, oldest first and a
/// batch at a time, and keeps the rest; an engine without retention keeps every entry. The store's
/// prune is bounded by its limit, from the oldest end.
pub async fn audit_entries_past_their_retention_are_pruned(f: Fixture) {
    use errand_core::{Clock, Engine, EngineConfig};
    use std::sync::Arc;
    const DAY: i64 = 86_400_000;
    let ctx = Ctx::new(f);
    for i in 0..5 {
        ctx.engine
            .audit("ops", "queue.pause", &format!("q{i}"), None)
            .await
            .unwrap();
        ctx.clock.advance(DAY);
    }
    let targets = |log: Vec<errand_core::AuditEntry>| -> Vec<String> {
        log.into_iter().map(|a| a.target).collect()
    };
    let engine = |audit_retention_ms: Option<u64>| {
        Engine::new(
            ctx.engine.store().clone(),
            Arc::new(ctx.clock.clone()),
            EngineConfig {
                audit_retention_ms,
                // Two at a time: the pass goes on until a batch comes back short.
                batch_size: 2,
                ..EngineConfig::default()
            },
        )
    };
    // Entries made 5, 4, 3, 2 and 1 days ago: the default 90 days and no retention keep them all.
    assert_eq!(ctx.engine.maintain().await.unwrap().audit_pruned, 0);
    assert_eq!(engine(None).maintain().await.unwrap().audit_pruned, 0);
    assert_eq!(ctx.engine.audit_log(None, 10).await.unwrap().len(), 5);

    let report = engine(Some(DAY as u64 * 5 / 2)).maintain().await.unwrap();
    assert_eq!(report.audit_pruned, 3, "those made 5, 4 and 3 days ago");
    let left = targets(ctx.engine.audit_log(None, 10).await.unwrap());
    assert_eq!(left, ["q4", "q3"]);

    let store = ctx.engine.store();
    let now = ctx.clock.now();
    assert_eq!(
        store.audit_prune(now, 1).await.unwrap(),
        1,
        "at most the limit"
    );
    assert_eq!(
        targets(ctx.engine.audit_log(None, 10).await.unwrap()),
        ["q4"]
    );
    assert_eq!(
        store.audit_prune(now - 2 * DAY, 10).await.unwrap(),
        0,
        "q4 is younger"
    );
    assert_eq!(store.audit_prune(now, 10).await.unwrap(), 1);
    assert!(ctx.engine.audit_log(None, 10).await.unwrap().is_empty());
}

/// A search by unique key finds the jobs holding it, in the state asked for, and no other.
pub async fn list_by_unique_key(f: Fixture) {
    use errand_core::store::JobList;
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let keyed = |i: u64, key: &str| {
        job("uk", i).with_options(JobOptions {
            unique_key: Some(key.into()),
            ..Default::default()
        })
    };
    let a = e.enqueue(keyed(1, "order-1")).await.unwrap().id;
    e.enqueue(keyed(2, "order-2")).await.unwrap();
    e.enqueue(job("uk", 3)).await.unwrap();
    e.enqueue(job("uk-other", 4).with_options(JobOptions {
        unique_key: Some("order-1".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    let find = |key: &str, state: JobState| JobList {
        queue: "uk".into(),
        state,
        kind: None,
        unique_key: Some(key.into()),
        after: None,
        limit: 10,
    };
    let page = e
        .list_where(find("order-1", JobState::Waiting))
        .await
        .unwrap();
    let ids: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, [a]);
    assert!(
        e.list_where(find("order-1", JobState::Completed))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(
        e.list_where(find("order-9", JobState::Waiting))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(matches!(
        e.list_where(find("", JobState::Waiting)).await,
        Err(Error::Invalid { .. })
    ));
}

pub async fn list_pages_with_a_cursor(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let ids: Vec<JobId> = e
        .enqueue_many((0..25).map(|i| job("l", i)).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    claim(e, "l", "w", 5).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = e.list("l", JobState::Waiting, after, 7).await.unwrap();
        assert!(page.jobs.len() <= 7);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ids[5..].to_vec(),
        "every waiting job once, in id order"
    );
    let active = e.list("l", JobState::Active, None, 100).await.unwrap();
    assert_eq!(active.jobs.len(), 5);
    assert!(active.next.is_none());
    assert!(matches!(
        e.list("l", JobState::Waiting, None, 0).await,
        Err(Error::Invalid { .. })
    ));
}

pub async fn queue_stats_count_states_and_oldest_age(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let empty = e.stats("s").await.unwrap();
    assert_eq!((empty.waiting, empty.oldest_waiting_age_ms), (0, 0));
    for i in 0..4 {
        e.enqueue(job("s", i)).await.unwrap();
    }
    e.enqueue(job("s", 9).with_options(JobOptions {
        delay_ms: Some(60_000),
        ..Default::default()
    }))
    .await
    .unwrap();
    ctx.clock.advance(7_000);
    let j = claim_one(e, "s").await;
    e.complete(j.id, token(&j), None).await.unwrap();
    let j = claim_one(e, "s").await;
    e.fail(j.id, token(&j), Failure::fatal("no")).await.unwrap();
    claim_one(e, "s").await;
    let s = e.stats("s").await.unwrap();
    assert_eq!(
        (
            s.waiting,
            s.delayed,
            s.active,
            s.completed,
            s.cancelled,
            s.dead
        ),
        (1, 1, 1, 1, 0, 1)
    );
    assert_eq!(s.oldest_waiting_age_ms, 7_000);
    assert_eq!(s.queue, "s");
    assert!(!s.paused);
    let names: Vec<String> = e
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["s".to_string()]);
}

/// The stats of every queue at once (what a metrics scrape reads) are each queue's stats.
pub async fn stats_of_all_queues_are_each_queues_stats(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    assert!(e.stats_all().await.unwrap().is_empty());
    for (q, n) in [("sa.b", 3), ("sa.a", 2), ("sa.c", 1)] {
        for i in 0..n {
            e.enqueue(job(q, i)).await.unwrap();
        }
    }
    e.pause("sa.c").await.unwrap();
    e.set_queue_config("sa.empty", errand_core::QueueConfig::default())
        .await
        .unwrap();
    ctx.clock.advance(2_500);
    let j = claim_one(e, "sa.b").await;
    e.fail(j.id, token(&j), Failure::fatal("no")).await.unwrap();
    claim_one(e, "sa.a").await;
    let all = e.stats_all().await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, ["sa.a", "sa.b", "sa.c", "sa.empty"]);
    for s in &all {
        assert_eq!(*s, e.stats(&s.queue).await.unwrap(), "{}", s.queue);
    }
    let b = &all[1];
    assert_eq!((b.waiting, b.dead, b.oldest_waiting_age_ms), (2, 1, 2_500));
    assert!(all[2].paused);
    let empty = &all[3];
    assert_eq!((empty.waiting, empty.dead, empty.paused), (0, 0, false));
}

/// A store says what it takes on disk, part by part, and the parts grow with the jobs it holds.
pub async fn footprint_names_the_stores_parts_and_grows_with_jobs(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let before = e.footprint().await.unwrap();
    assert!(!before.is_empty());
    assert!(
        before
            .iter()
            .all(|o| !o.name.is_empty() && ["file", "wal", "table", "indexes"].contains(&o.kind)),
        "{before:?}"
    );
    let total =
        |parts: &[errand_core::store::StoreObject]| parts.iter().map(|o| o.bytes).sum::<u64>();
    // Text PostgreSQL cannot compress much (TOAST would shrink a repeated letter to nothing).
    let noise = |n: u64| -> String {
        (0..500u64)
            .map(|k| {
                format!(
                    "{:08x}",
                    (n * 1_000 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
                )
            })
            .collect()
    };
    for chunk in 0..4 {
        e.enqueue_many(
            (0..500)
                .map(|n| {
                    let big = noise(chunk * 500 + n);
                    errand_core::NewJob::new(
                        "fat",
                        "k",
                        serde_json::json!({ "n": chunk * 500 + n, "s": big }),
                    )
                })
                .collect(),
        )
        .await
        .unwrap();
    }
    let after = e.footprint().await.unwrap();
    // 2,000 jobs of 4 KB: at least 4 MB more, wherever the store put them (and however it
    // compressed them).
    assert!(
        total(&after) >= total(&before) + 4_000_000,
        "{before:?} → {after:?}"
    );
}

/// A queue's flow control as it stands: what is active, per group too, and the tokens its buckets
/// hold now and when the next one comes (the rate limits' live state).
pub async fn flow_state_shows_active_jobs_and_the_tokens_left(f: Fixture) {
    use errand_core::admission::RateLimit;
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "mint",
        errand_core::QueueConfig {
            concurrency: Some(5),
            group_concurrency: Some(3),
            rate_limit: Some(RateLimit::new(2, 60_000)),
            group_rate_limit: Some(RateLimit::new(1, 10_000)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for g in ["a", "a", "b", "c"] {
        e.enqueue(job("mint", 0).with_options(JobOptions {
            group_key: Some(g.into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let now = ctx.clock.now();
    let fresh = e.flow_state("mint").await.unwrap();
    assert_eq!((fresh.concurrency, fresh.active), (Some(5), 0));
    let b = fresh.bucket.unwrap();
    assert_eq!(
        (b.tokens, b.next_token_at),
        (2.0, now),
        "a bucket never used is full"
    );
    assert!(fresh.groups.is_empty());

    // The queue's two tokens go to two groups, one each.
    let got = claim(e, "mint", "w1", 10).await;
    assert_eq!(got.len(), 2);
    let s = e.flow_state("mint").await.unwrap();
    assert_eq!(s.active, 2);
    let b = s.bucket.unwrap();
    assert_eq!((b.tokens, b.next_token_at), (0.0, now + 30_000));
    let mut groups: Vec<_> = s
        .groups
        .iter()
        .map(|g| {
            (
                g.key.as_str(),
                g.active,
                g.bucket.map(|b| (b.tokens, b.next_token_at)),
            )
        })
        .collect();
    groups.sort_by(|x, y| x.0.cmp(y.0));
    assert_eq!(
        groups,
        vec![
            ("a", 1, Some((0.0, now + 10_000))),
            ("b", 1, Some((0.0, now + 10_000))),
        ]
    );
    // Tokens come back with time.
    ctx.clock.advance(10_000);
    let later = e.flow_state("mint").await.unwrap();
    assert!((later.bucket.unwrap().tokens - 1.0 / 3.0).abs() < 1e-9);
    assert!(later.groups.iter().all(|g| g.bucket.unwrap().tokens == 1.0));
    // A group with nothing active is still listed while its bucket is in use: limited, though idle.
    let a = got
        .iter()
        .find(|j| j.group_key.as_deref() == Some("a"))
        .unwrap();
    e.complete(a.id, token(a), None).await.unwrap();
    let idle = e.flow_state("mint").await.unwrap();
    let a = idle.groups.iter().find(|g| g.key == "a").unwrap();
    assert_eq!((a.active, a.bucket.map(|b| b.tokens)), (0, Some(1.0)));
    assert_eq!(idle.groups[0].key, "b", "the busy group first");
    // A queue without flow control says so.
    let plain = e.flow_state("plain").await.unwrap();
    assert_eq!(
        (plain.concurrency, plain.bucket, plain.active),
        (None, None, 0)
    );
}
