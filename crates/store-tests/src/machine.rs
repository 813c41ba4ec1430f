//! The job lifecycle as one state machine: random sequences of operations run against the engine over a real
//! store and, step by step, against a small in-memory model of the job lifecycle. Any difference — an
//! outcome, an error, any field of any job read back after the step — is a divergence, and proptest
//! shrinks the sequence to a minimal one, printed with a trace of what each step did.
//!
//! **Operations.** Enqueue into one of two queues (priority default/0/500/1000, optional delay, 1–4
//! attempts, fixed or exponential backoff without jitter, one of several timeout/heartbeat pairs, 0–2
//! stalls allowed); claim (1–3 jobs, one of three workers, from either queue or both); heartbeat,
//! complete and fail (retryable or not) with the job's current token, an earlier token of the same job,
//! another claim's token, or a token never issued; cancel; clock advances, small and large, and jumps to
//! just before, at and after the next lease expiry, deadline or due time; `Engine::maintain`; a restart
//! (a new engine over the same store: what the engine keeps in memory is lost); and a reopen (the store
//! closed and opened again over the same data, when the fixture can, then a restart).
//!
//! **Rules the model restates** (it does not call the engine's code for them): the claim order
//! (priority, then `run_at`, then id, merged across the queues named) after the claim promotes the due
//! delayed jobs of those queues; attempts counted per claim and given back by a stall; the lease length
//! (`min(2 × heartbeat, timeout)`, or the timeout without a heartbeat, plus the grace) and the deadline
//! (claim + timeout); a heartbeat renews only a lease not yet expired and ignores the deadline; complete
//! and fail need the current token but not an unexpired lease; a repeated completion under the last
//! lease is a duplicate success; where a failed attempt goes (cancelled if a cancel was requested, dead
//! if not retryable or out of attempts, else back after its backoff); maintenance promotes due jobs, then
//! fails attempts past their deadline (a timeout) and recovers expired leases (a stall: waiting again
//! with the attempt given back and `run_at` kept, or dead past `max_stalled`, or cancelled if
//! requested); cancel of a waiting or delayed job, a request on an active one, a conflict on a finished
//! one; what entering a final or non-final state sets and clears; the error record each failed attempt
//! leaves; and that ids of one engine rise and carry the enqueue time (across a restart, FIFO within
//! one millisecond is not promised, so the model orders ties by the ids the engine gave). Apart from the
//! model, a job once seen completed, dead or cancelled must never change again.
//!
//! **Not covered** (other checks are): unique keys and dedup, flow control (groups, concurrency and rate
//! limits), pause, flows, release and snooze, retry and replay of dead jobs, retention, logs, progress,
//! jitter and backoff caps, events, cron, and concurrent callers: the model is sequential.
//!
//! **One store for every case.** A fresh store per case is too slow, and so are fresh queue names per
//! case: `maintain` visits every queue the store knows, so the run would grow with the square of the
//! number of cases. Every case instead uses the same two queues, which it first empties of unfinished
//! jobs (the previous case may have stopped anywhere); finished jobs are invisible to claims and to
//! maintenance, so cases cannot see each other. Retention is off on these queues, so the model need not
//! predict pruning. The clock only moves forward; the model counts time from the case's start.
//!
//! `ERRAND_MODEL_CASES` sets the number of cases (default 2,000, each of up to 64 operations).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use errand_core::limits::LEASE_GRACE_MS;
use errand_core::{
    Backoff, BackoffKind, Cancelled, Claim, Clock, DeadReason, Engine, EngineConfig, Error,
    ErrorKind, Failure, Job, JobId, JobOptions, JobState, ManualClock, NewJob, QueueConfig,
    Retention, Store, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::json;

use crate::{Fixture, Reopen};

pub async fn lifecycle_matches_the_model(fixture: Fixture) {
    let cases = std::env::var("ERRAND_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    // The guard outlives the world, whose store must close first.
    let Fixture {
        store,
        reopen,
        _guard,
    } = fixture;
    let world = World {
        store: RefCell::new(Some(store)),
        reopen,
        clock: ManualClock::at_fixed_start(),
        generation: Cell::new(0),
        configured: Cell::new(None),
    };
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 1_000,
        // A case costs tens of store calls: bound the shrinking by time too.
        max_shrink_time: 180_000,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let outcome = runner.run(&prop::collection::vec(op(), 1..=64), |ops| {
        tokio::task::block_in_place(|| handle.block_on(world.case(&ops)))
            .map_err(TestCaseError::fail)
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            let listed: Vec<String> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| format!("  {i:>2}: {op:?}"))
                .collect();
            panic!(
                "the engine diverged from the model; minimal sequence ({} ops):\n{}\n{why}",
                ops.len(),
                listed.join("\n")
            );
        }
        Err(TestError::Abort(why)) => panic!("the model test gave up: {why}"),
    }
}

// ---- operations -----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Enqueue(NewSpec),
    Claim {
        queues: &'static [usize],
        limit: usize,
        worker: usize,
    },
    Heartbeat {
        job: Pick,
        token: Token,
    },
    Complete {
        job: Pick,
        token: Token,
    },
    Fail {
        job: Pick,
        token: Token,
        retryable: bool,
    },
    Cancel {
        job: Pick,
    },
    /// Moves the clock forward by this many milliseconds.
    Advance(i64),
    /// Moves the clock to `offset` ms from one of the upcoming instants where something falls due (a
    /// lease expiry, a deadline, a due time): the boundaries where an off-by-one hides.
    AdvanceTo {
        event: usize,
        offset: i64,
    },
    Maintain,
    Restart,
    /// A restart that also closes the store and opens it again over the same data (a plain restart
    /// when the fixture cannot reopen its store).
    Reopen,
}

