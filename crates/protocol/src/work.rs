//! The bodies of the server's `routes/work.rs`, what workers send and receive: fetch, heartbeat, log
//! lines under a lease, complete, fail, release and the batch of acknowledgements. Only a lease's
//! holder uses these; what others see of a job is in `job`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

#[cfg(feature = "openapi")]
use crate::schema;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::object::object_only;
use crate::whole::{self, Whole};
use crate::{ErrorDetail, JobState};

object_only!(
    FetchRequest,
    WorkerReport,
    HeartbeatRequest,
    LogRequest,
    CompleteRequest,
    FailRequest,
    ReleaseRequest,
    AckItem,
    AckBatchRequest,
);

/// `POST /v1/fetch`: claim up to `max_jobs` due jobs, waiting up to `wait_ms` for one to arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FetchRequest {
    /// 1–64 queue names; earlier queues are not preferred over later ones except by priority. Not
    /// Errand's own (`errand.*`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<schema::JobQueueName>, min_items = 1, max_items = 64))]
    pub queues: Vec<String>,
    /// Shown on the job's lease.
    #[cfg_attr(feature = "openapi", schema(value_type = schema::WorkerId))]
    pub worker_id: String,
    /// 1 to the claim limit (1,000); default 1.
    #[serde(default = "one", deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_jobs: u32,
    /// How long to wait when no job is due (long poll); 0 answers at once. Longer waits are cut to
    /// the server's `max_wait_ms` (default 30,000).
    #[serde(default, deserialize_with = "whole::int")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "uint64",
            minimum = 0,
            maximum = 18_446_744_073_709_551_615_u64
        )
    )]
    pub wait_ms: u64,
    /// This worker's promise to heartbeat every job it holds at least this often (100 ms – 7 days;
    /// the SDKs send 10,000 and keep it). Each job's lease then lasts at most `2 × heartbeat_ms + 5 s`,
    /// so that a dead worker's jobs run elsewhere that soon instead of after their whole timeout.
    /// Absent: the lease covers the job's timeout (or twice its own `heartbeat_ms`), plus 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub heartbeat_ms: Option<Whole<u64>>,
    /// What the worker says of itself (the SDKs send it), shown by `GET /v1/workers` and checked by
    /// `errand audit`: a worker at concurrency 1, or one that does not drain on SIGTERM, is caught
    /// from the server. Absent: the worker said nothing (the audit warns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<WorkerReport>,
}

/// A worker's account of itself, sent with its fetches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct WorkerReport {
    /// The SDK (`errand-rust`, `@errand/sdk`) or the program's own name: 1–64 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub sdk: String,
    /// Its version: 1–64 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub version: String,
    /// Jobs it runs at once (1–1,000,000).
    #[serde(deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub concurrency: u32,
    /// Whether SIGTERM makes it stop fetching, finish or release the jobs it holds and deliver every
    /// acknowledgement before it exits.
    pub drains_on_sigterm: bool,
}

fn one() -> u32 {
    1
}

/// A job handed to a worker, with the lease it holds it under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FetchedJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Box<RawValue>,
    /// This attempt's number (1-based).
    pub attempt: u32,
    pub max_attempts: u32,
    /// Present this on heartbeat, complete, fail and release.
    pub lease_token: String,
    /// Heartbeat before this, or the job is taken back.
    pub lease_expires_at: i64,
    /// The attempt fails with `timeout` at this instant, heartbeats or not.
    pub deadline_at: i64,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Pass it to payment, mint and e-mail APIs: the same on every attempt.
    pub idempotency_key: String,
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The progress a previous attempt reported, to resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub progress: Option<Box<RawValue>>,
    pub created_at: i64,
}

/// The answer to a fetch: empty when nothing was due by the end of the wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FetchResponse {
    pub jobs: Vec<FetchedJob>,
}

/// `POST /v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_token: String,
    /// Replaces the job's progress (any JSON, at most 64 KiB serialized and 64 levels deep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub progress: Option<Value>,
}

/// The lease after a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HeartbeatResponse {
    pub lease_expires_at: i64,
    /// Stop the job and report it (fail or release): an operator cancelled it.
    pub cancel_requested: bool,
}

/// `POST /v1/jobs/{id}/logs`: append lines to the job's log under its lease. At most 100 lines per
/// request; a line longer than 2 KiB is cut; the job keeps its latest 200 lines, across attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct LogRequest {
    pub lease_token: String,
    /// 1 to 100 lines.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub lines: Vec<String>,
}

