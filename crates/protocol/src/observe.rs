//! The bodies of the server's `routes/observe.rs`, for watching rather than working: the event stream,
//! the caller's key, activity, workers, alerts and the audit log. `/metrics` is Prometheus' text, not
//! JSON, and has no type here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::JobState;

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

/// The data of `GET /v1/events`'s `missed` event: events were dropped from the node's history (or the
/// cursor is from before a restart); the stream goes on from the oldest event kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventsMissed {
    /// The cursor after which the stream goes on.
    pub from: String,
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

/// `GET /v1/activity`: what this node saw happen to jobs over the last few minutes, in buckets of
/// equal length, oldest first and ending with the bucket that holds `now` (still filling). Buckets
/// with nothing in them are listed with zeros, so that a gap reads as idle, not as unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ActivityHistory {
    /// The server's clock when it answered (ms since the epoch): a client places the buckets on its
    /// own clock by this.
    pub now: i64,
    /// The length of every bucket, in ms.
    pub bucket_ms: u64,
    pub buckets: Vec<ActivityBucket>,
}

/// One bucket of [`ActivityHistory`], over every queue: counts of what happened from `at` to
/// `at + bucket_ms`, and the sums of durations that give mean latencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ActivityBucket {
    /// The bucket's start (ms since the epoch).
    pub at: i64,
    /// Jobs enqueued.
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failed attempts (errors, timeouts, stalls).
    pub failed: u64,
    /// Attempts that ended (completed, failed or released), and the sum of how long they ran, in ms.
    pub ran: u64,
    pub ran_ms_sum: u64,
    /// Jobs claimed, and the sum of how long they had been due before the claim, in ms.
    pub claimed: u64,
    pub waited_ms_sum: u64,
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
    /// What the worker said of itself in its latest fetch; absent when it said nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::WorkerReport>,
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
    /// `queue_depth`, `oldest_waiting`, `failure_rate`, `stalled`, `dead_letters`, `no_workers`, or
    /// the server's `disk_full` and `store_growth` (queue `*`).
    pub rule: String,
    pub queue: String,
    /// Always `firing` (resolved alerts are not listed).
    pub state: String,
    pub value: f64,
    pub threshold: f64,
    pub since: i64,
    pub fired_at: i64,
    /// An operator silenced it until then: it is not told (`POST /v1/alerts/silences`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced_until: Option<i64>,
}

/// `POST /v1/alerts/silences`: tell nobody of `rule` firing on `queue` for `duration_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct SilenceRequest {
    /// A queue, or `*`: every queue, and the server's own rules (`disk_full`, `store_growth`).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::SilenceQueue))]
    pub queue: String,
    /// `queue_depth`, `oldest_waiting`, `failure_rate`, `stalled`, `dead_letters`, `no_workers`,
    /// `disk_full` or `store_growth`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::AlertRule))]
    pub rule: String,
    /// 1 ms to 7 days.
    #[serde(deserialize_with = "crate::whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604_800_000_u64))]
    pub duration_ms: u64,
    /// Why, for the audit log (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub reason: Option<String>,
}

crate::object::object_only!(SilenceRequest);

/// A silence in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SilenceView {
    pub queue: String,
    pub rule: String,
    /// When it ends (ms since the epoch).
    pub until: i64,
}

/// `GET /v1/alerts/silences`: the silences in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SilenceList {
    pub silences: Vec<SilenceView>,
}

/// `GET /v1/alerts/rules`: the built-in alert rules in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertRuleList {
    pub rules: Vec<AlertRuleView>,
}

/// One rule for every queue (`*`, which for `disk_full` and `store_growth` is the server), or for a
/// queue whose own `[[alerts]]` entries change it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertRuleView {
    pub queue: String,
    pub rule: String,
    /// `false`: turned off (`enabled = false`); the numbers are then the defaults.
    pub enabled: bool,
    pub threshold: f64,
    pub for_ms: u64,
    pub cooldown_ms: u64,
    pub window_ms: u64,
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub detail: Option<Value>,
}

/// `GET /v1/audit/report`: this deployment checked against `docs/AUDIT.md`, as `errand audit` and the
/// dashboard's Audit page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditReport {
    /// When it was made (ms since the epoch).
    pub at: i64,
    pub pass: u32,
    pub warn: u32,
    pub fail: u32,
    /// Every check that applies here, the failed first, then the warnings, then the passed.
    pub checks: Vec<AuditCheck>,
}

/// One check of one thing (the server, a queue, a worker, an alert rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditCheck {
    /// What is checked: `server.auth`, `queue.max_waiting`, `worker.shutdown`, ...
    pub id: String,
    /// The rows of `docs/AUDIT.md` (the checklist's numbers) it answers.
    pub rows: Vec<u32>,
    /// What it was checked on: `server`, `queue payments`, `worker host-1:77`, `alert dead_letters`.
    pub subject: String,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// The one-line fix; absent when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Fail,
    Warn,
    Pass,
}
