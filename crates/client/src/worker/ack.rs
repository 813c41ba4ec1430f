//! Batched acknowledgements: outcomes queue up and go to `POST /v1/ack` in batches, retried until the
//! server takes them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use errand_protocol::{AckBatchRequest, AckItem, AckResult, ErrorDetail, JobState, code};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::pace::Held;
use crate::Client;
use crate::retry::RetryPolicy;

/// Why an acknowledgement was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A handler's outcome (complete or fail).
    Ran,
    /// A release of a job fetched but never started.
    Unstarted,
    /// A release of a job still running at the shutdown deadline.
    Abandoned,
}

/// One acknowledgement waiting to be sent.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) item: AckItem,
    pub(crate) origin: Origin,
}

/// What the worker did, counted as the server confirmed it.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) snoozed: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) lost: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The settings of the acknowledgement task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckSettings {
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
}

/// Sends the acknowledgements that arrive on `rx` until it closes and everything is delivered, or until
/// the instant `give_up` comes to hold has passed.
pub(crate) async fn run(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    stats: Arc<Stats>,
    give_up: watch::Receiver<Option<Instant>>,
    settings: AckSettings,
    held: Arc<Held>,
) {
    let mut pending: VecDeque<Queued> = VecDeque::new();
    let mut open = true;
    let mut acker = Acker {
        client,
        stats,
        give_up,
        failures: 0,
        retry_later: false,
    };
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(q) => pending.push_back(q),
                None => return,
            }
        }
        // Gather a batch: until it is full, the flush interval passes or the channel closes.
        let flush_at = Instant::now() + settings.flush_interval;
        while open && pending.len() < settings.batch_size {
            tokio::select! {
                q = rx.recv() => match q {
                    Some(q) => pending.push_back(q),
                    None => open = false,
                },
                _ = tokio::time::sleep_until(flush_at) => break,
            }
        }
        let n = pending.len().min(settings.batch_size);
        let batch: Vec<Queued> = pending.drain(..n).collect();
        let (sent, asked) = (batch.len(), Instant::now());
        let retry = acker.deliver(batch).await;
        // A delivery that needed no retry measures the round trip (one that backed off measured the
        // backoff); either way the fetcher learns what is left to deliver.
        let took = if retry.is_empty() {
            asked.elapsed()
        } else {
            Duration::ZERO
        };
        held.acks_done(sent - retry.len(), took);
        // Whatever must be tried again goes first, in order.
        for q in retry.into_iter().rev() {
            pending.push_front(q);
        }
        if acker.gave_up() {
            held.acks_done(pending.len(), Duration::ZERO);
            for q in pending.drain(..) {
                acker.lose(&q, "the worker stopped before the server took it");
            }
            while let Ok(q) = rx.try_recv() {
                acker.lose(&q, "the worker stopped before the server took it");
            }
            if !open {
                return;
            }
        }
    }
}

struct Acker {
    client: Client,
    stats: Arc<Stats>,
    give_up: watch::Receiver<Option<Instant>>,
    /// Consecutive failed deliveries, for the backoff.
    failures: u32,
    /// An item of the last answer is to be sent again later (the server could not take it now).
    retry_later: bool,
}

impl Acker {
    fn gave_up(&self) -> bool {
        matches!(*self.give_up.borrow(), Some(at) if Instant::now() >= at)
    }

