//! The seam between the engine and a store.
//!
//! A store performs *atomic operations* and decides nothing: which state a failed job goes to, how long
//! it backs off, whether a stall kills it, what a unique key conflicts with — the engine works all of that
//! out and hands the store a precise, guarded change. The guard (a lease token, or an expected state) is
//! what makes a read-decide-write sequence safe without holding a lock across it: if anything moved in
//! between, the guard fails and nothing is written.
//!
//! | store | crate | tested by |
//! |---|---|---|
//! | SQLite (embedded, default) | `errand-store-sqlite` | the conformance suite, `errand-store-tests` |
//! | PostgreSQL (several nodes) | `errand-store-postgres` | the same suite, each check in a fresh schema |
//!
//! Every operation is durable when it returns `Ok` (per the store's sync mode), and every batch operation
//! is one transaction.

use async_trait::async_trait;

use crate::model::AuditEntry;
use serde_json::value::RawValue;

use crate::admission::Rules;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{JobId, LeaseToken};
use crate::model::LogLine;
use crate::model::{
    Backoff, DeadReason, ErrorKind, ErrorRecord, Job, JobState, ParentOnDead, QueueConfig,
    QueueInfo, QueueStats,
};
use crate::schedule::Schedule;

pub mod apply;
pub mod row;

pub use row::Current;

/// A fully resolved job, ready to insert: every default applied, every field validated.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: Box<RawValue>,
    /// `Waiting` or `Delayed`.
    pub state: JobState,
    pub priority: i32,
    pub run_at: Timestamp,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    pub heartbeat_ms: Option<u64>,
    pub lease_ms: u64,
    pub max_stalled: u32,
    pub unique_key: Option<String>,
    /// With a unique key: who holds it (see [`UNIQUE_HOLDING_STATES`]) is decided with this instant
    /// ([`QueueConfig::unique_finished_since`]).
    pub unique_finished_since: Timestamp,
    pub group_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub idempotency_key: String,
    pub created_at: Timestamp,
    /// A flow child's parent (inserted in the same batch, in `waiting_children`).
    pub parent_id: Option<JobId>,
    pub parent_on_dead: ParentOnDead,
    /// A flow parent's children (the parent's state is then `WaitingChildren`).
    pub pending_children: u32,
    /// The queue's bound on jobs not yet started, if this job is held to it: the store refuses the
    /// whole insert with [`crate::Error::QueueFull`] when the queue's `waiting` and `delayed` jobs plus
    /// the insert's jobs held to a bound for that queue would exceed the smallest such bound. Counted
    /// before unique keys are resolved, so a repeat that would insert nothing counts too. Checked and
    /// inserted atomically (SQLite's single writer; PostgreSQL's advisory lock per bounded queue).
    pub max_waiting: Option<u64>,
    /// From `expire_after_ms`: not started by then, the job is dead (`Store::job_expiring`).
    pub expires_at: Option<Timestamp>,
}

/// The bounded queues of an insert: `(queue, smallest max_waiting, jobs held to it)`, sorted by queue.
/// A store checks each before it writes anything ([`JobSpec::max_waiting`]).
pub fn waiting_bounds(jobs: &[JobSpec]) -> Vec<(&str, u64, u64)> {
    let mut bounds: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for j in jobs {
        if let Some(max) = j.max_waiting {
            let b = bounds.entry(j.queue.as_str()).or_insert((max, 0));
            b.0 = b.0.min(max);
            b.1 += 1;
        }
    }
    bounds
        .into_iter()
        .map(|(q, (max, n))| (q, max, n))
        .collect()
}

/// The refusal of an insert that would take `queue` past `max_waiting`, given that it holds `held`
/// jobs not yet started and the insert adds `adding`; `None` when it fits.
pub fn over_bound(queue: &str, max_waiting: u64, held: u64, adding: u64) -> Option<crate::Error> {
    (held.saturating_add(adding) > max_waiting).then(|| crate::Error::QueueFull {
        queue: queue.to_string(),
        max_waiting,
    })
}

