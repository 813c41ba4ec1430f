//! The body of every error answer and the codes it carries. Which failure gets which code and status
//! is the server's decision.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The body of every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable: see [`code`].
    pub code: String,
    /// For people.
    pub message: String,
    /// The request field at fault (`payload`, `jobs[3].priority`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error codes, each with the HTTP status it comes with.
pub mod code {
    /// 400: the request broke a rule; `field` names where.
    pub const INVALID: &str = "invalid";
    /// 401: no API key, or an unknown one.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 403: the key lacks the scope, or the queue is outside its prefixes.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404: no such job, queue or route.
    pub const NOT_FOUND: &str = "not_found";
    /// 405: the route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 409: the lease token is not the job's current lease; nothing changed.
    pub const LEASE_LOST: &str = "lease_lost";
    /// 409: the job's state does not allow this; nothing changed.
    pub const CONFLICT: &str = "conflict";
    /// 413: a body, payload, result, progress or batch is larger than its limit.
    pub const TOO_LARGE: &str = "too_large";
    /// 415: the body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// 429: a server limit is reached (e.g. waiting fetches); retry after `Retry-After` seconds.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// 503: the store cannot be reached, or the server is shutting down; retry.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 500: a fault of the server, never of the request.
    pub const INTERNAL: &str = "internal";
}
