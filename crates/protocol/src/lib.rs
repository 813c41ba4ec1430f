//! The wire types of Errand's HTTP API (`/v1`), shared by the server and the Rust client so that a client
//! never compiles the engine. `docs/API.md` shows each route with a curl example; the server derives
//! `/openapi.json` from these types.
//!
//! Conventions: every instant is milliseconds since the Unix epoch (`*_at`), every duration is in
//! milliseconds (`*_ms`), JSON documents a producer or worker sends (payload, result, progress) are passed
//! through as they are. Requests refuse unknown fields, so that a misspelt option is an error rather than
//! silently ignored. Errors are always [`ErrorBody`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The path prefix of every API route.
pub const API_PREFIX: &str = "/v1";

/// The body of every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable: see [`code`].
    pub code: String,
    /// For people.
    pub message: String,
    /// The request field at fault (`payload`, `jobs[3].priority`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error codes, each with the HTTP status it comes with.
pub mod code {
    /// 400: the request broke a rule; `field` names where.
    pub const INVALID: &str = "invalid";
    /// 401: no API key, or an unknown one.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 403: the key lacks the scope, or the queue is outside its prefixes.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404: no such job, queue or route.
    pub const NOT_FOUND: &str = "not_found";
    /// 405: the route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 409: the lease token is not the job's current lease; nothing changed.
    pub const LEASE_LOST: &str = "lease_lost";
    /// 409: the job's state does not allow this; nothing changed.
    pub const CONFLICT: &str = "conflict";
    /// 413: a body, payload, result, progress or batch is larger than its limit.
    pub const TOO_LARGE: &str = "too_large";
    /// 415: the body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// 429: a server limit is reached (e.g. waiting fetches); retry after `Retry-After` seconds.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// 503: the store cannot be reached, or the server is shutting down; retry.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 500: a fault of the server, never of the request.
    pub const INTERNAL: &str = "internal";
}

/// How long to wait before the next attempt after a failure (see the queue configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// `fixed` or `exponential` (`delay_ms · 2^(n−1)` after the n-th failure).
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    pub delay_ms: u64,
    /// Takes off a random part of up to this fraction of each delay (0–1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter: f64,
    /// Caps each delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The shape of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    Fixed,
    Exponential,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Waiting,
    Delayed,
    Active,
    /// A flow's parent, waiting until each of its children completed.
    WaitingChildren,
    Completed,
    Cancelled,
    Dead,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::WaitingChildren,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Dead,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::WaitingChildren => "waiting_children",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
        }
    }

    /// Parses a state's wire name.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `completed`, `cancelled` or `dead`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Dead
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job to enqueue: `POST /v1/queues/{queue}/jobs` with this body, or `{"jobs": [...]}` of them.
/// Every option left out takes the queue's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnqueueJob {
    /// The handler's name: 1–128 of `A-Z a-z 0-9 _ - . : /`.
    pub kind: String,
    /// Any JSON, at most 1 MiB; `null` when left out.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
    /// 0–1000, lower runs first (queue default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Run no earlier than this many ms from now. Exclusive with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this instant (ms since the epoch). Exclusive with `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// How long one attempt may run, heartbeats or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How often the worker promises to heartbeat; the lease is derived from it and the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stalled: Option<u32>,
    /// At most one unfinished job per queue with this key; a repeat returns the existing job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// What a repeat of a held `unique_key` does: `reject` (default: the existing job stays as it is)
    /// or `replace` (a waiting or delayed job takes this one's payload, priority and run time — a
    /// debounce with `delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// The tenant: claims rotate between groups, and the queue's `group_concurrency` and
    /// `group_rate_limit` apply per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    /// What must not be worked on twice at once (an order, a wallet): at most the queue's
    /// `key_concurrency` (default 1) active jobs share one. Independent of `group_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Stable across attempts; defaults to one derived from the unique key, or the job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// For a child of a flow: what its dying (or being cancelled) does to the parent — `fail` (the
    /// default: the parent dies, `child_dead`) or `release` (the parent stops waiting for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_on_dead: Option<ParentOnDead>,
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

