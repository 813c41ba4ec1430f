//! [`Client`]: one method per route of the HTTP API, with retries for the requests that are safe to repeat.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use errand_protocol::{
    AckBatchRequest, AckBatchResponse, AckResponse, CancelResponse, CompleteRequest, CountResponse,
    DeadFilter, EnqueueJob, Enqueued, EnqueuedBatch, ErrorBody, FailRequest, FetchRequest,
    FetchResponse, FlowRequest, FlowResponse, Health, HeartbeatRequest, HeartbeatResponse, JobLogs,
    JobPage, JobState, JobStateResponse, JobView, LogRequest, QueueConfig, QueueList, QueueView,
    ReleaseRequest, ScheduleDef, ScheduleList, ScheduleView, code,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

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

/// Which jobs of a queue [`Client::list_jobs`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListJobs {
    /// Only jobs in this state.
    pub state: JobState,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs holding this unique key.
    pub unique_key: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// At most this many (server default 100, at most 1,000).
    pub limit: Option<u64>,
}

impl ListJobs {
    /// The first page of the jobs in `state`.
    pub fn new(state: JobState) -> Self {
        ListJobs {
            state,
            kind: None,
            unique_key: None,
            cursor: None,
            limit: None,
        }
    }
}

/// Which dead jobs [`Client::dead_jobs`] lists. Everything left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadJobs {
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs whose latest error message contains this text.
    pub error_contains: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// At most this many (server default 100).
    pub limit: Option<u64>,
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

    // --- producers and operators -------------------------------------------------------------

    /// `POST /v1/queues/{queue}/jobs`: enqueue one job. `created` is `false` when its unique key matched
    /// an existing job (whose id is returned). Retried on every passing failure only when the job has a
    /// `unique_key`; see [`Client`].
    pub async fn enqueue(&self, queue: &str, job: &EnqueueJob) -> Result<Enqueued> {
        let repeat = if job.unique_key.is_some() {
            Repeat::Safe
        } else {
            Repeat::IfUntouched
        };
        self.post(&["v1", "queues", queue_seg(queue)?, "jobs"], job, repeat)
            .await
    }

    /// `POST /v1/queues/{queue}/jobs` with `{"jobs": [...]}`: enqueue jobs atomically (all or none),
    /// answered in the order sent. Retried on every passing failure only when every job has a
    /// `unique_key`.
    pub async fn enqueue_batch(&self, queue: &str, jobs: &[EnqueueJob]) -> Result<EnqueuedBatch> {
        #[derive(Serialize)]
        struct Batch<'a> {
            jobs: &'a [EnqueueJob],
        }
        let repeat = if !jobs.is_empty() && jobs.iter().all(|j| j.unique_key.is_some()) {
            Repeat::Safe
        } else {
            Repeat::IfUntouched
        };
        self.post(
            &["v1", "queues", queue_seg(queue)?, "jobs"],
            &Batch { jobs },
            repeat,
        )
        .await
    }

    /// `GET /v1/jobs/{id}`: a job with its state, attempts, errors, progress and result.
    pub async fn get(&self, id: &str) -> Result<JobView> {
        self.get_json(&["v1", "jobs", id], &[]).await
    }

    /// `POST /v1/jobs/{id}/cancel`: a waiting or delayed job is cancelled at once; an active one is asked
    /// to stop (its worker learns of it on its next heartbeat).
    pub async fn cancel(&self, id: &str) -> Result<CancelResponse> {
        self.post_empty(&["v1", "jobs", id, "cancel"], Repeat::IfUntouched)
            .await
    }

    /// `POST /v1/jobs/{id}/retry`: a dead or cancelled job back to waiting, with a fresh attempt budget.
    pub async fn retry(&self, id: &str) -> Result<JobStateResponse> {
        self.post_empty(&["v1", "jobs", id, "retry"], Repeat::IfUntouched)
            .await
    }

    /// `POST /v1/jobs/{id}/promote`: a delayed job due now.
    pub async fn promote(&self, id: &str) -> Result<JobStateResponse> {
        self.post_empty(&["v1", "jobs", id, "promote"], Repeat::IfUntouched)
            .await
    }

    // --- workers -----------------------------------------------------------------------------

    /// `POST /v1/fetch`: claim up to `max_jobs` due jobs, each under a new lease, waiting up to `wait_ms`
    /// for one (the request's timeout is the client's plus the wait). Empty when none came in time.
    ///
    /// Retried only when the request certainly claimed nothing (connection refused, `429`, `503`): a
    /// fetch whose answer was lost leaves its jobs leased to nobody until their leases expire (the server
    /// gives them back at once only if the connection dropped before the claim committed).
    pub async fn fetch(&self, req: &FetchRequest) -> Result<FetchResponse> {
        let timeout = self.inner.request_timeout + Duration::from_millis(req.wait_ms);
        let body = to_body(req)?;
        self.call(
            Method::POST,
            &["v1", "fetch"],
            &[],
            Some(body),
            Repeat::IfUntouched,
            timeout,
        )
        .await
    }

    /// `POST /v1/jobs/{id}/heartbeat`: extend the lease, report progress, learn of a cancel request.
    /// `lease_lost` means the job is no longer yours: stop and do not acknowledge it.
    pub async fn heartbeat(&self, id: &str, req: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        self.post(&["v1", "jobs", id, "heartbeat"], req, Repeat::Safe)
            .await
    }

    /// `POST /v1/jobs/{id}/complete`: the job succeeded. A repeat of the same lease's completion (a retry
    /// whose first answer was lost) answers success with `duplicate: true`.
    pub async fn complete(&self, id: &str, req: &CompleteRequest) -> Result<AckResponse> {
        self.post(&["v1", "jobs", id, "complete"], req, Repeat::Safe)
            .await
    }

    /// `POST /v1/jobs/{id}/fail`: the attempt failed; the job is retried after its backoff (or
    /// `retry_after_ms`), or dies. After a retry, `lease_lost` may mean the first attempt landed.
    pub async fn fail(&self, id: &str, req: &FailRequest) -> Result<AckResponse> {
        self.post(&["v1", "jobs", id, "fail"], req, Repeat::Safe)
            .await
    }

    /// `POST /v1/jobs/{id}/release`: give back a job fetched but not started; it is due again at once and
    /// the attempt is not counted. After a retry, `lease_lost` may mean the first attempt landed.
    pub async fn release(&self, id: &str, req: &ReleaseRequest) -> Result<AckResponse> {
        self.post(&["v1", "jobs", id, "release"], req, Repeat::Safe)
            .await
    }

    /// `POST /v1/jobs/{id}/logs`: append lines to the job's log under its lease (at most 100 per
    /// request). Not repeated after a timeout: a repeat could log the lines twice.
    pub async fn append_logs(&self, id: &str, req: &LogRequest) -> Result<CountResponse> {
        let body = to_body(req)?;
        self.call(
            Method::POST,
            &["v1", "jobs", id, "logs"],
            &[],
            Some(body),
            Repeat::IfUntouched,
            self.inner.request_timeout,
        )
        .await
    }

    /// `GET /v1/jobs/{id}/logs`: the job's log, oldest line first.
    pub async fn job_logs(&self, id: &str) -> Result<JobLogs> {
        self.get_json(&["v1", "jobs", id, "logs"], &[]).await
    }

    /// `GET /v1/jobs/{id}/wait`: waits until the job ends (`completed`, `cancelled` or `dead`), at most
    /// `timeout` (the server caps it at its longest long poll, 30 s by default), and answers the job as
    /// it then is — check its `state`, and call again to keep waiting.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<JobView> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.call(
            Method::GET,
            &["v1", "jobs", id, "wait"],
            &[("timeout", ms.to_string())],
            None,
            Repeat::Safe,
            self.inner.request_timeout + timeout,
        )
        .await
    }

    /// `POST /v1/flows`: a parent that waits until each child completed, all or nothing. Not retried
    /// once the server may have written it (a flow takes no unique key to make a repeat harmless).
    pub async fn enqueue_flow(&self, flow: &FlowRequest) -> Result<FlowResponse> {
        self.post(&["v1", "flows"], flow, Repeat::IfUntouched).await
    }

    /// `GET /v1/jobs/{id}/children`: a flow parent's children, with their states and results.
    pub async fn children(&self, id: &str) -> Result<JobPage> {
        self.get_json(&["v1", "jobs", id, "children"], &[]).await
    }

    /// `POST /v1/ack`: many completions, failures and releases in one request; each item succeeds or
    /// fails on its own, answered in the order sent.
    pub async fn ack_batch(&self, req: &AckBatchRequest) -> Result<AckBatchResponse> {
        self.post(&["v1", "ack"], req, Repeat::Safe).await
    }

    // --- queues ------------------------------------------------------------------------------

    /// `GET /v1/queues`: every queue the caller may see, with its counts.
    pub async fn queues(&self) -> Result<QueueList> {
        self.get_json(&["v1", "queues"], &[]).await
    }

    /// `GET /v1/queues/{queue}`: a queue's counts and the age of its oldest waiting job.
    pub async fn queue(&self, queue: &str) -> Result<QueueView> {
        self.get_json(&["v1", "queues", queue_seg(queue)?], &[])
            .await
    }

    /// `POST /v1/queues/{queue}/pause`: stop handing out the queue's jobs (it still accepts new ones).
    pub async fn pause(&self, queue: &str) -> Result<QueueView> {
        self.post_empty(&["v1", "queues", queue_seg(queue)?, "pause"], Repeat::Safe)
            .await
    }

    /// `POST /v1/queues/{queue}/resume`: hand out the queue's jobs again.
    pub async fn resume(&self, queue: &str) -> Result<QueueView> {
        self.post_empty(&["v1", "queues", queue_seg(queue)?, "resume"], Repeat::Safe)
            .await
    }

    /// `GET /v1/queues/{queue}/config`: the queue's defaults, every field filled in.
    pub async fn queue_config(&self, queue: &str) -> Result<QueueConfig> {
        self.get_json(&["v1", "queues", queue_seg(queue)?, "config"], &[])
            .await
    }

    /// `PUT /v1/queues/{queue}/config`: replace the queue's defaults (fields left out take theirs); they
    /// apply to jobs enqueued afterwards. Answers the configuration in force.
    pub async fn set_queue_config(&self, queue: &str, config: &QueueConfig) -> Result<QueueConfig> {
        let body = to_body(config)?;
        self.call(
            Method::PUT,
            &["v1", "queues", queue_seg(queue)?, "config"],
            &[],
            Some(body),
            Repeat::Safe,
            self.inner.request_timeout,
        )
        .await
    }

    /// `GET /v1/queues/{queue}/jobs`: a page of the queue's jobs in one state, oldest first.
    pub async fn list_jobs(&self, queue: &str, params: &ListJobs) -> Result<JobPage> {
        let mut query = vec![("state", params.state.as_str().to_string())];
        push_opt(&mut query, "kind", params.kind.as_deref());
        push_opt(&mut query, "unique_key", params.unique_key.as_deref());
        push_opt(&mut query, "cursor", params.cursor.as_deref());
        push_opt(&mut query, "limit", params.limit);
        self.get_json(&["v1", "queues", queue_seg(queue)?, "jobs"], &query)
            .await
    }

    /// `GET /v1/queues/{queue}/dead`: a page of the queue's dead jobs, oldest first, with every attempt's
    /// error.
    pub async fn dead_jobs(&self, queue: &str, params: &DeadJobs) -> Result<JobPage> {
        let mut query = Vec::new();
        push_opt(&mut query, "kind", params.kind.as_deref());
        push_opt(
            &mut query,
            "error_contains",
            params.error_contains.as_deref(),
        );
        push_opt(&mut query, "cursor", params.cursor.as_deref());
        push_opt(&mut query, "limit", params.limit);
        self.get_json(&["v1", "queues", queue_seg(queue)?, "dead"], &query)
            .await
    }

    /// `GET /v1/queues/{queue}/dead/groups`: the queue's dead letters grouped by error fingerprint, the
    /// largest groups first.
    pub async fn dead_groups(&self, queue: &str) -> Result<errand_protocol::DeadGroupList> {
        self.get_json(&["v1", "queues", queue_seg(queue)?, "dead", "groups"], &[])
            .await
    }

    /// `POST /v1/queues/{queue}/dead/replay`: the dead jobs matching `filter` back to waiting, with fresh
    /// attempts and the same idempotency keys. Answers how many.
    pub async fn replay_dead(&self, queue: &str, filter: &DeadFilter) -> Result<CountResponse> {
        self.post(
            &["v1", "queues", queue_seg(queue)?, "dead", "replay"],
            filter,
            Repeat::IfUntouched,
        )
        .await
    }

    /// `DELETE /v1/queues/{queue}/dead`: delete the dead jobs matching `filter` for good. Answers how
    /// many.
    pub async fn purge_dead(&self, queue: &str, filter: &DeadFilter) -> Result<CountResponse> {
        let mut query = Vec::new();
        push_opt(&mut query, "kind", filter.kind.as_deref());
        push_opt(
            &mut query,
            "error_contains",
            filter.error_contains.as_deref(),
        );
        push_opt(&mut query, "fingerprint", filter.fingerprint.as_deref());
        push_opt(&mut query, "limit", filter.limit);
        self.call(
            Method::DELETE,
            &["v1", "queues", queue_seg(queue)?, "dead"],
            &query,
            None,
            Repeat::IfUntouched,
            self.inner.request_timeout,
        )
        .await
    }

    // --- schedules ---------------------------------------------------------------------------

    /// `GET /v1/schedules`: every schedule the key may see.
    pub async fn schedules(&self) -> Result<ScheduleList> {
        self.get_json(&["v1", "schedules"], &[]).await
    }

    /// `GET /v1/schedules/{name}`: one schedule with its next ticks.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView> {
        self.get_json(&["v1", "schedules", queue_seg(name)?], &[])
            .await
    }

    /// `PUT /v1/schedules/{name}`: create or replace a schedule (its next tick is computed from now).
    pub async fn put_schedule(&self, name: &str, def: &ScheduleDef) -> Result<ScheduleView> {
        let body = to_body(def)?;
        self.call(
            Method::PUT,
            &["v1", "schedules", queue_seg(name)?],
            &[],
            Some(body),
            Repeat::Safe,
            self.inner.request_timeout,
        )
        .await
    }

    /// `DELETE /v1/schedules/{name}`: delete a schedule; answers what it was.
    pub async fn delete_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.call(
            Method::DELETE,
            &["v1", "schedules", queue_seg(name)?],
            &[],
            None,
            Repeat::IfUntouched,
            self.inner.request_timeout,
        )
        .await
    }

    /// `POST /v1/schedules/{name}/pause`: fire no ticks until resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.post_empty(
            &["v1", "schedules", queue_seg(name)?, "pause"],
            Repeat::Safe,
        )
        .await
    }

    /// `POST /v1/schedules/{name}/resume`: fire again from the next tick after now.
    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.post_empty(
            &["v1", "schedules", queue_seg(name)?, "resume"],
            Repeat::Safe,
        )
        .await
    }

    /// `POST /v1/schedules/{name}/trigger`: enqueue the schedule's job now. Not repeated after a
    /// timeout (a repeat would enqueue a second job).
    pub async fn trigger_schedule(&self, name: &str) -> Result<Enqueued> {
        self.post_empty(
            &["v1", "schedules", queue_seg(name)?, "trigger"],
            Repeat::IfUntouched,
        )
        .await
    }

    // --- health ------------------------------------------------------------------------------

    /// `GET /health/live`: the process answers. Not retried.
    pub async fn health_live(&self) -> Result<Health> {
        self.call(
            Method::GET,
            &["health", "live"],
            &[],
            None,
            Repeat::Never,
            self.inner.request_timeout,
        )
        .await
    }

    /// `GET /health/ready`: the store answers and the server is not shutting down. An unready server is
    /// an [`Error::Api`] with status 503 and its reason as the message. Not retried.
    pub async fn health_ready(&self) -> Result<Health> {
        self.call(
            Method::GET,
            &["health", "ready"],
            &[],
            None,
            Repeat::Never,
            self.inner.request_timeout,
        )
        .await
    }

    // --- plumbing ----------------------------------------------------------------------------

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<T> {
        self.call(
            Method::GET,
            path,
            query,
            None,
            Repeat::Safe,
            self.inner.request_timeout,
        )
        .await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &B,
        repeat: Repeat,
    ) -> Result<T> {
        let body = to_body(body)?;
        self.call(
            Method::POST,
            path,
            &[],
            Some(body),
            repeat,
            self.inner.request_timeout,
        )
        .await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &[&str], repeat: Repeat) -> Result<T> {
        self.call(
            Method::POST,
            path,
            &[],
            None,
            repeat,
            self.inner.request_timeout,
        )
        .await
    }

    /// Sends a request, retrying it as its [`Repeat`] and the policy allow.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        repeat: Repeat,
        timeout: Duration,
    ) -> Result<T> {
        let url = self.url(path, query);
        let start = Instant::now();
        let policy = self.inner.retry;
        let mut retries = 0u32;
        loop {
            let err = match self
                .once(method.clone(), url.clone(), body.clone(), timeout)
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let again = match repeat {
                Repeat::Safe => err.is_retryable(),
                Repeat::IfUntouched => err.is_connect() || err.is_refused_untouched(),
                Repeat::Never => false,
            };
            if !again {
                return Err(err);
            }
            let delay = policy.delay(retries, err.retry_after());
            if start.elapsed() + delay > policy.max_elapsed {
                return Err(err);
            }
            tracing::debug!(%method, path = url.path(), error = %err, ?delay, retries, "retrying");
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T> {
        let mut req = self.inner.http.request(method, url).timeout(timeout);
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
                status: status.as_u16(),
                source,
            })
        } else {
            Err(api_error(status, retry_after, &bytes))
        }
    }

    /// The base URL with `path`'s segments percent-encoded after its own path, and `query`.
    fn url(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.inner.base.clone();
        let mut p = url.path().trim_end_matches('/').to_string();
        for seg in path {
            p.push('/');
            encode_segment(seg, &mut p);
        }
        url.set_path(&p);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }
}

