//! [`Client`]'s calls about one job: enqueue it (alone, in a batch, in a flow), look at it (get, wait,
//! logs, children), operate on it (cancel, retry, promote) and work it (fetch, heartbeat, acknowledge,
//! log). Each names its route and how safely it repeats; `transport.rs` sends and retries.

use std::time::Duration;

use errand_protocol::{
    AckBatchRequest, AckBatchResponse, AckResponse, CancelResponse, CompleteRequest, CountResponse,
    EnqueueJob, Enqueued, EnqueuedBatch, FailRequest, FetchRequest, FetchResponse, FlowRequest,
    FlowResponse, HeartbeatRequest, HeartbeatResponse, JobLogs, JobPage, JobStateResponse, JobView,
    LogRequest, ReleaseRequest,
};
use reqwest::Method;
use serde::Serialize;

use super::transport::{queue_seg, to_body};
use super::{Client, Repeat};
use crate::error::Result;

impl Client {
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
}
