//! Workers: claim, heartbeat, and acknowledge (complete or fail).

use rand::RngExt;
use serde_json::Value;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::{JobId, LeaseToken, new_lease_token};
use crate::model::{DeadReason, ErrorKind, ErrorRecord, Job, JobState, LogLine};
use crate::store::{Attempts, Guard, JobClaim, JobLogAppend, LeaseRenew, Renewed, Transition};
use crate::validate;

use super::Engine;

/// A claim request.
#[derive(Debug, Clone)]
pub struct Claim {
    pub queues: Vec<String>,
    pub worker_id: String,
    /// How many jobs at most (1 to `limits.max_claim`).
    pub limit: usize,
    /// The claiming worker's promise to heartbeat every job it holds at least this often (the SDKs
    /// do, on their own). Its leases then last at most `2 × heartbeat_ms + 5 s` (or less when the job's
    /// own lease is shorter), so that a dead worker's jobs are recovered that soon instead of after
    /// their whole timeout. `None`: the jobs' own leases ([`validate::lease_ms`]).
    pub heartbeat_ms: Option<u64>,
}

/// What a claim took, and whether flow control held jobs back.
#[derive(Debug, Clone)]
pub struct ClaimOutcome {
    pub jobs: Vec<Job>,
    /// A rate limit held back waiting jobs: no token before this instant.
    pub retry_at: Option<Timestamp>,
    /// A concurrency limit held back waiting jobs: a job leaving `active` may free one.
    pub blocked: bool,
}

/// A worker's report that an attempt failed.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    pub message: String,
    /// `false`: no retry can help; the job goes straight to dead.
    pub retryable: bool,
    /// Retry no sooner than this (e.g. a provider's `Retry-After`); overrides the backoff policy.
    pub retry_after_ms: Option<u64>,
    /// Where it failed (a stack trace), kept with the error.
    pub stack: Option<String>,
}

