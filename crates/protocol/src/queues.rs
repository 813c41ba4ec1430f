//! The bodies of the server's `routes/queues.rs`: a queue's configuration, counts and listing, its dead
//! letters (filters, groups, counts of a bulk action) and its webhooks. The jobs a queue lists are
//! shown as in `job`.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use crate::schema;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::Backoff;
use crate::object::object_only;
use crate::whole::{self, Whole};

object_only!(
    Retention,
    QueueConfig,
    QueuePolicy,
    RateLimit,
    DeadFilter,
    WebhookDef
);

/// How long a completed job keeps holding its unique key (a queue's `unique_window_ms`): a number of
/// milliseconds, or the word `"retention"` or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueWindow {
    /// As long as retention keeps completed jobs by age (the default).
    Retention,
    /// This many milliseconds after the job completed.
    Ms(u64),
    /// For ever.
    Forever,
}

impl Serialize for UniqueWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UniqueWindow::Retention => s.serialize_str("retention"),
            UniqueWindow::Ms(ms) => s.serialize_u64(*ms),
            UniqueWindow::Forever => s.serialize_str("forever"),
        }
    }
}

impl<'de> Deserialize<'de> for UniqueWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(#[serde(deserialize_with = "whole::int")] u64),
            Word(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a number of milliseconds, \"retention\" or \"forever\"",
            )
        })? {
            Raw::Ms(ms) => Ok(UniqueWindow::Ms(ms)),
            Raw::Word(w) if w == "retention" => Ok(UniqueWindow::Retention),
            Raw::Word(w) if w == "forever" => Ok(UniqueWindow::Forever),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a number of milliseconds, \"retention\" or \"forever\", not \"{w}\""
            ))),
        }
    }
}

/// How long finished (completed and cancelled) jobs are kept; dead jobs are never pruned automatically.
/// [`Retention::KEEP_ALL`] keeps every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Retention {
    /// Keep at most this many completed jobs, and as many cancelled; `null`: no count limit.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 0, maximum = 9_223_372_036_854_775_807_u64)
    )]
    pub max_count: Option<Whole<u64>>,
    /// Remove those finished longer ago than this; `null`: no age limit.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 0, maximum = 4_611_686_018_427_387_903_u64)
    )]
    pub max_age_ms: Option<Whole<u64>>,
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
#[serde(remote = "Self", deny_unknown_fields)]
pub struct QueueConfig {
    /// 0–1000, lower runs first (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i32>, minimum = 0, maximum = 1000))]
    pub priority: Option<Whole<i32>>,
    /// 1–1000 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1, maximum = 1000))]
    pub max_attempts: Option<Whole<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// 100 ms to 7 days (default 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub timeout_ms: Option<Whole<u64>>,
    /// 100 ms up to the timeout. `null` or absent: jobs promise no heartbeat and may run their whole
    /// timeout without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub heartbeat_ms: Option<Whole<u64>>,
    /// 0–100 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 0, maximum = 100))]
    pub max_stalled: Option<Whole<u32>>,
    /// How long a completed job keeps holding its unique key: milliseconds (0–365 days; 0 frees it
    /// when the job completes), `"forever"`, or `"retention"` (the default: as long as retention keeps
    /// completed jobs by age, 7 days by default, and for ever when retention sets no age). The key
    /// outlives the job when retention removes it sooner (by count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::UniqueWindow>))]
    pub unique_window_ms: Option<UniqueWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// At most this many active jobs in the queue, across every worker and node (1–1,000,000).
    /// Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)
    )]
    pub concurrency: Option<Whole<u32>>,
    /// At most this many active jobs per group key (1–1,000,000). Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)
    )]
    pub group_concurrency: Option<Whole<u32>>,
    /// At most this many active jobs per concurrency key (1–1,000,000; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)
    )]
    pub key_concurrency: Option<Whole<u32>>,
    /// A token bucket over the queue's claims, all groups together. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A token bucket over each group's claims. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_rate_limit: Option<RateLimit>,
    /// At most this many jobs not yet started (`waiting` and `delayed`, 1–1,000,000,000): an enqueue
    /// that would take the queue past it is refused whole with 429 `rate_limited` and `Retry-After`.
    /// Absent: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)
    )]
    pub max_waiting: Option<Whole<u64>>,
    /// What every job enqueued to the queue must satisfy. Absent: nothing is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<QueuePolicy>,
}

