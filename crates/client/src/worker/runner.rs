//! One job's run: whether it is still worth starting, the handler in a task of its own, and the race
//! between its end, a lost lease, a cancel, its timeout and the shutdown deadline, ending in an outcome
//! queued for the acknowledger. Delivering that outcome is `ack.rs`'s; heartbeats are `lease.rs`'s.

use std::sync::Arc;

use errand_protocol::{AckItem, FetchedJob, Whole};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;

use super::Runtime;
use super::ack::{Origin, Queued};
use super::fetch::Fetched;
use super::job::{JobContext, JobError};

/// How a job's run ended, for the worker's count.
pub(super) enum JobEnd {
    /// Its outcome (or release) was queued for acknowledgement.
    Reported,
    /// Its lease was lost: nothing reported.
    LeaseLost,
    /// Stopped at the shutdown deadline and released.
    Abandoned,
}

/// A handler task's end as the job's outcome: a panic or an aborted task is a failure.
fn handler_outcome(
    res: Result<Result<Option<serde_json::Value>, JobError>, tokio::task::JoinError>,
) -> Result<Option<serde_json::Value>, JobError> {
    match res {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) => Err(e),
        Err(e) if e.is_panic() => Err(JobError::new(format!(
            "panicked: {}",
            panic_message(e.into_panic())
        ))),
        Err(e) => Err(JobError::new(format!("the handler's task ended: {e}"))),
    }
}

/// Runs one job to its end and queues its acknowledgement.
pub(super) async fn run_job(
    rt: Arc<Runtime>,
    job: Fetched,
    _run_slot: Option<OwnedSemaphorePermit>,
    acks: mpsc::UnboundedSender<Queued>,
    mut abandon: watch::Receiver<bool>,
) -> JobEnd {
    let shared = Arc::clone(&job.shared);
    let j = &shared.job;
    let held = job.held();
    let queue = |item: AckItem, origin: Origin| {
        held.ack_queued();
        // The receiver lives until every job has ended.
        let _ = acks.send(Queued { item, origin });
    };
    // It waited in the buffer: is it still ours, and still worth starting?
    if shared.is_lease_lost() {
        job.abort_keeper();
        return JobEnd::LeaseLost;
    }
    if *shared.cancel.borrow() || Instant::now() >= shared.deadline {
        // A released job whose cancel was requested is cancelled; one past its deadline is given back
        // unstarted (the server may have timed it out already: then the release is refused).
        let item = job.release_item();
        job.abort_keeper();
        queue(item, Origin::Unstarted);
        return JobEnd::Reported;
    }

    let Some(handler) = rt.handlers.get(&j.kind) else {
        // Loud, at error level: a job of a kind nobody handles goes dead once its attempts are spent,
        // and the usual cause (a producer or schedule naming a kind this deployment lacks) is fixed
        // only by someone who saw this line. The message sent to the server says the same, so that
        // the dead job's page explains itself.
        let handled = rt.handled_kinds();
        tracing::error!(
            job_id = %j.id,
            queue = %j.queue,
            kind = %j.kind,
            attempt = j.attempt,
            max_attempts = j.max_attempts,
            handled = %handled,
            "no handler for this job's kind: failing the attempt"
        );
        job.abort_keeper();
        queue(
            fail_item(
                j,
                &JobError::new(format!(
                    "no handler for kind {:?} on worker {} (it handles {handled})",
                    j.kind, rt.worker_id
                )),
            ),
            Origin::Ran,
        );
        return JobEnd::Reported;
    };

    let ctx = JobContext {
        shared: Arc::clone(&shared),
    };
    let mut task = tokio::spawn(handler.call(ctx));
    let mut lease_lost = shared.lease_lost.subscribe();
    let mut cancel = shared.cancel.subscribe();
    let outcome = tokio::select! {
        biased;
        res = &mut task => handler_outcome(res),
        _ = async { lease_lost.wait_for(|l| *l).await.map(|_| ()) } => {
            task.abort();
            job.abort_keeper();
            return JobEnd::LeaseLost;
        }
        // (`wait_for`'s guards are dropped at once, in each branch: none may live across the grace
        // below.)
        _ = async { cancel.wait_for(|c| *c).await.map(|_| ()) } => {
            // An operator cancelled the job. A handler that watches `JobContext::cancelled` gets the
            // grace to return on its own (its outcome is reported as usual); any other is stopped,
            // and the release ends the job `cancelled` on the server.
            match tokio::time::timeout(rt.cancel_grace, &mut task).await {
                Ok(res) => handler_outcome(res),
                Err(_) => {
                    task.abort();
                    tracing::info!(job_id = %j.id, "cancelled while running; handler stopped");
                    let item = job.release_item();
                    // What it logged before being stopped is worth keeping: it says how far it got.
                    job.flush_keeper().await;
                    queue(item, Origin::Ran);
                    return JobEnd::Reported;
                }
            }
        }
        _ = tokio::time::sleep_until(shared.deadline) => {
            task.abort();
            Err(JobError::new(format!("timed out after {} ms", j.timeout_ms)))
        }
        _ = async { abandon.wait_for(|a| *a).await.map(|_| ()) } => {
            task.abort();
            let item = job.release_item();
            job.abort_keeper();
            queue(item, Origin::Abandoned);
            return JobEnd::Abandoned;
        }
    };
    match outcome {
        Ok(result) => {
            tracing::debug!(job_id = %j.id, "completed");
            // Lines logged since the last heartbeat go before the outcome; without any, nothing waits.
            if shared.has_logs() {
                job.flush_keeper().await;
            } else {
                job.abort_keeper();
            }
            queue(
                AckItem::Complete {
                    id: j.id.clone(),
                    lease_token: j.lease_token.clone(),
                    result,
                },
                Origin::Ran,
            );
        }
        Err(e) => {
            tracing::debug!(job_id = %j.id, error = %e, retryable = e.is_retryable(), "failed");
            // Progress reported before the failure is kept, for the next attempt to resume from.
            job.flush_keeper().await;
            if shared.is_lease_lost() {
                return JobEnd::LeaseLost;
            }
            let item = if e.is_snooze() {
                AckItem::Release {
                    id: j.id.clone(),
                    lease_token: j.lease_token.clone(),
                    delay_ms: e
                        .delay()
                        .map(|d| Whole(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
                }
            } else {
                fail_item(j, &e)
            };
            queue(item, Origin::Ran);
        }
    }
    JobEnd::Reported
}

fn fail_item(job: &FetchedJob, e: &JobError) -> AckItem {
    AckItem::Fail {
        id: job.id.clone(),
        lease_token: job.lease_token.clone(),
        message: e.message().to_string(),
        retryable: e.is_retryable(),
        retry_after_ms: e
            .delay()
            .map(|d| Whole(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        stack: e.stack().map(str::to_string),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