impl Failure {
    /// A retryable failure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: true,
            ..Failure::default()
        }
    }

    /// A failure no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: false,
            ..Failure::default()
        }
    }

    /// This failure with where it happened.
    pub fn with_stack(mut self, stack: impl Into<String>) -> Self {
        self.stack = Some(stack.into());
        self
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
    /// As [`Engine::release_after`].
    Release {
        id: JobId,
        token: LeaseToken,
        delay_ms: u64,
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

/// Claims in a row that may take only expired jobs before a claim answers empty.
const MAX_EXPIRED_CLAIMS: u32 = 4;

impl Engine {
    /// Claims up to `limit` due jobs for a worker. Each comes with a fresh lease token.
    pub async fn claim(&self, req: Claim) -> Result<Vec<Job>> {
        Ok(self.claim_with_hints(req).await?.jobs)
    }

    /// [`Engine::claim`], also saying whether flow control held jobs back, so that a long-polling fetch
    /// knows when to look again.
    pub async fn claim_with_hints(&self, req: Claim) -> Result<ClaimOutcome> {
        let limits = self.limits();
        if req.queues.is_empty() {
            return Err(Error::invalid("queues", "name at least one queue"));
        }
        if req.queues.len() > limits.max_claim_queues {
            return Err(Error::invalid(
                "queues",
                format!("name at most {} queues", limits.max_claim_queues),
            ));
        }
        for (i, q) in req.queues.iter().enumerate() {
            validate::queue_name(&format!("queues[{i}]"), q, limits)?;
        }
        // A queue named twice would take two of the claim's slots for the same candidates.
        let mut queues = req.queues;
        let mut seen = std::collections::HashSet::new();
        queues.retain(|q| seen.insert(q.clone()));
        validate::worker_id("worker_id", &req.worker_id, limits)?;
        validate::range_u64("limit", req.limit as u64, 1, limits.max_claim as u64)?;
        if let Some(hb) = req.heartbeat_ms {
            validate::range_u64(
                "heartbeat_ms",
                hb,
                limits.min_heartbeat_ms,
                limits.max_timeout_ms,
            )?;
        }
        let now = self.now();
        let mut rules = Vec::with_capacity(queues.len());
        for q in &queues {
            rules.push(self.queue_config(q, now).await?.rules());
        }
        let claim = JobClaim {
            rules,
            queues,
            worker_id: req.worker_id,
            limit: req.limit,
            lease: new_lease_token(),
            lease_cap_ms: req
                .heartbeat_ms
                .map(|hb| validate::lease_ms(u64::MAX, Some(hb))),
            now,
            promote_limit: self.inner.config.batch_size,
        };
        // A claim that took only expired jobs looks again (a few times): live jobs may wait behind
        // them, and a long poll would otherwise sleep until something new arrives.
        let mut tries = 0;
        loop {
            tries += 1;
            let claimed = self.inner.store.job_claim(claim.clone()).await?;
            self.announce(
                now,
                claimed
                    .promoted
                    .into_iter()
                    .map(|(id, t)| (id, JobState::Waiting, t, None))
                    .collect(),
            );
            // A job whose time to live passed since the last maintenance pass is not handed out: it
            // ends dead now, under the lease just taken (its attempt given back, as it never ran).
            let (jobs, expired): (Vec<Job>, Vec<Job>) = claimed
                .jobs
                .into_iter()
                .partition(|j| j.expires_at.is_none_or(|t| t > now));
            self.emit(|| {
                jobs.iter()
                    .map(|j| Event {
                        waited_ms: Some((now - j.run_at).max(0) as u64),
                        ..Event::new(
                            j.id,
                            j.queue.clone(),
                            j.kind.clone(),
                            Some(JobState::Waiting),
                            JobState::Active,
                            now,
                            j.attempts,
                        )
                    })
                    .collect()
            });
            let only_expired = jobs.is_empty() && !expired.is_empty();
            if !expired.is_empty() {
                let plans = expired
                    .iter()
                    .filter_map(|j| {
                        let lease = j.lease.as_ref()?;
                        Some(self.expire(j, Guard::Lease(lease.token.clone()), now))
                    })
                    .collect();
                // Not applied (the store failed): the lease ends unheld, the job stalls back to
                // waiting, and the maintenance pass expires it.
                if let Err(e) = self.apply(plans).await {
                    tracing::warn!("cannot end expired jobs at their claim: {e}");
                }
            }
            if only_expired && tries < MAX_EXPIRED_CLAIMS {
                continue;
            }
            return Ok(ClaimOutcome {
                jobs,
                retry_at: claimed.retry_at,
                blocked: claimed.blocked,
            });
        }
    }

    /// Extends a lease, optionally recording progress; says whether a cancel was requested.
    pub async fn heartbeat(
        &self,
        id: JobId,
        token: LeaseToken,
        progress: Option<Value>,
    ) -> Result<Renewed> {
        let progress = progress
            .map(|p| {
                validate::json(
                    "progress",
                    &p,
                    self.limits().max_progress_bytes,
                    self.limits(),
                )
            })
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

    /// Appends log lines to a job under its lease (at most `max_log_batch` per call; each line cut at
    /// `max_log_line_bytes`); the job keeps its latest `max_log_lines`, across attempts.
    pub async fn append_logs(
        &self,
        id: JobId,
        token: LeaseToken,
        lines: Vec<String>,
    ) -> Result<()> {
        let limits = self.limits();
        if lines.is_empty() {
            return Err(Error::invalid("lines", "must contain at least one line"));
        }
        if lines.len() > limits.max_log_batch {
            return Err(Error::too_large(
                "lines",
                format!("at most {} lines per request", limits.max_log_batch),
            ));
        }
        // NUL is the one character PostgreSQL's text cannot hold: both stores get the same line.
        let lines = lines
            .into_iter()
            .map(|l| validate::truncate(l.replace('\0', "\u{fffd}"), limits.max_log_line_bytes))
            .collect();
        self.inner
            .store
            .job_log_append(JobLogAppend {
                id,
                token,
                now: self.now(),
                lines,
                keep: limits.max_log_lines,
            })
            .await
    }

    /// A job's log lines, oldest first.
    pub async fn logs(&self, id: JobId) -> Result<Vec<LogLine>> {
        // Known job or not found, rather than an empty list for an id that never existed.
        self.get(id).await?;
        self.inner.store.job_logs(id).await
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

    /// Gives back a job the worker holds but will not run (it fetched it and is shutting down): the job
    /// is due again at once, for any worker, and the attempt is not counted. A job whose cancel was
    /// requested is cancelled instead. A stale token gets [`Error::LeaseLost`].
    pub async fn release(&self, id: JobId, token: LeaseToken) -> Result<AckOutcome> {
        self.release_after(id, token, 0).await
    }

    /// Gives back a job to run again no sooner than `delay_ms` from now, **without using an attempt**:
    /// what a worker does when a provider answers "too many requests, retry after N s" — the job did
    /// not fail, it was not allowed to run (a *snooze*). `delay_ms` is at most `max_delay_ms`; 0 is a
    /// plain [`Engine::release`]. A job whose cancel was requested is cancelled instead.
    pub async fn release_after(
        &self,
        id: JobId,
        token: LeaseToken,
        delay_ms: u64,
    ) -> Result<AckOutcome> {
        // The cancel flag may be set between our read and our write; the guard on it makes the store
        // refuse, and the second round reads the flag as it is.
        for _ in 0..2 {
            let t = self.plan_release(id, &token, delay_ms, self.now()).await?;
            let (to, run_at) = (t.to, t.run_at);
            match self.apply(vec![t]).await?.remove(0) {
                Ok(()) => {
                    return Ok(AckOutcome {
                        state: to,
                        run_at,
                        duplicate: false,
                    });
                }
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "job {id} kept changing while releasing it"
        )))
    }

    async fn ack_one(&self, ack: Ack) -> Result<AckOutcome> {
        let mut out = self.ack(vec![ack]).await?;
        out.remove(0)
    }

    /// Acknowledges many jobs in one store transaction. Each acknowledgement succeeds or fails on its own
    /// (a lost lease on one does not affect the others).
    pub async fn ack(&self, acks: Vec<Ack>) -> Result<Vec<Result<AckOutcome>>> {
        if acks.len() > self.limits().max_batch {
            return Err(Error::too_large(
                "acks",
                format!("at most {} per batch", self.limits().max_batch),
            ));
        }
        let now = self.now();
        let many = acks.len() > 1;
        let mut out: Vec<Option<Result<AckOutcome>>> = Vec::with_capacity(acks.len());
        let mut planned = Vec::new();
        let mut transitions = Vec::new();
        let mut retry_plans = std::collections::HashMap::new();
        // Releases go in the batch's transaction too: a worker shutting down gives back up to
        // thousands of jobs, and a transaction (and a wake-up) for each took a second per thousand.
        let mut releases = std::collections::HashMap::new();
        for (i, ack) in acks.into_iter().enumerate() {
            let plan = match ack {
                Ack::Complete { id, token, result } => result
                    .map(|r| {
                        validate::json("result", &r, self.limits().max_result_bytes, self.limits())
                    })
                    .transpose()
                    .map(|result| {
                        let mut t =
                            Transition::new(id, Guard::Lease(token), JobState::Completed, now);
                        t.result = result;
                        t
                    }),
                Ack::Fail { id, token, failure } => {
                    let plan = self.plan_failure(id, &token, &failure, now).await;
                    retry_plans.insert(i, (id, token, failure));
                    plan
                }
                Ack::Release {
                    id,
                    token,
                    delay_ms,
                } => {
                    let plan = self.plan_release(id, &token, delay_ms, now).await;
                    releases.insert(i, (id, token, delay_ms));
                    plan
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
                // A release planned before a cancel request landed: planned again, as one.
                Err(Error::Conflict(_)) if releases.contains_key(&i) => {
                    let (id, token, delay_ms) = &releases[&i];
                    self.release_after(*id, token.clone(), *delay_ms).await
                }
                // A failure decided before a cancel request landed: decide again on what is there now.
                Err(Error::Conflict(_)) if retry_plans.contains_key(&i) => {
                    let (id, token, failure) = &retry_plans[&i];
                    self.fail_again(*id, token, failure).await
                }
                Err(e) => Err(e),
            });
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(Err(Error::LeaseLost)))
            .collect())
    }

    /// Plans and applies a failure again after its first plan lost a race with a cancel request. The
    /// cancel flag only ever goes from unset to set, so a second round settles it; a third is a bug.
    async fn fail_again(
        &self,
        id: JobId,
        token: &LeaseToken,
        failure: &Failure,
    ) -> Result<AckOutcome> {
        let mut last = Error::Conflict(format!("job {id} kept changing while failing it"));
        for _ in 0..2 {
            let t = self.plan_failure(id, token, failure, self.now()).await?;
            let (to, run_at) = (t.to, t.run_at);
            match self.apply(vec![t]).await?.remove(0) {
                Ok(()) => {
                    return Ok(AckOutcome {
                        state: to,
                        run_at,
                        duplicate: false,
                    });
                }
                Err(Error::Conflict(m)) => last = Error::Conflict(m),
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// A lease guard failed: if the job already reached the state this very lease asked for, the client is
    /// retrying an acknowledgement whose answer it lost, and that is a success. Otherwise the lease is lost.
    async fn duplicate_ack(&self, id: JobId, to: JobState, guard: &Guard) -> Result<AckOutcome> {
        // Only a completion is recognised again: a failure or a release under a lease gone is lost.
        let Guard::Lease(token) = guard else {
            return Err(Error::LeaseLost);
        };
        if to != JobState::Completed {
            return Err(Error::LeaseLost);
        }
        match self.inner.store.job_get(id).await? {
            Some(job)
                if job.lease.is_none()
                    && job.last_lease_token.as_deref() == Some(token.as_str())
                    && job.state == JobState::Completed =>
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

    /// The transition that gives back job `id` under lease `token`, due again `delay_ms` from `now`
    /// with the attempt not counted, or cancelled if its cancel was requested (guarded on that flag).
    async fn plan_release(
        &self,
        id: JobId,
        token: &LeaseToken,
        delay_ms: u64,
        now: Timestamp,
    ) -> Result<Transition> {
        validate::range_u64("delay_ms", delay_ms, 0, self.limits().max_delay_ms)?;
        let job = self.get(id).await?;
        if job.lease.as_ref().map(|l| &l.token) != Some(token) {
            return Err(Error::LeaseLost);
        }
        let to = match (job.cancel_requested, delay_ms) {
            (true, _) => JobState::Cancelled,
            (false, 0) => JobState::Waiting,
            (false, _) => JobState::Delayed,
        };
        let mut t = Transition::new(id, Guard::Lease(token.clone()), to, now);
        t.expect_cancel_requested = Some(job.cancel_requested);
        if to != JobState::Cancelled {
            t.run_at = Some(now.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)));
            t.attempts = Attempts::GiveBack;
        }
        Ok(t)
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
        let stack = failure
            .stack
            .clone()
            .map(|s| validate::truncate(s, limits.max_error_stack));
        Ok(self.after_failed_attempt(
            &job,
            Guard::Lease(token.clone()),
            kind,
            message,
            stack,
            failure.retry_after_ms,
            now,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn after_failed_attempt(
        &self,
        job: &Job,
        guard: Guard,
        kind: ErrorKind,
        message: String,
        stack: Option<String>,
        retry_after_ms: Option<u64>,
        now: Timestamp,
    ) -> Transition {
        let error = ErrorRecord {
            attempt: job.attempts,
            kind,
            message,
            at: now,
            stack,
        };
        let mut t = Transition::new(job.id, guard, JobState::Dead, now);
        t.error = Some(error);
        t.expect_cancel_requested = Some(job.cancel_requested);
        if job.cancel_requested {
            t.to = JobState::Cancelled;
        } else if kind == ErrorKind::NonRetryable {
            t.die(DeadReason::NonRetryable, &job.kind);
        } else if job.attempts >= job.max_attempts {
            t.die(DeadReason::AttemptsExhausted, &job.kind);
        } else {
            let r: f64 = rand::rng().random();
            // A policy's delay is capped by the limits (an uncapped exponential would reach years);
            // a worker's retry_after was validated against them already.
            let delay = retry_after_ms.unwrap_or_else(|| {
                job.backoff
                    .delay_after(job.attempts, r)
                    .min(self.limits().max_backoff_ms)
            });
            let run_at = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
            t.to = if delay == 0 {
                JobState::Waiting
            } else {
                JobState::Delayed
            };
            t.run_at = Some(run_at);
        }
        t
    }
}
