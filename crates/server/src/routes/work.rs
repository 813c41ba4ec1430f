//! Workers: fetch (long poll), heartbeat, complete, fail, release, and batch acknowledgements.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use errand_core::{Ack, Claim, ClaimOutcome, Failure};
use errand_protocol::{
    AckBatchRequest, AckBatchResponse, AckItem, AckResponse, AckResult, CompleteRequest,
    CountResponse, ErrorBody, FailRequest, FetchRequest, FetchResponse, HeartbeatRequest,
    HeartbeatResponse, LogRequest, ReleaseRequest, code,
};
use tokio::sync::oneshot;

use crate::AppState;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Authorized, Json, Path, parse_id, scope};
use crate::routes::answers::{Invalid, JsonBody, Keyed, LeaseLost, NotFound, Unavailable};

/// Claim due jobs, waiting up to `wait_ms` for one to arrive.
#[utoipa::path(
    post, path = "/v1/fetch", tag = "workers",
    request_body = FetchRequest,
    responses(
        (status = 200, description = "the jobs claimed, each under a new lease; empty when none came in time", body = FetchResponse),
        Invalid, Keyed, JsonBody, Unavailable,
        (status = 429, description = "rate_limited: the key is over its requests per second, or the server's \
                                      max_waiting_fetches are waiting already; retry after `Retry-After` seconds", body = ErrorBody),
    )
)]
pub async fn fetch(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Work>,
    Json(req): Json<FetchRequest>,
) -> ApiResult<axum::Json<FetchResponse>> {
    for (i, q) in req.queues.iter().enumerate() {
        caller.require_queue(q)?;
        super::not_own_queue(&format!("queues[{i}]"), q)?;
    }
    if let Some(r) = &req.report {
        check_report(r)?;
    }
    let max_claim = s.engine.limits().max_claim;
    if req.max_jobs == 0 || req.max_jobs as usize > max_claim {
        return Err(ApiError::invalid(
            "max_jobs",
            format!("must be between 1 and {max_claim}"),
        ));
    }
    let claim = Claim {
        queues: req.queues.clone(),
        worker_id: req.worker_id,
        limit: req.max_jobs as usize,
        heartbeat_ms: req.heartbeat_ms.map(errand_protocol::Whole::get),
    };
    let wait = Duration::from_millis(req.wait_ms.min(s.config.max_wait_ms));
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = s.shutdown.clone();
    let mut out = claim_detached(&s, claim.clone()).await?;
    // Seen once the claim took its queue names as valid.
    s.metrics.worker_seen(
        &claim.worker_id,
        claim.queues.iter().map(String::as_str),
        s.engine.now(),
    );
    if let Some(r) = req.report {
        s.metrics
            .worker_reported(&claim.worker_id, r, s.engine.now());
    }
    if out.jobs.is_empty() && !wait.is_zero() && !*shutdown.borrow() {
        // Register before claiming again, so that a job arriving in between wakes us.
        let reg = s
            .waiters
            .register(&req.queues, s.config.max_waiting_fetches)
            .ok_or_else(|| {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    code::RATE_LIMITED,
                    format!(
                        "{} fetches are already waiting; retry shortly or fetch with wait_ms 0",
                        s.config.max_waiting_fetches
                    ),
                );
                e.retry_after = Some(1);
                e
            })?;
        loop {
            out = claim_detached(&s, claim.clone()).await?;
            if !out.jobs.is_empty() {
                break;
            }
            // Flow control held jobs back: look again when a job of ours leaves `active`, when the
            // next token is due, and (for capacity another node frees, which no event tells) every
            // FLOW_RECHECK.
            if out.blocked {
                reg.wake_on_release();
            }
            let recheck = flow_recheck(&s, &out).map(|d| tokio::time::Instant::now() + d);
            let _parked = reg.park();
            tokio::select! {
                _ = reg.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep_until(recheck.unwrap_or(deadline)), if recheck.is_some() => {}
                // A shutting-down server answers waiting fetches at once, empty.
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
    }
    let jobs = out.jobs;
    for j in &jobs {
        tracing::debug!(job_id = %j.id, queue = %j.queue, attempt = j.attempts, "fetched");
    }
    Ok(axum::Json(FetchResponse {
        jobs: jobs.into_iter().filter_map(convert::fetched).collect(),
    }))
}

/// How often a fetch that flow control held back looks again even if nothing here woke it: capacity
/// freed on another node sends no event to this one.
const FLOW_RECHECK: Duration = Duration::from_millis(250);

/// When a fetch held back by flow control should look again, if it was.
fn flow_recheck(s: &AppState, out: &ClaimOutcome) -> Option<Duration> {
    // Not sooner than the next token: a queue limited to a job a minute is not polled four times a
    // second by every idle worker.
    let token = out.retry_at.map(|at| {
        let ms = at.saturating_sub(s.engine.now()).max(1);
        Duration::from_millis(ms as u64)
    });
    let capacity = out.blocked.then_some(FLOW_RECHECK);
    token.into_iter().chain(capacity).min()
}

/// Claims in a task of its own: if the client goes away while the claim commits, the jobs are released
/// at once instead of waiting out a lease nobody holds.
async fn claim_detached(s: &AppState, claim: Claim) -> errand_core::Result<ClaimOutcome> {
    let (tx, rx) = oneshot::channel();
    let engine = s.engine.clone();
    tokio::spawn(async move {
        let res = engine.claim_with_hints(claim).await;
        if let Err(Ok(out)) = tx.send(res) {
            let releases: Vec<Ack> = out
                .jobs
                .into_iter()
                .filter_map(|j| {
                    j.lease.map(|lease| Ack::Release {
                        id: j.id,
                        token: lease.token,
                        delay_ms: 0,
                    })
                })
                .collect();
            // In one transaction per batch, as a worker's own releases.
            for chunk in releases.chunks(engine.limits().max_batch.max(1)) {
                let _ = engine.ack(chunk.to_vec()).await;
            }
        }
    });
    rx.await
        .map_err(|_| errand_core::Error::Unavailable("the claim was interrupted".into()))?
}

/// Extend a lease; report progress; learn of a cancel request.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/heartbeat", tag = "workers",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    request_body = HeartbeatRequest,
    responses((status = 200, body = HeartbeatResponse), Invalid, Keyed, NotFound, LeaseLost, JsonBody, Unavailable)
)]
pub async fn heartbeat(
    State(s): State<AppState>,
    _: Authorized<scope::Work>,
    Path(id): Path<String>,
    Json(req): Json<HeartbeatRequest>,
) -> ApiResult<axum::Json<HeartbeatResponse>> {
    let id = parse_id("id", &id)?;
    let r = s
        .engine
        .heartbeat(id, req.lease_token, req.progress)
        .await?;
    if let Some(worker) = &r.worker_id {
        s.metrics
            .worker_seen(worker, [r.queue.as_str()], s.engine.now());
    }
    Ok(axum::Json(convert::heartbeat(&r)))
}