/// Rules every job enqueued to a queue must satisfy, checked against the job with the queue's defaults
/// applied; an enqueue breaking one is refused (400 `invalid`, naming the job's field and the policy).
/// The queue's own defaults must satisfy them too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct QueuePolicy {
    /// Every job carries a `unique_key` (default false).
    #[serde(default)]
    pub require_unique_key: bool,
    /// A payload is at most this many bytes of JSON (2 up to the server's `max_payload_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 2))]
    pub max_payload_bytes: Option<Whole<u64>>,
    /// A job's `timeout_ms` is at least this (100 ms to 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub min_timeout_ms: Option<Whole<u64>>,
    /// A job's `timeout_ms` is at most this (100 ms to 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub max_timeout_ms: Option<Whole<u64>>,
    /// A job's `max_attempts` is at least this (1–1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1, maximum = 1000))]
    pub min_attempts: Option<Whole<u32>>,
    /// A webhook of the queue has the `dead` event, so that someone hears of every dead job (default
    /// false).
    #[serde(default)]
    pub require_dead_letter_route: bool,
}

/// `limit` jobs per `period_ms`, in bursts of up to `burst` (default `limit`): a token bucket the
/// server checks at claim time, for every worker on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RateLimit {
    /// 1–1,000,000.
    #[serde(deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub limit: u32,
    /// 1 ms to a day.
    #[serde(deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400_000))]
    pub period_ms: u64,
    /// 1–1,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)
    )]
    pub burst: Option<Whole<u32>>,
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
#[serde(remote = "Self", deny_unknown_fields)]
pub struct DeadFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Kind>))]
    pub kind: Option<String>,
    /// Only jobs whose latest error message contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
    /// Only jobs whose latest error has this fingerprint (`GET /v1/queues/{queue}/dead/groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// At most this many jobs.
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
    pub limit: Option<Whole<u64>>,
}

/// `GET /v1/queues/{queue}/dead/groups`: dead letters by error fingerprint, the largest groups first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeadGroupList {
    pub groups: Vec<DeadGroupView>,
    /// Dead jobs in the queue's groups: all of its dead jobs, but any that a node of a release
    /// without stored fingerprints killed during a rolling upgrade.
    pub scanned: u64,
    /// False when the queue holds dead jobs in no group (killed by a node of an earlier release
    /// during a rolling upgrade: they are listed, replayed and purged as any, but not grouped).
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

/// How many jobs a bulk action touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CountResponse {
    pub count: u64,
}

/// `PUT /v1/queues/{queue}/webhooks/{name}`: where to POST when one of the queue's jobs ends. Each POST
/// carries `Errand-Signature: t=<ms since the epoch>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by
/// secret>`, `Errand-Webhook: <name>` and `Errand-Delivery: <delivery id>` (the same on every retry of
/// one notice: deduplicate on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct WebhookDef {
    /// `http://` or `https://`, at most 2,048 bytes, without whitespace or control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^https?://[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
            max_length = 2048
        )
    )]
    pub url: String,
    /// The signing key, 16–512 bytes (UTF-8). Never shown again.
    #[cfg_attr(feature = "openapi", schema(min_length = 16, max_length = 512))]
    pub secret: String,
    /// One or more of `completed`, `dead`, `cancelled`, `alert`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<WebhookEvent>, min_items = 1))]
    pub events: Vec<String>,
}

/// What a webhook is told of: a job `completed`, `dead` or `cancelled`, or an `alert` firing. Only for
/// the description: [`WebhookDef::events`] holds these as strings.
#[cfg(feature = "openapi")]
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum WebhookEvent {
    Completed,
    Dead,
    Cancelled,
    Alert,
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

/// `GET /v1/queues/{queue}/flow`: the queue's flow control as it stands — its limits, what is active,
/// the tokens its rate-limit buckets hold now and when the next one comes, and the busiest groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FlowView {
    /// The queue's concurrency limit; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Jobs active in the queue now, on every node.
    pub active: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The queue's bucket now; absent without a rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_rate_limit: Option<RateLimit>,
    /// Groups with active jobs (busiest first), then groups whose buckets are lowest; at most 100.
    pub groups: Vec<GroupFlowView>,
}

/// A token bucket now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BucketView {
    /// Tokens left (fractions build up between whole ones).
    pub tokens: f64,
    /// When the bucket next holds a whole token (ms since the epoch; now when it does).
    pub next_token_at: i64,
}

/// One group's flow control now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GroupFlowView {
    pub key: String,
    pub active: u64,
    /// Absent without a group rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketView>,
}
