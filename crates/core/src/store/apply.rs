//! The loop both stores run inside a transition batch's transaction, written once: each transition's
//! guarded change (or its row from the batch's set-based completion), what a flow child's end does to
//! its parent, and the error of a failed guard. A store supplies the statements
//! ([`TransitionStatements`], one or two statements each) and runs the set-based completion and any
//! locks before the loop; what happens between the statements, and in which order, is decided here.
//!
//! The statements are `async` so that the PostgreSQL store's can wait on the network; the SQLite
//! store's never wait, and it runs the loop to completion in one poll on its writer thread.

use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::{ErrorRecord, JobState};

use super::row::{Applied, Completions, Current, ParentRow};
use super::{ParentEffect, ParentMove, Transition, Transitioned};

/// The statements of a transition batch, as a store runs them in its transaction.
///
/// No `Send` bound is asked of the futures: each store calls [`transitions`] with its own concrete type,
/// and the future is `Send` exactly when that type's statements are.
#[allow(async_fn_in_trait)]
pub trait TransitionStatements {
    /// Applies `t` (not a plain completion: those come from the batch's set-based statement) to job
    /// `id`, guarded as `t.guard` and the rest of `t` say. The row the change returned, or `None` if the
    /// guard failed and nothing was written.
    async fn update(&mut self, id: &str, t: &Transition) -> Result<Option<Applied>>;

    /// Marks flow child `child` as counted toward its parent: `false` if it already was (a child counts
    /// once, even if it is retried and ends again).
    async fn count_child(&mut self, child: &str) -> Result<bool>;

    /// One child less for `parent` to wait for, if it is still `waiting_children`: it becomes due (or
    /// delayed until its `run_at`) when that was the last. The parent's row after, if it changed.
    async fn release_parent(&mut self, parent: &str, now: Timestamp) -> Result<Option<ParentRow>>;

    /// `parent` dies with `error` (`dead_reason: child_dead`), if it is still `waiting_children`.
    async fn fail_parent(
        &mut self,
        parent: &str,
        now: Timestamp,
        error: &ErrorRecord,
    ) -> Result<Option<ParentRow>>;

    /// Sets dead job `id`'s error fingerprint (a parent that `fail_parent` killed: the statement that
    /// killed it could not compute one).
    async fn fingerprint_dead(&mut self, id: &str, fingerprint: &str) -> Result<()>;

    /// Job `id` as it is now (`None`: no such job), to say why a guard failed.
    async fn current(&mut self, id: &str) -> Result<Option<Current>>;
}

/// Applies `ts` in order: a plain completion's outcome is taken from `completed` (the rows of the
/// batch's set-based statement), every other transition runs [`TransitionStatements::update`]. A change
/// to a flow child is followed, in the same transaction, by its effect on the parent; a failed guard by
/// a look at the job, to say why. One result per transition, in order.
pub async fn transitions<S: TransitionStatements>(
    s: &mut S,
    ts: &[Transition],
    mut completed: Completions,
) -> Result<Vec<Result<Transitioned>>> {
    let mut out = Vec::with_capacity(ts.len());
    for t in ts {
        let id = t.id.to_string();
        let applied = if t.is_plain_completion() {
            completed.take(&id, t)
        } else {
            s.update(&id, t).await?
        };
        out.push(match applied {
            Some(Applied {
                mut moved,
                parent,
                on_dead,
            }) => {
                if let Some(parent) = parent {
                    moved.parent =
                        parent_effect(s, &id, &parent, on_dead.as_deref(), t.to, t.now).await?;
                }
                Ok(moved)
            }
            None => {
                let current = s.current(&id).await?;
                Err(t.guard_failure(&id, current))
            }
        });
    }
    Ok(out)
}

/// What flow child `child` (whose stored `parent_on_dead` is `on_dead`) entering `to` does to its
/// parent: the parent's move, if it moved.
async fn parent_effect<S: TransitionStatements>(
    s: &mut S,
    child: &str,
    parent: &str,
    on_dead: Option<&str>,
    to: JobState,
    now: Timestamp,
) -> Result<Option<ParentMove>> {
    let row = match ParentEffect::of(child, on_dead, to, now)? {
        None => return Ok(None),
        Some(ParentEffect::Release) => {
            if !s.count_child(child).await? {
                return Ok(None);
            }
            s.release_parent(parent, now).await?
        }
        Some(ParentEffect::Fail(error)) => {
            let row = s.fail_parent(parent, now, &error).await?;
            if let Some(row) = row.as_ref().filter(|r| r.state == JobState::Dead.as_str()) {
                let fingerprint = crate::fingerprint::of(&row.kind, &error.message);
                s.fingerprint_dead(parent, &fingerprint).await?;
            }
            row
        }
    };
    match row {
        Some(row) => row.into_move(parent),
        None => Ok(None),
    }
}

/// The queues that a batch's results made due: a job moved to `waiting`, or a flow parent released
/// into `waiting` (a store that wakes waiting fetches by notification sends one per queue).
pub fn woken_queues<'a>(
    ts: &[Transition],
    out: &'a [Result<Transitioned>],
) -> impl Iterator<Item = &'a str> {
    ts.iter().zip(out).flat_map(|(t, r)| {
        let done = r.as_ref().ok();
        let own = done
            .filter(|_| t.to == JobState::Waiting)
            .map(|d| d.queue.as_str());
        let parent = done
            .and_then(|d| d.parent.as_ref())
            .filter(|p| p.1 == JobState::Waiting)
            .map(|p| p.2.queue.as_str());
        own.into_iter().chain(parent)
    })
}
