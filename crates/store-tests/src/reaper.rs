//! Rule 6: stalled jobs, timeouts and delayed jobs — and the idempotency key through all of them.

use errand_core::{
    Backoff, Clock, DeadFilter, DeadReason, Error, ErrorKind, Failure, JobOptions, JobState,
};

use crate::support::{claim, claim_one, job, state, token};
use crate::{Ctx, Fixture};

pub async fn expired_lease_stalls_back_to_waiting_then_to_dead(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(job("q", 1).with_options(JobOptions {
            timeout_ms: Some(60_000),
            heartbeat_ms: Some(5_000),
            max_attempts: Some(1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    // The worker dies holding the job.
    let j = claim_one(e, "q").await;
    ctx.clock.advance(j.lease_ms as i64 - 1);
    assert_eq!(
        e.maintain().await.unwrap().stalled,
        0,
        "not a millisecond early"
    );
    ctx.clock.advance(1);
    assert_eq!(e.maintain().await.unwrap().stalled, 1);
    let got = e.get(id).await.unwrap();
    assert_eq!(got.state, JobState::Waiting);
    assert_eq!(got.stalls, 1);
    assert_eq!(got.attempts, 0, "a stalled run does not use up an attempt");
    assert!(got.lease.is_none());
    assert_eq!(got.errors.last().unwrap().kind, ErrorKind::Stalled);

    // Claimable at once by another worker; it stalls again: past max_stalled (1), it is dead.
    let again = claim(e, "q", "w2", 1).await.remove(0);
    assert_eq!(again.id, id);
    assert_eq!(again.attempts, 1);
    ctx.clock.advance(again.lease_ms as i64);
    e.maintain().await.unwrap();
    let got = e.get(id).await.unwrap();
    assert_eq!(got.state, JobState::Dead);
    assert_eq!(got.dead_reason, Some(DeadReason::Stalled));
    assert_eq!(got.errors.len(), 2);
}

pub async fn stale_token_after_a_stall_cannot_complete(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1).with_options(JobOptions {
        heartbeat_ms: Some(1_000),
        max_stalled: Some(5),
        ..Default::default()
    }))
    .await
    .unwrap();
    let slow = claim(e, "q", "slow-worker", 1).await.remove(0);
    ctx.clock.advance(slow.lease_ms as i64);
    e.maintain().await.unwrap();
    let fresh = claim(e, "q", "fresh-worker", 1).await.remove(0);
    assert_eq!(fresh.id, slow.id);

    // The paused worker wakes up and reports: every report is refused, the new holder is untouched.
    assert!(matches!(
        e.complete(slow.id, token(&slow), None).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        e.fail(slow.id, token(&slow), Failure::fatal("x")).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        e.heartbeat(slow.id, token(&slow), None).await,
        Err(Error::LeaseLost)
    ));
    let got = e.get(fresh.id).await.unwrap();
    assert_eq!(got.state, JobState::Active);
    assert_eq!(got.lease.unwrap().token, token(&fresh));

    e.complete(fresh.id, token(&fresh), None).await.unwrap();
    assert_eq!(state(e, &fresh).await, JobState::Completed);
}

pub async fn timeout_fails_the_attempt_even_with_heartbeats(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(job("q", 1).with_options(JobOptions {
            timeout_ms: Some(10_000),
            heartbeat_ms: Some(1_000),
            max_attempts: Some(2),
            backoff: Some(Backoff::fixed(500)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    let j = claim_one(e, "q").await;
    for _ in 0..9 {
        ctx.clock.advance(1_000);
        e.heartbeat(j.id, token(&j), None).await.unwrap();
    }
    ctx.clock.advance(999);
    assert_eq!(e.maintain().await.unwrap().timed_out, 0);
    e.heartbeat(j.id, token(&j), None).await.unwrap();
    ctx.clock.advance(1);
    assert_eq!(e.maintain().await.unwrap().timed_out, 1);
    let got = e.get(id).await.unwrap();
    assert_eq!(
        got.state,
        JobState::Delayed,
        "a timeout is a failed attempt, retried after backoff"
    );
    assert_eq!(got.run_at, ctx.clock.now() + 500);
    assert_eq!(got.errors[0].kind, ErrorKind::Timeout);
    assert!(matches!(
        e.complete(j.id, token(&j), None).await,
        Err(Error::LeaseLost)
    ));

    // The second attempt times out too: out of attempts, dead.
    ctx.clock.advance(500);
    let j = claim_one(e, "q").await;
    ctx.clock.advance(10_000);
    e.maintain().await.unwrap();
    let got = e.get(id).await.unwrap();
    assert_eq!(got.state, JobState::Dead);
    assert_eq!(got.dead_reason, Some(DeadReason::AttemptsExhausted));
    assert_eq!(got.errors.len(), 2);
    assert!(matches!(
        e.heartbeat(j.id, token(&j), None).await,
        Err(Error::LeaseLost)
    ));
}

pub async fn delayed_jobs_are_invisible_until_due(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let later = e
        .enqueue(job("q", 1).with_options(JobOptions {
            delay_ms: Some(5_000),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(later.state, JobState::Delayed);
    let at = e
        .enqueue(job("q", 2).with_options(JobOptions {
            run_at: Some(ctx.clock.now() + 8_000),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(at.state, JobState::Delayed);
    assert!(claim(e, "q", "w", 10).await.is_empty());
    ctx.clock.advance(4_999);
    assert!(claim(e, "q", "w", 10).await.is_empty());
    assert_eq!(e.stats("q").await.unwrap().delayed, 2);
    ctx.clock.advance(1);
    let got = claim(e, "q", "w", 10).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![later.id]);
    // The maintenance pass promotes due jobs too, for stats and for other nodes' long-polls.
    ctx.clock.advance(3_000);
    assert_eq!(e.maintain().await.unwrap().promoted, 1);
    assert_eq!(e.get(at.id).await.unwrap().state, JobState::Waiting);
    // A run_at in the past is simply due now.
    let past = e
        .enqueue(job("q", 3).with_options(JobOptions {
            run_at: Some(0),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(past.state, JobState::Waiting);
}

pub async fn idempotency_key_survives_retry_stall_and_replay(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(job("payments", 1).with_options(JobOptions {
            max_attempts: Some(2),
            max_stalled: Some(3),
            // A promised heartbeat, so that a lost lease is a stall (without one it is a timeout).
            heartbeat_ms: Some(1_000),
            backoff: Some(Backoff::fixed(0)),
            unique_key: Some("order-77".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    let key = e.get(id).await.unwrap().idempotency_key;
    let mut seen = Vec::new();

    let j = claim_one(e, "payments").await; // attempt 1 fails
    seen.push(j.idempotency_key.clone());
    e.fail(j.id, token(&j), Failure::retryable("gateway timeout"))
        .await
        .unwrap();
    let j = claim_one(e, "payments").await; // attempt 2 stalls
    seen.push(j.idempotency_key.clone());
    ctx.clock.advance(j.lease_ms as i64);
    e.maintain().await.unwrap();
    let j = claim_one(e, "payments").await; // attempt 2 again, fails: dead
    seen.push(j.idempotency_key.clone());
    e.fail(j.id, token(&j), Failure::retryable("gateway timeout"))
        .await
        .unwrap();
    assert_eq!(e.get(id).await.unwrap().state, JobState::Dead);

    // A person replays it from the dead-letter queue: it must charge with the same key.
    let n = e
        .replay_dead(DeadFilter {
            queue: "payments".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    let j = claim_one(e, "payments").await;
    assert_eq!(j.id, id);
    assert_eq!(j.attempts, 1, "a replay starts a fresh attempt budget");
    seen.push(j.idempotency_key.clone());
    assert!(seen.iter().all(|k| *k == key), "{seen:?} all equal {key}");
}
