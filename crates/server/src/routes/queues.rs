//! Queues: listing with stats, pause and resume, configuration, job listings, dead letters.

use axum::extract::State;
use errand_core::JobState;
use errand_protocol::{
    CountResponse, JobPage, QueueConfig, QueueList, QueueView, WebhookDef, WebhookList, WebhookView,
};

use crate::AppState;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Authorized, Json, Params, Path, scope};
use crate::routes::answers::{Invalid, JsonBody, Keyed, NotFound, Unavailable};

/// Default and largest page of a listing.
const DEFAULT_PAGE: u64 = 100;

/// Every queue the caller may see, with its counts.
#[utoipa::path(
    get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList), Keyed, Unavailable)
)]
pub async fn list_queues(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<axum::Json<QueueList>> {
    let queues = s
        .engine
        .stats_all()
        .await?
        .into_iter()
        .filter(|q| caller.allows_queue(&q.queue))
        .map(convert::queue_view)
        .collect();
    Ok(axum::Json(QueueList { queues }))
}

/// A queue's counts per state and the age of its oldest waiting job.
#[utoipa::path(
    get, path = "/v1/queues/{queue}", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    responses((status = 200, body = QueueView), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn get_queue(
    State(s): State<AppState>,
    Authorized {
        parts: Path(queue), ..
    }: Authorized<scope::Read, Path<String>>,
) -> ApiResult<axum::Json<QueueView>> {
    view_of_known(&s, &queue).await
}

/// The stats of a queue that exists (was configured or has had jobs); 404 otherwise.
async fn view_of_known(s: &AppState, queue: &str) -> ApiResult<axum::Json<QueueView>> {
    let stats = s.engine.stats(queue).await?;
    let known = s.engine.store().queue_get(queue).await?.is_some();
    if !known {
        return Err(ApiError::not_found(format!("queue {queue:?} not found")));
    }
    Ok(axum::Json(convert::queue_view(stats)))
}

/// Stop handing out the queue's jobs (it still accepts new ones).
#[utoipa::path(
    post, path = "/v1/queues/{queue}/pause", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    responses((status = 200, body = QueueView), Invalid, Keyed, Unavailable)
)]
pub async fn pause(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(queue),
        ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<QueueView>> {
    s.engine.pause(&queue).await?;
    super::audit(&s, &caller, "queue.pause", &queue, None).await;
    Ok(axum::Json(convert::queue_view(
        s.engine.stats(&queue).await?,
    )))
}

/// Hand out the queue's jobs again.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/resume", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    responses((status = 200, body = QueueView), Invalid, Keyed, Unavailable)
)]
pub async fn resume(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(queue),
        ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<QueueView>> {
    s.engine.resume(&queue).await?;
    super::audit(&s, &caller, "queue.resume", &queue, None).await;
    // Its waiting jobs became available without an event: wake the fetches parked on it.
    s.wake_queue(&queue);
    Ok(axum::Json(convert::queue_view(
        s.engine.stats(&queue).await?,
    )))
}

/// The queue's defaults (every field filled in; the defaults for a queue never configured).
#[utoipa::path(
    get, path = "/v1/queues/{queue}/config", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    responses((status = 200, body = QueueConfig), Invalid, Keyed, Unavailable)
)]
pub async fn get_config(
    State(s): State<AppState>,
    Authorized {
        parts: Path(queue), ..
    }: Authorized<scope::Read, Path<String>>,
) -> ApiResult<axum::Json<QueueConfig>> {
    let info = s.engine.queue_info(&queue).await?;
    Ok(axum::Json(convert::queue_config(&info.config)))
}

/// The queue's flow control as it stands: limits, active jobs (per group too), the tokens its
/// rate-limit buckets hold now and when the next one comes.
#[utoipa::path(
    get, path = "/v1/queues/{queue}/flow", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    responses((status = 200, body = errand_protocol::FlowView), Invalid, Keyed, Unavailable)
)]
pub async fn get_flow(
    State(s): State<AppState>,
    Authorized {
        parts: Path(queue), ..
    }: Authorized<scope::Read, Path<String>>,
) -> ApiResult<axum::Json<errand_protocol::FlowView>> {
    let flow = s.engine.flow_state(&queue).await?;
    Ok(axum::Json(convert::flow(flow)))
}

