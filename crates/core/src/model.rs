//! The job model: states, jobs as stored, the options a producer gives, and per-queue configuration.
//!
//! These are domain types. The few that stores keep as JSON columns ([`Backoff`], [`ErrorRecord`],
//! [`QueueConfig`]) derive serde for that reason; wire types live in the protocol crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::admission::{RateLimit, Rules};
use crate::clock::Timestamp;
use crate::id::{JobId, LeaseToken};

/// Where a job is in its life. See `docs/ARCHITECTURE.md` for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Due, waiting for a worker.
    Waiting,
    /// Not due yet: scheduled for later, or backing off before a retry.
    Delayed,
    /// Claimed by a worker under a lease.
    Active,
    /// A flow's parent, waiting until each of its children completed (see `Engine::enqueue_flow`).
    WaitingChildren,
    /// Finished successfully.
    Completed,
    /// Cancelled before it finished.
    Cancelled,
    /// Failed for good: attempts exhausted, a non-retryable error, or too many stalls. Kept until a person
    /// replays or purges it.
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

    /// The state's name as stored and shown (`waiting`, `delayed`, ...).
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

    /// Parses a state's name.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A final state: the job will not run again unless a person retries it.
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

/// How long to wait before the next attempt after a failure.
///
/// The delay before attempt `n + 1` (after the `n`-th failure) is `delay_ms` for `fixed`, and
/// `delay_ms * 2^(n-1)` for `exponential`; then `jitter` takes off a random part of up to that
/// fraction (0.5 = anywhere between 50 % and 100 % of the delay), and `max_ms` caps the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    pub delay_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The shape of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    Fixed,
    Exponential,
}

impl Backoff {
    /// A fixed delay between attempts.
    pub fn fixed(delay_ms: u64) -> Self {
        Backoff {
            kind: BackoffKind::Fixed,
            delay_ms,
            jitter: 0.0,
            max_ms: None,
        }
    }

    /// A delay that doubles with each failure.
    pub fn exponential(delay_ms: u64) -> Self {
        Backoff {
            kind: BackoffKind::Exponential,
            delay_ms,
            jitter: 0.0,
            max_ms: None,
        }
    }

    /// The same policy with `jitter` (0 to 1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same policy with a cap on each delay.
    pub fn with_max(mut self, max_ms: u64) -> Self {
        self.max_ms = Some(max_ms);
        self
    }

    /// The delay after the `failures`-th failure (1-based), given a uniform random number `r` in [0, 1).
    pub fn delay_after(&self, failures: u32, r: f64) -> u64 {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay_ms,
            BackoffKind::Exponential => {
                let exp = failures.saturating_sub(1).min(63);
                self.delay_ms.saturating_mul(1u64 << exp)
            }
        };
        let capped = self.max_ms.map_or(base, |m| base.min(m));
        let jitter = self.jitter.clamp(0.0, 1.0) * r.clamp(0.0, 1.0);
        (capped as f64 * (1.0 - jitter)).round() as u64
    }
}

/// Why a job failed an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The handler reported an error it expects a retry may fix.
    Error,
    /// The handler reported an error no retry can fix.
    NonRetryable,
    /// The job ran past its timeout.
    Timeout,
    /// The worker's lease expired without a heartbeat (crashed, hung or cut off).
    Stalled,
}

