//! Rule 5: leases with fencing tokens, heartbeats, and lease length.

use errand_core::limits::LEASE_GRACE_MS;
use errand_core::{Clock, Error, Failure, JobOptions, JobState};
use serde_json::json;

use crate::support::{claim_one, job, state, token};
use crate::{Ctx, Fixture};

pub async fn claim_gives_a_fresh_token_and_expiry_each_time(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1).with_options(JobOptions {
        max_attempts: Some(3),
        backoff: Some(errand_core::Backoff::fixed(0)),
        ..Default::default()
    }))
    .await
    .unwrap();
    let first = claim_one(e, "q").await;
    let lease = first.lease.clone().unwrap();
    assert_eq!(first.state, JobState::Active);
    assert_eq!(first.attempts, 1);
    assert_eq!(lease.worker_id, "w1");
    assert_eq!(lease.expires_at, ctx.clock.now() + first.lease_ms as i64);
    assert_eq!(lease.deadline_at, ctx.clock.now() + first.timeout_ms as i64);
    assert_eq!(first.started_at, Some(ctx.clock.now()));
    assert!(lease.token.len() >= 32, "unguessable");

    e.fail(first.id, lease.token.clone(), Failure::retryable("again"))
        .await
        .unwrap();
    let second = claim_one(e, "q").await;
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    assert_ne!(token(&second), lease.token, "every claim makes a new token");
}

pub async fn stale_or_foreign_token_is_lease_lost_and_changes_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1)).await.unwrap();
    e.enqueue(job("q", 2)).await.unwrap();
    let a = claim_one(e, "q").await;
    let b = claim_one(e, "q").await;
    let before = e.get(a.id).await.unwrap();

    // b's token on a's job, and a made-up token.
    for wrong in [token(&b), "0".repeat(32)] {
        assert!(matches!(
            e.complete(a.id, wrong.clone(), None).await,
            Err(Error::LeaseLost)
        ));
        assert!(matches!(
            e.fail(a.id, wrong.clone(), Failure::retryable("x")).await,
            Err(Error::LeaseLost)
        ));
        assert!(matches!(
            e.heartbeat(a.id, wrong, None).await,
            Err(Error::LeaseLost)
        ));
    }
    let after = e.get(a.id).await.unwrap();
    assert_eq!(after.state, JobState::Active);
    assert_eq!(after.lease, before.lease);
    assert!(after.errors.is_empty() && after.result.is_none());

    // After a completes, its own token is stale for anything but a repeat of that completion.
    e.complete(a.id, token(&a), None).await.unwrap();
    assert!(matches!(
        e.fail(a.id, token(&a), Failure::retryable("late")).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        e.heartbeat(a.id, token(&a), None).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(state(e, &a).await, JobState::Completed);
    assert!(matches!(
        e.complete(
            "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
            token(&a),
            None
        )
        .await,
        Err(Error::NotFound(_))
    ));
}

pub async fn heartbeat_extends_the_lease_carries_progress_and_reports_cancel(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1).with_options(JobOptions {
        timeout_ms: Some(600_000),
        heartbeat_ms: Some(10_000),
        ..Default::default()
    }))
    .await
    .unwrap();
    let j = claim_one(e, "q").await;
    assert_eq!(j.lease_ms, 20_000 + LEASE_GRACE_MS);
    ctx.clock.advance(15_000);
    let r = e
        .heartbeat(j.id, token(&j), Some(json!({"pct": 40})))
        .await
        .unwrap();
    assert_eq!(r.lease_expires_at, ctx.clock.now() + j.lease_ms as i64);
    assert!(!r.cancel_requested);
    let got = e.get(j.id).await.unwrap();
    assert_eq!(got.lease.unwrap().expires_at, r.lease_expires_at);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(got.progress.unwrap().get()).unwrap(),
        json!({"pct": 40})
    );

    // Heartbeats keep it alive well past the first lease.
    for _ in 0..5 {
        ctx.clock.advance(15_000);
        e.heartbeat(j.id, token(&j), None).await.unwrap();
        assert!(e.maintain().await.unwrap().stalled == 0);
    }
    assert_eq!(state(e, &j).await, JobState::Active);

    assert_eq!(
        e.cancel(j.id).await.unwrap(),
        errand_core::Cancelled::Requested
    );
    let r = e.heartbeat(j.id, token(&j), None).await.unwrap();
    assert!(
        r.cancel_requested,
        "the worker learns of the cancel on its next heartbeat"
    );

    // Too big a progress report is refused and recorded nowhere.
    let big = "p".repeat(e.limits().max_progress_bytes + 1);
    assert!(matches!(
        e.heartbeat(j.id, token(&j), Some(json!(big))).await,
        Err(Error::TooLarge { field, .. }) if field == "progress"
    ));

    // Once the lease has expired it cannot be renewed: the job is the reaper's.
    ctx.clock.advance(j.lease_ms as i64);
    assert!(matches!(
        e.heartbeat(j.id, token(&j), None).await,
        Err(Error::LeaseLost)
    ));
}