#[derive(Debug, Clone)]
struct NewSpec {
    queue: usize,
    priority: Option<i32>,
    delay_ms: Option<u64>,
    max_attempts: u32,
    backoff: (BackoffKind, u64),
    /// `(timeout_ms, heartbeat_ms)`.
    timing: (u64, Option<u64>),
    max_stalled: u32,
}

/// Which job an operation is about. Indices are taken modulo what exists when the step runs.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// One of the jobs the model says are active (any job if none is): most worker calls are made
    /// while holding a job.
    Active(usize),
    /// Any job of the case, in enqueue order.
    Any(usize),
}

/// Which lease token an operation presents. Indices are taken modulo what exists when the step runs,
/// so that any generated sequence means something and shrinks well.
#[derive(Debug, Clone, Copy)]
enum Token {
    /// The job's latest claim.
    Latest,
    /// An earlier claim of the same job (a worker that paused past its lease).
    Earlier(usize),
    /// Any claim's token, most often another job's.
    OfClaim(usize),
    /// A token no claim issued.
    Forged,
}

const QUEUE_SETS: &[&[usize]] = &[&[0], &[1], &[0, 1], &[1, 0]];
const FORGED: &str = "00000000000000000000000000000000";

/// Timeout and heartbeat pairs: with a short heartbeat the lease runs out before the deadline (a
/// stall, unless heartbeats keep it alive until the timeout); without one, or with a long one, the
/// deadline comes first (a timeout), and a heartbeat as long as the timeout is capped by it.
const TIMINGS: &[(u64, Option<u64>)] = &[
    (1_000, None),
    (3_000, None),
    (20_000, Some(1_000)),
    (12_000, Some(8_000)),
    (10_000, Some(10_000)),
    (30_000, Some(2_000)),
    (60_000, Some(100)),
];

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        6 => Just(Token::Latest),
        2 => (0..4usize).prop_map(Token::Earlier),
        2 => (0..8usize).prop_map(Token::OfClaim),
        1 => Just(Token::Forged),
    ]
}

fn new_spec() -> impl Strategy<Value = NewSpec> {
    let priority = prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(500)),
        Just(Some(1_000))
    ];
    let delay = prop_oneof![
        3 => Just(None),
        1 => Just(Some(0)),
        2 => prop::sample::select(vec![1u64, 1_000, 5_000, 7_000]).prop_map(Some),
        1 => (1..20_000u64).prop_map(Some),
    ];
    let backoff = (
        prop_oneof![Just(BackoffKind::Fixed), Just(BackoffKind::Exponential)],
        prop::sample::select(vec![0u64, 1, 1_000, 5_000]),
    );
    (
        0..2usize,
        priority,
        delay,
        1..=4u32,
        backoff,
        prop::sample::select(TIMINGS),
        0..=2u32,
    )
        .prop_map(
            |(queue, priority, delay_ms, max_attempts, backoff, timing, max_stalled)| NewSpec {
                queue,
                priority,
                delay_ms,
                max_attempts,
                backoff,
                timing,
                max_stalled,
            },
        )
}

