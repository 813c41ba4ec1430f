//! Rule 7: the engine API — ordering, batches, cancel, retry and replay, purge, promote, pause,
//! listing, stats and unique keys.
//!
//! One file per kind of call: `claims.rs` (what a claim hands out), `enqueue.rs` (batches, unique keys,
//! dedup), `operate.rs` (cancel, promote, pause), `policies.rs` (what a queue requires of its jobs, and its
//! bound on jobs not yet started), `dead.rs` (retry, replay, purge, fingerprints) and
//! `reads.rs` (listings, stats, audit). Their checks are re-exported here, so that the suite names each
//! one `api::<check>` whichever file holds it.

mod claims;
mod dead;
mod enqueue;
mod operate;
mod policies;
mod reads;

pub use claims::*;
pub use dead::*;
pub use enqueue::*;
pub use operate::*;
pub use policies::*;
pub use reads::*;
