//! Webhooks: a queue's jobs that end (completed, dead, cancelled) are told to URLs, through Errand's own
//! queue [`WEBHOOK_QUEUE`]: each notice is a job there, so it is retried with backoff while the receiver
//! is down, and one that never gets through is a dead job in that queue's dead-letter list, replayable
//! like any other. The server's deliverer works that queue (it signs and sends; see
//! `errand_server::webhooks`).
//!
//! Definitions live in the queue's stored configuration (`QueueConfig::webhooks`), managed through
//! their own calls, never through a configuration `PUT` (which keeps them), so that a secret is never
//! shown by reading a configuration.

use std::collections::BTreeMap;

use serde_json::json;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::JobId;
use crate::model::{Backoff, JobOptions, JobState, NewJob, Webhook};
use crate::store::Transitioned;
use crate::validate;

use super::Engine;

/// Queues whose names start so are Errand's own: the API puts no jobs in them and takes none from them.
pub const OWN_QUEUE_PREFIX: &str = "errand.";
/// The queue that holds webhook deliveries.
pub const WEBHOOK_QUEUE: &str = "errand.webhooks";
/// Where silences of `*` (every queue, or the server's own rules) are kept: no queue is named `*`.
pub const ALERTS_QUEUE: &str = "errand.alerts";
/// The longest an alert may be silenced at once: a week.
pub const MAX_SILENCE_MS: u64 = 7 * 24 * 3_600_000;
/// The kind of a delivery job.
pub const WEBHOOK_KIND: &str = "webhook";
/// At most this many webhooks per queue.
pub const MAX_WEBHOOKS_PER_QUEUE: usize = 10;
/// Attempts per delivery: with the backoff below (1 s doubling, capped at an hour), about 8 hours.
pub const DELIVERY_ATTEMPTS: u32 = 15;
/// How long one delivery attempt may take (the deliverer's HTTP timeout is shorter).
pub const DELIVERY_TIMEOUT_MS: u64 = 30_000;

impl Engine {
    /// Creates or replaces the webhook `name` of `queue`.
    pub async fn put_webhook(&self, queue: &str, name: &str, hook: Webhook) -> Result<()> {
        validate::queue_name("queue", queue, self.limits())?;
        validate::queue_name("name", name, self.limits())?;
        validate::webhook(&hook)?;
        let _writing = self.inner.config_writes.lock().await;
        let mut info = self.queue_info(queue).await?;
        if !info.config.webhooks.contains_key(name)
            && info.config.webhooks.len() >= MAX_WEBHOOKS_PER_QUEUE
        {
            return Err(Error::invalid(
                "name",
                format!("a queue has at most {MAX_WEBHOOKS_PER_QUEUE} webhooks"),
            ));
        }
        info.config.webhooks.insert(name.to_string(), hook);
        self.write_queue_config(queue, info.config).await
    }

    /// Deletes the webhook `name` of `queue`; `false` if there was none.
    pub async fn delete_webhook(&self, queue: &str, name: &str) -> Result<bool> {
        validate::queue_name("queue", queue, self.limits())?;
        let _writing = self.inner.config_writes.lock().await;
        let mut info = self.queue_info(queue).await?;
        if info.config.webhooks.remove(name).is_none() {
            return Ok(false);
        }
        self.write_queue_config(queue, info.config).await?;
        Ok(true)
    }

    /// Silences the alert rule `rule` of `queue` (`*`: every queue, and the server's own rules) for
    /// `duration_ms` from now (1 ms to a week), replacing a silence of the same; answers its end.
    /// Silenced alerts still fire and are listed; they are told when the silence ends, if they still
    /// fire then. Shared by every node through the store.
    pub async fn silence_alert(
        &self,
        queue: &str,
        rule: &str,
        duration_ms: u64,
    ) -> Result<Timestamp> {
        let stored = self.silence_queue(queue, rule)?;
        validate::range_u64("duration_ms", duration_ms, 1, MAX_SILENCE_MS)?;
        let until = self.now().saturating_add(duration_ms as i64);
        let _writing = self.inner.config_writes.lock().await;
        let mut info = self.queue_info(stored).await?;
        info.config.silences.insert(rule.to_string(), until);
        // Ended silences go whenever one is written: a queue keeps at most one per rule anyway.
        let now = self.now();
        info.config.silences.retain(|_, t| *t > now);
        self.write_queue_config(stored, info.config).await?;
        Ok(until)
    }

    /// Ends the silence of `rule` on `queue` (`*` as for [`Engine::silence_alert`]); `false` if
    /// there was none in force.
    pub async fn unsilence_alert(&self, queue: &str, rule: &str) -> Result<bool> {
        let stored = self.silence_queue(queue, rule)?;
        let _writing = self.inner.config_writes.lock().await;
        let mut info = self.queue_info(stored).await?;
        let now = self.now();
        let was = info.config.silences.remove(rule).is_some_and(|t| t > now);
        self.write_queue_config(stored, info.config).await?;
        Ok(was)
    }

    /// The silences in force: `(queue or *, rule, until)`, read from the store.
    pub async fn alert_silences(&self) -> Result<Vec<(String, String, Timestamp)>> {
        let now = self.now();
        let mut out = Vec::new();
        for q in self.queues().await? {
            let name = if q.name == ALERTS_QUEUE {
                "*".to_string()
            } else {
                q.name
            };
            for (rule, until) in q.config.silences {
                if until > now {
                    out.push((name.clone(), rule, until));
                }
            }
        }
        Ok(out)
    }

