//! Prometheus metrics at `GET /metrics`.
//!
//! Three sources, so that a scrape stays cheap with a thousand queues:
//! - **counters and histograms of this node** (jobs by outcome, wait and run times, HTTP requests,
//!   store operations), updated as things happen: job ones by the engine's [`Observer`] hook, which
//!   sees every event synchronously and so misses none (a broadcast subscriber could fall behind);
//! - **gauges of the shared store** (jobs by state, oldest waiting age, dead letters, paused), read at
//!   scrape time with one [`Store::queue_stats_all`] call: every node reports the same values;
//! - **workers seen** by this node's fetches and heartbeats within [`WORKER_WINDOW_MS`], and the
//!   long-poll fetches parked on this node now.
//!
//! Names follow the Prometheus conventions: an `errand_` prefix, `_total` counters, `_seconds`
//! histograms in base units. The exposition is the OpenMetrics text format, which Prometheus reads.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use errand_core::hooked::{self, Hook, Hooked};
use errand_core::{ErrorKind, Event, JobState, Observer, QueueStats, Result, Timestamp};
use errand_protocol::WorkerReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A worker counts as connected to a queue for this long after its last fetch or heartbeat on it.
pub const WORKER_WINDOW_MS: i64 = 60_000;

/// Job latencies: 5 ms to about 41 min, doubling.
fn job_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 20)
}

