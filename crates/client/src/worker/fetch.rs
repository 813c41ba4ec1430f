//! The fetcher: long-polls for as many jobs as the worker has room for, and hands each over with its
//! heartbeat already running. Running a job is `runner.rs`'s; releasing the jobs left in the hand-over
//! at shutdown is the parent module's.

use std::sync::Arc;

use errand_protocol::{AckItem, FetchRequest, FetchedJob, Whole};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::Runtime;
use super::job::JobShared;
use super::lease::Keeper;
use crate::RetryPolicy;

/// The most jobs one fetch may claim (the server's claim limit).
const MAX_CLAIM: usize = 1000;

/// A job fetched and not yet started.
pub(super) struct Fetched {
    pub(super) shared: Arc<JobShared>,
    pub(super) keeper: Keeper,
    /// Its place among the `prefetch` jobs the worker may hold.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Fetched {
    pub(super) fn release_item(&self) -> AckItem {
        AckItem::Release {
            id: self.shared.job.id.clone(),
            lease_token: self.shared.job.lease_token.clone(),
            delay_ms: None,
        }
    }
}

/// Fetches jobs while the worker has room for them, and hands them over on `tx`.
pub(super) async fn fetch_loop(
    rt: Arc<Runtime>,
    slots: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Fetched>,
) {
    let mut failures = 0u32;
    // With a buffer beyond the concurrency, fetch once half of the buffer is free rather than as soon
    // as one job ends: the handlers still have the other half to run meanwhile, and the server makes
    // one claim of many jobs instead of many claims of one (the difference, on a busy queue, between a
    // transaction per job and one per dozens). Without a buffer, every free slot is worth a fetch.
    let low_water = ((rt.prefetch - rt.concurrency) / 2).clamp(1, MAX_CLAIM);
    loop {
        // Room for at least `low_water` jobs, then for as many as are free.
        let Ok(mut room) = Arc::clone(&slots)
            .acquire_many_owned(low_water as u32)
            .await
        else {
            return;
        };
        let more = slots
            .available_permits()
            .min(MAX_CLAIM - room.num_permits());
        if more > 0
            && let Ok(p) = Arc::clone(&slots).try_acquire_many_owned(more as u32)
        {
            room.merge(p);
        }
        let req = FetchRequest {
            queues: rt.queues.clone(),
            worker_id: rt.worker_id.clone(),
            max_jobs: u32::try_from(room.num_permits()).unwrap_or(1),
            wait_ms: u64::try_from(rt.poll_wait.as_millis()).unwrap_or(u64::MAX),
            heartbeat_ms: Some(Whole(rt.heartbeat_ms)),
        };
        match rt.client.fetch(&req).await {
            Ok(resp) => {
                failures = 0;
                let received = Instant::now();
                for job in resp.jobs {
                    let slot = room.split(1);
                    if tx.send(fetched(&rt, job, received, slot)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if e.is_retryable() {
                    tracing::warn!(error = %e, "fetch failed; will retry");
                } else {
                    tracing::error!(error = %e, "fetch refused; will retry");
                }
                drop(room);
                let delay = RetryPolicy::default().delay(failures, e.retry_after());
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn fetched(
    rt: &Runtime,
    job: FetchedJob,
    received: Instant,
    slot: Option<OwnedSemaphorePermit>,
) -> Fetched {
    tracing::debug!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, "fetched");
    let shared = Arc::new(JobShared::new(
        job,
        rt.worker_id.clone(),
        rt.client.clone(),
        received,
    ));
    let keeper = Keeper::start(rt.client.clone(), Arc::clone(&shared));
    Fetched {
        shared,
        keeper,
        _slot: slot,
    }
}
