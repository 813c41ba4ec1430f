//! The worker SDK: fetch jobs, run typed handlers, keep leases, acknowledge in batches, shut down
//! gracefully.
//!
//! A [`Worker`] runs three kinds of tasks over one [`Client`]:
//!
//! 1. **The fetcher** long-polls `POST /v1/fetch` (wait [`WorkerBuilder::poll_wait`]) for as many jobs
//!    as the worker should hold more of: those that run ([`WorkerBuilder::concurrency`] at most), and a
//!    local buffer sized to what ends during a fetch's and an acknowledgement's round trip, twice
//!    over, measured as the worker runs (`pace.rs`), unless [`WorkerBuilder::prefetch`] fixes it.
//! 2. **Each job** is heartbeaten from the moment it arrives (buffered jobs keep their leases too),
//!    every third of its lease, or at the job's `heartbeat_ms` if that is sooner; a task of its own
//!    does it once the first heartbeat is due or the handler reports progress, and the worker's one
//!    schedule until then (`lease.rs`: most jobs end before). Each fetch
//!    promises heartbeats at [`WorkerBuilder::heartbeat_every`] (10 s), which caps the leases the
//!    server grants at `2 × 10 s + 5 s`: a dead worker's jobs run elsewhere within about 30 s. The heartbeat carries
//!    [`JobContext::progress`], and brings back cancel requests ([`JobContext::cancelled`]) and lost
//!    leases. The handler runs in a task of its own, so that a panic is caught and reported.
//! 3. **The acknowledger** sends outcomes to `POST /v1/ack` in batches (when
//!    [`WorkerBuilder::ack_batch_size`] are waiting, or [`WorkerBuilder::ack_flush_interval`] after the
//!    first), and retries them with backoff while the server cannot be reached: an outcome is never
//!    dropped while the worker runs.
//!
//! How each outcome is reported:
//!
//! | the handler… | reported as |
//! | --- | --- |
//! | returns `Ok(r)` | complete, with `r` as the result (none if it serializes to `null`) |
//! | returns `Err(e)` | fail, retryable unless [`JobError::fatal`], with `retry_after_ms` if the error has a delay |
//! | returns [`JobError::snooze`]`(d)` | released to run again after `d`, without using an attempt (a rate limit, not a failure) |
//! | gets a payload that does not decode as its type | fail, not retryable (the next attempt would not decode it either) |
//! | panics | fail, retryable, `panicked: <message>` |
//! | runs past the job's timeout | stopped (its future dropped) and fail, retryable, "timed out after N ms" |
//! | loses its lease (a heartbeat answered `lease_lost`) | stopped, and nothing is reported: the job is no longer ours |
//! | is still running at the end of a graceful shutdown | stopped, and released |
//! | is cancelled by an operator while it runs (learnt on the next heartbeat) | given [`WorkerBuilder::cancel_grace`] to return on its own (watching [`JobContext::cancelled`]), then stopped (its future dropped) and released: the server ends the job `cancelled` |
//! | has no handler for the job's kind | logged at error level (job id, queue, kind, the kinds this worker handles) and fail, **retryable**, `no handler for kind "X" on worker W (it handles "a", "b")`: a deploy in progress may bring one (another worker, or this one restarted), and the job dies only once its attempts are spent, with a message that says why. Releasing it instead would hand it straight back to this worker in a loop. |
//!
//! An acknowledgement answered `lease_lost` is logged and dropped (the server already timed the attempt
//! out, or another worker holds the job); a repeated completion answered `duplicate: true` counts as
//! done. A result the server refuses (too large) turns into a non-retryable failure saying so.
//!
//! The timeout is measured locally from the fetch's answer (`timeout_ms` after it), slightly after the
//! server's deadline, which started at the claim: the server's is the one that counts, and the worker's
//! stops the handler about when the server gives up on the attempt.
//!
//! **Where things are.** This file holds the [`Worker`], its run loop and its graceful shutdown, and what
//! its tasks share; `builder.rs` the settings and their checks, `fetch.rs` the fetcher, `runner.rs` one
//! job's run from its start to its queued outcome, `lease.rs` the heartbeats, `ack.rs` the
//! acknowledger, and `job.rs` what a handler sees ([`JobContext`], [`JobError`]).

mod ack;
mod builder;
mod fetch;
mod job;
mod lease;
mod pace;
mod runner;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use errand_protocol::WorkerReport;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use builder::WorkerBuilder;
pub use job::{JobContext, JobError};

use self::ack::{AckSettings, Origin, Queued, Stats};
use self::fetch::fetch_loop;
use self::job::ErasedHandler;
use self::pace::Held;
use self::runner::{JobEnd, run_job};
use crate::Client;

