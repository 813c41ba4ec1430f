//! The engine: every job semantic, over any [`Store`].
//!
//! Each public method validates its input, reads what it needs, decides, and hands the store one guarded
//! change (see [`crate::store`]). Every state change it makes is announced as an [`Event`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::RngExt;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::clock::{Clock, Timestamp};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::{IdGenerator, JobId, LeaseToken, new_lease_token};
use crate::limits::Limits;
use crate::model::{
    DeadReason, ErrorKind, ErrorRecord, Job, JobState, NewJob, QueueConfig, QueueInfo, QueueStats,
};
use crate::store::{
    Attempts, Guard, Inserted, JobClaim, JobDelete, JobInsert, JobList, JobPrune, JobSpec,
    LeaseRenew, Renewed, Store, Transition, Transitioned,
};
use crate::validate;

/// Settings of an [`Engine`]. [`EngineConfig::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub limits: Limits,
    /// Events buffered per subscriber; a subscriber that falls further behind misses events (and is told).
    pub event_capacity: usize,
    /// Jobs handled per store call by maintenance and bulk operations.
    pub batch_size: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            event_capacity: 4_096,
            batch_size: 500,
        }
    }
}

/// The outcome of enqueuing one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub id: JobId,
    pub state: JobState,
    /// `false` when the unique key matched a job that already exists: `id` is that job's.
    pub created: bool,
}

/// A claim request.
#[derive(Debug, Clone)]
pub struct Claim {
    pub queues: Vec<String>,
    pub worker_id: String,
    /// How many jobs at most (1 to `limits.max_claim`).
    pub limit: usize,
}

/// A worker's report that an attempt failed.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    pub message: String,
    /// `false`: no retry can help; the job goes straight to dead.
    pub retryable: bool,
    /// Retry no sooner than this (e.g. a provider's `Retry-After`); overrides the backoff policy.
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    /// A retryable failure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: true,
            retry_after_ms: None,
        }
    }

    /// A failure no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: false,
            retry_after_ms: None,
        }
    }
}

/// One acknowledgement of a batch.
#[derive(Debug, Clone)]
pub enum Ack {
    Complete {
        id: JobId,
        token: LeaseToken,
        result: Option<Value>,
    },
    Fail {
        id: JobId,
        token: LeaseToken,
        failure: Failure,
    },
}

/// Where an acknowledged job went.
#[derive(Debug, Clone, PartialEq)]
pub struct AckOutcome {
    pub state: JobState,
    /// When a retry is due (for `delayed` and `waiting`).
    pub run_at: Option<Timestamp>,
    /// The same lease was acknowledged before (a client retrying a completion whose answer it lost):
    /// nothing changed, and this is still a success.
    pub duplicate: bool,
}

/// The outcome of a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was waiting or delayed and is now cancelled (or already was).
    Cancelled,
    /// The job is active: its worker learns of the request on its next heartbeat.
    Requested,
}

/// Selects dead jobs for replay or purge.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub queue: String,
    pub kind: Option<String>,
    /// Only jobs whose latest error message contains this text.
    pub error_contains: Option<String>,
    /// At most this many jobs (all matching when `None`).
    pub limit: Option<u64>,
}

/// A page of jobs; `next` is the cursor for the following page.
#[derive(Debug, Clone)]
pub struct Page {
    pub jobs: Vec<Job>,
    pub next: Option<JobId>,
}

/// What one maintenance pass did: changes that applied, not ones it attempted (a worker that acknowledged
/// a job in the meantime wins, and that job is not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Delayed jobs that became waiting.
    pub promoted: u64,
    /// Active jobs whose lease expired: back to waiting, or dead after too many stalls.
    pub stalled: u64,
    /// Active jobs past their timeout: the attempt failed.
    pub timed_out: u64,
    /// Finished jobs removed by retention.
    pub pruned: u64,
}

/// The engine. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    events: broadcast::Sender<Event>,
    ids: Mutex<IdGenerator>,
}

