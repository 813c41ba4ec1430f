//! [`Client`]: one method per route of the HTTP API, with retries for the requests that are safe to repeat.
//!
//! This file holds the client itself: its settings, its builder, and the classes of repeat a route's
//! method chooses from. The methods are in `jobs.rs` (calls about one job) and `operator.rs` (queues,
//! schedules, health); `transport.rs` sends a request, retries it and decodes the answer.

mod jobs;
mod operator;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

pub use operator::{DeadJobs, ListJobs};

/// Whether a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Repeating it cannot do harm: retried on any transport error (timeouts included), 429, 502, 503
    /// and 504.
    Safe,
    /// Repeating it could do the work twice: retried only when it certainly did nothing — the
    /// connection could not be made, or the server answered `rate_limited` or `unavailable` in the
    /// API's format.
    IfUntouched,
    /// Never retried.
    Never,
}

/// A client of Errand's HTTP API. Cheap to clone: clones share one connection pool.
///
/// Every method is one request (plus retries). Failures that may pass — connection errors, timeouts,
/// `503 unavailable`, `429 rate_limited` (after its `Retry-After`) — are retried with the client's
/// [`RetryPolicy`], but only for requests that are safe to repeat:
///
/// | retried on any such failure | retried only if the request certainly did nothing¹ | never retried |
/// | --- | --- | --- |
/// | every `GET`; [`heartbeat`](Client::heartbeat), [`complete`](Client::complete) (a repeat of the same lease's completion answers success with `duplicate: true`), [`fail`](Client::fail)², [`release`](Client::release)², [`ack_batch`](Client::ack_batch)²; [`pause`](Client::pause), [`resume`](Client::resume), [`set_queue_config`](Client::set_queue_config); [`put_schedule`](Client::put_schedule), [`pause_schedule`](Client::pause_schedule), [`resume_schedule`](Client::resume_schedule); [`enqueue`](Client::enqueue) of a job with a `unique_key` (and [`enqueue_batch`](Client::enqueue_batch) when every job has one)³ | [`enqueue`](Client::enqueue) without a `unique_key` (a repeat would enqueue a second job); [`fetch`](Client::fetch) (a repeat would lease jobs to nobody until their leases expire); [`cancel`](Client::cancel), [`retry`](Client::retry), [`promote`](Client::promote), [`replay_dead`](Client::replay_dead), [`purge_dead`](Client::purge_dead), [`delete_schedule`](Client::delete_schedule), [`trigger_schedule`](Client::trigger_schedule), [`append_logs`](Client::append_logs) | [`health_live`](Client::health_live), [`health_ready`](Client::health_ready): a health check reports, it does not insist |
///
/// ¹ The connection was refused (nothing was sent), or the server answered `429 rate_limited` or
/// `503 unavailable`, which the API defines as "nothing done, retry".
/// ² A repeat whose first attempt did land answers `lease_lost` for a failure or a release (only
/// completions are recognised as repeats): the outcome was recorded.
/// ³ A repeat returns the job the first attempt made, with `created: false` — unless it already finished
/// and the queue's unique window has passed, in which case a second job is made.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    request_timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the API key.
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field("api_key", &self.inner.auth.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.inner.request_timeout)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// Builds a [`Client`]: see [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientBuilder {
    /// Sends `Authorization: Bearer <key>` with every request.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// How long one attempt of a request may take, answer included (default 30 s). A fetch gets its
    /// long-poll wait on top.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long making a connection may take (default 10 s, and never more than the request timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How failures are retried (default [`RetryPolicy::default`]; [`RetryPolicy::none`] turns retries
    /// off).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The client. Fails on a base URL that is not `http://` (or `https://` with the `tls` feature) or an
    /// API key that cannot be a header.
    pub fn build(self) -> Result<Client> {
        let mut base = Url::parse(&self.base_url)
            .map_err(|e| Error::InvalidRequest(format!("base URL {:?}: {e}", self.base_url)))?;
        match base.scheme() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => {
                return Err(Error::InvalidRequest(
                    "https:// needs errand-client's `tls` feature".into(),
                ));
            }
            other => {
                return Err(Error::InvalidRequest(format!(
                    "base URL scheme {other:?}: expected http or https"
                )));
            }
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(Error::InvalidRequest(format!(
                "base URL {:?} has no host",
                self.base_url
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let auth = self
            .api_key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    Error::InvalidRequest("the API key has characters a header cannot carry".into())
                })?;
                v.set_sensitive(true);
                Ok::<_, Error>(v)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout.min(self.request_timeout))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::InvalidRequest(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                request_timeout: self.request_timeout,
                retry: self.retry,
            }),
        })
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7700`) with the default settings.
    pub fn new(base_url: impl Into<String>) -> Result<Client> {
        Client::builder(base_url).build()
    }

    /// A builder for a client of the server at `base_url`; a path in it (`https://host/errand`) prefixes
    /// every route.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }
}
