//! The maintenance pass: cron ticks, promotion of due jobs, stalls, timeouts and retention.

use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::{DeadReason, ErrorKind, ErrorRecord, Job, JobState};
use crate::store::{Attempts, Guard, JobPrune, Transition};

use super::Engine;

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
    /// Audit log entries removed by its retention.
    pub audit_pruned: u64,
    /// Jobs enqueued by cron schedules.
    pub scheduled: u64,
    /// Jobs not started before their time to live ended (dead, `expired`).
    pub expired: u64,
}

impl Engine {
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
                .map(|(id, t)| (id, JobState::Waiting, t, None))
                .collect(),
        );
        Ok(n)
    }

    /// One maintenance pass: promotes due delayed jobs, recovers stalled jobs (lease expired), fails
    /// timed-out attempts (even if they keep heartbeating), prunes finished jobs past their queue's
    /// retention and audit entries past the audit log's. Dead jobs are never pruned. Safe to run on several nodes at once: every change is
    /// guarded, so each job is handled once.
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        // Cron ticks are one part of the pass: if they cannot be fired now, the rest still runs.
        let scheduled = self.fire_schedules().await.unwrap_or_else(|e| {
            tracing::warn!("cannot fire cron schedules this pass: {e}");
            0
        });
        let mut report = MaintenanceReport {
            scheduled,
            ..MaintenanceReport::default()
        };
        let now = self.now();
        let batch = self.inner.config.batch_size;
        loop {
            let passed = self.inner.store.job_ttl_passed(now, batch).await?;
            let full = passed.len() == batch;
            let plans = passed
                .iter()
                .map(|j| self.expire(j, Guard::State(j.state), now))
                .collect();
            // A job claimed, cancelled or promoted since it was read fails its guard: not ours.
            report.expired += self
                .apply(plans)
                .await?
                .iter()
                .filter(|a| a.is_ok())
                .count() as u64;
            if !full {
                break;
            }
        }
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
            // The clock again, read after the jobs: a lease granted or renewed once the clock went
            // back (after `now` was read) may look expired by `now` but not by this, and must not end.
            // Together with the guard on the lease's end, a lease is taken only if the clock showed its
            // end at some moment after it was granted.
            let until = now.min(self.now());
            let mut full = expired.len() == batch;
            let mut plans = Vec::with_capacity(expired.len());
            let mut timed_out = Vec::with_capacity(expired.len());
            for job in &expired {
                let Some(lease) = &job.lease else { continue };
                if lease.expires_at > until && lease.deadline_at > until {
                    // Left for the next pass; this one would read the same jobs again.
                    full = false;
                    continue;
                }
                let guard = Guard::Lease(lease.token.clone());
                let timeout = lease.deadline_at <= until;
                timed_out.push(timeout);
                let mut plan = if timeout {
                    let msg = format!(
                        "attempt {} timed out after {} ms",
                        job.attempts, job.timeout_ms
                    );
                    self.after_failed_attempt(job, guard, ErrorKind::Timeout, msg, None, None, now)
                } else {
                    self.after_stall(job, guard, now)
                };
                // Only the lease read above: a heartbeat since may have renewed it.
                plan.expect_lease_expires_at = Some(lease.expires_at);
                plans.push(plan);
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
            // Also with no retention limit: the pass releases the unique keys whose window ended.
            loop {
                let n = self
                    .inner
                    .store
                    .job_prune(JobPrune {
                        queue: q.name.clone(),
                        states: vec![JobState::Completed, JobState::Cancelled],
                        keep: r.max_count,
                        finished_before: r.max_age_ms.map(|a| now - a as i64),
                        unique_finished_since: q.config.unique_finished_since(now),
                        limit: batch,
                    })
                    .await?;
                report.pruned += n;
                if (n as usize) < batch {
                    break;
                }
            }
        }
        if let Some(keep) = self.inner.config.audit_retention_ms {
            let before = now.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
            loop {
                let n = self.inner.store.audit_prune(before, batch).await?;
                report.audit_pruned += n;
                if (n as usize) < batch {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// A job's time to live ended before it started: dead, reason `expired`. Under a lease (it was just
    /// claimed) the claim's attempt is given back: it never ran.
    pub(super) fn expire(&self, job: &Job, guard: Guard, now: Timestamp) -> Transition {
        let leased = matches!(guard, Guard::Lease(_));
        let mut t = Transition::new(job.id, guard, JobState::Dead, now);
        t.die(DeadReason::Expired, &job.kind);
        if leased {
            t.attempts = Attempts::GiveBack;
        }
        t
    }

    /// A lease expired: the attempt does not count, and the job waits again — unless it stalled more than
    /// `max_stalled` times (dead, reason `stalled`) or a cancel was requested (cancelled).
    fn after_stall(&self, job: &Job, guard: Guard, now: Timestamp) -> Transition {
        let mut t = Transition::new(job.id, guard, JobState::Waiting, now);
        t.stalled = true;
        t.expect_cancel_requested = Some(job.cancel_requested);
        t.error = Some(ErrorRecord {
            stack: None,
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
            t.die(DeadReason::Stalled, &job.kind);
        } else {
            t.attempts = Attempts::GiveBack;
        }
        t
    }
}
