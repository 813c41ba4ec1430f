//! Guarded state changes: completions in one set-based statement, the rare paths row by row, what a
//! flow child's end does to its parent, promotions of due jobs, cancel requests and replaced inputs.
//! The outcome of each (and the error of a failed guard) is assembled by `errand_core::store::row`.

use deadpool_postgres::GenericClient;

use errand_core::store::{JobReplace, ParentEffect, ParentMove, Transition, Transitioned};
use errand_core::{DeadReason, Error, ErrorRecord, JobId, JobState, Result, Timestamp};

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
/// everything else (failures, stalls, replays: the rare paths) row by row. Items whose guard failed are
/// then looked at one by one to say why.
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

    let mut out = Vec::with_capacity(ts.len());
    let mut woken: Vec<String> = Vec::new();
    for t in ts {
        let id = t.id.to_string();
        let (from, token) = t.guard_parts();
        let applied = if t.is_plain_completion() {
            completed.take(&id, t)
        } else {
            let error = t.error.as_ref().map(json_text::<ErrorRecord>).transpose()?;
            let row = query_opt(
                c,
                &cx.sql.transition,
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
                ],
            )
            .await?;
            match row {
                Some(r) => Some(Applied::new(
                    from,
                    (get(&r, 0)?, get(&r, 1)?, count(get(&r, 2)?, "attempts")?),
                    get(&r, 3)?,
                    get(&r, 4)?,
                    get(&r, 5)?,
                )),
                None => None,
            }
        };
        out.push(match applied {
            Some(Applied {
                moved: mut done,
                parent,
                on_dead,
            }) => {
                if t.to == JobState::Waiting {
                    woken.push(done.queue.clone());
                }
                if let Some(parent) = parent {
                    done.parent = parent_effect(c, cx, &id, &parent, on_dead, t.to, t.now).await?;
                    if let Some(p) = &done.parent
                        && p.1 == JobState::Waiting
                    {
                        woken.push(p.2.queue.clone());
                    }
                }
                Ok(done)
            }
            None => {
                let current = match query_opt(c, &cx.sql.probe, &[&id]).await? {
                    Some(r) => Some(Current::from_stored(get(&r, 0)?, get(&r, 1)?, get(&r, 2)?)?),
                    None => None,
                };
                Err(t.guard_failure(&id, current))
            }
        });
    }
    notify(c, cx, woken.iter().map(String::as_str)).await?;
    Ok(out)
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

/// What a flow child entering `to` does to its parent, in the transaction of the child's change (see
/// `Store::job_transition`): the parent's move, if it moved.
async fn parent_effect(
    c: &impl GenericClient,
    cx: &Cx,
    child: &str,
    parent: &str,
    on_dead: Option<String>,
    to: JobState,
    now: Timestamp,
) -> Result<Option<ParentMove>> {
    let Some(effect) = ParentEffect::of(child, on_dead.as_deref(), to, now)? else {
        return Ok(None);
    };
    // A child counts toward its parent once, even if it is retried and ends again.
    if effect == ParentEffect::Release && execute(c, &cx.sql.child_counted, &[&child]).await? == 0 {
        return Ok(None);
    }
    let row = match effect {
        ParentEffect::Release => query_opt(c, &cx.sql.parent_release, &[&parent, &now]).await?,
        ParentEffect::Fail(error) => {
            let error = json_text(&error)?;
            query_opt(c, &cx.sql.parent_fail, &[&parent, &now, &error]).await?
        }
    };
    let Some(row) = row else { return Ok(None) };
    ParentRow {
        state: get(&row, 0)?,
        queue: get(&row, 1)?,
        kind: get(&row, 2)?,
        attempts: count(get(&row, 3)?, "attempts")?,
    }
    .into_move(parent)
}

pub(crate) async fn job_promote_due(
    c: &impl GenericClient,
    cx: &Cx,
    p: &(String, Timestamp, usize),
) -> Result<Vec<(JobId, Transitioned)>> {
    let (queue, now, limit) = p;
    promote(c, cx, &[queue.as_str()], *now, *limit).await
}
