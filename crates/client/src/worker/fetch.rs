//! The fetcher: long-polls for as many jobs as the worker should hold more of (`pace.rs` says how
//! many), and hands each over with its heartbeats scheduled (`lease.rs`). Running a job is
//! `runner.rs`'s; releasing the jobs left in the hand-over at shutdown is the parent module's.

use std::sync::Arc;

use errand_protocol::{AckItem, FetchRequest, FetchedJob, Whole, WorkerReport};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Runtime;
use super::job::JobShared;
use super::lease::Beats;
use super::pace::{Held, Pace, Slot};
use crate::RetryPolicy;

/// The most jobs one fetch may claim (the server's claim limit).
const MAX_CLAIM: usize = 1000;

/// A job fetched and not yet started.
pub(super) struct Fetched {
    pub(super) shared: Arc<JobShared>,
    /// Its worker's heartbeat schedule.
    beats: Arc<Beats>,
    /// Its place among the jobs the worker holds, given back when the job's run ends.
    slot: Slot,
}

impl Fetched {
    /// The counts its worker's fetcher paces itself by.
    pub(super) fn held(&self) -> Arc<Held> {
        self.slot.held()
    }

    /// Stops its heartbeats at once; progress not yet sent is dropped.
    pub(super) fn abort_keeper(&self) {
        if let Some(k) = self.beats.end(&self.shared) {
            k.abort();
        }
    }

    /// Stops its heartbeats after sending the progress and log lines not yet sent, if any.
    pub(super) async fn flush_keeper(&self) {
        if let Some(k) = self.beats.end(&self.shared) {
            k.stop_and_flush().await;
        }
    }

    pub(super) fn release_item(&self) -> AckItem {
        AckItem::Release {
            id: self.shared.job.id.clone(),
            lease_token: self.shared.job.lease_token.clone(),
            delay_ms: None,
        }
    }
}

/// A job dropped without its run ending it (a worker's future dropped mid-run, a panic) stops its
/// heartbeats too: its keeper holds the job's shared state, so nothing else would stop it.
impl Drop for Fetched {
    fn drop(&mut self) {
        self.abort_keeper();
    }
}

/// Fetches jobs while the worker holds fewer than its [`Pace`] asks for, and hands them over on `tx`.
pub(super) async fn fetch_loop(
    rt: Arc<Runtime>,
    held: Arc<Held>,
    beats: Arc<Beats>,
    tx: mpsc::UnboundedSender<Fetched>,
    report: WorkerReport,
) {
    let mut failures = 0u32;
    let mut pace = Pace::new(Instant::now());
    loop {
        // Wait until enough of what the worker should hold is free.
        let want = loop {
            pace.ended(held.ended(), Instant::now());
            let n = held.to_fetch(&pace, rt.concurrency, rt.prefetch, MAX_CLAIM);
            if n > 0 {
                break n;
            }
            held.changed().await;
        };
        let req = FetchRequest {
            queues: rt.queues.clone(),
            worker_id: rt.worker_id.clone(),
            max_jobs: u32::try_from(want).unwrap_or(1),
            wait_ms: u64::try_from(rt.poll_wait.as_millis()).unwrap_or(u64::MAX),
            heartbeat_ms: Some(Whole(rt.heartbeat_ms)),
            report: Some(report.clone()),
        };
        let asked = Instant::now();
        match rt.client.fetch(&req).await {
            Ok(resp) => {
                failures = 0;
                let received = Instant::now();
                pace.fetched(received - asked, resp.jobs.len() >= want);
                let slots = held.take(resp.jobs.len());
                for (job, slot) in resp.jobs.into_iter().zip(slots) {
                    if tx.send(fetched(&rt, &beats, job, received, slot)).is_err() {
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
                let delay = RetryPolicy::default().delay(failures, e.retry_after());
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn fetched(
    rt: &Runtime,
    beats: &Arc<Beats>,
    job: FetchedJob,
    received: Instant,
    slot: Slot,
) -> Fetched {
    tracing::debug!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, "fetched");
    let shared = Arc::new(JobShared::new(
        job,
        rt.worker_id.clone(),
        rt.client.clone(),
        received,
    ));
    beats.watch(&shared);
    Fetched {
        shared,
        beats: Arc::clone(beats),
        slot,
    }
}
