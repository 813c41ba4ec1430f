//! Guarded state changes: completions in one set-based statement, the rare paths row by row, what a
//! flow child's end does to its parent, promotions of due jobs, cancel requests and replaced inputs.
//! The outcome of each (and the error of a failed guard) is assembled by `errand_core::store::row`.

use deadpool_postgres::GenericClient;

use errand_core::store::{JobReplace, Transition, Transitioned};
use errand_core::{DeadReason, Error, ErrorRecord, JobId, JobState, Result, Timestamp};

use errand_core::store::apply;
use errand_core::store::row::{Applied, Completions, Current, ParentRow};

use crate::sql::Cx;

use super::insert::lock_unique_keys;
use super::{count, decode_moved, execute, get, json_text, notify, query, query_opt};

/// Promotes the due delayed jobs of `queues` (at most `limit` per queue) and announces them.
pub(super) async fn promote(
    c: &impl GenericClient,
    cx: &Cx,
    queues: &[&str],
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(JobId, Transitioned)>> {
    let rows = query(c, &cx.sql.promote, &[&queues, &now, &(limit as i64)]).await?;
    let moved = decode_moved(&rows, JobState::Delayed)?;
    notify(c, cx, moved.iter().map(|(_, t)| t.queue.as_str())).await?;
    Ok(moved)
}

/// Applies transitions. Completions — the bulk of the traffic — go through one set-based statement;
/// everything else (failures, stalls, replays: the rare paths) row by row, in the core's loop
/// (`errand_core::store::apply`) over [`Statements`]. Queues whose jobs became due are notified.
pub(crate) async fn job_transition(
    c: &impl GenericClient,
    cx: &Cx,
    ts: &[Transition],
) -> Result<Vec<Result<Transitioned>>> {
    // Revivals check that no other job holds their unique key: under the same lock as
    // inserts of that key, taken before any row lock.
    let reviving: Vec<String> = ts
        .iter()
        .filter(|t| t.unique_free_since.is_some())
        .map(|t| t.id.to_string())
        .collect();
    if !reviving.is_empty() {
        let mut keys = Vec::new();
        for row in query(c, &cx.sql.unique_keys_of, &[&reviving]).await? {
            keys.push((get::<String>(&row, 0)?, get::<String>(&row, 1)?));
        }
        lock_unique_keys(c, cx, keys).await?;
    }

    let mut completed = Completions::default();
    let plain: Vec<&Transition> = ts.iter().filter(|t| t.is_plain_completion()).collect();
    if !plain.is_empty() {
        let ids: Vec<String> = plain.iter().map(|t| t.id.to_string()).collect();
        let tokens: Vec<&str> = plain
            .iter()
            .map(|t| t.guard_parts().1.unwrap_or_default())
            .collect();
        // Results are passed as the text they are, never parsed again: a parse and re-print could change
        // a float's digits.
        let results: Vec<Option<&str>> = plain
            .iter()
            .map(|t| t.result.as_ref().map(|r| r.get()))
            .collect();
        // Per item: a batch may join acknowledgements of several requests, each with its own clock.
        let nows: Vec<Timestamp> = plain.iter().map(|t| t.now).collect();
        for row in query(c, &cx.sql.complete_many, &[&ids, &tokens, &results, &nows]).await? {
            completed.insert(
                (get(&row, 0)?, get(&row, 1)?),
                (
                    get(&row, 2)?,
                    get(&row, 3)?,
                    count(get(&row, 4)?, "attempts")?,
                ),
                get(&row, 5)?,
                get(&row, 6)?,
            );
        }
    }

    let out = apply::transitions(&mut Statements { c, cx }, ts, completed).await?;
    notify(c, cx, apply::woken_queues(ts, &out)).await?;
    Ok(out)
}

/// The statements of a transition batch on PostgreSQL, in the batch's transaction.
struct Statements<'a, C> {
    c: &'a C,
    cx: &'a Cx,
}