/// Append lines to a job's log under its lease.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/logs", tag = "workers",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    request_body = LogRequest,
    responses((status = 200, description = "how many lines were appended", body = CountResponse), Invalid, Keyed, NotFound, LeaseLost, JsonBody, Unavailable)
)]
pub async fn append_logs(
    State(s): State<AppState>,
    _: Authorized<scope::Work>,
    Path(id): Path<String>,
    Json(req): Json<LogRequest>,
) -> ApiResult<axum::Json<CountResponse>> {
    let id = parse_id("id", &id)?;
    let count = req.lines.len() as u64;
    s.engine.append_logs(id, req.lease_token, req.lines).await?;
    Ok(axum::Json(CountResponse { count }))
}

/// Complete a job under its lease. A retried completion of the same lease answers success with `duplicate`.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/complete", tag = "workers",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    request_body = CompleteRequest,
    responses((status = 200, body = AckResponse), Invalid, Keyed, NotFound, LeaseLost, JsonBody, Unavailable)
)]
pub async fn complete(
    State(s): State<AppState>,
    _: Authorized<scope::Work>,
    Path(id): Path<String>,
    Json(req): Json<CompleteRequest>,
) -> ApiResult<axum::Json<AckResponse>> {
    let id = parse_id("id", &id)?;
    let out = s.engine.complete(id, req.lease_token, req.result).await?;
    tracing::debug!(job_id = %id, state = %out.state, "completed");
    Ok(axum::Json(convert::ack(out)))
}

/// Fail the current attempt: retried after its backoff (or `retry_after_ms`), or dead.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/fail", tag = "workers",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    request_body = FailRequest,
    responses((status = 200, body = AckResponse), Invalid, Keyed, NotFound, LeaseLost, JsonBody, Unavailable)
)]
pub async fn fail(
    State(s): State<AppState>,
    _: Authorized<scope::Work>,
    Path(id): Path<String>,
    Json(req): Json<FailRequest>,
) -> ApiResult<axum::Json<AckResponse>> {
    let id = parse_id("id", &id)?;
    let failure = Failure {
        message: req.message,
        retryable: req.retryable,
        retry_after_ms: req.retry_after_ms.map(errand_protocol::Whole::get),
        stack: req.stack,
    };
    let out = s.engine.fail(id, req.lease_token, failure).await?;
    tracing::debug!(job_id = %id, state = %out.state, "failed");
    Ok(axum::Json(convert::ack(out)))
}

