//! The one error type of the engine and of every store.

/// What went wrong. Stores return the same enum; the server maps each variant to an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input broke a rule; nothing was written. `field` names the offending field (for a batch,
    /// with its index: `jobs[3].payload`).
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The input is larger than a limit allows (a payload, result or progress, or a batch); nothing was
    /// written. `field` names it as for [`Error::Invalid`].
    #[error("{field} too large: {message}")]
    TooLarge { field: String, message: String },
    /// No such job (or queue).
    #[error("{0} not found")]
    NotFound(String),
    /// The lease token is not the job's current one: the lease expired and the job was reaped, or the job
    /// was claimed again by someone else, or it already finished. Nothing was changed.
    #[error("lease lost: the lease token is not the job's current lease")]
    LeaseLost,
    /// The job is in a state that does not allow this (e.g. retrying a completed job). Nothing changed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The enqueue would take `queue` past its `max_waiting` jobs not yet started; nothing was written.
    /// Retry once workers have taken some (backpressure, not a fault).
    #[error(
        "queue {queue} is full: it holds its max_waiting of {max_waiting} jobs not yet started; retry later"
    )]
    QueueFull { queue: String, max_waiting: u64 },
    /// The store cannot be reached or is shutting down; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store failed in a way the caller cannot fix (corruption, I/O error, a bug).
    #[error("store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A [`Error::TooLarge`] for `field`.
    pub fn too_large(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::TooLarge {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The input field an error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } | Error::TooLarge { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Prefixes the field of an [`Error::Invalid`] (used to name the item of a batch).
    pub(crate) fn in_field(self, prefix: &str) -> Self {
        match self {
            Error::Invalid { field, message } => Error::Invalid {
                field: format!("{prefix}.{field}"),
                message,
            },
            Error::TooLarge { field, message } => Error::TooLarge {
                field: format!("{prefix}.{field}"),
                message,
            },
            other => other,
        }
    }
}

/// The result of engine and store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
