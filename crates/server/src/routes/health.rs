//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use errand_protocol::{ErrorBody, Health, code};

use crate::AppState;
use crate::error::ApiError;

/// The process answers.
#[utoipa::path(get, path = "/health/live", tag = "health", security(()), responses((status = 200, body = Health)))]
pub async fn live() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// The store answers and the server is not shutting down.
#[utoipa::path(
    get, path = "/health/ready", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody))
)]
pub async fn ready(State(s): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    if *s.shutdown.borrow() {
        return Err(unready("the server is shutting down".into()));
    }
    match s.engine.store().queue_get("errand.ready-check").await {
        Ok(_) => Ok(axum::Json(Health {
            status: "ok".into(),
        })),
        Err(e) => Err(unready(format!("the store does not answer: {e}"))),
    }
}

fn unready(message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message);
    e.retry_after = Some(1);
    e
}
