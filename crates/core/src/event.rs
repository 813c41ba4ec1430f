//! State-change events, for metrics and the event stream.

use crate::clock::Timestamp;
use crate::id::JobId;
use crate::model::JobState;

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
}
