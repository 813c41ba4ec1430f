//! State-change events, for metrics, alerts and the event stream.

use crate::clock::Timestamp;
use crate::id::JobId;
use crate::model::{ErrorKind, JobState};

/// One job changed state. `from` is `None` for a job just enqueued.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub job_id: JobId,
    pub queue: String,
    pub kind: String,
    pub from: Option<JobState>,
    pub to: JobState,
    pub at: Timestamp,
    /// The job's attempt count at the time of the change.
    pub attempt: u32,
    /// The failed attempt this change records: an error reported by the worker, a timeout, a stall.
    pub failure: Option<ErrorKind>,
    /// For a change out of `active`: how long the attempt ran (from its claim), when the store knows.
    pub ran_ms: Option<u64>,
    /// For a claim: how long the job had been due (since its `run_at`) before a worker took it. A job
    /// back from a stall keeps its `run_at`, so its wait includes the stalled attempt.
    pub waited_ms: Option<u64>,
}

impl Event {
    /// A change with no failure and no durations.
    pub fn new(
        job_id: JobId,
        queue: String,
        kind: String,
        from: Option<JobState>,
        to: JobState,
        at: Timestamp,
        attempt: u32,
    ) -> Self {
        Event {
            job_id,
            queue,
            kind,
            from,
            to,
            at,
            attempt,
            failure: None,
            ran_ms: None,
            waited_ms: None,
        }
    }
}

/// Sees every event as the engine announces it, synchronously and in order, whether or not anyone
/// subscribed: counters built from it miss nothing, unlike a subscriber that can fall behind. It runs
/// on the request's task, so it must be quick and never block.
pub trait Observer: Send + Sync + std::fmt::Debug {
    fn observe(&self, event: &Event);
}
