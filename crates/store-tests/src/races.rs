//! Races the engine must win whatever the timing: each check puts a competing change exactly between
//! the engine's read and its guarded write, through a store wrapper, instead of hoping for the timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use errand_core::hooked::{Hook, Hooked};
use errand_core::store::{Guard, Store, Transition, Transitioned};
use errand_core::{Cancelled, Failure, JobOptions, JobState, Result};

use crate::support::{claim_one, job, token};
use crate::{Ctx, Fixture};

/// Requests the cancel of a job just before the first lease-guarded transition of it, once armed: the
/// moment after the engine decided what a failure or stall means and before it writes that down.
#[derive(Debug, Default)]
struct CancelBeforeWrite {
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Hook for CancelBeforeWrite {
    async fn job_transition(
        &self,
        inner: &dyn Store,
        p: Vec<Transition>,
    ) -> Result<Vec<Result<Transitioned>>> {
        if let Some(t) = p.iter().find(|t| matches!(t.guard, Guard::Lease(_)))
            && self.armed.swap(false, Ordering::SeqCst)
        {
            inner.job_request_cancel(t.id).await?;
        }
        inner.job_transition(p).await
    }
}

fn racing(f: Fixture) -> (Ctx, Arc<Hooked<CancelBeforeWrite>>) {
    let store = Arc::new(Hooked::new(f.store.clone(), CancelBeforeWrite::default()));
    let ctx = Ctx::new(Fixture::new(store.clone(), f));
    (ctx, store)
}

pub async fn a_cancel_requested_while_a_failure_is_written_is_not_lost(f: Fixture) {
    let (ctx, race) = racing(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1).with_options(JobOptions {
        max_attempts: Some(5),
        ..Default::default()
    }))
    .await
    .unwrap();
    let j = claim_one(e, "q").await;
    race.hook().armed.store(true, Ordering::SeqCst);
    // Decided as "retry later" on a job with no cancel request; the request lands before the write.
    let out = e
        .fail(j.id, token(&j), Failure::retryable("flaky"))
        .await
        .unwrap();
    assert_eq!(
        out.state,
        JobState::Cancelled,
        "the cancel wins over the retry"
    );
    let got = e.get(j.id).await.unwrap();
    assert_eq!(got.state, JobState::Cancelled);
    assert_eq!(got.errors.len(), 1, "the failed attempt is still recorded");
}

pub async fn a_cancel_requested_while_a_stall_is_written_is_not_lost(f: Fixture) {
    let (ctx, race) = racing(f);
    let e = &ctx.engine;
    e.enqueue(job("q", 1).with_options(JobOptions {
        heartbeat_ms: Some(1_000),
        max_stalled: Some(5),
        ..Default::default()
    }))
    .await
    .unwrap();
    let j = claim_one(e, "q").await;
    ctx.clock.advance(j.lease_ms as i64);
    race.hook().armed.store(true, Ordering::SeqCst);
    // The pass that lost the race leaves the job to the next pass, which sees the request.
    e.maintain().await.unwrap();
    e.maintain().await.unwrap();
    assert_eq!(e.get(j.id).await.unwrap().state, JobState::Cancelled);
    assert_eq!(e.cancel(j.id).await.unwrap(), Cancelled::Cancelled);
}
