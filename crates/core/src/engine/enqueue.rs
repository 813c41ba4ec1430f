//! Producers: enqueue one job or a batch.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::JobId;
use crate::model::{Dedup, JobState, NewJob, QueueConfig};
use crate::store::{Inserted, JobInsert, JobReplace, JobSpec};
use crate::validate;

use super::Engine;

/// The outcome of enqueuing one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub id: JobId,
    pub state: JobState,
    /// `false` when the unique key matched a job that already exists: `id` is that job's.
    pub created: bool,
    /// With [`Dedup::Replace`]: the existing job took this job's payload, priority and run time.
    pub replaced: bool,
}

impl Engine {
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
            return Err(Error::too_large(
                "jobs",
                format!("at most {} jobs per batch", self.limits().max_batch),
            ));
        }
        self.insert(jobs, true).await
    }

    async fn insert(&self, jobs: Vec<NewJob>, batch: bool) -> Result<Vec<Enqueued>> {
        let now = self.now();
        let dedup: Vec<Dedup> = jobs.iter().map(|j| j.options.dedup).collect();
        let specs = self.specs(jobs, batch, now).await?;
        let mut out = self.insert_specs(&specs, now).await?;
        for ((spec, mode), e) in specs.iter().zip(dedup).zip(&mut out) {
            if mode == Dedup::Replace && !e.created {
                // The insert is committed: a failed replace must not fail the request (a retry of
                // the batch would enqueue its other jobs twice). It answers `replaced: false`.
                if let Err(err) = self.replace(spec, e, now).await {
                    tracing::warn!(job_id = %e.id, "could not replace the job's input: {err}");
                }
            }
        }
        Ok(out)
    }

    /// Gives the waiting or delayed job `e` that holds `spec`'s unique key `spec`'s input
    /// ([`Dedup::Replace`]). A job that was claimed meanwhile keeps its input.
    async fn replace(&self, spec: &JobSpec, e: &mut Enqueued, now: Timestamp) -> Result<()> {
        // The job may be promoted (delayed → waiting) between the insert and here: then the state
        // read again is the one to expect, once.
        let mut from = e.state;
        let mut replaced = false;
        for _ in 0..2 {
            if !matches!(from, JobState::Waiting | JobState::Delayed) {
                return Ok(());
            }
            replaced = self
                .inner
                .store
                .job_replace(JobReplace {
                    id: e.id,
                    from,
                    payload: spec.payload.clone(),
                    priority: spec.priority,
                    run_at: spec.run_at,
                    state: spec.state,
                    expires_at: spec.expires_at,
                })
                .await?;
            if replaced {
                break;
            }
            from = self.get(e.id).await?.state;
        }
        if replaced {
            e.state = spec.state;
            e.replaced = true;
            if from != spec.state {
                self.emit(|| {
                    vec![Event::new(
                        e.id,
                        spec.queue.clone(),
                        spec.kind.clone(),
                        Some(from),
                        spec.state,
                        now,
                        0,
                    )]
                });
            }
        }
        Ok(())
    }

    /// Resolves and validates jobs into what the store inserts; in a batch, errors name `jobs[i]`.
    pub(super) async fn specs(
        &self,
        jobs: Vec<NewJob>,
        batch: bool,
        now: Timestamp,
    ) -> Result<Vec<JobSpec>> {
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
                    let config = self.queue_config(&job.queue, now).await?;
                    configs.insert(job.queue.clone(), config);
                }
                let id = self.next_id(now);
                self.resolve(job, &configs, id, now)
            }
            .await
            .map_err(|e| if batch { e.in_field(&prefix) } else { e })?;
            specs.push(spec);
        }
        Ok(specs)
    }

    /// Inserts resolved jobs in one store call; what that means to the producer.
    pub(super) async fn insert_specs(
        &self,
        specs: &[JobSpec],
        now: Timestamp,
    ) -> Result<Vec<Enqueued>> {
        let inserted = self
            .inner
            .store
            .job_insert(JobInsert {
                jobs: specs.to_vec(),
            })
            .await?;
        Ok(self.inserted(specs, &inserted, now))
    }

    /// What the store's answers mean to the producer; announces the jobs that are new.
    pub(super) fn inserted(
        &self,
        specs: &[JobSpec],
        inserted: &[Inserted],
        now: Timestamp,
    ) -> Vec<Enqueued> {
        let out: Vec<Enqueued> = specs
            .iter()
            .zip(inserted)
            .map(|(s, ins)| match ins {
                Inserted::New => Enqueued {
                    id: s.id,
                    state: s.state,
                    created: true,
                    replaced: false,
                },
                Inserted::Existing { id, state } => Enqueued {
                    id: *id,
                    state: *state,
                    created: false,
                    replaced: false,
                },
            })
            .collect();
        self.emit(|| {
            specs
                .iter()
                .zip(inserted)
                .filter(|(_, ins)| **ins == Inserted::New)
                .map(|(s, _)| {
                    Event::new(s.id, s.queue.clone(), s.kind.clone(), None, s.state, now, 0)
                })
                .collect()
        });
        out
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
        let payload = validate::json("payload", &job.payload, limits.max_payload_bytes, limits)?;
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
                now.saturating_add(d as i64)
            }
            (None, Some(t)) => {
                // Before 1970 is no instant a producer means (a duration or a sign slipped in);
                // a past instant after it is "now" (a producer's clock may be a little behind).
                if t < 0 {
                    return Err(Error::invalid(
                        "run_at",
                        "must be an instant in milliseconds since 1970-01-01 UTC, not negative \
                         (for a delay, give delay_ms)",
                    ));
                }
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
        let expires_at = match o.expire_after_ms {
            Some(ms) => {
                validate::range_u64("expire_after_ms", ms, 1, limits.max_delay_ms)?;
                let at = now.saturating_add(ms as i64);
                if at <= run_at {
                    return Err(Error::invalid(
                        "expire_after_ms",
                        "must be longer than the job's delay: it would expire before it may run",
                    ));
                }
                Some(at)
            }
            None => None,
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
        if o.dedup == Dedup::Replace && o.unique_key.is_none() {
            return Err(Error::invalid(
                "dedup",
                "replace needs a unique_key: it names the job to replace",
            ));
        }
        for (field, k) in [
            ("unique_key", &o.unique_key),
            ("group_key", &o.group_key),
            ("concurrency_key", &o.concurrency_key),
        ] {
            if let Some(k) = k {
                validate::key(field, k, limits.max_key)?;
            }
        }
        validate::job_policy(
            qc,
            payload.get().len(),
            o.unique_key.is_some(),
            timeout_ms,
            max_attempts,
        )?;
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
            unique_finished_since: qc.unique_finished_since(now),
            group_key: o.group_key,
            concurrency_key: o.concurrency_key,
            parent_id: None,
            parent_on_dead: o.parent_on_dead,
            pending_children: 0,
            idempotency_key,
            created_at: now,
            max_waiting: qc.max_waiting,
            expires_at,
        })
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