/// One failed attempt, kept on the job for as long as the job exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Which attempt failed (1-based).
    pub attempt: u32,
    pub kind: ErrorKind,
    pub message: String,
    pub at: Timestamp,
    /// Where it failed, as the worker reported it (a stack trace, a backtrace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// Why a job is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Every attempt failed.
    AttemptsExhausted,
    /// The handler said no retry could help.
    NonRetryable,
    /// The job stalled more than its queue's `max_stalled` allows.
    Stalled,
    /// A flow's parent whose child died (or was cancelled) with `parent_on_dead: fail`.
    ChildDead,
    /// Not started before its `expires_at` (`expire_after_ms`).
    Expired,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::AttemptsExhausted => "attempts_exhausted",
            DeadReason::NonRetryable => "non_retryable",
            DeadReason::Stalled => "stalled",
            DeadReason::ChildDead => "child_dead",
            DeadReason::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<DeadReason> {
        [
            DeadReason::AttemptsExhausted,
            DeadReason::NonRetryable,
            DeadReason::Stalled,
            DeadReason::ChildDead,
            DeadReason::Expired,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The current lease of an active job.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub token: LeaseToken,
    pub worker_id: String,
    /// When the lease ends unless renewed by a heartbeat.
    pub expires_at: Timestamp,
    /// When the attempt times out, heartbeats or not (`started_at + timeout_ms`).
    pub deadline_at: Timestamp,
}

/// A job as stored. JSON fields stay as text (`RawValue`) from the store to the wire: the hot path
/// never parses a payload it only passes on.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    /// The handler's name.
    pub kind: String,
    pub payload: Box<RawValue>,
    pub state: JobState,
    /// Lower runs first; FIFO within a priority.
    pub priority: i32,
    /// When the job is (or was) due.
    pub run_at: Timestamp,
    /// Attempts counted against `max_attempts`: claims, less those that ended in a stall.
    pub attempts: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long one attempt may run, heartbeats or not.
    pub timeout_ms: u64,
    /// How often the worker promises to heartbeat; `None`: it may run its whole timeout without one.
    pub heartbeat_ms: Option<u64>,
    /// The lease one claim or heartbeat grants, derived from `timeout_ms` and `heartbeat_ms`.
    pub lease_ms: u64,
    pub max_stalled: u32,
    /// How many times a lease on this job expired.
    pub stalls: u32,
    pub unique_key: Option<String>,
    /// The tenant: fairness and per-group limits.
    pub group_key: Option<String>,
    /// What must not be worked on twice at once (an order, a wallet): see the queue's `key_concurrency`.
    pub concurrency_key: Option<String>,
    /// The same across every attempt, stall recovery and replay: pass it to payment, mint and e-mail APIs.
    pub idempotency_key: String,
    /// The flow's parent this job is a child of.
    pub parent_id: Option<JobId>,
    /// What this child's dying does to its parent.
    pub parent_on_dead: ParentOnDead,
    /// A parent's children not completed yet (0 for any other job).
    pub pending_children: u32,
    pub progress: Option<Box<RawValue>>,
    pub result: Option<Box<RawValue>>,
    pub errors: Vec<ErrorRecord>,
    pub dead_reason: Option<DeadReason>,
    pub cancel_requested: bool,
    /// Set while the job is active.
    pub lease: Option<Lease>,
    /// The token of the latest lease, kept after the job leaves `active` so that a worker retrying the
    /// completion whose answer it lost is told "done" rather than "lease lost". Never shown to others.
    pub last_lease_token: Option<LeaseToken>,
    pub created_at: Timestamp,
    /// When the latest attempt started.
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Not started by then (from `expire_after_ms`), the job ends dead with reason `expired`.
    pub expires_at: Option<Timestamp>,
}

/// One line a worker logged for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the server received it.
    pub at: Timestamp,
    /// The attempt that logged it.
    pub attempt: u32,
    pub line: String,
}

/// What an enqueue whose unique key is held does. One model for the three uses of a unique key:
///
/// | the key is held by | `reject` (default) | `replace` |
/// |---|---|---|
/// | a waiting or delayed job | nothing changes; the answer names it (`created: false`) | its payload, priority and run time become the new job's — a debounce when the new job is delayed (`replaced: true`) |
/// | an active job | nothing changes | nothing changes (`replaced: false`): a running attempt's input is not swapped under it |
/// | a dead job (it may be replayed) | nothing changes | nothing changes |
/// | a job completed within the queue's unique window ([`UniqueWindow`]; by default as long as retention keeps completed jobs, even after retention removed it) | nothing changes: a throttle | nothing changes |
/// | a job completed before the window, a cancelled job, a purged dead job, or none | a new job | a new job |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dedup {
    #[default]
    Reject,
    Replace,
}

