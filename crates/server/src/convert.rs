//! Between the engine's types and the wire's. The protocol mirrors the model so that clients need not
//! compile the engine; this is the one place that knows both.

use errand_core as core;
use errand_protocol as wire;

pub fn state(s: core::JobState) -> wire::JobState {
    match s {
        core::JobState::Waiting => wire::JobState::Waiting,
        core::JobState::Delayed => wire::JobState::Delayed,
        core::JobState::Active => wire::JobState::Active,
        core::JobState::WaitingChildren => wire::JobState::WaitingChildren,
        core::JobState::Completed => wire::JobState::Completed,
        core::JobState::Cancelled => wire::JobState::Cancelled,
        core::JobState::Dead => wire::JobState::Dead,
    }
}

pub fn backoff(b: &core::Backoff) -> wire::Backoff {
    wire::Backoff {
        kind: match b.kind {
            core::BackoffKind::Fixed => wire::BackoffKind::Fixed,
            core::BackoffKind::Exponential => wire::BackoffKind::Exponential,
        },
        delay_ms: b.delay_ms,
        jitter: b.jitter,
        max_ms: b.max_ms.map(wire::Whole),
    }
}

pub fn backoff_from_wire(b: wire::Backoff) -> core::Backoff {
    core::Backoff {
        kind: match b.kind {
            wire::BackoffKind::Fixed => core::BackoffKind::Fixed,
            wire::BackoffKind::Exponential => core::BackoffKind::Exponential,
        },
        delay_ms: b.delay_ms,
        jitter: b.jitter,
        max_ms: b.max_ms.map(wire::Whole::get),
    }
}

fn error_kind(k: core::ErrorKind) -> &'static str {
    match k {
        core::ErrorKind::Error => "error",
        core::ErrorKind::NonRetryable => "non_retryable",
        core::ErrorKind::Timeout => "timeout",
        core::ErrorKind::Stalled => "stalled",
    }
}

/// A job as operators see it: everything but the lease token.
pub fn event_view(cursor: String, e: core::Event) -> wire::EventView {
    wire::EventView {
        cursor,
        job_id: e.job_id.to_string(),
        queue: e.queue,
        kind: e.kind,
        from: e.from.map(state),
        to: state(e.to),
        at: e.at,
        attempt: e.attempt,
        failure: e.failure.map(|k| error_kind(k).to_string()),
    }
}

pub fn job_view(j: core::Job) -> wire::JobView {
    wire::JobView {
        id: j.id.to_string(),
        queue: j.queue,
        kind: j.kind,
        payload: j.payload,
        state: state(j.state),
        priority: j.priority,
        run_at: j.run_at,
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        backoff: backoff(&j.backoff),
        timeout_ms: j.timeout_ms,
        heartbeat_ms: j.heartbeat_ms,
        lease_ms: j.lease_ms,
        max_stalled: j.max_stalled,
        stalls: j.stalls,
        unique_key: j.unique_key,
        group_key: j.group_key,
        concurrency_key: j.concurrency_key,
        parent_id: j.parent_id.map(|p| p.to_string()),
        pending_children: j.pending_children,
        idempotency_key: j.idempotency_key,
        progress: j.progress,
        result: j.result,
        errors: j
            .errors
            .into_iter()
            .map(|e| wire::AttemptError {
                attempt: e.attempt,
                kind: error_kind(e.kind).to_string(),
                message: e.message,
                at: e.at,
                stack: e.stack,
            })
            .collect(),
        dead_reason: j.dead_reason.map(|r| r.as_str().to_string()),
        cancel_requested: j.cancel_requested,
        lease: j.lease.map(|l| wire::LeaseView {
            worker_id: l.worker_id,
            expires_at: l.expires_at,
            deadline_at: l.deadline_at,
        }),
        created_at: j.created_at,
        started_at: j.started_at,
        finished_at: j.finished_at,
        expires_at: j.expires_at,
    }
}

/// A claimed job as its worker gets it, with the lease token. `None` for a job without a lease (never
/// returned by a claim).
pub fn fetched(j: core::Job) -> Option<wire::FetchedJob> {
    let lease = j.lease?;
    Some(wire::FetchedJob {
        id: j.id.to_string(),
        queue: j.queue,
        kind: j.kind,
        payload: j.payload,
        attempt: j.attempts,
        max_attempts: j.max_attempts,
        lease_token: lease.token,
        lease_expires_at: lease.expires_at,
        deadline_at: lease.deadline_at,
        timeout_ms: j.timeout_ms,
        heartbeat_ms: j.heartbeat_ms,
        idempotency_key: j.idempotency_key,
        priority: j.priority,
        group_key: j.group_key,
        concurrency_key: j.concurrency_key,
        progress: j.progress,
        created_at: j.created_at,
    })
}