fn transport(e: reqwest::Error) -> Error {
    if e.is_builder() {
        Error::InvalidRequest(e.to_string())
    } else {
        Error::Transport(e)
    }
}

/// The error of a non-success answer: the API's `ErrorBody`, or one made up from the status.
fn api_error(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Error {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        return Error::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
            field: b.error.field,
            retry_after,
        };
    }
    let code = match status.as_u16() {
        502..=504 => code::UNAVAILABLE.to_string(),
        429 => code::RATE_LIMITED.to_string(),
        404 => code::NOT_FOUND.to_string(),
        401 => code::UNAUTHORIZED.to_string(),
        403 => code::FORBIDDEN.to_string(),
        s => format!("http_{s}"),
    };
    // `GET /health/ready` answers 503 with a `Health` body naming the reason.
    let message = match serde_json::from_slice::<Health>(body) {
        Ok(h) => h.status,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text.chars().take(512).collect()
            }
        }
    };
    Error::Api {
        status: status.as_u16(),
        code,
        message,
        field: None,
        retry_after,
    }
}

fn to_body<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body)
        .map_err(|e| Error::InvalidRequest(format!("the body does not serialize: {e}")))
}

fn push_opt<V: ToString>(
    query: &mut Vec<(&'static str, String)>,
    name: &'static str,
    v: Option<V>,
) {
    if let Some(v) = v {
        query.push((name, v.to_string()));
    }
}

/// A queue name as a path segment: `.` and `..` would be taken as "this" and "parent" directory by
/// every URL parser (percent-encoded too), so no request could name them.
fn queue_seg(queue: &str) -> Result<&str> {
    if queue == "." || queue == ".." {
        return Err(Error::InvalidRequest(format!(
            "queue {queue:?} cannot be named in a URL"
        )));
    }
    Ok(queue)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that `/ ? # %` and the like in a
/// segment stay in it.
fn encode_segment(seg: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in seg.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_percent_encoded() {
        let c = Client::new("http://127.0.0.1:1/base/").unwrap();
        let url = c.url(
            &["v1", "queues", "pay.v2:eu", "jobs", "a/b?c#d %"],
            &[("kind", "x&y=z +".to_string())],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/v1/queues/pay.v2%3Aeu/jobs/a%2Fb%3Fc%23d%20%25?kind=x%26y%3Dz+%2B"
        );
    }

    #[test]
    fn dot_queues_are_refused_and_bad_urls_too() {
        assert!(queue_seg("..").is_err());
        assert!(queue_seg("a..b").is_ok());
        assert!(matches!(
            Client::new("ftp://x"),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            Client::new("not a url"),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn foreign_error_answers_get_a_code_from_their_status() {
        let e = api_error(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
        assert!(e.is_unavailable() && !e.is_refused_untouched());
        let e = api_error(
            StatusCode::CONFLICT,
            None,
            br#"{"error":{"code":"lease_lost","message":"m"}}"#,
        );
        assert!(e.is_lease_lost());
        let e = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
            br#"{"status":"shutting down"}"#,
        );
        assert!(e.is_refused_untouched());
        assert_eq!(e.to_string(), "unavailable (503): shutting down");
    }
}