/// What a flow child's dying (or being cancelled) does to its parent, which waits in
/// `waiting_children`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentOnDead {
    /// The parent dies too (`dead_reason: child_dead`): it cannot do its work without this child's.
    #[default]
    Fail,
    /// The parent stops waiting for this child, as if it had completed (without a result).
    Release,
}

impl ParentOnDead {
    pub fn as_str(self) -> &'static str {
        match self {
            ParentOnDead::Fail => "fail",
            ParentOnDead::Release => "release",
        }
    }

    /// Parses a stored value; `None` (never set) is the default.
    pub fn parse(s: Option<&str>) -> Option<ParentOnDead> {
        match s {
            None | Some("fail") => Some(ParentOnDead::Fail),
            Some("release") => Some(ParentOnDead::Release),
            Some(_) => None,
        }
    }
}

/// A producer's options for one job. Each unset option takes the queue's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    pub priority: Option<i32>,
    /// Run no earlier than this many milliseconds from now. Exclusive with `run_at`.
    pub delay_ms: Option<u64>,
    /// Run no earlier than this instant. Exclusive with `delay_ms`.
    pub run_at: Option<Timestamp>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<Backoff>,
    pub timeout_ms: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    pub max_stalled: Option<u32>,
    /// At most one job per queue with this key that is unfinished, dead, or completed within the queue's
    /// [`UniqueWindow`]: a repeat enqueue returns the existing job (see [`Dedup`]).
    pub unique_key: Option<String>,
    /// What a repeat of a held unique key does to the existing job (see [`Dedup`]).
    pub dedup: Dedup,
    /// The tenant, for fairness and per-tenant limits.
    pub group_key: Option<String>,
    /// What must not be worked on twice at once (an order, a wallet): at most the queue's
    /// `key_concurrency` (default 1) active jobs share one. Independent of the group key.
    pub concurrency_key: Option<String>,
    /// Defaults to a key derived from the unique key (so a re-enqueue of the same logical job reuses it)
    /// or else to the job id.
    pub idempotency_key: Option<String>,
    /// For a child of a flow: what its dying does to the parent.
    pub parent_on_dead: ParentOnDead,
    /// A message's time to live: a job not started within this many milliseconds of its enqueue (still
    /// `waiting` or `delayed`, also while waiting to retry) ends `dead` with reason `expired`. Must be
    /// longer than its delay.
    pub expire_after_ms: Option<u64>,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    pub options: JobOptions,
}

impl NewJob {
    /// A job with every option at the queue's default.
    pub fn new(queue: impl Into<String>, kind: impl Into<String>, payload: Value) -> Self {
        NewJob {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            options: JobOptions::default(),
        }
    }

    /// The same job with `options`.
    pub fn with_options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }
}

/// How long a completed job keeps holding its unique key after it finished, so that a repeat of a
/// deterministic job id (`mint-<ticket>`) is answered with the job that ran rather than run again. The key
/// outlives the job's row: when retention removes a completed job whose key is still held, the store keeps
/// the key (queue, key, job id, finish time) in a ledger of its own until the window ends.
///
/// Dead jobs hold their key for as long as they exist (a replay would run the work again beside a
/// repeat); cancelled jobs and purged dead jobs hold none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniqueWindow {
    /// As long as retention keeps completed jobs by age (`retention.max_age_ms`, 7 days by default), and
    /// for ever when retention sets no age. A key outlives a job that retention removed by count.
    #[default]
    Retention,
    /// This many milliseconds after the job completed; 0 frees the key when it completes.
    Ms(u64),
    /// For ever.
    Forever,
}

impl UniqueWindow {
    fn is_default(&self) -> bool {
        *self == UniqueWindow::Retention
    }

