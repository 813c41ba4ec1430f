//! Errors as the API answers them: a status and `{"error": {"code", "message", "field"?}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use errand_core::Error;
use errand_protocol::{ErrorBody, ErrorDetail, code};

use crate::auth::Denied;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// For a 401 or 403: what the audit log keeps of it (the HTTP layer writes it there). Boxed: every
    /// handler's error is an `ApiError`, and this is rare.
    pub denied: Option<Box<Denied>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            denied: None,
        }
    }

    /// 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, code::INVALID, message);
        e.field = Some(field.into());
        e
    }

    /// 401: no key was recognised; `reason` is one of [`Denied::reason`]'s.
    pub fn unauthorized(reason: &'static str, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message);
        e.denied = Some(Box::new(Denied { key: None, reason }));
        e
    }

    /// 403: `key` may not do this; `reason` is one of [`Denied::reason`]'s.
    pub fn forbidden(key: &str, reason: &'static str, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::FORBIDDEN, code::FORBIDDEN, message);
        e.denied = Some(Box::new(Denied {
            key: Some(key.to_string()),
            reason,
        }));
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }

    /// The detail, as a batch item carries it.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_string(),
            message: self.message.clone(),
            field: self.field.clone(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid { field, message } => ApiError::invalid(field, message),
            Error::TooLarge { field, message } => {
                let mut a = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code::TOO_LARGE, message);
                a.field = Some(field);
                a
            }
            Error::NotFound(_) => ApiError::not_found(message),
            Error::LeaseLost => ApiError::new(StatusCode::CONFLICT, code::LEASE_LOST, message),
            Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, code::CONFLICT, m),
            Error::QueueFull { .. } => {
                // Backpressure: the producer waits and sends the same enqueue again.
                let mut a =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMITED, message);
                a.field = Some("queue".into());
                a.retry_after = Some(1);
                a
            }
            Error::Unavailable(_) => {
                let mut a =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message);
                a.retry_after = Some(1);
                a
            }
            other => {
                // The details of a store failure are for the log, not for the caller.
                tracing::error!(error = %other, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::INTERNAL,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (retry_after, denied) = (self.retry_after, self.denied);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(d) = denied {
            resp.extensions_mut().insert(*d);
        }
        resp
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
