//! The stored form of a job, as both stores keep it, and what a store builds from what its statements
//! return: a [`Job`] from a row of `jobs` ([`JobRow::decode`]), a transition's outcome from the row it
//! changed ([`Applied`], [`Completions`]), a flow parent's move ([`ParentRow::into_move`]), and the error
//! for a failed guard from the job as it is now ([`Current`]). A store maps its columns into these types
//! and runs its statements; what the values mean is decided here, once.

use std::collections::HashMap;

use crate::clock::Timestamp;
use crate::engine::raw_json;
use crate::error::{Error, Result};
use crate::id::JobId;
use crate::model::{DeadReason, Job, JobState, Lease, ParentOnDead};

use super::{Attempts, Guard, ParentMove, Transition, Transitioned};

/// A stored value that does not decode: corruption, reported as a backend error naming the field.
pub fn corrupt_field(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Backend(format!("stored {what} is invalid: {detail}").into())
}

/// A row of `jobs` as a store read it, every column in its stored form (JSON as text, times as
/// milliseconds, states as their names). Both stores keep the same 35 columns.
#[derive(Debug, Clone, Default)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: String,
    pub state: String,
    pub priority: i32,
    pub run_at: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub backoff: String,
    pub timeout_ms: i64,
    pub heartbeat_ms: Option<i64>,
    pub lease_ms: i64,
    pub max_stalled: u32,
    pub stalls: u32,
    pub unique_key: Option<String>,
    pub group_key: Option<String>,
    pub idempotency_key: String,
    pub progress: Option<String>,
    pub result: Option<String>,
    pub errors: Option<String>,
    pub dead_reason: Option<String>,
    pub cancel_requested: bool,
    pub lease_token: Option<String>,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub deadline_at: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub concurrency_key: Option<String>,
    pub parent_id: Option<String>,
    pub parent_on_dead: Option<String>,
    pub pending_children: u32,
    pub expires_at: Option<i64>,
}

impl JobRow {
    /// The job the row holds. A row that does not decode is corruption, reported as a backend error.
    pub fn decode(self) -> Result<Job> {
        let state =
            JobState::parse(&self.state).ok_or_else(|| corrupt_field("state", &self.state))?;
        let lease = match (state, self.lease_expires_at) {
            (JobState::Active, Some(expires_at)) => Some(Lease {
                token: self.lease_token.clone().unwrap_or_default(),
                worker_id: self.worker_id.unwrap_or_default(),
                expires_at,
                deadline_at: self.deadline_at.unwrap_or(expires_at),
            }),
            _ => None,
        };
        let json = |what: &str, s: String| raw_json(s).map_err(|e| corrupt_field(what, e));
        Ok(Job {
            id: parse_id(&self.id)?,
            queue: self.queue,
            kind: self.kind,
            payload: json("payload", self.payload)?,
            state,
            priority: self.priority,
            run_at: self.run_at,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            backoff: serde_json::from_str(&self.backoff)
                .map_err(|e| corrupt_field("backoff", e))?,
            timeout_ms: self.timeout_ms as u64,
            heartbeat_ms: self.heartbeat_ms.map(|h| h as u64),
            lease_ms: self.lease_ms as u64,
            max_stalled: self.max_stalled,
            stalls: self.stalls,
            unique_key: self.unique_key,
            group_key: self.group_key,
            concurrency_key: self.concurrency_key,
            parent_id: self
                .parent_id
                .map(|p| p.parse().map_err(|e| corrupt_field("parent_id", e)))
                .transpose()?,
            parent_on_dead: ParentOnDead::parse(self.parent_on_dead.as_deref())
                .ok_or_else(|| corrupt_field("parent_on_dead", "unknown value"))?,
            pending_children: self.pending_children,
            idempotency_key: self.idempotency_key,
            progress: self.progress.map(|p| json("progress", p)).transpose()?,
            result: self.result.map(|r| json("result", r)).transpose()?,
            errors: match self.errors {
                Some(e) => serde_json::from_str(&e).map_err(|e| corrupt_field("errors", e))?,
                None => Vec::new(),
            },
            dead_reason: self
                .dead_reason
                .map(|d| DeadReason::parse(&d).ok_or_else(|| corrupt_field("dead_reason", d)))
                .transpose()?,
            cancel_requested: self.cancel_requested,
            lease,
            last_lease_token: self.lease_token,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            expires_at: self.expires_at,
        })
    }
}