/// The states in which a job holds its unique key whatever its finish time. Who holds a unique key is
/// the rule every store applies, written once here. A job of the same queue with the same key holds it
/// when it is
/// - unfinished (`waiting`, `delayed`, `active`, `waiting_children`) or `dead` (a dead job may be
///   replayed, which would run its work beside a repeat), or
/// - `completed` and finished strictly after `since` (the queue's unique window), or
/// - gone, pruned by retention as a completed job, while the store's ledger of held keys keeps its key
///   with a finish strictly after `since`: a key outlives its job's row.
///
/// A `cancelled` job holds nothing, and neither does a dead job once purged. When several jobs hold a
/// key, the holder is the newest; a job row is preferred over a ledger entry.
///
/// [`JobPrune`] moves the keys of the completed jobs it deletes into the ledger while they are still
/// held, and drops ledger entries that are no longer held.
pub const UNIQUE_HOLDING_STATES: [JobState; 5] = [
    JobState::Waiting,
    JobState::Delayed,
    JobState::Active,
    JobState::WaitingChildren,
    JobState::Dead,
];

/// A queue's flow-control state as stored ([`Store::flow_state`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowRows {
    pub active: u64,
    pub queue_bucket: Option<crate::admission::Bucket>,
    pub groups: Vec<GroupFlowRow>,
}

/// `busy` (the groups with active jobs, busiest first) followed by the groups of `lowest` (buckets,
/// emptiest first) not among them: limited now, though nothing of theirs runs; at most `limit` in all.
/// The order of [`Store::flow_state`]'s groups, for every store.
pub fn busy_then_lowest(
    mut busy: Vec<GroupFlowRow>,
    lowest: impl IntoIterator<Item = (String, crate::admission::Bucket)>,
    limit: usize,
) -> Vec<GroupFlowRow> {
    for (key, bucket) in lowest {
        if busy.len() >= limit {
            break;
        }
        if !busy.iter().any(|g| g.key == key) {
            busy.push(GroupFlowRow {
                key,
                active: 0,
                bucket: Some(bucket),
            });
        }
    }
    busy
}

/// One group's part of [`FlowRows`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupFlowRow {
    pub key: String,
    pub active: u64,
    pub bucket: Option<crate::admission::Bucket>,
}

/// One part of a store's footprint on disk ([`Store::footprint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreObject {
    /// A file (`errand.db`) or a table (`jobs`).
    pub name: String,
    /// `file` or `wal` (embedded), `table` or `indexes` (PostgreSQL).
    pub kind: &'static str,
    pub bytes: u64,
}

/// Insert jobs, all or none.
#[derive(Debug, Clone)]
pub struct JobInsert {
    pub jobs: Vec<JobSpec>,
}

/// What happened to one [`JobSpec`] of a [`JobInsert`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Inserted as given.
    New,
    /// Not inserted: this job holds the unique key (possibly one inserted earlier in the same batch, or
    /// one retention removed while its key stays held: then `state` is `completed` and the id no longer
    /// names a stored job).
    Existing { id: JobId, state: JobState },
}

/// Claim up to `limit` due jobs from unpaused `queues`, best first: lower priority number, then earlier
/// `run_at`, then lower id. Each claimed job gets `lease` as its token, attempt + 1,
/// `lease_expires_at = now + min(lease_ms, lease_cap_ms)`, `deadline_at = now + timeout_ms`.
///
/// The jobs of one claim share its token: every lease check pairs the token with the job id, and the
/// jobs of one claim all go to the same worker, so sharing gives no one anything; the token is new for
/// every claim, so a lease is never confused with an earlier lease of the same job.
///
/// First, in the same transaction, the delayed jobs of `queues` due at `now` (at most `promote_limit`)
/// become waiting, so that a job is claimable the moment it is due without another round trip.
///
/// **Flow control.** A queue whose rules limit it ([`Rules::limits_queue`]), or that has waiting jobs
/// with a group or concurrency key, is claimed from as [`plan`](crate::admission::plan) says, under a lock per queue
/// that every such claim of the queue takes, on every node: the candidates are the best waiting jobs of
/// each group in rotation order ([`rotation`](crate::admission::rotation), at most
/// [`MAX_GROUPS_PER_CLAIM`](crate::admission::MAX_GROUPS_PER_CLAIM)
/// groups, [`candidates_per_group`](crate::admission::candidates_per_group) each), leaving out jobs whose concurrency key is already
/// at `key_concurrency`; the plan's buckets and cursor are stored in the same transaction. The jobs of
/// several queues are merged best first, each queue's plan keeping its own order.
#[derive(Debug, Clone)]
pub struct JobClaim {
    pub queues: Vec<String>,
    /// The rules of each of `queues`, in the same order.
    pub rules: Vec<Rules>,
    pub worker_id: String,
    pub limit: usize,
    pub lease: LeaseToken,
    /// The claiming worker promised heartbeats: each claimed job's lease lasts
    /// `min(lease_ms, lease_cap_ms)`, now and at every renewal of this lease (the store keeps the cap
    /// with the lease; the next claim sets its own).
    pub lease_cap_ms: Option<u64>,
    pub now: Timestamp,
    pub promote_limit: usize,
}