/// `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_token: String,
    /// Any JSON, at most 1 MiB serialized and 64 levels deep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub result: Option<Value>,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: String,
    /// Kept on the job (truncated beyond 8 KiB).
    pub message: String,
    /// `false`: no retry can help; the job goes straight to the dead-letter queue. Default `true`.
    #[serde(default = "yes")]
    pub retryable: bool,
    /// Retry no sooner than this (a provider's `Retry-After`), at most 365 days; overrides the backoff
    /// policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 0, maximum = 31_536_000_000_u64)
    )]
    pub retry_after_ms: Option<Whole<u64>>,
    /// Where it failed: a stack trace, kept with the error (truncated beyond 16 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/jobs/{id}/release`: give back a job without using an attempt — one fetched but not started
/// (due again at once), or one a provider would not take yet (`delay_ms`: due again no sooner than that,
/// a *snooze* for a rate limit's `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ReleaseRequest {
    pub lease_token: String,
    /// Run again no sooner than this many ms from now (at most 365 days; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 0, maximum = 31_536_000_000_u64)
    )]
    pub delay_ms: Option<Whole<u64>>,
}

/// Where an acknowledged job went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckResponse {
    pub state: JobState,
    /// When the retry is due, for a failure that will be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
    /// The same lease was acknowledged before (a retried request whose answer was lost): nothing
    /// changed, and this is still a success.
    #[serde(default)]
    pub duplicate: bool,
}

/// One acknowledgement of `POST /v1/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(
    remote = "Self",
    tag = "outcome",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum AckItem {
    Complete {
        id: String,
        lease_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
        result: Option<Value>,
    },
    Fail {
        id: String,
        lease_token: String,
        message: String,
        #[serde(default = "yes")]
        retryable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(
            feature = "openapi",
            schema(
                value_type = Option<u64>,
                format = "uint64",
                minimum = 0,
                maximum = 18_446_744_073_709_551_615_u64
            )
        )]
        retry_after_ms: Option<Whole<u64>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stack: Option<String>,
    },
    Release {
        id: String,
        lease_token: String,
        /// As in [`ReleaseRequest::delay_ms`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(
            feature = "openapi",
            schema(
                value_type = Option<u64>,
                format = "uint64",
                minimum = 0,
                maximum = 18_446_744_073_709_551_615_u64
            )
        )]
        delay_ms: Option<Whole<u64>>,
    },
}

impl AckItem {
    /// The job acknowledged.
    pub fn id(&self) -> &str {
        match self {
            AckItem::Complete { id, .. }
            | AckItem::Fail { id, .. }
            | AckItem::Release { id, .. } => id,
        }
    }
}

/// `POST /v1/ack`: many completions, failures and releases in one request and one commit. Each stands
/// or falls on its own (a lost lease on one does not affect the others): an item the server refuses
/// (a bad id, a `retry_after_ms` or `delay_ms` beyond 365 days, a result over 1 MiB) gets its error in
/// its result, and the request still succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AckBatchRequest {
    /// At most 10,000.
    #[cfg_attr(feature = "openapi", schema(max_items = 10_000))]
    pub acks: Vec<AckItem>,
}

/// The outcome of one acknowledgement of a batch: `ok` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckResult {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<AckResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The outcomes of `POST /v1/ack`, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckBatchResponse {
    pub results: Vec<AckResult>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn ack_items_are_tagged_by_outcome() {
        let a: AckBatchRequest = serde_json::from_value(json!({"acks": [
            {"outcome": "complete", "id": "a", "lease_token": "t"},
            {"outcome": "fail", "id": "b", "lease_token": "t", "message": "m"},
            {"outcome": "release", "id": "c", "lease_token": "t"},
        ]}))
        .unwrap();
        assert!(matches!(
            &a.acks[1],
            AckItem::Fail {
                retryable: true,
                ..
            }
        ));
        assert_eq!(a.acks[2].id(), "c");
    }

    #[test]
    fn fetch_defaults_to_one_job_and_no_wait() {
        let f: FetchRequest =
            serde_json::from_value(json!({"queues": ["q"], "worker_id": "w"})).unwrap();
        assert_eq!((f.max_jobs, f.wait_ms), (1, 0));
    }
}
