//! Errand's core: the job model, validation and the [`Engine`] that owns every job semantic — the state
//! machine, retries and backoff, dead-lettering, leases and fencing, stalls and timeouts, unique keys,
//! retention — written once, over the [`Store`] trait.
//!
//! **Invariant:** the core knows no store and does no I/O of its own. It reads time only through
//! [`Clock`], so that tests move time instead of sleeping, and it talks to storage only through
//! [`Store`], whose implementations live in their own crates.

pub mod admission;
pub mod alerts;
pub mod clock;
pub mod cron;
pub mod engine;
pub mod error;
pub mod event;
pub mod fingerprint;
pub mod hooked;
pub mod id;
pub mod limits;
pub mod model;
pub mod schedule;
pub mod store;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use cron::CronSchedule;
pub use engine::{
    Ack, AckOutcome, Cancelled, Claim, ClaimOutcome, DeadFilter, Engine, EngineConfig, Enqueued,
    Failure, FlowEnqueued, MaintenanceReport, Page,
};
pub use error::{Error, Result};
pub use event::{Event, Observer};
pub use id::{JobId, LeaseToken};
pub use limits::Limits;
pub use model::{
    AuditEntry, Backoff, BackoffKind, DeadReason, Dedup, ErrorKind, ErrorRecord, Job, JobOptions,
    JobState, Lease, LogLine, NewJob, ParentOnDead, QueueConfig, QueueInfo, QueuePolicy,
    QueueStats, Retention, UniqueWindow, Webhook,
};
pub use schedule::{Missed, Schedule, ScheduleDef};
pub use store::Store;