pub async fn lease_is_never_shorter_than_a_run_without_heartbeat(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    // No heartbeat promised: the lease covers the whole timeout.
    e.enqueue(job("a", 1).with_options(JobOptions {
        timeout_ms: Some(120_000),
        ..Default::default()
    }))
    .await
    .unwrap();
    let j = claim_one(e, "a").await;
    assert!(j.lease_ms >= 120_000);
    // A worker that runs 119 s without a heartbeat is not considered stalled.
    ctx.clock.advance(119_000);
    let report = e.maintain().await.unwrap();
    assert_eq!((report.stalled, report.timed_out), (0, 0));
    assert_eq!(state(e, &j).await, JobState::Active);
    e.complete(j.id, token(&j), None).await.unwrap();

    // A promised heartbeat: the lease covers two intervals, never less than the interval itself.
    e.enqueue(job("b", 1).with_options(JobOptions {
        timeout_ms: Some(120_000),
        heartbeat_ms: Some(30_000),
        ..Default::default()
    }))
    .await
    .unwrap();
    let j = claim_one(e, "b").await;
    assert!(j.lease_ms >= 60_000);
    ctx.clock.advance(59_999);
    assert_eq!(e.maintain().await.unwrap().stalled, 0);
}

pub async fn retried_completion_of_the_same_lease_is_a_success(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1)).await.unwrap();
    let j = claim_one(e, "q").await;
    let first = e
        .complete(j.id, token(&j), Some(json!({"ok": true})))
        .await
        .unwrap();
    assert!(!first.duplicate);
    // The client lost the answer and sends the same completion again.
    let again = e
        .complete(j.id, token(&j), Some(json!({"ok": true})))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.state, JobState::Completed);
    let got = e.get(j.id).await.unwrap();
    assert_eq!(got.state, JobState::Completed);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(got.result.unwrap().get()).unwrap(),
        json!({"ok": true})
    );
}

pub async fn a_stale_token_batched_with_the_current_one_is_refused(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1).with_options(JobOptions {
        heartbeat_ms: Some(1_000),
        max_stalled: Some(5),
        ..Default::default()
    }))
    .await
    .unwrap();
    let stale = claim_one(e, "q").await;
    ctx.clock.advance(stale.lease_ms as i64);
    e.maintain().await.unwrap();
    let current = claim_one(e, "q").await;
    assert_eq!(current.id, stale.id);
    let out = e
        .ack(vec![
            errand_core::Ack::Complete {
                id: stale.id,
                token: token(&stale),
                result: Some(json!("stale")),
            },
            errand_core::Ack::Complete {
                id: current.id,
                token: token(&current),
                result: Some(json!("current")),
            },
        ])
        .await
        .unwrap();
    assert!(matches!(out[0], Err(Error::LeaseLost)), "{:?}", out[0]);
    let ok = out[1].as_ref().unwrap();
    assert!(!ok.duplicate);
    let got = e.get(current.id).await.unwrap();
    assert_eq!(got.result.unwrap().get(), r#""current""#);
}

