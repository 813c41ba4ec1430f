//! Rule 7, what an enqueue answers: a batch all or nothing, a unique key answering the job that holds
//! it within its window, and dedup by replace or reject. What unique keys do to revived jobs is
//! `dead.rs`'s; how long a key is held is the `unique` module's.

use errand_core::{Clock, Dedup, Error, JobOptions, JobState, NewJob, QueueConfig, UniqueWindow};
use serde_json::json;

use crate::support::{claim_one, job, payload, token};
use crate::{Ctx, Fixture};

pub async fn batch_with_one_bad_job_writes_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let mut jobs: Vec<NewJob> = (0..100).map(|i| job("batch", i)).collect();
    jobs[57].options.priority = Some(99_999);
    match e.enqueue_many(jobs.clone()).await {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "jobs[57].priority"),
        other => panic!("expected invalid, got {other:?}"),
    }
    jobs[57].options.priority = None;
    jobs[99].queue = "bad queue".into();
    assert!(matches!(
        e.enqueue_many(jobs.clone()).await,
        Err(Error::Invalid { field, .. }) if field == "jobs[99].queue"
    ));
    assert_eq!(
        e.stats("batch").await.unwrap().waiting,
        0,
        "nothing written"
    );
    assert!(e.queues().await.unwrap().is_empty(), "not even the queue");
    assert!(matches!(
        e.enqueue_many(vec![]).await,
        Err(Error::Invalid { .. })
    ));

    jobs[99].queue = "batch".into();
    let out = e.enqueue_many(jobs).await.unwrap();
    assert_eq!(out.len(), 100);
    assert!(
        out.windows(2).all(|w| w[0].id < w[1].id),
        "ids in batch order"
    );
    assert_eq!(e.stats("batch").await.unwrap().waiting, 100);
}

pub async fn unique_key_returns_the_existing_job_within_its_window(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "u",
        QueueConfig {
            unique_window: UniqueWindow::Ms(10_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let uk = |n: u64| {
        job("u", n).with_options(JobOptions {
            unique_key: Some("order-1".into()),
            ..Default::default()
        })
    };
    let first = e.enqueue(uk(1)).await.unwrap();
    assert!(first.created);
    let dup = e.enqueue(uk(2)).await.unwrap();
    assert!(!dup.created, "the existing job is returned and says so");
    assert_eq!(dup.id, first.id);
    assert_eq!(dup.state, JobState::Waiting);
    // Also while active, and within one batch.
    let j = claim_one(e, "u").await;
    let batch = e.enqueue_many(vec![uk(3), uk(4)]).await.unwrap();
    assert!(
        batch
            .iter()
            .all(|b| !b.created && b.id == first.id && b.state == JobState::Active)
    );
    // Finished: refused within the window, accepted after it.
    e.complete(j.id, token(&j), None).await.unwrap();
    ctx.clock.advance(9_999);
    let within = e.enqueue(uk(5)).await.unwrap();
    assert_eq!((within.created, within.id), (false, first.id));
    assert_eq!(within.state, JobState::Completed);
    ctx.clock.advance(2);
    let after = e.enqueue(uk(6)).await.unwrap();
    assert!(after.created);
    assert_ne!(after.id, first.id);
    // A batch with two new jobs sharing a key makes one.
    let pair = e
        .enqueue_many(vec![
            job("u", 7).with_options(JobOptions {
                unique_key: Some("k2".into()),
                ..Default::default()
            }),
            job("u", 8).with_options(JobOptions {
                unique_key: Some("k2".into()),
                ..Default::default()
            }),
        ])
        .await
        .unwrap();
    assert!(pair[0].created && !pair[1].created);
    assert_eq!(pair[0].id, pair[1].id);
    // The same key in another queue is another job.
    let elsewhere = e
        .enqueue(job("u2", 1).with_options(JobOptions {
            unique_key: Some("order-1".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(elsewhere.created);
}

pub async fn dedup_replace_updates_a_waiting_job_and_reject_keeps_it(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let with = |n: u64, dedup: Dedup, delay_ms: Option<u64>| {
        job("d", n).with_options(JobOptions {
            unique_key: Some("order-7".into()),
            dedup,
            delay_ms,
            ..Default::default()
        })
    };
    // Debounce: each repeat pushes the delayed job's run time back and takes its payload.
    let first = e
        .enqueue(with(1, Dedup::Replace, Some(1_000)))
        .await
        .unwrap();
    assert!(first.created && !first.replaced);
    ctx.clock.advance(600);
    let again = e
        .enqueue(with(2, Dedup::Replace, Some(1_000)))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert!(!again.created && again.replaced);
    let j = e.get(first.id).await.unwrap();
    assert_eq!(payload(&j), json!({"n": 2}));
    assert_eq!(j.run_at, ctx.clock.now() + 1_000, "run time pushed back");
    assert_eq!(j.state, JobState::Delayed);

    // Reject (the default) answers the existing job and changes nothing.
    let kept = e.enqueue(with(3, Dedup::Reject, None)).await.unwrap();
    assert!(!kept.created && !kept.replaced);
    assert_eq!(payload(&e.get(first.id).await.unwrap()), json!({"n": 2}));

    // A replace without delay makes the job due now.
    let due = e.enqueue(with(4, Dedup::Replace, None)).await.unwrap();
    assert!(due.replaced);
    assert_eq!(due.state, JobState::Waiting);
    let claimed = claim_one(e, "d").await;
    assert_eq!(payload(&claimed), json!({"n": 4}));

    // An active job keeps the input its attempt runs with.
    let late = e.enqueue(with(5, Dedup::Replace, None)).await.unwrap();
    assert_eq!(late.id, first.id);
    assert!(!late.replaced);
    assert_eq!(payload(&e.get(first.id).await.unwrap()), json!({"n": 4}));

    // Replace names the job by its unique key: without one it is refused.
    let bad = job("d", 6).with_options(JobOptions {
        dedup: Dedup::Replace,
        ..Default::default()
    });
    match e.enqueue(bad).await {
        Err(err @ Error::Invalid { .. }) => assert_eq!(err.field(), Some("dedup")),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