/// Request and store latencies: 0.1 ms to about 1.6 s, doubling.
fn fast_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_1, 2.0, 15)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueKind {
    queue: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreObjectLabel {
    object: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AlertLabel {
    pub rule: &'static str,
    pub queue: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The kind label of the jobs of a queue beyond its first `metrics_kinds_per_queue` kinds.
pub const OTHER_KIND: &str = "other";

/// The default of `metrics_kinds_per_queue`: the kinds of one queue with series of their own.
pub const KINDS_PER_QUEUE: usize = 100;

/// Which kinds of each queue have series of their own. A kind is whatever a producer sends, and a
/// series, once made, lives as long as the process: past `cap` kinds in a queue, the others count
/// under [`OTHER_KIND`], so a producer cannot grow the scrape (and this node's memory) without bound.
#[derive(Debug)]
struct KindSeries {
    cap: usize,
    known: RwLock<HashMap<String, HashSet<String>>>,
}

impl KindSeries {
    /// The labels a counter of a new series for `label` gets: `label` itself while its queue has
    /// fewer than `cap` kinds with series, else the queue's `other`. Called only when the counter has
    /// no series for `label` yet, so an event of a known kind never comes here.
    fn admit(&self, label: &QueueKind) -> QueueKind {
        let other = || QueueKind {
            queue: label.queue.clone(),
            kind: OTHER_KIND.to_string(),
        };
        {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            if let Some(kinds) = known.get(&label.queue) {
                if kinds.contains(&label.kind) {
                    return label.clone();
                }
                if kinds.len() >= self.cap {
                    return other();
                }
            }
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let kinds = known.entry(label.queue.clone()).or_default();
        if kinds.contains(&label.kind) || kinds.len() < self.cap {
            kinds.insert(label.kind.clone());
            label.clone()
        } else {
            other()
        }
    }

    /// Adds one to `family`'s series of `label`, or of its queue's `other` past the cap. The common
    /// case, a series that exists, costs what `get_or_create` does.
    fn inc(&self, family: &Family<QueueKind, Counter>, label: &QueueKind) {
        if let Some(c) = family.get(label) {
            c.inc();
            return;
        }
        family.get_or_create(&self.admit(label)).inc();
    }
}

/// Cumulative counts of one queue at one instant, over every kind: what the alert rules of failure
/// rate and stalls read. Kept here, where every event is seen; the alert evaluator samples them, so
/// the dependency goes one way, alerting → metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub completed: u64,
    pub failed: u64,
    pub stalled: u64,
}

/// Worker reports kept before a new worker's report sweeps out those older than the window.
const REPORTS_SWEPT_AT: usize = 1_024;

/// This node's metrics. Cheap to share.
#[derive(Debug)]
pub struct Metrics {
    kinds: KindSeries,
    enqueued: Family<QueueKind, Counter>,
    completed: Family<QueueKind, Counter>,
    failed: Family<QueueKind, Counter>,
    retried: Family<QueueKind, Counter>,
    dead: Family<QueueKind, Counter>,
    stalled: Family<QueueKind, Counter>,
    cancelled: Family<QueueKind, Counter>,
    processing: Histograms<QueueLabel>,
    wait: Histograms<QueueLabel>,
    http_requests: Family<RouteStatus, Counter>,
    http_duration: Histograms<Route>,
    auth_denied: Family<Reason, Counter>,
    store_ops: Histograms<Op>,
    /// Queue → worker → last seen (ms since the epoch).
    workers: Mutex<HashMap<String, HashMap<String, Timestamp>>>,
    /// Worker → what it said of itself in its latest fetch, and when (forgotten with its sightings).
    reports: Mutex<HashMap<String, (WorkerReport, Timestamp)>>,
    /// Per queue: what the alert rules of failure rate and stalls read.
    totals: Mutex<HashMap<String, Totals>>,
    /// Set by the alert evaluator: the alerts firing now.
    pub(crate) alerts_firing: Family<AlertLabel, Gauge>,
    /// Kept by the waiting-fetch registry (`wake.rs`): long polls parked now, on every queue.
    pub(crate) fetches_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(KINDS_PER_QUEUE)
    }
}

impl Metrics {
    /// Metrics giving at most `kinds_per_queue` kinds of each queue series of their own (at least 1).
    pub fn new(kinds_per_queue: usize) -> Self {
        Metrics {
            kinds: KindSeries {
                cap: kinds_per_queue.max(1),
                known: RwLock::new(HashMap::new()),
            },
            enqueued: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            stalled: Family::default(),
            cancelled: Family::default(),
            processing: Family::new_with_constructor(|| Histogram::new(job_buckets())),
            wait: Family::new_with_constructor(|| Histogram::new(job_buckets())),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| Histogram::new(fast_buckets())),
            auth_denied: Family::default(),
            store_ops: Family::new_with_constructor(|| Histogram::new(fast_buckets())),
            workers: Mutex::new(HashMap::new()),
            reports: Mutex::new(HashMap::new()),
            totals: Mutex::new(HashMap::new()),
            alerts_firing: Family::default(),
            fetches_waiting: Gauge::default(),
        }
    }
}

impl Observer for Metrics {
    fn observe(&self, e: &Event) {
        // Made once, and only for an event that moves a (queue, kind) counter: not for a claim.
        let label = std::cell::OnceCell::new();
        let qk = || {
            label.get_or_init(|| QueueKind {
                queue: e.queue.clone(),
                kind: e.kind.clone(),
            })
        };
        if e.from.is_none() {
            self.kinds.inc(&self.enqueued, qk());
        }
        match e.to {
            JobState::Completed => self.kinds.inc(&self.completed, qk()),
            JobState::Dead => self.kinds.inc(&self.dead, qk()),
            JobState::Cancelled => self.kinds.inc(&self.cancelled, qk()),
            _ => {}
        }
        if e.to == JobState::Completed || e.failure.is_some() {
            let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            let t = match totals.get_mut(&e.queue) {
                Some(t) => t,
                None => totals.entry(e.queue.clone()).or_default(),
            };
            t.completed += u64::from(e.to == JobState::Completed);
            t.failed += u64::from(e.failure.is_some());
            t.stalled += u64::from(e.failure == Some(ErrorKind::Stalled));
        }
        if let Some(kind) = e.failure {
            self.kinds.inc(&self.failed, qk());
            if kind == ErrorKind::Stalled {
                self.kinds.inc(&self.stalled, qk());
            }
            if matches!(e.to, JobState::Waiting | JobState::Delayed) {
                self.kinds.inc(&self.retried, qk());
            }
        }
        let queue = || QueueLabel {
            queue: e.queue.clone(),
        };
        if let Some(ms) = e.ran_ms {
            self.processing.get_or_create(&queue()).observe(seconds(ms));
        }
        if let Some(ms) = e.waited_ms {
            self.wait.get_or_create(&queue()).observe(seconds(ms));
        }
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1_000.0
}

impl Metrics {
    /// Counts one HTTP request: `route` is the matched route's template (or `unmatched`).
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: std::time::Duration) {
        let route = route.to_string();
        let method = method.to_string();
        self.http_duration
            .get_or_create(&Route {
                route: route.clone(),
                method: method.clone(),
            })
            .observe(took.as_secs_f64());
        self.http_requests
            .get_or_create(&RouteStatus {
                route,
                method,
                status,
            })
            .inc();
    }

    /// A request refused 401 or 403, by [`crate::auth::Denied::reason`].
    pub fn auth_denied(&self, reason: &'static str) {
        self.auth_denied.get_or_create(&Reason { reason }).inc();
    }

    fn store_op(&self, op: &'static str, took: std::time::Duration) {
        self.store_ops
            .get_or_create(&Op { op })
            .observe(took.as_secs_f64());
    }

    /// The counts of `queue` since this node started.
    pub fn totals(&self, queue: &str) -> Totals {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.get(queue).copied().unwrap_or_default()
    }

    /// Notes that `worker` asked for or heartbeat on jobs of `queues` at `now`.
    pub fn worker_seen<'a>(
        &self,
        worker: &str,
        queues: impl IntoIterator<Item = &'a str>,
        now: Timestamp,
    ) {
        let mut seen = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for q in queues {
            match seen.get_mut(q) {
                Some(ws) => match ws.get_mut(worker) {
                    Some(at) => *at = now,
                    None => {
                        ws.insert(worker.to_string(), now);
                    }
                },
                None => {
                    seen.insert(q.to_string(), HashMap::from([(worker.to_string(), now)]));
                }
            }
        }
    }

    /// Keeps what `worker` said of itself at `now`.
    pub fn worker_reported(&self, worker: &str, report: WorkerReport, now: Timestamp) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        match reports.get_mut(worker) {
            Some(r) => *r = (report, now),
            None => {
                // Bounded by the workers of the last minute: a new worker's first report sweeps
                // the forgotten ones out once the map has grown.
                if reports.len() >= REPORTS_SWEPT_AT {
                    reports.retain(|_, (_, at)| now - *at <= WORKER_WINDOW_MS);
                }
                reports.insert(worker.to_string(), (report, now));
            }
        }
    }

    /// What each worker said of itself within [`WORKER_WINDOW_MS`] of `now`.
    pub fn worker_reports(&self, now: Timestamp) -> HashMap<String, WorkerReport> {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.retain(|_, (_, at)| now - *at <= WORKER_WINDOW_MS);
        reports
            .iter()
            .map(|(w, (r, _))| (w.clone(), r.clone()))
            .collect()
    }

    /// The workers seen per queue within [`WORKER_WINDOW_MS`] of `now`, forgetting older sightings
    /// (memory stays bounded by the workers of the last minute).
    pub fn workers(&self, now: Timestamp) -> Vec<(String, Vec<(String, Timestamp)>)> {
        let mut seen = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, ws| {
            ws.retain(|_, at| now - *at <= WORKER_WINDOW_MS);
            !ws.is_empty()
        });
        let mut out: Vec<_> = seen
            .iter()
            .map(|(q, ws)| {
                let mut ws: Vec<_> = ws.iter().map(|(w, at)| (w.clone(), *at)).collect();
                ws.sort();
                (q.clone(), ws)
            })
            .collect();
        out.sort();
        out
    }

    /// The exposition: this node's counters and histograms, and the store's gauges from `stats`.
    pub fn render(
        &self,
        stats: &[QueueStats],
        resources: &crate::resources::Resources,
        now: Timestamp,
    ) -> String {
        let mut r = Registry::with_prefix("errand");
        let jobs = |name: &str, help: &str, f: &Family<QueueKind, Counter>, r: &mut Registry| {
            r.register(name, help, f.clone());
        };
        jobs(
            "jobs_enqueued",
            "Jobs enqueued through this node.",
            &self.enqueued,
            &mut r,
        );
        jobs(
            "jobs_completed",
            "Jobs completed through this node.",
            &self.completed,
            &mut r,
        );
        jobs(
            "jobs_failed",
            "Failed attempts seen by this node: errors reported by workers, timeouts, stalls.",
            &self.failed,
            &mut r,
        );
        jobs(
            "jobs_retried",
            "Failed or stalled attempts scheduled to run again.",
            &self.retried,
            &mut r,
        );
        jobs(
            "jobs_dead",
            "Jobs that failed for good (dead letters).",
            &self.dead,
            &mut r,
        );
        jobs(
            "jobs_stalled",
            "Attempts whose lease expired without an acknowledgement.",
            &self.stalled,
            &mut r,
        );
        jobs("jobs_cancelled", "Jobs cancelled.", &self.cancelled, &mut r);
        r.register_with_unit(
            "job_processing",
            "How long attempts ran, from claim to acknowledgement, stall or timeout.",
            Unit::Seconds,
            self.processing.clone(),
        );
        r.register_with_unit(
            "job_wait",
            "How long jobs were due before a worker claimed them.",
            Unit::Seconds,
            self.wait.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status.",
            self.http_requests.clone(),
        );
        r.register(
            "auth_denied",
            "Requests refused 401 or 403, by reason (missing_key, malformed_header, unknown_key, \
             scope, queue, every_queue); the audit log keeps a bounded number of them.",
            self.auth_denied.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "HTTP request latency, by route template and method.",
            Unit::Seconds,
            self.http_duration.clone(),
        );
        r.register_with_unit(
            "store_operation",
            "Store operation latency, by operation.",
            Unit::Seconds,
            self.store_ops.clone(),
        );
        r.register(
            "alerts_firing",
            "1 for each built-in alert firing now (GET /v1/alerts).",
            self.alerts_firing.clone(),
        );

        let by_state = Family::<QueueState, Gauge>::default();
        let oldest = Family::<QueueLabel, Gauge<f64, AtomicU64>>::default();
        let dead = Family::<QueueLabel, Gauge>::default();
        let paused = Family::<QueueLabel, Gauge>::default();
        for s in stats {
            for state in JobState::ALL {
                by_state
                    .get_or_create(&QueueState {
                        queue: s.queue.clone(),
                        state: state.as_str(),
                    })
                    .set(s.count(state) as i64);
            }
            let q = QueueLabel {
                queue: s.queue.clone(),
            };
            oldest
                .get_or_create(&q)
                .set(seconds(s.oldest_waiting_age_ms));
            dead.get_or_create(&q).set(s.dead as i64);
            paused.get_or_create(&q).set(s.paused as i64);
        }
        r.register(
            "jobs",
            "Jobs by queue and state (the shared store).",
            by_state,
        );
        r.register_with_unit(
            "queue_oldest_waiting",
            "Age of the oldest due job still waiting.",
            Unit::Seconds,
            oldest,
        );
        r.register("queue_dead_letters", "Dead jobs kept for replay.", dead);
        r.register("queue_paused", "1 while the queue is paused.", paused);
        let workers = Family::<QueueLabel, Gauge>::default();
        for (queue, ws) in self.workers(now) {
            workers
                .get_or_create(&QueueLabel { queue })
                .set(ws.len() as i64);
        }
        r.register(
            "workers",
            "Distinct workers that fetched or heartbeat on this node in the last 60 s.",
            workers,
        );
        let store = Family::<StoreObjectLabel, Gauge>::default();
        for o in &resources.store {
            store
                .get_or_create(&StoreObjectLabel {
                    object: o.name.clone(),
                    kind: o.kind,
                })
                .set(i64::try_from(o.bytes).unwrap_or(i64::MAX));
        }
        r.register_with_unit(
            "store",
            "What the store takes on disk: the embedded store's database and WAL files, or each \
             PostgreSQL table and its indexes (kind table, indexes).",
            Unit::Bytes,
            store,
        );
        if let Some(d) = resources.disk {
            let gauge = |v: u64| {
                let g = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
                g
            };
            r.register_with_unit(
                "disk_free",
                "Free space of the filesystem holding the embedded store (for an unprivileged user).",
                Unit::Bytes,
                gauge(d.free),
            );
            r.register_with_unit(
                "disk_used",
                "Space taken by files on the filesystem holding the embedded store.",
                Unit::Bytes,
                gauge(d.used),
            );
            r.register_with_unit(
                "disk_size",
                "Size of the filesystem holding the embedded store.",
                Unit::Bytes,
                gauge(d.total),
            );
        }
        if let Some(rss) = resources.resident_bytes {
            let g = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
            g.set(i64::try_from(rss).unwrap_or(i64::MAX));
            r.register_with_unit(
                "process_resident_memory",
                "Resident memory of this server process.",
                Unit::Bytes,
                g,
            );
        }
        r.register(
            "fetches_waiting",
            "Long-poll fetches parked on this node now, waiting for a job (at most max_waiting_fetches).",
            self.fetches_waiting.clone(),
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// A store that times every operation into [`Metrics`], labelled by the operation's name
/// (`job_insert`, ...). The engine runs over it, so every store call of the server is measured,
/// whichever part of the engine made it.
pub type TimedStore = Hooked<StoreTimer>;

/// The [`Hook`] of a [`TimedStore`].
#[derive(Debug)]
pub struct StoreTimer(pub Arc<Metrics>);

impl Hook for StoreTimer {
    async fn around<'a, T, F>(&'a self, op: hooked::Op, call: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'a,
        T: Send + 'a,
    {
        let start = Instant::now();
        let out = call.await;
        self.0.store_op(op.as_str(), start.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn enqueued(m: &Metrics, queue: &str, kind: &str) {
        let id = "01KA0000000000000000000000".parse().unwrap();
        m.observe(&Event::new(
            id,
            queue.into(),
            kind.into(),
            None,
            JobState::Waiting,
            0,
            1,
        ));
    }

    fn count(scrape: &str, queue: &str, kind: &str) -> Option<u64> {
        let series = format!("errand_jobs_enqueued_total{{queue=\"{queue}\",kind=\"{kind}\"}} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|n| n.trim().parse().unwrap())
    }

    #[test]
    fn a_queues_kinds_past_the_cap_count_as_other() {
        let m = Metrics::new(2);
        for kind in ["a", "b", "c", "d", "a", "d"] {
            enqueued(&m, "q", kind);
        }
        enqueued(&m, "q2", "c");
        let scrape = m.render(&[], &Default::default(), 0);
        assert_eq!(count(&scrape, "q", "a"), Some(2));
        assert_eq!(count(&scrape, "q", "b"), Some(1));
        assert_eq!(count(&scrape, "q", "c"), None, "past the cap of 2");
        assert_eq!(count(&scrape, "q", "d"), None);
        assert_eq!(count(&scrape, "q", OTHER_KIND), Some(3), "c, d and d");
        assert_eq!(
            count(&scrape, "q2", "c"),
            Some(1),
            "each queue has its own kinds"
        );
    }
}
