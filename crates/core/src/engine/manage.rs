//! Operators: cancel, retry, replay and purge dead jobs, promote, pause, configure, and look.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::JobId;
use crate::model::{Job, JobState, QueueConfig, QueueInfo, QueueStats};
use crate::store::{Attempts, Guard, JobDelete, JobList, Transition};
use crate::validate;

use super::Engine;

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
    /// Only jobs whose latest error has this fingerprint (see [`DeadGroup`]).
    pub fingerprint: Option<String>,
    /// At most this many jobs (all matching when `None`).
    pub limit: Option<u64>,
}

/// Dead jobs that failed the same way: the same kind and the same latest error but for numbers, ids and
/// quoted values (see [`crate::fingerprint`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadGroup {
    pub fingerprint: String,
    pub kind: String,
    /// The latest error of the group's most recent job.
    pub error: String,
    pub count: u64,
    pub last_failed_at: Timestamp,
    pub sample_job_id: JobId,
}

/// A queue's dead letters by fingerprint, most jobs first. `scanned` is how many dead jobs the
/// queue's groups hold; `complete` is false when the queue holds dead jobs in no group (killed by a
/// node of an earlier release, without a stored fingerprint, during a rolling upgrade).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadGroups {
    pub groups: Vec<DeadGroup>,
    pub scanned: u64,
    pub complete: bool,
}

/// A page of jobs; `next` is the cursor for the following page.
#[derive(Debug, Clone)]
pub struct Page {
    pub jobs: Vec<Job>,
    pub next: Option<JobId>,
}

impl Engine {
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
                // A flow's parent is cancelled like a waiting job; its children go on.
                JobState::Waiting | JobState::Delayed | JobState::WaitingChildren => {
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
        let since = self.unique_since(&job.queue).await?;
        self.transition_one(self.revive(&job, since)).await
    }

    /// The `since` of the queue's unique-key rule now ([`QueueConfig::unique_finished_since`]).
    async fn unique_since(&self, queue: &str) -> Result<Timestamp> {
        let now = self.now();
        Ok(self
            .queue_config(queue, now)
            .await?
            .unique_finished_since(now))
    }

    /// Back to waiting with a fresh attempt budget — or, for a flow parent that still has children to
    /// wait for, back to `waiting_children`. (A dead or cancelled parent's count cannot change: its
    /// children count down only a parent in `waiting_children`.)
    fn revive(&self, job: &Job, unique_since: Timestamp) -> Transition {
        let now = self.now();
        let to = if job.pending_children > 0 {
            JobState::WaitingChildren
        } else {
            JobState::Waiting
        };
        let mut t = Transition::new(job.id, Guard::State(job.state), to, now);
        t.run_at = Some(now);
        t.attempts = Attempts::Reset;
        // Back among the unfinished, it must not run beside (or again after) another job holding its key.
        t.unique_free_since = Some(unique_since);
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
        self.for_dead(&filter, |engine, jobs| async move {
            // A page is never empty, and all of it is of the filter's queue.
            let since = engine.unique_since(&jobs[0].queue).await?;
            let ts = jobs.iter().map(|j| engine.revive(j, since)).collect();
            let res = engine.apply(ts).await?;
            Ok(res.iter().filter(|r| r.is_ok()).count() as u64)
        })
        .await
    }

    /// Deletes dead jobs matching `filter` for good. Returns how many.
    pub async fn purge_dead(&self, filter: DeadFilter) -> Result<u64> {
        self.for_dead(&filter, |engine, jobs| async move {
            engine
                .inner
                .store
                .job_delete(JobDelete {
                    ids: jobs.into_iter().map(|j| (j.id, JobState::Dead)).collect(),
                })
                .await
        })
        .await
    }

