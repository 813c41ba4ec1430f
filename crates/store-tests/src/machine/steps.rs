//! What each operation does: to the engine under test, and to the model by the rules it restates, with
//! the two answers compared. Reading the jobs back after a step is `case.rs`'s.

use errand_core::{
    Cancelled, Claim, ErrorKind, Failure, JobOptions, JobState, NewJob, QueueConfig, Timestamp,
};
use serde_json::json;

use super::case::{Run, Touched};
use super::model::{
    MJob, Outcome, Refusal, Seen, SeenLease, backoff_policy, refusal, same, same_job,
};
use super::ops::{NewSpec, Op};

impl Run<'_> {
    pub(super) async fn step(&mut self, n: usize, op: &Op) -> Result<Touched, String> {
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