impl<C: GenericClient + Sync> apply::TransitionStatements for Statements<'_, C> {
    async fn update(&mut self, id: &str, t: &Transition) -> Result<Option<Applied>> {
        let (from, token) = t.guard_parts();
        let error = t.error.as_ref().map(json_text::<ErrorRecord>).transpose()?;
        let row = query_opt(
            self.c,
            &self.cx.sql.transition,
            &[
                &id,
                &from.as_str(),
                &token,
                &t.to.as_str(),
                &t.run_at,
                &t.result.as_ref().map(|r| r.get()),
                &error,
                &t.dead_reason.map(DeadReason::as_str),
                &t.attempts.code(),
                &(t.stalled as i32),
                &t.to.is_final(),
                &t.now,
                &t.expect_cancel_requested,
                &t.unique_free_since,
                &t.expect_lease_expires_at,
                &t.fingerprint,
            ],
        )
        .await?;
        row.map(|r| {
            Ok(Applied::new(
                from,
                (get(&r, 0)?, get(&r, 1)?, count(get(&r, 2)?, "attempts")?),
                get(&r, 3)?,
                get(&r, 4)?,
                get(&r, 5)?,
            ))
        })
        .transpose()
    }

    async fn count_child(&mut self, child: &str) -> Result<bool> {
        Ok(execute(self.c, &self.cx.sql.child_counted, &[&child]).await? > 0)
    }

    async fn release_parent(&mut self, parent: &str, now: Timestamp) -> Result<Option<ParentRow>> {
        let row = query_opt(self.c, &self.cx.sql.parent_release, &[&parent, &now]).await?;
        row.as_ref().map(parent_row).transpose()
    }

    async fn fail_parent(
        &mut self,
        parent: &str,
        now: Timestamp,
        error: &ErrorRecord,
    ) -> Result<Option<ParentRow>> {
        let error = json_text(error)?;
        let row = query_opt(self.c, &self.cx.sql.parent_fail, &[&parent, &now, &error]).await?;
        row.as_ref().map(parent_row).transpose()
    }

    async fn fingerprint_dead(&mut self, id: &str, fingerprint: &str) -> Result<()> {
        execute(self.c, &self.cx.sql.fingerprint_dead, &[&id, &fingerprint]).await?;
        Ok(())
    }

    async fn current(&mut self, id: &str) -> Result<Option<Current>> {
        match query_opt(self.c, &self.cx.sql.probe, &[&id]).await? {
            Some(r) => Ok(Some(Current::from_stored(
                get(&r, 0)?,
                get(&r, 1)?,
                get(&r, 2)?,
            )?)),
            None => Ok(None),
        }
    }
}

/// Reads the `state, queue, kind, attempts` a parent's change returns.
fn parent_row(r: &tokio_postgres::Row) -> Result<ParentRow> {
    Ok(ParentRow {
        state: get(r, 0)?,
        queue: get(r, 1)?,
        kind: get(r, 2)?,
        attempts: count(get(r, 3)?, "attempts")?,
    })
}

/// Replaces a job's input if it is still in state `from`; a job made waiting is announced.
pub(crate) async fn job_replace(c: &impl GenericClient, cx: &Cx, p: &JobReplace) -> Result<bool> {
    let n = execute(
        c,
        &cx.sql.job_replace,
        &[
            &p.id.to_string(),
            &p.from.as_str(),
            &p.payload.get(),
            &p.priority,
            &p.run_at,
            &p.state.as_str(),
            &p.expires_at,
        ],
    )
    .await?;
    if n > 0 && p.state == JobState::Waiting && p.from != JobState::Waiting {
        let queue: String = get(
            &query_opt(c, &cx.sql.job_log_queue, &[&p.id.to_string()])
                .await?
                .ok_or_else(|| Error::NotFound(format!("job {}", p.id)))?,
            0,
        )?;
        notify(c, cx, [queue.as_str()]).await?;
    }
    Ok(n > 0)
}

pub(crate) async fn job_request_cancel(
    c: &impl GenericClient,
    cx: &Cx,
    id: JobId,
) -> Result<Transitioned> {
    let row = query_opt(c, &cx.sql.request_cancel, &[&id.to_string()])
        .await?
        .ok_or_else(|| Error::Conflict(format!("job {id} is not active")))?;
    Ok(Transitioned::new(
        get(&row, 0)?,
        get(&row, 1)?,
        JobState::Active,
        count(get(&row, 2)?, "attempts")?,
    ))
}

pub(crate) async fn job_promote_due(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, Timestamp, usize),
) -> Result<Vec<(JobId, Transitioned)>> {
    let (queue, now, limit) = p;
    promote(c, cx, &[queue.as_str()], *now, *limit).await
}
