//! Observability: Prometheus metrics and the event stream.

use std::sync::Arc;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use errand_protocol::{
    ActivityHistory, AlertList, AlertRuleList, AlertRuleView, AlertView, AuditPage, AuditReport,
    EventsMissed, SilenceList, SilenceRequest, SilenceView, WhoAmI, WorkerList, WorkerView,
};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Authorized, Json, Params, scope};
use crate::routes::answers::{Invalid, JsonBody, Keyed, KeyedAnyScope, Unavailable};

/// The OpenMetrics text format, which Prometheus scrapes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics: this node's job counters, wait and run times, HTTP and store latency; the
/// store's jobs by queue and state, oldest waiting age and dead letters; workers seen. Needs `read`,
/// and a key not limited to queue prefixes.
#[utoipa::path(
    get, path = "/metrics", tag = "observability",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        Keyed, Unavailable
    )
)]
pub async fn metrics(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<Response> {
    caller.require_every_queue()?;
    let stats = s.engine.stats_all().await?;
    let resources = s.resources().await;
    let body = s.metrics.render(&stats, &resources, s.engine.now());
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response())
}

/// Counts and times every request by its route template (never the raw path: ids would make a series
/// per job).
pub async fn track_http(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    // A fixed set: any other method name a client sends would be a new series.
    let method = {
        use axum::http::Method as M;
        match *req.method() {
            M::GET => "GET",
            M::POST => "POST",
            M::PUT => "PUT",
            M::DELETE => "DELETE",
            M::PATCH => "PATCH",
            M::HEAD => "HEAD",
            M::OPTIONS => "OPTIONS",
            _ => "other",
        }
    };
    let resp = next.run(req).await;
    s.metrics
        .http_request(&route, method, resp.status().as_u16(), start.elapsed());
    if let Some(denied) = resp.extensions().get::<crate::auth::Denied>() {
        audit_denial(&s, denied, method, &route, resp.status().as_u16()).await;
    }
    resp
}

/// Counts an auth failure and, within [`crate::auth::DENIAL_AUDIT_RATE`], writes it to the audit log:
/// the key's name if one was recognised, the route template (not the path, which callers choose), the
/// reason, and how many failures were not written since the last record. Never the secret presented.
async fn audit_denial(
    s: &AppState,
    denied: &crate::auth::Denied,
    method: &str,
    route: &str,
    status: u16,
) {
    s.metrics.auth_denied(denied.reason);
    let key = denied.key.as_deref().unwrap_or(NO_KEY);
    let Some(skipped) = s.denial_audit.admit(key, s.engine.now()) else {
        return;
    };
    let detail =
        serde_json::json!({ "status": status, "reason": denied.reason, "skipped": skipped });
    let target = format!("{method} {route}");
    if let Err(e) = s
        .engine
        .audit(key, "auth.denied", &target, Some(&detail))
        .await
    {
        tracing::error!(key, target, "the audit log was not written: {e}");
    }
}

/// The audit log's key for a caller whose key was not recognised: key names are never empty.
pub const NO_KEY: &str = "";

/// Events sent per read of the log; a client far behind catches up in steps of this many.
const EVENT_BATCH: usize = 256;