/// `POST /v1/flows`: a parent job that waits (`waiting_children`) until each child completed, then
/// runs and reads its children's results (`GET /v1/jobs/{id}/children`). All or nothing; no unique keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowRequest {
    pub parent: FlowJob,
    /// 1 to 1,000 children.
    pub children: Vec<FlowJob>,
}

/// A job of a flow, with its queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowJob {
    pub queue: String,
    pub job: EnqueueJob,
}

/// What `POST /v1/flows` created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FlowResponse {
    pub parent: Enqueued,
    pub children: Vec<Enqueued>,
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
#[serde(deny_unknown_fields)]
pub struct EnqueueBatch {
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

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AttemptError {
    pub attempt: u32,
    /// `error`, `non_retryable`, `timeout` or `stalled`.
    pub kind: String,
    pub message: String,
    pub at: i64,
    /// Where it failed, as the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// The lease of an active job, as others see it (the token is only ever given to its holder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LeaseView {
    pub worker_id: String,
    pub expires_at: i64,
    /// When the attempt times out, heartbeats or not.
    pub deadline_at: i64,
}

/// A job as `GET /v1/jobs/{id}` and the listings show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobView {
    pub id: String,
    pub queue: String,
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Box<RawValue>,
    pub state: JobState,
    pub priority: i32,
    pub run_at: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    pub lease_ms: u64,
    pub max_stalled: u32,
    pub stalls: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The flow parent of this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// A flow parent's children not completed yet.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pending_children: u32,
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub progress: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<Box<RawValue>>,
    /// One per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// `attempts_exhausted`, `non_retryable` or `stalled`, for a dead job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

/// A page of jobs. Pass `next_cursor` back as `cursor` for the next page; it is absent on the last page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
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

/// `POST /v1/fetch`: claim up to `max_jobs` due jobs, waiting up to `wait_ms` for one to arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// 1–64 queue names; earlier queues are not preferred over later ones except by priority.
    pub queues: Vec<String>,
    /// 1–128 printable characters; shown on the job's lease.
    pub worker_id: String,
    /// 1 to the claim limit (1,000); default 1.
    #[serde(default = "one")]
    pub max_jobs: u32,
    /// How long to wait when no job is due (long poll); 0 answers at once. At most the server's
    /// `max_wait_ms` (default 30,000).
    #[serde(default)]
    pub wait_ms: u64,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
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
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
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
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_token: String,
    /// Replaces the job's progress (any JSON, at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub progress: Option<Value>,
}

/// `POST /v1/jobs/{id}/logs`: append lines to the job's log under its lease. At most 100 lines per
/// request; a line longer than 2 KiB is cut; the job keeps its latest 200 lines, across attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogRequest {
    pub lease_token: String,
    pub lines: Vec<String>,
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

/// The lease after a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HeartbeatResponse {
    pub lease_expires_at: i64,
    /// Stop the job and report it (fail or release): an operator cancelled it.
    pub cancel_requested: bool,
}

