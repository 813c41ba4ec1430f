//! A [`Store`] that forwards every operation to another store through a [`Hook`]: the one way to wrap
//! a store, so that a wrapper names what it adds and not the 31 operations it passes on.
//!
//! A hook has two places to act. [`Hook::around`] wraps every operation's future, knowing only which
//! operation it is ([`Op`]): the server times each store call this way. A hook may also take over one
//! operation with its arguments (a method of [`Hook`] named like the [`Store`] method, whose default
//! calls the inner store): a race test puts a competing change just before a guarded write this way.
//! `around` wraps what that method returns.
//!
//! The operations are listed once, in the `hooked!` invocation below; a new [`Store`] method is added
//! there, and every wrapper forwards it. Its responsibility ends at forwarding: what a wrapper does is
//! its own (the server's metrics, the conformance suite's races).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::Result;
use crate::id::JobId;
use crate::model::{AuditEntry, Job, LogLine, QueueConfig, QueueInfo, QueueStats};
use crate::schedule::Schedule;
use crate::store::{
    Claimed, DeadGroupRows, Fired, FlowRows, Inserted, JobClaim, JobDelete, JobInsert, JobList,
    JobLogAppend, JobPrune, JobReplace, LeaseRenew, Renewed, ScheduleFire, Store, StoreObject,
    Transition, Transitioned,
};

/// A store wrapped by a hook: every operation goes through `hook` to `inner`.
#[derive(Debug)]
pub struct Hooked<H> {
    inner: Arc<dyn Store>,
    hook: H,
}

impl<H: Hook> Hooked<H> {
    pub fn new(inner: Arc<dyn Store>, hook: H) -> Self {
        Hooked { inner, hook }
    }

    /// The hook, for a test to arm or read.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

/// Lists each async [`Store`] method once, as `method => Variant(arguments) -> output;`, and makes of the
/// list the [`Op`] enum, the [`Hook`] trait and the forwarding `impl Store for Hooked<H>`.
macro_rules! hooked {
    ($($name:ident => $variant:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        /// A [`Store`] operation that returns a future, by the method's name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($variant,)*
        }

        impl Op {
            /// Every operation.
            pub const ALL: &'static [Op] = &[$(Op::$variant,)*];

            /// The [`Store`] method's name, e.g. `job_insert` (the server's metrics label).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Op::$variant => stringify!($name),)*
                }
            }
        }

        /// What a [`Hooked`] store does besides forwarding. Every method has a default that adds
        /// nothing; a hook overrides what it needs.
        #[async_trait]
        pub trait Hook: Send + Sync + std::fmt::Debug + 'static {
            /// Wraps the future of every operation `op` (timing, counting). By default, `call` itself.
            fn around<'a, T, F>(
                &'a self,
                op: Op,
                call: F,
            ) -> impl Future<Output = Result<T>> + Send + 'a
            where
                F: Future<Output = Result<T>> + Send + 'a,
                T: Send + 'a,
            {
                let _ = op;
                call
            }

            $(
                /// The operation of the same name, given the inner store; by default that store's.
                async fn $name(&self, inner: &dyn Store, $($arg: $ty),*) -> Result<$out> {
                    inner.$name($($arg),*).await
                }
            )*
        }

        #[async_trait]
        impl<H: Hook> Store for Hooked<H> {
            $(
                async fn $name(&self, $($arg: $ty),*) -> Result<$out> {
                    self.hook
                        .around(Op::$variant, self.hook.$name(&*self.inner, $($arg),*))
                        .await
                }
            )*

            // Not an operation: a channel, handed out once at start.
            fn subscribe_due(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
                self.inner.subscribe_due()
            }
        }
    };
}

hooked! {
    job_insert => JobInsert(p: JobInsert) -> Vec<Inserted>;
    job_claim => JobClaim(p: JobClaim) -> Claimed;
    lease_renew => LeaseRenew(p: LeaseRenew) -> Renewed;
    job_transition => JobTransition(p: Vec<Transition>) -> Vec<Result<Transitioned>>;
    job_request_cancel => JobRequestCancel(id: JobId) -> Transitioned;
    job_promote_due => JobPromoteDue(queue: &str, now: Timestamp, limit: usize)
        -> Vec<(JobId, Transitioned)>;
    job_expired => JobExpired(now: Timestamp, limit: usize) -> Vec<Job>;
    job_ttl_passed => JobTtlPassed(now: Timestamp, limit: usize) -> Vec<Job>;
    job_get => JobGet(id: JobId) -> Option<Job>;
    job_list => JobList(p: JobList) -> Vec<Job>;
    job_prune => JobPrune(p: JobPrune) -> u64;
    job_delete => JobDelete(p: JobDelete) -> u64;
    queue_get => QueueGet(name: &str) -> Option<QueueInfo>;
    queue_list => QueueList() -> Vec<QueueInfo>;
    queue_put => QueuePut(name: &str, config: QueueConfig) -> ();
    queue_set_paused => QueueSetPaused(name: &str, paused: bool) -> ();
    audit_append => AuditAppend(e: AuditEntry) -> ();
    audit_list => AuditList(before: Option<u64>, limit: usize) -> Vec<AuditEntry>;
    audit_prune => AuditPrune(before: Timestamp, limit: usize) -> u64;
    queue_stats_all => QueueStatsAll(now: Timestamp) -> Vec<QueueStats>;
    footprint => Footprint() -> Vec<StoreObject>;
    flow_state => FlowState(queue: &str, limit: usize) -> FlowRows;
    queue_stats => QueueStats(name: &str, now: Timestamp) -> QueueStats;
    dead_groups => DeadGroups(name: &str, limit: usize) -> DeadGroupRows;
    job_replace => JobReplace(p: JobReplace) -> bool;
    job_log_append => JobLogAppend(p: JobLogAppend) -> ();
    job_logs => JobLogs(id: JobId) -> Vec<LogLine>;
    job_children => JobChildren(parent: JobId, limit: usize) -> Vec<Job>;
    schedule_put => SchedulePut(s: Schedule) -> ();
    schedule_get => ScheduleGet(name: &str) -> Option<Schedule>;
    schedule_list => ScheduleList() -> Vec<Schedule>;
    schedule_delete => ScheduleDelete(name: &str) -> bool;
    schedule_set_paused => ScheduleSetPaused(
        name: &str,
        paused: bool,
        next_run_at: Option<Timestamp>,
        now: Timestamp
    ) -> bool;
    schedule_due => ScheduleDue(now: Timestamp, limit: usize) -> Vec<Schedule>;
    schedule_fire => ScheduleFire(p: ScheduleFire) -> Fired;
    try_lead => TryLead(role: &str, holder: &str, ttl_ms: u64) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_is_named_as_its_store_method() {
        let names: Vec<&str> = Op::ALL.iter().map(|op| op.as_str()).collect();
        assert_eq!(names.len(), 36);
        assert_eq!(names[0], "job_insert");
        assert!(names.contains(&"schedule_set_paused") && names.contains(&"try_lead"));
        assert!(names.contains(&"audit_prune"));
        assert!(names.contains(&"job_ttl_passed") && names.contains(&"footprint"));
    }
}