/// Replace the queue's defaults; fields left out take theirs. Applies to jobs enqueued afterwards.
#[utoipa::path(
    put, path = "/v1/queues/{queue}/config", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    request_body = QueueConfig,
    responses((status = 200, body = QueueConfig), Invalid, Keyed, JsonBody, Unavailable)
)]
pub async fn put_config(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Admin>,
    Path(queue): Path<String>,
    Json(config): Json<QueueConfig>,
) -> ApiResult<axum::Json<QueueConfig>> {
    let detail = serde_json::to_value(&config).ok();
    let config = convert::queue_config_from_wire(config);
    s.engine.set_queue_config(&queue, config).await?;
    super::audit(&s, &caller, "queue.configure", &queue, detail).await;
    let info = s.engine.queue_info(&queue).await?;
    Ok(axum::Json(convert::queue_config(&info.config)))
}

/// A page of the queue's jobs in one state, oldest first.
#[utoipa::path(
    get, path = "/v1/queues/{queue}/jobs", tag = "queues",
    params(
        ("queue" = errand_protocol::schema::QueueName, Path, description = "queue name"),
        ("state" = errand_protocol::JobState, Query, description = "the state of the jobs listed"),
        ("kind" = Option<errand_protocol::schema::Kind>, Query, description = "only jobs of this kind"),
        ("unique_key" = Option<errand_protocol::schema::Key>, Query, description = "only jobs holding this unique key"),
        ("cursor" = Option<errand_protocol::schema::JobId>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "1–1000, default 100"),
    ),
    responses((status = 200, body = JobPage), Invalid, Keyed, Unavailable)
)]
pub async fn list_jobs(
    State(s): State<AppState>,
    Authorized {
        parts: (Path(queue), params),
        ..
    }: Authorized<scope::Read, (Path<String>, Params)>,
) -> ApiResult<axum::Json<JobPage>> {
    params.only(&["state", "kind", "unique_key", "cursor", "limit"])?;
    let state = params.text("state").ok_or_else(|| {
        ApiError::invalid(
            "state",
            "required: waiting, delayed, active, completed, cancelled or dead",
        )
    })?;
    let state = JobState::parse(&state).ok_or_else(|| {
        ApiError::invalid(
            "state",
            format!("{state:?} is not one of waiting, delayed, active, completed, cancelled, dead"),
        )
    })?;
    page(&s, &queue, state, &params).await
}

