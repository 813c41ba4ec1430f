//! This deployment checked against `docs/AUDIT.md` (`GET /v1/audit/report`, `errand audit`, the
//! dashboard's Audit page): what a team chose — the server's settings, each queue's configuration and
//! policy, the alert rules, the workers this node saw and what they said of themselves — read check by
//! check into pass, warn or fail, each with the one-line fix and the checklist rows it answers.
//!
//! A warning is a default or a choice the audit asks a team to make on purpose (no unique keys
//! required, no bound on a queue); a failure is something that loses work or is about to (a worker
//! that does not drain on SIGTERM, a disk nearly full). Only what this node knows is read: workers
//! seen by other nodes are theirs to report.

use errand_core::alerts::RuleKind;
use errand_core::engine::OWN_QUEUE_PREFIX;
use errand_core::{QueueInfo, QueueStats, Schedule, Timestamp};
use errand_protocol::{AuditCheck, AuditReport, Verdict, WorkerReport};

use crate::alerting::{AlertConfig, SERVER};
use crate::config::{Config, LogFormat, StoreUrl, Sync};
use crate::resources::Resources;

/// The largest payload the checklist calls reasonable (check 10).
pub const REASONABLE_PAYLOAD_BYTES: usize = 100 * 1024;

/// A worker as this node saw it.
#[derive(Debug, Clone)]
pub struct SeenWorker {
    pub id: String,
    pub queues: Vec<String>,
    pub report: Option<WorkerReport>,
}

/// What the audit reads.
#[derive(Debug)]
pub struct Deployment<'a> {
    pub now: Timestamp,
    pub config: &'a Config,
    pub queues: &'a [QueueInfo],
    pub stats: &'a [QueueStats],
    pub schedules: &'a [Schedule],
    pub workers: &'a [SeenWorker],
    pub resources: &'a Resources,
}

/// The checks, failed first.
pub fn audit(d: &Deployment<'_>) -> AuditReport {
    let mut checks = Vec::new();
    server(d, &mut checks);
    alerts(&d.config.alerts, &mut checks);
    for q in d
        .queues
        .iter()
        .filter(|q| !q.name.starts_with(OWN_QUEUE_PREFIX))
    {
        let stats = d.stats.iter().find(|s| s.queue == q.name);
        queue(d, q, stats, &mut checks);
    }
    for s in d.schedules {
        let c = if s.paused {
            check(
                "schedule.paused",
                &[87],
                format!("schedule {}", s.name),
                Verdict::Warn,
                "paused: its ticks do not fire",
                Some("resume it (POST /v1/schedules/{name}/resume) or delete it"),
            )
        } else {
            pass(
                "schedule.paused",
                &[87],
                format!("schedule {}", s.name),
                format!(
                    "fires `{}` ({}) once per tick across nodes",
                    s.def.cron, s.def.timezone
                ),
            )
        };
        checks.push(c);
    }
    for w in d.workers {
        worker(w, &mut checks);
    }
    checks.sort_by_key(|c| c.verdict);
    let count = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count() as u32;
    AuditReport {
        at: d.now,
        pass: count(Verdict::Pass),
        warn: count(Verdict::Warn),
        fail: count(Verdict::Fail),
        checks,
    }
}