/// What a [`JobClaim`] did.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Delayed jobs that became waiting (some may also be among `jobs`).
    pub promoted: Vec<(JobId, Transitioned)>,
    /// The claimed jobs, as they are after the claim, best first.
    pub jobs: Vec<Job>,
    /// A rate limit held back waiting jobs: no token before this instant.
    pub retry_at: Option<Timestamp>,
    /// A concurrency limit held back waiting jobs: a job leaving `active` may free one.
    pub blocked: bool,
}

/// Renew a lease: the job must be active, hold `token`, and the lease must not have expired yet.
#[derive(Debug, Clone)]
pub struct LeaseRenew {
    pub id: JobId,
    pub token: LeaseToken,
    pub now: Timestamp,
    /// Replaces the job's progress when set.
    pub progress: Option<Box<RawValue>>,
}

/// The state of a job after a successful [`LeaseRenew`].
#[derive(Debug, Clone, PartialEq)]
pub struct Renewed {
    pub lease_expires_at: Timestamp,
    pub cancel_requested: bool,
    /// The job's queue and the worker holding the lease (metrics count the workers seen per queue).
    pub queue: String,
    pub worker_id: Option<String>,
}

/// What must hold for a [`Transition`] to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Guard {
    /// The job is active under this lease token.
    Lease(LeaseToken),
    /// The job is in this state.
    State(JobState),
}

/// How a [`Transition`] changes the attempt count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attempts {
    #[default]
    Keep,
    /// Give back the attempt that a stalled claim counted.
    GiveBack,
    /// Start a fresh budget (a replay from the dead-letter queue).
    Reset,
}

/// One guarded state change. Leaving `active` always ends the lease; entering a final state sets
/// `finished_at = now`; entering a non-final state clears `finished_at`, `dead_reason` and the cancel flag.
#[derive(Debug, Clone)]
pub struct Transition {
    pub id: JobId,
    pub guard: Guard,
    pub to: JobState,
    pub now: Timestamp,
    /// Sets `run_at` (for `waiting` and `delayed`).
    pub run_at: Option<Timestamp>,
    /// Sets the result (for `completed`).
    pub result: Option<Box<RawValue>>,
    /// Appends to the job's error records.
    pub error: Option<ErrorRecord>,
    /// Sets the dead reason (for `dead`).
    pub dead_reason: Option<DeadReason>,
    /// Sets the error fingerprint (for `dead`, with the dead reason: [`Job::error_fingerprint`] of the
    /// job with `error` appended), by which the store keeps each queue's dead letters counted per
    /// fingerprint (see [`Store::dead_groups`]). Cleared by any other state.
    pub fingerprint: Option<String>,
    pub attempts: Attempts,
    /// Counts a stall.
    pub stalled: bool,
    /// Also guards on the job's cancel flag: applies only if it still has this value. A failure or stall
    /// is decided on the flag the engine read; a cancel requested since must not be lost.
    pub expect_cancel_requested: Option<bool>,
    /// Also guards on the lease's end: applies only if the lease still ends at this instant.
    /// Maintenance recovers a lease it read as expired; a heartbeat since then renewed it (possibly to
    /// an earlier instant, when the clock went back meanwhile), and that lease is not to be taken.
    pub expect_lease_expires_at: Option<Timestamp>,
    /// Also guards on the job's unique key (for reviving a dead or cancelled job): applies only if no
    /// *other* job of its queue holds it, by the rule of [`UNIQUE_HOLDING_STATES`] with this `since` —
    /// except that other *dead* jobs do not count: several dead jobs may share a key (made before dead
    /// jobs held keys), and reviving one makes it the holder the others then yield to.
    pub unique_free_since: Option<Timestamp>,
}

