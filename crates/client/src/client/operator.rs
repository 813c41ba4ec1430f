//! [`Client`]'s calls about queues (counts, pause, configuration, job listings, dead letters), cron
//! schedules and the server's health, with the parameters of the listings. Calls about one job are in
//! `jobs.rs`; `transport.rs` sends and retries.

use errand_protocol::{
    AlertRuleList, AuditReport, CountResponse, DeadFilter, Enqueued, FlowView, Health, JobPage,
    JobState, QueueConfig, QueueList, QueueView, ScheduleDef, ScheduleList, ScheduleView,
    SilenceList, SilenceRequest, SilenceView, WebhookDef, Whole, WorkerList,
};
use reqwest::Method;

use super::transport::{push_opt, queue_seg, to_body};
use super::{Client, Repeat};
use crate::error::Result;

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

    /// `GET /v1/audit/report`: this deployment checked against `docs/AUDIT.md` (needs `admin`).
    pub async fn audit_report(&self) -> Result<AuditReport> {
        self.get_json(&["v1", "audit", "report"], &[]).await
    }

    /// `PUT /v1/queues/{queue}/webhooks/{name}`: tell `webhook.url` of the queue's jobs that end (and
    /// of its alerts), as its `events` say.
    pub async fn put_webhook(&self, queue: &str, name: &str, webhook: &WebhookDef) -> Result<()> {
        let body = to_body(webhook)?;
        let _: serde_json::Value = self
            .call(
                Method::PUT,
                &[
                    "v1",
                    "queues",
                    queue_seg(queue)?,
                    "webhooks",
                    queue_seg(name)?,
                ],
                &[],
                Some(body),
                Repeat::Safe,
                self.inner.request_timeout,
            )
            .await?;
        Ok(())
    }

    /// `GET /v1/queues/{queue}/flow`: the queue's flow control as it stands.
    pub async fn queue_flow(&self, queue: &str) -> Result<FlowView> {
        self.get_json(&["v1", "queues", queue_seg(queue)?, "flow"], &[])
            .await
    }

    /// `GET /v1/alerts/rules`: the built-in alert rules in force.
    pub async fn alert_rules(&self) -> Result<AlertRuleList> {
        self.get_json(&["v1", "alerts", "rules"], &[]).await
    }

    /// `GET /v1/alerts/silences`: the alert silences in force.
    pub async fn silences(&self) -> Result<SilenceList> {
        self.get_json(&["v1", "alerts", "silences"], &[]).await
    }

    /// `POST /v1/alerts/silences`: the rule fires untold on the queue (`*`: every queue) until the
    /// silence ends (needs `admin`).
    pub async fn silence(&self, req: &SilenceRequest) -> Result<SilenceView> {
        let body = to_body(req)?;
        self.call(
            Method::POST,
            &["v1", "alerts", "silences"],
            &[],
            Some(body),
            Repeat::Safe,
            self.inner.request_timeout,
        )
        .await
    }

    /// `DELETE /v1/alerts/silences/{queue}/{rule}`: ends a silence early; `count` 0 when none was in
    /// force.
    pub async fn unsilence(&self, queue: &str, rule: &str) -> Result<CountResponse> {
        self.call(
            Method::DELETE,
            &["v1", "alerts", "silences", queue, rule],
            &[],
            None,
            Repeat::IfUntouched,
            self.inner.request_timeout,
        )
        .await
    }

    /// `GET /v1/workers`: the workers this node saw in the last minute, with what each said of itself.
    pub async fn workers(&self) -> Result<WorkerList> {
        self.get_json(&["v1", "workers"], &[]).await
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
        push_opt(&mut query, "limit", filter.limit.map(Whole::get));
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
    /// an [`Error::Api`](crate::Error::Api) with status 503 and its reason as the message. Not retried.
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
}