async fn page(
    s: &AppState,
    queue: &str,
    state: JobState,
    params: &Params,
) -> ApiResult<axum::Json<JobPage>> {
    let limit = params.number("limit")?.unwrap_or(DEFAULT_PAGE);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let page = s
        .engine
        .list_where(errand_core::store::JobList {
            queue: queue.to_string(),
            state,
            kind: params.text("kind"),
            unique_key: params.text("unique_key"),
            after: params.job_id("cursor")?,
            limit,
        })
        .await?;
    Ok(axum::Json(JobPage {
        jobs: page.jobs.into_iter().map(convert::job_view).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// A page of the queue's dead jobs, oldest first, with every attempt's error.
#[utoipa::path(
    get, path = "/v1/queues/{queue}/dead", tag = "dead letters",
    params(
        ("queue" = errand_protocol::schema::QueueName, Path, description = "queue name"),
        ("kind" = Option<errand_protocol::schema::Kind>, Query, description = "only jobs of this kind"),
        ("error_contains" = Option<String>, Query, description = "only jobs whose latest error contains this; a page may then hold fewer than `limit` jobs and still have a next_cursor"),
        ("cursor" = Option<errand_protocol::schema::JobId>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "1–1000, default 100"),
    ),
    responses((status = 200, body = JobPage), Invalid, Keyed, Unavailable)
)]
pub async fn list_dead(
    State(s): State<AppState>,
    Authorized {
        parts: (Path(queue), params),
        ..
    }: Authorized<scope::Read, (Path<String>, Params)>,
) -> ApiResult<axum::Json<JobPage>> {
    params.only(&["kind", "error_contains", "cursor", "limit"])?;
    let Some(text) = params.text("error_contains") else {
        return page(&s, &queue, JobState::Dead, &params).await;
    };
    // Filter by the latest error, scanning pages until the page is full or a scan budget is spent; the
    // cursor then points past what was scanned, so the next call continues from there.
    let limit = params.number("limit")?.unwrap_or(DEFAULT_PAGE);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let kind = params.text("kind");
    let mut cursor = params.job_id("cursor")?;
    let mut jobs = Vec::new();
    let mut next = None;
    for _ in 0..DEAD_SCAN_PAGES {
        let page = s
            .engine
            .list_kind(&queue, JobState::Dead, kind.clone(), cursor, limit)
            .await?;
        for j in page.jobs {
            if jobs.len() < limit && j.errors.last().is_some_and(|e| e.message.contains(&text)) {
                jobs.push(j);
            }
        }
        if jobs.len() >= limit {
            next = jobs.last().map(|j| j.id);
            break;
        }
        next = page.next;
        if page.next.is_none() {
            break;
        }
        cursor = page.next;
    }
    Ok(axum::Json(JobPage {
        jobs: jobs.into_iter().map(convert::job_view).collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}

/// Pages of dead jobs one filtered listing reads at most before answering with what it found.
const DEAD_SCAN_PAGES: usize = 10;

/// Replay dead jobs matching the filter: back to waiting, fresh attempts, same idempotency key.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/dead/replay", tag = "dead letters",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    request_body = errand_protocol::DeadFilter,
    responses((status = 200, description = "how many were replayed", body = CountResponse), Invalid, Keyed, JsonBody, Unavailable)
)]
pub async fn replay_dead(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Admin>,
    Path(queue): Path<String>,
    Json(f): Json<errand_protocol::DeadFilter>,
) -> ApiResult<axum::Json<CountResponse>> {
    let detail = serde_json::to_value(&f).ok();
    let count = s
        .engine
        .replay_dead(convert::dead_filter(queue.clone(), f))
        .await?;
    let detail = detail.map(|d| serde_json::json!({"filter": d, "count": count}));
    super::audit(&s, &caller, "dead.replay", &queue, detail).await;
    Ok(axum::Json(CountResponse { count }))
}

/// Delete dead jobs matching the filter, for good.
#[utoipa::path(
    delete, path = "/v1/queues/{queue}/dead", tag = "dead letters",
    params(
        ("queue" = errand_protocol::schema::QueueName, Path, description = "queue name"),
        ("kind" = Option<errand_protocol::schema::Kind>, Query, description = "only jobs of this kind"),
        ("error_contains" = Option<String>, Query, description = "only jobs whose latest error contains this"),
        ("fingerprint" = Option<String>, Query, description = "only jobs whose latest error has this fingerprint"),
        ("limit" = Option<u64>, Query, format = "uint64", minimum = 0, maximum = 18_446_744_073_709_551_615_u64, description = "at most this many"),
    ),
    responses((status = 200, description = "how many were deleted", body = CountResponse), Invalid, Keyed, Unavailable)
)]
pub async fn purge_dead(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: (Path(queue), params),
        ..
    }: Authorized<scope::Admin, (Path<String>, Params)>,
) -> ApiResult<axum::Json<CountResponse>> {
    params.only(&["kind", "error_contains", "fingerprint", "limit"])?;
    let f = errand_protocol::DeadFilter {
        kind: params.text("kind"),
        error_contains: params.text("error_contains"),
        fingerprint: params.text("fingerprint"),
        limit: params.number("limit")?.map(errand_protocol::Whole),
    };
    let detail = serde_json::to_value(&f).ok();
    let count = s
        .engine
        .purge_dead(convert::dead_filter(queue.clone(), f))
        .await?;
    let detail = detail.map(|d| serde_json::json!({"filter": d, "count": count}));
    super::audit(&s, &caller, "dead.purge", &queue, detail).await;
    Ok(axum::Json(CountResponse { count }))
}

