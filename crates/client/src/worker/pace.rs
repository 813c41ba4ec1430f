//! How many jobs the worker holds: enough that its handlers do not run dry while a fetch is on the way,
//! learnt from how fast its jobs end and how long a fetch takes. Asking for jobs and holding them is
//! `fetch.rs`'s; this module only keeps the counts and does the arithmetic, on instants it is given.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How quickly the estimates follow a change: about this long for most of a change in the job rate to
/// show.
const RATE_HORIZON: Duration = Duration::from_millis(200);

/// How many times over the worker covers a fetch's and an acknowledgement's round trip with jobs held
/// beyond what runs: once for the fetch in flight, once more so that a slower answer or a burst of
/// short jobs does not leave the handlers idle (as the TypeScript SDK does).
const COVER: f64 = 2.0;

/// The most jobs a worker holds beyond its concurrency when it paces itself, as in the TypeScript SDK:
/// two claims' worth.
pub(super) const AHEAD: usize = 2_000;

/// Past this many outcomes waiting for the server, the worker stops fetching until it takes them: a
/// server that acknowledges slowly must not make a worker hold ever more finished jobs.
pub(super) const MAX_ACKS_WAITING: usize = 2_000;

/// The jobs a worker holds (running or waiting to run), how many have ended since it started, and what
/// the acknowledger has to deliver and how long its deliveries take.
#[derive(Debug, Default)]
pub(super) struct Held {
    held: AtomicUsize,
    ended: AtomicU64,
    acks_waiting: AtomicUsize,
    /// An acknowledgement's round trip in µs (smoothed); 0 before the first.
    ack_round_trip_us: AtomicU64,
    changed: Notify,
}

impl Held {
    pub(super) fn now(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub(super) fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }

    /// Counts `n` more jobs held; each gives its place back when its [`Slot`] is dropped.
    pub(super) fn take(self: &Arc<Self>, n: usize) -> Vec<Slot> {
        self.held.fetch_add(n, Ordering::SeqCst);
        (0..n).map(|_| Slot(Arc::clone(self))).collect()
    }

    /// An outcome was queued for the acknowledger.
    pub(super) fn ack_queued(&self) {
        self.acks_waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// The acknowledger is done with `n` outcomes (delivered or given up), after a round trip of `took`.
    /// A `took` of zero measured nothing (the delivery backed off).
    pub(super) fn acks_done(&self, n: usize, took: Duration) {
        self.changed.notify_one();
        if took.is_zero() {
            let _ = self
                .acks_waiting
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                    Some(w.saturating_sub(n))
                });
            return;
        }
        let _ = self
            .acks_waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                Some(w.saturating_sub(n))
            });
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // One writer (the acknowledger): a load and a store are enough.
        let was = self.ack_round_trip_us.load(Ordering::Relaxed);
        let now = if was == 0 { us } else { (was * 3 + us) / 4 };
        self.ack_round_trip_us.store(now, Ordering::Relaxed);
    }

    pub(super) fn acks_waiting(&self) -> usize {
        self.acks_waiting.load(Ordering::SeqCst)
    }

    fn ack_round_trip(&self) -> Duration {
        Duration::from_micros(self.ack_round_trip_us.load(Ordering::Relaxed))
    }

    /// Waits until a job ends or acknowledgements are delivered (or either happened since the last
    /// wait).
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// One job's place among those the worker holds.
#[derive(Debug)]
pub(super) struct Slot(Arc<Held>);

impl Slot {
    pub(super) fn held(&self) -> Arc<Held> {
        Arc::clone(&self.0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.fetch_add(1, Ordering::SeqCst);
        // A permit is stored when the fetcher is not waiting yet, so an end is never missed.
        self.0.changed.notify_one();
    }
}

/// The estimates a worker's holding follows.
#[derive(Debug, Clone)]
pub(super) struct Pace {
    /// Jobs ending per second (smoothed).
    rate: f64,
    /// How long a fetch that found enough jobs took, in seconds (smoothed); 0 before the first.
    round_trip: f64,
    at: Instant,
    ended_at: u64,
}

impl Pace {
    pub(super) fn new(now: Instant) -> Pace {
        Pace {
            rate: 0.0,
            round_trip: 0.0,
            at: now,
            ended_at: 0,
        }
    }

    /// Takes in the jobs ended so far (a running total) at `now`.
    pub(super) fn ended(&mut self, total: u64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        if dt < 0.001 {
            return;
        }
        let seen = total.saturating_sub(self.ended_at) as f64 / dt;
        let weight = 1.0 - (-dt / RATE_HORIZON.as_secs_f64()).exp();
        self.rate += weight * (seen - self.rate);
        self.at = now;
        self.ended_at = total;
    }

    /// Takes in a fetch that took `took`. Only a fetch answered with every job it asked for measures
    /// the round trip: one answered with fewer may have waited for jobs to arrive.
    pub(super) fn fetched(&mut self, took: Duration, full: bool) {
        if !full {
            return;
        }
        let t = took.as_secs_f64();
        self.round_trip = if self.round_trip == 0.0 {
            t
        } else {
            self.round_trip + 0.25 * (t - self.round_trip)
        };
    }

