//! Guarded state changes: completions in one set-based statement, the rare paths row by row, what a
//! flow child's end does to its parent, promotions of due jobs, cancel requests and replaced inputs.
//! The outcome of each (and the error of a failed guard) is assembled by `errand_core::store::row`.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Row, params};

use errand_core::store::{Guard, JobReplace, Transition, Transitioned};
use errand_core::{DeadReason, Error, ErrorRecord, JobId, JobState, Result, Timestamp};

use errand_core::store::apply;
use errand_core::store::row::{Applied, Completions, Current, ParentRow};

use crate::conn::backend;

use super::insert::OTHER_HOLDS_KEY;
use super::{json_text, run_ready};

/// A guarded transition of one job (see `job_transition`).
static TRANSITION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE OR FAIL jobs SET \
           state = ?4, \
           run_at = COALESCE(?5, run_at), \
           result = COALESCE(?6, result), \
           errors = CASE WHEN ?7 IS NULL THEN errors \
                    ELSE json_insert(COALESCE(errors, '[]'), '$[#]', json(?7)) END, \
           dead_reason = ?8, fingerprint = ?16, \
           attempts = CASE ?9 WHEN 1 THEN MAX(attempts - 1, 0) WHEN 2 THEN 0 ELSE attempts END, \
           stalls = CASE ?9 WHEN 2 THEN 0 ELSE stalls + ?10 END, \
           lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL, \
           cancel_requested = CASE WHEN ?11 THEN cancel_requested ELSE 0 END, \
           finished_at = CASE WHEN ?11 THEN ?12 ELSE NULL END \
         WHERE id = ?1 AND state = ?2 AND (?3 IS NULL OR lease_token = ?3) \
           AND (?13 IS NULL OR cancel_requested = ?13) \
           AND (?15 IS NULL OR lease_expires_at = ?15) \
           AND (?14 IS NULL OR unique_key IS NULL OR NOT ({other_holds_key})) \
         RETURNING queue, kind, attempts, parent_id, parent_on_dead, started_at",
        other_holds_key = *OTHER_HOLDS_KEY
    )
});

/// Encodes the plain completions among `ts` as `[[id, token, result?], ...]` for [`job_transition`]'s
/// one-statement fast path. Done by the caller, off the writer thread. Results are copied as the text
/// they are, never parsed again: a parse and re-print could change a float's digits.
pub(crate) fn completions_json(ts: &[Transition]) -> Result<String> {
    let mut out = String::from("[");
    for t in ts.iter().filter(|t| t.is_plain_completion()) {
        let Guard::Lease(token) = &t.guard else {
            continue;
        };
        if out.len() > 1 {
            out.push(',');
        }
        let row = match &t.result {
            Some(r) => serde_json::to_string(&(t.id.to_string(), token, r.as_ref())),
            None => serde_json::to_string(&(t.id.to_string(), token)),
        };
        out.push_str(&row.map_err(|e| Error::Backend(Box::new(e)))?);
    }
    out.push(']');
    Ok(out)
}

/// Applies transitions. Completions — the bulk of the traffic — go through one set-based statement
/// (`completions` is [`completions_json`] of `ts`): a per-row statement costs about twice as much.
/// Everything else (failures, stalls, replays: the rare paths) goes row by row, in the core's loop
/// (`errand_core::store::apply`) over [`Statements`].
pub(crate) fn job_transition(
    conn: &Connection,
    ts: &[Transition],
    completions: &str,
) -> Result<Vec<Result<Transitioned>>> {
    let mut completed = Completions::default();
    if ts.iter().any(Transition::is_plain_completion) {
        let mut complete = conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET state = 'completed', result = c.c_result, finished_at = ?2, \
                 lease_expires_at = NULL, deadline_at = NULL, lease_cap_ms = NULL \
                 FROM (SELECT value ->> 0 AS c_id, value ->> 1 AS c_token, value -> 2 AS c_result \
                       FROM json_each(?1)) AS c \
                 WHERE jobs.id = c.c_id AND jobs.state = 'active' AND jobs.lease_token = c.c_token \
                 RETURNING id, lease_token, queue, kind, attempts, parent_id, started_at",
            )
            .map_err(backend)?;
        let rows = complete
            .query_map(params![completions, ts[0].now], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?),
                    (r.get(2)?, r.get(3)?, r.get(4)?),
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(backend)?;
        for row in rows {
            let (key, job, parent, started_at) = row.map_err(backend)?;
            completed.insert(key, job, parent, started_at);
        }
    }
    run_ready(apply::transitions(&mut Statements { conn }, ts, completed))
}

/// The statements of a transition batch on SQLite.
struct Statements<'c> {
    conn: &'c Connection,
}

