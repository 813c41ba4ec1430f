//! Queues: their config and pause state, one or all.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use errand_core::{QueueConfig, QueueInfo, Result};

use errand_core::store::row::corrupt_field;

use crate::sql::Cx;

use super::{execute, get, json_text, notify, query, query_opt};

pub(crate) async fn queue_put(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, QueueConfig),
) -> Result<()> {
    let (name, config) = p;
    execute(c, &cx.sql.queue_put, &[name, &json_text(config)?]).await?;
    Ok(())
}

/// Pauses or resumes a queue. A resumed queue's waiting jobs are claimable again: other nodes' fetches
/// are woken as for new jobs.
pub(crate) async fn queue_set_paused(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, bool),
) -> Result<()> {
    let (name, paused) = p;
    execute(c, &cx.sql.queue_set_paused, &[name, paused]).await?;
    if !paused {
        notify(c, cx, [name.as_str()]).await?;
    }
    Ok(())
}

fn decode_queue(r: &Row) -> Result<QueueInfo> {
    let config: Option<String> = get(r, 1)?;
    Ok(QueueInfo {
        name: get(r, 0)?,
        config: match config {
            Some(c) => serde_json::from_str(&c).map_err(|e| corrupt_field("queue config", e))?,
            None => QueueConfig::default(),
        },
        paused: get(r, 2)?,
    })
}

pub(crate) async fn queue_get(
    c: &impl GenericClient,
    cx: &Cx,
    name: &str,
) -> Result<Option<QueueInfo>> {
    query_opt(c, &cx.sql.queue_get, &[&name])
        .await?
        .as_ref()
        .map(decode_queue)
        .transpose()
}

pub(crate) async fn queue_list(c: &impl GenericClient, cx: &Cx) -> Result<Vec<QueueInfo>> {
    query(c, &cx.sql.queue_list, &[])
        .await?
        .iter()
        .map(decode_queue)
        .collect()
}
