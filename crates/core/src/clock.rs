//! Time, injected. Scheduling, leases, timeouts and retention read the clock through [`Clock`], so that
//! the server's clock rules (never a worker's) and so that tests move time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC. Every instant Errand stores or compares is one of these.
pub type Timestamp = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;
}

/// The machine's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Timestamp)
            // A clock set before 1970 is a broken machine; 0 keeps ordering sane rather than panicking.
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: for tests, and for anything that must replay time.
/// Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(start)),
        }
    }

    /// A clock standing at a fixed, realistic instant (2026-01-01T00:00:00Z), so that ids look ordinary.
    pub fn at_fixed_start() -> Self {
        Self::new(1_767_225_600_000)
    }

    /// Moves the clock forward (or back, with a negative value) by `ms` milliseconds.
    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.now.store(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.now.load(Ordering::SeqCst)
    }
}
