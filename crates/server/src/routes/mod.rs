//! The handlers, by who calls them: `jobs` (producers and operators), `work` (workers), `queues`
//! (queues, listings, dead letters), `schedules` (cron), `observe` (metrics, events, alerts), `health`.

pub mod flows;
pub mod health;
pub mod jobs;
pub mod observe;
pub mod queues;
pub mod schedules;
pub mod work;

use errand_core::engine::OWN_QUEUE_PREFIX;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Records an operator's action, done, in the audit log with the caller's key name. The action stands
/// whatever happens here: a failed write is logged as an error, not answered.
pub(crate) async fn audit(
    s: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    detail: Option<serde_json::Value>,
) {
    let key = caller.name();
    tracing::info!(key, action, target, "audit");
    if let Err(e) = s.engine.audit(key, action, target, detail.as_ref()).await {
        tracing::error!(key, action, target, "the audit log was not written: {e}");
    }
}

/// Refuses a queue of Errand's own (`errand.*`, the webhook deliveries) where a caller would put jobs
/// in it or work it: a delivery is signed with a webhook's secret, so only the server may make one,
/// and only its deliverer may take one. Operators still list, replay and purge their dead letters.
pub(crate) fn not_own_queue(field: &str, queue: &str) -> ApiResult<()> {
    if queue.starts_with(OWN_QUEUE_PREFIX) {
        return Err(ApiError::invalid(
            field,
            format!(
                "queues named {OWN_QUEUE_PREFIX}* are Errand's own: no jobs or workers from outside"
            ),
        ));
    }
    Ok(())
}

/// The error answers as the OpenAPI description lists them, each with an [`ErrorBody`]; a handler's
/// `responses(...)` names those it can give.
pub(crate) mod answers {
    use errand_protocol::ErrorBody;
    use utoipa::IntoResponses;

    /// 400.
    #[derive(IntoResponses)]
    #[response(
        status = 400,
        description = "invalid: the request broke a rule (a path or query parameter, or the body); \
                       `field` names where"
    )]
    pub struct Invalid(#[allow(dead_code)] ErrorBody);

    /// 401, 403 and 429: every route that needs an API key.
    #[derive(IntoResponses)]
    #[allow(dead_code)]
    pub enum Keyed {
        #[response(
            status = 401,
            description = "unauthorized: no API key, or an unknown one"
        )]
        Unauthorized(ErrorBody),
        #[response(
            status = 403,
            description = "forbidden: the key lacks the scope, or may not use the queue"
        )]
        Forbidden(ErrorBody),
        #[response(
            status = 429,
            description = "rate_limited: the key is over its requests per second, or an enqueue \
                           would take the queue past its `max_waiting` (nothing was written); \
                           retry after `Retry-After` seconds"
        )]
        RateLimited(ErrorBody),
    }

    /// 401 and 429: a route that needs an API key but no scope.
    #[derive(IntoResponses)]
    #[allow(dead_code)]
    pub enum KeyedAnyScope {
        #[response(
            status = 401,
            description = "unauthorized: no API key, or an unknown one"
        )]
        Unauthorized(ErrorBody),
        #[response(
            status = 429,
            description = "rate_limited: the key is over its requests per second; retry after \
                           `Retry-After` seconds"
        )]
        RateLimited(ErrorBody),
    }

    /// 404.
    #[derive(IntoResponses)]
    #[response(status = 404, description = "not_found")]
    pub struct NotFound(#[allow(dead_code)] ErrorBody);

    /// 409 of an operator's action.
    #[derive(IntoResponses)]
    #[response(
        status = 409,
        description = "conflict: the job's state does not allow this; nothing changed"
    )]
    pub struct Conflict(#[allow(dead_code)] ErrorBody);

    /// 409 of a worker's call.
    #[derive(IntoResponses)]
    #[response(
        status = 409,
        description = "lease_lost: the lease token is not the job's current lease; nothing changed"
    )]
    pub struct LeaseLost(#[allow(dead_code)] ErrorBody);

    /// 413 and 415: every route that reads a JSON body.
    #[derive(IntoResponses)]
    #[allow(dead_code)]
    pub enum JsonBody {
        #[response(
            status = 413,
            description = "too_large: the body, or a payload, result, progress or batch in it, is \
                           larger than its limit"
        )]
        TooLarge(ErrorBody),
        #[response(
            status = 415,
            description = "unsupported_media_type: the body is not `application/json`"
        )]
        NotJson(ErrorBody),
    }

    /// 503.
    #[derive(IntoResponses)]
    #[response(
        status = 503,
        description = "unavailable: the store cannot be reached, or the server is shutting down; \
                       retry after `Retry-After` seconds"
    )]
    pub struct Unavailable(#[allow(dead_code)] ErrorBody);
}