pub fn new_job(queue: &str, j: wire::EnqueueJob) -> core::NewJob {
    core::NewJob {
        queue: queue.to_string(),
        kind: j.kind,
        payload: j.payload,
        options: core::JobOptions {
            priority: j.priority.map(wire::Whole::get),
            delay_ms: j.delay_ms.map(wire::Whole::get),
            run_at: j.run_at.map(wire::Whole::get),
            max_attempts: j.max_attempts.map(wire::Whole::get),
            backoff: j.backoff.map(backoff_from_wire),
            timeout_ms: j.timeout_ms.map(wire::Whole::get),
            heartbeat_ms: j.heartbeat_ms.map(wire::Whole::get),
            max_stalled: j.max_stalled.map(wire::Whole::get),
            unique_key: j.unique_key,
            dedup: match j.dedup.unwrap_or_default() {
                wire::Dedup::Reject => core::Dedup::Reject,
                wire::Dedup::Replace => core::Dedup::Replace,
            },
            expire_after_ms: j.expire_after_ms.map(wire::Whole::get),
            group_key: j.group_key,
            concurrency_key: j.concurrency_key,
            idempotency_key: j.idempotency_key,
            parent_on_dead: match j.parent_on_dead.unwrap_or_default() {
                wire::ParentOnDead::Fail => core::ParentOnDead::Fail,
                wire::ParentOnDead::Release => core::ParentOnDead::Release,
            },
        },
    }
}

pub fn enqueued(e: core::Enqueued) -> wire::Enqueued {
    wire::Enqueued {
        id: e.id.to_string(),
        state: state(e.state),
        created: e.created,
        replaced: e.replaced,
    }
}

pub fn ack(o: core::AckOutcome) -> wire::AckResponse {
    wire::AckResponse {
        state: state(o.state),
        run_at: o.run_at,
        duplicate: o.duplicate,
    }
}

/// A queue's configuration with every field filled in.
pub fn queue_config(c: &core::QueueConfig) -> wire::QueueConfig {
    wire::QueueConfig {
        priority: Some(wire::Whole(c.priority)),
        max_attempts: Some(wire::Whole(c.max_attempts)),
        backoff: Some(backoff(&c.backoff)),
        timeout_ms: Some(wire::Whole(c.timeout_ms)),
        heartbeat_ms: c.heartbeat_ms.map(wire::Whole),
        max_stalled: Some(wire::Whole(c.max_stalled)),
        unique_window_ms: Some(match c.unique_window {
            core::UniqueWindow::Retention => wire::UniqueWindow::Retention,
            core::UniqueWindow::Ms(ms) => wire::UniqueWindow::Ms(ms),
            core::UniqueWindow::Forever => wire::UniqueWindow::Forever,
        }),
        retention: Some(wire::Retention {
            max_count: c.retention.max_count.map(wire::Whole),
            max_age_ms: c.retention.max_age_ms.map(wire::Whole),
        }),
        concurrency: c.concurrency.map(wire::Whole),
        group_concurrency: c.group_concurrency.map(wire::Whole),
        key_concurrency: Some(wire::Whole(c.key_concurrency)),
        rate_limit: c.rate_limit.map(rate_limit),
        group_rate_limit: c.group_rate_limit.map(rate_limit),
        max_waiting: c.max_waiting.map(wire::Whole),
        policy: Some(queue_policy(&c.policy)),
    }
}

fn queue_policy(p: &core::QueuePolicy) -> wire::QueuePolicy {
    wire::QueuePolicy {
        require_unique_key: p.require_unique_key,
        max_payload_bytes: p.max_payload_bytes.map(|b| wire::Whole(b as u64)),
        min_timeout_ms: p.min_timeout_ms.map(wire::Whole),
        max_timeout_ms: p.max_timeout_ms.map(wire::Whole),
        min_attempts: p.min_attempts.map(wire::Whole),
        require_dead_letter_route: p.require_dead_letter_route,
    }
}

