//! Rules 2 and 3: the job model, validation, queue configuration and retention.

use errand_core::Clock;
use errand_core::limits::DEFAULT_PRIORITY;
use errand_core::{Backoff, Error, JobOptions, JobState, NewJob, QueueConfig, Retention};
use serde_json::json;

use crate::support::{claim_one, job, payload, token};
use crate::{Ctx, Fixture};

pub async fn enqueue_resolves_defaults_and_makes_sortable_ids(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let a = e.enqueue(job("q", 1)).await.unwrap();
    let b = e.enqueue(job("q", 2)).await.unwrap();
    assert!(a.created && b.created);
    assert_eq!(a.state, JobState::Waiting);
    assert!(a.id < b.id, "ids made later sort later");
    assert_eq!(
        a.id.to_string().parse::<errand_core::JobId>().unwrap(),
        a.id
    );

    let j = e.get(a.id).await.unwrap();
    let d = QueueConfig::default();
    assert_eq!(j.queue, "q");
    assert_eq!(j.kind, "test.job");
    assert_eq!(payload(&j), json!({"n": 1}));
    assert_eq!(j.priority, DEFAULT_PRIORITY);
    assert_eq!(j.max_attempts, d.max_attempts);
    assert_eq!(j.backoff, d.backoff);
    assert_eq!(j.timeout_ms, d.timeout_ms);
    assert_eq!(j.max_stalled, 1);
    assert_eq!(j.attempts, 0);
    assert_eq!(j.run_at, ctx.clock.now());
    assert_eq!(j.created_at, ctx.clock.now());
    assert!(j.errors.is_empty() && j.result.is_none() && j.progress.is_none());
    assert!(j.started_at.is_none() && j.finished_at.is_none() && j.lease.is_none());
}

pub async fn invalid_job_names_the_field_and_writes_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let big = "x".repeat(e.limits().max_payload_bytes);
    let opts = |o: JobOptions| job("q", 0).with_options(o);
    let cases: Vec<(NewJob, &str)> = vec![
        (job("bad queue", 0), "queue"),
        (job("", 0), "queue"),
        (NewJob::new("q", "", json!({})), "kind"),
        (NewJob::new("q", "has space", json!({})), "kind"),
        (NewJob::new("q", "k", json!({ "big": big })), "payload"),
        (
            opts(JobOptions {
                priority: Some(-1),
                ..Default::default()
            }),
            "priority",
        ),
        (
            opts(JobOptions {
                priority: Some(1001),
                ..Default::default()
            }),
            "priority",
        ),
        (
            opts(JobOptions {
                max_attempts: Some(0),
                ..Default::default()
            }),
            "max_attempts",
        ),
        (
            opts(JobOptions {
                delay_ms: Some(1),
                run_at: Some(1),
                ..Default::default()
            }),
            "delay_ms",
        ),
        (
            opts(JobOptions {
                delay_ms: Some(400 * 24 * 3_600_000),
                ..Default::default()
            }),
            "delay_ms",
        ),
        (
            opts(JobOptions {
                run_at: Some(-5),
                ..Default::default()
            }),
            "run_at",
        ),
        (
            opts(JobOptions {
                timeout_ms: Some(1),
                ..Default::default()
            }),
            "timeout_ms",
        ),
        (
            opts(JobOptions {
                timeout_ms: Some(1_000),
                heartbeat_ms: Some(2_000),
                ..Default::default()
            }),
            "heartbeat_ms",
        ),
        (
            opts(JobOptions {
                backoff: Some(Backoff::fixed(1).with_jitter(1.5)),
                ..Default::default()
            }),
            "backoff.jitter",
        ),
        (
            opts(JobOptions {
                unique_key: Some(String::new()),
                ..Default::default()
            }),
            "unique_key",
        ),
        (
            opts(JobOptions {
                group_key: Some("a\nb".into()),
                ..Default::default()
            }),
            "group_key",
        ),
        (
            opts(JobOptions {
                idempotency_key: Some("k".repeat(256)),
                ..Default::default()
            }),
            "idempotency_key",
        ),
    ];
    for (bad, want) in cases {
        match e.enqueue(bad.clone()).await {
            Err(Error::Invalid { field, message } | Error::TooLarge { field, message }) => {
                assert_eq!(field, want, "{bad:?}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{bad:?} should be invalid ({want}), got {other:?}"),
        }
    }
    let stats = e.stats("q").await.unwrap();
    for s in JobState::ALL {
        assert_eq!(stats.count(s), 0, "nothing written ({s})");
    }
}