impl Engine {
    /// An engine over `store`, reading time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: EngineConfig) -> Self {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        Engine {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                events,
                ids: Mutex::new(IdGenerator::default()),
            }),
        }
    }

    /// The store under this engine.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The engine's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// Subscribes to every state change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn emit(&self, events: impl FnOnce() -> Vec<Event>) {
        // Building events costs allocations; skip it when nobody listens.
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        for e in events() {
            let _ = self.inner.events.send(e);
        }
    }

    /// Announces applied transitions: `(job, new state, what it was)`.
    fn announce(&self, at: Timestamp, applied: Vec<(JobId, JobState, Transitioned)>) {
        self.emit(|| {
            applied
                .into_iter()
                .map(|(id, to, t)| Event {
                    job_id: id,
                    queue: t.queue,
                    kind: t.kind,
                    from: Some(t.from),
                    to,
                    at,
                    attempt: t.attempts,
                })
                .collect()
        });
    }

    /// Applies guarded transitions in one store call and announces those that applied. Returns each
    /// transition's outcome, in order.
    async fn apply(&self, ts: Vec<Transition>) -> Result<Vec<Result<()>>> {
        if ts.is_empty() {
            return Ok(Vec::new());
        }
        let at = ts[0].now;
        let targets: Vec<(JobId, JobState)> = ts.iter().map(|t| (t.id, t.to)).collect();
        let res = self.inner.store.job_transition(ts).await?;
        let mut applied = Vec::new();
        let out = targets
            .into_iter()
            .zip(res)
            .map(|((id, to), r)| r.map(|t| applied.push((id, to, t))))
            .collect();
        self.announce(at, applied);
        Ok(out)
    }

    // ---- producers -------------------------------------------------------------------------------

    /// Enqueues one job.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        let mut out = self.insert(vec![job], false).await?;
        Ok(out.remove(0))
    }

    /// Enqueues a batch atomically: if any job is invalid, none is written and the error names it
    /// (`jobs[i].field`).
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Err(Error::invalid("jobs", "must contain at least one job"));
        }
        if jobs.len() > self.limits().max_batch {
            return Err(Error::invalid(
                "jobs",
                format!("at most {} jobs per batch", self.limits().max_batch),
            ));
        }
        self.insert(jobs, true).await
    }

    async fn insert(&self, jobs: Vec<NewJob>, batch: bool) -> Result<Vec<Enqueued>> {
        let now = self.now();
        let mut configs: HashMap<String, QueueConfig> = HashMap::new();
        let mut specs = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.into_iter().enumerate() {
            let prefix = if batch {
                format!("jobs[{i}]")
            } else {
                String::new()
            };
            let spec = async {
                validate::queue_name("queue", &job.queue, self.limits())?;
                if !configs.contains_key(&job.queue) {
                    let info = self.queue_info(&job.queue).await?;
                    configs.insert(job.queue.clone(), info.config);
                }
                let id = self.next_id(now);
                self.resolve(job, &configs, id, now)
            }
            .await
            .map_err(|e| if batch { e.in_field(&prefix) } else { e })?;
            specs.push(spec);
        }
        let inserted = self
            .inner
            .store
            .job_insert(JobInsert {
                jobs: specs.clone(),
            })
            .await?;
        let out: Vec<Enqueued> = specs
            .iter()
            .zip(&inserted)
            .map(|(s, ins)| match ins {
                Inserted::New => Enqueued {
                    id: s.id,
                    state: s.state,
                    created: true,
                },
                Inserted::Existing { id, state } => Enqueued {
                    id: *id,
                    state: *state,
                    created: false,
                },
            })
            .collect();
        self.emit(|| {
            specs
                .iter()
                .zip(&inserted)
                .filter(|(_, ins)| **ins == Inserted::New)
                .map(|(s, _)| Event {
                    job_id: s.id,
                    queue: s.queue.clone(),
                    kind: s.kind.clone(),
                    from: None,
                    to: s.state,
                    at: now,
                    attempt: 0,
                })
                .collect()
        });
        Ok(out)
    }

    fn next_id(&self, now: Timestamp) -> JobId {
        // The lock is held for a few nanoseconds and never across an await.
        let mut ids = self.inner.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.next(now)
    }

    /// Applies the queue's defaults to a job's options and validates the result.
    fn resolve(
        &self,
        job: NewJob,
        configs: &HashMap<String, QueueConfig>,
        id: JobId,
        now: Timestamp,
    ) -> Result<JobSpec> {
        let limits = self.limits();
        let qc = &configs[&job.queue];
        let o = job.options;
        validate::kind("kind", &job.kind, limits)?;
        let payload = validate::json("payload", &job.payload, limits.max_payload_bytes)?;
        let priority = o.priority.unwrap_or(qc.priority);
        validate::priority("priority", priority)?;
        let run_at = match (o.delay_ms, o.run_at) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "delay_ms",
                    "give delay_ms or run_at, not both",
                ));
            }
            (Some(d), None) => {
                validate::range_u64("delay_ms", d, 0, limits.max_delay_ms)?;
                now + d as i64
            }
            (None, Some(t)) => {
                if t > now + limits.max_delay_ms as i64 {
                    return Err(Error::invalid(
                        "run_at",
                        format!("must be at most {} ms ahead", limits.max_delay_ms),
                    ));
                }
                t.max(now)
            }
            (None, None) => now,
        };
        let max_attempts = o.max_attempts.unwrap_or(qc.max_attempts);
        validate::range_u64(
            "max_attempts",
            max_attempts.into(),
            1,
            limits.max_attempts.into(),
        )?;
        let backoff = o.backoff.unwrap_or_else(|| qc.backoff.clone());
        validate::backoff("backoff", &backoff, limits)?;
        let timeout_ms = o.timeout_ms.unwrap_or(qc.timeout_ms);
        let heartbeat_ms = o.heartbeat_ms.or(qc.heartbeat_ms);
        validate::timing("", timeout_ms, heartbeat_ms, limits)?;
        let max_stalled = o.max_stalled.unwrap_or(qc.max_stalled);
        validate::range_u64(
            "max_stalled",
            max_stalled.into(),
            0,
            limits.max_stalled.into(),
        )?;
        for (field, k) in [("unique_key", &o.unique_key), ("group_key", &o.group_key)] {
            if let Some(k) = k {
                validate::key(field, k, limits.max_key)?;
            }
        }
        let idempotency_key = match (o.idempotency_key, &o.unique_key) {
            (Some(k), _) => {
                validate::key("idempotency_key", &k, limits.max_key)?;
                k
            }
            (None, Some(u)) => derived_idempotency_key(&job.queue, &job.kind, u),
            (None, None) => id.to_string(),
        };
        Ok(JobSpec {
            id,
            state: if run_at > now {
                JobState::Delayed
            } else {
                JobState::Waiting
            },
            queue: job.queue,
            kind: job.kind,
            payload,
            priority,
            run_at,
            max_attempts,
            backoff,
            timeout_ms,
            heartbeat_ms,
            lease_ms: validate::lease_ms(timeout_ms, heartbeat_ms),
            max_stalled,
            unique_key: o.unique_key,
            unique_finished_since: now - qc.unique_window_ms as i64,
            group_key: o.group_key,
            idempotency_key,
            created_at: now,
        })
    }

    // ---- workers ---------------------------------------------------------------------------------

    /// Claims up to `limit` due jobs for a worker. Each comes with a fresh lease token.
    pub async fn claim(&self, req: Claim) -> Result<Vec<Job>> {
        let limits = self.limits();
        if req.queues.is_empty() {
            return Err(Error::invalid("queues", "name at least one queue"));
        }
        for (i, q) in req.queues.iter().enumerate() {
            validate::queue_name(&format!("queues[{i}]"), q, limits)?;
        }
        validate::worker_id("worker_id", &req.worker_id, limits)?;
        validate::range_u64("limit", req.limit as u64, 1, limits.max_claim as u64)?;
        let now = self.now();
        let claimed = self
            .inner
            .store
            .job_claim(JobClaim {
                queues: req.queues,
                worker_id: req.worker_id,
                limit: req.limit,
                lease: new_lease_token(),
                now,
                promote_limit: self.inner.config.batch_size,
            })
            .await?;
        self.announce(
            now,
            claimed
                .promoted
                .into_iter()
                .map(|(id, t)| (id, JobState::Waiting, t))
                .collect(),
        );
        let jobs = claimed.jobs;
        self.emit(|| {
            jobs.iter()
                .map(|j| Event {
                    job_id: j.id,
                    queue: j.queue.clone(),
                    kind: j.kind.clone(),
                    from: Some(JobState::Waiting),
                    to: JobState::Active,
                    at: now,
                    attempt: j.attempts,
                })
                .collect()
        });
        Ok(jobs)
    }

    /// Extends a lease, optionally recording progress; says whether a cancel was requested.
    pub async fn heartbeat(
        &self,
        id: JobId,
        token: LeaseToken,
        progress: Option<Value>,
    ) -> Result<Renewed> {
        let progress = progress
            .map(|p| validate::json("progress", &p, self.limits().max_progress_bytes))
            .transpose()?;
        self.inner
            .store
            .lease_renew(LeaseRenew {
                id,
                token,
                now: self.now(),
                progress,
            })
            .await
    }

    /// Completes a job under its lease.
    pub async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        result: Option<Value>,
    ) -> Result<AckOutcome> {
        self.ack_one(Ack::Complete { id, token, result }).await
    }

    /// Fails the current attempt of a job under its lease: it is retried after its backoff, or dies.
    pub async fn fail(&self, id: JobId, token: LeaseToken, failure: Failure) -> Result<AckOutcome> {
        self.ack_one(Ack::Fail { id, token, failure }).await
    }

    async fn ack_one(&self, ack: Ack) -> Result<AckOutcome> {
        let mut out = self.ack(vec![ack]).await?;
        out.remove(0)
    }

    /// Acknowledges many jobs in one store transaction. Each acknowledgement succeeds or fails on its own
    /// (a lost lease on one does not affect the others).
    pub async fn ack(&self, acks: Vec<Ack>) -> Result<Vec<Result<AckOutcome>>> {
        if acks.len() > self.limits().max_batch {
            return Err(Error::invalid(
                "acks",
                format!("at most {} per batch", self.limits().max_batch),
            ));
        }
        let now = self.now();
        let many = acks.len() > 1;
        let mut out: Vec<Option<Result<AckOutcome>>> = Vec::with_capacity(acks.len());
        let mut planned = Vec::new();
        let mut transitions = Vec::new();
        for (i, ack) in acks.into_iter().enumerate() {
            let plan = match ack {
                Ack::Complete { id, token, result } => result
                    .map(|r| validate::json("result", &r, self.limits().max_result_bytes))
                    .transpose()
                    .map(|result| {
                        let mut t =
                            Transition::new(id, Guard::Lease(token), JobState::Completed, now);
                        t.result = result;
                        t
                    }),
                Ack::Fail { id, token, failure } => {
                    self.plan_failure(id, &token, &failure, now).await
                }
            };
            match plan {
                Ok(t) => {
                    planned.push((i, t.id, t.to, t.run_at, t.guard.clone()));
                    transitions.push(t);
                    out.push(None);
                }
                Err(e) if many => out.push(Some(Err(e.in_field(&format!("acks[{i}]"))))),
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let applied = self.apply(transitions).await?;
        for ((i, id, to, run_at, guard), res) in planned.into_iter().zip(applied) {
            out[i] = Some(match res {
                Ok(()) => Ok(AckOutcome {
                    state: to,
                    run_at,
                    duplicate: false,
                }),
                Err(Error::LeaseLost) => self.duplicate_ack(id, to, &guard).await,
                Err(e) => Err(e),
            });
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(Err(Error::LeaseLost)))
            .collect())
    }

    /// A lease guard failed: if the job already reached the state this very lease asked for, the client is
    /// retrying an acknowledgement whose answer it lost, and that is a success. Otherwise the lease is lost.
    async fn duplicate_ack(&self, id: JobId, to: JobState, guard: &Guard) -> Result<AckOutcome> {
        let Guard::Lease(token) = guard else {
            return Err(Error::LeaseLost);
        };
        match self.inner.store.job_get(id).await? {
            Some(job)
                if job.lease.is_none()
                    && job.last_lease_token.as_deref() == Some(token.as_str())
                    && job.state == JobState::Completed
                    && to == JobState::Completed =>
            {
                Ok(AckOutcome {
                    state: job.state,
                    run_at: None,
                    duplicate: true,
                })
            }
            _ => Err(Error::LeaseLost),
        }
    }

    /// Works out where a failed attempt goes: cancelled (if a cancel was requested), dead (not retryable,
    /// or out of attempts), or delayed by its backoff (or the worker's `retry_after`).
    async fn plan_failure(
        &self,
        id: JobId,
        token: &LeaseToken,
        failure: &Failure,
        now: Timestamp,
    ) -> Result<Transition> {
        let limits = self.limits();
        if let Some(ra) = failure.retry_after_ms {
            validate::range_u64("retry_after_ms", ra, 0, limits.max_delay_ms)?;
        }
        let job = self
            .inner
            .store
            .job_get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {id}")))?;
        if job.lease.as_ref().map(|l| &l.token) != Some(token) {
            return Err(Error::LeaseLost);
        }
        let kind = if failure.retryable {
            ErrorKind::Error
        } else {
            ErrorKind::NonRetryable
        };
        let message = validate::truncate(failure.message.clone(), limits.max_error_message);
        Ok(self.after_failed_attempt(
            &job,
            Guard::Lease(token.clone()),
            kind,
            message,
            failure.retry_after_ms,
            now,
        ))
    }

    fn after_failed_attempt(
        &self,
        job: &Job,
        guard: Guard,
        kind: ErrorKind,
        message: String,
        retry_after_ms: Option<u64>,
        now: Timestamp,
    ) -> Transition {
        let error = ErrorRecord {
            attempt: job.attempts,
            kind,
            message,
            at: now,
        };
        let mut t = Transition::new(job.id, guard, JobState::Dead, now);
        t.error = Some(error);
        if job.cancel_requested {
            t.to = JobState::Cancelled;
        } else if kind == ErrorKind::NonRetryable {
            t.dead_reason = Some(DeadReason::NonRetryable);
        } else if job.attempts >= job.max_attempts {
            t.dead_reason = Some(DeadReason::AttemptsExhausted);
        } else {
            let r: f64 = rand::rng().random();
            let delay = retry_after_ms.unwrap_or_else(|| job.backoff.delay_after(job.attempts, r));
            let run_at = now + delay as i64;
            t.to = if delay == 0 {
                JobState::Waiting
            } else {
                JobState::Delayed
            };
            t.run_at = Some(run_at);
        }
        t
    }

    // ---- operators -------------------------------------------------------------------------------

    /// Cancels a job: a waiting or delayed job is cancelled at once; an active one is asked to stop (its
    /// worker sees the request on its next heartbeat). A finished job cannot be cancelled.
    pub async fn cancel(&self, id: JobId) -> Result<Cancelled> {
        // A job may change state between our read and our guarded write (a worker claims it); then we
        // read again. Three rounds are plenty: each lost race means the job moved forward.
        for _ in 0..3 {
            let job = self.get(id).await?;
            let now = self.now();
            match job.state {
                JobState::Cancelled => return Ok(Cancelled::Cancelled),
                JobState::Waiting | JobState::Delayed => {
                    let t = Transition::new(id, Guard::State(job.state), JobState::Cancelled, now);
                    match self.transition_one(t).await {
                        Ok(()) => return Ok(Cancelled::Cancelled),
                        Err(Error::Conflict(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                JobState::Active => match self.inner.store.job_request_cancel(id).await {
                    Ok(_) => return Ok(Cancelled::Requested),
                    Err(Error::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                },
                JobState::Completed | JobState::Dead => {
                    return Err(Error::Conflict(format!(
                        "job {id} is {} and cannot be cancelled",
                        job.state
                    )));
                }
            }
        }
        Err(Error::Conflict(format!(
            "job {id} kept changing state; try again"
        )))
    }

    /// Puts a dead or cancelled job back to waiting with a fresh attempt budget. Its idempotency key and
    /// error history stay.
    pub async fn retry(&self, id: JobId) -> Result<()> {
        let job = self.get(id).await?;
        if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
            return Err(Error::Conflict(format!(
                "job {id} is {}; only dead or cancelled jobs can be retried",
                job.state
            )));
        }
        self.transition_one(self.revive(id, job.state)).await
    }

    fn revive(&self, id: JobId, from: JobState) -> Transition {
        let now = self.now();
        let mut t = Transition::new(id, Guard::State(from), JobState::Waiting, now);
        t.run_at = Some(now);
        t.attempts = Attempts::Reset;
        t
    }

    /// Makes a delayed job due now.
    pub async fn promote(&self, id: JobId) -> Result<()> {
        let now = self.now();
        let mut t = Transition::new(id, Guard::State(JobState::Delayed), JobState::Waiting, now);
        t.run_at = Some(now);
        self.transition_one(t).await
    }

    async fn transition_one(&self, t: Transition) -> Result<()> {
        self.apply(vec![t]).await?.remove(0)
    }

    /// Replays dead jobs matching `filter` (back to waiting, fresh attempt budget, same idempotency key).
    /// Returns how many.
    pub async fn replay_dead(&self, filter: DeadFilter) -> Result<u64> {
        self.for_dead(&filter, |engine, ids| async move {
            let ts = ids
                .iter()
                .map(|id| engine.revive(*id, JobState::Dead))
                .collect();
            let res = engine.apply(ts).await?;
            Ok(res.iter().filter(|r| r.is_ok()).count() as u64)
        })
        .await
    }

    /// Deletes dead jobs matching `filter` for good. Returns how many.
    pub async fn purge_dead(&self, filter: DeadFilter) -> Result<u64> {
        self.for_dead(&filter, |engine, ids| async move {
            engine
                .inner
                .store
                .job_delete(JobDelete {
                    ids: ids.into_iter().map(|id| (id, JobState::Dead)).collect(),
                })
                .await
        })
        .await
    }

    /// Runs `apply` over the ids of the dead jobs matching `filter`, a page at a time.
    async fn for_dead<F, Fut>(&self, filter: &DeadFilter, apply: F) -> Result<u64>
    where
        F: Fn(Engine, Vec<JobId>) -> Fut,
        Fut: std::future::Future<Output = Result<u64>>,
    {
        validate::queue_name("queue", &filter.queue, self.limits())?;
        if let Some(k) = &filter.kind {
            validate::kind("kind", k, self.limits())?;
        }
        let mut done = 0u64;
        let mut after = None;
        let budget = filter.limit.unwrap_or(u64::MAX);
        while done < budget {
            let page = self
                .inner
                .store
                .job_list(JobList {
                    queue: filter.queue.clone(),
                    state: JobState::Dead,
                    kind: filter.kind.clone(),
                    after,
                    limit: self.inner.config.batch_size,
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() == self.inner.config.batch_size;
            let ids: Vec<JobId> = page
                .iter()
                .filter(|j| match &filter.error_contains {
                    Some(text) => j.errors.last().is_some_and(|e| e.message.contains(text)),
                    None => true,
                })
                .map(|j| j.id)
                .take((budget - done).min(usize::MAX as u64) as usize)
                .collect();
            if !ids.is_empty() {
                done += apply(self.clone(), ids).await?;
            }
            if !full {
                break;
            }
        }
        Ok(done)
    }

    /// Pauses a queue: it keeps accepting jobs but hands none out until resumed.
    pub async fn pause(&self, queue: &str) -> Result<()> {
        validate::queue_name("queue", queue, self.limits())?;
        self.inner.store.queue_set_paused(queue, true).await
    }

    /// Resumes a paused queue.
    pub async fn resume(&self, queue: &str) -> Result<()> {
        validate::queue_name("queue", queue, self.limits())?;
        self.inner.store.queue_set_paused(queue, false).await
    }

    /// A queue's configuration (the defaults for a queue never configured).
    pub async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        validate::queue_name("queue", queue, self.limits())?;
        Ok(self
            .inner
            .store
            .queue_get(queue)
            .await?
            .unwrap_or_else(|| QueueInfo {
                name: queue.to_string(),
                config: QueueConfig::default(),
                paused: false,
            }))
    }

    /// Sets a queue's configuration; it applies to jobs enqueued from now on.
    pub async fn set_queue_config(&self, queue: &str, config: QueueConfig) -> Result<()> {
        validate::queue_name("queue", queue, self.limits())?;
        validate::queue_config(&config, self.limits())?;
        self.inner.store.queue_put(queue, config).await
    }

    /// Every known queue.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        self.inner.store.queue_list().await
    }

    /// A queue's counts per state and the age of its oldest waiting job.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        validate::queue_name("queue", queue, self.limits())?;
        self.inner.store.queue_stats(queue, self.now()).await
    }

    /// One job.
    pub async fn get(&self, id: JobId) -> Result<Job> {
        self.inner
            .store
            .job_get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {id}")))
    }

    /// A page of a queue's jobs in one state, oldest first; pass `next` back as `after` for the next page.
    pub async fn list(
        &self,
        queue: &str,
        state: JobState,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page> {
        validate::queue_name("queue", queue, self.limits())?;
        validate::range_u64("limit", limit as u64, 1, self.limits().max_claim as u64)?;
        let jobs = self
            .inner
            .store
            .job_list(JobList {
                queue: queue.to_string(),
                state,
                kind: None,
                after,
                limit,
            })
            .await?;
        let next = if jobs.len() == limit {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(Page { jobs, next })
    }

    // ---- maintenance -----------------------------------------------------------------------------

    async fn promote_due(&self, queue: &str, now: Timestamp) -> Result<u64> {
        let moved = self
            .inner
            .store
            .job_promote_due(queue, now, self.inner.config.batch_size)
            .await?;
        let n = moved.len() as u64;
        self.announce(
            now,
            moved
                .into_iter()
                .map(|(id, t)| (id, JobState::Waiting, t))
                .collect(),
        );
        Ok(n)
    }

    /// One maintenance pass: promotes due delayed jobs, recovers stalled jobs (lease expired), fails
    /// timed-out attempts (even if they keep heartbeating), and prunes finished jobs past their queue's
    /// retention. Dead jobs are never pruned. Safe to run on several nodes at once: every change is
    /// guarded, so each job is handled once.
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let now = self.now();
        let batch = self.inner.config.batch_size;
        let queues = self.inner.store.queue_list().await?;
        for q in &queues {
            loop {
                let n = self.promote_due(&q.name, now).await?;
                report.promoted += n;
                if (n as usize) < batch {
                    break;
                }
            }
        }
        loop {
            let expired = self.inner.store.job_expired(now, batch).await?;
            let full = expired.len() == batch;
            let mut plans = Vec::with_capacity(expired.len());
            let mut timed_out = Vec::with_capacity(expired.len());
            for job in &expired {
                let Some(lease) = &job.lease else { continue };
                let guard = Guard::Lease(lease.token.clone());
                let timeout = lease.deadline_at <= now;
                timed_out.push(timeout);
                plans.push(if timeout {
                    let msg = format!(
                        "attempt {} timed out after {} ms",
                        job.attempts, job.timeout_ms
                    );
                    self.after_failed_attempt(job, guard, ErrorKind::Timeout, msg, None, now)
                } else {
                    self.after_stall(job, guard, now)
                });
            }
            // Count what applied: a worker may have acknowledged a job since we read it, and then its
            // guard failed and the job is not ours to count.
            for (applied, timeout) in self.apply(plans).await?.into_iter().zip(timed_out) {
                match (applied.is_ok(), timeout) {
                    (true, true) => report.timed_out += 1,
                    (true, false) => report.stalled += 1,
                    (false, _) => {}
                }
            }
            if !full {
                break;
            }
        }
        for q in queues {
            let r = &q.config.retention;
            if r.max_count.is_none() && r.max_age_ms.is_none() {
                continue;
            }
            loop {
                let n = self
                    .inner
                    .store
                    .job_prune(JobPrune {
                        queue: q.name.clone(),
                        states: vec![JobState::Completed, JobState::Cancelled],
                        keep: r.max_count,
                        finished_before: r.max_age_ms.map(|a| now - a as i64),
                        limit: batch,
                    })
                    .await?;
                report.pruned += n;
                if (n as usize) < batch {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// A lease expired: the attempt does not count, and the job waits again — unless it stalled more than
    /// `max_stalled` times (dead, reason `stalled`) or a cancel was requested (cancelled).
    fn after_stall(&self, job: &Job, guard: Guard, now: Timestamp) -> Transition {
        let mut t = Transition::new(job.id, guard, JobState::Waiting, now);
        t.stalled = true;
        t.error = Some(ErrorRecord {
            attempt: job.attempts,
            kind: ErrorKind::Stalled,
            message: format!(
                "lease expired without a heartbeat (worker {})",
                job.lease.as_ref().map_or("?", |l| l.worker_id.as_str())
            ),
            at: now,
        });
        if job.cancel_requested {
            t.to = JobState::Cancelled;
        } else if job.stalls + 1 > job.max_stalled {
            t.to = JobState::Dead;
            t.dead_reason = Some(DeadReason::Stalled);
        } else {
            t.attempts = Attempts::GiveBack;
        }
        t
    }
}

/// The idempotency key of a job with a unique key: the same for every job enqueued with the same queue,
/// kind and unique key, so a re-enqueued payment reuses the key of the first. Hashed to a fixed 67
/// characters, which fits every provider's limit (Stripe: 255).
fn derived_idempotency_key(queue: &str, kind: &str, unique_key: &str) -> String {
    let mut h = Sha256::new();
    for part in [queue, kind, unique_key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("uk_{hex}")
}

/// Parses stored JSON text.
pub fn raw_json(s: String) -> Result<Box<RawValue>> {
    RawValue::from_string(s).map_err(|e| Error::Backend(Box::new(e)))
}