    /// Reads a stored window: this release's form, or an earlier release's `unique_window_ms`, a number
    /// of milliseconds. Its 0 was the default (a key freed the moment its job completed) and is read as
    /// the default now, [`UniqueWindow::Retention`]; any other number stays the window it was chosen as
    /// (a throttle of one job an hour stays one).
    fn read_stored<'de, D: serde::Deserializer<'de>>(d: D) -> Result<UniqueWindow, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Legacy(u64),
            Current(UniqueWindow),
        }
        Ok(match Stored::deserialize(d)? {
            Stored::Legacy(0) => UniqueWindow::Retention,
            Stored::Legacy(ms) => UniqueWindow::Ms(ms),
            Stored::Current(w) => w,
        })
    }
}

/// How finished jobs are kept. Applies to `completed` and `cancelled` jobs only: dead jobs are never
/// pruned automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// Keep at most this many completed jobs, and as many cancelled ones: the most recently created
    /// (ids sort by creation; a store keeps no index of finish times for this). `None`: no count limit.
    pub max_count: Option<u64>,
    /// Remove those finished longer ago than this. `None`: no age limit.
    pub max_age_ms: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_count: Some(10_000),
            max_age_ms: Some(7 * 24 * 3_600_000),
        }
    }
}

/// A queue's defaults and settings. A job's own options override the defaults; they are resolved when
/// the job is enqueued, so changing a queue's configuration affects jobs enqueued after the change.
///
/// Stored as JSON. Reading tolerates fields it does not know, and writing leaves out settings at their
/// default, so that nodes of adjacent releases sharing one database read each other's configurations
/// (input is checked at the edge, by the wire types, which do refuse unknown fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    pub priority: i32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    pub heartbeat_ms: Option<u64>,
    pub max_stalled: u32,
    /// How long a completed job keeps holding its unique key. Stored as `unique_window`; a configuration
    /// stored by an earlier release has `unique_window_ms`, read as [`UniqueWindow::read_stored`] says.
    #[serde(
        rename = "unique_window",
        alias = "unique_window_ms",
        deserialize_with = "UniqueWindow::read_stored",
        skip_serializing_if = "UniqueWindow::is_default"
    )]
    pub unique_window: UniqueWindow,
    pub retention: Retention,
    /// At most this many active jobs in the queue, across all workers and nodes. `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// At most this many active jobs per group key. `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_concurrency: Option<u32>,
    /// At most this many active jobs per concurrency key.
    #[serde(skip_serializing_if = "is_one")]
    pub key_concurrency: u32,
    /// Claims from the queue, all groups together. `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Claims per group key. `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_rate_limit: Option<RateLimit>,
    /// Where to say that a job ended, by webhook name (see `Engine::put_webhook`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub webhooks: BTreeMap<String, Webhook>,
    /// At most this many jobs not yet started (`waiting` and `delayed`): an enqueue that would take the
    /// queue past it is refused whole ([`crate::Error::QueueFull`]). `None`: no bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_waiting: Option<u64>,
    /// What every job enqueued to the queue must satisfy; an enqueue breaking it is refused.
    #[serde(skip_serializing_if = "QueuePolicy::is_default")]
    pub policy: QueuePolicy,
    /// Alert rules silenced for the queue, by rule name, until when (`Engine::silence_alert`; kept by
    /// the engine like the webhooks).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub silences: BTreeMap<String, Timestamp>,
}

/// Rules a team sets on a queue so that every job enqueued to it has what the audit asks of critical
/// work (`docs/AUDIT.md`). Each is checked against the job as resolved (its own options over the
/// queue's defaults); a job breaking one is refused with an [`crate::Error::Invalid`] naming the job's
/// field and the policy. The default requires nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueuePolicy {
    /// Every job carries a `unique_key` (a deterministic id: a repeated enqueue finds the first job).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_unique_key: bool,
    /// A payload is at most this many bytes of JSON, below the server's own limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<usize>,
    /// A job's timeout is at least this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_timeout_ms: Option<u64>,
    /// A job's timeout is at most this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    /// A job may be attempted at least this many times (`max_attempts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_attempts: Option<u32>,
    /// The queue tells someone of its dead jobs: a webhook of the queue has the `dead` event.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_dead_letter_route: bool,
}

