//! Keeping a fetched job's lease: heartbeats from the moment the job arrives until its outcome is
//! queued, carrying progress and log lines, and bringing back cancel requests and lost leases.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use errand_protocol::{HeartbeatRequest, LogRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::job::JobShared;
use crate::Client;

/// Heartbeats no more often than this, however often progress is reported.
const MIN_GAP: Duration = Duration::from_millis(100);

/// Log lines per request (the server's limit).
const LOG_BATCH: usize = 100;

/// How long a final heartbeat carrying a failed job's last progress may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The interval of a job's heartbeats: a third of its lease, or its `heartbeat_ms` if sooner (the lease
/// may be shorter than the job's own, capped by the heartbeats this worker promised with its fetch).
pub(crate) fn interval(shared: &JobShared) -> Duration {
    let job = &shared.job;
    // The server's clock: the claim was at deadline_at − timeout_ms, the lease ends at
    // lease_expires_at.
    let claimed_at = job
        .deadline_at
        .saturating_sub(i64::try_from(job.timeout_ms).unwrap_or(i64::MAX));
    let lease_ms = job.lease_expires_at.saturating_sub(claimed_at).max(0);
    let third = u64::try_from(lease_ms / 3).unwrap_or(0);
    let ms = job.heartbeat_ms.map_or(third, |hb| hb.min(third));
    Duration::from_millis(ms).max(MIN_GAP)
}

/// A running heartbeat task.
#[derive(Debug)]
pub(crate) struct Keeper {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Keeper {
    /// Starts heartbeating `shared`'s job.
    pub(crate) fn start(client: Client, shared: Arc<JobShared>) -> Keeper {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(client, shared, stopped));
        Keeper { task, stop }
    }

    /// Stops at once; progress not yet sent is dropped.
    pub(crate) fn abort(self) {
        self.task.abort();
    }

    /// Stops after sending the progress not yet sent, if any (bounded by a short timeout).
    pub(crate) async fn stop_and_flush(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(FLUSH_TIMEOUT, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

async fn run(client: Client, shared: Arc<JobShared>, mut stop: watch::Receiver<bool>) {
    let every = interval(&shared);
    let mut last = Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep_until(last + every) => false,
            _ = shared.progress_set.notified() => {
                tokio::time::sleep_until(last + MIN_GAP).await;
                *stop.borrow()
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => true,
        };
        let progress = shared.take_progress();
        // Marked in flight before they leave the buffer: a completion must see them as pending.
        shared.logs_in_flight.store(true, Ordering::SeqCst);
        let logs = shared.take_logs();
        if stopping && progress.is_none() && logs.is_empty() {
            shared.logs_in_flight.store(false, Ordering::SeqCst);
            return;
        }
        last = Instant::now();
        let alive = beat(&client, &shared, progress).await;
        if alive && !logs.is_empty() {
            send_logs(&client, &shared, logs).await;
        }
        shared.logs_in_flight.store(false, Ordering::SeqCst);
        if !alive {
            return;
        }
        // Stopping with lines still waiting (more than one batch): one more round for them.
        if stopping && !shared.has_logs() {
            return;
        }
    }
}

/// Sends the waiting log lines, at most [`LOG_BATCH`] of them (the rest wait for the next tick). Best
/// effort: a batch the server does not take is dropped, so that a failing log never holds up the
/// heartbeats that keep the lease.
async fn send_logs(client: &Client, shared: &JobShared, mut lines: Vec<String>) {
    let job = &shared.job;
    let rest = lines.split_off(lines.len().min(LOG_BATCH));
    if !rest.is_empty()
        && let Ok(mut l) = shared.logs.lock()
    {
        let newer = std::mem::take(&mut *l);
        *l = rest;
        l.extend(newer);
    }
    let req = LogRequest {
        lease_token: job.lease_token.clone(),
        lines,
    };
    match client.append_logs(&job.id, &req).await {
        Ok(_) => {}
        Err(e) if e.is_lease_lost() || e.is_not_found() => {
            shared.lease_lost.send_replace(true);
        }
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, lines = req.lines.len(), "log lines not sent; dropped");
        }
    }
}

/// One heartbeat; `false` when the lease is gone and heartbeating should stop.
async fn beat(client: &Client, shared: &JobShared, progress: Option<serde_json::Value>) -> bool {
    let job = &shared.job;
    let req = HeartbeatRequest {
        lease_token: job.lease_token.clone(),
        progress,
    };
    match client.heartbeat(&job.id, &req).await {
        Ok(r) => {
            if r.cancel_requested && !*shared.cancel.borrow() {
                tracing::info!(job_id = %job.id, "cancel requested");
                shared.cancel.send_replace(true);
            }
            true
        }
        Err(e) if e.is_lease_lost() || e.is_not_found() => {
            tracing::warn!(job_id = %job.id, error = %e, "lease lost; abandoning the job");
            shared.lease_lost.send_replace(true);
            false
        }
        Err(e) if e.is_too_large() || e.is_invalid() => {
            tracing::warn!(job_id = %job.id, error = %e, "progress refused; dropped");
            true
        }
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "heartbeat failed");
            if let Some(p) = req.progress {
                shared.restore_progress(p);
            }
            true
        }
    }
}
