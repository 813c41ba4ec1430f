//! The bodies of the server's `routes/schedules.rs`: a cron schedule's definition and how it stands.
//! The jobs a tick enqueues are answered as [`Enqueued`](crate::Enqueued); when ticks fire is the
//! server's business.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use crate::schema;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::object::object_only;
use crate::{Backoff, Whole};

object_only!(ScheduleDef);

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
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ScheduleDef {
    /// 5 fields (`min hour day-of-month month day-of-week`), 6 with seconds first, or `@yearly`
    /// (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`; at most 256 bytes.
    /// Names (`JAN`, `MON`), lists, ranges, steps and `L`, `W`, `#`, `?` are understood. An
    /// expression that never fires (`0 0 30 2 *`) is refused.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub cron: String,
    /// An IANA time zone (default `UTC`), case-sensitive: ticks follow its wall clock, daylight
    /// saving included.
    #[serde(default = "utc")]
    pub timezone: String,
    #[cfg_attr(feature = "openapi", schema(value_type = schema::JobQueueName))]
    pub queue: String,
    #[cfg_attr(feature = "openapi", schema(value_type = schema::Kind))]
    pub kind: String,
    /// Any JSON, at most 1 MiB serialized and 64 levels deep.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Value,
    #[serde(default)]
    pub missed: Missed,
    /// 0–1000, lower runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i32>, minimum = 0, maximum = 1000))]
    pub priority: Option<Whole<i32>>,
    /// 1–1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1, maximum = 1000))]
    pub max_attempts: Option<Whole<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// 100 ms to 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub timeout_ms: Option<Whole<u64>>,
    /// 100 ms up to the job's timeout (its own, or the queue's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 604_800_000_u64)
    )]
    pub heartbeat_ms: Option<Whole<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
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
