//! The engine: every job semantic, over any [`Store`].
//!
//! Each public method validates its input, reads what it needs, decides, and hands the store one guarded
//! change (see [`crate::store`]). Every state change it makes is announced as an [`Event`].
//!
//! The methods are grouped by who calls them: `enqueue.rs` for producers, `work.rs` for workers,
//! `manage.rs` for operators and `maintain.rs` for the periodic maintenance pass. This file holds the
//! engine itself and the plumbing they share: applying guarded transitions and announcing events.

mod configs;
mod enqueue;
mod flows;
mod maintain;
mod manage;
mod schedules;
mod webhooks;
mod work;

pub use enqueue::Enqueued;
pub use flows::{FlowEnqueued, MAX_CHILDREN};
pub use maintain::MaintenanceReport;
pub use manage::{Cancelled, DeadFilter, DeadGroup, DeadGroups, Page};
pub use webhooks::{ALERTS_QUEUE, MAX_SILENCE_MS, OWN_QUEUE_PREFIX, WEBHOOK_KIND, WEBHOOK_QUEUE};
pub use work::{Ack, AckOutcome, Claim, ClaimOutcome, Failure};

use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use tokio::sync::broadcast;

use crate::clock::{Clock, Timestamp};
use crate::error::{Error, Result};
use crate::event::{Event, Observer};
use crate::id::{IdGenerator, JobId};
use crate::limits::Limits;
use crate::model::{ErrorKind, JobState};
use crate::store::{Store, Transition, Transitioned};

/// Settings of an [`Engine`]. [`EngineConfig::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub limits: Limits,
    /// Events buffered per subscriber; a subscriber that falls further behind misses events (and is told).
    pub event_capacity: usize,
    /// Jobs handled per store call by maintenance and bulk operations.
    pub batch_size: usize,
    /// How long enqueues reuse a queue's settings before reading them again (default 1,000 ms; 0 reads
    /// them for every request). Changes made through this engine apply at once; this bounds how long a
    /// change made on another node takes to apply here.
    pub queue_config_ttl_ms: u64,
    /// Sees every event synchronously (the server's metrics and alerts); none by default.
    pub observer: Option<Arc<dyn Observer>>,
    /// How long the audit log keeps an entry (default [`AUDIT_RETENTION_MS`], 90 days); `None` keeps
    /// every entry for ever. The maintenance pass removes older entries, oldest first.
    pub audit_retention_ms: Option<u64>,
}

/// The default retention of the audit log: 90 days.
pub const AUDIT_RETENTION_MS: u64 = 90 * 24 * 3_600_000;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            event_capacity: 4_096,
            batch_size: 500,
            queue_config_ttl_ms: 1_000,
            observer: None,
            audit_retention_ms: Some(AUDIT_RETENTION_MS),
        }
    }
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
    configs: configs::ConfigCache,
    /// Held across each read-modify-write of a queue's configuration (settings, webhooks), so that
    /// two changes through this engine never undo each other.
    config_writes: tokio::sync::Mutex<()>,
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
                configs: configs::ConfigCache::default(),
                config_writes: tokio::sync::Mutex::new(()),
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

    pub(super) fn emit(&self, events: impl FnOnce() -> Vec<Event>) {
        let observer = self.inner.config.observer.as_deref();
        // Building events costs allocations; skip it when nobody listens.
        if observer.is_none() && self.inner.events.receiver_count() == 0 {
            return;
        }
        for e in events() {
            if let Some(o) = observer {
                o.observe(&e);
            }
            let _ = self.inner.events.send(e);
        }
    }

    /// Announces applied transitions: `(job, new state, what it was, the failure it records)`.
    pub(super) fn announce(&self, at: Timestamp, applied: Vec<Applied>) {
        self.emit(|| {
            applied
                .into_iter()
                .map(|(id, to, t, failure)| {
                    // Active to dead with no failure never ran: a claim took it past its time to
                    // live and ended it at once (`Engine::expire`).
                    let ran = !(to == JobState::Dead && failure.is_none());
                    let ran_ms = match (t.from, t.started_at) {
                        (JobState::Active, Some(start)) if ran => Some((at - start).max(0) as u64),
                        _ => None,
                    };
                    Event {
                        failure,
                        ran_ms,
                        ..Event::new(id, t.queue, t.kind, Some(t.from), to, at, t.attempts)
                    }
                })
                .collect()
        });
    }

    /// Applies guarded transitions in one store call and announces those that applied. Returns each
    /// transition's outcome, in order.
    pub(super) async fn apply(&self, ts: Vec<Transition>) -> Result<Vec<Result<()>>> {
        if ts.is_empty() {
            return Ok(Vec::new());
        }
        let at = ts[0].now;
        let targets: Vec<(JobId, JobState, Option<ErrorKind>)> = ts
            .iter()
            .map(|t| (t.id, t.to, t.error.as_ref().map(|e| e.kind)))
            .collect();
        let res = self.inner.store.job_transition(ts).await?;
        let mut applied = Vec::new();
        let mut parents = Vec::new();
        let out = targets
            .into_iter()
            .zip(res)
            .map(|((id, to, failure), r)| {
                r.map(|mut t| {
                    // A flow parent the change moved is announced like any change.
                    if let Some(p) = t.parent.take() {
                        let (pid, pto, pt) = *p;
                        parents.push((pid, pto, pt, None));
                    }
                    applied.push((id, to, t, failure))
                })
            })
            .collect();
        applied.extend(parents);
        self.notify_webhooks(at, &applied).await;
        self.announce(at, applied);
        Ok(out)
    }
}

/// An applied change as announced: the job, its new state, what it was, the failure it records.
pub(super) type Applied = (JobId, JobState, Transitioned, Option<ErrorKind>);

/// Parses stored JSON text.
pub fn raw_json(s: String) -> Result<Box<RawValue>> {
    RawValue::from_string(s).map_err(|e| Error::Backend(Box::new(e)))
}
