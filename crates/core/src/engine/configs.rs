//! Queue settings as enqueues read them: from a short-lived cache, so that a stream of single enqueues
//! does not read the queue's row once per job (on PostgreSQL, a round trip and a transaction each).
//!
//! A change made through this engine applies at once; one made through another node's engine applies
//! here within [`EngineConfig::queue_config_ttl_ms`](super::EngineConfig), timed by the engine's clock.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::model::QueueConfig;

/// More queues than this in the cache and it starts over: bounded memory whatever names arrive.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct ConfigCache {
    entries: Mutex<HashMap<String, (QueueConfig, Timestamp)>>,
}

impl ConfigCache {
    /// The cached settings of `queue`, if read at most `ttl_ms` before `now`.
    pub(super) fn get(&self, queue: &str, now: Timestamp, ttl_ms: u64) -> Option<QueueConfig> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (config, read_at) = entries.get(queue)?;
        // A clock that went back makes the entry's age unknown: read again.
        let age = now.checked_sub(*read_at).filter(|age| *age >= 0)?;
        (age.unsigned_abs() < ttl_ms).then(|| config.clone())
    }

    /// Remembers `queue`'s settings as written (`written`) or read at `now`. A read does not replace an
    /// entry as recent or more: that may be a change written while the read was under way.
    pub(super) fn put(&self, queue: &str, config: QueueConfig, now: Timestamp, written: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !written && entries.get(queue).is_some_and(|(_, at)| *at >= now) {
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(queue) {
            entries.clear();
        }
        entries.insert(queue.to_string(), (config, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_for_the_ttl_and_not_across_a_clock_going_back() {
        let cache = ConfigCache::default();
        let config = QueueConfig {
            max_attempts: 7,
            ..QueueConfig::default()
        };
        cache.put("q", config.clone(), 1_000, false);
        assert_eq!(cache.get("q", 1_999, 1_000), Some(config.clone()));
        assert_eq!(cache.get("q", 2_000, 1_000), None, "expired");
        assert_eq!(cache.get("q", 999, 1_000), None, "clock went back");
        assert_eq!(cache.get("q", 1_000, 0), None, "a ttl of 0 disables it");
        assert_eq!(cache.get("other", 1_000, 1_000), None);
    }

    #[test]
    fn a_read_never_replaces_a_change_written_meanwhile() {
        let cache = ConfigCache::default();
        let written = QueueConfig {
            max_attempts: 9,
            ..QueueConfig::default()
        };
        cache.put("q", written.clone(), 2_000, true);
        // A read that started before the write answers after it.
        cache.put("q", QueueConfig::default(), 2_000, false);
        cache.put("q", QueueConfig::default(), 1_500, false);
        assert_eq!(cache.get("q", 2_100, 1_000), Some(written));
        // A later read does replace it.
        cache.put("q", QueueConfig::default(), 2_200, false);
        assert_eq!(cache.get("q", 2_300, 1_000), Some(QueueConfig::default()));
    }
}
