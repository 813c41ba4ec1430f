//! Queues: their config and pause state, one or all.

use rusqlite::{Connection, OptionalExtension, Row, params};

use errand_core::{QueueConfig, QueueInfo, Result};

use crate::conn::backend;

use super::json_text;

pub(crate) fn queue_put(conn: &Connection, name: &str, config: &QueueConfig) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR FAIL INTO queues (name, config) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config",
    )
    .map_err(backend)?
    .execute(params![name, json_text(config)?])
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn queue_set_paused(conn: &Connection, name: &str, paused: bool) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR FAIL INTO queues (name, paused) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
    )
    .map_err(backend)?
    .execute(params![name, paused])
    .map_err(backend)?;
    Ok(())
}

fn queue_from_row(r: &Row<'_>) -> rusqlite::Result<QueueInfo> {
    let config: Option<String> = r.get(1)?;
    Ok(QueueInfo {
        name: r.get(0)?,
        config: match config {
            Some(c) => serde_json::from_str(&c).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    format!("stored queue config is invalid: {e}").into(),
                )
            })?,
            None => QueueConfig::default(),
        },
        paused: r.get(2)?,
    })
}

pub(crate) fn queue_get(conn: &Connection, name: &str) -> Result<Option<QueueInfo>> {
    conn.prepare_cached("SELECT name, config, paused FROM queues WHERE name = ?1")
        .map_err(backend)?
        .query_row([name], queue_from_row)
        .optional()
        .map_err(backend)
}

pub(crate) fn queue_list(conn: &Connection) -> Result<Vec<QueueInfo>> {
    let mut stmt = conn
        .prepare_cached("SELECT name, config, paused FROM queues ORDER BY name")
        .map_err(backend)?;
    let rows = stmt.query_map([], queue_from_row).map_err(backend)?;
    rows.map(|r| r.map_err(backend)).collect()
}
