//! The audit log: appending an entry, reading pages of it, and pruning it from the oldest end.

use deadpool_postgres::GenericClient;

use errand_core::engine::raw_json;
use errand_core::{Result, Timestamp};

use crate::sql::Cx;

use super::{execute, get, query};

pub(crate) async fn audit_append(
    c: &impl GenericClient,
    cx: &Cx,
    e: &errand_core::AuditEntry,
) -> Result<()> {
    let detail = e.detail.as_ref().map(|d| d.get());
    query(
        c,
        &cx.sql.audit_append,
        &[&e.at, &e.key, &e.action, &e.target, &detail],
    )
    .await?;
    Ok(())
}

pub(crate) async fn audit_list(
    c: &impl GenericClient,
    cx: &Cx,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<errand_core::AuditEntry>> {
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let rows = query(c, &cx.sql.audit_list, &[&before, &(limit as i64)]).await?;
    rows.iter()
        .map(|r| {
            let id: i64 = get(r, 0)?;
            let detail: Option<String> = get(r, 5)?;
            Ok(errand_core::AuditEntry {
                id: id.max(0) as u64,
                at: get(r, 1)?,
                key: get(r, 2)?,
                action: get(r, 3)?,
                target: get(r, 4)?,
                detail: detail.map(raw_json).transpose()?,
            })
        })
        .collect()
}

/// Removes, among the `limit` oldest entries by id, those made before `before` (see
/// `Store::audit_prune`): a walk of the primary key, bounded by `limit`.
pub(crate) async fn audit_prune(
    c: &impl GenericClient,
    cx: &Cx,
    before: Timestamp,
    limit: usize,
) -> Result<u64> {
    execute(c, &cx.sql.audit_prune, &[&before, &(limit as i64)]).await
}