/// What a worker did from start to shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs whose completion the server confirmed.
    pub completed: u64,
    /// Jobs whose failure the server confirmed (errors, panics, timeouts, undecodable payloads).
    pub failed: u64,
    /// Jobs fetched but not started, given back.
    pub released: u64,
    /// Jobs an operator cancelled: stopped if they were running (their handlers' futures dropped), and
    /// ended `cancelled` by the server.
    pub cancelled: u64,
    /// Runs that ended in [`JobError::snooze`]: given back to run later, without using an attempt.
    pub snoozed: u64,
    /// Jobs still running at the shutdown deadline: their handlers were dropped and the jobs released
    /// where the server would take it.
    pub abandoned: u64,
    /// Outcomes that did not reach the server: refused (`lease_lost` above all) or still undelivered
    /// when the shutdown's time ran out.
    pub lost: u64,
}

/// A sentence's worth for people: `2 completed, 1 failed, 3 released unstarted` (counts other than
/// `completed` only when not zero), so that a program can end with `println!("stopped: {report}")`.
impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} completed", self.completed)?;
        for (n, what) in [
            (self.failed, "failed"),
            (self.released, "released unstarted"),
            (self.cancelled, "cancelled"),
            (self.snoozed, "snoozed"),
            (self.abandoned, "abandoned at the shutdown deadline"),
            (self.lost, "with outcomes not delivered"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// A worker: fetches jobs from its queues and runs their handlers until shut down. Build one with
/// [`Worker::builder`]; run it with [`Worker::run`] (until Ctrl-C or SIGTERM) or [`Worker::run_until`].
pub struct Worker {
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.rt.worker_id)
            .field("queues", &self.rt.queues)
            .field("concurrency", &self.rt.concurrency)
            .field("prefetch", &self.rt.prefetch)
            .finish_non_exhaustive()
    }
}

/// What every task of a worker shares.
/// How the Rust SDK names itself in the report sent with each fetch.
pub const SDK_NAME: &str = "errand-rust";

struct Runtime {
    client: Client,
    queues: Vec<String>,
    worker_id: String,
    concurrency: usize,
    /// How many jobs to hold, running or waiting to run, if fixed ([`WorkerBuilder::prefetch`]); by
    /// default the worker paces itself (`pace.rs`).
    prefetch: Option<usize>,
    poll_wait: Duration,
    /// The heartbeat interval promised with each fetch.
    heartbeat_ms: u64,
    shutdown_timeout: Duration,
    /// [`WorkerBuilder::run_until_ends_on_sigterm`].
    sigterm_ends_run_until: bool,
    cancel_grace: Duration,
    ack: AckSettings,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
}

