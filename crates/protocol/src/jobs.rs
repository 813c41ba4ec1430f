//! The bodies of the server's `routes/jobs.rs`: enqueueing one job or a batch, an operator's cancel,
//! retry and promote, and reading a job's log. How a job is shown is in `job`; what its worker sends
//! (heartbeats, log lines, acknowledgements) is in `work`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use crate::schema;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::object::object_only;
use crate::{Backoff, JobState, Whole};

object_only!(EnqueueJob, EnqueueBatch);

/// One job to enqueue: `POST /v1/queues/{queue}/jobs` with this body, or `{"jobs": [...]}` of them.
/// Every option left out takes the queue's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EnqueueJob {
    /// The handler's name: 1–128 of `A-Z a-z 0-9 _ - . : /`.
    #[cfg_attr(feature = "openapi", schema(value_type = schema::Kind))]
    pub kind: String,
    /// Any JSON, at most 1 MiB serialized and 64 levels deep; `null` when left out.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Value,
    /// 0–1000, lower runs first (queue default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i32>, minimum = 0, maximum = 1000))]
    pub priority: Option<Whole<i32>>,
    /// Run no earlier than this many ms from now, at most 365 days. Exclusive with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 0, maximum = 31_536_000_000_u64)
    )]
    pub delay_ms: Option<Whole<u64>>,
    /// Run no earlier than this instant (ms since the epoch, not negative), at most 365 days from
    /// now; an instant past means now. Exclusive with `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 0))]
    pub run_at: Option<Whole<i64>>,
    /// 1–1000 (queue default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1, maximum = 1000))]
    pub max_attempts: Option<Whole<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// How long one attempt may run, heartbeats or not: 100 ms to 7 days (queue default 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub timeout_ms: Option<Whole<u64>>,
    /// How often the worker promises to heartbeat; the lease is derived from it and the timeout.
    /// 100 ms up to the job's timeout (its own, or the queue's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub heartbeat_ms: Option<Whole<u64>>,
    /// 0–100 (queue default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 0, maximum = 100))]
    pub max_stalled: Option<Whole<u32>>,
    /// At most one unfinished job per queue with this key; a repeat returns the existing job.
    /// 1–255 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub unique_key: Option<String>,
    /// What a repeat of a held `unique_key` does: `reject` (default: the existing job stays as it is)
    /// or `replace` (a waiting or delayed job takes this one's payload, priority and run time — a
    /// debounce with `delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// The tenant: claims rotate between groups, and the queue's `group_concurrency` and
    /// `group_rate_limit` apply per group. 1–255 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub group_key: Option<String>,
    /// What must not be worked on twice at once (an order, a wallet): at most the queue's
    /// `key_concurrency` (default 1) active jobs share one. Independent of `group_key`. 1–255
    /// bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub concurrency_key: Option<String>,
    /// Stable across attempts; defaults to one derived from the unique key, or the job id. 1–255
    /// bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub idempotency_key: Option<String>,
    /// For a child of a flow: what its dying (or being cancelled) does to the parent — `fail` (the
    /// default: the parent dies, `child_dead`) or `release` (the parent stops waiting for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_on_dead: Option<ParentOnDead>,
    /// A time to live: not started within this many milliseconds of the enqueue (still waiting,
    /// delayed or waiting to retry), the job ends `dead` with `dead_reason: "expired"`. 1 ms to 365
    /// days, longer than the delay. Absent: the job waits as long as it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 1, maximum = 31_536_000_000_u64)
    )]
    pub expire_after_ms: Option<Whole<u64>>,
}

impl EnqueueJob {
    /// A job of `kind` with `payload` and every option at the queue's default.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        EnqueueJob {
            kind: kind.into(),
            payload,
            ..Default::default()
        }
    }
}

/// See [`EnqueueJob::parent_on_dead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParentOnDead {
    #[default]
    Fail,
    Release,
}

/// See [`EnqueueJob::dedup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Dedup {
    #[default]
    Reject,
    Replace,
}

/// An atomic batch: every job is written, or none (the error names `jobs[i].field`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EnqueueBatch {
    /// 1 to 10,000 jobs.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 10_000))]
    pub jobs: Vec<EnqueueJob>,
}

/// The outcome of enqueuing one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Enqueued {
    pub id: String,
    pub state: JobState,
    /// `false` when the unique key matched an existing job: `id` is that job's.
    pub created: bool,
    /// With `dedup: replace`: the existing job took this one's payload, priority and run time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
}

/// The outcome of a batch, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnqueuedBatch {
    pub jobs: Vec<Enqueued>,
}

/// The outcome of a cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CancelResponse {
    pub id: String,
    /// `cancelled` (it was waiting or delayed), or `requested` (it is active; its worker learns of it on
    /// its next heartbeat).
    pub outcome: String,
}

/// A job's id and state after an operator's action (retry, promote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobStateResponse {
    pub id: String,
    pub state: JobState,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogLineView {
    /// When the server received it.
    pub at: i64,
    /// The attempt that logged it.
    pub attempt: u32,
    pub line: String,
}

/// `GET /v1/jobs/{id}/logs`: the job's log, oldest line first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobLogs {
    pub logs: Vec<LogLineView>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_misspelt_option_is_refused_not_ignored() {
        let e = serde_json::from_value::<EnqueueJob>(json!({"kind": "k", "priorty": 1}));
        assert!(e.unwrap_err().to_string().contains("priorty"));
    }
}