    /// Sends `batch`; returns what should be sent again (after a backoff already waited here).
    async fn deliver(&mut self, batch: Vec<Queued>) -> Vec<Queued> {
        // A batch the server refuses as a whole is split until the item at fault is alone.
        let mut work = vec![batch];
        let mut again = Vec::new();
        while let Some(batch) = work.pop() {
            let req = AckBatchRequest {
                acks: batch.iter().map(|q| q.item.clone()).collect(),
            };
            let Some(answer) = self.send(&req).await else {
                // Past the deadline: nothing more is sent.
                again.extend(batch);
                again.extend(work.into_iter().flatten());
                break;
            };
            match answer {
                Ok(resp) if resp.results.len() == batch.len() => {
                    for (q, r) in batch.into_iter().zip(resp.results) {
                        if let Some(q) = self.settle(q, r) {
                            again.push(q);
                        }
                    }
                    if std::mem::take(&mut self.retry_later) {
                        self.backoff().await;
                    } else {
                        self.failures = 0;
                    }
                }
                Ok(resp) => {
                    tracing::error!(
                        sent = batch.len(),
                        answered = resp.results.len(),
                        "the server answered an ack batch with the wrong number of results; resending"
                    );
                    again.extend(batch);
                    self.backoff().await;
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, items = batch.len(), "acknowledgements not delivered; will retry");
                    again.extend(batch);
                    self.backoff().await;
                }
                Err(e) if batch.len() > 1 => {
                    tracing::warn!(error = %e, items = batch.len(), "ack batch refused; splitting it");
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    work.push(second);
                    work.push(first);
                }
                Err(e) => {
                    let Some(q) = batch.into_iter().next() else {
                        continue;
                    };
                    let detail = ErrorDetail {
                        code: e.code().unwrap_or("error").to_string(),
                        message: e.to_string(),
                        field: None,
                    };
                    if let Some(q) = self.refused(q, &detail) {
                        again.push(q);
                    }
                }
            }
            if self.gave_up() {
                again.extend(work.into_iter().flatten());
                break;
            }
        }
        again
    }

    /// Sends one batch (with the client's retries); `None` once the give-up instant has passed.
    async fn send(
        &self,
        req: &AckBatchRequest,
    ) -> Option<crate::Result<errand_protocol::AckBatchResponse>> {
        let mut give_up = self.give_up.clone();
        let deadline = async move {
            loop {
                let at = *give_up.borrow_and_update();
                if let Some(at) = at {
                    tokio::time::sleep_until(at).await;
                    return;
                }
                if give_up.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = self.client.ack_batch(req) => Some(r),
            _ = deadline => None,
        }
    }

    /// Waits before the next delivery: exponential backoff with full jitter, without a time budget.
    async fn backoff(&mut self) {
        let delay = RetryPolicy::default().delay(self.failures, None);
        self.failures = self.failures.saturating_add(1);
        let until = Instant::now() + delay;
        let until = match *self.give_up.borrow() {
            Some(at) => until.min(at),
            None => until,
        };
        tokio::time::sleep_until(until).await;
    }

    /// Counts one answer; returns the acknowledgement if it must be sent again.
    fn settle(&mut self, q: Queued, r: AckResult) -> Option<Queued> {
        match (r.ok, r.error) {
            (Some(ok), _) => {
                // Abandoned jobs are counted by the worker, released or not.
                let counter = match (&q.item, q.origin) {
                    (AckItem::Complete { .. }, _) => Some(&self.stats.completed),
                    (AckItem::Fail { .. }, _) => Some(&self.stats.failed),
                    (AckItem::Release { .. }, Origin::Abandoned) => None,
                    // A release of a job whose cancel was requested ends it cancelled.
                    (AckItem::Release { .. }, _) if ok.state == JobState::Cancelled => {
                        Some(&self.stats.cancelled)
                    }
                    (AckItem::Release { .. }, _) if ok.state == JobState::Delayed => {
                        Some(&self.stats.snoozed)
                    }
                    (AckItem::Release { .. }, _) => Some(&self.stats.released),
                };
                if let Some(counter) = counter {
                    Stats::add(counter);
                }
                if ok.duplicate {
                    tracing::debug!(job_id = q.item.id(), "acknowledged before (duplicate)");
                }
                None
            }
            (None, Some(e)) => self.refused(q, &e),
            (None, None) => {
                tracing::error!(
                    job_id = q.item.id(),
                    "an ack result with neither ok nor error"
                );
                self.lose(&q, "no answer for it");
                None
            }
        }
    }

    /// Handles an item the server refused; returns what to send again.
    fn refused(&mut self, q: Queued, e: &ErrorDetail) -> Option<Queued> {
        let id = q.item.id().to_string();
        match (e.code.as_str(), q.item) {
            (code::UNAVAILABLE | code::INTERNAL | code::RATE_LIMITED, item) => {
                tracing::warn!(job_id = %id, code = %e.code, message = %e.message, "acknowledgement not taken; will retry");
                self.retry_later = true;
                Some(Queued { item, ..q })
            }
            (code::LEASE_LOST, item) => {
                // Someone else holds the job now, or the server already timed the attempt out.
                let q = Queued { item, ..q };
                self.lose(&q, "lease lost");
                None
            }
            // A result the server will not keep (too large, or not acceptable JSON): the same run would
            // give the same result, so the job fails for good, with the reason.
            (
                code::TOO_LARGE | code::INVALID,
                AckItem::Complete {
                    id, lease_token, ..
                },
            ) => {
                tracing::error!(job_id = %id, message = %e.message, "result refused; failing the job");
                Some(Queued {
                    item: AckItem::Fail {
                        id,
                        lease_token,
                        message: format!("the server refused the result: {}", e.message),
                        retryable: false,
                        retry_after_ms: None,
                        stack: None,
                    },
                    origin: q.origin,
                })
            }
            // A refused retry_after (beyond the server's longest delay): fail without it.
            (
                code::INVALID,
                AckItem::Fail {
                    id,
                    lease_token,
                    message,
                    retryable,
                    retry_after_ms: Some(_),
                    stack,
                },
            ) => {
                tracing::warn!(job_id = %id, message = %e.message, "retry_after refused; failing without it");
                Some(Queued {
                    item: AckItem::Fail {
                        id,
                        lease_token,
                        message,
                        retryable,
                        retry_after_ms: None,
                        stack,
                    },
                    origin: q.origin,
                })
            }
            (_, item) => {
                tracing::error!(job_id = %id, code = %e.code, message = %e.message, "acknowledgement refused");
                let q = Queued { item, ..q };
                self.lose(&q, "refused");
                None
            }
        }
    }

    fn lose(&self, q: &Queued, why: &str) {
        tracing::warn!(job_id = q.item.id(), why, "acknowledgement dropped");
        Stats::add(&self.stats.lost);
    }
}