/// The queue's dead letters grouped by error fingerprint, the largest groups first: "4,210 jobs failed
/// with the same error". The store keeps the groups counted as jobs die, so this reads a few rows per
/// group however many dead jobs are retained.
#[utoipa::path(
    get, path = "/v1/queues/{queue}/dead/groups", tag = "dead letters",
    params(
        ("queue" = errand_protocol::schema::QueueName, Path, description = "queue name"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "groups, 1–1000, default 100"),
    ),
    responses((status = 200, body = errand_protocol::DeadGroupList), Invalid, Keyed, Unavailable)
)]
pub async fn dead_groups(
    State(s): State<AppState>,
    Authorized {
        parts: (Path(queue), params),
        ..
    }: Authorized<scope::Read, (Path<String>, Params)>,
) -> ApiResult<axum::Json<errand_protocol::DeadGroupList>> {
    params.only(&["limit"])?;
    let limit = params.number("limit")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let g = s.engine.dead_groups(&queue, limit as usize).await?;
    Ok(axum::Json(convert::dead_groups(g)))
}

/// A queue's webhooks (secrets are never shown).
#[utoipa::path(
    get, path = "/v1/queues/{queue}/webhooks", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name")),
    responses((status = 200, body = WebhookList), Invalid, Keyed, Unavailable)
)]
pub async fn list_webhooks(
    State(s): State<AppState>,
    Authorized {
        parts: Path(queue), ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<WebhookList>> {
    let webhooks = s
        .engine
        .webhooks(&queue)
        .await?
        .into_iter()
        .map(|(name, h)| convert::webhook_view(name, &h))
        .collect();
    Ok(axum::Json(WebhookList { webhooks }))
}

/// Create or replace a webhook: a signed POST to its URL whenever one of the queue's jobs ends as it
/// names. Deliveries are jobs of the queue `errand.webhooks`, retried with backoff; one that never gets
/// through is in that queue's dead letters.
/// A URL whose host is a denied name, or an address in a denied network (`[webhooks] deny`; by default
/// link-local and cloud metadata), is refused (400, field `url`); a name's addresses are checked at
/// each delivery.
#[utoipa::path(
    put, path = "/v1/queues/{queue}/webhooks/{name}", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name"), ("name" = errand_protocol::schema::Name, Path, description = "webhook name")),
    request_body = WebhookDef,
    responses(
        (status = 200, body = WebhookView),
        Invalid, Keyed, JsonBody, Unavailable,
    )
)]
pub async fn put_webhook(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Admin>,
    Path((queue, name)): Path<(String, String)>,
    Json(def): Json<WebhookDef>,
) -> ApiResult<axum::Json<WebhookView>> {
    // An early hint only: what the URL alone shows (a denied name, an IP literal in a denied network).
    // A name's addresses are checked at each delivery, where the check holds.
    if let Ok(url) = reqwest::Url::parse(&def.url)
        && let Err(refused) = s.config.webhooks.check_url(&url)
    {
        return Err(ApiError::invalid(
            "url",
            format!("deliveries to this URL would be refused: {refused}"),
        ));
    }
    let webhook = convert::webhook_from_wire(def);
    let view = convert::webhook_view(name.clone(), &webhook);
    s.engine.put_webhook(&queue, &name, webhook).await?;
    // The secret is never written down, here either.
    let detail = serde_json::json!({
        "url": crate::webhooks::redacted(&view.url),
        "events": view.events,
    });
    super::audit(
        &s,
        &caller,
        "webhook.put",
        &format!("{queue}/{name}"),
        Some(detail),
    )
    .await;
    Ok(axum::Json(view))
}

/// Delete a webhook. Deliveries already queued are still attempted (and skipped once they find it gone).
#[utoipa::path(
    delete, path = "/v1/queues/{queue}/webhooks/{name}", tag = "queues",
    params(("queue" = errand_protocol::schema::QueueName, Path, description = "queue name"), ("name" = String, Path, description = "webhook name")),
    responses((status = 200, body = CountResponse), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn delete_webhook(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path((queue, name)),
        ..
    }: Authorized<scope::Admin, Path<(String, String)>>,
) -> ApiResult<axum::Json<CountResponse>> {
    if !s.engine.delete_webhook(&queue, &name).await? {
        return Err(ApiError::not_found(format!(
            "queue {queue:?} has no webhook {name:?}"
        )));
    }
    super::audit(
        &s,
        &caller,
        "webhook.delete",
        &format!("{queue}/{name}"),
        None,
    )
    .await;
    Ok(axum::Json(CountResponse { count: 1 }))
}
