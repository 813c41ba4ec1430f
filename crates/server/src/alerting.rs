//! The built-in alerts (the rules are `errand_core::alerts`): every node evaluates them every
//! `alert_interval_ms` and lists its firing ones at `GET /v1/alerts`; only the node that leads
//! maintenance (a store lease; it is the node that counts stalls) tells them — to the log and to the
//! queue's webhooks that take `alert` events, signed like job notices — so a notice goes out once
//! however many nodes run.
//!
//! What each rule measures: `queue_depth` waiting jobs; `oldest_waiting` the oldest waiting job's age
//! in seconds; `dead_letters` dead jobs (all three from the shared store); `failure_rate` failed
//! attempts in percent of the attempts that ended in `window_ms` (at least [`MIN_ATTEMPTS`]);
//! `stalled` stalls in `window_ms` (both from this node's counters); `no_workers` 1 when jobs wait
//! in an unpaused queue and no worker fetched or heartbeat on this node in the last minute. Two rules
//! are of the whole server, observed under the queue name `*` and told only to the log: `disk_full`
//! how full the filesystem holding the embedded store is, in percent; `store_growth` the bytes the
//! store grew by within `window_ms` (`crate::resources`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use errand_core::alerts::{Alert, Notice, Observation, Rule, RuleKind, Tracker};
use errand_core::engine::OWN_QUEUE_PREFIX;
use errand_core::{Engine, QueueStats, Timestamp};
use serde::Deserialize;
use serde_json::json;

use crate::metrics::{AlertLabel, Metrics, Totals};
use crate::resources::Resources;

/// `failure_rate` says nothing below this many ended attempts in its window.
pub const MIN_ATTEMPTS: u64 = 10;

/// One `[[alerts]]` entry of the config file: a rule for a queue (`*`: every queue), each field left
/// out keeping its default. A queue's own entry beats `*`; `enabled = false` turns a rule off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    #[serde(default = "every_queue")]
    pub queue: String,
    pub rule: RuleKind,
    pub threshold: Option<f64>,
    pub for_ms: Option<u64>,
    pub cooldown_ms: Option<u64>,
    pub window_ms: Option<u64>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn every_queue() -> String {
    "*".into()
}

fn yes() -> bool {
    true
}

impl AlertConfig {
    /// `rule` for `queue` (`*`: every queue) with every field at its default.
    pub fn new(queue: &str, rule: RuleKind) -> AlertConfig {
        AlertConfig {
            queue: queue.into(),
            rule,
            threshold: None,
            for_ms: None,
            cooldown_ms: None,
            window_ms: None,
            enabled: true,
        }
    }
}

/// The name server-wide alerts are observed under.
pub const SERVER: &str = "*";

/// The rules in force for `queue`: the defaults, then `*` entries, then the queue's own. With
/// [`SERVER`], the server-wide rules (which only `*` entries configure); else the per-queue ones.
pub fn rules_for(queue: &str, configured: &[AlertConfig]) -> Vec<Rule> {
    let server = queue == SERVER;
    RuleKind::ALL
        .into_iter()
        .filter(|k| k.server_wide() == server)
        .filter_map(|kind| rule_for(kind, Some(queue), configured))
        .collect()
}

/// Every rule as configured, for `GET /v1/alerts/rules`: each kind for `*` (every queue, or the
/// server), then each kind a queue's own entries change, for that queue; `(queue, rule, enabled)`
/// (a rule turned off is listed with its defaults).
pub fn configured_rules(configured: &[AlertConfig]) -> Vec<(String, Rule, bool)> {
    let mut out = Vec::new();
    for kind in RuleKind::ALL {
        let rule = rule_for(kind, None, configured);
        out.push((
            SERVER.to_string(),
            rule.unwrap_or(kind.default_rule()),
            rule.is_some(),
        ));
    }
    let mut own: Vec<(&str, RuleKind)> = configured
        .iter()
        .filter(|c| c.queue != SERVER && !c.rule.server_wide())
        .map(|c| (c.queue.as_str(), c.rule))
        .collect();
    own.sort();
    own.dedup();
    for (queue, kind) in own {
        let rule = rule_for(kind, Some(queue), configured);
        out.push((
            queue.to_string(),
            rule.unwrap_or(kind.default_rule()),
            rule.is_some(),
        ));
    }
    out
}

/// `kind` in force for `queue` (`None`: for every queue, `*` entries only); `None` when turned off.
fn rule_for(kind: RuleKind, queue: Option<&str>, configured: &[AlertConfig]) -> Option<Rule> {
    let mut rule = Some(kind.default_rule());
    let entries = configured.iter().filter(|c| c.rule == kind);
    let (star, own): (Vec<_>, Vec<_>) = entries.partition(|c| c.queue == "*");
    for c in star
        .into_iter()
        .chain(own.into_iter().filter(|c| Some(c.queue.as_str()) == queue))
    {
        if !c.enabled {
            rule = None;
            continue;
        }
        let r = rule.get_or_insert(kind.default_rule());
        r.threshold = c.threshold.unwrap_or(r.threshold);
        r.for_ms = c.for_ms.unwrap_or(r.for_ms);
        r.cooldown_ms = c.cooldown_ms.unwrap_or(r.cooldown_ms);
        r.window_ms = c.window_ms.unwrap_or(r.window_ms);
    }
    rule
}

