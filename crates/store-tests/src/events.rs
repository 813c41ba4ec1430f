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