fn queue_policy_from_wire(p: wire::QueuePolicy) -> core::QueuePolicy {
    core::QueuePolicy {
        require_unique_key: p.require_unique_key,
        // Past usize (only on a 32-bit host) is past every limit: the engine's check refuses it.
        max_payload_bytes: p
            .max_payload_bytes
            .map(|b| usize::try_from(b.get()).unwrap_or(usize::MAX)),
        min_timeout_ms: p.min_timeout_ms.map(wire::Whole::get),
        max_timeout_ms: p.max_timeout_ms.map(wire::Whole::get),
        min_attempts: p.min_attempts.map(wire::Whole::get),
        require_dead_letter_route: p.require_dead_letter_route,
    }
}

/// A `PUT` configuration: every field left out takes its default.
pub fn queue_config_from_wire(c: wire::QueueConfig) -> core::QueueConfig {
    let d = core::QueueConfig::default();
    core::QueueConfig {
        priority: c.priority.map_or(d.priority, wire::Whole::get),
        max_attempts: c.max_attempts.map_or(d.max_attempts, wire::Whole::get),
        backoff: c.backoff.map(backoff_from_wire).unwrap_or(d.backoff),
        timeout_ms: c.timeout_ms.map_or(d.timeout_ms, wire::Whole::get),
        heartbeat_ms: c.heartbeat_ms.map(wire::Whole::get),
        max_stalled: c.max_stalled.map_or(d.max_stalled, wire::Whole::get),
        unique_window: match c.unique_window_ms {
            None | Some(wire::UniqueWindow::Retention) => d.unique_window,
            Some(wire::UniqueWindow::Ms(ms)) => core::UniqueWindow::Ms(ms),
            Some(wire::UniqueWindow::Forever) => core::UniqueWindow::Forever,
        },
        retention: c
            .retention
            .map(|r| core::Retention {
                max_count: r.max_count.map(wire::Whole::get),
                max_age_ms: r.max_age_ms.map(wire::Whole::get),
            })
            .unwrap_or(d.retention),
        concurrency: c.concurrency.map(wire::Whole::get),
        group_concurrency: c.group_concurrency.map(wire::Whole::get),
        key_concurrency: c
            .key_concurrency
            .map_or(d.key_concurrency, wire::Whole::get),
        rate_limit: c.rate_limit.map(rate_limit_from_wire),
        group_rate_limit: c.group_rate_limit.map(rate_limit_from_wire),
        // Kept by the engine: webhooks have routes of their own.
        webhooks: Default::default(),
        max_waiting: c.max_waiting.map(wire::Whole::get),
        policy: c.policy.map(queue_policy_from_wire).unwrap_or_default(),
        // Kept by the engine too: silences have routes of their own.
        silences: Default::default(),
    }
}

fn rate_limit(r: core::admission::RateLimit) -> wire::RateLimit {
    wire::RateLimit {
        limit: r.limit,
        period_ms: r.period_ms,
        burst: r.burst.map(wire::Whole),
    }
}

fn rate_limit_from_wire(r: wire::RateLimit) -> core::admission::RateLimit {
    core::admission::RateLimit {
        limit: r.limit,
        period_ms: r.period_ms,
        burst: r.burst.map(wire::Whole::get),
    }
}

pub fn queue_view(s: core::QueueStats) -> wire::QueueView {
    wire::QueueView {
        name: s.queue,
        paused: s.paused,
        counts: wire::QueueCounts {
            waiting: s.waiting,
            delayed: s.delayed,
            active: s.active,
            completed: s.completed,
            cancelled: s.cancelled,
            dead: s.dead,
            waiting_children: s.waiting_children,
        },
        oldest_waiting_age_ms: s.oldest_waiting_age_ms,
    }
}

pub fn schedule_def_from_wire(d: wire::ScheduleDef) -> core::ScheduleDef {
    core::ScheduleDef {
        cron: d.cron,
        timezone: d.timezone,
        queue: d.queue,
        kind: d.kind,
        payload: d.payload,
        missed: match d.missed {
            wire::Missed::Skip => core::Missed::Skip,
            wire::Missed::CatchUpOne => core::Missed::CatchUpOne,
        },
        priority: d.priority.map(wire::Whole::get),
        max_attempts: d.max_attempts.map(wire::Whole::get),
        backoff: d.backoff.map(backoff_from_wire),
        timeout_ms: d.timeout_ms.map(wire::Whole::get),
        heartbeat_ms: d.heartbeat_ms.map(wire::Whole::get),
        group_key: d.group_key,
    }
}

