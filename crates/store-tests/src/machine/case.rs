//! Running a case: the store and clock that live across cases ([`World`]: emptying the two queues,
//! restarting the engine), the state of one case ([`Run`]), and reading every job back to compare it
//! with the model after each step. What each operation does is `steps.rs`'s.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use errand_core::{
    Cancelled, Clock, Engine, EngineConfig, Error, ErrorKind, Job, JobId, JobState, ManualClock,
    QueueConfig, QueueStats, Retention, Store, Timestamp,
};

use super::model::{MJob, Seen, SeenError, SeenLease, same_job};
use super::ops::{FORGED, Op, Pick, Token};
use crate::Reopen;

/// What lives across cases: the one store, the one clock.
pub(super) struct World {
    /// `None` only while the store is being reopened.
    pub(super) store: RefCell<Option<Arc<dyn Store>>>,
    pub(super) reopen: Option<Reopen>,
    pub(super) clock: ManualClock,
    /// Bumped when a case cannot empty its queues (then it moves to fresh ones).
    pub(super) generation: Cell<u32>,
    pub(super) configured: Cell<Option<u32>>,
}

impl World {
    pub(super) fn engine(&self) -> Engine {
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

    pub(super) async fn case(&self, ops: &[Op]) -> Result<(), String> {
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
        // What the queues counted before this case: its own jobs are counted on top.
        let mut before = Vec::new();
        for q in self.queues() {
            before.push(
                engine
                    .stats(&q)
                    .await
                    .map_err(|e| format!("counting {q}: {e}"))?,
            );
        }
        let mut run = Run {
            world: self,
            counted_before: before,
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
        // Once per case rather than per step: a count that drifted stays wrong, and on PostgreSQL
        // each read of the counts is a commit (it folds the deltas).
        run.check_counts().await.map_err(|e| {
            format!(
                "after the last step: {e}\ntrace (t = ms since the case began):\n{}",
                run.trace.join("\n")
            )
        })
    }
}

/// Whether a step called the store.
pub(super) enum Touched {
    Store,
    Nothing,
}

/// One case: the engine under test, the model, and what was seen.
pub(super) struct Run<'w> {
    pub(super) world: &'w World,
    /// Each queue's counts per state when the case began.
    counted_before: Vec<QueueStats>,
    /// `None` only while the store is being reopened.
    pub(super) engine: Option<Engine>,
    pub(super) queues: [String; 2],
    pub(super) t0: Timestamp,
    /// The model's clock, relative to `t0`.
    pub(super) now: Timestamp,
    pub(super) jobs: Vec<MJob>,
    /// Each non-empty claim's token, by claim number.
    pub(super) tokens: Vec<String>,
    pub(super) token_of: HashMap<String, usize>,
    /// The latest id the current engine made.
    pub(super) last_id: Option<JobId>,
    /// Jobs seen in a final state, as first seen so.
    pub(super) finals: HashMap<JobId, Seen>,
    pub(super) trace: Vec<String>,
}

impl Run<'_> {
    pub(super) fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("the engine is running")
    }

    pub(super) fn pick(&self, job: Pick) -> Option<usize> {
        let active: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].seen.state == JobState::Active)
            .collect();
        match job {
            Pick::Active(k) if !active.is_empty() => Some(active[k % active.len()]),
            Pick::Active(k) | Pick::Any(k) => (!self.jobs.is_empty()).then(|| k % self.jobs.len()),
        }
    }

    /// The token `pick` names for job `i`: its claim number (`None`: forged) and its text.
    pub(super) fn token(&self, i: usize, pick: Token) -> (Option<usize>, String) {
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

    pub(super) fn holds(&self, i: usize, claim: Option<usize>) -> bool {
        let lease = self.jobs[i].seen.lease;
        claim.is_some() && lease.map(|l| l.claim) == claim
    }

    /// The job as the engine reports it, in the model's terms.
    pub(super) fn seen(&self, j: &Job) -> Seen {
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

    /// Each queue's counts per state are what it counted when the case began plus the case's jobs in
    /// that state: the counts a store keeps as jobs move must never drift from the jobs themselves.
    pub(super) async fn check_counts(&self) -> Result<(), String> {
        for (qi, q) in self.queues.iter().enumerate() {
            let stats = self
                .engine()
                .stats(q)
                .await
                .map_err(|e| format!("counting {q}: {e}"))?;
            for state in JobState::ALL {
                let ours = self
                    .jobs
                    .iter()
                    .filter(|m| m.seen.queue == qi && m.seen.state == state)
                    .count() as u64;
                let want = self.counted_before[qi].count(state) + ours;
                if stats.count(state) != want {
                    return Err(format!(
                        "{q} counts {} {state:?} jobs; {want} expected ({} before the case, {ours} \
                         of its own)",
                        stats.count(state),
                        self.counted_before[qi].count(state)
                    ));
                }
            }
            // Every job died through the engine, so each is in a dead-letter group.
            let grouped = self
                .engine()
                .dead_groups(q, 1_000)
                .await
                .map_err(|e| format!("grouping {q}'s dead letters: {e}"))?;
            if grouped.scanned != stats.dead {
                return Err(format!(
                    "{q}'s dead-letter groups hold {} jobs; it counts {} dead",
                    grouped.scanned, stats.dead
                ));
            }
        }
        Ok(())
    }
}