impl Transition {
    /// A transition with nothing but the guard and the target set.
    pub fn new(id: JobId, guard: Guard, to: JobState, now: Timestamp) -> Self {
        Transition {
            id,
            guard,
            to,
            now,
            run_at: None,
            result: None,
            error: None,
            dead_reason: None,
            fingerprint: None,
            attempts: Attempts::Keep,
            stalled: false,
            expect_cancel_requested: None,
            expect_lease_expires_at: None,
            unique_free_since: None,
        }
    }
}

impl Transition {
    /// Makes this transition the job's death for `reason`, fingerprinted by the job's `kind` and the
    /// error the transition appends (set `error` first): what [`Job::error_fingerprint`] then gives.
    pub fn die(&mut self, reason: DeadReason, kind: &str) {
        self.to = JobState::Dead;
        self.dead_reason = Some(reason);
        let message = self.error.as_ref().map_or("", |e| e.message.as_str());
        self.fingerprint = Some(crate::fingerprint::of(kind, message));
    }

    /// A plain completion: completed under a lease, nothing else changed but the result. Stores apply
    /// these — the bulk of the traffic — with one set-based statement.
    pub fn is_plain_completion(&self) -> bool {
        matches!(self.guard, Guard::Lease(_))
            && self.to == JobState::Completed
            && self.run_at.is_none()
            && self.error.is_none()
            && self.dead_reason.is_none()
            && self.fingerprint.is_none()
            && self.attempts == Attempts::Keep
            && !self.stalled
            && self.expect_cancel_requested.is_none()
            && self.expect_lease_expires_at.is_none()
            && self.unique_free_since.is_none()
    }

    /// The error for a transition whose guard failed, given the job as it is now (`None`: no such job).
    /// Every store reports a failed guard the same way.
    pub fn guard_failure(&self, id: &str, current: Option<Current>) -> Error {
        let Some(Current {
            state,
            lease_token: token,
            cancel_requested: cancel,
        }) = current
        else {
            return Error::NotFound(format!("job {id}"));
        };
        match &self.guard {
            Guard::Lease(want)
                if state == JobState::Active && token.as_deref() == Some(want.as_str()) =>
            {
                if self.expect_cancel_requested.is_some_and(|c| c != cancel) {
                    Error::Conflict(format!("a cancel of job {id} was requested meanwhile"))
                } else {
                    Error::Conflict(format!("job {id} changed meanwhile"))
                }
            }
            Guard::Lease(_) => Error::LeaseLost,
            Guard::State(want) if state == *want && self.unique_free_since.is_some() => {
                Error::Conflict(format!(
                    "job {id}: another job of its queue holds its unique key (unfinished, dead, or \
                     completed within the queue's unique window)"
                ))
            }
            Guard::State(want) => Error::Conflict(format!("job {id} is {state}, not {want}")),
        }
    }
}

/// What a flow child's change does to its parent (see [`Store::job_transition`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ParentEffect {
    /// One child less to wait for.
    Release,
    /// The parent dies, with this error record.
    Fail(ErrorRecord),
}

impl ParentEffect {
    /// The effect of child `child` (whose stored `parent_on_dead` is `on_dead`) entering `to` at `now`;
    /// `None` for a state that is not an end.
    pub fn of(
        child: &str,
        on_dead: Option<&str>,
        to: JobState,
        now: Timestamp,
    ) -> Result<Option<ParentEffect>> {
        let on_dead = ParentOnDead::parse(on_dead).ok_or_else(|| {
            Error::Backend(format!("stored parent_on_dead of job {child} is invalid").into())
        })?;
        Ok(match to {
            JobState::Completed => Some(ParentEffect::Release),
            JobState::Dead | JobState::Cancelled if on_dead == ParentOnDead::Release => {
                Some(ParentEffect::Release)
            }
            JobState::Dead | JobState::Cancelled => Some(ParentEffect::Fail(ErrorRecord {
                stack: None,
                attempt: 0,
                kind: ErrorKind::Error,
                message: format!("child {child} is {to}"),
                at: now,
            })),
            _ => None,
        })
    }
}

/// The job a [`Transition`] applied to.
#[derive(Debug, Clone, PartialEq)]
pub struct Transitioned {
    pub queue: String,
    pub kind: String,
    /// The state it left.
    pub from: JobState,
    /// Its attempt count after the change.
    pub attempts: u32,
    /// When its latest attempt started (its claim). Stores report it for a change out of `active`
    /// (the attempt's run time is measured from it); elsewhere it may be `None`.
    pub started_at: Option<Timestamp>,
    /// The flow parent this change moved (see [`Store::job_transition`]): its id, new state, and what
    /// it was.
    pub parent: Option<ParentMove>,
}

