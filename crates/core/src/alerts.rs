//! Built-in alert rules and their life: a condition that holds for `for_ms` fires; one that stops
//! holding resolves. A firing is told at once, or — within `cooldown_ms` of the alert's last notice, so
//! that a flapping condition does not page every minute — as soon as the cooldown is over, if it still
//! fires then. A resolution is told only of a firing that was told.
//!
//! Pure: [`Tracker::step`] takes the instant and what was observed, and answers the notices to send.
//! The server gathers the observations (store stats, its counters, workers seen) on the node that
//! leads alerting, and sends the notices to webhooks and the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// The conditions Errand watches: per queue, and for the whole server ([`RuleKind::server_wide`],
/// observed under the queue name `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Waiting jobs above the threshold.
    QueueDepth,
    /// The oldest waiting job older than the threshold (seconds).
    OldestWaiting,
    /// Failed attempts above the threshold (percent) of the attempts ended in the window.
    FailureRate,
    /// Stalled attempts in the window above the threshold (default 0: any stall).
    Stalled,
    /// Dead letters above the threshold.
    DeadLetters,
    /// Jobs waiting and no worker seen for the queue (the threshold is unused).
    NoWorkers,
    /// The filesystem holding the embedded store fuller than the threshold (percent).
    DiskFull,
    /// The store grown by more than the threshold (bytes) within the window.
    StoreGrowth,
}

impl RuleKind {
    pub const ALL: [RuleKind; 8] = [
        RuleKind::QueueDepth,
        RuleKind::OldestWaiting,
        RuleKind::FailureRate,
        RuleKind::Stalled,
        RuleKind::DeadLetters,
        RuleKind::NoWorkers,
        RuleKind::DiskFull,
        RuleKind::StoreGrowth,
    ];

    /// A rule of the whole server rather than of each queue.
    pub fn server_wide(self) -> bool {
        matches!(self, RuleKind::DiskFull | RuleKind::StoreGrowth)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::QueueDepth => "queue_depth",
            RuleKind::OldestWaiting => "oldest_waiting",
            RuleKind::FailureRate => "failure_rate",
            RuleKind::Stalled => "stalled",
            RuleKind::DeadLetters => "dead_letters",
            RuleKind::NoWorkers => "no_workers",
            RuleKind::DiskFull => "disk_full",
            RuleKind::StoreGrowth => "store_growth",
        }
    }

    /// The default rule, the same as `deploy/prometheus/alerts.yml`.
    pub fn default_rule(self) -> Rule {
        let (threshold, for_ms) = match self {
            RuleKind::QueueDepth => (10_000.0, 300_000),
            RuleKind::OldestWaiting => (300.0, 300_000),
            RuleKind::FailureRate => (10.0, 300_000),
            RuleKind::Stalled => (0.0, 0),
            RuleKind::DeadLetters => (0.0, 60_000),
            RuleKind::NoWorkers => (0.0, 300_000),
            RuleKind::DiskFull => (90.0, 300_000),
            RuleKind::StoreGrowth => (1_073_741_824.0, 0),
        };
        Rule {
            kind: self,
            threshold,
            for_ms,
            cooldown_ms: 3_600_000,
            window_ms: match self {
                RuleKind::StoreGrowth => 3_600_000,
                _ => 600_000,
            },
        }
    }
}

/// One rule as configured for a queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub kind: RuleKind,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires.
    pub for_ms: u64,
    /// At most one notice of this alert per this long.
    pub cooldown_ms: u64,
    /// The window of `failure_rate`, `stalled` and `store_growth`.
    pub window_ms: u64,
}

/// What was observed of one rule of one queue at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub rule: Rule,
    pub queue: String,
    /// The measured value (`no_workers`: 1 when jobs wait with no worker, else 0).
    pub value: f64,
    /// An operator silenced this alert for now: it fires and is listed, but is not told; if it still
    /// fires when the silence ends, it is told then.
    pub silenced: bool,
}

impl Observation {
    fn breached(&self) -> bool {
        self.value > self.rule.threshold
    }
}

/// An alert firing now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: RuleKind,
    pub queue: String,
    pub value: f64,
    pub threshold: f64,
    /// When the condition started to hold.
    pub since: Timestamp,
    /// When it fired (`since + for`).
    pub fired_at: Timestamp,
}

/// A notice to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Firing(Alert),
    Resolved { alert: Alert, at: Timestamp },
}