/// `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_token: String,
    /// Any JSON, at most 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<Value>,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: String,
    /// Kept on the job (truncated beyond 8 KiB).
    pub message: String,
    /// `false`: no retry can help; the job goes straight to the dead-letter queue. Default `true`.
    #[serde(default = "yes")]
    pub retryable: bool,
    /// Retry no sooner than this (a provider's `Retry-After`); overrides the backoff policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
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
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub lease_token: String,
    /// Run again no sooner than this many ms from now (at most 365 days; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
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
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum AckItem {
    Complete {
        id: String,
        lease_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
        result: Option<Value>,
    },
    Fail {
        id: String,
        lease_token: String,
        message: String,
        #[serde(default = "yes")]
        retryable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stack: Option<String>,
    },
    Release {
        id: String,
        lease_token: String,
        /// As in [`ReleaseRequest::delay_ms`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
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
/// or falls on its own (a lost lease on one does not affect the others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AckBatchRequest {
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

/// How long finished (completed and cancelled) jobs are kept; dead jobs are never pruned automatically.
/// [`Retention::KEEP_ALL`] keeps every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep at most this many completed jobs, and as many cancelled; `null`: no count limit.
    pub max_count: Option<u64>,
    /// Remove those finished longer ago than this; `null`: no age limit.
    pub max_age_ms: Option<u64>,
}

impl Retention {
    /// No limit by count or by age.
    pub const KEEP_ALL: Retention = Retention {
        max_count: None,
        max_age_ms: None,
    };
}

/// A queue's defaults and settings (`GET`/`PUT /v1/queues/{queue}/config`). A `PUT` replaces the whole
/// configuration; a field left out takes its default. It applies to jobs enqueued afterwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `null` or absent: jobs promise no heartbeat and may run their whole timeout without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stalled: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// At most this many active jobs in the queue, across every worker and node. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// At most this many active jobs per group key. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_concurrency: Option<u32>,
    /// At most this many active jobs per concurrency key (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// A token bucket over the queue's claims, all groups together. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A token bucket over each group's claims. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_rate_limit: Option<RateLimit>,
}

/// `limit` jobs per `period_ms`, in bursts of up to `burst` (default `limit`): a token bucket the
/// server checks at claim time, for every worker on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub limit: u32,
    pub period_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// A queue's counts per state, and more.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueCounts {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub dead: u64,
    /// Flow parents waiting for their children.
    #[serde(default)]
    pub waiting_children: u64,
}

/// A queue: whether it is paused, its counts, and how long its oldest due job has waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    pub counts: QueueCounts,
    pub oldest_waiting_age_ms: u64,
}

/// `GET /v1/queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

/// `POST /v1/queues/{queue}/dead/replay` and the filter of `DELETE /v1/queues/{queue}/dead`: which dead
/// jobs. Everything left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeadFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only jobs whose latest error message contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
    /// Only jobs whose latest error has this fingerprint (`GET /v1/queues/{queue}/dead/groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// At most this many jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// `PUT /v1/queues/{queue}/webhooks/{name}`: where to POST when one of the queue's jobs ends. Each POST
/// carries `Errand-Signature: t=<ms since the epoch>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by
/// secret>`, `Errand-Webhook: <name>` and `Errand-Delivery: <delivery id>` (the same on every retry of
/// one notice: deduplicate on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookDef {
    /// `http://` or `https://`, at most 2,048 characters.
    pub url: String,
    /// The signing key, 16–512 bytes. Never shown again.
    pub secret: String,
    /// Any of `completed`, `dead`, `cancelled`.
    pub events: Vec<String>,
}

/// A webhook as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookView {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
}

/// `GET /v1/queues/{queue}/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// How many jobs a bulk action touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CountResponse {
    pub count: u64,
}

/// What a cron schedule does about ticks missed while no server ran: `skip` them (the default), or
/// `catch_up_one` — one job for all of them. A tick seen within 60 s of its time is never missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    #[default]
    Skip,
    CatchUpOne,
}

/// A cron schedule's definition: `PUT /v1/schedules/{name}`. Each tick enqueues one job of `kind` with
/// `payload` on `queue`; options left out take the queue's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// 5 fields (`min hour day-of-month month day-of-week`), 6 with seconds first, or `@yearly`,
    /// `@monthly`, `@weekly`, `@daily`, `@hourly`.
    pub cron: String,
    /// An IANA time zone (default `UTC`): ticks follow its wall clock, daylight saving included.
    #[serde(default = "utc")]
    pub timezone: String,
    pub queue: String,
    pub kind: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
}

fn utc() -> String {
    "UTC".to_string()
}

