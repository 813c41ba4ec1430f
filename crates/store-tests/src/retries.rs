//! Rule 4: retries, backoff, `retry_after`, non-retryable errors and the dead-letter state.

use errand_core::{Backoff, Clock, DeadReason, ErrorKind, Failure, JobOptions, JobState, NewJob};
use serde_json::json;

use crate::support::{claim, claim_one, payload, token};
use crate::{Ctx, Fixture};

fn with_backoff(max_attempts: u32, backoff: Backoff) -> NewJob {
    NewJob::new("r", "flaky", json!({"order": 42})).with_options(JobOptions {
        max_attempts: Some(max_attempts),
        backoff: Some(backoff),
        ..Default::default()
    })
}

/// Fails the job's current attempt and returns the delay until its retry is due.
async fn fail_and_delay(ctx: &Ctx, queue: &str) -> i64 {
    let j = claim_one(&ctx.engine, queue).await;
    let out = ctx
        .engine
        .fail(j.id, token(&j), Failure::retryable("try again"))
        .await
        .unwrap();
    assert_eq!(out.state, JobState::Delayed);
    let due = out.run_at.expect("a retry has a due time");
    let delay = due - ctx.clock.now();
    // Not visible a millisecond early; visible when due.
    ctx.clock.advance(delay - 1);
    assert!(
        claim(&ctx.engine, queue, "w", 1).await.is_empty(),
        "not due yet"
    );
    ctx.clock.advance(1);
    delay
}

pub async fn fixed_backoff_waits_the_same_each_time(f: Fixture) {
    let ctx = Ctx::new(f);
    ctx.engine
        .enqueue(with_backoff(4, Backoff::fixed(1_500)))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(fail_and_delay(&ctx, "r").await, 1_500);
    }
}

pub async fn exponential_backoff_doubles_up_to_its_cap(f: Fixture) {
    let ctx = Ctx::new(f);
    ctx.engine
        .enqueue(with_backoff(6, Backoff::exponential(1_000).with_max(5_000)))
        .await
        .unwrap();
    let mut delays = Vec::new();
    for _ in 0..5 {
        delays.push(fail_and_delay(&ctx, "r").await);
    }
    assert_eq!(delays, vec![1_000, 2_000, 4_000, 5_000, 5_000]);
}