#[derive(Debug, Clone, Default)]
struct State {
    /// The condition has held since.
    pending_since: Option<Timestamp>,
    firing: Option<Alert>,
    /// The firing was told.
    told: bool,
    /// When the last notice of this alert went out.
    last_notice: Option<Timestamp>,
}

/// The alerts' states across steps.
#[derive(Debug, Default)]
pub struct Tracker {
    states: BTreeMap<(RuleKind, String), State>,
}

impl Tracker {
    /// Moves every alert on with what was observed at `now`; answers the notices due. An alert of a
    /// queue no longer observed (deleted, rule removed) resolves. With `tell` false (a node that does
    /// not send notices) nothing counts as told, so that the node taking over tells what is due.
    pub fn step(&mut self, now: Timestamp, observed: &[Observation], tell: bool) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for o in observed {
            let key = (o.rule.kind, o.queue.clone());
            seen.insert(key.clone());
            let st = self.states.entry(key).or_default();
            if !o.breached() {
                st.pending_since = None;
                resolve(st, now, tell, &mut notices);
                continue;
            }
            let since = *st.pending_since.get_or_insert(now);
            match &mut st.firing {
                Some(a) => a.value = o.value,
                None if now - since >= o.rule.for_ms as i64 => {
                    st.told = false;
                    st.firing = Some(Alert {
                        rule: o.rule.kind,
                        queue: o.queue.clone(),
                        value: o.value,
                        threshold: o.rule.threshold,
                        since,
                        fired_at: now,
                    });
                }
                None => continue,
            }
            let cooled = st
                .last_notice
                .is_none_or(|t| now - t >= o.rule.cooldown_ms as i64);
            if tell && !o.silenced && !st.told && cooled {
                st.told = true;
                st.last_notice = Some(now);
                notices.extend(st.firing.clone().map(Notice::Firing));
            }
        }
        for (key, st) in self.states.iter_mut() {
            if !seen.contains(key) {
                st.pending_since = None;
                resolve(st, now, tell, &mut notices);
            }
        }
        // A state that holds nothing to remember goes; one told lately stays for its cooldown's sake
        // (bounded by the rules times the queues).
        self.states.retain(|_, st| {
            st.firing.is_some() || st.pending_since.is_some() || st.last_notice.is_some()
        });
        notices
    }

    /// The alerts firing now, by rule and queue.
    pub fn firing(&self) -> Vec<Alert> {
        self.states
            .values()
            .filter_map(|s| s.firing.clone())
            .collect()
    }
}

