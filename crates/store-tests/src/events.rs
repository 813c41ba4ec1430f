//! Rule 8: every state change is announced.

use errand_core::{Event, Failure, JobOptions, JobState};
use tokio::sync::broadcast::Receiver;

use crate::support::{claim_one, job, token};
use crate::{Ctx, Fixture};

fn drain(rx: &mut Receiver<Event>) -> Vec<(Option<JobState>, JobState, u32)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push((e.from, e.to, e.attempt));
    }
    out
}

pub async fn every_state_change_emits_an_event(f: Fixture) {
    use JobState::*;
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let mut rx = e.subscribe();
    let id = e
        .enqueue(job("ev", 1).with_options(JobOptions {
            delay_ms: Some(10),
            max_attempts: Some(2),
            heartbeat_ms: Some(1_000),
            backoff: Some(errand_core::Backoff::fixed(5)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    ctx.clock.advance(10);
    let j = claim_one(e, "ev").await; // delayed → waiting → active
    e.fail(j.id, token(&j), Failure::retryable("x"))
        .await
        .unwrap(); // active → delayed
    ctx.clock.advance(5);
    e.maintain().await.unwrap(); // delayed → waiting
    let j = claim_one(e, "ev").await; // waiting → active
    ctx.clock.advance(j.lease_ms as i64);
    e.maintain().await.unwrap(); // stalled: active → waiting
    let j = claim_one(e, "ev").await;
    e.fail(j.id, token(&j), Failure::retryable("y"))
        .await
        .unwrap(); // active → dead
    e.retry(id).await.unwrap(); // dead → waiting
    e.cancel(id).await.unwrap(); // waiting → cancelled
    assert_eq!(
        drain(&mut rx),
        vec![
            (None, Delayed, 0),
            (Some(Delayed), Waiting, 0),
            (Some(Waiting), Active, 1),
            (Some(Active), Delayed, 1),
            (Some(Delayed), Waiting, 1),
            (Some(Waiting), Active, 2),
            (Some(Active), Waiting, 1),
            (Some(Waiting), Active, 2),
            (Some(Active), Dead, 2),
            (Some(Dead), Waiting, 0),
            (Some(Waiting), Cancelled, 0),
        ]
    );
    let e2 = e.enqueue(job("ev", 2)).await.unwrap().id;
    let j = claim_one(e, "ev").await;
    e.complete(j.id, token(&j), None).await.unwrap();
    let evs: Vec<Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(evs.len(), 3);
    assert!(
        evs.iter()
            .all(|ev| ev.job_id == e2 && ev.queue == "ev" && ev.kind == "test.job")
    );
    assert_eq!(evs[2].to, Completed);
    assert_eq!(evs[2].at, errand_core::Clock::now(&ctx.clock));
}

/// Metrics count failures by kind and measure waits and run times from the events alone: a claim says
/// how long the job was due, a change out of `active` how long the attempt ran and what failure it
/// records.
pub async fn events_say_how_long_jobs_waited_and_ran_and_how_they_failed(f: Fixture) {
    use errand_core::ErrorKind;
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let mut rx = e.subscribe();
    let opts = JobOptions {
        max_attempts: Some(5),
        heartbeat_ms: Some(1_000),
        timeout_ms: Some(60_000),
        backoff: Some(errand_core::Backoff::fixed(5)),
        ..Default::default()
    };
    e.enqueue(job("evd", 1).with_options(opts)).await.unwrap();
    ctx.clock.advance(120);
    let j = claim_one(e, "evd").await;
    ctx.clock.advance(300);
    e.fail(j.id, token(&j), Failure::retryable("x"))
        .await
        .unwrap();
    ctx.clock.advance(5);
    let j = claim_one(e, "evd").await;
    ctx.clock.advance(j.lease_ms as i64);
    e.maintain().await.unwrap(); // the lease expired: a stall
    let j = claim_one(e, "evd").await;
    ctx.clock.advance(40);
    e.complete(j.id, token(&j), None).await.unwrap();
    let evs: Vec<Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let seen: Vec<_> = evs
        .iter()
        .map(|ev| (ev.from, ev.to, ev.failure, ev.waited_ms, ev.ran_ms))
        .collect();
    use JobState::*;
    let lease = j.lease_ms;
    assert_eq!(
        seen,
        vec![
            (None, Waiting, None, None, None),
            (Some(Waiting), Active, None, Some(120), None),
            (
                Some(Active),
                Delayed,
                Some(ErrorKind::Error),
                None,
                Some(300)
            ),
            (Some(Delayed), Waiting, None, None, None),
            (Some(Waiting), Active, None, Some(0), None),
            (
                Some(Active),
                Waiting,
                Some(ErrorKind::Stalled),
                None,
                Some(lease)
            ),
            // Back from a stall, a job keeps its run time: due all along.
            (Some(Waiting), Active, None, Some(lease), None),
            (Some(Active), Completed, None, None, Some(40)),
        ]
    );
}

pub async fn a_job_that_ends_enqueues_one_webhook_delivery_per_webhook(f: Fixture) {
    use errand_core::engine::WEBHOOK_QUEUE;
    use errand_core::{QueueConfig, Webhook};
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let hook = |events: &[&str]| Webhook {
        url: "http://receiver.test/hook".into(),
        secret: "0123456789abcdef".into(),
        events: events.iter().map(|s| s.to_string()).collect(),
    };
    e.put_webhook("shop", "ends", hook(&["completed", "dead"]))
        .await
        .unwrap();
    e.put_webhook("shop", "stops", hook(&["cancelled"]))
        .await
        .unwrap();
    // A configuration PUT keeps the webhooks.
    e.set_queue_config("shop", QueueConfig::default())
        .await
        .unwrap();
    assert_eq!(e.webhooks("shop").await.unwrap().len(), 2);

    e.enqueue(job("shop", 1)).await.unwrap();
    let j = claim_one(e, "shop").await;
    e.complete(j.id, token(&j), None).await.unwrap();
    let waiting = e.enqueue(job("shop", 2)).await.unwrap();
    e.cancel(waiting.id).await.unwrap();
    e.enqueue(job("shop", 3)).await.unwrap();
    let j3 = claim_one(e, "shop").await;
    e.fail(j3.id, token(&j3), Failure::fatal("no"))
        .await
        .unwrap();
    // A retry (not an end) tells nobody.
    e.enqueue(job("shop", 4)).await.unwrap();
    let j4 = claim_one(e, "shop").await;
    e.fail(j4.id, token(&j4), Failure::retryable("later"))
        .await
        .unwrap();

    let deliveries = e
        .list(WEBHOOK_QUEUE, JobState::Waiting, None, 100)
        .await
        .unwrap()
        .jobs;
    let mut seen: Vec<(String, String, String)> = deliveries
        .iter()
        .map(|d| {
            let p = crate::support::payload(d);
            (
                p["webhook"].as_str().unwrap().to_string(),
                p["body"]["type"].as_str().unwrap().to_string(),
                p["body"]["job_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (
            "ends".to_string(),
            "job.completed".to_string(),
            j.id.to_string(),
        ),
        ("ends".into(), "job.dead".into(), j3.id.to_string()),
        (
            "stops".into(),
            "job.cancelled".into(),
            waiting.id.to_string(),
        ),
    ];
    want.sort();
    assert_eq!(seen, want);
    assert!(
        deliveries
            .iter()
            .all(|d| !d.payload.get().contains("0123456789abcdef")),
        "the secret is not copied into deliveries"
    );

    // Deleted: no more deliveries; the webhook queue's own jobs never notify.
    assert!(e.delete_webhook("shop", "ends").await.unwrap());
    assert!(!e.delete_webhook("shop", "ends").await.unwrap());
    e.enqueue(job("shop", 5)).await.unwrap();
    let j5 = claim_one(e, "shop").await;
    e.complete(j5.id, token(&j5), None).await.unwrap();
    let n = e.stats(WEBHOOK_QUEUE).await.unwrap().waiting;
    assert_eq!(n, 3);
}
