//! Producers and operators: enqueue, look at one job, cancel, retry, promote.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use errand_protocol::{
    CancelResponse, EnqueueBatch, EnqueueJob, Enqueued, EnqueuedBatch, JobLogs, JobStateResponse,
    JobView,
};
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::ApiResult;
use crate::extract::{Authorized, Params, Path, decode, json_bytes, parse_id, scope};
use crate::routes::answers::{Conflict, Invalid, JsonBody, Keyed, NotFound, Unavailable};

/// One job or an atomic batch (`{"jobs": [...]}`); for the OpenAPI description.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EnqueueBody {
    One(Box<EnqueueJob>),
    Batch(EnqueueBatch),
}

/// The answer to an enqueue; for the OpenAPI description.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EnqueueAnswer {
    One(Enqueued),
    Batch(EnqueuedBatch),
}

/// Tells a batch from a single job without decoding the jobs twice.
#[derive(Deserialize)]
struct Probe {
    jobs: Option<serde::de::IgnoredAny>,
}

/// Enqueue one job, or a batch atomically.
#[utoipa::path(
    post, path = "/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = errand_protocol::schema::JobQueueName, Path, description = "queue name")),
    request_body(content = EnqueueBody, description = "one job, or {\"jobs\": [...]} written all or nothing"),
    responses(
        (status = 201, description = "created", body = EnqueueAnswer),
        (status = 200, description = "the unique key matched an existing job", body = Enqueued),
        Invalid, Keyed, JsonBody, Unavailable,
    )
)]
pub async fn enqueue(
    State(s): State<AppState>,
    Authorized {
        parts: Path(queue), ..
    }: Authorized<scope::Produce, Path<String>>,
    req: Request,
) -> ApiResult<Response> {
    super::not_own_queue("queue", &queue)?;
    let bytes = json_bytes(req, &s).await?;
    let probe: Probe = decode(&bytes)?;
    if probe.jobs.is_some() {
        let batch: EnqueueBatch = decode(&bytes)?;
        let jobs = batch
            .jobs
            .into_iter()
            .map(|j| convert::new_job(&queue, j))
            .collect();
        let out = s.engine.enqueue_many(jobs).await?;
        let body = EnqueuedBatch {
            jobs: out.into_iter().map(convert::enqueued).collect(),
        };
        Ok((StatusCode::CREATED, axum::Json(body)).into_response())
    } else {
        let job: EnqueueJob = decode(&bytes)?;
        let out = s.engine.enqueue(convert::new_job(&queue, job)).await?;
        tracing::debug!(job_id = %out.id, queue = %queue, created = out.created, "enqueued");
        let status = if out.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, axum::Json(convert::enqueued(out))).into_response())
    }
}

/// Loads a job the caller may see.
pub(crate) async fn visible_job(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<errand_core::Job> {
    let id = parse_id("id", id)?;
    let job = s.engine.get(id).await?;
    caller.require_queue(&job.queue)?;
    Ok(job)
}

/// A job: state, attempts and their errors, progress, result.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    responses((status = 200, body = JobView), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn get_job(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(id),
        ..
    }: Authorized<(scope::Read, scope::Produce), Path<String>>,
) -> ApiResult<axum::Json<JobView>> {
    Ok(axum::Json(convert::job_view(
        visible_job(&s, &caller, &id).await?,
    )))
}

/// A job's log, oldest line first (what its workers appended, the latest 200 lines).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/logs", tag = "jobs",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    responses((status = 200, body = JobLogs), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn get_logs(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(id),
        ..
    }: Authorized<(scope::Read, scope::Produce), Path<String>>,
) -> ApiResult<axum::Json<JobLogs>> {
    let job = visible_job(&s, &caller, &id).await?;
    let logs = s.engine.logs(job.id).await?;
    Ok(axum::Json(convert::job_logs(logs)))
}

/// Cancel a job: waiting or delayed ones at once; an active one is asked to stop.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    responses((status = 200, body = CancelResponse), Invalid, Keyed, NotFound, Conflict, Unavailable)
)]
pub async fn cancel(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(id),
        ..
    }: Authorized<(scope::Produce, scope::Admin), Path<String>>,
) -> ApiResult<axum::Json<CancelResponse>> {
    let job = visible_job(&s, &caller, &id).await?;
    let outcome = convert::cancel_outcome(s.engine.cancel(job.id).await?);
    let detail = serde_json::json!({ "outcome": outcome });
    super::audit(&s, &caller, "job.cancel", &id, Some(detail)).await;
    Ok(axum::Json(CancelResponse {
        id: job.id.to_string(),
        outcome: outcome.into(),
    }))
}

/// Retry a dead or cancelled job: back to waiting with a fresh attempt budget and the same idempotency key.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    responses((status = 200, body = JobStateResponse), Invalid, Keyed, NotFound, Conflict, Unavailable)
)]
pub async fn retry(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(id),
        ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<JobStateResponse>> {
    let job = visible_job(&s, &caller, &id).await?;
    s.engine.retry(job.id).await?;
    super::audit(&s, &caller, "job.retry", &id, None).await;
    state_of(&s, job.id).await
}

/// Make a delayed job due now.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/promote", tag = "jobs",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    responses((status = 200, body = JobStateResponse), Invalid, Keyed, NotFound, Conflict, Unavailable)
)]
pub async fn promote(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(id),
        ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<JobStateResponse>> {
    let job = visible_job(&s, &caller, &id).await?;
    s.engine.promote(job.id).await?;
    super::audit(&s, &caller, "job.promote", &id, None).await;
    state_of(&s, job.id).await
}

async fn state_of(s: &AppState, id: errand_core::JobId) -> ApiResult<axum::Json<JobStateResponse>> {
    let job = s.engine.get(id).await?;
    Ok(axum::Json(JobStateResponse {
        id: id.to_string(),
        state: convert::state(job.state),
    }))
}

/// How often a waiting `wait` reads the job again, for ends made on another node (whose events this
/// node does not see).
const WAIT_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Wait until a job ends (`completed`, `cancelled` or `dead`), at most `timeout` ms (default and largest:
/// the server's longest long poll, 30 s), and answer the job as it then is: a producer awaits a result.
/// A job not ended in time is answered as it is — look at its `state`.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/wait", tag = "jobs",
    params(
        ("id" = errand_protocol::schema::JobId, Path, description = "job id"),
        ("timeout" = Option<u64>, Query, format = "uint64", minimum = 0, maximum = 18_446_744_073_709_551_615_u64, description = "milliseconds; a longer wait is cut to the server's max_wait_ms (default 30,000)"),
    ),
    responses((status = 200, body = JobView), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn wait_job(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: (Path(id), params),
        ..
    }: Authorized<(scope::Read, scope::Produce), (Path<String>, Params)>,
) -> ApiResult<axum::Json<JobView>> {
    params.only(&["timeout"])?;
    let timeout = params
        .number("timeout")?
        .unwrap_or(s.config.max_wait_ms)
        .min(s.config.max_wait_ms);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout);
    // Subscribe before reading, so that an end between the read and the wait is not missed.
    let mut events = s.engine.subscribe();
    let mut job = visible_job(&s, &caller, &id).await?;
    let mut shutdown = s.shutdown.clone();
    while !job.state.is_final() {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(e) if e.job_id != job.id || !e.to.is_final() => continue,
                // Ended, or events were missed (read again to know), or the engine is going away.
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tokio::time::sleep(WAIT_RECHECK) => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        job = s.engine.get(job.id).await?;
    }
    let job = s.engine.get(job.id).await?;
    Ok(axum::Json(convert::job_view(job)))
}