impl apply::TransitionStatements for Statements<'_> {
    async fn update(&mut self, id: &str, t: &Transition) -> Result<Option<Applied>> {
        let (from, token) = t.guard_parts();
        let error = t.error.as_ref().map(json_text::<ErrorRecord>).transpose()?;
        self.conn
            .prepare_cached(&TRANSITION)
            .map_err(backend)?
            .query_row(
                params![
                    id,
                    from.as_str(),
                    token,
                    t.to.as_str(),
                    t.run_at,
                    t.result.as_ref().map(|r| r.get()),
                    error,
                    t.dead_reason.map(DeadReason::as_str),
                    t.attempts.code(),
                    t.stalled as i64,
                    t.to.is_final(),
                    t.now,
                    t.expect_cancel_requested,
                    t.unique_free_since,
                    t.expect_lease_expires_at,
                    t.fingerprint,
                ],
                |r| {
                    Ok(Applied::new(
                        from,
                        (r.get(0)?, r.get(1)?, r.get(2)?),
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)
    }

    async fn count_child(&mut self, child: &str) -> Result<bool> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET parent_counted = 1 WHERE id = ?1 AND parent_counted = 0",
            )
            .map_err(backend)?
            .execute([child])
            .map_err(backend)?;
        Ok(changed > 0)
    }

    async fn release_parent(&mut self, parent: &str, now: Timestamp) -> Result<Option<ParentRow>> {
        self.conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET pending_children = pending_children - 1, \
                   state = CASE WHEN pending_children > 1 THEN state \
                                WHEN run_at > ?2 THEN 'delayed' ELSE 'waiting' END \
                 WHERE id = ?1 AND state = 'waiting_children' \
                 RETURNING state, queue, kind, attempts",
            )
            .map_err(backend)?
            .query_row(params![parent, now], parent_row)
            .optional()
            .map_err(backend)
    }

    async fn fail_parent(
        &mut self,
        parent: &str,
        now: Timestamp,
        error: &ErrorRecord,
    ) -> Result<Option<ParentRow>> {
        self.conn
            .prepare_cached(
                "UPDATE OR FAIL jobs SET state = 'dead', dead_reason = 'child_dead', \
                   finished_at = ?2, errors = json_insert(COALESCE(errors, '[]'), '$[#]', json(?3)) \
                 WHERE id = ?1 AND state = 'waiting_children' \
                 RETURNING state, queue, kind, attempts",
            )
            .map_err(backend)?
            .query_row(params![parent, now, json_text(error)?], parent_row)
            .optional()
            .map_err(backend)
    }

    async fn fingerprint_dead(&mut self, id: &str, fingerprint: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE jobs SET fingerprint = ?2 WHERE id = ?1 AND state = 'dead'")
            .map_err(backend)?
            .execute(params![id, fingerprint])
            .map_err(backend)?;
        Ok(())
    }

    async fn current(&mut self, id: &str) -> Result<Option<Current>> {
        self.conn
            .prepare_cached("SELECT state, lease_token, cancel_requested FROM jobs WHERE id = ?1")
            .map_err(backend)?
            .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(backend)?
            .map(|(state, token, cancel)| Current::from_stored(&state, token, cancel))
            .transpose()
    }
}

/// Reads the `state, queue, kind, attempts` a parent's change returns.
fn parent_row(r: &Row<'_>) -> rusqlite::Result<ParentRow> {
    Ok(ParentRow {
        state: r.get(0)?,
        queue: r.get(1)?,
        kind: r.get(2)?,
        attempts: r.get(3)?,
    })
}

pub(crate) fn job_request_cancel(conn: &Connection, id: JobId) -> Result<Transitioned> {
    conn.prepare_cached(
        "UPDATE OR FAIL jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'active' \
         RETURNING queue, kind, attempts",
    )
    .map_err(backend)?
    .query_row([id.to_string()], |r| {
        Ok(Transitioned::new(
            r.get(0)?,
            r.get(1)?,
            JobState::Active,
            r.get(2)?,
        ))
    })
    .optional()
    .map_err(backend)?
    .ok_or_else(|| Error::Conflict(format!("job {id} is not active")))
}

pub(crate) fn job_promote_due(
    conn: &Connection,
    queue: &str,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(JobId, Transitioned)>> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE OR FAIL jobs SET state = 'waiting' WHERE id IN \
               (SELECT id FROM jobs WHERE queue = ?1 AND state = 'delayed' AND run_at <= ?2 \
                ORDER BY run_at LIMIT ?3) \
             RETURNING id, queue, kind, attempts",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![queue, now, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Transitioned::new(r.get(1)?, r.get(2)?, JobState::Delayed, r.get(3)?),
            ))
        })
        .map_err(backend)?;
    rows.map(|r| {
        let (id, t) = r.map_err(backend)?;
        Ok((id.parse().map_err(|e| Error::Backend(Box::new(e)))?, t))
    })
    .collect()
}

/// Replaces a job's input if it is still in state `from`.
pub(crate) fn job_replace(conn: &Connection, p: &JobReplace) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE OR FAIL jobs SET payload = ?3, priority = ?4, run_at = ?5, state = ?6, \
             expires_at = ?7 WHERE id = ?1 AND state = ?2",
        )
        .map_err(backend)?
        .execute(params![
            p.id.to_string(),
            p.from.as_str(),
            p.payload.get(),
            p.priority,
            p.run_at,
            p.state.as_str(),
            p.expires_at
        ])
        .map_err(backend)?;
    Ok(n > 0)
}
