//! Races the engine must win whatever the timing: each check puts a competing change exactly between
//! the engine's read and its guarded write, through a store wrapper, instead of hoping for the timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use errand_core::store::{
    Claimed, Fired, Guard, Inserted, JobClaim, JobDelete, JobInsert, JobList, JobLogAppend,
    JobPrune, JobReplace, LeaseRenew, Renewed, ScheduleFire, Store, Transition, Transitioned,
};
use errand_core::{
    Cancelled, Failure, Job, JobId, JobOptions, JobState, LogLine, QueueConfig, QueueInfo,
    QueueStats, Result, Schedule, Timestamp,
};

use crate::support::{claim_one, job, token};
use crate::{Ctx, Fixture};

/// A store that requests the cancel of a job just before the first lease-guarded transition of it: the
/// moment after the engine decided what a failure or stall means and before it writes that down.
#[derive(Debug)]
struct CancelBeforeWrite {
    inner: Arc<dyn Store>,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl Store for CancelBeforeWrite {
    async fn job_transition(&self, p: Vec<Transition>) -> Result<Vec<Result<Transitioned>>> {
        if let Some(t) = p.iter().find(|t| matches!(t.guard, Guard::Lease(_)))
            && self.armed.swap(false, Ordering::SeqCst)
        {
            self.inner.job_request_cancel(t.id).await?;
        }
        self.inner.job_transition(p).await
    }
    async fn job_insert(&self, p: JobInsert) -> Result<Vec<Inserted>> {
        self.inner.job_insert(p).await
    }
    async fn job_claim(&self, p: JobClaim) -> Result<Claimed> {
        self.inner.job_claim(p).await
    }
    async fn lease_renew(&self, p: LeaseRenew) -> Result<Renewed> {
        self.inner.lease_renew(p).await
    }
    async fn job_request_cancel(&self, id: JobId) -> Result<Transitioned> {
        self.inner.job_request_cancel(id).await
    }
    async fn job_promote_due(
        &self,
        queue: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(JobId, Transitioned)>> {
        self.inner.job_promote_due(queue, now, limit).await
    }
    async fn job_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        self.inner.job_expired(now, limit).await
    }
    async fn job_get(&self, id: JobId) -> Result<Option<Job>> {
        self.inner.job_get(id).await
    }
    async fn job_list(&self, p: JobList) -> Result<Vec<Job>> {
        self.inner.job_list(p).await
    }
    async fn job_prune(&self, p: JobPrune) -> Result<u64> {
        self.inner.job_prune(p).await
    }
    async fn job_delete(&self, p: JobDelete) -> Result<u64> {
        self.inner.job_delete(p).await
    }
    async fn queue_get(&self, name: &str) -> Result<Option<QueueInfo>> {
        self.inner.queue_get(name).await
    }
    async fn queue_list(&self) -> Result<Vec<QueueInfo>> {
        self.inner.queue_list().await
    }
    async fn queue_put(&self, name: &str, config: QueueConfig) -> Result<()> {
        self.inner.queue_put(name, config).await
    }
    async fn queue_set_paused(&self, name: &str, paused: bool) -> Result<()> {
        self.inner.queue_set_paused(name, paused).await
    }
    async fn audit_append(&self, e: errand_core::AuditEntry) -> Result<()> {
        self.inner.audit_append(e).await
    }

    async fn audit_list(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<errand_core::AuditEntry>> {
        self.inner.audit_list(before, limit).await
    }

    async fn queue_stats_all(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        self.inner.queue_stats_all(now).await
    }

    async fn queue_stats(&self, name: &str, now: Timestamp) -> Result<QueueStats> {
        self.inner.queue_stats(name, now).await
    }
    async fn job_replace(&self, p: JobReplace) -> Result<bool> {
        self.inner.job_replace(p).await
    }
    async fn job_log_append(&self, p: JobLogAppend) -> Result<()> {
        self.inner.job_log_append(p).await
    }
    async fn job_logs(&self, id: JobId) -> Result<Vec<LogLine>> {
        self.inner.job_logs(id).await
    }

    async fn job_children(&self, parent: JobId, limit: usize) -> Result<Vec<Job>> {
        self.inner.job_children(parent, limit).await
    }
    async fn schedule_put(&self, s: Schedule) -> Result<()> {
        self.inner.schedule_put(s).await
    }
    async fn schedule_get(&self, name: &str) -> Result<Option<Schedule>> {
        self.inner.schedule_get(name).await
    }
    async fn schedule_list(&self) -> Result<Vec<Schedule>> {
        self.inner.schedule_list().await
    }
    async fn schedule_delete(&self, name: &str) -> Result<bool> {
        self.inner.schedule_delete(name).await
    }
    async fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool> {
        self.inner
            .schedule_set_paused(name, paused, next_run_at, now)
            .await
    }
    async fn schedule_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>> {
        self.inner.schedule_due(now, limit).await
    }
    async fn schedule_fire(&self, p: ScheduleFire) -> Result<Fired> {
        self.inner.schedule_fire(p).await
    }
}

fn racing(f: Fixture) -> (Ctx, Arc<CancelBeforeWrite>) {
    let store = Arc::new(CancelBeforeWrite {
        inner: f.store.clone(),
        armed: AtomicBool::new(false),
    });
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
    race.armed.store(true, Ordering::SeqCst);
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
    race.armed.store(true, Ordering::SeqCst);
    // The pass that lost the race leaves the job to the next pass, which sees the request.
    e.maintain().await.unwrap();
    e.maintain().await.unwrap();
    assert_eq!(e.get(j.id).await.unwrap().state, JobState::Cancelled);
    assert_eq!(e.cancel(j.id).await.unwrap(), Cancelled::Cancelled);
}