    /// Runs `apply` over the dead jobs matching `filter`, a page at a time.
    async fn for_dead<F, Fut>(&self, filter: &DeadFilter, apply: F) -> Result<u64>
    where
        F: Fn(Engine, Vec<Job>) -> Fut,
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
                    unique_key: None,
                    after,
                    limit: self.inner.config.batch_size,
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() == self.inner.config.batch_size;
            let jobs: Vec<Job> = page
                .into_iter()
                .filter(|j| match &filter.error_contains {
                    Some(text) => j.errors.last().is_some_and(|e| e.message.contains(text)),
                    None => true,
                })
                .filter(|j| match &filter.fingerprint {
                    Some(fp) => j.error_fingerprint() == *fp,
                    None => true,
                })
                .take((budget - done).min(usize::MAX as u64) as usize)
                .collect();
            if !jobs.is_empty() {
                done += apply(self.clone(), jobs).await?;
            }
            if !full {
                break;
            }
        }
        Ok(done)
    }

    /// The queue's dead letters grouped by error fingerprint, the largest groups first (at most
    /// `limit` groups). The store keeps them counted as jobs die, so this reads a few rows per group
    /// however many dead jobs the queue retains.
    pub async fn dead_groups(&self, queue: &str, limit: usize) -> Result<DeadGroups> {
        validate::queue_name("queue", queue, self.limits())?;
        let rows = self.inner.store.dead_groups(queue, limit).await?;
        let groups = rows
            .groups
            .into_iter()
            .map(|g| DeadGroup {
                kind: g.latest.kind.clone(),
                error: g
                    .latest
                    .errors
                    .last()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
                last_failed_at: g.latest.finished_at.unwrap_or(g.latest.created_at),
                sample_job_id: g.latest.id,
                fingerprint: g.fingerprint,
                count: g.count,
            })
            .collect();
        // Dead jobs in no group: killed by a node of an earlier release during a rolling upgrade.
        let dead = self.inner.store.queue_stats(queue, self.now()).await?.dead;
        Ok(DeadGroups {
            groups,
            complete: rows.total >= dead,
            scanned: rows.total,
        })
    }

    /// Records an operator's action in the audit log, at the engine's clock.
    pub async fn audit(
        &self,
        key: &str,
        action: &str,
        target: &str,
        detail: Option<&serde_json::Value>,
    ) -> Result<()> {
        let detail = detail
            .map(|d| serde_json::value::to_raw_value(d).map_err(|e| Error::Backend(Box::new(e))))
            .transpose()?;
        self.inner
            .store
            .audit_append(crate::model::AuditEntry {
                id: 0,
                at: self.now(),
                key: key.to_string(),
                action: action.to_string(),
                target: target.to_string(),
                detail,
            })
            .await
    }

    /// The audit log, newest first: `limit` (1–1,000) entries with ids below `before`.
    pub async fn audit_log(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<crate::model::AuditEntry>> {
        validate::range_u64("limit", limit as u64, 1, 1_000)?;
        self.inner.store.audit_list(before, limit).await
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

    /// A queue's flow control as it stands now: limits, active jobs, the tokens in its buckets, and
    /// the busiest groups (`GET /v1/queues/{queue}/flow`).
    pub async fn flow_state(&self, queue: &str) -> Result<crate::admission::FlowState> {
        use crate::admission::{BucketNow, FLOW_GROUPS, FlowState, GroupFlow};
        let config = self.queue_info(queue).await?.config;
        let rows = self.inner.store.flow_state(queue, FLOW_GROUPS).await?;
        let now = self.now();
        Ok(FlowState {
            concurrency: config.concurrency,
            active: rows.active,
            rate_limit: config.rate_limit,
            bucket: config
                .rate_limit
                .map(|r| BucketNow::of(&r, rows.queue_bucket, now)),
            group_concurrency: config.group_concurrency,
            group_rate_limit: config.group_rate_limit,
            groups: rows
                .groups
                .into_iter()
                .map(|g| GroupFlow {
                    bucket: config
                        .group_rate_limit
                        .map(|r| BucketNow::of(&r, g.bucket, now)),
                    key: g.key,
                    active: g.active,
                })
                .collect(),
        })
    }

    /// What the store takes on disk, part by part.
    pub async fn footprint(&self) -> Result<Vec<crate::store::StoreObject>> {
        self.inner.store.footprint().await
    }

    /// Sets a queue's configuration: job defaults apply to jobs enqueued from now on, flow control to
    /// claims from now on. The queue's webhooks are kept (they have calls of their own).
    pub async fn set_queue_config(&self, queue: &str, mut config: QueueConfig) -> Result<()> {
        validate::queue_name("queue", queue, self.limits())?;
        validate::queue_config(&config, self.limits())?;
        let _writing = self.inner.config_writes.lock().await;
        let kept = self.queue_info(queue).await?.config;
        config.webhooks = kept.webhooks;
        config.silences = kept.silences;
        self.write_queue_config(queue, config).await
    }

    /// Stores a validated configuration and caches it.
    pub(super) async fn write_queue_config(&self, queue: &str, config: QueueConfig) -> Result<()> {
        self.inner.store.queue_put(queue, config.clone()).await?;
        self.inner.configs.put(queue, config, self.now(), true);
        Ok(())
    }

    /// A queue's settings as enqueues apply them: cached for `queue_config_ttl_ms` (see `configs`).
    pub(super) async fn queue_config(&self, queue: &str, now: Timestamp) -> Result<QueueConfig> {
        let ttl = self.inner.config.queue_config_ttl_ms;
        if let Some(config) = self.inner.configs.get(queue, now, ttl) {
            return Ok(config);
        }
        let config = self.queue_info(queue).await?.config;
        // Not over a change made through this engine while the read was under way.
        self.inner.configs.put(queue, config.clone(), now, false);
        Ok(config)
    }

    /// Every known queue.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        self.inner.store.queue_list().await
    }

    /// Every queue's [`Engine::stats`], in name order.
    pub async fn stats_all(&self) -> Result<Vec<QueueStats>> {
        self.inner.store.queue_stats_all(self.now()).await
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
        self.list_kind(queue, state, None, after, limit).await
    }

    /// [`Engine::list`], only jobs of `kind` when given.
    pub async fn list_kind(
        &self,
        queue: &str,
        state: JobState,
        kind: Option<String>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page> {
        self.list_where(JobList {
            queue: queue.to_string(),
            state,
            kind,
            unique_key: None,
            after,
            limit,
        })
        .await
    }

    /// A page of jobs as `p` selects them (kind, unique key).
    pub async fn list_where(&self, p: JobList) -> Result<Page> {
        validate::queue_name("queue", &p.queue, self.limits())?;
        if let Some(k) = &p.kind {
            validate::kind("kind", k, self.limits())?;
        }
        if let Some(k) = &p.unique_key {
            validate::key("unique_key", k, self.limits().max_key)?;
        }
        let limit = p.limit;
        validate::range_u64("limit", limit as u64, 1, self.limits().max_claim as u64)?;
        let jobs = self.inner.store.job_list(p).await?;
        let next = if jobs.len() == limit {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(Page { jobs, next })
    }
}
