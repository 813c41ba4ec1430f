//! Flows: a parent job that runs once its children completed, and sees their results.
//!
//! A flow is enqueued in one transaction: the parent in `waiting_children`, counting its children, and
//! each child with the parent's id. The store does the rest atomically with each child's end (see
//! `Store::job_transition`): a completed child takes one off the count, and at zero the parent is
//! `waiting`; a child that dies or is cancelled fails the parent (`dead`, `child_dead`) or releases it
//! (counts as done), as the child's `parent_on_dead` says. The parent's worker reads the children —
//! states and results — with [`Engine::children`].

use crate::error::{Error, Result};
use crate::id::JobId;
use crate::model::{Job, JobState, NewJob};

use super::Engine;
use super::enqueue::Enqueued;

/// What [`Engine::enqueue_flow`] created.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEnqueued {
    pub parent: Enqueued,
    pub children: Vec<Enqueued>,
}

/// At most this many children a parent may have (one flow is one insert batch).
pub const MAX_CHILDREN: usize = 1_000;

impl Engine {
    /// Enqueues `parent`, waiting in `waiting_children` until each of `children` (in any queues)
    /// completed, all or nothing. Errors name `parent.<field>` or `children[i].<field>`. Unique keys
    /// are refused in a flow (field `unique_key`): a child found already enqueued would not be the
    /// parent's, and the parent would wait for it for ever.
    pub async fn enqueue_flow(
        &self,
        parent: NewJob,
        children: Vec<NewJob>,
    ) -> Result<FlowEnqueued> {
        if children.is_empty() {
            return Err(Error::invalid("children", "a flow has at least one child"));
        }
        if children.len() > MAX_CHILDREN {
            return Err(Error::too_large(
                "children",
                format!("at most {MAX_CHILDREN} children"),
            ));
        }
        let mut jobs = Vec::with_capacity(children.len() + 1);
        jobs.push(parent);
        jobs.extend(children);
        for (i, j) in jobs.iter().enumerate() {
            if j.options.unique_key.is_some() {
                return Err(Error::invalid(
                    format!("{}.unique_key", flow_field(i)),
                    "a job of a flow takes no unique key",
                ));
            }
        }
        let now = self.now();
        let mut specs = self.specs(jobs, true, now).await.map_err(|e| match e {
            Error::Invalid { field, message } => Error::Invalid {
                field: rename(&field),
                message,
            },
            Error::TooLarge { field, message } => Error::TooLarge {
                field: rename(&field),
                message,
            },
            other => other,
        })?;
        let parent_id = specs[0].id;
        specs[0].state = JobState::WaitingChildren;
        specs[0].pending_children = (specs.len() - 1) as u32;
        for child in &mut specs[1..] {
            child.parent_id = Some(parent_id);
        }
        let mut out = self.insert_specs(&specs, now).await?;
        let parent = out.remove(0);
        Ok(FlowEnqueued {
            parent,
            children: out,
        })
    }

    /// A flow parent's children, in the order they were enqueued (at most [`MAX_CHILDREN`]).
    pub async fn children(&self, parent: JobId) -> Result<Vec<Job>> {
        self.get(parent).await?;
        self.inner.store.job_children(parent, MAX_CHILDREN).await
    }
}

/// The name of the `i`-th job of a flow (the parent first).
fn flow_field(i: usize) -> String {
    match i {
        0 => "parent".to_string(),
        i => format!("children[{}]", i - 1),
    }
}

/// `jobs[i].rest` (as a batch names fields) as the flow names it.
fn rename(field: &str) -> String {
    let Some(rest) = field.strip_prefix("jobs[") else {
        return field.to_string();
    };
    match rest.split_once(']') {
        Some((i, tail)) => match i.parse::<usize>() {
            Ok(i) => format!("{}{tail}", flow_field(i)),
            Err(_) => field.to_string(),
        },
        None => field.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_fields_are_renamed_for_the_flow() {
        assert_eq!(rename("jobs[0].kind"), "parent.kind");
        assert_eq!(rename("jobs[3].payload"), "children[2].payload");
        assert_eq!(rename("queue"), "queue");
    }
}
