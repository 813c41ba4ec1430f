//! The audit log: appending an entry, reading pages of it, and pruning it from the oldest end.

use rusqlite::{Connection, params};

use errand_core::engine::raw_json;
use errand_core::{Result, Timestamp};

use crate::conn::backend;

pub(crate) fn audit_append(conn: &Connection, e: &errand_core::AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, key, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(backend)?
    .execute(params![
        e.at,
        e.key,
        e.action,
        e.target,
        e.detail.as_ref().map(|d| d.get())
    ])
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn audit_list(
    conn: &Connection,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<errand_core::AuditEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, key, action, target, detail FROM audit WHERE id < ?1 \
             ORDER BY id DESC LIMIT ?2",
        )
        .map_err(backend)?;
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let rows = stmt
        .query_map(params![before, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, at, key, action, target, detail) = row.map_err(backend)?;
        out.push(errand_core::AuditEntry {
            id: id as u64,
            at,
            key,
            action,
            target,
            detail: detail.map(raw_json).transpose()?,
        });
    }
    Ok(out)
}

/// Removes, among the `limit` oldest entries by id, those made before `before` (see
/// `Store::audit_prune`): a walk of the primary key, bounded by `limit`.
pub(crate) fn audit_prune(conn: &Connection, before: Timestamp, limit: usize) -> Result<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM audit WHERE id IN \
             (SELECT id FROM (SELECT id, at FROM audit ORDER BY id LIMIT ?2) WHERE at < ?1)",
        )
        .map_err(backend)?
        .execute(params![before, limit as i64])
        .map_err(backend)?;
    Ok(n as u64)
}
