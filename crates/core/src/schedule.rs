//! Cron schedules: named definitions, stored in the store, each of whose ticks enqueues one job.
//!
//! **Exactly once across nodes.** A schedule's row holds `next_run_at`, the tick it waits for. Firing a
//! tick is one atomic store operation ([`crate::store::ScheduleFire`]): move `next_run_at` on *only if
//! it still holds the tick that was read*, and insert the tick's job in the same transaction. Two nodes
//! (or two passes) that read the same tick race on that compare-and-set; one wins, the other changes
//! nothing. The job also carries the unique key `schedule:<name>:<tick ms>`, so it can be told apart
//! and found.
//!
//! **Missed ticks** — passed while no server ran, or while maintenance was held up — follow the
//! schedule's [`Missed`] policy. A tick is *on time* if the pass that sees it runs at most
//! [`ON_TIME_MS`] after it; otherwise it was missed:
//!
//! | policy | on-time tick | missed ticks (any number) |
//! |---|---|---|
//! | `skip` (default) | fires | none fire; the schedule waits for its next tick after now |
//! | `catch_up_one` | fires | one job fires, for the latest missed tick |
//!
//! A tick that is on time is also the latest: when an on-time tick and earlier missed ones are seen
//! together, one job fires in either policy. Ticks never fire early, and never twice.
//!
//! **Pause and resume.** A paused schedule fires nothing; on resume it waits for its next tick after
//! the resume (ticks that passed while it was paused are skipped whatever the policy: a pause is a
//! decision, not an outage). **Trigger** enqueues the schedule's job at once, outside the ticks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::id::JobId;
use crate::model::Backoff;

/// How late a pass may see a tick for it to count as on time (60 s): maintenance runs every second,
/// so only an outage or a stalled server is later than this.
pub const ON_TIME_MS: i64 = 60_000;

/// What a schedule does about ticks it missed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    #[default]
    Skip,
    CatchUpOne,
}

/// A schedule's definition, as set by an operator. Stored as JSON; fields this build does not know are
/// ignored when read, so that a node one version behind still reads what a newer one wrote (the API
/// refuses unknown fields at the edge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDef {
    /// 5 fields (`min hour dom month dow`), 6 with seconds first, or an alias such as `@hourly`.
    pub cron: String,
    /// An IANA time zone (default `UTC`); ticks follow its wall clock, DST included.
    #[serde(default = "utc")]
    pub timezone: String,
    pub queue: String,
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub missed: Missed,
    // The options of each job; unset ones take the queue's defaults when the job is enqueued.
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
    /// A definition with every option at its default.
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

/// A stored schedule: its definition and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub def: ScheduleDef,
    pub paused: bool,
    /// The tick it waits for; `None` if its expression never fires again.
    pub next_run_at: Option<Timestamp>,
    /// The latest tick that fired a job, and that job.
    pub last_run_at: Option<Timestamp>,
    pub last_job_id: Option<JobId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The unique key of the job a schedule enqueues for a tick.
pub fn tick_key(name: &str, tick: Timestamp) -> String {
    format!("schedule:{name}:{tick}")
}
