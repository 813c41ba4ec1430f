//! Cron schedules: define, list, pause and resume, trigger, delete. The server's maintenance pass fires
//! their ticks (see `errand_core::schedule`).
//!
//! Scopes: `read` to look, `admin` to change, `produce` to trigger; a key limited to queue prefixes sees
//! and touches only schedules whose jobs go to its queues.

use axum::extract::State;
use axum::http::StatusCode;
use errand_protocol::{Enqueued, ScheduleDef, ScheduleList, ScheduleView};

use crate::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::ApiResult;
use crate::extract::{Authorized, Json, Path, scope};
use crate::routes::answers::{Invalid, JsonBody, Keyed, NotFound, Unavailable};

/// Ticks shown ahead in a schedule's view.
const NEXT_RUNS: usize = 5;

fn view(s: &AppState, schedule: errand_core::Schedule) -> ApiResult<ScheduleView> {
    let next = s.engine.next_runs(&schedule, NEXT_RUNS)?;
    Ok(convert::schedule_view(schedule, next))
}

/// The schedule `name`, if the caller may use its queue (403 otherwise, as for jobs of other queues).
async fn visible(s: &AppState, caller: &Caller, name: &str) -> ApiResult<errand_core::Schedule> {
    let schedule = s.engine.schedule(name).await?;
    caller.require_queue(&schedule.def.queue)?;
    Ok(schedule)
}

/// Every schedule the caller may see, by name.
#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList), Keyed, Unavailable)
)]
pub async fn list_schedules(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Read>,
) -> ApiResult<axum::Json<ScheduleList>> {
    let mut schedules = Vec::new();
    for schedule in s.engine.schedules().await? {
        if caller.allows_queue(&schedule.def.queue) {
            schedules.push(view(&s, schedule)?);
        }
    }
    Ok(axum::Json(ScheduleList { schedules }))
}

/// One schedule, with its next ticks.
#[utoipa::path(
    get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = errand_protocol::schema::Name, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn get_schedule(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(name),
        ..
    }: Authorized<scope::Read, Path<String>>,
) -> ApiResult<axum::Json<ScheduleView>> {
    let schedule = visible(&s, &caller, &name).await?;
    Ok(axum::Json(view(&s, schedule)?))
}

/// Create or replace a schedule. Its next tick is computed from now: replacing a schedule never fires
/// a tick that already passed. An invalid expression, zone or job option is a 400 naming the field.
#[utoipa::path(
    put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = errand_protocol::schema::Name, Path, description = "schedule name")),
    request_body = ScheduleDef,
    responses((status = 200, body = ScheduleView), Invalid, Keyed, JsonBody, Unavailable)
)]
pub async fn put_schedule(
    State(s): State<AppState>,
    Authorized { caller, .. }: Authorized<scope::Admin>,
    Path(name): Path<String>,
    Json(def): Json<ScheduleDef>,
) -> ApiResult<axum::Json<ScheduleView>> {
    caller.require_queue(&def.queue)?;
    super::not_own_queue("queue", &def.queue)?;
    if let Ok(existing) = s.engine.schedule(&name).await {
        // Moving a schedule onto one's own queues must not take it from someone else's.
        caller.require_queue(&existing.def.queue)?;
    }
    // The job's payload may hold secrets: the audit log keeps the rest.
    let mut detail = serde_json::to_value(&def).ok();
    if let Some(d) = detail.as_mut().and_then(|d| d.as_object_mut()) {
        d.remove("payload");
    }
    let schedule = s
        .engine
        .put_schedule(&name, convert::schedule_def_from_wire(def))
        .await?;
    super::audit(&s, &caller, "schedule.put", &name, detail).await;
    Ok(axum::Json(view(&s, schedule)?))
}

/// Delete a schedule; answers what it was. Jobs it already enqueued stay.
#[utoipa::path(
    delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = errand_protocol::schema::Name, Path, description = "schedule name")),
    responses((status = 200, description = "the deleted schedule", body = ScheduleView), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn delete_schedule(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(name),
        ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<ScheduleView>> {
    let schedule = visible(&s, &caller, &name).await?;
    let shown = view(&s, schedule)?;
    s.engine.delete_schedule(&name).await?;
    super::audit(&s, &caller, "schedule.delete", &name, None).await;
    Ok(axum::Json(shown))
}

/// Stop firing ticks until resumed.
#[utoipa::path(
    post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = errand_protocol::schema::Name, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn pause_schedule(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(name),
        ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<ScheduleView>> {
    set_paused(&s, &caller, &name, true).await
}

/// Fire again from the next tick after now (ticks that passed while paused are skipped).
#[utoipa::path(
    post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = errand_protocol::schema::Name, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn resume_schedule(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(name),
        ..
    }: Authorized<scope::Admin, Path<String>>,
) -> ApiResult<axum::Json<ScheduleView>> {
    set_paused(&s, &caller, &name, false).await
}

/// Pauses or resumes a schedule, for a caller whose `admin` scope was checked.
async fn set_paused(
    s: &AppState,
    caller: &Caller,
    name: &str,
    paused: bool,
) -> ApiResult<axum::Json<ScheduleView>> {
    visible(s, caller, name).await?;
    let schedule = if paused {
        s.engine.pause_schedule(name).await?
    } else {
        s.engine.resume_schedule(name).await?
    };
    let action = if paused {
        "schedule.pause"
    } else {
        "schedule.resume"
    };
    super::audit(s, caller, action, name, None).await;
    Ok(axum::Json(view(s, schedule)?))
}

/// Enqueue the schedule's job now, outside its ticks (paused or not).
#[utoipa::path(
    post, path = "/v1/schedules/{name}/trigger", tag = "schedules",
    params(("name" = errand_protocol::schema::Name, Path, description = "schedule name")),
    responses((status = 201, body = Enqueued), Invalid, Keyed, NotFound, Unavailable)
)]
pub async fn trigger_schedule(
    State(s): State<AppState>,
    Authorized {
        caller,
        parts: Path(name),
        ..
    }: Authorized<scope::Produce, Path<String>>,
) -> ApiResult<(StatusCode, axum::Json<Enqueued>)> {
    visible(&s, &caller, &name).await?;
    let out = s.engine.trigger_schedule(&name).await?;
    let detail = serde_json::json!({"job_id": out.id.to_string()});
    super::audit(&s, &caller, "schedule.trigger", &name, Some(detail)).await;
    Ok((StatusCode::CREATED, axum::Json(convert::enqueued(out))))
}