pub async fn jitter_stays_within_its_fraction(f: Fixture) {
    let ctx = Ctx::new(f);
    let policy = Backoff::exponential(10_000).with_jitter(0.5);
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        ctx.engine
            .enqueue(
                NewJob::new("j", "flaky", json!({ "i": i })).with_options(JobOptions {
                    max_attempts: Some(2),
                    backoff: Some(policy.clone()),
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        let j = claim_one(&ctx.engine, "j").await;
        let out = ctx
            .engine
            .fail(j.id, token(&j), Failure::retryable("x"))
            .await
            .unwrap();
        let delay = out.run_at.unwrap() - ctx.clock.now();
        assert!(
            (5_000..=10_000).contains(&delay),
            "delay {delay} within 50% jitter of 10 s"
        );
        seen.insert(delay);
    }
    assert!(seen.len() > 1, "jitter varies the delay");
}

pub async fn retry_after_overrides_the_policy(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(with_backoff(3, Backoff::fixed(1_000)))
        .await
        .unwrap();
    let j = claim_one(e, "r").await;
    let out = e
        .fail(
            j.id,
            token(&j),
            Failure {
                message: "429 from provider".into(),
                retryable: true,
                retry_after_ms: Some(30_000),
                ..Failure::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.state, JobState::Delayed);
    assert_eq!(out.run_at, Some(ctx.clock.now() + 30_000));
}

/// A worker's stack trace is kept with the attempt's error, cut at the limit; an error without one has
/// none.
pub async fn a_failures_stack_is_kept_with_its_error(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(with_backoff(3, Backoff::fixed(1)))
        .await
        .unwrap()
        .id;
    let j = claim_one(e, "r").await;
    let stack = "at charge (billing.rs:42)\nat run (worker.rs:7)";
    e.fail(
        j.id,
        token(&j),
        Failure::retryable("declined").with_stack(stack),
    )
    .await
    .unwrap();
    ctx.clock.advance(1);
    let j = claim_one(e, "r").await;
    let long = "x".repeat(e.limits().max_error_stack + 100);
    e.fail(
        j.id,
        token(&j),
        Failure::retryable("again").with_stack(long),
    )
    .await
    .unwrap();
    ctx.clock.advance(1);
    let j = claim_one(e, "r").await;
    e.fail(j.id, token(&j), Failure::retryable("plain"))
        .await
        .unwrap();
    let errors = e.get(id).await.unwrap().errors;
    assert_eq!(errors[0].stack.as_deref(), Some(stack));
    let cut = errors[1].stack.as_deref().unwrap();
    assert!(
        cut.len() <= e.limits().max_error_stack + 16,
        "{}",
        cut.len()
    );
    assert!(cut.len() >= e.limits().max_error_stack - 16);
    assert!(errors[2].stack.is_none());
}

pub async fn non_retryable_failure_goes_straight_to_dead(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(with_backoff(10, Backoff::fixed(1)))
        .await
        .unwrap()
        .id;
    let j = claim_one(e, "r").await;
    let out = e
        .fail(j.id, token(&j), Failure::fatal("card declined"))
        .await
        .unwrap();
    assert_eq!(out.state, JobState::Dead);
    let j = e.get(id).await.unwrap();
    assert_eq!(j.state, JobState::Dead);
    assert_eq!(j.dead_reason, Some(DeadReason::NonRetryable));
    assert_eq!(j.attempts, 1);
    assert_eq!(j.errors.len(), 1);
    assert_eq!(j.errors[0].kind, ErrorKind::NonRetryable);
    assert_eq!(j.errors[0].message, "card declined");
    assert!(j.finished_at.is_some());
}

pub async fn exhausted_job_is_dead_with_payload_and_every_error(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(with_backoff(3, Backoff::fixed(10)))
        .await
        .unwrap()
        .id;
    for attempt in 1..=3u32 {
        let j = claim_one(e, "r").await;
        assert_eq!(j.attempts, attempt);
        let out = e
            .fail(
                j.id,
                token(&j),
                Failure::retryable(format!("failure {attempt}")),
            )
            .await
            .unwrap();
        if attempt < 3 {
            assert_eq!(out.state, JobState::Delayed);
            ctx.clock.advance(10);
        } else {
            assert_eq!(out.state, JobState::Dead);
        }
    }
    let j = e.get(id).await.unwrap();
    assert_eq!(j.state, JobState::Dead);
    assert_eq!(j.dead_reason, Some(DeadReason::AttemptsExhausted));
    assert_eq!(payload(&j), json!({"order": 42}));
    let errs: Vec<(u32, String)> = j
        .errors
        .iter()
        .map(|e| (e.attempt, e.message.clone()))
        .collect();
    assert_eq!(
        errs,
        vec![
            (1, "failure 1".to_string()),
            (2, "failure 2".to_string()),
            (3, "failure 3".to_string())
        ]
    );
    assert!(
        claim(e, "r", "w", 10).await.is_empty(),
        "a dead job is never handed out"
    );
    assert_eq!(e.stats("r").await.unwrap().dead, 1);
}

pub async fn backoff_never_exceeds_its_limit(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let cap = e.limits().max_backoff_ms as i64;
    // The largest delay allowed, doubling with no cap of its own: it must neither overflow nor wrap.
    e.enqueue(with_backoff(60, Backoff::exponential(cap as u64)))
        .await
        .unwrap();
    for failure in 1..=40 {
        let j = claim_one(e, "r").await;
        let out = e
            .fail(j.id, token(&j), Failure::retryable("again"))
            .await
            .unwrap();
        let delay = out.run_at.unwrap() - ctx.clock.now();
        assert_eq!(
            delay, cap,
            "failure {failure}: capped at the limit, never wrapped"
        );
        ctx.clock.advance(delay);
    }
    // A small base doubled 60 times is far past the cap too: capped, not negative.
    e.enqueue(
        NewJob::new("s", "flaky", json!({})).with_options(JobOptions {
            max_attempts: Some(70),
            backoff: Some(Backoff::exponential(1_000)),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    for _ in 1..=64 {
        let j = claim_one(e, "s").await;
        let out = e
            .fail(j.id, token(&j), Failure::retryable("again"))
            .await
            .unwrap();
        let delay = out.run_at.unwrap() - ctx.clock.now();
        assert!((0..=cap).contains(&delay) && delay > 0, "{delay}");
        ctx.clock.advance(delay);
    }
}