impl QueuePolicy {
    pub fn is_default(&self) -> bool {
        *self == QueuePolicy::default()
    }
}

/// A URL told, by a signed POST, when a queue's job ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `http://` or `https://`.
    pub url: String,
    /// The key of the HMAC-SHA256 signature over each body (16–512 bytes). Never shown once set.
    pub secret: String,
    /// Which ends to tell: any of `completed`, `dead`, `cancelled`; `alert` for the queue's alerts
    /// firing and resolving.
    pub events: Vec<String>,
}

/// One operator action in the audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Given by the store, rising (0 in an entry to append).
    pub id: u64,
    pub at: Timestamp,
    /// The name of the API key that acted (`anonymous` without keys).
    pub key: String,
    /// What was done: `job.retry`, `queue.pause`, `dead.replay`, ...
    pub action: String,
    /// What it was done to: a job id, a queue, a schedule.
    pub target: String,
    /// The request's particulars (a filter, a count), as JSON.
    pub detail: Option<Box<RawValue>>,
}

impl Job {
    /// The fingerprint of the job's latest error (of no error: of an empty message), which groups dead
    /// letters that failed the same way.
    pub fn error_fingerprint(&self) -> String {
        let message = self.errors.last().map_or("", |e| e.message.as_str());
        crate::fingerprint::of(&self.kind, message)
    }
}

impl QueueConfig {
    /// Whether a webhook of the queue is told of its dead jobs.
    pub fn routes_dead_letters(&self) -> bool {
        self.webhooks
            .values()
            .any(|w| w.events.iter().any(|e| e == "dead"))
    }

    /// How long a completed job holds its unique key, in milliseconds; `None`: for ever.
    pub fn unique_hold_ms(&self) -> Option<u64> {
        match self.unique_window {
            UniqueWindow::Retention => self.retention.max_age_ms,
            UniqueWindow::Ms(ms) => Some(ms),
            UniqueWindow::Forever => None,
        }
    }

    /// A completed job holds its unique key at `now` if it finished strictly after this instant.
    pub fn unique_finished_since(&self, now: crate::clock::Timestamp) -> crate::clock::Timestamp {
        match self.unique_hold_ms() {
            Some(ms) => now.saturating_sub(ms.min(i64::MAX as u64) as i64),
            None => crate::clock::Timestamp::MIN,
        }
    }

    /// The queue's flow-control rules.
    pub fn rules(&self) -> Rules {
        Rules {
            concurrency: self.concurrency,
            group_concurrency: self.group_concurrency,
            key_concurrency: self.key_concurrency,
            rate_limit: self.rate_limit,
            group_rate_limit: self.group_rate_limit,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            priority: crate::limits::DEFAULT_PRIORITY,
            max_attempts: 3,
            backoff: Backoff::exponential(1_000)
                .with_jitter(0.2)
                .with_max(3_600_000),
            timeout_ms: 300_000,
            heartbeat_ms: None,
            max_stalled: 1,
            unique_window: UniqueWindow::Retention,
            retention: Retention::default(),
            concurrency: None,
            group_concurrency: None,
            key_concurrency: 1,
            rate_limit: None,
            group_rate_limit: None,
            webhooks: BTreeMap::new(),
            max_waiting: None,
            policy: QueuePolicy::default(),
            silences: BTreeMap::new(),
        }
    }
}

/// A queue's configuration and whether it is paused.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    pub name: String,
    pub config: QueueConfig,
    /// A paused queue accepts jobs but hands none to workers.
    pub paused: bool,
}

/// Counts and ages of one queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueStats {
    pub queue: String,
    pub paused: bool,
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub dead: u64,
    pub waiting_children: u64,
    /// How long the oldest due job has been waiting (0 when none waits).
    pub oldest_waiting_age_ms: u64,
}

