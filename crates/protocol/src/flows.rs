//! The bodies of the server's `routes/flows.rs`: a parent job and its children, enqueued together. Each
//! job of a flow is an [`EnqueueJob`]; its children are listed as a [`JobPage`](crate::JobPage).

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use crate::schema;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::object::object_only;
use crate::{EnqueueJob, Enqueued};

object_only!(FlowRequest, FlowJob);

/// `POST /v1/flows`: a parent job that waits (`waiting_children`) until each child completed, then
/// runs and reads its children's results (`GET /v1/jobs/{id}/children`). All or nothing; no unique keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FlowRequest {
    pub parent: FlowJob,
    /// 1 to 1,000 children.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub children: Vec<FlowJob>,
}

/// A job of a flow, with its queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FlowJob {
    #[cfg_attr(feature = "openapi", schema(value_type = schema::JobQueueName))]
    pub queue: String,
    /// A job of a flow takes no `unique_key` (nor, therefore, `dedup: replace`).
    pub job: EnqueueJob,
}

/// What `POST /v1/flows` created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FlowResponse {
    pub parent: Enqueued,
    pub children: Vec<Enqueued>,
}
