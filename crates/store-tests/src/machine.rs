//! The job lifecycle as one state machine: random sequences of operations run against the engine over a real
//! store and, step by step, against a small in-memory model of the job lifecycle. Any difference — an
//! outcome, an error, any field of any job read back after the step — is a divergence, and proptest
//! shrinks the sequence to a minimal one, printed with a trace of what each step did.
//!
//! **Operations.** Enqueue into one of two queues (priority default/0/500/1000, optional delay, 1–4
//! attempts, fixed or exponential backoff without jitter, one of several timeout/heartbeat pairs, 0–2
//! stalls allowed); claim (1–3 jobs, one of three workers, from either queue or both); heartbeat,
//! complete and fail (retryable or not) with the job's current token, an earlier token of the same job,
//! another claim's token, or a token never issued; cancel; clock advances, small and large, and jumps to
//! just before, at and after the next lease expiry, deadline or due time; `Engine::maintain`; a restart
//! (a new engine over the same store: what the engine keeps in memory is lost); and a reopen (the store
//! closed and opened again over the same data, when the fixture can, then a restart).
//!
//! **Rules the model restates** (it does not call the engine's code for them): the claim order
//! (priority, then `run_at`, then id, merged across the queues named) after the claim promotes the due
//! delayed jobs of those queues; attempts counted per claim and given back by a stall; the lease length
//! (`min(2 × heartbeat, timeout)`, or the timeout without a heartbeat, plus the grace) and the deadline
//! (claim + timeout); a heartbeat renews only a lease not yet expired and ignores the deadline; complete
//! and fail need the current token but not an unexpired lease; a repeated completion under the last
//! lease is a duplicate success; where a failed attempt goes (cancelled if a cancel was requested, dead
//! if not retryable or out of attempts, else back after its backoff); maintenance promotes due jobs, then
//! fails attempts past their deadline (a timeout) and recovers expired leases (a stall: waiting again
//! with the attempt given back and `run_at` kept, or dead past `max_stalled`, or cancelled if
//! requested); cancel of a waiting or delayed job, a request on an active one, a conflict on a finished
//! one; what entering a final or non-final state sets and clears; the error record each failed attempt
//! leaves; and that ids of one engine rise and carry the enqueue time (across a restart, FIFO within
//! one millisecond is not promised, so the model orders ties by the ids the engine gave). Apart from the
//! model, a job once seen completed, dead or cancelled must never change again.
//!
//! **Not covered** (other checks are): unique keys and dedup, flow control (groups, concurrency and rate
//! limits), pause, flows, release and snooze, retry and replay of dead jobs, retention, logs, progress,
//! jitter and backoff caps, events, cron, and concurrent callers: the model is sequential.
//!
//! **One store for every case.** A fresh store per case is too slow, and so are fresh queue names per
//! case: `maintain` visits every queue the store knows, so the run would grow with the square of the
//! number of cases. Every case instead uses the same two queues, which it first empties of unfinished
//! jobs (the previous case may have stopped anywhere); finished jobs are invisible to claims and to
//! maintenance, so cases cannot see each other. Retention is off on these queues, so the model need not
//! predict pruning. The clock only moves forward; the model counts time from the case's start.
//!
//! `ERRAND_MODEL_CASES` sets the number of cases (default 2,000, each of up to 64 operations).
//!
//! **Where things are.** This file runs the cases and reports a divergence; `ops.rs` generates the
//! operations, `model.rs` is the model and its rules, `case.rs` runs one case and compares every job
//! after each step, and `steps.rs` applies one operation to both the engine and the model.

mod case;
mod model;
mod ops;
mod steps;

use std::cell::{Cell, RefCell};

use errand_core::ManualClock;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use self::case::World;
use self::ops::op;
use crate::Fixture;

pub async fn lifecycle_matches_the_model(fixture: Fixture) {
    let cases = std::env::var("ERRAND_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    // The guard outlives the world, whose store must close first.
    let Fixture {
        store,
        reopen,
        _guard,
    } = fixture;
    let world = World {
        store: RefCell::new(Some(store)),
        reopen,
        clock: ManualClock::at_fixed_start(),
        generation: Cell::new(0),
        configured: Cell::new(None),
    };
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 1_000,
        // A case costs tens of store calls: bound the shrinking by time too.
        max_shrink_time: 180_000,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let outcome = runner.run(&prop::collection::vec(op(), 1..=64), |ops| {
        tokio::task::block_in_place(|| handle.block_on(world.case(&ops)))
            .map_err(TestCaseError::fail)
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            let listed: Vec<String> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| format!("  {i:>2}: {op:?}"))
                .collect();
            panic!(
                "the engine diverged from the model; minimal sequence ({} ops):\n{}\n{why}",
                ops.len(),
                listed.join("\n")
            );
        }
        Err(TestError::Abort(why)) => panic!("the model test gave up: {why}"),
    }
}