impl QueueStats {
    /// The count for `state`.
    pub fn count(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Delayed => self.delayed,
            JobState::Active => self.active,
            JobState::WaitingChildren => self.waiting_children,
            JobState::Completed => self.completed,
            JobState::Cancelled => self.cancelled,
            JobState::Dead => self.dead,
        }
    }

    /// Sets the count for `state`.
    pub fn set_count(&mut self, state: JobState, n: u64) {
        let slot = match state {
            JobState::Waiting => &mut self.waiting,
            JobState::Delayed => &mut self.delayed,
            JobState::Active => &mut self.active,
            JobState::WaitingChildren => &mut self.waiting_children,
            JobState::Completed => &mut self.completed,
            JobState::Cancelled => &mut self.cancelled,
            JobState::Dead => &mut self.dead,
        };
        *slot = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_from_the_first_failure() {
        let b = Backoff::exponential(1_000);
        let delays: Vec<u64> = (1..=5).map(|n| b.delay_after(n, 0.0)).collect();
        assert_eq!(delays, vec![1_000, 2_000, 4_000, 8_000, 16_000]);
    }

    #[test]
    fn backoff_saturates_instead_of_overflowing_and_honours_its_cap() {
        let b = Backoff::exponential(u64::MAX / 2);
        assert_eq!(b.delay_after(200, 0.0) as f64, u64::MAX as f64);
        let capped = Backoff::exponential(1_000).with_max(60_000);
        assert_eq!(capped.delay_after(100, 0.0), 60_000);
        assert_eq!(Backoff::fixed(7).delay_after(1_000, 0.0), 7);
    }

    #[test]
    fn jitter_takes_off_at_most_its_fraction() {
        let b = Backoff::fixed(10_000).with_jitter(0.25);
        assert_eq!(b.delay_after(1, 0.0), 10_000);
        assert_eq!(b.delay_after(1, 1.0), 7_500);
        assert_eq!(b.delay_after(1, 0.5), 8_750);
        // Out-of-range inputs are clamped, never negative or larger than the delay.
        assert_eq!(Backoff::fixed(100).with_jitter(5.0).delay_after(1, 2.0), 0);
    }

    /// A configuration stored before keys outlived their jobs has `unique_window_ms`: its 0 (then the
    /// default) reads as today's default, any other number as the window it was; today's forms read back
    /// as written.
    #[test]
    fn stored_unique_windows_of_an_earlier_release_keep_their_meaning() {
        let read = |json: serde_json::Value| -> UniqueWindow {
            serde_json::from_value::<QueueConfig>(json)
                .unwrap()
                .unique_window
        };
        assert_eq!(
            read(serde_json::json!({"unique_window_ms": 0})),
            UniqueWindow::Retention
        );
        assert_eq!(
            read(serde_json::json!({"unique_window_ms": 3_600_000})),
            UniqueWindow::Ms(3_600_000)
        );
        for w in [
            UniqueWindow::Retention,
            UniqueWindow::Ms(0),
            UniqueWindow::Ms(5),
            UniqueWindow::Forever,
        ] {
            let c = QueueConfig {
                unique_window: w,
                ..QueueConfig::default()
            };
            let back: QueueConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back.unique_window, w);
        }
        assert_eq!(read(serde_json::json!({})), UniqueWindow::Retention);
    }

    #[test]
    fn stored_configurations_are_read_across_adjacent_releases() {
        // Written with defaults: no field an older release does not know.
        let text = serde_json::to_string(&QueueConfig::default()).unwrap();
        for newer in ["concurrency", "key_concurrency", "rate_limit", "webhooks"] {
            assert!(!text.contains(newer), "{text}");
        }
        // Read with a field from a newer release: ignored.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["a_setting_from_the_future"] = serde_json::json!(true);
        let back: QueueConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, QueueConfig::default());
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("stalled"), None);
        assert!(JobState::Dead.is_final() && !JobState::Delayed.is_final());
    }
}
