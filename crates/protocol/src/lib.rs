//! The wire types of Errand's HTTP API (`/v1`), shared by the server and the Rust client so that a client
//! never compiles the engine. `docs/API.md` shows each route with a curl example; the server derives
//! `/openapi.json` from these types.
//!
//! Conventions: every instant is milliseconds since the Unix epoch (`*_at`), every duration is in
//! milliseconds (`*_ms`), JSON documents a producer or worker sends (payload, result, progress) are passed
//! through as they are. Requests refuse unknown fields, so that a misspelt option is an error rather than
//! silently ignored. Errors are always [`ErrorBody`].
//!
//! The types are kept in one module per route group of the server (`routes/*.rs`), beside what the
//! groups share: a job as it is shown (`job`), errors (`error`, [`code`]), the integers of requests
//! ([`Whole`]) and the names of the description (`schema`). Every type is re-exported here, so a path
//! never says which route uses it.

mod error;
mod flows;
mod health;
mod job;
mod jobs;
mod object;
mod observe;
mod queues;
mod schedules;
mod whole;
mod work;

#[cfg(feature = "openapi")]
pub mod schema;

pub use error::{ErrorBody, ErrorDetail, code};
pub use flows::{FlowJob, FlowRequest, FlowResponse};
pub use health::Health;
pub use job::{AttemptError, Backoff, BackoffKind, JobPage, JobState, JobView, LeaseView};
pub use jobs::{
    CancelResponse, Dedup, EnqueueBatch, EnqueueJob, Enqueued, EnqueuedBatch, JobLogs,
    JobStateResponse, LogLineView, ParentOnDead,
};
pub use observe::{
    ActivityBucket, ActivityHistory, AlertList, AlertRuleList, AlertRuleView, AlertView,
    AuditCheck, AuditPage, AuditReport, AuditView, EventView, EventsMissed, SilenceList,
    SilenceRequest, SilenceView, Verdict, WhoAmI, WorkerList, WorkerView,
};
#[cfg(feature = "openapi")]
pub use queues::WebhookEvent;
pub use queues::{
    BucketView, CountResponse, DeadFilter, DeadGroupList, DeadGroupView, FlowView, GroupFlowView,
    QueueConfig, QueueCounts, QueueList, QueuePolicy, QueueView, RateLimit, Retention,
    UniqueWindow, WebhookDef, WebhookList, WebhookView,
};
pub use schedules::{Missed, ScheduleDef, ScheduleList, ScheduleView};
pub use whole::Whole;
pub use work::{
    AckBatchRequest, AckBatchResponse, AckItem, AckResponse, AckResult, CompleteRequest,
    FailRequest, FetchRequest, FetchResponse, FetchedJob, HeartbeatRequest, HeartbeatResponse,
    LogRequest, ReleaseRequest, WorkerReport,
};

/// The path prefix of every API route.
pub const API_PREFIX: &str = "/v1";