fn pick(active: u32) -> impl Strategy<Value = Pick> {
    prop_oneof![
        active => (0..4usize).prop_map(Pick::Active),
        1 => (0..12usize).prop_map(Pick::Any),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => new_spec().prop_map(Op::Enqueue),
        7 => (prop::sample::select(QUEUE_SETS), 1..=3usize, 0..3usize)
            .prop_map(|(queues, limit, worker)| Op::Claim { queues, limit, worker }),
        3 => (pick(3), token()).prop_map(|(job, token)| Op::Heartbeat { job, token }),
        5 => (pick(3), token()).prop_map(|(job, token)| Op::Complete { job, token }),
        5 => (pick(3), token(), prop::bool::weighted(0.75))
            .prop_map(|(job, token, retryable)| Op::Fail { job, token, retryable }),
        2 => pick(1).prop_map(|job| Op::Cancel { job }),
        4 => prop_oneof![1..=5i64, 6..2_000i64, 2_000..30_000i64, 30_000..120_000i64]
            .prop_map(Op::Advance),
        3 => (0..6usize, -1..=1i64).prop_map(|(event, offset)| Op::AdvanceTo { event, offset }),
        5 => Just(Op::Maintain),
        // A reopen costs a PostgreSQL store a new pool: rarer than a plain restart.
        2 => prop::bool::weighted(0.25)
            .prop_map(|reopen| if reopen { Op::Reopen } else { Op::Restart }),
    ]
}

// ---- the model ------------------------------------------------------------------------------------

