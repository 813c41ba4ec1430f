//! Waking long-polling fetches the moment a job becomes due.
//!
//! Each waiting fetch registers one [`Notify`] under every queue it asks for. A task follows the engine's
//! events and, for each job that became `waiting` (enqueued, promoted, retried, released, recovered from
//! a stall), notifies the fetches registered for its queue. `Notify::notify_one` keeps a permit when the
//! fetch is not yet parked, so a job that arrives between a fetch's empty claim and its wait is not
//! missed.
//!
//! The fetches parked now (registered, their last claim empty, waiting for a wake) are the gauge
//! `errand_fetches_waiting`: an operator sees idle capacity against `max_waiting_fetches`, and a test
//! knows a fetch is parked before it makes a job due, so the job can only reach it through a wake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use errand_core::{Event, JobState};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, broadcast};

/// The registry of waiting fetches, by queue.
#[derive(Debug, Default)]
pub struct Waiters {
    by_queue: Mutex<HashMap<String, HashMap<u64, Arc<Notify>>>>,
    /// Fetches that flow control held back, by queue: a job of the queue leaving `active` wakes them.
    on_release: Mutex<HashMap<String, HashMap<u64, Arc<Notify>>>>,
    next_id: AtomicU64,
    waiting: AtomicU64,
    /// Fetches parked in their wait now (a share of the metrics' gauge).
    parked: Gauge,
}

/// A fetch's registration; it leaves the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    waiters: Arc<Waiters>,
    id: u64,
    queues: Vec<String>,
    pub notify: Arc<Notify>,
}

impl Waiters {
    /// A registry that counts its parked fetches in `parked`.
    pub fn new(parked: Gauge) -> Self {
        Waiters {
            parked,
            ..Waiters::default()
        }
    }

    /// Registers a fetch for `queues`, unless `max` fetches already wait.
    pub fn register(self: &Arc<Self>, queues: &[String], max: usize) -> Option<Registration> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= max as u64 {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut map = self.lock();
        for q in queues {
            map.entry(q.clone())
                .or_default()
                .insert(id, Arc::clone(&notify));
        }
        Some(Registration {
            waiters: Arc::clone(self),
            id,
            queues: queues.to_vec(),
            notify,
        })
    }

    /// Wakes, for each queue, as many of the fetches waiting on it as jobs became due there: waking
    /// them all for one job would have every idle worker claim at once (a herd on the store's writer).
    /// A woken fetch that finds nothing goes back to waiting.
    pub fn wake(&self, due: &HashMap<String, usize>) {
        let map = self.lock();
        for (q, n) in due {
            if let Some(fetches) = map.get(q) {
                fetches.values().take(*n).for_each(|f| f.notify_one());
            }
        }
    }

    /// Wakes, for each queue, as many of the fetches held back by its flow control as jobs left
    /// `active` there.
    pub fn wake_released(&self, freed: &HashMap<String, usize>) {
        let map = lock(&self.on_release);
        for (q, n) in freed {
            if let Some(fetches) = map.get(q) {
                fetches.values().take(*n).for_each(|f| f.notify_one());
            }
        }
    }

    /// Wakes every fetch waiting on `queue` (it was resumed).
    pub fn wake_queue(&self, queue: &str) {
        if let Some(fetches) = self.lock().get(queue) {
            fetches.values().for_each(|f| f.notify_one());
        }
    }

    /// Wakes every waiting fetch (after missing events, or to shut down).
    pub fn wake_all(&self) {
        let map = self.lock();
        map.values()
            .flat_map(|f| f.values())
            .for_each(|n| n.notify_one());
    }

