//! Rule 7, what a queue may require of the jobs enqueued to it: its policy (a unique key, a payload
//! size, timeout bounds, a minimum of attempts, a route for dead letters) and its bound on jobs not yet
//! started (`max_waiting`). A refused enqueue writes nothing, for a batch too.

use std::sync::Arc;

use errand_core::{
    Clock, EngineConfig, Error, JobOptions, Limits, NewJob, QueueConfig, QueuePolicy, Webhook,
};
use serde_json::json;

use crate::support::{claim_one, job, token};
use crate::{Ctx, Fixture};

/// A queue configuration with `policy` and the defaults otherwise.
fn with_policy(policy: QueuePolicy) -> QueueConfig {
    QueueConfig {
        policy,
        ..Default::default()
    }
}

/// `job` refused as invalid, naming `field` and the policy `rule` in its message.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(got: errand_core::Result<T>, field: &str, rule: &str) {
    match got {
        Err(Error::Invalid { field: f, message }) => {
            assert_eq!(f, field, "{message}");
            assert!(message.contains(rule), "names the policy {rule}: {message}");
        }
        other => panic!("expected invalid {field} ({rule}), got {other:?}"),
    }
}

fn keyed(queue: &str, n: u64) -> NewJob {
    job(queue, n).with_options(JobOptions {
        unique_key: Some(format!("k-{n}")),
        ..Default::default()
    })
}

