//! Rule 7, an operator's hand on one job or queue: cancel (waiting, delayed, active, finished), promote
//! a delayed job, pause and resume a queue. Dead jobs (retry, replay, purge) are `dead.rs`'s.

use errand_core::{Cancelled, Claim, Error, Failure, JobId, JobOptions, JobState, QueueConfig};
use serde_json::json;

use crate::support::{claim, claim_one, job, state, token};
use crate::{Ctx, Fixture};

pub async fn cancel_waiting_delayed_and_active_jobs(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let waiting = e.enqueue(job("q", 1)).await.unwrap().id;
    let delayed = e
        .enqueue(job("q", 2).with_options(JobOptions {
            delay_ms: Some(1_000),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    assert_eq!(e.cancel(waiting).await.unwrap(), Cancelled::Cancelled);
    assert_eq!(e.cancel(delayed).await.unwrap(), Cancelled::Cancelled);
    assert_eq!(
        e.cancel(waiting).await.unwrap(),
        Cancelled::Cancelled,
        "idempotent"
    );
    for id in [waiting, delayed] {
        let j = e.get(id).await.unwrap();
        assert_eq!(j.state, JobState::Cancelled);
        assert!(j.finished_at.is_some());
    }
    ctx.clock.advance(2_000);
    assert!(
        claim(e, "q", "w", 10).await.is_empty(),
        "cancelled jobs never run"
    );

    // Active: the request is recorded; the worker's failure report then ends it cancelled, not retried.
    e.enqueue(job("q", 3)).await.unwrap();
    let j = claim_one(e, "q").await;
    assert_eq!(e.cancel(j.id).await.unwrap(), Cancelled::Requested);
    assert_eq!(state(e, &j).await, JobState::Active);
    assert!(e.get(j.id).await.unwrap().cancel_requested);
    let out = e
        .fail(j.id, token(&j), Failure::retryable("cancelled by request"))
        .await
        .unwrap();
    assert_eq!(out.state, JobState::Cancelled);

    // A worker that finished the work before it learnt of the request completes it: the completion
    // wins (its effect happened; calling it cancelled would hide it), and the job keeps the request so
    // that whoever cancelled sees it came too late.
    e.enqueue(job("q", 5)).await.unwrap();
    let late = claim_one(e, "q").await;
    assert_eq!(e.cancel(late.id).await.unwrap(), Cancelled::Requested);
    e.complete(late.id, token(&late), Some(json!({"sent": true})))
        .await
        .unwrap();
    let j = e.get(late.id).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert!(j.cancel_requested, "the late request stays visible");

    // Finished jobs cannot be cancelled; unknown ones are not found.
    e.enqueue(job("q", 4)).await.unwrap();
    let done = claim_one(e, "q").await;
    e.complete(done.id, token(&done), None).await.unwrap();
    assert!(matches!(e.cancel(done.id).await, Err(Error::Conflict(_))));
    let unknown: JobId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
    assert!(matches!(e.cancel(unknown).await, Err(Error::NotFound(_))));
}

pub async fn promote_a_delayed_job(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(job("q", 1).with_options(JobOptions {
            delay_ms: Some(3_600_000),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    assert!(claim(e, "q", "w", 1).await.is_empty());
    e.promote(id).await.unwrap();
    let j = claim_one(e, "q").await;
    assert_eq!(j.id, id);
    assert!(
        matches!(e.promote(id).await, Err(Error::Conflict(_))),
        "only delayed jobs"
    );
}

pub async fn paused_queue_accepts_but_hands_out_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.pause("q").await.unwrap();
    assert!(e.queue_info("q").await.unwrap().paused);
    e.enqueue(job("q", 1)).await.unwrap();
    e.enqueue(job("other", 1)).await.unwrap();
    let got = e
        .claim(Claim {
            queues: vec!["q".into(), "other".into()],
            worker_id: "w".into(),
            limit: 10,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].queue, "other");
    assert!(e.stats("q").await.unwrap().paused);
    e.resume("q").await.unwrap();
    assert!(!e.stats("q").await.unwrap().paused);
    assert_eq!(claim(e, "q", "w", 10).await.len(), 1);
    // Pausing keeps the configuration, and configuring keeps the pause.
    e.set_queue_config(
        "q",
        QueueConfig {
            max_attempts: 9,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.pause("q").await.unwrap();
    let info = e.queue_info("q").await.unwrap();
    assert!(info.paused);
    assert_eq!(info.config.max_attempts, 9);
}