fn resolve(st: &mut State, now: Timestamp, tell: bool, notices: &mut Vec<Notice>) {
    if let Some(alert) = st.firing.take() {
        // A firing nobody was told of (held back by a cooldown) resolves quietly.
        if st.told && tell {
            st.last_notice = Some(now);
            notices.push(Notice::Resolved { alert, at: now });
        }
        st.told = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Tracker {
        fn step_told(&mut self, now: Timestamp, observed: &[Observation]) -> Vec<Notice> {
            self.step(now, observed, true)
        }
    }

    fn depth(value: f64) -> Observation {
        Observation {
            rule: Rule {
                threshold: 100.0,
                for_ms: 60_000,
                cooldown_ms: 600_000,
                ..RuleKind::QueueDepth.default_rule()
            },
            queue: "mail".into(),
            value,
            silenced: false,
        }
    }

    fn kinds(n: &[Notice]) -> Vec<&'static str> {
        n.iter()
            .map(|n| match n {
                Notice::Firing(_) => "firing",
                Notice::Resolved { .. } => "resolved",
            })
            .collect()
    }

    #[test]
    fn fires_after_the_for_duration_and_resolves_when_the_condition_ends() {
        let mut t = Tracker::default();
        assert!(t.step_told(0, &[depth(150.0)]).is_empty(), "pending");
        assert!(t.step_told(59_999, &[depth(150.0)]).is_empty());
        let n = t.step_told(60_000, &[depth(170.0)]);
        assert_eq!(kinds(&n), ["firing"]);
        let Notice::Firing(a) = &n[0] else { panic!() };
        assert_eq!(
            (a.since, a.fired_at, a.value, a.threshold),
            (0, 60_000, 170.0, 100.0)
        );
        assert!(t.step_told(70_000, &[depth(200.0)]).is_empty(), "told once");
        assert_eq!(t.firing()[0].value, 200.0);
        assert_eq!(kinds(&t.step_told(80_000, &[depth(90.0)])), ["resolved"]);
        assert!(t.firing().is_empty());
    }

    #[test]
    fn a_blip_shorter_than_for_never_fires() {
        let mut t = Tracker::default();
        t.step_told(0, &[depth(150.0)]);
        t.step_told(30_000, &[depth(50.0)]);
        assert!(
            t.step_told(70_000, &[depth(150.0)]).is_empty(),
            "the wait starts again"
        );
        assert_eq!(kinds(&t.step_told(130_000, &[depth(150.0)])), ["firing"]);
    }

    #[test]
    fn a_flapping_alert_notifies_once_per_cooldown() {
        let mut t = Tracker::default();
        t.step_told(0, &[depth(150.0)]);
        assert_eq!(kinds(&t.step_told(60_000, &[depth(150.0)])), ["firing"]);
        assert_eq!(kinds(&t.step_told(70_000, &[depth(0.0)])), ["resolved"]);
        // Fires again within the cooldown: active, but not told; its end is not told either.
        t.step_told(80_000, &[depth(150.0)]);
        assert!(t.step_told(140_000, &[depth(150.0)]).is_empty());
        assert_eq!(t.firing().len(), 1);
        assert!(t.step_told(150_000, &[depth(0.0)]).is_empty());
        // After the cooldown it is told again.
        t.step_told(700_000, &[depth(150.0)]);
        assert_eq!(kinds(&t.step_told(760_000, &[depth(150.0)])), ["firing"]);
    }

    #[test]
    fn a_firing_held_back_by_the_cooldown_is_told_when_the_cooldown_ends() {
        let mut t = Tracker::default();
        t.step_told(0, &[depth(150.0)]);
        assert_eq!(kinds(&t.step_told(60_000, &[depth(150.0)])), ["firing"]);
        assert_eq!(kinds(&t.step_told(70_000, &[depth(0.0)])), ["resolved"]);
        t.step_told(80_000, &[depth(150.0)]);
        assert!(
            t.step_told(140_000, &[depth(150.0)]).is_empty(),
            "within the cooldown"
        );
        assert!(t.step_told(669_999, &[depth(150.0)]).is_empty());
        let n = t.step_told(670_000, &[depth(150.0)]);
        assert_eq!(kinds(&n), ["firing"], "still firing when the cooldown ends");
        let Notice::Firing(a) = &n[0] else { panic!() };
        assert_eq!((a.since, a.fired_at), (80_000, 140_000));
        assert_eq!(kinds(&t.step_told(680_000, &[depth(0.0)])), ["resolved"]);
    }

    #[test]
    fn a_node_that_does_not_tell_leaves_the_telling_to_the_next() {
        let mut t = Tracker::default();
        t.step(0, &[depth(150.0)], false);
        assert!(t.step(60_000, &[depth(150.0)], false).is_empty());
        assert_eq!(t.firing().len(), 1, "listed all the same");
        assert_eq!(kinds(&t.step(65_000, &[depth(150.0)], true)), ["firing"]);
    }

    #[test]
    fn an_alert_whose_queue_is_no_longer_observed_resolves() {
        let mut t = Tracker::default();
        let zero_for = Observation {
            rule: Rule {
                for_ms: 0,
                ..RuleKind::DeadLetters.default_rule()
            },
            queue: "q".into(),
            value: 1.0,
            silenced: false,
        };
        assert_eq!(kinds(&t.step_told(0, &[zero_for])), ["firing"]);
        assert_eq!(kinds(&t.step_told(1_000, &[])), ["resolved"]);
    }

    #[test]
    fn a_silenced_alert_fires_untold_and_is_told_when_the_silence_ends() {
        let mut t = Tracker::default();
        let silenced = |value: f64, silenced: bool| Observation {
            silenced,
            ..depth(value)
        };
        assert!(t.step_told(0, &[silenced(500.0, true)]).is_empty());
        assert!(
            t.step_told(60_000, &[silenced(500.0, true)]).is_empty(),
            "fires, untold"
        );
        assert_eq!(t.firing().len(), 1, "listed all the same");
        assert_eq!(
            kinds(&t.step_told(70_000, &[silenced(500.0, false)])),
            ["firing"]
        );
        // Resolved during a later silence: the resolution is told (the firing was).
        assert_eq!(
            kinds(&t.step_told(80_000, &[silenced(0.0, true)])),
            ["resolved"]
        );
    }
}