/// A flow parent moved by its child's change: its id, its new state, and what it was.
pub type ParentMove = Box<(JobId, JobState, Transitioned)>;

impl Transitioned {
    /// A change that moved no parent.
    pub fn new(queue: String, kind: String, from: JobState, attempts: u32) -> Self {
        Transitioned {
            queue,
            kind,
            from,
            attempts,
            started_at: None,
            parent: None,
        }
    }
}

/// A page of one queue's jobs in one state, in id order, after `after`.
#[derive(Debug, Clone)]
pub struct JobList {
    pub queue: String,
    pub state: JobState,
    pub kind: Option<String>,
    /// Only jobs holding this unique key (found through the unique-key index, not a scan).
    pub unique_key: Option<String>,
    pub after: Option<JobId>,
    pub limit: usize,
}

/// A queue's dead letters of one error fingerprint, as the store keeps them counted.
#[derive(Debug, Clone)]
pub struct DeadGroupRow {
    pub fingerprint: String,
    pub count: u64,
    /// The group's dead job that finished last (of those that finished at once, the greatest id).
    pub latest: Job,
}

/// A queue's dead-letter groups: the largest `limit` (most jobs first, then by fingerprint), and
/// how many dead jobs all its groups hold.
#[derive(Debug, Clone)]
pub struct DeadGroupRows {
    pub groups: Vec<DeadGroupRow>,
    pub total: u64,
}

/// Delete finished jobs of `queue` in `states`: beyond the `keep` most recently finished, and those that
/// finished before `finished_before`. At most `limit` rows per call.
///
/// In the same transaction, the unique keys of the deleted `completed` jobs that finished after
/// `unique_finished_since` go into the ledger of held keys (see [`UNIQUE_HOLDING_STATES`]), and the
/// queue's ledger entries that finished at or before it (no longer held) are dropped, at most `limit`.
#[derive(Debug, Clone)]
pub struct JobPrune {
    pub queue: String,
    pub states: Vec<JobState>,
    pub keep: Option<u64>,
    pub finished_before: Option<Timestamp>,
    pub unique_finished_since: Timestamp,
    pub limit: usize,
}

/// Delete these jobs if each is (still) in the given state.
#[derive(Debug, Clone)]
pub struct JobDelete {
    pub ids: Vec<(JobId, JobState)>,
}

/// Replace a waiting or delayed job's payload, priority and run time (and so its state, waiting or
/// delayed), if it is still in state `from`; `false` (and nothing written) otherwise.
#[derive(Debug, Clone)]
pub struct JobReplace {
    pub id: JobId,
    pub from: JobState,
    pub payload: Box<RawValue>,
    pub priority: i32,
    pub run_at: Timestamp,
    pub state: JobState,
    /// The new job's time to live (`None`: none), replacing the old job's with the rest of its input.
    pub expires_at: Option<Timestamp>,
}

/// Append log lines to an active job under its lease, each tagged with `now` and the job's current
/// attempt; then keep only the job's latest `keep` lines. `Err(LeaseLost)` if the lease is not the
/// job's current one (`Err(NotFound)` if there is no such job), and nothing is written.
#[derive(Debug, Clone)]
pub struct JobLogAppend {
    pub id: JobId,
    pub token: LeaseToken,
    pub now: Timestamp,
    pub lines: Vec<String>,
    pub keep: usize,
}

impl JobLogAppend {
    /// Whether the lines may be appended, given the job's current `(state, lease_token)` (`None`: no
    /// such job): every store answers the same way.
    pub fn check(&self, current: Option<(&str, Option<&str>)>) -> Result<()> {
        match current {
            None => Err(Error::NotFound(format!("job {}", self.id))),
            Some(("active", Some(token))) if token == self.token => Ok(()),
            Some(_) => Err(Error::LeaseLost),
        }
    }
}

