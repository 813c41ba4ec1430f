//! Flows: a parent job that runs once its children completed, and reads their results.

use axum::extract::State;
use axum::http::StatusCode;
use errand_protocol::{FlowRequest, FlowResponse, JobPage};

use crate::AppState;
use crate::convert;
use crate::error::ApiResult;
use crate::extract::{Authorized, Json, Path, scope};
use crate::routes::answers::{Invalid, JsonBody, Keyed, NotFound, Unavailable};
use crate::routes::jobs::visible_job;

/// Enqueue a flow: the parent waits in `waiting_children` until each child completed, then runs. A
/// child that dies (or is cancelled) fails the parent, or releases it with `parent_on_dead: release`.
/// All or nothing; unique keys are refused in a flow.
#[utoipa::path(
    post, path = "/v1/flows", tag = "jobs",
    request_body = FlowRequest,
    responses(
        (status = 201, description = "created", body = FlowResponse),
        Invalid, Keyed, JsonBody, Unavailable,
    )
)]
pub async fn enqueue_flow(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Produce>,
    Json(req): Json<FlowRequest>,
) -> ApiResult<(StatusCode, axum::Json<FlowResponse>)> {
    caller.require_queue(&req.parent.queue)?;
    super::not_own_queue("parent.queue", &req.parent.queue)?;
    for (i, child) in req.children.iter().enumerate() {
        caller.require_queue(&child.queue)?;
        super::not_own_queue(&format!("children[{i}].queue"), &child.queue)?;
    }
    let parent = convert::new_job(&req.parent.queue, req.parent.job);
    let children = req
        .children
        .into_iter()
        .map(|c| convert::new_job(&c.queue, c.job))
        .collect();
    let out = s.engine.enqueue_flow(parent, children).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(FlowResponse {
            parent: convert::enqueued(out.parent),
            children: out.children.into_iter().map(convert::enqueued).collect(),
        }),
    ))
}

/// A flow parent's children, in the order they were enqueued: states, results, errors. The parent's
/// worker reads its inputs here.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/children", tag = "jobs",
    params(("id" = errand_protocol::schema::JobId, Path, description = "the parent's id")),
    responses((status = 200, body = JobPage), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn children(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(id),
        ..
    }: Authorized<(scope::Read, scope::Produce, scope::Work), Path<String>>,
) -> ApiResult<axum::Json<JobPage>> {
    let parent = visible_job(&s, &caller, &id).await?;
    let mut jobs = Vec::new();
    for child in s.engine.children(parent.id).await? {
        // Children may live in queues the caller may not see: those are left out.
        if caller.allows_queue(&child.queue) {
            jobs.push(convert::job_view(child));
        }
    }
    Ok(axum::Json(JobPage {
        jobs,
        next_cursor: None,
    }))
}