/// Job state changes as Server-Sent Events (`event: job`, `id:` the cursor, `data:` an `EventView`),
/// from this node's recent history ([`crate::events::EVENT_HISTORY`]) on. Filter by `queue`, `kind`
/// and `job_id`; resume with `after=<cursor>` or the `Last-Event-ID` header. A cursor older than what
/// is kept, or from before a restart, first gets an `event: missed`, then the oldest kept. Without a
/// cursor the stream starts with the next event. Needs `read`; a key limited to queue prefixes sees
/// only their events.
#[utoipa::path(
    get, path = "/v1/events", tag = "observability",
    params(
        ("queue" = Option<String>, Query, description = "only this queue's events"),
        ("kind" = Option<String>, Query, description = "only this kind's events"),
        ("job_id" = Option<errand_protocol::schema::JobId>, Query, description = "only this job's events"),
        ("after" = Option<String>, Query, pattern = r"^[^.]*\.[0-9]{1,19}$", description = "resume after this cursor (an event's `cursor`, `<run>.<number>`)"),
    ),
    responses(
        (status = 200, description = "an SSE stream of `job` events (data: EventView), and `missed` events (data: EventsMissed)", content_type = "text/event-stream", body = errand_protocol::schema::ServerSentEvent),
        Invalid, Keyed
    )
)]
pub async fn events(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    Authorized {
        caller,
        parts: params,
        ..
    }: Authorized<scope::Read, Params>,
) -> ApiResult<Response> {
    use axum::response::sse::{Event as Sse, KeepAlive};

    params.only(&["queue", "kind", "job_id", "after"])?;
    let queue = params.text("queue");
    if let Some(q) = &queue {
        caller.require_queue(q)?;
    }
    let kind = params.text("kind");
    let job_id = params.job_id("job_id")?;
    let log = Arc::clone(&s.events);
    let after = params.text("after").or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    // No cursor: from the next event. Another run's cursor: everything kept (reported as missed).
    let (mut cursor, mut missed) = match after {
        None => (log.latest(), None),
        Some(c) => match log.parse_cursor(&c) {
            Some(crate::events::Cursor::After(seq)) => (seq, None),
            Some(crate::events::Cursor::OtherRun) => (0, Some(0)),
            None => return Err(ApiError::invalid("after", "not an event cursor")),
        },
    };
    let keep = move |e: &errand_core::Event| {
        caller.allows_queue(&e.queue)
            && queue.as_ref().is_none_or(|q| *q == e.queue)
            && kind.as_ref().is_none_or(|k| *k == e.kind)
            && job_id.is_none_or(|id| id == e.job_id)
    };
    let mut wake = log.subscribe();
    let mut shutdown = s.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        loop {
            if let Some(from) = missed.take() {
                let data = EventsMissed {
                    from: log.cursor(from.max(1) - 1),
                };
                let data = serde_json::to_string(&data).unwrap_or_default();
                if tx
                    .send(Sse::default().event("missed").data(data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Marked seen before reading: an event kept after the read wakes the wait below.
            wake.borrow_and_update();
            match log.read(cursor, EVENT_BATCH, &keep) {
                crate::events::Read::Missed { from } => {
                    missed = Some(from);
                    cursor = from - 1;
                }
                crate::events::Read::Events { events, upto } => {
                    let idle = events.is_empty();
                    for (seq, e) in events {
                        let id = log.cursor(seq);
                        let view = convert::event_view(id.clone(), e);
                        let data = serde_json::to_string(&view).unwrap_or_default();
                        let sse = Sse::default().event("job").id(id).data(data);
                        // A slow reader does not hold up a shutdown.
                        tokio::select! {
                            sent = tx.send(sse) => if sent.is_err() { return },
                            _ = shutdown.wait_for(|stop| *stop) => return,
                        }
                    }
                    cursor = upto;
                    if idle {
                        // Also ends when the client goes away, even if no event comes.
                        tokio::select! {
                            changed = wake.changed() => if changed.is_err() { return },
                            _ = tx.closed() => return,
                            _ = shutdown.wait_for(|stop| *stop) => return,
                        }
                    }
                }
            }
        }
    });
    Ok(axum::response::sse::Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A stream fed by a task: `body` sends items through the channel it is given; the stream ends when
/// the task returns or the client goes away (the send fails, and the task returns).
fn async_stream<T, F, Fut>(
    body: F,
) -> impl futures_util::Stream<Item = Result<T, std::convert::Infallible>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(tx));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (Ok(item), rx))
    })
}

/// The key this request was made with: its name, scopes and queue prefixes (the dashboard's login).
#[utoipa::path(
    get, path = "/v1/whoami", tag = "observability",
    responses((status = 200, body = WhoAmI), KeyedAnyScope)
)]
pub async fn whoami(caller: Caller) -> axum::Json<WhoAmI> {
    let (name, scopes, queues) = match &caller {
        Caller::Open => (caller.name().to_string(), Scope::ALL.to_vec(), Vec::new()),
        Caller::Key(k) => (k.name.clone(), k.scopes.clone(), k.queue_prefixes.clone()),
    };
    axum::Json(WhoAmI {
        name,
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        queues,
    })
}

