//! This node's recent job activity, for `GET /v1/activity`: counts per bucket of
//! [`BUCKET_MS`] over the last [`BUCKETS`] buckets (five minutes), so that a dashboard opened now draws
//! the last minutes at once instead of starting from an empty chart.
//!
//! Filled by the engine's [`Observer`] hook like the metrics, and bucketed by each event's own time
//! (the engine's clock), so that tests with an injected clock see exactly what they made happen. The
//! memory is fixed: one slot per bucket, reused as time moves on.

use std::sync::Mutex;

use errand_core::{Event, JobState, Observer, Timestamp};
use errand_protocol::{ActivityBucket, ActivityHistory};

/// The length of a bucket: the dashboard charts one point per bucket.
pub const BUCKET_MS: i64 = 5_000;
/// Buckets kept: five minutes, the dashboard's chart window.
pub const BUCKETS: usize = 60;

/// The last [`BUCKETS`] buckets of activity.
#[derive(Debug)]
pub struct Activity {
    /// Slot `i % BUCKETS` holds bucket number `i` (its start is `i * BUCKET_MS`), or an older one
    /// not yet overwritten, which a read recognises by its number and skips.
    slots: Mutex<Vec<(i64, ActivityBucket)>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            slots: Mutex::new(vec![(i64::MIN, ActivityBucket::default()); BUCKETS]),
        }
    }
}

fn slot_of(n: i64) -> usize {
    // rem_euclid of a positive modulus is in 0..BUCKETS.
    usize::try_from(n.rem_euclid(BUCKETS as i64)).unwrap_or(0)
}

impl Observer for Activity {
    fn observe(&self, e: &Event) {
        let n = e.at.div_euclid(BUCKET_MS);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[slot_of(n)];
        if slot.0 < n {
            // A new bucket: the one this slot held is more than five minutes old.
            *slot = (
                n,
                ActivityBucket {
                    at: n * BUCKET_MS,
                    ..ActivityBucket::default()
                },
            );
        } else if slot.0 > n {
            // Older than anything kept (an event delayed by minutes): no bucket to count it in.
            return;
        }
        let b = &mut slot.1;
        b.enqueued += u64::from(e.from.is_none());
        b.completed += u64::from(e.to == JobState::Completed);
        b.failed += u64::from(e.failure.is_some());
        if let Some(ms) = e.ran_ms {
            b.ran += 1;
            b.ran_ms_sum = b.ran_ms_sum.saturating_add(ms);
        }
        if let Some(ms) = e.waited_ms {
            b.claimed += 1;
            b.waited_ms_sum = b.waited_ms_sum.saturating_add(ms);
        }
    }
}

impl Activity {
    /// The [`BUCKETS`] buckets ending with the one that holds `now`, oldest first; buckets with no
    /// event are zeros.
    pub fn history(&self, now: Timestamp) -> ActivityHistory {
        let last = now.div_euclid(BUCKET_MS);
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = (last - BUCKETS as i64 + 1..=last)
            .map(|n| match &slots[slot_of(n)] {
                (m, b) if *m == n => b.clone(),
                _ => ActivityBucket {
                    at: n * BUCKET_MS,
                    ..ActivityBucket::default()
                },
            })
            .collect();
        ActivityHistory {
            now,
            bucket_ms: BUCKET_MS as u64,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: Timestamp, from: Option<JobState>, to: JobState) -> Event {
        let mut e = Event::new(
            "01JAAAAAAAAAAAAAAAAAAAAAAA".parse().unwrap(),
            "q".into(),
            "k".into(),
            from,
            to,
            at,
            1,
        );
        if to == JobState::Completed {
            e.ran_ms = Some(40);
        }
        e
    }

    #[test]
    fn events_are_counted_in_the_bucket_of_their_time_and_old_ones_age_out() {
        let a = Activity::default();
        let t0 = 1_000_000_000_000; // a bucket boundary
        a.observe(&ev(t0 + 1, None, JobState::Waiting));
        a.observe(&ev(t0 + 2, Some(JobState::Active), JobState::Completed));
        a.observe(&ev(t0 + 4_999, Some(JobState::Active), JobState::Completed));
        a.observe(&ev(t0 + 5_000, Some(JobState::Active), JobState::Completed));

        let h = a.history(t0 + 6_000);
        assert_eq!(h.buckets.len(), BUCKETS);
        assert_eq!(h.bucket_ms, 5_000);
        let last = &h.buckets[BUCKETS - 1];
        let before = &h.buckets[BUCKETS - 2];
        assert_eq!((before.at, before.enqueued, before.completed), (t0, 1, 2));
        assert_eq!((before.ran, before.ran_ms_sum), (2, 80));
        assert_eq!((last.at, last.completed), (t0 + 5_000, 1));
        assert!(h.buckets[..BUCKETS - 2].iter().all(|b| b.completed == 0));

        // Five minutes on, the first bucket is out of the window, and its slot is reused.
        let later = t0 + BUCKET_MS * BUCKETS as i64;
        let h = a.history(later);
        assert_eq!(h.buckets[0].at, t0 + 5_000);
        assert_eq!(h.buckets[0].completed, 1);
        a.observe(&ev(later, Some(JobState::Active), JobState::Completed));
        let h = a.history(later);
        assert_eq!(h.buckets[BUCKETS - 1].completed, 1, "not t0's two");
        // An event from before the window is not counted anywhere.
        a.observe(&ev(t0, Some(JobState::Active), JobState::Completed));
        let total: u64 = a.history(later).buckets.iter().map(|b| b.completed).sum();
        assert_eq!(total, 2);
    }
}