    /// How many jobs to hold: the `concurrency` that runs, and what ends at the current rate during a
    /// fetch's and an acknowledgement's round trip, [`COVER`] times over; within `concurrency..=max`.
    pub(super) fn target(&self, concurrency: usize, max: usize, ack_round_trip: Duration) -> usize {
        let trips = self.round_trip + ack_round_trip.as_secs_f64();
        let ahead = (self.rate * trips * COVER).ceil();
        let ahead = if ahead.is_finite() && ahead > 0.0 {
            ahead.min(max as f64) as usize
        } else {
            0
        };
        concurrency.saturating_add(ahead).min(max).max(concurrency)
    }
}

impl Held {
    /// How many jobs to ask for now, holding `fixed` if set, else what `pace` says as it stands (at
    /// most `concurrency + AHEAD`): none while too many outcomes wait for the server.
    pub(super) fn to_fetch(
        &self,
        pace: &Pace,
        concurrency: usize,
        fixed: Option<usize>,
        max_claim: usize,
    ) -> usize {
        if self.acks_waiting() > MAX_ACKS_WAITING {
            return 0;
        }
        let target = fixed.unwrap_or_else(|| {
            pace.target(
                concurrency,
                concurrency.saturating_add(AHEAD),
                self.ack_round_trip(),
            )
        });
        to_fetch(self.now(), target, concurrency, max_claim)
    }
}

/// How many jobs to ask for with `held` held and `target` wanted: none until at least half of the
/// buffer beyond the concurrency is free, so that a busy worker claims many jobs per fetch instead of
/// one per fetch; without a buffer, each free place is worth a fetch.
pub(super) fn to_fetch(held: usize, target: usize, concurrency: usize, max_claim: usize) -> usize {
    let free = target.saturating_sub(held);
    let low_water = (target.saturating_sub(concurrency) / 2).max(1);
    if free >= low_water {
        free.min(max_claim)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_rate_it_holds_only_what_runs() {
        let p = Pace::new(Instant::now());
        assert_eq!(p.target(10, 1000, Duration::ZERO), 10);
    }

    #[test]
    fn it_holds_what_ends_in_two_round_trips() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.fetched(Duration::from_millis(5), true);
        // 10,000 jobs a second, steadily, for five seconds.
        for s in 1..=50u64 {
            p.ended(s * 1_000, t0 + Duration::from_millis(s * 100));
        }
        // 10,000/s × (5 ms + 3 ms) × 2 = 160 ahead.
        let t = p.target(10, 1000, Duration::from_millis(3));
        assert!((165..=171).contains(&t), "{t}");
        // Never more than the most it may hold.
        assert_eq!(p.target(10, 50, Duration::from_millis(3)), 50);
    }

    #[test]
    fn slow_jobs_need_no_buffer_worth_the_name() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.fetched(Duration::from_millis(5), true);
        // 10 jobs a second at concurrency 10 (one second each).
        for s in 1..=20u64 {
            p.ended(s, t0 + Duration::from_millis(s * 100));
        }
        assert_eq!(p.target(10, 1000, Duration::from_millis(3)), 11);
    }

    #[test]
    fn a_fetch_that_waited_does_not_count_as_a_round_trip() {
        let mut p = Pace::new(Instant::now());
        p.fetched(Duration::from_millis(4), true);
        p.fetched(Duration::from_secs(10), false);
        assert!((p.round_trip - 0.004).abs() < 1e-9);
    }

    #[test]
    fn the_rate_falls_when_jobs_stop_ending() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.fetched(Duration::from_millis(5), true);
        p.ended(10_000, t0 + Duration::from_secs(1));
        let busy = p.target(10, 1000, Duration::ZERO);
        p.ended(10_000, t0 + Duration::from_secs(5));
        assert!(p.target(10, 1000, Duration::ZERO) < busy);
        assert_eq!(p.target(10, 1000, Duration::ZERO), 11);
    }

    #[test]
    fn too_many_outcomes_waiting_stop_the_fetches() {
        let held = Arc::new(Held::default());
        let p = Pace::new(Instant::now());
        assert_eq!(held.to_fetch(&p, 10, None, 1000), 10);
        assert_eq!(held.to_fetch(&p, 10, Some(40), 1000), 40);
        for _ in 0..=MAX_ACKS_WAITING {
            held.ack_queued();
        }
        assert_eq!(held.to_fetch(&p, 10, None, 1000), 0);
        assert_eq!(held.to_fetch(&p, 10, Some(40), 1000), 0);
        held.acks_done(1, Duration::from_millis(2));
        assert_eq!(held.to_fetch(&p, 10, None, 1000), 10);
        assert_eq!(held.ack_round_trip(), Duration::from_millis(2));
    }

    #[test]
    fn a_slot_gives_its_place_back() {
        let held = Arc::new(Held::default());
        let slots = held.take(3);
        assert_eq!(held.now(), 3);
        drop(slots);
        assert_eq!((held.now(), held.ended()), (0, 3));
    }

    #[test]
    fn fetches_wait_for_half_the_buffer() {
        // Target 110 at concurrency 10: a buffer of 100, fetched again once 50 are free.
        assert_eq!(to_fetch(61, 110, 10, 1000), 0);
        assert_eq!(to_fetch(60, 110, 10, 1000), 50);
        assert_eq!(to_fetch(0, 110, 10, 1000), 110);
        // Without a buffer, one free place is enough.
        assert_eq!(to_fetch(9, 10, 10, 1000), 1);
        assert_eq!(to_fetch(10, 10, 10, 1000), 0);
        // Never more than the server claims at once.
        assert_eq!(to_fetch(0, 5000, 10, 1000), 1000);
        // Holding more than the target (it fell): nothing.
        assert_eq!(to_fetch(200, 110, 10, 1000), 0);
    }
}