    /// Where a silence of `rule` on `queue` is kept, once both are checked.
    fn silence_queue<'q>(&self, queue: &'q str, rule: &str) -> Result<&'q str> {
        if serde_json::from_value::<crate::alerts::RuleKind>(json!(rule)).is_err() {
            return Err(Error::invalid(
                "rule",
                "must be one of queue_depth, oldest_waiting, failure_rate, stalled, dead_letters, \
                 no_workers, disk_full, store_growth",
            ));
        }
        if queue == "*" {
            return Ok(ALERTS_QUEUE);
        }
        validate::queue_name("queue", queue, self.limits())?;
        if queue.starts_with(OWN_QUEUE_PREFIX) {
            return Err(Error::invalid(
                "queue",
                "Errand's own queues have no alerts",
            ));
        }
        Ok(queue)
    }

    /// The webhooks of `queue`, by name, read from the store (not the cache).
    pub async fn webhooks(&self, queue: &str) -> Result<BTreeMap<String, Webhook>> {
        Ok(self.queue_info(queue).await?.config.webhooks)
    }

    /// Enqueues a delivery for each webhook of each job that ended among `applied`. Runs after the
    /// jobs' transitions committed; a failure is logged, never returned (the transitions stand).
    pub(super) async fn notify_webhooks(&self, at: Timestamp, applied: &[super::Applied]) {
        let mut deliveries = Vec::new();
        // A batch of acknowledgements is mostly one queue's: its settings are looked up once.
        let mut hooks_of: Vec<(&str, BTreeMap<String, Webhook>)> = Vec::new();
        for (id, to, t, _) in applied {
            let event = match to {
                JobState::Completed => "completed",
                JobState::Dead => "dead",
                JobState::Cancelled => "cancelled",
                _ => continue,
            };
            if t.queue == WEBHOOK_QUEUE {
                continue;
            }
            let i = match hooks_of.iter().position(|(q, _)| *q == t.queue) {
                Some(i) => i,
                None => match self.queue_config(&t.queue, at).await {
                    Ok(c) => {
                        hooks_of.push((&t.queue, c.webhooks));
                        hooks_of.len() - 1
                    }
                    Err(e) => {
                        tracing::warn!(job_id = %id, "webhooks not sent: the queue's settings did not read: {e}");
                        continue;
                    }
                },
            };
            for (name, hook) in &hooks_of[i].1 {
                if !hook.events.iter().any(|e| e == event) {
                    continue;
                }
                deliveries.push(delivery(name, *id, event, t, at));
            }
        }
        // In batches the store takes: a large acknowledgement batch times several webhooks may make
        // more deliveries than one batch holds.
        for chunk in deliveries.chunks(self.limits().max_batch.max(1)) {
            if let Err(e) = self.enqueue_many(chunk.to_vec()).await {
                tracing::error!("{} webhook deliveries were not enqueued: {e}", chunk.len());
            }
        }
    }
}

impl Engine {
    /// Enqueues a delivery of `body` (an alert's notice) to each webhook of `queue` that takes
    /// `alert` events. `key` names the notice: a repeat of it (another node telling the same one) is
    /// one delivery. Answers how many were enqueued.
    pub async fn notify_alert(
        &self,
        queue: &str,
        key: &str,
        body: serde_json::Value,
    ) -> Result<usize> {
        let hooks = self.queue_config(queue, self.now()).await?.webhooks;
        let deliveries: Vec<NewJob> = hooks
            .iter()
            .filter(|(_, h)| h.events.iter().any(|e| e == "alert"))
            .map(|(name, _)| {
                NewJob::new(
                    WEBHOOK_QUEUE,
                    WEBHOOK_KIND,
                    json!({ "queue": queue, "webhook": name, "body": body }),
                )
                .with_options(delivery_options(format!("{queue}:{name}:alert:{key}")))
            })
            .collect();
        let n = deliveries.len();
        if n > 0 {
            self.enqueue_many(deliveries).await?;
        }
        Ok(n)
    }
}

fn delivery_options(unique_key: String) -> JobOptions {
    JobOptions {
        unique_key: Some(unique_key),
        max_attempts: Some(DELIVERY_ATTEMPTS),
        backoff: Some(
            Backoff::exponential(1_000)
                .with_jitter(0.2)
                .with_max(3_600_000),
        ),
        timeout_ms: Some(DELIVERY_TIMEOUT_MS),
        ..JobOptions::default()
    }
}

/// The delivery job of one webhook for one job's end. Its unique key makes a repeat notice of the same
/// end (the same state reached at the same instant) one delivery; a later end of the same job (after
/// a retry) is a notice of its own.
fn delivery(name: &str, id: JobId, event: &str, t: &Transitioned, at: Timestamp) -> NewJob {
    let body = json!({
        "type": format!("job.{event}"),
        "job_id": id.to_string(),
        "queue": t.queue,
        "kind": t.kind,
        "state": event,
        "attempt": t.attempts,
        "at": at,
    });
    NewJob::new(
        WEBHOOK_QUEUE,
        WEBHOOK_KIND,
        json!({ "queue": t.queue, "webhook": name, "body": body }),
    )
    .with_options(delivery_options(format!(
        "{}:{name}:{id}:{event}:{at}",
        t.queue
    )))
}
