//! The model: a job as the model sees it, what an operation answers, and the lifecycle rules the model
//! restates (lease length, a failed attempt, a stall, entering a state), with the comparisons that
//! report a divergence. It knows nothing of the engine; turning an engine's job into the model's terms
//! and driving both is for `case.rs` and `steps.rs`.

use std::fmt::Debug;

use errand_core::limits::LEASE_GRACE_MS;
use errand_core::{
    Backoff, BackoffKind, Cancelled, DeadReason, Error, ErrorKind, JobId, JobState, Timestamp,
};

/// A job as the model sees it. Times count from the case's start; tokens and workers are indices.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub(super) queue: usize,
    pub(super) state: JobState,
    pub(super) priority: i32,
    pub(super) run_at: Timestamp,
    pub(super) attempts: u32,
    pub(super) max_attempts: u32,
    pub(super) backoff: Backoff,
    pub(super) timeout_ms: u64,
    pub(super) heartbeat_ms: Option<u64>,
    pub(super) lease_ms: u64,
    pub(super) stalls: u32,
    pub(super) max_stalled: u32,
    pub(super) cancel_requested: bool,
    pub(super) dead_reason: Option<DeadReason>,
    pub(super) lease: Option<SeenLease>,
    /// The latest claim's token, kept after the job leaves `active`.
    pub(super) last_claim: Option<usize>,
    pub(super) errors: Vec<SeenError>,
    pub(super) result: Option<String>,
    pub(super) started_at: Option<Timestamp>,
    pub(super) finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SeenLease {
    pub(super) claim: usize,
    pub(super) worker: usize,
    pub(super) expires_at: Timestamp,
    pub(super) deadline_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct SeenError {
    pub(super) attempt: u32,
    pub(super) kind: ErrorKind,
    pub(super) at: Timestamp,
    /// The worker's message; the engine words timeouts and stalls itself.
    pub(super) message: Option<String>,
}

/// A job of the model: what it should look like, and what only the model needs.
#[derive(Debug, Clone)]
pub(super) struct MJob {
    pub(super) id: JobId,
    pub(super) seen: Seen,
    /// Every claim that held it, oldest first.
    pub(super) claims: Vec<usize>,
}

/// What an operation answered, times relative to the case's start.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Enqueued(JobState),
    /// The claimed jobs by job number (`usize::MAX`: a job this case never enqueued).
    Claimed(Vec<usize>),
    Renewed {
        expires_at: Timestamp,
        cancel_requested: bool,
    },
    Acked {
        state: JobState,
        run_at: Option<Timestamp>,
        duplicate: bool,
    },
    Cancel(Cancelled),
    Maintained {
        promoted: u64,
        stalled: u64,
        timed_out: u64,
        pruned: u64,
        scheduled: u64,
    },
    Refused(Refusal),
}

#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    LeaseLost,
    Conflict,
    NotFound,
    Other(String),
}

pub(super) fn refusal(e: Error) -> Outcome {
    Outcome::Refused(match e {
        Error::LeaseLost => Refusal::LeaseLost,
        Error::Conflict(_) => Refusal::Conflict,
        Error::NotFound(_) => Refusal::NotFound,
        other => Refusal::Other(other.to_string()),
    })
}

/// `Ok` if the model's view of a job is the engine's, else the fields that differ.
pub(super) fn same_job(what: &str, model: &Seen, real: &Seen) -> Result<(), String> {
    macro_rules! differing {
        ($($field:ident),*) => {{
            let mut out = Vec::new();
            $(if model.$field != real.$field {
                out.push(format!(
                    "\n    {}: model {:?}, engine {:?}",
                    stringify!($field), model.$field, real.$field
                ));
            })*
            out
        }};
    }
    let diffs = differing!(
        queue,
        state,
        priority,
        run_at,
        attempts,
        max_attempts,
        backoff,
        timeout_ms,
        heartbeat_ms,
        lease_ms,
        stalls,
        max_stalled,
        cancel_requested,
        dead_reason,
        lease,
        last_claim,
        errors,
        result,
        started_at,
        finished_at
    );
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}:{}\n    engine's whole view: {real:?}",
            diffs.concat()
        ))
    }
}