/// Decodes rows, keeping the first error.
pub fn decode_all(rows: impl IntoIterator<Item = JobRow>) -> Result<Vec<Job>> {
    rows.into_iter().map(JobRow::decode).collect()
}

/// A stored job id.
pub fn parse_id(s: &str) -> Result<JobId> {
    s.parse().map_err(|e| corrupt_field("id", e))
}

/// A stored state name.
pub fn parse_state(s: &str) -> Result<JobState> {
    JobState::parse(s).ok_or_else(|| corrupt_field("state", s))
}

/// A job as it is now, read after a transition's guard failed: what [`Transition::guard_failure`] tells
/// the caller from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub state: JobState,
    pub lease_token: Option<String>,
    pub cancel_requested: bool,
}

impl Current {
    /// From the stored `(state, lease_token, cancel_requested)`.
    pub fn from_stored(
        state: &str,
        lease_token: Option<String>,
        cancel_requested: bool,
    ) -> Result<Self> {
        Ok(Current {
            state: parse_state(state)?,
            lease_token,
            cancel_requested,
        })
    }
}

/// What a store's statements need of a transition besides its fields.
impl Transition {
    /// The state the guard expects, and the lease token it names (`None` for a state guard).
    pub fn guard_parts(&self) -> (JobState, Option<&str>) {
        match &self.guard {
            Guard::Lease(token) => (JobState::Active, Some(token.as_str())),
            Guard::State(s) => (*s, None),
        }
    }
}

impl Attempts {
    /// The code the transition statements of both stores take: 0 keep, 1 give back, 2 reset.
    pub fn code(self) -> i32 {
        match self {
            Attempts::Keep => 0,
            Attempts::GiveBack => 1,
            Attempts::Reset => 2,
        }
    }
}

/// The row a guarded change returned: the job's outcome so far, and what its parent needs to know.
#[derive(Debug)]
pub struct Applied {
    pub moved: Transitioned,
    /// The job's flow parent, if it has one: the store applies [`super::ParentEffect`] to it next.
    pub parent: Option<String>,
    /// The job's stored `parent_on_dead`.
    pub on_dead: Option<String>,
}

impl Applied {
    /// From the columns the transition statements return: `queue, kind, attempts, parent_id,
    /// parent_on_dead, started_at`.
    pub fn new(
        from: JobState,
        (queue, kind, attempts): (String, String, u32),
        parent: Option<String>,
        on_dead: Option<String>,
        started_at: Option<Timestamp>,
    ) -> Applied {
        Applied {
            moved: Transitioned {
                started_at,
                ..Transitioned::new(queue, kind, from, attempts)
            },
            parent,
            on_dead,
        }
    }
}

/// The plain completions one set-based statement applied, keyed by `(id, lease token)`: a batch may name
/// one job twice, with a stale token and the current one.
#[derive(Debug, Default)]
pub struct Completions(HashMap<(String, String), Applied>);

impl Completions {
    /// Records a completed row: `id, lease_token, queue, kind, attempts, parent_id, started_at`.
    pub fn insert(
        &mut self,
        (id, token): (String, String),
        job: (String, String, u32),
        parent: Option<String>,
        started_at: Option<Timestamp>,
    ) {
        let applied = Applied::new(JobState::Active, job, parent, None, started_at);
        self.0.insert((id, token), applied);
    }

    /// The outcome of plain completion `t`, if the statement applied it. Taken, not read: if a batch names
    /// one lease twice, only the first is told it applied it.
    pub fn take(&mut self, id: &str, t: &Transition) -> Option<Applied> {
        let (_, token) = t.guard_parts();
        self.0
            .remove(&(id.to_string(), token.unwrap_or_default().to_string()))
    }
}

/// What a flow parent's guarded change returned: `state, queue, kind, attempts`.
#[derive(Debug)]
pub struct ParentRow {
    pub state: String,
    pub queue: String,
    pub kind: String,
    pub attempts: u32,
}

impl ParentRow {
    /// The parent's move, if it moved out of `waiting_children` (a release that leaves children to wait
    /// for moves nothing).
    pub fn into_move(self, parent: &str) -> Result<Option<ParentMove>> {
        let state = parse_state(&self.state)?;
        if state == JobState::WaitingChildren {
            return Ok(None);
        }
        let id = parent.parse().map_err(|e| corrupt_field("parent_id", e))?;
        let moved = Transitioned::new(
            self.queue,
            self.kind,
            JobState::WaitingChildren,
            self.attempts,
        );
        Ok(Some(Box::new((id, state, moved))))
    }
}
