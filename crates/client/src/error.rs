//! The client's error: the server's answer, a transport failure, or an answer that did not decode.

use std::time::Duration;

use errand_protocol::code;

/// What went wrong with a request.
///
/// Retryable conditions ([`Error::is_retryable`]) have already been retried by the client, within its
/// [`RetryPolicy`](crate::RetryPolicy), for the requests that are safe to repeat.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status. For an answer in the API's format (`ErrorBody`) the
    /// fields are the server's; for one that is not (a proxy's `502` page), `code` is made up from the
    /// status (`unavailable` for 502, 503 and 504, `rate_limited` for 429, `http_<status>` otherwise) and
    /// `message` is the start of the body.
    #[error("{code} ({status}): {message}")]
    Api {
        /// The HTTP status, e.g. `409`.
        status: u16,
        /// Machine-readable; see [`errand_protocol::code`].
        code: String,
        /// For people.
        message: String,
        /// The request field at fault (`payload`, `jobs[3].priority`), when one is.
        field: Option<String>,
        /// The `Retry-After` header, when the server sent one (429 and 503).
        retry_after: Option<Duration>,
    },
    /// No complete answer: the connection was refused or reset, the name did not resolve, or the
    /// request timed out.
    #[error("transport: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered with success, but the body is not what the API promises.
    #[error("cannot decode the answer ({status}): {source}")]
    Decode {
        /// The HTTP status of the answer.
        status: u16,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// The client refused to send the request: an invalid base URL, a name that cannot be put in a URL,
    /// or a body that does not serialize.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl Error {
    /// The error code of an [`Error::Api`], e.g. `"lease_lost"`.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of an [`Error::Api`] or [`Error::Decode`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked to wait before retrying (its `Retry-After` header).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn has_code(&self, c: &str) -> bool {
        self.code() == Some(c)
    }

    /// 409 `lease_lost`: the lease token is not the job's current lease; the job is no longer yours.
    pub fn is_lease_lost(&self) -> bool {
        self.has_code(code::LEASE_LOST)
    }

    /// 409 `conflict`: the job's state does not allow this.
    pub fn is_conflict(&self) -> bool {
        self.has_code(code::CONFLICT)
    }

    /// 404 `not_found`: no such job, queue or route.
    pub fn is_not_found(&self) -> bool {
        self.has_code(code::NOT_FOUND)
    }

    /// 400 `invalid`: the request broke a rule; [`Error::Api::field`] names where.
    pub fn is_invalid(&self) -> bool {
        self.has_code(code::INVALID)
    }

    /// 413 `too_large`: a body, payload, result, progress or batch is larger than its limit.
    pub fn is_too_large(&self) -> bool {
        self.has_code(code::TOO_LARGE)
    }

    /// 401 `unauthorized`: no API key, or an unknown one.
    pub fn is_unauthorized(&self) -> bool {
        self.has_code(code::UNAUTHORIZED)
    }

    /// 403 `forbidden`: the key lacks the scope, or the queue is outside its prefixes.
    pub fn is_forbidden(&self) -> bool {
        self.has_code(code::FORBIDDEN)
    }

    /// 429 `rate_limited`: a server limit is reached; see [`Error::retry_after`].
    pub fn is_rate_limited(&self) -> bool {
        self.has_code(code::RATE_LIMITED)
    }

    /// The server could not be reached, or said it is unavailable (503, or a proxy's 502/504).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Transport(_)) || self.has_code(code::UNAVAILABLE)
    }

    /// A transport error that happened while connecting: the request was certainly not sent.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Transport(e) if e.is_connect())
    }

    /// The request timed out (it may or may not have reached the server).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Transport(e) if e.is_timeout())
    }

    /// Trying again later may succeed: a transport error, `unavailable` or `rate_limited`.
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable() || self.is_rate_limited()
    }

    /// The server answered with `unavailable` or `rate_limited` in the API's own format, which the API
    /// documents as "nothing was done; retry" (a proxy's 502/504 promises no such thing).
    pub(crate) fn is_refused_untouched(&self) -> bool {
        match self {
            Error::Api { status, code, .. } => {
                (*status == 503 && code == code::UNAVAILABLE)
                    || (*status == 429 && code == code::RATE_LIMITED)
            }
            _ => false,
        }
    }
}

/// The client's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