pub(super) fn same<T: PartialEq + Debug>(what: &str, model: &T, real: &T) -> Result<(), String> {
    if model == real {
        Ok(())
    } else {
        Err(format!(
            "{what}:\n    model:  {model:?}\n    engine: {real:?}"
        ))
    }
}

/// The delay before the next attempt after `failures` failures, as documented on [`Backoff`] (the
/// model's policies have no jitter and no cap).
fn backoff_delay(policy: &Backoff, failures: u32) -> u64 {
    match policy.kind {
        BackoffKind::Fixed => policy.delay_ms,
        BackoffKind::Exponential => policy.delay_ms << (failures - 1),
    }
}

pub(super) fn backoff_policy((kind, ms): (BackoffKind, u64)) -> Backoff {
    match kind {
        BackoffKind::Fixed => Backoff::fixed(ms),
        BackoffKind::Exponential => Backoff::exponential(ms),
    }
}

impl MJob {
    pub(super) fn lease_ms(&self) -> u64 {
        let s = &self.seen;
        let covered = match s.heartbeat_ms {
            Some(hb) => (2 * hb).min(s.timeout_ms),
            None => s.timeout_ms,
        };
        covered + LEASE_GRACE_MS
    }

    /// Moves the job to `to` with what every change does besides: leaving `active` ends the lease;
    /// entering a final state sets `finished_at`; entering another clears `finished_at`, the dead
    /// reason and the cancel request.
    pub(super) fn enter(&mut self, to: JobState, now: Timestamp) {
        let s = &mut self.seen;
        s.state = to;
        s.lease = None;
        if to.is_final() {
            s.finished_at = Some(now);
        } else {
            s.finished_at = None;
            s.dead_reason = None;
            s.cancel_requested = false;
        }
    }

    /// A failed attempt (the worker's failure or a timeout): cancelled if a cancel was requested, dead
    /// if no retry can help or no attempt is left, else back after its backoff.
    pub(super) fn attempt_failed(
        &mut self,
        kind: ErrorKind,
        message: Option<String>,
        now: Timestamp,
    ) -> (JobState, Option<Timestamp>) {
        let s = &mut self.seen;
        s.errors.push(SeenError {
            attempt: s.attempts,
            kind,
            at: now,
            message,
        });
        let (to, run_at) = if s.cancel_requested {
            (JobState::Cancelled, None)
        } else if kind == ErrorKind::NonRetryable {
            s.dead_reason = Some(DeadReason::NonRetryable);
            (JobState::Dead, None)
        } else if s.attempts >= s.max_attempts {
            s.dead_reason = Some(DeadReason::AttemptsExhausted);
            (JobState::Dead, None)
        } else {
            let delay = backoff_delay(&s.backoff, s.attempts) as Timestamp;
            let to = if delay == 0 {
                JobState::Waiting
            } else {
                JobState::Delayed
            };
            (to, Some(now + delay))
        };
        if let Some(at) = run_at {
            self.seen.run_at = at;
        }
        self.enter(to, now);
        (to, run_at)
    }

    /// The lease expired without a heartbeat: the run does not count, unless the job stalled too often
    /// (dead) or a cancel was requested (cancelled). `run_at` stays, so it keeps its place in line.
    pub(super) fn stalled(&mut self, now: Timestamp) {
        let s = &mut self.seen;
        s.errors.push(SeenError {
            attempt: s.attempts,
            kind: ErrorKind::Stalled,
            at: now,
            message: None,
        });
        s.stalls += 1;
        let to = if s.cancel_requested {
            JobState::Cancelled
        } else if s.stalls > s.max_stalled {
            s.dead_reason = Some(DeadReason::Stalled);
            JobState::Dead
        } else {
            s.attempts = s.attempts.saturating_sub(1);
            JobState::Waiting
        };
        self.enter(to, now);
    }
}