pub async fn policy_requires_unique_key(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "payments",
        with_policy(QueuePolicy {
            require_unique_key: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_refused(
        e.enqueue(job("payments", 1)).await,
        "unique_key",
        "require_unique_key",
    );
    let mut batch: Vec<NewJob> = (0..5).map(|n| keyed("payments", n)).collect();
    batch[3] = job("payments", 3);
    assert_refused(
        e.enqueue_many(batch).await,
        "jobs[3].unique_key",
        "require_unique_key",
    );
    assert_eq!(
        e.stats("payments").await.unwrap().waiting,
        0,
        "nothing written"
    );
    assert!(e.enqueue(keyed("payments", 1)).await.unwrap().created);
    // Other queues require nothing.
    assert!(e.enqueue(job("emails", 1)).await.unwrap().created);
    // A schedule's ticks carry a unique key each: a schedule on the queue is accepted.
    e.put_schedule(
        "nightly-settlement",
        errand_core::ScheduleDef::new("0 3 * * *", "payments", "settle", json!({})),
    )
    .await
    .unwrap();
    // The policy is kept with the configuration and shown back.
    assert!(
        e.queue_info("payments")
            .await
            .unwrap()
            .config
            .policy
            .require_unique_key
    );
}

pub async fn policy_limits_payload_size(f: Fixture) {
    let ctx = Ctx::with_config(
        f,
        EngineConfig {
            limits: Limits {
                max_payload_bytes: 4_096,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let e = &ctx.engine;
    let sized_in = |queue: &str, bytes: usize| {
        // `{"s":"…"}` is 8 bytes around the string.
        NewJob::new(queue, "mint", json!({ "s": "x".repeat(bytes - 8) }))
    };
    let sized = |bytes: usize| sized_in("mints", bytes);
    // Above the server's limit the policy cannot go.
    let too_big = with_policy(QueuePolicy {
        max_payload_bytes: Some(8_192),
        ..Default::default()
    });
    assert!(matches!(
        e.set_queue_config("mints", too_big).await,
        Err(Error::Invalid { field, .. }) if field == "policy.max_payload_bytes"
    ));
    e.set_queue_config(
        "mints",
        with_policy(QueuePolicy {
            max_payload_bytes: Some(100),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert!(e.enqueue(sized(100)).await.unwrap().created, "at the limit");
    assert_refused(e.enqueue(sized(101)).await, "payload", "max_payload_bytes");
    assert_refused(
        e.enqueue_many(vec![sized(10), sized(101)]).await,
        "jobs[1].payload",
        "max_payload_bytes",
    );
    assert_eq!(e.stats("mints").await.unwrap().waiting, 1, "only the first");
    // The server-wide limit still holds for queues without a policy: 413, not a policy's 400.
    assert!(e.enqueue(sized_in("other", 4_096)).await.is_ok());
    assert!(matches!(
        e.enqueue(sized_in("other", 4_097)).await,
        Err(Error::TooLarge { field, .. }) if field == "payload"
    ));
}

pub async fn policy_bounds_timeout(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let policy = QueuePolicy {
        min_timeout_ms: Some(1_000),
        max_timeout_ms: Some(60_000),
        ..Default::default()
    };
    // The queue's own default (5 minutes) breaks the bound: refused, naming it.
    assert_refused(
        e.set_queue_config("mails", with_policy(policy.clone()))
            .await,
        "timeout_ms",
        "max_timeout_ms",
    );
    let inverted = QueuePolicy {
        min_timeout_ms: Some(60_000),
        max_timeout_ms: Some(1_000),
        ..Default::default()
    };
    assert!(matches!(
        e.set_queue_config("mails", with_policy(inverted)).await,
        Err(Error::Invalid { field, .. }) if field == "policy.min_timeout_ms"
    ));
    e.set_queue_config(
        "mails",
        QueueConfig {
            timeout_ms: 30_000,
            policy,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let timed = |ms: u64| {
        job("mails", ms).with_options(JobOptions {
            timeout_ms: Some(ms),
            ..Default::default()
        })
    };
    assert_refused(e.enqueue(timed(500)).await, "timeout_ms", "min_timeout_ms");
    assert_refused(
        e.enqueue(timed(120_000)).await,
        "timeout_ms",
        "max_timeout_ms",
    );
    assert_eq!(e.stats("mails").await.unwrap().waiting, 0);
    for ms in [1_000, 60_000] {
        assert!(
            e.enqueue(timed(ms)).await.unwrap().created,
            "{ms} is within"
        );
    }
    let id = e.enqueue(job("mails", 0)).await.unwrap().id;
    assert_eq!(e.get(id).await.unwrap().timeout_ms, 30_000, "the default");
}

pub async fn policy_requires_min_attempts(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let policy = QueuePolicy {
        min_attempts: Some(5),
        ..Default::default()
    };
    // The default of 3 attempts is below it.
    assert_refused(
        e.set_queue_config("refunds", with_policy(policy.clone()))
            .await,
        "max_attempts",
        "min_attempts",
    );
    e.set_queue_config(
        "refunds",
        QueueConfig {
            max_attempts: 5,
            policy,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tries = |n: u32| {
        job("refunds", n.into()).with_options(JobOptions {
            max_attempts: Some(n),
            ..Default::default()
        })
    };
    assert_refused(e.enqueue(tries(1)).await, "max_attempts", "min_attempts");
    assert!(e.enqueue(tries(5)).await.unwrap().created);
    assert!(e.enqueue(tries(10)).await.unwrap().created);
    assert_eq!(e.stats("refunds").await.unwrap().waiting, 2);
}

pub async fn policy_requires_dead_letter_route(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "orders",
        with_policy(QueuePolicy {
            require_dead_letter_route: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_refused(
        e.enqueue(job("orders", 1)).await,
        "queue",
        "require_dead_letter_route",
    );
    let hook = |events: &[&str]| Webhook {
        url: "https://ops.example.com/errand".into(),
        secret: "0123456789abcdef0123".into(),
        events: events.iter().map(|s| s.to_string()).collect(),
    };
    // A route that hears only of completions is not one for dead letters.
    e.put_webhook("orders", "done", hook(&["completed"]))
        .await
        .unwrap();
    assert_refused(
        e.enqueue(job("orders", 1)).await,
        "queue",
        "require_dead_letter_route",
    );
    e.put_webhook("orders", "pager", hook(&["dead", "alert"]))
        .await
        .unwrap();
    assert!(e.enqueue(job("orders", 1)).await.unwrap().created);
    // A new configuration keeps the routes, and with them the right to enqueue.
    e.set_queue_config(
        "orders",
        with_policy(QueuePolicy {
            require_dead_letter_route: true,
            require_unique_key: false,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert!(e.enqueue(job("orders", 2)).await.unwrap().created);
}

/// `Error::QueueFull` for `queue` at `max`.
#[track_caller]
fn assert_full<T: std::fmt::Debug>(got: errand_core::Result<T>, queue: &str, max: u64) {
    match got {
        Err(Error::QueueFull {
            queue: q,
            max_waiting,
        }) => {
            assert_eq!((q.as_str(), max_waiting), (queue, max));
        }
        other => panic!("expected {queue} full at {max}, got {other:?}"),
    }
}

pub async fn max_waiting_refuses_beyond_the_bound(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "emails",
        QueueConfig {
            max_waiting: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.enqueue(job("emails", 1)).await.unwrap();
    e.enqueue(job("emails", 2)).await.unwrap();
    // A delayed job is not started either: it counts.
    e.enqueue(job("emails", 3).with_options(JobOptions {
        delay_ms: Some(60_000),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_full(e.enqueue(job("emails", 4)).await, "emails", 3);
    // A repeat of a unique key is counted too (the check comes before keys are resolved).
    assert_full(e.enqueue(keyed("emails", 5)).await, "emails", 3);
    // Other queues are not held back.
    e.enqueue(job("other", 1)).await.unwrap();
    // A started job frees its place; finishing it changes nothing more.
    let j = claim_one(e, "emails").await;
    e.enqueue(job("emails", 4)).await.unwrap();
    assert_full(e.enqueue(job("emails", 5)).await, "emails", 3);
    e.complete(j.id, token(&j), None).await.unwrap();
    assert_full(e.enqueue(job("emails", 5)).await, "emails", 3);
    let s = e.stats("emails").await.unwrap();
    assert_eq!((s.waiting, s.delayed, s.completed), (2, 1, 1));

    // Under real concurrency the bound holds exactly: 8 producers, 10 enqueues each, room for 20.
    e.set_queue_config(
        "burst",
        QueueConfig {
            max_waiting: Some(20),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let engine = Arc::new(e.clone());
    let mut tasks = Vec::new();
    for p in 0..8u64 {
        let e = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for n in 0..10 {
                match e.enqueue(job("burst", p * 100 + n)).await {
                    Ok(_) => ok += 1,
                    Err(Error::QueueFull { .. }) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
            ok
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 20, "exactly the room there was");
    assert_eq!(e.stats("burst").await.unwrap().waiting, 20);
}

pub async fn max_waiting_refuses_a_whole_batch_that_crosses_it(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "sms",
        QueueConfig {
            max_waiting: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.enqueue_many((0..3).map(|n| job("sms", n)).collect())
        .await
        .unwrap();
    // Three more would make 6: none goes in, not even the two that would fit.
    assert_full(
        e.enqueue_many((3..6).map(|n| job("sms", n)).collect())
            .await,
        "sms",
        5,
    );
    assert_eq!(e.stats("sms").await.unwrap().waiting, 3);
    // A batch over two queues, one of them full, writes in neither.
    let mixed = vec![job("push", 1), job("sms", 6), job("sms", 7), job("sms", 8)];
    assert_full(e.enqueue_many(mixed).await, "sms", 5);
    assert_eq!(e.stats("push").await.unwrap().waiting, 0);
    assert_eq!(e.stats("sms").await.unwrap().waiting, 3);
    // Exactly up to the bound is fine.
    e.enqueue_many(vec![job("sms", 3), job("sms", 4)])
        .await
        .unwrap();
    assert_eq!(e.stats("sms").await.unwrap().waiting, 5);
    // A flow counts its jobs in the bounded queue the same way.
    let flow = e.enqueue_flow(job("push", 9), vec![job("sms", 10)]).await;
    assert_full(flow, "sms", 5);
    assert_eq!(e.stats("push").await.unwrap().waiting_children, 0);
}

pub async fn expired_jobs_die_with_reason_expired(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let ttl = |n: u64, expire: u64, delay: Option<u64>| {
        job("notify", n).with_options(JobOptions {
            expire_after_ms: Some(expire),
            delay_ms: delay,
            ..Default::default()
        })
    };
    // A time to live must be positive and outlast the delay.
    for (bad, delay) in [(0, None), (1_000, Some(1_000)), (1_000, Some(5_000))] {
        assert!(matches!(
            e.enqueue(ttl(0, bad, delay)).await,
            Err(Error::Invalid { field, .. }) if field == "expire_after_ms"
        ));
    }
    let t0 = ctx.clock.now();
    let waiting = e.enqueue(ttl(1, 1_000, None)).await.unwrap().id;
    let delayed = e.enqueue(ttl(2, 3_000, Some(500))).await.unwrap().id;
    let forever = e.enqueue(job("notify", 3)).await.unwrap().id;
    assert_eq!(e.get(waiting).await.unwrap().expires_at, Some(t0 + 1_000));
    // Started in time, a job runs to its end whatever its time to live.
    let started = e.enqueue(ttl(4, 1_000, None)).await.unwrap().id;
    // One claim takes the three waiting jobs; it keeps `started` and gives the others back (the jobs
    // of one claim share its token).
    let claimed = crate::support::claim(e, "notify", "w1", 10).await;
    assert_eq!(claimed.len(), 3);
    let run = claimed.iter().find(|j| j.id == started).unwrap().clone();
    for j in [waiting, forever] {
        e.release(j, token(&run)).await.unwrap();
    }

    ctx.clock.advance(999);
    assert_eq!(e.maintain().await.unwrap().expired, 0, "not yet");
    ctx.clock.advance(1);
    assert_eq!(e.maintain().await.unwrap().expired, 1);
    let dead = e.get(waiting).await.unwrap();
    assert_eq!(dead.state, errand_core::JobState::Dead);
    assert_eq!(dead.dead_reason, Some(errand_core::DeadReason::Expired));
    assert_eq!(dead.attempts, 0, "an expired job never ran");
    e.complete(run.id, token(&run), None).await.unwrap();
    assert_eq!(
        e.get(started).await.unwrap().state,
        errand_core::JobState::Completed
    );

    // A job failing until its time to live ends is not retried past it: it dies `expired`, with
    // the errors of its attempts kept.
    let retried = e
        .enqueue(job("mail", 5).with_options(JobOptions {
            expire_after_ms: Some(10_000),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    let j = claim_one(e, "mail").await;
    e.fail(
        j.id,
        token(&j),
        errand_core::Failure {
            retry_after_ms: Some(60_000),
            ..errand_core::Failure::retryable("provider down")
        },
    )
    .await
    .unwrap();
    ctx.clock.advance(10_000);
    // Past its time to live and not yet run again: the claim at the same instant must not hand it
    // out, and neither the delayed job of `notify`, now due and expired too.
    ctx.clock.advance(60_000);
    assert!(crate::support::claim(e, "mail", "w1", 10).await.is_empty());
    let after_claim = e.get(retried).await.unwrap();
    assert_eq!(
        after_claim.dead_reason,
        Some(errand_core::DeadReason::Expired)
    );
    assert_eq!(
        after_claim.attempts, 1,
        "the claim's attempt was given back"
    );
    assert_eq!(after_claim.errors.len(), 1, "the failure is kept");
    let others = crate::support::claim(e, "notify", "w1", 10).await;
    assert_eq!(
        others.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![forever],
        "only the job without a time to live is handed out"
    );
    assert_eq!(
        e.get(delayed).await.unwrap().dead_reason,
        Some(errand_core::DeadReason::Expired)
    );
    let s = e.stats("notify").await.unwrap();
    assert_eq!((s.dead, s.completed, s.active), (2, 1, 1));

    // A claim that takes only expired jobs looks again: the live job behind three expired ones is
    // handed out, not an empty answer.
    for n in 0..3 {
        e.enqueue(job("otp", 100 + n).with_options(JobOptions {
            expire_after_ms: Some(1_000),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let live = e.enqueue(job("otp", 200)).await.unwrap().id;
    ctx.clock.advance(1_000);
    let got = crate::support::claim(e, "otp", "w1", 1).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![live]);
    assert_eq!(e.stats("otp").await.unwrap().dead, 3);

    // A replace takes the new job's time to live with the rest of its input.
    let keyed = |expire: Option<u64>| {
        job("otp", 300).with_options(JobOptions {
            unique_key: Some("code-42".into()),
            dedup: errand_core::Dedup::Replace,
            delay_ms: Some(5_000),
            expire_after_ms: expire,
            ..Default::default()
        })
    };
    let first = e.enqueue(keyed(Some(10_000))).await.unwrap().id;
    let now = ctx.clock.now();
    let again = e.enqueue(keyed(Some(60_000))).await.unwrap();
    assert!(again.replaced);
    assert_eq!(e.get(first).await.unwrap().expires_at, Some(now + 60_000));
}