/// Checks an entry's values (the config file is refused otherwise).
pub fn check(c: &AlertConfig) -> Result<(), String> {
    if c.threshold.is_some_and(|t| !t.is_finite() || t < 0.0) {
        return Err("threshold must be a number of at least 0".into());
    }
    for (name, v, max) in [
        ("for_ms", c.for_ms, 7 * 86_400_000),
        ("cooldown_ms", c.cooldown_ms, 7 * 86_400_000),
        ("window_ms", c.window_ms.map(|w| w.max(1)), 86_400_000),
    ] {
        if v.is_some_and(|v| v > max) {
            return Err(format!("{name} must be at most {max}"));
        }
    }
    if c.window_ms == Some(0) {
        return Err("window_ms must be at least 1".into());
    }
    Ok(())
}

/// What an evaluation reads besides this node's counters: the store's counts, the machine, the
/// silences.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub stats: &'a [QueueStats],
    pub resources: &'a Resources,
    pub silences: &'a Silences,
}

/// The silences in force (`Engine::alert_silences`): `(queue or *, rule, until)`.
#[derive(Debug, Clone, Default)]
pub struct Silences(pub Vec<(String, String, Timestamp)>);

impl Silences {
    /// Whether `rule` of `queue` is silenced at `now`: by a silence of the queue, or of `*`.
    pub fn cover(&self, rule: RuleKind, queue: &str, now: Timestamp) -> bool {
        self.until(rule, queue).is_some_and(|t| t > now)
    }

    /// The latest end of a silence covering `rule` of `queue`.
    pub fn until(&self, rule: RuleKind, queue: &str) -> Option<Timestamp> {
        self.0
            .iter()
            .filter(|(q, r, _)| r == rule.as_str() && (q == queue || q == SERVER))
            .map(|(.., t)| *t)
            .max()
    }
}

/// The alerts of this node.
#[derive(Debug, Default)]
pub struct Alerting {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tracker: Tracker,
    /// Per queue, the counts at each evaluation within the longest window.
    samples: HashMap<String, VecDeque<(Timestamp, Totals)>>,
    /// The store's bytes at each evaluation within `store_growth`'s window.
    store_samples: VecDeque<(Timestamp, u64)>,
}

impl Alerting {
    /// The alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        self.lock().tracker.firing()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Evaluates every rule of every queue at `now`; answers the notices due (sent by the caller if
    /// this node leads alerting) and updates the `errand_alerts_firing` gauge.
    pub fn evaluate(
        &self,
        now: Timestamp,
        seen: Seen<'_>,
        metrics: &Metrics,
        configured: &[AlertConfig],
        tell: bool,
    ) -> Vec<Notice> {
        let Seen {
            stats,
            resources,
            silences,
        } = seen;
        let workers: BTreeMap<String, usize> = metrics
            .workers(now)
            .into_iter()
            .map(|(q, ws)| (q, ws.len()))
            .collect();
        let mut inner = self.lock();
        let mut observed = Vec::new();
        for s in stats
            .iter()
            .filter(|s| !s.queue.starts_with(OWN_QUEUE_PREFIX))
        {
            let rules = rules_for(&s.queue, configured);
            let longest = rules.iter().map(|r| r.window_ms).max().unwrap_or(0) as i64;
            let samples = inner.samples.entry(s.queue.clone()).or_default();
            // A sample per 1/120 of the longest window at most: memory stays bounded however short
            // the interval and long the window.
            let step = longest / 120;
            if samples.back().is_none_or(|(t, _)| now - t >= step) {
                samples.push_back((now, metrics.totals(&s.queue)));
            } else if let Some(last) = samples.back_mut() {
                // The newest counts, kept at the newest sample's place.
                last.1 = metrics.totals(&s.queue);
            }
            while samples.len() > 2 && samples.get(1).is_some_and(|(t, _)| now - t >= longest) {
                samples.pop_front();
            }
            for rule in rules {
                let value = match rule.kind {
                    RuleKind::QueueDepth => s.waiting as f64,
                    RuleKind::OldestWaiting => s.oldest_waiting_age_ms as f64 / 1_000.0,
                    RuleKind::DeadLetters => s.dead as f64,
                    RuleKind::NoWorkers => {
                        let none = s.waiting > 0 && !s.paused && !workers.contains_key(&s.queue);
                        f64::from(u8::from(none))
                    }
                    RuleKind::FailureRate | RuleKind::Stalled => {
                        let (last, first) = window(samples, now, rule.window_ms);
                        let failed = last.failed - first.failed;
                        let ended = failed + (last.completed - first.completed);
                        match rule.kind {
                            RuleKind::Stalled => (last.stalled - first.stalled) as f64,
                            _ if ended < MIN_ATTEMPTS => 0.0,
                            _ => failed as f64 * 100.0 / ended as f64,
                        }
                    }
                    // Observed once for the server, below.
                    RuleKind::DiskFull | RuleKind::StoreGrowth => continue,
                };
                observed.push(Observation {
                    silenced: silences.cover(rule.kind, &s.queue, now),
                    rule,
                    queue: s.queue.clone(),
                    value,
                });
            }
        }
        let live: std::collections::HashSet<&str> =
            stats.iter().map(|s| s.queue.as_str()).collect();
        inner.samples.retain(|q, _| live.contains(q.as_str()));
        for rule in rules_for(SERVER, configured) {
            let value = match rule.kind {
                RuleKind::DiskFull => resources.disk.map(|d| d.used_percent()),
                RuleKind::StoreGrowth if !resources.store.is_empty() => {
                    let bytes = resources.store_bytes();
                    let samples = &mut inner.store_samples;
                    let step = rule.window_ms as i64 / 120;
                    if samples.back().is_none_or(|(t, _)| now - t >= step) {
                        samples.push_back((now, bytes));
                    }
                    while samples.len() > 2
                        && samples
                            .get(1)
                            .is_some_and(|(t, _)| now - t >= rule.window_ms as i64)
                    {
                        samples.pop_front();
                    }
                    // Growth since the oldest sample within the window (or the newest before it).
                    let first = samples
                        .iter()
                        .rev()
                        .find(|(t, _)| now - t >= rule.window_ms as i64)
                        .or_else(|| samples.front())
                        .map_or(bytes, |s| s.1);
                    Some(bytes.saturating_sub(first) as f64)
                }
                _ => None,
            };
            if let Some(value) = value {
                observed.push(Observation {
                    silenced: silences.cover(rule.kind, SERVER, now),
                    rule,
                    queue: SERVER.into(),
                    value,
                });
            }
        }
        let notices = inner.tracker.step(now, &observed, tell);
        metrics.alerts_firing.clear();
        for a in inner.tracker.firing() {
            metrics
                .alerts_firing
                .get_or_create(&AlertLabel {
                    rule: a.rule.as_str(),
                    queue: a.queue,
                })
                .set(1);
        }
        notices
    }
}