    /// Fetches waiting now.
    #[cfg(test)]
    fn count(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Arc<Notify>>>> {
        lock(&self.by_queue)
    }

    /// Follows the engine's events until the channel closes, waking fetches as jobs become due.
    pub async fn follow(self: Arc<Self>, mut events: broadcast::Receiver<Event>) {
        let mut due: HashMap<String, usize> = HashMap::new();
        let mut freed: HashMap<String, usize> = HashMap::new();
        let count = |e: Event, due: &mut HashMap<String, usize>, freed: &mut HashMap<_, _>| {
            if e.from == Some(JobState::Active) {
                *freed.entry(e.queue.clone()).or_default() += 1;
            }
            if e.to == JobState::Waiting {
                *due.entry(e.queue).or_default() += 1;
            }
        };
        loop {
            match events.recv().await {
                Ok(e) => {
                    count(e, &mut due, &mut freed);
                    // Take whatever else is already there, and wake once for all of it.
                    loop {
                        match events.try_recv() {
                            Ok(e) => count(e, &mut due, &mut freed),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => self.wake_all(),
                            Err(_) => break,
                        }
                    }
                    if !due.is_empty() {
                        self.wake(&due);
                        due.clear();
                    }
                    if !freed.is_empty() {
                        self.wake_released(&freed);
                        freed.clear();
                    }
                }
                // Events were missed: any queue may have a due job.
                Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

impl Waiters {
    /// Follows the store's notice of queues where another node made jobs due. The notice does not say
    /// how many, so every fetch waiting on the queue wakes; `*` (the store lost track, e.g. after a
    /// reconnect) wakes them all.
    pub async fn follow_store(self: Arc<Self>, mut due: broadcast::Receiver<String>) {
        loop {
            match due.recv().await {
                Ok(q) if q == "*" => self.wake_all(),
                Ok(q) => self.wake_queue(&q),
                Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

type Registry = Mutex<HashMap<String, HashMap<u64, Arc<Notify>>>>;

fn lock(m: &Registry) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Arc<Notify>>>> {
    // A panic while holding this lock leaves the map consistent (every change is one insert or
    // remove), so a poisoned lock is safe to use.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registration {
    /// Also wakes this fetch when a job of its queues leaves `active`: flow control held it back, and
    /// a finished job may free a place.
    pub fn wake_on_release(&self) {
        let mut map = lock(&self.waiters.on_release);
        for q in &self.queues {
            map.entry(q.clone())
                .or_default()
                .insert(self.id, Arc::clone(&self.notify));
        }
    }
}

impl Registration {
    /// Counts this fetch as parked until the guard is dropped: call it after the claim came back
    /// empty, just before waiting. A wake between the two is kept as the `Notify`'s permit.
    pub fn park(&self) -> Parked<'_> {
        self.waiters.parked.inc();
        Parked(self)
    }
}

/// A fetch parked in its wait; see [`Registration::park`]. Dropped when the wait ends, however it
/// ends (a wake, the deadline, shutdown, the client going away).
#[derive(Debug)]
pub struct Parked<'a>(&'a Registration);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.waiters.parked.dec();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for registry in [&self.waiters.by_queue, &self.waiters.on_release] {
            let mut map = lock(registry);
            for q in &self.queues {
                if let Some(fetches) = map.get_mut(q) {
                    fetches.remove(&self.id);
                    if fetches.is_empty() {
                        map.remove(q);
                    }
                }
            }
        }
        self.waiters.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost_and_the_registry_is_bounded() {
        let w = Arc::new(Waiters::default());
        let r = w.register(&["a".into(), "b".into()], 2).unwrap();
        let _r2 = w.register(&["c".into()], 2).unwrap();
        assert!(w.register(&["d".into()], 2).is_none(), "at most 2 wait");
        w.wake(&HashMap::from([("b".to_string(), 1)]));
        // The permit was kept: this returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), r.notify.notified())
            .await
            .unwrap();
        drop(r);
        assert_eq!(w.count(), 1);

        // One due job wakes one of three waiting fetches, not all of them.
        let w = Arc::new(Waiters::default());
        let regs: Vec<Registration> = (0..3)
            .map(|_| w.register(&["q".into()], 10).unwrap())
            .collect();
        w.wake(&HashMap::from([("q".to_string(), 1)]));
        let mut woken = 0;
        for r in &regs {
            let got =
                tokio::time::timeout(std::time::Duration::from_millis(20), r.notify.notified());
            if got.await.is_ok() {
                woken += 1;
            }
        }
        assert_eq!(woken, 1);
        assert!(!w.lock().contains_key("a"), "empty entries are removed");
    }
}