fn check(
    id: &str,
    rows: &[u32],
    subject: impl Into<String>,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> AuditCheck {
    AuditCheck {
        id: id.into(),
        rows: rows.to_vec(),
        subject: subject.into(),
        verdict,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

fn pass(
    id: &str,
    rows: &[u32],
    subject: impl Into<String>,
    detail: impl Into<String>,
) -> AuditCheck {
    check(id, rows, subject, Verdict::Pass, detail, None)
}

/// `pass` when `ok`, else `verdict` with its fix.
#[allow(clippy::too_many_arguments)]
fn either(
    ok: bool,
    id: &str,
    rows: &[u32],
    subject: &str,
    good: String,
    verdict: Verdict,
    bad: String,
    fix: &str,
) -> AuditCheck {
    if ok {
        pass(id, rows, subject, good)
    } else {
        check(id, rows, subject, verdict, bad, Some(fix))
    }
}

fn server(d: &Deployment<'_>, out: &mut Vec<AuditCheck>) {
    let c = d.config;
    let keys = &c.keys;
    out.push(either(
        !keys.is_empty(),
        "server.auth",
        &[93],
        "server",
        format!(
            "{} API key(s): {}",
            keys.len(),
            keys.iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Verdict::Warn,
        "no API key: anyone who reaches the port may enqueue, run and delete jobs (the server \
         listens on loopback only)"
            .into(),
        "add [[keys]] to the config file (errand key new) or set ERRAND_API_KEY",
    ));
    let loopback = c.listen.ip().is_loopback();
    out.push(either(
        loopback,
        "server.tls",
        &[92],
        "server",
        format!(
            "listens on {} (loopback): a proxy on this host terminates TLS",
            c.listen
        ),
        Verdict::Warn,
        format!(
            "plain HTTP on {}: keys and payloads cross the network unencrypted",
            c.listen
        ),
        "terminate TLS at a proxy in front of Errand, and listen on 127.0.0.1 behind it",
    ));
    match &c.store {
        StoreUrl::Sqlite(path) => {
            out.push(either(
                c.sync == Sync::Full,
                "server.durability",
                &[90],
                "server",
                "sync = full: every acknowledged write is fdatasynced".into(),
                Verdict::Warn,
                "sync = normal: acknowledged writes of the last moments are lost in a power cut"
                    .into(),
                "set sync = \"full\" (the default)",
            ));
            out.push(check(
                "server.high_availability",
                &[91],
                "server",
                Verdict::Warn,
                format!("one node on the embedded store {}: its death stops the queue until it restarts", path.display()),
                Some("run two or more nodes on PostgreSQL (--store postgres://…)"),
            ));
            if let Some(disk) = d.resources.disk {
                let used = disk.used_percent();
                let detail = format!(
                    "the store's filesystem is {used:.0} % full ({} MiB free)",
                    disk.free >> 20
                );
                let fix = match disk_verdict(used) {
                    Verdict::Fail => {
                        Some("free space or move the data directory before writes are refused")
                    }
                    Verdict::Warn => Some("free space or grow the disk"),
                    Verdict::Pass => None,
                };
                out.push(check(
                    "server.disk",
                    &[38],
                    "server",
                    disk_verdict(used),
                    detail,
                    fix,
                ));
            }
        }
        StoreUrl::Postgres(_) => {
            out.push(pass(
                "server.durability",
                &[90],
                "server",
                "PostgreSQL: every acknowledged write is committed (keep synchronous_commit = on)",
            ));
            out.push(pass(
                "server.high_availability",
                &[91],
                "server",
                "nodes share one PostgreSQL database: any node serves when another dies",
            ));
        }
    }
    out.push(either(
        c.log_format == LogFormat::Json,
        "server.log_format",
        &[99],
        "server",
        "log_format = json: one object per line for the log shipper".into(),
        Verdict::Warn,
        "log_format = text: lines for people, which a log aggregator cannot parse".into(),
        "set log_format = \"json\" (--log-format json)",
    ));
}

/// The verdict on a filesystem `used_percent` full: fail from 90 % (the `disk_full` alert's default),
/// warn from 80 %.
pub fn disk_verdict(used_percent: f64) -> Verdict {
    if used_percent >= 90.0 {
        Verdict::Fail
    } else if used_percent >= 80.0 {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

fn alerts(configured: &[AlertConfig], out: &mut Vec<AuditCheck>) {
    let rows = |k: RuleKind| -> &'static [u32] {
        match k {
            RuleKind::QueueDepth | RuleKind::OldestWaiting => &[39],
            RuleKind::Stalled => &[40],
            RuleKind::FailureRate => &[41],
            RuleKind::NoWorkers => &[42],
            RuleKind::DeadLetters => &[43],
            RuleKind::DiskFull | RuleKind::StoreGrowth => &[38],
        }
    };
    for kind in RuleKind::ALL {
        // Off for every queue (or for the server): the rule tells nobody. The last `*` entry decides.
        let everywhere = configured
            .iter()
            .rfind(|c| c.rule == kind && c.queue == SERVER)
            .is_none_or(|c| c.enabled);
        let off_for: Vec<&str> = configured
            .iter()
            .filter(|c| c.rule == kind && !c.enabled && c.queue != "*")
            .map(|c| c.queue.as_str())
            .collect();
        let subject = format!("alert {}", kind.as_str());
        out.push(if !everywhere {
            check("alert.enabled", rows(kind), subject, Verdict::Warn, "turned off for every queue", Some("remove `enabled = false` from its [[alerts]] entry for \"*\", or alert on it in Prometheus (deploy/prometheus/alerts.yml)"))
        } else if !off_for.is_empty() {
            check("alert.enabled", rows(kind), subject, Verdict::Warn, format!("turned off for {}", off_for.join(", ")), Some("make sure another alert covers those queues"))
        } else {
            pass("alert.enabled", rows(kind), subject, "on for every queue")
        });
    }
}

fn queue(d: &Deployment<'_>, q: &QueueInfo, stats: Option<&QueueStats>, out: &mut Vec<AuditCheck>) {
    let c = &q.config;
    let p = &c.policy;
    let subject = format!("queue {}", q.name);
    let s = subject.as_str();
    let put = format!("PUT /v1/queues/{}/config", q.name);
    out.push(either(
        c.max_attempts >= 2,
        "queue.attempts",
        &[1, 2],
        s,
        format!("{} attempts with backoff", c.max_attempts),
        Verdict::Warn,
        "1 attempt: a passing network error kills the job".into(),
        &format!("set max_attempts to 3 or more ({put})"),
    ));
    out.push(either(
        c.retention.max_count.is_some() || c.retention.max_age_ms.is_some(),
        "queue.retention",
        &[4],
        s,
        "finished jobs are pruned by count or age".into(),
        Verdict::Warn,
        "retention keeps every finished job: the store grows without end".into(),
        &format!("set retention.max_count or retention.max_age_ms ({put})"),
    ));
    out.push(either(
        p.require_unique_key,
        "queue.unique_key",
        &[7, 61, 77],
        s,
        "policy.require_unique_key: every job has a deterministic id".into(),
        Verdict::Warn,
        "jobs may come without a unique_key: a producer's retry enqueues the work twice".into(),
        &format!("set \"policy\": {{\"require_unique_key\": true}} ({put})"),
    ));
    if p.require_unique_key {
        // A key held only while its job runs lets a late repeat (a producer's retry after a
        // timeout) run the work again once the first completed.
        let window = c.unique_hold_ms();
        out.push(either(
            window != Some(0),
            "queue.unique_window",
            &[7, 15],
            s,
            match window {
                Some(ms) => format!("a completed job holds its unique key for {ms} ms"),
                None => "a completed job holds its unique key for ever".into(),
            },
            Verdict::Warn,
            "unique_window_ms = 0: a repeat after the job completed runs the work again".into(),
            &format!("set unique_window_ms to \"retention\" or a duration ({put})"),
        ));
    }
    let payload = p.max_payload_bytes.unwrap_or(d.config.max_payload_bytes);
    out.push(either(
        payload <= REASONABLE_PAYLOAD_BYTES,
        "queue.payload_limit",
        &[10],
        s,
        format!("payloads are at most {payload} bytes"),
        Verdict::Warn,
        format!("payloads may be {payload} bytes, over the checklist's 100 KB"),
        &format!("set \"policy\": {{\"max_payload_bytes\": 102400}} ({put})"),
    ));
    out.push(either(
        c.routes_dead_letters(),
        "queue.dead_letter_route",
        &[21, 78],
        s,
        "a webhook is told of every dead job".into(),
        Verdict::Warn,
        "nobody is told when a job dies (only the dead_letters alert and the dashboard show it)".into(),
        &format!("PUT /v1/queues/{}/webhooks/{{name}} with \"events\": [\"dead\"], and set policy.require_dead_letter_route", q.name),
    ));
    out.push(match c.max_waiting {
        Some(n) => pass(
            "queue.max_waiting",
            &[89],
            s,
            format!("at most {n} jobs wait; beyond, enqueues get 429"),
        ),
        None => check(
            "queue.max_waiting",
            &[89],
            s,
            Verdict::Warn,
            "no bound: a stalled consumer lets the backlog grow until the disk is full",
            Some(&format!("set max_waiting ({put})")),
        ),
    });
    out.push(either(
        (1..=3).contains(&c.max_stalled),
        "queue.max_stalled",
        &[19],
        s,
        format!(
            "a job dies after {} stall(s) more than allowed",
            c.max_stalled
        ),
        Verdict::Warn,
        format!("max_stalled = {}: the checklist asks 1 to 3", c.max_stalled),
        &format!("set max_stalled between 1 and 3 ({put})"),
    ));
    let Some(st) = stats else { return };
    out.push(either(
        st.dead == 0,
        "queue.dead_letters",
        &[36, 43],
        s,
        "no dead letters".into(),
        Verdict::Warn,
        format!("{} dead letters wait for someone", st.dead),
        &format!(
            "inspect GET /v1/queues/{}/dead/groups, fix the cause, then replay or purge",
            q.name
        ),
    ));
    let seen = d.workers.iter().any(|w| w.queues.contains(&q.name));
    if st.waiting > 0 && !st.paused {
        out.push(either(
            seen,
            "queue.workers",
            &[37, 42],
            s,
            "a worker fetched from it in the last minute".into(),
            Verdict::Warn,
            format!(
                "{} jobs wait and no worker fetched from it on this node in the last minute",
                st.waiting
            ),
            "start workers for it (or look at the other nodes: workers are seen per node)",
        ));
    }
}

fn worker(w: &SeenWorker, out: &mut Vec<AuditCheck>) {
    let subject = format!("worker {}", w.id);
    let Some(r) = &w.report else {
        out.push(check(
            "worker.report",
            &[16, 22],
            subject,
            Verdict::Warn,
            "it said nothing of itself: its concurrency and shutdown are unknown",
            Some("use an Errand SDK, or send `report` with its fetches"),
        ));
        return;
    };
    let who = format!("{} {}", r.sdk, r.version);
    out.push(either(
        r.concurrency > 1,
        "worker.concurrency",
        &[16],
        &subject,
        format!("{who} runs {} jobs at once", r.concurrency),
        Verdict::Warn,
        format!("{who} runs one job at a time: I/O-bound jobs queue behind each other"),
        "raise its concurrency (Rust WorkerBuilder::concurrency, TypeScript `concurrency`)",
    ));
    out.push(either(
        r.drains_on_sigterm,
        "worker.shutdown",
        &[22, 100],
        &subject,
        format!("{who} drains on SIGTERM: running jobs finish, unstarted ones go back"),
        Verdict::Fail,
        format!("{who} does not drain on SIGTERM: a deploy kills its running jobs mid-way"),
        "run it with Worker::run (Rust; or say run_until_ends_on_sigterm) or handleSignals: true (TypeScript)",
    ));
}
