//! Keeping a fetched job's lease: heartbeats from the moment the job arrives until its outcome is
//! queued, carrying progress and log lines, and bringing back cancel requests and lost leases.
//!
//! A job's heartbeats cost nothing until the first is due: [`Beats`], one per running worker, keeps
//! the instant each held job's first heartbeat is due, and only then (or when the handler reports
//! progress or a log line) does the job get a [`Keeper`], a task heartbeating it. Most jobs end
//! before: for them the lease costs two updates of an ordered map, not a task, a timer and a channel.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use errand_protocol::{HeartbeatRequest, LogRequest};
use tokio::sync::{Notify, watch};
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

/// Where a job's [`Keeper`] is.
#[derive(Debug, Default)]
pub(crate) enum KeeperSlot {
    /// Not started: no heartbeat due yet, no progress or log line to send.
    #[default]
    Idle,
    Running(Keeper),
    /// The job's run ended: no keeper starts any more.
    Ended,
}

/// The held jobs whose keeper has not started, by the instant their first heartbeat is due (and the
/// address of their shared state, unique among the jobs held). [`Beats::run`] starts each keeper
/// when it is due.
#[derive(Debug, Default)]
pub(crate) struct Beats {
    due: Mutex<BTreeMap<(Instant, usize), Weak<JobShared>>>,
    /// A job now due before the one [`Beats::run`] sleeps for.
    earlier: Notify,
}

/// The key of `shared`'s job in [`Beats`].
fn due_key(shared: &Arc<JobShared>) -> (Instant, usize) {
    (
        shared.received + interval(shared),
        Arc::as_ptr(shared) as usize,
    )
}

impl Beats {
    /// From now on `shared`'s job is heartbeaten when its first heartbeat is due.
    pub(crate) fn watch(&self, shared: &Arc<JobShared>) {
        let key = due_key(shared);
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let first = due.first_key_value().is_none_or(|(k, _)| key < *k);
        due.insert(key, Arc::downgrade(shared));
        drop(due);
        if first {
            self.earlier.notify_one();
        }
    }

    /// The job's run ended: its heartbeats stop. The keeper, if one started, is handed back to be
    /// aborted or flushed.
    pub(crate) fn end(&self, shared: &Arc<JobShared>) -> Option<Keeper> {
        self.due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&due_key(shared));
        let mut slot = shared.keeper.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *slot, KeeperSlot::Ended) {
            KeeperSlot::Running(k) => Some(k),
            _ => None,
        }
    }

    /// Starts each job's keeper when its first heartbeat is due, until aborted.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            let (now_due, next) = {
                let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
                let later = due.split_off(&(Instant::now(), usize::MAX));
                let now_due = std::mem::replace(&mut *due, later);
                (now_due, due.first_key_value().map(|(k, _)| k.0))
            };
            for shared in now_due.into_values().filter_map(|w| w.upgrade()) {
                wake(&shared);
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.earlier.notified() => {}
                    }
                }
                None => self.earlier.notified().await,
            }
        }
    }
}

/// A task aborted when this is dropped (the schedule's, should the worker's future be dropped).
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `shared`'s keeper unless it runs already or the job's run ended: its first heartbeat is
/// due, or there is progress or a log line to send.
pub(crate) fn wake(shared: &Arc<JobShared>) {
    let mut slot = shared.keeper.lock().unwrap_or_else(PoisonError::into_inner);
    if matches!(*slot, KeeperSlot::Idle) {
        *slot = KeeperSlot::Running(Keeper::start(shared.client.clone(), Arc::clone(shared)));
    }
}

/// A running heartbeat task.
#[derive(Debug)]
pub(crate) struct Keeper {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Keeper {
    /// Starts heartbeating `shared`'s job: the first heartbeat goes one interval after the job was
    /// received (at once, when started for a heartbeat due), or on progress or a log line.
    fn start(client: Client, shared: Arc<JobShared>) -> Keeper {
        let (stop, stopped) = watch::channel(false);
        let task = shared
            .runtime
            .spawn(run(client, Arc::clone(&shared), stopped));
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
    let mut last = shared.received;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A job held at `received`, with a lease of 30 s (first heartbeat due 10 s after it arrived).
    fn held_job(received: Instant) -> Arc<JobShared> {
        let job: errand_protocol::FetchedJob = serde_json::from_value(serde_json::json!({
            "id": "01JAAAAAAAAAAAAAAAAAAAAAAA", "queue": "q", "kind": "k", "payload": {},
            "attempt": 1, "max_attempts": 3, "lease_token": "t",
            "lease_expires_at": 40_000, "deadline_at": 70_000, "timeout_ms": 60_000,
            "idempotency_key": "i", "priority": 0, "created_at": 0
        }))
        .unwrap();
        // Nothing listens there: a heartbeat sent would fail, and the keeper carries on.
        let client = crate::Client::new("http://127.0.0.1:9").unwrap();
        Arc::new(JobShared::new(job, "w".into(), client, received))
    }

    fn running(shared: &JobShared) -> bool {
        matches!(*shared.keeper.lock().unwrap(), KeeperSlot::Running(_))
    }

    #[tokio::test(start_paused = true)]
    async fn a_keeper_starts_only_for_a_job_still_held_when_its_heartbeat_is_due() {
        let beats = Arc::new(Beats::default());
        let starter = tokio::spawn(Arc::clone(&beats).run());
        let now = Instant::now();
        let (quick, slow) = (held_job(now), held_job(now));
        assert_eq!(interval(&quick), Duration::from_secs(10));
        beats.watch(&quick);
        beats.watch(&slow);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!running(&quick) && !running(&slow), "nothing due yet");
        assert!(beats.end(&quick).is_none(), "it ended without a keeper");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(running(&slow), "its first heartbeat is due");
        assert!(!running(&quick), "an ended job gets no keeper");
        beats.end(&slow).unwrap().abort();
        assert!(beats.due.lock().unwrap().is_empty());
        starter.abort();
    }

    /// A handler may report progress from a thread of its own, which has no runtime to spawn on.
    #[tokio::test(start_paused = true)]
    async fn progress_from_a_thread_of_its_own_starts_the_keeper_on_the_workers_runtime() {
        let beats = Beats::default();
        let shared = held_job(Instant::now());
        beats.watch(&shared);
        let ctx = crate::JobContext {
            shared: Arc::clone(&shared),
        };
        std::thread::spawn(move || ctx.log("from a thread"))
            .join()
            .expect("no panic");
        assert!(running(&shared));
        beats.end(&shared).unwrap().abort();
    }

    #[tokio::test(start_paused = true)]
    async fn progress_starts_the_keeper_before_its_heartbeat_is_due() {
        let beats = Arc::new(Beats::default());
        let starter = tokio::spawn(Arc::clone(&beats).run());
        let shared = held_job(Instant::now());
        beats.watch(&shared);
        crate::JobContext {
            shared: Arc::clone(&shared),
        }
        .progress(serde_json::json!({"done": 1}));
        assert!(running(&shared));
        beats.end(&shared).unwrap().abort();
        starter.abort();
    }
}