/// Workers that fetched or heartbeat on this node in the last minute, with their queues. Needs `read`.
#[utoipa::path(
    get, path = "/v1/workers", tag = "observability",
    responses((status = 200, body = WorkerList), Keyed)
)]
pub async fn workers(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<axum::Json<WorkerList>> {
    let mut by_worker: std::collections::BTreeMap<String, WorkerView> = Default::default();
    let reports = s.metrics.worker_reports(s.engine.now());
    for (queue, seen) in s.metrics.workers(s.engine.now()) {
        if !caller.allows_queue(&queue) {
            continue;
        }
        for (id, at) in seen {
            let w = by_worker.entry(id.clone()).or_insert_with(|| WorkerView {
                report: reports.get(&id).cloned(),
                id,
                queues: Vec::new(),
                last_seen_at: at,
            });
            w.queues.push(queue.clone());
            w.last_seen_at = w.last_seen_at.max(at);
        }
    }
    Ok(axum::Json(WorkerList {
        workers: by_worker.into_values().collect(),
    }))
}

/// What this node saw happen to jobs over the last five minutes, every queue together, in 5-second
/// buckets (enqueued, completed, failed; run and wait times): the dashboard's charts start from it
/// instead of from nothing. Needs `read`, and a key not limited to queue prefixes (like `/metrics`).
#[utoipa::path(
    get, path = "/v1/activity", tag = "observability",
    responses((status = 200, body = ActivityHistory), Keyed)
)]
pub async fn activity(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<axum::Json<ActivityHistory>> {
    caller.require_every_queue()?;
    Ok(axum::Json(s.activity.history(s.engine.now())))
}

/// The built-in alerts firing now, as this node evaluates them. Needs `read`; a key limited to queue
/// prefixes sees only their alerts.
#[utoipa::path(
    get, path = "/v1/alerts", tag = "observability",
    responses((status = 200, body = AlertList), Keyed)
)]
pub async fn alerts(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<axum::Json<AlertList>> {
    let silences = crate::alerting::Silences(s.engine.alert_silences().await?);
    let now = s.engine.now();
    let alerts = s
        .alerts
        .firing()
        .into_iter()
        .filter(|a| caller.allows_queue(&a.queue))
        .map(|a| {
            let until = silences.until(a.rule, &a.queue).filter(|t| *t > now);
            AlertView {
                silenced_until: until,
                ..convert::alert_view(a)
            }
        })
        .collect();
    Ok(axum::Json(AlertList { alerts }))
}

/// The silences in force: alerts that fire and are listed, but told to nobody until they end.
#[utoipa::path(
    get, path = "/v1/alerts/silences", tag = "observability",
    responses((status = 200, body = SilenceList), Keyed, Unavailable)
)]
pub async fn silences(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<axum::Json<SilenceList>> {
    let silences = s
        .engine
        .alert_silences()
        .await?
        .into_iter()
        .filter(|(q, ..)| q == crate::alerting::SERVER || caller.allows_queue(q))
        .map(|(queue, rule, until)| SilenceView { queue, rule, until })
        .collect();
    Ok(axum::Json(SilenceList { silences }))
}

/// Silence an alert rule of a queue (`*`: every queue and the server's own rules) for a time: it
/// still fires and is listed, and is told when the silence ends if it still fires. Replaces a silence
/// of the same rule and queue. Recorded in the audit log (`alert.silence`).
#[utoipa::path(
    post, path = "/v1/alerts/silences", tag = "observability",
    request_body = SilenceRequest,
    responses((status = 201, body = SilenceView), Invalid, Keyed, JsonBody, Unavailable)
)]
pub async fn silence(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Admin>,
    Json(req): Json<SilenceRequest>,
) -> ApiResult<(StatusCode, axum::Json<SilenceView>)> {
    if req.queue == crate::alerting::SERVER {
        caller.require_every_queue()?;
    } else {
        caller.require_queue(&req.queue)?;
    }
    if req
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 1_000)
    {
        return Err(ApiError::invalid(
            "reason",
            "must be at most 1000 characters",
        ));
    }
    let until = s
        .engine
        .silence_alert(&req.queue, &req.rule, req.duration_ms)
        .await?;
    let detail = serde_json::json!({"until": until, "reason": req.reason});
    let target = format!("{}@{}", req.rule, req.queue);
    super::audit(&s, &caller, "alert.silence", &target, Some(detail)).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(SilenceView {
            queue: req.queue,
            rule: req.rule,
            until,
        }),
    ))
}