impl ScheduleDef {
    /// A schedule of `cron` (in UTC) enqueuing `kind` with `payload` on `queue`.
    pub fn new(
        cron: impl Into<String>,
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: Value,
    ) -> Self {
        ScheduleDef {
            cron: cron.into(),
            timezone: utc(),
            queue: queue.into(),
            kind: kind.into(),
            payload,
            missed: Missed::Skip,
            priority: None,
            max_attempts: None,
            backoff: None,
            timeout_ms: None,
            heartbeat_ms: None,
            group_key: None,
        }
    }
}

/// A schedule and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ScheduleView {
    pub name: String,
    #[serde(flatten)]
    pub def: ScheduleDef,
    pub paused: bool,
    /// The next ticks (up to 5), ms since the epoch; empty if it never fires again. While paused,
    /// the ticks it would fire once resumed.
    pub next_runs: Vec<i64>,
    /// The latest tick that fired, and its job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// `GET /health/live` and `GET /health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
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

/// One job state change, as `GET /v1/events` streams it (the SSE `data` of an event of type `job`;
/// its `id` is `cursor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventView {
    /// Resume after this event with `after=<cursor>` or the `Last-Event-ID` header.
    pub cursor: String,
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    /// Absent for a job just enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<JobState>,
    pub to: JobState,
    pub at: i64,
    pub attempt: u32,
    /// A failed attempt this change records: `error`, `non_retryable`, `timeout` or `stalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// `GET /v1/whoami`: the key the request was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WhoAmI {
    /// The key's name (`anonymous` when the server has no keys).
    pub name: String,
    /// `produce`, `work`, `read`, `admin`.
    pub scopes: Vec<String>,
    /// Queue-name prefixes the key is limited to (empty: every queue).
    pub queues: Vec<String>,
}

/// `GET /v1/workers`: workers seen by this node in the last minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// A worker: its id, the queues it fetched from or heartbeat on, and when it was last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkerView {
    pub id: String,
    pub queues: Vec<String>,
    pub last_seen_at: i64,
}

/// `GET /v1/alerts`: the built-in alerts firing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
}

/// An alert firing: its rule, queue, the measured value against the threshold, since when the
/// condition holds and when it fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertView {
    /// `queue_depth`, `oldest_waiting`, `failure_rate`, `stalled`, `dead_letters` or `no_workers`.
    pub rule: String,
    pub queue: String,
    /// Always `firing` (resolved alerts are not listed).
    pub state: String,
    pub value: f64,
    pub threshold: f64,
    pub since: i64,
    pub fired_at: i64,
}

/// `GET /v1/queues/{queue}/dead/groups`: dead letters by error fingerprint, the largest groups first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeadGroupList {
    pub groups: Vec<DeadGroupView>,
    /// Dead jobs read (at most 100,000).
    pub scanned: u64,
    /// False when the queue holds more dead jobs than were read.
    pub complete: bool,
}

/// Dead jobs of one kind whose latest errors differ only in numbers, ids and quoted values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeadGroupView {
    /// Replay or purge the group with `{"fingerprint": ...}` / `?fingerprint=`.
    pub fingerprint: String,
    pub kind: String,
    /// The latest error of the group's most recent job.
    pub error: String,
    pub count: u64,
    pub last_failed_at: i64,
    pub sample_job_id: String,
}

/// `GET /v1/audit`: operators' actions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    /// Pass as `cursor` for older entries; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One action: when, by which key, what, to what, with what particulars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditView {
    pub id: u64,
    pub at: i64,
    /// The API key's name.
    pub key: String,
    /// `job.retry`, `job.cancel`, `job.promote`, `queue.pause`, `queue.resume`, `queue.configure`,
    /// `dead.replay`, `dead.purge`, `webhook.put`, `webhook.delete`, `schedule.put`,
    /// `schedule.delete`, `schedule.pause`, `schedule.resume`, `schedule.trigger`.
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub detail: Option<Value>,
}