impl Runtime {
    /// The kinds this worker has handlers for, sorted and quoted: `"a", "b"` (or `no kind`).
    fn handled_kinds(&self) -> String {
        let mut kinds: Vec<&String> = self.handlers.keys().collect();
        if kinds.is_empty() {
            return "no kind".into();
        }
        kinds.sort();
        kinds
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Worker {
    /// The worker's name on the jobs' leases.
    pub fn worker_id(&self) -> &str {
        &self.rt.worker_id
    }

    /// Runs until Ctrl-C (or, on Unix, SIGTERM), then shuts down gracefully: see [`Worker::run_until`].
    pub async fn run(self) -> ShutdownReport {
        self.drive(shutdown_signal(), true).await
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully:
    ///
    /// 1. stops fetching (a long poll in flight is dropped; should its answer have been on the way, those
    ///    jobs return to their queue when their leases expire);
    /// 2. releases the jobs fetched but not started: they are due again at once, for any worker, and
    ///    the attempt is not counted;
    /// 3. lets running jobs finish for up to the shutdown timeout, then drops the handlers still running
    ///    and releases their jobs (counted as abandoned);
    /// 4. delivers every pending acknowledgement, trying for up to the shutdown timeout again;
    /// 5. returns what it did.
    ///
    /// The worker tells the server it does not drain on SIGTERM (it cannot know what `shutdown`
    /// waits for), and `errand audit` fails it, unless the builder was told otherwise
    /// ([`WorkerBuilder::run_until_ends_on_sigterm`]); [`Worker::run`] says it does.
    pub async fn run_until<F>(self, shutdown: F) -> ShutdownReport
    where
        F: Future<Output = ()>,
    {
        let on_signals = self.rt.sigterm_ends_run_until;
        self.drive(shutdown, on_signals).await
    }

    async fn drive<F>(self, shutdown: F, on_signals: bool) -> ShutdownReport
    where
        F: Future<Output = ()>,
    {
        let rt = self.rt;
        let report = WorkerReport {
            sdk: SDK_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Within what the server takes (1 – 1,000,000).
            concurrency: u32::try_from(rt.concurrency)
                .unwrap_or(u32::MAX)
                .clamp(1, 1_000_000),
            drains_on_sigterm: on_signals,
        };
        tracing::info!(worker_id = %rt.worker_id, queues = ?rt.queues, concurrency = rt.concurrency, prefetch = ?rt.prefetch, "worker started");
        let stats = Arc::new(Stats::default());
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (give_up_tx, give_up_rx) = watch::channel(None);
        let held = Arc::new(Held::default());
        let acker = tokio::spawn(ack::run(
            rt.client.clone(),
            ack_rx,
            Arc::clone(&stats),
            give_up_rx,
            rt.ack,
            Arc::clone(&held),
        ));
        let (job_tx, mut job_rx) = mpsc::unbounded_channel();
        let beats = Arc::new(lease::Beats::default());
        let beat_starter = lease::AbortOnDrop(tokio::spawn(Arc::clone(&beats).run()));
        let fetcher = tokio::spawn(fetch_loop(Arc::clone(&rt), held, beats, job_tx, report));
        let run_slots = Arc::new(Semaphore::new(rt.concurrency));
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let mut running: JoinSet<JobEnd> = JoinSet::new();
        let mut permit: Option<OwnedSemaphorePermit> = None;
        let count_end = |end: std::result::Result<JobEnd, tokio::task::JoinError>| match end {
            Ok(JobEnd::Abandoned) => Stats::add(&stats.abandoned),
            Ok(JobEnd::Reported | JobEnd::LeaseLost) => {}
            Err(e) => tracing::error!(error = %e, "a job's task failed"),
        };

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(end) = running.join_next(), if !running.is_empty() => count_end(end),
                p = Arc::clone(&run_slots).acquire_owned(), if permit.is_none() => permit = p.ok(),
                job = job_rx.recv(), if permit.is_some() => match job {
                    Some(job) => {
                        let p = permit.take();
                        running.spawn(run_job(Arc::clone(&rt), job, p, ack_tx.clone(), abandon_rx.clone()));
                    }
                    None => {
                        tracing::error!("the fetcher stopped; shutting down");
                        break;
                    }
                },
            }
        }

        tracing::info!(worker_id = %rt.worker_id, running = running.len(), "worker shutting down");
        let started = Instant::now();
        // 1. Stop fetching.
        fetcher.abort();
        let _ = fetcher.await;
        // 2. Release what was fetched but not started.
        job_rx.close();
        while let Some(job) = job_rx.recv().await {
            let item = job.release_item();
            let lost = job.shared.is_lease_lost();
            job.abort_keeper();
            if !lost {
                let _ = ack_tx.send(Queued {
                    item,
                    origin: Origin::Unstarted,
                });
            }
        }
        // 3. Let running jobs finish, up to the deadline.
        let deadline = started + rt.shutdown_timeout;
        loop {
            tokio::select! {
                end = running.join_next() => match end {
                    Some(end) => count_end(end),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(running = running.len(), "shutdown timeout: abandoning the jobs still running");
                    let _ = abandon_tx.send(true);
                    while let Some(end) = running.join_next().await {
                        count_end(end);
                    }
                    break;
                }
            }
        }
        // Every job's run has ended, and with it its heartbeats.
        drop(beat_starter);
        // 4. Deliver every acknowledgement.
        drop(ack_tx);
        let _ = give_up_tx.send(Some(Instant::now() + rt.shutdown_timeout));
        if let Err(e) = acker.await {
            tracing::error!(error = %e, "the acknowledgement task failed");
        }
        let report = ShutdownReport {
            completed: stats.completed.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
            released: stats.released.load(Ordering::Relaxed),
            cancelled: stats.cancelled.load(Ordering::Relaxed),
            snoozed: stats.snoozed.load(Ordering::Relaxed),
            abandoned: stats.abandoned.load(Ordering::Relaxed),
            lost: stats.lost.load(Ordering::Relaxed),
        };
        tracing::info!(worker_id = %rt.worker_id, report = %report, "worker stopped");
        report
    }
}

/// Ctrl-C, or on Unix SIGTERM as well.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only"),
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for Ctrl-C; running until dropped");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::ShutdownReport;

    #[test]
    fn a_report_reads_as_a_sentence() {
        let mut r = ShutdownReport::default();
        assert_eq!(r.to_string(), "0 completed");
        r.completed = 2;
        r.released = 3;
        r.lost = 1;
        assert_eq!(
            r.to_string(),
            "2 completed, 3 released unstarted, 1 with outcomes not delivered"
        );
    }
}