/// Give back a job fetched but not started: due again at once, the attempt not counted.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/release", tag = "workers",
    params(("id" = errand_protocol::schema::JobId, Path, description = "job id")),
    request_body = ReleaseRequest,
    responses((status = 200, body = AckResponse), Invalid, Keyed, NotFound, LeaseLost, JsonBody, Unavailable)
)]
pub async fn release(
    State(s): State<AppState>,
    _: Authorized<scope::Work>,
    Path(id): Path<String>,
    Json(req): Json<ReleaseRequest>,
) -> ApiResult<axum::Json<AckResponse>> {
    let id = parse_id("id", &id)?;
    let delay = req.delay_ms.map_or(0, errand_protocol::Whole::get);
    Ok(axum::Json(convert::ack(
        s.engine.release_after(id, req.lease_token, delay).await?,
    )))
}

/// Many completions, failures and releases in one request; each stands or falls on its own.
#[utoipa::path(
    post, path = "/v1/ack", tag = "workers",
    request_body = AckBatchRequest,
    responses(
        (status = 200, description = "each acknowledgement's outcome, in the order sent", body = AckBatchResponse),
        Invalid, Keyed, JsonBody, Unavailable,
    )
)]
pub async fn ack(
    State(s): State<AppState>,
    _: Authorized<scope::Work>,
    Json(req): Json<AckBatchRequest>,
) -> ApiResult<axum::Json<AckBatchResponse>> {
    let n = req.acks.len();
    if n > s.engine.limits().max_batch {
        return Err(errand_core::Error::too_large(
            "acks",
            format!("at most {} per batch", s.engine.limits().max_batch),
        )
        .into());
    }
    let mut results: Vec<Option<Result<AckResponse, ApiError>>> = vec![None; n];
    let mut ids = Vec::with_capacity(n);
    let mut batch = Vec::new();
    let mut batch_slots = Vec::new();
    for (i, item) in req.acks.into_iter().enumerate() {
        ids.push(item.id().to_string());
        let id = match parse_id(&format!("acks[{i}].id"), item.id()) {
            Ok(id) => id,
            Err(e) => {
                results[i] = Some(Err(e));
                continue;
            }
        };
        match item {
            AckItem::Complete {
                lease_token,
                result,
                ..
            } => {
                batch.push(Ack::Complete {
                    id,
                    token: lease_token,
                    result,
                });
                batch_slots.push(i);
            }
            AckItem::Fail {
                lease_token,
                message,
                retryable,
                retry_after_ms,
                stack,
                ..
            } => {
                batch.push(Ack::Fail {
                    id,
                    token: lease_token,
                    failure: Failure {
                        message,
                        retryable,
                        retry_after_ms: retry_after_ms.map(errand_protocol::Whole::get),
                        stack,
                    },
                });
                batch_slots.push(i);
            }
            AckItem::Release {
                lease_token,
                delay_ms,
                ..
            } => {
                batch.push(Ack::Release {
                    id,
                    token: lease_token,
                    delay_ms: delay_ms.map_or(0, errand_protocol::Whole::get),
                });
                batch_slots.push(i);
            }
        }
    }
    if !batch.is_empty() {
        let out = s.engine.ack(batch).await?;
        for (k, (slot, r)) in batch_slots.into_iter().zip(out).enumerate() {
            results[slot] = Some(r.map(convert::ack).map_err(|e| {
                // The engine numbers the items of its own sub-batch; name the request's item.
                let mut a = ApiError::from(e);
                if let Some(f) = &a.field {
                    let rest = f.strip_prefix(&format!("acks[{k}]")).unwrap_or(f);
                    let rest = rest.strip_prefix('.').unwrap_or(rest);
                    a.field = Some(format!("acks[{slot}].{rest}"));
                }
                a
            }));
        }
    }
    Ok(axum::Json(AckBatchResponse {
        results: ids
            .into_iter()
            .zip(results)
            .map(|(id, r)| match r {
                Some(Ok(ok)) => AckResult {
                    id,
                    ok: Some(ok),
                    error: None,
                },
                Some(Err(e)) => AckResult {
                    id,
                    ok: None,
                    error: Some(e.detail()),
                },
                None => AckResult {
                    id,
                    ok: None,
                    error: Some(ApiError::from(errand_core::Error::LeaseLost).detail()),
                },
            })
            .collect(),
    }))
}

/// A worker's report: names of 1–64 printable characters, a concurrency of 1–1,000,000.
fn check_report(r: &errand_protocol::WorkerReport) -> ApiResult<()> {
    for (field, v) in [("report.sdk", &r.sdk), ("report.version", &r.version)] {
        if v.is_empty() || v.chars().count() > 64 || v.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                field,
                "must be 1 to 64 characters, none of them control characters",
            ));
        }
    }
    if !(1..=1_000_000).contains(&r.concurrency) {
        return Err(ApiError::invalid(
            "report.concurrency",
            "must be between 1 and 1000000",
        ));
    }
    Ok(())
}
