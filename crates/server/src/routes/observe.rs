//! Observability: Prometheus metrics.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use errand_protocol::ErrorBody;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiResult;

/// The OpenMetrics text format, which Prometheus scrapes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics: this node's job counters, wait and run times, HTTP and store latency; the
/// store's jobs by queue and state, oldest waiting age and dead letters; workers seen. Needs `read`.
#[utoipa::path(
    get, path = "/metrics", tag = "observability",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn metrics(State(s): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(&[Scope::Read])?;
    let stats = s.engine.stats_all().await?;
    let body = s.metrics.render(&stats, s.engine.now());
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
    let method = req.method().clone();
    let resp = next.run(req).await;
    s.metrics.http_request(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}
