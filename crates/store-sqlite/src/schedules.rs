//! The SQL of cron schedules. A definition is kept as the JSON text of `ScheduleDef`; firing a tick is
//! a compare-and-set on `next_run_at` and the tick's job insert, in the writer's one transaction.

use rusqlite::{Connection, OptionalExtension, Row, params};

use errand_core::store::{Fired, JobInsert, ScheduleFire};
use errand_core::{Result, Schedule, Timestamp};

use crate::conn::backend;
use crate::ops::{InsertRow, corrupt_field, job_insert, json_text};

const COLUMNS: &str =
    "name, def, paused, next_run_at, last_run_at, last_job_id, created_at, updated_at";

/// A row as read, decoded off the SQLite types (the JSON definition is parsed by `decode`).
pub(crate) struct ScheduleRow {
    name: String,
    def: String,
    paused: bool,
    next_run_at: Option<i64>,
    last_run_at: Option<i64>,
    last_job_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

fn row(r: &Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: r.get(0)?,
        def: r.get(1)?,
        paused: r.get(2)?,
        next_run_at: r.get(3)?,
        last_run_at: r.get(4)?,
        last_job_id: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

impl ScheduleRow {
    pub(crate) fn decode(self) -> Result<Schedule> {
        Ok(Schedule {
            def: serde_json::from_str(&self.def)
                .map_err(|e| corrupt_field("schedule definition", e))?,
            last_job_id: self
                .last_job_id
                .map(|id| id.parse().map_err(|e| corrupt_field("schedule job id", e)))
                .transpose()?,
            name: self.name,
            paused: self.paused,
            next_run_at: self.next_run_at,
            last_run_at: self.last_run_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(crate) fn decode_all(rows: Vec<ScheduleRow>) -> Result<Vec<Schedule>> {
    rows.into_iter().map(ScheduleRow::decode).collect()
}

pub(crate) fn put(conn: &Connection, s: &Schedule, def: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR FAIL INTO schedules (name, def, paused, next_run_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (name) DO UPDATE SET def = excluded.def, \
             next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
    )
    .map_err(backend)?
    .execute(params![
        s.name,
        def,
        s.paused,
        s.next_run_at,
        s.created_at,
        s.updated_at
    ])
    .map_err(backend)?;
    Ok(())
}

/// The JSON text of a schedule's definition, made off the writer thread.
pub(crate) fn def_text(s: &Schedule) -> Result<String> {
    json_text(&s.def)
}

pub(crate) fn get(conn: &Connection, name: &str) -> Result<Option<ScheduleRow>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE name = ?1"))
        .map_err(backend)?
        .query_row([name], row)
        .optional()
        .map_err(backend)
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<ScheduleRow>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))
        .map_err(backend)?;
    let rows = stmt.query_map([], row).map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

pub(crate) fn due(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<ScheduleRow>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE NOT paused AND next_run_at <= ?1 \
             ORDER BY next_run_at, name LIMIT ?2"
        ))
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![now, limit as i64], row)
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

pub(crate) fn delete(conn: &Connection, name: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM schedules WHERE name = ?1")
        .map_err(backend)?
        .execute([name])
        .map_err(backend)?;
    Ok(n > 0)
}

pub(crate) fn set_paused(
    conn: &Connection,
    name: &str,
    paused: bool,
    next_run_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE OR FAIL schedules SET paused = ?2, next_run_at = ?3, updated_at = ?4 \
             WHERE name = ?1",
        )
        .map_err(backend)?
        .execute(params![name, paused, next_run_at, now])
        .map_err(backend)?;
    Ok(n > 0)
}

/// Fires a tick if it is still the schedule's (see `ScheduleFire`). Runs on the writer thread, so the
/// compare-and-set and the insert are one transaction.
pub(crate) fn fire(
    conn: &Connection,
    p: &ScheduleFire,
    insert: Option<&(JobInsert, Vec<InsertRow>)>,
) -> Result<Fired> {
    let moved = conn
        .prepare_cached(
            "UPDATE OR FAIL schedules SET next_run_at = ?3, last_run_at = COALESCE(?4, last_run_at), \
             updated_at = ?5 WHERE name = ?1 AND next_run_at = ?2 AND NOT paused",
        )
        .map_err(backend)?
        .execute(params![p.name, p.expect_next, p.next, p.tick, p.now])
        .map_err(backend)?;
    if moved == 0 {
        return Ok(Fired::Stale);
    }
    let Some((jobs, rows)) = insert else {
        return Ok(Fired::Moved { job: None });
    };
    let inserted = job_insert(conn, jobs, rows)?.pop();
    if let (Some(ins), Some(spec)) = (&inserted, jobs.jobs.first()) {
        let id = match ins {
            errand_core::store::Inserted::New => spec.id,
            errand_core::store::Inserted::Existing { id, .. } => *id,
        };
        conn.prepare_cached("UPDATE OR FAIL schedules SET last_job_id = ?2 WHERE name = ?1")
            .map_err(backend)?
            .execute(params![p.name, id.to_string()])
            .map_err(backend)?;
    }
    Ok(Fired::Moved { job: inserted })
}
