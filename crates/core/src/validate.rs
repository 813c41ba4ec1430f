//! Validation at the edge of the engine: every rule of [`crate::limits`], each violation an
//! [`Error::Invalid`] that names the field. Nothing here writes anything.

use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::limits::{Limits, MAX_PRIORITY, MIN_PRIORITY};
use crate::model::{Backoff, QueueConfig, QueuePolicy, UniqueWindow, Webhook};

/// A queue name: 1 to `max` characters of `A-Z a-z 0-9 _ - . :`.
pub fn queue_name(field: &str, s: &str, limits: &Limits) -> Result<()> {
    name(field, s, limits.max_queue_name, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
    })?;
    // `.` and `..` are path segments no URL can carry: such a queue could be written but never reached.
    if s.bytes().all(|b| b == b'.') {
        return Err(Error::invalid(field, "must not consist of dots only"));
    }
    Ok(())
}

/// A job kind: 1 to `max` characters of `A-Z a-z 0-9 _ - . : /`.
pub fn kind(field: &str, s: &str, limits: &Limits) -> Result<()> {
    name(field, s, limits.max_kind, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')
    })
}

/// A worker id: 1 to `max` printable characters.
pub fn worker_id(field: &str, s: &str, limits: &Limits) -> Result<()> {
    key(field, s, limits.max_worker_id)
}

fn name(field: &str, s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(Error::invalid(
            field,
            format!("contains {c:?}; allowed are letters, digits and _ - . : (and / in kinds)"),
        ));
    }
    Ok(())
}

/// A free-form key (unique, group, idempotency): 1 to `max` bytes, no control characters.
pub fn key(field: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A priority within [`MIN_PRIORITY`]..=[`MAX_PRIORITY`].
pub fn priority(field: &str, p: i32) -> Result<()> {
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&p) {
        return Err(Error::invalid(
            field,
            format!("must be between {MIN_PRIORITY} and {MAX_PRIORITY} (lower runs first)"),
        ));
    }
    Ok(())
}

/// How deeply `v` nests (a scalar is 0).
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A JSON document of at most `max` bytes and `limits.max_json_depth` levels, serialized once here and
/// kept as text from then on. The depth bound keeps every later parser (ours, SQLite's, a client's)
/// well inside its own limits.
pub fn json(
    field: &str,
    v: &serde_json::Value,
    max: usize,
    limits: &Limits,
) -> Result<Box<RawValue>> {
    if depth(v) > limits.max_json_depth {
        return Err(Error::invalid(
            field,
            format!("nests deeper than {} levels", limits.max_json_depth),
        ));
    }
    let raw = serde_json::value::to_raw_value(v)
        .map_err(|e| Error::invalid(field, format!("is not serializable JSON: {e}")))?;
    if raw.get().len() > max {
        return Err(Error::too_large(
            field,
            format!("is {} bytes; at most {max} are allowed", raw.get().len()),
        ));
    }
    Ok(raw)
}