/// Fire one tick of a schedule, if it is still the tick the schedule waits for: in one transaction, when
/// the schedule exists, is not paused and its `next_run_at` equals `expect_next`, set `next_run_at` to
/// `next` and insert `job` (if any) as [`Store::job_insert`] would (its unique key may name an existing
/// job); with a job, `last_run_at` becomes `tick` and `last_job_id` the id of the job inserted or found.
/// Otherwise change nothing. This compare-and-set is what makes a tick fire once across nodes.
#[derive(Debug, Clone)]
pub struct ScheduleFire {
    pub name: String,
    pub expect_next: Timestamp,
    pub next: Option<Timestamp>,
    /// The tick `job` is for; `None` when no job fires (missed ticks skipped).
    pub tick: Option<Timestamp>,
    pub job: Option<JobSpec>,
    pub now: Timestamp,
}

/// What [`Store::schedule_fire`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// The tick was not (or no longer) the schedule's: nothing changed.
    Stale,
    /// The schedule moved on; `job` is what its job insert did (`None`: no job was to fire).
    Moved { job: Option<Inserted> },
}

/// The store. See the module documentation for the contract.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts a batch atomically. A job whose unique key conflicts is not inserted and is reported as
    /// [`Inserted::Existing`]; the check and the insert are one atomic step, also under concurrency.
    async fn job_insert(&self, p: JobInsert) -> Result<Vec<Inserted>>;

    /// Promotes due delayed jobs of the queues and claims the best waiting ones (see [`JobClaim`]).
    async fn job_claim(&self, p: JobClaim) -> Result<Claimed>;

    /// Renews a lease: it ends a lease's length from `now`, or when it ended before if that is later —
    /// a clock gone back never brings a lease's end forward. `Err(LeaseLost)` if the guard fails.
    async fn lease_renew(&self, p: LeaseRenew) -> Result<Renewed>;

    /// Applies transitions, each independently guarded, in one transaction. A failed guard gives, for
    /// that item, `Err(NotFound)`, `Err(LeaseLost)` (the lease is not the job's), or `Err(Conflict)`
    /// (the state, the cancel flag or the unique key is not as required), and leaves the others applied.
    ///
    /// **Flows.** In the same transaction, a job with a parent that enters `completed` — or `dead` or
    /// `cancelled` with `parent_on_dead: release` — takes one off its parent's `pending_children` if
    /// the parent is in `waiting_children`; at zero the parent becomes `waiting`. One that enters `dead`
    /// or `cancelled` with `parent_on_dead: fail` makes a parent in `waiting_children` `dead`
    /// ([`DeadReason::ChildDead`], `finished_at = now`). The parent's move is reported in
    /// [`Transitioned::parent`].
    async fn job_transition(&self, p: Vec<Transition>) -> Result<Vec<Result<Transitioned>>>;

    /// Marks an active job as cancel-requested. `Err(Conflict)` if it is not active.
    async fn job_request_cancel(&self, id: JobId) -> Result<Transitioned>;

    /// Moves the delayed jobs of `queue` due at `now` to waiting (at most `limit`), returning those moved.
    async fn job_promote_due(
        &self,
        queue: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(JobId, Transitioned)>>;

    /// Active jobs whose lease expired or whose deadline passed at `now` (at most `limit`).
    async fn job_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>>;

    /// Jobs not yet started (`waiting` or `delayed`) whose `expires_at` is at or before `now`, at most
    /// `limit`, soonest expired first.
    async fn job_ttl_passed(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>>;

    /// One job.
    async fn job_get(&self, id: JobId) -> Result<Option<Job>>;

    /// A page of a queue's jobs in one state.
    async fn job_list(&self, p: JobList) -> Result<Vec<Job>>;

    /// Deletes old finished jobs; returns how many.
    async fn job_prune(&self, p: JobPrune) -> Result<u64>;

    /// Deletes the given jobs that are still in their given state; returns how many.
    async fn job_delete(&self, p: JobDelete) -> Result<u64>;

    /// One queue's configuration, if it was ever configured or used.
    async fn queue_get(&self, name: &str) -> Result<Option<QueueInfo>>;

    /// Every queue that was configured or used.
    async fn queue_list(&self) -> Result<Vec<QueueInfo>>;

    /// Sets a queue's configuration (creating the queue).
    async fn queue_put(&self, name: &str, config: QueueConfig) -> Result<()>;

    /// Pauses or resumes a queue (creating it).
    async fn queue_set_paused(&self, name: &str, paused: bool) -> Result<()>;

    /// Appends to the audit log (its `id` is given by the store).
    async fn audit_append(&self, e: AuditEntry) -> Result<()>;

    /// The audit log, newest first: up to `limit` entries with ids below `before` (all when `None`).
    async fn audit_list(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Removes audit entries that were made before `before`, at most `limit` of them, from the oldest
    /// end of the log: among the `limit` entries with the lowest ids, those older than `before`. The
    /// work is bounded by `limit`, however long the log; entries are appended in time order, so the
    /// oldest are the first. Answers how many it removed.
    async fn audit_prune(&self, before: Timestamp, limit: usize) -> Result<u64>;

    /// [`Store::queue_stats`] of every queue [`Store::queue_list`] names, in name order, in a bounded
    /// number of round trips (a scrape of a thousand queues must stay cheap).
    async fn queue_stats_all(&self, now: Timestamp) -> Result<Vec<QueueStats>>;

    /// The live flow-control state of `queue`: its active jobs, its rate-limit bucket, and per group
    /// (at most `limit` of them: those with the most active jobs, then those whose buckets hold the
    /// fewest tokens) its active jobs and bucket.
    async fn flow_state(&self, queue: &str, limit: usize) -> Result<FlowRows>;

    /// What the store takes on disk, part by part: for the embedded store its database and WAL
    /// files, for PostgreSQL each table of its schema and that table's indexes.
    async fn footprint(&self) -> Result<Vec<StoreObject>>;

    /// Counts per state and the oldest waiting job's age.
    async fn queue_stats(&self, name: &str, now: Timestamp) -> Result<QueueStats>;

    /// Queue `name`'s dead letters by error fingerprint (the one stored when each died), the largest
    /// `limit` groups. Kept counted as jobs die, are revived and are deleted, so that the cost does not
    /// grow with the dead jobs retained: a few rows per group, and one index seek per group returned.
    /// Jobs that died without a fingerprint (by a node of an earlier release) are in no group.
    async fn dead_groups(&self, name: &str, limit: usize) -> Result<DeadGroupRows>;

    /// Replaces a job's input if it is still in the expected state (see [`JobReplace`]).
    async fn job_replace(&self, p: JobReplace) -> Result<bool>;

    /// Appends log lines to a job (see [`JobLogAppend`]). Deleting a job deletes its lines.
    async fn job_log_append(&self, p: JobLogAppend) -> Result<()>;

    /// A job's log lines, oldest first.
    async fn job_logs(&self, id: JobId) -> Result<Vec<LogLine>>;

    /// A flow parent's children, in id order (at most `limit`).
    async fn job_children(&self, parent: JobId, limit: usize) -> Result<Vec<Job>>;

    /// Creates a schedule, or replaces an existing one's definition and `next_run_at`, keeping its pause
    /// flag (a pause made meanwhile is not undone), `created_at`, `last_run_at` and `last_job_id`.
    async fn schedule_put(&self, s: Schedule) -> Result<()>;

    /// One schedule.
    async fn schedule_get(&self, name: &str) -> Result<Option<Schedule>>;

    /// Every schedule, by name.
    async fn schedule_list(&self) -> Result<Vec<Schedule>>;

    /// Deletes a schedule; `false` if there was none.
    async fn schedule_delete(&self, name: &str) -> Result<bool>;

    /// Pauses or resumes a schedule, setting its `next_run_at`; `false` if there is no such schedule.
    async fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool>;

    /// Unpaused schedules whose `next_run_at` is at or before `now`, earliest first (at most `limit`).
    async fn schedule_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>>;

    /// Fires one tick (see [`ScheduleFire`]).
    async fn schedule_fire(&self, p: ScheduleFire) -> Result<Fired>;

    /// Takes or keeps the lead of `role` (e.g. `maintenance`) for `holder` for `ttl_ms`, if no other
    /// holder has it: work that should run on one node at a time goes to the node that gets `true`. The
    /// lead lapses when its holder stops renewing it (it died), so another node takes over. A store used
    /// by one process only may always answer `true`, as the default does.
    async fn try_lead(&self, role: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        let _ = (role, holder, ttl_ms);
        Ok(true)
    }

    /// Names of queues where jobs became due through *another* process sharing this store (another
    /// server node), so that this process can wake its long-polling fetches. `None`: no other process
    /// writes to this store (the engine's own events cover everything).
    fn subscribe_due(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}
