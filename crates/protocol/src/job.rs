//! A job as every route group shows it: its state ([`JobState`]), its backoff policy ([`Backoff`]) and
//! its view ([`JobView`], [`JobPage`]). What a route takes to create or change a job is in that route
//! group's module (`jobs`, `flows`, `work`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::object::object_only;
use crate::whole::{self, Whole};

object_only!(Backoff);

/// How long to wait before the next attempt after a failure (see the queue configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Backoff {
    /// `fixed` or `exponential` (`delay_ms · 2^(n−1)` after the n-th failure).
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// At most 30 days.
    #[serde(deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2_592_000_000_u64))]
    pub delay_ms: u64,
    /// Takes off a random part of up to this fraction of each delay (0–1).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub jitter: f64,
    /// Caps each delay; at most 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 0, maximum = 2_592_000_000_u64)
    )]
    pub max_ms: Option<Whole<u64>>,
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
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub progress: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub result: Option<Box<RawValue>>,
    /// One per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// `attempts_exhausted`, `non_retryable`, `stalled`, `child_dead` or `expired`, for a dead job.
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
    /// From `expire_after_ms`: not started by then, the job ends dead (`expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// A page of jobs. Pass `next_cursor` back as `cursor` for the next page; it is absent on the last page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