pub(crate) fn range_u64(field: &str, v: u64, min: u64, max: u64) -> Result<()> {
    if v < min || v > max {
        return Err(Error::invalid(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// A backoff policy within the limits.
pub fn backoff(field: &str, b: &Backoff, limits: &Limits) -> Result<()> {
    range_u64(
        &format!("{field}.delay_ms"),
        b.delay_ms,
        0,
        limits.max_backoff_ms,
    )?;
    if !(0.0..=1.0).contains(&b.jitter) {
        return Err(Error::invalid(
            format!("{field}.jitter"),
            "must be between 0 and 1",
        ));
    }
    if let Some(m) = b.max_ms {
        range_u64(&format!("{field}.max_ms"), m, 0, limits.max_backoff_ms)?;
    }
    Ok(())
}

/// Timeout and heartbeat interval together: the heartbeat must fit within the timeout.
pub fn timing(
    field_prefix: &str,
    timeout_ms: u64,
    heartbeat_ms: Option<u64>,
    limits: &Limits,
) -> Result<()> {
    range_u64(
        &format!("{field_prefix}timeout_ms"),
        timeout_ms,
        limits.min_timeout_ms,
        limits.max_timeout_ms,
    )?;
    if let Some(hb) = heartbeat_ms {
        range_u64(
            &format!("{field_prefix}heartbeat_ms"),
            hb,
            limits.min_heartbeat_ms,
            timeout_ms,
        )?;
    }
    Ok(())
}

/// The largest concurrency limit, rate-limit count or burst a queue may set.
pub const MAX_FLOW_LIMIT: u32 = 1_000_000;
/// The longest rate-limit period: a day.
pub const MAX_RATE_PERIOD_MS: u64 = 86_400_000;

/// A whole queue configuration.
pub fn queue_config(c: &QueueConfig, limits: &Limits) -> Result<()> {
    priority("priority", c.priority)?;
    range_u64(
        "max_attempts",
        c.max_attempts.into(),
        1,
        limits.max_attempts.into(),
    )?;
    backoff("backoff", &c.backoff, limits)?;
    timing("", c.timeout_ms, c.heartbeat_ms, limits)?;
    range_u64(
        "max_stalled",
        c.max_stalled.into(),
        0,
        limits.max_stalled.into(),
    )?;
    if let UniqueWindow::Ms(ms) = c.unique_window {
        range_u64("unique_window_ms", ms, 0, limits.max_delay_ms)?;
    }
    for (field, n) in [
        ("concurrency", c.concurrency),
        ("group_concurrency", c.group_concurrency),
        ("key_concurrency", Some(c.key_concurrency)),
    ] {
        if let Some(n) = n {
            range_u64(field, n.into(), 1, MAX_FLOW_LIMIT.into())?;
        }
    }
    for (field, r) in [
        ("rate_limit", &c.rate_limit),
        ("group_rate_limit", &c.group_rate_limit),
    ] {
        if let Some(r) = r {
            range_u64(
                &format!("{field}.limit"),
                r.limit.into(),
                1,
                MAX_FLOW_LIMIT.into(),
            )?;
            range_u64(
                &format!("{field}.period_ms"),
                r.period_ms,
                1,
                MAX_RATE_PERIOD_MS,
            )?;
            if let Some(b) = r.burst {
                range_u64(
                    &format!("{field}.burst"),
                    b.into(),
                    1,
                    MAX_FLOW_LIMIT.into(),
                )?;
            }
        }
    }
    if let Some(n) = c.retention.max_count {
        range_u64("retention.max_count", n, 0, u64::MAX >> 1)?;
    }
    if let Some(a) = c.retention.max_age_ms {
        range_u64("retention.max_age_ms", a, 0, u64::MAX >> 2)?;
    }
    if let Some(n) = c.max_waiting {
        range_u64("max_waiting", n, 1, MAX_WAITING_LIMIT)?;
    }
    queue_policy(c, limits)
}

/// The largest `max_waiting` a queue may set.
pub const MAX_WAITING_LIMIT: u64 = 1_000_000_000;

/// A queue's policy: its bounds within the server's limits, and the queue's own defaults within its
/// bounds (a default the policy refuses would refuse every job that relies on it).
fn queue_policy(c: &QueueConfig, limits: &Limits) -> Result<()> {
    let p = &c.policy;
    if let Some(b) = p.max_payload_bytes {
        range_u64(
            "policy.max_payload_bytes",
            b as u64,
            2,
            limits.max_payload_bytes as u64,
        )?;
    }
    for (field, t) in [
        ("policy.min_timeout_ms", p.min_timeout_ms),
        ("policy.max_timeout_ms", p.max_timeout_ms),
    ] {
        if let Some(t) = t {
            range_u64(field, t, limits.min_timeout_ms, limits.max_timeout_ms)?;
        }
    }
    if let (Some(lo), Some(hi)) = (p.min_timeout_ms, p.max_timeout_ms)
        && lo > hi
    {
        return Err(Error::invalid(
            "policy.min_timeout_ms",
            format!("must be at most policy.max_timeout_ms ({hi})"),
        ));
    }
    if let Some(n) = p.min_attempts {
        range_u64(
            "policy.min_attempts",
            n.into(),
            1,
            limits.max_attempts.into(),
        )?;
    }
    policy_timeout(p, "timeout_ms", c.timeout_ms, "the queue's default")?;
    policy_attempts(p, "max_attempts", c.max_attempts, "the queue's default")
}

/// A job as resolved against its queue's policy (`QueuePolicy`'s rules); errors name the job's field
/// and the policy.
pub fn job_policy(
    c: &QueueConfig,
    payload_bytes: usize,
    has_unique_key: bool,
    timeout_ms: u64,
    max_attempts: u32,
) -> Result<()> {
    let p = &c.policy;
    if p.require_unique_key && !has_unique_key {
        return Err(Error::invalid(
            "unique_key",
            "the queue's policy require_unique_key: every job needs a unique_key (a deterministic \
             id, so that a repeated enqueue finds the first job)",
        ));
    }
    if let Some(max) = p.max_payload_bytes
        && payload_bytes > max
    {
        return Err(Error::invalid(
            "payload",
            format!(
                "the queue's policy max_payload_bytes: {payload_bytes} bytes of JSON, at most \
                 {max} allowed (store large data elsewhere and pass its reference)"
            ),
        ));
    }
    policy_timeout(p, "timeout_ms", timeout_ms, "the job's")?;
    policy_attempts(p, "max_attempts", max_attempts, "the job's")?;
    if p.require_dead_letter_route && !c.routes_dead_letters() {
        return Err(Error::invalid(
            "queue",
            "the queue's policy require_dead_letter_route: no webhook of the queue has the dead \
             event, so nobody would hear of a dead job; add one before enqueuing",
        ));
    }
    Ok(())
}

fn policy_timeout(p: &QueuePolicy, field: &str, timeout_ms: u64, whose: &str) -> Result<()> {
    let below = p.min_timeout_ms.filter(|&lo| timeout_ms < lo);
    let above = p.max_timeout_ms.filter(|&hi| timeout_ms > hi);
    if let Some(bound) = below.or(above) {
        let (name, rule) = if below.is_some() {
            ("min_timeout_ms", "at least")
        } else {
            ("max_timeout_ms", "at most")
        };
        return Err(Error::invalid(
            field,
            format!(
                "the queue's policy {name}: {whose} timeout is {timeout_ms} ms, it must be {rule} \
                 {bound} ms"
            ),
        ));
    }
    Ok(())
}

fn policy_attempts(p: &QueuePolicy, field: &str, max_attempts: u32, whose: &str) -> Result<()> {
    match p.min_attempts {
        Some(min) if max_attempts < min => Err(Error::invalid(
            field,
            format!(
                "the queue's policy min_attempts: {whose} max_attempts is {max_attempts}, it must be \
                 at least {min}"
            ),
        )),
        _ => Ok(()),
    }
}

/// A webhook definition.
pub fn webhook(h: &Webhook) -> Result<()> {
    let scheme_ok = h.url.starts_with("https://") || h.url.starts_with("http://");
    if !scheme_ok
        || h.url.len() > 2_048
        || h.url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            "url",
            "must be an http:// or https:// URL of at most 2,048 characters, without spaces",
        ));
    }
    if !(16..=512).contains(&h.secret.len()) {
        return Err(Error::invalid("secret", "must be 16 to 512 bytes"));
    }
    if h.events.is_empty() {
        return Err(Error::invalid(
            "events",
            "name at least one of completed, dead, cancelled, alert",
        ));
    }
    for (i, e) in h.events.iter().enumerate() {
        if !matches!(e.as_str(), "completed" | "dead" | "cancelled" | "alert") {
            return Err(Error::invalid(
                format!("events[{i}]"),
                "must be completed, dead, cancelled or alert",
            ));
        }
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
    s
}

/// The lease a claim or heartbeat grants: never shorter than the job may run without a heartbeat (the
/// whole timeout when it promises none, otherwise two heartbeat intervals), plus a grace period. No
/// setting can make it shorter, so "lock TTL shorter than the job's run time" cannot be configured.
pub fn lease_ms(timeout_ms: u64, heartbeat_ms: Option<u64>) -> u64 {
    let without_heartbeat = match heartbeat_ms {
        Some(hb) => hb.saturating_mul(2).min(timeout_ms),
        None => timeout_ms,
    };
    without_heartbeat.saturating_add(crate::limits::LEASE_GRACE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet_and_name_the_field() {
        let l = Limits::default();
        assert!(queue_name("queue", "payments.v2:eu-1_x", &l).is_ok());
        let err = queue_name("queue", "has space", &l).unwrap_err();
        assert!(matches!(err, Error::Invalid { ref field, .. } if field == "queue"));
        assert!(queue_name("queue", "", &l).is_err());
        assert!(queue_name("queue", "..", &l).is_err() && queue_name("queue", ".", &l).is_err());
        assert!(queue_name("queue", ".hidden", &l).is_ok());
        assert!(queue_name("queue", &"q".repeat(65), &l).is_err());
        assert!(kind("kind", "email/send", &l).is_ok());
        assert!(queue_name("queue", "email/send", &l).is_err());
    }

    #[test]
    fn lease_covers_the_time_a_job_may_run_without_a_heartbeat() {
        assert_eq!(lease_ms(60_000, None), 60_000 + 5_000);
        assert_eq!(lease_ms(60_000, Some(10_000)), 20_000 + 5_000);
        // A heartbeat interval near the timeout cannot stretch the lease past the timeout.
        assert_eq!(lease_ms(60_000, Some(50_000)), 60_000 + 5_000);
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        let s = "é".repeat(10);
        let t = truncate(s, 8);
        assert!(t.len() <= 8 && t.ends_with("..."));
        assert_eq!(truncate("short".into(), 8), "short");
    }
}