/// A job as the model sees it. Times count from the case's start; tokens and workers are indices.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    queue: usize,
    state: JobState,
    priority: i32,
    run_at: Timestamp,
    attempts: u32,
    max_attempts: u32,
    backoff: Backoff,
    timeout_ms: u64,
    heartbeat_ms: Option<u64>,
    lease_ms: u64,
    stalls: u32,
    max_stalled: u32,
    cancel_requested: bool,
    dead_reason: Option<DeadReason>,
    lease: Option<SeenLease>,
    /// The latest claim's token, kept after the job leaves `active`.
    last_claim: Option<usize>,
    errors: Vec<SeenError>,
    result: Option<String>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct SeenLease {
    claim: usize,
    worker: usize,
    expires_at: Timestamp,
    deadline_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
struct SeenError {
    attempt: u32,
    kind: ErrorKind,
    at: Timestamp,
    /// The worker's message; the engine words timeouts and stalls itself.
    message: Option<String>,
}

/// A job of the model: what it should look like, and what only the model needs.
#[derive(Debug, Clone)]
struct MJob {
    id: JobId,
    seen: Seen,
    /// Every claim that held it, oldest first.
    claims: Vec<usize>,
}

/// What an operation answered, times relative to the case's start.
#[derive(Debug, PartialEq)]
enum Outcome {
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
enum Refusal {
    LeaseLost,
    Conflict,
    NotFound,
    Other(String),
}

fn refusal(e: Error) -> Outcome {
    Outcome::Refused(match e {
        Error::LeaseLost => Refusal::LeaseLost,
        Error::Conflict(_) => Refusal::Conflict,
        Error::NotFound(_) => Refusal::NotFound,
        other => Refusal::Other(other.to_string()),
    })
}

/// `Ok` if the model's view of a job is the engine's, else the fields that differ.
fn same_job(what: &str, model: &Seen, real: &Seen) -> Result<(), String> {
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

fn same<T: PartialEq + Debug>(what: &str, model: &T, real: &T) -> Result<(), String> {
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

fn backoff_policy((kind, ms): (BackoffKind, u64)) -> Backoff {
    match kind {
        BackoffKind::Fixed => Backoff::fixed(ms),
        BackoffKind::Exponential => Backoff::exponential(ms),
    }
}

impl MJob {
    fn lease_ms(&self) -> u64 {
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
    fn enter(&mut self, to: JobState, now: Timestamp) {
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
    fn attempt_failed(
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
    fn stalled(&mut self, now: Timestamp) {
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

// ---- running a case -------------------------------------------------------------------------------

/// What lives across cases: the one store, the one clock.
struct World {
    /// `None` only while the store is being reopened.
    store: RefCell<Option<Arc<dyn Store>>>,
    reopen: Option<Reopen>,
    clock: ManualClock,
    /// Bumped when a case cannot empty its queues (then it moves to fresh ones).
    generation: Cell<u32>,
    configured: Cell<Option<u32>>,
}

impl World {
    fn engine(&self) -> Engine {
        // The queues' settings never change during a case: reading them once per engine saves a round
        // trip on most claims and enqueues.
        let config = EngineConfig {
            queue_config_ttl_ms: 24 * 3_600_000,
            ..EngineConfig::default()
        };
        let store = self.store.borrow().clone().unwrap_or_else(|| {
            panic!("the store is closed: reopening it failed (see the first panic above)")
        });
        Engine::new(store, Arc::new(self.clock.clone()), config)
    }

    fn queues(&self) -> [String; 2] {
        let g = self.generation.get();
        [format!("m{g}.a"), format!("m{g}.b")]
    }

    /// Leaves no unfinished job on the case's queues, whatever the previous case left; `false` if it
    /// could not.
    async fn empty_queues(&self, engine: &Engine) -> Result<bool, Error> {
        for _ in 0..3 {
            // Nothing else runs meanwhile: when every job found was finished, none is left.
            let mut left = false;
            for q in self.queues() {
                for state in [JobState::Waiting, JobState::Delayed, JobState::Active] {
                    let page = engine.list(&q, state, None, 1_000).await?;
                    left |= page.next.is_some();
                    for job in page.jobs {
                        let finished = match job.lease {
                            Some(lease) => engine.complete(job.id, lease.token, None).await.is_ok(),
                            None => matches!(engine.cancel(job.id).await, Ok(Cancelled::Cancelled)),
                        };
                        left |= !finished;
                    }
                }
            }
            if !left {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn case(&self, ops: &[Op]) -> Result<(), String> {
        // Time only moves forward; each case starts on a millisecond of its own.
        self.clock.advance(1_000);
        let engine = self.engine();
        let clean = self
            .empty_queues(&engine)
            .await
            .map_err(|e| format!("emptying the queues: {e}"))?;
        if !clean {
            self.generation.set(self.generation.get() + 1);
        }
        if self.configured.get() != Some(self.generation.get()) {
            let config = QueueConfig {
                retention: Retention {
                    max_count: None,
                    max_age_ms: None,
                },
                ..QueueConfig::default()
            };
            for q in self.queues() {
                engine
                    .set_queue_config(&q, config.clone())
                    .await
                    .map_err(|e| format!("configuring {q}: {e}"))?;
            }
            self.configured.set(Some(self.generation.get()));
        }
        let mut run = Run {
            world: self,
            engine: Some(engine),
            queues: self.queues(),
            t0: self.clock.now(),
            now: 0,
            jobs: Vec::new(),
            tokens: Vec::new(),
            token_of: HashMap::new(),
            last_id: None,
            finals: HashMap::new(),
            trace: Vec::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            let step = match run.step(i, op).await {
                Ok(Touched::Store) => run.check_all().await,
                // No store call was made, so no stored job can have changed.
                Ok(Touched::Nothing) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(divergence) = step {
                return Err(format!(
                    "divergence at step {i} ({op:?}): {divergence}\ntrace (t = ms since the case began):\n{}",
                    run.trace.join("\n")
                ));
            }
        }
        Ok(())
    }
}

/// Whether a step called the store.
enum Touched {
    Store,
    Nothing,
}

/// One case: the engine under test, the model, and what was seen.
struct Run<'w> {
    world: &'w World,
    /// `None` only while the store is being reopened.
    engine: Option<Engine>,
    queues: [String; 2],
    t0: Timestamp,
    /// The model's clock, relative to `t0`.
    now: Timestamp,
    jobs: Vec<MJob>,
    /// Each non-empty claim's token, by claim number.
    tokens: Vec<String>,
    token_of: HashMap<String, usize>,
    /// The latest id the current engine made.
    last_id: Option<JobId>,
    /// Jobs seen in a final state, as first seen so.
    finals: HashMap<JobId, Seen>,
    trace: Vec<String>,
}

impl Run<'_> {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("the engine is running")
    }

    fn pick(&self, job: Pick) -> Option<usize> {
        let active: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].seen.state == JobState::Active)
            .collect();
        match job {
            Pick::Active(k) if !active.is_empty() => Some(active[k % active.len()]),
            Pick::Active(k) | Pick::Any(k) => (!self.jobs.is_empty()).then(|| k % self.jobs.len()),
        }
    }

    /// The token `pick` names for job `i`: its claim number (`None`: forged) and its text.
    fn token(&self, i: usize, pick: Token) -> (Option<usize>, String) {
        let claims = &self.jobs[i].claims;
        let claim = match pick {
            Token::Latest => claims.last().copied(),
            Token::Earlier(k) if claims.len() >= 2 => Some(claims[k % (claims.len() - 1)]),
            Token::Earlier(_) | Token::Forged => None,
            Token::OfClaim(k) => (!self.tokens.is_empty()).then(|| k % self.tokens.len()),
        };
        match claim {
            Some(c) => (Some(c), self.tokens[c].clone()),
            None => (None, FORGED.to_string()),
        }
    }

    fn holds(&self, i: usize, claim: Option<usize>) -> bool {
        let lease = self.jobs[i].seen.lease;
        claim.is_some() && lease.map(|l| l.claim) == claim
    }

    /// The job as the engine reports it, in the model's terms.
    fn seen(&self, j: &Job) -> Seen {
        let rel = |t: Timestamp| t - self.t0;
        let claim = |t: &str| self.token_of.get(t).copied().unwrap_or(usize::MAX);
        Seen {
            queue: self
                .queues
                .iter()
                .position(|q| *q == j.queue)
                .unwrap_or(usize::MAX),
            state: j.state,
            priority: j.priority,
            run_at: rel(j.run_at),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            backoff: j.backoff.clone(),
            timeout_ms: j.timeout_ms,
            heartbeat_ms: j.heartbeat_ms,
            lease_ms: j.lease_ms,
            stalls: j.stalls,
            max_stalled: j.max_stalled,
            cancel_requested: j.cancel_requested,
            dead_reason: j.dead_reason,
            lease: j.lease.as_ref().map(|l| SeenLease {
                claim: claim(&l.token),
                worker: l
                    .worker_id
                    .strip_prefix('w')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX),
                expires_at: rel(l.expires_at),
                deadline_at: rel(l.deadline_at),
            }),
            last_claim: j.last_lease_token.as_deref().map(claim),
            errors: j
                .errors
                .iter()
                .map(|e| SeenError {
                    attempt: e.attempt,
                    kind: e.kind,
                    at: rel(e.at),
                    message: matches!(e.kind, ErrorKind::Error | ErrorKind::NonRetryable)
                        .then(|| e.message.clone()),
                })
                .collect(),
            result: j.result.as_ref().map(|r| r.get().to_string()),
            started_at: j.started_at.map(rel),
            finished_at: j.finished_at.map(rel),
        }
    }

    /// Reads every job of the case back and compares it with the model; a job once seen final must be
    /// exactly as it was then.
    async fn check_all(&mut self) -> Result<(), String> {
        // Read concurrently: one round trip per job and step is most of this test's time.
        let mut reads = tokio::task::JoinSet::new();
        for (i, m) in self.jobs.iter().enumerate() {
            let (engine, id) = (self.engine().clone(), m.id);
            reads.spawn(async move { (i, engine.get(id).await) });
        }
        let mut got = vec![None; self.jobs.len()];
        while let Some(read) = reads.join_next().await {
            let (i, job) = read.map_err(|e| format!("a read panicked: {e}"))?;
            got[i] = Some(job.map_err(|e| format!("get {}: {e}", self.jobs[i].id))?);
        }
        for (i, (m, job)) in self.jobs.iter().zip(got).enumerate() {
            let real = self.seen(job.as_ref().ok_or("a read went missing")?);
            if let Some(was) = self.finals.get(&m.id) {
                same_job(
                    &format!("job#{i} ({}) changed after it finished", m.id),
                    was,
                    &real,
                )?;
            }
            same_job(&format!("job#{i} ({})", m.id), &m.seen, &real)?;
            if real.state.is_final() {
                self.finals.entry(m.id).or_insert(real);
            }
        }
        Ok(())
    }

    async fn step(&mut self, n: usize, op: &Op) -> Result<Touched, String> {
        let now = self.now;
        let (what, model, real) = match *op {
            Op::Enqueue(ref spec) => self.enqueue(spec).await?,
            Op::Claim {
                queues,
                limit,
                worker,
            } => self.claim(queues, limit, worker).await?,
            Op::Heartbeat { job, token } => {
                let Some(i) = self.pick(job) else {
                    return self.skip(n, op);
                };
                let (claim, text) = self.token(i, token);
                let id = self.jobs[i].id;
                let lease_ms = self.jobs[i].lease_ms() as Timestamp;
                let m = &mut self.jobs[i].seen;
                let model = match m.lease {
                    Some(ref mut l) if Some(l.claim) == claim && l.expires_at > now => {
                        l.expires_at = now + lease_ms;
                        Outcome::Renewed {
                            expires_at: l.expires_at,
                            cancel_requested: m.cancel_requested,
                        }
                    }
                    _ => Outcome::Refused(Refusal::LeaseLost),
                };
                let real = match self.engine().heartbeat(id, text, None).await {
                    Ok(r) => Outcome::Renewed {
                        expires_at: r.lease_expires_at - self.t0,
                        cancel_requested: r.cancel_requested,
                    },
                    Err(e) => refusal(e),
                };
                (format!("heartbeat job#{i} token {claim:?}"), model, real)
            }
            Op::Complete { job, token } => {
                let Some(i) = self.pick(job) else {
                    return self.skip(n, op);
                };
                let (claim, text) = self.token(i, token);
                let id = self.jobs[i].id;
                let result = n.to_string();
                let model = if self.holds(i, claim) {
                    let m = &mut self.jobs[i];
                    m.seen.result = Some(result);
                    m.enter(JobState::Completed, now);
                    Outcome::Acked {
                        state: JobState::Completed,
                        run_at: None,
                        duplicate: false,
                    }
                } else if self.jobs[i].seen.state == JobState::Completed
                    && claim.is_some()
                    && self.jobs[i].claims.last().copied() == claim
                {
                    Outcome::Acked {
                        state: JobState::Completed,
                        run_at: None,
                        duplicate: true,
                    }
                } else {
                    Outcome::Refused(Refusal::LeaseLost)
                };
                let real = match self.engine().complete(id, text, Some(json!(n))).await {
                    Ok(a) => Outcome::Acked {
                        state: a.state,
                        run_at: a.run_at.map(|t| t - self.t0),
                        duplicate: a.duplicate,
                    },
                    Err(e) => refusal(e),
                };
                (format!("complete job#{i} token {claim:?}"), model, real)
            }
            Op::Fail {
                job,
                token,
                retryable,
            } => {
                let Some(i) = self.pick(job) else {
                    return self.skip(n, op);
                };
                let (claim, text) = self.token(i, token);
                let id = self.jobs[i].id;
                let message = format!("failure at step {n}");
                let (kind, failure) = if retryable {
                    (ErrorKind::Error, Failure::retryable(&message))
                } else {
                    (ErrorKind::NonRetryable, Failure::fatal(&message))
                };
                let model = if self.holds(i, claim) {
                    let (state, run_at) = self.jobs[i].attempt_failed(kind, Some(message), now);
                    Outcome::Acked {
                        state,
                        run_at,
                        duplicate: false,
                    }
                } else {
                    Outcome::Refused(Refusal::LeaseLost)
                };
                let real = match self.engine().fail(id, text, failure).await {
                    Ok(a) => Outcome::Acked {
                        state: a.state,
                        run_at: a.run_at.map(|t| t - self.t0),
                        duplicate: a.duplicate,
                    },
                    Err(e) => refusal(e),
                };
                (format!("fail job#{i} token {claim:?}"), model, real)
            }
            Op::Cancel { job } => {
                let Some(i) = self.pick(job) else {
                    return self.skip(n, op);
                };
                let id = self.jobs[i].id;
                let m = &mut self.jobs[i];
                let model = match m.seen.state {
                    JobState::Waiting | JobState::Delayed => {
                        m.enter(JobState::Cancelled, now);
                        Outcome::Cancel(Cancelled::Cancelled)
                    }
                    JobState::Cancelled => Outcome::Cancel(Cancelled::Cancelled),
                    JobState::Active => {
                        m.seen.cancel_requested = true;
                        Outcome::Cancel(Cancelled::Requested)
                    }
                    JobState::Completed | JobState::Dead | JobState::WaitingChildren => {
                        Outcome::Refused(Refusal::Conflict)
                    }
                };
                let real = match self.engine().cancel(id).await {
                    Ok(c) => Outcome::Cancel(c),
                    Err(e) => refusal(e),
                };
                (format!("cancel job#{i}"), model, real)
            }
            Op::Advance(ms) => {
                self.advance(ms);
                self.trace
                    .push(format!("t={:>7} #{n} advance {ms} ms", self.now));
                return Ok(Touched::Nothing);
            }
            Op::AdvanceTo { event, offset } => {
                let mut at: Vec<Timestamp> = self
                    .jobs
                    .iter()
                    .flat_map(|m| match (m.seen.state, m.seen.lease) {
                        (JobState::Active, Some(l)) => vec![l.expires_at, l.deadline_at],
                        (JobState::Delayed, _) => vec![m.seen.run_at],
                        _ => Vec::new(),
                    })
                    .map(|t| t + offset)
                    .filter(|&t| t > now)
                    .collect();
                at.sort_unstable();
                at.dedup();
                let to = at.get(event % at.len().max(1)).copied().unwrap_or(now + 1);
                self.advance(to - now);
                self.trace
                    .push(format!("t={:>7} #{n} advance to {to}", self.now));
                return Ok(Touched::Nothing);
            }
            Op::Maintain => self.maintain().await,
            Op::Restart => {
                self.engine = Some(self.world.engine());
                self.last_id = None;
                self.trace.push(format!("t={now:>7} #{n} restart"));
                return Ok(Touched::Nothing);
            }
            Op::Reopen => {
                // Every handle on the old store goes before the new one opens: the engine's, then ours.
                self.engine = None;
                if let Some(reopen) = &self.world.reopen {
                    drop(self.world.store.borrow_mut().take());
                    let store = reopen().await;
                    *self.world.store.borrow_mut() = Some(store);
                }
                self.engine = Some(self.world.engine());
                self.last_id = None;
                self.trace.push(format!("t={now:>7} #{n} reopen"));
                // Whatever the store keeps must have survived.
                return Ok(Touched::Store);
            }
        };
        self.trace
            .push(format!("t={now:>7} #{n} {what} -> {real:?}"));
        same("outcome", &model, &real).map(|()| Touched::Store)
    }

    fn skip(&mut self, n: usize, op: &Op) -> Result<Touched, String> {
        self.trace.push(format!(
            "t={:>7} #{n} {op:?}: no job yet, skipped",
            self.now
        ));
        Ok(Touched::Nothing)
    }

    fn advance(&mut self, ms: i64) {
        self.world.clock.advance(ms);
        self.now += ms;
    }

    async fn enqueue(&mut self, spec: &NewSpec) -> Result<(String, Outcome, Outcome), String> {
        let now = self.now;
        let (timeout_ms, heartbeat_ms) = spec.timing;
        let run_at = now + spec.delay_ms.unwrap_or(0) as Timestamp;
        let state = if run_at > now {
            JobState::Delayed
        } else {
            JobState::Waiting
        };
        let job = NewJob::new(
            self.queues[spec.queue].clone(),
            "machine.job",
            json!({ "n": self.jobs.len() }),
        )
        .with_options(JobOptions {
            priority: spec.priority,
            delay_ms: spec.delay_ms,
            max_attempts: Some(spec.max_attempts),
            backoff: Some(backoff_policy(spec.backoff)),
            timeout_ms: Some(timeout_ms),
            heartbeat_ms,
            max_stalled: Some(spec.max_stalled),
            ..JobOptions::default()
        });
        let what = format!("enqueue job#{} {spec:?}", self.jobs.len());
        let real = match self.engine().enqueue(job).await {
            Ok(e) => e,
            Err(e) => return Ok((what, Outcome::Enqueued(state), refusal(e))),
        };
        same(
            "enqueue made a new job",
            &(true, false),
            &(real.created, real.replaced),
        )?;
        same(
            "the id carries the enqueue time",
            &(self.t0 + now),
            &real.id.timestamp(),
        )?;
        if let Some(last) = self.last_id
            && real.id <= last
        {
            return Err(format!(
                "ids of one engine must rise: {} after {last}",
                real.id
            ));
        }
        self.last_id = Some(real.id);
        let mut m = MJob {
            id: real.id,
            seen: Seen {
                queue: spec.queue,
                state,
                priority: spec.priority.unwrap_or(QueueConfig::default().priority),
                run_at,
                attempts: 0,
                max_attempts: spec.max_attempts,
                backoff: backoff_policy(spec.backoff),
                timeout_ms,
                heartbeat_ms,
                lease_ms: 0,
                stalls: 0,
                max_stalled: spec.max_stalled,
                cancel_requested: false,
                dead_reason: None,
                lease: None,
                last_claim: None,
                errors: Vec::new(),
                result: None,
                started_at: None,
                finished_at: None,
            },
            claims: Vec::new(),
        };
        m.seen.lease_ms = m.lease_ms();
        self.jobs.push(m);
        Ok((
            what,
            Outcome::Enqueued(state),
            Outcome::Enqueued(real.state),
        ))
    }

    async fn claim(
        &mut self,
        queues: &[usize],
        limit: usize,
        worker: usize,
    ) -> Result<(String, Outcome, Outcome), String> {
        let now = self.now;
        // The claim first promotes the due delayed jobs of the queues it names, claimed or not.
        for m in &mut self.jobs {
            if queues.contains(&m.seen.queue)
                && m.seen.state == JobState::Delayed
                && m.seen.run_at <= now
            {
                m.seen.state = JobState::Waiting;
            }
        }
        let mut best: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| {
                let s = &self.jobs[i].seen;
                queues.contains(&s.queue) && s.state == JobState::Waiting
            })
            .collect();
        best.sort_by_key(|&i| {
            let m = &self.jobs[i];
            (m.seen.priority, m.seen.run_at, m.id)
        });
        best.truncate(limit);
        let model = Outcome::Claimed(best.clone());
        let what = format!("claim {queues:?} limit {limit} as w{worker}");
        let claimed = match self
            .engine()
            .claim(Claim {
                queues: queues.iter().map(|&q| self.queues[q].clone()).collect(),
                worker_id: format!("w{worker}"),
                limit,
                heartbeat_ms: None,
            })
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => return Ok((what, model, refusal(e))),
        };
        let real = Outcome::Claimed(
            claimed
                .iter()
                .map(|j| {
                    self.jobs
                        .iter()
                        .position(|m| m.id == j.id)
                        .unwrap_or(usize::MAX)
                })
                .collect(),
        );
        if model != real || claimed.is_empty() {
            return Ok((what, model, real));
        }
        let token = claimed[0]
            .lease
            .as_ref()
            .map(|l| l.token.clone())
            .unwrap_or_default();
        if self.token_of.contains_key(&token) {
            return Err(format!("claim reused an earlier token {token}"));
        }
        let c = self.tokens.len();
        self.tokens.push(token.clone());
        self.token_of.insert(token, c);
        for &i in &best {
            let m = &mut self.jobs[i];
            let lease_ms = m.lease_ms() as Timestamp;
            let s = &mut m.seen;
            s.state = JobState::Active;
            s.attempts += 1;
            s.cancel_requested = false;
            s.started_at = Some(now);
            s.last_claim = Some(c);
            s.lease = Some(SeenLease {
                claim: c,
                worker,
                expires_at: now + lease_ms,
                deadline_at: now + s.timeout_ms as Timestamp,
            });
            m.claims.push(c);
        }
        // The jobs handed out are the jobs as they are now (one claim, one token).
        for (j, &i) in claimed.iter().zip(&best) {
            same_job(
                &format!("claimed job#{i} ({})", j.id),
                &self.jobs[i].seen,
                &self.seen(j),
            )?;
        }
        Ok((what, model, real))
    }

    async fn maintain(&mut self) -> (String, Outcome, Outcome) {
        let now = self.now;
        let mut promoted = 0;
        for m in &mut self.jobs {
            if m.seen.state == JobState::Delayed && m.seen.run_at <= now {
                m.seen.state = JobState::Waiting;
                promoted += 1;
            }
        }
        let (mut stalled, mut timed_out) = (0, 0);
        for m in &mut self.jobs {
            let Some(lease) = m.seen.lease else { continue };
            if lease.deadline_at <= now {
                let message = None;
                m.attempt_failed(ErrorKind::Timeout, message, now);
                timed_out += 1;
            } else if lease.expires_at <= now {
                m.stalled(now);
                stalled += 1;
            }
        }
        let model = Outcome::Maintained {
            promoted,
            stalled,
            timed_out,
            pruned: 0,
            scheduled: 0,
        };
        let real = match self.engine().maintain().await {
            Ok(r) => Outcome::Maintained {
                promoted: r.promoted,
                stalled: r.stalled,
                timed_out: r.timed_out,
                pruned: r.pruned,
                scheduled: r.scheduled,
            },
            Err(e) => refusal(e),
        };
        ("maintain".to_string(), model, real)
    }
}