pub async fn idempotency_key_defaults_from_unique_key_or_id(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    // No unique window: a key is free again once its job completed, so that one queue's key can be
    // taken by job after job here (by default a completed job holds it for days).
    e.set_queue_config(
        "pay",
        QueueConfig {
            unique_window: errand_core::UniqueWindow::Ms(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let plain = e.enqueue(job("plain", 1)).await.unwrap();
    assert_eq!(
        e.get(plain.id).await.unwrap().idempotency_key,
        plain.id.to_string()
    );

    let uk = |q: &str, kind: &str, key: &str| {
        NewJob::new(q, kind, json!({})).with_options(JobOptions {
            unique_key: Some(key.into()),
            ..Default::default()
        })
    };
    let finish = |id| async move {
        let j = claim_one(e, "pay").await;
        assert_eq!(j.id, id);
        e.complete(j.id, token(&j), None).await.unwrap();
    };
    let a = e.enqueue(uk("pay", "charge", "order-1")).await.unwrap();
    let a_key = e.get(a.id).await.unwrap().idempotency_key;
    // Another queue, or another kind, with the same unique key must never share a payment's key.
    let b = e.enqueue(uk("refund", "charge", "order-1")).await.unwrap();
    assert_ne!(a_key, e.get(b.id).await.unwrap().idempotency_key);
    finish(a.id).await;
    let c = e.enqueue(uk("pay", "refund", "order-1")).await.unwrap();
    assert!(c.created);
    assert_ne!(a_key, e.get(c.id).await.unwrap().idempotency_key);
    finish(c.id).await;
    // The same logical job enqueued again after the first finished reuses the key.
    let again = e.enqueue(uk("pay", "charge", "order-1")).await.unwrap();
    assert!(again.created);
    assert_ne!(again.id, a.id);
    assert_eq!(e.get(again.id).await.unwrap().idempotency_key, a_key);
    assert!(a_key.len() <= 255);

    let explicit = e
        .enqueue(job("pay", 2).with_options(JobOptions {
            idempotency_key: Some("stripe-key-7".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        e.get(explicit.id).await.unwrap().idempotency_key,
        "stripe-key-7"
    );
}

pub async fn queue_config_defaults_are_overridden_by_job_options(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let config = QueueConfig {
        priority: 10,
        max_attempts: 7,
        backoff: Backoff::fixed(250),
        timeout_ms: 9_000,
        heartbeat_ms: Some(1_000),
        max_stalled: 3,
        ..QueueConfig::default()
    };
    e.set_queue_config("mail", config.clone()).await.unwrap();
    assert_eq!(e.queue_info("mail").await.unwrap().config, config);

    let d = e.enqueue(job("mail", 1)).await.unwrap();
    let d = e.get(d.id).await.unwrap();
    assert_eq!(
        (
            d.priority,
            d.max_attempts,
            d.timeout_ms,
            d.heartbeat_ms,
            d.max_stalled
        ),
        (10, 7, 9_000, Some(1_000), 3)
    );
    assert_eq!(d.backoff, Backoff::fixed(250));

    let o = e
        .enqueue(job("mail", 2).with_options(JobOptions {
            priority: Some(1),
            max_attempts: Some(2),
            backoff: Some(Backoff::exponential(5)),
            timeout_ms: Some(60_000),
            heartbeat_ms: Some(5_000),
            max_stalled: Some(0),
            ..Default::default()
        }))
        .await
        .unwrap();
    let o = e.get(o.id).await.unwrap();
    assert_eq!(
        (
            o.priority,
            o.max_attempts,
            o.timeout_ms,
            o.heartbeat_ms,
            o.max_stalled
        ),
        (1, 2, 60_000, Some(5_000), 0)
    );
    assert_eq!(o.backoff, Backoff::exponential(5));

    // A later change applies to jobs enqueued after it, not to those already queued.
    e.set_queue_config(
        "mail",
        QueueConfig {
            max_attempts: 1,
            ..config
        },
    )
    .await
    .unwrap();
    assert_eq!(e.get(d.id).await.unwrap().max_attempts, 7);
    let n = e.enqueue(job("mail", 3)).await.unwrap();
    assert_eq!(e.get(n.id).await.unwrap().max_attempts, 1);
}

pub async fn invalid_queue_config_is_rejected(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let bad = [
        (
            QueueConfig {
                max_attempts: 0,
                ..Default::default()
            },
            "max_attempts",
        ),
        (
            QueueConfig {
                priority: 5_000,
                ..Default::default()
            },
            "priority",
        ),
        (
            QueueConfig {
                timeout_ms: 0,
                ..Default::default()
            },
            "timeout_ms",
        ),
        (
            QueueConfig {
                timeout_ms: 1_000,
                heartbeat_ms: Some(5_000),
                ..Default::default()
            },
            "heartbeat_ms",
        ),
        (
            QueueConfig {
                backoff: Backoff::fixed(1).with_jitter(-0.1),
                ..Default::default()
            },
            "backoff.jitter",
        ),
    ];
    for (config, want) in bad {
        match e.set_queue_config("q", config).await {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, want),
            other => panic!("expected invalid {want}, got {other:?}"),
        }
    }
    assert_eq!(
        e.queue_info("q").await.unwrap().config,
        QueueConfig::default()
    );
    assert!(matches!(
        e.set_queue_config("no spaces", QueueConfig::default())
            .await,
        Err(Error::Invalid { .. })
    ));
}

pub async fn retention_prunes_by_count_and_age_but_never_dead_jobs(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "r",
        QueueConfig {
            max_attempts: 1,
            retention: Retention {
                max_count: Some(3),
                max_age_ms: Some(60_000),
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // 5 completed, 2 cancelled, 2 dead, 1 still waiting.
    let mut completed = Vec::new();
    for i in 0..5 {
        e.enqueue(job("r", i)).await.unwrap();
        let j = claim_one(e, "r").await;
        e.complete(j.id, token(&j), None).await.unwrap();
        completed.push(j.id);
        ctx.clock.advance(10);
    }
    let mut dead = Vec::new();
    for i in 0..2 {
        e.enqueue(job("r", 10 + i)).await.unwrap();
        let j = claim_one(e, "r").await;
        e.fail(j.id, token(&j), errand_core::Failure::retryable("boom"))
            .await
            .unwrap();
        dead.push(j.id);
    }
    for i in 0..2 {
        let c = e.enqueue(job("r", 20 + i)).await.unwrap();
        e.cancel(c.id).await.unwrap();
    }
    let waiting = e.enqueue(job("r", 30)).await.unwrap();

    let report = e.maintain().await.unwrap();
    assert_eq!(report.pruned, 2, "count: the 2 oldest of 5 completed go");
    let s = e.stats("r").await.unwrap();
    assert_eq!((s.completed, s.cancelled, s.dead, s.waiting), (3, 2, 2, 1));
    for id in &completed[..2] {
        assert!(
            matches!(e.get(*id).await, Err(Error::NotFound(_))),
            "oldest pruned"
        );
    }
    for id in &completed[2..] {
        assert_eq!(e.get(*id).await.unwrap().state, JobState::Completed);
    }

    // Far past the age limit: every completed and cancelled job goes; dead and waiting stay.
    ctx.clock.advance(365 * 24 * 3_600_000);
    e.maintain().await.unwrap();
    let s = e.stats("r").await.unwrap();
    assert_eq!((s.completed, s.cancelled, s.dead, s.waiting), (0, 0, 2, 1));
    for id in &dead {
        let j = e.get(*id).await.unwrap();
        assert_eq!(j.state, JobState::Dead);
        assert_eq!(j.errors.len(), 1);
    }
    assert_eq!(e.get(waiting.id).await.unwrap().state, JobState::Waiting);
}

pub async fn json_nested_too_deep_is_refused(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let nest = |levels: usize| {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    };
    let limit = e.limits().max_json_depth;
    e.enqueue(NewJob::new("q", "k", nest(limit))).await.unwrap();
    match e.enqueue(NewJob::new("q", "k", nest(limit + 1))).await {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "payload"),
        other => panic!("expected invalid payload, got {other:?}"),
    }
    let j = claim_one(e, "q").await;
    assert!(matches!(
        e.complete(j.id, token(&j), Some(nest(limit + 1))).await,
        Err(Error::Invalid { field, .. }) if field == "result"
    ));
    assert_eq!(
        e.get(j.id).await.unwrap().state,
        JobState::Active,
        "nothing changed"
    );
}
