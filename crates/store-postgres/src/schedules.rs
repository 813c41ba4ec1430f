//! The SQL of cron schedules. A definition is kept as the JSON text of `ScheduleDef`; firing a tick is
//! a compare-and-set on `next_run_at` and the tick's job insert, in one transaction.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use errand_core::store::{Fired, Inserted, ScheduleFire};
use errand_core::{Result, Schedule, Timestamp};

use errand_core::store::row::{corrupt_field, parse_id};

use crate::ops::{execute, get, job_insert, json_text, query, query_opt};
use crate::sql::Cx;

fn decode(r: &Row) -> Result<Schedule> {
    let def: String = get(r, 1)?;
    Ok(Schedule {
        name: get(r, 0)?,
        def: serde_json::from_str(&def).map_err(|e| corrupt_field("schedule definition", e))?,
        paused: get(r, 2)?,
        next_run_at: get(r, 3)?,
        last_run_at: get(r, 4)?,
        last_job_id: get::<Option<String>>(r, 5)?
            .map(|id| parse_id(&id))
            .transpose()?,
        created_at: get(r, 6)?,
        updated_at: get(r, 7)?,
    })
}

pub(crate) async fn put(c: &impl GenericClient, cx: &Cx, s: &Schedule) -> Result<()> {
    let def = json_text(&s.def)?;
    execute(
        c,
        &cx.sql.schedule_put,
        &[
            &s.name,
            &def,
            &s.paused,
            &s.next_run_at,
            &s.created_at,
            &s.updated_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn get_one(
    c: &impl GenericClient,
    cx: &Cx,
    name: &str,
) -> Result<Option<Schedule>> {
    query_opt(c, &cx.sql.schedule_get, &[&name])
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

pub(crate) async fn list(c: &impl GenericClient, cx: &Cx) -> Result<Vec<Schedule>> {
    query(c, &cx.sql.schedule_list, &[])
        .await?
        .iter()
        .map(decode)
        .collect()
}

pub(crate) async fn due(
    c: &impl GenericClient,
    cx: &Cx,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Schedule>> {
    query(c, &cx.sql.schedule_due, &[&now, &(limit as i64)])
        .await?
        .iter()
        .map(decode)
        .collect()
}

pub(crate) async fn delete(c: &impl GenericClient, cx: &Cx, name: &str) -> Result<bool> {
    Ok(execute(c, &cx.sql.schedule_delete, &[&name]).await? > 0)
}

pub(crate) async fn set_paused(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, bool, Option<Timestamp>, Timestamp),
) -> Result<bool> {
    let (name, paused, next, now) = p;
    Ok(execute(c, &cx.sql.schedule_set_paused, &[name, paused, next, now]).await? > 0)
}

/// Fires a tick if it is still the schedule's (see `ScheduleFire`), in the caller's transaction. The
/// UPDATE's row lock makes a second node's compare-and-set wait for this one and then find the tick
/// gone.
pub(crate) async fn fire(c: &impl GenericClient, cx: &Cx, p: &ScheduleFire) -> Result<Fired> {
    let moved = execute(
        c,
        &cx.sql.schedule_move,
        &[&p.name, &p.expect_next, &p.next, &p.tick, &p.now],
    )
    .await?;
    if moved == 0 {
        return Ok(Fired::Stale);
    }
    let Some(spec) = &p.job else {
        return Ok(Fired::Moved { job: None });
    };
    let inserted = job_insert(c, cx, std::slice::from_ref(spec)).await?.pop();
    if let Some(ins) = &inserted {
        let id = match ins {
            Inserted::New => spec.id,
            Inserted::Existing { id, .. } => *id,
        };
        execute(c, &cx.sql.schedule_last_job, &[&p.name, &id.to_string()]).await?;
    }
    Ok(Fired::Moved { job: inserted })
}