/// The counts at `now` and at the start of the window (the oldest sample inside it, or the newest
/// before it).
fn window(
    samples: &VecDeque<(Timestamp, Totals)>,
    now: Timestamp,
    window_ms: u64,
) -> (Totals, Totals) {
    let last = samples.back().map(|s| s.1).unwrap_or_default();
    let first = samples
        .iter()
        .rev()
        .find(|(t, _)| now - t >= window_ms as i64)
        .or_else(|| samples.front())
        .map(|s| s.1)
        .unwrap_or_default();
    (last, first)
}

/// Tells notices: to the log always, to webhooks taking `alert` events.
pub async fn send(engine: &Engine, notices: Vec<Notice>) {
    for n in notices {
        let (state, alert, at) = match n {
            Notice::Firing(a) => {
                tracing::warn!(rule = a.rule.as_str(), queue = %a.queue, value = a.value,
                    threshold = a.threshold, "alert firing");
                let at = a.fired_at;
                ("firing", a, at)
            }
            Notice::Resolved { alert, at } => {
                tracing::info!(rule = alert.rule.as_str(), queue = %alert.queue, "alert resolved");
                ("resolved", alert, at)
            }
        };
        let body = json!({
            "type": format!("alert.{state}"),
            "rule": alert.rule.as_str(),
            "queue": alert.queue,
            "state": state,
            "value": alert.value,
            "threshold": alert.threshold,
            "since": alert.since,
            "at": at,
        });
        if alert.queue == SERVER {
            // No queue's webhooks are the server's: the log (above), GET /v1/alerts and
            // errand_alerts_firing tell it.
            continue;
        }
        let key = format!("{}:{state}:{}", alert.rule.as_str(), alert.since);
        if let Err(e) = engine.notify_alert(&alert.queue, &key, body).await {
            tracing::error!(queue = %alert.queue, "alert notice not enqueued: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queues_own_entry_beats_every_queues_and_can_turn_a_rule_off() {
        let configured = vec![
            AlertConfig {
                threshold: Some(50.0),
                ..AlertConfig::new("*", RuleKind::QueueDepth)
            },
            AlertConfig {
                threshold: Some(5.0),
                for_ms: Some(0),
                ..AlertConfig::new("pay", RuleKind::QueueDepth)
            },
            AlertConfig {
                enabled: false,
                ..AlertConfig::new("pay", RuleKind::DeadLetters)
            },
        ];
        let mail = rules_for("mail", &configured);
        assert_eq!(mail.len(), 6);
        assert_eq!(mail[0].threshold, 50.0);
        assert_eq!(mail[0].for_ms, 300_000);
        let pay = rules_for("pay", &configured);
        assert_eq!(pay.len(), 5);
        assert_eq!((pay[0].threshold, pay[0].for_ms), (5.0, 0));
        assert!(pay.iter().all(|r| r.kind != RuleKind::DeadLetters));
    }
}