/// A schedule as the API shows it, with its next `next_runs` ticks.
pub fn schedule_view(s: core::Schedule, next_runs: Vec<i64>) -> wire::ScheduleView {
    let d = s.def;
    wire::ScheduleView {
        name: s.name,
        def: wire::ScheduleDef {
            cron: d.cron,
            timezone: d.timezone,
            queue: d.queue,
            kind: d.kind,
            payload: d.payload,
            missed: match d.missed {
                core::Missed::Skip => wire::Missed::Skip,
                core::Missed::CatchUpOne => wire::Missed::CatchUpOne,
            },
            priority: d.priority.map(wire::Whole),
            max_attempts: d.max_attempts.map(wire::Whole),
            backoff: d.backoff.as_ref().map(backoff),
            timeout_ms: d.timeout_ms.map(wire::Whole),
            heartbeat_ms: d.heartbeat_ms.map(wire::Whole),
            group_key: d.group_key,
        },
        paused: s.paused,
        next_runs,
        last_run_at: s.last_run_at,
        last_job_id: s.last_job_id.map(|id| id.to_string()),
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

/// What a cancel did, as the API names it (also the audit log's `outcome`).
pub fn cancel_outcome(c: core::Cancelled) -> &'static str {
    match c {
        core::Cancelled::Cancelled => "cancelled",
        core::Cancelled::Requested => "requested",
    }
}

/// A job's log lines, oldest first.
pub fn job_logs(lines: Vec<core::LogLine>) -> wire::JobLogs {
    wire::JobLogs {
        logs: lines
            .into_iter()
            .map(|l| wire::LogLineView {
                at: l.at,
                attempt: l.attempt,
                line: l.line,
            })
            .collect(),
    }
}

/// A renewed lease as its worker learns of it.
pub fn heartbeat(r: &core::store::Renewed) -> wire::HeartbeatResponse {
    wire::HeartbeatResponse {
        lease_expires_at: r.lease_expires_at,
        cancel_requested: r.cancel_requested,
    }
}

/// The dead letters of `queue` an operator's filter picks.
pub fn dead_filter(queue: String, f: wire::DeadFilter) -> core::DeadFilter {
    core::DeadFilter {
        queue,
        kind: f.kind,
        error_contains: f.error_contains,
        fingerprint: f.fingerprint,
        limit: f.limit.map(wire::Whole::get),
    }
}

pub fn dead_groups(g: core::engine::DeadGroups) -> wire::DeadGroupList {
    wire::DeadGroupList {
        groups: g
            .groups
            .into_iter()
            .map(|g| wire::DeadGroupView {
                fingerprint: g.fingerprint,
                kind: g.kind,
                error: g.error,
                count: g.count,
                last_failed_at: g.last_failed_at,
                sample_job_id: g.sample_job_id.to_string(),
            })
            .collect(),
        scanned: g.scanned,
        complete: g.complete,
    }
}

pub fn webhook_from_wire(d: wire::WebhookDef) -> core::Webhook {
    core::Webhook {
        url: d.url,
        secret: d.secret,
        events: d.events,
    }
}

/// A webhook as the API shows it: never its secret.
pub fn webhook_view(name: String, h: &core::Webhook) -> wire::WebhookView {
    wire::WebhookView {
        name,
        url: h.url.clone(),
        events: h.events.clone(),
    }
}

/// An alert firing now.
pub fn alert_view(a: core::alerts::Alert) -> wire::AlertView {
    wire::AlertView {
        rule: a.rule.as_str().to_string(),
        queue: a.queue,
        state: "firing".into(),
        value: a.value,
        threshold: a.threshold,
        since: a.since,
        fired_at: a.fired_at,
        silenced_until: None,
    }
}

/// An audit record, its detail parsed back into JSON.
pub fn audit_view(e: core::AuditEntry) -> wire::AuditView {
    wire::AuditView {
        id: e.id,
        at: e.at,
        key: e.key,
        action: e.action,
        target: e.target,
        detail: e.detail.and_then(|d| serde_json::from_str(d.get()).ok()),
    }
}

/// A queue's flow control now.
pub fn flow(f: core::admission::FlowState) -> wire::FlowView {
    let bucket = |b: core::admission::BucketNow| wire::BucketView {
        tokens: b.tokens,
        next_token_at: b.next_token_at,
    };
    wire::FlowView {
        concurrency: f.concurrency,
        active: f.active,
        rate_limit: f.rate_limit.map(rate_limit),
        bucket: f.bucket.map(bucket),
        group_concurrency: f.group_concurrency,
        group_rate_limit: f.group_rate_limit.map(rate_limit),
        groups: f
            .groups
            .into_iter()
            .map(|g| wire::GroupFlowView {
                key: g.key,
                active: g.active,
                bucket: g.bucket.map(bucket),
            })
            .collect(),
    }
}