pub async fn results_are_stored_exactly_as_sent(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let results = [
        json!({"p": 0.448_012_491_920_167_23, "q": -1.5e-300, "r": 1e300, "s": 0.1, "t": 123_456_789.987_654_33}),
        json!(null),
        json!("text with \"quotes\", \\ and ünïcödé"),
        json!([1, [2, [3]], {"k": {}}]),
        json!(18_446_744_073_709_551_615u64),
    ];
    e.enqueue_many((0..results.len() as u64).map(|i| job("q", i)).collect())
        .await
        .unwrap();
    let jobs = crate::support::claim(e, "q", "w", 10).await;
    // One batch, so the bulk path of a store is exercised too.
    let acks = jobs
        .iter()
        .zip(&results)
        .map(|(j, r)| errand_core::Ack::Complete {
            id: j.id,
            token: token(j),
            result: Some(r.clone()),
        })
        .collect();
    for r in e.ack(acks).await.unwrap() {
        r.unwrap();
    }
    for (j, r) in jobs.iter().zip(&results) {
        let got = e.get(j.id).await.unwrap();
        assert_eq!(got.result.unwrap().get(), serde_json::to_string(r).unwrap());
    }
}

pub async fn released_job_is_due_at_once_without_using_an_attempt(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1).with_options(JobOptions {
        max_attempts: Some(1),
        ..Default::default()
    }))
    .await
    .unwrap();
    let j = claim_one(e, "q").await;
    let out = e.release(j.id, token(&j)).await.unwrap();
    assert_eq!(out.state, JobState::Waiting);
    let again = e.get(j.id).await.unwrap();
    assert_eq!(again.attempts, 0, "a released job used no attempt");
    assert!(again.errors.is_empty() && again.lease.is_none());
    // Another worker gets it at once, and its single attempt is still there to be used.
    let j2 = claim_one(e, "q").await;
    assert_eq!(j2.id, j.id);
    assert_eq!(j2.attempts, 1);
    assert!(matches!(
        e.release(j.id, token(&j)).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(
        state(e, &j2).await,
        JobState::Active,
        "the stale release changed nothing"
    );

    // A job whose cancel was requested is cancelled when released, not run again.
    e.cancel(j2.id).await.unwrap();
    let out = e.release(j2.id, token(&j2)).await.unwrap();
    assert_eq!(out.state, JobState::Cancelled);
}

/// Releases batched with completions, as a worker shutting down sends them: each stands on its own
/// (due again without an attempt used, delayed, cancelled if its cancel was requested, refused with
/// a stale lease) in the batch's one transaction.
pub async fn releases_in_a_batch_each_stand_on_their_own(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue_many((0..5).map(|i| job("rel", i)).collect())
        .await
        .unwrap();
    let jobs = crate::support::claim(e, "rel", "w", 5).await;
    assert_eq!(jobs.len(), 5);
    e.cancel(jobs[2].id).await.unwrap();
    let release = |j: &errand_core::Job, delay_ms| errand_core::Ack::Release {
        id: j.id,
        token: token(j),
        delay_ms,
    };
    let out = e
        .ack(vec![
            release(&jobs[0], 0),
            release(&jobs[1], 60_000),
            release(&jobs[2], 0),
            errand_core::Ack::Release {
                id: jobs[3].id,
                token: "stale".into(),
                delay_ms: 0,
            },
            errand_core::Ack::Complete {
                id: jobs[4].id,
                token: token(&jobs[4]),
                result: None,
            },
        ])
        .await
        .unwrap();
    let states: Vec<Option<JobState>> = out
        .iter()
        .map(|r| r.as_ref().ok().map(|o| o.state))
        .collect();
    assert_eq!(
        states,
        [
            Some(JobState::Waiting),
            Some(JobState::Delayed),
            Some(JobState::Cancelled),
            None,
            Some(JobState::Completed)
        ]
    );
    assert!(matches!(out[3], Err(Error::LeaseLost)), "{:?}", out[3]);
    let now = ctx.clock.now();
    assert_eq!(out[0].as_ref().unwrap().run_at, Some(now));
    assert_eq!(out[1].as_ref().unwrap().run_at, Some(now + 60_000));
    assert_eq!(out[2].as_ref().unwrap().run_at, None);
    for j in &jobs[..2] {
        let got = e.get(j.id).await.unwrap();
        assert_eq!(got.attempts, 0, "a released job used no attempt");
        assert!(got.lease.is_none());
    }
    assert_eq!(
        state(e, &jobs[3]).await,
        JobState::Active,
        "the stale release changed nothing"
    );
    assert!(matches!(
        e.ack(vec![release(&jobs[1], u64::MAX)]).await.unwrap()[0],
        Err(Error::Invalid { .. })
    ));
}

pub async fn log_lines_are_kept_under_the_lease_bounded_and_deleted_with_the_job(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let limits = e.limits().clone();
    let id = e
        .enqueue(job("logs", 1).with_options(JobOptions {
            max_attempts: Some(1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    let j = claim_one(e, "logs").await;
    let t = token(&j);
    assert!(e.logs(id).await.unwrap().is_empty());
    e.append_logs(id, t.clone(), vec!["starting".into(), "step 1".into()])
        .await
        .unwrap();
    ctx.clock.advance(10);
    let long = "é".repeat(limits.max_log_line_bytes);
    e.append_logs(id, t.clone(), vec![long]).await.unwrap();
    let logs = e.logs(id).await.unwrap();
    assert_eq!(logs.len(), 3);
    assert_eq!((logs[0].line.as_str(), logs[0].attempt), ("starting", 1));
    // NUL, which PostgreSQL's text cannot hold, is stored the same way by every store.
    e.append_logs(id, t.clone(), vec!["a\0b".into()])
        .await
        .unwrap();
    assert_eq!(e.logs(id).await.unwrap()[3].line, "a\u{fffd}b");
    assert_eq!(logs[1].line, "step 1");
    assert!(logs[2].at > logs[0].at);
    assert!(
        logs[2].line.len() <= limits.max_log_line_bytes,
        "a long line is cut, on a character boundary"
    );

    // A foreign token writes nothing; bad batches are refused and write nothing.
    assert!(matches!(
        e.append_logs(id, "not-the-lease".into(), vec!["x".into()])
            .await,
        Err(Error::LeaseLost)
    ));
    let too_many = vec!["x".to_string(); limits.max_log_batch + 1];
    assert!(matches!(
        e.append_logs(id, t.clone(), too_many).await,
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        e.append_logs(id, t.clone(), vec![]).await,
        Err(Error::Invalid { .. })
    ));
    assert_eq!(e.logs(id).await.unwrap().len(), 4);

    // Only the latest lines are kept.
    for n in 0..(limits.max_log_lines / limits.max_log_batch + 1) {
        let batch = (0..limits.max_log_batch)
            .map(|i| format!("line {}", n * limits.max_log_batch + i))
            .collect();
        e.append_logs(id, t.clone(), batch).await.unwrap();
    }
    let logs = e.logs(id).await.unwrap();
    assert_eq!(logs.len(), limits.max_log_lines);
    let last = (limits.max_log_lines / limits.max_log_batch + 1) * limits.max_log_batch - 1;
    assert_eq!(logs.last().unwrap().line, format!("line {last}"));

    // Once the job is no longer active under that lease, nothing more is taken; deleting the job
    // deletes its lines.
    e.fail(id, t.clone(), Failure::fatal("no")).await.unwrap();
    assert!(matches!(
        e.append_logs(id, t, vec!["late".into()]).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(state(e, &j).await, JobState::Dead);
    let purged = e
        .purge_dead(errand_core::DeadFilter {
            queue: "logs".into(),
            kind: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(matches!(e.logs(id).await, Err(Error::NotFound(_))));
    assert!(
        e.store().job_logs(id).await.unwrap().is_empty(),
        "its lines went with it"
    );
    assert!(matches!(
        e.append_logs(id, "t".into(), vec!["x".into()]).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn a_snoozed_job_waits_its_delay_without_using_an_attempt(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(job("snooze", 1).with_options(JobOptions {
            max_attempts: Some(1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    // A provider's 429 with Retry-After: 30 s, three times: the single attempt is never used up.
    for _ in 0..3 {
        let j = claim_one(e, "snooze").await;
        assert_eq!(j.attempts, 1);
        let out = e.release_after(j.id, token(&j), 30_000).await.unwrap();
        assert_eq!(out.state, JobState::Delayed);
        assert_eq!(out.run_at, Some(ctx.clock.now() + 30_000));
        let after = e.get(id).await.unwrap();
        assert_eq!((after.state, after.attempts), (JobState::Delayed, 0));
        assert!(after.errors.is_empty(), "a snooze is not a failure");
        assert!(
            crate::support::claim(e, "snooze", "w", 1).await.is_empty(),
            "not before its delay"
        );
        ctx.clock.advance(30_000);
    }
    let j = claim_one(e, "snooze").await;
    e.complete(j.id, token(&j), None).await.unwrap();
    assert_eq!(e.get(id).await.unwrap().attempts, 1);

    // Bounded like any delay; a stale token changes nothing.
    let id2 = e.enqueue(job("snooze", 2)).await.unwrap().id;
    let j2 = claim_one(e, "snooze").await;
    assert_eq!(j2.id, id2);
    match e.release_after(j2.id, token(&j2), u64::MAX).await {
        Err(err @ Error::Invalid { .. }) => assert_eq!(err.field(), Some("delay_ms")),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(matches!(
        e.release_after(j2.id, "stale".into(), 1_000).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(state(e, &j2).await, JobState::Active);
}

/// A worker that promises heartbeats with its claim gets leases of `2 × its interval + grace`, renewed
/// to the same length, so that its jobs are recovered (as a stall) that soon after it dies instead of
/// after their whole timeout; a job whose own lease is shorter keeps its own; the next claim without a
/// promise gets the job's full lease again; a promise outside 100 ms – 7 days is refused.
pub async fn a_heartbeat_promise_shortens_the_lease(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let claim = |hb: Option<u64>| errand_core::Claim {
        queues: vec!["q".into()],
        worker_id: "w1".into(),
        limit: 1,
        heartbeat_ms: hb,
    };
    let id = e
        .enqueue(job("q", 1).with_options(JobOptions {
            timeout_ms: Some(300_000),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    let j = e.claim(claim(Some(10_000))).await.unwrap().remove(0);
    let short = 20_000 + LEASE_GRACE_MS as i64;
    assert_eq!(
        j.lease.as_ref().unwrap().expires_at,
        ctx.clock.now() + short
    );
    assert_eq!(j.lease_ms, 300_000 + LEASE_GRACE_MS, "the job's own lease");
    ctx.clock.advance(10_000);
    let renewed = e.heartbeat(id, token(&j), None).await.unwrap();
    assert_eq!(
        renewed.lease_expires_at,
        ctx.clock.now() + short,
        "renewed to the promised length, not the job's"
    );
    // The worker dies: the lease ends `short` after its last heartbeat, long before the timeout.
    ctx.clock.advance(short - 1);
    assert_eq!(e.maintain().await.unwrap().stalled, 0);
    ctx.clock.advance(1);
    assert_eq!(e.maintain().await.unwrap().stalled, 1);
    assert_eq!(state(e, &j).await, JobState::Waiting);
    // A claim without a promise: the job's full lease.
    let again = e.claim(claim(None)).await.unwrap().remove(0);
    let full = ctx.clock.now() + (300_000 + LEASE_GRACE_MS) as i64;
    assert_eq!(again.lease.as_ref().unwrap().expires_at, full);
    ctx.clock.advance(10_000);
    let renewed = e.heartbeat(id, token(&again), None).await.unwrap();
    assert_eq!(
        renewed.lease_expires_at,
        ctx.clock.now() + (300_000 + LEASE_GRACE_MS) as i64,
        "the claim set no cap: renewals are the job's full lease again"
    );
    // A job whose own lease is shorter than the promise allows keeps its own.
    e.enqueue(job("q", 2).with_options(JobOptions {
        timeout_ms: Some(1_000),
        ..Default::default()
    }))
    .await
    .unwrap();
    let quick = e.claim(claim(Some(10_000))).await.unwrap().remove(0);
    assert_eq!(
        quick.lease.as_ref().unwrap().expires_at,
        ctx.clock.now() + (1_000 + LEASE_GRACE_MS) as i64
    );
    for bad in [99, 7 * 86_400_000 + 1] {
        assert!(matches!(
            e.claim(claim(Some(bad))).await,
            Err(Error::Invalid { field, .. }) if field == "heartbeat_ms"
        ));
    }
}
