//! The handlers, by who calls them: `jobs` (producers and operators), `work` (workers), `queues`
//! (queues, listings, dead letters), `schedules` (cron), `observe` (metrics, events, alerts), `health`.

pub mod flows;
pub mod health;
pub mod jobs;
pub mod observe;
pub mod queues;
pub mod schedules;
pub mod work;

use errand_core::engine::OWN_QUEUE_PREFIX;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Records an operator's action, done, in the audit log with the caller's key name. The action stands
/// whatever happens here: a failed write is logged as an error, not answered.
pub(crate) async fn audit(
    s: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    detail: Option<serde_json::Value>,
) {
    let key = caller.name();
    tracing::info!(key, action, target, "audit");
    if let Err(e) = s.engine.audit(key, action, target, detail.as_ref()).await {
        tracing::error!(key, action, target, "the audit log was not written: {e}");
    }
}

/// Refuses a queue of Errand's own (`errand.*`, the webhook deliveries) where a caller would put jobs
/// in it or work it: a delivery is signed with a webhook's secret, so only the server may make one,
/// and only its deliverer may take one. Operators still list, replay and purge their dead letters.
pub(crate) fn not_own_queue(field: &str, queue: &str) -> ApiResult<()> {
    if queue.starts_with(OWN_QUEUE_PREFIX) {
        return Err(ApiError::invalid(
            field,
            format!(
                "queues named {OWN_QUEUE_PREFIX}* are Errand's own: no jobs or workers from outside"
            ),
        ));
    }
    Ok(())
}