/// End a silence early. Recorded in the audit log (`alert.unsilence`); `count` is 0 when none was
/// in force.
#[utoipa::path(
    delete, path = "/v1/alerts/silences/{queue}/{rule}", tag = "observability",
    params(
        ("queue" = errand_protocol::schema::SilenceQueue, Path, description = "a queue, or `*`"),
        ("rule" = errand_protocol::schema::AlertRule, Path, description = "the rule"),
    ),
    responses((status = 200, body = errand_protocol::CountResponse), Invalid, Keyed, Unavailable)
)]
pub async fn unsilence(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Admin>,
    Path((queue, rule)): Path<(String, String)>,
) -> ApiResult<axum::Json<errand_protocol::CountResponse>> {
    if queue == crate::alerting::SERVER {
        caller.require_every_queue()?;
    } else {
        caller.require_queue(&queue)?;
    }
    let removed = s.engine.unsilence_alert(&queue, &rule).await?;
    super::audit(
        &s,
        &caller,
        "alert.unsilence",
        &format!("{rule}@{queue}"),
        None,
    )
    .await;
    Ok(axum::Json(errand_protocol::CountResponse {
        count: u64::from(removed),
    }))
}

/// The built-in alert rules in force: each rule for every queue (`*`; the server for `disk_full` and
/// `store_growth`), then each rule a queue's own `[[alerts]]` entries change. Needs `read`; a key
/// limited to queue prefixes sees `*` and its queues.
#[utoipa::path(
    get, path = "/v1/alerts/rules", tag = "observability",
    responses((status = 200, body = AlertRuleList), Keyed)
)]
pub async fn alert_rules(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<axum::Json<AlertRuleList>> {
    let rules = crate::alerting::configured_rules(&s.config.alerts)
        .into_iter()
        .filter(|(q, ..)| q == crate::alerting::SERVER || caller.allows_queue(q))
        .map(|(queue, r, enabled)| AlertRuleView {
            queue,
            rule: r.kind.as_str().into(),
            enabled,
            threshold: r.threshold,
            for_ms: r.for_ms,
            cooldown_ms: r.cooldown_ms,
            window_ms: r.window_ms,
        })
        .collect();
    Ok(axum::Json(AlertRuleList { rules }))
}

/// The audit log: operators' actions (retry, cancel, promote, replay, purge, pause, configure,
/// webhooks, schedules) with the key that made them, and auth failures (`auth.denied`, at a bounded
/// rate), newest first. Needs `read`, and a key not limited
/// to queue prefixes.
#[utoipa::path(
    get, path = "/v1/audit", tag = "observability",
    params(
        ("cursor" = Option<String>, Query, pattern = r"^[0-9]{1,19}$", description = "next_cursor of the previous page"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "1–1000, default 100"),
    ),
    responses((status = 200, body = AuditPage), Invalid, Keyed, Unavailable)
)]
pub async fn audit(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: params,
        ..
    }: Authorized<scope::Read, Params>,
) -> ApiResult<axum::Json<AuditPage>> {
    caller.require_every_queue()?;
    params.only(&["cursor", "limit"])?;
    let limit = params.number("limit")?.unwrap_or(100);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let entries = s.engine.audit_log(params.number("cursor")?, limit).await?;
    let next_cursor = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(axum::Json(AuditPage {
        entries: entries.into_iter().map(convert::audit_view).collect(),
        next_cursor,
    }))
}

/// This deployment checked against `docs/AUDIT.md`: the server's settings, each queue's configuration
/// and policy, the alert rules, schedules, and the workers this node saw, each check pass, warn or
/// fail with its fix. Needs `admin` (it names the keys), and a key not limited to queue prefixes.
#[utoipa::path(
    get, path = "/v1/audit/report", tag = "observability",
    responses((status = 200, body = AuditReport), Keyed, Unavailable)
)]
pub async fn audit_report(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Admin>,
) -> ApiResult<axum::Json<AuditReport>> {
    caller.require_every_queue()?;
    Ok(axum::Json(s.audit_report().await?))
}
